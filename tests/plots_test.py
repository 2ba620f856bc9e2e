"""PNG plots: files written with sensible sizes and content; bad inputs refused."""

import json
import os

import cv2
import numpy as np
import pytest

from jaxface import plots


def _read_png(path):
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert 2_000 < os.path.getsize(path) < 2_000_000
  return cv2.imread(str(path), cv2.IMREAD_COLOR)  # BGR.


def test_confusion_matrix_png(tmp_path):
  cm = np.array([[5, 1, 0], [2, 7, 1], [0, 0, 0]])
  out = plots.confusion_matrix_png(cm, ["neutral", "happy", "sad"], tmp_path / "sub" / "cm.png",
                                    title="expression")
  image = _read_png(out)
  # figsize (max(4, 0.9 * 3 + 2) + 1, ...) = (5.7, 4.7) inches at 100 dpi.
  assert image.shape == (470, 570, 3)
  assert image.std() > 10  # Not a blank canvas.


def test_confusion_matrix_refuses_mismatched_shapes(tmp_path):
  with pytest.raises(ValueError, match="square"):
    plots.confusion_matrix_png(np.ones((2, 3)), ["a", "b"], tmp_path / "x.png")
  with pytest.raises(ValueError, match="class_names has 3 entries"):
    plots.confusion_matrix_png(np.ones((2, 2)), ["a", "b", "c"], tmp_path / "x.png")
  with pytest.raises(ValueError, match="counts >= 0"):
    plots.confusion_matrix_png(-np.ones((2, 2)), ["a", "b"], tmp_path / "x.png")
  assert not (tmp_path / "x.png").exists()


def _write_jsonl(path, events, tail=""):
  path.write_text("".join(json.dumps(e) + "\n" for e in events) + tail)
  return path


def test_learning_curves_png(tmp_path):
  events = []
  for step in range(0, 100, 10):
    events.append({"step": step, "train/loss": 2.0 / (step + 1), "lr": 0.01 * 0.9 ** step,
                   "note": "text is ignored"})
    if step % 30 == 0:
      events.append({"step": step, "val/loss": 1.5 / (step + 1), "val/accuracy": step / 100})
  # A trainer may be half-way through writing the last line.
  metrics = _write_jsonl(tmp_path / "metrics.jsonl", events, tail='{"step": 100, "train/lo')
  out = plots.learning_curves_png(metrics, tmp_path / "curves.png", title="run")
  image = _read_png(out)
  assert image.shape == (320, 1350, 3)  # Three panels: accuracy, loss, lr.
  out = plots.learning_curves_png(metrics, tmp_path / "loss.png", names=["train/loss"])
  assert _read_png(out).shape == (320, 450, 3)
  assert len(plots.read_metrics_jsonl(metrics)) == len(events)


def test_learning_curves_errors(tmp_path):
  bad = _write_jsonl(tmp_path / "bad.jsonl", [{"step": 0, "loss": 1.0}],
                     tail='{"step": 1, "loss": \n{"step": 2, "loss": 0.5}\n')
  with pytest.raises(ValueError, match=r"bad\.jsonl, line 2: not a metrics event"):
    plots.learning_curves_png(bad, tmp_path / "x.png")
  nostep = _write_jsonl(tmp_path / "nostep.jsonl", [{"loss": 1.0}, {"step": 1, "loss": 0.5}])
  with pytest.raises(ValueError, match="line 1.*'step'"):
    plots.read_metrics_jsonl(nostep)
  good = _write_jsonl(tmp_path / "good.jsonl", [{"step": 0, "loss": 1.0}])
  with pytest.raises(ValueError, match=r"no numeric values for \['acc'\]"):
    plots.learning_curves_png(good, tmp_path / "x.png", names=["acc"])
  with pytest.raises(FileNotFoundError, match="missing.jsonl"):
    plots.learning_curves_png(tmp_path / "missing.jsonl", tmp_path / "x.png")


def test_image_grid(tmp_path):
  red = np.zeros((32, 40, 3), np.uint8)
  red[..., 0] = 255
  gray = np.full((20, 20), 128, np.uint8)
  out = plots.save_image_grid([red, gray, red[..., :1]], ["red", "gray", "one channel"],
                              tmp_path / "grid.png", ncols=2)
  image = _read_png(out)
  assert image.shape == (540, 500, 3)  # 2 columns x 2 rows of 2.5 x 2.7 inches.
  b, g, r = image[..., 0].astype(int), image[..., 1].astype(int), image[..., 2].astype(int)
  assert np.sum((r > 200) & (g < 50) & (b < 50)) > 500  # The red image is drawn.
  with pytest.raises(ValueError, match="titles has 1 entries for 2 images"):
    plots.save_image_grid([red, red], ["a"], tmp_path / "x.png")
  with pytest.raises(ValueError, match=r"images_uint8\[0\] has dtype float32"):
    plots.save_image_grid(red[None].astype(np.float32), None, tmp_path / "x.png")
  with pytest.raises(ValueError, match=r"images_uint8\[0\] has shape \(4, 4, 2\)"):
    plots.save_image_grid([np.zeros((4, 4, 2), np.uint8)], None, tmp_path / "x.png")
