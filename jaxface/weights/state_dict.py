"""Reading PyTorch-style state dicts (name -> array) from .pth, .safetensors or .npz files.

.safetensors and .npz need no torch; .pth goes through ``torch.load`` (weights_only) when torch is
installed. The legacy pre-zip torch format of facenet-pytorch has its own torch-free reader in
:mod:`jaxface.weights.legacy_torch`.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from jaxface.weights.common import WeightImportError, check_file


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  path = check_file(path)
  lower = path.lower()
  if lower.endswith(".safetensors"):
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    try:
      return dict(load_file(path))
    except Exception as e:  # noqa: BLE001
      raise WeightImportError(f"cannot read safetensors file {path}: {e}") from e
  if lower.endswith(".npz"):
    try:
      with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
    except Exception as e:  # noqa: BLE001
      raise WeightImportError(f"cannot read .npz state dict {path}: {e}") from e
  if lower.endswith((".pth", ".pt", ".bin", ".ckpt")):
    if not zipfile.is_zipfile(path):
      # Legacy (pre-zip) torch serialization: read without torch.
      from jaxface.weights import legacy_torch  # pylint: disable=g-import-not-at-top
      return legacy_torch.load(path)
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise WeightImportError(
          f"{path} is a torch zip pickle; install torch to read it, or convert it to .safetensors "
          "or .npz first") from e
    try:
      obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
      raise WeightImportError(f"torch.load could not read {path}: {e}") from e
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
      obj = obj["state_dict"]
    if not isinstance(obj, dict):
      raise WeightImportError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return {k.removeprefix("module."): v.detach().cpu().numpy() for k, v in obj.items()
            if hasattr(v, "detach")}
  raise WeightImportError(
      f"unsupported state-dict extension for {path}; expected .pth/.pt, .safetensors or .npz")
