"""Tests of the disentanglement_lib scores: BetaVAE, FactorVAE, DCI, SAP, modularity/explicitness.

Each score is pinned on the toy dataset of `toy.py`, whose observations are the factors:
- the "good" code is the scaled factors plus N(0, 0.02^2) noise. Consecutive values of a factor
  are at least 1/9 apart (10 values in [0, 1]), 5.5 noise standard deviations, so every latent
  identifies its factor almost perfectly and every score should be near its top;
- the "random" code is N(0, 1) noise: classifiers are at chance (1/F for the factor-naming
  scores, AUC 1/2), importances and gaps are spread evenly, scores near 0;
- the "rotated" code rotates the pairs of latents (0, 1) and (2, 3) by 45 degrees, so each of
  those latents carries two factors in equal parts. Rotation-sensitive scores (FactorVAE, DCI
  disentanglement and completeness, SAP, modularity, and on this symmetric rotation also
  BetaVAE) drop well below the good code's; explicitness (a linear read-out) does not.
Permuting the latents must change nothing for every score (DCI with trees: up to which of
several equally good splits a tree takes, as trees visit features in a seeded random order;
BetaVAE: up to the logistic regression solver's tolerance). Rescaling a latent by a positive
constant changes nothing for FactorVAE (variances are normalised by the global variance),
modularity (bins span each latent's range), explicitness (codes are standardised), DCI with
trees (splits depend on the order of values only) and continuous SAP (a correlation). Scaling by
a power of two is exact in floating point, so those comparisons are exact or to rounding in
sums. BetaVAE (L2-penalised logistic regression on |code differences|) and discrete SAP
(L2-penalised SVM with C = 0.01) are not scale-invariant and are not tested for it.
"""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.ensemble
import sklearn.tree

from disentangle_jax.metrics import beta_vae, dci, factor_vae, modularity, sap
from tests.metrics.toy import FactorImages, factor_code, random_code, rotation

DATASET = FactorImages()  # factor sizes (3, 6, 10, 8): chance level 1/4 for factor-naming scores
# DCI's gradient-boosted trees fit one tree per class and stage; fewer classes keep it fast.
DCI_DATASET = FactorImages((2, 3, 4, 3))
NUM_FACTORS = DATASET.num_factors
NOISE = 0.02
PERMUTATION = np.array([2, 0, 3, 1])
SCALES = np.array([4.0, 0.25, 2.0, 8.0])  # powers of two: rescaling is exact


def good():
  return factor_code(noise=NOISE)


def rotated():
  return factor_code(noise=NOISE, mixing=rotation(NUM_FACTORS))


def random():
  return random_code(NUM_FACTORS)


def permuted(representation_fn):
  return lambda images: representation_fn(images)[:, PERMUTATION]


def rescaled(representation_fn):
  return lambda images: representation_fn(images) * SCALES


def scalars(result):
  return {k: v for k, v in result.items() if isinstance(v, float | int)}


# ------------------------------------------------------------------------------------ BetaVAE

BETA_KW = {"num_train": 400, "num_eval": 400, "batch_size_points": 16}


def test_beta_vae_features_mean_absolute_difference():
  codes1 = np.array([[[0.0, 1.0], [2.0, 3.0]]])
  codes2 = np.array([[[1.0, 1.0], [0.0, 4.0]]])
  np.testing.assert_allclose(beta_vae.beta_vae_features(codes1, codes2), [[1.5, 0.5]])


def test_beta_vae_good_random_rotated():
  good_score = beta_vae.compute_beta_vae(DATASET, good(), 0, **BETA_KW)
  random_score = beta_vae.compute_beta_vae(DATASET, random(), 0, **BETA_KW)
  rotated_score = beta_vae.compute_beta_vae(DATASET, rotated(), 0, **BETA_KW)
  # Good code: the shared factor's latent has mean |difference| ~ 0.02 * 2 / sqrt(pi) ~ 0.02,
  # every other latent ~ 1/3 (|x - x'| of uniform values in [0, 1]): linearly separable.
  assert good_score["beta_vae_score"] > 0.9
  assert good_score["train_accuracy"] > 0.9
  # Random code: features carry no information; chance is 1/4 (binomial sd ~0.02 on 400).
  assert abs(random_score["beta_vae_score"] - 1 / NUM_FACTORS) < 0.1
  # 45-degree pairs: fixing factor 0 or factor 1 shrinks latents 0 and 1 equally, so only the
  # different spreads of the two factors tell them apart.
  assert rotated_score["beta_vae_score"] < good_score["beta_vae_score"] - 0.2


