"""tfds builder ``fer2013``: the FER2013 facial expression faces (ICML 2013 challenge).

Config ``folders`` reads the image-folder release instead (``folders`` below); the others read one
csv of the Kaggle release from the manual directory: ``fer2013.csv`` (config
``fer2013``, columns emotion, pixels, Usage) or ``icml_face_data.csv`` (config ``icml_face_data``,
columns emotion, Usage, pixels with leading spaces in the header names). Columns are found by
name after stripping spaces, so any column order works.

Splits by Usage: train (Training, 28,709 rows), public_test (PublicTest, 3,589), private_test
(PrivateTest, 3,589).

Features:
  image: Image (48, 48, 1), gray, the pixels (48 x 48 row-major ints 0-255) as lossless PNG
    bytes, so they decode back exactly (tfds decoding gives (48, 48, 1); the project's ``decode``
    op repeats the gray channel to RGB).
  emotion: ClassLabel, FER's codes 0 Angry, 1 Disgust, 2 Fear, 3 Happy, 4 Sad, 5 Surprise,
    6 Neutral.
  id: Text, "<Usage>/<row>", row = the 0-based index of the data row in the csv (header not
    counted), e.g. "PublicTest/28709"; both Kaggle files list the rows in the same order.

Malformed rows (wrong column count, not 2304 pixels, a pixel that is not an int in 0-255, an
emotion outside 0-6, an unknown Usage) are skipped with the file and line number in
``builder.skipped``; a row whose Usage cannot be read is reported under train. Empty lines are
ignored (they hold no example).

Config ``folders``: the release as image folders (e.g. Kaggle's "FER-2013" folder archive),
``train/<emotion>/*.jpg`` (28,709 files) and ``test/<emotion>/*.jpg`` (7,178: PublicTest and
PrivateTest together), 48 x 48 gray JPEGs, emotion folders in lowercase (angry, disgust, fear,
happy, neutral, sad, surprise). Folder names are matched to ``EMOTIONS`` ignoring case, so the
labels keep FER's order 0 Angry ... 6 Neutral whatever the listing order. Splits ``train`` and
``test``. Each image is decoded to gray (OpenCV; a colour file is converted) and stored as
lossless PNG of the decoded pixels, so the features equal the csv configs'. id:
"<split>/<emotion folder>/<file name>". Skipped and counted: an image that is empty, corrupt or
truncated, one that is not 48 x 48, and every image in a folder that is no FER emotion (named in
the reason). Files without an image ending and deeper folders are ignored (``builder.ignored``).
"""

from __future__ import annotations

import csv
import dataclasses
import os
from typing import Any, Iterator

import cv2
import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.datasets import tfds_compat

EMOTIONS = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
# Usage value -> split name.
USAGES = {"Training": "train", "PublicTest": "public_test", "PrivateTest": "private_test"}
COLUMNS = ("emotion", "pixels", "Usage")
SIDE = 48
FOLDER_SPLITS = ("train", "test")
IMAGE_ENDINGS = (".jpg", ".jpeg", ".png")
LAYOUTS = ("csv", "folders")


@dataclasses.dataclass(eq=False)
class Fer2013Config(tfds.core.BuilderConfig):
  """What an ``fer2013`` config reads: a csv file, or (layout "folders") split/emotion folders."""
  csv_name: str = "fer2013.csv"
  layout: str = "csv"

  def __post_init__(self):
    if self.layout not in LAYOUTS:
      raise ValueError(f"{self.name}: layout must be one of {LAYOUTS}, got {self.layout!r}")


def parse_pixels(text: str) -> np.ndarray:
  """(48, 48) uint8 from 2304 space-separated ints; ValueError says what is wrong."""
  values = text.split()
  if len(values) != SIDE * SIDE:
    raise ValueError(f"pixels has {len(values)} values, expected {SIDE * SIDE} (48 x 48)")
  try:
    pixels = np.array(values).astype(np.int64)
  except ValueError:
    bad = next((v for v in values if not v.lstrip("+-").isdigit()), values[0])
    raise ValueError(f"pixel {bad!r} is not an integer") from None
  if pixels.min() < 0 or pixels.max() > 255:
    raise ValueError(f"pixel values must be in 0-255, got {pixels.min()}..{pixels.max()}")
  return pixels.astype(np.uint8).reshape(SIDE, SIDE)


class Fer2013(tfds_compat.ManualBuilderMixin, tfds.core.GeneratorBasedBuilder):
  """FER2013 48 x 48 gray faces with 7 emotion labels."""

  name = "fer2013"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: fer2013.csv and icml_face_data.csv."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download the Kaggle "Challenges in Representation Learning: Facial Expression Recognition
Challenge" data and place in the manual directory (extract fer2013.tar.gz):
  fer2013.csv          columns emotion,pixels,Usage (config "fer2013"), or
  icml_face_data.csv   columns emotion, Usage, pixels (config "icml_face_data")
