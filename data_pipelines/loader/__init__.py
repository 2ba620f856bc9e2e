"""grain data loader: shard -> shuffle -> repeat -> preprocess in chunks -> skip bad -> batch.

``make_loader`` reads a random-access source (``datasets.sources.open_source`` gives a tfds
ArrayRecord source with
image bytes left encoded; ``decode`` is the first op of the pipe) and yields batches of numpy
arrays: uint8 images and maps, int labels, object arrays of string ids, and a boolean "mask"
(all True except the padding of an evaluation loader's last batch). The stream is a pure function
of (source, seed, shard): grain's ``MapDataset`` gives stream position p (this shard, reshuffled
deterministically each epoch, repeated), each example's random ops draw from
``np.random.default_rng([seed, shard_index, p])``, and ``Loader.get_state()`` (JSON-serialisable:
the next stream position and the skip counter) resumes it exactly.

Preprocessing runs ahead of the consumer on chunks of ``chunk_size`` consecutive stream positions:
in ``read_threads`` threads of this process, or with ``worker_count > 0`` in that many worker
processes (``read_threads`` threads each). A worker writes a chunk's stacked arrays into a
shared-memory slot that the consumer owns and reuses, and sends back only a small message: moving
each example on its own (pickled through a pipe, or in a fresh shared-memory segment per array as
grain's ``mp_prefetch`` does) cost about as much CPU as preprocessing it. The consumer takes the
chunks in stream order, so the batches and the state are the same for every worker count, thread
count and chunk size. Everything sent to the workers is a picklable top-level class.

With ``device_geometry=True`` the workers only decode and plan (``pp.device.HostPlan``): a batch
carries each example's source regions in a bucketed canvas with OpenCV's fixed-point warp, and
``Loader.finish`` (jitted, ``pp.device.DeviceGeometry.finish``) resamples and reweights them on the
device, giving the host fused pipe's arrays bit for bit; the layout is in ``pp.device``'s
docstring.

Examples whose pipeline raises ``BadExampleError`` become ``Bad`` markers; the consumer drops and
counts them in a ``SkipCounter`` in stream order, so the count is part of the checkpointable state
whatever the worker count.

Modules: this one (the loader, its state and the batches), ``chunks`` (the chunk of stream
positions, and preprocessing it in this process: on demand or in threads) and ``workers`` (the
worker processes and their shared-memory slots).
"""

from __future__ import annotations

import logging
from typing import Any, Iterator, Sequence

import grain
import jax
import numpy as np

from data_pipelines import pp
from data_pipelines.pp import device as pp_device
from data_pipelines.loader.chunks import (Bad, Chunk, ChunkQueue, Inline, Threads, to_str)
from data_pipelines.loader.workers import Workers

Batch = dict[str, np.ndarray]

DEFAULT_LABEL_KEYS = ("age", "gender", "expression")
DEFAULT_CHUNK_SIZE = 16


class SkipCounter:
  """Examples dropped because preprocessing raised ``BadExampleError``: count and first few."""

  def __init__(self, max_examples: int = 10):
    self.max_examples = max_examples
    self.count = 0
    self.examples: list[dict[str, str]] = []

  def add(self, example_id: Any, reason: str) -> None:
    self.count += 1
    if len(self.examples) < self.max_examples:
      self.examples.append({"id": to_str(example_id), "reason": reason})
      logging.warning("data loader: skipping example %r: %s", to_str(example_id), reason)

  def to_dict(self) -> dict[str, Any]:
    return {"count": self.count, "examples": [dict(e) for e in self.examples]}

  def load(self, state: dict[str, Any]) -> None:
    self.count = int(state["count"])
    self.examples = [dict(e) for e in state["examples"]]


