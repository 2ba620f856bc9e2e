"""Fault injection on the data: odd-sized photos among UTKFace's 200x200 chips (issue 12).

A native ``UTKFace/`` folder (``[age]_[gender]_[race]_[date&time].jpg.chip.jpg``) of 200x200 chips
holds a 1x1 and a 120x90 JPEG in the train split. ``configs/utkface.py`` feeds the chips at their
size (pipe ``decode|flip_lr``), so those two would stop the first batch ("all input arrays must
have the same shape", naming no file). The build lists them in the split's size histogram; the
run skips them, names them with their size in its summary and trains on the rest.
"""

import json
import os

import cv2
import numpy as np

from data_pipelines import build
from data_pipelines.datasets import utkface
from jaxface import config_lib
from jaxface import train as train_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _names(n: int, split: str, start: int) -> list[str]:
  """``n`` valid chip names that the builder's seeded split (seed 0) puts in ``split``."""
  out, k = [], start
  while len(out) < n:
    name = f"{20 + k % 50}_{k % 2}_{k % 5}_2017011{k % 10}1200{k:05d}.jpg.chip.jpg"
    if utkface.assign_split(name, 0) == split:
      out.append(name)
    k += 1
  return out


def _jpeg(path: str, h: int, w: int, seed: int) -> None:
  img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
  assert cv2.imwrite(path, img)


def test_odd_sized_chips_are_listed_by_the_build_and_skipped_by_the_run(tmp_path):
  folder = tmp_path / "manual" / "UTKFace"
  folder.mkdir(parents=True)
  train, odd = _names(6, "train", 0), _names(2, "train", 1000)
  others = _names(3, "validation", 2000) + _names(3, "test", 3000)
  for i, name in enumerate(train + others):
    _jpeg(str(folder / name), 200, 200, i)
  _jpeg(str(folder / odd[0]), 1, 1, 100)
  _jpeg(str(folder / odd[1]), 90, 120, 101)  # 120 wide, 90 high
  data_dir = str(tmp_path / "tfds")
  summary = build.build("utkface", "aligned", data_dir, str(tmp_path / "manual"))
  assert summary["splits"]["train"]["image_sizes"] == {"200x200": 6, "1x1": 1, "120x90": 1}
  assert summary["splits"]["test"]["image_sizes"] == {"200x200": 3}
  assert "train       image size  200x200:6 120x90:1 1x1:1" in build.format_summary(summary)

  config = config_lib.load(os.path.join(REPO, "configs", "utkface.py")
                           + ":model=resnet18,subset=aligned")
  with config.unlocked():
    config.data.data_dir, config.data.manual_dir = data_dir, str(tmp_path / "manual")
    config.model.kwargs.width = 0.125
    config.model.dtype = "float32"
    for name in ("train", "eval_every", "checkpoint_every", "log_every"):
      for unit in ("steps", "epochs", "examples"):
        config[f"{name}_{unit}"] = 0 if unit != "epochs" else 0.0
    config.batch_size, config.train_steps = 4, 2
    config.eval_every_steps = config.checkpoint_every_steps = config.log_every_steps = 2
    config.eval.batch_size, config.eval.num_sample_images = 4, 0
  workdir = tmp_path / "run"
  train_lib.train_and_evaluate(config, str(workdir))
  with open(workdir / "train_summary.json") as f:
    skipped = json.load(f)["skipped"]
  # 2 steps of 4 need 8 good examples of 6 per epoch: the stream passes both odd ones once or twice.
  assert skipped["count"] >= 2
  reasons = {e["id"]: e["reason"] for e in skipped["examples"]}
  assert reasons == {
      f"train/{odd[0]}": "a 1x1 image gives an image of shape (1, 1, 3) after the pipe; the model "
                         "takes 200x200",
      f"train/{odd[1]}": "a 120x90 image gives an image of shape (90, 120, 3) after the pipe; the "
                         "model takes 200x200"}
  with open(workdir / "eval" / "results.json") as f:
    results = json.load(f)
  assert results["gender"]["n"] == 3 and results["age"]["n"] == 3  # the test split, all good
