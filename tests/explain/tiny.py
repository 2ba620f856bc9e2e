"""Tiny models shared by the explain tests (hand-checkable, a few hundred parameters)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


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
