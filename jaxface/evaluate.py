"""Evaluation: ``python -m jaxface.evaluate --workdir DIR [--config FILE[:args]]
[--checkpoint latest|best|STEP] [--split SPLIT] [--folds DIR,DIR,...] [--ensemble DIR,DIR,...]``.

Restores the run's Orbax checkpoint (into an abstract, sharded target), runs one pass over the
evaluation split (the last batch padded and masked, so every example counts exactly once on any
device count) and writes ``DIR/eval/``: ``results.json`` (``{task: {"accuracy", "n", ...}}`` plus
one-off accuracy and AABD for ordinal labels, per-class accuracy and the confusion matrix),
``report.txt``, ``confusion_<task>.csv`` / ``.png`` and ``samples.png`` (crops, saliency maps and
reweighted faces when the run uses saliency).

``--folds`` evaluates each workdir (e.g. the five Adience folds) and writes the mean and standard
deviation of each metric; ``--ensemble`` averages the probabilities of several runs over the same
split. Without ``--config`` the run's own ``config.json`` is used.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Sequence

from absl import app
from absl import flags
import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np

from jaxface import checkpointing
from jaxface import config_lib
from jaxface import data as data_lib
from jaxface import steps as steps_lib
from jaxface.tasks import metrics as metrics_lib

_FLAGS: dict[str, Any] = {}


def define_flags() -> None:
  """Command-line flags (defined only when run as a program, so importing stays side-effect free)."""
  _FLAGS["workdir"] = flags.DEFINE_string("workdir", None, "the run's directory")
  _FLAGS["config"] = flags.DEFINE_string("config", None,
                                         "config file[:args] (default: DIR/config.json)")
  _FLAGS["checkpoint"] = flags.DEFINE_string(
      "checkpoint", None, "latest | best | STEP (default: config.eval.checkpoint)")
  _FLAGS["split"] = flags.DEFINE_string("split", None,
                                        "split to evaluate (default: config.eval.split)")
  _FLAGS["folds"] = flags.DEFINE_list("folds", None,
                                      "workdirs of the folds: mean and std of the metrics")
  _FLAGS["ensemble"] = flags.DEFINE_list("ensemble", None,
                                         "workdirs whose probabilities are averaged")
  _FLAGS["out"] = flags.DEFINE_string("out", None, "output directory for --folds / --ensemble")
  _FLAGS["multihost"] = flags.DEFINE_bool(
      "multihost", False, "call jax.distributed.initialize() first (as jaxface.train does)")


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: pass --config or a workdir written by "
                            "jaxface.train")
  with open(path, encoding="utf-8") as f:
    return ml_collections.ConfigDict(json.load(f))


class Evaluator:
  """Runs a model over an evaluation split; used by training (validation) and evaluation."""

  def __init__(self, config, builder, tasks, model, prepare, mesh, workdir: str | None = None):
    self.config = config
    self.workdir = workdir  # where a saliency cache is recorded (saliency.mode "cache")
    self.builder = builder
    self.tasks = tasks
    self.mesh = mesh
    self.data_sharding = NamedSharding(mesh, P("data"))
    self.replicated = NamedSharding(mesh, P())
    bs = int(config.eval.batch_size or config.batch_size)
    n_dev = jax.device_count()
    self.global_batch = -(-bs // n_dev) * n_dev
    self.local_batch = self.global_batch // jax.process_count()
    self._step = jax.jit(steps_lib.make_eval_step(model, tasks, config, prepare),
                         in_shardings=(self.replicated, self.data_sharding),
                         out_shardings=self.replicated)

  def predict(self, state, split: str, max_batches: int = 0) -> dict[str, Any]:
    """Probabilities (or maps), labels, masks and ids of every example of ``split``."""
    from jaxface.train import to_device  # pylint: disable=g-import-not-at-top
    src = data_lib.source(self.config, self.builder, split, workdir=self.workdir)
    loader = data_lib.eval_loader(self.config, src, self.local_batch)
    out = {"probs": {t.name: [] for t in self.tasks}, "labels": {t.name: [] for t in self.tasks},
           "mask": [], "ids": [], "sums": {}}
    # Every process must run the same number of steps (the step is one program over all of
    # them): as many as the largest shard needs; a process whose shard ran out feeds masked
    # copies of a batch it has seen.
    largest_shard = -(-len(src) // jax.process_count())
    num_batches = -(-largest_shard // self.local_batch)
    if max_batches:
      num_batches = min(num_batches, max_batches)
    template = None
    it = iter(loader)
    try:
      for _ in range(num_batches):
        batch = next(it, None)
        if batch is None:
          if template is None:
            raise ValueError(f"split {split!r}: process {jax.process_index()} got no example "
                             f"(all skipped? {loader.skipped.to_dict()})")
          batch = dict(template, mask=np.zeros_like(template["mask"]))
        template = batch
        result = jax.device_get(self._step(state, to_device(batch, self.data_sharding)))
        mask = _gather(batch["mask"])
        out["mask"].append(mask)
        out["ids"].append(_gather_ids(batch.get("id")))
        for t in self.tasks:
          out["probs"][t.name].append(np.asarray(result[t.name]))
          if t.kind != "saliency":
            out["labels"][t.name].append(_gather(batch[t.name]))
        for k, (s, n) in result.get("metrics", {}).items():
          acc = out["sums"].setdefault(k, [0.0, 0.0])
          acc[0] += float(s)
          acc[1] += float(n)
      out["skipped"] = loader.skipped.to_dict()
    finally:
      loader.close()
    mask = np.concatenate(out["mask"]) if out["mask"] else np.zeros(0, bool)
    keep = mask.astype(bool)
    result = {"ids": np.concatenate(out["ids"])[keep] if out["ids"] else np.zeros(0, object),
              "probs": {}, "labels": {}, "sums": out["sums"], "skipped": out["skipped"]}
    for t in self.tasks:
      if out["probs"][t.name]:
        result["probs"][t.name] = np.concatenate(out["probs"][t.name])[keep]
      if out["labels"][t.name]:
        result["labels"][t.name] = np.concatenate(out["labels"][t.name])[keep]
    return result

  def validate(self, state) -> dict[str, float]:
    """``{"val/<task>/accuracy": ..., "val/<task>/loss": ...}`` on ``config.data.eval_split``."""
    pred = self.predict(state, self.config.data.eval_split)
    return {f"val/{k}": s / n for k, (s, n) in pred["sums"].items() if n}


def _gather(x: np.ndarray) -> np.ndarray:
  """This process' part of a batch -> the global batch, in the order of the step's outputs.

  The rows are placed with the evaluation step's own sharding (the ``data`` axis of
  ``train.make_mesh()``), so labels and masks line up with the predictions whatever order the
  mesh gives the processes' devices.
  """
  if jax.process_count() == 1:
    return np.asarray(x)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  from jaxface.train import make_mesh  # pylint: disable=g-import-not-at-top
  sharding = NamedSharding(make_mesh(), P("data"))
  global_x = jax.make_array_from_process_local_data(sharding, np.asarray(x))
  return np.asarray(multihost_utils.process_allgather(global_x, tiled=True))


def _gather_ids(ids) -> np.ndarray:
  """String ids of this process' part of a batch -> those of the global batch (as ``_gather``).

  Collectives move numbers only: each id travels as UTF-8 bytes in a zero-padded uint8 row, with
  its length gathered first (to agree on the row width and to cut the padding off exactly).
  """
  if ids is None:
    return np.zeros(0, object)
  if jax.process_count() == 1:
    return np.asarray(ids, object)
  encoded = [str(i).encode("utf-8") for i in ids]
  lengths = _gather(np.asarray([len(b) for b in encoded], np.int32))
  rows = np.zeros((len(encoded), max(int(lengths.max(initial=0)), 1)), np.uint8)
  for row, b in zip(rows, encoded):
    row[:len(b)] = np.frombuffer(b, np.uint8)
  gathered = _gather(rows)
  out = np.empty(len(gathered), object)
  out[:] = [bytes(r[:n]).decode("utf-8") for r, n in zip(gathered, lengths)]
  return out


def reports(tasks, probs: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict:
  out = {}
  for t in tasks:
    if t.kind == "class":
      out[t.name] = metrics_lib.classification_report(probs[t.name], labels[t.name],
                                                      list(t.class_names), ordinal=t.ordinal)
    elif t.kind == "attributes":
      r = metrics_lib.attribute_accuracy(probs[t.name], labels[t.name], list(t.class_names))
      out[t.name] = {"accuracy": r["mean"], "n": int(len(labels[t.name])), **r}
  return out


def abstract_state(config, model, mesh):
  """The train state's shapes, dtypes and (replicated) shardings, without computing anything."""
  from jaxface import optim  # pylint: disable=g-import-not-at-top
  replicated = NamedSharding(mesh, P())
  size = tuple(config.model.input_size)
  variables = jax.eval_shape(lambda: steps_lib.init_variables(model, size, config.seed))
  tx = optim.make_optimizer(config.optim, variables["params"], 1, 1)
  shapes = jax.eval_shape(lambda v: steps_lib.create_state(v, tx, config.seed), variables)
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
                      shapes)


