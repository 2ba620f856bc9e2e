"""tfds builder ``celeba``: CelebA (Liu et al. 2015) from its manually downloaded native files.

CelebA: Z. Liu, P. Luo, X. Wang, X. Tang, "Deep Learning Face Attributes in the Wild", ICCV 2015,
arXiv:1411.7766. Zhang et al. ("Gender and Smile Classification using Deep Convolutional Neural
Networks", CVPR Workshops (ChaLearn LAP) 2016, doi:10.1109/CVPRW.2016.97) fine-tune on all 40
CelebA attributes, then on gender or smile alone, before FotW; this builder keeps every attribute
plus the two task labels ready to use.

Configs:
  aligned (default): ``img_align_celeba`` (178 x 218 aligned crops) with the landmarks of
    ``list_landmarks_align_celeba.txt``. No "box": CelebA gives none for the aligned crops and
    we do not invent one.
  in_the_wild: ``img_celeba`` with ``list_landmarks_celeba.txt`` and the box of
    ``list_bbox_celeba.txt`` (which refers to these photos).

Features (TF-free):
  image: Image, the JPEG file's bytes as they are.
  attributes: int32 (40,), 1 where the attribute's value is +1 and 0 where it is -1, in the order
    of ``ATTRIBUTES`` (the header of ``list_attr_celeba.txt``; also in the dataset metadata).
  gender: ClassLabel ["m", "f"] from Male (index 20): +1 -> "m", -1 -> "f".
  smile: ClassLabel ["no", "yes"] from Smiling (index 31): -1 -> "no", +1 -> "yes".
  identity: int32, the celebrity number of ``identity_CelebA.txt`` (1..10177).
  landmarks: float32 (5, 2) (x, y) in pixels of the stored image, in the order of
    ``jaxface.faces.types.LANDMARK_NAMES``. CelebA's lefteye, righteye, nose, leftmouth and
    rightmouth map one to one onto left_eye, right_eye, nose, mouth_left, mouth_right: in both
    conventions "left" is the point on the left of the photo (the subject's right); e.g. image
    000001 has lefteye x = 165 and righteye x = 244 in the wild.
  box (in_the_wild only): float32 (4,) [x_1, y_1, x_1 + width, y_1 + height] in pixels.
  id: Text, the file name (``000001.jpg``), also the example key.

Splits: train / validation / test from ``list_eval_partition.txt`` (codes 0 / 1 / 2).

Skipped (``builder.skipped``, printed by ``build.py``): malformed rows (wrong column count, a
value that is not an integer, an attribute other than +1/-1, an unknown partition code, a repeated
file) with the list file and line number; files that some annotation list lacks; images that are
missing or corrupt. Files annotated but absent from the partition list are recorded with split
``(none)``. A count line (line 1) that disagrees with the number of rows is recorded the same
way under the list's file name: a warning, not fatal. A header that is not the expected one is
fatal (the columns would be misread).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.datasets import tfds_compat

ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup",
    "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard",
    "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns",
    "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)
MALE = ATTRIBUTES.index("Male")  # 20
SMILING = ATTRIBUTES.index("Smiling")  # 31
LANDMARK_COLUMNS = ("lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
                    "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y")
BBOX_COLUMNS = ("x_1", "y_1", "width", "height")
PARTITIONS = {"0": "train", "1": "validation", "2": "test"}
NO_SPLIT = "(none)"  # split of records that belong to no split (unpartitioned files, warnings)

ATTR_FILE = "list_attr_celeba.txt"
BBOX_FILE = "list_bbox_celeba.txt"
IDENTITY_FILE = "identity_CelebA.txt"
PARTITION_FILE = "list_eval_partition.txt"
# Folder of each file in the documented layout; the flat alternative has them all at the top.
FOLDERS = {ATTR_FILE: "Anno", BBOX_FILE: "Anno", IDENTITY_FILE: "Anno",
           "list_landmarks_celeba.txt": "Anno", "list_landmarks_align_celeba.txt": "Anno",
           PARTITION_FILE: "Eval", "img_align_celeba": "Img", "img_celeba": "Img"}


class ListFile:
  """One parsed annotation list: rows by file name, problems by file name, count warning."""

  def __init__(self, name: str):
    self.name = name
    self.rows: dict[str, Any] = {}
    self.problems: dict[str, list[str]] = {}
    self.warning: str | None = None


def read_list(path: str, columns: Sequence[str] | None, num_values: int,
              parse: Callable[[list[str]], Any]) -> ListFile:
  """Parses a CelebA list file: ``<file> v1 .. vN`` rows split on runs of whitespace.

  ``columns`` given: line 1 is the image count and line 2 the header, which must equal
  ``columns`` (a leading ``image_id`` is allowed). ``columns`` None: no count or header lines.
  ``parse`` turns the N value strings into the stored row or raises ValueError; such rows, rows
  with the wrong number of values and repeated files become problems (file and line number).
  """
  name = os.path.basename(path)
  out = ListFile(name)
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  first = 0
  count = None
  if columns is not None:
    if len(lines) < 2:
      raise ValueError(f"{path}: expected a count line and a header line, found {len(lines)} "
                       "line(s)")
    try:
      count = int(lines[0].strip())
    except ValueError:
      raise ValueError(f"{path}:1: expected the number of images, got {lines[0]!r}") from None
    header = lines[1].split()
    if header[:1] == ["image_id"]:
      header = header[1:]
    if tuple(header) != tuple(columns):
      raise ValueError(f"{path}:2: expected the header {' '.join(columns)!r}, got {lines[1]!r}")
    first = 2
  first_line: dict[str, int] = {}
  num_rows = 0
  for number, line in enumerate(lines[first:], start=first + 1):
    tokens = line.split()
    if not tokens:
      continue
    num_rows += 1
    file, values = tokens[0], tokens[1:]
    where = f"{name} line {number}"
    if file in first_line:
      out.rows.pop(file, None)
      out.problems.setdefault(file, []).append(
          f"{where}: repeats {file} (first on line {first_line[file]})")
      continue
    first_line[file] = number
    if len(values) != num_values:
      out.problems.setdefault(file, []).append(
          f"{where}: expected {num_values} values after the file name, got {len(values)}")
      continue
    try:
      out.rows[file] = parse(values)
    except ValueError as e:
      out.problems.setdefault(file, []).append(f"{where}: {e}")
  if count is not None and count != num_rows:
    out.warning = f"count line says {count} images but {num_rows} rows follow (not fatal)"
  return out


def _ints(values: list[str]) -> np.ndarray:
  try:
    return np.array([int(v) for v in values], np.int64)
  except ValueError:
    raise ValueError(f"values must be integers, got {' '.join(values)!r}") from None


def _attributes(values: list[str]) -> np.ndarray:
  signs = _ints(values)
  bad = [ATTRIBUTES[i] for i in np.flatnonzero((signs != 1) & (signs != -1))]
  if bad:
    raise ValueError(f"attribute values must be +1 or -1 (bad: {', '.join(bad)})")
  return (signs == 1).astype(np.int32)


def _partition(values: list[str]) -> str:
  if values[0] not in PARTITIONS:
    raise ValueError(f"unknown partition code {values[0]!r} (expected 0, 1 or 2)")
  return PARTITIONS[values[0]]


def _identity(values: list[str]) -> int:
  return int(_ints(values)[0])


@dataclasses.dataclass(eq=False)
class CelebAConfig(tfds.core.BuilderConfig):
  """Which image folder and landmark list a ``celeba`` config reads, and whether it has a box."""
  images: str = "img_align_celeba"
  landmarks: str = "list_landmarks_align_celeba.txt"
  with_box: bool = False


class CelebA(tfds_compat.ManualBuilderMixin, tfds.core.GeneratorBasedBuilder):
  """CelebA: 40 attributes, gender, smile, identity and 5 landmarks (box in the wild)."""

  name = "celeba"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      CelebAConfig(name="aligned", description="img_align_celeba with the aligned landmarks."),
      CelebAConfig(name="in_the_wild", images="img_celeba", landmarks="list_landmarks_celeba.txt",
                   with_box=True,
                   description="img_celeba with its landmarks and list_bbox_celeba boxes."),
  ]
  DEFAULT_CONFIG_NAME = "aligned"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download CelebA (mmlab.ie.cuhk.edu.hk/projects/CelebA.html) and place it in the manual directory
as distributed:
  Img/img_align_celeba/000001.jpg ... 202599.jpg   (config "aligned")
  Img/img_celeba/000001.jpg ...                    (config "in_the_wild", unzipped)
  Anno/list_attr_celeba.txt
  Anno/list_landmarks_align_celeba.txt             ("aligned")
  Anno/list_landmarks_celeba.txt                   ("in_the_wild")
  Anno/list_bbox_celeba.txt                        ("in_the_wild")
  Anno/identity_CelebA.txt
  Eval/list_eval_partition.txt
The one accepted alternative is the flat layout (as in torchvision's celeba folder): the image
folder(s) and all the .txt files directly in the manual directory. Used when
Anno/list_attr_celeba.txt is absent and list_attr_celeba.txt is present. The .txt files are the
original whitespace-aligned lists (not the CSV conversions of some mirrors).
"""

  def _info(self) -> tfds.core.DatasetInfo:
    features = {
        "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
        "attributes": tfds.features.Tensor(shape=(len(ATTRIBUTES),), dtype=np.int32),
        "gender": tfds.features.ClassLabel(names=["m", "f"]),
        "smile": tfds.features.ClassLabel(names=["no", "yes"]),
        "identity": tfds.features.Scalar(dtype=np.int32),
        "landmarks": tfds.features.Tensor(shape=(5, 2), dtype=np.float32),
        "id": tfds.features.Text(),
    }
    if self.builder_config.with_box:
      features["box"] = tfds.features.Tensor(shape=(4,), dtype=np.float32)
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict(features),
        metadata=tfds.core.MetadataDict(attributes=list(ATTRIBUTES)),
        homepage="https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html",
    )

  def _path(self, dl_manager: tfds.download.DownloadManager, flat: bool, name: str) -> str:
    return self.manual_path(dl_manager, name) if flat else self.manual_path(
        dl_manager, FOLDERS[name], name)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    cfg = self.builder_config
    manual = os.fspath(dl_manager.manual_dir)
    flat = (not os.path.exists(os.path.join(manual, FOLDERS[ATTR_FILE], ATTR_FILE))
            and os.path.exists(os.path.join(manual, ATTR_FILE)))
    path = functools.partial(self._path, dl_manager, flat)
    images = path(cfg.images)
    partition = read_list(path(PARTITION_FILE), None, 1, _partition)
    lists = [read_list(path(ATTR_FILE), ATTRIBUTES, len(ATTRIBUTES), _attributes),
             read_list(path(cfg.landmarks), LANDMARK_COLUMNS, 10,
                       lambda v: _ints(v).astype(np.float32).reshape(5, 2)),
             read_list(path(IDENTITY_FILE), None, 1, _identity)]
    if cfg.with_box:
      lists.append(read_list(path(BBOX_FILE), BBOX_COLUMNS, 4, self._box))
    for lst in [partition, *lists]:
      if lst.warning:
        self.skip(NO_SPLIT, lst.name, lst.warning)
    # Annotated files with no (usable) partition row: one record each, all reasons together.
    partitioned = set(partition.rows) | set(partition.problems)
    stray: dict[str, tuple[list[str], list[str]]] = {}  # file -> (problems, lists naming it)
    for lst in lists:
      for file in [*lst.rows, *lst.problems]:
        if file not in partitioned:
          problems, names = stray.setdefault(file, ([], []))
          problems.extend(lst.problems.get(file, []))
          names.append(lst.name)
    for file in sorted(stray):
      problems, names = stray[file]
      self.skip(NO_SPLIT, file, "; ".join(
          [*problems, f"in {', '.join(names)} but not in {PARTITION_FILE}"]))
    for file, reasons in partition.problems.items():
      self.skip(NO_SPLIT, file, "; ".join(reasons))
    by_split: dict[str, list[str]] = {s: [] for s in PARTITIONS.values()}
    for file, split in partition.rows.items():
      by_split[split].append(file)
    return {split: self._generate_examples(split, files, images, lists)
            for split, files in by_split.items()}

  @staticmethod
  def _box(values: list[str]) -> np.ndarray:
    x, y, w, h = _ints(values).astype(np.float32)
    if w <= 0 or h <= 0:
      raise ValueError(f"box width and height must be positive, got {w:g} x {h:g}")
    return np.array([x, y, x + w, y + h], np.float32)

  def _generate_examples(self, split: str, files: list[str], images: str,
                         lists: list[ListFile]) -> Iterator[tuple[str, dict[str, Any]]]:
    attrs, landmarks, identity = lists[:3]
    for file in files:
      reasons = [r for lst in lists for r in lst.problems.get(file, [])]
      absent = [lst.name for lst in lists if file not in lst.rows and file not in lst.problems]
      if absent:
        reasons.append(f"in {PARTITION_FILE} but not in {', '.join(absent)}")
      if reasons:
        self.skip(split, file, "; ".join(reasons))
        continue
      data, reason = tfds_compat.read_checked_image(os.path.join(images, file))
      if reason:
        self.skip(split, file, reason)
        continue
      a = attrs.rows[file]
      example = {
          "image": data,
          "attributes": a,
          "gender": "m" if a[MALE] else "f",
          "smile": "yes" if a[SMILING] else "no",
          "identity": identity.rows[file],
          "landmarks": landmarks.rows[file],
          "id": file,
      }
      if self.builder_config.with_box:
        example["box"] = lists[3].rows[file]
      yield file, example
