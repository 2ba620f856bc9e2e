"""tfds builder ``salicon``: SALICON saliency maps and mouse-tracking fixations (Jiang et al. 2015).

Reads the manually downloaded release (layout in ``MANUAL_DOWNLOAD_INSTRUCTIONS``). Images are
MS-COCO 2014 photos (640 x 480); every labelled image has a grayscale saliency map with the same
base name and the fixations of several workers in a COCO-style JSON file.

Splits: "train" (``images/train``, 10,000 in the full release) and "validation" (``images/val``,
5,000). The unlabelled ``images/test`` folder is NOT included: tfds splits share one feature set
and the test images have no map and no fixations, so a test split would need invented labels.

Features (all TF-free):
  image: Image, the JPEG file's bytes as they are.
  saliency: Image (H, W, 1), the map file's bytes as they are: PNG for config ``png`` (2017/LSUN
    release), JPEG for config ``jpg`` (the map format ML-Net's generator expects). The loader's
    ``decode`` op reads either with ``cv2.imdecode(..., IMREAD_GRAYSCALE)``.
  fixations: float32 (None, 2), every worker's [x, y] fixation points pooled in file order
    (annotations in JSON order, points in list order), values exactly as in the JSON.
  num_workers: int32, the number of distinct ``worker_id`` values among the image's annotations.
  id: Text, the image's base name (``COCO_val2014_000000102625``); also the example key.

Coordinate convention (checked against NUS-VIP/salicon-api ``buildFixMap``, which sets
``sal_map[y][x] = 1`` on an ``(height, width)`` array): x is the column, y the row, both 0-based
pixel indices, so no offset is applied. The values may be fractional (e.g. ``309.6``) and are
stored unrounded and unclipped; rasterise with ``map[int(y), int(x)]`` to reproduce the API.

Skipped and counted (``builder.skipped``): an image listed in the JSON whose file is missing, an
image file that is not in the JSON, an image without a map, a map without an image, an image or
map that cannot be decoded (corrupt, truncated, empty), an annotation whose fixations are not a
list of [x, y] number pairs (the whole image is skipped, the reason names the file and the
annotation's index), an annotation for an image id the JSON does not list, a repeated file name.
A JSON that is not COCO-style (not an object, or a missing ``images`` / ``annotations`` list or a
missing ``id`` / ``file_name`` / ``image_id`` / ``worker_id`` / ``fixations`` key) raises
``ValueError`` naming the file and the key. An image listed with no annotations is kept with zero
fixations and ``num_workers`` 0 (its map is still a label). A split left without usable examples
raises ``ValueError`` naming the split and the first skip reason.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.datasets import tfds_compat

# tfds split name -> (folder name under images/ and maps/, fixation JSON file name).
SPLITS = {
    "train": ("train", "fixations_train2014.json"),
    "validation": ("val", "fixations_val2014.json"),
}
IMAGE_EXT = ".jpg"
MAP_EXTS = ("png", "jpg")


@dataclasses.dataclass(eq=False)
class SaliconConfig(tfds.core.BuilderConfig):
  """Which file extension the saliency maps have (``png`` or ``jpg``)."""
  map_ext: str = "png"


class Salicon(tfds_compat.ManualBuilderMixin, tfds.core.GeneratorBasedBuilder):
  """SALICON images with saliency maps and pooled worker fixations."""

  name = "salicon"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: train and validation; test has no labels."}
  BUILDER_CONFIGS = [
      SaliconConfig(name="png", map_ext="png",
                    description="Maps as PNG (2017/LSUN release), stored as PNG bytes."),
      SaliconConfig(name="jpg", map_ext="jpg",
                    description="Maps as JPEG (ML-Net's generator), stored as JPEG bytes."),
  ]
  DEFAULT_CONFIG_NAME = "png"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download SALICON (http://salicon.net: images, maps and fixations of train and val) and arrange it
as (base names must agree between an image and its map):
  images/train/COCO_train2014_<12 digits>.jpg   640 x 480 JPEG
  images/val/COCO_val2014_<12 digits>.jpg
  maps/train/COCO_train2014_<12 digits>.png     grayscale map, same base name as the image
  maps/val/COCO_val2014_<12 digits>.png         (.jpg maps with --config jpg)
  fixations/fixations_train2014.json            COCO-style: images [{id, file_name, width, height}],
  fixations/fixations_val2014.json              annotations [{id, image_id, worker_id,
                                                              fixations: [[x, y], ...]}]
images/test (no labels) is not read.
"""

  def _info(self) -> tfds.core.DatasetInfo:
    map_format = "png" if self.builder_config.map_ext == "png" else "jpeg"
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "saliency": tfds.features.Image(shape=(None, None, 1), encoding_format=map_format),
            "fixations": tfds.features.Tensor(shape=(None, 2), dtype=np.float32),
            "num_workers": tfds.features.Tensor(shape=(), dtype=np.int32),
            "id": tfds.features.Text(),
        }),
        homepage="http://salicon.net",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    if self.builder_config.map_ext not in MAP_EXTS:
      raise ValueError(f"salicon: map_ext must be one of {MAP_EXTS}, "
                       f"got {self.builder_config.map_ext!r}")
    generators = {}
    for split, (folder, json_name) in SPLITS.items():
      # Check every expected path before generating anything, so a wrong layout fails at once.
      paths = (self.manual_path(dl_manager, "fixations", json_name),
               self.manual_path(dl_manager, "images", folder),
               self.manual_path(dl_manager, "maps", folder))
      generators[split] = self._generate_examples(split, *paths)
    return generators

  def _generate_examples(self, split: str, json_path: str, image_dir: str,
                         map_dir: str) -> Iterator[tuple[str, dict[str, Any]]]:
    map_ext = "." + self.builder_config.map_ext
    labels = self._read_fixations(split, json_path)
    images = _files_by_base_name(image_dir, IMAGE_EXT)
    maps = _files_by_base_name(map_dir, map_ext)
    skipped_before, yielded = len(self.skipped), 0
    for base in sorted(set(labels) | set(images) | set(maps)):
      label = labels.get(base)
      if base not in images:
        if label is not None:
          self.skip(split, base, f"image file missing: {os.path.join(image_dir, base + IMAGE_EXT)}"
                    f" (listed in {json_path})")
        else:
          self.skip(split, base, f"saliency map without image: {maps[base]}")
        continue
      if label is None:
        self.skip(split, base, f"image not in {json_path}: {images[base]}")
        continue
      if isinstance(label, str):  # a bad annotation or a repeated name, found while parsing
        self.skip(split, base, label)
        continue
      if base not in maps:
        self.skip(split, base, f"no saliency map: {os.path.join(map_dir, base + map_ext)}")
        continue
      image, reason = tfds_compat.read_checked_image(images[base])
      if reason is None:
        saliency, reason = tfds_compat.read_checked_image(maps[base], "saliency map")
      if reason is not None:
        self.skip(split, base, reason)
        continue
      fixations, workers = label
      yield base, {
          "image": image,
          "saliency": saliency,
          "fixations": np.asarray(fixations, np.float32).reshape(-1, 2),
          "num_workers": np.int32(len(workers)),
          "id": base,
      }
      yielded += 1
    if not yielded:
      # tfds would only say "No examples were yielded"; name the split and why.
      first = [s.reason for s in self.skipped[skipped_before:] if s.split == split][:1]
      raise ValueError(f"salicon: no usable examples in split {split!r} ({image_dir}, "
                       f"{map_dir}, {json_path})" + (f"; first skip: {first[0]}" if first else ""))

  def _read_fixations(self, split: str, json_path: str) -> dict[str, Any]:
    """Base name -> (pooled fixations, set of worker ids), or -> the reason to skip the image.

    Raises ValueError naming the file and the key where the JSON is not COCO-style.
    """
    try:
      with open(json_path) as f:
        data = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{json_path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
      raise ValueError(f"{json_path}: expected a COCO-style JSON object, got "
                       f"{type(data).__name__}")
    if data.get("type", "fixations") != "fixations":
      raise ValueError(f"{json_path}: 'type' is {data['type']!r}, expected 'fixations' "
                       "(a results file of saliency maps?)")
    for key in ("images", "annotations"):
      if not isinstance(data.get(key), list):
        raise ValueError(f"{json_path}: missing key {key!r} (a list) of a COCO-style "
                         "fixations file")
    by_id: dict[Any, str] = {}
    labels: dict[str, Any] = {}
    for i, entry in enumerate(data["images"]):
      _require(json_path, f"images[{i}]", entry, ("id", "file_name"))
      base = os.path.splitext(os.path.basename(str(entry["file_name"])))[0]
      by_id[entry["id"]] = base  # a repeated name's annotations then land on the skipped name
      if base in labels:
        labels[base] = f"{json_path}: images[{i}] repeats file_name {entry['file_name']!r}"
        continue
      labels[base] = ([], set())
    for i, ann in enumerate(data["annotations"]):
      _require(json_path, f"annotations[{i}]", ann, ("image_id", "worker_id", "fixations"))
      base = by_id.get(ann["image_id"])
      if base is None:
        self.skip(split, f"annotation:{ann.get('id', i)}",
                  f"{json_path}: annotations[{i}] refers to image_id {ann['image_id']!r}, "
                  "which is not in 'images'")
        continue
      if isinstance(labels[base], str):
        continue  # already skipped for an earlier reason
      points = _fixation_points(ann["fixations"])
      if points is None:
        labels[base] = (f"{json_path}: annotations[{i}] (id {ann.get('id')!r}): fixations must "
                        "be a list of [x, y] number pairs")
        continue
      labels[base][0].extend(points)
      labels[base][1].add(ann["worker_id"])
    return labels


def _require(json_path: str, where: str, entry: Any, keys: tuple[str, ...]) -> None:
  if not isinstance(entry, dict):
    raise ValueError(f"{json_path}: {where} must be an object, got {type(entry).__name__}")
  for key in keys:
    if key not in entry:
      raise ValueError(f"{json_path}: {where} has no key {key!r} (not a COCO-style fixations "
                       "file)")


def _fixation_points(value: Any) -> list[tuple[float, float]] | None:
  """The [x, y] pairs of one annotation, or None if any entry is not a pair of finite numbers."""
  if not isinstance(value, list):
    return None
  points = []
  for p in value:
    if (not isinstance(p, list) or len(p) != 2 or
        not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in p)):
      return None
    points.append((float(p[0]), float(p[1])))
  return points


def _files_by_base_name(folder: str, ext: str) -> dict[str, str]:
  """Base name -> path of the files in ``folder`` ending in ``ext`` (case-insensitive)."""
  out = collections.OrderedDict()
  for name in sorted(os.listdir(folder)):
    base, e = os.path.splitext(name)
    if e.lower() == ext:
      out[base] = os.path.join(folder, name)
  return out
