"""ResNet-18 and ResNet-50 in the torchvision layout (torchvision "v1.5").

ResNet: K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image Recognition", CVPR 2016,
arXiv:1512.03385.

The stem is conv 7x7/2 (pad 3, no bias) -> BN -> ReLU -> max-pool 3/2 (pad 1); four stages of
BasicBlock (ResNet-18) or Bottleneck (ResNet-50) blocks, the stride sitting on the 3x3 conv as in
torchvision; global average pooling; a linear classifier. Submodules are named after the
torchvision state-dict keys with '.' between a stage and its block replaced by '_'
(``layer1.0.conv1`` -> ``layer1_0/conv1``,
``layer2.0.downsample.0`` -> ``layer2_0/downsample_conv``), so :mod:`jaxface.weights.resnet` is a
plain renaming.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxface.models import layers, registry

# torchvision initialises convs with kaiming_normal_(mode="fan_out", nonlinearity="relu").
CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# torch.nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
DENSE_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def conv(features: int, kernel: int, stride: int = 1, pad: int = 0, *, name: str,
         dtype: Any = jnp.float32) -> layers.Conv:
  """Bias-free conv with torch's explicit symmetric padding ('SAME' differs at stride 2)."""
  return layers.Conv(features, (kernel, kernel), (stride, stride), ((pad, pad), (pad, pad)),
                     use_bias=False, kernel_init=CONV_INIT, dtype=dtype, name=name)


def batch_norm(train: bool, *, name: str, dtype: Any = jnp.float32) -> nn.BatchNorm:
  """BatchNorm with PyTorch's defaults, eps 1e-5 and momentum 0.1 (Flax's momentum 0.9)."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      name=name)


class BasicBlock(nn.Module):
  """Two 3x3 convs (ResNet-18/34); the first carries the stride."""
  planes: int
  stride: int = 1
  dtype: Any = jnp.float32

  expansion = 1

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, train: bool = False) -> jax.Array:
    out_ch = self.planes * self.expansion
    h = conv(self.planes, 3, self.stride, 1, name="conv1", dtype=self.dtype)(x_BHWC)
    h = nn.relu(batch_norm(train, name="bn1", dtype=self.dtype)(h))
    h = conv(self.planes, 3, 1, 1, name="conv2", dtype=self.dtype)(h)
    h = batch_norm(train, name="bn2", dtype=self.dtype)(h)
    return nn.relu(h + _shortcut(x_BHWC, out_ch, self.stride, train, self.dtype))


class Bottleneck(nn.Module):
  """1x1 -> 3x3 (strided, torchvision v1.5) -> 1x1 expanding by 4 (ResNet-50/101/152)."""
  planes: int
  stride: int = 1
  dtype: Any = jnp.float32

  expansion = 4

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, train: bool = False) -> jax.Array:
    out_ch = self.planes * self.expansion
    h = conv(self.planes, 1, name="conv1", dtype=self.dtype)(x_BHWC)
    h = nn.relu(batch_norm(train, name="bn1", dtype=self.dtype)(h))
    h = conv(self.planes, 3, self.stride, 1, name="conv2", dtype=self.dtype)(h)
    h = nn.relu(batch_norm(train, name="bn2", dtype=self.dtype)(h))
    h = conv(out_ch, 1, name="conv3", dtype=self.dtype)(h)
    h = batch_norm(train, name="bn3", dtype=self.dtype)(h)
    return nn.relu(h + _shortcut(x_BHWC, out_ch, self.stride, train, self.dtype))


def _shortcut(x_BHWC: jax.Array, out_ch: int, stride: int, train: bool, dtype: Any) -> jax.Array:
  """Identity, or torchvision's ``downsample`` (1x1 strided conv + BN) when the shape changes.

  Called from inside a block's compact ``__call__``, so the layers become the block's children.
  """
  if stride == 1 and x_BHWC.shape[-1] == out_ch:
    return x_BHWC
  s = conv(out_ch, 1, stride, name="downsample_conv", dtype=dtype)(x_BHWC)
  return batch_norm(train, name="downsample_bn", dtype=dtype)(s)


def global_pool_top(module: nn.Module, fmap_BHWC, aux: dict):
  """features -> global average pool -> ``fc``, honouring ``features_only`` and ``num_classes=0``.

  Shared by ResNet and the Residual Attention Network (whose reference 7x7 average pool is global at
  224 and 200 px, 8x8 at 32 px); global pooling keeps other input sizes usable.
  """
  aux["features"] = fmap_BHWC
  if module.features_only:
    return fmap_BHWC, aux
  x = aux["pre_logits"] = jnp.mean(fmap_BHWC, axis=(1, 2))
  if module.num_classes == 0:
    return x, aux
  logits = nn.Dense(module.num_classes, kernel_init=DENSE_INIT, dtype=module.dtype, name="fc")(x)
  return logits, aux


class ResNet(nn.Module):
  """torchvision ResNet returning ``(logits, aux)``.

  aux: "conv1" (stem after BN-ReLU, before the max-pool), "layer1".."layer4", "features" (= layer4,
  the map that is average-pooled) and "pre_logits" (pooled vector).
  """
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  bottleneck: bool = False
  num_classes: int = 1000
  width: float = 1.0
  dtype: Any = jnp.float32
  features_only: bool = False

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, train: bool = False):
    aux = {}
    block_cls = Bottleneck if self.bottleneck else BasicBlock
    x = x_BHWC.astype(self.dtype)
    x = conv(layers.scaled(64, self.width), 7, 2, 3, name="conv1", dtype=self.dtype)(x)
    x = nn.relu(batch_norm(train, name="bn1", dtype=self.dtype)(x))
    aux["conv1"] = x
    x = layers.max_pool_floor(x, 3, 2, 1)
    for i, num_blocks in enumerate(self.stage_sizes):
      planes = layers.scaled(64 * 2**i, self.width)
      for j in range(num_blocks):
        stride = 2 if i > 0 and j == 0 else 1
        x = block_cls(planes, stride, dtype=self.dtype, name=f"layer{i + 1}_{j}")(x, train)
      aux[f"layer{i + 1}"] = x
    return global_pool_top(self, x, aux)


@registry.register("resnet18", input_shape=(224, 224, 3), num_classes=1000,
                   description="ResNet-18, torchvision layout (BasicBlock, 11.7M params)")
def resnet18(**kw) -> ResNet:
  return ResNet(stage_sizes=(2, 2, 2, 2), bottleneck=False, **kw)


@registry.register("resnet50", input_shape=(224, 224, 3), num_classes=1000,
                   description="ResNet-50, torchvision v1.5 layout (stride on the 3x3 conv, 25.6M "
                   "params)")
def resnet50(**kw) -> ResNet:
  return ResNet(stage_sizes=(3, 4, 6, 3), bottleneck=True, **kw)
