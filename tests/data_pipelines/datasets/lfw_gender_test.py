"""The ``lfw_gender`` builder on a tiny LFW tree with male/female lists: labels, subject-exclusive
splits, derived boxes and skipped reasons against hand-written expectations."""

import collections
import os

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines import build
from data_pipelines.datasets import lfw_gender
from data_pipelines.datasets import tfds_compat

# Seed 0 hash positions (sha256 of "0/<name>", first 8 bytes / 2**64), worked out once by hand:
# Aaron_Eckhart 0.69784, Alice_Smith 0.3471, Carol_King 0.5070, Tara_Kirk 0.0535, Dana_Both 0.4440
# -> train (< 0.7); Bob_Jones 0.7031 -> validation (< 0.8); Frank_Lee 0.8375, Gina_Moss 0.8014
# -> test.
# id -> (split, gender, box)
SQUARE_BOX = [11.5, 11.5, 31.5, 31.5]  # 44 x 44: centre 21.5, half side 44 / 4.4 = 10
WIDE_BOX = [11.5, 5.5, 31.5, 15.5]  # 44 wide, 22 tall: centre (21.5, 10.5), halves 10 and 5
EXPECTED = {
    "Aaron_Eckhart/Aaron_Eckhart_0001.jpg": ("train", "m", SQUARE_BOX),
    "Alice_Smith/Alice_Smith_0001.jpg": ("train", "f", SQUARE_BOX),
    "Alice_Smith/Alice_Smith_0002.jpg": ("train", "f", WIDE_BOX),
    "Carol_King/Carol_King_0001.jpg": ("train", "f", SQUARE_BOX),
    "Bob_Jones/Bob_Jones_0001.jpg": ("validation", "m", SQUARE_BOX),
    "Frank_Lee/Frank_Lee_0001.jpg": ("test", "m", SQUARE_BOX),
    "Gina_Moss/Gina_Moss_0001.jpg": ("test", "f", SQUARE_BOX),
    "Gina_Moss/Gina_Moss_0002.jpg": ("test", "f", SQUARE_BOX),
}
MALE = ["Aaron_Eckhart_0001.jpg", "Bob_Jones_0001.jpg", "Aaron_Eckhart_0001.jpg",
        "Bob_Jones_0002.jpg", "Dana_Both_0001.jpg", "Frank_Lee_0001.jpg"]
FEMALE = ["Alice_Smith_0001.jpg", "Alice_Smith_0002.jpg", "Carol_King_0001.jpg",
          "Carol_King_3.jpg", "Carol_King_0002.jpg", "Dana_Both_0001.jpg", "",
          "Gina_Moss_0001.jpg", "Gina_Moss_0002.jpg"]


def _jpeg(seed: int, size=(44, 44)) -> bytes:
  img = np.random.default_rng(seed).integers(0, 255, (*size, 3), np.uint8)
  return cv2.imencode(".jpg", img)[1].tobytes()


