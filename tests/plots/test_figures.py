"""Tests of the evaluation plots: axes, drawn data, labels, marks, shape errors and PNG output.

The figures are read back through matplotlib's artists (images, texts, patches, lines), never
compared as pixels; only `save_figure` renders. Arrays are tiny so the file runs in seconds.
"""

from __future__ import annotations

import ast
import pathlib
import sys

import matplotlib
import numpy as np
import PIL.Image
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from disentangle_jax import plots
from disentangle_jax.plots import charts, figures, images

if "matplotlib.pyplot" not in sys.modules:  # switching later would close others' figures
  matplotlib.use("Agg")


def grid_position(ax) -> tuple[int, int]:
  """(row, column) of a subplot in its grid."""
  spec = ax.get_subplotspec()
  return spec.rowspan.start, spec.colspan.start


def text_at(ax, x: float, y: float):
  """The one text artist of `ax` placed at (x, y)."""
  found = [text for text in ax.texts if np.allclose(text.get_position(), (x, y))]
  assert len(found) == 1, f"{len(found)} texts at {(x, y)}"
  return found[0]


# --- latent_traversals ------------------------------------------------------------------------


def test_latent_traversals_greyscale_grid_labels_and_data():
  rng = np.random.default_rng(0)
  traversal = rng.uniform(size=(2, 3, 4, 5, 1)).astype(np.float32)
  fig = plots.latent_traversals(
    traversal, values=[-2.0, 0.0, 2.0], latent_names=["size", "hue"], kl_per_latent=[1.5, 0.004]
  )
  assert isinstance(fig, Figure)
  assert len(fig.axes) == 2 * 3
  for ax in fig.axes:
    k, t = grid_position(ax)
    assert len(ax.images) == 1
    np.testing.assert_array_equal(ax.images[0].get_array(), traversal[k, t, ..., 0])
    assert ax.images[0].get_cmap().name == "gray"
    assert ax.images[0].get_clim() == (0.0, 1.0)
    assert len(ax.get_xticks()) == 0 and len(ax.get_yticks()) == 0
  top_row = sorted((ax for ax in fig.axes if grid_position(ax)[0] == 0), key=grid_position)
  assert [ax.get_title() for ax in top_row] == ["-2", "0", "2"]
  first_column = sorted((ax for ax in fig.axes if grid_position(ax)[1] == 0), key=grid_position)
  assert [ax.get_ylabel() for ax in first_column] == ["size\nKL 1.50 nats", "hue\nKL 0.00 nats"]


def test_latent_traversals_rgb_is_clipped_and_names_default():
  traversal = np.linspace(-0.5, 1.5, 3 * 2 * 2 * 2 * 3).reshape(3, 2, 2, 2, 3)
  fig = plots.latent_traversals(traversal, values=[0.5, 1.25])
  assert len(fig.axes) == 3 * 2
  for ax in fig.axes:
    k, t = grid_position(ax)
    np.testing.assert_allclose(ax.images[0].get_array(), np.clip(traversal[k, t], 0, 1), 1e-6)
  labels = [ax.get_ylabel() for ax in sorted(fig.axes, key=grid_position) if ax.get_ylabel()]
  assert labels == ["z0", "z1", "z2"]
  assert {ax.get_title() for ax in fig.axes} == {"", "0.5", "1.25"}


def test_latent_traversals_uint8_images_are_scaled():
  traversal = np.array([0, 51, 255], np.uint8).reshape(1, 1, 1, 3, 1)
  fig = plots.latent_traversals(traversal, values=[0.0])
  np.testing.assert_allclose(fig.axes[0].images[0].get_array(), [[0.0, 0.2, 1.0]], 1e-6)


@pytest.mark.parametrize(
  "shape, kwargs, match",
  [
    ((3, 4, 8, 8), {}, r"latent_traversals needs images \[K, T, H, W, C\].*got \(3, 4, 8, 8\)"),
    ((3, 4, 8, 8, 2), {}, r"needs images \[K, T, H, W, C\].*got \(3, 4, 8, 8, 2\)"),
    ((3, 4, 8, 8, 1), {"values": [0.0, 1.0]}, r"values \[T\] with K, T = 3, 4.*got shape \(2,\)"),
    ((3, 4, 8, 8, 1), {"latent_names": ["a", "b"]}, r"latent_names \[K\].*got 2 names"),
    ((3, 4, 8, 8, 1), {"kl_per_latent": [1.0]}, r"kl_per_latent \[K\].*got shape \(1,\)"),
  ],
)
def test_latent_traversals_shape_errors(shape, kwargs, match):
  kwargs = {"values": np.arange(4.0), **kwargs}
  with pytest.raises(ValueError, match=match):
    plots.latent_traversals(np.zeros(shape), **kwargs)


