"""Torch-free reader for ``torch.save`` state dicts, above all the legacy (pre-zip) format.

The legacy format (written by ``torch.save`` before torch 1.6 and still read by ``torch.load``; used
by facenet-pytorch's ``pnet.pt`` / ``rnet.pt`` / ``onet.pt``) is a sequence of pickles followed by
raw storage bytes:

1. the magic number ``0x1950a86a20f9469cfc6c``,
2. the protocol version (1001),
3. a sys-info dict (``little_endian``, ``type_sizes``),
4. the object itself (an ``OrderedDict`` of tensors), where every tensor is pickled as
   ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` and every storage as a
   persistent id ``("storage", <torch.FloatStorage>, key, location, numel, view_metadata)``,
5. the sorted list of storage keys,
6. per key: an int64 element count followed by the raw little-endian elements.

Tensors may be non-contiguous views of their storage (facenet-pytorch conv kernels have strides
``(1, O, O*I, O*I*kh)``), so arrays are rebuilt with their offset, size and strides.

The zip format of ``torch.save`` (torch >= 1.6) uses the same tensor pickling with storages kept as
separate zip members, so it is read here too.

The pickles are read with a restricted unpickler that resolves only ``collections.OrderedDict``, the
torch tensor/parameter rebuild functions and the storage type names (all emulated); anything else
is refused, so loading a file never executes foreign code.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any

import numpy as np

from jaxface.weights.common import WeightImportError, check_file

MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
PROTOCOL_VERSION = 1001


def _bfloat16():
  import ml_dtypes  # pylint: disable=g-import-not-at-top  (ships with jax)
  return np.dtype(ml_dtypes.bfloat16)


# Storage class name -> little-endian element dtype (a callable where the import is deferred).
_STORAGE_DTYPES: dict[str, Any] = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "BFloat16Storage": _bfloat16,
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
    "UntypedStorage": "u1",
}


class _StorageType:
  """Stand-in for ``torch.FloatStorage`` etc.: only its element dtype matters."""

  def __init__(self, name: str):
    dtype = _STORAGE_DTYPES[name]
    self.name = name
    self.dtype = np.dtype(dtype() if callable(dtype) else dtype)


class _Storage:
  """A storage referenced by the pickle; its bytes are attached after the pickle is read.

  Files from before torch 1.0 may reference a view (``root``, element offset and size) of a
  storage instead of the storage itself.
  """

  def __init__(self, key: str, dtype: np.dtype, numel: int, root: "_Storage | None" = None,
               view_offset: int = 0):
    self.key = key
    self.dtype = dtype
    self.numel = numel
    self.data: np.ndarray | None = None  # 1-D array of ``dtype``.
    self.root = root
    self.view_offset = view_offset

  def elements(self) -> np.ndarray:
    if self.root is not None:
      return self.root.elements()[self.view_offset:self.view_offset + self.numel]
    if self.data is None:
      raise WeightImportError(f"storage {self.key!r} has no data in the file")
    return self.data


class _LazyTensor:
  """A tensor whose storage bytes come after the pickle; resolved by :func:`_materialise`."""

  def __init__(self, storage, offset, size, stride):
    if not isinstance(storage, _Storage):
      raise WeightImportError(f"tensor rebuilt from a {type(storage).__name__}, not a storage")
    self.storage = storage
    self.offset = int(offset)
    self.size = tuple(int(s) for s in size)
    self.stride = tuple(int(s) for s in stride)

  def to_numpy(self) -> np.ndarray:
    data = self.storage.elements()
    if len(self.size) != len(self.stride):
      raise WeightImportError(f"tensor size {self.size} and stride {self.stride} differ in rank")
    if any(s < 0 for s in self.size) or any(s < 0 for s in self.stride) or self.offset < 0:
      raise WeightImportError(f"invalid tensor geometry: offset {self.offset}, size {self.size}, "
                              f"stride {self.stride}")
    if 0 in self.size:
      return np.zeros(self.size, data.dtype)
    # as_strided does no bounds checks: check that the last element lies inside the storage.
    last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
    if last >= data.size:
      raise WeightImportError(
          f"tensor (offset {self.offset}, size {self.size}, stride {self.stride}) reaches element "
          f"{last} of a storage with {data.size} elements; the file is truncated or corrupt")
    base = data[self.offset:]
    item = data.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        base, shape=self.size, strides=tuple(s * item for s in self.stride), writeable=False)
    out = np.array(view, order="C", copy=True)
    return out if out.dtype.isnative else out.astype(out.dtype.newbyteorder("="))


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
  return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *unused):
  return data


class _OrderedDict(collections.OrderedDict):
  """OrderedDict that tolerates the ``_metadata`` attribute torch attaches to state dicts."""


_ALLOWED = {
    ("collections", "OrderedDict"): _OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
  """Resolves only the globals a torch state dict needs, and storages via persistent ids."""

  def __init__(self, f, storages: dict[str, _Storage] | None = None):
    super().__init__(f, encoding="latin1")
    self.storages = {} if storages is None else storages

  def find_class(self, module, name):
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(name)
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    raise WeightImportError(
        f"the file references {module}.{name}, which a plain state dict does not contain "
        "(refusing to unpickle arbitrary objects)")

  def persistent_load(self, pid):
    if not isinstance(pid, tuple) or not pid:
      raise WeightImportError(f"unexpected persistent id {pid!r}")
    kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
    if kind != "storage":
      raise WeightImportError(f"unsupported persistent id of type {kind!r} (only storages)")
    storage_type, key, _location, numel = pid[1:5]
    view = pid[5] if len(pid) > 5 else None
    if not isinstance(storage_type, _StorageType):
      raise WeightImportError(f"unknown storage type {storage_type!r}")
    key = str(key)
    if key not in self.storages:
      self.storages[key] = _Storage(key, storage_type.dtype, int(numel))
    root = self.storages[key]
    if view is None:
      return root
    view_key, view_offset, view_size = view
    return _Storage(str(view_key), root.dtype, int(view_size), root=root,
                    view_offset=int(view_offset))


def _materialise(obj):
  if isinstance(obj, _LazyTensor):
    return obj.to_numpy()
  if isinstance(obj, dict):
    return {k: _materialise(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialise(v) for v in obj)
  return obj


def _to_state_dict(obj, path: str) -> dict[str, np.ndarray]:
  if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
    obj = obj["state_dict"]
  if not isinstance(obj, dict):
    raise WeightImportError(f"{path} holds a {type(obj).__name__}, not a state dict")
  out = {}
  for k, v in obj.items():
    if isinstance(v, np.ndarray):
      out[str(k).removeprefix("module.")] = v
  if not out:
    raise WeightImportError(f"{path} contains no tensors")
  return out


def _load_legacy(f, path: str) -> Any:
  def small_pickle():
    return _Unpickler(f).load()

  try:
    magic = small_pickle()
  except WeightImportError:
    raise
  except Exception as e:  # noqa: BLE001 - any unpickling failure means "not this format".
    raise WeightImportError(f"{path} is not a torch file (no legacy torch header: {e})") from e
  if magic != MAGIC_NUMBER:
    raise WeightImportError(f"{path} is not a legacy torch file (bad magic number)")
  try:
    protocol = small_pickle()
    if protocol != PROTOCOL_VERSION:
      raise WeightImportError(f"{path}: unsupported legacy torch protocol version {protocol}")
    sys_info = small_pickle()
    if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
      raise WeightImportError(f"{path} was written on a big-endian machine; not supported")
    unpickler = _Unpickler(f)
    result = unpickler.load()
    keys = small_pickle()
  except WeightImportError:
    raise
  except Exception as e:  # noqa: BLE001
    raise WeightImportError(f"{path}: truncated or corrupt legacy torch file ({e})") from e
  storages = unpickler.storages
  for key in keys:
    key = str(key)
    if key not in storages:
      raise WeightImportError(f"{path}: storage {key!r} is listed but never referenced")
    storage = storages[key]
    header = f.read(8)
    if len(header) != 8:
      raise WeightImportError(f"{path} is truncated: storage {key!r} header missing")
    (numel,) = struct.unpack("<q", header)
    nbytes = numel * storage.dtype.itemsize
    raw = f.read(nbytes)
    if len(raw) != nbytes:
      raise WeightImportError(f"{path} is truncated: storage {key!r} needs {nbytes} bytes, "
                              f"only {len(raw)} left")
    storage.data = np.frombuffer(raw, storage.dtype)
  return result


def _load_zip(path: str) -> Any:
  try:
    zf = zipfile.ZipFile(path)
  except zipfile.BadZipFile as e:
    raise WeightImportError(f"{path}: corrupt zip-format torch file ({e})") from e
  with zf:
    names = zf.namelist()
    pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if not pkl:
      raise WeightImportError(f"{path} is a zip file but not a torch.save archive (no data.pkl)")
    prefix = pkl[0][:-len("data.pkl")]
    if prefix + "byteorder" in names and zf.read(prefix + "byteorder") != b"little":
      raise WeightImportError(f"{path} was written big-endian; not supported")
    try:
      unpickler = _Unpickler(io.BytesIO(zf.read(pkl[0])))
      result = unpickler.load()
    except WeightImportError:
      raise
    except Exception as e:  # noqa: BLE001
      raise WeightImportError(f"{path}: cannot read data.pkl ({e})") from e
    for key, storage in unpickler.storages.items():
      member = f"{prefix}data/{key}"
      if member not in names:
        raise WeightImportError(f"{path}: storage record {member!r} is missing")
      raw = zf.read(member)
      nbytes = storage.numel * storage.dtype.itemsize
      if len(raw) < nbytes:
        raise WeightImportError(f"{path}: storage {key!r} has {len(raw)} bytes, needs {nbytes}")
      storage.data = np.frombuffer(raw[:nbytes], storage.dtype)
  return result


def load(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a ``torch.save``-d state dict (legacy or zip format) into ``{name: np.ndarray}``.

  Raises WeightImportError for a file that is not a torch state dict, is truncated, or references
  Python objects other than tensors.
  """
  path = check_file(path)
  if zipfile.is_zipfile(path):
    obj = _load_zip(path)
  else:
    with open(path, "rb") as f:
      obj = _load_legacy(f, path)
  return _to_state_dict(_materialise(obj), path)
