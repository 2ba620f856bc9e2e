"""The ``fotw`` builder: a fixture in the shipped schema's layout, a second one with a user-edited
schema (other delimiter, header names, column order and codes), and schema errors."""

import collections
import copy
import json
import os

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines import build
from data_pipelines.datasets import fotw
from data_pipelines.datasets import tfds_compat


def _jpeg(seed: int) -> bytes:
  img = np.random.default_rng(seed).integers(0, 255, (32, 32, 3), np.uint8)
  return cv2.imencode(".jpg", img)[1].tobytes()


def _write(root: str, rel: str, data) -> None:
  path = os.path.join(root, rel)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if isinstance(data, bytes):
    with open(path, "wb") as f:
      f.write(data)
  else:
    with open(path, "w", newline="") as f:  # keep the CRLF of the fixtures that have it
      f.write(data)


TRAIN_CSV = """\
img_0001.jpg,10,12,20,22,0,1
img_0002.jpg,5.5,6,10,10,1,0
img_0003.jpg,1,1,8,8,2,1
img_0004.jpg,1,1,8,8,0,2
img_0005.jpg,1,1,8,8,1

img_0006.jpg,1,1,8,8,7,0
img_0007.jpg,1,one,8,8,0,0
img_0008.jpg,1,1,8,8,0,0
img_0009.jpg,1,1,8,8,1,1
img_0001.jpg,10,12,20,22,1,1
img_0010.jpg,0,0,0,8,1,1
"""
VAL_CSV = "v_0001.jpg,3,4,10,12,1,1\r\nv_0002.jpg,3,4,10,12,0,0\r\n"  # CRLF
TEST_CSV = "t_0001.jpg,2,2,16,16,0,0\n"


def _default_tree(root: str) -> dict[str, bytes]:
  files = {f"train/img_{i:04d}.jpg": _jpeg(i) for i in (1, 2, 3, 4, 5, 6, 7, 10)}
  files["train/img_0009.jpg"] = b"\xff\xd8\xff\xe0 not really a JPEG"  # corrupt; 0008 missing
  files.update({"val/v_0001.jpg": _jpeg(21), "val/v_0002.jpg": _jpeg(22),
                "test/t_0001.jpg": _jpeg(31)})
  for rel, data in files.items():
    _write(root, rel, data)
  _write(root, "train.csv", TRAIN_CSV)
  _write(root, "val.csv", VAL_CSV)
  _write(root, "test.csv", TEST_CSV)
  return files


def _records(builder, split):
  source = builder.as_data_source(
      split, decoders=tfds_compat.skip_image_decoding(builder.info.features))
  return {source[i]["id"].decode(): source[i] for i in range(len(source))}


def _check_records(builder, files, expected):
  """``expected``: split -> {id: (gender, smile, box)}."""
  genders = builder.info.features["gender"].names
  smiles = builder.info.features["smile"].names
  for split, want in expected.items():
    records = _records(builder, split)
    assert sorted(records) == sorted(want)
    for example_id, r in records.items():
      gender, smile, box = want[example_id]
      assert r["image"] == files[example_id]
      assert (genders[r["gender"]], smiles[r["smile"]]) == (gender, smile)
      np.testing.assert_array_equal(r["box"], np.array(box, np.float32))


def _skipped(summary):
  return collections.Counter(
      (e["split"], e["id"], e["reason"]) for e in summary["skipped"]["examples"])


DEFAULT_EXPECTED = {
    "train": {"train/img_0001.jpg": ("m", "yes", [10, 12, 30, 34]),
              "train/img_0002.jpg": ("f", "no", [5.5, 6, 15.5, 16])},
    "validation": {"val/v_0001.jpg": ("f", "yes", [3, 4, 13, 16]),
                   "val/v_0002.jpg": ("m", "no", [3, 4, 13, 16])},
    "test": {"test/t_0001.jpg": ("m", "no", [2, 2, 18, 18])},
}


