"""The ``utkface`` tfds builder on tiny ``UTKFace/`` and ``crop_part1/`` folders with the malformed
names reported for the aligned set and found in the real crop_part1 release: labels, age buckets,
the seeded split, repairs and skips with reasons in the summary, which folder a manual directory
gives, image bytes and errors."""

import collections
import json
import os

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines import build
from data_pipelines.datasets import tfds_compat
from data_pipelines.datasets import utkface

# file name -> (split with seed 0 and 0.8/0.1/0.1, worked out by hand from sha256("0:<name after
# repair>")), then the expected (age bucket, age, gender, race) or None for a skipped file.
GOOD = {
    "25_0_2_20170116220224651.jpg.chip.jpg": ("train", (2, 25, 0, 2)),
    "1_1_0_20161219140623097.jpg.chip.jpg": ("train", (0, 1, 1, 0)),
    "9_0_4_20170103200522151.jpg.chip.jpg": ("train", (0, 9, 0, 4)),
    "10_1_3_20170104222107453.jpg.chip.jpg": ("train", (1, 10, 1, 3)),
    "99_1_1_20170112213303693.jpg.chip.jpg": ("train", (9, 99, 1, 1)),
    "100_0_0_20170112213001988.jpg.chip.jpg": ("train", (10, 100, 0, 0)),
    "116_1_2_20170112220255503.jpg.chip.jpg": ("test", (10, 116, 1, 2)),
    "30_1_2_20170117140050537.jpg.chip.jpg": ("train", (3, 30, 1, 2)),
    "70_0_3_20170117140050538.jpg.chip.jpg": ("train", (7, 70, 0, 3)),
    "5_1_1_20170117140050539.jpg.chip.jpg": ("validation", (0, 5, 1, 1)),
}
# Repaired: name on disk -> (name after repair, split, labels, repair).
REPAIRED = {
    "55_0_0_20170116232725357jpg.chip.jpg": (
        "55_0_0_20170116232725357.jpg.chip.jpg", "test", (5, 55, 0, 0),
        "missing dot before jpg.chip.jpg inserted"),
    "24_0_1_20170116220224657 .jpg.chip.jpg": (
        "24_0_1_20170116220224657.jpg.chip.jpg", "train", (2, 24, 0, 1),
        "space before .jpg removed"),
}
NO_RACE = "39_1_20170116174525125.jpg.chip.jpg"  # train; (3, 39, 1, unknown=5) when kept
CORRUPT = "45_1_0_20170117140050534.jpg.chip.jpg"
EMPTY = "50_1_0_20170117140050535.jpg.chip.jpg"
# Skipped files: name on disk -> (id, reason), all in train.
SKIPPED = {
    "30_2_0_20170117140050531.jpg.chip.jpg": (
        "train/30_2_0_20170117140050531.jpg.chip.jpg",
        "file name '30_2_0_20170117140050531.jpg.chip.jpg': gender 2 is not 0 (male) or 1 "
        "(female)"),
    "117_0_0_20170117140050532.jpg.chip.jpg": (
        "train/117_0_0_20170117140050532.jpg.chip.jpg",
        "file name '117_0_0_20170117140050532.jpg.chip.jpg': age 117 is above 116"),
    "40_0_5_20170117140050533.jpg.chip.jpg": (
        "train/40_0_5_20170117140050533.jpg.chip.jpg",
        "file name '40_0_5_20170117140050533.jpg.chip.jpg': race 5 is not 0..4"),
    "60_0_0_20170117140050536.jpg": (
        "train/60_0_0_20170117140050536.jpg",
        "file name '60_0_0_20170117140050536.jpg' does not end in .jpg.chip.jpg "
        "([age]_[gender]_[race]_[date&time].jpg.chip.jpg)"),
    # The space-repaired copy of a correct name: the correct one is kept.
    "25_0_2_20170116220224651 .jpg.chip.jpg": (
        "train/25_0_2_20170116220224651.jpg.chip.jpg",
        "file name '25_0_2_20170116220224651 .jpg.chip.jpg' repeats "
        "'25_0_2_20170116220224651.jpg.chip.jpg' after repair"),
}
NO_RACE_SKIP = ("train/39_1_20170116174525125.jpg.chip.jpg",
                "file name '39_1_20170116174525125.jpg.chip.jpg': race missing (fields "
                "age_gender_date; config aligned_race_unknown keeps it)")

