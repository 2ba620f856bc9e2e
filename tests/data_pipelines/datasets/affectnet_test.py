"""The ``affectnet`` tfds builder on tiny fixtures in both native layouts (csv lists and per-image
npy): labels, boxes, landmarks, the official and seeded split layouts, skipped rows by reason, and
missing-data errors."""

import collections
import hashlib
import os

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines.datasets import affectnet
from data_pipelines import build
from data_pipelines.datasets import tfds_compat

HEADER = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
          "expression,valence,arousal")


def _lm68(d: int) -> np.ndarray:
  """68 points (k + d, 100 + 2k): the derived 5 points are easy to compute by hand."""
  k = np.arange(68, dtype=np.float32)
  return np.stack([k + d, 100 + 2 * k], axis=1)


def _lm_text(d: int) -> str:
  return ";".join(f"{v:g}" for v in _lm68(d).reshape(-1))


# Good rows: path -> (offset d, expression code, valence, arousal); box = (d, 2d, 20 + d, 21 + d).
GOOD_TRAIN = {
    "0/a0.jpg": (0, 0, 0.5, -0.25), "0/a1.png": (1, 1, 0.75, 0.125), "1/a2.jpg": (2, 2, -0.5, 0.5),
    "1/a3.jpg": (3, 3, 0.0, 0.25), "1/a4.jpg": (4, 4, -0.75, 0.5), "2/a5.jpg": (5, 5, -0.25, 0.0),
    "2/a6.jpg": (6, 6, -0.5, 0.75), "5/c0.jpg": (7, 0, 0.0, 0.0), "5/c1.jpg": (8, 1, 0.5, 0.5),
    "5/c2.jpg": (9, 1, 0.25, 0.25), "5/c3.jpg": (10, 3, 0.5, 0.75),
    "5/c4.jpg": (11, 6, -0.5, 0.5), "5/c5.jpg": (12, 0, 0.125, -0.125),
}
CONTEMPT_TRAIN = {"2/a7.jpg": (13, 7, -0.25, 0.25)}
GOOD_VALIDATION = {"v/v0.jpg": (14, 0, 0.0, 0.0), "v/v1.jpg": (15, 6, -0.5, 0.5),
                   "v/v4.jpg": (16, 3, 0.25, 0.75), "v/w1.jpg": (17, 1, 0.75, 0.25),
                   "v/w5.jpg": (18, 2, -0.75, -0.25)}
CONTEMPT_VALIDATION = {"v/v2.jpg": (19, 7, -0.25, 0.5)}
LABELLED = {**GOOD_TRAIN, **CONTEMPT_TRAIN, **GOOD_VALIDATION, **CONTEMPT_VALIDATION}


def _row(path: str, d: int, code, valence, arousal, x=None) -> str:
  x = d if x is None else x
  return f"{path},{x},{2 * d},{20 + d},{21 + d},{_lm_text(d)},{code},{valence},{arousal}"


