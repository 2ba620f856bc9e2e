"""AlexNet (torchvision and Caffe layouts): full-size shapes and parameter counts via eval_shape,
and forward + backward at tiny width."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxface import models
from jaxface.models import alexnet
from tests.helpers import count_params as _count, abstract as _abstract, random_variables as _random_variables





@pytest.mark.parametrize("name,count,input_hw", [
    ("alexnet", 61_100_840, 224),
    ("alexnet_caffe", 60_965_224, 227),
])
def test_full_size(name, count, input_hw):
  spec = models.spec(name)
  assert spec.input_shape == (input_hw, input_hw, 3) and spec.num_classes == 1000
  variables, out, aux = _abstract(name)
  assert _count(variables["params"]) == count
  assert set(variables) == {"params"}
  assert sorted(variables["params"]) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7",
                                         "fc8"]
  assert out.shape == (2, 1000)
  assert aux["conv1"].shape == (2, 55, 55, 64 if name == "alexnet" else 96)
  assert aux["conv2"].shape[1:3] == (27, 27)
  assert aux["features"].shape == (2, 13, 13, 256)
  assert aux["pool5"].shape == (2, 6, 6, 256)
  assert aux["pre_logits"].shape == (2, 4096)


def test_caffe_grouped_kernels():
  variables, _, _ = _abstract("alexnet_caffe")
  p = variables["params"]
  # Grouped layers hold in/2 input channels, as caffe-tensorflow's bvlc_alexnet.npy stores them.
  assert p["conv1"]["kernel"].shape == (11, 11, 3, 96)
  assert p["conv2"]["kernel"].shape == (5, 5, 48, 256)
  assert p["conv3"]["kernel"].shape == (3, 3, 256, 384)
  assert p["conv4"]["kernel"].shape == (3, 3, 192, 384)
  assert p["conv5"]["kernel"].shape == (3, 3, 192, 256)
  assert p["fc6"]["kernel"].shape == (9216, 4096)


@pytest.mark.parametrize("name", ["alexnet", "alexnet_caffe"])
def test_tops(name):
  variables, out, aux = _abstract(name, num_classes=0)
  assert "fc8" not in variables["params"] and out.shape == (2, 4096)
  variables, out, _ = _abstract(name, features_only=True)
  assert sorted(variables["params"]) == ["conv1", "conv2", "conv3", "conv4", "conv5"]
  assert out.shape == (2, 13, 13, 256)
  variables, out, _ = _abstract(name, num_classes=7)
  assert out.shape == (2, 7)
  # The GAP head of SAF-BAGE sits on the conv5 map.
  model = models.get(name, head="gap", num_classes=3, width=0.25)
  x = jax.ShapeDtypeStruct((1, 96, 96, 3), jnp.float32)
  v = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)
  assert sorted(v["params"]["backbone"]) == ["conv1", "conv2", "conv3", "conv4", "conv5"]
  assert jax.eval_shape(lambda v, x: model.apply(v, x), v, x)[0].shape == (1, 3)


def test_bf16_dtype():
  variables, out, aux = _abstract("alexnet_caffe", dtype=jnp.bfloat16, width=0.25)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
  assert out.dtype == jnp.bfloat16 and aux["features"].dtype == jnp.bfloat16


def test_caffe_width_keeps_groups_even():
  for width in (0.1, 0.3, 1 / 16, 0.5):
    ch = alexnet.channels_caffe(width)
    assert all(ch[k] % 2 == 0 for k in ("conv1", "conv2", "conv3", "conv4", "conv5"))
  assert alexnet.channels_caffe(1.0)["conv1"] == 96


# 2-6 s each on 2 busy cores, nearly all XLA compile of the backward pass.
@pytest.mark.slow
@pytest.mark.parametrize("name,hw", [("alexnet", 67), ("alexnet_caffe", 67)])
def test_forward_backward(name, hw):
  model = models.get(name, width=1 / 16, num_classes=5)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, hw, hw, 3))
  variables = _random_variables(model, x)
  labels = jnp.array([1, 3])

  @jax.jit
  def step(params, x, rng):
    def loss_fn(params):
      logits, aux = model.apply({"params": params}, x, train=True, rngs={"dropout": rng})
      logp = jax.nn.log_softmax(logits)
      return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1)), (logits, aux)
    # Evaluation logits in the same program: one compile.
    return jax.value_and_grad(loss_fn, has_aux=True)(params), model.apply({"params": params}, x)[0]

  ((loss, (logits, aux)), grads), eval_logits = step(variables["params"], x,
                                                     jax.random.PRNGKey(2))
  assert logits.shape == (2, 5) and np.isfinite(float(loss))
  assert aux["features"].shape[-1] == 16
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    assert np.all(np.isfinite(g)), path
    assert np.any(g != 0), path
  # Dropout is active in training and off at evaluation.
  assert np.all(np.isfinite(eval_logits)) and not np.allclose(eval_logits, logits)