# crop_part1/: good names (split with seed 0 worked out from sha256 as above), one repaired name,
# and the two malformed names of the real release (both fall in train).
CROP_GOOD = {
    "1_0_0_20170109140008000.jpg.chip.jpg": ("train", (0, 1, 0, 0)),
    "2_1_2_20170109140108001.jpg.chip.jpg": ("train", (0, 2, 1, 2)),
    "26_1_0_20170109140208002.jpg.chip.jpg": ("train", (2, 26, 1, 0)),
    "85_0_4_20170109140508005.jpg.chip.jpg": ("train", (8, 85, 0, 4)),
    "54_1_3_20170109140408004.jpg.chip.jpg": ("validation", (5, 54, 1, 3)),
    "7_1_1_20170109140708007.jpg.chip.jpg": ("test", (0, 7, 1, 1)),
}
CROP_REPAIRED = ("35_0_1_20170109140308003 .jpg.chip.jpg", "35_0_1_20170109140308003.jpg.chip.jpg")
CROP_MALFORMED = {
    "61_1_20170109142408075.jpg.chip.jpg":
        "file name '61_1_20170109142408075.jpg.chip.jpg': race missing (fields age_gender_date; "
        "config crop_part1_race_unknown keeps it)",
    "61_3_20170109150557335.jpg.chip.jpg":
        "file name '61_3_20170109150557335.jpg.chip.jpg': 3 fields where 4 are expected and the "
        "second, 3, is no gender code (gender or race missing?)",
}


def _write_jpeg(path: str, seed: int) -> None:
  image = np.random.default_rng(seed).integers(0, 256, (20, 20, 3), dtype=np.uint8)
  with open(path, "wb") as f:
    f.write(cv2.imencode(".jpg", image)[1].tobytes())


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory) -> str:
  root = str(tmp_path_factory.mktemp("utkface_manual"))
  folder = os.path.join(root, "UTKFace")
  os.makedirs(os.path.join(folder, "extra"))  # a subfolder is not an example
  names = list(GOOD) + list(REPAIRED) + list(SKIPPED) + [NO_RACE]
  for i, name in enumerate(names):
    _write_jpeg(os.path.join(folder, name), i)
  with open(os.path.join(folder, CORRUPT), "wb") as f:
    f.write(b"\xff\xd8\xff\xe0" + bytes(range(200)))
  open(os.path.join(folder, EMPTY), "wb").close()
  with open(os.path.join(folder, "readme.txt"), "w") as f:
    f.write("not an image\n")
  return root


@pytest.fixture(scope="module")
def built(manual_dir, tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("utkface_tfds"))
  return {config: build.build("utkface", config, data_dir=data_dir, manual_dir=manual_dir)
          for config in ("aligned", "aligned_race_unknown")}, data_dir


def _records(data_dir: str, config: str, split: str) -> list[dict]:
  builder = tfds.builder(f"utkface/{config}", data_dir=data_dir)
  source = builder.as_data_source(
      split, decoders=tfds_compat.skip_image_decoding(builder.info.features))
  return [source[i] for i in range(len(source))]


def _expected(config: str) -> dict[str, dict[str, tuple]]:
  """split -> id -> (age bucket, age, gender, race, file name on disk)."""
  want = collections.defaultdict(dict)
  for name, (split, labels) in GOOD.items():
    want[split][f"{split}/{name}"] = labels + (name,)
  for name, (fixed, split, labels, _) in REPAIRED.items():
    want[split][f"{split}/{fixed}"] = labels + (name,)
  if config == "aligned_race_unknown":
    want["train"][f"train/{NO_RACE}"] = (3, 39, 1, 5, NO_RACE)
  return want