TRAIN_LINES = [
    HEADER,                                                       # line 1
    _row("0/a0.jpg", *GOOD_TRAIN["0/a0.jpg"]),                    # 2
    _row("0/a1.png", *GOOD_TRAIN["0/a1.png"]).replace(",1,0.75", ";,1,0.75"),  # 3: trailing ';'
    *(_row(p, *GOOD_TRAIN[p]) for p in ("1/a2.jpg", "1/a3.jpg", "1/a4.jpg", "2/a5.jpg",
                                        "2/a6.jpg")),             # 4-8
    _row("2/a7.jpg", *CONTEMPT_TRAIN["2/a7.jpg"]),                # 9: Contempt
    _row("3/a8.jpg", 20, 8, -2, -2),                              # 10: None
    _row("3/a9.jpg", 21, 9, -2, -2),                              # 11: Uncertain
    _row("3/a10.jpg", 22, 10, -2, -2),                            # 12: No-Face
    _row("4/bad_lm.jpg", 23, 1, 0.5, 0.5).replace(_lm_text(23),
                                                  _lm_text(23).rsplit(";", 2)[0]),  # 13: 134
    _row("4/bad_box.jpg", 24, 2, 0.5, 0.5, x="abc"),              # 14
    _row("4/corrupt.jpg", 25, 3, 0.5, 0.5),                       # 15
    _row("4/missing.jpg", 26, 4, 0.5, 0.5),                       # 16
    _row("5/b0.jpg", 27, 11, 0.5, 0.5),                           # 17: unknown code
    _row("5/b1.jpg", 28, 1, 0.5, 0.5).rsplit(",", 1)[0],          # 18: 8 columns
    *(_row(f"5/c{i}.jpg", *GOOD_TRAIN[f"5/c{i}.jpg"]) for i in range(6)),  # 19-24
    _row("0/a0.jpg", *GOOD_TRAIN["0/a0.jpg"]),                    # 25: duplicate
]
VALIDATION_LINES = [
    _row("v/v0.jpg", *GOOD_VALIDATION["v/v0.jpg"]),               # line 1 (no header)
    _row("v/v1.jpg", *GOOD_VALIDATION["v/v1.jpg"]),               # 2
    _row("v/v2.jpg", *CONTEMPT_VALIDATION["v/v2.jpg"]),           # 3: Contempt
    _row("v/v3.jpg", 29, 9, -2, -2),                              # 4: Uncertain
    _row("v/v4.jpg", *GOOD_VALIDATION["v/v4.jpg"]),               # 5
    _row("v/w1.jpg", *GOOD_VALIDATION["v/w1.jpg"]),               # 6
    _row("v/w5.jpg", *GOOD_VALIDATION["v/w5.jpg"]),               # 7
]
NOT_7 = "left out: not one of the 7 classes of this config"


def _skipped_csv(manual: str, split_of: dict[str, str], num_classes: int = 7) -> list:
  images = os.path.join(manual, "Manually_Annotated_Images")
  rows = [
      ("3/a8.jpg", f"expression 8 (None) {NOT_7}"),
      ("3/a9.jpg", f"expression 9 (Uncertain) {NOT_7}"),
      ("3/a10.jpg", f"expression 10 (No-Face) {NOT_7}"),
      ("4/bad_lm.jpg", "training.csv line 13: facial_landmarks has 134 numbers, expected 136 "
                       "(68 x, y pairs)"),
      ("4/bad_box.jpg", "training.csv line 14: face_x is not a number: 'abc'"),
      ("4/corrupt.jpg", "image file cannot be decoded (corrupt or truncated): "
                        f"{images}/4/corrupt.jpg"),
      ("4/missing.jpg", f"image file missing: {images}/4/missing.jpg"),
      ("5/b0.jpg", "training.csv line 17: unknown expression code 11 (AffectNet codes are 0-10)"),
      ("5/b1.jpg", "training.csv line 18: expected 9 columns, got 8"),
      ("0/a0.jpg", "training.csv line 25: duplicate of an earlier row of 0/a0.jpg"),
      ("v/v3.jpg", f"expression 9 (Uncertain) {NOT_7}"),
  ]
  if num_classes == 7:
    rows += [("2/a7.jpg", f"expression 7 (Contempt) {NOT_7}"),
             ("v/v2.jpg", f"expression 7 (Contempt) {NOT_7}")]
  else:
    rows = [(i, r.replace("the 7 classes", "the 8 classes")) for i, r in rows]
  return sorted((split_of[i], i, r) for i, r in rows)


def _jpeg(seed: int, size=(32, 32)) -> bytes:
  img = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
  return cv2.imencode(".jpg", img)[1].tobytes()


def _png(seed: int) -> bytes:
  img = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
  return cv2.imencode(".png", img)[1].tobytes()


def _write(path, data) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  mode = "wb" if isinstance(data, bytes) else "w"
  with open(path, mode) as f:
    f.write(data)


