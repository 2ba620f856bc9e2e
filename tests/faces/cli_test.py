"""``python -m jaxface.faces detect`` end to end on a folder with a face, no face and a bad file."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from skimage import data

from jaxface.faces import crops, read_image
from tests.faces.haar_test import ASTRONAUT_FACE, iou


def _run(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "jaxface.faces", *map(str, args)],
                        capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture
def photos(tmp_path):
  src = tmp_path / "photos"
  (src / "more").mkdir(parents=True)
  cv2.imwrite(str(src / "astronaut.jpg"), data.astronaut()[..., ::-1])
  cv2.imwrite(str(src / "more" / "wall.png"), np.full((240, 320, 3), 90, np.uint8))
  (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is no JPEG")
  (src / "readme.txt").write_text("not an image extension: skipped")
  return src


def _load(out, rel):
  with open(out / f"{rel}.json") as f:
    return json.load(f)


def test_haar_folder_with_margin_crops_and_annotation(photos, tmp_path):
  out = tmp_path / "out"
  proc = _run("detect", photos, "--out", out, "--detector", "haar", "--crops", "--annotate",
              "--size", "96")
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.splitlines()[-1] == "2 images, 1 faces, 1 errors"
  err = proc.stderr.strip().splitlines()
  assert len(err) == 1 and "broken.jpg" in err[0] and err[0].startswith("error: ")
  assert not (out / "broken.jpg.json").exists() and not (out / "readme.txt.json").exists()

  rec = _load(out, "astronaut.jpg")
  assert rec["image"] == str(photos / "astronaut.jpg")
  assert (rec["width"], rec["height"], rec["detector"], rec["policy"]) == (512, 512, "haar", "all")
  (face,) = rec["faces"]
  assert iou(face["box"], ASTRONAUT_FACE) > 0.5 and face["score"] > 0
  assert "landmarks" not in face
  assert face["crop"] == "astronaut.jpg.face0.png" and face["crop_mode"] == "margin"
  expected_A = crops.box_affine(crops.margin_box(face["box"], 0.3), 96)
  np.testing.assert_allclose(face["crop_affine"], expected_A, rtol=1e-6)
  patch = cv2.imread(str(out / face["crop"]))
  assert patch.shape == (96, 96, 3)
  # The crop PNG holds the pixels crop() gives for the JSON's box (BGR on disk).
  ref, _ = crops.crop(read_image(photos / "astronaut.jpg"), crops.margin_box(face["box"], 0.3), 96)
  np.testing.assert_array_equal(patch[..., ::-1], ref)
  annotated = cv2.imread(str(out / "astronaut.jpg.annotated.png"))
  assert annotated.shape == (512, 512, 3)
  x1 = int(round(face["box"][0] + 0.5))
  assert (annotated[100:140, x1] == [0, 255, 0]).all()  # the left edge of the box, drawn in green

  wall = _load(out, os.path.join("more", "wall.png"))
  assert wall["faces"] == [] and (wall["width"], wall["height"]) == (320, 240)
  assert (out / "more" / "wall.png.annotated.png").exists()


def test_errors_only_and_bad_arguments(photos, tmp_path):
  proc = _run("detect", photos / "broken.jpg", "--out", tmp_path / "o1", "--detector", "haar")
  assert proc.returncode == 1
  assert proc.stdout.splitlines()[-1] == "0 images, 0 faces, 1 errors"
  assert "Traceback" not in proc.stderr
  proc = _run("detect", tmp_path / "missing", "--out", tmp_path / "o2", "--detector", "haar")
  assert proc.returncode == 2 and "IMAGE_OR_DIR not found" in proc.stderr
  proc = _run("detect", photos, "--out", tmp_path / "o3", "--detector", "haar", "--crops",
              "--crop-mode", "align")
  assert proc.returncode == 2 and "needs landmarks" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_mtcnn_landmarks_and_task_crops(photos, tmp_path):
  out = tmp_path / "out"
  proc = _run("detect", photos, "--out", out, "--detector", "mtcnn", "--policy", "largest",
              "--crops", "--crop-mode", "task5", "--size", "64")
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.splitlines()[-1] == "2 images, 1 faces, 1 errors"
  (face,) = _load(out, "astronaut.jpg")["faces"]
  assert iou(face["box"], ASTRONAUT_FACE) > 0.5 and 0.9 < face["score"] <= 1
  lm = face["landmarks"]
  assert list(lm) == ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"]
  # Landmarks inside the face, eyes above the nose above the mouth, left eye on the photo's left.
  for x, y in lm.values():
    assert ASTRONAUT_FACE[0] < x < ASTRONAUT_FACE[2] and ASTRONAUT_FACE[1] < y < ASTRONAUT_FACE[3]
  assert lm["left_eye"][0] < lm["right_eye"][0]
  assert max(lm["left_eye"][1], lm["right_eye"][1]) < lm["nose"][1] < lm["mouth_left"][1]
  assert cv2.imread(str(out / face["crop"])).shape == (64, 64, 3)
  assert face["crop_mode"] == "task5"
  assert _load(out, os.path.join("more", "wall.png"))["faces"] == []