@pytest.mark.parametrize("config", ["aligned", "aligned_race_unknown"])
def test_labels_buckets_and_splits(built, manual_dir, config):
  summaries, data_dir = built
  want = _expected(config)
  sizes = {"train": 9 + (config == "aligned_race_unknown"), "validation": 1, "test": 2}
  for split in ("train", "validation", "test"):
    records = _records(data_dir, config, split)
    got = {r["id"].decode(): (int(r["age"]), int(r["age_years"]), int(r["gender"]),
                              int(r["race"]), r["file_name"].decode()) for r in records}
    assert got == want[split], split
    assert len(records) == sizes[split] == summaries[config]["splits"][split]["num_examples"]
    for r in records:
      with open(os.path.join(manual_dir, "UTKFace", r["file_name"].decode()), "rb") as f:
        assert r["image"] == f.read()


@pytest.mark.parametrize("config", ["aligned", "aligned_race_unknown"])
def test_skips_with_reasons(built, manual_dir, config):
  summaries, _ = built
  folder = os.path.join(manual_dir, "UTKFace")
  want = [("train", eid, reason) for eid, reason in SKIPPED.values()]
  want += [("train", f"train/{CORRUPT}",
            f"image file cannot be decoded (corrupt or truncated): {folder}/{CORRUPT}"),
           ("train", f"train/{EMPTY}", f"image file empty: {folder}/{EMPTY}")]
  if config == "aligned":
    want.append(("train",) + NO_RACE_SKIP)
  skipped = summaries[config]["skipped"]
  assert sorted((s["split"], s["id"], s["reason"]) for s in skipped["examples"]) == sorted(want)
  assert skipped["count"] == (8 if config == "aligned" else 7)
  # The entries that are not examples are listed too, in summary.json and in the printed summary.
  ignored = [f"{folder}/extra", f"{folder}/readme.txt"]
  assert summaries[config]["ignored"] == {"count": 2, "paths": ignored}
  printed = build.format_summary(summaries[config])
  assert "ignored (not examples): 2\n  " + "\n  ".join(ignored) in printed


def test_histograms_and_class_names(built):
  summaries, _ = built
  train = summaries["aligned"]["splits"]["train"]["histograms"]
  assert list(train["age"]) == ["0-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69",
                                "70-79", "80-89", "90-99", "100+"]
  assert list(train["age"].values()) == [2, 1, 2, 1, 0, 0, 0, 1, 0, 1, 1]
  assert train["gender"] == {"m": 5, "f": 4}
  assert train["race"] == {"White": 2, "Black": 2, "Asian": 2, "Indian": 2, "Others": 1}
  race = summaries["aligned_race_unknown"]["splits"]["train"]["histograms"]["race"]
  assert race == {"White": 2, "Black": 2, "Asian": 2, "Indian": 2, "Others": 1, "unknown": 1}
  test = summaries["aligned"]["splits"]["test"]["histograms"]
  assert test["age"]["100+"] == 1 and test["age"]["50-59"] == 1


def test_repairs_and_ignored_files_are_listed(manual_dir, tmp_path):
  builder = utkface.UTKFace(config="aligned", data_dir=str(tmp_path))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  assert sorted(builder.repaired) == sorted(
      utkface.Repaired(split, f"{split}/{fixed}", f"{name!r}: {repair}")
      for name, (fixed, split, _, repair) in REPAIRED.items())
  folder = os.path.join(manual_dir, "UTKFace")
  assert sorted(builder.ignored) == [f"{folder}/extra", f"{folder}/readme.txt"]
  assert collections.Counter(s.split for s in builder.skipped) == {"train": 8}


