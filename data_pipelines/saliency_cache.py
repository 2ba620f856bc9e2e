"""Precomputed ML-Net saliency maps on disk, read by example id, and the ``cached_saliency`` op.

``python -m jaxface.saliency precompute`` writes a cache; the loader reads it:

    cache = SaliencyCache.open(cache_dir)
    check_matches(cache, train_pipe)             # refuses a cache made with another crop pipe
    source = with_cache(open_source(...), cache)  # adds "saliency_crop", drops the dataset's maps
    pipe = "decode|face_crop(0.3)|resize(224)|cached_saliency|flip_lr|rotate(3)|saliency(0.3)"

``cached_saliency`` moves "saliency_crop" into "saliency", resized to the current image, so it
must follow the crop pipe's ops directly (the map was computed on exactly that crop); the geometric
ops after it then move the image and its map together. A record whose id is not in the cache gets
no map, and the op raises ``BadExampleError``: the loader skips the example and counts it.

Where a cache lives: ``cache_key(weights' sha256, crop pipe, sizes, blur, ...)`` names it and
``default_cache_dir(data_dir, name, config, key)`` places it; the producer
(``python -m jaxface.saliency precompute``) then records the directory it used in the run's
workdir (``<workdir>/saliency_cache.json``, see ``write_record``), and the read path
(``open_recorded(workdir, split, ...)``) reads it from there: reading needs neither ML-Net nor its
weights.

Layout of a cache directory::

    meta.json              key, weights (file, sha256, model kwargs), crop_pipe, sizes, versions
    split-<name>-<hash>/   one per split, renamed into place only once complete:
      maps.npy             (N, h, w) uint8, read as a memmap
      ids.json             the N example ids, in row order
      split.json           the split string, N, skipped examples, seconds
    .tmp-*                 a split being written (ignored by readers, removed by the next writer)
    .writer.lock           held by the writer, so two processes never write one cache at once

A split appears atomically (written in a temporary directory, then renamed), so an interrupted
run never leaves a split that looks complete. This module needs no jax.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from typing import Any, Iterable, Sequence

import numpy as np

from data_pipelines import pp

META_FILE = "meta.json"
MAPS_FILE = "maps.npy"
IDS_FILE = "ids.json"
SPLIT_FILE = "split.json"
SPLIT_PREFIX = "split-"
TMP_PREFIX = ".tmp-"
LOCK_FILE = ".writer.lock"
FORMAT_VERSION = 1
# In a run's workdir: where its cache is and what it holds (written by the producer).
RECORD_FILE = "saliency_cache.json"
PRECOMPUTE_COMMAND = "python -m jaxface.saliency precompute --config CONFIG --workdir"
# The key a source record gets, and the keys of the dataset's own maps it loses.
CROP_KEY = "saliency_crop"


class CacheError(ValueError):
  """A saliency cache that is missing, incomplete, or does not fit the run."""


def _id_str(value: Any) -> str:
  if isinstance(value, (bytes, np.bytes_)):
    return bytes(value).decode("utf-8")
  return str(value)


def split_dirname(split: str) -> str:
  """Directory of a split: a readable part plus a hash (tfds split strings hold ``[:%+``)."""
  safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", split)[:40]
  return f"{SPLIT_PREFIX}{safe}-{hashlib.sha1(split.encode()).hexdigest()[:8]}"


def canonical_pipe(pipe: str | pp.Pipeline) -> str:
  """The pipe with every argument spelled out (``"resize(224)"`` -> ``"resize(size=224)"``)."""
  return str(pipe if isinstance(pipe, pp.Pipeline) else pp.Pipeline(pipe))


def crop_part(pipe: str | pp.Pipeline) -> str:
  """The canonical ops before ``cached_saliency`` (the whole pipe when it has none)."""
  p = pipe if isinstance(pipe, pp.Pipeline) else pp.Pipeline(pipe)
  names = [op.name for op in p.ops]
  head = p.ops[:names.index("cached_saliency")] if "cached_saliency" in names else p.ops
  return str(pp.Pipeline(head))


def cache_key(mlnet_sha256: str, crop_pipe: str | pp.Pipeline, mlnet_input: Sequence[int],
              cache_size: Sequence[int], blur_sigma: float, fuse_geometry: bool = False,
              dataset_version: str | None = None,
              dataset: tuple[str, str | None] | None = None) -> str:
  """16 hex digits identifying what a cache's maps depend on: the ML-Net weights (by sha256), the
  canonical crop pipe, ML-Net's input size, the cache size, the blur, the crop's pixels (fused
  geometry resamples the crop once, op by op resamples it per op), the dataset builder's
  version (a new version may hold other pixels under the same ids) and the dataset (name,
  builder config): two datasets may share example ids ("train/0"), so a cache directory given
  explicitly (``saliency.cache_dir``) and shared by two configs refuses the second one instead of
  serving it the first one's maps."""
  extra = {} if dataset_version is None else {"dataset_version": str(dataset_version)}
  if dataset is not None:
    extra["dataset"] = [str(dataset[0]), None if dataset[1] is None else str(dataset[1])]
  payload = json.dumps({**extra, "mlnet_sha256": mlnet_sha256,
                        "crop_pipe": canonical_pipe(crop_pipe),
                        "mlnet_input": list(mlnet_input), "cache_size": list(cache_size),
                        "blur_sigma": float(blur_sigma), "format": FORMAT_VERSION,
                        "fuse_geometry": bool(fuse_geometry)},
                       sort_keys=True)
  return hashlib.sha256(payload.encode()).hexdigest()[:16]


def default_cache_dir(data_dir: str, name: str, config_name: str | None, key: str) -> str:
  """``<data_dir>/<name>/<config>/saliency_cache/<key>`` (absolute)."""
  return os.path.abspath(os.path.join(os.path.expanduser(data_dir), name, config_name or "",
                                      "saliency_cache", key))


def split_dir(cache_dir: str, split: str) -> str:
  """The directory of one split of the cache in ``cache_dir`` (``SaliencyCache.open`` takes it)."""
  return os.path.join(cache_dir, split_dirname(split))


def _read_json(path: str, what: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise CacheError(f"{what}: {path} not found") from None
  except json.JSONDecodeError as e:
    raise CacheError(f"{what}: {path} is not valid JSON ({e})") from None


def _write_json_atomic(path: str, obj: Any, sort_keys: bool = True) -> None:
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=TMP_PREFIX, suffix=".json")
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(obj, f, indent=1, sort_keys=sort_keys)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


# ----------------------------------------------------------------------------- reading


class SaliencyCache:
  """Random access to cached maps by example id: ``cache.get(id)`` -> uint8 (h, w) or None."""

  def __init__(self, cache_dir: str, meta: dict[str, Any], splits: dict[str, dict[str, Any]],
               maps: Sequence[np.ndarray], index: dict[str, tuple[int, int]]):
    self.cache_dir = cache_dir
    self.meta = meta
    self.splits = splits  # split string -> its split.json
    self._maps = list(maps)
    self._index = index  # id -> (split number, row)

  @classmethod
  def open(cls, cache_dir: str | os.PathLike) -> "SaliencyCache":
    """Opens the complete splits of a cache (memmapped); raises CacheError if there is none.

    ``cache_dir`` may also be one split's directory: then only that split is opened.
    """
    cache_dir = os.path.abspath(os.fspath(cache_dir))
    only = None
    if os.path.basename(cache_dir).startswith(SPLIT_PREFIX):
      if not os.path.isdir(cache_dir):
        raise CacheError(f"saliency cache split not found: {cache_dir} (run python -m "
                         "jaxface.saliency precompute for this split)")
      cache_dir, only = os.path.dirname(cache_dir), os.path.basename(cache_dir)
    if not os.path.isdir(cache_dir):
      raise CacheError(f"saliency cache directory not found: {cache_dir} (run python -m "
                       "jaxface.saliency precompute)")
    meta = _read_json(os.path.join(cache_dir, META_FILE), "saliency cache metadata")
    if meta.get("format_version") != FORMAT_VERSION:
      raise CacheError(f"{cache_dir}: cache format_version {meta.get('format_version')!r}, this "
                       f"reader needs {FORMAT_VERSION}")
    splits, maps, index = {}, [], {}
    for name in sorted(os.listdir(cache_dir)):
      path = os.path.join(cache_dir, name)
      if not (name.startswith(SPLIT_PREFIX) and os.path.isdir(path)) or only not in (None, name):
        continue
      info = _read_json(os.path.join(path, SPLIT_FILE), "saliency cache split")
      ids = _read_json(os.path.join(path, IDS_FILE), "saliency cache ids")
      try:
        arr = np.load(os.path.join(path, MAPS_FILE), mmap_mode="r")
      except (OSError, ValueError) as e:
        raise CacheError(f"{path}/{MAPS_FILE} cannot be read: {e}") from None
      if arr.dtype != np.uint8 or arr.ndim != 3 or len(arr) != len(ids):
        raise CacheError(f"{path}: {MAPS_FILE} is {arr.dtype} {arr.shape}, expected uint8 "
                         f"({len(ids)}, h, w) for {len(ids)} ids")
      if list(arr.shape[1:]) != list(meta["cache_size"]):
        raise CacheError(f"{path}: maps are {arr.shape[1:]}, meta.json says cache_size "
                         f"{meta['cache_size']}")
      k = len(maps)
      maps.append(arr)
      splits[info["split"]] = info
      for row, eid in enumerate(ids):
        index.setdefault(eid, (k, row))  # the same id in two split strings holds the same map
    if not splits:
      raise CacheError(f"{cache_dir} holds no complete split (an interrupted precompute leaves "
                       "none); run python -m jaxface.saliency precompute again")
    return cls(cache_dir, meta, splits, maps, index)

  @property
  def crop_pipe(self) -> str:
    return self.meta["crop_pipe"]

  @property
  def size(self) -> tuple[int, int]:
    return tuple(self.meta["cache_size"])

  def __len__(self) -> int:
    return len(self._index)

  def __contains__(self, example_id: Any) -> bool:
    return _id_str(example_id) in self._index

  def ids(self) -> list[str]:
    return list(self._index)

  def get(self, example_id: Any) -> np.ndarray | None:
    """A copy of the map of ``example_id`` (uint8 (h, w)), or None if it is not cached."""
    where = self._index.get(_id_str(example_id))
    if where is None:
      return None
    return np.array(self._maps[where[0]][where[1]])

  def __getitem__(self, example_id: Any) -> np.ndarray:
    m = self.get(example_id)
    if m is None:
      raise KeyError(f"example {_id_str(example_id)!r} is not in the saliency cache "
                     f"{self.cache_dir} (splits {sorted(self.splits)})")
    return m


def check_matches(cache: SaliencyCache, pipe: str | pp.Pipeline, *,
                  mlnet_sha256: str | None = None, cache_size: Sequence[int] | None = None,
                  splits: Iterable[str] | None = None) -> None:
  """Raises CacheError unless ``cache`` was made for this crop pipe (and weights, size, splits).

  ``pipe`` is the crop pipe or a whole pipe containing ``cached_saliency``, whose ops before it
  must be the crop pipe the maps were computed on; an ``pp.Pipeline`` must also resample as the
  cache's crops were (fused or op by op; a cache that does not say was made op by op).
  """
  want = crop_part(pipe)
  if want != cache.crop_pipe:
    raise CacheError(f"saliency cache {cache.cache_dir} was made with crop_pipe "
                     f"{cache.crop_pipe!r}, but this run crops with {want!r}; precompute a cache "
                     "for this crop pipe")
  made_fused = bool(cache.meta.get("fuse_geometry", False))
  if isinstance(pipe, pp.Pipeline) and pipe.fuse != made_fused:
    raise CacheError(f"saliency cache {cache.cache_dir} was made with fuse_geometry="
                     f"{made_fused}, this run crops with fuse_geometry={pipe.fuse}")
  if mlnet_sha256 is not None and mlnet_sha256 != cache.meta["mlnet"]["sha256"]:
    raise CacheError(f"saliency cache {cache.cache_dir} was made with ML-Net weights sha256 "
                     f"{cache.meta['mlnet']['sha256']}, this run uses {mlnet_sha256}")
  if cache_size is not None and tuple(int(s) for s in cache_size) != cache.size:
    raise CacheError(f"saliency cache {cache.cache_dir} holds maps of {cache.size}, this run "
                     f"wants cache_size {tuple(cache_size)}")
  missing = [s for s in (splits or ()) if s not in cache.splits]
  if missing:
    raise CacheError(f"saliency cache {cache.cache_dir} has no split {missing[0]!r} (it has "
                     f"{sorted(cache.splits)})")


# ----------------------------------------------------------------------------- the workdir's record


DEFAULT_CACHE_SIZE = (64, 64)  # maps are smooth: 64x64 keeps them at ~4 KB per example


def run_settings(saliency: Any, fuse_geometry: bool) -> dict[str, Any]:
  """The values of a config's ``saliency`` fields (and ``data.fuse_geometry``) that decide which
  cache a run reads, canonical (JSON types, the crop pipe with every argument spelled out)."""
  def get(name, default=None):
    v = saliency.get(name, default) if hasattr(saliency, "get") else getattr(saliency, name)
    return default if v is None else v
  return {"crop_pipe": canonical_pipe(get("crop_pipe")), "fuse_geometry": bool(fuse_geometry),
          "mlnet": str(get("mlnet", "")),
          "mlnet_input": [int(v) for v in get("mlnet_input")],
          "cache_size": [int(v) for v in get("cache_size", DEFAULT_CACHE_SIZE)],
          "blur_sigma": float(get("blur_sigma", 0.0)),
          "cache_dir": str(get("cache_dir", "") or "")}


def write_record(workdir: str, record: dict[str, Any]) -> str:
  """Writes ``<workdir>/saliency_cache.json`` atomically (a reader never sees half a file).

  ``record`` holds at least ``cache_dir`` (absolute) and ``settings`` (the config values the
  cache was resolved from, see ``open_recorded``); the producer adds what it did per split.
  """
  if not os.path.isabs(str(record.get("cache_dir", ""))):
    raise ValueError(f"record for {workdir}: cache_dir must be an absolute path, got "
                     f"{record.get('cache_dir')!r}")
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, RECORD_FILE)
  _write_json_atomic(path, record, sort_keys=False)
  return path


