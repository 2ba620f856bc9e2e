"""tfds builder ``utkface``: UTKFace's aligned and cropped 200 x 200 faces, labels from file names.

UTKFace: Z. Zhang, Y. Song, H. Qi, "Age Progression/Regression by Conditional Adversarial
Autoencoder", CVPR 2017, arXiv:1702.08423. Its file naming as released: a file
``[age]_[gender]_[race]_[date&time].jpg.chip.jpg`` in a chip folder is one example: age 0..116,
gender 0 = male / 1 = female, race 0..4 = White, Black, Asian, Indian, Others, date&time
``yyyymmddHHMMSSFFF`` (when the image was collected).

Chip folders (configs). ``aligned`` / ``aligned_race_unknown`` read ``UTKFace/``, the whole
aligned set (23,708 files). ``crop_part1`` / ``crop_part1_race_unknown`` read ``crop_part1/``, the
aligned chips of the in-the-wild part 1 (9,780 files; ages 1..110, 4,372 male / 5,408 female,
infant-heavy): the set of Abdolrashidi et al. (arXiv:2010.03791). ``--manual_dir`` may be the chip
folder itself or a folder holding it. Without ``--config``, ``python -m data_pipelines.build
utkface`` picks the config from what the manual directory is or holds
(``config_for_manual_dir``): a folder named ``crop_part1`` or holding only ``crop_part1/`` gives
``crop_part1``; ``UTKFace/`` gives ``aligned``, and it wins when both are there (the builder's
default is the full set); ``--config crop_part1`` reaches the other.
A folder of another name that holds the chips directly is read by whichever config is asked for.

Features (all TF-free):
  image: Image, the JPEG file's bytes stored as they are (read them back with
    ``decoders=tfds_compat.skip_image_decoding(features)``).
  age: ClassLabel, age buckets of ``age_bucket_width`` years, the last one open-ended: by default
    "0-9", "10-19", ..., "90-99", "100+" (labels 0..10).
  age_years: int32, the age in the file name.
  gender: ClassLabel ["m", "f"] (UTKFace's 0 = male -> "m" = 0, 1 = female -> "f" = 1).
  race: ClassLabel ["White", "Black", "Asian", "Indian", "Others"] (+ "unknown" in
    ``aligned_race_unknown`` and ``crop_part1_race_unknown``).
  datetime: Text, the file name's date&time field.
  file_name: Text, the file's name as found (before any repair).
  id: Text, "<split>/<file name after repair>" (also the example key).

Splits. UTKFace has no official split: ``train`` / ``validation`` / ``test`` are a seeded random
split recorded in the config (``split_fractions`` 0.8 / 0.1 / 0.1, ``split_seed`` 0 by default). A
file goes to the split where u = first 8 bytes of sha256("<seed>:<file name after repair>") / 2**64
falls in the cumulative fractions, so the assignment depends on neither the directory listing
order nor the other files, and a repaired name lands where the correct name would. The split is
also the first part of every record id.

Age buckets (AMBIGUOUS). Abdolrashidi et al. ("Age and Gender Prediction From Face Images Using
Attentional Convolutional Network", arXiv:2010.03791, 2020) group ages in 10-year buckets ("such as
0-10") without giving their number; their subset spans ages 1 to 110, which 10-year buckets cover
with 11 groups (0-10 ... 100-110). The default is therefore 11 buckets of 10 years with the last one
open-ended ("100+" holds UTKFace's 100..116). ``age_bucket_width`` and ``num_age_buckets`` change
it (e.g. 12 buckets: "110+"). The paper's AABD example numbers buckets from 1; the labels here start
at 0, which leaves bucket differences unchanged.

File names are parsed defensively, since a few names in the release are malformed. In
``crop_part1/`` two of them, ``61_1_20170109142408075.jpg.chip.jpg`` (race missing) and
``61_3_20170109150557335.jpg.chip.jpg`` (three fields, the second is no gender code), so the
``crop_part1`` config keeps 9,778 of its 9,780 files and names both in the build summary. A space
before ".jpg" (``24_0_1_20170116220224657 .jpg.chip.jpg``) and a missing dot before "jpg.chip.jpg"
(``55_0_0_20170116232725357jpg.chip.jpg``) are repaired, since their meaning is plain (each repair
is listed in ``builder.repaired``). A name with the race missing
(``39_1_20170116174525125.jpg.chip.jpg``) is skipped and counted by default (AMBIGUOUS: the config
``aligned_race_unknown``, field ``missing_race="unknown"``, keeps it with race "unknown" instead).
Three fields whose second is not 0 / 1 (``61_3_...``) are skipped: which field is missing is not
plain (a gender 3, or gender missing and race 3).
Any other name that does not parse, an age above 116, a gender other than 0 / 1, a race other
than 0..4, an empty, corrupt or truncated image, and a name that repeats another after repair, are
skipped with a reason (``builder.skipped``). Files that are not images (no .jpg / .jpeg / .png
ending: a README, a .txt) and subfolders are not examples and are ignored (listed in
``builder.ignored``).

The in-the-wild parts (part1..3 with 68-point landmark lists) are not supported: which images the
landmark lists' coordinates refer to is unverified.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from typing import Any, Iterator, NamedTuple

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.datasets import tfds_compat

SPLITS = ("train", "validation", "test")
GENDERS = ("m", "f")
RACES = ("White", "Black", "Asian", "Indian", "Others")
MAX_AGE = 116
ALIGNED_DIR = "UTKFace"
CROP_PART1_DIR = "crop_part1"
FOLDERS = (ALIGNED_DIR, CROP_PART1_DIR)
CONFIG_OF_FOLDER = {ALIGNED_DIR: "aligned", CROP_PART1_DIR: "crop_part1"}  # the default of each
CHIP_SUFFIX = ".jpg.chip.jpg"
IMAGE_ENDINGS = (".jpg", ".jpeg", ".png")
MISSING_RACE_POLICIES = ("skip", "unknown")

_FIELDS = re.compile(r"^(\d+)_(\d+)_(\d+)_(\d+)$")
# Age, gender and a date&time (more than one digit, so it cannot be a race code).
_NO_RACE = re.compile(r"^(\d+)_(\d+)_(\d{2,})$")
_SPACE_BEFORE_JPG = re.compile(r"\s+(?=\.jpg)")
_NO_DOT_BEFORE_JPG = re.compile(r"(?<=\d)jpg\.chip\.jpg$")


class ParsedName(NamedTuple):
  """The labels in a UTKFace file name; race None where the name has none."""
  name: str  # after repair
  age: int
  gender: int
  race: int | None
  datetime: str
  repairs: tuple[str, ...]


class Repaired(NamedTuple):
  """A file kept under a repaired name, and what was repaired."""
  split: str
  id: str
  repair: str


def repair_name(file_name: str) -> tuple[str, tuple[str, ...]]:
  """``file_name`` with the unambiguous defects (whitespace before ".jpg", a missing dot before
  "jpg.chip.jpg") repaired, and what was done."""
  name, repairs = file_name, []
  if _SPACE_BEFORE_JPG.search(name):
    name = _SPACE_BEFORE_JPG.sub("", name)
    repairs.append("space before .jpg removed")
  if _NO_DOT_BEFORE_JPG.search(name):
    name = _NO_DOT_BEFORE_JPG.sub(".jpg.chip.jpg", name)
    repairs.append("missing dot before jpg.chip.jpg inserted")
  return name, tuple(repairs)


def parse_name(file_name: str) -> tuple[ParsedName | None, str | None]:
  """The labels of an aligned-set file name and None, or None and why it has none."""
  name, repairs = repair_name(file_name)
  if not name.endswith(CHIP_SUFFIX):
    return None, (f"file name {file_name!r} does not end in {CHIP_SUFFIX} "
                  "([age]_[gender]_[race]_[date&time].jpg.chip.jpg)")
  stem = name[:-len(CHIP_SUFFIX)]
  m = _FIELDS.match(stem)
  if m:
    age, gender, race, datetime = int(m[1]), int(m[2]), int(m[3]), m[4]
  elif m := _NO_RACE.match(stem):
    age, gender, race, datetime = int(m[1]), int(m[2]), None, m[3]
  else:
    return None, (f"file name {file_name!r} is not "
                  "[age]_[gender]_[race]_[date&time].jpg.chip.jpg")
  if age > MAX_AGE:
    return None, f"file name {file_name!r}: age {age} is above {MAX_AGE}"
  if gender not in (0, 1) and race is None:
    return None, (f"file name {file_name!r}: 3 fields where 4 are expected and the second, "
                  f"{gender}, is no gender code (gender or race missing?)")
  if gender not in (0, 1):
    return None, f"file name {file_name!r}: gender {gender} is not 0 (male) or 1 (female)"
  if race is not None and not 0 <= race < len(RACES):
    return None, f"file name {file_name!r}: race {race} is not 0..{len(RACES) - 1}"
  return ParsedName(name, age, gender, race, datetime, repairs), None


def assign_split(name: str, seed: int,
                 fractions: tuple[float, ...] = (0.8, 0.1, 0.1)) -> str:
  """The split of the file ``name``: a stable hash of the seed and the name, cut at the
  cumulative ``fractions`` (in ``SPLITS`` order)."""
  digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
  u = int.from_bytes(digest[:8], "big") / 2**64
  cumulative = 0.0
  for split, fraction in zip(SPLITS, fractions):
    cumulative += fraction
    if u < cumulative:
      return split
  # u fell above a sum rounded below 1: the last split that takes any files.
  return next(s for s, f in zip(SPLITS[::-1], fractions[::-1]) if f > 0)


def age_bucket_names(width: int = 10, num_buckets: int = 11) -> tuple[str, ...]:
  """"0-9", "10-19", ..., and the open last bucket, e.g. "100+"."""
  names = [f"{i * width}-{(i + 1) * width - 1}" for i in range(num_buckets - 1)]
  return tuple(names + [f"{(num_buckets - 1) * width}+"])


def age_bucket(age: int, width: int = 10, num_buckets: int = 11) -> int:
  return min(age // width, num_buckets - 1)


@dataclasses.dataclass(eq=False)
class UTKFaceConfig(tfds.core.BuilderConfig):
  """Age buckets, the recorded random split, and what to do with names lacking the race."""
  age_bucket_width: int = 10
  num_age_buckets: int = 11
  split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
  split_seed: int = 0
  missing_race: str = "skip"
  folder: str = ALIGNED_DIR

  def __post_init__(self):
    if self.folder not in FOLDERS:
      raise ValueError(f"{self.name}: folder must be one of {FOLDERS}, got {self.folder!r}")
    if self.age_bucket_width < 1 or self.num_age_buckets < 1:
      raise ValueError(f"{self.name}: age_bucket_width and num_age_buckets must be >= 1, got "
                       f"{self.age_bucket_width} and {self.num_age_buckets}")
    fractions = tuple(self.split_fractions)
    if (len(fractions) != len(SPLITS) or min(fractions) < 0 or
        abs(sum(fractions) - 1) > 1e-9):
      raise ValueError(f"{self.name}: split_fractions must be {len(SPLITS)} non-negative numbers "
                       f"(train, validation, test) summing to 1, got {self.split_fractions}")
    if self.missing_race not in MISSING_RACE_POLICIES:
      raise ValueError(f"{self.name}: missing_race must be one of {MISSING_RACE_POLICIES}, got "
                       f"{self.missing_race!r}")

  @property
  def race_names(self) -> tuple[str, ...]:
    return RACES + (("unknown",) if self.missing_race == "unknown" else ())


class UTKFace(tfds_compat.ManualBuilderMixin, tfds.core.GeneratorBasedBuilder):
  """UTKFace aligned faces with age bucket, age, gender and race labels from the file names."""

  name = "utkface"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      UTKFaceConfig(name="aligned", description=(
          "UTKFace/ (all aligned & cropped faces); 11 age buckets of 10 years (last 100+); "
          "random split 0.8/0.1/0.1 with seed 0; names without race skipped.")),
      UTKFaceConfig(name="aligned_race_unknown", missing_race="unknown", description=(
          "As aligned, but names without race are kept with race 'unknown'.")),
      UTKFaceConfig(name="crop_part1", folder=CROP_PART1_DIR, description=(
          "crop_part1/ (the 9,780 aligned chips of part 1, Abdolrashidi et al.'s set); "
          "otherwise as aligned.")),
      UTKFaceConfig(name="crop_part1_race_unknown", folder=CROP_PART1_DIR, missing_race="unknown",
                    description="As crop_part1, but names without race are kept with race "
                    "'unknown'."),
  ]
  DEFAULT_CONFIG_NAME = "aligned"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download UTKFace's "Aligned&Cropped Faces" (https://susanqq.github.io/UTKFace/): UTKFace.tar.gz
(all 23,708 chips, configs aligned / aligned_race_unknown) or crop_part1.tar.gz (9,780 chips,
config crop_part1), and extract it, so that --manual_dir is, or holds, the chip folder:

  UTKFace/[age]_[gender]_[race]_[date&time].jpg.chip.jpg       (200 x 200 JPEG)
  crop_part1/[age]_[gender]_[race]_[date&time].jpg.chip.jpg

Labels come from the file names; nothing else is needed. Without --config the folder found picks
the config (UTKFace/ wins when both are there; --config crop_part1 reads the other).
"""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.repaired: list[Repaired] = []
    self.ignored: list[str] = []
    self.source: str | None = None
    self.num_files = 0

  @classmethod
  def config_for_manual_dir(cls, manual_dir: str) -> str | None:
    """The config for the chips that ``manual_dir`` is or holds; None if it is neither."""
    base = os.path.basename(os.path.normpath(manual_dir))
    if base in CONFIG_OF_FOLDER:
      return CONFIG_OF_FOLDER[base]
    for folder in FOLDERS:  # UTKFace/ first: the full set wins
      if os.path.isdir(os.path.join(manual_dir, folder)):
        return CONFIG_OF_FOLDER[folder]
    return None

  def chip_folder(self, manual_dir: str) -> str:
    """The config's chip folder: ``manual_dir`` itself or ``manual_dir/<folder>``."""
    folder = self.builder_config.folder
    base = os.path.basename(os.path.normpath(manual_dir))
    inside = os.path.join(manual_dir, folder)
    if base == folder or (os.path.isdir(manual_dir) and not os.path.isdir(inside) and
                          base not in FOLDERS and _holds_chips(manual_dir)):
      return manual_dir
    if os.path.isdir(inside):
      return inside
    other = next((f for f in FOLDERS if f != folder and
                  (base == f or os.path.isdir(os.path.join(manual_dir, f)))), None)
    hint = f"; it is/holds {other}/, read by --config {CONFIG_OF_FOLDER[other]}" if other else ""
    raise FileNotFoundError(
        f"{self.name}/{self.builder_config.name}: expected {folder}/ (or *{CHIP_SUFFIX} files) "
        f"in the manual directory {manual_dir}, or that directory to be {folder}/ (not found: "
        f"{inside}){hint}\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")

  def summary_extra(self) -> dict[str, Any]:
    """What ``build.py`` adds to the summary: the folder read, its file count, the repairs and
    the entries that are not examples (a README, a subfolder)."""
    return {"source": self.source, "files": self.num_files,
            "repaired": {"count": len(self.repaired),
                         "examples": [r._asdict() for r in self.repaired]},
            "ignored": {"count": len(self.ignored), "paths": list(self.ignored)}}

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(encoding_format="jpeg"),
            "age": tfds.features.ClassLabel(
                names=list(age_bucket_names(cfg.age_bucket_width, cfg.num_age_buckets))),
            "age_years": tfds.features.Scalar(dtype=np.int32),
            "gender": tfds.features.ClassLabel(names=list(GENDERS)),
            "race": tfds.features.ClassLabel(names=list(cfg.race_names)),
            "datetime": tfds.features.Text(),
            "file_name": tfds.features.Text(),
            "id": tfds.features.Text(),
        }),
        homepage="https://susanqq.github.io/UTKFace/",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    cfg = self.builder_config
    root = self.source = self.chip_folder(os.fspath(dl_manager.manual_dir))
    per_split: dict[str, list[tuple[str, ParsedName | None, str | None]]] = {s: [] for s in SPLITS}
    # Correct names first, so a repaired copy of an existing name is the one reported as a repeat.
    for file_name in sorted(os.listdir(root), key=lambda f: (repair_name(f)[0] != f, f)):
      path = os.path.join(root, file_name)
      if not os.path.isfile(path) or not file_name.lower().endswith(IMAGE_ENDINGS):
        self.ignored.append(path)
        continue
      self.num_files += 1
      parsed, reason = parse_name(file_name)
      if parsed is not None and parsed.race is None and cfg.missing_race == "skip":
        parsed, reason = None, (f"file name {file_name!r}: race missing (fields age_gender_date; "
                                f"config {CONFIG_OF_FOLDER[cfg.folder]}_race_unknown keeps it)")
      # Unparsable names still get a split, so their skip is reported where the file would be.
      name = parsed.name if parsed else repair_name(file_name)[0]
      split = assign_split(name, cfg.split_seed, tuple(cfg.split_fractions))
      per_split[split].append((file_name, parsed, reason))
    # A split with fraction 0 is left out (tfds cannot write an empty split).
    return {split: self._generate_examples(split, root, items)
            for split, items in per_split.items()
            if cfg.split_fractions[SPLITS.index(split)] > 0}

  def _generate_examples(
      self, split: str, root: str, items: list[tuple[str, ParsedName | None, str | None]],
  ) -> Iterator[tuple[str, dict[str, Any]]]:
    cfg = self.builder_config
    seen: dict[str, str] = {}
    skipped_before = len(self.skipped)
    for file_name, parsed, reason in items:
      if parsed is None:
        self.skip(split, f"{split}/{repair_name(file_name)[0]}", reason)
        continue
      eid = f"{split}/{parsed.name}"
      if eid in seen:
        self.skip(split, eid, f"file name {file_name!r} repeats {seen[eid]!r} after repair")
        continue
      data, reason = tfds_compat.read_checked_image(os.path.join(root, file_name))
      if reason:
        self.skip(split, eid, reason)
        continue
      seen[eid] = file_name
      for repair in parsed.repairs:
        self.repaired.append(Repaired(split, eid, f"{file_name!r}: {repair}"))
      yield eid, {
          "image": data,
          "age": age_bucket(parsed.age, cfg.age_bucket_width, cfg.num_age_buckets),
          "age_years": parsed.age,
          "gender": parsed.gender,
          "race": len(RACES) if parsed.race is None else parsed.race,
          "datetime": parsed.datetime,
          "file_name": file_name,
          "id": eid,
      }
    if not seen:
      # tfds would only say "No examples were yielded"; name the split and the first reason.
      skipped = self.skipped[skipped_before:]
      raise ValueError(
          f"utkface/{cfg.name}: no usable example in split {split!r} (fraction "
          f"{cfg.split_fractions[SPLITS.index(split)]}, seed {cfg.split_seed}): {len(items)} files "
          f"assigned, {len(skipped)} skipped" +
          (f", the first: {skipped[0].reason}" if skipped else ""))


def _holds_chips(folder: str) -> bool:
  """Whether ``folder`` directly holds at least one ``*.jpg.chip.jpg`` file."""
  with os.scandir(folder) as entries:
    return any(e.name.endswith(CHIP_SUFFIX) and e.is_file() for e in entries)
