"""``python -m jaxface.bench loader`` with tiny sizes: the output fields, not the speed."""

import json

import cv2
import numpy as np
import pytest

from data_pipelines import pp
from jaxface.tools import bench
from jaxface.faces import crops


def test_loader_json_rows(capsys):
  threads = cv2.getNumThreads()
  # One worker process (seconds to start) for one case; the other case threads only.
  assert bench.main(["loader", "--workers", "1", "--cases", "wild256",
                     "--num_batches", "2", "--batch_size", "3", "--read_threads", "1",
                     "--json"]) == 0
  assert bench.main(["loader", "--workers", "0", "--cases", "aligned200",
                     "--num_batches", "2", "--batch_size", "3", "--read_threads", "1",
                     "--maps", "dataset", "--fuse", "off", "--json"]) == 0
  # Reduced decoding is fused only: the "off" row is left out.
  assert bench.main(["loader", "--workers", "0", "--cases", "photo1280x960",
                     "--num_batches", "1", "--batch_size", "2", "--read_threads", "0",
                     "--fuse", "on,off", "--decode", "reduced", "--json"]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert cv2.getNumThreads() == threads  # the command restores OpenCV's setting
  comments = [l for l in lines if l.startswith("#")][:2]
  assert "logical cores" in comments[0] and "img/s/core = img/s / cores" in comments[1]
  rows = [json.loads(l) for l in lines if not l.startswith("#")]
  assert [(r["case"], r["workers"], r["maps"], r["fuse"], r["decode"]) for r in rows] == [
      ("wild256", 1, "cache", True, "full"), ("aligned200", 0, "dataset", False, "full"),
      ("photo1280x960", 0, "cache", True, "reduced")]
  assert rows[2]["pipe"].startswith("decode(reduced=True)|face_crop(")
  assert rows[2]["goal_img_s_per_core"] is None and rows[2]["meets_goal"] is None
  assert rows[2]["images"] == 2 and rows[2]["output_shape"] == [2, 224, 224, 3]
  for r in rows[:2]:
    assert r["images"] == 6 and r["batches"] == 2 and r["batch_size"] == 3
    assert r["output_shape"] == [3, 224, 224, 3] and r["output_dtype"] == "uint8"
  for r in rows:
    assert r["pipe"] == bench.loader_pipe(r["case"], r["maps"], r["decode"])
    assert ("cached_saliency" in r["pipe"]) == (r["maps"] == "cache")
    assert r["img_s"] == pytest.approx(r["images"] / r["seconds"])
    assert r["cpu_seconds"] > 0
    assert r["cores"] == pytest.approx(r["cpu_seconds"] / r["seconds"])
    assert r["img_s_per_core"] == pytest.approx(r["images"] / r["cpu_seconds"])
  for r in rows[:2]:
    assert r["meets_goal"] == (r["img_s_per_core"] >= r["goal_img_s_per_core"])
  assert [r["processes"] for r in rows] == [2, 1, 1]  # the consumer, plus the worker
  assert rows[0]["goal_img_s_per_core"] == 350 and rows[1]["goal_img_s_per_core"] == 1200


def test_loader_bad_arguments(capsys):
  with pytest.raises(SystemExit):
    bench.main(["loader", "--workers", "0,x"])
  assert "expected comma-separated integers, got '0,x'" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    bench.main(["loader", "--cases", "aligned200,studio"])
  assert "unknown case(s) studio" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    bench.main(["loader", "--maps", "png"])
  assert "unknown map source(s) png" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    bench.main(["loader", "--fuse", "on,maybe"])
  assert "unknown --fuse value(s) maybe" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    bench.main(["loader", "--decode", "full,partial"])
  assert "unknown --decode value(s) partial" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    bench.main(["loader", "--decode", "reduced", "--fuse", "off"])
  assert "--decode reduced needs --fuse on" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    bench.main(["loader", "--num_batches", "0"])
  assert "--num_batches and --batch_size must be positive" in capsys.readouterr().err


def test_speed_paths_match_the_reference_ops():
  # ops' faster face_crop warp and mirror (made for this benchmark) give the same arrays as
  # crops.warp and numpy's reversed copy.
  rng = np.random.default_rng(1)
  fast_paths = 0
  for t in range(60):
    h, w = rng.integers(20, 120, 2)
    shape = (h, w, 3) if t % 2 else (h, w)
    img = rng.integers(0, 256, shape, np.uint8)
    x1, y1 = rng.uniform(-20, max(h, w), 2)
    side = rng.uniform(3, 100)
    box = crops.margin_box([x1, y1, x1 + side, y1 + side * rng.uniform(0.5, 1.5)], 0.3)
    size = [max(1, int(round(max(box[2] - box[0], box[3] - box[1])))), 1, 24][t % 3]
    A = crops.box_affine(box, size)
    fast_paths += abs(A[0, 0] * A[1, 1]) < 4
    np.testing.assert_array_equal(pp.geometry.warp(img, A, size), crops.warp(img, A, size))
    np.testing.assert_array_equal(pp.geometry._flip(img), img[:, ::-1])
  assert fast_paths >= 20


def test_warp_column_gather_matches_for_every_layout():
  # The OpenCV gather serves uint8 with 1, 3 or 4 channels; 2 channels and uint16 / int16 take
  # numpy's gather. Both give crops.warp's arrays.
  rng = np.random.default_rng(2)
  for dtype, channels in [(np.uint8, 4), (np.uint8, 2), (np.uint16, 3), (np.int16, 1)]:
    info = np.iinfo(dtype)
    img = rng.integers(info.min, int(info.max) + 1, (37, 53, channels), dtype)
    for box in ([3.2, -4.5, 40.7, 30.1], [10.0, 10.0, 30.0, 45.5], [-9.0, 20.0, 70.0, 50.0]):
      mbox = crops.margin_box(box, 0.3)
      size = max(1, int(round(max(mbox[2] - mbox[0], mbox[3] - mbox[1]))))
      A = crops.box_affine(mbox, size)
      np.testing.assert_array_equal(pp.geometry.warp(img, A, size), crops.warp(img, A, size))
      np.testing.assert_array_equal(pp.geometry._gather_columns(img, np.array([0, 52, 7, 7])),
                                    img[:, [0, 52, 7, 7]])
