"""Chunks of consecutive stream positions, preprocessed in this process (on demand or by threads).

An executor preprocesses chunks: ``submit(start, stop)`` returns a handle, ``result(handle)`` the
``Chunk`` (or raises the chunk's error), ``cancel(handle)`` drops it, ``close()`` stops;
``ahead`` is how many chunks ``ChunkQueue`` keeps submitted. ``Inline`` and ``Threads`` are here;
``workers.Workers`` runs them in worker processes.
"""

from __future__ import annotations

import collections
from concurrent import futures
import math
from typing import Any

import grain
import numpy as np

from data_pipelines import pp

_PREFETCH = 64  # examples that threads in this process preprocess ahead of the consumer


class Bad:
  """What the map step emits for a bad example (dropped and counted downstream, in order)."""

  def __init__(self, error: pp.BadExampleError):
    self.id = error.id
    self.reason = error.reason


class Chunk:
  """Stream positions ``[start, start + size)``, preprocessed.

  ``values[key]`` holds one row per good example in stream order: a list of the pipe's values, or
  (from a worker process) those rows stacked into one array, a view of a shared-memory slot that
  ``release()`` hands back once the consumer has copied the rows it needs. ``bad`` maps the offset
  of each bad example in the chunk to its marker.
  """

  def __init__(self, start: int, size: int, bad: dict[int, Bad],
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


def preprocess_chunk(ds: grain.MapDataset, start: int,
                      stop: int) -> tuple[dict[int, Bad], dict[str, list[Any]]]:
  """Runs stream positions ``[start, stop)`` through the map step: bad markers and value rows."""
  bad, rows = {}, {}
  for offset, position in enumerate(range(start, stop)):
    example = ds[position]
    if isinstance(example, Bad):
      bad[offset] = example
      continue
    if not rows:
      rows = {k: [] for k in example}
    elif example.keys() != rows.keys():
      raise ValueError(f"example {to_str(example.get('id'))!r} has keys {sorted(example)}, an "
                       f"earlier one {sorted(rows)}: the pipe must give every example the same")
    for k, v in example.items():
      rows[k].append(to_str(v))
  return bad, rows


def build_chunk(ds: grain.MapDataset, start: int, stop: int) -> Chunk:
  """A chunk preprocessed in this process (rows stay separate: the batch stacks them once)."""
  bad, rows = preprocess_chunk(ds, start, stop)
  return Chunk(start, stop - start, bad, rows)


class Inline:
  """``read_threads=0`` without workers: each chunk is preprocessed when the consumer needs it."""

  ahead = 1

  def __init__(self, ds: grain.MapDataset):
    self._ds = ds

  def submit(self, start: int, stop: int) -> tuple[int, int]:
    return start, stop

  def result(self, handle: tuple[int, int]) -> Chunk:
    return build_chunk(self._ds, *handle)

  def cancel(self, handle: tuple[int, int]) -> None:
    del handle

  def close(self) -> None:
    pass


class Threads:
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
    return self._pool.submit(build_chunk, self._ds, start, stop)

  def result(self, handle: futures.Future) -> Chunk:
    return handle.result()

  def cancel(self, handle: futures.Future) -> None:
    handle.cancel()

  def close(self) -> None:
    if self._pool is not None:
      self._pool.shutdown(wait=False, cancel_futures=True)
      self._pool = None


class ChunkQueue:
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

  def next(self) -> Chunk | None:
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


def to_str(value: Any) -> Any:
  if isinstance(value, (bytes, np.bytes_)):
    return bytes(value).decode("utf-8", "replace")
  return value
