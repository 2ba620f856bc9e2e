"""Layer primitives shared by the model zoo.

Each helper reproduces one reference semantics exactly (Caffe ceil pooling, Caffe LRN, align-corners
bilinear resize, torch adaptive average pooling, PReLU), because weight parity with the source
frameworks depends on these details (SPEC section 0).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def scaled(channels: int, width: float) -> int:
  """Channel count under a width multiplier (at least 1)."""
  return max(1, int(round(channels * width)))


def ceil_pool_size(size: int, window: int, stride: int, pad: int = 0) -> int:
  """Output size of a Caffe / torch ``ceil_mode=True`` pooling along one axis."""
  out = int(math.ceil((size + 2 * pad - window) / stride)) + 1
  # Caffe and torch drop a last window that would start inside the bottom/right padding only.
  if pad > 0 and (out - 1) * stride >= size + pad:
    out -= 1
  return out


def max_pool_ceil(x_BHWC: jax.Array, window: int, stride: int, pad: int = 0) -> jax.Array:
  """Max pooling with Caffe's ceil output size (also torch ``ceil_mode=True``).

  The missing bottom/right rows are emulated with ``-inf`` padding so they never win the max.
  """
  _, h, w, _ = x_BHWC.shape
  pads = []
  for size in (h, w):
    out = ceil_pool_size(size, window, stride, pad)
    high = (out - 1) * stride + window - size - pad
    pads.append((pad, max(high, 0)))
  return lax.reduce_window(
      x_BHWC, -jnp.inf, lax.max, (1, window, window, 1), (1, stride, stride, 1),
      ((0, 0), pads[0], pads[1], (0, 0)))


def max_pool_floor(x_BHWC: jax.Array, window: int, stride: int, pad: int = 0) -> jax.Array:
  """Max pooling with floor output size and symmetric ``-inf`` padding (torch default)."""
  return nn.max_pool(x_BHWC, (window, window), (stride, stride), ((pad, pad), (pad, pad)))


def lrn_caffe(x_BHWC: jax.Array, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
              k: float = 1.0) -> jax.Array:
  """Caffe ACROSS_CHANNELS local response normalisation (alpha divided by ``size``).

  Equal to ``torch.nn.LocalResponseNorm(size, alpha, beta, k)``; channels outside the range add
  zero.
  """
  half = size // 2
  sq = jnp.square(x_BHWC.astype(jnp.float32))
  summed = lax.reduce_window(sq, 0.0, lax.add, (1, 1, 1, size), (1, 1, 1, 1),
                             ((0, 0), (0, 0), (0, 0), (half, size - 1 - half)))
  return (x_BHWC / jnp.power(k + (alpha / size) * summed, beta)).astype(x_BHWC.dtype)


def interpolate_axis(x: jax.Array, axis: int, coords: np.ndarray) -> jax.Array:
  """Linear interpolation of ``x`` along ``axis`` at (static) source coordinates, edge-clamped."""
  n = x.shape[axis]
  coords = np.clip(np.asarray(coords, np.float64), 0.0, n - 1)
  i0 = np.floor(coords).astype(np.int32)
  i1 = np.minimum(i0 + 1, n - 1)
  frac = (coords - i0).astype(np.float32)
  shape = [1] * x.ndim
  shape[axis] = len(coords)
  frac = jnp.asarray(frac, dtype=x.dtype).reshape(shape)
  a = jnp.take(x, jnp.asarray(i0), axis=axis)
  b = jnp.take(x, jnp.asarray(i1), axis=axis)
  return a + (b - a) * frac


def align_corners_coords(n_in: int, n_out: int) -> np.ndarray:
  """Source coordinates of bilinear resizing with ``align_corners=True``."""
  if n_out == 1:
    return np.zeros((1,))
  return np.arange(n_out) * ((n_in - 1) / (n_out - 1))


def resize_bilinear_align_corners(x_BHWC: jax.Array, size: Sequence[int]) -> jax.Array:
  """Bilinear resize with align_corners=True (Caffe ``Interp``, torch ``UpsamplingBilinear2d``)."""
  h, w = int(size[0]), int(size[1])
  y = interpolate_axis(x_BHWC, 1, align_corners_coords(x_BHWC.shape[1], h))
  return interpolate_axis(y, 2, align_corners_coords(x_BHWC.shape[2], w))


def resize_bilinear_half_pixel(x_BHWC: jax.Array, size: Sequence[int]) -> jax.Array:
  """Bilinear resize with half-pixel centres and no antialiasing (cv2 INTER_LINEAR, torch
  ``align_corners=False``)."""
  b, _, _, c = x_BHWC.shape
  return jax.image.resize(x_BHWC, (b, int(size[0]), int(size[1]), c), method="linear",
                          antialias=False)


def adaptive_avg_pool(x_BHWC: jax.Array, size: Sequence[int]) -> jax.Array:
  """torch ``AdaptiveAvgPool2d``: cell i averages ``floor(i*In/Out) .. ceil((i+1)*In/Out)-1``."""
  _, h, w, _ = x_BHWC.shape
  oh, ow = int(size[0]), int(size[1])
  if (h, w) == (oh, ow):
    return x_BHWC
  if h % oh == 0 and w % ow == 0:
    kh, kw = h // oh, w // ow
    return nn.avg_pool(x_BHWC, (kh, kw), (kh, kw))

  def pool_axis(t, axis, n_in, n_out):
    cells = []
    for i in range(n_out):
      start = (i * n_in) // n_out
      end = -((-(i + 1) * n_in) // n_out)
      cells.append(jnp.mean(lax.slice_in_dim(t, start, end, axis=axis), axis=axis, keepdims=True))
    return jnp.concatenate(cells, axis=axis)

  return pool_axis(pool_axis(x_BHWC, 1, h, oh), 2, w, ow)


def flatten_hwc(x_BHWC: jax.Array) -> jax.Array:
  """NHWC flatten (H, W, C order). Importers permute foreign dense rows to this order."""
  return x_BHWC.reshape(x_BHWC.shape[0], -1)


class PReLU(nn.Module):
  """Parametric ReLU with one slope per channel: ``max(0, x) + a_c * min(0, x)``."""
  init_slope: float = 0.25
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    a = self.param("alpha", nn.initializers.constant(self.init_slope), (x.shape[-1],),
                   self.param_dtype)
    return jnp.maximum(x, 0) + a.astype(x.dtype) * jnp.minimum(x, 0)


class Classifier(nn.Module):
  """Fields shared by the classifier backbones (AlexNet, VGG, GilNet).

  ``num_classes=0`` makes the model return its pre-logits, ``features_only`` its last conv map;
  ``width`` scales every channel count; ``dtype`` is the computation dtype (parameters stay f32).
  """
  num_classes: int = 1000
  width: float = 1.0
  dtype: Any = jnp.float32
  dropout_rate: float = 0.5
  features_only: bool = False
