"""ML-Net loss and prior regulariser against hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxface.tasks import saliency


def _map(rows):
  return jnp.asarray(rows, jnp.float32)[None, :, :, None]


def test_mlnet_loss_single_image():
  pred = _map([[1.0, 2.0], [3.0, 4.0]])  # max 4 -> 0.25, 0.5, 0.75, 1.
  gt = _map([[0.0, 0.5], [1.0, 0.25]])
  # (0.25-0)^2/1.1 + 0/0.6 + (0.75-1)^2/0.1 + (1-0.25)^2/0.85, averaged over 4 pixels.
  want = (0.0625 / 1.1 + 0.0 + 0.0625 / 0.1 + 0.5625 / 0.85) / 4
  np.testing.assert_allclose(saliency.mlnet_loss(pred, gt), want, rtol=1e-6)


def test_mlnet_loss_normalises_each_image_by_its_own_max():
  pred = jnp.concatenate([_map([[1.0, 2.0], [3.0, 4.0]]), _map([[0.0, 0.0], [0.0, 2.0]])])
  gt = jnp.concatenate([_map([[0.0, 0.5], [1.0, 0.25]]), jnp.zeros((1, 2, 2, 1))])
  first = 0.0625 / 1.1 + 0.0625 / 0.1 + 0.5625 / 0.85
  second = 1.0 / 1.1  # Second image: only its max pixel (-> 1) differs from gt = 0.
  np.testing.assert_allclose(saliency.mlnet_loss(pred, gt), (first + second) / 8, rtol=1e-6)
  # A different alpha changes the weights.
  np.testing.assert_allclose(saliency.mlnet_loss(pred[1:], gt[1:], alpha=2.0), 0.5 / 4, rtol=1e-6)


def test_mlnet_loss_all_zero_prediction_is_finite():
  pred = jnp.zeros((1, 2, 2, 1))
  gt = _map([[0.0, 0.5], [1.0, 0.25]])
  want = (0.0 + 0.25 / 0.6 + 1.0 / 0.1 + 0.0625 / 0.85) / 4
  np.testing.assert_allclose(saliency.mlnet_loss(pred, gt), want, rtol=1e-6)
  g = jax.grad(lambda p: saliency.mlnet_loss(p, gt))(pred)
  assert np.all(np.isfinite(np.asarray(g)))


def test_mlnet_loss_shape_mismatch():
  with pytest.raises(ValueError, match="shape"):
    saliency.mlnet_loss(jnp.ones((1, 2, 2, 1)), jnp.ones((1, 3, 2, 1)))


def test_prior_regularizer():
  params = {"prior": {"W": jnp.full((6, 8), 0.5)}, "int_conv": {"bias": jnp.ones(3)}}
  # (1/48) * 48 * 0.25.
  np.testing.assert_allclose(saliency.prior_regularizer(params), 0.25, rtol=1e-6)
  np.testing.assert_allclose(saliency.prior_regularizer({"params": params}), 0.25, rtol=1e-6)
  w = jnp.arange(48, dtype=jnp.float32).reshape(6, 8)
  want = 35720 / 48  # sum of i^2 for i < 48 is 47 * 48 * 95 / 6 = 35720.
  np.testing.assert_allclose(saliency.prior_regularizer({"prior": {"W": w}}), want, rtol=1e-6)
  np.testing.assert_allclose(saliency.prior_regularizer({"prior": {"W": w}}, weight=0.1),
                             0.1 * 35720, rtol=1e-6)
  with pytest.raises(KeyError, match="prior"):
    saliency.prior_regularizer({"conv1_1": {}})


def test_total_loss_is_sum():
  pred = _map([[1.0, 2.0], [3.0, 4.0]])
  gt = _map([[0.0, 0.5], [1.0, 0.25]])
  params = {"prior": {"W": jnp.full((6, 8), 0.5)}}
  np.testing.assert_allclose(saliency.mlnet_total_loss(pred, gt, params),
                             float(saliency.mlnet_loss(pred, gt)) + 0.25, rtol=1e-6)
