"""Tiny models shared by the explain tests (hand-checkable, a few hundred parameters)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


def init(model: nn.Module, x, seed: int = 0):
  """He-scaled numpy variables (biases N(0, 0.1)): shapes from eval_shape, so no initialiser is
  compiled (an eager ``model.init`` compiles one program per parameter)."""
  import jax  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  return jax.tree.map(
      lambda s: (rng.normal(size=s.shape) * (np.sqrt(2 / np.prod(s.shape[:-1]))
                                             if len(s.shape) > 1 else 0.1)).astype(np.float32),
      shapes)


class GapNet(nn.Module):
  """conv -> ReLU (aux 'features') -> global average pooling -> linear: the CAM architecture."""
  channels: int = 4
  num_classes: int = 3
  stride: int = 1
  mask: tuple | None = None  # (y0, y1, x0, x1): the input is zeroed outside this box first.

  @nn.compact
  def __call__(self, x, train: bool = False):
    aux = {}
    if self.mask is not None:
      y0, y1, x0, x1 = self.mask
      m = np.zeros(x.shape[1:3], np.float32)
      m[y0:y1, x0:x1] = 1
      x = x * m[None, :, :, None]
    x = aux["conv"] = nn.Conv(self.channels, (3, 3), strides=self.stride, name="conv")(x)
    x = aux["features"] = nn.relu(x)
    aux["pre_logits"] = pooled = jnp.mean(x, axis=(1, 2))
    logits = nn.Dense(self.num_classes, name="fc")(pooled)
    return logits, aux


class Identity2(nn.Module):
  """aux['features'] is the 2-channel input itself; logits = W^T mean(x) + b (hand-computable)."""
  num_classes: int = 2

  @nn.compact
  def __call__(self, x, train: bool = False):
    aux = {"features": x}
    logits = nn.Dense(self.num_classes, name="fc")(jnp.mean(x, axis=(1, 2)))
    return logits, aux


class RegionSum(nn.Module):
  """One logit: the sum of the input over the box R = [y0, y1) x [x0, x1), all channels."""
  box: tuple = (2, 6, 3, 7)

  @nn.compact
  def __call__(self, x, train: bool = False):
    y0, y1, x0, x1 = self.box
    s = jnp.sum(x[:, y0:y1, x0:x1, :], axis=(1, 2, 3))
    return s[:, None], {"features": x}


class TwoConv(nn.Module):
  """conv -> conv (stride 2) -> flatten -> linear, defined in setup with the head *first*, so the
  definition order (fc, conv1, conv2) differs from the forward order (conv1, conv2, fc)."""

  def setup(self):
    self.fc = nn.Dense(2)
    self.conv1 = nn.Conv(6, (3, 3))
    self.conv2 = nn.Conv(6, (3, 3), strides=2)

  def __call__(self, x, train: bool = False):
    a1 = nn.relu(self.conv1(x))
    a2 = nn.relu(self.conv2(a1))
    return self.fc(a2.reshape(a2.shape[0], -1)), {"conv1": a1, "features": a2}


def blob_data(n: int, size: int = 16, seed: int = 0):
  """Noise images with a bright 4x4 blob in the left (label 0) or right (label 1) half."""
  rng = np.random.default_rng(seed)
  x = (rng.random((n, size, size, 1)) * 0.2).astype(np.float32)
  y = rng.integers(0, 2, n)
  for i in range(n):
    r = rng.integers(0, size - 4)
    c = rng.integers(0, size // 2 - 4) + (size // 2 if y[i] else 0)
    x[i, r:r + 4, c:c + 4] += 1.0
  return x, y.astype(np.int32)


def train_two_conv(steps: int = 80, seed: int = 0):
  """TwoConv trained with Adam on blob_data; returns (model, variables, train accuracy)."""
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  model = TwoConv()
  x, y = blob_data(64, seed=seed)
  variables = init(model, x[:1], seed)
  opt = optax.adam(1e-2)
  state = opt.init(variables["params"])

  def loss(p):
    logits, _ = model.apply({"params": p}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def step(p, s):
    g = jax.grad(loss)(p)
    u, s = opt.update(g, s)
    return optax.apply_updates(p, u), s

  params = variables["params"]
  for _ in range(steps):
    params, state = step(params, state)
  acc = float((np.argmax(model.apply({"params": params}, x)[0], -1) == y).mean())
  return model, {"params": params}, acc
