"""PyTorch definitions of the zoo's training layouts, for ``bench train --vs-torch`` only.

torchvision is not a dependency, so the layouts are written out here at the same width multiplier
as the Flax models (same layers, channels, kernels, strides, paddings, pooling, dropout, batch-norm
eps / momentum and parameter count; NCHW, as PyTorch users train). Flattens before a dense layer
read (H, W, C) order like ``layers.flatten_hwc`` (a permute of the small pooled map), so every
weight has the Flax model's layout up to the NCHW / OIHW transposes, and
:func:`load_flax_variables` copies a Flax model's variables in: the test runs both on the same
weights and compares outputs. The bench times PyTorch's default initialisation.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jaxface.models import alexnet, layers, vgg
from jaxface.models import dlib_age


class FlattenHWC(nn.Module):
  """NCHW -> (N, H*W*C): the row order of ``layers.flatten_hwc``, so dense kernels carry over."""

  def forward(self, x):
    return torch.flatten(x.permute(0, 2, 3, 1), 1)


def alexnet_torch(width: float = 1.0, num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
  """torchvision's AlexNet layout (as ``jaxface.models.alexnet.AlexNet``)."""
  ch = alexnet.channels_torchvision(width)
  return nn.Sequential(
      nn.Conv2d(in_channels, ch["conv1"], 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
      nn.Conv2d(ch["conv1"], ch["conv2"], 5, padding=2), nn.ReLU(inplace=True),
      nn.MaxPool2d(3, 2),
      nn.Conv2d(ch["conv2"], ch["conv3"], 3, padding=1), nn.ReLU(inplace=True),
      nn.Conv2d(ch["conv3"], ch["conv4"], 3, padding=1), nn.ReLU(inplace=True),
      nn.Conv2d(ch["conv4"], ch["conv5"], 3, padding=1), nn.ReLU(inplace=True),
      nn.MaxPool2d(3, 2), nn.AdaptiveAvgPool2d((6, 6)), FlattenHWC(),
      nn.Dropout(0.5), nn.Linear(ch["conv5"] * 36, ch["fc6"]), nn.ReLU(inplace=True),
      nn.Dropout(0.5), nn.Linear(ch["fc6"], ch["fc7"]), nn.ReLU(inplace=True),
      nn.Linear(ch["fc7"], num_classes))


def vgg16_torch(width: float = 1.0, num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
  """torchvision's VGG-16 "D" layout (as ``jaxface.models.vgg.VGG16``)."""
  ch = vgg.channels(width)
  mods, cin = [], in_channels
  for name in vgg.CONV_NAMES:
    if name.endswith("_1") and name != "conv1_1":
      mods.append(nn.MaxPool2d(2, 2))
    mods += [nn.Conv2d(cin, ch[name], 3, padding=1), nn.ReLU(inplace=True)]
    cin = ch[name]
  mods += [nn.MaxPool2d(2, 2), nn.AdaptiveAvgPool2d((7, 7)), FlattenHWC(),
           nn.Linear(cin * 49, ch["fc6"]), nn.ReLU(inplace=True), nn.Dropout(0.5),
           nn.Linear(ch["fc6"], ch["fc7"]), nn.ReLU(inplace=True), nn.Dropout(0.5),
           nn.Linear(ch["fc7"], num_classes)]
  return nn.Sequential(*mods)


def _bn(channels: int, eps: float = 1e-5, flax_momentum: float = 0.9) -> nn.BatchNorm2d:
  """BatchNorm2d with Flax's eps; torch's momentum is the weight of the new batch (1 - Flax's)."""
  return nn.BatchNorm2d(channels, eps=eps, momentum=1.0 - flax_momentum)


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
      mods += [nn.Conv2d(a, b, k, s, p, bias=False), _bn(b)]
      if i < len(convs) - 1:
        mods.append(nn.ReLU(inplace=True))
    self.body = nn.Sequential(*mods)
    self.downsample = (nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), _bn(out))
                       if stride != 1 or cin != out else None)

  def forward(self, x):
    body = self.body(x)  # before the shortcut, in the Flax block's order (load_flax_variables)
    return torch.relu(body + (x if self.downsample is None else self.downsample(x)))


