"""grain data loader: shard -> shuffle -> repeat -> preprocess in chunks -> skip bad -> batch.

``make_loader`` reads a random-access source (``open_source`` gives a tfds ArrayRecord source with
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

Examples whose pipeline raises ``BadExampleError`` become ``_Bad`` markers; the consumer drops and
counts them in a ``SkipCounter`` in stream order, so the count is part of the checkpointable state
whatever the worker count.
"""

from __future__ import annotations

import collections
from concurrent import futures
import functools
import logging
import math
import multiprocessing
from multiprocessing import shared_memory
import pickle
import queue
import shutil
import signal
import threading
import time
import traceback
from typing import Any, Iterator, Sequence
import weakref

from absl import flags
import cv2
import grain
import jax
import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import pp
from data_pipelines.datasets import tfds_compat

Batch = dict[str, np.ndarray]

DEFAULT_LABEL_KEYS = ("age", "gender", "expression")
DEFAULT_CHUNK_SIZE = 16
_PREFETCH = 64  # examples that threads in this process preprocess ahead of the consumer
_ALIGN = 64  # byte alignment of each array in a shared-memory slot
_SHM_DIR = "/dev/shm"  # where POSIX shared memory lives on Linux (its free space is checked)
_POLL_S = 1.0  # how often a consumer waiting for a chunk checks that the workers are alive
_JOIN_S = 10.0  # how long close() waits for a worker process to exit before killing it


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

  def __init__(self, error: pp.BadExampleError):
    self.id = error.id
    self.reason = error.reason


class _Preprocess:
  """The map step: one example through the pipe with its own seeded rng (picklable for workers)."""

  def __init__(self, pipeline: pp.Pipeline, seed: int, shard_index: int,
               label_keys: Sequence[str], keep_maps: bool = True):
    self.pipeline = pipeline
    self.seed = seed
    self.shard_index = shard_index
    self.label_keys = tuple(label_keys)
    self.keep = ("image",) + (pp.MAP_KEYS if keep_maps else ()) + self.label_keys + ("id",)

  def __call__(self, index: int, record: dict[str, Any]) -> dict[str, Any] | _Bad:
    example = dict(record)
    rng = np.random.default_rng([self.seed, self.shard_index, index])
    try:
      example = self.pipeline(example, rng)
    except pp.BadExampleError as e:
      return _Bad(e)
    missing = [k for k in self.label_keys if k not in example]
    if missing:
      raise KeyError(f"example {_to_str(example.get('id'))!r} has no {missing}; "
                     f"label_keys={self.label_keys}")
    return {k: example[k] for k in self.keep if k in example}


class AllExamplesBadError(ValueError):
  """A whole pass over the shard produced no usable example (a repeated loader would spin)."""


class _KeepGood:
  """Counts and drops ``_Bad`` markers in stream order, in the consumer.

  ``shard_size`` bad examples in a row mean every example of the shard is bad: that raises
  instead of letting a repeating loader spin forever on a dataset the pipe cannot read.
  """

  def __init__(self, skipped: SkipCounter, shard_size: int):
    self.skipped = skipped
    self.shard_size = shard_size
    self.bad_in_a_row = 0

  def __call__(self, bad: _Bad | None) -> bool:
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


# ----------------------------------------------------------------------------- chunks


class _Chunk:
  """Stream positions ``[start, start + size)``, preprocessed.

  ``values[key]`` holds one row per good example in stream order: a list of the pipe's values, or
  (from a worker process) those rows stacked into one array, a view of a shared-memory slot that
  ``release()`` hands back once the consumer has copied the rows it needs. ``bad`` maps the offset
  of each bad example in the chunk to its marker.
  """

  def __init__(self, start: int, size: int, bad: dict[int, _Bad],
               values: dict[str, np.ndarray | list[Any]], release: Any = None):
    self.start = start
    self.size = size
    self.bad = bad
    self.values = values
    self._release = release

  def release(self) -> None:
    """Frees the chunk's slot; its values are gone (a slot's next chunk would overwrite them)."""
    if self._release is not None:
      self._release()
      self._release = None
    self.values = {}