pixels = 2304 space-separated ints (48 x 48 gray, row-major); Usage = Training, PublicTest or
PrivateTest.
Or (config "folders") the image-folder release, extracted so that the manual directory holds
  train/<emotion>/*.jpg   test/<emotion>/*.jpg    (48 x 48 gray; emotion = angry, disgust, fear,
                                                   happy, neutral, sad, surprise, any case)
"""
  BUILDER_CONFIGS = [
      Fer2013Config(name="fer2013", csv_name="fer2013.csv", description="fer2013.csv"),
      Fer2013Config(name="icml_face_data", csv_name="icml_face_data.csv",
                    description="Kaggle's icml_face_data.csv (same rows, reordered columns)."),
      Fer2013Config(name="folders", layout="folders", description=(
          "The image-folder release: train/<emotion>/*.jpg and test/<emotion>/*.jpg.")),
  ]
  DEFAULT_CONFIG_NAME = "fer2013"

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(SIDE, SIDE, 1), encoding_format="png"),
            "emotion": tfds.features.ClassLabel(names=list(EMOTIONS)),
            "id": tfds.features.Text(),
        }),
    )

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.ignored: list[str] = []

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    if self.builder_config.layout == "folders":
      roots = {split: self.manual_path(dl_manager, split) for split in FOLDER_SPLITS}
      return {split: self._generate_from_folders(split, root) for split, root in roots.items()}
    path = self.manual_path(dl_manager, self.builder_config.csv_name)
    return {split: self._generate_examples(split, path) for split in USAGES.values()}

  def _generate_from_folders(self, split: str,
                             root: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The images of ``root/<emotion>/``, labelled by the folder name (case ignored)."""
    codes = {e.lower(): i for i, e in enumerate(EMOTIONS)}
    for folder in sorted(os.listdir(root)):
      folder_path = os.path.join(root, folder)
      if not os.path.isdir(folder_path):
        self.ignored.append(folder_path)
        continue
      emotion = codes.get(folder.lower())
      for file_name in sorted(os.listdir(folder_path)):
        path = os.path.join(folder_path, file_name)
        if not os.path.isfile(path) or not file_name.lower().endswith(IMAGE_ENDINGS):
          self.ignored.append(path)
          continue
        example_id = f"{split}/{folder}/{file_name}"
        if emotion is None:
          self.skip(split, example_id, f"folder {folder!r} is no FER emotion (expected one of "
                                       f"{', '.join(codes)})")
          continue
        data, reason = tfds_compat.read_checked_image(path)
        if reason:
          self.skip(split, example_id, reason)
          continue
        gray = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
        if gray.shape != (SIDE, SIDE):
          self.skip(split, example_id, f"image is {gray.shape[1]} x {gray.shape[0]}, expected "
                                       f"{SIDE} x {SIDE}: {path}")
          continue
        ok, png = cv2.imencode(".png", gray)
        if not ok:  # OpenCV reports failure instead of raising
          raise RuntimeError(f"fer2013: PNG encoding failed for {path}")
        yield example_id, {"image": png.tobytes(), "emotion": emotion, "id": example_id}

  def _generate_examples(self, split: str, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The rows of ``split``; each split reads the whole csv but parses only its own rows, so
    every skipped row is reported once."""
    name = os.path.basename(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
      reader = csv.reader(f)
      header = next(reader, None)
      if header is None:
        raise ValueError(f"fer2013: {path} is empty (expected a header {list(COLUMNS)})")
      names = [h.strip() for h in header]
      lower = [n.lower() for n in names]
      missing = [c for c in COLUMNS if c.lower() not in lower]
      if missing:
        raise ValueError(f"fer2013: the header of {path} lacks the columns {missing} "
                         f"(it has {names})")
      col = {c: lower.index(c.lower()) for c in COLUMNS}
      row = -1
      for fields in reader:
        if not any(v.strip() for v in fields):
          continue
        row += 1
        where = f"{name} line {reader.line_num}"
        usage = fields[col["Usage"]].strip() if len(fields) == len(names) else None
        target = USAGES.get(usage, "train")  # unreadable / unknown usage: reported by train
        if target != split:
          continue
        example_id = f"{usage}/{row}" if usage else f"{name}/line{reader.line_num}"
        if usage is None:
          self.skip(split, example_id, f"{where}: expected {len(names)} columns, "
                                       f"got {len(fields)}")
          continue
        if usage not in USAGES:
          self.skip(split, example_id, f"{where}: unknown Usage {usage!r} (expected one of "
                                       f"{', '.join(USAGES)})")
          continue
        try:
          emotion = int(fields[col["emotion"]].strip())
        except ValueError:
          self.skip(split, example_id, f"{where}: emotion is not an integer: "
                                       f"{fields[col['emotion']].strip()!r}")
          continue
        if not 0 <= emotion < len(EMOTIONS):
          self.skip(split, example_id, f"{where}: emotion {emotion} out of range 0-6")
          continue
        try:
          pixels = parse_pixels(fields[col["pixels"]])
        except ValueError as e:
          self.skip(split, example_id, f"{where}: {e}")
          continue
        ok, png = cv2.imencode(".png", pixels)
        if not ok:  # OpenCV reports failure instead of raising
          raise RuntimeError(f"fer2013: PNG encoding failed for {where}")
        yield example_id, {"image": png.tobytes(), "emotion": emotion, "id": example_id}
