"""Binary ``.caffemodel`` files -> jaxface trees, without the protobuf package.

A .caffemodel is a serialized ``caffe.NetParameter`` message. Only the fields that carry weights
are decoded; field numbers as in BVLC caffe ``src/caffe/proto/caffe.proto``:

* ``NetParameter``: ``layer = 100`` (repeated LayerParameter, current format),
  ``layers = 2`` (repeated V1LayerParameter, deprecated format of 2014 models).
* ``LayerParameter``: ``name = 1`` (string), ``type = 2`` (string, e.g. "Convolution"),
  ``blobs = 7`` (repeated BlobProto).
* ``V1LayerParameter``: ``name = 4`` (string), ``type = 5`` (enum LayerType, e.g.
  CONVOLUTION = 4, INNER_PRODUCT = 14), ``blobs = 6``; ``layer = 1`` holds a V0LayerParameter
  (``name = 1``, ``type = 2`` string, ``blobs = 50``) in the oldest files.
* ``BlobProto``: ``num = 1``, ``channels = 2``, ``height = 3``, ``width = 4`` (deprecated 4-D dims,
  int64), ``data = 5`` (repeated float, packed; unpacked runs are accepted too),
  ``shape = 7`` (BlobShape), ``double_data = 8`` (repeated double, packed).
* ``BlobShape``: ``dim = 1`` (repeated int64, packed).

Weight layouts: convolution ``(O, I/group, kh, kw)`` -> HWIO ``(kh, kw, I/group, O)``, which is
exactly what ``feature_group_count`` expects (both frameworks order groups the same way: output
group g reads input group g); inner product ``(out, in)`` -> ``(in, out)``, with the rows of the
first one after the last pooling permuted from Caffe's (C, H, W) flatten to (H, W, C).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Callable

import numpy as np

from jaxface.models import layers as model_layers
from jaxface.weights import common
from jaxface.weights.common import Imported, WeightImportError

# V1LayerParameter.LayerType -> the type string of the current format (caffe's UpgradeV1LayerType).
V1_LAYER_TYPES = {
    0: "", 1: "Accuracy", 2: "BNLL", 3: "Concat", 4: "Convolution", 5: "Data", 6: "Dropout",
    7: "EuclideanLoss", 8: "Flatten", 9: "HDF5Data", 10: "HDF5Output", 11: "Im2col",
    12: "ImageData", 13: "InfogainLoss", 14: "InnerProduct", 15: "LRN",
    16: "MultinomialLogisticLoss", 17: "Pooling", 18: "ReLU", 19: "Sigmoid", 20: "Softmax",
    21: "SoftmaxWithLoss", 22: "Split", 23: "TanH", 24: "WindowData", 25: "Eltwise", 26: "Power",
    27: "SigmoidCrossEntropyLoss", 28: "HingeLoss", 29: "MemoryData", 30: "ArgMax",
    31: "Threshold", 32: "DummyData", 33: "Slice", 34: "MVN", 35: "AbsVal", 36: "Silence",
    37: "ContrastiveLoss", 38: "Exp", 39: "Deconvolution",
}

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_FLOAT_TAG = (5 << 3) | _I32  # BlobProto.data written unpacked: one tag byte per float.


class _DecodeError(Exception):
  pass


# ---------------------------------------------------------------------------------------------
# Protobuf wire format.

def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
  result, shift = 0, 0
  while True:
    if pos >= end:
      raise _DecodeError("truncated varint")
    b = buf[pos]
    pos += 1
    result |= (b & 0x7F) << shift
    if b < 0x80:
      return result, pos
    shift += 7
    if shift > 63:
      raise _DecodeError("varint longer than 10 bytes")


def _field(buf: bytes, pos: int, end: int):
  """Reads one field at ``pos``: (number, wire type, value, next pos). Value is an int for varints
  and a (start, stop) byte range otherwise."""
  key, pos = _varint(buf, pos, end)
  number, wire = key >> 3, key & 7
  if number == 0:
    raise _DecodeError("field number 0")
  if wire == _VARINT:
    value, pos = _varint(buf, pos, end)
    return number, wire, value, pos
  if wire == _I64:
    size = 8
  elif wire == _I32:
    size = 4
  elif wire == _LEN:
    size, pos = _varint(buf, pos, end)
  else:  # 3/4 are proto2 groups, never used by caffe.proto; anything else is not protobuf.
    raise _DecodeError(f"unsupported wire type {wire} for field {number}")
  if pos + size > end:
    raise _DecodeError(f"field {number} runs past the end of its message")
  return number, wire, (pos, pos + size), pos + size


def _fields(buf: bytes, start: int, end: int):
  pos = start
  while pos < end:
    number, wire, value, pos = _field(buf, pos, end)
    yield number, wire, value


def _string(buf: bytes, rng) -> str:
  return bytes(buf[rng[0]:rng[1]]).decode("utf-8", errors="replace")


def _varints(buf: bytes, rng) -> list[int]:
  out, pos = [], rng[0]
  while pos < rng[1]:
    v, pos = _varint(buf, pos, rng[1])
    out.append(v)
  return out


def _blob(buf: bytes, start: int, end: int) -> np.ndarray:
  """Decodes a BlobProto into an array shaped by ``shape`` (or the legacy 4-D dims)."""
  legacy = {}
  shape = None
  chunks: list[np.ndarray] = []
  pos = start
  while pos < end:
    number, wire, value, pos_next = _field(buf, pos, end)
    if number == 5 and wire == _LEN:
      a, b = value
      if (b - a) % 4:
        raise _DecodeError("packed float data length is not a multiple of 4")
      chunks.append(np.frombuffer(buf, "<f4", (b - a) // 4, a))
    elif number == 5 and wire == _I32:
      # Unpacked floats: a run of (tag, 4 bytes) records; read the whole run at once.
      n_max = (end - pos) // 5
      tags = np.frombuffer(buf, np.uint8, n_max * 5, pos)[::5]
      bad = np.flatnonzero(tags != _FLOAT_TAG)
      n = int(bad[0]) if bad.size else n_max
      records = np.frombuffer(buf, np.uint8, n * 5, pos).reshape(n, 5)[:, 1:]
      chunks.append(np.ascontiguousarray(records).view("<f4").reshape(-1))
      pos_next = pos + 5 * n
    elif number == 8 and wire == _LEN:
      a, b = value
      if (b - a) % 8:
        raise _DecodeError("packed double data length is not a multiple of 8")
      chunks.append(np.frombuffer(buf, "<f8", (b - a) // 8, a))
    elif number == 8 and wire == _I64:
      chunks.append(np.frombuffer(buf, "<f8", 1, value[0]))
    elif number == 7 and wire == _LEN:
      dims = []
      for n2, w2, v2 in _fields(buf, *value):
        if n2 == 1 and w2 == _LEN:
          dims.extend(_varints(buf, v2))
        elif n2 == 1 and w2 == _VARINT:
          dims.append(v2)
      shape = tuple(dims)
    elif number in (1, 2, 3, 4) and wire == _VARINT:
      legacy[number] = value
    pos = pos_next
  if chunks:
    dtype = np.float64 if any(c.dtype.itemsize == 8 for c in chunks) else np.float32
    data = np.concatenate([c.astype(dtype) for c in chunks])  # Copies out of the file buffer.
  else:
    data = np.zeros((0,), np.float32)
  if shape is None and legacy:
    shape = tuple(legacy.get(i, 0) for i in (1, 2, 3, 4))
  if shape is None:
    shape = (data.size,)
  if math.prod(shape) != data.size:
    raise _DecodeError(f"blob shape {shape} does not hold its {data.size} values")
  return data.reshape(shape)


def _layer(buf: bytes, start: int, end: int, version: int):
  """Decodes a LayerParameter (version 2) or V1LayerParameter (version 1)."""
  name_f, type_f, blobs_f = (1, 2, 7) if version == 2 else (4, 5, 6)
  name, type_, blobs = "", "", []
  for number, wire, value in _fields(buf, start, end):
    if number == name_f and wire == _LEN:
      name = _string(buf, value)
    elif number == type_f and wire == _LEN and version == 2:
      type_ = _string(buf, value)
    elif number == type_f and wire == _VARINT and version == 1:
      type_ = V1_LAYER_TYPES.get(value, f"V1LayerType{value}")
    elif number == blobs_f and wire == _LEN:
      try:
        blobs.append(_blob(buf, *value))
      except _DecodeError as e:
        raise _DecodeError(f"layer {name!r}, blob {len(blobs)}: {e}") from e
    elif version == 1 and number == 1 and wire == _LEN:
      # V0LayerParameter nested in a V1 layer (pre-2014 files).
      for n0, w0, v0 in _fields(buf, *value):
        if n0 == 1 and w0 == _LEN:
          name = name or _string(buf, v0)
        elif n0 == 2 and w0 == _LEN:
          type_ = type_ or _string(buf, v0)
        elif n0 == 50 and w0 == _LEN:
          blobs.append(_blob(buf, *v0))
  return name, type_, blobs


def read_caffemodel(path: str | os.PathLike) -> list[tuple[str, str, list[np.ndarray]]]:
  """Reads every layer of a .caffemodel as ``(name, type, [blob arrays])``, in file order.

  Types are the current-format strings ("Convolution", "InnerProduct", ...) also for V1 files.
  Raises WeightImportError for a truncated or non-caffemodel file.
  """
  path = common.check_file(path)
  with open(path, "rb") as f:
    buf = f.read()
  out = []
  try:
    for number, wire, value in _fields(buf, 0, len(buf)):
      if number == 100 and wire == _LEN:
        out.append(_layer(buf, *value, version=2))
      elif number == 2 and wire == _LEN:
        out.append(_layer(buf, *value, version=1))
  except _DecodeError as e:
    where = f" (after layer {out[-1][0]!r})" if out else ""
    raise WeightImportError(f"{path} is not a valid .caffemodel or is truncated{where}: {e}") from e
  if not out:
    raise WeightImportError(f"{path} holds no Caffe layers; is it a .caffemodel (binary "
                            "NetParameter)?")
  return out


# ---------------------------------------------------------------------------------------------
# Importer.

def _gilnet_channels(width: float) -> dict[str, int]:
  base = {"conv1": 96, "conv2": 256, "conv3": 384, "fc6": 512, "fc7": 512}
  return {k: model_layers.scaled(c, width) for k, c in base.items()}


def _alexnet_caffe_channels(width: float) -> dict[str, int]:
  from jaxface.models import alexnet  # pylint: disable=g-import-not-at-top
  return alexnet.channels_caffe(width)


@dataclasses.dataclass(frozen=True)
class _Arch:
  convs: tuple[str, ...]
  hidden: tuple[str, ...]  # Hidden fc layers (fc8 follows).
  channels: Callable[[float], dict[str, int]]  # The model's channel counts under a width.
  pool_side: int  # Side of the last pooled map feeding fc6.
  mean_note: str


_ARCHS = {
    "gilnet": _Arch(
        ("conv1", "conv2", "conv3"), ("fc6", "fc7"), _gilnet_channels, 7,
        "GilNet subtracted a per-fold 256x256 mean image of the Adience training faces, which is "
        "not shipped with the caffemodel; these per-channel ImageNet BGR means are an "
        "approximation."),
    "alexnet_caffe": _Arch(
        ("conv1", "conv2", "conv3", "conv4", "conv5"), ("fc6", "fc7"), _alexnet_caffe_channels, 6,
        "bvlc_alexnet subtracted the ImageNet mean image (ilsvrc_2012_mean.npy); the per-channel "
        "BGR means are the usual approximation of it."),
}


def guess_arch(layers) -> str:
  names = {name for name, _, blobs in layers if blobs}
  return "alexnet_caffe" if "conv5" in names else "gilnet"


def _infer_width(counts: dict[str, int], channels: Callable[[float], dict[str, int]]) -> float:
  """The width multiplier under which the model has every observed channel count (1.0 if none
  does, so that the shape check names the first layer that differs)."""
  base = channels(1.0)
  for name in counts:
    w = counts[name] / base[name]
    if all(channels(w)[n] == counts[n] for n in counts):
      return w
  return 1.0


def caffe_arrays(layers, arch: str, source: str = "") -> tuple[dict[str, np.ndarray], dict]:
  """Maps the weighted layers of a caffemodel to flat jaxface keys and model kwargs."""
  if arch not in _ARCHS:
    raise ValueError(f"caffemodel importer holds {', '.join(_ARCHS)}, not arch={arch!r}")
  spec = _ARCHS[arch]
  by_name = {}
  for name, type_, blobs in layers:
    if blobs and name not in by_name:
      by_name[name] = (type_, blobs)
  where = f" in {source}" if source else ""

  def get(name, type_, ndim_w):
    if name not in by_name:
      raise WeightImportError(f"layer {name!r} is missing{where} (layers with weights: "
                              f"{sorted(by_name)})")
    t, blobs = by_name[name]
    if t != type_:
      raise WeightImportError(f"layer {name!r}{where} is a {t!r} layer, expected {type_!r}")
    if len(blobs) != 2:
      raise WeightImportError(f"layer {name!r}{where} has {len(blobs)} blobs, expected weight "
                              "and bias")
    w, b = blobs
    if ndim_w == 2 and w.ndim == 4 and w.shape[:2] == (1, 1):
      w = w.reshape(w.shape[2:])  # Legacy 4-D dims of an InnerProduct: (1, 1, out, in).
    if w.ndim != ndim_w:
      raise WeightImportError(f"layer {name!r}{where}: weight blob has shape {w.shape}, expected "
                              f"a {ndim_w}-d array")
    return np.asarray(w, np.float32), np.asarray(b, np.float32).reshape(-1)

  arrays = {}
  counts = {}
  for name in spec.convs:
    w, b = get(name, "Convolution", 4)
    counts[name] = w.shape[0]
    arrays[f"params/{name}/kernel"] = common.conv_oihw_to_hwio(w)
    arrays[f"params/{name}/bias"] = b
  last_conv = spec.convs[-1]
  for name in (*spec.hidden, "fc8"):
    w, b = get(name, "InnerProduct", 2)
    kernel = common.linear_to_dense(w)
    if name == "fc6":
      c, s = counts[last_conv], spec.pool_side
      if kernel.shape[0] != c * s * s:
        raise WeightImportError(
            f"layer 'fc6'{where}: file has shape {w.shape} but the model expects "
            f"({w.shape[0]}, {c * s * s}) = {c}x{s}x{s} inputs from {last_conv}")
      kernel = common.dense_rows_chw_to_hwc(kernel, c, s, s)
    if name in spec.hidden:
      counts[name] = w.shape[0]
    arrays[f"params/{name}/kernel"] = kernel
    arrays[f"params/{name}/bias"] = b
  model_kwargs = {"num_classes": int(arrays["params/fc8/kernel"].shape[1])}
  width = _infer_width(counts, spec.channels)
  if width != 1.0:
    model_kwargs["width"] = width
  return arrays, model_kwargs


def import_caffemodel(src, arch: str | None = None) -> Imported:
  """Reads a GilNet or bvlc_alexnet .caffemodel (V1 or current format). Without ``arch`` a file
  with a conv5 layer is read as alexnet_caffe, anything else as gilnet."""
  src = common.check_file(src)
  layers = read_caffemodel(src)
  arch = arch or guess_arch(layers)
  arrays, model_kwargs = caffe_arrays(layers, arch, source=os.fspath(src))
  prep = dataclasses.replace(common.CAFFE_IMAGENET_BGR, input_size=(227, 227))
  return common.build_imported("caffemodel", src, arch, arrays, model_kwargs, prep,
                               mean_note=_ARCHS[arch].mean_note)