def _default_skips(manual: str, other_skipped: bool) -> list[tuple]:
  skips = [
      ("train", "train.csv line 5", "train.csv line 5: expected at least 7 cells, got 6"),
      ("train", "train.csv line 7",
       "train.csv line 7: unknown gender code '7' (schema codes.gender: 0, 1, 2)"),
      ("train", "train.csv line 8",
       "train.csv line 8: box x, y, width, height must be numbers, got ['1', 'one', '8', '8']"),
      ("train", "train/img_0008.jpg",
       f"train.csv line 9: image file missing: {manual}/train/img_0008.jpg"),
      ("train", "train/img_0009.jpg", "train.csv line 10: image file cannot be decoded "
       f"(corrupt or truncated): {manual}/train/img_0009.jpg"),
      ("train", "train/img_0001.jpg",
       "train.csv line 11: repeats img_0001.jpg (first on line 1, kept)"),
      ("train", "train.csv line 12",
       "train.csv line 12: box width and height must be positive and finite, got 0 x 8"),
  ]
  if other_skipped:
    skips += [
        ("train", "train.csv line 3",
         "train.csv line 3: gender code '2' means other (config other='skip')"),
        ("train", "train.csv line 4",
         "train.csv line 4: smile code '2' means other (config other='skip')"),
    ]
  return skips


def test_default_schema_layout(tmp_path):
  manual = str(tmp_path / "manual")
  files = _default_tree(manual)
  data_dir = str(tmp_path / "tfds")
  summary = build.build("fotw", "default", data_dir=data_dir, manual_dir=manual)
  assert {s: i["num_examples"] for s, i in summary["splits"].items()} == {
      "train": 2, "validation": 2, "test": 1}
  assert summary["splits"]["train"]["histograms"] == {
      "gender": {"m": 1, "f": 1}, "smile": {"no": 1, "yes": 1}}
  assert _skipped(summary) == collections.Counter(_default_skips(manual, other_skipped=True))
  assert summary["skipped"]["count"] == 9
  _check_records(tfds.builder("fotw/default", data_dir=data_dir), files, DEFAULT_EXPECTED)


def test_with_other_keeps_a_third_class(tmp_path):
  manual = str(tmp_path / "manual")
  files = _default_tree(manual)
  data_dir = str(tmp_path / "tfds")
  summary = build.build("fotw", "with_other", data_dir=data_dir, manual_dir=manual)
  assert summary["splits"]["train"]["histograms"] == {
      "gender": {"m": 2, "f": 1, "other": 1}, "smile": {"no": 1, "yes": 2, "other": 1}}
  assert _skipped(summary) == collections.Counter(_default_skips(manual, other_skipped=False))
  expected = copy.deepcopy(DEFAULT_EXPECTED)
  expected["train"].update({"train/img_0003.jpg": ("other", "yes", [1, 1, 9, 9]),
                            "train/img_0004.jpg": ("m", "other", [1, 1, 9, 9])})
  _check_records(tfds.builder("fotw/with_other", data_dir=data_dir), files, expected)


EDITED_SCHEMA = {
    "about": "a user's copy with the columns of their CSV",
    "delimiter": ";",
    "header": True,
    "columns": {"file": "Image", "x": "Left", "y": "Top", "width": "W", "height": "H",
                "gender": "Sex", "smile": "Smile"},
    "codes": {"gender": {"M": "m", "F": "f", "U": "other"},
              "smile": {"1": "yes", "-1": "no", "0": "other"}},
    "splits": {"train": {"labels": "labels/gt_train.csv", "images": "imgs/tr"},
               "validation": {"labels": "labels/gt_val.csv", "images": ""}},
}


