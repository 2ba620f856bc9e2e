"""Host-side evaluation metrics against hand-computed values."""

import json
import math

import numpy as np
import pytest

from jaxface.tasks import metrics

# Six examples, four ordinal classes. Predictions 0 1 3 2 0 1, truth 0 2 1 2 -1 3
# (example 4 is unlabelled). Differences on labelled: 0, 1, 2, 0, 2.
PREDS = np.array([0, 1, 3, 2, 0, 1])
LABELS = np.array([0, 2, 1, 2, -1, 3])
PROBS = np.eye(4)[PREDS] * 0.7 + 0.075  # Rows sum to 1, argmax = PREDS.


def test_accuracy_one_off_aabd():
  assert metrics.accuracy(PREDS, LABELS) == pytest.approx(2 / 5)
  assert metrics.accuracy(PROBS, LABELS) == pytest.approx(2 / 5)
  assert metrics.one_off_accuracy(PREDS, LABELS) == pytest.approx(3 / 5)
  assert metrics.aabd(PROBS, LABELS) == pytest.approx(5 / 5)
  with pytest.raises(ValueError, match="no labelled"):
    metrics.accuracy(PREDS[:1], [-1])
  with pytest.raises(ValueError, match="labels have shape"):
    metrics.accuracy(PREDS, LABELS[:3])
  with pytest.raises(ValueError, match="integer"):
    metrics.accuracy(PREDS.astype(float), LABELS)


def test_confusion_and_per_class():
  cm = metrics.confusion_matrix(PROBS, LABELS)
  want = np.zeros((4, 4), int)
  want[0, 0] = want[2, 1] = want[1, 3] = want[2, 2] = want[3, 1] = 1
  np.testing.assert_array_equal(cm, want)
  rec = metrics.per_class_accuracy(PREDS, LABELS, num_classes=5)
  np.testing.assert_array_equal(rec[:4], [1.0, 0.0, 0.5, 0.0])
  assert math.isnan(rec[4])
  with pytest.raises(ValueError, match="num_classes is required"):
    metrics.confusion_matrix(PREDS, LABELS)
  with pytest.raises(ValueError, match=r"labels hold classes \[3\] outside \[0, 3\)"):
    metrics.confusion_matrix(PREDS, LABELS, num_classes=3)
  with pytest.raises(ValueError, match=r"predictions hold classes \[3\]"):
    metrics.confusion_matrix(PREDS, np.array([0, 2, 1, 2, -1, 1]), num_classes=3)


def test_mean_std_over_folds():
  folds = [0.60, 0.62, 0.64, 0.58, 0.66]  # mean 0.62, squared deviations sum 0.004.
  mean, std = metrics.mean_std(folds)
  assert mean == pytest.approx(0.62)
  assert std == pytest.approx(math.sqrt(0.004 / 4))
  _, pop = metrics.mean_std(folds, ddof=0)
  assert pop == pytest.approx(math.sqrt(0.004 / 5))
  summary = metrics.fold_summary(folds)
  assert summary["n_folds"] == 5 and summary["ddof"] == 1
  assert summary["std"] == pytest.approx(math.sqrt(0.001))
  assert summary["stderr"] == pytest.approx(math.sqrt(0.001) / math.sqrt(5))  # std / sqrt(folds)
  with pytest.raises(ValueError, match="ddof=1"):
    metrics.mean_std([0.5])
  with pytest.raises(ValueError, match="ddof must be"):
    metrics.mean_std(folds, ddof=2)


def test_ensemble():
  a = np.array([[0.2, 0.8], [0.6, 0.4]])
  b = np.array([[0.6, 0.4], [1.0, 0.0]])
  np.testing.assert_allclose(metrics.ensemble_probs([a, b]), [[0.4, 0.6], [0.8, 0.2]])
  with pytest.raises(ValueError, match=r"per_model\[1\]"):
    metrics.ensemble_probs([a, b[:1]])


def test_attribute_accuracy():
  scores = np.array([[0.9, 0.2, 0.5], [0.1, 0.7, 0.6], [0.8, 0.4, 0.3]])
  targets = np.array([[1, 0, -1], [1, 1, -1], [1, 1, -1]])
  got = metrics.attribute_accuracy(scores, targets, ["Male", "Smiling", "Young"])
  assert got["per_attribute"] == {"Male": pytest.approx(2 / 3), "Smiling": pytest.approx(2 / 3),
                                  "Young": None}
  assert got["mean"] == pytest.approx(2 / 3)
  # Logits with threshold 0.
  got = metrics.attribute_accuracy(np.array([[-1.0], [2.0]]), np.array([[0], [0]]), threshold=0)
  assert got["per_attribute"] == {"0": 0.5}
  with pytest.raises(ValueError, match="names"):
    metrics.attribute_accuracy(scores, targets, ["a"])


def test_classification_report_and_text():
  names = ["0-2", "4-6", "8-12", "15-20"]
  report = metrics.classification_report(PROBS, LABELS, names, ordinal=True)
  json.dumps(report)  # JSON-ready.
  assert report["accuracy"] == pytest.approx(0.4)
  assert report["n"] == 5 and report["n_unlabelled"] == 1
  assert report["one_off"] == pytest.approx(0.6)
  assert report["aabd"] == pytest.approx(1.0)
  assert report["mean_per_class"] == pytest.approx((1 + 0 + 0.5 + 0) / 4)
  assert report["per_class"]["8-12"] == {"accuracy": 0.5, "support": 2}
  assert report["confusion"][2] == [0, 1, 1, 0]
  text = metrics.format_report(report, title="age, fold 0")
  assert text.splitlines()[0] == "age, fold 0"
  assert "accuracy 40.00%  n=5 (+1 unlabelled, not scored)" in text
  assert "one-off accuracy 60.00%  AABD 1.000" in text
  assert "8-12        50.00%        2" in text
  assert "8-12        0    1    1    0   (2)" in text
  plain = metrics.classification_report(PROBS[:4], LABELS[:4], names)
  assert "one_off" not in plain and "aabd" not in plain
  with pytest.raises(ValueError, match="class_names"):
    metrics.classification_report(PROBS, LABELS, names[:3])
