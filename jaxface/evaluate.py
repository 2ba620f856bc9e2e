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

A run on a dataset mixture (``jaxface.mixture``) also reports each dataset apart:
``results.json`` keeps the whole mixture's ``{task: ...}`` at the top and adds
``"per_dataset": {entry: {task: ...}}`` (the same report over that dataset's examples); the fold
summary and the ensemble do the same (``summary["per_dataset"][entry][task]``).
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

from absl import app
from absl import flags

from jaxface import checkpointing
from jaxface import cli
from jaxface import config_lib
from jaxface import evaluator as evaluator_lib
from jaxface import mixture as mixture_lib
from jaxface import stages as stages_lib
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
  _FLAGS["multihost"] = cli.define_multihost_flag(
      "call jax.distributed.initialize() first (as jaxface.train does)")


def evaluate_folds(workdirs: Sequence[str], out_dir: str, checkpoint=None) -> dict[str, Any]:
  """Evaluates each fold's run; mean, sample std (ddof=1) and standard error of each metric."""
  per_fold = []
  for w in workdirs:
    per_fold.append(evaluator_lib.evaluate(evaluator_lib.load_run_config(w), w, checkpoint))
  summary = _fold_summary(per_fold)
  entries = [e for e in per_fold[0].get(mixture_lib.PER_DATASET, {})
             if all(e in r.get(mixture_lib.PER_DATASET, {}) for r in per_fold)]
  if entries:
    summary[mixture_lib.PER_DATASET] = {
        e: _fold_summary([r[mixture_lib.PER_DATASET][e] for r in per_fold]) for e in entries}
  result = {"folds": list(workdirs), "summary": summary,
            "per_fold": [{k: v for k, v in r.items() if not k.startswith("_")} for r in per_fold]}
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "folds.json"), "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2, default=checkpointing.json_default)
  for task, s in summary.items():
    if task == mixture_lib.PER_DATASET:
      continue
    print(f"{task}: " + ", ".join(f"{m} {v['mean']:.4f} (std {v['std']:.4f}, standard error "
                                  f"{v['stderr']:.4f})" for m, v in s.items()
                                  if isinstance(v, dict)), flush=True)
  return result


def _fold_summary(per_fold: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """``{task: {metric: fold_summary, "n": total}}`` of the folds' ``{task: report}`` dicts."""
  summary = {}
  tasks = [k for k in per_fold[0] if not k.startswith("_") and k != mixture_lib.PER_DATASET]
  for task in tasks:
    summary[task] = {}
    for metric in ("accuracy", "one_off", "aabd"):
      values = [r[task][metric] for r in per_fold if metric in r.get(task, {})]
      if len(values) == len(per_fold):
        summary[task][metric] = metrics_lib.fold_summary(values)
    summary[task]["n"] = int(sum(r.get(task, {}).get("n", 0) for r in per_fold))
  return summary


def evaluate_ensemble(workdirs: Sequence[str], out_dir: str, checkpoint=None,
                      split: str | None = None) -> dict[str, Any]:
  """Mean of the member runs' probabilities per task over the same split and examples."""
  members, tasks, builder, used_split = [], None, None, None
  for w in workdirs:
    config = evaluator_lib.load_run_config(w)
    evaluator, state, step, b, t = evaluator_lib.restore(config, w, checkpoint)
    s = split or config.eval.split or config.data.test_split
    members.append(evaluator.predict(state, s))
    tasks = tasks or t
    builder, used_split = (builder, used_split) if members[1:] else (b, s)
  ids0 = members[0]["ids"]
  for w, m in zip(workdirs[1:], members[1:]):
    if list(m["ids"]) != list(ids0):
      raise ValueError(f"ensemble member {w} evaluated different examples than {workdirs[0]}")
  common = [t for t in tasks if all(t.name in m["probs"] for m in members)]
  probs = {t.name: metrics_lib.ensemble_probs([m["probs"][t.name] for m in members])
           for t in common}
  labels = {t.name: members[0]["labels"][t.name] for t in common if t.labelled}
  results = evaluator_lib.reports(common, probs, labels)
  results["_run"] = {"members": list(workdirs), "n": int(len(ids0))}
  results["members"] = {w: evaluator_lib.reports(common, m["probs"], m["labels"]) for w, m in
                        zip(workdirs, members)}
  parts, part_runs = evaluator_lib.per_dataset(
      common, builder, {"ids": ids0, "probs": probs, "labels": labels,
                        "part_sizes": members[0].get("part_sizes")}, used_split)
  if parts:
    results[mixture_lib.PER_DATASET] = parts
    results["_run"][mixture_lib.PER_DATASET] = part_runs
  evaluator_lib.write_outputs(out_dir, common, results)
  return results


def main(argv: Sequence[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli.quiet_logs()  # before jax initialises its backends: no INFO line ahead of a one-line error
  cli.init_distributed(_FLAGS["multihost"].value)
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
  config = config_lib.load(spec) if spec else evaluator_lib.load_run_config(workdir)
  if config.get("stages"):
    for _, stage, sub in stages_lib.stages(config, workdir):
      evaluator_lib.evaluate(stage, sub, _FLAGS["checkpoint"].value, _FLAGS["split"].value)
    return 0
  evaluator_lib.evaluate(config, workdir, _FLAGS["checkpoint"].value, _FLAGS["split"].value)
  return 0


if __name__ == "__main__":
  cli.run(main, define_flags=define_flags,
          expected=(ValueError, checkpointing.CheckpointUnreadable))
