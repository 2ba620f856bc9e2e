"""The ``fer2013`` tfds builder on tiny csv fixtures of both Kaggle files and on the image-folder
layout: splits, labels, ids, exact pixel round trip, skipped rows and files, missing-data errors."""

import os

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines import build
from data_pipelines.datasets import fer2013
from data_pipelines.datasets import tfds_compat
from tests.fixtures import native

_RNG = np.random.default_rng(7)
# Good rows' pixels, by id (random gray 48 x 48, including the extremes 0 and 255).
PIXELS = {i: _RNG.integers(0, 256, (48, 48), dtype=np.uint8) for i in
          ("Training/0", "PublicTest/1", "PrivateTest/2", "Training/3", "PublicTest/11")}
PIXELS["Training/0"][0, :2] = (0, 255)


def _text(pixels: np.ndarray) -> str:
  return " ".join(str(v) for v in pixels.reshape(-1))


ANY = _text(np.full((48, 48), 9, np.uint8))
# (emotion, pixels, Usage) per line after the header; None = a row with only two columns.
ROWS = [
    ("0", _text(PIXELS["Training/0"]), "Training"),         # line 2, row 0
    ("3", _text(PIXELS["PublicTest/1"]), "PublicTest"),     # line 3, row 1
    ("6", _text(PIXELS["PrivateTest/2"]), "PrivateTest"),   # line 4, row 2
    ("2", _text(PIXELS["Training/3"]), "Training"),         # line 5, row 3
    ("7", ANY, "Training"),                                 # line 6: emotion out of range
    ("1", " ".join(["5"] * 2303), "PublicTest"),            # line 7: 2303 pixels
    ("4", ANY.replace("9", "12.5", 1), "PrivateTest"),      # line 8: non-int pixel
    ("5", ANY, "Validation"),                               # line 9: unknown usage
    None,                                                   # line 10: two columns
    ("x", ANY, "Training"),                                 # line 11: emotion not an int
    ("3", ANY.replace("9", "256", 1), "PublicTest"),        # line 12: pixel out of range
    ("5", _text(PIXELS["PublicTest/11"]), "PublicTest"),    # line 13, row 11
]
LABELS = {"Training/0": 0, "Training/3": 2, "PublicTest/1": 3, "PublicTest/11": 5,
          "PrivateTest/2": 6}
SPLIT_IDS = {"train": ["Training/0", "Training/3"],
             "public_test": ["PublicTest/1", "PublicTest/11"],
             "private_test": ["PrivateTest/2"]}


def _skipped(name):
  return sorted([
      ("private_test", "PrivateTest/6", f"{name} line 8: pixel '12.5' is not an integer"),
      ("public_test", "PublicTest/10",
       f"{name} line 12: pixel values must be in 0-255, got 9..256"),
      ("public_test", "PublicTest/5", f"{name} line 7: pixels has 2303 values, expected 2304 "
                                      "(48 x 48)"),
      ("train", f"{name}/line10", f"{name} line 10: expected 3 columns, got 2"),
      ("train", "Training/4", f"{name} line 6: emotion 7 out of range 0-6"),
      ("train", "Training/9", f"{name} line 11: emotion is not an integer: 'x'"),
      ("train", "Validation/7", f"{name} line 9: unknown Usage 'Validation' (expected one of "
                                "Training, PublicTest, PrivateTest)"),
  ])


def _write(path, header, order):
  lines = [header]
  for row in ROWS:
    if row is None:
      lines.append("5,1 2 3")
    else:
      fields = dict(zip(("emotion", "pixels", "Usage"), row))
      lines.append(",".join(fields[c] for c in order))
  with open(path, "w", newline="") as f:
    f.write("\r\n".join(lines) + "\r\n\r\n")  # Windows line ends and a trailing empty line


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  manual = tmp_path_factory.mktemp("manual")
  _write(manual / "fer2013.csv", "emotion,pixels,Usage", ("emotion", "pixels", "Usage"))
  _write(manual / "icml_face_data.csv", "emotion, Usage, pixels", ("emotion", "Usage", "pixels"))
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  return data_dir, {c: build.build("fer2013", c, data_dir=data_dir, manual_dir=str(manual))
                    for c in ("fer2013", "icml_face_data")}


@pytest.mark.parametrize("config,csv_name", [("fer2013", "fer2013.csv"),
                                             ("icml_face_data", "icml_face_data.csv")])
def test_splits_labels_and_skipped_rows(built, config, csv_name):
  _, summaries = built
  summary = summaries[config]
  assert {s: i["num_examples"] for s, i in summary["splits"].items()} == {
      "train": 2, "public_test": 2, "private_test": 1}
  assert summary["splits"]["public_test"]["histograms"]["emotion"] == {
      "Angry": 0, "Disgust": 0, "Fear": 0, "Happy": 1, "Sad": 0, "Surprise": 1, "Neutral": 0}
  skipped = sorted((s["split"], s["id"], s["reason"]) for s in summary["skipped"]["examples"])
  assert skipped == _skipped(csv_name)
  assert summary["skipped"]["count"] == 7


@pytest.mark.parametrize("config", ["fer2013", "icml_face_data"])
def test_pixels_round_trip_exactly(built, config):
  data_dir, _ = built
  for split, ids in SPLIT_IDS.items():
    source = tfds.data_source(f"fer2013/{config}", split=split, data_dir=data_dir)
    records = {r["id"].decode(): r for r in (source[i] for i in range(len(source)))}
    assert sorted(records) == sorted(ids)
    for example_id, r in records.items():
      assert r["emotion"] == LABELS[example_id]
      assert r["image"].shape == (48, 48, 1) and r["image"].dtype == np.uint8
      np.testing.assert_array_equal(r["image"][..., 0], PIXELS[example_id])


