"""tfds builder ``affectnet``: AffectNet's manually annotated faces (Mollahosseini et al. 2017).

Reads the manual download in either of its two native forms (config field ``annotation``):

* ``csv``: ``Manually_Annotated_file_lists/training.csv`` and ``validation.csv``, images under
  ``Manually_Annotated_Images/<subDirectory_filePath>``. A first line whose first field is not an
  image path and whose box fields are not numbers is a header (columns are then taken by name);
  without one the columns are in the documented order. ``training.csv`` ships with a header and
  ``validation.csv`` commonly without; both forms work for both files.
* ``npy``: the per-image redistribution, ``train_set/`` and ``val_set/``, each with
  ``images/<id>.jpg`` and ``annotations/<id>_exp.npy``, ``_val.npy``, ``_aro.npy``, ``_lnd.npy``.
  Its images are face crops already, so the box is the whole image.

Features:
  image: Image, the file's bytes as they are (mostly JPEG; AffectNet also has PNG files, which
    tfds stores the same way; OpenCV's decode reads either). Read them with
    ``tfds_compat.skip_image_decoding`` and the project's ``decode`` op: tfds' own decoding keeps
    a PNG's alpha channel, which does not fit the feature's (H, W, 3). image_format: Text,
    "jpeg", "png", "bmp", "tiff" or "webp", from the file's magic bytes.
  expression: ClassLabel, AffectNet codes 0 Neutral, 1 Happy, 2 Sad, 3 Surprise, 4 Fear,
    5 Disgust, 6 Anger (and 7 Contempt in the 8-class configs). Codes 8 None, 9 Uncertain,
    10 No-Face and codes beyond the config's classes are left out and counted in
    ``builder.skipped`` with one reason per code (no file or line in it, so they tally).
  valence, arousal: float32 scalars in [-1, 1].
  box: float32 (4,) [x1, y1, x2, y2] = [face_x, face_y, face_x + face_width,
    face_y + face_height] in pixels of the stored image; [0, 0, width, height] for ``npy``.
  landmarks68: float32 (68, 2) (x, y), the 68-point iBUG markup as distributed.
  landmarks: float32 (5, 2) (x, y) in ``jaxface.faces.types.LANDMARK_NAMES`` order, derived from
    the 68 points (0-based): left_eye = mean of 36-41, right_eye = mean of 42-47, nose = 30,
    mouth_left = 48, mouth_right = 54. In the iBUG markup 36-41 and 48 are the subject's right eye
    and mouth corner, which lie on the left of a frontal photo: the MTCNN meaning of "left".
  id: Text, the csv's subDirectory_filePath (e.g. "689/7a3c.jpg") or "<set>/<id>" for ``npy``
    (e.g. "train_set/1234"); also the example key.

Split layouts (config field ``layout``):
  official: train = training rows, validation = validation rows.
  saf_bage: SAF-BAGE's split (7 classes: 227,121 / 56,779 / 3,500): test = the validation rows
    (500 per class), train / validation = 80 % / 20 % of the training rows.
  vegac: VEGAC's split (7 classes: 186,811 / 43,109 / 57,481 of 287,401, i.e. all training and
    validation rows): train / validation / test = 65 % / 15 % / 20 %.
  The seeded splits are neither paper's exact lists (they were not published): an example goes to
  the split whose cumulative-fraction interval holds ``split_fraction(id, seed)``, a fraction in
  [0, 1) from the SHA-256 of "<seed>/<id>". The assignment does not depend on row order or on the
  other rows; the fractions and the seed (0 in every config) are fields of the config.

Malformed rows (wrong column count, unparsable or non-positive box, not 136 landmark numbers,
unparsable valence/arousal/expression, a code outside 0-10, a missing annotation file) and bad
images (missing, empty, corrupt or truncated) are skipped with a reason naming the file and line.
Empty lines are ignored (they hold no example).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import math
import os
from typing import Any, Iterator

import cv2
import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.datasets import tfds_compat

# AffectNet's expression codes, in code order.
CODES = ("Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt", "None",
         "Uncertain", "No-Face")
COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
           "facial_landmarks", "expression", "valence", "arousal")
CSV_FILES = {"train": "training.csv", "validation": "validation.csv"}
NPY_SETS = {"train": "train_set", "validation": "val_set"}
IMAGES_DIR = "Manually_Annotated_Images"
LISTS_DIR = "Manually_Annotated_file_lists"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
LAYOUTS = ("official", "saf_bage", "vegac")
# Seeded split fractions of the paper layouts (see the module docstring for the paper counts).
SAF_BAGE_FRACTIONS = (("train", 0.8), ("validation", 0.2))
VEGAC_FRACTIONS = (("train", 0.65), ("validation", 0.15), ("test", 0.2))
# 68-point indices (0-based) behind each of the five LANDMARK_NAMES points.
LANDMARKS5_FROM_68 = (tuple(range(36, 42)), tuple(range(42, 48)), (30,), (48,), (54,))


def landmarks5_from_68(landmarks68: np.ndarray) -> np.ndarray:
  """The (5, 2) LANDMARK_NAMES points of a (68, 2) iBUG markup (eye centres, nose tip, mouth
  corners)."""
  lm = np.asarray(landmarks68, np.float64).reshape(68, 2)
  return np.stack([lm[list(idx)].mean(axis=0) for idx in LANDMARKS5_FROM_68]).astype(np.float32)


def split_fraction(key: str, seed: int) -> float:
  """A fraction in [0, 1) fixed by ``key`` and ``seed`` alone (SHA-256, so stable across runs and
  Python versions, unlike ``hash``)."""
  digest = hashlib.sha256(f"{seed}/{key}".encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64


def image_format(data: bytes) -> str:
  """The format of encoded image bytes from their magic number ("unknown" if none matches)."""
  if data[:2] == b"\xff\xd8":
    return "jpeg"
  if data[:8] == b"\x89PNG\r\n\x1a\n":
    return "png"
  if data[:2] == b"BM":
    return "bmp"
  if data[:4] in (b"II*\x00", b"MM\x00*"):
    return "tiff"
  if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
    return "webp"
  return "unknown"


@dataclasses.dataclass(eq=False)
class AffectNetConfig(tfds.core.BuilderConfig):
  """Classes, annotation form, split layout and seed of an ``affectnet`` config."""
  num_classes: int = 7
  annotation: str = "csv"
  layout: str = "official"
  seed: int = 0
  fractions: tuple[tuple[str, float], ...] = ()

  def __post_init__(self):
    if self.num_classes not in (7, 8):
      raise ValueError(f"affectnet config {self.name}: num_classes must be 7 or 8, "
                       f"got {self.num_classes}")
    if self.annotation not in ("csv", "npy"):
      raise ValueError(f"affectnet config {self.name}: annotation must be 'csv' or 'npy', "
                       f"got {self.annotation!r}")
    if self.layout not in LAYOUTS:
      raise ValueError(f"affectnet config {self.name}: layout must be one of {LAYOUTS}, "
                       f"got {self.layout!r}")
    if self.layout != "official" and not math.isclose(sum(f for _, f in self.fractions), 1.0):
      raise ValueError(f"affectnet config {self.name}: fractions must sum to 1, "
                       f"got {self.fractions}")

  @property
  def class_names(self) -> tuple[str, ...]:
    return CODES[:self.num_classes]

  def split_names(self) -> tuple[str, ...]:
    return ("train", "validation") if self.layout == "official" else (
        "train", "validation", "test")

  def assign(self, part: str, key: str | None) -> str:
    """The split that an example of native part ``part`` ("train" / "validation") goes to.

    ``key`` None (a row too broken to name its image) goes to the part's first possible split,
    so that exactly one split generator reports it.
    """
    if self.layout == "official":
      return part
    if self.layout == "saf_bage" and part == "validation":
      return "test"
    if key is None:
      return self.fractions[0][0]
    u, edge = split_fraction(key, self.seed), 0.0
    for split, fraction in self.fractions:
      edge += fraction
      if u < edge:
        return split
    return self.fractions[-1][0]  # u within rounding of 1


def _config(name: str, num_classes: int, annotation: str, layout: str,
            description: str) -> AffectNetConfig:
  fractions = {"saf_bage": SAF_BAGE_FRACTIONS, "vegac": VEGAC_FRACTIONS}.get(layout, ())
  return AffectNetConfig(name=name, num_classes=num_classes, annotation=annotation,
                         layout=layout, seed=0, fractions=fractions, description=description)


def _is_number(text: str) -> bool:
  try:
    float(text)
  except ValueError:
    return False
  return True


def _is_header(fields: list[str]) -> bool:
  """A header names columns: its first field is no image path and its box fields no numbers."""
  if not fields or fields[0].strip().lower().endswith(IMAGE_EXTENSIONS):
    return False
  return not all(_is_number(f) for f in fields[1:5])


def _float(text: str, what: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise ValueError(f"{what} is not a number: {text.strip()!r}") from None
  if not math.isfinite(value):
    raise ValueError(f"{what} is not finite: {text.strip()!r}")
  return value


def _code(value: Any) -> int:
  """An expression code from a csv field or an npy scalar (int, integral float or string)."""
  if isinstance(value, (float, np.floating)):
    if not float(value).is_integer():
      raise ValueError(f"expression is not an integer code: {value!r}")
    value = int(value)
  try:
    code = int(str(value).strip())
  except ValueError:
    raise ValueError(f"expression is not an integer code: {value!r}") from None
  if not 0 <= code < len(CODES):
    raise ValueError(f"unknown expression code {code} (AffectNet codes are 0-10)")
  return code


def _landmarks68(values: Any) -> np.ndarray:
  """(68, 2) float32 from 136 numbers (strings or numbers, flat or (68, 2))."""
  flat = [v.strip() if isinstance(v, str) else v for v in np.asarray(values).reshape(-1)]
  if flat and isinstance(flat[-1], str) and not flat[-1]:
    flat = flat[:-1]  # a trailing ';'
  if len(flat) != 136:
    raise ValueError(f"facial_landmarks has {len(flat)} numbers, expected 136 (68 x, y pairs)")
  return np.array([_float(str(v), "a landmark coordinate") for v in flat],
                  np.float32).reshape(68, 2)


class AffectNet(tfds_compat.ManualBuilderMixin, tfds.core.GeneratorBasedBuilder):
  """AffectNet expressions with valence, arousal, face box and landmarks."""

  name = "affectnet"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: csv and npy annotations, official, SAF-BAGE and "
                            "VEGAC split layouts."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Request AffectNet from its authors (http://mohammadmahoor.com/affectnet/) and place, for the
"csv" configs (the original release), in the manual directory:
  Manually_Annotated_file_lists/training.csv    (header row; columns subDirectory_filePath,
  Manually_Annotated_file_lists/validation.csv   face_x, face_y, face_width, face_height,
                                                 facial_landmarks (136 numbers joined by ';'),
                                                 expression, valence, arousal; header optional)
  Manually_Annotated_Images/<subDirectory>/<file>  (as named in subDirectory_filePath)
or, for the "*_npy" configs (the per-image redistribution):
  train_set/images/<id>.jpg   train_set/annotations/<id>_exp.npy, <id>_val.npy, <id>_aro.npy,
  val_set/images/<id>.jpg     <id>_lnd.npy (and the same under val_set/annotations/)
"""
  BUILDER_CONFIGS = [
      _config("7class", 7, "csv", "official", "7 expressions, official train / validation."),
      _config("8class", 8, "csv", "official", "8 expressions (+ Contempt), official split."),
      _config("7class_saf_bage", 7, "csv", "saf_bage",
              "SAF-BAGE: test = validation.csv; training.csv split 80 / 20 (seed 0)."),
      _config("7class_vegac", 7, "csv", "vegac",
              "VEGAC: all 7-class rows split 65 / 15 / 20 (seed 0)."),
      _config("7class_npy", 7, "npy", "official", "7 expressions, per-image npy annotations."),
      _config("8class_npy", 8, "npy", "official", "8 expressions, per-image npy annotations."),
      _config("7class_saf_bage_npy", 7, "npy", "saf_bage", "SAF-BAGE layout, npy annotations."),
      _config("7class_vegac_npy", 7, "npy", "vegac", "VEGAC layout, npy annotations."),
  ]
  DEFAULT_CONFIG_NAME = "7class"

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "image_format": tfds.features.Text(),
            "expression": tfds.features.ClassLabel(names=list(self.builder_config.class_names)),
            "valence": tfds.features.Scalar(dtype=np.float32),
            "arousal": tfds.features.Scalar(dtype=np.float32),
            "box": tfds.features.Tensor(shape=(4,), dtype=np.float32),
            "landmarks68": tfds.features.Tensor(shape=(68, 2), dtype=np.float32),
            "landmarks": tfds.features.Tensor(shape=(5, 2), dtype=np.float32),
            "id": tfds.features.Text(),
        }),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    cfg = self.builder_config
    if cfg.annotation == "csv":
      self.manual_path(dl_manager, IMAGES_DIR)
      parts = {p: self.manual_path(dl_manager, LISTS_DIR, f) for p, f in CSV_FILES.items()}
    else:
      parts = {p: self.manual_path(dl_manager, d) for p, d in NPY_SETS.items()}
      for d in NPY_SETS.values():
        self.manual_path(dl_manager, d, "annotations")
    root = os.fspath(dl_manager.manual_dir)
    return {split: self._generate_examples(split, parts, root) for split in cfg.split_names()}

  def _generate_examples(self, split: str, parts: dict[str, str],
                         root: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Examples of ``split`` from every native part that can feed it.

    Each generator reads the label files whole but parses only its own rows, so every skipped
    row is reported once, by the split it belongs to.
    """
    cfg = self.builder_config
    records = self._csv_records if cfg.annotation == "csv" else self._npy_records
    seen: set[str] = set()
    for part, path in parts.items():
      for key, where, parse in records(path, root):
        if cfg.assign(part, key) != split:
          continue
        example_id = key if key is not None else where
        try:
          labels, image_path = parse()
        except ValueError as e:
          self.skip(split, example_id, f"{where}: {e}")
          continue
        code = labels.pop("code")
        if code >= cfg.num_classes:
          self.skip(split, example_id, f"expression {code} ({CODES[code]}) left out: not one of "
                                       f"the {cfg.num_classes} classes of this config")
          continue
        if example_id in seen:
          self.skip(split, example_id, f"{where}: duplicate of an earlier row of {example_id}")
          continue
        data, reason = tfds_compat.read_checked_image(image_path)
        if reason:
          self.skip(split, example_id, reason)
          continue
        if labels["box"] is None:  # npy crops: the box is the whole image
          h, w = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).shape[:2]
          labels["box"] = np.array([0, 0, w, h], np.float32)
        seen.add(example_id)
        yield example_id, {
            "image": data,
            "image_format": image_format(data),
            "expression": code,
            **labels,
            "landmarks": landmarks5_from_68(labels["landmarks68"]),
            "id": example_id,
        }

  def _csv_records(self, path: str, root: str):
    """(key, where, parse) per non-empty row of a label csv; ``parse()`` gives (labels, image
    path) or raises ValueError."""
    name = os.path.basename(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
      reader = csv.reader(f)
      columns = {c: i for i, c in enumerate(COLUMNS)}
      first = True
      for fields in reader:
        if not any(f.strip() for f in fields):
          continue
        if first:
          first = False
          if _is_header(fields):
            columns = self._header_columns(fields, path)
            continue
        where = f"{name} line {reader.line_num}"
        i = columns["subDirectory_filePath"]
        key = fields[i].strip().replace("\\", "/") if i < len(fields) else ""
        yield (key or None), where, (
            lambda fields=fields, key=key: self._parse_csv_row(fields, columns, key, root))

  @staticmethod
  def _header_columns(fields: list[str], path: str) -> dict[str, int]:
    names = [f.strip() for f in fields]
    missing = [c for c in COLUMNS if c not in names]
    if missing:
      raise ValueError(f"affectnet: the header of {path} lacks the columns {missing} "
                       f"(it has {names}; expected {list(COLUMNS)})")
    return {c: names.index(c) for c in COLUMNS}

  @staticmethod
  def _parse_csv_row(fields: list[str], columns: dict[str, int], key: str,
                     root: str) -> tuple[dict[str, Any], str]:
    if len(fields) != len(COLUMNS):
      raise ValueError(f"expected {len(COLUMNS)} columns, got {len(fields)}")
    if not key:
      raise ValueError("empty subDirectory_filePath")
    if os.path.isabs(key) or ".." in key.split("/"):
      raise ValueError(f"subDirectory_filePath leaves the image folder: {key!r}")
    get = {c: fields[i] for c, i in columns.items()}
    x, y, w, h = (_float(get[c], c) for c in ("face_x", "face_y", "face_width", "face_height"))
    if w <= 0 or h <= 0:
      raise ValueError(f"face_width and face_height must be positive, got {w:g}, {h:g}")
    labels = {
        "code": _code(get["expression"]),
        "valence": _float(get["valence"], "valence"),
        "arousal": _float(get["arousal"], "arousal"),
        "box": np.array([x, y, x + w, y + h], np.float32),
        "landmarks68": _landmarks68(get["facial_landmarks"].split(";")),
    }
    return labels, os.path.join(root, IMAGES_DIR, *key.split("/"))

  def _npy_records(self, set_dir: str, root: str):
    """(key, where, parse) per id of an npy set: every id with an image or an annotation."""
    del root
    set_name = os.path.basename(os.path.normpath(set_dir))
    ann_dir = os.path.join(set_dir, "annotations")
    img_dir = os.path.join(set_dir, "images")
    images = {}
    if os.path.isdir(img_dir):
      for f in os.listdir(img_dir):
        stem, ext = os.path.splitext(f)
        if ext.lower() in IMAGE_EXTENSIONS:
          images[stem] = f
    labelled = {f[:-len("_exp.npy")] for f in os.listdir(ann_dir) if f.endswith("_exp.npy")}
    for stem in sorted(labelled | set(images)):
      where = f"{set_name}/annotations/{stem}_*.npy"
      image_path = os.path.join(img_dir, images.get(stem, f"{stem}.jpg"))
      yield f"{set_name}/{stem}", where, (
          lambda stem=stem, image_path=image_path: self._parse_npy(ann_dir, stem, image_path))

  @staticmethod
  def _parse_npy(ann_dir: str, stem: str, image_path: str) -> tuple[dict[str, Any], str]:
    def load(kind: str) -> np.ndarray:
      path = os.path.join(ann_dir, f"{stem}_{kind}.npy")
      if not os.path.exists(path):
        raise ValueError(f"annotation file missing: {path}")
      try:
        return np.load(path, allow_pickle=False)
      except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None

    def scalar(kind: str) -> Any:
      value = load(kind)
      if value.size != 1:
        raise ValueError(f"{stem}_{kind}.npy holds {value.size} values, expected one")
      value = value.reshape(()).item()
      return value.decode() if isinstance(value, bytes) else value

    labels = {
        "code": _code(scalar("exp")),
        "valence": _float(str(scalar("val")), "valence"),
        "arousal": _float(str(scalar("aro")), "arousal"),
        "box": None,  # filled from the image size
        "landmarks68": _landmarks68(load("lnd")),
    }
    return labels, image_path