class _Preprocess:
  """The map step: one example through the pipe with its own seeded rng (picklable for workers)."""

  def __init__(self, pipeline: pp.Pipeline, seed: int, shard_index: int,
               label_keys: Sequence[str], keep_maps: bool = True,
               image_size: tuple[int, int] | None = None,
               host_plan: pp_device.HostPlan | None = None):
    self.pipeline = pipeline
    self.host_plan = host_plan  # device geometry: the host's half of the pipe instead of it
    self.image_size = None if image_size is None else tuple(int(s) for s in image_size)
    self.seed = seed
    self.shard_index = shard_index
    self.label_keys = tuple(label_keys)
    self.keep = ("image",) + (pp.MAP_KEYS if keep_maps else ()) + self.label_keys + ("id",)
    if host_plan is not None:
      self.keep = host_plan.keys(keep_maps) + self.label_keys + ("id",)

  def __call__(self, index: int, record: dict[str, Any]) -> dict[str, Any] | Bad:
    example = dict(record)
    rng = np.random.default_rng([self.seed, self.shard_index, index])
    try:
      example = (self.host_plan or self.pipeline)(example, rng)
    except pp.BadExampleError as e:
      return Bad(e)
    if self.image_size is not None:
      # A pipe without a fixed-size op passes an odd-sized photo through; it would otherwise stop
      # the batch ("all input arrays must have the same shape") naming no file.
      shape = np.shape(example.get("image"))
      if self.host_plan is not None:  # "image" is the source region: the size the device gives
        shape = pp_device.output_hw(example) + (3,)
      if tuple(shape[-3:-1]) != self.image_size:
        decoded = example.get("decoded_shape")
        source = f"a {decoded[1]}x{decoded[0]} image " if decoded is not None else ""
        return Bad(pp.BadExampleError(
            example.get("id"), f"{source}gives an image of shape {tuple(shape)} after the pipe; "
            f"the model takes {self.image_size[0]}x{self.image_size[1]}"))
    missing = [k for k in self.label_keys if k not in example]
    if missing:
      raise KeyError(f"example {to_str(example.get('id'))!r} has no {missing}; "
                     f"label_keys={self.label_keys}")
    return {k: example[k] for k in self.keep if k in example}


def stream_index(size: int, *, seed: int, shuffle: bool, num_epochs: int | None,
                 shard_index: int, shard_count: int) -> grain.MapDataset:
  """Stream position -> record index: the shard ``[shard_index::shard_count]`` of ``size``
  records, shuffled (grain reshuffles each epoch, seeded by the epoch) and repeated."""
  index = grain.MapDataset.range(size)[shard_index::shard_count]
  if shuffle and len(index):
    index = index.shuffle(seed=seed)  # before repeat: a new permutation each epoch
  if num_epochs != 1:
    index = index.repeat(num_epochs)
  return index


class Stream:
  """The stream: position p -> the map step on record ``source[index[p]]``.

  The same elements as grain's ``MapDataset.source(source)[shard] .shuffle .repeat
  .map_with_index(preprocess)`` (tested); the positions go through grain on plain integers, so
  the record itself does not pass through grain's per-element layers (its byte-size estimate
  and metrics cost about 0.05 ms an example, 5 % of preprocessing a face chip).
  """

  def __init__(self, source: Sequence[dict[str, Any]], index: grain.MapDataset,
               preprocess: _Preprocess):
    self.source = source
    self.index = index
    self.preprocess = preprocess

  def __len__(self) -> int:
    return len(self.index)

  def __getitem__(self, position: int) -> dict[str, Any] | Bad:
    record = self.source[self.index[position]]
    return None if record is None else self.preprocess(position, record)  # as map_with_index


class AllExamplesBadError(ValueError):
  """A whole pass over the shard produced no usable example (a repeated loader would spin)."""


class _KeepGood:
  """Counts and drops ``Bad`` markers in stream order, in the consumer.

  ``shard_size`` bad examples in a row mean every example of the shard is bad: that raises
  instead of letting a repeating loader spin forever on a dataset the pipe cannot read.
  """

  def __init__(self, skipped: SkipCounter, shard_size: int):
    self.skipped = skipped
    self.shard_size = shard_size
    self.bad_in_a_row = 0

  def __call__(self, bad: Bad | None) -> bool:
    """Whether the example at this position is kept (``bad`` is its marker, None when good)."""
    if bad is not None:
      self.skipped.add(bad.id, bad.reason)
      self.bad_in_a_row += 1
      if self.bad_in_a_row >= self.shard_size:
        raise AllExamplesBadError(
            f"all {self.shard_size} examples of this shard were skipped by the pipe; first "
            f"reasons: {self.skipped.examples[:3]}")
      return False
    self.bad_in_a_row = 0
    return True


