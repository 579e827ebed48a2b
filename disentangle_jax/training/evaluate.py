"""Evaluation of a trained model: eval.json (reconstruction, KL, ELBO decomposition) and report/.

evaluate(config, networks, params, dataset)          the numbers of eval.json
evaluate_run(run, networks, state, dataset)          after training (one model or several)
evaluate_checkpoint(workdir, config, step=...)       any saved checkpoint, later
"""

from __future__ import annotations

import json
import math
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from disentangle_jax import data, metrics
from disentangle_jax import distributions as dist
from disentangle_jax import objectives as obj
from disentangle_jax.data.ground_truth import GroundTruthData
from disentangle_jax.training import config as config_lib
from disentangle_jax.training.checkpoint import Checkpointer
from disentangle_jax.training.loop import CONFIG_FILE, STATUS_FILE, NonFiniteError, Run, single_run
from disentangle_jax.training.losses import encode_decode, log_likelihood, prior_log_prob
from disentangle_jax.training.model import Networks, prior_exponents
from disentangle_jax.training.report import write_report
from disentangle_jax.training.train_step import build_trainer, unstack


def evaluate(
  config: ml_collections.ConfigDict, networks: Networks, params, dataset: GroundTruthData
) -> dict[str, float]:
  """Scores a model on `config.eval.num_examples` examples drawn with a fixed seed.

  Returns (nats, averaged over the examples): "log_likelihood" E_q[log p(x|z)] with one z per
  image (the ISA-VAE paper's reconstruction measure), "kl" to the prior, "elbo", the
  whole-sample ELBO decomposition "mi", "tc", "dwkl" (their sum is the KL), and
  "active_units", the number of latents that carry more than 0.5 nats about x (an upper bound,
  `metrics.active_latents`; the report applies the same criterion to the whole dataset).

  Raises:
    NonFiniteError: a score is NaN or infinite (the model overflows on these images).
  """
  rng = np.random.default_rng(config.seed + 1)
  num = min(config.eval.num_examples, dataset.num_examples)
  indices = np.sort(rng.choice(dataset.num_examples, size=num, replace=False))

  @jax.jit
  def score(x, key):
    posterior, z, logits_x = encode_decode(networks, params, x, key, config.model.temperature)
    ll = log_likelihood(config.likelihood, logits_x, x)
    if networks.prior is None:
      kl = dist.gaussian_kl(posterior.mean, posterior.log_var)
    else:
      kl = obj.monte_carlo_kl(
        z, posterior.mean, posterior.log_var, prior_log_prob(networks, params, z)
      )
    return ll, kl, posterior.mean, posterior.log_var

  outputs = []
  key = jax.random.key(config.seed + 2)
  for start in range(0, num, config.eval.batch_size):
    chunk = indices[start : start + config.eval.batch_size]
    x = jnp.asarray(dataset.observations_from_indices(chunk, rng))
    outputs.append(score(x, jax.random.fold_in(key, start)))
  ll, kl, mean, log_var = (jnp.concatenate(parts) for parts in zip(*outputs, strict=True))

  log_prior_fn = None
  if networks.prior is not None:
    log_prior_fn = lambda z: prior_log_prob(networks, params, z)  # noqa: E731
  decomposition = obj.dataset_elbo_decomposition(
    jax.random.key(config.seed + 3),
    mean,
    log_var,
    num_samples=min(num, 10_000),
    log_prior_fn=log_prior_fn,
  )
  results = {
    "num_examples": num,
    "log_likelihood": float(jnp.mean(ll)),
    "kl": float(jnp.mean(kl)),
    "elbo": float(jnp.mean(ll - kl)),
    "mi": float(decomposition["mi"]),
    "tc": float(decomposition["tc"]),
    "dwkl": float(decomposition["dwkl"]),
    "active_units": int(
      metrics.active_latents(np.asarray(mean), np.asarray(log_var))["num_active"]
    ),
  }
  if networks.prior is not None:
    results["prior_exponents"] = [float(e) for e in prior_exponents(params)]
  bad = [k for k, v in results.items() if isinstance(v, float) and not math.isfinite(v)]
  if bad:
    raise NonFiniteError(
      f"Evaluation gave non-finite {', '.join(bad)} ({', '.join(str(results[k]) for k in bad)}) "
      f"on {num} examples: the parameters are finite but the model overflows on these images; "
      "eval.json was not written."
    )
  return results