def _preprocess_chunk(ds: grain.MapDataset, start: int,
                      stop: int) -> tuple[dict[int, _Bad], dict[str, list[Any]]]:
  """Runs stream positions ``[start, stop)`` through the map step: bad markers and value rows."""
  bad, rows = {}, {}
  for offset, position in enumerate(range(start, stop)):
    example = ds[position]
    if isinstance(example, _Bad):
      bad[offset] = example
      continue
    if not rows:
      rows = {k: [] for k in example}
    elif example.keys() != rows.keys():
      raise ValueError(f"example {_to_str(example.get('id'))!r} has keys {sorted(example)}, an "
                       f"earlier one {sorted(rows)}: the pipe must give every example the same")
    for k, v in example.items():
      rows[k].append(_to_str(v))
  return bad, rows


def _build_chunk(ds: grain.MapDataset, start: int, stop: int) -> _Chunk:
  """A chunk preprocessed in this process (rows stay separate: the batch stacks them once)."""
  bad, rows = _preprocess_chunk(ds, start, stop)
  return _Chunk(start, stop - start, bad, rows)


def _row_layout(rows: list[Any]) -> tuple[tuple[int, ...], np.dtype] | None:
  """(shape, dtype) of every row when they stack into one plain (non-object) array, else None."""
  if isinstance(rows[0], str):
    return None
  first = np.asarray(rows[0])
  if first.dtype.hasobject or first.dtype.kind in "USV":
    return None
  for row in rows[1:]:
    a = np.asarray(row)
    if a.shape != first.shape or a.dtype != first.dtype:
      return None
  return first.shape, first.dtype