def test_edited_schema_drives_parsing(tmp_path):
  manual = str(tmp_path / "manual")
  files = {"imgs/tr/a.jpg": _jpeg(1), "imgs/tr/b.jpg": _jpeg(2), "imgs/tr/c.jpg": _jpeg(3),
           "v.jpg": _jpeg(4)}
  for rel, data in files.items():
    _write(manual, rel, data)
  # Header cells padded with spaces; the smile code comes first and the box is scattered.
  _write(manual, "labels/gt_train.csv", "Smile; Sex ;Top;Image;Left;H;W;Note\n"
         "1;F;5;a.jpg;4;20;10;ok\n"
         "-1;M;0;b.jpg;2;8;6;\n"
         "0;M;1;c.jpg;1;8;8;unsure\n"
         "1;X;1;c.jpg;1;8;8;bad code\n"
         "1;F;1;c.jpg;1;8\n")
  _write(manual, "labels/gt_val.csv", "Image;Sex;Smile;Left;Top;W;H;Note\nv.jpg;U;-1;0;0;4;4;\n"
         "v.jpg;M;-1;0;0;4;4;\n")
  _write(manual, "my_schema.json", json.dumps(EDITED_SCHEMA))
  builder = fotw.Fotw(config=fotw.FotwConfig(name="edited", schema="my_schema.json"),
                      data_dir=str(tmp_path / "tfds"))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
  assert {s: i.num_examples for s, i in builder.info.splits.items()} == {
      "train": 2, "validation": 1}
  assert collections.Counter(builder.skipped) == collections.Counter([
      ("train", "gt_train.csv line 4",
       "gt_train.csv line 4: smile code '0' means other (config other='skip')"),
      ("train", "gt_train.csv line 5",
       "gt_train.csv line 5: unknown gender code 'X' (schema codes.gender: M, F, U)"),
      ("train", "gt_train.csv line 6",
       "gt_train.csv line 6: expected 8 cells (as in the header), got 6"),
      ("validation", "gt_val.csv line 2",
       "gt_val.csv line 2: gender code 'U' means other (config other='skip')"),
  ])
  _check_records(builder, files, {
      "train": {"imgs/tr/a.jpg": ("f", "yes", [4, 5, 14, 25]),
                "imgs/tr/b.jpg": ("m", "no", [2, 0, 8, 8])},
      "validation": {"v.jpg": ("m", "no", [0, 0, 4, 4])},
  })


def _schema_file(tmp_path, edit) -> str:
  raw = copy.deepcopy(EDITED_SCHEMA)
  edit(raw)
  path = tmp_path / "schema.json"
  path.write_text(json.dumps(raw))
  return str(path)


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.pop("codes"), "codes: missing"),
    (lambda s: s.update(colums={}), "colums: unknown key"),
    (lambda s: s.update(delimiter=";;"), "delimiter: must be one character, got ';;'"),
    (lambda s: s.update(header="yes"), "header: must be true or false"),
    (lambda s: s.update(header=False), "columns.file: the header name 'Image' needs"),
    (lambda s: s["columns"].pop("smile"), "columns.smile: missing"),
    (lambda s: s["columns"].update(gender="Smile"), "columns.gender: column 'Smile' is given to "
     "two fields"),
    (lambda s: s["columns"].update(x=-1), "columns.x: column index must be >= 0"),
    (lambda s: s["columns"].update(y=1.5), "columns.y: must be a column index or a header name"),
    (lambda s: s["codes"]["gender"].update(M="male"), "codes.gender.M: class must be one of m, "
     "f, other, got 'male'"),
    (lambda s: s["codes"]["smile"].pop("1"), "codes.smile: no code maps to 'yes'"),
    (lambda s: s["codes"].update(age={}), "codes: must be an object with exactly the keys"),
    (lambda s: s.update(splits={}), "splits: must be a non-empty object"),
    (lambda s: s["splits"].update({"val-1": {"labels": "a", "images": ""}}),
     "splits.val-1: split names are letters"),
    (lambda s: s["splits"]["train"].pop("images"), "splits.train: must be an object with exactly"),
    (lambda s: s["splits"]["train"].update(labels=""), "splits.train.labels: must be a non-empty"),
])
def test_schema_errors_name_file_and_key(tmp_path, edit, message):
  path = _schema_file(tmp_path, edit)
  with pytest.raises(ValueError) as e:
    fotw.load_schema(path)
  assert str(e.value).startswith(f"{path}: ")
  assert message in str(e.value)


