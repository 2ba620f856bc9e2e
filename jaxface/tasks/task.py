"""What a run predicts, one class per kind: its loss and metric sums, prediction, report and files.

A :class:`Task` is one output of the model (a label key of the dataset, or the saliency map) and
its kind's logic. The kinds are ``"class"`` (:class:`~jaxface.tasks.classification.Classification`:
softmax over class names, single- or multi-task, ordinal classes add one-off accuracy and AABD to
the report), ``"attributes"`` (:class:`~jaxface.tasks.classification.Attributes`: one sigmoid per
name, CelebA's 40 attributes), ``"saliency"`` (:class:`~jaxface.tasks.saliency.Saliency`: a map
scored against the dataset's fixation density) and ``"output"`` (:class:`Output`: the raw output
of an imported model that is not a classifier; nothing to train or score).

``Task(name, kind, class_names, ordinal)`` builds the kind's class, so a task read back from a
workdir's ``run.json`` (``{"name", "kind", "class_names", "ordinal"}``, the fields of ``__dict__``)
is the same object it was in training. Callers loop over tasks and never compare kinds:

* in the jitted steps: :meth:`Task.loss_and_metrics` (``(loss, {name: (sum, count)})``),
  :meth:`Task.eval_metrics` (extra sums of evaluation) and :meth:`Task.predict`;
* on the host: :meth:`Task.report` (the JSON-ready results of a split), :meth:`Task.write_outputs`
  (its lines of ``report.txt`` and its files) and :meth:`Task.record` (one prediction for
  ``jaxface.predict``);
* for the data: :meth:`Task.from_dataset` (the tasks of a config) and :meth:`Task.label_keys`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxface import config_lib

KINDS: dict[str, type["Task"]] = {}


@dataclasses.dataclass(frozen=True)
class Task:
  """One output of a run: its record key, kind, class names and whether the classes are ordered."""
  name: str  # the record key, e.g. "age"
  kind: str  # one of KINDS; Task(name, kind, ...) builds that kind's class
  class_names: tuple[str, ...] = ()
  ordinal: bool = False

  KIND: ClassVar[str] = ""
  labelled: ClassVar[bool] = False  # trained and scored against batch[name]; one prob per class
  single_label: ClassVar[bool] = False  # one class per example (its label and confidence)
  class_weighted: ClassVar[bool] = False  # takes config.task.class_weights
  dense: ClassVar[bool] = False  # the output is a map (no classifier head); trains on the maps

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    if cls.__dict__.get("KIND"):
      KINDS[cls.KIND] = cls

  def __new__(cls, *args, **kwargs):
    if cls is Task:
      kind = args[1] if len(args) > 1 else kwargs.get("kind")
      cls = kind_class(kind)
    return super().__new__(cls)

  def __post_init__(self):
    if self.kind != self.KIND:
      raise ValueError(f"task {self.name!r}: a {type(self).__name__} has kind {self.KIND!r}, "
                       f"got {self.kind!r}")
    object.__setattr__(self, "class_names", tuple(self.class_names))

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  # --------------------------------------------------------------------------- data

  @classmethod
  def from_dataset(cls, config, builder) -> list[Task]:
    """The tasks of ``config.data.labels`` with class names read from the dataset's features."""
    features = builder.info.features
    out = []
    for key in config.data.labels:
      if key not in features:
        raise config_lib.ConfigError(
            f"config.data.labels: {key!r} is not a feature of {config.data.name}; features: "
            f"{', '.join(sorted(features))}")
      out.append(cls.from_feature(key, features[key], config, builder))
    return out

  @classmethod
  def from_feature(cls, key: str, feature, config, builder) -> Task:
    raise config_lib.ConfigError(f"config.task.kind: {cls.KIND!r} is not trained from labels")

  @classmethod
  def label_keys(cls, config) -> tuple[str, ...]:
    """The record keys the loader batches for a config of this kind."""
    return tuple(config.data.labels) if cls.labelled else ()

  # --------------------------------------------------------------------------- jitted steps

  def predict(self, output: jax.Array) -> jax.Array:
    """The model's float32 output -> what evaluation and prediction report (here: itself)."""
    return output

  def loss_and_metrics(self, output: jax.Array, batch: Mapping[str, jax.Array], mask: jax.Array,
                       params: Any, config, class_weights: Mapping[str, jax.Array]
                       ) -> tuple[jax.Array, dict[str, tuple[jax.Array, jax.Array]]]:
    """``(loss, {metric: (sum, count)})`` of one (micro-)batch; ``mask`` (B,) float32."""
    raise ValueError(f"task {self.name!r} ({self.KIND}) has no training loss")

  def eval_metrics(self, output: jax.Array, batch: Mapping[str, jax.Array]
                   ) -> dict[str, tuple[jax.Array, jax.Array]]:
    """Sums only evaluation reports (beyond the loss and metrics of training)."""
    return {}

  # --------------------------------------------------------------------------- host

  def report(self, probs: np.ndarray | None, labels: np.ndarray | None,
             sums: Mapping[str, Sequence[float]] | None, n: int | None) -> dict | None:
    """JSON-ready results of one split (None when this task has nothing to report): from the
    predictions and labels of the labelled examples, or from the step's ``sums``."""
    return None

  def write_outputs(self, out_dir: str, report: dict) -> list[str]:
    """Writes this task's files into ``out_dir``; returns its lines of ``report.txt``."""
    from jaxface import checkpointing  # pylint: disable=g-import-not-at-top
    text = json.dumps(report, default=checkpointing.json_default)
    return [f"== {self.name}: {text[:2000]}"]

  def record(self, probs: np.ndarray) -> dict[str, Any]:
    """One example's prediction as ``jaxface.predict`` writes it."""
    raise ValueError(f"task {self.name!r} ({self.KIND}) has no per-image record")