def test_image_bytes_are_png(built):
  data_dir, _ = built
  builder = tfds.builder("fer2013/fer2013", data_dir=data_dir)
  source = builder.as_data_source(
      "public_test", decoders=tfds_compat.skip_image_decoding(builder.info.features))
  for i in range(len(source)):
    r = source[i]
    assert r["image"][:8] == b"\x89PNG\r\n\x1a\n"
    gray = cv2.imdecode(np.frombuffer(r["image"], np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(gray, PIXELS[r["id"].decode()])


def test_parse_pixels_errors():
  np.testing.assert_array_equal(fer2013.parse_pixels(" ".join(["255"] * 2304) + " \n"),
                                np.full((48, 48), 255, np.uint8))
  with pytest.raises(ValueError, match="pixel 'a' is not an integer"):
    fer2013.parse_pixels(" ".join(["1"] * 2303 + ["a"]))
  with pytest.raises(ValueError, match="got -1..1"):
    fer2013.parse_pixels(" ".join(["1"] * 2303 + ["-1"]))


def test_missing_manual_data(tmp_path):
  with pytest.raises(build.BuildError, match="fer2013/fer2013: manual data not found in"):
    build.build("fer2013", "fer2013", data_dir=str(tmp_path / "d"),
                manual_dir=str(tmp_path / "nowhere"))
  manual = tmp_path / "manual"
  manual.mkdir()
  (manual / "fer2013.csv").write_text("emotion,pixels,Usage\n")  # the other config's file
  with pytest.raises(build.BuildError) as e:
    build.build("fer2013", "icml_face_data", data_dir=str(tmp_path / "d"),
                manual_dir=str(manual))
  assert f"expected icml_face_data.csv in the manual directory {manual}" in str(e.value)
  assert e.value.line.endswith(f"found in {manual}: fer2013.csv (layout: python -m "
                               "data_pipelines.build fer2013 --layout)")


def test_header_without_a_needed_column(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  (manual / "fer2013.csv").write_text("emotion,Usage\n0,Training\n")
  with pytest.raises(ValueError, match=r"header of .*fer2013.csv lacks the columns \['pixels'\]"):
    build.build("fer2013", "fer2013", data_dir=str(tmp_path / "d"), manual_dir=str(manual))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  manual = tmp_path_factory.mktemp("fer_folders")
  decoded = native.write_fer_folders(manual)
  data_dir = str(tmp_path_factory.mktemp("fer_folders_tfds"))
  summary = build.build("fer2013", "folders", data_dir=data_dir, manual_dir=str(manual))
  return manual, data_dir, summary, decoded


def test_folders_labels_follow_fer_order(folders):
  manual, data_dir, summary, decoded = folders
  assert {s: i["num_examples"] for s, i in summary["splits"].items()} == {"train": 3, "test": 2}
  hist = summary["splits"]["train"]["histograms"]["emotion"]
  assert list(hist) == list(fer2013.EMOTIONS)
  assert hist == {"Angry": 1, "Disgust": 0, "Fear": 0, "Happy": 1, "Sad": 0, "Surprise": 0,
                  "Neutral": 1}
  for split in ("train", "test"):
    source = tfds.data_source("fer2013/folders", split=split, data_dir=data_dir)
    records = {r["id"].decode(): r for r in (source[i] for i in range(len(source)))}
    assert sorted(records) == sorted(k for k in decoded if k.startswith(split + "/"))
    for example_id, r in records.items():
      folder = example_id.split("/")[1]
      assert fer2013.EMOTIONS[int(r["emotion"])].lower() == folder.lower()
      assert r["image"].shape == (48, 48, 1)
      np.testing.assert_array_equal(r["image"][..., 0], decoded[example_id])


def test_folders_bad_files_are_skipped_and_counted(folders):
  manual, _, summary, _ = folders
  got = sorted((s["split"], s["id"], s["reason"]) for s in summary["skipped"]["examples"])
  assert got == sorted([
      ("test", "test/contempt/PublicTest_9.jpg",
       "folder 'contempt' is no FER emotion (expected one of angry, disgust, fear, happy, sad, "
       "surprise, neutral)"),
      ("train", "train/fear/Training_4.jpg",
       f"image is 48 x 40, expected 48 x 48: {manual}/train/fear/Training_4.jpg"),
      ("train", "train/sad/Training_3.jpg",
       f"image file cannot be decoded (corrupt or truncated): {manual}/train/sad/Training_3.jpg"),
  ])
  assert summary["skipped"]["count"] == 3


def test_folders_missing_split_folder(tmp_path):
  os.makedirs(tmp_path / "manual" / "train" / "happy")
  with pytest.raises(build.BuildError) as e:
    build.build("fer2013", "folders", data_dir=str(tmp_path / "d"),
                manual_dir=str(tmp_path / "manual"))
  assert e.value.line == (
      f"fer2013/folders: fer2013: expected test in the manual directory {tmp_path}/manual (not "
      f"found: {tmp_path}/manual/test).; found in {tmp_path}/manual: train/ (layout: python -m "
      "data_pipelines.build fer2013 --layout)")
  with pytest.raises(ValueError, match="layout must be one of"):
    fer2013.Fer2013Config(name="bad", layout="zip")
