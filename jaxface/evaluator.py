"""Evaluation of a run's checkpoint over a split, for training (validation, the test after
training) and for ``jaxface.evaluate`` (the command, folds and ensembles).

``Evaluator.predict`` runs one pass over a split (the last batch padded and masked, so every
example counts exactly once on any device count); ``evaluate`` restores a run's checkpoint, runs
it over the evaluation split and writes ``DIR/eval/``: ``results.json`` (``{task: {"accuracy",
"n", ...}}`` plus one-off accuracy and AABD for ordinal labels, per-class accuracy and the
confusion matrix), ``report.txt``, ``confusion_<task>.csv`` / ``.png`` and ``samples.png`` (crops,
saliency maps and reweighted faces when the run uses saliency).

A run on a dataset mixture (``jaxface.mixture``) reports the whole mixture at the top as above and
each dataset apart: ``results["per_dataset"][<entry>][<task>]`` (the same report, over that
dataset's examples), ``results["_run"]["per_dataset"][<entry>]`` (its split string, ``n``
evaluated, ``source_examples``), a section per dataset in ``report.txt`` and its confusion files
in ``DIR/eval/per_dataset/<entry>/``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np

from jaxface import checkpointing
from jaxface import config_lib
from jaxface import data as data_lib
from jaxface import mixture as mixture_lib
from jaxface import parallel
from jaxface import steps as steps_lib
from jaxface import tasks as tasks_lib
from jaxface.models import from_config as model_config


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: pass --config or a workdir written by "
                            "jaxface.train")
  with open(path, encoding="utf-8") as f:
    return ml_collections.ConfigDict(json.load(f))


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
        result = jax.device_get(self._step(state, parallel.to_device(batch, self.data_sharding)))
        mask = parallel.gather(batch["mask"])
        out["mask"].append(mask)
        out["ids"].append(parallel.gather_ids(batch.get("id")))
        for t in self.tasks:
          out["probs"][t.name].append(np.asarray(result[t.name]))
          if t.labelled:
            out["labels"][t.name].append(parallel.gather(batch[t.name]))
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
    if isinstance(src, mixture_lib.MixtureSource):  # each dataset's examples in the split
      result["part_sizes"] = src.part_sizes()
    for t in self.tasks:
      if out["probs"][t.name]:
        result["probs"][t.name] = np.concatenate(out["probs"][t.name])[keep]
      if out["labels"][t.name]:
        result["labels"][t.name] = np.concatenate(out["labels"][t.name])[keep]
    return result

  def validate(self, state) -> dict[str, float]:
    """``{"val/<task>/accuracy": ..., "val/<task>/loss": ...}`` on ``config.data.eval_split``;
    a mixture adds each dataset's accuracy, ``val/<entry>/<task>/accuracy``."""
    split = self.config.data.eval_split
    pred = self.predict(state, split)
    out = {f"val/{k}": s / n for k, (s, n) in pred["sums"].items() if n}
    parts, _ = per_dataset(self.tasks, self.builder, pred, split)
    for entry, part in parts.items():
      for task, r in part.items():
        out[f"val/{entry}/{task}/accuracy"] = float(r["accuracy"])
    return out


def reports(tasks, probs: dict[str, np.ndarray], labels: dict[str, np.ndarray],
            sums: dict | None = None, n: int | None = None) -> dict:
  return tasks_lib.reports(tasks, probs, labels, sums, n)


def per_dataset(tasks, builder, pred: dict[str, Any], split: str) -> tuple[dict, dict]:
  """``({entry: {task: report}}, {entry: {"split", "n", "source_examples"}})`` of a mixture's
  predictions (empty for a single dataset): each dataset's examples, found by their id prefix."""
  if not isinstance(builder, mixture_lib.Mixture):
    return {}, {}
  results, runs = {}, {}
  masks = mixture_lib.split_of_ids(builder, pred["ids"])
  sizes = pred.get("part_sizes") or {}
  for entry in builder.entries:
    sub = entry.split(split)
    if not sub:
      continue
    keep = masks[entry.key]
    n = int(keep.sum())
    runs[entry.key] = {"dataset": entry.title, "split": sub, "n": n,
                       "source_examples": int(sizes.get(entry.key, 0))}
    if n:
      results[entry.key] = reports(tasks, {k: v[keep] for k, v in pred["probs"].items()},
                                   {k: v[keep] for k, v in pred["labels"].items()})
    else:
      results[entry.key] = {}
  return results, runs


