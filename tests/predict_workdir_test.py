"""python -m jaxface.predict --workdir: trained runs on detected faces, cut as their eval pipe cuts."""

import json
import os
import shutil

import cv2
import numpy as np
import pytest
import skimage.data

import jaxface
from data_pipelines import pp
from jaxface import config_lib, predict, predict_crops
from jaxface.faces.types import LANDMARK_NAMES



@pytest.fixture(scope="module")
def workdir(smoke_run_workdir):
  return smoke_run_workdir  # tests/conftest.py: AlexNet on affectnet.py:smoke,r=0, trained once


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("photos") / "astronaut.png")
  cv2.imwrite(path, cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
  return path


def _faces(out_dir):
  with open(os.path.join(out_dir, "astronaut.png.json"), encoding="utf-8") as f:
    return json.load(f)["faces"]


def _edit_json(path, fn):
  with open(path, encoding="utf-8") as f:
    d = json.load(f)
  fn(d)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(d, f)


def test_workdir_probabilities_are_the_runs_on_its_pipe_crop(workdir, photo, tmp_path):
  out = str(tmp_path / "o")
  assert predict.main([photo, "--out", out, "--workdir", workdir, "--no-annotate"]) == 0
  faces = _faces(out)
  assert len(faces) == 1
  face = faces[0]
  assert "gender" not in face and "expression" not in face  # no --pretrained: runs only
  m = jaxface.load(workdir)
  names = m.task("expression").class_names
  entry = face["runs"]["run"]["expression"]
  assert list(entry["probs"]) == list(names)
  # The crop cut here, independently of predict_crops: the eval pipe without decode.
  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
    data = json.load(f)["data"]
  size = m.input_size[0]
  assert data["eval_pipe"] == f"decode|face_crop(0.3)|resize({size})"
  pipe = pp.Pipeline(f"face_crop(0.3)|resize({size})", fuse=data["fuse_geometry"])
  crop = pipe({"image": skimage.data.astronaut(), "box": np.asarray(face["box"], np.float32),
               "landmarks": np.asarray([face["landmarks"][n] for n in LANDMARK_NAMES],
                                       np.float32)})["image"]
  want = m.predict(crop[None])["expression"][0]
  got = np.asarray([entry["probs"][c] for c in names])
  # One face is one batch of one on both sides, the same jitted program on the same input, so the
  # only difference is the record's rounding to 6 decimals: half a unit of the 6th decimal (plus
  # the float64 representation of the rounded value, far below it).
  np.testing.assert_allclose(got, want, rtol=0, atol=5e-7 + 1e-12)
  assert entry["label"] == names[int(np.argmax(want))]
  with open(os.path.join(out, "summary.csv"), encoding="utf-8") as f:
    header, row = f.read().splitlines()[:2]
  assert header.endswith(",run:expression") and row.endswith("," + entry["label"])


def test_ensemble_of_one_run_twice_is_that_run(workdir, photo, tmp_path, capsys):
  out = str(tmp_path / "o")
  assert predict.main([photo, "--out", out, "--workdir", workdir, "--workdir", workdir,
                       "--ensemble", "--no-annotate"]) == 0
  face = _faces(out)[0]
  assert sorted(face["runs"]) == ["run", "run-2"]  # the same folder twice: made unique
  ens = face["ensemble"]["expression"]
  assert ens["runs"] == ["run", "run-2"]
  single = face["runs"]["run"]["expression"]
  # (p + p) / 2 == p exactly in floating point, and both are rounded the same way.
  assert ens["probs"] == single["probs"] and ens["label"] == single["label"]
  assert face["runs"]["run-2"]["expression"] == single
  capsys.readouterr()


def test_runs_with_other_classes_are_not_averaged(workdir, photo, tmp_path, capsys):
  other = str(tmp_path / "other")
  shutil.copytree(workdir, other)
  _edit_json(os.path.join(other, "run.json"), lambda d: d["tasks"][0]["class_names"].reverse())
  with pytest.raises(SystemExit) as e:
    predict.main([photo, "--out", str(tmp_path / "o"), "--workdir", workdir, "--workdir", other,
                  "--ensemble"])
  assert e.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "task 'expression' has classes" in err[0] and "other" in err[0]


def test_a_face_the_pipe_cannot_cut_gets_an_error_line(workdir, photo, tmp_path, capsys):
  aligned = str(tmp_path / "aligned")
  shutil.copytree(workdir, aligned)
  _edit_json(os.path.join(aligned, "config.json"),
             lambda d: d["data"].update(eval_pipe="decode|align(64)"))
  out = str(tmp_path / "o")
  # haar gives boxes, no landmarks: align cannot cut the face.
  assert predict.main([photo, "--out", out, "--workdir", aligned, "--detector", "haar",
                       "--no-annotate"]) == 0
  faces = _faces(out)
  assert faces and all(f["runs"]["aligned"] == {"error": "align needs 'landmarks'"} for f in faces)
  err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
  assert len(err) == len(faces) and "aligned: align needs 'landmarks'" in err[0]


def test_bad_workdir_is_one_line_and_exit_2(photo, tmp_path, capsys):
  for bad, says in ((str(tmp_path / "missing"), "not a folder"),
                    (str(tmp_path), "config.json not found")):
    with pytest.raises(SystemExit) as e:
      predict.main([photo, "--out", str(tmp_path / "o"), "--workdir", bad])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and bad in err[0] and says in err[0], err
  with pytest.raises(SystemExit) as e:
    predict.main([photo, "--out", str(tmp_path / "o"), "--ensemble"])
  assert e.value.code == 2 and "--ensemble needs --workdir" in capsys.readouterr().err


def test_crop_pipe_keeps_the_geometry_and_refuses_what_it_cannot_reproduce():
  def pipe(s, fuse=True):
    return predict_crops.crop_pipe(config_lib.ConfigDict(
        {"data": {"eval_pipe": s, "fuse_geometry": fuse}}))
  assert str(pipe("decode|face_crop(0.3)|resize(96)|cached_saliency|saliency(0.3)")) == str(
      pp.Pipeline("face_crop(0.3)|resize(96)"))
  # GilNet's ten views become their centre view.
  assert str(pipe("decode|face_crop(0.2)|resize(256)|oversample10(227)", False)) == str(
      pp.Pipeline("face_crop(0.2)|resize(256)|center_crop(227)"))
  with pytest.raises(predict_crops.CropPipeError, match="cuts no face"):
    pipe("decode|resize(256)|center_crop(227)")
  with pytest.raises(predict_crops.CropPipeError, match="is random"):
    pipe("decode|face_crop(0.3)|resize(64)|flip_lr")


def test_a_chain_stage_is_named_chain_slash_stage(tmp_path):
  chain = tmp_path / "demo"
  (chain / "classifier").mkdir(parents=True)
  (chain / "config.json").write_text(json.dumps({"stages": {"classifier": {}, "mlnet": {}}}))
  assert predict.run_name(str(chain / "classifier")) == "demo/classifier"
  assert predict.run_name(str(tmp_path / "plain")) == "plain"
