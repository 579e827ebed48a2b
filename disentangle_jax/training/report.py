"""The evaluation report of a trained model: every metric, the whole-dataset ELBO decomposition,
pictures, and a JSON summary, written to `workdir/report/`.

  report/report.json             every number (scores, MI matrices, decomposition, timings)
  report/traversals.png          one row per latent, the decoder's output as it sweeps the latent
  report/reconstructions.png     data above, reconstructions (at the posterior mean) below
  report/mutual_information.png  latent-by-factor MI / H(factor), Chen et al.'s estimator
  report/exponents.png           learned Lp-nested exponents (ISA prior only)
  report/training_curves.png     the logged loss terms
  report/scores.png              the headline score of every metric
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from disentangle_jax import distributions as dist
from disentangle_jax import metrics, plots
from disentangle_jax import objectives as obj
from disentangle_jax.data.ground_truth import GroundTruthData
from disentangle_jax.training import losses
from disentangle_jax.training.model import Networks, prior_exponents

TRAVERSAL_VALUES = np.linspace(-2.5, 2.5, 9)


def make_encode_fn(networks: Networks, params, *, batch_size: int = 1024) -> metrics.EncodeFn:
  """Jitted images -> (mean, log_var) of the Gaussian latents, numpy in and out; with discrete
  latents (JointVAE) also their category codes (argmax of the logits, int [B, C]), which the
  metrics score as discrete variables.

  Calls are split into `batch_size` pieces and each piece is padded to a power of two (at least
  16), so a handful of compiled programs serve every call size without wasting much work.
  """

  @jax.jit
  def encode(x):
    posterior = networks.encoder.apply(params["encoder"], x)
    codes = [jnp.argmax(logits, axis=-1) for logits in posterior.logits]
    return posterior.mean, posterior.log_var, codes

  def encode_fn(images: np.ndarray):
    images = np.asarray(images, np.float32)
    parts = []
    for start in range(0, len(images), batch_size):
      chunk = images[start : start + batch_size]
      padded_size = max(16, 1 << (len(chunk) - 1).bit_length())
      padded = np.zeros((padded_size, *chunk.shape[1:]), np.float32)
      padded[: len(chunk)] = chunk
      mean, log_var, codes = jax.device_get(encode(padded))
      parts.append((mean[: len(chunk)], log_var[: len(chunk)], [c[: len(chunk)] for c in codes]))
    mean = np.concatenate([p[0] for p in parts])
    log_var = np.concatenate([p[1] for p in parts])
    if not networks.categorical_sizes:
      return mean, log_var
    codes = np.stack([np.concatenate([p[2][i] for p in parts]) for i in range(len(parts[0][2]))])
    return mean, log_var, codes.T.astype(np.int64)

  return encode_fn


def make_decode_fn(config: ml_collections.ConfigDict, networks: Networks, params):
  """Jitted codes [B, D] -> observations [B, H, W, C]: Bernoulli means or Gaussian means."""

  @jax.jit
  def decode(code):
    logits = networks.decoder.apply(params["decoder"], code)
    return jax.nn.sigmoid(logits) if config.likelihood == "bernoulli" else logits

  return lambda code: np.asarray(decode(jnp.asarray(code, jnp.float32)))


def _full_code(networks: Networks, params, images: np.ndarray) -> np.ndarray:
  """The decoder's input at the posterior mode: means, then each categorical's one-hot mode."""
  posterior = networks.encoder.apply(params["encoder"], jnp.asarray(images))
  parts = [posterior.mean] + [dist.categorical_mode_one_hot(lg) for lg in posterior.logits]
  return np.asarray(jnp.concatenate(parts, axis=-1))


def traversal_images(decode_fn, base_code: np.ndarray, latent_dim: int, values: np.ndarray):
  """[K, T, H, W, C]: row k decodes `base_code` with latent k set to each of `values`."""
  codes = np.repeat(base_code[None, None], latent_dim, 0).repeat(len(values), 1)  # [K, T, D]
  for k in range(latent_dim):
    codes[k, :, k] = values
  images = decode_fn(codes.reshape(-1, codes.shape[-1]))
  return images.reshape(latent_dim, len(values), *images.shape[1:])


def whole_dataset_decomposition(
  config: ml_collections.ConfigDict, networks: Networks, params, mean, log_var
) -> dict[str, Any]:
  """MI, TC and dimension-wise KL over every example, with their sum against the KL.

  Entropies use 10,000 samples of q(z) and exact log-sums over all N posteriors
  (`objectives.dataset_elbo_decomposition`). With the normal prior H(z|x) and the cross-entropy
  are analytic, so MI + TC + DWKL is the dataset-average analytic KL exactly; the Monte Carlo KL
  over all N examples (one z each) is the independent check, equal up to its standard error.
  For the ISA prior the cross-entropy is a Monte Carlo estimate and there is no analytic KL.
  """
  log_prior_fn = None
  if networks.prior is not None:
    log_prior_fn = lambda z: losses.prior_log_prob(networks, params, z)  # noqa: E731
  out = obj.dataset_elbo_decomposition(
    jax.random.key(config.seed + 4),
    jnp.asarray(mean),
    jnp.asarray(log_var),
    num_samples=min(len(mean), 10_000),
    log_prior_fn=log_prior_fn,
  )
  result = {k: np.asarray(v).tolist() for k, v in out.items()}
  result["num_examples"] = len(mean)
  result["sum_mi_tc_dwkl"] = result.pop("kl")
  # The independent check of the sum: a Monte Carlo KL, mean_n log q(z_n|x_n) - log p(z_n) with
  # one z_n per example, against the analytic KL. (With analytic H(z|x) and cross-entropy the
  # three terms add up to the analytic KL by construction, so the sum alone checks nothing.)
  mean, log_var = jnp.asarray(mean), jnp.asarray(log_var)
  z = dist.gaussian_sample(jax.random.key(config.seed + 6), mean, log_var)
  log_p = dist.standard_normal_log_prob(z) if log_prior_fn is None else jax.jit(log_prior_fn)(z)
  log_q = jnp.sum(dist.gaussian_log_prob(z, mean, log_var), axis=-1)
  kl_samples = np.asarray(log_q - log_p, np.float64)
  result["monte_carlo_kl"] = float(kl_samples.mean())
  result["monte_carlo_kl_stderr"] = float(kl_samples.std() / np.sqrt(len(kl_samples)))
  if networks.prior is None:
    result["analytic_kl"] = float(
      jnp.mean(dist.gaussian_kl(jnp.asarray(mean), jnp.asarray(log_var)))
    )
  return result


def write_report(
  config: ml_collections.ConfigDict,
  networks: Networks,
  params,
  dataset: GroundTruthData,
  workdir: str | pathlib.Path,
  *,
  evaluation: dict[str, Any] | None = None,
  out_dir: str | pathlib.Path | None = None,
) -> dict[str, Any]:
  """Computes every configured metric and writes the report (see the module docstring).

  Args:
    config: the run's config; `config.eval.metrics` names the metrics, `config.eval.<metric>`
      overrides their parameters.
    networks: the run's networks.
    params: trained parameters.
    dataset: the ground-truth dataset.
    workdir: the run's folder (its metrics.jsonl gives the training curves).
    evaluation: results of `evaluate` (log-likelihood, KL, ...), copied into the summary.
    out_dir: where the report goes; default `workdir/report/`.

  Returns:
    The summary written to report.json.
  """
  out_dir = pathlib.Path(workdir) / "report" if out_dir is None else pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  encode_fn = make_encode_fn(networks, params)
  names = metrics.parse_metric_names(config.eval.metrics)
  summary: dict[str, Any] = {"dataset": config.dataset, "evaluation": evaluation or {}}

  # ------------------------------------------------------------- whole-dataset posteriors
  logging.info("report: encoding all %d examples", dataset.num_examples)
  encoded = metrics.encode_all(dataset, encode_fn, np.random.default_rng(config.seed))
  mean, log_var = encoded.mean, encoded.log_var
  summary["decomposition"] = whole_dataset_decomposition(config, networks, params, mean, log_var)
  # Active latents: an upper bound on the information a latent carries about x, > 0.5 nats.
  activity = metrics.active_latents(mean, log_var)
  summary["active_latents"] = {k: np.asarray(v).tolist() for k, v in activity.items()}
  summary["active_units"] = int(activity["num_active"])

  # ------------------------------------------------------------- metrics
  settings = {name: dict(config.eval.get(name, {})) for name in names}
  subspaces = None
  if networks.prior is not None:
    subspaces = [tuple(range(a, b)) for a, b in networks.prior.tree.subspace_slices()]
  results = metrics.compute_metrics(
    dataset,
    encode_fn,
    names=names,
    seed=config.seed,
    settings=settings,
    subspaces=subspaces,
    encoded=encoded,
  )
  summary["scores"] = metrics.headline_scores(results)
  summary["metrics"] = results
  if networks.prior is not None:
    summary["prior_exponents"] = np.asarray(prior_exponents(params)).tolist()

  # ------------------------------------------------------------- pictures
  _write_pictures(config, networks, params, dataset, out_dir, summary, workdir)
  summary["seconds"] = time.perf_counter() - start
  (out_dir / "report.json").write_text(json.dumps(summary, indent=2, default=_json_default))
  logging.info("report written to %s (%.0f s)", out_dir, summary["seconds"])
  return summary


def _json_default(value):
  return value.tolist() if hasattr(value, "tolist") else str(value)


def _write_pictures(config, networks, params, dataset, out_dir, summary, workdir):
  rng = np.random.default_rng(config.seed + 5)
  images = dataset.observations_from_indices(
    np.sort(rng.choice(dataset.num_examples, 10, replace=False)), rng
  )
  decode_fn = make_decode_fn(config, networks, params)
  codes = _full_code(networks, params, images)
  plots.save_figure(
    plots.reconstructions(images, decode_fn(codes)), out_dir / "reconstructions.png"
  )

  # Rows labelled with the information bound behind the report's active latents.
  bound = summary["active_latents"]["information_bound_nats"]
  active = set(summary["active_latents"]["active_latents"])
  names = [
    f"z{j}{'' if j in active else ' (inactive)'}\nI <= {b:.2f} nats" for j, b in enumerate(bound)
  ]
  traversals = traversal_images(decode_fn, codes[0], networks.latent_dim, TRAVERSAL_VALUES)
  plots.save_figure(
    plots.latent_traversals(traversals, values=TRAVERSAL_VALUES, latent_names=names),
    out_dir / "traversals.png",
  )

  for name in ("mig_chen", "mig_dlib"):
    if name in summary["metrics"]:
      result = summary["metrics"][name]
      figure = plots.mutual_information_heatmap(
        np.asarray(result["mutual_information"]),
        latent_names=result.get("variable_names"),
        factor_names=list(dataset.factor_names),
        normalized_by=np.asarray(result["factor_entropies"]),
        title=f"I(z_j; v_k) / H(v_k) ({'Chen et al.' if name == 'mig_chen' else 'binned means'})",
      )
      plots.save_figure(figure, out_dir / "mutual_information.png")
      break

  if networks.prior is not None:
    plots.save_figure(
      plots.lp_nested_exponents(
        np.asarray(summary["prior_exponents"]), initial=np.asarray(networks.prior.exponents)
      ),
      out_dir / "exponents.png",
    )

  log_file = pathlib.Path(workdir) / "metrics.jsonl"
  if log_file.exists():
    lines = [json.loads(line) for line in log_file.read_text().splitlines() if line]
    if lines:
      keys = [k for k in lines[-1] if k not in ("step", "steps_per_second")]
      series = {k: np.array([line.get(k, np.nan) for line in lines]) for k in keys}
      figure = plots.training_curves(np.array([line["step"] for line in lines]), series)
      plots.save_figure(figure, out_dir / "training_curves.png")

  if summary["scores"]:
    plots.save_figure(plots.metric_summary(summary["scores"]), out_dir / "scores.png")
