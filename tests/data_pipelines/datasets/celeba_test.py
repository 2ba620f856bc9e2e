"""The ``celeba`` builder on a tiny tree in CelebA's native layout (and the flat alternative):
labels, splits, skipped reasons and stored bytes against hand-written expectations."""

import collections
import os

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines import build
from data_pipelines.datasets import celeba
from data_pipelines.datasets import tfds_compat

ATTR_HEADER = " ".join(celeba.ATTRIBUTES) + " \n"  # the real header ends with a space


def _signs(male: int, smiling: int, young: int = 1) -> list[int]:
  """40 attribute values, -1 except Male, Smiling, Young and Attractive (index 2) = +1."""
  v = [-1] * 40
  v[2], v[20], v[31], v[39] = 1, male, smiling, young
  return v


def _row(file: str, values) -> str:
  # Whitespace-aligned like the originals: positive values get two spaces before them.
  return file + "".join(f" {v}" if str(v).startswith("-") else f"  {v}" for v in values) + "\n"


def _jpeg(seed: int, size=(32, 32)) -> bytes:
  img = np.random.default_rng(seed).integers(0, 255, (*size, 3), np.uint8)
  return cv2.imencode(".jpg", img)[1].tobytes()


LANDMARKS = {f"{i:06d}.jpg": [10 + i, 11, 20 + i, 12, 15, 18, 11, 25, 21, 26] for i in range(1, 13)}
BOXES = {f"{i:06d}.jpg": [i, 2 * i, 10, 12] for i in range(1, 13)}


def _write_tree(root: str, flat: bool, images: str) -> dict[str, bytes]:
  """Writes the fixture; returns the bytes of every image file written."""
  anno = root if flat else os.path.join(root, "Anno")
  evl = root if flat else os.path.join(root, "Eval")
  img = os.path.join(root, images) if flat else os.path.join(root, "Img", images)
  for d in (anno, evl, img):
    os.makedirs(d, exist_ok=True)
  files = {}
  for i in (1, 4, 5, 6, 7, 9, 10, 11, 12):  # 000003 is listed but missing
    files[f"{i:06d}.jpg"] = _jpeg(i)
  files["000002.jpg"] = b"\xff\xd8\xff\xe0garbage, not a JPEG"
  for name, data in files.items():
    with open(os.path.join(img, name), "wb") as f:
      f.write(data)
  # CRLF line endings, as Windows-made copies have them.
  partition = ["000001.jpg 0", "000002.jpg 0", "000003.jpg 0", "000004.jpg 1", "000005.jpg 2",
               "000006.jpg 2", "000007.jpg 0", "000008.jpg 3", "000009.jpg 1", "000011.jpg 0",
               "000012.jpg 0", "000013.jpg 2"]  # 000013: in no annotation list
  with open(os.path.join(evl, "list_eval_partition.txt"), "w", newline="") as f:
    f.write("\r\n".join(partition) + "\r\n")
  attrs = {
      "000001.jpg": _signs(1, -1), "000002.jpg": _signs(1, 1), "000003.jpg": _signs(-1, 1),
      "000004.jpg": _signs(-1, 1, young=-1), "000005.jpg": _signs(1, 1),
      "000006.jpg": _signs(1, 1)[:39],  # a value short
      "000007.jpg": _signs(-1, -1), "000009.jpg": _signs(0, 1),  # Male = 0: not +1/-1
      "000010.jpg": _signs(1, 1), "000011.jpg": _signs(1, 1), "000012.jpg": _signs(-1, -1),
  }
  with open(os.path.join(anno, "list_attr_celeba.txt"), "w") as f:
    f.write("12\n" + ATTR_HEADER)  # 12 announced, 11 rows follow
    f.writelines(_row(k, v) for k, v in attrs.items())
  lm_files = [k for k in attrs if k != "000007.jpg"]
  for list_name in ("list_landmarks_align_celeba.txt", "list_landmarks_celeba.txt"):
    with open(os.path.join(anno, list_name), "w") as f:
      f.write(f"{len(lm_files)}\n" + " ".join(celeba.LANDMARK_COLUMNS) + "\n")
      for k in lm_files:
        values = LANDMARKS[k] if k != "000011.jpg" else LANDMARKS[k][:9] + ["7a"]
        f.write(_row(k, values))
  with open(os.path.join(anno, "list_bbox_celeba.txt"), "w") as f:
    f.write(f"{len(lm_files)}\nimage_id x_1 y_1 width height\n")
    f.writelines(_row(k, BOXES[k]) for k in lm_files)
  with open(os.path.join(anno, "identity_CelebA.txt"), "w") as f:
    f.writelines(f"{k} {100 + int(k[:6])}\n" for k in attrs)
  return files


