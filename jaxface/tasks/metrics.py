"""Host-side evaluation metrics (numpy): accuracies, confusion, AABD, folds, ensembles, reports.

Inputs are either class probabilities / scores (N, K), reduced by argmax, or predicted class
indices (N,). Labels below 0 mean "no label for this task" and are left out of every metric (the
report counts them). Definitions follow the papers that report them:

* one-off accuracy (Levi & Hassner, "Age and Gender Classification using Convolutional Neural
  Networks", CVPR Workshops (AMFG) 2015, doi:10.1109/CVPRW.2015.7301352): the predicted ordinal
  class is within one of the true class.
* AABD (Abdolrashidi et al., "Age and Gender Prediction From Face Images Using Attentional
  Convolutional Network", arXiv:2010.03791, 2020): mean absolute difference between true and
  predicted bucket index.
* per-class accuracy is the recall of each class; the confusion matrix has rows = true class,
  columns = predicted class (the layout of Tables 4 and 5 of SAF-BAGE, Gurnani et al., WACV 2019,
  arXiv:1803.05719).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def _preds(probs_or_preds: Any, name: str = "predictions") -> np.ndarray:
  x = np.asarray(probs_or_preds)
  if x.ndim == 2:
    if x.shape[1] == 0:
      raise ValueError(f"{name}: probabilities have no classes (shape {x.shape})")
    return np.argmax(x, axis=1)
  if x.ndim == 1:
    if x.size and not np.issubdtype(x.dtype, np.integer):
      raise ValueError(f"{name}: 1-D input must be integer class indices, got dtype {x.dtype}")
    return x.astype(np.int64)
  raise ValueError(f"{name} must be (N, K) probabilities or (N,) class indices, got shape "
                   f"{x.shape}")


def _labelled(probs_or_preds: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
  """Predicted and true classes of the labelled examples."""
  pred = _preds(probs_or_preds)
  labels = np.asarray(labels)
  if labels.shape != pred.shape:
    raise ValueError(f"labels have shape {labels.shape}, expected ({pred.shape[0]},)")
  if labels.size and not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
  keep = labels >= 0
  return pred[keep], labels[keep].astype(np.int64)


def _mean(x: np.ndarray) -> float:
  if x.size == 0:
    raise ValueError("no labelled examples: the metric is undefined")
  return float(np.mean(x))


def accuracy(probs_or_preds: Any, labels: Any) -> float:
  """Top-1 accuracy over labelled examples."""
  pred, true = _labelled(probs_or_preds, labels)
  return _mean(pred == true)


def one_off_accuracy(probs_or_preds: Any, labels: Any) -> float:
  """Share of labelled examples with ``|pred - true| <= 1`` (ordinal classes)."""
  pred, true = _labelled(probs_or_preds, labels)
  return _mean(np.abs(pred - true) <= 1)


def aabd(probs_or_preds: Any, labels: Any) -> float:
  """Average absolute bucket difference ``mean |pred - true|`` of ordinal class indices."""
  pred, true = _labelled(probs_or_preds, labels)
  return _mean(np.abs(pred - true).astype(np.float64))


def confusion_matrix(probs_or_preds: Any, labels: Any, num_classes: int | None = None
                     ) -> np.ndarray:
  """(K, K) int64 counts, rows = true class, columns = predicted class.

  ``num_classes`` defaults to the probabilities' width; it is required for index predictions.
  """
  x = np.asarray(probs_or_preds)
  if num_classes is None:
    if x.ndim != 2:
      raise ValueError("num_classes is required when predictions are class indices")
    num_classes = x.shape[1]
  pred, true = _labelled(x, labels)
  for name, v in (("labels", true), ("predictions", pred)):
    bad = v[(v < 0) | (v >= num_classes)]
    if bad.size:
      raise ValueError(f"{name} hold classes {sorted(set(bad.tolist()))[:5]} outside "
                       f"[0, {num_classes})")
  cm = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(cm, (true, pred), 1)
  return cm


def per_class_accuracy(probs_or_preds: Any, labels: Any, num_classes: int | None = None
                       ) -> np.ndarray:
  """(K,) recall of each class; NaN for a class with no labelled example."""
  cm = confusion_matrix(probs_or_preds, labels, num_classes)
  support = cm.sum(axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def mean_std(values: Sequence[float], ddof: int = 1) -> tuple[float, float]:
  """Mean and standard deviation over folds (or runs).

  ``ddof=1`` (default) is the sample standard deviation, the usual reading of "mean +- std" over
  5 cross-validation folds; ``ddof=0`` gives the population value (numpy's default), which is
  smaller by ``sqrt((n-1)/n)`` (0.894 for 5 folds). The papers do not say which they used.
  """
  v = np.asarray(values, np.float64).reshape(-1)
  if v.size == 0:
    raise ValueError("values is empty")
  if ddof not in (0, 1):
    raise ValueError(f"ddof must be 0 (population) or 1 (sample), got {ddof}")
  if v.size <= ddof:
    raise ValueError(f"{v.size} value(s) cannot give a ddof={ddof} standard deviation")
  return float(v.mean()), float(v.std(ddof=ddof))


def fold_summary(per_fold: Sequence[float], ddof: int = 1) -> dict[str, Any]:
  """JSON-ready ``{"mean", "std", "stderr", "ddof", "n_folds", "values"}`` of one metric.

  ``std`` is the sample standard deviation over the folds (``ddof=1``); ``stderr`` the standard
  error of the mean, ``std / sqrt(n_folds)``, which is what Levi & Hassner and SAF-BAGE report as
  "+-" over Adience's five folds (the README and the configs quote both).
  """
  mean, std = mean_std(per_fold, ddof)
  values = [float(v) for v in np.asarray(per_fold, np.float64).reshape(-1)]
  return {"mean": mean, "std": std, "stderr": std / float(np.sqrt(len(values))), "ddof": ddof,
          "n_folds": len(values), "values": values}


def ensemble_probs(per_model: Sequence[Any]) -> np.ndarray:
  """Mean of several models' (N, K) probabilities (Abdolrashidi et al.'s ensemble)."""
  if len(per_model) == 0:
    raise ValueError("per_model is empty")
  arrays = [np.asarray(p, np.float64) for p in per_model]
  for i, a in enumerate(arrays):
    if a.ndim != 2 or a.shape != arrays[0].shape:
      raise ValueError(f"per_model[{i}] has shape {a.shape}; every model must give the same "
                       f"(N, K) probabilities as per_model[0] {arrays[0].shape}")
  return np.mean(arrays, axis=0)


def attribute_accuracy(scores: Any, targets01: Any, names: Sequence[str] | None = None,
                       threshold: float = 0.5) -> dict[str, Any]:
  """Multi-label accuracy: ``{"per_attribute": {name: acc}, "mean": mean of those}``.

  ``scores`` (N, A) predict 1 where ``> threshold``: pass probabilities with 0.5 or logits with
  0.0. Target entries < 0 are unknown and ignored; an attribute with none labelled is None and
  left out of the mean.
  """
  s = np.asarray(scores, np.float64)
  t = np.asarray(targets01)
  if s.ndim != 2 or t.shape != s.shape:
    raise ValueError(f"scores and targets01 must both be (N, attributes), got {s.shape} and "
                     f"{t.shape}")
  names = list(names) if names is not None else [str(i) for i in range(s.shape[1])]
  if len(names) != s.shape[1]:
    raise ValueError(f"names has {len(names)} entries for {s.shape[1]} attributes")
  valid = t >= 0
  hit = ((s > threshold) == (t > 0)) & valid
  count = valid.sum(axis=0)
  per = {n: (float(hit[:, i].sum() / count[i]) if count[i] else None)
         for i, n in enumerate(names)}
  known = [v for v in per.values() if v is not None]
  return {"per_attribute": per, "mean": float(np.mean(known)) if known else None}


def classification_report(probs: Any, labels: Any, class_names: Sequence[str],
                          ordinal: bool = False) -> dict[str, Any]:
  """JSON-ready summary of a single-label classifier on one split.

  Keys: ``accuracy``, ``n`` (labelled examples), ``n_unlabelled``, ``mean_per_class`` (mean
  recall over classes that occur), ``one_off`` and ``aabd`` when ``ordinal``, ``per_class``
  ({name: {"accuracy" (None if absent), "support"}}), ``confusion`` (rows true, columns
  predicted), ``class_names``.
  """
  probs = np.asarray(probs)
  labels = np.asarray(labels)
  class_names = [str(c) for c in class_names]
  if probs.ndim != 2 or probs.shape[1] != len(class_names):
    raise ValueError(f"probs must be (N, {len(class_names)}) for {len(class_names)} class_names, "
                     f"got shape {probs.shape}")
  cm = confusion_matrix(probs, labels, len(class_names))
  n = int(cm.sum())
  if n == 0:
    raise ValueError("labels: no labelled examples (all < 0 or empty)")
  support = cm.sum(axis=1)
  recall = per_class_accuracy(probs, labels, len(class_names))
  report: dict[str, Any] = {
      "accuracy": float(np.trace(cm) / n),
      "n": n,
      "n_unlabelled": int(labels.size - n),
      "mean_per_class": float(np.nanmean(recall)),
  }
  if ordinal:
    report["one_off"] = one_off_accuracy(probs, labels)
    report["aabd"] = aabd(probs, labels)
  report["per_class"] = {
      name: {"accuracy": None if np.isnan(r) else float(r), "support": int(s)}
      for name, r, s in zip(class_names, recall, support)}
  report["confusion"] = cm.tolist()
  report["class_names"] = class_names
  return report


def format_report(report: dict[str, Any], title: str | None = None) -> str:
  """Plain-text rendering of :func:`classification_report` (summary, per-class, confusion)."""
  lines = [title] if title else []
  head = f"accuracy {100 * report['accuracy']:.2f}%  n={report['n']}"
  if report.get("n_unlabelled"):
    head += f" (+{report['n_unlabelled']} unlabelled, not scored)"
  lines.append(head)
  lines.append(f"mean per-class accuracy {100 * report['mean_per_class']:.2f}%")
  if "one_off" in report:
    lines.append(f"one-off accuracy {100 * report['one_off']:.2f}%  AABD {report['aabd']:.3f}")
  names = report["class_names"]
  width = max(8, *(len(n) for n in names))
  lines.append("")
  lines.append(f"{'class':<{width}}  {'accuracy':>8}  {'support':>7}")
  for name in names:
    row = report["per_class"][name]
    acc = "-" if row["accuracy"] is None else f"{100 * row['accuracy']:.2f}%"
    lines.append(f"{name:<{width}}  {acc:>8}  {row['support']:>7}")
  cm = report["confusion"]
  cell = max(5, len(str(max(max(r) for r in cm))) + 1)
  lines.append("")
  lines.append("confusion (rows true, columns predicted)")
  lines.append(" " * width + "".join(f"{i:>{cell}}" for i in range(len(names))))
  for i, (name, row) in enumerate(zip(names, cm)):
    lines.append(f"{name:<{width}}" + "".join(f"{v:>{cell}}" for v in row) + f"   ({i})")
  return "\n".join(lines)
