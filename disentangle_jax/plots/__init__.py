"""Plots for a trained model's evaluation report: pure functions from numpy arrays to figures.

Every function returns a `matplotlib.figure.Figure` built with the object API on an Agg canvas
(no pyplot, no display, thread-safe); `save_figure` writes one to a PNG file and closes it.
"""

from disentangle_jax.plots.charts import lp_nested_exponents as lp_nested_exponents
from disentangle_jax.plots.charts import metric_summary as metric_summary
from disentangle_jax.plots.charts import mutual_information_heatmap as mutual_information_heatmap
from disentangle_jax.plots.charts import training_curves as training_curves
from disentangle_jax.plots.figures import new_figure as new_figure
from disentangle_jax.plots.figures import save_figure as save_figure
from disentangle_jax.plots.images import latent_traversals as latent_traversals
from disentangle_jax.plots.images import reconstructions as reconstructions