@pytest.mark.parametrize("name, want", [
    ("25_0_2_20170116220224651.jpg.chip.jpg", (25, 0, 2, "20170116220224651", ())),
    ("55_0_0_20170116232725357jpg.chip.jpg",
     (55, 0, 0, "20170116232725357", ("missing dot before jpg.chip.jpg inserted",))),
    ("24_0_1_20170116220224657  .jpg.chip.jpg",
     (24, 0, 1, "20170116220224657", ("space before .jpg removed",))),
    ("61_1_20170109142408075.jpg.chip.jpg", (61, 1, None, "20170109142408075", ())),
    ("0_1_4_20170109142408075.jpg.chip.jpg", (0, 1, 4, "20170109142408075", ())),
    ("61_1_2.jpg.chip.jpg", None),  # date missing, or race? ambiguous: not parsed
    ("a_1_2_20170109142408075.jpg.chip.jpg", None),
    ("61_1_2_3_20170109142408075.jpg.chip.jpg", None),
    ("._61_1_2_20170109142408075.jpg.chip.jpg", None),
])
def test_parse_name(name, want):
  parsed, reason = utkface.parse_name(name)
  if want is None:
    assert parsed is None and reason.startswith(f"file name {name!r} is not [age]_[gender]")
  else:
    assert reason is None
    assert (parsed.age, parsed.gender, parsed.race, parsed.datetime, parsed.repairs) == want


def test_split_assignment_is_seeded_stable_and_near_the_fractions():
  names = [f"{i % 117}_{i % 2}_{i % 5}_2017011{i:010d}.jpg.chip.jpg" for i in range(5000)]
  splits = [utkface.assign_split(n, 0) for n in names]
  counts = collections.Counter(splits)
  # Binomial standard deviations: 28 for train, 21 for validation and test; 4 sigma margins.
  assert abs(counts["train"] - 4000) < 115 and abs(counts["validation"] - 500) < 85
  assert abs(counts["test"] - 500) < 85
  assert [utkface.assign_split(n, 0) for n in reversed(names)] == splits[::-1]
  other_seed = [utkface.assign_split(n, 1) for n in names]
  assert 0.2 < np.mean([a != b for a, b in zip(splits, other_seed)]) < 0.45
  assert {utkface.assign_split(n, 0, (0.0, 0.0, 1.0)) for n in names[:50]} == {"test"}
  # Worked out by hand: u = sha256("0:<name>")[:8] / 2**64 is in [0.8, 0.9) and [0.9, 1).
  assert utkface.assign_split("5_1_1_20170117140050539.jpg.chip.jpg", 0) == "validation"
  assert utkface.assign_split("116_1_2_20170112220255503.jpg.chip.jpg", 0) == "test"


def test_buckets():
  assert utkface.age_bucket_names(10, 12)[-2:] == ("100-109", "110+")
  assert utkface.age_bucket_names(20, 3) == ("0-19", "20-39", "40+")
  assert [utkface.age_bucket(a) for a in (0, 9, 10, 99, 100, 116)] == [0, 0, 1, 9, 10, 10]
  assert utkface.age_bucket(116, 10, 12) == 11


def test_config_checks():
  assert build.config_names("utkface") == ["aligned", "aligned_race_unknown", "crop_part1",
                                           "crop_part1_race_unknown"]
  assert utkface.UTKFace.DEFAULT_CONFIG_NAME == "aligned"
  with pytest.raises(ValueError, match="split_fractions must be 3 non-negative"):
    utkface.UTKFaceConfig(name="bad", split_fractions=(0.8, 0.3, 0.1))
  with pytest.raises(ValueError, match="missing_race must be one of"):
    utkface.UTKFaceConfig(name="bad", missing_race="guess")
  with pytest.raises(ValueError, match="num_age_buckets must be >= 1"):
    utkface.UTKFaceConfig(name="bad", num_age_buckets=0)
  with pytest.raises(ValueError, match="folder must be one of"):
    utkface.UTKFaceConfig(name="bad", folder="part1")