def _write_tree(root: str, tree: str, male: str, female: str) -> dict[str, bytes]:
  files = {k: _jpeg(i) for i, k in enumerate(EXPECTED)}
  files["Alice_Smith/Alice_Smith_0002.jpg"] = _jpeg(9, size=(22, 44))
  files["Tara_Kirk/Tara_Kirk_0001.jpg"] = _jpeg(10)  # in neither list
  files["Dana_Both/Dana_Both_0001.jpg"] = _jpeg(11)  # in both lists
  files["Frank_Lee/Gina_Moss_0001.jpg"] = _jpeg(13)  # listed, in someone else's folder
  truncated = _jpeg(12)
  files["Bob_Jones/Bob_Jones_0002.jpg"] = truncated[:len(truncated) // 2]
  for rel, data in files.items():
    os.makedirs(os.path.join(root, tree, os.path.dirname(rel)), exist_ok=True)
    with open(os.path.join(root, tree, rel), "wb") as f:
      f.write(data)
  for rel, names in ((male, MALE), (female, FEMALE)):
    os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
    with open(os.path.join(root, rel), "w") as f:
      f.write("\n".join(names) + "\n")
  return files


def _records(data_dir, name, split):
  builder = tfds.builder(name, data_dir=data_dir)
  source = builder.as_data_source(
      split, decoders=tfds_compat.skip_image_decoding(builder.info.features))
  return {source[i]["id"].decode(): source[i] for i in range(len(source))}


def test_build_labels_splits_boxes_and_skips(tmp_path):
  manual = str(tmp_path / "manual")
  files = _write_tree(manual, "lfw", "male_names.txt", "female_names.txt")
  data_dir = str(tmp_path / "tfds")
  summary = build.build("lfw_gender", "lfw", data_dir=data_dir, manual_dir=manual)

  assert {s: i["num_examples"] for s, i in summary["splits"].items()} == {
      "train": 4, "validation": 1, "test": 3}
  assert {s: i["histograms"]["gender"] for s, i in summary["splits"].items()} == {
      "train": {"m": 1, "f": 3}, "validation": {"m": 1, "f": 0}, "test": {"m": 1, "f": 2}}
  tree = os.path.join(manual, "lfw")
  skipped = [(e["split"], e["id"], e["reason"]) for e in summary["skipped"]["examples"]]
  assert collections.Counter(skipped) == collections.Counter([
      ("train", "Aaron_Eckhart/Aaron_Eckhart_0001.jpg",
       "male_names.txt line 3: repeats Aaron_Eckhart_0001.jpg (first on line 1, kept)"),
      ("(none)", "female_names.txt line 4",
       "female_names.txt line 4: 'Carol_King_3.jpg' is not a <Name>_<NNNN>.jpg file name"),
      ("train", "Dana_Both/Dana_Both_0001.jpg",
       "listed in both male_names.txt (line 5) and female_names.txt (line 6)"),
      ("train", "Tara_Kirk/Tara_Kirk_0001.jpg", "in neither male_names.txt nor female_names.txt"),
      ("test", "Frank_Lee/Gina_Moss_0001.jpg",
       "listed, but in the folder Frank_Lee/ instead of Gina_Moss/"),
      ("train", "Carol_King/Carol_King_0002.jpg",
       f"image file missing: {tree}/Carol_King/Carol_King_0002.jpg"),
      ("validation", "Bob_Jones/Bob_Jones_0002.jpg",
       "image file cannot be decoded (corrupt or truncated): "
       f"{tree}/Bob_Jones/Bob_Jones_0002.jpg"),
  ])
  assert summary["skipped"]["count"] == 7

  identities = {}
  for split in ("train", "validation", "test"):
    records = _records(data_dir, "lfw_gender/lfw", split)
    assert sorted(records) == sorted(k for k, v in EXPECTED.items() if v[0] == split)
    for example_id, r in records.items():
      _, gender, box = EXPECTED[example_id]
      assert r["image"] == files[example_id]
      assert ["m", "f"][r["gender"]] == gender
      assert r["identity"].decode() == example_id.split("/")[0]
      # Hand values on the half-pixel grid; float32 storage at < 32 px: ulps of 2^-19 << 1e-5.
      np.testing.assert_allclose(r["box"], box, atol=1e-5)
      identities.setdefault(r["identity"].decode(), set()).add(split)
  assert all(len(s) == 1 for s in identities.values())  # no person in two splits


def test_custom_config_tree_lists_and_fractions(tmp_path):
  manual = str(tmp_path / "manual")
  _write_tree(manual, "copies/deep", "labels/m.txt", "labels/f.txt")
  cfg = lfw_gender.LfwGenderConfig(name="custom", tree="copies/deep", male_list="labels/m.txt",
                                   female_list="labels/f.txt", fractions=(0.8, 0.0, 0.2))
  builder = lfw_gender.LfwGender(config=cfg, data_dir=str(tmp_path / "tfds"))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual))
  # Validation has fraction 0: Bob_Jones (0.7031 < 0.8) joins train; no validation split.
  assert {s: i.num_examples for s, i in builder.info.splits.items()} == {"train": 5, "test": 3}
  assert ("(none)", "f.txt line 4",
          "f.txt line 4: 'Carol_King_3.jpg' is not a <Name>_<NNNN>.jpg file name"
          ) in builder.skipped
  assert len(builder.skipped) == 7


def test_split_of_and_face_box():
  assert [lfw_gender.split_of(n, 0, (0.7, 0.1, 0.2))
          for n in ("Aaron_Eckhart", "Bob_Jones", "Gina_Moss")] == ["train", "validation", "test"]
  assert lfw_gender.split_of("Aaron_Eckhart", 0, (0.6978, 0.0, 0.3022)) == "test"  # 0.69784
  assert lfw_gender.split_of("Bob_Jones", 0, (1, 0, 0)) == "train"
  np.testing.assert_allclose(lfw_gender.face_box(250, 250),
                             [67.681818, 67.681818, 181.318182, 181.318182],
                             atol=1e-4)  # hand values given to 6 decimals; 1e-4 is a fixed margin
  assert lfw_gender.identity_of("Aaron_Eckhart_0001.jpg") == "Aaron_Eckhart"
  assert lfw_gender.identity_of("Aaron_Eckhart_1.jpg") is None
  with pytest.raises(ValueError, match="LfwGenderConfig.fractions .* sum to 1"):
    lfw_gender.split_of("x", 0, (0.7, 0.2, 0.2))
  with pytest.raises(ValueError, match="LfwGenderConfig.fractions must be 3 numbers"):
    lfw_gender.split_of("x", 0, "abc")


def test_missing_manual_dir_and_label_file(tmp_path):
  with pytest.raises(build.BuildError, match="manual data not found"):
    build.build("lfw_gender", "lfw", data_dir=str(tmp_path / "a"),
                manual_dir=str(tmp_path / "nowhere"))
  manual = tmp_path / "manual"
  (manual / "lfw" / "Aaron_Eckhart").mkdir(parents=True)
  (manual / "male_names.txt").write_text("Aaron_Eckhart_0001.jpg\n")
  with pytest.raises(FileNotFoundError, match="expected female_names.txt in the manual"):
    build.build("lfw_gender", "lfw", data_dir=str(tmp_path / "b"), manual_dir=str(manual))
  with pytest.raises(FileNotFoundError, match="expected lfw-deepfunneled in the manual"):
    build.build("lfw_gender", "deepfunneled", data_dir=str(tmp_path / "c"),
                manual_dir=str(manual))
