"""grain data loader: shard -> shuffle -> repeat -> preprocess -> prefetch -> skip bad -> batch.

``make_loader`` reads a random-access source (``open_source`` gives a tfds ArrayRecord source with
image bytes left encoded; ``decode`` is the first op of the pipe) and yields batches of numpy
arrays: uint8 images and maps, int labels, object arrays of string ids, and a boolean "mask"
(all True except the padding of an evaluation loader's last batch). The stream is a pure function
of (source, seed, shard): every epoch is reshuffled deterministically, each example's random ops
draw from ``np.random.default_rng([seed, shard_index, stream_index])``, and ``Loader.get_state()``
(JSON-serialisable) resumes it exactly.

Preprocessing runs ahead of the consumer in ``read_threads`` threads, or with ``worker_count > 0``
in that many worker processes (grain's ``mp_prefetch``: worker i preprocesses stream positions
i, i + k, ... and the consumer interleaves them back in order), so the stream is the same for any
worker count. Everything sent to the workers is a picklable top-level class.

Examples whose pipeline raises ``BadExampleError`` become ``_Bad`` markers; they are dropped and
counted by a ``SkipCounter`` after the prefetch (in stream order, in the consumer, so the count is
part of the checkpointable state whatever the worker count).
"""

from __future__ import annotations

import logging
from typing import Any, Iterator, Sequence

from absl import flags
import cv2
import grain
import jax
import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import ops
from data_pipelines import tfds_compat

Batch = dict[str, np.ndarray]

DEFAULT_LABEL_KEYS = ("age", "gender", "expression")
_PREFETCH = 64
_WORKER_BUFFER = 16  # elements each worker process keeps ready


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


class _Preprocess:
  """The map step: one example through the pipe with its own seeded rng (picklable for workers)."""

  def __init__(self, pipeline: ops.Pipeline, seed: int, shard_index: int,
               label_keys: Sequence[str]):
    self.pipeline = pipeline
    self.seed = seed
    self.shard_index = shard_index
    self.label_keys = tuple(label_keys)
    self.keep = ("image",) + ops.MAP_KEYS + self.label_keys + ("id",)

  def __call__(self, index: int, record: dict[str, Any]) -> dict[str, Any] | _Bad:
    example = dict(record)
    rng = np.random.default_rng([self.seed, self.shard_index, index])
    try:
      example = self.pipeline(example, rng)
    except ops.BadExampleError as e:
      return _Bad(e)
    missing = [k for k in self.label_keys if k not in example]
    if missing:
      raise KeyError(f"example {_to_str(example.get('id'))!r} has no {missing}; "
                     f"label_keys={self.label_keys}")
    return {k: example[k] for k in self.keep if k in example}


class AllExamplesBadError(ValueError):
  """A whole pass over the shard produced no usable example (a repeated loader would spin)."""


class _KeepGood:
  """The filter after the prefetch: counts and drops ``_Bad`` markers, in stream order.

  ``shard_size`` bad examples in a row mean every example of the shard is bad: that raises
  instead of letting a repeating loader spin forever on a dataset the pipe cannot read.
  """

  def __init__(self, skipped: SkipCounter, shard_size: int):
    self.skipped = skipped
    self.shard_size = shard_size
    self._bad_in_a_row = 0

  def __call__(self, example: dict[str, Any] | _Bad) -> bool:
    if isinstance(example, _Bad):
      self.skipped.add(example.id, example.reason)
      self._bad_in_a_row += 1
      if self._bad_in_a_row >= self.shard_size:
        raise AllExamplesBadError(
            f"all {self.shard_size} examples of this shard were skipped by the pipe; first "
            f"reasons: {self.skipped.examples[:3]}")
      return False
    self._bad_in_a_row = 0
    return True


