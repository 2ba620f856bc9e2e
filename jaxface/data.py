"""The data side of a run: the prepared dataset, its label vocabulary, and the grain loaders.

Shared by ``jaxface.train``, ``jaxface.evaluate`` and ``jaxface.saliency``: all read
``config.data`` (and ``config.saliency`` for the cached maps) the same way.
"""

from __future__ import annotations

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
from jaxface import tasks as tasks_lib
from jaxface.tasks import Task


def data_dir(config) -> str:
  return os.path.expanduser(config.data.data_dir or build_lib.default_data_dir())


def prepare(config) -> Any:
  """The tfds builder of ``config.data`` (prepared now if needed and allowed)."""
  return sources.prepare(config.data.name, config.data.config or None, data_dir(config),
                         config.data.manual_dir or None, build=config.data.build)


def tasks(config, builder) -> list[Task]:
  """The tasks of the config's kind, with class names read from the dataset's features."""
  return tasks_lib.for_config(config).from_dataset(config, builder)


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
  return tasks_lib.for_config(config).dense


def label_keys(config) -> tuple[str, ...]:
  return tasks_lib.for_config(config).label_keys(config)


def pipeline(config, pipe: str):
  """``pipe`` as an ``pp.Pipeline``, fused or op by op as ``config.data.fuse_geometry`` says."""
  # A config saved by a run from before the field existed was op by op.
  return pp.Pipeline(pipe, fuse=bool(config.data.get("fuse_geometry", False)))


def train_loader(config, src, seed: int, local_batch: int) -> loader_lib.Loader:
  return loader_lib.make_loader(
      src, pipe=pipeline(config, config.data.train_pipe), batch_size=local_batch, seed=seed,
      shard_index=jax.process_index(), shard_count=jax.process_count(),
      label_keys=label_keys(config), read_threads=config.data.read_threads,
      worker_count=int(config.data.worker_count), keep_maps=keep_maps(config),
      image_size=tuple(config.model.input_size))


def eval_loader(config, src, local_batch: int, pipe: str | None = None) -> loader_lib.Loader:
  return loader_lib.make_eval_loader(
      src, pipe=pipeline(config, pipe or config.data.eval_pipe), batch_size=local_batch,
      shard_index=jax.process_index(), shard_count=jax.process_count(),
      label_keys=label_keys(config), read_threads=config.data.read_threads,
      worker_count=int(config.data.worker_count), keep_maps=keep_maps(config),
      image_size=tuple(config.model.input_size))


def label_counts(builder, split: str, key: str, num_classes: int) -> np.ndarray:
  """Class histogram of ``key`` over ``split`` (for class weights)."""
  return sources.label_counts(builder, split, key, num_classes)