def read_record(workdir: str | None) -> dict[str, Any]:
  """The record ``write_record`` left in ``workdir``; CacheError naming the command if none."""
  if not workdir:
    raise CacheError("config.saliency.mode='cache' reads the cache recorded in the run's "
                     "workdir, and no workdir was given")
  path = os.path.join(os.path.abspath(workdir), RECORD_FILE)
  if not os.path.isfile(path):
    raise CacheError(f"workdir {workdir} has no saliency cache record ({RECORD_FILE}): run "
                     f"{PRECOMPUTE_COMMAND} {workdir} (training with saliency.mode='cache' "
                     "runs it too)")
  record = _read_json(path, "saliency cache record")
  if not isinstance(record, dict) or not isinstance(record.get("cache_dir"), str):
    raise CacheError(f"{path} names no cache_dir; run {PRECOMPUTE_COMMAND} {workdir} again")
  return record


def open_recorded(workdir: str | None, split: str,
                  settings: dict[str, Any] | None = None) -> SaliencyCache:
  """Opens ``split`` of the cache recorded in ``workdir``.

  ``settings`` (``run_settings`` of this run's config) must equal the recorded ones (the
  producer's), so a config changed since the precompute does not silently read maps made for
  another one.
  """
  record = read_record(workdir)
  if settings is not None:
    recorded = record.get("settings") or {}
    for k, v in settings.items():
      if k not in recorded or json.loads(json.dumps(v)) != recorded[k]:
        raise CacheError(f"the saliency cache recorded in {workdir} was made with "
                         f"{k}={recorded.get(k)!r}, this config has {v!r}; run "
                         f"{PRECOMPUTE_COMMAND} {workdir} again")
  return SaliencyCache.open(split_dir(record["cache_dir"], split))