class _Collate:
  """Stacks a batch, adds "mask", and pads an incomplete batch when asked."""

  def __init__(self, batch_size: int, pad_remainder: bool):
    self.batch_size = batch_size
    self.pad_remainder = pad_remainder

  def __call__(self, examples: Sequence[dict[str, Any]]) -> Batch:
    batch = _stack(examples)
    n = len(examples)
    batch["mask"] = np.ones(n, bool)
    if self.pad_remainder and n < self.batch_size:
      batch = {k: np.concatenate([v, np.repeat(v[-1:], self.batch_size - n, axis=0)])
               for k, v in batch.items()}
      batch["mask"][n:] = False
    return batch


def _init_worker(worker_index: int, worker_count: int) -> None:
  """Runs first in each worker process."""
  del worker_index, worker_count
  # A freshly spawned process has not parsed absl flags, which grain's modules read.
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  # The workers are the parallelism: OpenCV's own thread pool would only oversubscribe the cores.
  cv2.setNumThreads(1)


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
    """Stops the prefetch threads and worker processes."""
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
                label_keys: Sequence[str] = DEFAULT_LABEL_KEYS, read_threads: int = 2,
                worker_count: int = 0) -> Loader:
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
    read_threads: threads preprocessing ahead of the consumer (in each worker process when
      ``worker_count > 0``); 0 preprocesses on demand.
    worker_count: processes preprocessing ahead of the consumer; 0 keeps it in this process.
      The batches and ``get_state()`` are the same for every worker count; starting the workers
      takes a few seconds (each imports this module).
  """
  pipeline = pipe if isinstance(pipe, ops.Pipeline) else ops.Pipeline(pipe)
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  shard_index = jax.process_index() if shard_index is None else shard_index
  shard_count = jax.process_count() if shard_count is None else shard_count
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
  if isinstance(worker_count, bool) or not isinstance(worker_count, int) or worker_count < 0:
    raise ValueError(f"worker_count must be an integer >= 0, got {worker_count!r}")
  if read_threads < 0:
    raise ValueError(f"read_threads must be >= 0, got {read_threads}")

  ds = grain.MapDataset.source(source)[shard_index::shard_count]
  if len(ds) == 0:
    raise ValueError(f"shard {shard_index}/{shard_count} of a source of {len(source)} is empty")
  shard_size = len(ds)
  if shuffle:
    ds = ds.shuffle(seed=seed)  # before repeat: grain reshuffles each epoch (seeded by epoch)
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)

  skipped = SkipCounter()
  it_ds = ds.map_with_index(_Preprocess(pipeline, seed, shard_index, label_keys))
  it_ds = it_ds.to_iter_dataset(
      grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=_PREFETCH))
  if worker_count > 0:
    # grain reads absl flags in the consumer too when it starts the workers.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    # Each worker gets the stream positions i, i + k, ... (a slice taken after the map, so the
    # rng index stays the global position) and the consumer interleaves them back in order.
    it_ds = it_ds.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=worker_count,
                                     per_worker_buffer_size=_WORKER_BUFFER),
        worker_init_fn=_init_worker)
  it_ds = it_ds.filter(_KeepGood(skipped, shard_size)).batch(
      batch_size, drop_remainder=drop_remainder and not pad_remainder,
      batch_fn=_Collate(batch_size, pad_remainder))
  return Loader(it_ds, skipped)


def make_eval_loader(source: Sequence[dict[str, Any]], *, pipe: str | ops.Pipeline,
                     batch_size: int, shard_index: int | None = None,
                     shard_count: int | None = None,
                     label_keys: Sequence[str] = DEFAULT_LABEL_KEYS,
                     read_threads: int = 2, worker_count: int = 0) -> Loader:
  """One unshuffled pass; the last batch is padded and masked so each example counts once."""
  return make_loader(source, pipe=pipe, batch_size=batch_size, seed=0, shuffle=False,
                     num_epochs=1, drop_remainder=False, pad_remainder=True,
                     shard_index=shard_index, shard_count=shard_count, label_keys=label_keys,
                     read_threads=read_threads, worker_count=worker_count)


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