def evaluate_and_report(
  config, networks, params, step: int, dataset, workdir: pathlib.Path, out_dir: pathlib.Path
) -> dict:
  """eval.json and (with eval.report) report/ of one model in out_dir."""
  results = evaluate(config, networks, params, dataset)
  results["step"] = int(step)
  out_dir.mkdir(parents=True, exist_ok=True)
  (out_dir / "eval.json").write_text(json.dumps(results, indent=2))
  logging.info("evaluation: %s", json.dumps(results))
  if config.eval.report:
    summary = write_report(
      config, networks, params, dataset, workdir, evaluation=results, out_dir=out_dir / "report"
    )
    results["scores"] = summary["scores"]
  return results


def evaluate_run(
  run: Run,
  networks: Networks,
  state,
  dataset: GroundTruthData,
  diverged=None,
  *,
  out_root: pathlib.Path | None = None,
):
  """`evaluate_and_report` of every model of a trained run, in its out_dir.

  A model that diverged gets an eval.json saying at which step, and no report.

  Args:
    run, networks, state, dataset: the trained run.
    diverged: {model name: step} of the models that diverged.
    out_root: write under this folder instead of the run's workdir (same relative layout);
      the training curves still come from the run's own metrics.jsonl files.

  Returns:
    One model's results (also in its eval.json); for several, {name: results}, also written
    to the run's workdir/eval.json.
  """
  diverged = diverged or {}
  root = run.workdir if out_root is None else out_root
  out_dirs = [root / d.relative_to(run.workdir) for d in run.out_dirs]
  results = {}
  for i, (config, name, metrics_dir, out_dir) in enumerate(
    zip(run.configs, run.names, run.out_dirs, out_dirs, strict=True)
  ):
    model_state = state if len(run.configs) == 1 else unstack(state, i)
    if name in diverged:
      results[name] = {"diverged_at": diverged[name], "step": int(model_state.step)}
      out_dir.mkdir(parents=True, exist_ok=True)
      (out_dir / "eval.json").write_text(json.dumps(results[name], indent=2))
      continue
    results[name] = evaluate_and_report(
      config, networks, model_state.params, int(model_state.step), dataset, metrics_dir, out_dir
    )
  if len(run.configs) == 1:
    return results[run.names[0]]
  (root / "eval.json").write_text(json.dumps(results, indent=2))
  return results


def evaluate_checkpoint(
  workdir: str, config: ml_collections.ConfigDict | None = None, *, step: int | None = None
) -> dict:
  """Evaluates a saved run: eval.json and the report (metrics, pictures) of one checkpoint.

  The latest checkpoint's go to the workdir (`eval.json`, `report/`), replacing the training
  run's; an earlier step's go to `workdir/step_<step>/`, so the final report is kept. A
  multi-seed run is evaluated seed by seed, into `seed_<seed>/` below those folders.

  Args:
    workdir: the run's folder (checkpoints/ and config.json).
    config: the run's config; by default the one it saved (`workdir/config.json`), whose
      evaluation settings can be changed here (e.g. `config.eval.metrics`).
    step: the checkpoint; by default the latest.

  Returns:
    The evaluation results with the headline scores under "scores" ({"seed_<seed>": results}
    for a multi-seed run).
  """
  workdir = pathlib.Path(workdir)
  config = config_lib.validate(config or config_lib.load_saved_config(workdir / CONFIG_FILE))
  checkpointer = Checkpointer(workdir)
  latest = checkpointer.latest_step()
  step = latest if step is None else step
  if step is None:
    checkpointer.close()
    raise FileNotFoundError(
      f"No checkpoint in {checkpointer.directory}: train first "
      f"(python experiments/main.py --config=... --workdir={workdir})."
    )
  dataset = data.get_dataset(config.dataset, **config_lib.dataset_kwargs(config))
  trainer = build_trainer(config, dataset.observation_shape, dataset.num_examples)
  run = single_run(config, workdir)
  like = trainer.init_models(run.configs)
  like = unstack(like, 0) if len(run.configs) == 1 else like
  try:
    state = checkpointer.restore(step, like)
  finally:
    checkpointer.close()
  logging.info("evaluating the checkpoint of step %d in %s", step, checkpointer.directory)
  # An earlier step's files go to step_<step>/, keeping the run's own.
  out_root = workdir if step == latest else workdir / f"step_{step}"
  return evaluate_run(run, trainer.networks, state, dataset, _diverged(run), out_root=out_root)


def _diverged(run: Run) -> dict[str, int]:
  out = {}
  for name, out_dir in zip(run.names, run.out_dirs, strict=True):
    if (out_dir / STATUS_FILE).exists():
      out[name] = json.loads((out_dir / STATUS_FILE).read_text())["diverged_at"]
  return out
