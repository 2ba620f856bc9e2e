"""tfds builder ``adience``: the Adience faces in five folds.

Adience: E. Eidinger, R. Enbar, T. Hassner, "Age and Gender Estimation of Unfiltered Faces", IEEE
Transactions on Information Forensics and Security 9(12), 2014, doi:10.1109/TIFS.2014.2359646. The
fold files are the released ``fold_{0..4}_data.txt``.

The splits ``fold0`` .. ``fold4`` are the fold files of the subject-exclusive 5-fold protocol (no
``user_id`` is in two folds; the builder checks it). Train on four and test on one with tfds split
arithmetic, e.g. ``builder.as_data_source("fold1+fold2+fold3+fold4")`` and ``"fold0"``.

Configs ``<tree>_<task>[_map]``: the tree is ``faces`` (``coarse_tilt_aligned_face.*`` crops) or
``aligned`` (``landmark_aligned_face.*``, the in-plane aligned crops Levi & Hassner trained on); the
task is ``age`` or ``gender``, built separately as in SAF-BAGE and Levi & Hassner. Default:
``faces_age`` (SAF-BAGE runs its own detector and margin crop, so it wants the less processed tree).

Features (all TF-free):
  image: Image, the JPEG file's bytes stored as they are (read them back with
    ``decoders=tfds_compat.skip_image_decoding(features)``).
  age (age configs): ClassLabel, the 8 groups in ascending order "0-2", "4-6", "8-12", "15-20",
    "25-32", "38-43", "48-53", "60-100" (labels 0..7, the order of Levi & Hassner's age list).
  gender (gender configs): ClassLabel ["m", "f"] (0 = male, 1 = female).
  age_raw, gender_raw: Text, the fold file's age and gender strings unchanged ("(25, 23)", "None",
    "u", "" ...): the label of the other task, kept as text rather than as a second ClassLabel with
    an "unknown" class, so no config carries a label whose classes differ from the usual ones.
  user_id: Text (the Flickr album, the subject unit of the protocol); face_id: int32;
    original_image: Text (the photo's file name).
  source_box: float32 (4,) [x1, y1, x2, y2] = the fold file's [x, y, x + dx, y + dy], the face box
    in the ORIGINAL Flickr photo; the stored image is already a crop, so it is no box in the image.
  tilt_ang, fiducial_yaw_angle, fiducial_score: float32, as in the fold file.
  id: Text, "<user_id>/<face_id>.<original_image>" (also the example key).
  box, score, landmarks (detected configs ``<config>_<detector>[_<select>][_whole_image]``, e.g.
    ``faces_age_mtcnn``): the face a detector found in the stored image, once at build time
    (``data_pipelines.datasets.detect``: box float32 [x1, y1, x2, y2], score, five landmarks, NaN
    for Haar). The papers (SAF-BAGE, VEGAC) detect the face in each image and enlarge its box by
    30 %; the undetected configs have no box in the image, so ``face_crop`` skips every example.
    Each image is a crop around one person, so one face is kept: by default the one nearest the
    image centre among the largest (``_largest``, ``_nearest_centre``: the other policies); an
    image where none is found is skipped and counted ("no face found"), or with ``_whole_image``
    kept with the whole image as its box. ``python -m data_pipelines.build adience --config
    faces_age --detect mtcnn`` builds ``faces_age_mtcnn``; the summary counts the detections.

Label conventions. Gender configs keep the rows with gender "m" or "f"; "u" (unknown), empty and any
other code are skipped and counted. Age configs keep the rows with a usable age under the config's
``age_policy``:
  * "drop" (default; Levi & Hassner parity): only the 8 canonical strings "(0, 2)" .. "(60, 100)";
    every other string ("None", single ages, odd ranges) is skipped and counted with its reason.
  * "map" (configs ``*_age_map``; AMBIGUOUS, there is no official mapping): "(25, 23)" -> 25-32 (a
    typo for "(25, 32)"); a single age -> the group that contains it, else skipped (35, 13, 22 ...
    fall between groups); another range -> the group containing its midpoint, else skipped
    ("(27, 32)" -> 25-32, "(38, 42)" and "(38, 48)" -> 38-43, "(8, 23)" -> 15-20); "None" skipped.
Blank lines in a fold file are not examples and are passed over. Rows with a wrong column count or
an unparsable number, missing / empty / corrupt images and repeated ids are skipped with a reason
naming the file and line; ``builder.skipped`` lists them all.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Iterator, NamedTuple

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.datasets import detect as detect_lib
from data_pipelines.datasets import tfds_compat

NUM_FOLDS = 5
SPLITS = tuple(f"fold{k}" for k in range(NUM_FOLDS))
FOLD_COLUMNS = ("user_id", "original_image", "face_id", "age", "gender", "x", "y", "dx", "dy",
                "tilt_ang", "fiducial_yaw_angle", "fiducial_score")
AGE_GROUPS = ((0, 2), (4, 6), (8, 12), (15, 20), (25, 32), (38, 43), (48, 53), (60, 100))
AGE_NAMES = tuple(f"{lo}-{hi}" for lo, hi in AGE_GROUPS)
GENDERS = ("m", "f")
AGE_POLICIES = ("drop", "map")
TASKS = ("age", "gender")
# Tree folder -> file-name prefix of its crops: <tree>/<user_id>/<prefix>.<face_id>.<original_image>
TREES = {"faces": "coarse_tilt_aligned_face", "aligned": "landmark_aligned_face"}
# The one irregular range with an evident meaning: a transposed "(25, 32)".
AGE_TYPOS = {(25, 23): (25, 32)}

_RANGE = re.compile(r"^\(\s*(\d+)\s*,\s*(\d+)\s*\)$")
_SINGLE = re.compile(r"^\d+$")


def fold_file_name(k: int) -> str:
  return f"fold_{k}_data.txt"


class FoldRow(NamedTuple):
  """One well-formed line of a fold file (labels still as strings)."""
  line: int
  user_id: str
  original_image: str
  face_id: str
  age: str
  gender: str
  source_box: tuple[float, float, float, float]
  tilt_ang: float
  fiducial_yaw_angle: float
  fiducial_score: float


class BadLine(NamedTuple):
  """A line that could not be parsed, and why."""
  line: int
  reason: str


def parse_fold_file(path: str) -> list[FoldRow | BadLine]:
  """The lines of a fold file in order; raises ``ValueError`` naming the file if its header is not
  the 12 Adience columns (then no line can be trusted)."""
  name = os.path.basename(path)
  try:
    with open(path, encoding="utf-8") as f:
      lines = f.read().split("\n")
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: not UTF-8 text ({e})") from None
  header = tuple(c.strip() for c in lines[0].rstrip("\r").split("\t"))
  if header != FOLD_COLUMNS:
    raise ValueError(f"{path}: header {lines[0]!r} is not the 12 tab-separated Adience columns "
                     f"{' '.join(FOLD_COLUMNS)}")
  out = []
  for n, line in enumerate(lines[1:], start=2):
    # Only the line ending goes: an empty gender is an empty field between two tabs.
    line = line.rstrip("\r")
    if not line.strip():
      continue
    fields = line.split("\t")
    if len(fields) != len(FOLD_COLUMNS):
      out.append(BadLine(n, f"{name} line {n}: {len(fields)} tab-separated columns, expected "
                            f"{len(FOLD_COLUMNS)}"))
      continue
    row = dict(zip(FOLD_COLUMNS, (f.strip() for f in fields)))
    numbers, bad = {}, None
    for k in ("face_id",) + FOLD_COLUMNS[5:]:
      try:
        numbers[k] = int(row[k]) if k == "face_id" else float(row[k])
      except ValueError:
        bad = k
        break
    if bad:
      out.append(BadLine(n, f"{name} line {n}: column {bad} = {row[bad]!r} is not a number"))
      continue
    x, y = numbers["x"], numbers["y"]
    out.append(FoldRow(
        line=n, user_id=row["user_id"], original_image=row["original_image"],
        face_id=row["face_id"], age=row["age"], gender=row["gender"],
        source_box=(x, y, x + numbers["dx"], y + numbers["dy"]), tilt_ang=numbers["tilt_ang"],
        fiducial_yaw_angle=numbers["fiducial_yaw_angle"],
        fiducial_score=numbers["fiducial_score"]))
  return out


def _group_of(age: float) -> int | None:
  for i, (lo, hi) in enumerate(AGE_GROUPS):
    if lo <= age <= hi:
      return i
  return None


def age_label(age: str, policy: str = "drop") -> tuple[int | None, str | None]:
  """The age group index of a fold file's age string and None, or None and why it has none."""
  if policy not in AGE_POLICIES:
    raise ValueError(f"age_policy must be one of {AGE_POLICIES}, got {policy!r}")
  m = _RANGE.match(age)
  if m and (int(m[1]), int(m[2])) in AGE_GROUPS:
    return AGE_GROUPS.index((int(m[1]), int(m[2]))), None
  if policy == "drop":
    return None, f"age {age!r} is not one of the 8 groups (age_policy='drop')"
  if m:
    lo, hi = int(m[1]), int(m[2])
    if (lo, hi) in AGE_TYPOS:
      return AGE_GROUPS.index(AGE_TYPOS[lo, hi]), None
    mid = (lo + hi) / 2
    group = _group_of(mid)
    if group is None:
      return None, f"age range {age!r}: its midpoint {mid:g} lies between groups (age_policy='map')"
    return group, None
  if _SINGLE.match(age):
    group = _group_of(int(age))
    if group is None:
      return None, f"age {age!r} lies between groups (age_policy='map')"
    return group, None
  if age == "None":
    return None, "age 'None' (not annotated)"
  return None, f"unrecognised age {age!r}"


