"""End to end on Adience's native layout: ``configs/adience_age.py`` at smoke size, but on an
Adience manual directory (fold files + faces/ tree with real LFW faces), not the synthetic data. The
trainer's automatic build runs the build-time MTCNN pass (config ``faces_age_mtcnn``), trains two
steps with the paper's 30 % margin face crop from the detected box, and evaluates."""

import json
import os

import cv2
import numpy as np
import skimage.data

from data_pipelines.datasets import adience
from jaxface import config_lib
from jaxface import config_presets
from jaxface import train as train_lib
from tests import helpers

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
HEADER = ("user_id\toriginal_image\tface_id\tage\tgender\tx\ty\tdx\tdy\ttilt_ang\t"
          "fiducial_yaw_angle\tfiducial_score")
AGES = ("(0, 2)", "(4, 6)", "(8, 12)", "(15, 20)", "(25, 32)", "(38, 43)", "(48, 53)",
        "(60, 100)")
PER_FOLD = 4


def _write_manual_dir(root: str) -> None:
  """Five fold files (one Flickr user per fold, so subject-exclusive), PER_FOLD LFW faces each, and
  one mid-grey image in fold 1 in which no face can be found."""
  lfw = skimage.data.lfw_subset()
  n = 0
  for k in range(5):
    user = f"{k}0@N0{k}"
    rows = []
    for j in range(PER_FOLD + (k == 1)):
      image = f"p{k}{j}.jpg"
      rows.append(f"{user}\t{image}\t{j + 1}\t{AGES[n % 8]}\t{'mf'[n % 2]}\t0\t0\t90\t90\t0\t0\t1")
      rgb = helpers.lfw_photo(lfw[n]) if j < PER_FOLD else np.full((160, 160, 3), 128, np.uint8)
      path = os.path.join(root, "faces", user, f"coarse_tilt_aligned_face.{j + 1}.{image}")
      os.makedirs(os.path.dirname(path), exist_ok=True)
      cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
      n += 1
    with open(os.path.join(root, f"fold_{k}_data.txt"), "w") as f:
      f.write("\n".join([HEADER] + rows) + "\n")


def test_adience_age_config_builds_with_detection_trains_and_evaluates(tmp_path):
  manual = str(tmp_path / "adience")
  _write_manual_dir(manual)
  data_dir = str(tmp_path / "tfds")
  full = config_lib.load(os.path.join(CONFIGS, "adience_age.py") + ":fold=0,r=0")
  assert (full.data.name, full.data.config) == ("adience", "faces_age_mtcnn")
  config = config_lib.load(os.path.join(CONFIGS, "adience_age.py") + ":smoke,fold=0,r=0")
  with config.unlocked():  # apply_smoke switched the data to synthetic: back to the real layout
    config.data.name, config.data.config = full.data.name, full.data.config
    config.data.manual_dir, config.data.data_dir, config.data.build = manual, data_dir, True
    config_presets.adience_splits(config, 0)
  workdir = str(tmp_path / "run")
  summary = train_lib.train_and_evaluate(config, workdir)
  assert summary["step"] == 2
  with open(os.path.join(data_dir, "adience", "faces_age_mtcnn", "summary.json")) as f:
    built = json.load(f)
  assert built["detection"]["counts"] == {"detected": 5 * PER_FOLD, "no face found": 1}
  assert [s["reason"] for s in built["skipped"]["examples"]] == [
      "fold_1_data.txt line 6: no face found by mtcnn"]
  assert [built["splits"][f"fold{k}"]["num_examples"] for k in range(5)] == [PER_FOLD] * 5
  with open(os.path.join(workdir, "eval", "results.json")) as f:
    results = json.load(f)
  assert results["age"]["n"] == PER_FOLD  # the test fold, every face detected
  assert 0.0 <= results["age"]["accuracy"] <= 1.0
  assert results["age"]["class_names"] == list(adience.AGE_NAMES)
  # No example of the test fold was lost at load time (the detected box feeds face_crop).
  assert results["_run"]["split"] == "fold0" and results["_run"]["skipped"]["count"] == 0