@dataclasses.dataclass(frozen=True)
class Output(Task):
  """The raw output of an imported model that is no classifier (``python -m jaxface.convert``)."""
  kind: str = "output"
  KIND: ClassVar[str] = "output"


def kind_class(kind: str) -> type[Task]:
  if kind not in KINDS:
    raise ValueError(f"unknown task kind {kind!r}; kinds: {', '.join(KINDS)}")
  return KINDS[kind]


def average_views(p: jax.Array, num_views: int) -> jax.Array:
  """(N * V, ...) -> (N, ...): the mean of each image's ``V`` contiguous views (GilNet's
  over-sampling: 4 corners and the centre, and their mirrors; the Caffe deploy batch of 10 is one
  image's views)."""
  if num_views < 1:
    raise ValueError(f"num_views must be >= 1, got {num_views}")
  if p.shape[0] % num_views:
    raise ValueError(f"{p.shape[0]} rows are not a multiple of num_views={num_views}")
  return p.reshape(-1, num_views, *p.shape[1:]).mean(1)


def loss_and_metrics(tasks: Sequence[Task], outputs: Mapping[str, jax.Array],
                     batch: Mapping[str, jax.Array], params: Any, config,
                     class_weights: Mapping[str, jax.Array]) -> tuple[jax.Array, dict]:
  """The multi-task objective ``sum_t w_t * loss_t`` (``w_t`` from ``config.task.loss_weights``,
  1 by default) and every task's summed metrics (``{name: (sum, count)}``) of one batch.

  Each loss is a mean over its own labelled examples, so an example labelled for one task only
  still trains that task at full strength, and a task with none in the batch adds 0.
  """
  weights = dict(config.task.loss_weights) if config.task.loss_weights else {}
  unknown = sorted(set(weights) - {t.name for t in tasks})
  if unknown:
    raise config_lib.ConfigError(f"config.task.loss_weights: {unknown} are not tasks of this run "
                                 f"({', '.join(t.name for t in tasks)})")
  mask = batch["mask"].astype(jnp.float32)
  total = jnp.zeros((), jnp.float32)
  metrics = {}
  for t in tasks:
    o = outputs[t.name].astype(jnp.float32)
    w = float(weights.get(t.name, 1.0))
    loss, m = t.loss_and_metrics(o, batch, mask, params, config, class_weights)
    metrics.update(m)
    total = total + w * loss
  return total, metrics


def reports(tasks: Sequence[Task], probs: Mapping[str, np.ndarray],
            labels: Mapping[str, np.ndarray], sums: Mapping[str, Sequence[float]] | None = None,
            n: int | None = None) -> dict[str, dict]:
  """``{task: report}`` of the tasks that have one (see :meth:`Task.report`)."""
  out = {}
  for t in tasks:
    r = t.report(probs.get(t.name), labels.get(t.name), sums, n)
    if r is not None:
      out[t.name] = r
  return out
