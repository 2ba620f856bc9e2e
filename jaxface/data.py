"""The data side of a run: the prepared dataset, its label vocabulary, and the grain loaders.

Shared by ``jaxface.train``, ``jaxface.evaluate`` and ``jaxface.saliency``: all read
``config.data`` (and ``config.saliency`` for the cached maps) the same way. A config whose
``data.name`` is ``"mixture"`` names several datasets (``jaxface.mixture``): ``prepare`` then
returns a ``mixture.Mixture`` in place of a tfds builder, and ``tasks``, ``source`` and
``label_counts`` take it the same way.
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
from jaxface import mixture as mixture_lib
from jaxface import tasks as tasks_lib
from jaxface.tasks import Task


def data_dir(config) -> str:
  return os.path.expanduser(config.data.data_dir or build_lib.default_data_dir())


def prepare(config) -> Any:
  """The tfds builder of ``config.data`` (prepared now if needed and allowed); for a mixture, a
  ``mixture.Mixture`` of every dataset's builder."""
  if mixture_lib.is_mixture(config):
    return mixture_lib.prepare(config, data_dir(config))
  return sources.prepare(config.data.name, config.data.config or None, data_dir(config),
                         config.data.manual_dir or None, build=config.data.build)


def tasks(config, builder) -> list[Task]:
  """The tasks of the config's kind, with class names read from the dataset's features (a
  mixture's from ``config.data.mixture.classes``)."""
  if isinstance(builder, mixture_lib.Mixture):
    return mixture_lib.tasks(config, builder)
  return tasks_lib.for_config(config).from_dataset(config, builder)


def source(config, builder, split: str, with_saliency: bool = True,
           workdir: str | None = None) -> Sequence[dict[str, Any]]:
  """Random-access records of ``split`` (images left encoded); with the saliency cache attached
  when ``config.saliency.mode == "cache"`` (the cache recorded in ``workdir`` by precompute).

  For a mixture, ``split`` is one of the config's split names and the records are every
  dataset's split of that name, concatenated (``mixture.MixtureSource``), each with its own
  cache (recorded in ``<workdir>/datasets/<entry>``).
  """
  if isinstance(builder, mixture_lib.Mixture):
    def open_part(entry, sub):
      return _source(mixture_lib.entry_config(config, entry.key), entry.builder, sub,
                     with_saliency, workdir and mixture_lib.entry_workdir(workdir, entry.key),
                     f"config.data.mixture.datasets.{entry.key}.splits.{split} {sub!r}")
    return mixture_lib.source(builder, split, open_part)
  return _source(config, builder, split, with_saliency, workdir,
                 f"split {split!r} of {config.data.name}/{config.data.config}")


def _source(config, builder, split: str, with_saliency: bool, workdir: str | None,
            where: str) -> Sequence[dict[str, Any]]:
  try:
    src = sources.open_source(builder, split)
  except Exception as e:  # tfds raises several types for an unknown split
    raise config_lib.ConfigError(
        f"{where}: {e}; splits: {', '.join(builder.info.splits)}") from None
  if with_saliency and config.saliency.mode == "cache":
    from data_pipelines import saliency_cache  # pylint: disable=g-import-not-at-top
    cache = saliency_cache.open_recorded(
        workdir, split, saliency_cache.run_settings(config.saliency, config.data.fuse_geometry))
    src = saliency_cache.with_cache(src, cache)
  return src


def precompute_saliency(config, workdir: str) -> None:
  """The ML-Net cache of the run's splits (``saliency.mode == "cache"``): of the dataset, or of
  each dataset of a mixture."""
  if mixture_lib.is_mixture(config):
    mixture_lib.precompute_saliency(config, workdir)
    return
  from jaxface.saliency import precompute  # pylint: disable=g-import-not-at-top
  precompute.precompute(config, workdir)


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
  """Class histogram of ``key`` over ``split`` (for class weights; a mixture's as training reads
  it, rates and label mapping applied)."""
  if isinstance(builder, mixture_lib.Mixture):
    return mixture_lib.label_counts(builder, split, key, num_classes)
  return sources.label_counts(builder, split, key, num_classes)
