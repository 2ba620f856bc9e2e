"""VGG-16 and VGG-Face: full-size shapes and parameter counts via eval_shape, and forward +
backward at tiny width."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxface import models
from jaxface.models import vgg
from tests.helpers import count_params as _count, abstract as _abstract, random_variables as _random_variables

_CONVS = [f"conv{b}_{i}" for b, n in zip(range(1, 6), (2, 2, 3, 3, 3)) for i in range(1, n + 1)]





@pytest.mark.parametrize("name,count,classes", [
    ("vgg16", 138_357_544, 1000),
    ("vgg_face", 145_002_878, 2622),
])
def test_full_size(name, count, classes):
  spec = models.spec(name)
  assert spec.input_shape == (224, 224, 3) and spec.num_classes == classes
  variables, out, aux = _abstract(name)
  assert _count(variables["params"]) == count
  assert sorted(variables["params"]) == sorted(_CONVS + ["fc6", "fc7", "fc8"])
  assert list(vgg.CONV_NAMES) == _CONVS
  assert out.shape == (2, classes)
  assert aux["conv1_2"].shape == (2, 224, 224, 64)
  assert aux["conv3_3"].shape == (2, 56, 56, 256)
  assert aux["features"].shape == (2, 14, 14, 512)
  assert aux["pool5"].shape == (2, 7, 7, 512)
  assert aux["pre_logits"].shape == (2, 4096)
  assert variables["params"]["fc6"]["kernel"].shape == (25088, 4096)


def test_adaptive_pool():
  # torchvision's AdaptiveAvgPool(7, 7) keeps fc6 at 7*7*C for any input; VGG-Face has none.
  variables, out, aux = _abstract("vgg16", input_shape=(64, 64, 3))
  assert aux["pool5"].shape == (2, 7, 7, 512) and out.shape == (2, 1000)
  variables, out, aux = _abstract("vgg_face", input_shape=(64, 64, 3))
  assert aux["pool5"].shape == (2, 2, 2, 512)
  assert variables["params"]["fc6"]["kernel"].shape == (2048, 4096)


@pytest.mark.parametrize("name", ["vgg16", "vgg_face"])
def test_tops(name):
  variables, out, _ = _abstract(name, num_classes=0)
  assert "fc8" not in variables["params"] and out.shape == (2, 4096)
  variables, out, _ = _abstract(name, features_only=True)
  assert sorted(variables["params"]) == sorted(_CONVS)
  assert out.shape == (2, 14, 14, 512)
  model = models.get(name, head="softmax", num_classes=2, width=0.25)
  x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  v = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)
  assert "fc8" not in v["params"]["backbone"] and "fc7" in v["params"]["backbone"]
  assert jax.eval_shape(lambda v, x: model.apply(v, x), v, x)[0].shape == (1, 2)


def test_bf16_dtype():
  variables, out, aux = _abstract("vgg16", dtype=jnp.bfloat16, width=0.25)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
  assert out.dtype == jnp.bfloat16 and aux["conv5_3"].dtype == jnp.bfloat16


# 2-6 s each on 2 busy cores, nearly all XLA compile of the backward pass.
@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg16", "vgg_face"])
def test_forward_backward(name):
  model = models.get(name, width=1 / 16, num_classes=4)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
  variables = _random_variables(model, x)

  @jax.jit
  def loss_and_grad(params, x, rng):
    def loss_fn(params):
      logits, aux = model.apply({"params": params}, x, train=True, rngs={"dropout": rng})
      return jnp.mean(jnp.square(logits - 1.0)), (logits, aux)
    return jax.value_and_grad(loss_fn, has_aux=True)(params)

  (loss, (logits, aux)), grads = loss_and_grad(variables["params"], x, jax.random.PRNGKey(2))
  assert logits.shape == (2, 4) and np.isfinite(float(loss))
  assert aux["features"].shape == (2, 2, 2, 32)
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    assert np.all(np.isfinite(g)), path
    assert np.any(g != 0), path