def _restore(config, workdir: str, checkpoint):
  """``(evaluator, state, step, builder, tasks)`` of a run."""
  from jaxface import train as train_lib  # pylint: disable=g-import-not-at-top
  mesh = train_lib.make_mesh()
  builder = data_lib.prepare(config)
  tasks = data_lib.tasks(config, builder)
  model = steps_lib.build_model(config, tasks)
  ckpt = checkpointing.Checkpointer(workdir, read_only=True, best_metric=config.best_metric,
                                    best_mode=config.best_mode)
  which = checkpoint or config.eval.checkpoint
  try:
    try:
      checkpointing.resolve_step(ckpt, which)
    except ValueError:
      if which != "best":
        raise
      which = "latest"  # no validation ran: the last one
    # Orbax lists only finalized steps (a save in progress is a *.orbax-checkpoint-tmp
    # directory), so a workdir in use is read safely; an unreadable latest/best falls back.
    step, state, _, _ = ckpt.restore_readable(which, abstract_state(config, model, mesh))
  finally:
    ckpt.close()
  prepare = train_lib.make_prepare(config, mesh)
  return (Evaluator(config, builder, tasks, model, prepare, mesh, workdir), state, step, builder,
          tasks)


def evaluate(config, workdir: str, checkpoint: str | int | None = None,
             split: str | None = None) -> dict[str, Any]:
  """Evaluates a run's checkpoint and writes ``workdir/eval``; returns the results dict."""
  if config.get("stages"):
    raise config_lib.ConfigError("a chain config (config.stages) is evaluated stage by stage: "
                                 "pass the stage's workdir")
  evaluator, state, step, builder, tasks = _restore(config, workdir, checkpoint)
  split = split or config.eval.split or config.data.test_split
  pred = evaluator.predict(state, split, int(config.eval.max_batches or 0))
  results = reports(tasks, pred["probs"], pred["labels"])
  for t in tasks:
    if t.kind == "saliency":
      results[t.name] = {k.split("/", 1)[1]: total / count
                         for k, (total, count) in pred["sums"].items()
                         if k.startswith("saliency/") and count}
      results[t.name]["n"] = int(len(pred["ids"]))
  results["_run"] = {"workdir": workdir, "step": int(step), "split": split,
                     "skipped": pred["skipped"], "n": int(len(pred["ids"]))}
  if jax.process_index() == 0:
    out_dir = os.path.join(workdir, "eval")
    write_outputs(out_dir, tasks, results, pred)
    write_samples(config, builder, split, out_dir, state, evaluator)
  return results


