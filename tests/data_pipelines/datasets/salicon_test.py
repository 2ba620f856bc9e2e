"""The ``salicon`` tfds builder on a tiny fixture in SALICON's native layout: every record, every
skipped example, both map formats, and the errors for a missing or malformed layout."""

import collections
import json
import os
import re

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines import build
from data_pipelines.datasets import tfds_compat

H, W = 24, 32  # a tiny stand-in for SALICON's 480 x 640


def _jpeg(seed: int) -> bytes:
  img = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
  return cv2.imencode(".jpg", img)[1].tobytes()


def _map(seed: int, ext: str) -> bytes:
  m = np.zeros((H, W), np.uint8)
  cv2.circle(m, (seed % W, seed % H), 6, 255, -1)  # a blob, different per image
  return cv2.imencode("." + ext, m)[1].tobytes()


def _write(path, data) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb" if isinstance(data, bytes) else "w") as f:
    f.write(data)


def _image_entry(image_id: int, file_name: str) -> dict:
  return {"license": 1, "url": "http://example/x.jpg", "file_name": file_name, "height": H,
          "width": W, "date_captured": "2013-11-14 21:09:00", "id": image_id}


def _fixations_json(images, annotations) -> str:
  return json.dumps({"info": {"description": "tiny", "version": "1.0", "year": 2014},
                     "images": images, "licenses": [{"id": 1, "name": "x", "url": "y"}],
                     "type": "fixations", "annotations": annotations})


T = "COCO_train2014_0000000000"
V = "COCO_val2014_0000000000"


def make_tree(root: str) -> dict[str, bytes]:
  """Writes the fixture; returns the bytes of every file by relative path.

  train: 01, 02, 08 are good (08 has no annotations); 03 is a corrupt JPEG; 04 is listed but its
  image is missing; 05 is not in the JSON; 06 has no map; 07 is a map without an image; one
  annotation names image_id 99, which the JSON does not list.
  validation: 10 is good; 11 has an annotation whose fixations are malformed.
  """
  files = {}
  for i in (1, 2, 5, 6, 8):
    files[f"images/train/{T}{i:02d}.jpg"] = _jpeg(i)
  files[f"images/train/{T}03.jpg"] = b"\xff\xd8\xff\xe0 this is not a JPEG"
  for i in (1, 2, 3, 4, 5, 7, 8):
    for ext in ("png", "jpg"):
      files[f"maps/train/{T}{i:02d}.{ext}"] = _map(i, ext)
  for i in (10, 11):
    files[f"images/val/{V}{i}.jpg"] = _jpeg(i)
    for ext in ("png", "jpg"):
      files[f"maps/val/{V}{i}.{ext}"] = _map(i, ext)
  files["images/test/COCO_test2014_000000000001.jpg"] = _jpeg(100)  # unlabelled, not read
  train_images = [_image_entry(i, f"{T}{i:02d}.jpg") for i in (1, 2, 3, 4, 6, 8)]
  train_anns = [
      {"image_id": 1, "fixations": [[0.0, 0.0], [31.0, 23.0]], "worker_id": 10, "id": 1},
      {"image_id": 1, "fixations": [[5.5, 7.25]], "worker_id": 11, "id": 2},
      {"image_id": 2, "fixations": [[12.0, 3.0]], "worker_id": 10, "id": 3},
      {"image_id": 3, "fixations": [[1.0, 1.0]], "worker_id": 10, "id": 4},
      {"image_id": 2, "fixations": [[1.0, 2.0], [309.6, 237.0]], "worker_id": 10, "id": 5},
      {"image_id": 6, "fixations": [[4.0, 4.0]], "worker_id": 12, "id": 6},
      {"image_id": 99, "fixations": [[4.0, 4.0]], "worker_id": 12, "id": 7},
  ]
  files["fixations/fixations_train2014.json"] = _fixations_json(train_images, train_anns)
  val_images = [_image_entry(10, f"{V}10.jpg"), _image_entry(11, f"{V}11.jpg")]
  val_anns = [
      {"image_id": 10, "fixations": [[3.0, 4.0]], "worker_id": 1, "id": 1},
      {"image_id": 10, "fixations": [[30.0, 20.0], [0.5, 22.5]], "worker_id": 2, "id": 2},
      {"image_id": 11, "fixations": [[1.0, "a"]], "worker_id": 1, "id": 3},
      {"image_id": 10, "fixations": [], "worker_id": 3, "id": 4},
  ]
  files["fixations/fixations_val2014.json"] = _fixations_json(val_images, val_anns)
  for rel, data in files.items():
    _write(os.path.join(root, rel), data)
  return files


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("salicon_manual"))
  return root, make_tree(root)


