"""ML-Net saliency model (M. Cornia, L. Baraldi, G. Serra, R. Cucchiara, "A Deep Multi-Level
Network for Saliency Prediction", ICPR 2016, arXiv:1609.01064).

Reference: the authors' code, marcellacornia/mlnet (Keras 1.1 + Theano,
``image_dim_ordering="th"``; ``model.py``, ``eltwise_product.py``). Input 480x640 BGR minus the
ImageNet mean; output a (N, 60, 80, 1) saliency map at stride 8.

* Backbone: VGG-16 convs (3x3 "same", ReLU) with the Keras-1-Theano "same" max pooling (pad one
  row/column at the top/left, VALID 2x2 window): stride 2 after blocks 1-3, **stride 1** after
  block 4, no pool5. Output i of a pool covers input rows ``s*i - 1, s*i``; the last row is never
  used. ``pool_mode="standard"`` uses windows ``s*i, s*i + 1`` instead (TF "SAME" pooling).
* Encoding: concat ``[conv3_pool, conv4_pool, conv5_3]`` (1280 channels), element-wise dropout 0.5,
  ``int_conv`` (3x3, 64, ReLU), ``pre_final_conv`` (1x1, 1, ReLU); both Keras 1 ``glorot_normal``
  (untruncated normal, std ``sqrt(2 / (fan_in + fan_out))`` with the receptive field in the fans).
* Learned prior ``prior/W`` of shape ``prior_shape`` (6, 8), zero-initialised; the map is multiplied
  by ``1 + W`` upsampled to the feature size, then a final ReLU.

Prior resampling. The reference upsamples with Theano's ``bilinear_upsampling(ratio=10)``, i.e.
separable linear interpolation at source coordinate ``u = (j - (r - 1) // 2) / r`` clamped to
``[0, n - 1]`` (edge replication; Theano's ``abstract_conv.py``, e.g. ``u = (j - 4) / 10`` for
r = 10); this model uses exactly that grid whenever the feature size is an integer multiple ``r``
of the prior size along an axis (r = 10 at 480x640, but also e.g. a 2x3 prior on a 20x30 map).
**Deviation**: the reference only accepts 480x640 inputs; for other sizes (e.g. 224x224 face crops
-> 28x28 features) the (6, 8) prior is resized to the feature map with half-pixel-centre bilinear
interpolation (cv2 / ``align_corners=False``, edge-clamped). That is the natural continuation of the
Theano grid: for odd integer ratios the two grids coincide, for even ones Theano sits half an output
pixel further along. Keeping the prior shape fixed lets the released SALICON weights run on any
input size; ``prior_shape`` is a field so a prior can also be trained at the reference ratio for
another input size.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxface.models import layers, registry

# VGG-16 conv blocks: (block, number of convs, channels).
_VGG_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))
POOL_MODES = ("keras_theano", "standard")

# Keras 1 initialisers: glorot_uniform is the Convolution2D default (the backbone when no VGG
# weights are loaded); glorot_normal is an untruncated normal with variance 2 / (fan_in + fan_out).
keras1_glorot_uniform = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")
keras1_glorot_normal = nn.initializers.variance_scaling(1.0, "fan_avg", "normal")


def theano_upsampling_coords(n_in: int, ratio: int) -> np.ndarray:
  """Source coordinates of Theano ``bilinear_upsampling`` (integer ``ratio``) along one axis.

  Theano edge-pads by one sample and runs a strided transposed convolution with a triangle kernel
  of length ``2r - 1``; that places output ``j`` at ``(j - (r - 1) // 2) / r`` (clamped).
  """
  return (np.arange(n_in * ratio) - (ratio - 1) // 2) / ratio


def half_pixel_coords(n_in: int, n_out: int) -> np.ndarray:
  """Source coordinates of half-pixel-centre bilinear resizing (cv2 INTER_LINEAR)."""
  return (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5


def prior_coords(n_in: int, n_out: int) -> np.ndarray:
  """The Theano grid for an integer ratio, half-pixel bilinear otherwise (see module docstring)."""
  if n_out % n_in == 0:
    return theano_upsampling_coords(n_in, n_out // n_in)
  return half_pixel_coords(n_in, n_out)


def upsample_prior(prior_HW: jax.Array, size: Sequence[int]) -> jax.Array:
  """Resizes a 2-D prior to ``size`` (H, W) on the grid of :func:`prior_coords`."""
  h, w = int(size[0]), int(size[1])
  y = layers.interpolate_axis(prior_HW, 0, prior_coords(prior_HW.shape[0], h))
  return layers.interpolate_axis(y, 1, prior_coords(prior_HW.shape[1], w))


def max_pool_2x2(x_BHWC: jax.Array, stride: int, pool_mode: str = "keras_theano") -> jax.Array:
  """2x2 max pooling with ``ceil(H / stride)`` outputs.

  "keras_theano": Keras 1 Theano ``border_mode="same"`` (pads 1 on both sides, pools without the
  border, keeps the first ``ceil(H/s)`` outputs), i.e. windows ``s*i - 1, s*i``. "standard":
  windows ``s*i, s*i + 1`` (the padding, if used, is at the bottom/right).
  """
  if pool_mode == "keras_theano":
    pads = ((1, 0), (1, 0))
  elif pool_mode == "standard":
    pads = ((0, 1), (0, 1))
  else:
    raise ValueError(f"pool_mode must be one of {POOL_MODES}, got {pool_mode!r}")
  # nn.max_pool pads with -inf, so padding never wins the max.
  return nn.max_pool(x_BHWC, (2, 2), (stride, stride), pads)


def relu_with_leaky_grad(x: jax.Array, slope: float) -> jax.Array:
  """``relu(x)`` in value; in the gradient, ``slope`` instead of 0 where ``x <= 0``.

  ``x - stop_gradient(x)`` is exactly zero in the forward pass, so outputs (and every loss value)
  are bit-identical to the plain ReLU; only the backward pass lets a dead pixel feel the loss.
  """
  y = nn.relu(x)
  if not slope:
    return y
  # x <= 0: the second ReLU sees exact zeros from the first one, where relu' is 0 too.
  return y + slope * jnp.where(x <= 0, x - jax.lax.stop_gradient(x), 0.0)


class LearnedPrior(nn.Module):
  """ML-Net's ``EltWiseProduct``: multiplies the map by ``1 + W`` upsampled to its size."""
  shape: tuple[int, int] = (6, 8)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> tuple[jax.Array, jax.Array]:
    w = self.param("W", nn.initializers.zeros, tuple(self.shape), jnp.float32)
    prior_HW = upsample_prior(1.0 + w, x_BHWC.shape[1:3])
    prior_11HW1 = prior_HW[None, :, :, None].astype(self.dtype)
    return x_BHWC * prior_11HW1, prior_11HW1


class MLNet(nn.Module):
  """ML-Net. ``__call__`` returns ``(saliency_BHW1, aux)``; the map is at stride 8.

  aux: "conv1".."conv5" (last ReLU of each block), "conv1_pool".."conv4_pool", "conv5_3",
  "encoded" (the 1280-channel concat, before dropout; also under "features"), "pre_relu"
  (``pre_final_conv`` before its ReLU), "pre_prior" (after it), "prior" (the upsampled
  ``1 + W``, shape (1, H, W, 1)) and "saliency" (the output).
  """
  width: float = 1.0
  dtype: Any = jnp.float32
  dropout_rate: float = 0.5
  prior_shape: tuple[int, int] = (6, 8)
  pool_mode: str = "keras_theano"
  # Training only: gradient slope of the last two ReLUs below zero (0: the reference). Outputs
  # are unchanged (see relu_with_leaky_grad); it keeps pixels that should light up trainable.
  dead_relu_grad: float = 0.0

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, train: bool = False):
    if self.pool_mode not in POOL_MODES:
      raise ValueError(f"pool_mode must be one of {POOL_MODES}, got {self.pool_mode!r}")
    aux: dict[str, jax.Array] = {}
    x = x_BHWC.astype(self.dtype)
    # Pooling after blocks 1-4 (stride 1 after block 4); block 5 has no pool.
    pool_strides = {1: 2, 2: 2, 3: 2, 4: 1}
    for block, n_convs, channels in _VGG_BLOCKS:
      for i in range(1, n_convs + 1):
        name = f"conv{block}_{i}"
        x = layers.Conv(layers.scaled(channels, self.width), (3, 3), padding="SAME",
                        dtype=self.dtype, kernel_init=keras1_glorot_uniform, name=name)(x)
        x = nn.relu(x)
      aux[f"conv{block}"] = x
      if block in pool_strides:
        x = max_pool_2x2(x, pool_strides[block], self.pool_mode)
        aux[f"conv{block}_pool"] = x
    aux["conv5_3"] = x

    encoded = jnp.concatenate([aux["conv3_pool"], aux["conv4_pool"], aux["conv5_3"]], axis=-1)
    aux["encoded"] = encoded
    aux["features"] = encoded
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(encoded)
    x = layers.Conv(layers.scaled(64, self.width), (3, 3), padding="SAME", dtype=self.dtype,
                    kernel_init=keras1_glorot_normal, name="int_conv")(x)
    x = nn.relu(x)
    # One output map whatever the width.
    x = layers.Conv(1, (1, 1), dtype=self.dtype, kernel_init=keras1_glorot_normal,
                    name="pre_final_conv")(x)
    aux["pre_relu"] = x
    leak = self.dead_relu_grad if train else 0.0
    x = relu_with_leaky_grad(x, leak)
    aux["pre_prior"] = x
    x, prior = LearnedPrior(tuple(self.prior_shape), dtype=self.dtype, name="prior")(x)
    aux["prior"] = prior
    out = relu_with_leaky_grad(x, leak)
    aux["saliency"] = out
    return out, aux


@registry.register("mlnet", input_shape=(480, 640, 3), num_classes=None, classifier=False,
                   description="ML-Net saliency (VGG-16 multi-level features + learned prior), "
                               "SALICON; output (N, 60, 80, 1) at 480x640")
def _build(**kw):
  return MLNet(**kw)
