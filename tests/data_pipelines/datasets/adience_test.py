"""The ``adience`` tfds builder on a tiny manual directory in the native layout: every split's ids
and labels, every skip and its reason for both age policies and both trees, image bytes, subject
exclusivity, and the errors for missing or misplaced data."""

import os

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines.datasets import adience
from data_pipelines import build
from data_pipelines.datasets import tfds_compat

HEADER = ("user_id\toriginal_image\tface_id\tage\tgender\tx\ty\tdx\tdy\ttilt_ang\t"
          "fiducial_yaw_angle\tfiducial_score")
# Fold files as in the distribution: tab-separated, LF endings (fold 3 has CRLF, as a copy edited
# on Windows would), gender may be empty, and irregular ages of every kind.
FOLDS = {
    0: ["10@N00\tp10a.jpg\t1\t(25, 32)\tf\t10\t20\t100\t120\t0\t5\t17",
        "10@N00\tp10b.jpg\t2\t(0, 2)\tm\t0\t0\t50\t50\t-15\t0\t30",
        "11@N00\tp11a.jpg\t1\tNone\t\t5\t5\t40\t40\t0\t0\t10",
        "11@N00\tp11b.jpg\t2\t(4, 6)\tm\t1\t2\t3\t4\t0\t0",  # 11 columns
        ""],  # a blank last line is no example
    1: ["20@N01\tp20a.jpg\t1\t(25, 23)\tm\t1\t1\t9\t9\t0\t0\t1",
        "20@N01\tp20b.jpg\t2\t35\tu\t1\t1\t9\t9\t0\t0\t1",
        "21@N01\tp21a.jpg\t3\t(60, 100)\tf\t1\t1\t9\t9\t0\t0\t1",  # faces/ image corrupt
        "22@N01\tp22a.jpg\t1\t(15, 20)\tm\t1\t1\t9\t9\t0\t0\t1"],
    2: ["30@N02\tp30a.jpg\t1\t42\tf\t1\t1\t9\t9\t0\t0\t1",
        "30@N02\tp30b.jpg\t1\t(27, 32)\tm\t1\t1\t9\t9\t0\t0\t1",
        "31@N02\tp31a.jpg\t4\t(8, 23)\tf\t1\t1\t9\t9\t0\t0\t1",
        "31@N02\tp31b.jpg\t5\t(15, 20)\tm\t1\t1\t9\t9\t0\t0\t1",  # aligned/ image missing
        "32@N02\tp32a.jpg\t1\t(0, 2)\tf\t1\t1\t9\t9\t0\t0\t1"],
    3: ["40@N03\tp40a.jpg\t1\t(38, 48)\tm\t1\t1\t9\t9\t0\t0\t1",
        "40@N03\tp40b.jpg\t2\t(38, 42)\tf\t1\t1\t9\t9\t0\t0\t1",
        "40@N03\tp40c.jpg\t3\t13\tm\t1\t1\t9\t9\t0\t0\t1",
        "41@N03\tp41a.jpg\t1\t(4, 6)\tx\t1\t1\t9\t9\t0\t0\t1"],
    4: ["50@N04\tp50a.jpg\t1\t(8, 12)\tm\t1\t1\t9\t9\t0\t0\t1",
        "50@N04\tp50b.jpg\t2\t(48, 53)\tf\t1\t1\t9\t9\t0\t0\t1",
        "51@N04\tp51a.jpg\t1\t2\tf\t1\t1\t9\t9\t0\t0\t1",
        "51@N04\tp51b.jpg\tabc\t(38, 43)\tm\t1\t1\t9\t9\t0\t0\t1",
        "50@N04\tp50a.jpg\t1\t(8, 12)\tm\t1\t1\t9\t9\t0\t0\t1"],  # repeats line 2
}
# (user_id, face_id, original_image) of the rows with parsable columns, for the image files.
FACES = [("10@N00", 1, "p10a.jpg"), ("10@N00", 2, "p10b.jpg"), ("11@N00", 1, "p11a.jpg"),
         ("20@N01", 1, "p20a.jpg"), ("20@N01", 2, "p20b.jpg"), ("21@N01", 3, "p21a.jpg"),
         ("22@N01", 1, "p22a.jpg"), ("30@N02", 1, "p30a.jpg"), ("30@N02", 1, "p30b.jpg"),
         ("31@N02", 4, "p31a.jpg"), ("31@N02", 5, "p31b.jpg"), ("32@N02", 1, "p32a.jpg"),
         ("40@N03", 1, "p40a.jpg"), ("40@N03", 2, "p40b.jpg"), ("40@N03", 3, "p40c.jpg"),
         ("41@N03", 1, "p41a.jpg"), ("50@N04", 1, "p50a.jpg"), ("50@N04", 2, "p50b.jpg"),
         ("51@N04", 1, "p51a.jpg")]
