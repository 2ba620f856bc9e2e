"""Training: ``python -m jaxface.train --config configs/X.py[:args] --workdir DIR
[--config.field=value ...]``.

``train_and_evaluate(config, workdir)`` does the work: it prepares the data (building the dataset
and the saliency cache when needed), builds the model, restores the newest checkpoint of
``workdir`` (else ``config.resume``, else ``config.init_from``), and trains data-parallel over every
device with one jitted step on a Mesh (batch sharded along ``data``, state replicated and donated).
It validates, checkpoints (Orbax, asynchronous, with the grain iterator state) and logs
(TensorBoard, ``metrics.jsonl``, a progress line with ETA); a NaN or Inf loss stops the run and
keeps the last good checkpoint. A config with ``stages`` (``configs/demo.py``) runs a chain of such
runs in ``workdir/<stage>``.

Faults: the workdir is locked (``workdir/jaxface.lock``; a chain locks its root and each stage's
workdir); an unreadable newest checkpoint is moved aside to ``<step>.corrupt`` and the run resumes
from the previous one; SIGTERM / SIGINT finish the current step, save a checkpoint with the
loader state and exit with 128 + the signal number; config fields and pipe strings are checked
before any dataset is built; a step's checkpoint is written before that step's validation (whose
metrics then rank it, ``Checkpointer.record``), and a run resumed from a step saved but not
validated validates it first. ``main`` answers each of these in one line.

Multi-host: call with ``--multihost`` (or JAX_COORDINATOR_ADDRESS set) on every host;
``jax.distributed.initialize()`` picks up Slurm or the coordinator flags; each process reads its
own shard of the data.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from typing import Any, Sequence

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from jaxface import checkpointing
from jaxface import cli
from jaxface import config_lib
from jaxface import data as data_lib
from jaxface import evaluator as evaluator_lib
from jaxface import faults
from jaxface import init_from as init_from_lib
from jaxface import logging_lib
from jaxface import optim
from jaxface import parallel
from jaxface import stages as stages_lib
from jaxface import steps as steps_lib
from jaxface.models import from_config as model_config

_FLAGS: dict[str, Any] = {}


def define_flags() -> None:
  """Command-line flags (defined only when run as a program, so importing stays side-effect free)."""
  _FLAGS["config"] = config_flags.DEFINE_config_file("config", None, "config file (path[:args])",
                                                     lock_config=True)
  _FLAGS["workdir"] = flags.DEFINE_string("workdir", None,
                                          "directory of checkpoints, logs and outputs")
  _FLAGS["multihost"] = cli.define_multihost_flag()


class TrainingDiverged(RuntimeError):
  """The loss became NaN or Inf."""


def versions() -> dict[str, str]:
  import flax  # pylint: disable=g-import-not-at-top
  import grain  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  out = {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
         "optax": optax.__version__, "orbax": getattr(ocp, "__version__", "?"),
         "numpy": np.__version__, "grain": getattr(grain, "__version__", "?")}
  try:
    from importlib.metadata import version  # pylint: disable=g-import-not-at-top
    out["jaxface"] = version("jaxface")
    out["grain"] = version("grain")
  except Exception:  # noqa: BLE001 - a source checkout without metadata
    pass
  return out


def _write_json(path: str, obj: Any) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=2, default=str)
  os.replace(tmp, path)


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Trains (resuming if ``workdir`` has a checkpoint), evaluates, returns the final metrics."""
  workdir = os.path.abspath(workdir)
  config_lib.validate(config)  # every stage of a chain too: before anything is built or run
  faults.make_workdir(workdir)
  lock = faults.WorkdirLock(workdir) if jax.process_index() == 0 else None
  if lock is not None:
    try:
      lock.acquire()
    except OSError as e:
      raise faults.WorkdirError(f"workdir {workdir}: cannot create the lock {lock.path} "
                         f"({e.strerror or e})") from None
  try:
    return _train_and_evaluate_locked(config, workdir)
  finally:
    if lock is not None:
      lock.release()


def _train_and_evaluate_locked(config, workdir: str) -> dict[str, Any]:
  if config.get("stages"):
    return _run_stages(config, workdir)
  # init_from's backbone checked before any data are read or saliency computed.
  init_source = init_from_lib.check_backbone(config) if config.init_from else None
  if config.saliency.mode == "cache":
    data_lib.precompute_saliency(config, workdir)  # each dataset's cache for a mixture
  summary = Trainer(config, workdir, init_source=init_source).run()
  if config.eval.after_train:
    summary["test"] = evaluator_lib.evaluate(config, workdir)
    stages_lib.check_expectations(config, summary["test"])
  return summary


