"""The three MTCNN networks as shipped in timesler/facenet-pytorch (``models/mtcnn.py``).

MTCNN: K. Zhang, Z. Zhang, Z. Li, Y. Qiao, "Joint Face Detection and Alignment Using Multitask
Cascaded Convolutional Networks", IEEE Signal Processing Letters 23(10), 2016, arXiv:1604.02878.
facenet-pytorch's weights were converted from davidsandberg/facenet's TensorFlow port of the
authors' Caffe models.

All convolutions are valid with stride 1, activations are per-channel PReLU, pools use the ceil
output size. The dense layers of RNet / ONet consume an NHWC (H, W, C) flatten; the importer
permutes facenet-pytorch's (W, H, C)-ordered rows (``permute(0, 3, 2, 1)`` before ``view``).

Every network returns ``(out, aux)`` with ``out = {"prob": face probability (softmax channel 1),
"probs": the 2-way softmax, "box": box regression}`` (+ "landmarks" for ONet, ordered
x1..x5, y1..y5 in box-relative units), and aux holding the intermediate activations.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxface.models import layers, registry


def _softmax(logits):
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


# (channels, kernel, pool window after the PReLU or 0) of each conv layer conv1, conv2, ...
_PNET_CONVS = ((10, 3, 2), (16, 3, 0), (32, 3, 0))
_RNET_CONVS = ((28, 3, 3), (48, 3, 3), (64, 2, 0))
_ONET_CONVS = ((32, 3, 3), (64, 3, 3), (64, 3, 2), (128, 2, 0))


def _conv_prelu_stack(module: nn.Module, x_BHWC, convs, aux: dict) -> jax.Array:
  """Valid convs with PReLU and ceil pools (stride 2), named conv{i} / prelu{i}."""
  x = x_BHWC.astype(module.dtype)
  for i, (ch, k, pool) in enumerate(convs, start=1):
    x = layers.Conv(layers.scaled(ch, module.width), (k, k), padding="VALID",
                    dtype=module.dtype, name=f"conv{i}")(x)
    x = aux[f"conv{i}"] = layers.PReLU(name=f"prelu{i}")(x)
    if pool:
      x = aux[f"pool{i}"] = layers.max_pool_ceil(x, pool, 2)
  aux["features"] = aux[f"conv{len(convs)}"]
  return x


def _dense_heads(module: nn.Module, x_BHWC, convs, hidden: int, aux: dict, with_landmarks: bool):
  """HWC flatten -> dense (PReLU) -> 2-way face logits, 4 box offsets (and 10 landmarks)."""
  i = len(convs) + 1  # RNet: dense4 / prelu4 / dense5_*; ONet: dense5 / prelu5 / dense6_*.
  x = nn.Dense(layers.scaled(hidden, module.width), dtype=module.dtype,
               name=f"dense{i}")(layers.flatten_hwc(x_BHWC))
  x = aux[f"dense{i}"] = aux["pre_logits"] = layers.PReLU(name=f"prelu{i}")(x)
  logits = aux["logits"] = nn.Dense(2, dtype=module.dtype, name=f"dense{i + 1}_1")(x)
  probs = _softmax(logits)
  box = nn.Dense(4, dtype=module.dtype, name=f"dense{i + 1}_2")(x)
  out = {"prob": probs[:, 1], "probs": probs, "box": box.astype(jnp.float32)}
  if with_landmarks:
    out["landmarks"] = nn.Dense(10, dtype=module.dtype, name=f"dense{i + 1}_3")(x).astype(
        jnp.float32)
  return out


class PNet(nn.Module):
  """Proposal network: fully convolutional (12x12 receptive field, stride 2), any input size.

  For an (N, H, W, 3) input each map side is ``ceil((H - 2) / 2) - 4`` (1x1 at 12x12);
  "prob" is (N, h, w), "probs" (N, h, w, 2) and "box" (N, h, w, 4).
  """
  width: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC, train: bool = False):
    del train  # No dropout or batch norm.
    aux = {}
    x = _conv_prelu_stack(self, x_BHWC, _PNET_CONVS, aux)
    logits = aux["logits"] = layers.Conv(2, (1, 1), dtype=self.dtype, name="conv4_1")(x)
    box = layers.Conv(4, (1, 1), dtype=self.dtype, name="conv4_2")(x)
    probs = _softmax(logits)
    return {"prob": probs[..., 1], "probs": probs, "box": box.astype(jnp.float32)}, aux


class RNet(nn.Module):
  """Refinement network on 24x24 crops; outputs per crop ("prob" (N,), "box" (N, 4))."""
  width: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC, train: bool = False):
    del train
    aux = {}
    x = _conv_prelu_stack(self, x_BHWC, _RNET_CONVS, aux)
    return _dense_heads(self, x, _RNET_CONVS, 128, aux, with_landmarks=False), aux


class ONet(nn.Module):
  """Output network on 48x48 crops; adds "landmarks" (N, 10) = x1..x5, y1..y5."""
  width: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC, train: bool = False):
    del train
    aux = {}
    x = _conv_prelu_stack(self, x_BHWC, _ONET_CONVS, aux)
    return _dense_heads(self, x, _ONET_CONVS, 256, aux, with_landmarks=True), aux


@registry.register("mtcnn_pnet", input_shape=(12, 12, 3), num_classes=None, classifier=False,
                   description="MTCNN proposal net (facenet-pytorch), fully convolutional")
def _build_pnet(**kw):
  return PNet(**kw)


@registry.register("mtcnn_rnet", input_shape=(24, 24, 3), num_classes=None, classifier=False,
                   description="MTCNN refinement net (facenet-pytorch), 24x24 crops")
def _build_rnet(**kw):
  return RNet(**kw)


@registry.register("mtcnn_onet", input_shape=(48, 48, 3), num_classes=None, classifier=False,
                   description="MTCNN output net with 5 landmarks (facenet-pytorch), 48x48 crops")
def _build_onet(**kw):
  return ONet(**kw)
