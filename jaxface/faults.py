"""Faults a training run survives: the workdir lock, SIGTERM / SIGINT, an unwritable workdir.

``WorkdirLock`` keeps a second run off a workdir in use; ``StopSignals`` turns SIGTERM (Slurm's
preemption / time-limit warning) and SIGINT into "finish the step, save, stop" (``Preempted``,
exit status 128 + the signal number); ``make_workdir`` fails in one line on a workdir that cannot
take files, before any model is built.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import sys
import time
from typing import Any, Callable

import jax
import numpy as np

from jaxface.checkpointing import free_name

LOCK_NAME = "jaxface.lock"


class WorkdirBusy(Exception):
  """Another live run holds the workdir's lock."""


class WorkdirError(RuntimeError):
  """The workdir cannot be created or written."""


class Preempted(RuntimeError):
  """SIGTERM or SIGINT arrived; the run saved a checkpoint and stopped."""

  def __init__(self, signum: int, step: int, directory: str):
    self.signum = signum
    super().__init__(f"{signal.Signals(signum).name} received: stopped after step {step}, "
                     f"checkpoint saved in {directory}; rerun the same command to resume")


class StopSignals:
  """SIGTERM / SIGINT set a flag that the training loop reads after each step (Slurm sends
  SIGTERM before a time limit or preemption); a second signal acts as the default
  (kills) so a stuck run can still be stopped. Only the main thread can install handlers."""

  def __init__(self):
    self.signum: int | None = None
    self._old: dict[int, Any] = {}

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    if self.signum is not None:
      signal.signal(signum, signal.SIG_DFL)
      os.kill(os.getpid(), signum)
      return
    self.signum = signum
    print(f"{signal.Signals(signum).name} received: finishing the current step and saving a "
          "checkpoint (send it again to stop at once)", file=sys.stderr, flush=True)

  def __enter__(self) -> "StopSignals":
    import threading  # pylint: disable=g-import-not-at-top
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._old[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, old in self._old.items():
      signal.signal(sig, old)

  def stop_requested(self, check_all: bool) -> bool:
    """This process' flag; with several processes, whether any of them got a signal (a
    collective, so every process must call it at the same steps)."""
    if not check_all or jax.process_count() == 1:
      return self.signum is not None
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    flags_all = multihost_utils.process_allgather(np.int32(self.signum or 0))
    if self.signum is None and np.any(flags_all):
      self.signum = int(np.max(flags_all))
    return self.signum is not None


def make_workdir(workdir: str) -> None:
  """Creates ``workdir`` and checks that it takes files; ``WorkdirError`` in one line else."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_test.{os.getpid()}")
    with open(probe, "w", encoding="utf-8") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    where = e.filename or workdir
    raise WorkdirError(f"workdir {workdir}: cannot write there ({e.strerror or e}: {where})"
                       ) from None


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's live process
    return True
  return True


class WorkdirLock:
  """``WORKDIR/jaxface.lock`` (JSON: host, pid, since, argv) held while a run uses the workdir.

  Created with O_CREAT | O_EXCL, so of two runs starting together exactly one gets it; the
  content is written in one ``write`` call and a reader retries briefly on an empty file (the
  instant between the creation and the write). A lock left by a dead process on this host is
  taken over with one line; a live holder, or one on another host (whose process this host
  cannot see), makes ``acquire`` raise ``WorkdirBusy`` naming it. Released on exit, exceptions
  included (used as a context manager); only the holder removes the file.
  """

  def __init__(self, workdir: str, log: Callable[[str], None] | None = None):
    self.workdir = os.path.abspath(workdir)
    self.path = os.path.join(self.workdir, LOCK_NAME)
    self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    self.info = {"host": socket.gethostname(), "pid": os.getpid(),
                 "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                 "argv": sys.argv[:6]}
    self.held = False

  def _read(self, path: str) -> dict[str, Any] | None:
    """The holder's JSON; None when the file is gone; retries an empty/partial file 2 s."""
    deadline = time.monotonic() + 2.0
    while True:
      try:
        with open(path, encoding="utf-8") as f:
          text = f.read()
      except FileNotFoundError:
        return None
      try:
        info = json.loads(text)
        if isinstance(info, dict) and "pid" in info and "host" in info:
          return info
      except ValueError:
        pass
      if time.monotonic() > deadline:
        return {"host": "?", "pid": "?", "since": "?", "garbled": text[:80]}
      time.sleep(0.05)

  def acquire(self) -> "WorkdirLock":
    data = json.dumps(self.info).encode("utf-8")
    for _ in range(5):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        holder = self._read(self.path)
        if holder is None:
          continue  # released between our open and read: try again
        if self._stale(holder):
          continue
        extra = (f"; garbled lock file: remove {self.path} if no run uses the workdir"
                 if "garbled" in holder else
                 "" if holder["host"] == self.info["host"] else
                 f"; if that host's run is gone, remove {self.path}")
        raise WorkdirBusy(f"workdir {self.workdir} is in use by pid {holder['pid']} on "
                          f"{holder['host']} since {holder.get('since', '?')} "
                          f"(lock {self.path}){extra}") from None
      try:
        os.write(fd, data)
        os.fsync(fd)
      finally:
        os.close(fd)
      self.held = True
      return self
    raise WorkdirBusy(f"workdir {self.workdir}: could not take the lock {self.path} "
                      "(other runs keep taking it)")

  def _stale(self, holder: dict[str, Any]) -> bool:
    """Takes over the lock of a dead process of this host; True when it was removed."""
    if holder.get("host") != self.info["host"] or not isinstance(holder.get("pid"), int):
      return False
    if holder["pid"] == os.getpid() or _pid_alive(holder["pid"]):
      return False
    # Rename first (atomic), then check that what was moved is the dead holder's lock: another
    # run may have taken it over in between, and its fresh lock must go back.
    moved = free_name(f"{self.path}.stale.{os.getpid()}")
    try:
      os.rename(self.path, moved)
    except FileNotFoundError:
      return True
    if self._read(moved) != holder:
      try:
        os.link(moved, self.path)
      except FileExistsError:
        pass
      os.remove(moved)
      return False
    os.remove(moved)
    self.log(f"taking over the stale lock {self.path} of pid {holder['pid']} on "
             f"{holder['host']} (since {holder.get('since', '?')}; that process is gone)")
    return True

  def release(self) -> None:
    if not self.held:
      return
    self.held = False
    holder = self._read(self.path)
    if holder and holder.get("pid") == self.info["pid"] and holder.get(
        "host") == self.info["host"]:
      try:
        os.remove(self.path)
      except FileNotFoundError:
        pass

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


def drop_rows_after(path: str, step: int) -> None:
  """Drops the ``metrics.jsonl`` rows past the step a run resumes from (the interrupted run
  logged them; the resumed run logs those steps again)."""
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    lines = f.readlines()
  keep = []
  for line in lines:
    try:
      if int(json.loads(line)["step"]) <= step:
        keep.append(line)
    except (ValueError, KeyError, TypeError):
      pass  # a line cut by a kill
  if len(keep) != len(lines):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      f.writelines(keep)
    os.replace(tmp, path)