def _path(manual, flat, images, name):
  return os.path.join(manual, images if flat else os.path.join("Img", images), name)


def _expected_skips(manual: str, flat: bool, images: str, landmarks: str) -> list[tuple]:
  not_in = "but not in list_eval_partition.txt"
  return [
      ("(none)", "list_attr_celeba.txt",
       "count line says 12 images but 11 rows follow (not fatal)"),
      ("(none)", "000010.jpg", f"in list_attr_celeba.txt, {landmarks}, identity_CelebA.txt"
       + (", list_bbox_celeba.txt" if images == "img_celeba" else "") + f" {not_in}"),
      ("(none)", "000008.jpg",
       "list_eval_partition.txt line 8: unknown partition code '3' (expected 0, 1 or 2)"),
      ("train", "000002.jpg", "image file cannot be decoded (corrupt or truncated): "
       + _path(manual, flat, images, "000002.jpg")),
      ("train", "000003.jpg", "image file missing: " + _path(manual, flat, images, "000003.jpg")),
      ("train", "000007.jpg", f"in list_eval_partition.txt but not in {landmarks}"
       + (", list_bbox_celeba.txt" if images == "img_celeba" else "")),
      ("train", "000011.jpg",
       f"{landmarks} line 11: values must be integers, got '21 11 31 12 15 18 11 25 21 7a'"),
      ("validation", "000009.jpg",
       "list_attr_celeba.txt line 10: attribute values must be +1 or -1 (bad: Male)"),
      ("test", "000013.jpg", f"in list_eval_partition.txt but not in list_attr_celeba.txt, "
       f"{landmarks}, identity_CelebA.txt"
       + (", list_bbox_celeba.txt" if images == "img_celeba" else "")),
      ("test", "000006.jpg",
       "list_attr_celeba.txt line 8: expected 40 values after the file name, got 39"),
  ]


# file -> (split, gender, smile, identity)
EXPECTED = {
    "000001.jpg": ("train", "m", "no", 101),
    "000012.jpg": ("train", "f", "no", 112),
    "000004.jpg": ("validation", "f", "yes", 104),
    "000005.jpg": ("test", "m", "yes", 105),
}


def _records(data_dir: str, config: str, split: str) -> dict[str, dict]:
  builder = tfds.builder(f"celeba/{config}", data_dir=data_dir)
  source = builder.as_data_source(
      split, decoders=tfds_compat.skip_image_decoding(builder.info.features))
  return {source[i]["id"].decode(): source[i] for i in range(len(source))}