def _aligned(nbytes: int) -> int:
  return -(-nbytes // _ALIGN) * _ALIGN


class _Packed:
  """A worker's answer for one chunk (pickled, so keep big arrays out of it).

  Rows that stack into a plain array are written into the chunk's shared-memory slot (``placed``:
  key, dtype, shape, byte offset), or pickled in ``arrays`` when the chunk had no slot or it was
  too small; ``needed`` is the slot size this chunk asks for. Other rows (strings) are in ``lists``.
  """

  def __init__(self, size: int, bad: dict[int, _Bad], keys: list[str],
               lists: dict[str, list[Any]], arrays: dict[str, np.ndarray],
               placed: list[tuple[str, np.dtype, tuple[int, ...], int]], needed: int):
    self.size = size
    self.bad = bad
    self.keys = keys
    self.lists = lists
    self.arrays = arrays
    self.placed = placed
    self.needed = needed

  def unpack(self, start: int, buf: memoryview | None, release: Any) -> _Chunk:
    """The chunk, its placed arrays viewing ``buf`` until ``release`` frees the slot."""
    values = {**self.lists, **self.arrays}
    for key, dtype, shape, offset in self.placed:
      values[key] = np.ndarray(shape, dtype, buffer=buf, offset=offset)
    return _Chunk(start, self.size, self.bad, {k: values[k] for k in self.keys}, release)


def _pack_chunk(ds: grain.MapDataset, start: int, stop: int, buf: memoryview | None) -> _Packed:
  """Preprocesses a chunk in a worker, stacking array rows straight into ``buf`` when they fit."""
  bad, rows = _preprocess_chunk(ds, start, stop)
  layouts = {k: _row_layout(r) for k, r in rows.items()}
  offsets, needed = {}, 0
  for key, layout in layouts.items():
    if layout is not None:
      shape, dtype = layout
      offsets[key] = needed
      needed += _aligned(len(rows[key]) * math.prod(shape) * dtype.itemsize)
  in_slot = buf is not None and needed <= len(buf)
  lists, arrays, placed = {}, {}, []
  for key, r in rows.items():
    layout = layouts[key]
    if layout is None:
      lists[key] = r
    elif in_slot:
      shape = (len(r),) + layout[0]
      np.stack(r, out=np.ndarray(shape, layout[1], buffer=buf, offset=offsets[key]))
      placed.append((key, layout[1], shape, offsets[key]))
    else:
      arrays[key] = np.stack(r)
  return _Packed(stop - start, bad, list(rows), lists, arrays, placed, needed)


# ----------------------------------------------------------------------------- executors
# Each preprocesses chunks: ``submit(start, stop)`` returns a handle, ``result(handle)`` the
# ``_Chunk`` (or raises the chunk's error), ``cancel(handle)`` drops it, ``close()`` stops.


class _Inline:
  """``read_threads=0`` without workers: each chunk is preprocessed when the consumer needs it."""

  ahead = 1

  def __init__(self, ds: grain.MapDataset):
    self._ds = ds

  def submit(self, start: int, stop: int) -> tuple[int, int]:
    return start, stop

  def result(self, handle: tuple[int, int]) -> _Chunk:
    return _build_chunk(self._ds, *handle)

  def cancel(self, handle: tuple[int, int]) -> None:
    del handle

  def close(self) -> None:
    pass


class _Threads:
  """Chunks preprocessed ahead by a pool of threads in this process."""

  def __init__(self, ds: grain.MapDataset, threads: int, chunk_size: int):
    self._ds = ds
    self._threads = threads
    # As many examples ahead as the per-example prefetch had, and a chunk queued for each thread.
    self.ahead = max(threads + 1, math.ceil(_PREFETCH / chunk_size))
    self._pool = None

  def submit(self, start: int, stop: int) -> futures.Future:
    if self._pool is None:
      self._pool = futures.ThreadPoolExecutor(self._threads, thread_name_prefix="data-loader")
    return self._pool.submit(_build_chunk, self._ds, start, stop)

  def result(self, handle: futures.Future) -> _Chunk:
    return handle.result()

  def cancel(self, handle: futures.Future) -> None:
    handle.cancel()

  def close(self) -> None:
    if self._pool is not None:
      self._pool.shutdown(wait=False, cancel_futures=True)
      self._pool = None


def _init_worker(worker_index: int, worker_count: int) -> None:
  """Runs first in each worker process."""
  del worker_index, worker_count
  # A freshly spawned process has not parsed absl flags, which grain's modules read.
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  # The workers are the parallelism: OpenCV's own thread pool would only oversubscribe the cores.
  cv2.setNumThreads(1)
  # Ctrl-C is the consumer's to handle: it closes the workers.
  signal.signal(signal.SIGINT, signal.SIG_IGN)


def _error_message(error: BaseException, worker_index: int) -> bytes:
  """``error`` pickled for the consumer, with the worker's traceback attached as a note."""
  note = (f"in data loader worker process {worker_index}:\n" +
          "".join(traceback.format_exception(error)))
  try:
    error.add_note(note)
    message = pickle.dumps(error)
    pickle.loads(message)  # e.g. an __init__ with other arguments than its args fails here
    return message
  except Exception:  # noqa: BLE001 - an exception that does not pickle: send its text.
    return pickle.dumps(RuntimeError(f"{type(error).__name__}: {error}\n{note}"))


class _SlotViews:
  """The consumer's shared-memory slots, attached by name in a worker (again when one grows)."""

  def __init__(self):
    self._lock = threading.Lock()
    self._open: dict[int, shared_memory.SharedMemory] = {}

  def get(self, slot: tuple[int, str] | None) -> memoryview | None:
    if slot is None:
      return None
    index, name = slot
    with self._lock:
      shm = self._open.get(index)
      if shm is None or shm.name != name:
        if shm is not None:  # the consumer replaced this slot by a bigger segment
          shm.close()
        shm = self._open[index] = shared_memory.SharedMemory(name=name)
      return shm.buf

  def close(self) -> None:
    for shm in self._open.values():
      shm.close()


def _worker_main(worker_index: int, worker_count: int, threads: int, pickled_ds: bytes,
                 tasks: multiprocessing.Queue, results: multiprocessing.Queue,
                 stop: Any) -> None:
  """A worker process: ``threads`` threads preprocess the chunks named in ``tasks``."""
  try:
    _init_worker(worker_index, worker_count)
    ds = pickle.loads(pickled_ds)
  except BaseException as e:  # noqa: BLE001 - the consumer raises it.
    results.put((None, None, _error_message(e, worker_index)))
    return
  slots = _SlotViews()

  def run():
    while True:
      task = tasks.get()
      if task is None or stop.is_set():
        return
      task_id, start, end, slot = task
      try:
        message = pickle.dumps(_pack_chunk(ds, start, end, slots.get(slot)), protocol=5)
      except BaseException as e:  # noqa: BLE001 - raised by the consumer at this chunk.
        message = _error_message(e, worker_index)
      results.put((task_id, None if slot is None else slot[0], message))

  pool = [threading.Thread(target=run, name=f"data-loader-{i}", daemon=True)
          for i in range(threads)]
  for t in pool:
    t.start()
  for t in pool:
    t.join()
  slots.close()
  # Stopping: results the consumer no longer reads must not hold up this process' exit.
  results.cancel_join_thread()


def _shutdown(processes: list[Any], tasks: Any, results: Any, stop: Any,
              slots: list[shared_memory.SharedMemory | None], sentinels: int) -> None:
  """Stops the worker processes, then frees the slots (a finalizer: it gets no ``self``)."""
  if processes:
    stop.set()
    for _ in range(sentinels):  # one per worker thread, blocked on an empty task queue
      tasks.put(None)
    deadline = time.monotonic() + _JOIN_S
    for p in processes:
      while p.is_alive() and time.monotonic() < deadline:
        _drain(results)  # a worker may wait to flush its last results into a full pipe
        p.join(timeout=0.05)
      if p.is_alive():
        p.kill()
        p.join()
    processes.clear()
    for q in (tasks, results):
      q.cancel_join_thread()
      q.close()
  for i, shm in enumerate(slots):
    if shm is not None:
      try:
        shm.close()
      except BufferError:  # a chunk still views it (garbage collection order): unmapped with it
        pass
      shm.unlink()
      slots[i] = None


def _drain(q: multiprocessing.Queue) -> None:
  try:
    while True:
      q.get_nowait()
  except (queue.Empty, OSError, EOFError):
    pass


class _Workers:
  """``worker_count`` processes preprocessing chunks; their arrays come back in shared memory.

  The consumer owns ``ahead + 1`` slots (one per chunk in flight, one for the chunk it is
  batching), sized by the largest chunk seen, and hands a free one out with each task; a slot is
  free again once the consumer has copied the chunk's rows into batches (or cancelled it). The
  first chunks, which set the size, come back pickled, and so does a chunk that finds no free slot
  (after ``cancel``) or too little free shared memory.
  """

  def __init__(self, ds: grain.MapDataset, worker_count: int, threads: int):
    try:
      self._pickled_ds = pickle.dumps(ds)
    except Exception as e:
      raise TypeError(f"worker_count={worker_count} needs a picklable source and pipe: "
                      f"{type(e).__name__}: {e}") from e
    self._worker_count = worker_count
    self._threads = threads
    # A chunk queued for each worker thread and one ready for each worker.
    self.ahead = worker_count * (threads + 1)
    self._processes: list[Any] = []
    self._slots: list[shared_memory.SharedMemory | None] = [None] * (self.ahead + 1)
    self._free = collections.deque(range(len(self._slots)))
    self._capacity = 0  # bytes of the largest chunk seen
    self._warned_shm = False
    self._tasks = self._results = self._stop = None
    self._next_id = 0
    self._starts: dict[int, int] = {}  # task id -> first stream position, for wanted tasks
    self._done: dict[int, _Chunk | BaseException] = {}
    self._finalizer = None

  def _start(self) -> None:
    ctx = multiprocessing.get_context("spawn")
    self._tasks, self._results, self._stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    processes = [
        ctx.Process(target=_worker_main, name=f"data-loader-worker-{i}", daemon=True,
                    args=(i, self._worker_count, self._threads, self._pickled_ds, self._tasks,
                          self._results, self._stop))
        for i in range(self._worker_count)]
    # start() returns once its child has read the pickled dataset, which comes after the target:
    # after the child has imported this module. Started together, the workers import in parallel.
    with futures.ThreadPoolExecutor(len(processes)) as pool:
      list(pool.map(lambda p: p.start(), processes))
    self._processes.extend(processes)
    self._finalizer = weakref.finalize(
        self, _shutdown, self._processes, self._tasks, self._results, self._stop, self._slots,
        self._worker_count * self._threads)

  def _take_slot(self) -> tuple[int, str] | None:
    if not self._capacity or not self._free:
      return None
    index = self._free[0]
    shm = self._slots[index]
    if shm is None or shm.size < self._capacity:
      try:
        free = shutil.disk_usage(_SHM_DIR).free
      except OSError:  # no such directory (not Linux): nothing to check
        free = None
      # tmpfs hands out pages on first write: a full one would kill a worker with SIGBUS.
      if free is not None and free < 2 * self._capacity:
        if not self._warned_shm:
          logging.warning("data loader: %s has %d MB free, too little for %d MB chunk slots; "
                          "workers send chunks pickled (slower)", _SHM_DIR, free >> 20,
                          self._capacity >> 20)
          self._warned_shm = True
        return None
      if shm is not None:
        shm.close()
        shm.unlink()
      shm = self._slots[index] = shared_memory.SharedMemory(create=True, size=self._capacity)
    self._free.popleft()
    return index, shm.name

  def submit(self, start: int, stop: int) -> int:
    if not self._processes:
      self._start()
    task_id = self._next_id
    self._next_id += 1
    self._starts[task_id] = start
    self._tasks.put((task_id, start, stop, self._take_slot()))
    return task_id

  def _receive(self) -> None:
    try:
      task_id, slot, message = self._results.get(timeout=_POLL_S)
    except queue.Empty:
      for i, p in enumerate(self._processes):
        if p.exitcode is not None:
          raise RuntimeError(f"data loader worker process {i} (pid {p.pid}) exited with code "
                             f"{p.exitcode}; see its output above") from None
      return
    answer = pickle.loads(message)
    if task_id is None:  # a worker could not start
      raise answer
    start = self._starts.pop(task_id, None)
    release = None if slot is None else functools.partial(self._free.append, slot)
    if isinstance(answer, _Packed):
      self._capacity = max(self._capacity, answer.needed)
      if start is not None:
        answer = answer.unpack(start, None if slot is None else self._slots[slot].buf, release)
        release = None  # the chunk's
    if release is not None:
      release()
    if start is not None:  # not cancelled
      self._done[task_id] = answer

  def result(self, task_id: int) -> _Chunk:
    while task_id not in self._done:
      self._receive()
    answer = self._done.pop(task_id)
    if isinstance(answer, BaseException):
      raise answer
    return answer

  def cancel(self, task_id: int) -> None:
    # The answer is still read (it frees the slot), then dropped.
    self._starts.pop(task_id, None)
    self._done.pop(task_id, None)

  def close(self) -> None:
    if self._finalizer is not None:
      self._finalizer()  # runs _shutdown once
      self._finalizer = None
    # The queues' semaphores go with the last references.
    self._tasks = self._results = self._stop = None
    self._free = collections.deque(range(len(self._slots)))
    self._starts.clear()
    self._done.clear()


class _ChunkQueue:
  """The chunks of positions ``[start, total)`` in order, ``executor.ahead`` of them submitted
  before the consumer needs them."""

  def __init__(self, executor, start: int, total: int, chunk_size: int):
    self._executor = executor
    self._next = start
    self._total = total
    self._chunk_size = chunk_size
    self._pending = collections.deque()

  def _fill(self) -> None:
    while len(self._pending) < self._executor.ahead and self._next < self._total:
      stop = min(self._next + self._chunk_size, self._total)
      self._pending.append(self._executor.submit(self._next, stop))
      self._next = stop

  def next(self) -> _Chunk | None:
    """The next chunk; None at the end of a finite stream."""
    self._fill()
    if not self._pending:
      return None
    chunk = self._executor.result(self._pending.popleft())
    self._fill()  # keeps the executor busy while the consumer batches this chunk
    return chunk

  def cancel(self) -> None:
    for handle in self._pending:
      self._executor.cancel(handle)
    self._pending.clear()


# ----------------------------------------------------------------------------- loader


class Loader:
  """Iterator of batches with a checkpointable state (see ``make_loader``)."""

  def __init__(self, ds: grain.MapDataset, *, batch_size: int, drop_remainder: bool,
               pad_remainder: bool, shard_size: int, chunk_size: int, read_threads: int,
               worker_count: int):
    self._ds = ds
    self._total = len(ds)  # sys.maxsize when repeated forever
    self._batch_size = batch_size
    self._drop_remainder = drop_remainder and not pad_remainder
    self._pad_remainder = pad_remainder
    self._chunk_size = chunk_size
    self.skipped = SkipCounter()
    self._keep = _KeepGood(self.skipped, shard_size)
    if worker_count > 0:
      self._executor = _Workers(ds, worker_count, max(read_threads, 1))
    elif read_threads > 0:
      self._executor = _Threads(ds, read_threads, chunk_size)
    else:
      self._executor = _Inline(ds)
    self._position = 0  # stream positions consumed (kept or skipped)
    self._chunks: _ChunkQueue | None = None
    self._chunk: _Chunk | None = None
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
    batch = _BatchBuilder(self._batch_size)
    while batch.size < self._batch_size:
      if self._chunk is None or self._offset == self._chunk.size:
        if self._chunks is None:
          self._chunks = _ChunkQueue(self._executor, self._position, self._total,
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

  def __init__(self, batch_size: int):
    self._batch_size = batch_size
    self.size = 0
    # Per key: the batch's array (rows stacked by a worker, same shape and dtype so far), or a
    # list of rows stacked at the end (rows from threads in this process, or mixed ones).
    self._values: dict[str, np.ndarray | list[Any]] = {}

  def add(self, chunk: _Chunk, first: int, end: int) -> None:
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
    batch = {k: v[:n] if isinstance(v, np.ndarray) else _stack(v) for k, v in self._values.items()}
    batch["mask"] = np.ones(n, bool)
    if pad and n < self._batch_size:  # repeats the last example, masked out
      batch = {k: np.concatenate([v, np.repeat(v[-1:], self._batch_size - n, axis=0)])
               for k, v in batch.items()}
      batch["mask"][n:] = False
    return batch


def open_source(name: str, config: str | None, split: str, data_dir: str | None = None):
  """A tfds random-access source of prepared ``name/config`` with image decoding skipped."""
  builder = tfds.builder(f"{name}/{config}" if config else name, data_dir=data_dir)
  decoders = tfds_compat.skip_image_decoding(builder.info.features)
  return builder.as_data_source(split=split, decoders=decoders)


def make_loader(source: Sequence[dict[str, Any]], *, pipe: str | pp.Pipeline, batch_size: int,
                seed: int, shuffle: bool = True, num_epochs: int | None = None,
                drop_remainder: bool = True, pad_remainder: bool = False,
                shard_index: int | None = None, shard_count: int | None = None,
                label_keys: Sequence[str] = DEFAULT_LABEL_KEYS, read_threads: int = 2,
                worker_count: int = 0, chunk_size: int | None = None,
                keep_maps: bool = True) -> Loader:
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
  """
  pipeline = pipe if isinstance(pipe, pp.Pipeline) else pp.Pipeline(pipe)
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

  ds = grain.MapDataset.source(source)[shard_index::shard_count]
  if len(ds) == 0:
    raise ValueError(f"shard {shard_index}/{shard_count} of a source of {len(source)} is empty")
  shard_size = len(ds)
  if shuffle:
    ds = ds.shuffle(seed=seed)  # before repeat: grain reshuffles each epoch (seeded by epoch)
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)
  # Position p of this dataset is stream position p: its rng seed whatever process maps it.
  ds = ds.map_with_index(_Preprocess(pipeline, seed, shard_index, label_keys, keep_maps))
  return Loader(ds, batch_size=batch_size, drop_remainder=drop_remainder,
                pad_remainder=pad_remainder, shard_size=shard_size, chunk_size=chunk_size,
                read_threads=read_threads, worker_count=worker_count)


def make_eval_loader(source: Sequence[dict[str, Any]], *, pipe: str | pp.Pipeline,
                     batch_size: int, shard_index: int | None = None,
                     shard_count: int | None = None,
                     label_keys: Sequence[str] = DEFAULT_LABEL_KEYS,
                     read_threads: int = 2, worker_count: int = 0,
                     chunk_size: int | None = None, keep_maps: bool = True) -> Loader:
  """One unshuffled pass; the last batch is padded and masked so each example counts once."""
  return make_loader(source, pipe=pipe, batch_size=batch_size, seed=0, shuffle=False,
                     num_epochs=1, drop_remainder=False, pad_remainder=True,
                     shard_index=shard_index, shard_count=shard_count, label_keys=label_keys,
                     read_threads=read_threads, worker_count=worker_count,
                     chunk_size=chunk_size, keep_maps=keep_maps)


def _to_str(value: Any) -> Any:
  if isinstance(value, (bytes, np.bytes_)):
    return bytes(value).decode("utf-8", "replace")
  return value


def _stack(values: Sequence[Any]) -> np.ndarray:
  """Rows to one array: arrays and numbers stacked, strings into an object array."""
  if isinstance(values[0], str):
    arr = np.empty(len(values), object)
    arr[:] = values
    return arr
  return np.stack([np.asarray(v) for v in values])