# --- reconstructions --------------------------------------------------------------------------


def test_reconstructions_two_labelled_rows():
  rng = np.random.default_rng(1)
  data, recon = rng.uniform(size=(2, 3, 4, 4, 3))
  fig = plots.reconstructions(data, recon)
  assert len(fig.axes) == 2 * 3
  for ax in fig.axes:
    row, column = grid_position(ax)
    np.testing.assert_array_equal(ax.images[0].get_array(), (data, recon)[row][column])
  labels = {grid_position(ax)[0]: ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()}
  assert labels == {0: "data", 1: "reconstruction"}


def test_reconstructions_wrap_into_pairs_of_rows():
  rng = np.random.default_rng(2)
  data, recon = rng.uniform(size=(2, 7, 3, 3, 1))
  fig = plots.reconstructions(data, recon, max_per_row=3)
  assert len(fig.axes) == 2 * 7  # the 2 unused cells of the last pair of rows are removed
  for ax in fig.axes:
    row, column = grid_position(ax)
    block, is_recon = divmod(row, 2)
    expected = (recon if is_recon else data)[3 * block + column, ..., 0]
    np.testing.assert_array_equal(ax.images[0].get_array(), expected)
  labels = sorted((grid_position(ax)[0], ax.get_ylabel()) for ax in fig.axes if ax.get_ylabel())
  assert [label for _, label in labels] == ["data", "reconstruction"] * 3


def test_reconstructions_shape_errors():
  with pytest.raises(ValueError, match=r"reconstructions needs originals \[N, H, W, C\].*\(4, 4\)"):
    plots.reconstructions(np.zeros((4, 4)), np.zeros((4, 4)))
  with pytest.raises(ValueError, match=r"same shape.*\(2, 4, 4, 1\) and \(3, 4, 4, 1\)"):
    plots.reconstructions(np.zeros((2, 4, 4, 1)), np.zeros((3, 4, 4, 1)))


# --- mutual_information_heatmap ---------------------------------------------------------------

MI = np.array([[0.10, 1.20, 0.00], [2.00, 0.30, 0.05], [0.40, 0.35, 0.90], [0.00, 0.01, 0.02]])
BEST = np.array([1, 0, 2])  # argmax over latents per factor


def best_boxes(ax) -> list[tuple[float, float]]:
  """Lower-left corners of the boxes drawn on the heat map."""
  return sorted(tuple(p.get_xy()) for p in ax.patches if isinstance(p, Rectangle))


def test_mutual_information_heatmap_values_names_and_best_marks():
  fig = plots.mutual_information_heatmap(MI, factor_names=["shape", "scale", "x"], title="MI")
  assert len(fig.axes) == 2  # heat map and colour bar
  ax = fig.axes[0]
  np.testing.assert_array_equal(ax.images[0].get_array(), MI)
  assert ax.get_title() == "MI"
  assert [label.get_text() for label in ax.get_xticklabels()] == ["shape", "scale", "x"]
  assert [label.get_text() for label in ax.get_yticklabels()] == ["z0", "z1", "z2", "z3"]
  assert len(ax.texts) == MI.size
  for k in range(MI.shape[0]):
    for f in range(MI.shape[1]):
      text = text_at(ax, f, k)
      assert text.get_text() == f"{MI[k, f]:.2f}"
      assert (text.get_fontweight() == "bold") == (BEST[f] == k)
  assert best_boxes(ax) == sorted((f - 0.5, k - 0.5) for f, k in enumerate(BEST))
  assert "nats" in fig.axes[1].get_ylabel()


def test_mutual_information_heatmap_normalized_by_entropy():
  entropies = np.array([4.0, 2.0, 1.0])
  fig = plots.mutual_information_heatmap(
    MI, latent_names=list("abcd"), factor_names=["u", "v", "w"], normalized_by=entropies
  )
  ax = fig.axes[0]
  np.testing.assert_allclose(ax.images[0].get_array(), MI / entropies)
  assert ax.images[0].get_clim() == (0.0, 1.0)
  assert text_at(ax, 1, 0).get_text() == "0.60"  # 1.2 / 2
  assert [label.get_text() for label in ax.get_yticklabels()] == list("abcd")
  assert "H(v)" in fig.axes[1].get_ylabel() and "H(v)" in ax.get_title()
  # Dividing a column by its entropy keeps its argmax.
  assert best_boxes(ax) == sorted((f - 0.5, k - 0.5) for f, k in enumerate(BEST))


