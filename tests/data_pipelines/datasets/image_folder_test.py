"""The ``image_folder`` tfds builder on tiny class-folder and split-folder fixtures: labels from
the folders, the spec file's class list, fractions and seed, the canonical expression order,
skipped and ignored files, and its one-line errors."""

import collections
import json
import os

import pytest
import tensorflow_datasets as tfds

from data_pipelines import build
from data_pipelines.datasets import image_folder
from data_pipelines.datasets import synthetic
from data_pipelines.datasets import tfds_compat
from data_pipelines.datasets import utkface
from tests.fixtures import native


_image = native.write_image


def _records(data_dir, config, split):
  builder = tfds.builder(f"image_folder/{config}", data_dir=data_dir)
  source = builder.as_data_source(
      split, decoders=tfds_compat.skip_image_decoding(builder.info.features))
  return builder, [source[i] for i in range(len(source))]


@pytest.fixture(scope="module")
def class_folders(tmp_path_factory):
  """``<class>/<image>`` with a seeded split: 12 happy, 10 sad, 8 angry, 1 contempt."""
  root = tmp_path_factory.mktemp("classes")
  return root, native.write_class_folders(root)


def test_class_folders_with_a_seeded_split(class_folders, tmp_path):
  root, data = class_folders
  summary = build.build("image_folder", "default", data_dir=str(tmp_path), manual_dir=str(root))
  assert summary["layout"] == "class folders, seeded split"
  assert summary["spec"] == {"classes": None, "fractions": [0.8, 0.1, 0.1], "seed": 0}
  # The split of every file is the documented hash of "<class folder>/<file name>".
  want = collections.defaultdict(set)
  for key in data:
    want[utkface.assign_split(key, 0)].add(key)
  names = ["angry", "contempt", "happy", "sad"]  # sorted folder names
  for split in ("train", "validation", "test"):
    builder, records = _records(str(tmp_path), "default", split)
    assert builder.info.features["label"].names == names  # restored from label.labels.txt
    got = {r["id"].decode(): r for r in records}
    assert set(got) == {f"{split}/{k}" for k in want[split]}
    for eid, r in got.items():
      key = eid.split("/", 1)[1]
      assert r["image"] == data[key]
      assert names[int(r["label"])] == r["folder"].decode() == key.split("/")[0]
    hist = summary["splits"][split]["histograms"]["label"]
    assert hist == {n: sum(k.startswith(n + "/") for k in want[split]) for n in names}
  skipped = summary["skipped"]["examples"]
  assert [(s["id"], s["reason"]) for s in skipped] == [
      (f"{utkface.assign_split('sad/broken.jpg', 0)}/sad/broken.jpg",
       f"image file cannot be decoded (corrupt or truncated): {root}/sad/broken.jpg")]
  assert sorted(summary["ignored"]) == [f"{root}/happy/deeper", f"{root}/happy/notes.txt"]


def test_spec_class_list_fractions_and_seed(class_folders, tmp_path):
  root, data = class_folders
  manual = tmp_path / "manual"
  # A copy of the fixture's folders via symlinks, with a spec beside them.
  manual.mkdir()
  for folder in ("happy", "sad", "angry", "contempt"):
    os.symlink(root / folder, manual / folder, target_is_directory=True)
  (manual / "image_folder.json").write_text(json.dumps(
      {"classes": {"sad": "Sadness", "happy": "Happiness"}, "fractions": [0.5, 0, 0.5],
       "seed": 3}))
  summary = build.build("image_folder", "default", data_dir=str(tmp_path / "d"),
                        manual_dir=str(manual))
  assert list(summary["splits"]) == ["train", "test"]  # fraction 0: no validation split
  for split in ("train", "test"):
    builder, records = _records(str(tmp_path / "d"), "default", split)
    assert builder.info.features["label"].names == ["Sadness", "Happiness"]  # the spec's order
    want = {k for k in data if k.split("/")[0] in ("sad", "happy") and
            utkface.assign_split(k, 3, (0.5, 0.0, 0.5)) == split}
    assert {r["id"].decode().split("/", 1)[1] for r in records} == want
    for r in records:
      assert int(r["label"]) == {"sad": 0, "happy": 1}[r["folder"].decode()]
  assert f"{manual}/angry" in summary["ignored"] and f"{manual}/contempt" in summary["ignored"]


