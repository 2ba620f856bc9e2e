"""Precomputes ML-Net saliency maps of a dataset's crops into a cache (``config.saliency.mode =
"cache"``); ``python -m jaxface.saliency precompute`` and the trainer call :func:`precompute`.

For each split the crop pipe (``config.saliency.crop_pipe``, deterministic) runs through the eval
loader, ML-Net runs in jitted batches (:mod:`jaxface.saliency.inference`) and the maps, resized to
``cache_size`` and stored as uint8, go to the cache directory in the layout of
``data_pipelines.saliency_cache`` (each split written to a temporary directory, then renamed).

The cache directory defaults to ``<data_dir>/<name>/<config>/saliency_cache/<key>``
(``saliency_cache.default_cache_dir`` of ``saliency_cache.cache_key``: the weights' sha256, the
canonical crop pipe, the ML-Net input size, the cache size, the blur, fused geometry and the
dataset builder's version); a cache with the same key is reused split by split. The run records
where the cache is and what it holds in ``<workdir>/saliency_cache.json`` (written atomically;
the trainer and evaluator read the cache from there, without ML-Net) and draws
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
import importlib.metadata
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
from jaxface import logging_lib
from jaxface import plots
from jaxface.saliency import inference

DEFAULT_CACHE_SIZE = sc.DEFAULT_CACHE_SIZE
DEFAULT_BATCH_SIZE = 32
SPLIT_FIELDS = ("train_split", "eval_split", "test_split")
SUMMARY_FILE = sc.RECORD_FILE
FIGURE_FILE = "saliency_cache.png"
_LOG_EVERY_S = 10.0
log = logging.getLogger(__name__)


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


class _Every:
  """Calls ``report(done)`` at most every ``every_s`` seconds, and once when ``done`` reaches the
  total (the shared ``logging_lib.Progress`` formats the line)."""

  def __init__(self, progress: logging_lib.Progress, every_s: float = _LOG_EVERY_S):
    self.progress, self.every_s = progress, every_s
    self.start = self.last = time.perf_counter()
    self.done = 0

  def update(self, n: int) -> None:
    self.done += n
    now = time.perf_counter()
    if now - self.last >= self.every_s or self.done >= self.progress.total:
      self.last = now
      self.progress.report(self.done, {})

  @property
  def seconds(self) -> float:
    return time.perf_counter() - self.start


def _compute_split(source, split: str, cache_dir: str, crop_pipe: pp.Pipeline, predict_fn,
                   weights: inference.MLNetWeights, cache_size: tuple[int, int], batch_size: int,
                   samples: list[np.ndarray]) -> dict[str, Any]:
  progress = _Every(logging_lib.Progress(len(source), 1, label=f"saliency {split}", unit="maps"))
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
  key = sc.cache_key(mlnet_sha256, str(settings["crop_pipe"]), settings["mlnet_input"],
                     settings["cache_size"], settings["blur_sigma"], settings["crop_pipe"].fuse,
                     dataset_version=str(version),
                     dataset=(_field(config, "data.name"), _optional(config, "data.config")))
  cache_dir = _field(config, "saliency.cache_dir", "")
  if cache_dir:
    return os.path.abspath(os.path.expanduser(cache_dir)), key
  return sc.default_cache_dir(_optional(config, "data.data_dir") or build.default_data_dir(),
                              _field(config, "data.name"), _optional(config, "data.config"),
                              key), key


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
             "settings": sc.run_settings(config.saliency, crop_pipe.fuse),
             "splits": {s: {**report[s], **cache.splits[s]} for s in splits},
             "meta": cache.meta}
  if not samples:  # everything reused: show a few cached maps of the first split
    samples = _cached_samples(cache, sources.open_source(builder, splits[0]),
                              crop_pipe)
  if samples:
    summary["figure"] = write_figure(os.path.join(workdir, FIGURE_FILE), samples[0], samples[1], r)
  sc.write_record(workdir, summary)
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
  n = min(n, len(crops))
  reweight = pp.saliency.Saliency(r)
  out = [reweight({"image": crops[i], "saliency": maps[i]})["image"] for i in range(n)]
  images = [*crops[:n], *maps[:n], *out]
  titles = ["crop"] * n + ["ML-Net map"] * n + [f"reweighted r={r:g}"] * n
  return plots.save_image_grid(images, titles, path, ncols=n, dpi=80)
