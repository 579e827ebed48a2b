"""The evaluation report: written by the training run and by evaluate_checkpoint, on a small
dSprites grid stored as an npz file (so every metric runs over the whole dataset in seconds)."""

import itertools
import json

import numpy as np
import pytest

from disentangle_jax.training import config as config_lib
from disentangle_jax.training import evaluate_checkpoint, train_and_evaluate
from tests.data.test_real import _write_fake_npz
from tests.training.test_config import CONFIG_NAMES, load
from tests.training.test_train import tiny

# 3 shapes x 2 scales x 3 orientations x 4 x 4 positions = 288 images.
GRID = np.array(
  list(itertools.product(range(3), [0, 5], [0, 13, 26], [0, 10, 20, 31], [2, 12, 22, 30]))
)
PICTURES = ("traversals", "reconstructions", "mutual_information", "training_curves", "scores")


def small_config(name, npz_path, **overrides):
  settings = {"eval.report": True, "eval.mig_chen.num_samples": 100, "eval.mig_dlib.num_train": 300}
  for metric in ("beta_vae", "factor_vae", "dci", "sap", "modularity"):
    settings[f"eval.{metric}.num_train"] = 300
  settings.update({"eval.beta_vae.num_eval": 100, "eval.factor_vae.num_eval": 100})
  settings.update({f"eval.{m}.num_test": 100 for m in ("dci", "sap", "modularity")})
  settings.update(overrides)
  settings.update({"dataset_kwargs.source": None, "dataset_kwargs.path": str(npz_path)})
  return tiny(name, dataset="dsprites_npz", **settings)


@pytest.fixture(scope="module")
def npz_path(tmp_path_factory):
  path = tmp_path_factory.mktemp("npz") / "small_dsprites.npz"
  _write_fake_npz(path, GRID)
  return path


def test_training_writes_every_metric_and_picture(npz_path, tmp_path):
  results = train_and_evaluate(small_config("beta_vae", npz_path), str(tmp_path))
  report = json.loads((tmp_path / "report" / "report.json").read_text())
  assert set(report["metrics"]) == {
    "mig_chen", "mig_dlib", "beta_vae", "factor_vae", "dci", "sap", "modularity"
  }  # fmt: skip
  assert results["scores"] == report["scores"]
  for score in report["scores"].values():
    assert 0.0 <= score <= 1.0
  # The whole-dataset decomposition adds up to the analytic KL of all 288 posteriors, and the
  # Monte Carlo KL (one z per example) agrees with it within 4 standard errors.
  decomposition = report["decomposition"]
  assert decomposition["num_examples"] == len(GRID)
  assert decomposition["sum_mi_tc_dwkl"] == pytest.approx(decomposition["analytic_kl"], rel=1e-4)
  difference = decomposition["monte_carlo_kl"] - decomposition["analytic_kl"]
  assert abs(difference) < 4 * decomposition["monte_carlo_kl_stderr"]
  for name in PICTURES:
    assert (tmp_path / "report" / f"{name}.png").stat().st_size > 1000, name


def test_evaluate_checkpoint_any_step_and_metrics(npz_path, tmp_path):
  train_and_evaluate(small_config("isa_vae", npz_path, **{"eval.report": False}), str(tmp_path))
  assert not (tmp_path / "report").exists()
  config = config_lib.load_saved_config(tmp_path / "config.json")
  with config.unlocked():
    config.eval.metrics, config.eval.report = "mig_chen", True
  results = evaluate_checkpoint(str(tmp_path), config, step=2)
  # An earlier step's evaluation goes to step_2/; the run's own eval.json (step 4) is kept.
  out = tmp_path / "step_2"
  assert json.loads((out / "eval.json").read_text())["step"] == results["step"] == 2
  assert json.loads((tmp_path / "eval.json").read_text())["step"] == 4
  assert not (tmp_path / "report").exists()
  report = json.loads((out / "report" / "report.json").read_text())
  # The ISA prior adds the subspace MIG (3 subspaces of 6 latents) and the exponents.
  assert set(report["metrics"]) == {"mig_chen", "mig_chen_subspace"}
  assert report["metrics"]["mig_chen_subspace"]["groups"] == [
    list(range(0, 6)), list(range(6, 12)), list(range(12, 18))
  ]  # fmt: skip
  assert len(report["prior_exponents"]) == 4
  assert (out / "report" / "exponents.png").exists()
  assert (out / "report" / "training_curves.png").exists()  # from the workdir's metrics.jsonl
  # The latest step's evaluation replaces the workdir's own.
  with config.unlocked():
    config.eval.metrics = "mig_dlib"
  assert evaluate_checkpoint(str(tmp_path), config)["step"] == 4
  assert set(json.loads((tmp_path / "report" / "report.json").read_text())["metrics"]) == {
    "mig_dlib"
  }


def test_evaluate_checkpoint_errors(npz_path, tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json not found"):
    evaluate_checkpoint(str(tmp_path))
  config = small_config("vae", npz_path)
  with pytest.raises(FileNotFoundError, match="No checkpoint"):
    evaluate_checkpoint(str(tmp_path), config)
  config = small_config("vae", npz_path, **{"eval.metrics": "mig,dci"})
  with pytest.raises(ValueError, match="Unknown metric 'mig'"):
    train_and_evaluate(config, str(tmp_path))


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_saved_config_loads_back_equal(name, tmp_path):
  config = load(name, "quick")
  (tmp_path / "config.json").write_text(config.to_json_best_effort())
  assert config_lib.load_saved_config(tmp_path / "config.json").to_dict() == config.to_dict()


def test_encode_fn_padding_gives_the_plain_encoder_output():
  # Pieces of 100 padded to 128 and 64: the rows kept are those of one unpadded call.
  import jax

  from disentangle_jax import models
  from disentangle_jax.training.model import Networks
  from disentangle_jax.training.report import make_encode_fn

  encoder = models.make_encoder("mlp", latent_dim=3, hidden=(16,))
  params = {"encoder": encoder.init(jax.random.key(0), np.zeros((1, 8, 8, 1), np.float32))}
  networks = Networks(encoder, None, None, None, 3, (), (8, 8, 1))
  images = np.random.default_rng(0).random((250, 8, 8, 1), dtype=np.float32)
  mean, log_var = make_encode_fn(networks, params, batch_size=100)(images)
  expected = encoder.apply(params["encoder"], images)
  np.testing.assert_allclose(mean, expected.mean, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(log_var, expected.log_var, rtol=1e-6, atol=1e-6)


def test_joint_vae_report_scores_its_categorical_latent_and_names_active_latents(
  npz_path, tmp_path
):
  """JointVAE's 3-way categorical latent is scored as a discrete variable (a row "c0" of the MI
  matrix, a code column for DCI), and the report states its active-latent criterion with the
  information bound of every latent."""
  config = small_config("joint_vae", npz_path, **{"eval.metrics": "mig_chen,dci"})
  train_and_evaluate(config, str(tmp_path))
  report = json.loads((tmp_path / "report" / "report.json").read_text())
  names = report["metrics"]["mig_chen"]["variable_names"]
  assert names[-1] == "c0" and len(names) == config.model.latent_dim + 1
  assert len(report["metrics"]["mig_chen"]["mutual_information"]) == len(names)
  activity = report["active_latents"]
  assert "nats" in activity["criterion"] and len(activity["information_bound_nats"]) == 6
  assert report["active_units"] == len(activity["active_latents"])
  assert (tmp_path / "report" / "traversals.png").exists()
