"""dlib's ``dnn_age_predictor_v1`` (Cydral Technology, dlib-models, CC0): a ResNet-10 on 64x64.

Stem: 7x7/2 valid conv (64) -> affine -> ReLU -> 3x3/2 valid max pool (64 -> 29 -> 14). Then five
residual blocks of two 3x3 convs each (affine after each conv, ReLU after the sum): 64; 128 down;
128; 256 down; 256. A down block's first conv is a 3x3/2 *valid* conv and its shortcut a 2x2/2
average pool of the block input, so the two branches differ in size (at 64 px: a 6x6x128 conv
output against a 7x7x64 pooled shortcut); dlib's ``add_prev`` then zero-pads both to the larger
size at the trailing rows, columns and channels before adding (``pad_add``). Then global average
pool -> fc 81 (ages 0..80).

Returns ``(logits, aux)``: aux holds ``stem``, ``block1``..``block5`` (after the ReLU),
``features`` (block5, the last conv map) and ``pre_logits`` (the pooled 256 features).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxface.models import layers, registry
from jaxface.models.dlib_gender import conv_affine

# (channels, downsample) of the five residual blocks.
_BLOCKS = ((64, False), (128, True), (128, False), (256, True), (256, False))


def pad_add(a_BHWC: jax.Array, b_BHWC: jax.Array) -> jax.Array:
  """dlib ``add_prev``: zero-pads both tensors at the end of H, W and C to a common shape, adds."""
  shape = [max(sa, sb) for sa, sb in zip(a_BHWC.shape, b_BHWC.shape)]

  def pad(t):
    return jnp.pad(t, [(0, s - n) for s, n in zip(shape, t.shape)])

  return pad(a_BHWC) + pad(b_BHWC)


class DlibAge(layers.Classifier):
  """dlib age predictor; ``softmax(logits) @ AGE_YEARS`` is the expected age."""
  num_classes: int = 81

  @nn.compact
  def __call__(self, x_BHWC, train: bool = False):
    del train  # dlib's inference graph has no dropout or batch statistics.
    c = lambda n: layers.scaled(n, self.width)  # noqa: E731
    aux: dict[str, Any] = {}
    x = x_BHWC.astype(self.dtype)
    x = aux["stem"] = conv_affine(x, c(64), 7, stride=2, name="stem", dtype=self.dtype)
    x = nn.max_pool(x, (3, 3), (2, 2))
    for i, (ch, down) in enumerate(_BLOCKS, start=1):
      y = conv_affine(x, c(ch), 3, stride=2 if down else 1, pad=0 if down else 1,
                      name=f"block{i}_1", dtype=self.dtype)
      y = conv_affine(y, c(ch), 3, pad=1, relu=False, name=f"block{i}_2", dtype=self.dtype)
      shortcut = nn.avg_pool(x, (2, 2), (2, 2)) if down else x
      x = aux[f"block{i}"] = nn.relu(pad_add(shortcut, y))
    aux["features"] = x
    if self.features_only:
      return x, aux
    x = aux["pre_logits"] = jnp.mean(x, axis=(1, 2))
    if self.num_classes == 0:
      return x, aux
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)
    return logits, aux


@registry.register("dlib_age", input_shape=(64, 64, 3), num_classes=81,
                   description="dlib dnn_age_predictor_v1 (Cydral ResNet-10; 64x64 RGB dlib chip)")
def _build(**kw):
  return DlibAge(**kw)