class CachedSource:
  """A random-access source whose records carry their cached map under "saliency_crop".

  The dataset's own "saliency" / "fixation" maps are dropped (they are not ML-Net's). A record
  whose id is not cached gets no "saliency_crop"; ``cached_saliency`` then rejects it.
  """

  def __init__(self, source: Sequence[dict[str, Any]], cache: SaliencyCache):
    self.source = source
    self.cache = cache

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    record = {k: v for k, v in dict(self.source[index]).items() if k not in pp.MAP_KEYS}
    if "id" not in record:
      raise KeyError(f"record {index} has no 'id'; the saliency cache is keyed by example id")
    m = self.cache.get(record["id"])
    if m is not None:
      record[CROP_KEY] = m
    return record

  def __repr__(self) -> str:
    return f"CachedSource({self.source!r}, cache={self.cache.cache_dir!r})"


def with_cache(source: Sequence[dict[str, Any]], cache: SaliencyCache) -> CachedSource:
  """Wraps ``source`` so each record carries its cached map (see ``CachedSource``)."""
  return CachedSource(source, cache)


@pp.register("cached_saliency")
class CachedSaliency(pp.MapSourceOp):
  """Moves the cached map ("saliency_crop") into "saliency", resized to the image (bilinear).

  Put it right after the crop pipe the cache was made with, before flips and rotations. A record
  without a cached map raises ``BadExampleError`` (skipped and counted by the loader).
  """

  def attach(self, example):
    m = example.pop(CROP_KEY, None)
    if m is None:
      raise pp.BadExampleError(example.get("id"), f"{self.name}: no cached saliency map for "
                                "this id (not in the saliency cache)")
    m = np.asarray(m)
    if m.dtype != np.uint8 or m.ndim != 2:
      raise pp.BadExampleError(example.get("id"), f"{self.name}: cached map must be uint8 "
                                f"(h, w), got {m.dtype} {m.shape}")
    for key in pp.MAP_KEYS:
      example.pop(key, None)
    return m


