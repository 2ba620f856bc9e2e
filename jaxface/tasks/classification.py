"""The classification kinds (softmax classes, sigmoid attributes): losses, batch metric sums,
reports.

Conventions shared by every function here, so a trainer can call them inside ``jax.jit``:

* ``mask`` (B,) bool or float marks real examples; the padding of an evaluation loader's last batch
  has mask 0 and contributes nothing. ``None`` means every example is real.
* A label below 0 means "no label for this task" (``-1`` in the data pipelines, e.g. an Adience face
  with an age but no gender) and is ignored exactly like a padded example.
* Losses return ``(loss, count)``: ``loss`` is normalised (a mean) and ``count`` is its
  denominator, so ``loss * count`` is the sum; micro-batches or devices combine exactly as
  ``sum(loss_i * count_i) / sum(count_i)``. A batch with nothing to count gives ``(0, 0)``.
* Metric helpers return sums (never means), to be added over batches and hosts before dividing.
* The array functions are wrapped in ``jax.jit`` (string and smoothing arguments static), so a
  host-side call compiles one small program instead of dispatching op by op; inside a trainer's
  jitted step they simply inline. Shape errors are raised while tracing.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, ClassVar, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxface import config_lib
from jaxface.tasks import metrics as metrics_lib
from jaxface.tasks.task import Task

NORMALIZE_CE = ("count", "weights")
NORMALIZE_ATTRIBUTES = ("entries", "examples")
WEIGHT_SCHEMES = ("none", "inverse", "balanced")


def _valid(labels: jax.Array, mask: jax.Array | None) -> jax.Array:
  """Float (B,) weights: 1 for a real, labelled example, 0 otherwise."""
  valid = labels >= 0
  if mask is not None:
    mask = jnp.asarray(mask)
    if mask.shape != labels.shape[:1]:
      raise ValueError(f"mask has shape {mask.shape}, expected ({labels.shape[0]},) for labels "
                       f"of shape {labels.shape}")
    valid = valid & (mask > 0).reshape((-1,) + (1,) * (labels.ndim - 1))
  return valid.astype(jnp.float32)


def _safe_div(total: jax.Array, count: jax.Array) -> jax.Array:
  return jnp.where(count > 0, total / jnp.where(count > 0, count, 1.0), 0.0)


def _check_logits_labels(logits: jax.Array, labels: jax.Array, name: str = "labels") -> None:
  if logits.ndim != 2:
    raise ValueError(f"logits must be (batch, classes), got shape {logits.shape}")
  if labels.shape != logits.shape[:1]:
    raise ValueError(f"{name} must be ({logits.shape[0]},) integer class indices for logits of "
                     f"shape {logits.shape}, got shape {labels.shape}")


@functools.partial(jax.jit, static_argnames=("label_smoothing", "normalize"))
def cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None,
                  class_weights: jax.Array | Sequence[float] | None = None,
                  label_smoothing: float = 0.0,
                  normalize: str = "count") -> tuple[jax.Array, jax.Array]:
  """Softmax cross-entropy with optional class weights and label smoothing.

  Args:
    logits: (B, K) unnormalised scores.
    labels: (B,) integer classes; values < 0 are ignored.
    mask: (B,) real-example mask or None.
    class_weights: (K,) weight of each *true* class (example i counts ``w[labels[i]]`` times).
    label_smoothing: eps of Keras/Szegedy smoothing: the target is ``(1 - eps) * onehot + eps / K``.
    normalize: the denominator. ``"count"`` (default) divides ``sum_i w_i * ce_i`` by the number
      of labelled examples, which is what Keras ``class_weight`` does (class weights become sample
      weights and the ``sum_over_batch_size`` reduction divides by the batch size) and what Caffe's
      per-example weighted softmax losses do. ``"weights"`` divides by ``sum_i w_i`` instead (a
      true weighted mean, PyTorch ``CrossEntropyLoss(weight=...)``); there the loss scale no
      longer depends on how many rare-class examples a batch happens to hold.

  Returns:
    ``(loss, count)`` with ``count`` the chosen denominator (examples, or summed weights).
  """
  if normalize not in NORMALIZE_CE:
    raise ValueError(f"normalize must be one of {NORMALIZE_CE}, got {normalize!r}")
  if not 0.0 <= label_smoothing < 1.0:
    raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  _check_logits_labels(logits, labels)
  num_classes = logits.shape[-1]
  valid = _valid(labels, mask)
  safe_labels = jnp.where(labels >= 0, labels, 0).astype(jnp.int32)
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  targets = jax.nn.one_hot(safe_labels, num_classes, dtype=jnp.float32)
  if label_smoothing:
    targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
  ce = -jnp.sum(targets * log_p, axis=-1)
  weights = valid
  if class_weights is not None:
    class_weights = jnp.asarray(class_weights, jnp.float32)
    if class_weights.shape != (num_classes,):
      raise ValueError(f"class_weights must have shape ({num_classes},) for {num_classes} "
                       f"classes, got {class_weights.shape}")
    weights = weights * class_weights[safe_labels]
  total = jnp.sum(weights * ce)
  count = jnp.sum(valid) if normalize == "count" else jnp.sum(weights)
  return _safe_div(total, count), count


@functools.partial(jax.jit, static_argnames=("normalize",))
def sigmoid_attributes_loss(logits: jax.Array, targets01: jax.Array,
                            mask: jax.Array | None = None,
                            normalize: str = "entries") -> tuple[jax.Array, jax.Array]:
  """Multi-label sigmoid cross-entropy (CelebA's 40 attributes, Zhang et al. step 2).

  Args:
    logits: (B, A) one score per attribute.
    targets01: (B, A) targets in {0, 1}; an entry < 0 is an unknown attribute and ignored.
    mask: (B,) real-example mask or None.
    normalize: ``"entries"`` (default) is the mean over every labelled (example, attribute)
      entry, i.e. the mean over attributes and examples (current Caffe ``SigmoidCrossEntropyLoss``,
      normalization VALID). ``"examples"`` sums over attributes and divides by the number of
      examples (Caffe before 2017); it is ``A`` times larger, which an SGD learning rate absorbs.

  Returns:
    ``(loss, count)``: count is the number of labelled entries, or of examples.
  """
  if normalize not in NORMALIZE_ATTRIBUTES:
    raise ValueError(f"normalize must be one of {NORMALIZE_ATTRIBUTES}, got {normalize!r}")
  logits = jnp.asarray(logits).astype(jnp.float32)
  targets = jnp.asarray(targets01)
  if logits.ndim != 2 or targets.shape != logits.shape:
    raise ValueError(f"logits and targets01 must both be (batch, attributes), got "
                     f"{logits.shape} and {targets.shape}")
  valid = _valid(targets, mask)
  t = jnp.clip(targets.astype(jnp.float32), 0.0, 1.0)
  # log(1 + exp(-|x|)) form: finite for large |logits|.
  bce = jnp.maximum(logits, 0.0) - logits * t + jnp.log1p(jnp.exp(-jnp.abs(logits)))
  total = jnp.sum(valid * bce)
  if normalize == "entries":
    count = jnp.sum(valid)
  else:
    count = jnp.sum(jnp.any(valid > 0, axis=-1).astype(jnp.float32))
  return _safe_div(total, count), count


def class_weights_from_counts(counts: Sequence[int] | np.ndarray,
                              scheme: str = "inverse") -> np.ndarray:
  """Per-class loss weights from training-set class counts (host side, numpy float32).

  Schemes: ``"none"`` all ones; ``"inverse"`` ``max(counts) / count`` (the largest class gets 1,
  a class with half as many examples gets 2); ``"balanced"`` scikit-learn's ``n / (k * count)``
  (weights average to 1 over the training examples). A class with no examples cannot be weighted
  and is an error for the two non-trivial schemes.
  """
  counts = np.asarray(counts, np.float64)
  if counts.ndim != 1 or counts.size == 0:
    raise ValueError(f"counts must be a non-empty 1-D sequence, got shape {counts.shape}")
  if np.any(counts < 0) or not np.all(np.isfinite(counts)):
    raise ValueError(f"counts must be finite and >= 0, got {counts.tolist()}")
  if scheme == "none":
    return np.ones(counts.shape, np.float32)
  if scheme not in WEIGHT_SCHEMES:
    raise ValueError(f"scheme must be one of {WEIGHT_SCHEMES}, got {scheme!r}")
  empty = np.flatnonzero(counts == 0)
  if empty.size:
    raise ValueError(f"counts: classes {empty.tolist()} have no examples; cannot compute "
                     f"{scheme!r} class weights")
  if scheme == "inverse":
    return (counts.max() / counts).astype(np.float32)
  return (counts.sum() / (counts.size * counts)).astype(np.float32)


@jax.jit
def accuracy_counts(logits: jax.Array, labels: jax.Array,
                    mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """``(correct, count)``: top-1 hits and labelled examples (float32 sums)."""
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  _check_logits_labels(logits, labels)
  valid = _valid(labels, mask)
  hit = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  return jnp.sum(valid * hit), jnp.sum(valid)


@jax.jit
def one_off_counts(logits: jax.Array, labels: jax.Array,
                   mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """``(hits, count)`` with a hit when the predicted ordinal class is within 1 of the label."""
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  _check_logits_labels(logits, labels)
  valid = _valid(labels, mask)
  hit = (jnp.abs(jnp.argmax(logits, axis=-1) - labels) <= 1).astype(jnp.float32)
  return jnp.sum(valid * hit), jnp.sum(valid)


@jax.jit
def abs_class_diff_sums(logits: jax.Array, labels: jax.Array,
                        mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """``(sum |pred - label|, count)`` of ordinal class indices; the ratio is AABD."""
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  _check_logits_labels(logits, labels)
  valid = _valid(labels, mask)
  diff = jnp.abs(jnp.argmax(logits, axis=-1) - labels).astype(jnp.float32)
  return jnp.sum(valid * diff), jnp.sum(valid)


@jax.jit
def confusion_counts(logits: jax.Array, labels: jax.Array,
                     mask: jax.Array | None = None) -> jax.Array:
  """(K, K) float32 confusion counts, rows = true class, columns = predicted class."""
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  _check_logits_labels(logits, labels)
  num_classes = logits.shape[-1]
  valid = _valid(labels, mask)
  true_1h = jax.nn.one_hot(jnp.where(labels >= 0, labels, 0), num_classes) * valid[:, None]
  pred_1h = jax.nn.one_hot(jnp.argmax(logits, axis=-1), num_classes)
  # A matmul instead of a scatter-add: deterministic and cheap for K <= a few hundred.
  return jnp.einsum("bi,bj->ij", true_1h, pred_1h, precision=jax.lax.Precision.HIGHEST)


@jax.jit
def attribute_accuracy_counts(logits: jax.Array, targets01: jax.Array,
                              mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Per-attribute ``(correct (A,), count (A,))``; a logit > 0 predicts 1, entries < 0 ignored."""
  logits, targets = jnp.asarray(logits), jnp.asarray(targets01)
  if logits.ndim != 2 or targets.shape != logits.shape:
    raise ValueError(f"logits and targets01 must both be (batch, attributes), got "
                     f"{logits.shape} and {targets.shape}")
  valid = _valid(targets, mask)
  hit = ((logits > 0) == (targets > 0)).astype(jnp.float32)
  return jnp.sum(valid * hit, axis=0), jnp.sum(valid, axis=0)


# ----------------------------------------------------------------------------- the kinds


@dataclasses.dataclass(frozen=True)
class Classification(Task):
  """Softmax over ``class_names``: one label per example (``-1``: none), one task of a single- or
  multi-task head; ``ordinal`` classes (age buckets) add one-off accuracy and AABD to the report."""
  kind: str = "class"
  KIND: ClassVar[str] = "class"
  labelled: ClassVar[bool] = True
  single_label: ClassVar[bool] = True
  class_weighted: ClassVar[bool] = True

  @classmethod
  def from_feature(cls, key: str, feature, config, builder) -> Task:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    if not isinstance(feature, tfds.features.ClassLabel):
      raise config_lib.ConfigError(
          f"config.data.labels: {key!r} is not a class label (ClassLabel) of {config.data.name}")
    return cls(key, class_names=tuple(feature.names), ordinal=key in tuple(config.task.ordinal))

  def predict(self, output: jax.Array) -> jax.Array:
    return jax.nn.softmax(output, -1)

  def loss_and_metrics(self, output, batch, mask, params, config, class_weights):
    labels = batch[self.name].astype(jnp.int32)
    loss, count = cross_entropy(output, labels, mask=mask,
                                class_weights=class_weights.get(self.name),
                                label_smoothing=config.task.label_smoothing)
    return loss, {f"{self.name}/loss": (loss * count, count),
                  f"{self.name}/accuracy": accuracy_counts(output, labels, mask)}

  def report(self, probs, labels, sums, n):
    return metrics_lib.classification_report(probs, labels, list(self.class_names),
                                             ordinal=self.ordinal)

  def write_outputs(self, out_dir: str, report: dict) -> list[str]:
    """The text report, ``confusion_<task>.csv`` and ``.png`` (rows true, columns predicted)."""
    from jaxface import plots  # pylint: disable=g-import-not-at-top
    cm = np.asarray(report["confusion"])
    np.savetxt(os.path.join(out_dir, f"confusion_{self.name}.csv"), cm, fmt="%d", delimiter=",",
               header=",".join(self.class_names), comments="")
    plots.confusion_matrix_png(
        cm, list(self.class_names), os.path.join(out_dir, f"confusion_{self.name}.png"),
        title=f"{self.name} (n={report['n']}, accuracy {report['accuracy']:.3f})")
    return [f"== {self.name}", metrics_lib.format_report(report)]

  def record(self, probs: np.ndarray) -> dict[str, Any]:
    """The most probable class and its probability, and every class's probability."""
    k = int(np.argmax(probs))
    return {"label": self.class_names[k], "confidence": round(float(probs[k]), 6),
            "probs": _rounded(self.class_names, probs)}


@dataclasses.dataclass(frozen=True)
class Attributes(Task):
  """One sigmoid per name of ``class_names`` (CelebA's 40 attributes); an entry < 0 is unknown.

  Under ``config.task.kind = "attributes"`` a label key that is a ClassLabel is still a
  :class:`Classification` task (e.g. attributes and a gender class in one run).
  """
  kind: str = "attributes"
  KIND: ClassVar[str] = "attributes"
  labelled: ClassVar[bool] = True

  @classmethod
  def from_feature(cls, key: str, feature, config, builder) -> Task:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    if isinstance(feature, tfds.features.ClassLabel):
      return Classification.from_feature(key, feature, config, builder)
    n = int(np.prod(feature.shape)) if feature.shape else 1
    metadata = builder.info.metadata or {}
    names = tuple(metadata.get(key) or metadata.get("attributes") or
                  tuple(f"attr{i}" for i in range(n)))
    if len(names) != n:
      raise config_lib.ConfigError(f"config.data.labels: {key!r} has {n} entries but the "
                                   f"dataset names {len(names)} attributes")
    return cls(key, class_names=names)

  def predict(self, output: jax.Array) -> jax.Array:
    return jax.nn.sigmoid(output)

  def loss_and_metrics(self, output, batch, mask, params, config, class_weights):
    labels = batch[self.name]
    loss, count = sigmoid_attributes_loss(output, labels, mask)
    hits, known = attribute_accuracy_counts(output, labels, mask)
    return loss, {f"{self.name}/loss": (loss * count, count),
                  f"{self.name}/accuracy": (hits.sum(), known.sum())}

  def report(self, probs, labels, sums, n):
    r = metrics_lib.attribute_accuracy(probs, labels, list(self.class_names))
    return {"accuracy": r["mean"], "n": int(len(labels)), **r}

  def record(self, probs: np.ndarray) -> dict[str, Any]:
    """The attributes at probability >= 0.5, and every attribute's probability."""
    return {"labels": [c for c, p in zip(self.class_names, probs) if p >= 0.5],
            "probs": _rounded(self.class_names, probs)}


def _rounded(names: Sequence[str], probs: np.ndarray) -> dict[str, float]:
  return {c: round(float(p), 6) for c, p in zip(names, probs)}
