"""The only module that talks to Orbax: save, keep and restore training checkpoints.

A checkpoint of step ``s`` lives in ``WORKDIR/checkpoints/<s>/`` with three items:

* ``state``: the train-state pytree (params, batch stats, optimizer state, step, rng), saved with
  ``StandardSave`` and restored into an abstract, sharded target;
* ``data``: the grain iterator state (JSON), so a resumed run sees the same data stream;
* ``meta``: JSON: ``model`` (name, kwargs, head and head kwargs, what ``load_model_variables``
  rebuilds the network from), ``step``, ``val`` (the newest validation metrics when the step was
  saved, i.e. of an earlier step) and ``skipped`` (the loader's counts of skipped examples).

Saves are asynchronous and atomic (Orbax writes a temporary directory and renames it when the
write has finished), so a run killed at any moment leaves only complete checkpoints.

Validation comes after its step's save (a failing or killed validation loses no training), so
the metrics that rank a checkpoint are not known when Orbax writes it. They are recorded
afterwards in ``WORKDIR/checkpoints/validation.json`` (``record``: the metric and mode the run
ranks by, and per checkpointed step its validation metrics; replaced atomically), and retention
is ours (``_retain``): the newest ``keep`` steps plus the best recorded one stay, every other
step is renamed to ``<step>.deleting`` (atomic; Orbax no longer lists it) and then removed. A
kill at any point leaves complete steps, a record naming only steps it has seen (entries of
missing steps are ignored) and at most some ``*.deleting`` folders, removed by the next run.

Faults: ``restore_readable`` falls back from an unreadable checkpoint (truncated array files, a
missing or garbled JSON item) to the previous readable step with one line naming the step, the
directory and the reason, and never deletes the bad one (a training run moves it aside to
``<step>.corrupt``, which Orbax does not count as a step). ``WorkdirLock`` keeps a second run off a
workdir in use (``jaxface.faults``). A failed asynchronous save is ``SaveFailed`` in one line with
the step (``check_errors``); the save's other writes finish before Orbax closes its event loop
(``_finishing_other_writes``), so nothing else reaches stderr.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import math
import os
import re
import shutil
import sys
from typing import Any, Callable

from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp

PyTree = Any
CHECKPOINT_DIR = "checkpoints"
CORRUPT_SUFFIX = ".corrupt"
DELETING_SUFFIX = ".deleting"
RECORD_NAME = "validation.json"
# The JSON items of a checkpoint and the file Orbax keeps each in.
_JSON_ITEMS = ("data", "meta")


class CheckpointUnreadable(Exception):
  """A checkpoint that cannot be restored (or none of those that could be tried)."""

  def __init__(self, step: int | None, path: str, reason: str):
    self.step, self.path, self.reason = step, path, reason
    where = f"checkpoint step {step} ({path})" if step is not None else path
    super().__init__(f"{where} unreadable: {reason}")


class SaveFailed(Exception):
  """An asynchronous checkpoint save failed (disk full, file too large, permission...)."""


class _QuietOrbax(logging.Filter):
  """A reader's Checkpointer is read-only by design, so Orbax's warnings about that are noise. A
  failed save is reported by ``Checkpointer.check_errors`` in one line with the step; Orbax's
  threads (and the asyncio futures they leave) log the same exception as tracebacks of hundreds
  of lines, which are dropped (every such failure reaches the caller as an exception)."""

  def filter(self, record: logging.LogRecord) -> bool:
    if "read_only=True" in record.getMessage() or "directory is read only" in record.getMessage():
      return False
    if record.levelno >= logging.ERROR and record.exc_info is not None or (
        "exception was never retrieved" in record.getMessage()):
      return f"{os.sep}orbax{os.sep}" not in record.pathname and not (
          record.name == "asyncio" and "orbax" in str(record.args or record.msg))
    if record.levelno >= logging.ERROR and f"{os.sep}orbax{os.sep}" in record.pathname:
      return "failed" not in record.getMessage() and "raised an exception" not in (
          record.getMessage())
    return True


for _name in ("absl", "asyncio"):
  logging.getLogger(_name).addFilter(_QuietOrbax())


def _quiet_unraisable(hook):
  """A failed restore leaves Orbax's other read coroutines un-awaited; Python prints each one's
  exception ("Exception ignored in: <coroutine ...>", a TensorStore spec of 60 lines) at exit.
  The restore already raised ``CheckpointUnreadable``; those echoes are dropped."""
  def quiet(unraisable):
    code = getattr(unraisable.object, "cr_code", None)
    if code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename:
      return
    hook(unraisable)
  return quiet


sys.unraisablehook = _quiet_unraisable(sys.unraisablehook)


async def _finishing_other_writes(coro, timeout_s: float):
  """Awaits ``coro``; when it raises, first waits (up to ``timeout_s``) for the other tasks of
  the running loop, then re-raises.

  Orbax runs an asynchronous save's coroutine in a fresh event loop and closes that loop as soon
  as the coroutine raises. When one array write fails (disk full, file too large), the save's
  other writes are still in flight in TensorStore; as each finishes, TensorStore's C++ thread
  calls ``loop.call_soon_threadsafe`` on the closed loop and reports the RuntimeError "Event
  loop is closed" through ``PyErr_WriteUnraisable`` / ``PyErr_Print``: a traceback per array
  on stderr, before and after our one-line ``SaveFailed``, also at interpreter exit. Letting
  those writes finish while the loop is open removes the echoes where they arise. Their own
  exceptions (the same disk fault) are retrieved here, so asyncio does not log them either.
  """
  try:
    return await coro
  except BaseException:
    current = asyncio.current_task()
    others = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    if others:
      done, _ = await asyncio.wait(others, timeout=timeout_s)
      for task in done:
        if not task.cancelled():
          task.exception()
    raise


# How long a failed save waits for its other array writes before Orbax closes the loop (each is
# a local or network file write of at most one array; they end in milliseconds to seconds).
_FAILED_SAVE_DRAIN_S = 120.0


def _install_write_draining() -> None:
  """Wraps Orbax's ``_run_sync_via_new_loop`` (the fresh loop an asynchronous save runs in) so
  a failing save lets its other writes finish first (``_finishing_other_writes``). Orbax
  versions without that function (before 0.12) are left as they are; the fault test then
  sees the echoes."""
  from orbax.checkpoint._src import asyncio_utils  # pylint: disable=g-import-not-at-top
  run = getattr(asyncio_utils, "_run_sync_via_new_loop", None)
  if run is None or getattr(run, "_jaxface_draining", False):
    return

  def run_draining(coro):
    return run(_finishing_other_writes(coro, _FAILED_SAVE_DRAIN_S))

  run_draining._jaxface_draining = True  # pylint: disable=protected-access
  asyncio_utils._run_sync_via_new_loop = run_draining  # pylint: disable=protected-access


_install_write_draining()


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


class Checkpointer:
  """Orbax ``CheckpointManager`` for one workdir, with our validation record and retention.

  Args:
    workdir: the run's directory (checkpoints go to ``workdir/checkpoints``).
    keep: how many of the latest checkpoints to keep (besides the best one).
    best_metric: a key of the metrics passed to ``record`` (e.g. "val/age/accuracy"); the best
      checkpoint by it is kept as well. "" keeps only the latest; a reader with "" ranks by the
      metric the record names (the one the run trained with).
    best_mode: "max" or "min".
    async_save: write in a background thread (the default; ``wait`` joins it).
    read_only: a reader (evaluation, export, ``jaxface.load``): never writes or deletes.
  """

  def __init__(self, workdir: str, keep: int = 2, best_metric: str = "", best_mode: str = "max",
               async_save: bool = True, read_only: bool = False):
    if keep < 1:
      raise ValueError(f"keep must be >= 1, got {keep}")
    if best_mode not in ("max", "min"):
      raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
    self.directory = checkpoint_dir(workdir)
    self.record_path = os.path.join(self.directory, RECORD_NAME)
    self.keep, self.best_metric, self.best_mode = keep, best_metric, best_mode
    self.read_only = read_only
    # Only the first process writes the record and deletes (the directory is shared).
    self._writer = not read_only and jax.process_index() == 0
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None,  # retention is ours (``_retain``), ranked by the record
        enable_async_checkpointing=async_save,
        read_only=read_only,
        create=not read_only,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "data", "meta"))
    if self._writer:
      self._finish_deletions()

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  # -- the validation record

  def _read_record(self) -> dict[str, Any]:
    """The record's JSON; ``{}`` when there is none. Written only by ``os.replace``, so a
    garbled one was damaged from outside: ``CheckpointUnreadable`` names it."""
    try:
      with open(self.record_path, encoding="utf-8") as f:
        record = json.load(f)
    except FileNotFoundError:
      return {}
    except (ValueError, UnicodeDecodeError) as e:
      raise CheckpointUnreadable(None, self.record_path, f"garbled JSON ({e}); remove it to "
                                 "rank checkpoints by new validations only") from None
    except OSError as e:
      raise CheckpointUnreadable(None, self.record_path, e.strerror or str(e)) from None
    if not isinstance(record, dict) or not isinstance(record.get("steps", {}), dict):
      raise CheckpointUnreadable(None, self.record_path, "not a validation record")
    return record

  def _write_record(self, steps: dict[str, dict[str, float]]) -> None:
    record = {"metric": self.best_metric, "mode": self.best_mode,
              "steps": dict(sorted(steps.items(), key=lambda kv: int(kv[0])))}
    tmp = f"{self.record_path}.tmp.{os.getpid()}"
    try:
      with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, self.record_path)
    except OSError as e:
      raise SaveFailed(f"writing the validation record {self.record_path} failed: "
                       f"{_reason(e)}; the checkpoints are kept") from None

  def _recorded(self) -> tuple[dict[int, dict[str, float]], str, str]:
    """``({step: metrics}, metric, mode)``: the record's steps (every one, present or not) and
    what to rank by (this Checkpointer's best_metric, else the record's)."""
    record = self._read_record()
    steps = {int(k): v for k, v in record.get("steps", {}).items()}
    if not record:
      steps = self._orbax_metrics()
    if self.best_metric:
      return steps, self.best_metric, self.best_mode
    return steps, str(record.get("metric") or ""), str(record.get("mode") or "max")

  def _orbax_metrics(self) -> dict[int, dict[str, float]]:
    """Workdirs written before the record existed: Orbax kept each step's metrics in its
    ``_CHECKPOINT_METADATA`` ("metrics"), which still rank them."""
    out = {}
    for step in self.all_steps():
      try:
        with open(os.path.join(self.step_dir(step), "_CHECKPOINT_METADATA"),
                  encoding="utf-8") as f:
          metrics = json.load(f).get("metrics")
      except (OSError, ValueError, AttributeError):
        continue
      if isinstance(metrics, dict) and metrics:
        out[step] = metrics
    return out

  def validation(self, step: int) -> dict[str, float] | None:
    """The recorded validation metrics of ``step``; None when it has none (it was not
    validated, or the run was stopped between the save and the validation)."""
    return self._recorded()[0].get(step)

  def record(self, step: int, metrics: dict[str, float]) -> None:
    """Records the validation ``metrics`` of ``step``, which this run has saved (``save``; the
    write may still be in progress), then applies the retention."""
    if self.best_metric and self.best_metric not in metrics:
      raise KeyError(f"best_metric {self.best_metric!r} not among the metrics "
                     f"{sorted(metrics)}")
    if not self._writer:
      return
    steps = {str(s): v for s, v in self._recorded()[0].items()}
    steps[str(step)] = {k: float(v) for k, v in metrics.items()}
    self._write_record(steps)
    self._retain()

  def best_step(self) -> int | None:
    """The present step whose recorded metric is best (ties: the newest); None when no present
    step has a finite one, or there is no metric to rank by."""
    steps, metric, mode = self._recorded()
    present = set(self.all_steps())
    scored = [(float(m[metric]), s) for s, m in steps.items()
              if s in present and metric in m and math.isfinite(float(m[metric]))]
    if not metric or not scored:
      return None
    if mode == "max":
      return max(scored)[1]
    return min(scored, key=lambda vs: (vs[0], -vs[1]))[1]

  # -- retention

  def _retain(self) -> None:
    """Removes every finalized step but the newest ``keep`` and the best one. Runs only when no
    save is in progress (so every listed step is complete, and the one being written is
    never touched). Each step is first renamed to ``<step>.deleting`` (atomic), then the
    record forgets it, then the folder is removed: a kill in between leaves a consistent
    workdir."""
    if not self._writer or self._manager.is_saving_in_progress():
      return
    steps = sorted(self.all_steps())
    keep = set(steps[-self.keep:])
    best = self.best_step()
    if best is not None:
      keep.add(best)
    doomed = [s for s in steps if s not in keep]
    if not doomed:
      return
    moved = []
    for s in doomed:
      aside = free_name(self.step_dir(s) + DELETING_SUFFIX)
      try:
        os.rename(self.step_dir(s), aside)
      except OSError as e:
        raise SaveFailed(f"removing old checkpoint step {s} ({self.step_dir(s)}) failed: "
                         f"{_reason(e)}") from None
      moved.append(aside)
    self._manager.reload()
    recorded = self._recorded()[0]
    if any(s in recorded for s in doomed):
      self._write_record({str(s): v for s, v in recorded.items() if s not in doomed})
    for aside in moved:
      shutil.rmtree(aside, ignore_errors=True)

  def _finish_deletions(self) -> None:
    """Removes the ``<step>.deleting`` folders a killed run left (Orbax does not list them)."""
    try:
      names = os.listdir(self.directory)
    except OSError:
      return
    for name in names:
      if DELETING_SUFFIX in name and name.split(".", 1)[0].isdigit():
        shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

  # -- saving

  def save(self, step: int, state: PyTree, data_state: dict[str, Any] | None,
           meta: dict[str, Any], metrics: dict[str, float] | None = None) -> bool:
    """Saves (asynchronously) unless a checkpoint of ``step`` exists. ``record`` ranks it once
    its validation has run (training validates after the save); ``metrics`` already known are
    recorded right after the save has started."""
    if step in self._manager.all_steps():
      return False
    if metrics is not None and self.best_metric and self.best_metric not in metrics:
      raise KeyError(f"best_metric {self.best_metric!r} not among the metrics "
                     f"{sorted(metrics)}")
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state or {}),
        meta=ocp.args.JsonSave(_jsonable(meta)),
    )
    self.check_errors()
    try:
      saved = self._manager.save(step, args=args, force=True)
    except OSError as e:
      raise SaveFailed(f"saving checkpoint step {step} to {self.step_dir(step)} failed: "
                       f"{_reason(e)}; the previous checkpoint (step {self.previous_step}) is "
                       "kept") from None
    self.saving_step = step
    if saved and metrics is not None:
      self.record(step, metrics)
    return saved

  previous_step: int | None = None
  saving_step: int | None = None

  def check_errors(self, wait: bool = False) -> None:
    """Raises ``SaveFailed`` (one line, with the step) when the last asynchronous save failed;
    cheap, so the training loop calls it after every step. ``wait`` joins the save first. When
    a save has finished, applies the retention."""
    try:
      if wait:
        self._manager.wait_until_finished()
      self._manager.check_for_errors()
    except Exception as e:  # noqa: BLE001 - whatever the writer thread raised
      step, self.saving_step = self.saving_step, None
      raise SaveFailed(f"saving checkpoint step {step} to {self.directory} failed: "
                       f"{_reason(e)}; the previous checkpoint (step {self.previous_step}) is "
                       "kept") from None
    if self.saving_step is not None and not self._manager.is_saving_in_progress():
      self.previous_step, self.saving_step = self.saving_step, None
      self._retain()

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def check_json_items(self, step: int) -> None:
    """Raises ``CheckpointUnreadable`` naming the file when a JSON item is missing or garbled
    (Orbax would say only "Expecting value" or "pytree structure error")."""
    for item in _JSON_ITEMS:
      path = os.path.join(self.step_dir(step), item, "metadata")
      try:
        with open(path, encoding="utf-8") as f:
          json.load(f)
      except FileNotFoundError:
        raise CheckpointUnreadable(step, path, "file missing") from None
      except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointUnreadable(step, path, f"garbled JSON ({e})") from None
      except OSError as e:
        raise CheckpointUnreadable(step, path, e.strerror or str(e)) from None

  def restore(self, step: int, target: PyTree) -> tuple[PyTree, dict[str, Any], dict[str, Any]]:
    """Restores ``(state, data_state, meta)`` of ``step`` into the abstract/sharded ``target``."""
    self.check_json_items(step)
    abstract = jax.tree.map(_abstract, target)
    with _unreadable_as(step, self.step_dir(step)):
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract),
          data=ocp.args.JsonRestore(),
          meta=ocp.args.JsonRestore()))
    return restored.state, dict(restored.data or {}), dict(restored.meta or {})

  def restore_readable(self, which: str | int | None, target: PyTree | None = None,
                       move_aside: bool = False, log: Callable[[str], None] | None = None
                       ) -> tuple[int, PyTree, dict[str, Any], dict[str, Any]]:
    """``(step, state, data_state, meta)`` of the checkpoint ``which`` names, falling back.

    "latest" (or None) and "best" fall back from an unreadable checkpoint to the next newest
    readable one, with one line per bad step; an explicit step does not fall back. With
    ``move_aside`` (a training run, which would save that step again) each bad step newer than
    the one restored is renamed to ``<step>.corrupt``; nothing is moved when no step is
    readable (then the cause is more likely a changed config than a broken disk). ``target``
    None restores the state as saved (``restore_state_untargeted``).
    """
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    first = resolve_step(self, which)
    explicit = which not in (None, "", "latest", "best")
    order = [first] + ([s for s in sorted(self.all_steps(), reverse=True) if s != first]
                       if not explicit else [])
    bad: list[CheckpointUnreadable] = []
    for i, step in enumerate(order):
      try:
        if target is None:
          self.check_json_items(step)
          state, data, meta = self.restore_state_untargeted(step), {}, self.restore_meta(step)
        else:
          state, data, meta = self.restore(step, target)
      except CheckpointUnreadable as e:
        if explicit:
          raise
        bad.append(e)
        log(f"warning: {e}; " + (f"trying step {order[i + 1]}" if i + 1 < len(order) else
                                 "no other step to try"))
        continue
      for e in bad if move_aside else ():
        aside = free_name(self.step_dir(e.step) + CORRUPT_SUFFIX)
        os.rename(self.step_dir(e.step), aside)
        log(f"moved unreadable checkpoint step {e.step} aside to {aside}")
      if move_aside and bad:
        self._manager.reload()
        recorded = self._recorded()[0]
        if self._writer and any(e.step in recorded for e in bad):
          self._write_record({str(s): v for s, v in recorded.items()
                              if s not in {e.step for e in bad}})
      if bad:
        log(f"restored checkpoint step {step} from {self.directory}")
      return step, state, data, meta
    raise CheckpointUnreadable(None, self.directory, "no readable checkpoint (" + "; ".join(
        f"step {e.step}: {e.reason}" for e in bad) + ")")

  def restore_meta(self, step: int) -> dict[str, Any]:
    with _unreadable_as(step, self.step_dir(step)):
      restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored.meta or {})

  def restore_state_untargeted(self, step: int) -> PyTree:
    """The saved state on this process' first device, whatever mesh wrote it (for inspection
    and ``load_model_variables``)."""
    with _unreadable_as(step, self.step_dir(step)):
      # The item handler's metadata (the checkpointer's looks for a step metadata file inside
      # the item folder and warns on stderr that there is none).
      meta = ocp.StandardCheckpointHandler().metadata(
          epath.Path(self.step_dir(step)) / "state")
      tree = getattr(meta, "tree", meta)
      device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
      target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                            tree, is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"))
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target)))
    return restored.state

  def wait(self) -> None:
    self.check_errors(wait=True)

  def close(self) -> None:
    try:
      self.wait()
    finally:
      self._manager.close()


def resolve_step(ckpt: Checkpointer, which: str | int | None) -> int:
  """``None``/"latest" -> latest step, "best" -> best step, an int or digits -> that step."""
  steps = ckpt.all_steps()
  if not steps:
    raise FileNotFoundError(f"no checkpoint in {ckpt.directory}")
  if which in (None, "", "latest"):
    return int(ckpt.latest_step())
  if which == "best":
    best = ckpt.best_step()
    if best is None:
      raise ValueError(f"no best checkpoint in {ckpt.directory} (the run had no best_metric "
                       f"or never evaluated); steps: {steps}")
    return int(best)
  try:
    step = int(which)
  except (TypeError, ValueError):
    raise ValueError(f"--checkpoint must be 'latest', 'best' or a step number, got {which!r}")
  if step not in steps:
    raise ValueError(f"no checkpoint of step {step} in {ckpt.directory}; steps: {steps}")
  return step


def restore_variables(workdir: str, which: str | int | None = "best", target: PyTree = None,
                      best_metric: str = "", best_mode: str = "max"
                      ) -> tuple[int, dict[str, Any], dict[str, Any]]:
  """``(step, variables, meta)`` of the checkpoint of a training workdir that ``which`` names.

  ``which``: "best" (the best recorded validation step by ``best_metric`` / ``best_mode``, by
  default the metric the run ranked with; the latest step when the run recorded none), "latest"
  (or None) or a step number. "best" and "latest" fall back from an unreadable checkpoint to
  the newest readable one (one line on stderr each), an explicit step does not. Orbax lists only
  finalized steps (a save in progress is a ``*.orbax-checkpoint-tmp`` folder), so a workdir in
  use is read safely. ``target``: the abstract/sharded train state to restore into; None
  restores the arrays as saved onto this process' first device (any saving mesh, and
  checkpoints holding only model variables). ``variables`` holds "params" and, when the model
  has them, "batch_stats"; ``meta`` is the checkpoint's (the model's name and kwargs...).
  """
  if not os.path.isdir(checkpoint_dir(workdir)):
    raise FileNotFoundError(f"{workdir} is not a training workdir (no {CHECKPOINT_DIR}/ in it)")
  ckpt = Checkpointer(workdir, read_only=True, best_metric=best_metric, best_mode=best_mode)
  try:
    if which == "best" and ckpt.all_steps() and ckpt.best_step() is None:
      which = "latest"  # no validation was recorded: the last step
    step, state, _, meta = ckpt.restore_readable(which, target)
  finally:
    ckpt.close()
  variables = {"params": state["params"]}
  if state.get("batch_stats"):
    variables["batch_stats"] = state["batch_stats"]
  return step, variables, meta


def load_model_variables(workdir: str, step: str | int | None = None
                         ) -> tuple[dict[str, Any], str, dict[str, Any]]:
  """``(variables, model_name, model_kwargs)`` of a training run's checkpoint ``step`` (None:
  the latest; see ``restore_variables``), restored as saved (host-side, one device).

  The model name and kwargs are those the run trained (saved in the checkpoint's meta).
  """
  _, variables, meta = restore_variables(workdir, step)
  model = meta.get("model", {})
  return variables, model.get("name", ""), dict(model.get("kwargs", {}))


# Disk faults whose words (os.strerror) lead the reason when a long message holds them
# (TensorStore wraps the OS error deep inside its own).
_DISK_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                errno.ENOTDIR, errno.EIO)


def _reason(e: BaseException) -> str:
  """An exception in a few words: its type and the first line of its message, shortened."""
  # Orbax wraps TensorStore's error (which names the array and what is wrong) in a generic one.
  for _ in range(8):
    inner = e.__cause__ or e.__context__
    if inner is None or not isinstance(inner, Exception):
      break
    e = inner
  text = str(e).strip().splitlines()[0] if str(e).strip() else ""
  array = re.search(r'Error (?:reading|writing) "([^"/]+)[^"]*" in OCDBT database', text)
  if array:
    tail = text.rsplit('": ', 1)[-1]
    if "is not valid for value of size" in tail:
      tail = f"array file truncated ({tail})"
    text = f"array {array.group(1)}: {tail}"
  if isinstance(e, OSError) and e.strerror:
    text = f"{e.strerror}: {e.filename}" if e.filename else e.strerror
  disk = next((os.strerror(n) for n in _DISK_ERRNOS if os.strerror(n) in str(e)), None)
  if disk and not text.startswith(disk):
    text = f"{disk} ({text})"
  text = text if len(text) <= 160 else text[:157] + "..."
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


class _unreadable_as:  # pylint: disable=invalid-name
  """Turns any error of a restore into ``CheckpointUnreadable(step, path, reason)``."""

  def __init__(self, step: int, path: str):
    self.step, self.path = step, path

  def __enter__(self):
    return self

  def __exit__(self, kind, value, tb):
    if value is None or not isinstance(value, Exception) or isinstance(
        value, CheckpointUnreadable):
      return False
    raise CheckpointUnreadable(self.step, self.path, _reason(value)) from value


def free_name(path: str) -> str:
  """``path``, or ``path.1``, ``path.2``... whichever does not exist yet."""
  candidate, n = path, 0
  while os.path.exists(candidate):
    n += 1
    candidate = f"{path}.{n}"
  return candidate


def _abstract(x):
  if isinstance(x, jax.Array):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  if isinstance(x, jax.ShapeDtypeStruct):
    return x
  return np.asarray(x)


def _jsonable(obj: Any) -> Any:
  return json.loads(json.dumps(obj, default=json_default))


def json_default(o: Any) -> Any:
  """``json.dump(default=...)`` for numpy scalars and arrays, tuples and sets."""
  if isinstance(o, (np.integer,)):
    return int(o)
  if isinstance(o, (np.floating,)):
    return float(o)
  if isinstance(o, np.ndarray):
    return o.tolist()
  if isinstance(o, (tuple, set)):
    return list(o)
  return str(o)