@pytest.mark.parametrize("entropies", [None, np.array([4.0, 2.0, 1.0])])
def test_mutual_information_heatmap_shows_negative_estimates_as_zero(entropies):
  # Chen et al.'s estimates can dip below 0 (sampling noise); MIG clamps them at 0, and so
  # does the picture: no negative cell, value or colour, and the colour bar says so.
  mi = MI.copy()
  mi[3, 0] = -0.03
  fig = plots.mutual_information_heatmap(mi, factor_names=["u", "v", "w"], normalized_by=entropies)
  ax = fig.axes[0]
  assert np.min(ax.images[0].get_array()) == 0.0
  assert ax.images[0].get_clim()[0] == 0.0
  assert text_at(ax, 0, 3).get_text() == "0.00"
  assert "< 0 shown as 0" in fig.axes[1].get_ylabel()
  # Without negative estimates the label does not mention it.
  clean = plots.mutual_information_heatmap(MI, factor_names=["u", "v", "w"])
  assert "shown as 0" not in clean.axes[1].get_ylabel()


@pytest.mark.parametrize(
  "mi, kwargs, match",
  [
    (np.zeros(3), {}, r"mutual_information_heatmap needs mi \[K, F\].*got \(3,\)"),
    (MI, {"factor_names": ["a", "b"]}, r"factor_names \[F\] with K, F = 4, 3.*got 2 names"),
    (MI, {"latent_names": ["a"]}, r"latent_names \[K\].*got 1 names"),
    (MI, {"normalized_by": [1.0, 1.0]}, r"normalized_by \[F\].*got shape \(2,\)"),
    (MI, {"normalized_by": [1.0, 0.0, 1.0]}, r"positive factor entropies"),
  ],
)
def test_mutual_information_heatmap_errors(mi, kwargs, match):
  kwargs = {"factor_names": ["a", "b", "c"], **kwargs}
  with pytest.raises(ValueError, match=match):
    plots.mutual_information_heatmap(mi, **kwargs)


# --- lp_nested_exponents ----------------------------------------------------------------------


def test_lp_nested_exponents_bars_gaussian_line_and_initial_markers():
  exponents, initial = np.array([0.8, 2.3, 1.2]), np.array([2.0, 2.0, 1.5])
  fig = plots.lp_nested_exponents(exponents, initial=initial)
  (ax,) = fig.axes
  np.testing.assert_allclose([bar.get_height() for bar in ax.patches], exponents)
  assert [label.get_text() for label in ax.get_xticklabels()] == ["p0 (root)", "p1", "p2"]
  dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
  assert len(dashed) == 1 and np.all(np.asarray(dashed[0].get_ydata()) == 2.0)
  markers = [line for line in ax.lines if line.get_linestyle() == "None"]
  assert len(markers) == 1
  np.testing.assert_allclose(markers[0].get_ydata(), initial)
  assert {"0.80", "2.30", "1.20"} <= {text.get_text() for text in ax.texts}
  assert ax.get_ylim()[1] > exponents.max()


def test_lp_nested_exponents_labels_and_errors():
  fig = plots.lp_nested_exponents([1.0, 2.0], labels=["root", "colour"])
  assert [label.get_text() for label in fig.axes[0].get_xticklabels()] == ["root", "colour"]
  assert not [line for line in fig.axes[0].lines if line.get_linestyle() == "None"]
  with pytest.raises(ValueError, match=r"lp_nested_exponents needs exponents \[1 \+ S\].*\(1, 2\)"):
    plots.lp_nested_exponents([[1.0, 2.0]])
  with pytest.raises(ValueError, match="positive"):
    plots.lp_nested_exponents([1.0, -2.0])
  with pytest.raises(ValueError, match=r"labels \[1 \+ S\] with 1 \+ S = 2.*got 3 names"):
    plots.lp_nested_exponents([1.0, 2.0], labels=["a", "b", "c"])
  with pytest.raises(ValueError, match=r"initial \[1 \+ S\].*got shape \(3,\)"):
    plots.lp_nested_exponents([1.0, 2.0], initial=[2.0, 2.0, 2.0])


# --- training_curves --------------------------------------------------------------------------


def test_training_curves_one_subplot_per_series_shared_step_axis():
  steps = np.array([0, 100, 200, 300])
  series = {"loss": np.array([9.0, 5.0, 4.0, 3.5]), "kl": np.array([0.0, 2.0, np.nan, 3.0])}
  fig = plots.training_curves(steps, series)
  assert len(fig.axes) == 2
  for ax, (name, values) in zip(fig.axes, series.items(), strict=True):
    assert ax.get_title(loc="left") == name
    (line,) = ax.lines
    np.testing.assert_array_equal(line.get_xdata(), steps)
    np.testing.assert_array_equal(line.get_ydata(), values)
  assert fig.axes[-1].get_xlabel() == "step"
  assert fig.axes[0].get_shared_x_axes().joined(fig.axes[0], fig.axes[1])