CORRUPT = "faces/21@N01/coarse_tilt_aligned_face.3.p21a.jpg"
MISSING = "aligned/31@N02/landmark_aligned_face.5.p31b.jpg"

# Expected labels per split (age: 0-2 4-6 8-12 15-20 25-32 38-43 48-53 60-100 -> 0..7; m 0, f 1).
AGE_DROP = {
    "fold0": {"10@N00/1.p10a.jpg": 4, "10@N00/2.p10b.jpg": 0},
    "fold1": {"22@N01/1.p22a.jpg": 3},
    "fold2": {"31@N02/5.p31b.jpg": 3, "32@N02/1.p32a.jpg": 0},
    "fold3": {"41@N03/1.p41a.jpg": 1},
    "fold4": {"50@N04/1.p50a.jpg": 2, "50@N04/2.p50b.jpg": 6},
}
AGE_MAP = {
    "fold0": {"10@N00/1.p10a.jpg": 4, "10@N00/2.p10b.jpg": 0},
    "fold1": {"20@N01/1.p20a.jpg": 4, "22@N01/1.p22a.jpg": 3},
    "fold2": {"30@N02/1.p30a.jpg": 5, "30@N02/1.p30b.jpg": 4, "31@N02/4.p31a.jpg": 3,
              "31@N02/5.p31b.jpg": 3, "32@N02/1.p32a.jpg": 0},
    "fold3": {"40@N03/1.p40a.jpg": 5, "40@N03/2.p40b.jpg": 5, "41@N03/1.p41a.jpg": 1},
    "fold4": {"50@N04/1.p50a.jpg": 2, "50@N04/2.p50b.jpg": 6, "51@N04/1.p51a.jpg": 0},
}
GENDER = {
    "fold0": {"10@N00/1.p10a.jpg": 1, "10@N00/2.p10b.jpg": 0},
    "fold1": {"20@N01/1.p20a.jpg": 0, "22@N01/1.p22a.jpg": 0},
    "fold2": {"30@N02/1.p30a.jpg": 1, "30@N02/1.p30b.jpg": 0, "31@N02/4.p31a.jpg": 1,
              "31@N02/5.p31b.jpg": 0, "32@N02/1.p32a.jpg": 1},
    "fold3": {"40@N03/1.p40a.jpg": 0, "40@N03/2.p40b.jpg": 1, "40@N03/3.p40c.jpg": 0},
    "fold4": {"50@N04/1.p50a.jpg": 0, "50@N04/2.p50b.jpg": 1, "51@N04/1.p51a.jpg": 1},
}
# Skips every config shares: malformed lines and the repeated id.
COMMON_SKIPS = [
    ("fold0", "fold_0_data.txt:5", "fold_0_data.txt line 5: 11 tab-separated columns, expected 12"),
    ("fold4", "fold_4_data.txt:5",
     "fold_4_data.txt line 5: column face_id = 'abc' is not a number"),
    ("fold4", "50@N04/1.p50a.jpg", "fold_4_data.txt line 6: repeats the id of line 2"),
]
DROP = "is not one of the 8 groups (age_policy='drop')"
AGE_DROP_SKIPS = [
    ("fold0", "11@N00/1.p11a.jpg", f"fold_0_data.txt line 4: age 'None' {DROP}"),
    ("fold1", "20@N01/1.p20a.jpg", f"fold_1_data.txt line 2: age '(25, 23)' {DROP}"),
    ("fold1", "20@N01/2.p20b.jpg", f"fold_1_data.txt line 3: age '35' {DROP}"),
    ("fold2", "30@N02/1.p30a.jpg", f"fold_2_data.txt line 2: age '42' {DROP}"),
    ("fold2", "30@N02/1.p30b.jpg", f"fold_2_data.txt line 3: age '(27, 32)' {DROP}"),
    ("fold2", "31@N02/4.p31a.jpg", f"fold_2_data.txt line 4: age '(8, 23)' {DROP}"),
    ("fold3", "40@N03/1.p40a.jpg", f"fold_3_data.txt line 2: age '(38, 48)' {DROP}"),
    ("fold3", "40@N03/2.p40b.jpg", f"fold_3_data.txt line 3: age '(38, 42)' {DROP}"),
    ("fold3", "40@N03/3.p40c.jpg", f"fold_3_data.txt line 4: age '13' {DROP}"),
    ("fold4", "51@N04/1.p51a.jpg", f"fold_4_data.txt line 4: age '2' {DROP}"),
]
AGE_MAP_SKIPS = [
    ("fold0", "11@N00/1.p11a.jpg", "fold_0_data.txt line 4: age 'None' (not annotated)"),
    ("fold1", "20@N01/2.p20b.jpg",
     "fold_1_data.txt line 3: age '35' lies between groups (age_policy='map')"),
    ("fold3", "40@N03/3.p40c.jpg",
     "fold_3_data.txt line 4: age '13' lies between groups (age_policy='map')"),
]
GENDER_SKIPS = [
    ("fold0", "11@N00/1.p11a.jpg", "fold_0_data.txt line 4: gender empty"),
    ("fold1", "20@N01/2.p20b.jpg", "fold_1_data.txt line 3: gender 'u' (unknown)"),
    ("fold3", "41@N03/1.p41a.jpg", "fold_3_data.txt line 5: unknown gender code 'x'"),
]