def gender_label(gender: str) -> tuple[int | None, str | None]:
  """0 for "m", 1 for "f", else None and why."""
  if gender in GENDERS:
    return GENDERS.index(gender), None
  if gender == "u":
    return None, "gender 'u' (unknown)"
  if not gender:
    return None, "gender empty"
  return None, f"unknown gender code {gender!r}"


def example_id(row: FoldRow) -> str:
  return f"{row.user_id}/{row.face_id}.{row.original_image}"


@dataclasses.dataclass(eq=False)
class AdienceConfig(tfds.core.BuilderConfig):
  """Which crops (``tree``), which label (``task``) and how irregular ages are handled."""
  tree: str = "faces"
  task: str = "age"
  age_policy: str = "drop"
  detect: detect_lib.Settings | None = None  # None: no detection (no box in the image)

  def __post_init__(self):
    if self.tree not in TREES:
      raise ValueError(f"{self.name}: tree must be one of {tuple(TREES)}, got {self.tree!r}")
    if self.task not in TASKS:
      raise ValueError(f"{self.name}: task must be one of {TASKS}, got {self.task!r}")
    if self.age_policy not in AGE_POLICIES:
      raise ValueError(f"{self.name}: age_policy must be one of {AGE_POLICIES}, "
                       f"got {self.age_policy!r}")


