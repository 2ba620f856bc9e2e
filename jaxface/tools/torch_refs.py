"""PyTorch definitions of the zoo's training layouts, for ``bench train --vs-torch`` only.

torchvision is not a dependency, so the layouts are written out here at the same width multiplier
as the Flax models (same layers, channels, kernels, strides, paddings, pooling, dropout and
parameter count; NCHW, as PyTorch users train). They time the same architecture; weights are
PyTorch's default initialisation.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from jaxface.models import alexnet, layers, vgg


def alexnet_torch(width: float = 1.0, num_classes: int = 1000) -> nn.Module:
  """torchvision's AlexNet layout (as ``jaxface.models.alexnet.AlexNet``)."""
  ch = alexnet.channels_torchvision(width)
  return nn.Sequential(
      nn.Conv2d(3, ch["conv1"], 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
      nn.Conv2d(ch["conv1"], ch["conv2"], 5, padding=2), nn.ReLU(inplace=True),
      nn.MaxPool2d(3, 2),
      nn.Conv2d(ch["conv2"], ch["conv3"], 3, padding=1), nn.ReLU(inplace=True),
      nn.Conv2d(ch["conv3"], ch["conv4"], 3, padding=1), nn.ReLU(inplace=True),
      nn.Conv2d(ch["conv4"], ch["conv5"], 3, padding=1), nn.ReLU(inplace=True),
      nn.MaxPool2d(3, 2), nn.AdaptiveAvgPool2d((6, 6)), nn.Flatten(),
      nn.Dropout(0.5), nn.Linear(ch["conv5"] * 36, ch["fc6"]), nn.ReLU(inplace=True),
      nn.Dropout(0.5), nn.Linear(ch["fc6"], ch["fc7"]), nn.ReLU(inplace=True),
      nn.Linear(ch["fc7"], num_classes))


def vgg16_torch(width: float = 1.0, num_classes: int = 1000) -> nn.Module:
  """torchvision's VGG-16 "D" layout (as ``jaxface.models.vgg.VGG16``)."""
  ch = vgg.channels(width)
  mods, cin = [], 3
  for name in vgg.CONV_NAMES:
    if name.endswith("_1") and name != "conv1_1":
      mods.append(nn.MaxPool2d(2, 2))
    mods += [nn.Conv2d(cin, ch[name], 3, padding=1), nn.ReLU(inplace=True)]
    cin = ch[name]
  mods += [nn.MaxPool2d(2, 2), nn.AdaptiveAvgPool2d((7, 7)), nn.Flatten(),
           nn.Linear(cin * 49, ch["fc6"]), nn.ReLU(inplace=True), nn.Dropout(0.5),
           nn.Linear(ch["fc6"], ch["fc7"]), nn.ReLU(inplace=True), nn.Dropout(0.5),
           nn.Linear(ch["fc7"], num_classes)]
  return nn.Sequential(*mods)


class _Block(nn.Module):
  """torchvision BasicBlock (two 3x3) or Bottleneck (1x1, strided 3x3, 1x1 x4)."""

  def __init__(self, cin: int, planes: int, stride: int, bottleneck: bool):
    super().__init__()
    out = planes * (4 if bottleneck else 1)
    if bottleneck:
      convs = [(cin, planes, 1, 1, 0), (planes, planes, 3, stride, 1), (planes, out, 1, 1, 0)]
    else:
      convs = [(cin, planes, 3, stride, 1), (planes, out, 3, 1, 1)]
    mods = []
    for i, (a, b, k, s, p) in enumerate(convs):
      mods += [nn.Conv2d(a, b, k, s, p, bias=False), nn.BatchNorm2d(b)]
      if i < len(convs) - 1:
        mods.append(nn.ReLU(inplace=True))
    self.body = nn.Sequential(*mods)
    self.downsample = (nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False),
                                     nn.BatchNorm2d(out))
                       if stride != 1 or cin != out else None)

  def forward(self, x):
    short = x if self.downsample is None else self.downsample(x)
    return torch.relu(self.body(x) + short)


def _resnet(stages, bottleneck: bool, width: float, num_classes: int) -> nn.Module:
  stem = layers.scaled(64, width)
  mods = [nn.Conv2d(3, stem, 7, 2, 3, bias=False), nn.BatchNorm2d(stem), nn.ReLU(inplace=True),
          nn.MaxPool2d(3, 2, 1)]
  cin = stem
  for i, n in enumerate(stages):
    planes = layers.scaled(64 * 2**i, width)
    for j in range(n):
      mods.append(_Block(cin, planes, 2 if i > 0 and j == 0 else 1, bottleneck))
      cin = planes * (4 if bottleneck else 1)
  mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
  return nn.Sequential(*mods)


def resnet18_torch(width: float = 1.0, num_classes: int = 1000) -> nn.Module:
  return _resnet((2, 2, 2, 2), False, width, num_classes)


def resnet50_torch(width: float = 1.0, num_classes: int = 1000) -> nn.Module:
  return _resnet((3, 4, 6, 3), True, width, num_classes)


def gilnet_torch(width: float = 1.0, num_classes: int = 1000) -> nn.Module:
  """Levi & Hassner's Caffe net (as ``jaxface.models.gilnet.GilNet``): ceil pooling, LRN."""
  c = lambda n: layers.scaled(n, width)  # noqa: E731
  lrn = lambda: nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)  # noqa: E731
  pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
  return nn.Sequential(
      nn.Conv2d(3, c(96), 7, 4), nn.ReLU(inplace=True), pool(), lrn(),
      nn.Conv2d(c(96), c(256), 5, padding=2), nn.ReLU(inplace=True), pool(), lrn(),
      nn.Conv2d(c(256), c(384), 3, padding=1), nn.ReLU(inplace=True), pool(), nn.Flatten(),
      nn.LazyLinear(c(512)), nn.ReLU(inplace=True), nn.Dropout(0.5),
      nn.Linear(c(512), c(512)), nn.ReLU(inplace=True), nn.Dropout(0.5),
      nn.Linear(c(512), num_classes))


BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "alexnet": alexnet_torch, "vgg16": vgg16_torch, "resnet18": resnet18_torch,
    "resnet50": resnet50_torch, "gilnet": gilnet_torch,
}


def build(name: str, width: float, num_classes: int, size: int) -> nn.Module:
  """The PyTorch twin of registry model ``name``, materialised for ``size`` x ``size`` inputs."""
  if name not in BUILDERS:
    raise KeyError(f"no PyTorch reference for {name!r}; have {', '.join(BUILDERS)}")
  model = BUILDERS[name](width, num_classes)
  with torch.no_grad():  # GilNet's fc6 size depends on the input (Caffe has no adaptive pool).
    model.eval()(torch.zeros(1, 3, size, size))
  return model
