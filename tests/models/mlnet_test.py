"""ML-Net: full-size shapes via eval_shape, pooling and prior-grid semantics, tiny forward+backward.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxface import models
from jaxface.models import mlnet
from tests.helpers import count_params as _count

CONVS = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3", "conv4_1",
         "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3", "int_conv", "pre_final_conv")


def _shapes(model, input_shape):
  x = jax.ShapeDtypeStruct(input_shape, jnp.float32)

  def run(x):
    variables = model.init(jax.random.PRNGKey(0), x)
    return variables, model.apply(variables, x)

  return jax.eval_shape(run, x)



def test_registry_entry():
  spec = models.spec("mlnet")
  assert spec.input_shape == (480, 640, 3)
  assert spec.num_classes is None and not spec.classifier


def test_full_size_param_count_and_shapes():
  variables, (out, aux) = _shapes(models.get("mlnet"), (1, 480, 640, 3))
  assert _count(variables) == 15_452_145
  assert set(variables) == {"params"}
  assert set(variables["params"]) == set(CONVS) | {"prior"}
  assert variables["params"]["prior"]["W"].shape == (6, 8)
  assert variables["params"]["int_conv"]["kernel"].shape == (3, 3, 1280, 64)
  assert variables["params"]["pre_final_conv"]["kernel"].shape == (1, 1, 64, 1)
  assert out.shape == (1, 60, 80, 1)
  assert aux["conv3_pool"].shape == (1, 60, 80, 256)
  assert aux["conv4_pool"].shape == (1, 60, 80, 512)
  assert aux["conv5_3"].shape == (1, 60, 80, 512)
  assert aux["encoded"].shape == (1, 60, 80, 1280)
  assert aux["pre_prior"].shape == (1, 60, 80, 1)
  assert aux["prior"].shape == (1, 60, 80, 1)


def test_face_crop_output_shape():
  variables, (out, aux) = _shapes(models.get("mlnet"), (1, 224, 224, 3))
  assert _count(variables) == 15_452_145  # The prior keeps its (6, 8) shape.
  assert out.shape == (1, 28, 28, 1)
  assert aux["encoded"].shape == (1, 28, 28, 1280)


def _windows_max(x, out_size, stride, offset):
  """Explicit max over input rows/cols ``stride*i + offset + {0, 1}`` that exist."""
  h = x.shape[0]
  out = np.full((out_size, out_size), -np.inf, np.float32)
  for i in range(out_size):
    for j in range(out_size):
      rows = [r for r in (stride * i + offset, stride * i + offset + 1) if 0 <= r < h]
      cols = [c for c in (stride * j + offset, stride * j + offset + 1) if 0 <= c < h]
      out[i, j] = x[np.ix_(rows, cols)].max()
  return out


@pytest.mark.parametrize("size", [5, 6])
def test_pool_semantics(size, rng):
  x = rng.standard_normal((size, size)).astype(np.float32)
  x_b = jnp.asarray(x)[None, :, :, None]
  ceil_half = -(-size // 2)
  # Keras 1 Theano "same": output i covers rows 2i-1, 2i (stride 2) or i-1, i (stride 1).
  got = mlnet.max_pool_2x2(x_b, 2, "keras_theano")[0, :, :, 0]
  np.testing.assert_array_equal(got, _windows_max(x, ceil_half, 2, -1))
  got = mlnet.max_pool_2x2(x_b, 1, "keras_theano")[0, :, :, 0]
  np.testing.assert_array_equal(got, _windows_max(x, size, 1, -1))
  # Standard: rows 2i, 2i+1.
  got = mlnet.max_pool_2x2(x_b, 2, "standard")[0, :, :, 0]
  np.testing.assert_array_equal(got, _windows_max(x, ceil_half, 2, 0))
  got = mlnet.max_pool_2x2(x_b, 1, "standard")[0, :, :, 0]
  np.testing.assert_array_equal(got, _windows_max(x, size, 1, 0))
  with pytest.raises(ValueError, match="pool_mode"):
    mlnet.max_pool_2x2(x_b, 2, "caffe")


def _theano_bilinear_upsampling_1d(x_n, ratio):
  """Theano's algorithm, written out: edge-pad by one, transposed conv with the normalised
  triangle kernel of length 2r-1, stride r, Theano's padding ``2r - (r-1)//2 - 1``."""
  n = x_n.shape[0]
  half = torch.arange(1, ratio + 1, dtype=torch.float64)
  kern = torch.cat([half, half.flip(0)[1:]]) / ratio
  padded = torch.cat([x_n[:1], x_n, x_n[-1:]])[None, None]
  pad = 2 * ratio - (ratio - 1) // 2 - 1
  natural = (n + 1) * ratio - 2 * pad + 2 * ratio - 1
  y = F.conv_transpose1d(padded, kern[None, None], stride=ratio, padding=pad,
                         output_padding=n * ratio - natural)
  assert y.shape[-1] == n * ratio
  return y[0, 0]