def _resnet(stages, bottleneck: bool, width: float, num_classes: int,
            in_channels: int) -> nn.Module:
  stem = layers.scaled(64, width)
  mods = [nn.Conv2d(in_channels, stem, 7, 2, 3, bias=False), _bn(stem), nn.ReLU(inplace=True),
          nn.MaxPool2d(3, 2, 1)]
  cin = stem
  for i, n in enumerate(stages):
    planes = layers.scaled(64 * 2**i, width)
    for j in range(n):
      mods.append(_Block(cin, planes, 2 if i > 0 and j == 0 else 1, bottleneck))
      cin = planes * (4 if bottleneck else 1)
  mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
  return nn.Sequential(*mods)


def resnet18_torch(width: float = 1.0, num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
  return _resnet((2, 2, 2, 2), False, width, num_classes, in_channels)


def resnet50_torch(width: float = 1.0, num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
  return _resnet((3, 4, 6, 3), True, width, num_classes, in_channels)


def gilnet_torch(width: float = 1.0, num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
  """Levi & Hassner's Caffe net (as ``jaxface.models.gilnet.GilNet``): ceil pooling, LRN."""
  c = lambda n: layers.scaled(n, width)  # noqa: E731
  lrn = lambda: nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)  # noqa: E731
  pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
  return nn.Sequential(
      nn.Conv2d(in_channels, c(96), 7, 4), nn.ReLU(inplace=True), pool(), lrn(),
      nn.Conv2d(c(96), c(256), 5, padding=2), nn.ReLU(inplace=True), pool(), lrn(),
      nn.Conv2d(c(256), c(384), 3, padding=1), nn.ReLU(inplace=True), pool(), FlattenHWC(),
      nn.LazyLinear(c(512)), nn.ReLU(inplace=True), nn.Dropout(0.5),
      nn.Linear(c(512), c(512)), nn.ReLU(inplace=True), nn.Dropout(0.5),
      nn.Linear(c(512), num_classes))


def _tf_same_pad(x: torch.Tensor, k: int, s: int, value: float = 0.0) -> torch.Tensor:
  """TensorFlow "same" padding of an NCHW map (the odd pixel at the bottom / right)."""
  pads = []
  for n in (x.shape[3], x.shape[2]):  # F.pad lists the last axis first
    total = max((-(-n // s) - 1) * s + k - n, 0)
    pads += [total // 2, total - total // 2]
  return F.pad(x, pads, value=value)


class _MiniXception(nn.Module):
  """Arriaga et al.'s mini-Xception (as ``jaxface.models.mini_xception.MiniXception``)."""

  def __init__(self, width: float, num_classes: int, in_channels: int):
    super().__init__()
    c = lambda n: layers.scaled(n, width)  # noqa: E731
    bn = lambda n: _bn(n, 1e-3, 0.99)  # noqa: E731 - Keras eps and momentum
    sep = lambda a, b: nn.Sequential(  # noqa: E731 - depthwise 3x3 then pointwise 1x1
        nn.Conv2d(a, a, 3, padding=1, groups=a, bias=False), nn.Conv2d(a, b, 1, bias=False))
    self.stem = nn.ModuleList([nn.Conv2d(in_channels, c(8), 3, bias=False), bn(c(8)),
                               nn.Conv2d(c(8), c(8), 3, bias=False), bn(c(8))])
    self.blocks = nn.ModuleList()
    cin = c(8)
    for ch in (c(16), c(32), c(64), c(128)):
      self.blocks.append(nn.ModuleDict({
          "shortcut": nn.Conv2d(cin, ch, 1, 2, bias=False), "shortcut_bn": bn(ch),
          "sep1": sep(cin, ch), "bn1": bn(ch), "sep2": sep(ch, ch), "bn2": bn(ch)}))
      cin = ch
    self.conv_out = nn.Conv2d(cin, num_classes, 3, padding=1)

  def forward(self, x):
    for i in (0, 2):
      x = torch.relu(self.stem[i + 1](self.stem[i](x)))
    for b in self.blocks:
      short = b["shortcut_bn"](b["shortcut"](_tf_same_pad(x, 1, 2)))
      y = torch.relu(b["bn1"](b["sep1"](x)))
      y = b["bn2"](b["sep2"](y))
      x = F.max_pool2d(_tf_same_pad(y, 3, 2, float("-inf")), 3, 2) + short
    return self.conv_out(x).mean((2, 3))


def mini_xception_torch(width: float = 1.0, num_classes: int = 1000,
                        in_channels: int = 1) -> nn.Module:
  return _MiniXception(width, num_classes, in_channels)


class Affine(nn.Module):
  """dlib's ``affine_``: ``x * scale + offset`` per channel (as ``dlib_gender.Affine``)."""

  def __init__(self, channels: int):
    super().__init__()
    self.scale = nn.Parameter(torch.ones(channels))
    self.offset = nn.Parameter(torch.zeros(channels))

  def forward(self, x):
    return x * self.scale[:, None, None] + self.offset[:, None, None]


def _conv_affine(cin: int, cout: int, k: int, stride: int = 1, pad: int = 0) -> nn.Module:
  return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad), Affine(cout))


class _Scale(nn.Module):
  """dlib's ``mult_prev`` constant in place of an inference-time dropout."""

  def __init__(self, factor: float):
    super().__init__()
    self.factor = factor

  def forward(self, x):
    return x * self.factor


def dlib_gender_torch(width: float = 1.0, num_classes: int = 1000,
                      in_channels: int = 3) -> nn.Module:
  """dlib's gender classifier (as ``jaxface.models.dlib_gender.DlibGender``)."""
  c = lambda n: layers.scaled(n, width)  # noqa: E731
  mods, cin = [], in_channels
  for i, ch in enumerate((c(32), c(32), c(64), c(64)), start=1):
    mods += [_conv_affine(cin, ch, 3, pad=1), nn.ReLU(inplace=True)]
    if i % 2 == 0:
      mods.append(nn.AvgPool2d(2, 2))
    cin = ch
  return nn.Sequential(*mods, FlattenHWC(), _Scale(0.5), nn.LazyLinear(c(16)),
                       nn.ReLU(inplace=True), _Scale(0.5), nn.Linear(c(16), num_classes))


def _pad_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
  """dlib ``add_prev`` (as ``dlib_age.pad_add``): zero-pad both at the end of C, H, W, add."""
  shape = [max(x, y) for x, y in zip(a.shape, b.shape)]

  def pad(t):
    return F.pad(t, (0, shape[3] - t.shape[3], 0, shape[2] - t.shape[2], 0, shape[1] - t.shape[1]))

  return pad(a) + pad(b)


class _DlibAge(nn.Module):
  """dlib's age predictor, a ResNet-10 (as ``jaxface.models.dlib_age.DlibAge``)."""

  def __init__(self, width: float, num_classes: int, in_channels: int):
    super().__init__()
    c = lambda n: layers.scaled(n, width)  # noqa: E731
    self.stem = _conv_affine(in_channels, c(64), 7, stride=2)
    self.blocks = nn.ModuleList()
    self.downs = [down for _, down in dlib_age._BLOCKS]
    cin = c(64)
    for ch, down in dlib_age._BLOCKS:
      self.blocks.append(nn.ModuleList([
          _conv_affine(cin, c(ch), 3, 2 if down else 1, 0 if down else 1),
          _conv_affine(c(ch), c(ch), 3, pad=1)]))
      cin = c(ch)
    self.fc = nn.Linear(cin, num_classes)

  def forward(self, x):
    x = F.max_pool2d(torch.relu(self.stem(x)), 3, 2)
    for (first, second), down in zip(self.blocks, self.downs):
      y = second(torch.relu(first(x)))
      x = torch.relu(_pad_add(F.avg_pool2d(x, 2, 2) if down else x, y))
    return self.fc(x.mean((2, 3)))


def dlib_age_torch(width: float = 1.0, num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
  return _DlibAge(width, num_classes, in_channels)


class _Unit(nn.Module):
  """Pre-activation bottleneck (as ``residual_attention.ResidualUnit``)."""

  def __init__(self, cin: int, cout: int, stride: int = 1):
    super().__init__()
    mid = max(1, cout // 4)
    self.bn1, self.conv1 = _bn(cin), nn.Conv2d(cin, mid, 1, bias=False)
    self.bn2, self.conv2 = _bn(mid), nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
    self.bn3, self.conv3 = _bn(mid), nn.Conv2d(mid, cout, 1, bias=False)
    self.shortcut = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                     if stride != 1 or cin != cout else None)

  def forward(self, x):
    a = torch.relu(self.bn1(x))
    h = torch.relu(self.bn2(self.conv1(a)))
    h = self.conv3(torch.relu(self.bn3(self.conv2(h))))
    return h + (x if self.shortcut is None else self.shortcut(a))


def _caffe_pool(x):
  return F.max_pool2d(x, 3, 2, ceil_mode=True)  # unpadded, ceil: the prototxt's pooling


def _interp(x, like):
  return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=True)


class _AttentionModule(nn.Module):
  """Attention module, p = 1, t = 2, r = 1, prototxt form (as ``AttentionModule``)."""

  def __init__(self, c: int, num_pools: int):
    super().__init__()
    self.num_pools = num_pools
    self.pre, self.trunk1, self.trunk2 = _Unit(c, c), _Unit(c, c), _Unit(c, c)
    self.downs = nn.ModuleList([_Unit(c, c) for _ in range(num_pools - 1)])
    self.skips = nn.ModuleList([_Unit(c, c) for _ in range(num_pools - 1)])
    self.middle1, self.middle2 = _Unit(c, c), _Unit(c, c)
    self.ups = nn.ModuleList([_Unit(c, c) for _ in range(num_pools - 1)])
    self.mask_bn1, self.mask_conv1 = _bn(c), nn.Conv2d(c, c, 1, bias=False)
    self.mask_bn2, self.mask_conv2 = _bn(c), nn.Conv2d(c, c, 1, bias=False)
    self.post = _Unit(c, c)

  def forward(self, x):
    x1 = self.pre(x)
    trunk = self.trunk2(self.trunk1(x1))
    h, downs, skips = x1, [], []
    for down, skip in zip(self.downs, self.skips):
      h = down(_caffe_pool(h))
      downs.append(h)
      skips.append(skip(h))
    h = self.middle2(self.middle1(_caffe_pool(h)))
    for i in reversed(range(self.num_pools - 1)):
      h = self.ups[i](_interp(h, downs[i]) + skips[i])
    h = _interp(h, trunk)
    m = self.mask_conv1(torch.relu(self.mask_bn1(h)))
    m = self.mask_conv2(torch.relu(self.mask_bn2(m)))
    return self.post((1 + torch.sigmoid(m)) * trunk)


class _Attention56(nn.Module):
  """Attention-56 in the authors' prototxt layout (as ``residual_attention.attention56``)."""

  def __init__(self, width: float, num_classes: int, in_channels: int):
    super().__init__()
    stem = layers.scaled(64, width)
    feats = [layers.scaled(n, width) for n in (256, 512, 1024, 2048)]
    self.conv1, self.bn1 = nn.Conv2d(in_channels, stem, 7, 2, 3, bias=False), _bn(stem)
    self.stages = nn.ModuleList()
    cin = stem
    for s, pools in enumerate((3, 2, 1)):
      self.stages.append(nn.Sequential(_Unit(cin, feats[s], 1 if s == 0 else 2),
                                       _AttentionModule(feats[s], pools)))
      cin = feats[s]
    self.post = nn.Sequential(_Unit(cin, feats[3], 2), _Unit(feats[3], feats[3]),
                              _Unit(feats[3], feats[3]))
    self.final_bn, self.fc = _bn(feats[3]), nn.Linear(feats[3], num_classes)

  def forward(self, x):
    x = _caffe_pool(torch.relu(self.bn1(self.conv1(x))))
    for stage in self.stages:
      x = stage(x)
    x = torch.relu(self.final_bn(self.post(x)))
    return self.fc(x.mean((2, 3)))


def attention56_torch(width: float = 1.0, num_classes: int = 1000,
                      in_channels: int = 3) -> nn.Module:
  return _Attention56(width, num_classes, in_channels)


BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "alexnet": alexnet_torch, "vgg16": vgg16_torch, "resnet18": resnet18_torch,
    "resnet50": resnet50_torch, "gilnet": gilnet_torch, "mini_xception": mini_xception_torch,
    "attention56": attention56_torch, "dlib_age": dlib_age_torch,
    "dlib_gender": dlib_gender_torch,
}


def build(name: str, width: float, num_classes: int, size: int,
          in_channels: int = 3) -> nn.Module:
  """The PyTorch twin of registry model ``name``, materialised for ``size`` x ``size`` inputs."""
  if name not in BUILDERS:
    raise KeyError(f"no PyTorch reference for {name!r}; have {', '.join(BUILDERS)}")
  model = BUILDERS[name](width, num_classes, in_channels)
  with torch.no_grad():  # lazy dense sizes depend on the input (Caffe / dlib have no adaptive pool)
    model.eval()(torch.zeros(1, in_channels, size, size))
  return model


# Flax modules that own parameters directly, in the order their __call__ runs, pair with the torch
# modules that own parameters directly, in the order their forward runs.
_FLAX_TO_TORCH = {"kernel": "weight", "bias": "bias", "scale": "weight", "mean": "running_mean",
                  "var": "running_var"}


def _flax_call_order(flax_model, variables, x) -> list[tuple[str, ...]]:
  import flax.linen as flax_nn  # noqa: PLC0415
  import jax  # noqa: PLC0415

  order = []

  def record(next_fun, args, kwargs, context):
    path = tuple(context.module.path)
    if context.method_name == "__call__" and path not in order:
      leaf = variables["params"]
      for key in path:
        leaf = leaf.get(key, {}) if isinstance(leaf, dict) else {}
      if isinstance(leaf, dict) and any(not isinstance(v, dict) for v in leaf.values()):
        order.append(path)
    return next_fun(*args, **kwargs)

  with flax_nn.intercept_methods(record):  # tracing runs every __call__: nothing to compile
    jax.eval_shape(flax_model.apply, variables, x)
  return order


def _torch_call_order(model: nn.Module, x: torch.Tensor) -> list[nn.Module]:
  order, hooks = [], []
  for m in model.modules():
    if any(True for _ in m.parameters(recurse=False)):
      hooks.append(m.register_forward_pre_hook(
          lambda mod, _: order.append(mod) if all(mod is not o for o in order) else None))
  try:
    with torch.no_grad():
      model(x)
  finally:
    for h in hooks:
      h.remove()
  return order


def load_flax_variables(model: nn.Module, flax_model, variables: dict[str, Any],
                        x_BHWC: np.ndarray) -> None:
  """Copies a Flax model's params and batch statistics into its PyTorch twin ``model``.

  Layers pair by the order they run on ``x_BHWC`` (both twins run their layers in the same order);
  kernels are transposed HWIO -> OIHW (dense: (in, out) -> (out, in)); every shape must match
  exactly, so a layout difference fails here, naming the layer.
  """
  x = torch.from_numpy(np.ascontiguousarray(np.transpose(x_BHWC, (0, 3, 1, 2))))
  flax_order = _flax_call_order(flax_model, variables, x_BHWC)
  torch_order = _torch_call_order(model, x.to(next(model.parameters()).dtype))
  if len(flax_order) != len(torch_order):
    raise ValueError(f"{len(flax_order)} Flax layers with parameters, {len(torch_order)} torch")
  for path, mod in zip(flax_order, torch_order):
    for collection in ("params", "batch_stats"):
      tree = variables.get(collection, {})
      for key in path:
        tree = tree.get(key, {})
      for name, value in tree.items():
        value = np.array(value)  # a writable copy for torch.from_numpy
        if name == "kernel":
          value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
        # dlib's Affine keeps Flax's names; torch's own layers use theirs.
        attr = name if isinstance(getattr(mod, name, None), torch.Tensor) else _FLAX_TO_TORCH[name]
        target = getattr(mod, attr)
        if tuple(target.shape) != value.shape:
          raise ValueError(f"{'/'.join(path)}/{name}: Flax {value.shape} vs torch "
                           f"{type(mod).__name__} {tuple(target.shape)}")
        with torch.no_grad():
          target.copy_(torch.from_numpy(np.ascontiguousarray(value)))
