"""The jnp reweighting equals data_pipelines.pp.saliency.Saliency; the in-step variant runs under jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines import pp
from jaxface import models
from jaxface.saliency import inference
from jaxface.saliency import online
from tests import helpers


def _op(images, maps, r):
  op = pp.saliency.Saliency(r)
  return np.stack([op({"image": i, "saliency": m})["image"] for i, m in zip(images, maps)])


@pytest.mark.parametrize("r", [0.0, 0.3, 0.7, 1.0])
def test_reweight_equals_the_op_on_random_data(rng, r):
  images = rng.integers(0, 256, (4, 12, 10, 3), dtype=np.uint8)
  maps = rng.integers(0, 256, (4, 12, 10), dtype=np.uint8)
  maps[1] = 0  # all-zero map: S = 0
  maps[2] = 7  # constant map: S = 1
  got = np.asarray(jax.jit(online.reweight, static_argnums=2)(images, maps, r))
  assert got.dtype == np.uint8
  np.testing.assert_array_equal(got, _op(images, maps, r))


def test_reweight_resizes_maps_like_the_op(rng):
  images = rng.integers(0, 256, (3, 16, 20, 3), dtype=np.uint8)
  maps = rng.integers(0, 256, (3, 6, 7), dtype=np.uint8)
  got = np.asarray(online.reweight(images, maps, 0.5)).astype(int)
  want = _op(images, maps, 0.5).astype(int)
  # The op resizes with OpenCV's fixed-point uint8 arithmetic: at most one grey level apart.
  assert np.abs(got - want).max() <= 1
  assert np.mean(got == want) > 0.9


def test_reweight_float_output(rng):
  images = rng.integers(0, 256, (2, 5, 5, 3), dtype=np.uint8)
  maps = rng.uniform(0, 3, (2, 5, 5)).astype(np.float32)
  got = np.asarray(online.reweight(images, maps, 0.3, round_to_uint8=False))
  s = maps / maps.max(axis=(1, 2), keepdims=True)
  np.testing.assert_allclose(got, images * (0.7 + 0.3 * s)[..., None], rtol=1e-6)
  with pytest.raises(ValueError, match="r must be in"):
    online.reweight(images, maps, 1.5)
  with pytest.raises(ValueError, match="same B"):
    online.reweight(images, maps[:1], 0.3)


def test_saliency_reweight_step_inside_jit(rng):
  model = models.get("mlnet", width=1 / 32)
  variables = helpers.random_variables(model, jnp.zeros((1, 16, 16, 3)), seed=1)
  # A unit prior and a positive output bias keep the final ReLUs alive (maps not all zero).
  variables["params"]["prior"]["W"][:] = 0.0
  variables["params"]["pre_final_conv"]["bias"][:] = 0.5
  images = rng.integers(0, 256, (2, 20, 20, 3), dtype=np.uint8)

  @jax.jit
  def step(v, x):
    return online.saliency_reweight_step(model.apply, v, x, 0.3, (16, 16))

  got = np.asarray(step(variables, images))
  maps = inference.make_predict_fn(model.apply, (16, 16))(variables, images)
  want = np.asarray(online.reweight(images, maps, 0.3))
  assert got.dtype == np.uint8 and got.shape == images.shape
  np.testing.assert_array_equal(got, want)
  assert not np.array_equal(got, images)

  # ML-Net is a fixed input transform: no gradient reaches its variables.
  def loss(v):
    out = online.saliency_reweight_step(model.apply, v, images, 0.3, (16, 16),
                                        round_to_uint8=False)
    return jnp.sum(out)

  grads = jax.jit(jax.grad(loss))(variables)
  assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(grads))