def test_beta_vae_permutation_invariant_up_to_solver_tolerance():
  base = beta_vae.compute_beta_vae(DATASET, rotated(), 3, **BETA_KW)
  perm = beta_vae.compute_beta_vae(DATASET, permuted(rotated()), 3, **BETA_KW)
  # lbfgs on permuted features converges to the same optimum up to its tolerance: at most a
  # point or two near the decision boundary may flip.
  assert perm["beta_vae_score"] == pytest.approx(base["beta_vae_score"], abs=2 / 400)
  assert perm["train_accuracy"] == pytest.approx(base["train_accuracy"], abs=2 / 400)


def test_beta_vae_needs_two_factors_and_labels():
  with pytest.raises(ValueError, match="two factors"):
    beta_vae.compute_beta_vae(FactorImages((5,)), good(), 0, num_train=10, num_eval=10)
  features = np.ones((4, 2))
  with pytest.raises(ValueError, match="single factor"):
    beta_vae.beta_vae_classifier_accuracy(features, np.zeros(4), features, np.zeros(4))


# ---------------------------------------------------------------------------------- FactorVAE

FACTOR_VAE_KW = {"num_train": 400, "num_eval": 400, "num_variance_estimate": 1000}


def test_factor_vae_majority_vote_by_hand():
  train = np.array([[8, 2], [1, 4], [0, 0]])  # latents x factors
  # Latent 0 -> factor 0, latent 1 -> factor 1, latent 2 (no votes) -> factor 0 (argmax).
  assert factor_vae.factor_vae_majority_vote_accuracy(train) == pytest.approx(12 / 15)
  evaluation = np.array([[5, 5], [3, 2], [1, 0]])
  assert factor_vae.factor_vae_majority_vote_accuracy(train, evaluation) == pytest.approx(8 / 16)


def test_factor_vae_vote_matrix_counts():
  votes = factor_vae.factor_vae_vote_matrix(
    np.array([0, 1, 1, 0, 1]), np.array([2, 0, 0, 2, 1]), 2, 3
  )
  np.testing.assert_array_equal(votes, [[0, 0, 2], [2, 1, 0]])


def test_factor_vae_prunes_by_standard_deviation():
  # sqrt(0.0026) = 0.051 >= 0.05 is kept; sqrt(0.0024) = 0.049 and zero variance are not.
  variances = np.array([0.0026, 0.0024, 0.0, 1.0])
  np.testing.assert_array_equal(factor_vae.active_latents(variances, 0.05), [0, 3])
  np.testing.assert_array_equal(factor_vae.active_latents(variances, 0.0), [0, 1, 3])


def test_factor_vae_good_random_rotated():
  good_score = factor_vae.compute_factor_vae(DATASET, good(), 0, **FACTOR_VAE_KW)
  random_score = factor_vae.compute_factor_vae(DATASET, random(), 0, **FACTOR_VAE_KW)
  rotated_score = factor_vae.compute_factor_vae(DATASET, rotated(), 0, **FACTOR_VAE_KW)
  # Good code: fixing factor k leaves latent k with variance 0.02^2 against >= 0.1 globally.
  assert good_score["factor_vae_score"] > 0.9
  assert good_score["num_active_latents"] == NUM_FACTORS
  # Random code: the argmin is uniform whatever factor is fixed; chance is 1/4.
  assert abs(random_score["factor_vae_score"] - 1 / NUM_FACTORS) < 0.1
  # Rotated: factors 0 and 1 both vote for latent 0 or 1; one latent can name only one of them.
  assert rotated_score["factor_vae_score"] < good_score["factor_vae_score"] - 0.3


def test_factor_vae_permutation_and_scale_invariant():
  base = factor_vae.compute_factor_vae(DATASET, rotated(), 5, **FACTOR_VAE_KW)
  for transform in (permuted, rescaled):
    other = factor_vae.compute_factor_vae(DATASET, transform(rotated()), 5, **FACTOR_VAE_KW)
    assert other["factor_vae_score"] == base["factor_vae_score"]
    assert other["train_accuracy"] == base["train_accuracy"]


def test_factor_vae_collapsed_latents():
  def with_collapsed(images):
    codes = good()(images)
    return np.concatenate([codes, np.full((len(codes), 1), 3.0), 0.01 * codes[:, :1]], axis=1)

  result = factor_vae.compute_factor_vae(DATASET, with_collapsed, 0, **FACTOR_VAE_KW)
  assert result["active_latents"] == [0, 1, 2, 3]
  assert result["factor_vae_score"] > 0.9
  constant = factor_vae.compute_factor_vae(
    DATASET, lambda images: np.zeros((len(images), 3)), 0, **FACTOR_VAE_KW
  )
  assert constant["num_active_latents"] == 0
  assert constant["factor_vae_score"] == 0.0


