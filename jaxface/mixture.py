"""Dataset mixtures: one run trains on several prepared datasets with their labels mapped onto one
label set, and its evaluation reports the whole mixture and each dataset (VEGAC's gender model on
Adience + LFW, Gurnani et al. 2018, Table 1).

A config names a mixture with ``data.name = "mixture"`` and ``data.mixture``::

    c.data.name = "mixture"
    c.data.labels = ("gender",)
    c.data.mixture.classes.gender = ("male", "female")  # the run's classes, in this order
    c.data.mixture.datasets.adience = dict(
        name="adience", config="faces_gender_mtcnn", manual_dir="/data/adience",
        splits=dict(train="fold0+fold1+fold2", validation="fold3", test="fold4"),
        labels=dict(gender=dict(m="male", f="female")))
    c.data.mixture.datasets.lfw = dict(
        name="lfw_gender", config="lfw", manual_dir="/data/lfw",
        splits=dict(train="train", validation="validation", test="test"),
        labels=dict(gender=dict(m="male", f="female")), rate=1.0)

The config's split names (``data.train_split``, ``eval_split``, ``test_split``, ``eval.split``,
evaluate's ``--split``) are the keys of every entry's ``splits``, which give that dataset's tfds
split string ("" leaves the dataset out of that split). ``labels`` maps, for each key of
``data.labels``, every class name of the dataset onto a class of ``data.mixture.classes``: a
class of a dataset left unmapped, a name the dataset lacks, a target that is no class of the run,
a class no dataset gives, or a label key one dataset lacks is an error at start naming the entry
and field. ``manual_dir`` (optional) is that dataset's manual directory; ``data.data_dir`` and
``data.build`` are shared.

Order and sampling. A split of the mixture is the concatenation of its datasets' splits in the
sorted order of the entry names, so it is one random-access source: the loader shuffles, shards
and resumes it exactly as a single dataset (its checkpointed state is a stream position). In the
training split an entry's ``rate`` (default 1) sets how many of its examples an epoch holds:
``rate * n`` (``floor(rate)`` full copies, plus a subset of the fractional rest drawn without
replacement from ``np.random.default_rng([config.seed, crc32(entry name)])``). The subset is drawn
once for the run, not per epoch, so a resumed run reads the same table. Evaluation splits use
every example once.

Records. Labels are remapped to the run's class indices (a negative label, "unknown", stays as
it is) and ids become ``"<entry>:<dataset id>"`` (entry names are identifiers, so the first ``:``
splits them): evaluation groups its predictions by that prefix into per-dataset results.
``results.json`` holds the whole mixture at the top as for a single dataset (``results["gender"]``)
and each dataset under ``results["per_dataset"][<entry>][<task>]``, with
``results["_run"]["per_dataset"][<entry>]`` = its split string, the examples evaluated (``n``)
and the examples its split holds (``source_examples``).

Saliency cache (``saliency.mode = "cache"``): each dataset gets its own cache, recorded in
``<workdir>/datasets/<entry>/`` (``precompute_saliency``); with ``saliency.cache_dir`` set, entry
``e`` uses ``<cache_dir>/<e>``.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import zlib
from typing import Any, Sequence

import ml_collections
import numpy as np

# The config side (names, accessors, the checks without datasets) is jaxface.mixture_config.
from jaxface.mixture_config import DATASETS_DIR, ENTRY_FIELDS, NAME, PER_DATASET  # noqa: F401
from jaxface.mixture_config import ConfigError, is_mixture, validate  # noqa: F401
from jaxface.mixture_config import _classes, _datasets, _split_names  # noqa: F401


# ----------------------------------------------------------------------------- the datasets


@dataclasses.dataclass
class Entry:
  """One dataset of a mixture, prepared: its builder and its label tables."""
  key: str  # the entry's name in config.data.mixture.datasets
  name: str
  config: str | None
  manual_dir: str | None
  splits: dict[str, str]  # the config's split name -> this dataset's split string ("": none)
  rate: float
  builder: Any
  tables: dict[str, np.ndarray]  # label key -> run class index of each dataset class index

  @property
  def title(self) -> str:
    return f"{self.name}/{self.config}" if self.config else self.name

  def split(self, split: str) -> str:
    if split not in self.splits:
      raise ConfigError(f"config.data.mixture.datasets.{self.key}.splits: no split {split!r} "
                        f"(it has {', '.join(self.splits)})")
    return self.splits[split]


class Mixture:
  """What ``jaxface.data.prepare`` returns for a mixture: the prepared entries and the classes."""

  def __init__(self, entries: Sequence[Entry], classes: dict[str, tuple[str, ...]], seed: int,
               train_split: str):
    self.entries = list(entries)
    self.classes = dict(classes)
    self.seed = int(seed)
    self.train_split = train_split

  def __repr__(self) -> str:
    return f"Mixture({', '.join(f'{e.key}={e.title}' for e in self.entries)})"

  def indices(self, entry: Entry, split: str, size: int) -> np.ndarray:
    """The rows of ``entry``'s split a mixture split reads, in order (see the module doc)."""
    if split != self.train_split or entry.rate == 1.0:
      return np.arange(size, dtype=np.int64)
    copies = int(np.floor(entry.rate))
    rest = int(round((entry.rate - copies) * size))
    rng = np.random.default_rng([self.seed, zlib.crc32(entry.key.encode())])
    extra = np.sort(rng.choice(size, size=rest, replace=False)) if rest else np.zeros(0, np.int64)
    out = np.concatenate([np.arange(size, dtype=np.int64)] * copies + [extra.astype(np.int64)])
    if not len(out):
      raise ConfigError(f"config.data.mixture.datasets.{entry.key}.rate: {entry.rate:g} of "
                        f"{size} examples keeps none")
    return out