def restore(config, workdir: str, checkpoint):
  """``(evaluator, variables, step, builder, tasks)`` of a run, through ``jaxface.load``.

  The run's model and variables are ``trained.load(workdir, checkpoint, config, mesh)``: restored
  replicated onto this process' mesh (whatever mesh saved them), falling back from an unreadable
  latest / best checkpoint; the evaluator's tasks come from the dataset as in training.
  """
  from jaxface import trained as trained_lib  # pylint: disable=g-import-not-at-top
  mesh = parallel.make_mesh()
  builder = data_lib.prepare(config)
  tasks = data_lib.tasks(config, builder)
  m = trained_lib.load(workdir, checkpoint or config.eval.checkpoint, config=config, mesh=mesh)
  variables = {"params": m.variables["params"],
               "batch_stats": m.variables.get("batch_stats", {})}  # what the eval step reads
  prepare = make_prepare(config, mesh)
  return (Evaluator(config, builder, tasks, m.model, prepare, mesh, workdir), variables, m.step,
          builder, tasks)


def evaluate(config, workdir: str, checkpoint: str | int | None = None,
             split: str | None = None) -> dict[str, Any]:
  """Evaluates a run's checkpoint and writes ``workdir/eval``; returns the results dict."""
  if config.get("stages"):
    raise config_lib.ConfigError("a chain config (config.stages) is evaluated stage by stage: "
                                 "pass the stage's workdir")
  evaluator, state, step, builder, tasks = restore(config, workdir, checkpoint)
  split = split or config.eval.split or config.data.test_split
  pred = evaluator.predict(state, split, int(config.eval.max_batches or 0))
  results = reports(tasks, pred["probs"], pred["labels"], pred["sums"], len(pred["ids"]))
  results["_run"] = {"workdir": workdir, "step": int(step), "split": split,
                     "skipped": pred["skipped"], "n": int(len(pred["ids"]))}
  parts, part_runs = per_dataset(tasks, builder, pred, split)
  if parts:
    results[mixture_lib.PER_DATASET] = parts
    results["_run"][mixture_lib.PER_DATASET] = part_runs
  if jax.process_index() == 0:
    out_dir = os.path.join(workdir, "eval")
    write_outputs(out_dir, tasks, results, pred)
    write_samples(config, builder, split, out_dir, state, evaluator)
  return results


def write_outputs(out_dir: str, tasks, results: dict, pred: dict | None = None) -> None:
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "results.json"), "w", encoding="utf-8") as f:
    json.dump(results, f, indent=2, default=checkpointing.json_default)
  lines = []
  for t in tasks:
    r = results.get(t.name)
    if r is None:
      continue
    lines += t.write_outputs(out_dir, r)
  runs = results.get("_run", {}).get(mixture_lib.PER_DATASET, {})
  for entry, part in results.get(mixture_lib.PER_DATASET, {}).items():
    run = runs.get(entry, {})
    lines.append(f"==== dataset {entry}: {run.get('dataset', '')} split {run.get('split', '')!r}, "
                 f"n={run.get('n', 0)} of {run.get('source_examples', '?')}")
    sub_dir = os.path.join(out_dir, mixture_lib.PER_DATASET, entry)
    os.makedirs(sub_dir, exist_ok=True)
    for t in tasks:
      if part.get(t.name) is not None:
        lines += t.write_outputs(sub_dir, part[t.name])
  with open(os.path.join(out_dir, "report.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines), flush=True)


def _sample_rows(src, n: int) -> list[int]:
  """The first ``n`` rows of ``src``; of a mixture, taken from each dataset in turn."""
  if not isinstance(src, mixture_lib.MixtureSource):
    return list(range(min(n, len(src))))
  starts, sizes = src.offsets[:-1], [len(r) for r in src.rows]
  rows = [int(start + k) for k in range(max(sizes)) for start, size in zip(starts, sizes)
          if k < size]
  return rows[:n]


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
  for i in _sample_rows(src, n):
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