# ---------------------------------------------------------------------------------------- DCI

DCI_KW = {"num_train": 300, "num_test": 200}


def test_dci_scores_identity_and_uniform():
  identity = dci.dci_scores(np.eye(4))
  assert identity["dci_disentanglement"] == pytest.approx(1.0)
  assert identity["dci_completeness"] == pytest.approx(1.0)
  uniform = dci.dci_scores(np.ones((3, 4)))
  assert uniform["dci_disentanglement"] == pytest.approx(0.0, abs=1e-12)
  assert uniform["dci_completeness"] == pytest.approx(0.0, abs=1e-12)
  # An unused latent (zero row) has weight 0 and does not lower disentanglement.
  unused = dci.dci_scores(np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
  assert unused["dci_disentanglement"] == pytest.approx(1.0)
  assert unused["dci_completeness"] == pytest.approx(1.0)
  zero = dci.dci_scores(np.zeros((2, 3)))
  assert zero["dci_disentanglement"] == zero["dci_completeness"] == 0.0


def test_dci_scores_by_hand():
  # R = [[3, 1], [0, 2]] (latents x factors), entropies in base 2.
  # Rows: (3/4, 1/4) -> H = 0.75 log2(4/3) + 0.25 log2(4) = 0.811278; (0, 1) -> H = 0.
  #   D = (4/6)(1 - 0.811278) + (2/6)(1 - 0) = 0.459148.
  # Columns: (1, 0) -> H = 0; (1/3, 2/3) -> H = 0.918296.
  #   C = (3/6)(1 - 0) + (3/6)(1 - 0.918296) = 0.540852.
  scores = dci.dci_scores(np.array([[3.0, 1.0], [0.0, 2.0]]))
  h_row = 0.75 * np.log2(4 / 3) + 0.25 * 2
  h_col = -(np.log2(1 / 3) / 3 + 2 * np.log2(2 / 3) / 3)
  assert scores["dci_disentanglement"] == pytest.approx(4 / 6 * (1 - h_row) + 2 / 6)
  assert scores["dci_completeness"] == pytest.approx(0.5 + 0.5 * (1 - h_col))
  assert scores["dci_disentanglement"] == pytest.approx(0.459148, abs=1e-6)
  assert scores["dci_completeness"] == pytest.approx(0.540852, abs=1e-6)
  np.testing.assert_allclose(scores["disentanglement_per_latent"], [1 - h_row, 1.0])


def test_dci_scores_rejects_negative():
  with pytest.raises(ValueError, match="non-negative"):
    dci.dci_scores(np.array([[1.0, -0.1]]))


def test_dci_good_random_rotated():
  good_score = dci.compute_dci(DCI_DATASET, good(), 0, **DCI_KW)
  random_score = dci.compute_dci(DCI_DATASET, random(), 0, **DCI_KW)
  rotated_score = dci.compute_dci(DCI_DATASET, rotated(), 0, **DCI_KW)
  # Good code: each factor's trees split (almost) only on its own latent.
  assert good_score["dci_disentanglement"] > 0.8
  assert good_score["dci_completeness"] > 0.8
  assert good_score["dci_informativeness_test"] > 0.9
  assert np.asarray(good_score["importance_matrix"]).shape == (4, 4)
  # Random code: the trees overfit noise, with importance spread over all latents.
  assert random_score["dci_disentanglement"] < 0.2
  assert random_score["dci_completeness"] < 0.2
  assert random_score["dci_informativeness_test"] < 0.6  # chance ~ 1/2, 1/3, 1/4, 1/3
  # Rotated: each factor needs both latents of its pair.
  assert rotated_score["dci_disentanglement"] < good_score["dci_disentanglement"] - 0.3
  assert rotated_score["dci_completeness"] < good_score["dci_completeness"] - 0.3


def test_dci_permutation_and_scale_invariant():
  small_gbt = {"importance_model": _small_gbt, **DCI_KW}
  base = dci.compute_dci(DCI_DATASET, rotated(), 7, **small_gbt)
  perm = dci.compute_dci(DCI_DATASET, permuted(rotated()), 7, **small_gbt)
  scaled = dci.compute_dci(DCI_DATASET, rescaled(rotated()), 7, **small_gbt)
  # Trees split on the order of values: scaling by powers of two changes nothing at all.
  for key, value in scalars(base).items():
    assert scaled[key] == value, key
  # Permuting the latents changes only which of several equally good splits a tree takes (its
  # features are visited in a seeded random order), after the training set is fitted exactly.
  for key, value in scalars(base).items():
    assert perm[key] == pytest.approx(value, abs=5e-3), key
  np.testing.assert_allclose(
    np.asarray(perm["importance_matrix"]),
    np.asarray(base["importance_matrix"])[PERMUTATION],
    atol=0.03,
  )


def _small_gbt(seed):
  return sklearn.ensemble.GradientBoostingClassifier(n_estimators=20, random_state=seed)


def test_dci_lasso_and_custom_models():
  lasso = dci.compute_dci(DATASET, good(), 0, importance_model="lasso", **DCI_KW)
  assert lasso["dci_disentanglement"] > 0.9
  assert lasso["dci_informativeness_test"] > 0.9  # R^2 of a linear fit of the factor
  lasso_rotated = dci.compute_dci(DATASET, rotated(), 0, importance_model="lasso", **DCI_KW)
  assert lasso_rotated["dci_disentanglement"] < lasso["dci_disentanglement"] - 0.3
  tree = dci.compute_dci(
    DCI_DATASET,
    good(),
    0,
    importance_model=lambda seed: sklearn.tree.DecisionTreeClassifier(random_state=seed),
    **DCI_KW,
  )
  assert tree["dci_disentanglement"] > 0.8


def test_dci_rejects_bad_models():
  with pytest.raises(ValueError, match="importance_model"):
    dci.compute_dci(DATASET, good(), 0, importance_model="svm", **DCI_KW)

  class NoImportances:
    def fit(self, x, y):
      return self

    def score(self, x, y):
      return 0.0

  with pytest.raises(ValueError, match="neither"):
    dci.compute_dci(DATASET, good(), 0, importance_model=lambda seed: NoImportances(), **DCI_KW)


# ---------------------------------------------------------------------------------------- SAP

SAP_KW = {"num_train": 1000, "num_test": 500}


def test_sap_from_score_matrix_by_hand():
  # Factor 0: best 0.9, second 0.3 -> 0.6; factor 1: best 0.5, second 0.4 -> 0.1.
  matrix = np.array([[0.9, 0.1], [0.2, 0.5], [0.3, 0.4]])
  score, gaps = sap.sap_from_score_matrix(matrix)
  np.testing.assert_allclose(gaps, [0.6, 0.1])
  assert score == pytest.approx(0.35)
  with pytest.raises(ValueError, match="K >= 2"):
    sap.sap_from_score_matrix(np.ones((1, 3)))


def test_sap_good_random_rotated():
  scores = {}
  for continuous in (False, True):
    for name, make in (("good", good), ("random", random), ("rotated", rotated)):
      result = sap.compute_sap(DATASET, make(), 0, continuous_factors=continuous, **SAP_KW)
      scores[name, continuous] = result["sap_score"]
  # Discrete: a one-feature linear SVM separates only the extreme values of a factor (the
  # one-vs-rest lines cross once), so even the good code's best accuracies are well below 1;
  # the other latents sit at the balanced classifier's chance level.
  # Over seeds the good code scores 0.18 to 0.22 here, random codes 0.01.
  assert scores["good", False] > 0.1
  assert scores["good", False] > scores["random", False] + 0.1
  assert scores["random", False] < 0.05
  assert scores["rotated", False] < scores["good", False] / 2
  # Continuous: R^2 ~ 1 for a factor's own latent and ~ 0 for the others.
  assert scores["good", True] > 0.9
  assert scores["random", True] < 0.05
  # Rotated: both latents of a pair explain about half of each factor's variance.
  assert scores["rotated", True] < 0.2


def test_sap_permutation_invariant_and_continuous_scale_invariant():
  for continuous in (False, True):
    base = sap.compute_sap(DATASET, rotated(), 2, continuous_factors=continuous, **SAP_KW)
    perm = sap.compute_sap(DATASET, permuted(rotated()), 2, continuous_factors=continuous, **SAP_KW)
    assert perm["sap_score"] == pytest.approx(base["sap_score"], rel=1e-12)
    np.testing.assert_array_equal(
      np.asarray(perm["score_matrix"]), np.asarray(base["score_matrix"])[PERMUTATION]
    )
  base = sap.compute_sap(DATASET, good(), 2, continuous_factors=True, **SAP_KW)
  scaled = sap.compute_sap(DATASET, rescaled(good()), 2, continuous_factors=True, **SAP_KW)
  assert scaled["sap_score"] == pytest.approx(base["sap_score"], rel=1e-12)


def test_sap_constant_latent_scores_zero():
  def with_constant(images):
    codes = good()(images)
    return np.concatenate([codes, np.ones((len(codes), 1))], axis=1)

  for continuous in (False, True):
    result = sap.compute_sap(DATASET, with_constant, 0, continuous_factors=continuous, **SAP_KW)
    np.testing.assert_array_equal(np.asarray(result["score_matrix"])[-1], 0.0)


# --------------------------------------------------------------------------------- Modularity

MODULARITY_KW = {"num_train": 1000, "num_test": 500}


def test_modularity_score_by_hand():
  mi = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0], [2.0, 1.0, 1.0]])
  # Squared rows: (1, 0, 0) -> delta 0; (.25, .25, 0) -> .25 / (.25 * 2) = .5;
  # all zero -> score 0 by convention; (4, 1, 1) -> 2 / (4 * 2) = .25.
  np.testing.assert_allclose(modularity.modularity_per_latent(mi), [1.0, 0.5, 0.0, 0.75])
  assert modularity.modularity_score(mi) == pytest.approx((1.0 + 0.5 + 0.0 + 0.75) / 4)
  with pytest.raises(ValueError, match="F >= 2"):
    modularity.modularity_score(np.ones((3, 1)))


