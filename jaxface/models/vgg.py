"""VGG-16 (configuration "D") and VGG-Face.

VGG-16: K. Simonyan, A. Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR 2015, arXiv:1409.1556. VGG-Face: O. M. Parkhi, A. Vedaldi, A. Zisserman, "Deep
Face Recognition", BMVC 2015.

* ``vgg16``: torchvision layout with AdaptiveAvgPool(7, 7) before fc6, 138,357,544 parameters at
  1000 classes. Keras applications VGG16 weights fit it too (the adaptive pool is the identity at
  224 px).
* ``vgg_face``: the same network with 2622 identity classes and no adaptive pool (the VGG-Face
  releases only run at 224 px), 145,002,878 parameters.

Layers are named conv1_1..conv5_3, fc6, fc7, fc8 after the Caffe / VGG-Face release.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from jaxface.models import layers, registry

# Channels of the 3x3 convs of each block, at width 1.0; every block ends with a 2x2/2 max pool.
_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
CONV_NAMES = tuple(f"conv{b}_{i}" for b, block in enumerate(_BLOCKS, 1)
                   for i in range(1, len(block) + 1))
_HIDDEN = 4096


def channels(width: float) -> dict[str, int]:
  """Output channels of conv1_1..conv5_3, fc6 and fc7 under a width multiplier."""
  flat = [c for block in _BLOCKS for c in block]
  out = {name: layers.scaled(c, width) for name, c in zip(CONV_NAMES, flat)}
  out.update(fc6=layers.scaled(_HIDDEN, width), fc7=layers.scaled(_HIDDEN, width))
  return out


class VGG16(layers.Classifier):
  """VGG-16 "D". ``aux['features']`` is relu(conv5_3) before pool5 (the usual Grad-CAM layer)."""
  adaptive_pool: bool = True  # torchvision's AdaptiveAvgPool(7, 7) before the flatten.

  @nn.compact
  def __call__(self, x_BHWC, train: bool = False):
    ch = channels(self.width)
    aux: dict[str, Any] = {}
    x = x_BHWC.astype(self.dtype)
    for b, block in enumerate(_BLOCKS, 1):
      if b > 1:
        x = layers.max_pool_floor(x, 2, 2)
        aux[f"pool{b - 1}"] = x
      for i in range(1, len(block) + 1):
        name = f"conv{b}_{i}"
        x = nn.relu(layers.Conv(ch[name], (3, 3), padding=1, dtype=self.dtype, name=name)(x))
        aux[name] = x
    aux["features"] = x
    if self.features_only:
      return x, aux
    x = layers.max_pool_floor(x, 2, 2)
    if self.adaptive_pool:
      x = layers.adaptive_avg_pool(x, (7, 7))
    aux["pool5"] = x
    # Both torchvision and VGG-Face place dropout after relu6 and relu7.
    x = layers.flatten_hwc(x)
    for name in ("fc6", "fc7"):
      x = nn.relu(nn.Dense(ch[name], dtype=self.dtype, name=name)(x))
      aux[name] = x
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    aux["pre_logits"] = x
    if self.num_classes == 0:
      return x, aux
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="fc8")(x)
    return logits, aux


class VGGFace(VGG16):
  """VGG-Face (Parkhi et al. 2015): VGG-16 with 2622 identities, fc6 on the plain 7x7 pool5."""
  num_classes: int = 2622
  adaptive_pool: bool = False


@registry.register("vgg16", input_shape=(224, 224, 3), num_classes=1000,
                   description="VGG-16 'D' (torchvision layout, AdaptiveAvgPool 7x7)")
def _build_vgg16(**kw) -> nn.Module:
  return VGG16(**kw)


@registry.register("vgg_face", input_shape=(224, 224, 3), num_classes=2622,
                   description="VGG-Face (VGG-16 'D', 2622 identities), BGR 0..255")
def _build_vgg_face(**kw) -> nn.Module:
  return VGGFace(**kw)
