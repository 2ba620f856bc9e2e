"""Saliency metrics against values computed by hand on 2x2 and 3x3 maps."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxface.saliency import metrics

S22 = [[1.0, 2.0], [3.0, 4.0]]
# 3x3 map with distinct values 0..8; fixations on the pixels holding 8 and 4.
S33 = np.array([[8, 1, 3], [5, 7, 2], [4, 6, 0]], np.float64)
F33 = np.array([[1, 0, 0], [0, 0, 0], [1, 0, 0]])


def test_cc():
  # Deviations s: -1.5 -0.5 0.5 1.5, g: -0.5 -0.5 0.5 0.5 -> 2 / sqrt(5 * 1).
  np.testing.assert_allclose(metrics.cc(S22, [[0.0, 0.0], [1.0, 1.0]]), 0.894427191, rtol=1e-6)
  np.testing.assert_allclose(metrics.cc(S22, [[4.0, 3.0], [2.0, 1.0]]), -1.0, rtol=1e-6)
  np.testing.assert_allclose(metrics.cc(S22, [[10.0, 20.0], [30.0, 40.0]]), 1.0, rtol=1e-6)


def test_nss():
  fix = [[0, 1], [0, 1]]  # values 2 and 4; mean 2.5
  # MATLAB std (N - 1): sqrt(5 / 3); z = -0.5 / 1.29099, 1.5 / 1.29099; mean 0.387298.
  np.testing.assert_allclose(metrics.nss(S22, fix), 0.387298335, rtol=1e-6)
  # Population std sqrt(5 / 4): 0.5 / 1.118034.
  np.testing.assert_allclose(metrics.nss(S22, fix, ddof=0), 0.447213595, rtol=1e-6)
  # Fixation counts above one mark a pixel as fixated once.
  np.testing.assert_allclose(metrics.nss(S22, [[0, 3], [0, 1]]), 0.387298335, rtol=1e-6)


def test_kld():
  # q = 1/4 everywhere, p = 1/2 on two pixels: 2 * 0.5 * log(2).
  np.testing.assert_allclose(metrics.kld(jnp.ones((2, 2)), [[1.0, 0.0], [0.0, 1.0]]),
                             0.693147181, rtol=1e-6)
  np.testing.assert_allclose(metrics.kld(S22, S22), 0.0, atol=1e-6)
  # Scale does not matter (both maps are divided by their sums).
  np.testing.assert_allclose(metrics.kld(np.multiply(S22, 7.0), S22), 0.0, atol=1e-6)


def test_sim():
  # s -> (0, 1/3, 2/3, 1) / 2 = (0, 1/6, 1/3, 1/2); g -> (1/2, 1/2, 0, 0): min sums to 1/6.
  np.testing.assert_allclose(metrics.sim([[0.0, 1.0], [2.0, 3.0]], [[1.0, 1.0], [0.0, 0.0]]),
                             1 / 6, rtol=1e-6)
  np.testing.assert_allclose(metrics.sim(S22, S22), 1.0, rtol=1e-6)
  np.testing.assert_allclose(metrics.sim([[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]),
                             0.0, atol=1e-7)


def test_batched():
  s = jnp.asarray([S22, S22])
  g = jnp.asarray([[[0.0, 0.0], [1.0, 1.0]], [[4.0, 3.0], [2.0, 1.0]]])
  np.testing.assert_allclose(metrics.batched(metrics.cc)(s, g), [0.894427191, -1.0], rtol=1e-6)


def test_auc_judd():
  # Thresholds 1 and 0.5 (values 8 and 4): tp 1/2, 1; pixels >= threshold 1 and 5, so
  # fp 0, 3/7. Trapezoids over (0,0) (0,.5) (3/7,1) (1,1): 0 + 3/7 * 0.75 + 4/7 = 25/28.
  np.testing.assert_allclose(metrics.auc_judd(S33, F33), 25 / 28, rtol=1e-12)
  # The fixations on the two highest values: thresholds pass only them, fp stays 0 -> 1.
  np.testing.assert_allclose(metrics.auc_judd(S33, S33 >= 7), 1.0, rtol=1e-12)
  # On the two lowest (1 and 0): threshold 1/8 passes 8 pixels, fp (8 - 1)/7 = 1 at tp 1/2;
  # curve (0,0) (1,.5) (1,1) (1,1): area 1 * 0.25.
  np.testing.assert_allclose(metrics.auc_judd(S33, S33 <= 1), 0.25, rtol=1e-12)


def test_roc_auc_and_shuffled_auc():
  # Positives 8 and 4 against 7, 3, 4: 8 beats 2 of 3 + ties none; 4 beats 3, ties 4 -> 1.5.
  other = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]])  # values 3, 7, 4
  np.testing.assert_allclose(metrics.auc_shuffled(S33, F33, other), 4.5 / 6, rtol=1e-12)
  # Against all other pixels: 8 beats 7, 4 beats 1, 3, 2, 0 -> 11 / 14.
  np.testing.assert_allclose(metrics.roc_auc([8, 4], [1, 3, 5, 7, 2, 6, 0]), 11 / 14, rtol=1e-12)


def test_auc_borji_expectation():
  # One positive (the unique maximum 8) against one uniform pixel: AUC 1 with prob. 8/9 and
  # 0.5 (tie) with prob. 1/9, so the expectation is 17/18; the sd of the mean of 4000 splits
  # is about 0.0025.
  got = metrics.auc_borji(S33, S33 == 8, n_splits=4000, seed=1)
  assert abs(got - 17 / 18) < 0.01
  assert metrics.auc_borji(S33, S33 == 8, n_splits=50, seed=3) == metrics.auc_borji(
      S33, S33 == 8, n_splits=50, seed=3)


def test_errors_name_the_problem():
  with pytest.raises(ValueError, match="differ in shape"):
    metrics.cc(S22, np.ones((3, 3)))
  with pytest.raises(ValueError, match="no fixated pixel"):
    metrics.auc_judd(S33, np.zeros((3, 3)))
  with pytest.raises(ValueError, match="every pixel is fixated"):
    metrics.auc_judd(S33, np.ones((3, 3)))
  with pytest.raises(ValueError, match="n_splits"):
    metrics.auc_borji(S33, F33, n_splits=0)