def _configs() -> list[AdienceConfig]:
  configs = []
  for tree in TREES:
    for task in TASKS:
      configs.append(AdienceConfig(
          name=f"{tree}_{task}", tree=tree, task=task,
          description=f"{tree}/ crops, {task} label" +
          (", non-canonical ages dropped" if task == "age" else ", genders m/f only")))
    configs.append(AdienceConfig(
        name=f"{tree}_age_map", tree=tree, task="age", age_policy="map",
        description=f"{tree}/ crops, age label, irregular ages mapped to a group where one fits"))
  detected = []
  for base in configs:
    for settings in detect_lib.all_settings():
      detected.append(dataclasses.replace(
          base, name=base.name + settings.suffix, detect=settings,
          description=f"{base.description}; {settings.describe()}"))
  return configs + detected


class Adience(tfds_compat.ManualBuilderMixin, tfds.core.GeneratorBasedBuilder):
  """Adience faces with age-group or gender labels in the five subject-exclusive folds."""

  name = "adience"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = _configs()
  DETECTORS = detect_lib.DETECTORS  # --detect of data_pipelines.build
  DEFAULT_CONFIG_NAME = "faces_age"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download the Adience benchmark (faces and aligned archives plus the fold files) from the Open
University of Israel (https://talhassner.github.io/home/projects/Adience/Adience-data.html) and lay
it out as follows in the manual directory:

  fold_0_data.txt .. fold_4_data.txt   at the TOP LEVEL (not in a folds/ subfolder): tab-separated,
      one header line, 12 columns user_id original_image face_id age gender x y dx dy tilt_ang
      fiducial_yaw_angle fiducial_score
  faces/<user_id>/coarse_tilt_aligned_face.<face_id>.<original_image>     (configs faces_*)
  aligned/<user_id>/landmark_aligned_face.<face_id>.<original_image>      (configs aligned_*)

Only the tree of the chosen config is needed. fold_frontal_<k>_data.txt files (the frontal subset in
some copies) are ignored. The images hold no face box: build with --detect mtcnn (configs
<config>_mtcnn) for the face crops of SAF-BAGE and VEGAC.
"""

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    label = (tfds.features.ClassLabel(names=list(AGE_NAMES)) if cfg.task == "age" else
             tfds.features.ClassLabel(names=list(GENDERS)))
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(encoding_format="jpeg"),
            cfg.task: label,
            "age_raw": tfds.features.Text(),
            "gender_raw": tfds.features.Text(),
            "user_id": tfds.features.Text(),
            "face_id": tfds.features.Scalar(dtype=np.int32),
            "original_image": tfds.features.Text(),
            "source_box": tfds.features.Tensor(shape=(4,), dtype=np.float32),
            "tilt_ang": tfds.features.Scalar(dtype=np.float32),
            "fiducial_yaw_angle": tfds.features.Scalar(dtype=np.float32),
            "fiducial_score": tfds.features.Scalar(dtype=np.float32),
            "id": tfds.features.Text(),
            **(detect_lib.features() if cfg.detect else {}),
        }),
        homepage="https://talhassner.github.io/home/projects/Adience/Adience-data.html",
    )

  def summary_extra(self) -> dict[str, Any]:
    """The detection counts of a detected config (a reused build keeps its first summary's)."""
    if not self.builder_config.detect:
      return {}
    detection = getattr(self, "_detection", None)
    return {"detection": detection.summary() if detection is not None else {}}

  def _fold_path(self, dl_manager: tfds.download.DownloadManager, k: int) -> str:
    try:
      return self.manual_path(dl_manager, fold_file_name(k))
    except FileNotFoundError as e:
      elsewhere = _find_below(os.fspath(dl_manager.manual_dir), fold_file_name(k))
      if elsewhere:
        raise FileNotFoundError(f"{e}\nFound {elsewhere} instead: move the fold files to the top "
                                "level of the manual directory.") from None
      raise

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    cfg = self.builder_config
    tree = self.manual_path(dl_manager, cfg.tree)
    folds = {}
    for k in range(NUM_FOLDS):
      folds[k] = parse_fold_file(self._fold_path(dl_manager, k))
    _check_subject_exclusive(folds)
    self._detection = detect_lib.Pass(cfg.detect) if cfg.detect else None
    return {f"fold{k}": self._generate_examples(f"fold{k}", fold_file_name(k), rows, tree)
            for k, rows in folds.items()}

  def _generate_examples(self, split: str, fold_file: str, rows: list[FoldRow | BadLine],
                         tree: str) -> Iterator[tuple[str, dict[str, Any]]]:
    cfg = self.builder_config
    first_line: dict[str, int] = {}
    skipped_before = len(self.skipped)
    for row in rows:
      if isinstance(row, BadLine):
        self.skip(split, f"{fold_file}:{row.line}", row.reason)
        continue
      eid = example_id(row)
      if cfg.task == "age":
        label, reason = age_label(row.age, cfg.age_policy)
      else:
        label, reason = gender_label(row.gender)
      if reason:
        self.skip(split, eid, f"{fold_file} line {row.line}: {reason}")
        continue
      if eid in first_line:
        self.skip(split, eid, f"{fold_file} line {row.line}: repeats the id of line "
                              f"{first_line[eid]}")
        continue
      path = os.path.join(tree, row.user_id,
                          f"{TREES[cfg.tree]}.{row.face_id}.{row.original_image}")
      data, reason = tfds_compat.read_checked_image(path)
      if reason:
        self.skip(split, eid, f"{fold_file} line {row.line}: {reason}")
        continue
      found = {}
      if self._detection is not None:
        found, reason = self._detection.find(data)
        if reason:
          self.skip(split, eid, f"{fold_file} line {row.line}: {reason}")
          continue
      first_line[eid] = row.line
      yield eid, {
          **found,
          "image": data,
          cfg.task: label,
          "age_raw": row.age,
          "gender_raw": row.gender,
          "user_id": row.user_id,
          "face_id": int(row.face_id),
          "original_image": row.original_image,
          "source_box": np.asarray(row.source_box, np.float32),
          "tilt_ang": row.tilt_ang,
          "fiducial_yaw_angle": row.fiducial_yaw_angle,
          "fiducial_score": row.fiducial_score,
          "id": eid,
      }
    if not first_line:
      # tfds would only say "No examples were yielded"; name the fold and the first reason.
      skipped = self.skipped[skipped_before:]
      raise ValueError(
          f"adience/{cfg.name}: no usable example in {split} ({fold_file}): "
          f"{len(skipped)} rows skipped" + (f", the first: {skipped[0].reason}" if skipped else ""))


def _check_subject_exclusive(folds: dict[int, list[FoldRow | BadLine]]) -> None:
  """Raises ``ValueError`` naming both fold files if a user_id is in two folds (the protocol's
  subject exclusivity would not hold and test accuracies would be inflated)."""
  owner: dict[str, tuple[int, int]] = {}
  for k, rows in folds.items():
    for row in rows:
      if isinstance(row, BadLine):
        continue
      first = owner.setdefault(row.user_id, (k, row.line))
      if first[0] != k:
        raise ValueError(
            f"adience: user_id {row.user_id!r} is in {fold_file_name(first[0])} (line {first[1]}) "
            f"and {fold_file_name(k)} (line {row.line}); the folds must be subject-exclusive")


def _find_below(root: str, file_name: str, depth: int = 2) -> str | None:
  """The relative path of ``file_name`` in a subfolder of ``root`` up to ``depth`` levels down."""
  if not os.path.isdir(root):
    return None
  for dirpath, dirnames, filenames in os.walk(root):
    rel = os.path.relpath(dirpath, root)
    level = 0 if rel == "." else rel.count(os.sep) + 1
    if level >= depth:
      dirnames[:] = []
    if level and file_name in filenames:
      return os.path.join(rel, file_name)
  return None