# ----------------------------------------------------------------------------- loader


class Loader:
  """Iterator of batches with a checkpointable state (see ``make_loader``)."""

  def __init__(self, ds: Stream | grain.MapDataset, *, batch_size: int, drop_remainder: bool,
               pad_remainder: bool, shard_size: int, chunk_size: int, read_threads: int,
               worker_count: int, device_geometry: pp_device.DeviceGeometry | None = None):
    self._ds = ds
    # None: batches are final. Else batches hold source regions that ``finish`` resamples.
    self.device_geometry = device_geometry
    self._total = len(ds)  # sys.maxsize when repeated forever
    self._batch_size = batch_size
    self._drop_remainder = drop_remainder and not pad_remainder
    self._pad_remainder = pad_remainder
    self._chunk_size = chunk_size
    self.skipped = SkipCounter()
    self._keep = _KeepGood(self.skipped, shard_size)
    if worker_count > 0:
      self._executor = Workers(ds, worker_count, max(read_threads, 1))
    elif read_threads > 0:
      self._executor = Threads(ds, read_threads, chunk_size)
    else:
      self._executor = Inline(ds)
    self._position = 0  # stream positions consumed (kept or skipped)
    self._chunks: ChunkQueue | None = None
    self._chunk: Chunk | None = None
    self._offset = 0  # next position within self._chunk
    self._row = 0  # its row among the chunk's good examples

  def __iter__(self) -> Iterator[Batch]:
    return self

  def __next__(self) -> Batch:
    before = self.get_state()
    try:
      return self._next_batch()
    except StopIteration:
      raise
    except BaseException:
      # The next call starts this batch again (a failing chunk raises again instead of being
      # skipped, and no example of the batch is lost or counted twice).
      self.set_state(before)
      raise

  def _next_batch(self) -> Batch:
    batch = _BatchBuilder(self._batch_size, canvases=self.device_geometry is not None)
    while batch.size < self._batch_size:
      if self._chunk is None or self._offset == self._chunk.size:
        if self._chunks is None:
          self._chunks = ChunkQueue(self._executor, self._position, self._total,
                                     self._chunk_size)
        self._chunk, self._offset, self._row = self._chunks.next(), 0, 0
        if self._chunk is None:
          break
      chunk, first, n = self._chunk, self._row, batch.size
      while self._offset < chunk.size and n < self._batch_size:
        kept = self._keep(chunk.bad.get(self._offset))
        self._offset += 1
        self._position += 1
        if kept:
          self._row += 1
          n += 1
      batch.add(chunk, first, self._row)  # the batch's rows are contiguous in each chunk
      if self._offset == chunk.size:
        chunk.release()
    if batch.size == 0 or (batch.size < self._batch_size and self._drop_remainder):
      raise StopIteration
    return batch.build(self._pad_remainder)

  def finish(self, batch: Batch) -> dict[str, Any]:
    """A device-geometry batch resampled (and reweighted) on the device: "image" uint8
    (B, oh, ow, 3) as jax arrays; see ``pp.device``. A host-geometry loader has nothing to do."""
    if self.device_geometry is None:
      raise ValueError("Loader.finish: this loader's batches are final (make_loader was called "
                       "without device_geometry=True)")
    return self.device_geometry.finish(batch)

  def get_state(self) -> dict[str, Any]:
    """JSON-serialisable position in the stream: the next stream position and the skip counter."""
    return {"position": self._position, "skipped": self.skipped.to_dict()}

  def set_state(self, state: dict[str, Any]) -> None:
    """Resumes at ``state`` (from ``get_state``, whatever worker count made it)."""
    position = _state_position(state)
    if not 0 <= position <= self._total:
      raise ValueError(f"Loader.set_state: position {position} is outside this stream "
                       f"[0, {self._total}]")
    self._drop_chunks()
    self._position = position
    self.skipped.load(state["skipped"])
    self._keep.bad_in_a_row = 0

  def close(self) -> None:
    """Stops the preprocessing threads and worker processes (a later batch starts them again)."""
    self._drop_chunks()
    self._executor.close()

  def _drop_chunks(self) -> None:
    """Forgets the chunks preprocessed ahead; the next batch starts at ``self._position``."""
    if self._chunks is not None:
      self._chunks.cancel()
    if self._chunk is not None:
      self._chunk.release()
    self._chunks, self._chunk, self._offset, self._row = None, None, 0, 0


