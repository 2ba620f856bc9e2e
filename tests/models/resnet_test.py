"""ResNet-18/50: full-size parameter counts and shapes (eval_shape), tiny-width training steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxface import models
from tests.helpers import count_params as _count

# torchvision's published counts (trainable parameters; BN running stats are batch_stats).
PARAMS = {"resnet18": 11_689_512, "resnet50": 25_557_032}
FEATURES = {"resnet18": 512, "resnet50": 2048}


def _abstract(model, shape):
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  v = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)
  out, aux = jax.eval_shape(lambda v, x: model.apply(v, x), v, x)
  return v, out, aux



@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_full_size_param_count_and_shapes(name):
  v, out, aux = _abstract(models.get(name), (2, 224, 224, 3))
  assert _count(v["params"]) == PARAMS[name]
  assert out.shape == (2, 1000)
  c = FEATURES[name]
  assert aux["conv1"].shape == (2, 112, 112, 64)
  assert aux["layer1"].shape == (2, 56, 56, c // 8)
  assert aux["features"].shape == aux["layer4"].shape == (2, 7, 7, c)
  assert aux["pre_logits"].shape == (2, c)
  # Module names mirror the torchvision state dict.
  assert v["params"]["layer2_0"]["downsample_conv"]["kernel"].shape == (1, 1, c // 8, c // 4)
  assert set(v["batch_stats"]["layer2_0"]["downsample_bn"]) == {"mean", "var"}
  assert "downsample_conv" not in v["params"]["layer2_1"]
  if name == "resnet50":
    # torchvision v1.5: the stride sits on the 3x3 conv, the 1x1 convs are stride 1.
    assert v["params"]["layer2_0"]["conv2"]["kernel"].shape == (3, 3, 128, 128)
    assert "downsample_conv" in v["params"]["layer1_0"]  # 64 -> 256 channels.
  else:
    assert "downsample_conv" not in v["params"]["layer1_0"]


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_headless_variants_and_other_input_sizes(name):
  c = FEATURES[name]
  v, out, aux = _abstract(models.get(name, num_classes=0), (2, 200, 200, 3))
  assert out.shape == (2, c) and "fc" not in v["params"]
  assert _count(v["params"]) == PARAMS[name] - (c * 1000 + 1000)
  v, out, _ = _abstract(models.get(name, features_only=True), (2, 64, 64, 3))
  assert out.shape == (2, 2, 2, c) and "fc" not in v["params"]
  _, out, _ = _abstract(models.get(name, num_classes=7), (1, 200, 200, 3))
  assert out.shape == (1, 7)


def test_bfloat16_compute_keeps_float32_params():
  v, out, _ = _abstract(models.get("resnet18", width=1 / 16, dtype=jnp.bfloat16), (2, 64, 64, 3))
  assert out.dtype == jnp.bfloat16
  assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(v))


def train_and_eval_grads(model, x, num_classes):
  """Gradients of a scalar loss in training mode (batch statistics) and in evaluation mode
  (running statistics), from one compiled program (two compiles cost twice as much on CPU)."""
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
  stats = variables["batch_stats"]

  def loss_fn(params, train):
    if train:
      (logits, _), new = model.apply({"params": params, "batch_stats": stats}, x, train=True,
                                     mutable=["batch_stats"])
      new_stats = new["batch_stats"]
    else:
      logits, _ = model.apply({"params": params, "batch_stats": stats}, x)
      new_stats = stats
    return jnp.mean(jax.nn.log_softmax(logits)[:, 0]), (logits, new_stats)

  grad_fn = jax.grad(loss_fn, has_aux=True)
  results = jax.jit(lambda p: (grad_fn(p, True), grad_fn(p, False)))(variables["params"])
  # Checks run in numpy: one tiny XLA compile per differently-shaped leaf would dominate the test.
  results, stats = jax.device_get((results, stats))
  for train, (grads, (logits, new_stats)) in zip((True, False), results):
    assert logits.shape == (x.shape[0], num_classes)
    assert np.all(np.isfinite(logits))
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(np.all(np.isfinite(g)) for g in leaves)
    assert all(np.abs(g).sum() > 0 for g in leaves)
    changed = jax.tree_util.tree_leaves(
        jax.tree_util.tree_map(lambda a, b: bool(np.any(a != b)), stats, new_stats))
    # Training updates every running statistic; evaluation leaves them untouched.
    assert all(changed) if train else not any(changed)
  return results


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_tiny_forward_backward_train_and_eval(name):
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 64, 64, 3)), jnp.float32)
  train_and_eval_grads(models.get(name, width=1 / 16, num_classes=5), x, 5)
