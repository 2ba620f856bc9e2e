"""The three MTCNN networks as shipped in timesler/facenet-pytorch (SPEC section 5.1).

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
    c = lambda n: layers.scaled(n, self.width)  # noqa: E731
    aux = {}
    x = x_BHWC.astype(self.dtype)
    x = nn.Conv(c(10), (3, 3), padding="VALID", dtype=self.dtype, name="conv1")(x)
    x = aux["conv1"] = layers.PReLU(name="prelu1")(x)
    x = aux["pool1"] = layers.max_pool_ceil(x, 2, 2)
    x = nn.Conv(c(16), (3, 3), padding="VALID", dtype=self.dtype, name="conv2")(x)
    x = aux["conv2"] = layers.PReLU(name="prelu2")(x)
    x = nn.Conv(c(32), (3, 3), padding="VALID", dtype=self.dtype, name="conv3")(x)
    x = aux["conv3"] = aux["features"] = layers.PReLU(name="prelu3")(x)
    logits = nn.Conv(2, (1, 1), dtype=self.dtype, name="conv4_1")(x)
    box = nn.Conv(4, (1, 1), dtype=self.dtype, name="conv4_2")(x)
    probs = _softmax(logits)
    aux["logits"] = logits
    return {"prob": probs[..., 1], "probs": probs, "box": box.astype(jnp.float32)}, aux


class RNet(nn.Module):
  """Refinement network on 24x24 crops; outputs per crop ("prob" (N,), "box" (N, 4))."""
  width: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC, train: bool = False):
    del train
    c = lambda n: layers.scaled(n, self.width)  # noqa: E731
    aux = {}
    x = x_BHWC.astype(self.dtype)
    x = nn.Conv(c(28), (3, 3), padding="VALID", dtype=self.dtype, name="conv1")(x)
    x = aux["conv1"] = layers.PReLU(name="prelu1")(x)
    x = aux["pool1"] = layers.max_pool_ceil(x, 3, 2)
    x = nn.Conv(c(48), (3, 3), padding="VALID", dtype=self.dtype, name="conv2")(x)
    x = aux["conv2"] = layers.PReLU(name="prelu2")(x)
    x = aux["pool2"] = layers.max_pool_ceil(x, 3, 2)
    x = nn.Conv(c(64), (2, 2), padding="VALID", dtype=self.dtype, name="conv3")(x)
    x = aux["conv3"] = aux["features"] = layers.PReLU(name="prelu3")(x)
    x = layers.flatten_hwc(x)
    x = nn.Dense(c(128), dtype=self.dtype, name="dense4")(x)
    x = aux["dense4"] = aux["pre_logits"] = layers.PReLU(name="prelu4")(x)
    logits = nn.Dense(2, dtype=self.dtype, name="dense5_1")(x)
    box = nn.Dense(4, dtype=self.dtype, name="dense5_2")(x)
    probs = _softmax(logits)
    aux["logits"] = logits
    return {"prob": probs[:, 1], "probs": probs, "box": box.astype(jnp.float32)}, aux


class ONet(nn.Module):
  """Output network on 48x48 crops; adds "landmarks" (N, 10) = x1..x5, y1..y5."""
  width: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC, train: bool = False):
    del train
    c = lambda n: layers.scaled(n, self.width)  # noqa: E731
    aux = {}
    x = x_BHWC.astype(self.dtype)
    x = nn.Conv(c(32), (3, 3), padding="VALID", dtype=self.dtype, name="conv1")(x)
    x = aux["conv1"] = layers.PReLU(name="prelu1")(x)
    x = aux["pool1"] = layers.max_pool_ceil(x, 3, 2)
    x = nn.Conv(c(64), (3, 3), padding="VALID", dtype=self.dtype, name="conv2")(x)
    x = aux["conv2"] = layers.PReLU(name="prelu2")(x)
    x = aux["pool2"] = layers.max_pool_ceil(x, 3, 2)
    x = nn.Conv(c(64), (3, 3), padding="VALID", dtype=self.dtype, name="conv3")(x)
    x = aux["conv3"] = layers.PReLU(name="prelu3")(x)
    x = aux["pool3"] = layers.max_pool_ceil(x, 2, 2)
    x = nn.Conv(c(128), (2, 2), padding="VALID", dtype=self.dtype, name="conv4")(x)
    x = aux["conv4"] = aux["features"] = layers.PReLU(name="prelu4")(x)
    x = layers.flatten_hwc(x)
    x = nn.Dense(c(256), dtype=self.dtype, name="dense5")(x)
    x = aux["dense5"] = aux["pre_logits"] = layers.PReLU(name="prelu5")(x)
    logits = nn.Dense(2, dtype=self.dtype, name="dense6_1")(x)
    box = nn.Dense(4, dtype=self.dtype, name="dense6_2")(x)
    landmarks = nn.Dense(10, dtype=self.dtype, name="dense6_3")(x)
    probs = _softmax(logits)
    aux["logits"] = logits
    return {"prob": probs[:, 1], "probs": probs, "box": box.astype(jnp.float32),
            "landmarks": landmarks.astype(jnp.float32)}, aux


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
