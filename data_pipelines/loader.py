"""grain data loader: shard -> shuffle -> repeat -> preprocess -> skip bad -> batch -> prefetch.

``make_loader`` reads a random-access source (``open_source`` gives a tfds ArrayRecord source with
image bytes left encoded; ``decode`` is the first op of the pipe) and yields batches of numpy
arrays: uint8 images and maps, int labels, object arrays of string ids, and a boolean "mask"
(all True except the padding of an evaluation loader's last batch). The stream is a pure function
of (source, seed, shard): every epoch is reshuffled deterministically, each example's random ops
draw from ``np.random.default_rng([seed, shard_index, stream_index])``, and ``Loader.get_state()``
(JSON-serialisable) resumes it exactly.

Examples whose pipeline raises ``BadExampleError`` are dropped and counted by a ``SkipCounter``
(in stream order, in the consumer thread, so the count is part of the checkpointable state).
"""

from __future__ import annotations

import logging
from typing import Any, Iterator, Sequence

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import ops
from data_pipelines import tfds_compat

Batch = dict[str, np.ndarray]

DEFAULT_LABEL_KEYS = ("age", "gender", "expression")
_PREFETCH = 64


class SkipCounter:
  """Examples dropped because preprocessing raised ``BadExampleError``: count and first few."""

  def __init__(self, max_examples: int = 10):
    self.max_examples = max_examples
    self.count = 0
    self.examples: list[dict[str, str]] = []

  def add(self, example_id: Any, reason: str) -> None:
    self.count += 1
    if len(self.examples) < self.max_examples:
      self.examples.append({"id": _to_str(example_id), "reason": reason})
      logging.warning("data loader: skipping example %r: %s", _to_str(example_id), reason)

  def to_dict(self) -> dict[str, Any]:
    return {"count": self.count, "examples": [dict(e) for e in self.examples]}

  def load(self, state: dict[str, Any]) -> None:
    self.count = int(state["count"])
    self.examples = [dict(e) for e in state["examples"]]


class _Bad:
  """What the map step emits for a bad example (dropped and counted downstream, in order)."""

  def __init__(self, error: ops.BadExampleError):
    self.id = error.id
    self.reason = error.reason


class Loader:
  """Iterator of batches with a checkpointable state."""

  def __init__(self, dataset: grain.IterDataset, skipped: SkipCounter):
    self._dataset = dataset
    self.skipped = skipped
    self._it = None

  def _iterator(self):
    if self._it is None:
      self._it = iter(self._dataset)
    return self._it

  def __iter__(self) -> Iterator[Batch]:
    return self

  def __next__(self) -> Batch:
    return next(self._iterator())

  def get_state(self) -> dict[str, Any]:
    """JSON-serialisable position in the stream (grain's state plus the skip counter)."""
    return {"grain": self._iterator().get_state(), "skipped": self.skipped.to_dict()}

  def set_state(self, state: dict[str, Any]) -> None:
    self._iterator().set_state(state["grain"])
    self.skipped.load(state["skipped"])

  def close(self) -> None:
    """Stops the prefetch threads."""
    if self._it is not None and hasattr(self._it, "close"):
      self._it.close()
    self._it = None


def open_source(name: str, config: str | None, split: str, data_dir: str | None = None):
  """A tfds random-access source of prepared ``name/config`` with image decoding skipped."""
  builder = tfds.builder(f"{name}/{config}" if config else name, data_dir=data_dir)
  decoders = tfds_compat.skip_image_decoding(builder.info.features)
  return builder.as_data_source(split=split, decoders=decoders)


