"""The data side of a run: the prepared dataset, its label vocabulary, and the grain loaders.

Shared by ``jaxface.train``, ``jaxface.evaluate`` and ``jaxface.saliency``: all read
``config.data`` (and ``config.saliency`` for the cached maps) the same way.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import jax
import numpy as np

import data_pipelines  # noqa: F401  (the importlib_resources shim, before tfds builders load)
from data_pipelines import build as build_lib
from data_pipelines import loader as loader_lib
from data_pipelines import pp
from data_pipelines.datasets import sources
from jaxface import config_lib


@dataclasses.dataclass(frozen=True)
class Task:
  """One label a run predicts: its record key, classes and kind."""
  name: str  # the record key, e.g. "age"
  kind: str  # "class" (softmax), "attributes" (sigmoid, multi-label) or "saliency" (a map)
  class_names: tuple[str, ...] = ()
  ordinal: bool = False

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


def data_dir(config) -> str:
  return os.path.expanduser(config.data.data_dir or build_lib.default_data_dir())


def prepare(config) -> Any:
  """The tfds builder of ``config.data`` (prepared now if needed and allowed)."""
  return sources.prepare(config.data.name, config.data.config or None, data_dir(config),
                         config.data.manual_dir or None, build=config.data.build)


def tasks(config, builder) -> list[Task]:
  """The tasks of ``config.data.labels`` with class names read from the dataset's features."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  features = builder.info.features
  if config.task.kind == "saliency":
    return [Task("saliency", "saliency")]
  out = []
  for key in config.data.labels:
    if key not in features:
      raise config_lib.ConfigError(
          f"config.data.labels: {key!r} is not a feature of {config.data.name}; features: "
          f"{', '.join(sorted(features))}")
    f = features[key]
    if isinstance(f, tfds.features.ClassLabel):
      out.append(Task(key, "class", tuple(f.names), key in tuple(config.task.ordinal)))
    elif config.task.kind == "attributes":
      n = int(np.prod(f.shape)) if f.shape else 1
      metadata = builder.info.metadata or {}
      names = tuple(metadata.get(key) or metadata.get("attributes") or
                    tuple(f"attr{i}" for i in range(n)))
      if len(names) != n:
        raise config_lib.ConfigError(f"config.data.labels: {key!r} has {n} entries but the "
                                     f"dataset names {len(names)} attributes")
      out.append(Task(key, "attributes", names))
    else:
      raise config_lib.ConfigError(
          f"config.data.labels: {key!r} is not a class label (ClassLabel) of {config.data.name}")
  return out


def source(config, builder, split: str, with_saliency: bool = True,
           workdir: str | None = None) -> Sequence[dict[str, Any]]:
  """Random-access records of ``split`` (images left encoded); with the saliency cache attached
  when ``config.saliency.mode == "cache"`` (the cache recorded in ``workdir`` by precompute)."""
  try:
    src = sources.open_source(builder, split)
  except Exception as e:  # tfds raises several types for an unknown split
    raise config_lib.ConfigError(
        f"split {split!r} of {config.data.name}/{config.data.config}: {e}; splits: "
        f"{', '.join(builder.info.splits)}") from None
  if with_saliency and config.saliency.mode == "cache":
    from data_pipelines import saliency_cache  # pylint: disable=g-import-not-at-top
    cache = saliency_cache.open_recorded(
        workdir, split, saliency_cache.run_settings(config.saliency, config.data.fuse_geometry))
    src = saliency_cache.with_cache(src, cache)
  return src


def keep_maps(config) -> bool:
  """Only a saliency model trains on the maps; a classifier's pipe has already applied them."""
  return config.task.kind == "saliency"


def label_keys(config) -> tuple[str, ...]:
  if config.task.kind == "saliency":
    return ()
  return tuple(config.data.labels)


def pipeline(config, pipe: str):
  """``pipe`` as an ``pp.Pipeline``, fused or op by op as ``config.data.fuse_geometry`` says."""
  # A config saved by a run from before the field existed was op by op.
  return pp.Pipeline(pipe, fuse=bool(config.data.get("fuse_geometry", False)))


def train_loader(config, src, seed: int, local_batch: int) -> loader_lib.Loader:
  return loader_lib.make_loader(
      src, pipe=pipeline(config, config.data.train_pipe), batch_size=local_batch, seed=seed,
      shard_index=jax.process_index(), shard_count=jax.process_count(),
      label_keys=label_keys(config), read_threads=config.data.read_threads,
      worker_count=int(config.data.worker_count), keep_maps=keep_maps(config))


def eval_loader(config, src, local_batch: int, pipe: str | None = None) -> loader_lib.Loader:
  return loader_lib.make_eval_loader(
      src, pipe=pipeline(config, pipe or config.data.eval_pipe), batch_size=local_batch,
      shard_index=jax.process_index(), shard_count=jax.process_count(),
      label_keys=label_keys(config), read_threads=config.data.read_threads,
      worker_count=int(config.data.worker_count), keep_maps=keep_maps(config))


def label_counts(builder, split: str, key: str, num_classes: int) -> np.ndarray:
  """Class histogram of ``key`` over ``split`` (for class weights)."""
  return sources.label_counts(builder, split, key, num_classes)
