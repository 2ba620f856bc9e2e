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
before any dataset is built. ``main`` answers each of these in one line.

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
from typing import Any, Mapping, Sequence

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from ml_collections import config_flags
import numpy as np

from jaxface import checkpointing
from jaxface import config_lib
from jaxface import data as data_lib
from jaxface import faults
from jaxface import logging_lib
from jaxface import optim
from jaxface import steps as steps_lib

_FLAGS: dict[str, Any] = {}


def define_flags() -> None:
  """Command-line flags (defined only when run as a program, so importing stays side-effect free)."""
  _FLAGS["config"] = config_flags.DEFINE_config_file("config", None, "config file (path[:args])",
                                                     lock_config=True)
  _FLAGS["workdir"] = flags.DEFINE_string("workdir", None,
                                          "directory of checkpoints, logs and outputs")
  _FLAGS["multihost"] = flags.DEFINE_bool("multihost", False,
                                          "call jax.distributed.initialize() first")


class TrainingDiverged(RuntimeError):
  """The loss became NaN or Inf."""


def make_mesh() -> jax.sharding.Mesh:
  # Auto axes: jit propagates the batch sharding (Flax layers such as dropout are not written
  # for explicit-sharding mode, the default axis type of jax.make_mesh since JAX 0.9).
  return jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


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


def to_device(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Numeric arrays of this process' batch -> global arrays sharded along ``data``."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()
          if v.dtype != object}


def resolve_stage_refs(config, workdir_root: str):
  """``"stage:NAME"`` in ``saliency.mlnet`` / ``init_from`` -> ``workdir_root/NAME``."""
  with config.unlocked():
    for holder, field in ((config.saliency, "mlnet"), (config, "init_from")):
      v = holder[field]
      if isinstance(v, str) and v.startswith("stage:"):
        holder[field] = os.path.join(workdir_root, v[len("stage:"):])
  return config


def _write_json(path: str, obj: Any) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=2, default=str)
  os.replace(tmp, path)


def make_prepare(config, mesh) -> Any:
  """uint8 images -> network input on the device, with the saliency reweighting computed in the
  step when ``config.saliency.mode == "online"``."""
  name = config.model.preprocessing
  steps_lib.normalize(jnp.zeros((1, 1, 1, 3), jnp.uint8), name)  # fail early on a bad name
  if config.saliency.mode != "online":
    return lambda images: steps_lib.normalize(images, name)
  from jaxface.saliency import online  # pylint: disable=g-import-not-at-top
  from jaxface.saliency import inference  # pylint: disable=g-import-not-at-top
  apply_fn, variables = inference.load_mlnet(config.saliency.mlnet)
  variables = jax.device_put(variables, NamedSharding(mesh, P()))
  r, size = float(config.saliency.r), tuple(config.saliency.mlnet_input)

  def prepare(images):
    weighted = online.saliency_reweight_step(apply_fn, variables, images, r, size)
    return steps_lib.normalize(weighted, name)
  return prepare


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
  if config.saliency.mode == "cache":
    from jaxface.saliency import precompute as cache_lib  # pylint: disable=g-import-not-at-top
    cache_lib.precompute(config, workdir)
  summary = Trainer(config, workdir).run()
  if config.eval.after_train:
    from jaxface import evaluate as evaluate_lib  # pylint: disable=g-import-not-at-top
    summary["test"] = evaluate_lib.evaluate(config, workdir)
    check_expectations(config, summary["test"])
  return summary


class BelowExpectation(RuntimeError):
  """A test result below ``config.eval.expect``."""


# The metric an ``expect`` entry named by the task alone checks, per kind of result.
HEADLINE_METRICS = ("accuracy", "cc")


def _expected_metric(results: dict[str, Any], key: str) -> tuple[str, float | None]:
  """``("task/metric", value)`` of an expect key ``task`` (its headline metric) or ``task/metric``."""
  task, _, metric = key.partition("/")
  got = results.get(task, {})
  if not metric:
    metric = next((m for m in HEADLINE_METRICS if m in got), HEADLINE_METRICS[0])
  value = got.get(metric)
  return f"{task}/{metric}", None if value is None else float(value)


def check_expectations(config, results: dict[str, Any]) -> None:
  """Fails when a test result is below its ``config.eval.expect`` minimum.

  Keys are a task (its accuracy, or CC for a saliency map) or ``task/metric`` (e.g.
  ``saliency/nss``); KLD is a divergence and cannot be given a minimum.
  """
  expect = dict(config.eval.get("expect") or {})
  low, reached = [], []
  for key, minimum in expect.items():
    name, got = _expected_metric(results, key)
    if name.endswith("/kld"):
      raise config_lib.ConfigError(f"config.eval.expect.{key}: KLD is lower-is-better; "
                                   "give a minimum of cc, nss, auc_judd or sim instead")
    if got is None or not got >= float(minimum):
      low.append(f"{name}: {got if got is None else round(got, 4)} < {minimum}")
    else:
      reached.append(f"{name} {got:.3f} >= {minimum}")
  if low:
    raise BelowExpectation("test result below config.eval.expect: " + "; ".join(low))
  if expect:
    print("expected results reached: " + ", ".join(reached), flush=True)


