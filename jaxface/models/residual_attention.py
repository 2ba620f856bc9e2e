"""Residual Attention Network: Attention-56, Attention-92 and the 32x32 CIFAR Attention-92 of
tengshaofeng/ResidualAttentionNetwork-pytorch.

Paper: F. Wang, M. Jiang, C. Qian, S. Yang, C. Li, H. Zhang, X. Wang, X. Tang, "Residual Attention
Network for Image Classification", CVPR 2017, arXiv:1704.06904; the authors' Caffe prototxts are
fwang91/residual-attention-network.

Building blocks:
* :class:`ResidualUnit`: pre-activation bottleneck (BN-ReLU first; the projection shortcut reads
  the pre-activated input, as the prototxt's ``branch2/conv1_1x1`` reads the ``/bn`` blob).
* :class:`AttentionModule`: p = 1 pre unit, t = 2 trunk units, and a bottom-up / top-down soft-mask
  branch with ``num_pools`` max-pools, r = 1 unit per scale, 2 units at the lowest scale, a skip
  unit at every intermediate scale; ``H = (1 + M) * T`` (the paper's attention residual
  learning), then the post unit.

Defaults follow the authors' Caffe prototxt: Caffe (ceil, unpadded) max-pooling and only
``Interp + skip`` in the top-down path. ``tengshaofeng=True`` adds the PyTorch re-implementation's
extra sums (the bottom-up feature of the same scale after each interpolation, and the trunk before
the mask convs); ``pooling="torch"`` uses its ``MaxPool2d(3, 2, padding=1)``. Both are needed to
load a tengshaofeng checkpoint. ``mask_activation="tanh"`` matches the prototxt versions whose mask
layers are TanH (``model/Attention-{56,92}-deploy.prototxt`` at one commit of the authors'
repository); ``imagenet_model/Attention-56-deploy.prototxt``, a later ``model/Attention-92`` and
tengshaofeng use a sigmoid, the default.

Parameter counts equal those of the released prototxts exactly (both parsed and counted: 31,810,728
for Attention-56, 52,466,344 for Attention-92, BN scale/shift included). The paper's Table 6 gives
31.9M and 51.3M; the 51.3M cannot come from the released Attention-92 layout (its three extra
modules over Attention-56 add 20.66M, the paper's difference is 19.4M), so the prototxt is followed.

Every up-sample targets the size of the tensor it is added to (as Caffe's ``Interp`` with a
reference blob does), so any input of at least 64 px works, e.g. 200x200 UTKFace.

Submodule names (stable, used by importers): network ``conv1``, ``bn1``, ``pre_res_{1,2,3}``,
``attention{stage}_{k}``, ``post_res_4_{1,2,3}``, ``final_bn``, ``fc`` (Caffe blobs ``pre_res_*``,
``Attention{A,B,C}_k``, ``post_res_4_*``, ``classifier``); attention module ``pre``, ``trunk1``,
``trunk2``, ``down{i}``, ``skip{i}``, ``middle1``, ``middle2``, ``up{i}``, ``mask_bn1``,
``mask_conv1``, ``mask_bn2``, ``mask_conv2``, ``post``; residual unit ``bn1``, ``conv1``, ``bn2``,
``conv2``, ``bn3``, ``conv3``, ``shortcut`` (tengshaofeng's ``conv4``, which tengshaofeng also
creates, unused, in identity units: an importer drops those).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxface.models import layers, registry
from jaxface.models.resnet import batch_norm, conv, global_pool_top

POOLINGS = ("caffe", "torch")
# Sigmoid masks (imagenet_model/ prototxt, tengshaofeng); some model/ prototxt versions use TanH.
_MASK_ACTIVATIONS = {"sigmoid": nn.sigmoid, "tanh": jnp.tanh}


def max_pool_3x3_s2(x_BHWC: jax.Array, pooling: str) -> jax.Array:
  """The 3x3 / stride-2 max-pool of the stem and the mask branch.

  "caffe": no padding, ceil output size (prototxt); "torch": padding 1, floor (tengshaofeng). Equal
  sizes for even inputs, but the windows are aligned differently.
  """
  if pooling == "caffe":
    return layers.max_pool_ceil(x_BHWC, 3, 2, 0)
  if pooling == "torch":
    return layers.max_pool_floor(x_BHWC, 3, 2, 1)
  raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


class ResidualUnit(nn.Module):
  """Pre-activation bottleneck: BN-ReLU -> 1x1 (C/4) -> BN-ReLU -> 3x3 (C/4, stride) -> BN-ReLU ->
  1x1 (C), plus the identity, or a strided 1x1 projection of the pre-activated input."""
  features: int
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, train: bool = False) -> jax.Array:
    mid = max(1, self.features // 4)
    a = nn.relu(batch_norm(train, name="bn1", dtype=self.dtype)(x_BHWC))
    h = conv(mid, 1, name="conv1", dtype=self.dtype)(a)
    h = nn.relu(batch_norm(train, name="bn2", dtype=self.dtype)(h))
    h = conv(mid, 3, self.stride, 1, name="conv2", dtype=self.dtype)(h)
    h = nn.relu(batch_norm(train, name="bn3", dtype=self.dtype)(h))
    h = conv(self.features, 1, name="conv3", dtype=self.dtype)(h)
    if self.stride == 1 and x_BHWC.shape[-1] == self.features:
      return h + x_BHWC
    return h + conv(self.features, 1, self.stride, name="shortcut", dtype=self.dtype)(a)


class AttentionModule(nn.Module):
  """Attention module with p = 1, t = 2, r = 1; returns ``(output, soft_mask)``.

  ``num_pools``: max-pools in the mask branch (3, 2, 1 for ImageNet stages 1-3; 0 for tengshaofeng's
  CIFAR stage 3, whose mask is two units and the mask convs at the trunk's resolution).
  """
  features: int
  num_pools: int
  tengshaofeng: bool = False
  pooling: str = "caffe"
  mask_activation: str = "sigmoid"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, train: bool = False):
    def unit(name):
      return ResidualUnit(self.features, dtype=self.dtype, name=name)

    def resize(x, like):
      return layers.resize_bilinear_align_corners(x, like.shape[1:3])

    x1 = unit("pre")(x_BHWC, train)
    trunk = unit("trunk2")(unit("trunk1")(x1, train), train)

    # Bottom-up: pool -> unit at every scale; the intermediate scales also feed a skip unit.
    h, downs, skips = x1, [], []
    for i in range(1, self.num_pools):
      h = unit(f"down{i}")(max_pool_3x3_s2(h, self.pooling), train)
      downs.append(h)
      skips.append(unit(f"skip{i}")(h, train))
    if self.num_pools > 0:
      h = max_pool_3x3_s2(h, self.pooling)
    h = unit("middle2")(unit("middle1")(h, train), train)

    # Top-down: up-sample to the size of the matching bottom-up feature, add the skip, one unit.
    for i in reversed(range(1, self.num_pools)):
      up = resize(h, downs[i - 1]) + skips[i - 1]
      if self.tengshaofeng:
        up = up + downs[i - 1]
      h = unit(f"up{i}")(up, train)
    if self.num_pools > 0:
      h = resize(h, trunk)
      if self.tengshaofeng:
        h = h + trunk

    m = nn.relu(batch_norm(train, name="mask_bn1", dtype=self.dtype)(h))
    m = conv(self.features, 1, name="mask_conv1", dtype=self.dtype)(m)
    m = nn.relu(batch_norm(train, name="mask_bn2", dtype=self.dtype)(m))
    m = conv(self.features, 1, name="mask_conv2", dtype=self.dtype)(m)
    mask = _MASK_ACTIVATIONS[self.mask_activation](m)
    # Attention residual learning: the mask modulates the trunk without ever zeroing it.
    out = unit("post")((1 + mask) * trunk, train)
    return out, mask


class ResidualAttentionNet(nn.Module):
  """Residual Attention Network returning ``(logits, aux)``.

  aux: "conv1" (stem after BN-ReLU), "mask1".."maskN" (soft mask of each attention module, in order,
  shaped like its trunk), "stage1".."stage3" (output of each stage's last attention module),
  "stage4" (last unit), "features" (after the final BN-ReLU: the map that is average-pooled) and
  "pre_logits".
  """
  modules_per_stage: Sequence[int] = (1, 1, 1)
  mask_pools: Sequence[int] = (3, 2, 1)
  stem_features: int = 64
  stage_features: Sequence[int] = (256, 512, 1024, 2048)
  cifar_stem: bool = False  # conv 3x3/1 and no max-pool (tengshaofeng 32x32 model).
  last_stride: int = 2  # Stride of post_res_4_1 (1 in the 32x32 model).
  num_classes: int = 1000
  width: float = 1.0
  tengshaofeng: bool = False
  pooling: str = "caffe"
  mask_activation: str = "sigmoid"  # "sigmoid" | "tanh".
  dtype: Any = jnp.float32
  features_only: bool = False

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, train: bool = False):
    if self.pooling not in POOLINGS:
      raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
    if self.mask_activation not in _MASK_ACTIVATIONS:
      raise ValueError(f"mask_activation must be one of {sorted(_MASK_ACTIVATIONS)}, got "
                       f"{self.mask_activation!r}")
    aux = {}
    feats = [layers.scaled(c, self.width) for c in self.stage_features]
    x = x_BHWC.astype(self.dtype)
    stem = layers.scaled(self.stem_features, self.width)
    if self.cifar_stem:
      x = conv(stem, 3, 1, 1, name="conv1", dtype=self.dtype)(x)
    else:
      x = conv(stem, 7, 2, 3, name="conv1", dtype=self.dtype)(x)
    x = nn.relu(batch_norm(train, name="bn1", dtype=self.dtype)(x))
    aux["conv1"] = x
    if not self.cifar_stem:
      x = max_pool_3x3_s2(x, self.pooling)

    mask_idx = 0
    for s, (n_mod, n_pools) in enumerate(zip(self.modules_per_stage, self.mask_pools)):
      stride = 1 if s == 0 else 2
      x = ResidualUnit(feats[s], stride, dtype=self.dtype, name=f"pre_res_{s + 1}")(x, train)
      for k in range(n_mod):
        x, mask = AttentionModule(feats[s], n_pools, self.tengshaofeng, self.pooling,
                                  self.mask_activation, dtype=self.dtype,
                                  name=f"attention{s + 1}_{k + 1}")(x, train)
        mask_idx += 1
        aux[f"mask{mask_idx}"] = mask
      aux[f"stage{s + 1}"] = x

    for k in range(3):
      stride = self.last_stride if k == 0 else 1
      x = ResidualUnit(feats[3], stride, dtype=self.dtype, name=f"post_res_4_{k + 1}")(x, train)
    aux["stage4"] = x
    x = nn.relu(batch_norm(train, name="final_bn", dtype=self.dtype)(x))
    return global_pool_top(self, x, aux)


@registry.register("attention56", input_shape=(224, 224, 3), num_classes=1000,
                   description="Residual Attention Network Attention-56 (1-1-1 attention modules, "
                   "prototxt form; tengshaofeng=True / pooling='torch' for the PyTorch variant)")
def attention56(**kw) -> ResidualAttentionNet:
  return ResidualAttentionNet(modules_per_stage=(1, 1, 1), mask_pools=(3, 2, 1), **kw)


@registry.register("attention92", input_shape=(224, 224, 3), num_classes=1000,
                   description="Residual Attention Network Attention-92 (1-2-3 attention modules, "
                   "prototxt form; tengshaofeng=True / pooling='torch' for the PyTorch variant)")
def attention92(**kw) -> ResidualAttentionNet:
  return ResidualAttentionNet(modules_per_stage=(1, 2, 3), mask_pools=(3, 2, 1), **kw)


@registry.register("attention92_32", input_shape=(32, 32, 3), num_classes=10,
                   description="tengshaofeng ResidualAttentionModel_92_32input_update (CIFAR-10, "
                   "32x32, 3x3 stem, mask pools 2-1-0)")
def attention92_32(**kw) -> ResidualAttentionNet:
  # Only the PyTorch re-implementation defines this network: its sums and pooling are the default.
  kw.setdefault("tengshaofeng", True)
  kw.setdefault("pooling", "torch")
  kw.setdefault("num_classes", 10)
  return ResidualAttentionNet(modules_per_stage=(1, 2, 3), mask_pools=(2, 1, 0), stem_features=32,
                              stage_features=(128, 256, 512, 1024), cifar_stem=True,
                              last_stride=1, **kw)