def _run_stages(config, workdir: str) -> dict[str, Any]:
  results = {}
  for name, stage, sub in stages_lib.stages(config, workdir):
    print(f"=== stage {name}: {sub}", flush=True)
    summary = train_and_evaluate(stage, sub)
    results[name] = summary.get("test") or evaluator_lib.evaluate(stage, sub)
  if jax.process_index() == 0:
    _write_json(os.path.join(workdir, "results.json"), results)
  return results


class TrainMetrics:
  """The training step's metrics: fetched one step late, checked, summed between log lines.

  ``push`` hands over a step's (device) metrics and fetches the previous step's, so the host
  does not wait for the step it has just dispatched; a fetched loss, gradient norm or parameter
  norm that is NaN or Inf raises ``TrainingDiverged`` naming ``last_good``, the step of the last
  checkpoint (the loop keeps it current). ``means`` fetches the pending step and returns the
  means of the (sum, count) metrics since the previous call as ``train/<name>``.
  """

  def __init__(self, directory: str, last_good: int | None):
    self.directory = directory
    self.last_good = last_good
    self._pending = None  # (metrics, step) of the newest step, not fetched yet
    self._sums: dict[str, list[float]] = {}

  def push(self, metrics, step: int) -> None:
    if self._pending is not None:
      self._fetch(*self._pending)
    self._pending = (metrics, step)

  def means(self) -> dict[str, float]:
    if self._pending is not None:
      self._fetch(*self._pending)
      self._pending = None
    out = {f"train/{k}": s / n for k, (s, n) in self._sums.items() if n}
    self._sums.clear()
    return out

  def _fetch(self, step_metrics, at_step: int) -> None:
    host = jax.device_get(step_metrics)
    scalars = {}
    for k, v in host.items():
      if isinstance(v, tuple):
        s, n = float(v[0]), float(v[1])
        acc = self._sums.setdefault(k, [0.0, 0.0])
        acc[0] += s
        acc[1] += n
        scalars[k] = s / n if n else float("nan")
      else:
        scalars[k] = float(v)
    losses = [v for k, v in scalars.items() if k.endswith("loss")]
    if any(not math.isfinite(v) for v in losses + [scalars["grad_norm"],
                                                    scalars["param_norm"]]):
      raise TrainingDiverged(
          f"loss, gradient or parameters not finite at step {at_step} ("
          + ", ".join(f"{k}={v:.4g}" for k, v in scalars.items()
                      if k.endswith("loss") or k.endswith("norm"))
          + f"); stopping. The last good checkpoint is step {self.last_good} in "
          f"{self.directory}")