def _run_stages(config, workdir: str) -> dict[str, Any]:
  from jaxface import evaluate as evaluate_lib  # pylint: disable=g-import-not-at-top
  results = {}
  order = list(config.stage_order) or sorted(config.stages)
  if sorted(order) != sorted(config.stages):
    raise config_lib.ConfigError(f"config.stage_order {order} must name each of config.stages "
                                 f"({sorted(config.stages)}) once")
  for name in order:
    stage = resolve_stage_refs(config.stages[name], workdir)
    sub = os.path.join(workdir, name)
    print(f"=== stage {name}: {sub}", flush=True)
    summary = train_and_evaluate(stage, sub)
    results[name] = summary.get("test") or evaluate_lib.evaluate(stage, sub)
  if jax.process_index() == 0:
    _write_json(os.path.join(workdir, "results.json"), results)
  return results


class Trainer:
  """One training run (see ``train_and_evaluate``)."""

  def __init__(self, config, workdir: str):
    self.config = config
    self.workdir = workdir
    self.mesh = make_mesh()
    self.data_sharding = NamedSharding(self.mesh, P("data"))
    self.replicated = NamedSharding(self.mesh, P())
    n_dev, n_proc = jax.device_count(), jax.process_count()
    if config.batch_size % n_dev:
      raise config_lib.ConfigError(f"config.batch_size {config.batch_size} is not divisible by "
                                   f"the {n_dev} devices")
    if (config.batch_size // config.accum_steps) % n_dev:
      raise config_lib.ConfigError(
          f"config.accum_steps: micro-batches of {config.batch_size // config.accum_steps} "
          f"do not split over {n_dev} devices")
    self.local_batch = config.batch_size // n_proc

    self.builder = data_lib.prepare(config)
    self.tasks = data_lib.tasks(config, self.builder)
    self.train_source = data_lib.source(config, self.builder, config.data.train_split,
                                        workdir=workdir)
    self.steps_per_epoch = max(1, len(self.train_source) // config.batch_size)
    self.total_steps = config_lib.period_steps(config, "train", self.steps_per_epoch)
    self.model = steps_lib.build_model(config, self.tasks)

  def _class_weights(self) -> dict[str, jax.Array]:
    scheme = self.config.task.class_weights
    if scheme == "none":
      return {}
    out = {}
    for t in self.tasks:
      if t.kind != "class":
        continue
      counts = data_lib.label_counts(self.builder, self.config.data.train_split, t.name,
                                     t.num_classes)
      w = classification_weights(counts, scheme)
      out[t.name] = jnp.asarray(w, jnp.float32)
      print(f"class weights {t.name}: " + " ".join(
          f"{n}:{v:.3f}" for n, v in zip(t.class_names, w)), flush=True)
    return out

  def _init_state(self, tx):
    c = self.config
    variables = steps_lib.init_variables(self.model, tuple(c.model.input_size), c.seed)
    report = None
    if c.init_from:
      variables, report = steps_lib.merge_pretrained(variables,
                                                     steps_lib.load_pretrained(c.init_from))
    state = steps_lib.create_state(variables, tx, c.seed)
    return jax.device_put(state, self.replicated), report

  def run(self) -> dict[str, Any]:
    c, workdir = self.config, self.workdir
    main = jax.process_index() == 0
    schedule = optim.make_schedule(c.optim, self.steps_per_epoch, self.total_steps)
    variables_shape = jax.eval_shape(
        lambda: steps_lib.init_variables(self.model, tuple(c.model.input_size), c.seed))
    tx = optim.make_optimizer(c.optim, variables_shape["params"], self.steps_per_epoch,
                              self.total_steps)
    state, init_report = self._init_state(tx)
    class_weights = self._class_weights()
    prepare = make_prepare(c, self.mesh)

    ckpt = checkpointing.Checkpointer(workdir, keep=c.keep_checkpoints,
                                      best_metric=c.best_metric, best_mode=c.best_mode)
    loader = data_lib.train_loader(c, self.train_source, c.seed, self.local_batch)
    start_step, resumed_from = 0, None
    kwargs, _, head_kwargs = steps_lib.model_kwargs(c, self.tasks)
    meta_model = {"name": c.model.name, "kwargs": kwargs, "head": c.model.head,
                  "head_kwargs": head_kwargs}
    val_metrics: dict[str, float] = {}
    if ckpt.latest_step() is not None:
      # An unreadable newest checkpoint is moved aside (this run saves that step again).
      step, state, data_state, meta = ckpt.restore_readable("latest", state, move_aside=main)
      loader.set_state(data_state["loader"])
      start_step, resumed_from = int(step), f"{workdir} step {step}"
      val_metrics = dict(meta.get("val") or {})  # a finished run's summary keeps its validation
    elif c.resume:
      other = checkpointing.Checkpointer(c.resume, read_only=True)
      try:
        step, state, data_state, _ = other.restore_readable("latest", state)
      finally:
        other.close()
      loader.set_state(data_state["loader"])
      start_step, resumed_from = int(step), f"{c.resume} step {step}"
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

    train_step = jax.jit(
        steps_lib.make_train_step(self.model, tx, self.tasks, c, class_weights, schedule, prepare),
        in_shardings=(self.replicated, self.data_sharding),
        out_shardings=(self.replicated, self.replicated), donate_argnums=(0,))
    from jaxface import evaluate as evaluate_lib  # pylint: disable=g-import-not-at-top
    evaluator = evaluate_lib.Evaluator(c, self.builder, self.tasks, self.model, prepare,
                                       self.mesh, self.workdir)
    eval_every = config_lib.period_steps(c, "eval_every", self.steps_per_epoch)
    ckpt_every = config_lib.period_steps(c, "checkpoint_every", self.steps_per_epoch)
    log_every = config_lib.period_steps(c, "log_every", self.steps_per_epoch) or 10
    writer = logging_lib.MetricWriter(workdir)
    progress = logging_lib.Progress(self.total_steps, c.batch_size, start_step)
    last_good = ckpt.latest_step()
    pending = None  # metrics of the previous step, fetched one step late
    sums: dict[str, list[float]] = {}
    step = start_step
    stop_every = 1 if jax.process_count() == 1 else log_every
    ckpt.previous_step = last_good

    def save(at_step, metrics_for_best=None):
      ckpt.save(at_step, state, {"loader": loader.get_state()},
                {"model": meta_model, "step": at_step, "val": val_metrics,
                 "skipped": loader.skipped.to_dict()}, metrics_for_best)

    def flush(step_metrics, at_step) -> dict[str, float]:
      host = jax.device_get(step_metrics)
      scalars = {}
      for k, v in host.items():
        if isinstance(v, tuple):
          s, n = float(v[0]), float(v[1])
          acc = sums.setdefault(k, [0.0, 0.0])
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
            + f"); stopping. The last good checkpoint is step {last_good} in {ckpt.directory}")
      return scalars

    signals = faults.StopSignals()
    try:
      signals.__enter__()
      while step < self.total_steps:
        batch = next(loader)
        state, metrics = train_step(state, to_device(batch, self.data_sharding))
        step += 1
        ckpt.check_errors()  # a failed asynchronous save stops the run now, in one line
        if pending is not None:
          flush(*pending)
        pending = (metrics, step)
        due_log = step % log_every == 0 or step == self.total_steps
        due_eval = eval_every and (step % eval_every == 0 or step == self.total_steps)
        due_ckpt = (ckpt_every and step % ckpt_every == 0) or step == self.total_steps
        if due_log or due_eval or due_ckpt:
          flush(*pending)
          pending = None
          train_scalars = {f"train/{k}": s / n for k, (s, n) in sums.items() if n}
          sums.clear()
          hp = jax.device_get({k: metrics[k] for k in ("lr", "grad_norm", "param_norm")})
          train_scalars.update({f"train/{k}": float(v) for k, v in hp.items()})
          train_scalars["train/img_per_s"] = progress.rate(step)
          train_scalars["train/skipped"] = loader.skipped.count
          writer.write(step, train_scalars)
          if due_log:
            progress.report(step, {k[6:]: v for k, v in train_scalars.items()
                                   if k.endswith(("loss", "accuracy")) or k == "train/lr"})
        if due_eval:
          try:
            val_metrics = evaluator.validate(state)
          except BaseException:
            # The step's checkpoint comes first (without a metric to rank it), so a failing
            # validation loses no training; the best-metric ranking needs the validation, which
            # is why the save otherwise follows it.
            save(step)
            raise
          writer.write(step, val_metrics)
          if main:
            print(f"validation step {step}: " + " | ".join(
                f"{k} {v:.4f}" for k, v in val_metrics.items()), flush=True)
        stop = step < self.total_steps and step % stop_every == 0 and signals.stop_requested(
            jax.process_count() > 1)
        if due_ckpt or stop:
          save(step, val_metrics if (c.best_metric and due_eval) else None)
          last_good = step
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
    summary = {"step": step, "val": val_metrics, "skipped": loader.skipped.to_dict(),
               "best_step": ckpt.best_step(), "latest_step": ckpt.latest_step()}
    if main:
      _write_json(os.path.join(workdir, "train_summary.json"), summary)
      if loader.skipped.count:
        print(f"skipped {loader.skipped.count} bad examples while training; first: "
              f"{loader.skipped.examples[:3]}", flush=True)
    return summary


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


# Variables of a plain cluster (no Slurm / Open MPI for jax.distributed to detect).
_ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
_ENV_PROCESS_ID = "JAX_PROCESS_ID"
_ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
_ENV_LOCAL_DEVICES = "JAX_LOCAL_DEVICE_IDS"


def distributed_args(multihost: bool, environ: Mapping[str, str]) -> dict[str, Any] | None:
  """Keyword arguments of ``jax.distributed.initialize`` for this process; None: single process.

  With JAX_NUM_PROCESSES / JAX_PROCESS_ID set, the coordinator, count, id (and
  JAX_LOCAL_DEVICE_IDS) are passed explicitly and cluster detection is turned off, so a plain
  launch inside a Slurm allocation is not mistaken for one task per GPU. Otherwise nothing is
  passed: jax detects Slurm, Open MPI, Kubernetes and Cloud TPU itself (and reads
  JAX_COORDINATOR_ADDRESS, e.g. to override Slurm's first-node address).
  """
  explicit = [k for k in (_ENV_NUM_PROCESSES, _ENV_PROCESS_ID) if environ.get(k)]
  if not (multihost or environ.get(_ENV_COORDINATOR) or explicit):
    return None
  if not explicit:
    return {}
  missing = [k for k in (_ENV_COORDINATOR, _ENV_NUM_PROCESSES, _ENV_PROCESS_ID)
             if not environ.get(k)]
  if missing:
    raise app.UsageError(f"multi-host: {', '.join(explicit)} set but {', '.join(missing)} not; "
                         "a plain cluster needs all of JAX_COORDINATOR_ADDRESS (host:port of "
                         "process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID")

  def integer(key: str) -> int:
    try:
      return int(environ[key])
    except ValueError:
      raise app.UsageError(f"{key}={environ[key]!r} is not an integer") from None

  n, i = integer(_ENV_NUM_PROCESSES), integer(_ENV_PROCESS_ID)
  if n < 1 or not 0 <= i < n:
    raise app.UsageError(f"{_ENV_PROCESS_ID}={i} must be in [0, {_ENV_NUM_PROCESSES}={n})")
  address = environ[_ENV_COORDINATOR]
  if not address.rpartition(":")[2].isdigit():
    raise app.UsageError(f"{_ENV_COORDINATOR}={address!r} must be host:port")
  args = {"coordinator_address": address, "num_processes": n, "process_id": i,
          "cluster_detection_method": "deactivate"}
  if environ.get(_ENV_LOCAL_DEVICES):
    try:
      args["local_device_ids"] = [int(d) for d in environ[_ENV_LOCAL_DEVICES].split(",")]
    except ValueError:
      raise app.UsageError(f"{_ENV_LOCAL_DEVICES}={environ[_ENV_LOCAL_DEVICES]!r} is not a "
                           "comma-separated list of integers") from None
  return args


def init_distributed(multihost: bool) -> None:
  """Calls ``jax.distributed.initialize`` when asked (before any other JAX call), then prints
  this process' place: one line per process, so a launcher's log shows every host joined."""
  args = distributed_args(multihost, os.environ)
  if args is not None:
    try:
      jax.distributed.initialize(**args)
    except ValueError as e:  # jax found no cluster to take the missing values from
      raise app.UsageError(
          f"jax.distributed.initialize: {e} No Slurm / Open MPI environment was detected: set "
          "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID "
          "(launch/multihost.sh does)") from None
  print(f"process {jax.process_index()}/{jax.process_count()}: {jax.local_device_count()} "
        f"local / {jax.device_count()} global devices ({jax.default_backend()})", flush=True)


def quiet_logs() -> None:
  """Warnings only from libraries (Orbax logs every file it writes at INFO), progress from ours;
  an explicit --verbosity wins."""
  import logging as std_logging  # pylint: disable=g-import-not-at-top
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS["verbosity"].present:
    absl_logging.set_verbosity(absl_logging.WARNING)
    std_logging.getLogger("jaxface").setLevel(std_logging.INFO)


def main(argv: Sequence[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  quiet_logs()
  init_distributed(_FLAGS["multihost"].value)
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
  except (config_lib.ConfigError, TrainingDiverged, BelowExpectation, faults.WorkdirError,
          faults.WorkdirBusy, checkpointing.CheckpointUnreadable,
          checkpointing.SaveFailed) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    return 2
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(main)