def _csv_tree(root, validation_header: bool) -> None:
  images = os.path.join(root, "Manually_Annotated_Images")
  for i, path in enumerate([*LABELLED, "3/a8.jpg", "3/a9.jpg", "3/a10.jpg", "4/bad_lm.jpg",
                            "4/bad_box.jpg", "5/b0.jpg", "5/b1.jpg", "v/v3.jpg"]):
    _write(os.path.join(images, path), _png(i) if path.endswith(".png") else _jpeg(i))
  _write(os.path.join(images, "4/corrupt.jpg"), b"\xff\xd8\xff\xe0 not really a jpeg")
  lists = os.path.join(root, "Manually_Annotated_file_lists")
  _write(os.path.join(lists, "training.csv"), "\n".join(TRAIN_LINES) + "\n\n")
  validation = ([HEADER] if validation_header else []) + VALIDATION_LINES
  _write(os.path.join(lists, "validation.csv"), "\r\n".join(validation) + "\r\n")


def _npy_tree(root) -> None:
  train = os.path.join(root, "train_set")
  val = os.path.join(root, "val_set")

  def ann(set_dir, stem, exp, valence="0.5", arousal="0.5", lnd=None, skip=()):
    values = {"exp": exp, "val": valence, "aro": arousal,
              "lnd": _lm68(0).reshape(-1).astype(str) if lnd is None else lnd}
    os.makedirs(os.path.join(set_dir, "annotations"), exist_ok=True)
    for kind, v in values.items():
      if kind not in skip:
        np.save(os.path.join(set_dir, "annotations", f"{stem}_{kind}.npy"), np.asarray(v))

  # As redistributed: strings in the npy files, landmarks as 136 strings.
  ann(train, "0", "0", "0.25", "-0.5", _lm68(0).reshape(-1).astype(str))
  _write(os.path.join(train, "images", "0.jpg"), _jpeg(100, size=(40, 30)))
  ann(train, "1", 3, 0.125, 0.75, _lm68(1))  # numbers, landmarks (68, 2) floats
  _write(os.path.join(train, "images", "1.png"), _png(101))
  ann(train, "2", "9")
  _write(os.path.join(train, "images", "2.jpg"), _jpeg(102))
  ann(train, "3", "7")
  _write(os.path.join(train, "images", "3.jpg"), _jpeg(103))
  ann(train, "4", "1")  # image missing
  _write(os.path.join(train, "images", "5.jpg"), _jpeg(105))  # no annotations
  ann(train, "6", "2", skip=("lnd",))
  _write(os.path.join(train, "images", "6.jpg"), _jpeg(106))
  ann(train, "7", "4")
  _write(os.path.join(train, "images", "7.jpg"), _jpeg(107)[:-400])  # truncated scan data
  ann(val, "10", "6", "-0.75", "0.25", _lm68(2).reshape(-1).astype(str))
  _write(os.path.join(val, "images", "10.jpg"), _jpeg(110))
  ann(val, "11", "x")
  _write(os.path.join(val, "images", "11.jpg"), _jpeg(111))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  plain = str(tmp_path_factory.mktemp("plain"))  # validation.csv without a header
  _csv_tree(plain, validation_header=False)
  headed = str(tmp_path_factory.mktemp("headed"))  # validation.csv with a header
  _csv_tree(headed, validation_header=True)
  npy = str(tmp_path_factory.mktemp("npy"))
  _npy_tree(npy)
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  manual = {"7class": plain, "7class_saf_bage": plain, "7class_vegac": plain, "8class": headed,
            "7class_npy": npy}
  summaries = {c: build.build("affectnet", c, data_dir=data_dir, manual_dir=m)
               for c, m in manual.items()}
  return data_dir, manual, summaries


def _records(data_dir: str, config: str, split: str) -> dict[str, dict]:
  builder = tfds.builder(f"affectnet/{config}", data_dir=data_dir)
  source = builder.as_data_source(
      split, decoders=tfds_compat.skip_image_decoding(builder.info.features))
  return {r["id"].decode(): r for r in (source[i] for i in range(len(source)))}


def _sizes(summary) -> dict[str, int]:
  return {s: i["num_examples"] for s, i in summary["splits"].items()}