def prepare(config, data_dir: str) -> Mixture:
  """Prepares every dataset of the mixture (building as ``config.data.build`` allows) and checks
  each label mapping against the dataset's class names."""
  from data_pipelines.datasets import sources  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  classes = _classes(config)
  entries = []
  for key, spec in _datasets(config).items():
    where = f"config.data.mixture.datasets.{key}"
    name, cfg = str(spec.name), (spec.get("config") or None)
    try:
      builder = sources.prepare(name, cfg, data_dir, spec.get("manual_dir") or None,
                                build=config.data.build)
    except ConfigError as e:
      msg = str(e)
      for field in ("name", "manual_dir"):
        if msg.startswith(f"config.data.{field}:"):
          raise ConfigError(where + msg[len("config.data"):]) from None
      raise ConfigError(f"{where} ({name}/{cfg}): {msg}") from None
    features = builder.info.features
    tables = {}
    for label in classes:
      feature = features[label] if label in features else None
      if not isinstance(feature, tfds.features.ClassLabel):
        raise ConfigError(f"{where}.labels.{label}: {name}/{cfg} has no class label {label!r} "
                          f"(features: {', '.join(sorted(features))})")
      mapping = dict(spec.labels[label])
      names = list(feature.names)
      unmapped = [n for n in names if n not in mapping]
      if unmapped:
        raise ConfigError(f"{where}.labels.{label}: {name}/{cfg} class {unmapped[0]!r} is not "
                          f"mapped (its classes: {', '.join(names)})")
      foreign = [n for n in mapping if n not in names]
      if foreign:
        raise ConfigError(f"{where}.labels.{label}.{foreign[0]}: not a class of {name}/{cfg} "
                          f"(its classes: {', '.join(names)})")
      tables[label] = np.array([classes[label].index(mapping[n]) for n in names], np.int64)
    entries.append(Entry(key, name, cfg, spec.get("manual_dir") or None,
                         {k: str(v) for k, v in spec.splits.items()}, float(spec.get("rate", 1.0)),
                         builder, tables))
  return Mixture(entries, classes, config.seed, str(config.data.train_split))


def tasks(config, mixture: Mixture) -> list:
  """One classification task per label key, with the mixture's class names."""
  from jaxface.tasks import classification  # pylint: disable=g-import-not-at-top
  ordinal = tuple(config.task.ordinal)
  return [classification.Classification(key, class_names=mixture.classes[key],
                                        ordinal=key in ordinal)
          for key in config.data.labels]


# ----------------------------------------------------------------------------- the records


def _id_str(value: Any) -> str:
  if isinstance(value, (bytes, np.bytes_)):
    return bytes(value).decode("utf-8")
  return str(value)