# ----------------------------------------------------------------------------- writing


def write_meta(cache_dir: str, meta: dict[str, Any]) -> None:
  """Creates ``cache_dir`` with ``meta`` (atomically), or checks that its meta has the same key."""
  os.makedirs(cache_dir, exist_ok=True)
  path = os.path.join(cache_dir, META_FILE)
  if os.path.exists(path):
    old = _read_json(path, "saliency cache metadata")
    if old.get("key") != meta.get("key"):
      raise CacheError(f"{path} has key {old.get('key')!r}, not {meta.get('key')!r}: "
                       "another cache lives in this directory")
    return
  _write_json_atomic(path, {**meta, "format_version": FORMAT_VERSION})


@contextlib.contextmanager
def writer_lock(cache_dir: str):
  """An exclusive lock on ``cache_dir`` for a writer (a second process waits for the first).

  Hold it while removing stale temporary directories and writing splits: a concurrent writer
  would otherwise delete the other's work in progress. (``flock``: local and most network file
  systems.)
  """
  os.makedirs(cache_dir, exist_ok=True)
  with open(os.path.join(cache_dir, LOCK_FILE), "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def remove_stale_tmp(cache_dir: str) -> list[str]:
  """Deletes what interrupted writers left behind (call it under ``writer_lock``); returns the
  names removed."""
  removed = []
  for name in os.listdir(cache_dir):
    if name.startswith(TMP_PREFIX):
      path = os.path.join(cache_dir, name)
      shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
      removed.append(name)
  return removed


def has_split(cache_dir: str, split: str) -> bool:
  return os.path.isdir(os.path.join(cache_dir, split_dirname(split)))


class SplitWriter:
  """Writes one split into a temporary directory; ``commit`` renames it into place.

  Use as a context manager: leaving the block with an exception (or without ``commit``) deletes
  the temporary directory, so no partial split remains.
  """

  def __init__(self, cache_dir: str, split: str, capacity: int, size: Sequence[int]):
    if capacity < 1:
      raise ValueError(f"split {split!r}: capacity must be >= 1, got {capacity}")
    self.cache_dir = cache_dir
    self.split = split
    self.size = tuple(int(s) for s in size)
    self.tmp = tempfile.mkdtemp(dir=cache_dir, prefix=f"{TMP_PREFIX}{split_dirname(split)}-")
    self._maps = np.lib.format.open_memmap(os.path.join(self.tmp, MAPS_FILE), mode="w+",
                                           dtype=np.uint8, shape=(capacity, *self.size))
    self.ids: list[str] = []
    self.final = os.path.join(cache_dir, split_dirname(split))

  def add(self, ids: Sequence[Any], maps_uint8: np.ndarray) -> None:
    maps_uint8 = np.asarray(maps_uint8)
    if maps_uint8.dtype != np.uint8 or maps_uint8.shape[1:] != self.size:
      raise ValueError(f"split {self.split!r}: maps must be uint8 (n, {self.size[0]}, "
                       f"{self.size[1]}), got {maps_uint8.dtype} {maps_uint8.shape}")
    if len(ids) != len(maps_uint8):
      raise ValueError(f"split {self.split!r}: {len(ids)} ids for {len(maps_uint8)} maps")
    n = len(self.ids)
    if n + len(ids) > len(self._maps):
      raise ValueError(f"split {self.split!r}: more than the {len(self._maps)} maps announced")
    self._maps[n:n + len(ids)] = maps_uint8
    self.ids.extend(_id_str(i) for i in ids)

  def commit(self, **info: Any) -> str:
    """Finishes the files and renames the split into place; returns its directory."""
    n = len(self.ids)
    if n == 0:
      raise CacheError(f"split {self.split!r}: no map to write (every example was skipped?)")
    if len(set(self.ids)) != n:
      raise CacheError(f"split {self.split!r}: duplicate example ids; the cache is keyed by id")
    self._maps.flush()
    path = os.path.join(self.tmp, MAPS_FILE)
    if n < len(self._maps):  # skipped examples: shrink to the rows written
      rows = np.array(self._maps[:n])
      del self._maps
      np.save(path, rows)
    else:
      del self._maps
    with open(os.path.join(self.tmp, IDS_FILE), "w") as f:
      json.dump(self.ids, f)
    with open(os.path.join(self.tmp, SPLIT_FILE), "w") as f:
      json.dump({"split": self.split, "num_maps": n, **info}, f, indent=1, sort_keys=True)
    try:
      os.rename(self.tmp, self.final)
    except OSError:
      if not os.path.isdir(self.final):
        raise
      shutil.rmtree(self.tmp)  # another writer finished the same split first: keep theirs
    return self.final

  def abort(self) -> None:
    if hasattr(self, "_maps"):
      del self._maps
    if os.path.isdir(self.tmp):
      shutil.rmtree(self.tmp)

  def __enter__(self) -> "SplitWriter":
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    if os.path.isdir(self.tmp):
      self.abort()