def test_modularity_explicitness_good_random_rotated():
  run = modularity.compute_modularity_explicitness
  good_score = run(DATASET, good(), 0, **MODULARITY_KW)
  random_score = run(DATASET, random(), 0, **MODULARITY_KW)
  rotated_score = run(DATASET, rotated(), 0, **MODULARITY_KW)
  # Good code: latent k's MI with factor k is ~ H(v_k) >= log 3 nats; with the others only the
  # plug-in bias (bins - 1)(values - 1) / 2N <~ 0.09 nats, so delta <~ (0.09 / 1.1)^2.
  assert good_score["modularity_score"] > 0.9
  assert good_score["explicitness_score_train"] > 0.9
  assert good_score["explicitness_score_test"] > 0.9
  # Random code: every MI is plug-in bias, which grows with the factor's number of values, so
  # noise still looks partly modular (~0.6); it must stay well below the good code.
  assert random_score["modularity_score"] < good_score["modularity_score"] - 0.2
  assert abs(random_score["explicitness_score_test"] - 0.5) < 0.1
  # Rotated: latents 0 and 1 share factors 0 and 1. Explicitness (a linear read-out of all
  # latents) is not rotation-sensitive.
  assert rotated_score["modularity_score"] < good_score["modularity_score"] - 0.1
  assert rotated_score["explicitness_score_test"] > 0.9