def _write_jpeg(path: str, seed: int) -> None:
  image = np.random.default_rng(seed).integers(0, 256, (32, 24, 3), dtype=np.uint8)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(cv2.imencode(".jpg", image)[1].tobytes())


def _write_folds(root: str, folds: dict[int, list[str]]) -> None:
  for k, rows in folds.items():
    newline = "\r\n" if k == 3 else "\n"
    with open(os.path.join(root, f"fold_{k}_data.txt"), "w", newline="") as f:
      f.write(newline.join([HEADER] + rows) + newline)


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory) -> str:
  root = str(tmp_path_factory.mktemp("adience_manual"))
  _write_folds(root, FOLDS)
  for i, (user, face, image) in enumerate(FACES):
    _write_jpeg(os.path.join(root, "faces", user, f"coarse_tilt_aligned_face.{face}.{image}"), i)
    _write_jpeg(os.path.join(root, "aligned", user, f"landmark_aligned_face.{face}.{image}"),
                100 + i)
  with open(os.path.join(root, CORRUPT), "wb") as f:
    f.write(b"\xff\xd8\xff\xe0 not a jpeg at all" * 4)
  os.remove(os.path.join(root, MISSING))
  return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
  return str(tmp_path_factory.mktemp("adience_tfds"))


def _image_skip(tree: str, manual: str) -> tuple[str, str, str]:
  """The skip of the corrupt faces/ file or of the missing aligned/ file."""
  if tree == "faces":
    return ("fold1", "21@N01/3.p21a.jpg", "fold_1_data.txt line 4: image file cannot be decoded "
            f"(corrupt or truncated): {os.path.join(manual, CORRUPT)}")
  return ("fold2", "31@N02/5.p31b.jpg",
          f"fold_2_data.txt line 5: image file missing: {os.path.join(manual, MISSING)}")


