"""Shared machinery of the weight importers: provenance, preprocessing records, layout transforms,
shape-checked assembly of a variables tree, and the portable ``.npz`` output format."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from typing import Any, Callable, Mapping

import jax
import numpy as np

Variables = dict[str, Any]


class WeightImportError(ValueError):
  """A weight file does not fit the model (names the layer and both shapes) or cannot be read."""


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """How raw uint8 pixels must be turned into the network input the weights were trained on.

  ``input = (pixels[..., channel_order] * scale - mean) / std``, with ``pixels`` given as RGB.
  """
  channel_order: str = "RGB"  # "RGB" or "BGR": order of the channels the network expects.
  scale: float = 1.0 / 255.0
  mean: tuple[float, ...] = (0.0, 0.0, 0.0)  # In ``channel_order``, after scaling.
  std: tuple[float, ...] = (1.0, 1.0, 1.0)
  input_size: tuple[int, int] | None = None  # (H, W) the weights were trained at.

  def __post_init__(self):
    if self.channel_order not in ("RGB", "BGR"):
      raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")

  def apply(self, rgb_uint8):
    """Maps RGB pixels (numpy-style array, last axis = 3) to network input."""
    x = rgb_uint8[..., ::-1] if self.channel_order == "BGR" else rgb_uint8
    x = x.astype(np.float32) * self.scale
    return (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["mean"], d["std"] = list(self.mean), list(self.std)
    d["input_size"] = list(self.input_size) if self.input_size else None
    return d

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "Preprocessing":
    return cls(channel_order=d["channel_order"], scale=float(d["scale"]),
               mean=tuple(d["mean"]), std=tuple(d["std"]),
               input_size=tuple(d["input_size"]) if d.get("input_size") else None)


# Preprocessing conventions of the common weight sources: torchvision's ImageNet models (RGB / 255,
# ImageNet mean / std, 224 x 224); Caffe-origin VGG-16 as Keras' ``preprocess_input`` "caffe" mode
# feeds it, as does ML-Net's reference code (BGR 0..255 minus the B, G, R mean, no scaling);
# VGG-Face (Parkhi, Vedaldi, Zisserman, BMVC 2015) as rcmalli/keras-vggface's ``version=1`` feeds it
# (BGR minus the VGG-Face mean pixel); facenet-pytorch's MTCNN ((x - 127.5) / 128, any size).
TORCHVISION = Preprocessing("RGB", 1.0 / 255.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                            (224, 224))
CAFFE_IMAGENET_BGR = Preprocessing("BGR", 1.0, (103.939, 116.779, 123.68), (1.0, 1.0, 1.0),
                                   (224, 224))
VGGFACE_BGR = Preprocessing("BGR", 1.0, (93.5940, 104.7624, 129.1863), (1.0, 1.0, 1.0), (224, 224))
MTCNN = Preprocessing("RGB", 1.0, (127.5, 127.5, 127.5), (128.0, 128.0, 128.0), None)


@dataclasses.dataclass
class Imported:
  """Result of an importer: a Flax variables tree plus provenance metadata."""
  variables: Variables
  meta: dict[str, Any]

  @property
  def preprocessing(self) -> Preprocessing:
    return Preprocessing.from_dict(self.meta["preprocessing"])


def sha256_file(path: str | os.PathLike) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def make_meta(fmt: str, src: str | os.PathLike, model: str, model_kwargs: Mapping[str, Any],
              preprocessing: Preprocessing, **extra) -> dict[str, Any]:
  """Provenance record stored with every imported tree."""
  return {
      "source_format": fmt,
      "source_file": os.path.basename(os.fspath(src)),
      "source_sha256": sha256_file(src),
      "model": model,
      "model_kwargs": dict(model_kwargs),
      "preprocessing": preprocessing.to_dict(),
      **extra,
  }


def check_file(path: str | os.PathLike) -> str:
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"weight file not found: {path}")
  if os.path.getsize(path) == 0:
    raise WeightImportError(f"weight file is empty (0 bytes): {path}")
  return path


# ---------------------------------------------------------------------------------------------
# Layout transforms. Flax uses NHWC activations, HWIO conv kernels and (in, out) dense kernels;
# PyTorch and Caffe store conv kernels (O, I, kh, kw) and Linear weights (out, in), and flatten
# C,H,W. PyTorch, Caffe and ``lax.conv_general_dilated`` all compute a cross-correlation, so
# their kernels only need a transpose. Theano's ``conv2d`` flips the kernel by default
# (``filter_flip=True``, a true convolution), so kernels stored for Theano-era Keras 1
# (``image_dim_ordering="th"``) are flipped spatially first (keras-team/keras issue #3015; Keras
# later shipped ``convert_kernel`` for this).

def conv_oihw_to_hwio(w: np.ndarray) -> np.ndarray:
  """PyTorch / Caffe conv kernel (O, I, kh, kw) -> Flax HWIO. Both cross-correlate: no flip."""
  return np.ascontiguousarray(np.transpose(np.asarray(w), (2, 3, 1, 0)))


def conv_theano_to_hwio(w: np.ndarray) -> np.ndarray:
  """Theano-era Keras kernel (O, I, kh, kw), stored for a true convolution -> HWIO: flip then
  transpose."""
  return conv_oihw_to_hwio(np.asarray(w)[:, :, ::-1, ::-1])


def linear_to_dense(w: np.ndarray) -> np.ndarray:
  """PyTorch Linear (out, in) -> Flax Dense (in, out)."""
  return np.ascontiguousarray(np.asarray(w).T)


def dense_rows_chw_to_hwc(w_in_out: np.ndarray, c: int, h: int, w: int) -> np.ndarray:
  """Reorders the rows of a dense kernel (in, out) whose input was flattened in C,H,W order so it
  accepts an NHWC (H,W,C) flatten."""
  out = w_in_out.shape[1]
  return np.ascontiguousarray(w_in_out.reshape(c, h, w, out).transpose(1, 2, 0, 3)
                              .reshape(h * w * c, out))


def dense_rows_whc_to_hwc(w_in_out: np.ndarray, c: int, h: int, w: int) -> np.ndarray:
  """Same for an input flattened in W,H,C order (facenet-pytorch MTCNN ``permute(0, 3, 2, 1)``)."""
  out = w_in_out.shape[1]
  return np.ascontiguousarray(w_in_out.reshape(w, h, c, out).transpose(1, 0, 2, 3)
                              .reshape(h * w * c, out))


# ---------------------------------------------------------------------------------------------
# Assembly.

def _path_str(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def abstract_variables(model, input_shape, **apply_kwargs) -> Variables:
  """Shapes of ``model.init`` without computing anything."""
  x = jax.ShapeDtypeStruct(tuple(input_shape), np.float32)
  return jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, **apply_kwargs), x)


def assemble(template: Variables, arrays: Mapping[str, np.ndarray], source: str = "",
             allow_missing: Callable[[str], bool] | None = None) -> Variables:
  """Builds a variables tree shaped like ``template`` from ``arrays`` keyed by '/'-joined paths
  (e.g. ``"params/conv1/kernel"``, ``"batch_stats/bn1/mean"``).

  Raises WeightImportError naming the layer and both shapes on any mismatch, on a layer the model
  lacks, and on a model layer the file does not provide (unless ``allow_missing(path)``).
  """
  where = f" in {source}" if source else ""
  leaves = jax.tree_util.tree_flatten_with_path(template)[0]
  expected = {_path_str(p): leaf for p, leaf in leaves}
  unknown = sorted(set(arrays) - set(expected))
  if unknown:
    raise WeightImportError(f"layer {unknown[0]!r}{where} does not exist in the model "
                            f"({len(unknown)} unknown in total; model has e.g. "
                            f"{sorted(expected)[:3]})")
  out = {}
  for key, leaf in expected.items():
    if key not in arrays:
      if allow_missing is not None and allow_missing(key):
        continue
      raise WeightImportError(f"layer {key!r} expected by the model (shape {tuple(leaf.shape)}) "
                              f"is missing{where}")
    arr = np.asarray(arrays[key])
    if tuple(arr.shape) != tuple(leaf.shape):
      raise WeightImportError(f"layer {key!r}{where}: file has shape {tuple(arr.shape)} but the "
                              f"model expects {tuple(leaf.shape)}")
    out[key] = arr.astype(np.float32)
  return unflatten(out)


def flatten(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  leaves = jax.tree_util.tree_flatten_with_path(variables)[0]
  return {_path_str(p): np.asarray(v) for p, v in leaves}


def unflatten(flat: Mapping[str, Any]) -> Variables:
  tree: dict[str, Any] = {}
  for key, value in flat.items():
    node = tree
    parts = key.split("/")
    for part in parts[:-1]:
      node = node.setdefault(part, {})
    node[parts[-1]] = value
  return tree


# ---------------------------------------------------------------------------------------------
# Portable output: one .npz with '/'-joined keys plus a JSON metadata entry.

_META_KEY = "__meta__"


def save(path: str | os.PathLike, variables: Variables, meta: Mapping[str, Any]) -> None:
  """Writes ``variables`` and ``meta`` atomically (temporary file, then rename)."""
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  flat = flatten(variables)
  flat[_META_KEY] = np.frombuffer(json.dumps(dict(meta), sort_keys=True).encode(), np.uint8)
  fd, tmp = tempfile.mkstemp(dir=directory, suffix=".npz.tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **flat)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def load(path: str | os.PathLike) -> Imported:
  """Reads a file written by :func:`save`."""
  path = check_file(path)
  try:
    with np.load(path, allow_pickle=False) as data:
      flat = {k: data[k] for k in data.files}
  except Exception as e:  # noqa: BLE001 - any numpy/zip error means the same thing to the user.
    raise WeightImportError(f"{path} is not a jaxface weight file (.npz): {e}") from e
  if _META_KEY not in flat:
    raise WeightImportError(f"{path} has no {_META_KEY!r} entry; was it written by "
                            "jaxface.convert?")
  meta = json.loads(flat.pop(_META_KEY).tobytes().decode())
  return Imported(unflatten(flat), meta)


def build_imported(fmt: str, src: str | os.PathLike, arch: str, arrays: Mapping[str, np.ndarray],
                   model_kwargs: Mapping[str, Any], preprocessing: Preprocessing,
                   input_shape: tuple[int, ...] | None = None, **extra_meta) -> Imported:
  """Checks ``arrays`` (flat '/'-joined keys) against registry model ``arch`` built with
  ``model_kwargs`` and returns the assembled tree with its provenance record."""
  from jaxface import models  # pylint: disable=g-import-not-at-top

  model = models.get(arch, **model_kwargs)
  shape = input_shape or models.spec(arch).input_shape
  template = abstract_variables(model, (1, *shape))
  variables = assemble(template, arrays, source=os.fspath(src))
  meta = make_meta(fmt, src, arch, model_kwargs, preprocessing, **extra_meta)
  return Imported(variables, meta)