class Trainer:
  """One training run (see ``train_and_evaluate``)."""

  def __init__(self, config, workdir: str, init_source: dict[str, Any] | None = None):
    """``init_source``: ``config.init_from``'s arrays as ``init_from.check_backbone`` returned
    them (checked and loaded here, before the dataset is built, when not given)."""
    self.config = config
    self.workdir = workdir
    self.mesh = parallel.make_mesh()
    self.data_sharding = parallel.data_sharding(self.mesh)
    self.replicated = parallel.replicated(self.mesh)
    n_dev, n_proc = jax.device_count(), jax.process_count()
    if config.batch_size % n_dev:
      raise config_lib.ConfigError(f"config.batch_size {config.batch_size} is not divisible by "
                                   f"the {n_dev} devices")
    if (config.batch_size // config.accum_steps) % n_dev:
      raise config_lib.ConfigError(
          f"config.accum_steps: micro-batches of {config.batch_size // config.accum_steps} "
          f"do not split over {n_dev} devices")
    self.local_batch = config.batch_size // n_proc
    if config.init_from and init_source is None:
      init_source = init_from_lib.check_backbone(config)
    self._init_source = init_source  # used (and dropped) by _init_state

    self.builder = data_lib.prepare(config)
    self.tasks = data_lib.tasks(config, self.builder)
    self.train_source = data_lib.source(config, self.builder, config.data.train_split,
                                        workdir=workdir)
    self.steps_per_epoch = max(1, len(self.train_source) // config.batch_size)
    self.total_steps = config_lib.period_steps(config, "train", self.steps_per_epoch)
    self.model = model_config.build_model(config, self.tasks)

  def _class_weights(self) -> dict[str, jax.Array]:
    scheme = self.config.task.class_weights
    if scheme == "none":
      return {}
    out = {}
    for t in self.tasks:
      if not t.class_weighted:
        continue
      counts = data_lib.label_counts(self.builder, self.config.data.train_split, t.name,
                                     t.num_classes)
      w = classification_weights(counts, scheme)
      out[t.name] = jnp.asarray(w, jnp.float32)
      print(f"class weights {t.name}: " + " ".join(
          f"{n}:{v:.3f}" for n, v in zip(t.class_names, w)), flush=True)
    return out

  def _init_state(self, tx):
    """The fresh state, with ``config.init_from``'s arrays mapped in (``jaxface.init_from``):
    the whole expectation is checked on the model's shapes before ``init`` is compiled."""
    c = self.config
    size = tuple(c.model.input_size)
    plan = None
    if c.init_from:
      source = self._init_source
      if source is None:
        source = init_from_lib.flat_paths(init_from_lib.load_pretrained(c.init_from))
      self._init_source = None
      shapes = jax.eval_shape(lambda: steps_lib.init_variables(self.model, size, c.seed))
      plan = init_from_lib.plan_model(c, shapes, source)
    variables = steps_lib.init_variables(self.model, size, c.seed)
    report = None
    if plan is not None:
      variables, report = plan.apply(variables, source), plan.report
    state = steps_lib.create_state(variables, tx, c.seed)
    return jax.device_put(state, self.replicated), report

  def _resume(self, ckpt, loader, state, main: bool):
    """``(state, start_step, resumed_from, val_metrics)``: where this run starts, in this order:

    1. the newest readable checkpoint of the workdir (the run was stopped; an unreadable newest
       one is moved aside, as this run saves that step again), with its loader position and
       the newest validation: that step's recorded one, else the one its meta holds;
    2. else the latest checkpoint of ``config.resume`` (another run continued here), likewise;
    3. else ``state`` as given: fresh, with ``config.init_from``'s weights merged in
       (``_init_state``).
    """
    c = self.config
    if ckpt.latest_step() is not None:
      step, state, data_state, meta = ckpt.restore_readable("latest", state, move_aside=main)
      loader.set_state(data_state["loader"])
      # A finished run's summary keeps its validation.
      val = ckpt.validation(step)
      val = meta.get("val") if val is None else val
      return state, int(step), f"{self.workdir} step {step}", dict(val or {})
    if c.resume:
      other = checkpointing.Checkpointer(c.resume, read_only=True)
      try:
        step, state, data_state, _ = other.restore_readable("latest", state)
      finally:
        other.close()
      loader.set_state(data_state["loader"])
      return state, int(step), f"{c.resume} step {step}", {}
    return state, 0, None, {}

  def run(self) -> dict[str, Any]:
    # -- setup: the optimiser, class weights and input preparation (the data and the model
    # were built in __init__).
    c, workdir = self.config, self.workdir
    main = jax.process_index() == 0
    check_best_metric(c.best_metric, self.tasks)
    schedule = optim.make_schedule(c.optim, self.steps_per_epoch, self.total_steps)
    variables_shape = jax.eval_shape(
        lambda: steps_lib.init_variables(self.model, tuple(c.model.input_size), c.seed))
    tx = optim.make_optimizer(c.optim, variables_shape["params"], self.steps_per_epoch,
                              self.total_steps)
    class_weights = self._class_weights()
    prepare = evaluator_lib.make_prepare(c, self.mesh)

    # -- state: fresh (with init_from's weights), then resumed (``_resume``) and recorded.
    state, init_report = self._init_state(tx)
    ckpt = checkpointing.Checkpointer(workdir, keep=c.keep_checkpoints,
                                      best_metric=c.best_metric, best_mode=c.best_mode)
    loader = data_lib.train_loader(c, self.train_source, c.seed, self.local_batch)
    kwargs, _, head_kwargs = model_config.model_kwargs(c, self.tasks)
    meta_model = {"name": c.model.name, "kwargs": kwargs, "head": c.model.head,
                  "head_kwargs": head_kwargs}
    state, start_step, resumed_from, val_metrics = self._resume(ckpt, loader, state, main)
    if main and start_step:
      faults.drop_rows_after(os.path.join(workdir, "metrics.jsonl"), start_step)

    if main:
      _write_json(os.path.join(workdir, "config.json"), json.loads(c.to_json_best_effort()))
      _write_json(os.path.join(workdir, "run.json"), {
          "versions": versions(), "devices": [str(d) for d in jax.devices()],
          "process_count": jax.process_count(), "mesh": dict(self.mesh.shape),
          "batch_norm": c.batch_norm, "train_pipe": str(c.data.train_pipe),
          "eval_pipe": str(c.data.eval_pipe), "steps_per_epoch": self.steps_per_epoch,
          "total_steps": self.total_steps, "train_examples": len(self.train_source),
          "tasks": [t.__dict__ for t in self.tasks], "resumed_from": resumed_from})
      print(f"training {c.model.name} on {c.data.name}/{c.data.config} "
            f"({len(self.train_source)} examples, {self.steps_per_epoch} steps/epoch) for "
            f"{self.total_steps} steps on {jax.device_count()} device(s); pipe: "
            f"{loader_pipe(c.data.train_pipe)}", flush=True)
      if init_report is not None and resumed_from is None:
        print(init_report.format(), flush=True)
      print(optim_report(c.optim, state["params"]), flush=True)
      if resumed_from:
        print(f"resumed from {resumed_from}", flush=True)

    # -- step: one jitted program, batch sharded along ``data``, state replicated and donated.
    train_step = jax.jit(
        steps_lib.make_train_step(self.model, tx, self.tasks, c, class_weights, schedule, prepare),
        in_shardings=(self.replicated, self.data_sharding),
        out_shardings=(self.replicated, self.replicated), donate_argnums=(0,))
    # -- evaluator: validation on config.data.eval_split.
    evaluator = evaluator_lib.Evaluator(c, self.builder, self.tasks, self.model, prepare,
                                        self.mesh, self.workdir)

    # -- loop: step, log, checkpoint, validate; a stop signal saves and exits.
    eval_every = config_lib.period_steps(c, "eval_every", self.steps_per_epoch)
    ckpt_every = config_lib.period_steps(c, "checkpoint_every", self.steps_per_epoch)
    log_every = config_lib.period_steps(c, "log_every", self.steps_per_epoch) or 10
    writer = logging_lib.MetricWriter(workdir)
    progress = logging_lib.Progress(self.total_steps, c.batch_size, start_step)
    train_metrics = TrainMetrics(ckpt.directory, ckpt.latest_step())
    step = start_step
    stop_every = 1 if jax.process_count() == 1 else log_every
    ckpt.previous_step = train_metrics.last_good

    def due_eval_at(at_step):
      return bool(eval_every) and (at_step % eval_every == 0 or at_step == self.total_steps)

    def save(at_step):
      ckpt.save(at_step, state, {"loader": loader.get_state()},
                {"model": meta_model, "step": at_step, "val": val_metrics,
                 "skipped": loader.skipped.to_dict()})
      train_metrics.last_good = at_step

    def validate(at_step, saved):
      """Validates ``state`` at ``at_step``; the metrics of a saved step rank its checkpoint
      (``Checkpointer.record``). A step without a checkpoint is saved first when its
      validation fails, so no training is lost."""
      nonlocal val_metrics
      try:
        val_metrics = evaluator.validate(state)
      except BaseException:
        if not saved:
          save(at_step)
        raise
      writer.write(at_step, val_metrics)
      if main:
        print(f"validation step {at_step}: " + " | ".join(
            f"{k} {v:.4f}" for k, v in val_metrics.items()), flush=True)
      if saved:
        if c.best_metric and c.best_metric not in val_metrics:
          raise config_lib.ConfigError(
              f"config.best_metric: {c.best_metric!r} is not a validation metric; they are "
              f"{', '.join(sorted(val_metrics))} (checkpoint step {at_step} is saved)")
        ckpt.record(at_step, val_metrics)

    signals = faults.StopSignals()
    try:
      signals.__enter__()
      if (start_step and due_eval_at(start_step) and start_step in ckpt.all_steps()
          and ckpt.validation(start_step) is None):
        # The previous run saved this step and stopped (or was killed, or its validation
        # failed) before recording the step's validation: done now, as it would have been.
        if main:
          print(f"validating step {start_step}: its checkpoint was saved, its validation was "
                "not recorded", flush=True)
        validate(start_step, saved=True)
      while step < self.total_steps:
        batch = next(loader)
        state, metrics = train_step(state, parallel.to_device(batch, self.data_sharding))
        step += 1
        ckpt.check_errors()  # a failed asynchronous save stops the run now, in one line
        train_metrics.push(metrics, step)
        due_log = step % log_every == 0 or step == self.total_steps
        due_eval = eval_every and (step % eval_every == 0 or step == self.total_steps)
        due_ckpt = (ckpt_every and step % ckpt_every == 0) or step == self.total_steps
        if due_log or due_eval or due_ckpt:
          train_scalars = train_metrics.means()
          hp = jax.device_get({k: metrics[k] for k in ("lr", "grad_norm", "param_norm")})
          train_scalars.update({f"train/{k}": float(v) for k, v in hp.items()})
          train_scalars["train/img_per_s"] = progress.rate(step)
          train_scalars["train/skipped"] = loader.skipped.count
          writer.write(step, train_scalars)
          if due_log:
            progress.report(step, {k[6:]: v for k, v in train_scalars.items()
                                   if k.endswith(("loss", "accuracy")) or k == "train/lr"})
        stop = step < self.total_steps and step % stop_every == 0 and signals.stop_requested(
            jax.process_count() > 1)
        # The step's checkpoint comes before its validation: a failing or killed validation
        # loses no training, and a resumed run validates that step first (above). A stop
        # request leaves the validation to the resumed run.
        if due_ckpt or stop:
          save(step)
        if due_eval and not stop:
          validate(step, saved=due_ckpt)
        if stop:
          ckpt.wait()
          raise faults.Preempted(signals.signum, step, ckpt.directory)
    finally:
      signals.__exit__()
      try:
        ckpt.close()
      finally:
        writer.close()
        loader.close()
    # -- summary
    summary = {"step": step, "val": val_metrics, "skipped": loader.skipped.to_dict(),
               "best_step": ckpt.best_step(), "latest_step": ckpt.latest_step()}
    if main:
      _write_json(os.path.join(workdir, "train_summary.json"), summary)
      if loader.skipped.count:
        print(f"skipped {loader.skipped.count} bad examples while training; first: "
              f"{loader.skipped.examples[:3]}", flush=True)
    return summary


def check_best_metric(name: str, tasks) -> None:
  """``config.best_metric`` names a validation metric, ``val/<task>/<metric>`` (a mixture's
  ``val/<entry>/<task>/<metric>`` too), of one of the run's tasks: a typo fails before training
  (the task is known once the dataset is), not at the first validation. The metric's own name
  is checked against the first validation's metrics (its step's checkpoint is saved first)."""
  if not name:
    return
  parts = name.split("/")
  names = [t.name for t in tasks]
  if len(parts) < 3 or parts[0] != "val" or parts[-2] not in names:
    raise config_lib.ConfigError(
        f"config.best_metric: {name!r} is not a validation metric 'val/<task>/<metric>' of the "
        f"tasks {', '.join(names)} (e.g. 'val/{names[0]}/accuracy')")


def classification_weights(counts: np.ndarray, scheme: str) -> np.ndarray:
  from jaxface.tasks import classification  # pylint: disable=g-import-not-at-top
  return np.asarray(classification.class_weights_from_counts(counts, scheme), np.float32)


def loader_pipe(pipe: str) -> str:
  from data_pipelines import pp  # pylint: disable=g-import-not-at-top
  return str(pp.Pipeline(pipe))


def optim_report(optim_config, params) -> str:
  groups = optim.describe_param_groups(optim_config, params)
  frozen = [g for g in groups if g[3]]
  mults = sorted({g[2] for g in groups if not g[3]})
  lines = [f"parameters: {len(groups)} arrays, {len(frozen)} frozen; lr multipliers {mults}"]
  lines += [f"  frozen: {g[0]}" for g in frozen[:40]]
  if len(frozen) > 40:
    lines.append(f"  ... {len(frozen) - 40} more frozen")
  return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli.quiet_logs()
  cli.init_distributed(_FLAGS["multihost"].value)
  config = _FLAGS["config"].value
  if config is None:
    raise app.UsageError("--config is required")
  if not _FLAGS["workdir"].value:
    raise app.UsageError("--workdir is required")
  try:
    train_and_evaluate(config, _FLAGS["workdir"].value)
  except faults.Preempted as e:
    print(f"stopped: {e}", file=sys.stderr, flush=True)
    return 128 + e.signum
  return 0


if __name__ == "__main__":
  cli.run(main, define_flags=define_flags,
          expected=(TrainingDiverged, stages_lib.BelowExpectation, faults.WorkdirError,
                    faults.WorkdirBusy, checkpointing.CheckpointUnreadable,
                    checkpointing.SaveFailed))