# config -> (label feature, labels of the faces/ tree, label-level skips)
CONFIGS = {
    "faces_age": ("age", AGE_DROP, AGE_DROP_SKIPS),
    "aligned_age": ("age", AGE_DROP, AGE_DROP_SKIPS),
    "faces_age_map": ("age", AGE_MAP, AGE_MAP_SKIPS),
    "aligned_age_map": ("age", AGE_MAP, AGE_MAP_SKIPS),
    "faces_gender": ("gender", GENDER, GENDER_SKIPS),
    "aligned_gender": ("gender", GENDER, GENDER_SKIPS),
}
# Labels of the two image-problem rows when their labels pass (both rows have canonical ages and
# genders m / f, so they reach the image stage in every config).
PROBLEM_ROW_LABELS = {"age": ("fold1", "21@N01/3.p21a.jpg", 7, "fold2", "31@N02/5.p31b.jpg", 3),
                      "gender": ("fold1", "21@N01/3.p21a.jpg", 1, "fold2", "31@N02/5.p31b.jpg", 0)}


def _expected(config: str, manual: str) -> tuple[str, dict[str, dict[str, int]], list]:
  """Labels and skips of ``config``: its table is for faces/, where p21a is corrupt; aligned/
  has p21a and lacks p31b."""
  feature, labels, label_skips = CONFIGS[config]
  labels = {split: dict(ids) for split, ids in labels.items()}
  tree = config.split("_")[0]
  if tree == "aligned":
    split_a, id_a, label_a, split_b, id_b, _ = PROBLEM_ROW_LABELS[feature]
    labels[split_a][id_a] = label_a
    del labels[split_b][id_b]
  return feature, labels, sorted(COMMON_SKIPS + label_skips + [_image_skip(tree, manual)])


_BUILT = {}


def _build(config: str, manual_dir: str, data_dir: str) -> dict:
  if config not in _BUILT:
    _BUILT[config] = build.build("adience", config, data_dir=data_dir, manual_dir=manual_dir)
  return _BUILT[config]


def _records(data_dir: str, config: str, split: str) -> list[dict]:
  builder = tfds.builder(f"adience/{config}", data_dir=data_dir)
  source = builder.as_data_source(
      split, decoders=tfds_compat.skip_image_decoding(builder.info.features))
  return [source[i] for i in range(len(source))]


@pytest.mark.parametrize("config", list(CONFIGS))
def test_labels_counts_and_skips(config, manual_dir, data_dir):
  summary = _build(config, manual_dir, data_dir)
  feature, labels, skips = _expected(config, manual_dir)
  assert list(summary["splits"]) == ["fold0", "fold1", "fold2", "fold3", "fold4"]
  for split, want in labels.items():
    records = _records(data_dir, config, split)
    got = {r["id"].decode(): int(r[feature]) for r in records}
    assert got == want, split
    assert summary["splits"][split]["num_examples"] == len(want)
  got_skips = sorted((s["split"], s["id"], s["reason"]) for s in summary["skipped"]["examples"])
  assert got_skips == skips
  assert summary["skipped"]["count"] == len(skips)