def _skipped(summary) -> list:
  return sorted((s["split"], s["id"], s["reason"]) for s in summary["skipped"]["examples"])


def test_official_7class(built):
  data_dir, manual, summaries = built
  summary = summaries["7class"]
  assert _sizes(summary) == {"train": 13, "validation": 5}
  assert summary["splits"]["train"]["histograms"]["expression"] == {
      "Neutral": 3, "Happy": 3, "Sad": 1, "Surprise": 2, "Fear": 1, "Disgust": 1, "Anger": 2}
  assert summary["splits"]["validation"]["histograms"]["expression"] == {
      "Neutral": 1, "Happy": 1, "Sad": 1, "Surprise": 1, "Fear": 0, "Disgust": 0, "Anger": 1}
  split_of = {i: "validation" if i.startswith("v/") else "train" for i in LABELLED}
  split_of.update({i: "train" for i in ("3/a8.jpg", "3/a9.jpg", "3/a10.jpg", "4/bad_lm.jpg",
                                        "4/bad_box.jpg", "4/corrupt.jpg", "4/missing.jpg",
                                        "5/b0.jpg", "5/b1.jpg")}, **{"v/v3.jpg": "validation"})
  assert _skipped(summary) == _skipped_csv(manual["7class"], split_of)
  reasons = collections.Counter(s["reason"] for s in summary["skipped"]["examples"])
  assert reasons[f"expression 7 (Contempt) {NOT_7}"] == 2
  assert reasons[f"expression 9 (Uncertain) {NOT_7}"] == 2
  assert reasons[f"expression 8 (None) {NOT_7}"] == 1
  assert reasons[f"expression 10 (No-Face) {NOT_7}"] == 1
  assert summary["skipped"]["count"] == 13


def test_records_of_the_csv_layout(built):
  data_dir, manual, _ = built
  records = {**_records(data_dir, "7class", "train"), **_records(data_dir, "7class", "validation")}
  assert sorted(records) == sorted([*GOOD_TRAIN, *GOOD_VALIDATION])
  for path, (d, code, valence, arousal) in {**GOOD_TRAIN, **GOOD_VALIDATION}.items():
    r = records[path]
    with open(os.path.join(manual["7class"], "Manually_Annotated_Images", path), "rb") as f:
      assert r["image"] == f.read()
    assert r["image_format"].decode() == ("png" if path.endswith(".png") else "jpeg")
    assert r["expression"] == code
    assert r["valence"] == np.float32(valence) and r["arousal"] == np.float32(arousal)
    np.testing.assert_array_equal(r["box"], [d, 2 * d, 20 + 2 * d, 21 + 3 * d])
    np.testing.assert_array_equal(r["landmarks68"], _lm68(d))
    assert r["box"].dtype == r["landmarks"].dtype == r["landmarks68"].dtype == np.float32
  # Worked by hand from x = k + d, y = 100 + 2k: eyes are the means of k = 36..41 and 42..47.
  np.testing.assert_array_equal(records["0/a0.jpg"]["landmarks"],
                                [[38.5, 177], [44.5, 189], [30, 160], [48, 196], [54, 208]])
  np.testing.assert_array_equal(records["0/a1.png"]["landmarks"],
                                [[39.5, 177], [45.5, 189], [31, 160], [49, 196], [55, 208]])
  np.testing.assert_array_equal(records["1/a3.jpg"]["box"], [3, 6, 26, 30])


def test_official_8class_with_a_validation_header(built):
  data_dir, manual, summaries = built
  summary = summaries["8class"]
  assert _sizes(summary) == {"train": 14, "validation": 6}
  assert summary["splits"]["validation"]["histograms"]["expression"] == {
      "Neutral": 1, "Happy": 1, "Sad": 1, "Surprise": 1, "Fear": 0, "Disgust": 0, "Anger": 1,
      "Contempt": 1}
  split_of = {i: "validation" if i.startswith("v/") else "train"
              for i in [*LABELLED, "3/a8.jpg", "3/a9.jpg", "3/a10.jpg", "4/bad_lm.jpg",
                        "4/bad_box.jpg", "4/corrupt.jpg", "4/missing.jpg", "5/b0.jpg",
                        "5/b1.jpg", "v/v3.jpg"]}
  assert _skipped(summary) == _skipped_csv(manual["8class"], split_of, num_classes=8)
  r = _records(data_dir, "8class", "validation")["v/v2.jpg"]
  assert r["expression"] == 7 and r["valence"] == np.float32(-0.25)


