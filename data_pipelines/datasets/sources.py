"""The one way a run reaches a prepared dataset: ``prepare`` it, then ``open_source`` a split.

``prepare`` returns the tfds builder of ``name/config`` in ``data_dir``, building it first when it
is missing and ``build`` allows: process 0 builds while every other process waits at a barrier,
so a multi-host run never builds twice nor reads a half-written dataset. ``open_source`` gives a
split's random-access records with the images left encoded (the pipe's ``decode`` reads them).
The trainer, the evaluator, label counting, the loader's callers and the saliency producer all go
through these two.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from data_pipelines import build as build_lib
from data_pipelines.datasets import tfds_compat
from jaxface import errors


def prepare(name: str, config: str | None = None, data_dir: str | None = None,
            manual_dir: str | None = None, build: bool = False) -> Any:
  """The tfds builder of ``name/config`` (prepared now if missing and ``build`` is True).

  Errors name the ``config.data`` field to change (``errors.ConfigError``).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  cfg = config or None
  if name == "mixture":  # jaxface.mixture.NAME: several datasets, each prepared on its own
    raise errors.ConfigError(
        "config.data.name: 'mixture' names several datasets (config.data.mixture.datasets), "
        "prepared one by one through jaxface.data.prepare; this command reads one dataset "
        "(jaxface.train precomputes each dataset's saliency cache itself)")
  try:
    cls = build_lib.builder_class(name)
  except build_lib.BuildError as e:
    raise errors.ConfigError(f"config.data.name: {e}") from None
  ddir = os.path.expanduser(data_dir or build_lib.default_data_dir())
  builder = cls(config=cfg, data_dir=ddir, file_format=tfds_compat.FILE_FORMAT)
  was_missing = not builder.is_prepared()
  if was_missing:
    if not build:
      raise errors.ConfigError(
          f"config.data.data_dir: {name}/{cfg} is not prepared in {ddir}; run `python -m "
          f"data_pipelines.build {name} --config {cfg} --data_dir {ddir} --manual_dir ...` or set "
          "config.data.build=True")
    manual = manual_dir or None
    if getattr(cls, "MANUAL_DOWNLOAD_INSTRUCTIONS", None) and not manual:
      default_manual = os.path.join(ddir, "downloads", "manual")
      if not os.path.isdir(default_manual):
        raise errors.ConfigError(
            f"config.data.manual_dir: {name}/{cfg} is not prepared in {ddir} and no manual "
            f"directory was given (nor {default_manual} exists). Expected:\n"
            f"{cls.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    if jax.process_index() == 0:
      summary = build_lib.build(name, cfg, ddir, manual)
      print(build_lib.format_summary(summary), flush=True)
  if jax.process_count() > 1:
    # Every process calls prepare once; the others wait here for process 0's build.
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(f"jaxface.data.prepare:{name}/{cfg}")
  if was_missing:  # re-read the prepared dataset's info (splits, sizes)
    builder = tfds.builder(f"{name}/{cfg}" if cfg else name, data_dir=ddir)
  return builder


def open_source(builder: Any, split: str) -> Sequence[dict[str, Any]]:
  """Random-access records of ``split`` of a prepared ``builder``, images left encoded."""
  decoders = tfds_compat.skip_image_decoding(builder.info.features)
  return builder.as_data_source(split=split, decoders=decoders)


def label_counts(builder: Any, split: str, key: str, num_classes: int) -> np.ndarray:
  """Class histogram of ``key`` over ``split`` (for class weights)."""
  src = open_source(builder, split)
  counts = np.zeros(num_classes, np.int64)
  for i in range(len(src)):
    v = int(src[i][key])
    if 0 <= v < num_classes:
      counts[v] += 1
  return counts