def test_literal_counts_of_the_drop_and_map_policies(manual_dir, data_dir):
  # Hand-counted totals: the map policy recovers 7 rows the drop policy skips.
  sizes = {c: [_build(c, manual_dir, data_dir)["splits"][f"fold{k}"]["num_examples"]
               for k in range(5)] for c in ("faces_age", "faces_age_map", "aligned_age",
                                           "faces_gender", "aligned_gender")}
  assert sizes == {"faces_age": [2, 1, 2, 1, 2], "faces_age_map": [2, 2, 5, 3, 3],
                   "aligned_age": [2, 2, 1, 1, 2], "faces_gender": [2, 2, 5, 3, 3],
                   "aligned_gender": [2, 3, 4, 3, 3]}
  hist = _build("faces_age_map", manual_dir, data_dir)["splits"]["fold2"]["histograms"]["age"]
  assert hist == {"0-2": 1, "4-6": 0, "8-12": 0, "15-20": 2, "25-32": 1, "38-43": 1, "48-53": 0,
                  "60-100": 0}


@pytest.mark.parametrize("config", ["faces_gender", "aligned_age_map"])
def test_fields_and_image_bytes(config, manual_dir, data_dir):
  _build(config, manual_dir, data_dir)
  tree, prefix = (("faces", "coarse_tilt_aligned_face") if config.startswith("faces") else
                  ("aligned", "landmark_aligned_face"))
  n = 0
  for k in range(5):
    for r in _records(data_dir, config, f"fold{k}"):
      user, face, image = r["user_id"].decode(), int(r["face_id"]), r["original_image"].decode()
      assert r["id"].decode() == f"{user}/{face}.{image}"
      with open(os.path.join(manual_dir, tree, user, f"{prefix}.{face}.{image}"), "rb") as f:
        assert r["image"] == f.read()
      n += 1
  assert n == 15
  (r,) = [r for r in _records(data_dir, config, "fold0") if r["id"] == b"10@N00/1.p10a.jpg"]
  np.testing.assert_array_equal(r["source_box"], [10, 20, 110, 140])
  assert r["source_box"].dtype == np.float32
  assert (r["tilt_ang"], r["fiducial_yaw_angle"], r["fiducial_score"]) == (0, 5, 17)
  assert (r["age_raw"], r["gender_raw"]) == (b"(25, 32)", b"f")
  (r,) = [r for r in _records(data_dir, config, "fold0") if r["id"] == b"10@N00/2.p10b.jpg"]
  np.testing.assert_array_equal(r["source_box"], [0, 0, 50, 50])
  assert r["tilt_ang"] == -15 and r["fiducial_score"] == 30


def test_split_arithmetic_is_subject_exclusive(manual_dir, data_dir):
  _build("faces_gender", manual_dir, data_dir)
  train = _records(data_dir, "faces_gender", "fold1+fold2+fold3+fold4")
  test = _records(data_dir, "faces_gender", "fold0")
  assert len(train) == 2 + 5 + 3 + 3 and len(test) == 2
  train_users = {r["user_id"].decode() for r in train}
  assert train_users == {"20@N01", "22@N01", "30@N02", "31@N02", "32@N02", "40@N03", "50@N04",
                         "51@N04"}
  assert {r["user_id"].decode() for r in test} == {"10@N00"}


def test_a_user_in_two_folds_is_an_error(tmp_path):
  folds = {k: list(rows) for k, rows in FOLDS.items()}
  folds[3] = folds[3] + ["10@N00\tp10z.jpg\t7\t(0, 2)\tm\t1\t1\t9\t9\t0\t0\t1"]
  _write_folds(str(tmp_path), folds)
  os.makedirs(tmp_path / "faces")
  with pytest.raises(ValueError, match=r"user_id '10@N00' is in fold_0_data.txt \(line 2\) and "
                     r"fold_3_data.txt \(line 6\); the folds must be subject-exclusive"):
    build.build("adience", "faces_age", data_dir=str(tmp_path / "tfds"),
                manual_dir=str(tmp_path))