def test_split_fraction_is_sha256_of_seed_and_id():
  digest = hashlib.sha256(b"0/0/a0.jpg").hexdigest()
  assert affectnet.split_fraction("0/a0.jpg", 0) == int(digest[:16], 16) / 2**64
  assert 0.78 < affectnet.split_fraction("0/a0.jpg", 0) < 0.79
  assert affectnet.split_fraction("0/a0.jpg", 1) != affectnet.split_fraction("0/a0.jpg", 0)


# Fractions of the ids by split_fraction(id, 0) (checked in the test above for one id): a0 .789,
# a1 .675, a2 .911, a3 .964, a4 .218, a5 .031, a6 .486, a7 .753, a8 .896, a9 .015, a10 .507,
# bad_lm .418, bad_box .943, corrupt .834, missing .989, b0 .443, b1 .944, c0 .083, c1 .542,
# c2 .854, c3 .861, c4 .849, c5 .222; v0 .576, v1 .376, v2 .034, v3 .013, v4 .417, w1 .804,
# w5 .778.
FRACTIONS = {
    "0/a0.jpg": 0.7889, "0/a1.png": 0.6753, "1/a2.jpg": 0.9109, "1/a3.jpg": 0.9639,
    "1/a4.jpg": 0.2177, "2/a5.jpg": 0.0310, "2/a6.jpg": 0.4861, "2/a7.jpg": 0.7530,
    "3/a8.jpg": 0.8956, "3/a9.jpg": 0.0148, "3/a10.jpg": 0.5069, "4/bad_lm.jpg": 0.4182,
    "4/bad_box.jpg": 0.9434, "4/corrupt.jpg": 0.8335, "4/missing.jpg": 0.9894,
    "5/b0.jpg": 0.4434, "5/b1.jpg": 0.9444, "5/c0.jpg": 0.0826, "5/c1.jpg": 0.5424,
    "5/c2.jpg": 0.8543, "5/c3.jpg": 0.8611, "5/c4.jpg": 0.8494, "5/c5.jpg": 0.2218,
    "v/v0.jpg": 0.5759, "v/v1.jpg": 0.3758, "v/v2.jpg": 0.0343, "v/v3.jpg": 0.0134,
    "v/v4.jpg": 0.4172, "v/w1.jpg": 0.8041, "v/w5.jpg": 0.7782,
}


def test_fractions_of_the_fixture_ids():
  for key, u in FRACTIONS.items():
    # FRACTIONS are written to 4 decimals: half a unit of the last place.
    assert affectnet.split_fraction(key, 0) == pytest.approx(u, abs=5e-5), key


def test_saf_bage_split(built):
  data_dir, manual, summaries = built
  summary = summaries["7class_saf_bage"]
  # test = validation.csv's 7-class rows; train / validation = training rows below / above 0.8.
  want = {"train": ["0/a0.jpg", "0/a1.png", "1/a4.jpg", "2/a5.jpg", "2/a6.jpg", "5/c0.jpg",
                    "5/c1.jpg", "5/c5.jpg"],
          "validation": ["1/a2.jpg", "1/a3.jpg", "5/c2.jpg", "5/c3.jpg", "5/c4.jpg"],
          "test": ["v/v0.jpg", "v/v1.jpg", "v/v4.jpg", "v/w1.jpg", "v/w5.jpg"]}
  assert _sizes(summary) == {"train": 8, "validation": 5, "test": 5}
  for split, ids in want.items():
    assert sorted(_records(data_dir, "7class_saf_bage", split)) == ids
  split_of = {"2/a7.jpg": "train", "3/a8.jpg": "validation", "3/a9.jpg": "train",
              "3/a10.jpg": "train", "4/bad_lm.jpg": "train", "4/bad_box.jpg": "validation",
              "4/corrupt.jpg": "validation", "4/missing.jpg": "validation", "5/b0.jpg": "train",
              "5/b1.jpg": "validation", "0/a0.jpg": "train", "v/v2.jpg": "test",
              "v/v3.jpg": "test"}
  assert _skipped(summary) == _skipped_csv(manual["7class_saf_bage"], split_of)


