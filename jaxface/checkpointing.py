"""The only module that talks to Orbax: save, keep and restore training checkpoints.

A checkpoint of step ``s`` lives in ``WORKDIR/checkpoints/<s>/`` with three items:

* ``state``: the train-state pytree (params, batch stats, optimizer state, step, rng), saved with
  ``StandardSave`` and restored into an abstract, sharded target;
* ``data``: the grain iterator state (JSON), so a resumed run sees the same data stream;
* ``meta``: JSON (model name and kwargs, the validation metrics of that step, library versions).

Saves are asynchronous and atomic (Orbax writes a temporary directory and renames it when the
write has finished), so a run killed at any moment leaves only complete checkpoints. The manager
keeps the last ``keep`` checkpoints plus the best one by a validation metric.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocp_managers

PyTree = Any
CHECKPOINT_DIR = "checkpoints"


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
    return self._manager.save(step, args=args, metrics=clean, force=True)

  def restore(self, step: int, target: PyTree) -> tuple[PyTree, dict[str, Any], dict[str, Any]]:
    """Restores ``(state, data_state, meta)`` of ``step`` into the abstract/sharded ``target``."""
    abstract = jax.tree.map(_abstract, target)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract),
        data=ocp.args.JsonRestore(),
        meta=ocp.args.JsonRestore()))
    return restored.state, dict(restored.data or {}), dict(restored.meta or {})

  def restore_meta(self, step: int) -> dict[str, Any]:
    restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored.meta or {})

  def restore_state_untargeted(self, step: int) -> PyTree:
    """The saved state on this process' first device, whatever mesh wrote it (for inspection
    and ``load_model_variables``)."""
    meta = ocp.StandardCheckpointer().metadata(os.path.join(self.directory, str(step), "state"))
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          tree, is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"))
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target)))
    return restored.state

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
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
    s = resolve_step(ckpt, step)
    meta = ckpt.restore_meta(s)
    state = ckpt.restore_state_untargeted(s)
  finally:
    ckpt.close()
  variables = {"params": state["params"]}
  if state.get("batch_stats"):
    variables["batch_stats"] = state["batch_stats"]
  model = meta.get("model", {})
  return variables, model.get("name", ""), dict(model.get("kwargs", {}))


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
