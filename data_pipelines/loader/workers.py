"""Worker processes that preprocess chunks, their arrays sent back in shared-memory slots.

Each worker runs ``read_threads`` threads on the chunks named in a task queue. It writes a chunk's
stacked arrays into a shared-memory slot that the consumer owns and reuses, and sends back only a
small message (``_Packed``); the first chunks, which size the slots, come back pickled.
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
from typing import Any
import weakref

from absl import flags
import cv2
import grain
import numpy as np

from data_pipelines.loader.chunks import Bad, Chunk, preprocess_chunk

_ALIGN = 64  # byte alignment of each array in a shared-memory slot
_SHM_DIR = "/dev/shm"  # where POSIX shared memory lives on Linux (its free space is checked)
_POLL_S = 1.0  # how often a consumer waiting for a chunk checks that the workers are alive
_JOIN_S = 10.0  # how long close() waits for a worker process to exit before killing it


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

  def __init__(self, size: int, bad: dict[int, Bad], keys: list[str],
               lists: dict[str, list[Any]], arrays: dict[str, np.ndarray],
               placed: list[tuple[str, np.dtype, tuple[int, ...], int]], needed: int):
    self.size = size
    self.bad = bad
    self.keys = keys
    self.lists = lists
    self.arrays = arrays
    self.placed = placed
    self.needed = needed

  def unpack(self, start: int, buf: memoryview | None, release: Any) -> Chunk:
    """The chunk, its placed arrays viewing ``buf`` until ``release`` frees the slot."""
    values = {**self.lists, **self.arrays}
    for key, dtype, shape, offset in self.placed:
      values[key] = np.ndarray(shape, dtype, buffer=buf, offset=offset)
    return Chunk(start, self.size, self.bad, {k: values[k] for k in self.keys}, release)


def pack_chunk(ds: grain.MapDataset, start: int, stop: int, buf: memoryview | None) -> _Packed:
  """Preprocesses a chunk in a worker, stacking array rows straight into ``buf`` when they fit."""
  bad, rows = preprocess_chunk(ds, start, stop)
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
        message = pickle.dumps(pack_chunk(ds, start, end, slots.get(slot)), protocol=5)
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


class Workers:
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
    self._done: dict[int, Chunk | BaseException] = {}
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

  def result(self, task_id: int) -> Chunk:
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