def test_vegac_split(built):
  data_dir, manual, summaries = built
  summary = summaries["7class_vegac"]
  # All 7-class rows of both files: train below 0.65, validation below 0.8, test above.
  want = {"train": ["1/a4.jpg", "2/a5.jpg", "2/a6.jpg", "5/c0.jpg", "5/c1.jpg", "5/c5.jpg",
                    "v/v0.jpg", "v/v1.jpg", "v/v4.jpg"],
          "validation": ["0/a0.jpg", "0/a1.png", "v/w5.jpg"],
          "test": ["1/a2.jpg", "1/a3.jpg", "5/c2.jpg", "5/c3.jpg", "5/c4.jpg", "v/w1.jpg"]}
  assert _sizes(summary) == {"train": 9, "validation": 3, "test": 6}
  for split, ids in want.items():
    assert sorted(_records(data_dir, "7class_vegac", split)) == ids
  split_of = {"2/a7.jpg": "validation", "3/a8.jpg": "test", "3/a9.jpg": "train",
              "3/a10.jpg": "train", "4/bad_lm.jpg": "train", "4/bad_box.jpg": "test",
              "4/corrupt.jpg": "test", "4/missing.jpg": "test", "5/b0.jpg": "train",
              "5/b1.jpg": "test", "0/a0.jpg": "validation", "v/v2.jpg": "train",
              "v/v3.jpg": "train"}
  assert _skipped(summary) == _skipped_csv(manual["7class_vegac"], split_of)


def test_seeded_configs_record_their_fractions_and_seed():
  configs = affectnet.AffectNet.builder_configs
  assert configs["7class_saf_bage"].fractions == (("train", 0.8), ("validation", 0.2))
  assert configs["7class_vegac"].fractions == (("train", 0.65), ("validation", 0.15),
                                               ("test", 0.2))
  assert configs["7class_saf_bage"].seed == configs["7class_vegac"].seed == 0
  assert build.config_names("affectnet") == [
      "7class", "8class", "7class_saf_bage", "7class_vegac", "7class_npy", "8class_npy",
      "7class_saf_bage_npy", "7class_vegac_npy"]


def test_npy_layout(built):
  data_dir, manual, summaries = built
  summary = summaries["7class_npy"]
  root = manual["7class_npy"]
  assert _sizes(summary) == {"train": 2, "validation": 1}
  ann = os.path.join(root, "train_set", "annotations")
  assert _skipped(summary) == sorted([
      ("train", "train_set/2", f"expression 9 (Uncertain) {NOT_7}"),
      ("train", "train_set/3", f"expression 7 (Contempt) {NOT_7}"),
      ("train", "train_set/4", f"image file missing: {root}/train_set/images/4.jpg"),
      ("train", "train_set/5", f"train_set/annotations/5_*.npy: annotation file missing: "
                               f"{ann}/5_exp.npy"),
      ("train", "train_set/6", f"train_set/annotations/6_*.npy: annotation file missing: "
                               f"{ann}/6_lnd.npy"),
      ("train", "train_set/7", f"image file cannot be decoded (corrupt or truncated): "
                               f"{root}/train_set/images/7.jpg"),
      ("validation", "val_set/11", "val_set/annotations/11_*.npy: expression is not an integer "
                                   "code: 'x'"),
  ])
  train = _records(data_dir, "7class_npy", "train")
  assert sorted(train) == ["train_set/0", "train_set/1"]
  r0, r1 = train["train_set/0"], train["train_set/1"]
  with open(os.path.join(root, "train_set", "images", "0.jpg"), "rb") as f:
    assert r0["image"] == f.read()
  with open(os.path.join(root, "train_set", "images", "1.png"), "rb") as f:
    assert r1["image"] == f.read()
  assert (r0["image_format"], r1["image_format"]) == (b"jpeg", b"png")
  assert (r0["expression"], r0["valence"], r0["arousal"]) == (0, 0.25, -0.5)
  assert (r1["expression"], r1["valence"], r1["arousal"]) == (3, 0.125, 0.75)
  np.testing.assert_array_equal(r0["box"], [0, 0, 40, 30])  # the whole 40 x 30 image
  np.testing.assert_array_equal(r1["box"], [0, 0, 32, 32])
  np.testing.assert_array_equal(r1["landmarks68"], _lm68(1))
  np.testing.assert_array_equal(r1["landmarks"],
                                [[39.5, 177], [45.5, 189], [31, 160], [49, 196], [55, 208]])
  val = _records(data_dir, "7class_npy", "validation")
  assert list(val) == ["val_set/10"]
  assert val["val_set/10"]["expression"] == 6
  np.testing.assert_array_equal(val["val_set/10"]["landmarks"][2], [32, 160])