def _state_position(state: dict[str, Any]) -> int:
  """The next stream position of a ``get_state()`` dict.

  Also reads the states of the loader before chunks (grain iterator states under "grain", from
  training checkpoints): every example it consumed was one stream position.
  """
  if "position" in state:
    return int(state["position"])
  old = state.get("grain")
  if isinstance(old, dict) and "next_index" in old:  # threads in the consumer
    return int(old["next_index"])
  if isinstance(old, dict) and "iterators_in_use_states" in old:  # grain worker processes
    return sum(int(s["next_index"]) for s in old["iterators_in_use_states"] if s)
  raise ValueError(f"Loader.set_state: state has no 'position' (keys: {sorted(state)})")


class _BatchBuilder:
  """A batch filled chunk by chunk; rows are copied in at once, so a slot is free after its walk."""

  def __init__(self, batch_size: int, canvases: bool = False):
    self._batch_size = batch_size
    self._canvases = canvases  # device geometry: regions of each size, stacked into canvases
    self.size = 0
    # Per key: the batch's array (rows stacked by a worker, same shape and dtype so far), or a
    # list of rows stacked at the end (rows from threads in this process, or mixed ones).
    self._values: dict[str, np.ndarray | list[Any]] = {}

  def add(self, chunk: Chunk, first: int, end: int) -> None:
    """Appends rows ``[first, end)`` of ``chunk``."""
    if end == first:
      return
    if not self._values:
      for key, rows in chunk.values.items():
        part = rows[first:end]
        if isinstance(part, np.ndarray):
          self._values[key] = np.empty((self._batch_size,) + part.shape[1:], part.dtype)
        else:
          self._values[key] = []
    elif chunk.values.keys() != self._values.keys():
      raise ValueError(f"examples at stream position {chunk.start}+ have keys "
                       f"{sorted(chunk.values)}, earlier ones {sorted(self._values)}: the pipe "
                       "must give every example the same")
    n, m = self.size, end - first
    for key, rows in chunk.values.items():
      part, out = rows[first:end], self._values[key]
      if (isinstance(out, np.ndarray) and isinstance(part, np.ndarray) and
          part.shape[1:] == out.shape[1:] and part.dtype == out.dtype):
        out[n:n + m] = part
        continue
      if isinstance(out, np.ndarray):  # rows that differ: stacked (and promoted) at the end
        out = self._values[key] = list(out[:n])
      # A copy: the part may view a slot that the next chunk overwrites.
      out.extend(part.copy() if isinstance(part, np.ndarray) else part)
    self.size += m

  def build(self, pad: bool) -> Batch:
    """The batch with "mask"; an incomplete one padded to the batch size if ``pad``."""
    n = self.size
    batch = {k: v[:n] if isinstance(v, np.ndarray) else _stack(v) for k, v in self._values.items()
             if not (self._canvases and pp_device.is_canvas_key(k))}
    if self._canvases:  # one bucketed canvas per array key, whatever the regions' sizes
      for k, v in self._values.items():
        if pp_device.is_canvas_key(k):
          batch[k] = pp_device.stack_canvases(v[:n])
    batch["mask"] = np.ones(n, bool)
    if pad and n < self._batch_size:  # repeats the last example, masked out
      batch = {k: np.concatenate([v, np.repeat(v[-1:], self._batch_size - n, axis=0)])
               for k, v in batch.items()}
      batch["mask"][n:] = False
    return batch