def test_modularity_explicitness_permutation_and_scale_invariant():
  run = modularity.compute_modularity_explicitness
  base = run(DATASET, rotated(), 4, **MODULARITY_KW)
  for transform in (permuted, rescaled):
    other = run(DATASET, transform(rotated()), 4, **MODULARITY_KW)
    for key, value in scalars(base).items():
      assert other[key] == pytest.approx(value, rel=1e-12), key


# ------------------------------------------------------------------------------ Bad parameters


@pytest.mark.parametrize(
  "call",
  [
    lambda: beta_vae.compute_beta_vae(DATASET, good(), 0, num_train=0),
    lambda: beta_vae.compute_beta_vae(DATASET, good(), 0, batch_size_points=0),
    lambda: beta_vae.compute_beta_vae(DATASET, good(), None),
    lambda: factor_vae.compute_factor_vae(DATASET, good(), 0, batch_size_points=1),
    lambda: factor_vae.compute_factor_vae(DATASET, good(), 0, prune_std_threshold=-1.0),
    lambda: factor_vae.compute_factor_vae(DATASET, good(), 0, num_variance_estimate=1),
    lambda: factor_vae.compute_factor_vae(DATASET, good(), 0, num_eval=2.5),
    lambda: dci.compute_dci(DATASET, good(), 0, num_test=0),
    lambda: dci.compute_dci(DATASET, good(), None),
    lambda: sap.compute_sap(DATASET, good(), 0, num_train=1),
    lambda: sap.compute_sap(DATASET, random_code(1), 0, num_train=20, num_test=20),
    lambda: modularity.compute_modularity_explicitness(DATASET, good(), 0, num_bins=0),
    lambda: modularity.compute_modularity_explicitness(DATASET, good(), 0, batch_size=0),
    lambda: modularity.compute_modularity_explicitness(FactorImages((4,)), good(), 0),
  ],
)
def test_bad_parameters_raise(call):
  with pytest.raises(ValueError):
    call()