def make_loader(source: Sequence[dict[str, Any]], *, pipe: str | ops.Pipeline, batch_size: int,
                seed: int, shuffle: bool = True, num_epochs: int | None = None,
                drop_remainder: bool = True, pad_remainder: bool = False,
                shard_index: int | None = None, shard_count: int | None = None,
                label_keys: Sequence[str] = DEFAULT_LABEL_KEYS, read_threads: int = 2) -> Loader:
  """Training loader (defaults: shuffled, repeated forever, incomplete last batch dropped).

  Args:
    source: random-access records (``len`` and ``[i]``), e.g. from ``open_source``.
    pipe: preprocessing pipe string (or ``ops.Pipeline``), starting with ``decode``.
    batch_size: examples per batch (per process).
    seed: seeds the shuffle and every example's random ops.
    shuffle: reshuffle each epoch.
    num_epochs: passes over the shard; None repeats forever.
    drop_remainder: drop an incomplete last batch (only matters for finite epochs).
    pad_remainder: pad an incomplete last batch to ``batch_size`` (mask False on the padding).
    shard_index, shard_count: this process' shard ``[shard_index::shard_count]`` of the source;
      default ``jax.process_index()`` / ``jax.process_count()``.
    label_keys: record keys kept besides "image", the maps and "id".
    read_threads: threads preprocessing ahead of the consumer.
  """
  pipeline = pipe if isinstance(pipe, ops.Pipeline) else ops.Pipeline(pipe)
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  shard_index = jax.process_index() if shard_index is None else shard_index
  shard_count = jax.process_count() if shard_count is None else shard_count
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
  keep = ("image",) + ops.MAP_KEYS + tuple(label_keys) + ("id",)

  ds = grain.MapDataset.source(source)[shard_index::shard_count]
  if len(ds) == 0:
    raise ValueError(f"shard {shard_index}/{shard_count} of a source of {len(source)} is empty")
  if shuffle:
    ds = ds.shuffle(seed=seed)  # before repeat: grain reshuffles each epoch (seeded by epoch)
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)

  def preprocess(index: int, record: dict[str, Any]):
    example = dict(record)
    rng = np.random.default_rng([seed, shard_index, index])
    try:
      example = pipeline(example, rng)
    except ops.BadExampleError as e:
      return _Bad(e)
    missing = [k for k in label_keys if k not in example]
    if missing:
      raise KeyError(f"example {_to_str(example.get('id'))!r} has no {missing}; "
                     f"label_keys={tuple(label_keys)}")
    return {k: example[k] for k in keep if k in example}

  skipped = SkipCounter()

  def keep_good(example) -> bool:
    if isinstance(example, _Bad):
      skipped.add(example.id, example.reason)
      return False
    return True

  def collate(examples: Sequence[dict[str, Any]]) -> Batch:
    batch = _stack(examples)
    n = len(examples)
    batch["mask"] = np.ones(n, bool)
    if pad_remainder and n < batch_size:
      batch = {k: np.concatenate([v, np.repeat(v[-1:], batch_size - n, axis=0)])
               for k, v in batch.items()}
      batch["mask"][n:] = False
    return batch

  it_ds = ds.map_with_index(preprocess).to_iter_dataset(
      grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=_PREFETCH))
  it_ds = it_ds.filter(keep_good).batch(
      batch_size, drop_remainder=drop_remainder and not pad_remainder, batch_fn=collate)
  return Loader(it_ds, skipped)


def make_eval_loader(source: Sequence[dict[str, Any]], *, pipe: str | ops.Pipeline,
                     batch_size: int, shard_index: int | None = None,
                     shard_count: int | None = None,
                     label_keys: Sequence[str] = DEFAULT_LABEL_KEYS,
                     read_threads: int = 2) -> Loader:
  """One unshuffled pass; the last batch is padded and masked so each example counts once."""
  return make_loader(source, pipe=pipe, batch_size=batch_size, seed=0, shuffle=False,
                     num_epochs=1, drop_remainder=False, pad_remainder=True,
                     shard_index=shard_index, shard_count=shard_count, label_keys=label_keys,
                     read_threads=read_threads)


def _to_str(value: Any) -> Any:
  if isinstance(value, (bytes, np.bytes_)):
    return bytes(value).decode("utf-8", "replace")
  return value


def _stack(examples: Sequence[dict[str, Any]]) -> Batch:
  """Stacks each key: arrays and numbers to numpy arrays, strings and bytes to object arrays."""
  batch = {}
  for key in examples[0]:
    values = [_to_str(ex[key]) for ex in examples]
    if isinstance(values[0], str):
      arr = np.empty(len(values), object)
      arr[:] = values
      batch[key] = arr
    else:
      batch[key] = np.stack([np.asarray(v) for v in values])
  return batch