def test_header_is_told_by_content():
  assert affectnet._is_header(HEADER.split(","))
  assert not affectnet._is_header(["0/a.jpg", "abc", "1", "2", "3", "", "1", "0", "0"])
  assert not affectnet._is_header(["0/a", "1", "2", "3", "4", "", "1", "0", "0"])
  assert affectnet._is_header(["path", "x", "y", "w", "h", "lm", "expression", "v", "a"])


def test_header_without_a_needed_column(tmp_path):
  _write(os.path.join(tmp_path, "Manually_Annotated_Images", "0", "a.jpg"), _jpeg(0))
  lists = os.path.join(tmp_path, "Manually_Annotated_file_lists")
  _write(os.path.join(lists, "training.csv"), HEADER.replace("valence", "val") + "\n")
  _write(os.path.join(lists, "validation.csv"), VALIDATION_LINES[0] + "\n")
  with pytest.raises(ValueError, match=r"training.csv lacks the columns \['valence'\]"):
    build.build("affectnet", "7class", data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path))


def test_missing_manual_data(tmp_path):
  with pytest.raises(build.BuildError, match="affectnet/7class: manual data not found in"):
    build.build("affectnet", "7class", data_dir=str(tmp_path / "d"),
                manual_dir=str(tmp_path / "nowhere"))
  manual = tmp_path / "manual"
  _write(os.path.join(manual, "Manually_Annotated_Images", "0", "a.jpg"), _jpeg(0))
  _write(os.path.join(manual, "Manually_Annotated_file_lists", "training.csv"), HEADER + "\n")
  with pytest.raises(FileNotFoundError) as e:
    build.build("affectnet", "7class", data_dir=str(tmp_path / "d"), manual_dir=str(manual))
  assert ("expected Manually_Annotated_file_lists/validation.csv in the manual directory "
          f"{manual}") in str(e.value)
  with pytest.raises(FileNotFoundError, match="expected train_set in the manual directory"):
    build.build("affectnet", "7class_npy", data_dir=str(tmp_path / "d"), manual_dir=str(manual))


def test_bad_config_fields_are_named():
  with pytest.raises(ValueError, match="config x: layout must be one of"):
    affectnet.AffectNetConfig(name="x", layout="random")
  with pytest.raises(ValueError, match="config x: num_classes must be 7 or 8, got 11"):
    affectnet.AffectNetConfig(name="x", num_classes=11)
  with pytest.raises(ValueError, match="config x: annotation must be 'csv' or 'npy'"):
    affectnet.AffectNetConfig(name="x", annotation="json")
  with pytest.raises(ValueError, match="config x: fractions must sum to 1"):
    affectnet.AffectNetConfig(name="x", layout="vegac", fractions=(("train", 0.5),))