@pytest.fixture(scope="module")
def built(tree, tmp_path_factory):
  root, files = tree
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  summaries = {cfg: build.build("salicon", cfg, data_dir=data_dir, manual_dir=root)
               for cfg in ("png", "jpg")}
  return data_dir, summaries


def _records(data_dir: str, config: str, split: str) -> dict[str, dict]:
  builder = tfds.builder(f"salicon/{config}", data_dir=data_dir)
  source = builder.as_data_source(
      split, decoders=tfds_compat.skip_image_decoding(builder.info.features))
  records = [source[i] for i in range(len(source))]
  return {r["id"].decode(): r for r in records}


EXPECTED = {
    "train": {
        f"{T}01": ([[0.0, 0.0], [31.0, 23.0], [5.5, 7.25]], 2),
        f"{T}02": ([[12.0, 3.0], [1.0, 2.0], [309.6, 237.0]], 1),
        f"{T}08": ([], 0),
    },
    "validation": {
        f"{V}10": ([[3.0, 4.0], [30.0, 20.0], [0.5, 22.5]], 3),
    },
}


@pytest.mark.parametrize("config", ["png", "jpg"])
@pytest.mark.parametrize("split", ["train", "validation"])
def test_records_read_back(built, tree, config, split):
  data_dir, _ = built
  root, files = tree
  records = _records(data_dir, config, split)
  assert sorted(records) == sorted(EXPECTED[split])
  folder = {"train": "train", "validation": "val"}[split]
  for base, (fixations, workers) in EXPECTED[split].items():
    r = records[base]
    assert r["image"] == files[f"images/{folder}/{base}.jpg"]
    assert r["saliency"] == files[f"maps/{folder}/{base}.{config}"]
    assert r["fixations"].dtype == np.float32 and r["fixations"].shape == (len(fixations), 2)
    np.testing.assert_array_equal(r["fixations"], np.array(fixations, np.float32).reshape(-1, 2))
    assert int(r["num_workers"]) == workers


def test_maps_decode_as_gray_and_are_stored_in_the_config_format(built):
  data_dir, _ = built
  png = _records(data_dir, "png", "validation")[f"{V}10"]["saliency"]
  jpg = _records(data_dir, "jpg", "validation")[f"{V}10"]["saliency"]
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and jpg[:2] == b"\xff\xd8"
  m = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
  assert m.shape == (H, W) and m[10, 10] == 255 and m[0, 31] == 0  # the blob at (10, 10)
  info = tfds.builder("salicon/jpg", data_dir=data_dir).info
  assert info.features["saliency"].encoding_format == "jpeg"
  assert info.features["saliency"].shape == (None, None, 1)
  assert tfds.builder("salicon/png", data_dir=data_dir).info.features[
      "saliency"].encoding_format == "png"


