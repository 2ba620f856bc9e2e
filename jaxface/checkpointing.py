"""The only module that talks to Orbax: save, keep and restore training checkpoints.

A checkpoint of step ``s`` lives in ``WORKDIR/checkpoints/<s>/`` with three items:

* ``state``: the train-state pytree (params, batch stats, optimizer state, step, rng), saved with
  ``StandardSave`` and restored into an abstract, sharded target;
* ``data``: the grain iterator state (JSON), so a resumed run sees the same data stream;
* ``meta``: JSON: ``model`` (name, kwargs, head and head kwargs, what ``load_model_variables``
  rebuilds the network from), ``step``, ``val`` (the validation metrics of that step) and
  ``skipped`` (the loader's counts of skipped examples).

Saves are asynchronous and atomic (Orbax writes a temporary directory and renames it when the
write has finished), so a run killed at any moment leaves only complete checkpoints. The manager
keeps the last ``keep`` checkpoints plus the best one by a validation metric.

Faults: ``restore_readable`` falls back from an unreadable checkpoint (truncated array files, a
missing or garbled JSON item) to the previous readable step with one line naming the step, the
directory and the reason, and never deletes the bad one (a training run moves it aside to
``<step>.corrupt``, which Orbax does not count as a step). ``WorkdirLock`` keeps a second run off a
workdir in use (``jaxface.faults``).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import sys
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocp_managers

PyTree = Any
CHECKPOINT_DIR = "checkpoints"
CORRUPT_SUFFIX = ".corrupt"
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
  """Orbax warns at every save without metrics when a best metric is tracked; a checkpoint
  without validation is expected (the latest-N policy keeps it), so that line is noise. A failed
  save is reported by ``Checkpointer.check_errors`` in one line with the step; Orbax's threads
  (and the asyncio futures they leave) log the same exception as tracebacks of hundreds of
  lines, which are dropped (every such failure reaches the caller as an exception)."""

  def filter(self, record: logging.LogRecord) -> bool:
    if "did not provide metrics" in record.getMessage() or (
        "read_only=True" in record.getMessage() or "directory is read only" in record.getMessage()):
      return False  # and a reader's Checkpointer is read-only by design
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


def _quiet_closed_loop(hook):
  """When an asynchronous save fails, Orbax closes its event loop while TensorStore still has
  other array writes of that save in flight; as each finishes, TensorStore's C++ thread calls
  ``loop.call_soon_threadsafe`` on the closed loop and prints the RuntimeError through
  ``sys.excepthook`` (a 5-line traceback per array, with no frame of ours). The failure itself
  reaches the caller as ``SaveFailed`` in one line; only exactly those echoes are dropped: the
  exception is "Event loop is closed" and its outermost frame is asyncio's
  ``call_soon_threadsafe`` (a loop closed under our own code has our frames above it)."""
  def quiet(exc_type, exc, tb):
    if (exc_type is RuntimeError and str(exc) == "Event loop is closed" and tb is not None
        and tb.tb_frame.f_code.co_name == "call_soon_threadsafe"
        and f"{os.sep}asyncio{os.sep}" in tb.tb_frame.f_code.co_filename):
      return
    hook(exc_type, exc, tb)
  return quiet


sys.excepthook = _quiet_closed_loop(sys.excepthook)


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


def _metric_getter(metric: str) -> Callable[[dict[str, float]], float]:
  def get(metrics: dict[str, float]) -> float:
    return float(metrics[metric])
  return get


class Checkpointer:
  """Orbax ``CheckpointManager`` for one workdir.

  Args:
    workdir: the run's directory (checkpoints go to ``workdir/checkpoints``).
    keep: how many of the latest checkpoints to keep.
    best_metric: a key of the metrics passed to ``save`` (e.g. "val/age/accuracy"); the best
      checkpoint by it is kept as well. "" keeps only the latest.
    best_mode: "max" or "min".
    async_save: write in a background thread (the default; ``wait`` joins it).
  """

  def __init__(self, workdir: str, keep: int = 2, best_metric: str = "", best_mode: str = "max",
               async_save: bool = True, read_only: bool = False):
    if keep < 1:
      raise ValueError(f"keep must be >= 1, got {keep}")
    if best_mode not in ("max", "min"):
      raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
    self.directory = checkpoint_dir(workdir)
    self.best_metric = best_metric
    policies = [ocp_managers.LatestN(n=keep)]
    if best_metric:
      policies.append(ocp_managers.BestN(get_metric_fn=_metric_getter(best_metric),
                                         reverse=best_mode == "min", n=1,
                                         keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp_managers.AnyPreservationPolicy(policies),
        best_fn=_metric_getter(best_metric) if best_metric else None,
        best_mode=best_mode,
        enable_async_checkpointing=async_save,
        read_only=read_only,
        create=not read_only,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "data", "meta"))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    return self._manager.best_step() if self.best_metric else None

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: PyTree, data_state: dict[str, Any] | None,
           meta: dict[str, Any], metrics: dict[str, float] | None = None) -> bool:
    """Saves (asynchronously) unless a checkpoint of ``step`` exists; ``metrics`` ranks it."""
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
    clean = {k: float(v) for k, v in (metrics or {}).items()} if metrics else None
    self.check_errors()
    try:
      saved = self._manager.save(step, args=args, metrics=clean, force=True)
    except OSError as e:
      raise SaveFailed(f"saving checkpoint step {step} to {self.step_dir(step)} failed: "
                       f"{_reason(e)}; the previous checkpoint (step {self.previous_step}) is "
                       "kept") from None
    self.saving_step = step
    return saved

  previous_step: int | None = None
  saving_step: int | None = None

  def check_errors(self, wait: bool = False) -> None:
    """Raises ``SaveFailed`` (one line, with the step) when the last asynchronous save failed;
    cheap, so the training loop calls it after every step. ``wait`` joins the save first."""
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
      meta = ocp.StandardCheckpointer().metadata(os.path.join(self.step_dir(step), "state"))
      tree = getattr(meta, "item_metadata", meta)
      tree = getattr(tree, "tree", tree)
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


def load_model_variables(workdir: str, step: str | int | None = None
                         ) -> tuple[dict[str, Any], str, dict[str, Any]]:
  """``(variables, model_name, model_kwargs)`` of a training run's checkpoint (host numpy).

  ``variables`` holds "params" and, when the model has them, "batch_stats"; the model name and
  kwargs are those the run trained (saved in the checkpoint's meta).
  """
  if not os.path.isdir(checkpoint_dir(workdir)):
    raise FileNotFoundError(f"{workdir} is not a training workdir (no {CHECKPOINT_DIR}/ in it)")
  ckpt = Checkpointer(workdir, read_only=True)
  try:
    _, state, _, meta = ckpt.restore_readable(step)
  finally:
    ckpt.close()
  variables = {"params": state["params"]}
  if state.get("batch_stats"):
    variables["batch_stats"] = state["batch_stats"]
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