def make_loader(source: Sequence[dict[str, Any]], *, pipe: str | pp.Pipeline, batch_size: int,
                seed: int, shuffle: bool = True, num_epochs: int | None = None,
                drop_remainder: bool = True, pad_remainder: bool = False,
                shard_index: int | None = None, shard_count: int | None = None,
                label_keys: Sequence[str] = DEFAULT_LABEL_KEYS, read_threads: int = 2,
                worker_count: int = 0, chunk_size: int | None = None,
                keep_maps: bool = True, image_size: tuple[int, int] | None = None,
                device_geometry: bool = False) -> Loader:
  """Training loader (defaults: shuffled, repeated forever, incomplete last batch dropped).

  Args:
    source: random-access records (``len`` and ``[i]``), e.g. from ``open_source``.
    pipe: preprocessing pipe string (or ``pp.Pipeline``), starting with ``decode``.
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
      ``worker_count > 0``, at least one there); 0 preprocesses on demand.
    worker_count: processes preprocessing ahead of the consumer; 0 keeps it in this process.
      Starting the workers takes a few seconds (each imports this module); they start with the
      first batch.
    chunk_size: consecutive stream positions preprocessed as one piece of work (and sent from a
      worker as one message); default ``min(DEFAULT_CHUNK_SIZE, batch_size)``, as a longer chunk
      only delays the first batch. The batches and ``get_state()`` are the same for every
      ``worker_count``, ``read_threads`` and ``chunk_size``.
    keep_maps: emit the saliency / fixation maps with the images; a classifier whose pipe has
      already reweighted the image by its map does not need them (less to copy and transfer).
    image_size: (H, W) every example's image must have after the pipe (its last three axes are
      H, W, 3; a ten-view pipe adds one in front); an example whose image differs is skipped and
      counted with its id, its decoded size and the shape it got. None checks nothing.
    device_geometry: the host only decodes and plans; each batch carries source regions that
      ``Loader.finish(batch)`` (jitted) resamples and reweights on the device, bit for bit the
      host fused pipe's arrays (``pp.device``). Needs a fused pipe ``decode | geometric ops
      [| saliency(r)]``; any other raises ``ValueError`` naming the op, here.
  """
  pipeline = pipe if isinstance(pipe, pp.Pipeline) else pp.Pipeline(pipe)
  if not isinstance(device_geometry, bool):
    raise ValueError(f"device_geometry must be True or False, got {device_geometry!r}")
  split = pp_device.DeviceGeometry(pipeline, keep_maps) if device_geometry else None
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
  if chunk_size is None:
    chunk_size = min(DEFAULT_CHUNK_SIZE, batch_size)
  if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
    raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")

  index = stream_index(len(source), seed=seed, shuffle=shuffle, num_epochs=num_epochs,
                       shard_index=shard_index, shard_count=shard_count)
  if len(index) == 0:
    raise ValueError(f"shard {shard_index}/{shard_count} of a source of {len(source)} is empty")
  shard_size = len(range(shard_index, len(source), shard_count))
  # Position p of the stream is p whatever process maps it: its rng seed.
  ds = Stream(source, index, _Preprocess(pipeline, seed, shard_index, label_keys, keep_maps,
                                          image_size, split and split.host))
  return Loader(ds, batch_size=batch_size, drop_remainder=drop_remainder,
                pad_remainder=pad_remainder, shard_size=shard_size, chunk_size=chunk_size,
                read_threads=read_threads, worker_count=worker_count, device_geometry=split)


def make_eval_loader(source: Sequence[dict[str, Any]], *, pipe: str | pp.Pipeline,
                     batch_size: int, shard_index: int | None = None,
                     shard_count: int | None = None,
                     label_keys: Sequence[str] = DEFAULT_LABEL_KEYS,
                     read_threads: int = 2, worker_count: int = 0,
                     chunk_size: int | None = None, keep_maps: bool = True,
                     image_size: tuple[int, int] | None = None,
                     device_geometry: bool = False) -> Loader:
  """One unshuffled pass; the last batch is padded and masked so each example counts once."""
  return make_loader(source, pipe=pipe, batch_size=batch_size, seed=0, shuffle=False,
                     num_epochs=1, drop_remainder=False, pad_remainder=True,
                     shard_index=shard_index, shard_count=shard_count, label_keys=label_keys,
                     read_threads=read_threads, worker_count=worker_count,
                     chunk_size=chunk_size, keep_maps=keep_maps, image_size=image_size,
                     device_geometry=device_geometry)


def _stack(values: Sequence[Any]) -> np.ndarray:
  """Rows to one array: arrays and numbers stacked, strings into an object array."""
  if isinstance(values[0], str):
    arr = np.empty(len(values), object)
    arr[:] = values
    return arr
  return np.stack([np.asarray(v) for v in values])
