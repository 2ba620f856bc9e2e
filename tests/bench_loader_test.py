"""``python -m jaxface.bench loader`` with tiny sizes: the output fields, not the speed."""

import json

import cv2
import pytest

from jaxface import bench


def test_loader_json_rows(capsys):
  threads = cv2.getNumThreads()
  # One worker process (seconds to start) for one case; the other case threads only.
  assert bench.main(["loader", "--workers", "1", "--cases", "wild256",
                     "--num_batches", "2", "--batch_size", "3", "--read_threads", "1",
                     "--json"]) == 0
  assert bench.main(["loader", "--workers", "0", "--cases", "aligned200",
                     "--num_batches", "2", "--batch_size", "3", "--read_threads", "1",
                     "--json"]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert cv2.getNumThreads() == threads  # the command restores OpenCV's setting
  comments = [l for l in lines if l.startswith("#")][:2]
  assert "logical cores" in comments[0] and "img/s/core = img/s / cores" in comments[1]
  rows = [json.loads(l) for l in lines if not l.startswith("#")]
  assert [(r["case"], r["workers"]) for r in rows] == [("wild256", 1), ("aligned200", 0)]
  for r in rows:
    assert r["images"] == 6 and r["batches"] == 2 and r["batch_size"] == 3
    assert r["output_shape"] == [3, 224, 224, 3] and r["output_dtype"] == "uint8"
    assert r["pipe"] == bench.LOADER_CASES[r["case"]][2]
    assert r["img_s"] == pytest.approx(6 / r["seconds"])
    assert r["cpu_seconds"] > 0
    assert r["cores"] == pytest.approx(r["cpu_seconds"] / r["seconds"])
    assert r["img_s_per_core"] == pytest.approx(6 / r["cpu_seconds"])
    assert r["meets_goal"] == (r["img_s_per_core"] >= r["goal_img_s_per_core"])
  assert [r["processes"] for r in rows] == [2, 1]  # the consumer, plus the worker
  assert rows[0]["goal_img_s_per_core"] == 350 and rows[1]["goal_img_s_per_core"] == 800


def test_loader_bad_arguments(capsys):
  with pytest.raises(SystemExit):
    bench.main(["loader", "--workers", "0,x"])
  assert "expected comma-separated integers, got '0,x'" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    bench.main(["loader", "--cases", "aligned200,studio"])
  assert "unknown case(s) studio" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    bench.main(["loader", "--num_batches", "0"])
  assert "--num_batches and --batch_size must be positive" in capsys.readouterr().err