def test_prior_grid_matches_theano_algorithm(rng):
  # The grid itself, for every ratio up to the reference 10 (np.interp clamps like Theano's edge
  # replication).
  for ratio in range(1, 11):
    for n in (1, 2, 3, 6):
      x = rng.standard_normal(n)
      want = _theano_bilinear_upsampling_1d(torch.from_numpy(x), ratio).numpy()
      got = np.interp(mlnet.prior_coords(n, n * ratio), np.arange(n), x)
      np.testing.assert_allclose(got, want, atol=1e-12, err_msg=f"ratio {ratio}, n {n}")
  # And the 2-D resampling the model runs (separable: rows, then columns).
  prior = rng.standard_normal((2, 3))
  want = torch.stack([_theano_bilinear_upsampling_1d(torch.from_numpy(r), 10)
                      for r in prior])  # (2, 30)
  want = torch.stack([_theano_bilinear_upsampling_1d(c, 10) for c in want.T]).T  # (20, 30)
  got = mlnet.upsample_prior(jnp.asarray(prior, jnp.float32), (20, 30))
  # float32 against float64: the input cast and two separable lerps (weights, 2 products, a sum
  # each) are ~8 roundings of values <= max |prior|; half a pixel off moves values by > 0.04.
  np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=8 * 2.0**-24 * np.abs(prior).max())


def test_prior_grid_ratio_10_formula():
  np.testing.assert_allclose(mlnet.theano_upsampling_coords(6, 10), (np.arange(60) - 4) / 10)
  # Half a pixel off the half-pixel-centre grid (-4.5): a visible difference, not a rounding one.
  prior = jnp.asarray([[1.0, 2.0], [0.0, 1.5]])
  theano = mlnet.upsample_prior(prior, (20, 20))
  half_pixel = jax.image.resize(prior, (20, 20), method="linear", antialias=False)
  assert float(jnp.max(jnp.abs(theano - half_pixel))) > 0.04


def test_prior_non_integer_ratio_is_half_pixel_bilinear(rng):
  prior = jnp.asarray(rng.standard_normal((6, 8)), jnp.float32)
  got = mlnet.upsample_prior(prior, (28, 28))
  want = jax.image.resize(prior, (28, 28), method="linear", antialias=False)
  # Both float32, other formulas for the same two lerps: ~8 roundings of values <= max |prior| each.
  np.testing.assert_allclose(got, want, rtol=0, atol=16 * 2.0**-24 * float(jnp.abs(prior).max()))


def test_init_follows_keras1():
  model = models.get("mlnet", width=0.25)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
  p = variables["params"]
  k = np.asarray(p["int_conv"]["kernel"])
  assert k.shape == (3, 3, 320, 16)
  # Keras 1 glorot_normal: untruncated normal, std sqrt(2 / (fan_in + fan_out)), receptive field in.
  std = np.sqrt(2.0 / (9 * 320 + 9 * 16))
  assert abs(k.std() / std - 1) < 0.03
  assert np.abs(k).max() > 2.5 * std  # Not truncated at 2 std.
  assert not np.any(p["int_conv"]["bias"]) and not np.any(p["pre_final_conv"]["bias"])
  assert not np.any(p["prior"]["W"])
  assert p["pre_final_conv"]["kernel"].shape == (1, 1, 16, 1)


