"""torchvision ResNet-18 / ResNet-50 state dicts -> jaxface :class:`~jaxface.models.resnet.ResNet`.

The module tree mirrors the state dict, so the mapping is a renaming plus layout transforms:
``layer2.0.conv1.weight`` -> ``params/layer2_0/conv1/kernel`` (OIHW -> HWIO),
``*.bn1.weight/bias`` -> ``params/.../bn1/scale|bias``,
``*.running_mean/var`` -> ``batch_stats/.../mean|var``,
``downsample.0|1`` -> ``downsample_conv|bn``,
``fc.weight`` -> ``params/fc/kernel`` (transposed). ``num_batches_tracked`` is dropped.
``num_classes`` comes from ``fc`` (0 when the file has no fc) and ``width`` from conv1's output
channels (64 * width), so reduced-width files import into reduced-width models.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from jaxface.weights.common import WeightImportError, conv_oihw_to_hwio, linear_to_dense

_BLOCK = re.compile(r"^layer(\d+)\.(\d+)\.")
_BN_LEAVES = {"weight": ("params", "scale"), "bias": ("params", "bias"),
              "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def _module_path(name: str) -> str:
  """torchvision module name -> jaxface module path ('layer1.0.downsample.1' -> 'layer1_0/...')."""
  name = _BLOCK.sub(r"layer\1_\2.", name)
  name = name.replace("downsample.0", "downsample_conv").replace("downsample.1", "downsample_bn")
  return name.replace(".", "/")


def _is_bn(module: str) -> bool:
  last = module.rsplit("/", 1)[-1]
  return last.startswith("bn") or last == "downsample_bn"


def torchvision_arrays(sd: Mapping[str, Any], arch: str, source: str = ""
                       ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Maps a torchvision ResNet state dict to flat jaxface arrays and the model kwargs it needs."""
  if arch not in ("resnet18", "resnet50"):
    raise ValueError(f"not a ResNet arch: {arch!r}")
  where = f" in {source}" if source else ""
  if "conv1.weight" not in sd:
    raise WeightImportError(f"no 'conv1.weight'{where}; not a torchvision ResNet state dict "
                            f"(first keys: {list(sd)[:4]})")
  arrays: dict[str, np.ndarray] = {}
  for key, value in sd.items():
    value = np.asarray(value)
    module, _, leaf = key.rpartition(".")
    if leaf == "num_batches_tracked":
      continue
    path = _module_path(module)
    if _is_bn(path):
      if leaf not in _BN_LEAVES:
        raise WeightImportError(f"unexpected BatchNorm entry {key!r}{where}")
      collection, name = _BN_LEAVES[leaf]
      arrays[f"{collection}/{path}/{name}"] = value
    elif path == "fc":
      if leaf == "weight":
        if value.ndim != 2:
          raise WeightImportError(f"layer 'fc.weight'{where}: file has shape {value.shape} but the "
                                  "model expects a 2-D (out, in) Linear weight")
        arrays["params/fc/kernel"] = linear_to_dense(value)
      else:
        arrays[f"params/fc/{leaf}"] = value
    elif leaf == "weight":
      if value.ndim != 4:
        raise WeightImportError(f"layer {key!r}{where}: file has shape {value.shape} but the model "
                                "expects a 4-D (out, in, kh, kw) conv weight")
      arrays[f"params/{path}/kernel"] = conv_oihw_to_hwio(value)
    else:
      # Unknown entries (e.g. a conv bias) are passed through so assemble() names them.
      arrays[f"params/{path}/{leaf}"] = value

  stem = int(np.shape(sd["conv1.weight"])[0])
  width = stem / 64
  kwargs: dict[str, Any] = {"num_classes": int(np.shape(sd["fc.weight"])[0]) if "fc.weight" in sd
                            else 0}
  if width != 1.0:
    kwargs["width"] = width
  return arrays, kwargs