def test_training_curves_errors():
  with pytest.raises(ValueError, match=r"training_curves needs series\['kl'\] \[S\] with S = 3"):
    plots.training_curves([0, 1, 2], {"loss": [1.0, 2.0, 3.0], "kl": [1.0, 2.0]})
  with pytest.raises(ValueError, match="at least one series"):
    plots.training_curves([0, 1, 2], {})
  with pytest.raises(ValueError, match=r"training_curves needs steps \[S\]"):
    plots.training_curves(np.zeros((2, 2)), {"loss": [1.0, 2.0]})


# --- metric_summary ---------------------------------------------------------------------------


def test_metric_summary_bars_values_and_order():
  scores = {"mig": 0.31, "dci": np.float32(0.92), "sap": float("nan"), "factor_vae": 1.0}
  fig = plots.metric_summary(scores)
  (ax,) = fig.axes
  bars = sorted(ax.patches, key=lambda bar: bar.get_y())  # top to bottom: the y axis is inverted
  np.testing.assert_allclose([bar.get_width() for bar in bars], [0.31, 0.92, 0.0, 1.0], 1e-6)
  names = sorted(ax.get_yticklabels(), key=lambda label: label.get_position()[1])
  assert [label.get_text() for label in names] == list(scores)
  assert ax.yaxis_inverted()
  assert sorted(text.get_text() for text in ax.texts) == ["0.31", "0.92", "1.00", "nan"]
  assert ax.get_xlim() == (0.0, 1.0)


def test_metric_summary_errors():
  with pytest.raises(ValueError, match=r"scores in \[0, 1\]; got \{'mig': 1.5\}"):
    plots.metric_summary({"sap": 0.2, "mig": 1.5})
  with pytest.raises(ValueError, match="at least one score"):
    plots.metric_summary({})


# --- save_figure and the module's independence from pyplot ------------------------------------


def test_save_figure_writes_png_with_the_figure_aspect(tmp_path):
  fig = plots.latent_traversals(np.full((2, 4, 3, 3, 1), 0.5), values=np.arange(4.0))
  width, height = fig.get_size_inches()
  assert width > height  # 4 columns, 2 rows of square images
  path = plots.save_figure(fig, tmp_path / "report" / "nested" / "traversals.png", dpi=50)
  assert path == tmp_path / "report" / "nested" / "traversals.png"
  assert path.stat().st_size > 0
  with PIL.Image.open(path) as image:
    assert image.format == "PNG"
    assert image.size == (round(width * 50), round(height * 50))
  assert not fig.axes  # closed: emptied


def test_save_figure_rejects_bad_dpi(tmp_path):
  with pytest.raises(ValueError, match="positive dpi"):
    plots.save_figure(plots.metric_summary({"mig": 0.5}), tmp_path / "m.png", dpi=0)


def test_plots_never_import_pyplot():
  """Figures are built with the object API: importing pyplot would make them thread-unsafe."""
  for module in (plots, figures, images, charts):
    tree = ast.parse(pathlib.Path(module.__file__).read_text())
    names = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import | ast.ImportFrom):
        names |= {alias.name for alias in node.names}
      if isinstance(node, ast.ImportFrom):
        names.add(node.module or "")
    assert names and not any("pyplot" in name for name in names), module.__name__


def test_study_figures_without_a_knob_label_methods_not_a_zero():
  """A sweep of methods and seeds only (no knob axis) draws one median per method, unlabelled,
  and one box per method without a '0' tick; with a knob each median carries its value."""
  from disentangle_jax.plots import study

  methods = ["a", "a", "b", "b"]
  ll, mig = [-130.0, -128.0, -121.0, -123.0], [0.1, 0.12, 0.08, 0.09]
  fig = study.tradeoff(methods, [0.0] * 4, ll, mig, knob_name=None)
  ax = fig.axes[0]
  assert not ax.texts
  assert "median per method" in ax.get_title()
  medians = [line for line in ax.get_lines() if line.get_label() in ("a", "b")]
  np.testing.assert_allclose(medians[0].get_xydata(), [[-129.0, 0.11]])
  box = study.mig_distribution(methods, [0.0] * 4, mig, knob_name=None).axes[0]
  assert [t.get_text() for t in box.get_xticklabels()] == []
  labelled = study.tradeoff(methods, [1.0, 2.0, 1.0, 2.0], ll, mig, knob_name="beta").axes[0]
  assert sorted(t.get_text() for t in labelled.texts) == ["1", "1", "2", "2"]