class MixtureSource:
  """The concatenated records of several sources, labels remapped, ids prefixed with the entry.

  Random access and picklable (the loader's worker processes receive it), so the loader's
  shuffling, sharding and ``get_state`` / ``set_state`` work on it unchanged.
  """

  def __init__(self, parts: Sequence[tuple[str, Sequence[dict[str, Any]], dict[str, np.ndarray],
                                           np.ndarray]]):
    self.keys = [p[0] for p in parts]
    self.sources = [p[1] for p in parts]
    self.tables = [p[2] for p in parts]
    self.rows = [np.asarray(p[3], np.int64) for p in parts]
    self.offsets = np.cumsum([0] + [len(r) for r in self.rows])

  def __len__(self) -> int:
    return int(self.offsets[-1])

  def part_sizes(self) -> dict[str, int]:
    return {k: len(r) for k, r in zip(self.keys, self.rows)}

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"mixture index {index} outside [0, {len(self)})")
    k = int(np.searchsorted(self.offsets, index, side="right")) - 1
    record = dict(self.sources[k][int(self.rows[k][index - self.offsets[k]])])
    for label, table in self.tables[k].items():
      v = int(record[label])
      record[label] = np.int64(table[v] if v >= 0 else v)
    record["id"] = f"{self.keys[k]}:{_id_str(record.get('id', index))}"
    return record

  def __repr__(self) -> str:
    return f"MixtureSource({', '.join(f'{k}: {len(r)}' for k, r in zip(self.keys, self.rows))})"


def source(mixture: Mixture, split: str, open_part) -> MixtureSource:
  """The mixture's records of ``split``; ``open_part(entry, dataset_split)`` opens one part."""
  parts = []
  for entry in mixture.entries:
    sub = entry.split(split)
    if not sub:
      continue
    src = open_part(entry, sub)
    parts.append((entry.key, src, entry.tables, mixture.indices(entry, split, len(src))))
  if not parts:
    raise ConfigError(f"config.data.mixture.datasets: no dataset has a split for {split!r}")
  return MixtureSource(parts)


def label_counts(mixture: Mixture, split: str, key: str, num_classes: int) -> np.ndarray:
  """Class histogram of ``key`` over the mixture's ``split`` as training reads it (rates and
  remapping applied), for class weights."""
  from data_pipelines.datasets import sources  # pylint: disable=g-import-not-at-top
  counts = np.zeros(num_classes, np.int64)
  for entry in mixture.entries:
    sub = entry.split(split)
    if not sub:
      continue
    src = sources.open_source(entry.builder, sub)
    raw = np.array([int(src[i][key]) for i in range(len(src))], np.int64)
    rows = raw[mixture.indices(entry, split, len(src))]
    mapped = np.where(rows >= 0, entry.tables[key][np.maximum(rows, 0)], -1)
    counts += np.bincount(mapped[(mapped >= 0) & (mapped < num_classes)],
                          minlength=num_classes)[:num_classes]
  return counts


def dataset_of(example_id: Any) -> str:
  """The entry name of a mixture record's id (``"<entry>:<dataset id>"``)."""
  return _id_str(example_id).partition(":")[0]


def split_of_ids(mixture: Mixture, ids: np.ndarray) -> dict[str, np.ndarray]:
  """``{entry: boolean mask over ids}`` for the entries of the mixture, in order."""
  owners = np.array([dataset_of(i) for i in ids], object)
  return {e.key: owners == e.key for e in mixture.entries}


# ----------------------------------------------------------------------------- saliency cache


def entry_config(config, entry_key: str):
  """``config`` as a single-dataset config of one entry (for the saliency precompute): its
  name, config, manual directory and split strings, the other fields unchanged."""
  spec = _datasets(config)[entry_key]
  sub = copy.deepcopy(config)
  with sub.unlocked():
    sub.data.name, sub.data.config = str(spec.name), str(spec.get("config") or "")
    sub.data.manual_dir = str(spec.get("manual_dir") or "")
    for field in ("train_split", "eval_split", "test_split"):
      sub.data[field] = str(spec.splits.get(config.data[field], "") or "")
    sub.eval.split = str(spec.splits.get(config.eval.split, "") or "") if config.eval.split else ""
    sub.data.mixture.datasets = ml_collections.ConfigDict({}, type_safe=False)
    sub.data.mixture.classes = ml_collections.ConfigDict({}, type_safe=False)
    if config.saliency.get("cache_dir"):
      sub.saliency.cache_dir = os.path.join(str(config.saliency.cache_dir), entry_key)
  return sub


def entry_workdir(workdir: str, entry_key: str) -> str:
  return os.path.join(workdir, DATASETS_DIR, entry_key)


def precompute_saliency(config, workdir: str) -> dict[str, str]:
  """Each dataset's ML-Net cache of its splits, recorded in ``<workdir>/datasets/<entry>/``;
  returns ``{entry: cache directory}``."""
  from jaxface.saliency import precompute  # pylint: disable=g-import-not-at-top
  return {key: precompute.precompute(entry_config(config, key), entry_workdir(workdir, key))
          for key in _datasets(config)}
