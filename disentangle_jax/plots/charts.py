"""Charts of a trained model's evaluation: mutual information, Lp-nested exponents, training
curves and a summary of disentanglement scores. Inputs are numpy arrays and plain dicts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from disentangle_jax.plots.figures import check_names, check_vector, new_figure

BEST_COLOR = "red"
"""Edge colour of the box around each factor's most informative latent in the heat map."""
GAUSSIAN_EXPONENT = 2.0
"""The Lp-nested exponent of the Gaussian, drawn as a dashed reference line."""
SCORE_TOLERANCE = 1e-6
"""How far outside [0, 1] a metric score may be (rounding) before `metric_summary` rejects it."""


def mutual_information_heatmap(
  mi: np.ndarray,
  *,
  latent_names: Sequence[str] | None = None,
  factor_names: Sequence[str],
  normalized_by: np.ndarray | None = None,
  title: str | None = None,
) -> Figure:
  """A latent-by-factor heat map of mutual information, each cell annotated with its value.

  Latents stay in their order (rows). In each factor's column the most informative latent is
  boxed and its value written in bold: a disentangled code has one box per row at most, and a
  large gap between the boxed value and the rest of its column (the MIG). Mutual information is
  non-negative; an estimate below 0 (sampling noise of Chen et al.'s estimator) is shown as 0,
  as MIG clamps it before taking the gap, and the colour bar's label says so.

  Args:
    mi: [K, F] mutual information I(z_j; v_k) in nats (estimates; negative ones shown as 0).
    latent_names: [K] row names; default "z0" .. "z{K-1}".
    factor_names: [F] column names.
    normalized_by: [F] positive factor entropies H(v_k) in nats: shows I(z_j; v_k) / H(v_k) on
      a fixed [0, 1] colour scale. None shows nats, on a scale from 0 to the largest value.
    title: the axes title; default names the quantity shown.

  Returns:
    A figure with two axes: the heat map and its colour bar.
  """
  mi = np.asarray(mi, np.float64)
  if mi.ndim != 2 or 0 in mi.shape:
    raise ValueError(f"mutual_information_heatmap needs mi [K, F] (non-empty); got {mi.shape}")
  num_latents, num_factors = mi.shape
  shape = f"with K, F = {num_latents}, {num_factors} from mi"
  latent_names = check_names(
    latent_names,
    num_latents,
    default_prefix="z",
    what=f"mutual_information_heatmap needs latent_names [K] {shape}",
  )
  factor_names = check_names(
    factor_names,
    num_factors,
    default_prefix="v",
    what=f"mutual_information_heatmap needs factor_names [F] {shape}",
  )
  clamped = np.any(mi < 0)  # NaN compares False
  mi = np.where(mi < 0, 0.0, mi)
  if normalized_by is None:
    values, label = mi, "I(z; v) [nats]"
    vmin, vmax = 0.0, max(np.nanmax(mi), 1e-12)
  else:
    entropies = check_vector(
      normalized_by, num_factors, what=f"mutual_information_heatmap needs normalized_by [F] {shape}"
    )
    if not np.all(entropies > 0):
      raise ValueError(
        f"mutual_information_heatmap needs positive factor entropies normalized_by; got {entropies}"
      )
    values, label, vmin, vmax = mi / entropies, "I(z; v) / H(v)", 0.0, 1.0
  if clamped:
    label += " (estimates < 0 shown as 0)"

  fig = new_figure(2.6 + 0.75 * num_factors, 1.3 + 0.4 * num_latents)
  ax = fig.add_subplot()
  image = ax.imshow(values, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
  fig.colorbar(image, ax=ax, label=label)
  ax.set_xticks(np.arange(num_factors), factor_names, rotation=30, ha="right")
  ax.set_yticks(np.arange(num_latents), latent_names)
  ax.set_xlabel("factor")
  ax.set_ylabel("latent")
  ax.set_title(title if title is not None else f"Mutual information {label}")

  best = np.argmax(np.where(np.isnan(values), -np.inf, values), axis=0)
  for k in range(num_latents):
    for f in range(num_factors):
      red, green, blue, _ = image.cmap(image.norm(values[k, f]))
      dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
      ax.text(
        f,
        k,
        f"{values[k, f]:.2f}",
        ha="center",
        va="center",
        fontsize="small",
        color="white" if dark else "black",
        fontweight="bold" if best[f] == k else "normal",
      )
  for f, k in enumerate(best):
    box = Rectangle((f - 0.5, k - 0.5), 1, 1, fill=False, edgecolor=BEST_COLOR, linewidth=2)
    ax.add_patch(box)
  return fig


def lp_nested_exponents(
  exponents: np.ndarray,
  *,
  labels: Sequence[str] | None = None,
  initial: np.ndarray | None = None,
) -> Figure:
  """A bar chart of the learned exponents of an Lp-nested prior.

  A dashed line marks p = 2, the Gaussian: below it the prior is heavier-tailed or sparser
  (p = 1 Laplace-like), above it lighter-tailed and flatter.

  Args:
    exponents: [1 + S] positive exponents, the root p0 first, then one per subspace.
    labels: [1 + S] bar names; default "p0 (root)", "p1" .. "pS".
    initial: [1 + S] the exponents at initialisation, drawn as markers, or None.

  Returns:
    A figure with one axes; its bars (`ax.patches`) in the order of `exponents`.
  """
  exponents = np.asarray(exponents, np.float64)
  if exponents.ndim != 1 or exponents.size == 0:
    raise ValueError(
      f"lp_nested_exponents needs exponents [1 + S] (root first; non-empty); got {exponents.shape}"
    )
  if not np.all(np.isfinite(exponents) & (exponents > 0)):
    raise ValueError(f"lp_nested_exponents needs finite positive exponents; got {exponents}")
  count = exponents.size
  shape = f"with 1 + S = {count} from exponents"
  if labels is None:
    labels = ["p0 (root)"] + [f"p{i}" for i in range(1, count)]
  labels = check_names(
    labels, count, default_prefix="p", what=f"lp_nested_exponents needs labels [1 + S] {shape}"
  )

  fig = new_figure(2.0 + 0.6 * count, 3.2)
  ax = fig.add_subplot()
  positions = np.arange(count)
  colors = ["tab:orange"] + ["tab:blue"] * (count - 1)
  bars = ax.bar(positions, exponents, color=colors, width=0.6)
  ax.bar_label(bars, fmt="%.2f", fontsize="small", label_type="center", color="white")
  ax.axhline(GAUSSIAN_EXPONENT, color="grey", linestyle="--", label="p = 2 (Gaussian)")
  top = max(exponents.max(), GAUSSIAN_EXPONENT)
  if initial is not None:
    initial = check_vector(
      initial, count, what=f"lp_nested_exponents needs initial [1 + S] {shape}"
    )
    ax.plot(positions, initial, linestyle="none", marker="D", color="black", label="initial")
    top = max(top, np.nanmax(initial))
  ax.set_xticks(positions, labels)
  ax.set_ylim(0.0, 1.3 * top)  # headroom for the legend
  ax.set_ylabel("exponent p")
  ax.set_title("Lp-nested exponents")
  ax.legend(loc="best", fontsize="small")
  return fig


def training_curves(steps: np.ndarray, series: Mapping[str, np.ndarray]) -> Figure:
  """One small plot per named series against the training step, all sharing the x axis.

  Args:
    steps: [S] the training steps.
    series: name -> [S] values at those steps (NaN leaves a gap), plotted top to bottom in
      the mapping's order.

  Returns:
    A figure with len(series) axes, titled with the names; the bottom one labelled "step".
  """
  steps = np.asarray(steps)
  if steps.ndim != 1 or steps.size == 0:
    raise ValueError(f"training_curves needs steps [S] (non-empty); got {steps.shape}")
  if not series:
    raise ValueError("training_curves needs at least one series {name: [S] values}; got none")
  curves = {
    name: check_vector(
      values, steps.size, what=f"training_curves needs series[{name!r}] [S] with S = {steps.size}"
    )
    for name, values in series.items()
  }

  fig = new_figure(6.0, 0.5 + 1.6 * len(curves))
  axes = fig.subplots(len(curves), 1, sharex=True, squeeze=False)[:, 0]
  for ax, (name, values) in zip(axes, curves.items(), strict=True):
    ax.plot(steps, values, linewidth=1.2)
    ax.set_title(str(name), loc="left", fontsize="medium")
    ax.grid(alpha=0.3)
  axes[-1].set_xlabel("step")
  return fig


def metric_summary(scores: Mapping[str, float], *, title: str | None = None) -> Figure:
  """A horizontal bar chart of disentanglement scores in [0, 1], each value written on its bar.

  Args:
    scores: metric name -> score in [0, 1] (NaN, e.g. a metric that failed, draws no bar and
      is written "nan"), listed top to bottom in the mapping's order.
    title: the axes title; default "Disentanglement metrics".

  Returns:
    A figure with one axes; its bars (`ax.patches`) in the order of `scores`.
  """
  if not scores:
    raise ValueError("metric_summary needs at least one score {name: value in [0, 1]}; got none")
  names = [str(name) for name in scores]
  values = np.array([float(np.asarray(value)) for value in scores.values()], np.float64)
  outside = ~np.isnan(values) & (
    (values < -SCORE_TOLERANCE) | (values > 1 + SCORE_TOLERANCE) | np.isinf(values)
  )
  if np.any(outside):
    bad = {n: float(v) for n, v, out in zip(names, values, outside, strict=True) if out}
    raise ValueError(f"metric_summary needs scores in [0, 1]; got {bad}")

  fig = new_figure(6.0, 1.0 + 0.4 * len(names))
  ax = fig.add_subplot()
  positions = np.arange(len(names))
  ax.barh(positions, np.nan_to_num(values, nan=0.0), height=0.6, color="tab:blue")
  for y, value in zip(positions, values, strict=True):
    inside = value > 0.85
    ax.text(
      value - 0.01 if inside else np.nan_to_num(value, nan=0.0) + 0.01,
      y,
      "nan" if np.isnan(value) else f"{value:.2f}",
      ha="right" if inside else "left",
      va="center",
      color="white" if inside else "black",
      fontsize="small",
    )
  ax.set_yticks(positions, names)
  ax.invert_yaxis()
  ax.set_xlim(0.0, 1.0)
  ax.set_xlabel("score")
  ax.set_title(title if title is not None else "Disentanglement metrics")
  ax.grid(axis="x", alpha=0.3)
  return fig
