"""Figures of a sweep's study: the disentanglement / reconstruction trade-off over models, the
spread of MIG over seeds, and Chen et al.'s plot of each latent against each factor."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from disentangle_jax.plots.figures import new_figure

_MARKERS = "osD^vP*X"


def _by_method(methods: Sequence[str]) -> dict[str, np.ndarray]:
  methods = np.asarray(methods)
  return {m: np.flatnonzero(methods == m) for m in dict.fromkeys(methods.tolist())}


def _check_lengths(**arrays) -> int:
  lengths = {k: len(v) for k, v in arrays.items()}
  if len(set(lengths.values())) != 1:
    raise ValueError(f"study plots need one value per model in every array; got {lengths}")
  return next(iter(lengths.values()))


def tradeoff(
  methods: Sequence[str],
  knob: Sequence[float],
  log_likelihood: Sequence[float],
  mig: Sequence[float],
  *,
  knob_name: str | None = "beta",
  mig_name: str = "MIG (Chen et al.)",
) -> Figure:
  """MIG against reconstruction log-likelihood, one point per model, medians per knob joined.

  The ISA-VAE paper's dSprites figure: a method that disentangles at a smaller cost in
  reconstruction sits up and to the right. Each method has its colour; its models are points,
  and the median over seeds of each knob value (e.g. beta) is a larger marker, joined in knob
  order and labelled with the value.

  Args:
    methods: [M] method name of each model.
    knob: [M] the swept hyperparameter of each model.
    log_likelihood: [M] E_q[log p(x|z)] in nats (higher is better).
    mig: [M] MIG of each model.
    knob_name, mig_name: axis and label names; knob_name None for a sweep with no knob but
      seeds (one median per method, unlabelled).

  Returns:
    A figure with one axes.
  """
  _check_lengths(methods=methods, knob=knob, log_likelihood=log_likelihood, mig=mig)
  knob, ll, mig = (np.asarray(a, np.float64) for a in (knob, log_likelihood, mig))
  fig = new_figure(7.0, 5.0)
  ax = fig.add_subplot(1, 1, 1)
  for i, (method, index) in enumerate(_by_method(methods).items()):
    color = f"C{i}"
    ax.scatter(ll[index], mig[index], s=14, alpha=0.45, color=color, marker=_MARKERS[i % 8])
    values = np.unique(knob[index])
    med_ll = [np.nanmedian(ll[index][knob[index] == v]) for v in values]
    med_mig = [np.nanmedian(mig[index][knob[index] == v]) for v in values]
    ax.plot(med_ll, med_mig, "-", color=color, marker=_MARKERS[i % 8], ms=7, label=method)
    for v, x, y in zip(values, med_ll, med_mig, strict=True):
      if knob_name is not None:
        ax.annotate(f"{v:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
  ax.set_xlabel("reconstruction log-likelihood E_q[log p(x|z)] (nats)")
  ax.set_ylabel(mig_name)
  medians = f"medians per {knob_name}, joined" if knob_name else "large: median per method"
  ax.set_title(f"{mig_name} against reconstruction\n(small: models; {medians})", fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return fig


def mig_distribution(
  methods: Sequence[str],
  knob: Sequence[float],
  mig: Sequence[float],
  *,
  knob_name: str | None = "beta",
  mig_name: str = "MIG (Chen et al.)",
) -> Figure:
  """The spread of MIG over seeds, per method and knob value: a box per group, seeds as dots.

  Locatello et al. found seeds to matter as much as methods; this shows how much.

  Args:
    methods: [M] method name of each model.
    knob: [M] the swept hyperparameter of each model.
    mig: [M] MIG of each model.
    knob_name, mig_name: axis and label names; knob_name None for a sweep with no knob (one
      box per method).

  Returns:
    A figure with one axes.
  """
  _check_lengths(methods=methods, knob=knob, mig=mig)
  knob, mig = np.asarray(knob, np.float64), np.asarray(mig, np.float64)
  groups = _by_method(methods)
  values = np.unique(knob)
  fig = new_figure(max(6.0, 0.5 * len(values) * len(groups) + 2), 4.5)
  ax = fig.add_subplot(1, 1, 1)
  width = 0.8 / len(groups)
  rng = np.random.default_rng(0)  # horizontal jitter of the dots only
  for i, (method, index) in enumerate(groups.items()):
    positions, data = [], []
    for j, v in enumerate(values):
      points = mig[index][knob[index] == v]
      points = points[np.isfinite(points)]
      if len(points):
        positions.append(j + (i - (len(groups) - 1) / 2) * width)
        data.append(points)
    if not data:
      continue
    box = ax.boxplot(data, positions=positions, widths=0.9 * width, patch_artist=True)
    for patch in box["boxes"]:
      patch.set(facecolor=f"C{i}", alpha=0.35)
    for x, points in zip(positions, data, strict=True):
      jitter = rng.uniform(-0.2, 0.2, len(points)) * width
      ax.scatter(x + jitter, points, s=10, color=f"C{i}", zorder=3)
    ax.plot([], [], "s", color=f"C{i}", label=method)
  if knob_name is None:
    ax.set_xticks([])
    ax.set_title(f"{mig_name} over seeds, per method", fontsize=10)
  else:
    ax.set_xticks(range(len(values)), [f"{v:g}" for v in values])
    ax.set_xlabel(knob_name)
    ax.set_title(f"{mig_name} over seeds, per method and {knob_name}", fontsize=10)
  ax.set_ylabel(mig_name)
  ax.grid(axis="y", alpha=0.3)
  ax.legend(fontsize=8)
  return fig


def latents_against_factors(
  means: np.ndarray,
  *,
  factor_names: Sequence[str],
  factor_values: Sequence[np.ndarray],
  group_names: Sequence[str],
  latent_names: Sequence[str] | None = None,
  title: str | None = None,
) -> Figure:
  """Chen et al.'s plot: each latent's mean code against each factor, one line per group.

  Row j, column k shows E[mu_j(x) | v_k = v, group = g] against v for every group g (on
  dSprites the shapes): a disentangled latent moves with one factor and is flat in the others,
  the same for every shape.

  Args:
    means: [J, F, G, V] the averaged codes: latent j, factor k, group g, value index v (NaN
      where factor k has fewer than V values).
    factor_names: [F] column titles.
    factor_values: F arrays, factor k's values (length <= V).
    group_names: [G] the groups' names (legend).
    latent_names: [J] row names; default z0, z1, ...
    title: figure title.

  Returns:
    A figure of J x F axes.
  """
  means = np.asarray(means, np.float64)
  if means.ndim != 4 or means.shape[1] != len(factor_names) or means.shape[2] != len(group_names):
    raise ValueError(
      f"latents_against_factors needs means [J, F, G, V] with F = {len(factor_names)} and "
      f"G = {len(group_names)}; got {means.shape}"
    )
  num_latents, num_factors = means.shape[:2]
  latent_names = latent_names or [f"z{j}" for j in range(num_latents)]
  fig = new_figure(2.2 * num_factors + 0.6, 1.5 * max(num_latents, 1) + 0.8)
  axes = fig.subplots(max(num_latents, 1), num_factors, squeeze=False, sharey="row")
  for j in range(num_latents):
    for k in range(num_factors):
      ax = axes[j, k]
      values = np.asarray(factor_values[k], np.float64)
      for g, name in enumerate(group_names):
        ax.plot(values, means[j, k, g, : len(values)], color=f"C{g}", lw=1.2, label=name)
      if j == 0:
        ax.set_title(factor_names[k], fontsize=9)
      if k == 0:
        ax.set_ylabel(latent_names[j], fontsize=9)
      ax.tick_params(labelsize=7)
  axes[0, -1].legend(fontsize=7, loc="upper right")
  if title:
    fig.suptitle(title, fontsize=10)
  return fig