def test_split_sizes_and_every_skipped_example(built, tree):
  _, summaries = built
  root, _ = tree
  train_json = os.path.join(root, "fixations", "fixations_train2014.json")
  val_json = os.path.join(root, "fixations", "fixations_val2014.json")
  img = os.path.join(root, "images", "train")
  maps = os.path.join(root, "maps", "train")
  for config, summary in summaries.items():
    assert {s: v["num_examples"] for s, v in summary["splits"].items()} == {
        "train": 3, "validation": 1}
    assert summary["skipped"]["count"] == 7
    got = collections.Counter((e["split"], e["id"], e["reason"])
                              for e in summary["skipped"]["examples"])
    want = collections.Counter([
        ("train", f"{T}03", "image file cannot be decoded (corrupt or truncated): "
         f"{img}/{T}03.jpg"),
        ("train", f"{T}04", f"image file missing: {img}/{T}04.jpg (listed in {train_json})"),
        ("train", f"{T}05", f"image not in {train_json}: {img}/{T}05.jpg"),
        ("train", f"{T}06", f"no saliency map: {maps}/{T}06.{config}"),
        ("train", f"{T}07", f"saliency map without image: {maps}/{T}07.{config}"),
        ("train", "annotation:7", f"{train_json}: annotations[6] refers to image_id 99, "
         "which is not in 'images'"),
        ("validation", f"{V}11", f"{val_json}: annotations[2] (id 3): fixations must be a "
         "list of [x, y] number pairs"),
    ])
    assert got == want


def test_missing_manual_dir_or_label_file(tmp_path, tree):
  with pytest.raises(build.BuildError, match=r"salicon/png: manual data not found in .*nowhere"):
    build.build("salicon", "png", data_dir=str(tmp_path / "a"),
                manual_dir=str(tmp_path / "nowhere"))
  partial = tmp_path / "partial"
  _write(str(partial / "images" / "train" / f"{T}01.jpg"), _jpeg(1))
  with pytest.raises(FileNotFoundError,
                     match=r"expected fixations/fixations_train2014.json in the manual"):
    build.build("salicon", "png", data_dir=str(tmp_path / "b"), manual_dir=str(partial))


@pytest.mark.parametrize("content, message", [
    ('{"images": [], "type": "fixations"}', r"missing key 'annotations'"),
    ('[1, 2]', r"expected a COCO-style JSON object, got list"),
    ('{"images": [{"id": 1}], "annotations": []}', r"images\[0\] has no key 'file_name'"),
    ('{"images": [], "annotations": [{"image_id": 1, "fixations": []}]}',
     r"annotations\[0\] has no key 'worker_id'"),
    ('{"images": [], "annotations": [], "type": "saliency_map"}',
     r"'type' is 'saliency_map', expected 'fixations'"),
], ids=["no_annotations", "a_list", "image_without_file_name", "annotation_without_worker",
        "results_file"])
def test_json_that_is_not_coco_style(tmp_path, tree, content, message):
  root, files = tree
  manual = tmp_path / "manual"
  for rel, data in files.items():
    if rel.startswith(("images/val", "maps/val", "fixations/")):
      _write(str(manual / rel), data)
  os.makedirs(manual / "images" / "train")
  os.makedirs(manual / "maps" / "train")
  bad = manual / "fixations" / "fixations_train2014.json"
  _write(str(bad), content)
  with pytest.raises(ValueError, match=re.escape(str(bad)) + ": " + message):
    build.build("salicon", "png", data_dir=str(tmp_path / "d"), manual_dir=str(manual))


def test_a_split_without_usable_examples_names_the_split_and_the_first_reason(tmp_path, tree):
  _, files = tree
  manual = tmp_path / "manual"
  for rel, data in files.items():
    if not rel.startswith("maps/val/"):  # no validation map: both validation images skipped
      _write(str(manual / rel), data)
  os.makedirs(manual / "maps" / "val")
  with pytest.raises(ValueError, match=re.escape(
      "salicon: no usable examples in split 'validation' (") + ".*" + re.escape(
          f"; first skip: no saliency map: {manual}/maps/val/{V}10.png")):
    build.build("salicon", "png", data_dir=str(tmp_path / "d"), manual_dir=str(manual))