def test_forward_backward_tiny(rng):
  model = models.get("mlnet", width=1 / 16)
  x = jnp.asarray(rng.uniform(0, 2, (2, 64, 64, 3)), jnp.float32)
  variables = jax.jit(model.init)(jax.random.PRNGKey(1), x)

  @jax.jit
  def loss_fn(params):
    out, aux = model.apply({"params": params}, x, train=True,
                           rngs={"dropout": jax.random.PRNGKey(2)})
    return jnp.mean(out ** 2), (out, aux)

  grads, (out, aux) = jax.grad(loss_fn, has_aux=True)(variables["params"])
  assert out.shape == (2, 8, 8, 1)
  assert aux["encoded"].shape == (2, 8, 8, 16 + 32 + 32)  # conv3_pool, conv4_pool, conv5_3.
  assert float(jnp.max(out)) > 0
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    g = np.asarray(g)
    assert np.all(np.isfinite(g)), path
    assert np.any(g != 0), path
  # Eval mode is deterministic and needs no rng.
  a, _ = model.apply(variables, x)
  b, _ = model.apply(variables, x)
  np.testing.assert_array_equal(a, b)


def test_bfloat16_compute_keeps_float32_params(rng):
  model = models.get("mlnet", width=1 / 16, dtype=jnp.bfloat16)
  x = jnp.asarray(rng.uniform(0, 2, (1, 32, 32, 3)), jnp.float32)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
  assert all(l.dtype == jnp.float32 for l in jax.tree_util.tree_leaves(variables))
  out, _ = jax.jit(model.apply)(variables, x)
  assert out.dtype == jnp.bfloat16 and out.shape == (1, 4, 4, 1)


def test_pool_mode_standard_and_invalid():
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  _, (out, _) = _shapes(models.get("mlnet", width=1 / 16, pool_mode="standard"), x.shape)
  assert out.shape == (1, 8, 8, 1)
  with pytest.raises(ValueError, match="pool_mode"):
    _shapes(models.get("mlnet", width=1 / 16, pool_mode="same"), x.shape)


def test_relu_with_leaky_grad_keeps_values_and_lets_dead_units_learn():
  x = jnp.asarray([-2.0, 0.0, 3.0])
  np.testing.assert_array_equal(mlnet.relu_with_leaky_grad(x, 0.1), jax.nn.relu(x))
  grad = jax.grad(lambda v: mlnet.relu_with_leaky_grad(v, 0.1).sum())(x)
  np.testing.assert_allclose(grad, [0.1, 0.1, 1.0])  # slope at 0 too: the second ReLU's input
  np.testing.assert_array_equal(jax.grad(lambda v: mlnet.relu_with_leaky_grad(v, 0.0).sum())(x),
                                [0.0, 0.0, 1.0])


def test_dead_relu_grad_changes_training_gradients_only(rng):
  x = jnp.asarray(rng.standard_normal((2, 32, 32, 3)) * 50, jnp.float32)
  ref = mlnet.MLNet(width=1 / 16, dropout_rate=0.0, prior_shape=(2, 2))
  leaky = mlnet.MLNet(width=1 / 16, dropout_rate=0.0, prior_shape=(2, 2), dead_relu_grad=0.1)
  variables = ref.init(jax.random.key(0), x)
  for train in (False, True):  # outputs are bit-identical, in training too
    np.testing.assert_array_equal(ref.apply(variables, x, train=train)[0],
                                  leaky.apply(variables, x, train=train)[0])
  # An all-dead map: pre_final_conv's bias far below zero. The reference gets no gradient; the
  # leaky one pushes the pixels that should light up.
  dead = jax.tree_util.tree_map(lambda v: v, variables)
  dead["params"]["pre_final_conv"]["bias"] = jnp.full((1,), -1e3)

  def grads(model):
    return jax.grad(lambda v: -model.apply(v, x, train=True)[0].sum())(dead)["params"]

  assert not np.any(np.asarray(grads(ref)["pre_final_conv"]["bias"]))
  assert np.asarray(grads(leaky)["pre_final_conv"]["bias"])[0] < 0  # descent raises the bias
  assert not np.any(np.asarray(leaky.apply(dead, x, train=True)[0]))  # still all zero in value
