"""torchvision state dicts (AlexNet, VGG-16, ResNet-18/50) -> jaxface trees."""

from __future__ import annotations

from jaxface.weights.common import (TORCHVISION, Imported, WeightImportError, build_imported)
from jaxface.weights.state_dict import read_state_dict


def guess_arch(sd) -> str:
  if "layer4.0.conv3.weight" in sd:
    return "resnet50"
  if "layer4.0.conv1.weight" in sd:
    return "resnet18"
  if "features.28.weight" in sd:
    return "vgg16"
  if "features.10.weight" in sd:
    return "alexnet"
  raise WeightImportError("cannot tell the architecture from the state dict keys "
                          f"(first keys: {list(sd)[:4]}); pass --arch")


def import_torchvision(src, arch: str | None = None) -> Imported:
  sd = read_state_dict(src)
  arch = arch or guess_arch(sd)
  if arch in ("alexnet", "vgg16"):
    from jaxface.weights import alexnet_vgg as family  # pylint: disable=g-import-not-at-top
  elif arch in ("resnet18", "resnet50"):
    from jaxface.weights import resnet as family  # pylint: disable=g-import-not-at-top
  else:
    raise ValueError(f"torchvision importer does not handle arch={arch!r}")
  arrays, model_kwargs = family.torchvision_arrays(sd, arch, source=str(src))
  return build_imported("torchvision", src, arch, arrays, model_kwargs, TORCHVISION)