@pytest.mark.parametrize("config,flat", [("aligned", False), ("in_the_wild", True)])
def test_build_labels_splits_and_skips(tmp_path, config, flat):
  images = "img_align_celeba" if config == "aligned" else "img_celeba"
  landmarks = ("list_landmarks_align_celeba.txt" if config == "aligned"
               else "list_landmarks_celeba.txt")
  manual = str(tmp_path / "manual")
  files = _write_tree(manual, flat, images)
  summary = build.build("celeba", config, data_dir=str(tmp_path / "tfds"), manual_dir=manual)

  assert {s: i["num_examples"] for s, i in summary["splits"].items()} == {
      "train": 2, "validation": 1, "test": 1}
  assert summary["splits"]["train"]["histograms"] == {
      "gender": {"m": 1, "f": 1}, "smile": {"no": 2, "yes": 0}}
  skipped = [(e["split"], e["id"], e["reason"]) for e in summary["skipped"]["examples"]]
  assert collections.Counter(skipped) == collections.Counter(
      _expected_skips(manual, flat, images, landmarks))
  assert summary["skipped"]["count"] == 10

  for split in ("train", "validation", "test"):
    records = _records(str(tmp_path / "tfds"), config, split)
    assert sorted(records) == sorted(k for k, v in EXPECTED.items() if v[0] == split)
    for file, r in records.items():
      _, gender, smile, identity = EXPECTED[file]
      assert r["image"] == files[file]
      assert ["m", "f"][r["gender"]] == gender and ["no", "yes"][r["smile"]] == smile
      assert r["identity"] == identity
      assert r["landmarks"].dtype == np.float32
      np.testing.assert_array_equal(r["landmarks"].reshape(-1), LANDMARKS[file])
      if config == "in_the_wild":
        x, y, w, h = BOXES[file]
        np.testing.assert_array_equal(r["box"], [x, y, x + w, y + h])
      else:
        assert "box" not in r
  builder = tfds.builder(f"celeba/{config}", data_dir=str(tmp_path / "tfds"))
  assert builder.info.metadata["attributes"][:3] == [
      "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive"]
  assert len(builder.info.metadata["attributes"]) == 40
  attrs = _records(str(tmp_path / "tfds"), config, "validation")["000004.jpg"]["attributes"]
  # 000004: Attractive and Smiling only (Male -1, Young -1).
  assert attrs.dtype == np.int32
  assert np.flatnonzero(attrs).tolist() == [2, 31]


def test_landmark_names_map_in_order():
  assert celeba.LANDMARK_COLUMNS[::2] == (
      "lefteye_x", "righteye_x", "nose_x", "leftmouth_x", "rightmouth_x")
  assert (celeba.MALE, celeba.SMILING, celeba.ATTRIBUTES.index("Young")) == (20, 31, 39)


def test_missing_manual_dir_and_label_file(tmp_path):
  with pytest.raises(build.BuildError, match="manual data not found"):
    build.build("celeba", "aligned", data_dir=str(tmp_path / "a"),
                manual_dir=str(tmp_path / "nowhere"))
  manual = tmp_path / "manual"
  (manual / "Img" / "img_align_celeba").mkdir(parents=True)
  (manual / "Anno").mkdir()
  (manual / "Anno" / "list_attr_celeba.txt").write_text("0\n" + ATTR_HEADER)
  with pytest.raises(FileNotFoundError, match="expected Eval/list_eval_partition.txt"):
    build.build("celeba", "aligned", data_dir=str(tmp_path / "b"), manual_dir=str(manual))


def test_wrong_header_is_fatal_and_names_the_line(tmp_path):
  path = tmp_path / "list_attr_celeba.txt"
  path.write_text("1\n" + " ".join(celeba.ATTRIBUTES[::-1]) + "\n000001.jpg" + " 1" * 40 + "\n")
  with pytest.raises(ValueError, match=r"list_attr_celeba.txt:2: expected the header"):
    celeba.read_list(str(path), celeba.ATTRIBUTES, 40, lambda v: v)
  path.write_text("lots\n" + ATTR_HEADER)
  with pytest.raises(ValueError, match=r"list_attr_celeba.txt:1: expected the number of images"):
    celeba.read_list(str(path), celeba.ATTRIBUTES, 40, lambda v: v)


def test_repeated_row_is_a_problem(tmp_path):
  path = tmp_path / "identity_CelebA.txt"
  path.write_text("000001.jpg 5\n000002.jpg 6\n000001.jpg 5\n")
  parsed = celeba.read_list(str(path), None, 1, lambda v: int(v[0]))
  assert parsed.rows == {"000002.jpg": 6}
  assert parsed.problems == {
      "000001.jpg": ["identity_CelebA.txt line 3: repeats 000001.jpg (first on line 1)"]}
  assert parsed.warning is None