def test_missing_manual_data(tmp_path):
  with pytest.raises(build.BuildError) as e:
    build.build("utkface", None, data_dir=str(tmp_path / "tfds"),
                manual_dir=str(tmp_path / "nowhere"))
  assert e.value.line == (f"utkface/aligned: manual data not found in {tmp_path}/nowhere (looked "
                          "for that folder; found nothing (it does not exist)) (layout: python -m "
                          "data_pipelines.build utkface --layout)")
  assert str(e.value).endswith(utkface.UTKFace.MANUAL_DOWNLOAD_INSTRUCTIONS)
  # Manual dir present, UTKFace/ not: one line naming the folder and what is there.
  os.makedirs(tmp_path / "manual" / "part1")
  with pytest.raises(build.BuildError) as e:
    build.build("utkface", "aligned", data_dir=str(tmp_path / "tfds2"),
                manual_dir=str(tmp_path / "manual"))
  assert isinstance(e.value, FileNotFoundError) and "\n" not in e.value.line
  assert e.value.line.startswith(
      f"utkface/aligned: utkface/aligned: expected UTKFace/ (or *.jpg.chip.jpg files) in the "
      f"manual directory {tmp_path}/manual, or that directory to be UTKFace/")
  assert e.value.line.endswith(f"; found in {tmp_path}/manual: part1/ (layout: python -m "
                               "data_pipelines.build utkface --layout)")


def _crop_part1(root) -> str:
  folder = os.path.join(root, "crop_part1")
  os.makedirs(folder)
  names = list(CROP_GOOD) + [CROP_REPAIRED[0]] + list(CROP_MALFORMED)
  for i, name in enumerate(names):
    _write_jpeg(os.path.join(folder, name), 100 + i)
  return folder


@pytest.fixture(scope="module")
def crop_part1(tmp_path_factory) -> str:
  return _crop_part1(str(tmp_path_factory.mktemp("crop_manual")))


def test_crop_part1_folder_itself_picks_its_config_and_names_the_malformed_files(
    crop_part1, tmp_path, capsys):
  data_dir = str(tmp_path / "tfds")
  # No --config: the folder's name picks crop_part1 (as the real 9,780-file release would).
  assert build.main(["utkface", "--manual_dir", crop_part1, "--data_dir", data_dir]) == 0
  printed = capsys.readouterr().out
  with open(os.path.join(data_dir, "utkface", "crop_part1", "summary.json")) as f:
    summary = json.load(f)
  assert summary["config"] == "crop_part1" and summary["source"] == crop_part1
  assert summary["files"] == 9
  assert {s: i["num_examples"] for s, i in summary["splits"].items()} == {
      "train": 5, "validation": 1, "test": 1}
  assert sorted((s["split"], s["id"], s["reason"]) for s in summary["skipped"]["examples"]) == [
      ("train", f"train/{name}", reason) for name, reason in sorted(CROP_MALFORMED.items())]
  assert summary["repaired"] == {"count": 1, "examples": [{
      "split": "train", "id": f"train/{CROP_REPAIRED[1]}",
      "repair": f"{CROP_REPAIRED[0]!r}: space before .jpg removed"}]}
  assert f"usable: 7 of 9 files in {crop_part1} (2 skipped)" in printed
  for name, reason in CROP_MALFORMED.items():
    assert f"  train train/{name}: {reason}\n" in printed
  assert f"repaired: 1\n  train train/{CROP_REPAIRED[1]}: " in printed
  records = _records(data_dir, "crop_part1", "train")
  got = {r["id"].decode(): (int(r["age"]), int(r["age_years"]), int(r["gender"]),
                            int(r["race"])) for r in records}
  want = {f"train/{n}": labels for n, (split, labels) in CROP_GOOD.items() if split == "train"}
  want[f"train/{CROP_REPAIRED[1]}"] = (3, 35, 0, 1)
  assert got == want