def test_schema_file_problems(tmp_path):
  with pytest.raises(FileNotFoundError, match="FotW schema not found: .*nope.json"):
    fotw.load_schema(str(tmp_path / "nope.json"))
  bad = tmp_path / "bad.json"
  bad.write_text('{"delimiter": ",",}')
  with pytest.raises(ValueError, match="bad.json: not valid JSON"):
    fotw.load_schema(str(bad))
  shipped = fotw.load_schema(fotw.DEFAULT_SCHEMA)
  assert shipped.columns == {"file": 0, "x": 1, "y": 2, "width": 3, "height": 4, "gender": 5,
                             "smile": 6}
  assert shipped.splits["validation"] == {"labels": "val.csv", "images": "val"}


def test_header_name_missing_from_csv_is_fatal(tmp_path):
  manual = str(tmp_path / "manual")
  _write(manual, "labels/gt_train.csv", "Smile;Gender;Top;Image;Left;H;W\n1;F;5;a.jpg;4;20;10\n")
  _write(manual, "labels/gt_val.csv", "")
  os.makedirs(os.path.join(manual, "imgs/tr"))
  _write(manual, "my_schema.json", json.dumps(EDITED_SCHEMA))
  builder = fotw.Fotw(config=fotw.FotwConfig(name="edited2", schema="my_schema.json"),
                      data_dir=str(tmp_path / "tfds"))
  with pytest.raises(ValueError, match=r"gt_train.csv: the header .* has no column 'Sex' "
                     r"\(schema .*my_schema.json: columns.gender\)"):
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual))


def test_missing_manual_dir_label_file_and_bad_policy(tmp_path):
  with pytest.raises(build.BuildError, match="manual data not found"):
    build.build("fotw", "default", data_dir=str(tmp_path / "a"),
                manual_dir=str(tmp_path / "nowhere"))
  manual = tmp_path / "manual"
  (manual / "train").mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match="expected train.csv in the manual directory"):
    build.build("fotw", "default", data_dir=str(tmp_path / "b"), manual_dir=str(manual))
  with pytest.raises(ValueError, match="FotwConfig.other must be one of skip, class"):
    fotw.FotwConfig(name="x", other="drop").class_names("gender")


# --- Landmarks from a build-time MTCNN pass (configs *_mtcnn): LFW faces in the fixture images.

FACE_TRAIN_CSV = """\
img_0001.jpg,35,25,77,100,0,1
img_0002.jpg,36,28,76,98,1,0
img_0003.jpg,35,25,77,100,0,0
img_0004.jpg,0,140,20,20,1,1
"""
FACE_VAL_CSV = "v_0001.jpg,35,25,77,100,1,1\n"
FACE_TEST_CSV = "t_0001.jpg,35,25,77,100,0,0\n"