def test_missing_manual_data(tmp_path):
  with pytest.raises(build.BuildError, match="adience/faces_age: manual data not found") as e:
    build.build("adience", None, data_dir=str(tmp_path / "tfds"),
                manual_dir=str(tmp_path / "nowhere"))
  assert "fold_0_data.txt .. fold_4_data.txt" in str(e.value)
  # Folds present but one missing: the message names it.
  folds = {k: rows for k, rows in FOLDS.items() if k != 2}
  _write_folds(str(tmp_path), folds)
  os.makedirs(tmp_path / "aligned")
  with pytest.raises(FileNotFoundError, match="expected fold_2_data.txt in the manual directory"):
    build.build("adience", "aligned_gender", data_dir=str(tmp_path / "tfds2"),
                manual_dir=str(tmp_path))
  # The config's tree is missing.
  with pytest.raises(FileNotFoundError, match="expected faces in the manual directory"):
    build.build("adience", "faces_gender", data_dir=str(tmp_path / "tfds3"),
                manual_dir=str(tmp_path))


def test_fold_files_in_a_subfolder_are_pointed_at(tmp_path):
  os.makedirs(tmp_path / "folds")
  os.makedirs(tmp_path / "faces")
  _write_folds(str(tmp_path / "folds"), FOLDS)
  with pytest.raises(FileNotFoundError, match=r"Found folds/fold_0_data.txt instead: move the fold "
                     "files to the top level"):
    build.build("adience", "faces_age", data_dir=str(tmp_path / "tfds"),
                manual_dir=str(tmp_path))


def test_a_bad_header_names_the_file(tmp_path):
  path = tmp_path / "fold_0_data.txt"
  path.write_text("user_id,original_image,face_id\n")
  with pytest.raises(ValueError, match="fold_0_data.txt: header .* is not the 12 tab-separated"):
    adience.parse_fold_file(str(path))


@pytest.mark.parametrize("age, drop, mapped", [
    ("(0, 2)", 0, 0), ("(60, 100)", 7, 7), ("(25,32)", 4, 4), ("(25, 23)", None, 4),
    ("(27, 32)", None, 4), ("(38, 42)", None, 5), ("(38, 48)", None, 5), ("(8, 23)", None, 3),
    ("(21, 24)", None, None), ("29", None, 4), ("32", None, 4), ("3", None, None),
    ("56", None, None), ("None", None, None), ("old", None, None), ("", None, None)])
def test_age_policies(age, drop, mapped):
  assert adience.age_label(age, "drop")[0] == drop
  label, reason = adience.age_label(age, "map")
  assert label == mapped and (reason is None) == (mapped is not None)
  with pytest.raises(ValueError, match="age_policy must be one of"):
    adience.age_label(age, "guess")


def test_configs():
  assert build.config_names("adience")[:6] == [
      "faces_age", "faces_gender", "faces_age_map", "aligned_age", "aligned_gender",
      "aligned_age_map"]
  # Each config again per detector x multi-face policy x no-face policy (defaults unnamed).
  names = build.config_names("adience")
  assert len(names) == 6 * (1 + 2 * 3 * 2) and len(set(names)) == len(names)
  assert {"faces_age_mtcnn", "faces_gender_haar", "aligned_age_map_mtcnn_largest",
          "faces_age_mtcnn_nearest_centre_whole_image"} <= set(names)
  assert adience.Adience.DEFAULT_CONFIG_NAME == "faces_age"
  assert adience.AGE_NAMES == ("0-2", "4-6", "8-12", "15-20", "25-32", "38-43", "48-53",
                               "60-100")
  with pytest.raises(ValueError, match="tree must be one of"):
    adience.AdienceConfig(name="x", tree="crops")


def test_a_fold_without_usable_example_is_a_clear_error(tmp_path):
  _write_folds(str(tmp_path), FOLDS)
  os.makedirs(tmp_path / "faces")  # no image at all
  with pytest.raises(ValueError, match=r"adience/faces_gender: no usable example in fold0 "
                     r"\(fold_0_data.txt\): 4 rows skipped, the first: fold_0_data.txt line 2: "
                     r"image file missing: "):
    build.build("adience", "faces_gender", data_dir=str(tmp_path / "tfds"),
                manual_dir=str(tmp_path))