def test_crop_part1_race_unknown_keeps_the_name_without_race(crop_part1, tmp_path):
  summary = build.build("utkface", "crop_part1_race_unknown", data_dir=str(tmp_path),
                        manual_dir=crop_part1)
  assert summary["splits"]["train"]["num_examples"] == 6
  assert summary["splits"]["train"]["histograms"]["race"]["unknown"] == 1
  assert [s["id"] for s in summary["skipped"]["examples"]] == [
      "train/61_3_20170109150557335.jpg.chip.jpg"]


def test_which_folder_a_manual_directory_gives(tmp_path):
  both = tmp_path / "both"
  crop = _crop_part1(str(both))
  os.makedirs(both / "UTKFace")
  _write_jpeg(str(both / "UTKFace" / "25_0_2_20170116220224651.jpg.chip.jpg"), 0)
  pick = utkface.UTKFace.config_for_manual_dir
  assert pick(crop) == pick(str(tmp_path / "x" / "crop_part1/")) == "crop_part1"
  assert pick(str(both)) == "aligned"  # UTKFace/ wins when both are there
  assert pick(str(both / "UTKFace")) == "aligned"
  assert pick(str(tmp_path)) is None
  data_dir = str(tmp_path / "tfds")
  builder = utkface.UTKFace(config="crop_part1", data_dir=data_dir)
  assert builder.chip_folder(str(both)) == crop
  assert builder.chip_folder(crop) == crop
  # A renamed folder holding the chips directly is read by the config asked for.
  os.rename(both / "UTKFace", tmp_path / "chips")
  assert builder.chip_folder(str(tmp_path / "chips")) == str(tmp_path / "chips")
  os.rename(tmp_path / "chips", both / "UTKFace")
  with pytest.raises(FileNotFoundError, match=r"it is/holds UTKFace/, read by --config aligned"):
    builder.chip_folder(str(both / "UTKFace"))
  aligned = utkface.UTKFace(config="aligned", data_dir=data_dir)
  assert aligned.chip_folder(str(both)) == str(both / "UTKFace")
  with pytest.raises(FileNotFoundError, match=r"; it is/holds crop_part1/, read by --config "
                     r"crop_part1\n"):
    aligned.chip_folder(crop)
  # --config crop_part1 reaches the folder that lost.
  summary = build.build("utkface", "crop_part1", data_dir=data_dir, manual_dir=str(both))
  assert summary["source"] == crop and summary["files"] == 9


def test_wrong_config_for_the_folder_is_one_line(crop_part1, tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    build.main(["utkface", "--config", "aligned", "--manual_dir", crop_part1, "--data_dir",
                str(tmp_path)])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "Traceback" not in err
  assert "it is/holds crop_part1/, read by --config crop_part1; found in" in err
  assert "61_1_20170109142408075.jpg.chip.jpg" in err  # what the folder holds


def test_a_zero_fraction_leaves_the_split_out(manual_dir, tmp_path):
  config = utkface.UTKFaceConfig(name="all_train", split_fractions=(1.0, 0.0, 0.0))
  builder = utkface.UTKFace(config=config, data_dir=str(tmp_path))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  assert list(builder.info.splits) == ["train"]
  assert builder.info.splits["train"].num_examples == 12  # 9 + 1 + 2 of the default split


def test_an_empty_split_is_a_clear_error(tmp_path):
  folder = tmp_path / "UTKFace"
  os.makedirs(folder)
  open(folder / "25_0_2_20170116220224651.jpg.chip.jpg", "wb").close()
  _write_jpeg(str(folder / "30_2_0_20170117140050531.jpg.chip.jpg"), 1)
  # Both files fall in train (see GOOD and SKIPPED) and neither is usable.
  with pytest.raises(ValueError, match=r"utkface/aligned: no usable example in split 'train' "
                     r"\(fraction 0.8, seed 0\): 2 files assigned, 2 skipped, the first: image "
                     r"file empty: .*/UTKFace/25_0_2_20170116220224651.jpg.chip.jpg"):
    build.build("utkface", "aligned", data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path))