@pytest.fixture(scope="module")
def split_folders(tmp_path_factory):
  """``train/`` and ``val/`` folders with FER-style lowercase emotion folders."""
  root = tmp_path_factory.mktemp("splits")
  data = {}
  for split, folder, n in (("train", "angry", 2), ("train", "happy", 3), ("train", "neutral", 1),
                           ("val", "Surprise", 2), ("val", "angry", 1)):
    for i in range(n):
      key = f"{folder}/{split}_{i}.jpg"
      data[f"{image_folder.SPLIT_FOLDERS[split]}/{key}"] = _image(
          str(root / split / key), len(data))
  return root, data


def test_split_folders_in_the_canonical_expression_order(split_folders, tmp_path):
  root, data = split_folders
  summary = build.build("image_folder", "expression", data_dir=str(tmp_path),
                        manual_dir=str(root))
  assert summary["layout"] == "split folders"
  assert list(summary["splits"]) == ["train", "validation"]  # no test/ folder
  order = list(synthetic.EXPRESSIONS)
  hist = summary["splits"]["train"]["histograms"]["expression"]
  assert list(hist) == order
  assert hist == {"Neutral": 1, "Happy": 3, "Sad": 0, "Surprise": 0, "Fear": 0, "Disgust": 0,
                  "Anger": 2}
  for split in ("train", "validation"):
    _, records = _records(str(tmp_path), "expression", split)
    assert {r["id"].decode() for r in records} == {k for k in data if k.startswith(split)}
    for r in records:
      want = image_folder.canonical_expression(r["folder"].decode())
      assert order[int(r["expression"])] == want
      assert r["image"] == data[r["id"].decode()]


def test_a_class_outside_the_canonical_order_is_an_error(class_folders, tmp_path):
  root, _ = class_folders
  with pytest.raises(image_folder.SpecError, match=r"image_folder/expression: classes contempt "
                     r"are no AffectNet expression \(Neutral, Happy, Sad, Surprise, Fear, "
                     r"Disgust, Anger\); leave them out"):
    build.build("image_folder", "expression", data_dir=str(tmp_path), manual_dir=str(root))


@pytest.mark.parametrize("spec, message", [
    ("[1, 2]", "expected a JSON object with keys among classes, fractions, seed, got list"),
    ('{"class": ["a"]}', r"expected a JSON object with keys among .*, got \['class'\]"),
    ('{"classes": []}', "classes must be a non-empty list of folder names or an object"),
    ('{"classes": {"a": "x", "b": "x"}}', r"classes gives a label name twice: \['x', 'x'\]"),
    ('{"fractions": [0.8, 0.3, 0.1]}', "fractions must be 3 non-negative numbers"),
    ('{"seed": "zero"}', "seed must be an integer, got 'zero'"),
    ("{not json", "not readable JSON"),
    ('{"classes": ["a", "zzz"]}', r"lists class folders not in .*: zzz \(found: a\)"),
])
def test_bad_spec_files(tmp_path, spec, message):
  _image(str(tmp_path / "m" / "a" / "1.jpg"), 0)
  (tmp_path / "m" / "image_folder.json").write_text(spec)
  with pytest.raises(image_folder.SpecError, match=message):
    build.build("image_folder", "default", data_dir=str(tmp_path / "d"),
                manual_dir=str(tmp_path / "m"))


def test_mixed_layouts_and_empty_splits(tmp_path):
  _image(str(tmp_path / "m" / "train" / "a" / "1.jpg"), 0)
  _image(str(tmp_path / "m" / "cats" / "1.jpg"), 1)
  with pytest.raises(image_folder.SpecError, match=r"mixes split folders \(train\) with class "
                     r"folders \(cats\)"):
    build.build("image_folder", "default", data_dir=str(tmp_path / "d"),
                manual_dir=str(tmp_path / "m"))
  (tmp_path / "e" / "train" / "a").mkdir(parents=True)
  (tmp_path / "e" / "train" / "a" / "1.jpg").write_bytes(b"")
  with pytest.raises(image_folder.SpecError, match=r"no usable image in split 'train' \(1 "
                     r"files, 1 skipped\)"):
    build.build("image_folder", "default", data_dir=str(tmp_path / "d2"),
                manual_dir=str(tmp_path / "e"))
