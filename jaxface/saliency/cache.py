"""Precomputes ML-Net saliency maps of a dataset's crops into a cache (``config.saliency.mode =
"cache"``); ``python -m jaxface.saliency precompute`` and the trainer call :func:`precompute`.

For each split the crop pipe (``config.saliency.crop_pipe``, deterministic) runs through the eval
loader, ML-Net runs in jitted batches (:mod:`jaxface.saliency.inference`) and the maps, resized to
``cache_size`` and stored as uint8, go to the cache directory in the layout of
``data_pipelines.saliency_cache`` (each split written to a temporary directory, then renamed).

The cache directory defaults to ``<data_dir>/<name>/<config>/saliency_cache/<key>``, where ``key``
hashes the weights' sha256, the canonical crop pipe, the ML-Net input size, the cache size and
the blur; a cache with the same key is reused split by split. The run writes
``<workdir>/saliency_cache.json`` (where the cache is, what it holds) and
``<workdir>/saliency_cache.png`` (a few crops, their maps, and the reweighted crops).

Config fields read: ``data.name``, ``data.config``, ``data.data_dir`` (None or "": the tfds
default), ``data.build`` (build a missing dataset), ``data.manual_dir``,
``data.train_split`` / ``eval_split`` / ``test_split``; ``saliency.mode``, ``saliency.r``,
``saliency.crop_pipe``, ``saliency.mlnet``, ``saliency.mlnet_input`` (h, w),
``saliency.cache_size`` (h, w; default (64, 64)), ``saliency.cache_dir`` ("": the default),
``saliency.batch_size`` (default 32), ``saliency.blur_sigma`` (default 0: the reference's
no blur).
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import time
from typing import Any, Sequence

import numpy as np

from data_pipelines import build
from data_pipelines import loader
from data_pipelines import pp
from data_pipelines import saliency_cache as sc
from data_pipelines.datasets import sources
from jaxface.saliency import inference

DEFAULT_CACHE_SIZE = (64, 64)  # maps are smooth: 64x64 keeps them at ~4 KB per example
DEFAULT_BATCH_SIZE = 32
SPLIT_FIELDS = ("train_split", "eval_split", "test_split")
SUMMARY_FILE = "saliency_cache.json"
FIGURE_FILE = "saliency_cache.png"
_LOG_EVERY_S = 10.0
log = logging.getLogger(__name__)


def load_config(spec: str):
  """``path/to/config.py[:arg]`` -> ``get_config(arg)`` (``get_config()`` without an arg)."""
  path, sep, arg = spec.partition(".py:")
  path = path + ".py" if sep else spec
  if not path.endswith(".py"):
    raise ValueError(f"--config must be a python file (path.py[:arg]), got {spec!r}")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file not found: {path}")
  module_spec = importlib.util.spec_from_file_location(
      "jaxface_config_" + hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:8], path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"config file {path} defines no get_config(arg)")
  return module.get_config(arg) if sep else module.get_config()


def _field(config, dotted: str, default: Any = ...) -> Any:
  """``config.<dotted>``; a missing or None field gives ``default`` (an error if none is given)."""
  node = config
  for part in dotted.split("."):
    try:
      node = node[part] if isinstance(node, dict) else getattr(node, part)
    except (AttributeError, KeyError):
      if default is not ...:
        return default
      raise ValueError(f"config has no field config.{dotted}") from None
  if node is None and default is not ...:
    return default
  return node


def _optional(config, dotted: str) -> Any:
  """``config.<dotted>`` with a missing, None or empty value as None (e.g. data_dir "")."""
  return _field(config, dotted, None) or None


def _pair(config, dotted: str, default: Any = ...) -> tuple[int, int]:
  v = _field(config, dotted, default)
  try:
    h, w = (int(s) for s in v)
  except (TypeError, ValueError):
    h = w = 0
  if h < 1 or w < 1:
    raise ValueError(f"config.{dotted} must be an (h, w) pair of positive ints, got {v!r}")
  return h, w


def config_splits(config) -> list[str]:
  """The distinct, non-empty split strings of ``config.data`` (train, eval, test order)."""
  out = []
  for name in SPLIT_FIELDS:
    v = _field(config, f"data.{name}", None)
    if v and v not in out:
      out.append(str(v))
  return out


def jaxface_version() -> str:
  try:
    return importlib.metadata.version("jaxface")
  except importlib.metadata.PackageNotFoundError:
    return "not installed"


def cache_key(mlnet_sha256: str, crop_pipe: str, mlnet_input: Sequence[int],
              cache_size: Sequence[int], blur_sigma: float, fuse_geometry: bool = False,
              dataset_version: str | None = None) -> str:
  """16 hex digits identifying what a cache's maps depend on (the crop's pixels too: fused
  geometry resamples the crop once, op by op resamples it per op; and the dataset's version, as
  a new version may hold other pixels under the same ids)."""
  extra = {} if dataset_version is None else {"dataset_version": str(dataset_version)}
  payload = json.dumps({**extra, "mlnet_sha256": mlnet_sha256, "crop_pipe": sc.canonical_pipe(crop_pipe),
                        "mlnet_input": list(mlnet_input), "cache_size": list(cache_size),
                        "blur_sigma": float(blur_sigma), "format": sc.FORMAT_VERSION,
                        "fuse_geometry": bool(fuse_geometry)},
                       sort_keys=True)
  return hashlib.sha256(payload.encode()).hexdigest()[:16]


def default_cache_dir(data_dir: str | None, name: str, config_name: str | None, key: str) -> str:
  data_dir = os.path.expanduser(data_dir or build.default_data_dir())
  return os.path.join(data_dir, name, config_name or "", "saliency_cache", key)


class Progress:
  """Logs done / total, rate and ETA at most every ``every_s`` seconds."""

  def __init__(self, what: str, total: int, every_s: float = _LOG_EVERY_S):
    self.what, self.total, self.every_s = what, total, every_s
    self.start = self.last = time.perf_counter()
    self.done = 0

  def update(self, n: int) -> None:
    self.done += n
    now = time.perf_counter()
    if now - self.last >= self.every_s or self.done >= self.total:
      self.last = now
      rate = self.done / max(now - self.start, 1e-9)
      eta = (self.total - self.done) / rate if rate > 0 else float("inf")
      log.info("%s: %d/%d maps, %.1f maps/s, ETA %.0f s", self.what, self.done, self.total,
                   rate, eta)

  @property
  def seconds(self) -> float:
    return time.perf_counter() - self.start


def _compute_split(source, split: str, cache_dir: str, crop_pipe: pp.Pipeline, predict_fn,
                   weights: inference.MLNetWeights, cache_size: tuple[int, int], batch_size: int,
                   samples: list[np.ndarray]) -> dict[str, Any]:
  progress = Progress(f"saliency {split}", len(source))
  ld = loader.make_eval_loader(source, pipe=crop_pipe, batch_size=batch_size, shard_index=0,
                               shard_count=1, label_keys=())
  try:
    with sc.SplitWriter(cache_dir, split, len(source), cache_size) as writer:
      for batch in ld:
        mask = batch["mask"]
        maps = inference.maps_to_uint8(predict_fn(weights.variables, batch["image"]))
        writer.add(list(batch["id"][mask]), maps[mask])
        if len(samples) < 2:
          samples.append(batch["image"][mask])
          samples.append(maps[mask])
        progress.update(int(mask.sum()))
      skipped = ld.skipped.to_dict()
      writer.commit(skipped=skipped, seconds=round(progress.seconds, 3),
                    source_examples=len(source))
  finally:
    ld.close()
  if skipped["count"]:
    log.warning("saliency %s: %d examples skipped by the crop pipe (first: %s)", split,
                    skipped["count"], skipped["examples"][:3])
  return {"num_maps": len(writer.ids), "skipped": skipped, "seconds": round(progress.seconds, 3),
          "rate": round(len(writer.ids) / max(progress.seconds, 1e-9), 2)}


def _settings(config) -> dict[str, Any]:
  """The config fields a cache depends on, checked."""
  fuse = _field(config, "data.fuse_geometry", False)
  if not isinstance(fuse, bool):
    raise ValueError(f"config.data.fuse_geometry must be True or False, got {fuse!r}")
  crop_pipe = pp.Pipeline(_field(config, "saliency.crop_pipe"), fuse=fuse)
  if crop_pipe.random:
    raise ValueError(f"config.saliency.crop_pipe {str(crop_pipe)!r} has random ops; the cached "
                     "crop must be deterministic (put flips and rotations after cached_saliency)")
  if "cached_saliency" in [op.name for op in crop_pipe.ops]:
    raise ValueError("config.saliency.crop_pipe must stop before cached_saliency")
  mlnet_src = _field(config, "saliency.mlnet")
  if not mlnet_src:
    raise ValueError("config.saliency.mlnet is empty: give an imported ML-Net .npz or an ML-Net "
                     "training workdir")
  return {"crop_pipe": crop_pipe, "mlnet": mlnet_src,
          "mlnet_input": _pair(config, "saliency.mlnet_input"),
          "cache_size": _pair(config, "saliency.cache_size", DEFAULT_CACHE_SIZE),
          "blur_sigma": float(_field(config, "saliency.blur_sigma", 0.0))}


def _resolve_dir(config, settings: dict[str, Any], mlnet_sha256: str) -> tuple[str, str]:
  version = build.builder_class(_field(config, "data.name")).VERSION
  key = cache_key(mlnet_sha256, str(settings["crop_pipe"]), settings["mlnet_input"],
                  settings["cache_size"], settings["blur_sigma"], settings["crop_pipe"].fuse,
                  dataset_version=str(version))
  cache_dir = _field(config, "saliency.cache_dir", "") or default_cache_dir(
      _optional(config, "data.data_dir"), _field(config, "data.name"),
      _optional(config, "data.config"), key)
  return os.path.abspath(os.path.expanduser(cache_dir)), key


_WEIGHTS_SHA256: dict[tuple[str, float], str] = {}


def _weights_sha256(src) -> str:
  """sha256 of the ML-Net weights, memoised by path and modification time: the trainer asks for
  the cache directory at every validation, and an ML-Net workdir must be restored to hash it."""
  key = None
  if isinstance(src, (str, os.PathLike)) and os.path.exists(src):
    key = (os.path.abspath(src), os.path.getmtime(src))
    if key in _WEIGHTS_SHA256:
      return _WEIGHTS_SHA256[key]
  if isinstance(src, (str, os.PathLike)) and os.path.isfile(src):
    from jaxface.weights import common  # pylint: disable=g-import-not-at-top
    sha = common.sha256_file(src)
  else:
    sha = inference.load_mlnet(src).sha256
  if key is not None:
    _WEIGHTS_SHA256[key] = sha
  return sha


def cache_dir_for(config) -> str:
  """The cache directory ``precompute(config, ...)`` writes (a .npz is hashed, not loaded)."""
  settings = _settings(config)
  return _resolve_dir(config, settings, _weights_sha256(settings["mlnet"]))[0]


def split_dir(config, split: str) -> str:
  """The directory of one split in the cache of ``config`` (``SaliencyCache.open`` takes it)."""
  return os.path.join(cache_dir_for(config), sc.split_dirname(split))


def precompute(config, workdir: str, splits: Sequence[str] | None = None) -> str:
  """Makes sure the cache of ``config`` holds ``splits`` (default: the config's splits).

  Returns the cache directory. Splits already in the cache are reused; the others are computed
  under the cache's writer lock, so concurrent callers wait rather than clash (a multi-host
  trainer still does best to call it on one process and let the others wait). Also writes
  ``<workdir>/saliency_cache.json`` and a PNG of a few crops, their maps and reweighted crops.
  """
  mode = _field(config, "saliency.mode")
  if mode != "cache":
    raise ValueError(f"config.saliency.mode is {mode!r}; precompute only applies to 'cache'")
  name = _field(config, "data.name")
  config_name = _optional(config, "data.config")
  data_dir = _optional(config, "data.data_dir")
  settings = _settings(config)
  crop_pipe, mlnet_input = settings["crop_pipe"], settings["mlnet_input"]
  cache_size, blur_sigma = settings["cache_size"], settings["blur_sigma"]
  batch_size = int(_field(config, "saliency.batch_size", DEFAULT_BATCH_SIZE))
  r = float(_field(config, "saliency.r"))
  if batch_size < 1:
    raise ValueError(f"config.saliency.batch_size must be >= 1, got {batch_size}")
  splits = list(splits) if splits else config_splits(config)
  if not splits:
    raise ValueError("no split to precompute: config.data has no train_split / eval_split / "
                     "test_split and no --splits were given")
  builder = sources.prepare(name, config_name, data_dir, _optional(config, "data.manual_dir"),
                            build=_field(config, "data.build", False))
  weights = inference.load_mlnet(settings["mlnet"])
  cache_dir, key = _resolve_dir(config, settings, weights.sha256)
  meta = {
      "key": key,
      "dataset": {"name": name, "config": config_name},
      "mlnet": {**inference.describe(weights), "input_size": list(mlnet_input)},
      "crop_pipe": str(crop_pipe),
      "fuse_geometry": crop_pipe.fuse,
      "cache_size": list(cache_size),
      "blur_sigma": blur_sigma,
      "jaxface_version": jaxface_version(),
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }
  sc.write_meta(cache_dir, meta)
  samples: list[np.ndarray] = []
  with sc.writer_lock(cache_dir):
    for stale in sc.remove_stale_tmp(cache_dir):
      log.warning("saliency cache: removed %s left by an interrupted run", stale)
    todo = [s for s in splits if not sc.has_split(cache_dir, s)]
    report: dict[str, Any] = {s: {"reused": True} for s in splits if s not in todo}
    for split in splits:
      if split not in todo:
        log.info("saliency %s: reusing %s", split, cache_dir)
    if todo:
      predict_fn = inference.make_predict_fn(weights.apply, mlnet_input, cache_size, blur_sigma)
    for split in todo:
      source = sources.open_source(builder, split)
      log.info("saliency %s: %d examples -> %s", split, len(source), cache_dir)
      report[split] = {"reused": False, **_compute_split(
          source, split, cache_dir, crop_pipe, predict_fn, weights, cache_size, batch_size,
          samples)}

  cache = sc.SaliencyCache.open(cache_dir)
  sc.check_matches(cache, crop_pipe, mlnet_sha256=weights.sha256, cache_size=cache_size,
                   splits=splits)
  os.makedirs(workdir, exist_ok=True)
  summary = {"cache_dir": cache_dir, "key": key, "reused": not todo,
             "splits": {s: {**report[s], **cache.splits[s]} for s in splits},
             "meta": cache.meta}
  if not samples:  # everything reused: show a few cached maps of the first split
    samples = _cached_samples(cache, sources.open_source(builder, splits[0]),
                              crop_pipe)
  if samples:
    summary["figure"] = write_figure(os.path.join(workdir, FIGURE_FILE), samples[0], samples[1], r)
  with open(os.path.join(workdir, SUMMARY_FILE), "w") as f:
    json.dump(summary, f, indent=1)
  return cache_dir


def _cached_samples(cache: sc.SaliencyCache, source, crop_pipe: pp.Pipeline,
                    n: int = 6) -> list[np.ndarray]:
  """[crops, maps] of the first ``n`` examples of ``source`` that the crop pipe and cache take."""
  crops, maps = [], []
  for i in range(len(source)):
    if len(crops) == n:
      break
    try:
      example = crop_pipe(dict(source[i]))
    except pp.BadExampleError:
      continue
    m = cache.get(example.get("id"))
    if m is not None:
      crops.append(example["image"])
      maps.append(m)
  return [np.stack(crops), np.stack(maps)] if crops else []


def write_figure(path: str, crops: np.ndarray, maps: np.ndarray, r: float, n: int = 6) -> str:
  """A PNG with rows of crops, their cached maps, and the crops reweighted with ``r``."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  n = min(n, len(crops))
  reweight = pp.saliency.Saliency(r)
  fig, axes = plt.subplots(3, n, figsize=(2 * n, 6), squeeze=False)
  for i in range(n):
    out = reweight({"image": crops[i], "saliency": maps[i]})["image"]
    for row, (img, title) in enumerate(((crops[i], "crop"), (maps[i], "ML-Net map"),
                                        (out, f"reweighted r={r:g}"))):
      ax = axes[row][i]
      ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
      ax.set_axis_off()
      if i == 0:
        ax.set_title(title, fontsize=9, loc="left")
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return path