def write_outputs(out_dir: str, tasks, results: dict, pred: dict | None = None) -> None:
  from jaxface import plots  # pylint: disable=g-import-not-at-top
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "results.json"), "w", encoding="utf-8") as f:
    json.dump(results, f, indent=2, default=checkpointing.json_default)
  lines = []
  for t in tasks:
    r = results.get(t.name)
    if r is None:
      continue
    if t.kind == "class":
      lines.append(f"== {t.name}")
      lines.append(metrics_lib.format_report(r))
      cm = np.asarray(r["confusion"])
      np.savetxt(os.path.join(out_dir, f"confusion_{t.name}.csv"), cm, fmt="%d", delimiter=",",
                 header=",".join(t.class_names), comments="")
      plots.confusion_matrix_png(cm, list(t.class_names), os.path.join(out_dir,
                                                                       f"confusion_{t.name}.png"),
                                 title=f"{t.name} (n={r['n']}, accuracy {r['accuracy']:.3f})")
    else:
      text = json.dumps(r, default=checkpointing.json_default)
      lines.append(f"== {t.name}: {text[:2000]}")
  with open(os.path.join(out_dir, "report.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines), flush=True)


def write_samples(config, builder, split: str, out_dir: str, state, evaluator) -> None:
  """``samples.png``: crops, their saliency maps and the reweighted faces the model sees."""
  from data_pipelines import pp  # pylint: disable=g-import-not-at-top
  from jaxface import plots  # pylint: disable=g-import-not-at-top
  n = int(config.eval.num_sample_images or 0)
  if n <= 0:
    return
  src = data_lib.source(config, builder, split, workdir=evaluator.workdir)
  pipe = data_lib.pipeline(config, config.data.eval_pipe)
  crop_ops = [o for o in pipe.ops if o.name not in ("saliency", "oversample10")]
  crop_pipe = pp.Pipeline(crop_ops, fuse=pipe.fuse)
  tiles, titles = [], []
  for i in range(min(n, len(src))):
    ex = pipe(dict(src[i]))
    crop = crop_pipe(dict(src[i]))
    if ex["image"].ndim == 4:  # oversampled views: show the centre view
      ex["image"] = ex["image"][4]
    tiles.append(crop["image"])
    titles.append(f"{crop.get('id', i)}"[-18:])
    sal = next((crop[k] for k in pp.MAP_KEYS if crop.get(k) is not None), None)
    if sal is not None and config.saliency.mode != "none":
      tiles.append(np.repeat(np.asarray(sal)[..., None], 3, -1))
      titles.append("saliency")
      tiles.append(ex["image"])
      titles.append(f"reweighted r={config.saliency.r}")
  ncols = 3 if config.saliency.mode != "none" else 4
  plots.save_image_grid(np.stack(tiles), titles, os.path.join(out_dir, "samples.png"), ncols)


def evaluate_folds(workdirs: Sequence[str], out_dir: str, checkpoint=None) -> dict[str, Any]:
  """Evaluates each fold's run; mean and sample std (ddof=1) of each task's metrics."""
  per_fold = []
  for w in workdirs:
    per_fold.append(evaluate(load_run_config(w), w, checkpoint))
  summary = {}
  for task in [k for k in per_fold[0] if not k.startswith("_")]:
    summary[task] = {}
    for metric in ("accuracy", "one_off", "aabd"):
      values = [r[task][metric] for r in per_fold if metric in r.get(task, {})]
      if len(values) == len(per_fold):
        summary[task][metric] = metrics_lib.fold_summary(values)
    summary[task]["n"] = int(sum(r[task]["n"] for r in per_fold))
  result = {"folds": list(workdirs), "summary": summary,
            "per_fold": [{k: v for k, v in r.items() if not k.startswith("_")} for r in per_fold]}
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "folds.json"), "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2, default=checkpointing.json_default)
  for task, s in summary.items():
    print(f"{task}: " + ", ".join(f"{m} {v['mean']:.4f} +- {v['std']:.4f}"
                                  for m, v in s.items() if isinstance(v, dict)), flush=True)
  return result


def evaluate_ensemble(workdirs: Sequence[str], out_dir: str, checkpoint=None,
                      split: str | None = None) -> dict[str, Any]:
  """Mean of the member runs' probabilities per task over the same split and examples."""
  members, tasks = [], None
  for w in workdirs:
    config = load_run_config(w)
    evaluator, state, step, _, t = _restore(config, w, checkpoint)
    s = split or config.eval.split or config.data.test_split
    members.append(evaluator.predict(state, s))
    tasks = tasks or t
  ids0 = members[0]["ids"]
  for w, m in zip(workdirs[1:], members[1:]):
    if list(m["ids"]) != list(ids0):
      raise ValueError(f"ensemble member {w} evaluated different examples than {workdirs[0]}")
  common = [t for t in tasks if all(t.name in m["probs"] for m in members)]
  probs = {t.name: metrics_lib.ensemble_probs([m["probs"][t.name] for m in members])
           for t in common}
  labels = {t.name: members[0]["labels"][t.name] for t in common if t.kind != "saliency"}
  results = reports(common, probs, labels)
  results["_run"] = {"members": list(workdirs), "n": int(len(ids0))}
  results["members"] = {w: reports(common, m["probs"], m["labels"]) for w, m in
                        zip(workdirs, members)}
  write_outputs(out_dir, common, results)
  return results


def main(argv: Sequence[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from jaxface.train import quiet_logs  # pylint: disable=g-import-not-at-top
  quiet_logs()  # before jax initialises its backends: no INFO line ahead of a one-line error
  from jaxface.train import init_distributed  # pylint: disable=g-import-not-at-top
  init_distributed(_FLAGS["multihost"].value)
  try:
    if _FLAGS["folds"].value:
      folds = _FLAGS["folds"].value
      evaluate_folds(folds, _FLAGS["out"].value or os.path.join(folds[0], "..", "folds_eval"),
                     _FLAGS["checkpoint"].value)
      return 0
    if _FLAGS["ensemble"].value:
      evaluate_ensemble(_FLAGS["ensemble"].value,
                        _FLAGS["out"].value or os.path.join(_FLAGS["ensemble"].value[0], "..",
                                                            "ensemble_eval"),
                        _FLAGS["checkpoint"].value, _FLAGS["split"].value)
      return 0
    if not _FLAGS["workdir"].value:
      raise app.UsageError("--workdir is required (or --folds / --ensemble)")
    spec, workdir = _FLAGS["config"].value, _FLAGS["workdir"].value
    config = config_lib.load(spec) if spec else load_run_config(workdir)
    if config.get("stages"):
      for name in list(config.stage_order) or sorted(config.stages):
        stage = config.stages[name]
        from jaxface.train import resolve_stage_refs  # pylint: disable=g-import-not-at-top
        sub = os.path.join(os.path.abspath(_FLAGS["workdir"].value), name)
        evaluate(resolve_stage_refs(stage, os.path.abspath(_FLAGS["workdir"].value)), sub,
                 _FLAGS["checkpoint"].value, _FLAGS["split"].value)
      return 0
    evaluate(config, _FLAGS["workdir"].value, _FLAGS["checkpoint"].value, _FLAGS["split"].value)
  except (config_lib.ConfigError, FileNotFoundError, ValueError,
          checkpointing.CheckpointUnreadable) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(main)
