"""AlexNet in two reference layouts: torchvision's and Caffe's bvlc_alexnet.

AlexNet: A. Krizhevsky, I. Sutskever, G. E. Hinton, "ImageNet Classification with Deep
Convolutional Neural Networks", NeurIPS 2012; torchvision follows the single-tower variant of
A. Krizhevsky, "One weird trick for parallelizing convolutional neural networks",
arXiv:1404.5997, 2014.

* ``alexnet``: torchvision's "one weird trick" AlexNet (no LRN, no groups, AdaptiveAvgPool(6, 6)),
  224x224 RGB input, 61,100,840 parameters at 1000 classes.
* ``alexnet_caffe``: Caffe ``bvlc_alexnet`` (conv1 pad 0, LRN before pooling, ceil pooling,
  conv2/4/5 in two groups), 227x227 BGR input, 60,965,224 parameters at 1000 classes.

Both name their layers conv1..conv5, fc6, fc7, fc8 so the importers are plain mappings.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn

from jaxface.models import layers, registry

# Output channels of each layer at width 1.0.
_TORCHVISION_CHANNELS = {"conv1": 64, "conv2": 192, "conv3": 384, "conv4": 256, "conv5": 256,
                         "fc6": 4096, "fc7": 4096}
_CAFFE_CHANNELS = {"conv1": 96, "conv2": 256, "conv3": 384, "conv4": 384, "conv5": 256,
                   "fc6": 4096, "fc7": 4096}
_CAFFE_GROUPS = 2  # conv2, conv4 and conv5 of bvlc_alexnet run as two groups.


def channels_torchvision(width: float) -> dict[str, int]:
  """Output channels of the torchvision layout's layers under a width multiplier."""
  return {k: layers.scaled(c, width) for k, c in _TORCHVISION_CHANNELS.items()}


def channels_caffe(width: float) -> dict[str, int]:
  """Output channels of the Caffe layout's layers under a width multiplier.

  Every conv count feeds or leaves a grouped conv, so it is scaled per group to stay divisible by 2.
  """
  return {k: (_CAFFE_GROUPS * layers.scaled(c // _CAFFE_GROUPS, width) if k.startswith("conv")
              else layers.scaled(c, width)) for k, c in _CAFFE_CHANNELS.items()}


def _classifier(module: nn.Module, x_BHWC, aux: dict[str, Any], ch: dict[str, int], train: bool,
                dropout_first: bool):
  """fc6 -> fc7 -> fc8 with the reference's dropout placement.

  torchvision puts dropout before fc6 and fc7; Caffe after relu6 and relu7. ``pre_logits`` is
  exactly what fc8 receives in each layout.
  """
  drop = lambda t: nn.Dropout(module.dropout_rate, deterministic=not train)(t)
  x = layers.flatten_hwc(x_BHWC)
  for name in ("fc6", "fc7"):
    if dropout_first:
      x = drop(x)
    x = nn.relu(nn.Dense(ch[name], dtype=module.dtype, name=name)(x))
    aux[name] = x
    if not dropout_first:
      x = drop(x)
  aux["pre_logits"] = x
  if module.num_classes == 0:
    return x, aux
  logits = nn.Dense(module.num_classes, dtype=module.dtype, name="fc8")(x)
  return logits, aux


def _conv_relu(module: nn.Module, x, name: str, kernel: int, *, aux: dict[str, Any],
               ch: dict[str, int], stride: int = 1, pad: int = 0, groups: int = 1):
  """Conv + ReLU named after the source layer; the activation is recorded in ``aux[name]``.

  ``feature_group_count=2`` uses HWIO kernels (kh, kw, in/2, out) with group-major outputs, the
  same layout as Caffe groups and the caffe-tensorflow split/concat.
  """
  x = layers.Conv(ch[name], (kernel, kernel), strides=stride, padding=pad,
                  feature_group_count=groups, dtype=module.dtype, name=name)(x)
  aux[name] = x = nn.relu(x)
  return x


class AlexNet(layers.Classifier):
  """torchvision AlexNet (``torchvision/models/alexnet.py``).

  ``aux['features']`` is relu(conv5) before pool5.
  """

  @nn.compact
  def __call__(self, x_BHWC, train: bool = False):
    ch = channels_torchvision(self.width)
    aux: dict[str, Any] = {}

    conv = functools.partial(_conv_relu, self, aux=aux, ch=ch)

    x = x_BHWC.astype(self.dtype)
    x = layers.max_pool_floor(conv(x, "conv1", 11, stride=4, pad=2), 3, 2)
    x = layers.max_pool_floor(conv(x, "conv2", 5, pad=2), 3, 2)
    x = conv(x, "conv3", 3, pad=1)
    x = conv(x, "conv4", 3, pad=1)
    x = conv(x, "conv5", 3, pad=1)
    aux["features"] = x
    if self.features_only:
      return x, aux
    # AdaptiveAvgPool(6, 6) is the identity at 224 px and keeps fc6 at 6*6*C for other sizes.
    x = layers.adaptive_avg_pool(layers.max_pool_floor(x, 3, 2), (6, 6))
    aux["pool5"] = x
    return _classifier(self, x, aux, ch, train, dropout_first=True)


class AlexNetCaffe(layers.Classifier):
  """Caffe bvlc_alexnet (BVLC/caffe ``models/bvlc_alexnet/deploy.prototxt``): LRN before pool,
  ceil pooling, grouped conv2/conv4/conv5 (group-major: the first half of the output channels
  comes from the first half of the input channels).

  No adaptive pooling: fc6 expects 6x6 maps, i.e. 227x227 input, for the reference weights.
  """

  @nn.compact
  def __call__(self, x_BHWC, train: bool = False):
    ch = channels_caffe(self.width)
    aux: dict[str, Any] = {}

    conv = functools.partial(_conv_relu, self, aux=aux, ch=ch)

    x = x_BHWC.astype(self.dtype)
    x = conv(x, "conv1", 11, stride=4)
    x = layers.max_pool_ceil(layers.lrn_caffe(x), 3, 2)
    x = conv(x, "conv2", 5, pad=2, groups=_CAFFE_GROUPS)
    x = layers.max_pool_ceil(layers.lrn_caffe(x), 3, 2)
    x = conv(x, "conv3", 3, pad=1)
    x = conv(x, "conv4", 3, pad=1, groups=_CAFFE_GROUPS)
    x = conv(x, "conv5", 3, pad=1, groups=_CAFFE_GROUPS)
    aux["features"] = x
    if self.features_only:
      return x, aux
    x = layers.max_pool_ceil(x, 3, 2)
    aux["pool5"] = x
    return _classifier(self, x, aux, ch, train, dropout_first=False)


@registry.register("alexnet", input_shape=(224, 224, 3), num_classes=1000,
                   description="torchvision AlexNet (no LRN/groups, AdaptiveAvgPool 6x6), RGB")
def _build_alexnet(**kw) -> nn.Module:
  return AlexNet(**kw)


@registry.register("alexnet_caffe", input_shape=(227, 227, 3), num_classes=1000,
                   description="Caffe bvlc_alexnet (LRN, groups=2, ceil pooling), BGR 0..255")
def _build_alexnet_caffe(**kw) -> nn.Module:
  return AlexNetCaffe(**kw)
