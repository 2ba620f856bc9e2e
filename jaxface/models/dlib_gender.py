"""dlib's ``dnn_gender_classifier_v1`` (Cydral Technology, dlib-models, CC0).

A small VGG-style network on a 32x32 RGB face chip: two blocks of two 3x3 convs (32 and 64
channels), each conv followed by a per-channel affine (dlib's inference form of batch norm) and
ReLU, each block closed by a 2x2 average pool; then 8x8x64 -> fc 16 -> ReLU -> fc 2. dlib trained it
with dropout and replaced each dropout by a constant multiply (0.5) for inference; the ONNX export
keeps those multiplies, so does this model.

Returns ``(logits, aux)``: aux holds conv1..conv4 (after affine + ReLU), ``features`` (conv4, the
last conv map, for Grad-CAM), ``fc1`` and ``pre_logits`` (what fc2 receives). The dense layer
after the flatten reads an NHWC (H, W, C) flatten; the ONNX importer permutes the graph's CHW rows.

The dlib layer vocabulary (``Affine``, ``conv_affine``) lives here and is shared by
:mod:`jaxface.models.dlib_age`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxface.models import layers, registry


class Affine(nn.Module):
  """dlib's ``affine_`` layer: ``x * scale + offset`` per channel (batch norm folded for inference).

  Both are parameters (not batch statistics): dlib never updates them after training, and a
  fine-tuning run may train them like any other weight.
  """
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
    offset = self.param("offset", nn.initializers.zeros, (c,), self.param_dtype)
    return x * scale.astype(x.dtype) + offset.astype(x.dtype)


def conv_affine(x, features: int, kernel: int, *, name: str, dtype, stride: int = 1,
                pad: int = 0, relu: bool = True):
  """Conv (with bias, as dlib's ``con_``) -> ``Affine`` -> optional ReLU.

  The conv is ``{name}_conv`` and the affine ``{name}_affine`` in the parameter tree.
  """
  x = layers.Conv(features, (kernel, kernel), strides=stride, padding=((pad, pad), (pad, pad)),
                  dtype=dtype, name=f"{name}_conv")(x)
  x = Affine(name=f"{name}_affine")(x)
  return nn.relu(x) if relu else x


class DlibGender(layers.Classifier):
  """dlib gender classifier; class 0 is female, class 1 male (the package manifest's labels)."""
  num_classes: int = 2
  pool_multiply: float = 0.5  # dlib's mult_prev in place of the dropout after the last pool.
  fc_multiply: float = 0.5  # ... and after fc1's ReLU.

  @nn.compact
  def __call__(self, x_BHWC, train: bool = False):
    del train  # No dropout or batch statistics: dlib's inference graph is deterministic.
    c = lambda n: layers.scaled(n, self.width)  # noqa: E731
    aux: dict[str, Any] = {}
    x = x_BHWC.astype(self.dtype)
    for i, ch in enumerate((32, 32, 64, 64), start=1):
      x = aux[f"conv{i}"] = conv_affine(x, c(ch), 3, pad=1, name=f"conv{i}", dtype=self.dtype)
      if i % 2 == 0:
        if i == 4:
          aux["features"] = x
        x = nn.avg_pool(x, (2, 2), (2, 2))
    if self.features_only:
      return aux["features"], aux
    x = layers.flatten_hwc(x * jnp.asarray(self.pool_multiply, x.dtype))
    x = aux["fc1"] = nn.relu(nn.Dense(c(16), dtype=self.dtype, name="fc1")(x))
    x = aux["pre_logits"] = x * jnp.asarray(self.fc_multiply, x.dtype)
    if self.num_classes == 0:
      return x, aux
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="fc2")(x)
    return logits, aux


@registry.register("dlib_gender", input_shape=(32, 32, 3), num_classes=2,
                   description="dlib dnn_gender_classifier_v1 (Cydral; 32x32 RGB dlib face chip)")
def _build(**kw):
  return DlibGender(**kw)
