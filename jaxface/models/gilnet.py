"""GilNet: the age / gender CNN of G. Levi, T. Hassner, "Age and Gender Classification using
Convolutional Neural Networks", CVPR Workshops (AMFG) 2015, doi:10.1109/CVPRW.2015.7301352; the
layout of the authors' Caffe prototxts (GilLevi/AgeGenderDeepLearning).

Three convolutions and three fully connected layers on a 227x227 BGR face crop. Pooling uses
Caffe's ceil output size (56 -> 28 -> 14 -> 7), so fc6 sees 7x7x384 = 18,816 inputs, as in the
released caffemodels; LRN follows the pooling (CaffeNet order) and divides alpha by the window size.
"""

from __future__ import annotations


import flax.linen as nn

from jaxface.models import layers, registry

# Caffe initialisation of Levi & Hassner's train_val prototxt: Gaussian std 0.01 (convs, fc8) and
# 0.005 (fc6, fc7); biases 1 for conv2, fc6 and fc7, 0 elsewhere.
_CONV_INIT = nn.initializers.normal(0.01)
_FC_INIT = nn.initializers.normal(0.005)
_FC8_INIT = nn.initializers.normal(0.01)


def _const(value: float):
  return nn.initializers.constant(value)


class GilNet(layers.Classifier):
  """Levi & Hassner age (8 classes) / gender (2 classes) network.

  Returns ``(logits, aux)``; aux holds conv1..conv3 (after ReLU), norm1, norm2, pool5, fc6, fc7,
  "features" (conv3 map, the last conv map before pool5) and "pre_logits" (fc8 input).
  """
  num_classes: int = 8

  @nn.compact
  def __call__(self, x_BHWC, train: bool = False):
    c = lambda n: layers.scaled(n, self.width)  # noqa: E731
    aux = {}
    x = x_BHWC.astype(self.dtype)
    x = layers.Conv(c(96), (7, 7), (4, 4), padding="VALID", dtype=self.dtype,
                    kernel_init=_CONV_INIT, bias_init=_const(0.0), name="conv1")(x)
    x = aux["conv1"] = nn.relu(x)
    x = layers.max_pool_ceil(x, 3, 2)
    x = aux["norm1"] = layers.lrn_caffe(x, 5, 1e-4, 0.75)
    x = layers.Conv(c(256), (5, 5), padding=((2, 2), (2, 2)), dtype=self.dtype,
                    kernel_init=_CONV_INIT, bias_init=_const(1.0), name="conv2")(x)
    x = aux["conv2"] = nn.relu(x)
    x = layers.max_pool_ceil(x, 3, 2)
    x = aux["norm2"] = layers.lrn_caffe(x, 5, 1e-4, 0.75)
    x = layers.Conv(c(384), (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                    kernel_init=_CONV_INIT, bias_init=_const(0.0), name="conv3")(x)
    x = aux["conv3"] = aux["features"] = nn.relu(x)
    if self.features_only:
      return x, aux
    x = aux["pool5"] = layers.max_pool_ceil(x, 3, 2)
    x = layers.flatten_hwc(x)
    for name in ("fc6", "fc7"):
      x = nn.Dense(c(512), dtype=self.dtype, kernel_init=_FC_INIT, bias_init=_const(1.0),
                   name=name)(x)
      x = aux[name] = nn.relu(x)
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    aux["pre_logits"] = x
    if self.num_classes == 0:
      return x, aux
    logits = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=_FC8_INIT,
                      bias_init=_const(0.0), name="fc8")(x)
    return logits, aux


@registry.register("gilnet", input_shape=(227, 227, 3), num_classes=8,
                   description="Levi & Hassner 2015 age/gender CNN (Caffe ceil pooling, LRN)")
def _build(**kw):
  return GilNet(**kw)
