"""facenet-pytorch MTCNN weights (``pnet.pt``, ``rnet.pt``, ``onet.pt``) -> jaxface trees.

The files are legacy-format torch pickles; they are read with :mod:`jaxface.weights.legacy_torch`,
so torch is not needed. Mapping of facenet-pytorch's state-dict keys (timesler/facenet-pytorch,
``models/mtcnn.py``): ``convX.weight`` (O, I, kh, kw) -> HWIO kernel, ``preluX.weight`` -> PReLU
``alpha``, ``denseX.weight`` (out, in) -> (in, out); the first dense layer (RNet ``dense4``, ONet
``dense5``) had its input flattened in (W, H, C) order (``permute(0, 3, 2, 1)``) and gets its rows
permuted to the model's (H, W, C) flatten.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from jaxface.weights import common, legacy_torch
from jaxface.weights.common import Imported, WeightImportError

# Per arch: the first dense layer after the flatten, the conv layer feeding it, that layer's output
# side length (3x3 in both nets), and the crop size the network is run on.
_ARCHS = {
    "mtcnn_pnet": dict(dense=None, last_conv="conv3", side=None, size=None),
    "mtcnn_rnet": dict(dense="dense4", last_conv="conv3", side=3, size=(24, 24)),
    "mtcnn_onet": dict(dense="dense5", last_conv="conv4", side=3, size=(48, 48)),
}


def guess_arch(sd) -> str:
  if "conv4_1.weight" in sd:
    return "mtcnn_pnet"
  if "dense4.weight" in sd:
    return "mtcnn_rnet"
  if "dense5.weight" in sd:
    return "mtcnn_onet"
  raise WeightImportError("cannot tell PNet / RNet / ONet from the state dict keys "
                          f"(first keys: {list(sd)[:4]}); pass arch=")


def _arr(sd, key: str, ndim: int, source: str) -> np.ndarray:
  if key not in sd:
    raise WeightImportError(f"layer {key!r} is missing in {source}")
  a = np.asarray(sd[key], np.float32)
  if a.ndim != ndim:
    raise WeightImportError(f"layer {key!r} in {source}: file has shape {a.shape}, expected a "
                            f"{ndim}-d array")
  return a


def mtcnn_arrays(sd, arch: str, source: str = "") -> tuple[dict[str, np.ndarray], dict]:
  """Maps a facenet-pytorch MTCNN state dict to flat jaxface keys and model kwargs."""
  if arch not in _ARCHS:
    raise ValueError(f"facenet_mtcnn holds {', '.join(_ARCHS)}, not arch={arch!r}")
  info = _ARCHS[arch]
  arrays = {}
  for key in sd:
    name, _, kind = key.rpartition(".")
    if kind not in ("weight", "bias"):
      raise WeightImportError(f"unexpected entry {key!r} in {source}")
    if name.startswith("conv") and kind == "weight":
      arrays[f"params/{name}/kernel"] = common.conv_oihw_to_hwio(_arr(sd, key, 4, source))
    elif name.startswith("conv"):
      arrays[f"params/{name}/bias"] = _arr(sd, key, 1, source)
    elif name.startswith("prelu") and kind == "weight":
      arrays[f"params/{name}/alpha"] = _arr(sd, key, 1, source)
    elif name.startswith("dense"):
      if kind == "bias":
        arrays[f"params/{name}/bias"] = _arr(sd, key, 1, source)
        continue
      w = common.linear_to_dense(_arr(sd, key, 2, source))
      if name == info["dense"]:
        c = _arr(sd, f"{info['last_conv']}.weight", 4, source).shape[0]
        side = info["side"]
        if w.shape[0] != side * side * c:
          raise WeightImportError(
              f"layer {key!r} in {source}: file has shape {tuple(sd[key].shape)} but the model "
              f"expects (out, {side * side * c}) after the {side}x{side}x{c} "
              f"{info['last_conv']} map")
        w = common.dense_rows_whc_to_hwc(w, c, side, side)
      arrays[f"params/{name}/kernel"] = w
    else:
      raise WeightImportError(f"unexpected entry {key!r} in {source}")
  # The released networks have a single size: no model kwargs to infer.
  return arrays, {}


def import_facenet_mtcnn(src, arch: str | None = None) -> Imported:
  """Reads a facenet-pytorch ``pnet.pt`` / ``rnet.pt`` / ``onet.pt`` (no torch needed)."""
  src = common.check_file(src)
  sd = legacy_torch.load(src)
  arch = arch or guess_arch(sd)
  arrays, model_kwargs = mtcnn_arrays(sd, arch, source=os.fspath(src))
  size = _ARCHS[arch]["size"]
  prep = dataclasses.replace(common.MTCNN, input_size=size)
  return common.build_imported("facenet_mtcnn", src, arch, arrays, model_kwargs, prep)
