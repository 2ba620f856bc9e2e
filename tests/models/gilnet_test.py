"""GilNet (Levi & Hassner 2015): full-size shapes and parameter count via eval_shape, the Caffe
initialisation, and forward + backward at tiny width. Numerical parity with a torch reference is in
tests/weights/caffemodel_test.py."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxface import models
from tests.helpers import count_params as _count


def _abstract(input_shape=None, **kw):
  model = models.get("gilnet", **kw)
  x = jax.ShapeDtypeStruct((2, *(input_shape or models.spec("gilnet").input_shape)), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)
  out, aux = jax.eval_shape(lambda v, x: model.apply(v, x), variables, x)
  return variables, out, aux



def test_full_size():
  spec = models.spec("gilnet")
  assert spec.input_shape == (227, 227, 3) and spec.num_classes == 8 and spec.classifier
  variables, out, aux = _abstract()
  p = variables["params"]
  assert set(variables) == {"params"}
  assert _count(p) == 11_415_048
  assert sorted(p) == ["conv1", "conv2", "conv3", "fc6", "fc7", "fc8"]
  assert out.shape == (2, 8)
  # Caffe ceil pooling: 56 -> 28 -> 14 -> 7, so fc6 sees 7x7x384 = 18,816 inputs (the released
  # caffemodels' layout; floor pooling would give 6x6x384 = 13,824).
  assert aux["conv1"].shape == (2, 56, 56, 96)
  assert aux["norm1"].shape == (2, 28, 28, 96)
  assert aux["conv2"].shape == (2, 28, 28, 256)
  assert aux["norm2"].shape == (2, 14, 14, 256)
  assert aux["features"].shape == aux["conv3"].shape == (2, 14, 14, 384)
  assert aux["pool5"].shape == (2, 7, 7, 384)
  assert p["conv1"]["kernel"].shape == (7, 7, 3, 96)
  assert p["fc6"]["kernel"].shape == (18_816, 512)
  assert aux["pre_logits"].shape == (2, 512)
  # Gender model: 2 classes.
  variables, out, _ = _abstract(num_classes=2)
  assert _count(variables["params"]) == 11_415_048 - 6 * 513 and out.shape == (2, 2)


def test_tops_and_dtype():
  variables, out, _ = _abstract(num_classes=0)
  assert "fc8" not in variables["params"] and out.shape == (2, 512)
  variables, out, _ = _abstract(features_only=True)
  assert sorted(variables["params"]) == ["conv1", "conv2", "conv3"]
  assert out.shape == (2, 14, 14, 384)
  model = models.get("gilnet", head="gender_age", width=0.25)
  x = jax.ShapeDtypeStruct((1, 227, 227, 3), jnp.float32)
  v = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)
  out, _ = jax.eval_shape(lambda v, x: model.apply(v, x), v, x)
  assert out["age"].shape == (1, 8) and out["gender"].shape == (1, 2)
  variables, out, aux = _abstract(dtype=jnp.bfloat16, width=0.25)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
  assert out.dtype == jnp.bfloat16 and aux["features"].dtype == jnp.bfloat16


def test_caffe_initialisation():
  # Levi & Hassner's train_val prototxt: Gaussian std 0.01 (conv, fc8) / 0.005 (fc6, fc7); biases
  # conv2, fc6, fc7 = 1.
  model = models.get("gilnet", width=0.5)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 67, 67, 3)))["params"]
  stds = {"conv1": 0.01, "conv2": 0.01, "conv3": 0.01, "fc6": 0.005, "fc7": 0.005, "fc8": 0.01}
  biases = {"conv1": 0.0, "conv2": 1.0, "conv3": 0.0, "fc6": 1.0, "fc7": 1.0, "fc8": 0.0}
  for name, std in stds.items():
    kernel = np.asarray(params[name]["kernel"])
    assert abs(kernel.mean()) < 0.2 * std, name
    assert abs(kernel.std() / std - 1) < 0.15, (name, kernel.std())
    np.testing.assert_array_equal(params[name]["bias"], biases[name])


def test_forward_backward_tiny():
  # 67 px keeps the ceil pooling chain non-trivial (16 -> 8 -> 4 -> 2) at a fraction of the cost.
  model = models.get("gilnet", width=0.125, num_classes=3)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 67, 67, 3)) * 50.0
  # jit: op-by-op dispatch of init / grad compiles every small op separately (slower).
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
  apply = jax.jit(model.apply, static_argnames="train")
  logits, aux = apply(variables, x)
  assert logits.shape == (2, 3) and aux["pool5"].shape == (2, 2, 2, 48)
  labels = jnp.array([0, 2])

  def loss_fn(params, rng):
    out, _ = model.apply({"params": params}, x, train=True, rngs={"dropout": rng})
    logp = jax.nn.log_softmax(out)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))

  loss, grads = jax.jit(jax.value_and_grad(loss_fn))(variables["params"], jax.random.PRNGKey(2))
  assert np.isfinite(float(loss))
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    g = np.asarray(g)
    assert np.all(np.isfinite(g)), path
    assert np.any(g != 0), path
  # Dropout is active only with train=True.
  a, _ = apply(variables, x, train=True, rngs={"dropout": jax.random.PRNGKey(3)})
  b, _ = apply(variables, x, train=True, rngs={"dropout": jax.random.PRNGKey(4)})
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(apply(variables, x)[0], logits)