def write_face_tree(root: str) -> dict[str, bytes]:
  """The shipped schema's layout with LFW faces (160 x 160): img_0003 is mid-grey (no face) and
  img_0004's box lies away from its face."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  from tests import helpers  # pylint: disable=g-import-not-at-top
  lfw = skimage.data.lfw_subset()
  names = ["train/img_0001.jpg", "train/img_0002.jpg", "train/img_0003.jpg",
           "train/img_0004.jpg", "val/v_0001.jpg", "test/t_0001.jpg"]
  files = {}
  for i, rel in enumerate(names):
    rgb = helpers.lfw_photo(lfw[i])
    if rel.endswith("img_0003.jpg"):
      rgb = np.full_like(rgb, 128)
    files[rel] = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
    _write(root, rel, files[rel])
  _write(root, "train.csv", FACE_TRAIN_CSV)
  _write(root, "val.csv", FACE_VAL_CSV)
  _write(root, "test.csv", FACE_TEST_CSV)
  return files


def test_detection_adds_landmarks_to_the_stored_box(tmp_path):
  manual = str(tmp_path / "manual")
  files = write_face_tree(manual)
  data_dir = str(tmp_path / "tfds")
  summary = build.build("fotw", "default", data_dir=data_dir, manual_dir=manual, detect="mtcnn")
  assert summary["config"] == "default_mtcnn"
  assert {s: i["num_examples"] for s, i in summary["splits"].items()} == {
      "train": 2, "validation": 1, "test": 1}
  assert _skipped(summary) == collections.Counter([
      ("train", "train/img_0003.jpg",
       "train.csv line 3: no face found by mtcnn overlapping the box [35.0, 25.0, 112.0, 125.0] "
       "(0 elsewhere)"),
      ("train", "train/img_0004.jpg",
       "train.csv line 4: no face found by mtcnn overlapping the box [0.0, 140.0, 20.0, 160.0] "
       "(1 elsewhere)"),
  ])
  assert summary["detection"]["counts"] == {"detected": 4, "no face found": 2}
  builder = tfds.builder("fotw/default_mtcnn", data_dir=data_dir)
  for split in ("train", "validation", "test"):
    for example_id, r in _records(builder, split).items():
      assert r["image"] == files[example_id]
      box = np.array([35, 25, 112, 125], np.float32) if example_id != "train/img_0002.jpg" else \
          np.array([36, 28, 112, 126], np.float32)
      np.testing.assert_array_equal(r["box"], box)  # the annotation's box is kept
      lm = r["landmarks"]
      assert lm.shape == (5, 2) and np.isfinite(lm).all() and r["score"] > 0.9
      assert ((lm[:, 0] > box[0]) & (lm[:, 0] < box[2]) & (lm[:, 1] > box[1]) &
              (lm[:, 1] < box[3])).all()
  # Zhang et al.'s SNet crop 1 needs the landmarks: it now runs on the records (no detect op).
  from data_pipelines import pp  # pylint: disable=g-import-not-at-top
  r = _records(builder, "train")["train/img_0001.jpg"]
  out = pp.Pipeline("decode|task_crop(1, 32)")(
      {"image": r["image"], "box": r["box"], "landmarks": r["landmarks"], "id": "x"},
      np.random.default_rng(0))
  assert out["image"].shape == (32, 32, 3)


def test_landmark_detection_is_mtcnn_only(tmp_path):
  with pytest.raises(build.BuildError, match="--detect haar: dataset 'fotw' detects with mtcnn"):
    build.build("fotw", "default", data_dir=str(tmp_path), detect="haar")
  assert build.config_names("fotw") == [
      "default", "with_other", "default_mtcnn", "default_mtcnn_whole_image", "with_other_mtcnn",
      "with_other_mtcnn_whole_image"]


def test_whole_image_policy_keeps_the_box_without_landmarks(tmp_path):
  manual = str(tmp_path / "manual")
  write_face_tree(manual)
  data_dir = str(tmp_path / "tfds")
  summary = build.build("fotw", "default", data_dir=data_dir, manual_dir=manual, detect="mtcnn",
                        detect_no_face="whole_image")
  assert summary["config"] == "default_mtcnn_whole_image"
  assert summary["skipped"]["count"] == 0
  assert summary["detection"]["counts"] == {"detected": 4,
                                            "no face found: box kept without landmarks": 2}
  records = _records(tfds.builder("fotw/default_mtcnn_whole_image", data_dir=data_dir), "train")
  r = records["train/img_0004.jpg"]
  np.testing.assert_array_equal(r["box"], [0, 140, 20, 160])
  assert r["score"] == 0 and np.isnan(r["landmarks"]).all()
  assert np.isfinite(records["train/img_0001.jpg"]["landmarks"]).all()