# --- Build-time face detection (configs <config>_<detector>): real faces in the fixture images.

NO_FACE_IMAGE = "faces/10@N00/coarse_tilt_aligned_face.2.p10b.jpg"  # mid-grey: no face


def write_face_tree(root: str) -> None:
  """The fixture's layout and fold files with LFW faces (160 x 160, as ``helpers.lfw_photo``) in
  the faces/ tree, one mid-grey image without a face, the corrupt and the missing file."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  from tests import helpers  # pylint: disable=g-import-not-at-top
  lfw = skimage.data.lfw_subset()
  _write_folds(root, FOLDS)
  for i, (user, face, image) in enumerate(FACES):
    path = os.path.join(root, "faces", user, f"coarse_tilt_aligned_face.{face}.{image}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rgb = helpers.lfw_photo(lfw[i])
    if path.endswith(NO_FACE_IMAGE):
      rgb = np.full_like(rgb, 128)
    cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
  with open(os.path.join(root, CORRUPT), "wb") as f:
    f.write(b"\xff\xd8\xff\xe0 not a jpeg at all" * 4)


@pytest.fixture(scope="module")
def face_manual_dir(tmp_path_factory) -> str:
  root = str(tmp_path_factory.mktemp("adience_faces"))
  write_face_tree(root)
  return root


def test_detection_stores_box_score_landmarks_and_counts_no_face(face_manual_dir, tmp_path):
  data_dir = str(tmp_path / "tfds")
  summary = build.build("adience", "faces_gender", data_dir=data_dir,
                        manual_dir=face_manual_dir, detect="mtcnn")
  assert summary["config"] == "faces_gender_mtcnn"
  no_face = ("fold0", "10@N00/2.p10b.jpg", "fold_0_data.txt line 3: no face found by mtcnn")
  got_skips = sorted((s["split"], s["id"], s["reason"]) for s in summary["skipped"]["examples"])
  assert got_skips == sorted(COMMON_SKIPS + GENDER_SKIPS +
                             [_image_skip("faces", face_manual_dir), no_face])
  sizes = [summary["splits"][f"fold{k}"]["num_examples"] for k in range(5)]
  assert sizes == [1, 2, 5, 3, 3]  # faces_gender's [2, 2, 5, 3, 3] less the grey image
  assert summary["detection"] == {"detector": "mtcnn", "select": "largest_nearest_centre",
                                  "no_face": "skip",
                                  "counts": {"detected": 14, "no face found": 1}}
  text = build.format_summary(summary)
  assert ("detection (mtcnn, one face: largest_nearest_centre, no face: skip): detected:14 "
          "no face found:1") in text
  n = 0
  for k in range(5):
    for r in _records(data_dir, "faces_gender_mtcnn", f"fold{k}"):
      box, lm = r["box"], r["landmarks"]
      assert box.dtype == np.float32 and lm.shape == (5, 2) and np.isfinite(lm).all()
      # The LFW face fills the 100 px middle of the 160 px photo.
      assert 10 < box[0] < 60 and 10 < box[1] < 60 and 100 < box[2] < 150 and 100 < box[3] < 150
      assert ((lm[:, 0] > box[0]) & (lm[:, 0] < box[2]) & (lm[:, 1] > box[1]) &
              (lm[:, 1] < box[3])).all()
      assert lm[0, 0] < lm[1, 0] and lm[2, 1] < lm[3, 1]  # eyes left to right, nose above mouth
      assert r["score"] > 0.9
      n += 1
  assert n == 14
  # A second build reuses the files and keeps the detection counts of the first.
  again = build.build("adience", "faces_gender_mtcnn", data_dir=data_dir,
                      manual_dir=face_manual_dir)
  assert again["reused"] and again["detection"] == summary["detection"]
  # The undetected config of the same data has no box in the image (the reason detection exists).
  assert "box" not in tfds.builder("adience/faces_gender", data_dir=data_dir).info.features


def test_whole_image_policy_keeps_the_faceless_image(face_manual_dir, tmp_path):
  data_dir = str(tmp_path / "tfds")
  summary = build.build("adience", "faces_gender", data_dir=data_dir,
                        manual_dir=face_manual_dir, detect="mtcnn", detect_no_face="whole_image")
  assert summary["config"] == "faces_gender_mtcnn_whole_image"
  assert summary["detection"]["counts"] == {"detected": 14,
                                            "no face found: whole image as the box": 1}
  assert summary["splits"]["fold0"]["num_examples"] == 2
  (r,) = [r for r in _records(data_dir, "faces_gender_mtcnn_whole_image", "fold0")
          if r["id"] == b"10@N00/2.p10b.jpg"]
  np.testing.assert_array_equal(r["box"], [-0.5, -0.5, 159.5, 159.5])
  assert r["score"] == 0 and np.isnan(r["landmarks"]).all()


def test_select_policies():
  from data_pipelines.datasets import detect  # pylint: disable=g-import-not-at-top
  from jaxface.faces import Face  # pylint: disable=g-import-not-at-top

  def face(x1, y1, x2, y2):
    return Face(box=np.array([x1, y1, x2, y2], np.float32), score=0.99)

  big_corner = face(0, 0, 60, 60)        # area 3600, far from the centre of 101 x 101
  central = face(27, 27, 77, 77)         # area 2500 (>= half the largest), near the centre
  small_central = face(45, 45, 55, 55)   # tiny, exactly central
  found = [big_corner, central, small_central]
  assert detect.select(found, "largest_nearest_centre", (101, 101)) is central
  assert detect.select(found, "largest", (101, 101)) is big_corner
  assert detect.select(found, "nearest_centre", (101, 101)) is small_central
  assert detect.select([], "largest", (101, 101)) is None
  with pytest.raises(ValueError, match="detect select must be one of"):
    detect.Settings("mtcnn", "biggest")


def test_detect_option_errors(tmp_path, capsys):
  with pytest.raises(build.BuildError, match="--detect dlib: dataset 'adience' detects with "
                     "mtcnn, haar"):
    build.build("adience", "faces_age", data_dir=str(tmp_path), detect="dlib")
  with pytest.raises(build.BuildError, match="dataset 'utkface' has no detection pass"):
    build.build("utkface", None, data_dir=str(tmp_path), detect="mtcnn")
  with pytest.raises(SystemExit) as e:
    build.main(["fotw", "--detect", "haar", "--data_dir", str(tmp_path)])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "--detect haar: dataset 'fotw' detects with mtcnn" in err


def test_haar_detection_stores_boxes_without_landmarks(face_manual_dir, tmp_path):
  data_dir = str(tmp_path / "tfds")
  summary = build.build("adience", "faces_gender", data_dir=data_dir,
                        manual_dir=face_manual_dir, detect="haar")
  assert summary["config"] == "faces_gender_haar"
  counts = summary["detection"]["counts"]
  # 15 images reach detection (labels and files usable); the grey one has no face for Haar either.
  assert sum(counts.values()) == 15 and counts["detected"] >= 12
  assert ("fold0", "10@N00/2.p10b.jpg", "fold_0_data.txt line 3: no face found by haar") in {
      (s["split"], s["id"], s["reason"]) for s in summary["skipped"]["examples"]}
  records = [r for k in range(5) for r in _records(data_dir, "faces_gender_haar", f"fold{k}")]
  assert len(records) == counts["detected"]
  for r in records:
    assert np.isnan(r["landmarks"]).all() and np.isfinite(r["box"]).all()
    assert r["box"][2] - r["box"][0] > 40  # the 100 px LFW face, not a speck
