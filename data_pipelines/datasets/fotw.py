"""tfds builder ``fotw``: ChaLearn LAP 2016 Faces of the World, Track 3 (smile and gender).

Zhang et al. ("Gender and Smile Classification using Deep Convolutional Neural Networks", CVPR
Workshops (ChaLearn LAP) 2016, doi:10.1109/CVPRW.2016.97) fine-tune GNet and SNet on FotW last.
Each image shows one labelled person with a face box, a gender (male / female / other) and an
expression (smiling / neutral / other), as the challenge describes Track 3.

The CSV layout is UNVERIFIED (no primary copy of the challenge's label files could be checked; the
believed layout is one row per image: file name, face box x, y, w, h, and integer gender and smile
codes with a "not sure / other" code), so the parsing is driven by a small JSON schema:
``fotw_schema.json`` beside this module holds the believed layout; ``FotwConfig.schema`` points
at an edited copy (absolute, or relative to the manual directory). Schema keys:
  delimiter: one character.  header: true if each CSV starts with a header row.
  columns: the column of "file", "x", "y", "width", "height", "gender" and "smile": a 0-based index,
    or a header name (needs "header": true).
  codes: {"gender": {code: "m" | "f" | "other"}, "smile": {code: "no" | "yes" | "other"}};
    codes are the cell text after stripping spaces.
  splits: {split name: {"labels": CSV path, "images": image folder}}, relative to the manual dir.
  about: optional free text.
``load_schema`` checks all of it; errors name the schema file and the key.

Configs: ``default`` skips (and counts) examples whose gender or smile code means "other"
(Zhang et al. train two-class GNet / SNet); ``with_other`` keeps them as a third class "other"
in both labels, for filtering one task at a time.

Features (TF-free):
  image: Image, the file's bytes as they are.
  box: float32 (4,) [x, y, x + width, y + height] in pixels of the image.
  gender: ClassLabel ["m", "f"] (``with_other``: ["m", "f", "other"]).
  smile: ClassLabel ["no", "yes"] (``with_other``: ["no", "yes", "other"]).
  id: Text, the image path relative to the manual directory (``train/img_0001.jpg``); the key.
  score, landmarks (configs ``default_mtcnn``, ``with_other_mtcnn``): the records' box is kept and
    MTCNN, run once at build time (``data_pipelines.datasets.detect``), adds the five landmarks
    and score of the detection whose box overlaps it most, so the crops that need landmarks
    (Zhang et al.'s SNet crops 1 and 5, GNet crop 3) work without a ``detect`` op at train time.
    An image with no detection overlapping its box is skipped and counted ("no face found");
    ``*_mtcnn_whole_image`` keeps it with the box and NaN landmarks instead.

Skipped (``builder.skipped``), with the CSV file and line: a row with the wrong number of cells
(the header's count, or fewer than the highest column index without a header), an empty file
name, a box value that is not a number or a width / height that is not positive, an unknown code,
an "other" code under ``default``, a file repeated in a split (the first row is kept); images that
are missing or corrupt.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.datasets import detect as detect_lib
from data_pipelines.datasets import tfds_compat

DEFAULT_SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fotw_schema.json")
FIELDS = ("file", "x", "y", "width", "height", "gender", "smile")
CLASSES = {"gender": ("m", "f"), "smile": ("no", "yes")}
OTHER = "other"
OTHER_POLICIES = ("skip", "class")
_SCHEMA_KEYS = ("about", "delimiter", "header", "columns", "codes", "splits")
_SPLIT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class Schema:
  """A checked FotW label schema (see the module docstring)."""
  path: str
  delimiter: str
  header: bool
  columns: dict[str, int | str]
  codes: dict[str, dict[str, str]]
  splits: dict[str, dict[str, str]]


def load_schema(path: str) -> Schema:
  """Reads and checks the JSON schema at ``path``; errors name the file and the key."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"FotW schema not found: {path}")
  with open(path, encoding="utf-8") as f:
    try:
      raw = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: not valid JSON ({e})") from None

  def fail(key: str, message: str):
    raise ValueError(f"{path}: {key}: {message}")

  if not isinstance(raw, dict):
    raise ValueError(f"{path}: expected a JSON object with keys {', '.join(_SCHEMA_KEYS[1:])}")
  for key in raw:
    if key not in _SCHEMA_KEYS:
      fail(key, f"unknown key (known: {', '.join(_SCHEMA_KEYS)})")
  for key in _SCHEMA_KEYS[1:]:
    if key not in raw:
      fail(key, "missing")
  if not isinstance(raw["delimiter"], str) or len(raw["delimiter"]) != 1:
    fail("delimiter", f"must be one character, got {raw['delimiter']!r}")
  if not isinstance(raw["header"], bool):
    fail("header", f"must be true or false, got {raw['header']!r}")

  columns = raw["columns"]
  if not isinstance(columns, dict):
    fail("columns", "must be an object mapping each field to a column")
  for field in columns:
    if field not in FIELDS:
      fail(f"columns.{field}", f"unknown field (known: {', '.join(FIELDS)})")
  for field in FIELDS:
    if field not in columns:
      fail(f"columns.{field}", "missing")
    col = columns[field]
    if isinstance(col, bool) or not isinstance(col, (int, str)):
      fail(f"columns.{field}", f"must be a column index or a header name, got {col!r}")
    if isinstance(col, int) and col < 0:
      fail(f"columns.{field}", f"column index must be >= 0, got {col}")
    if isinstance(col, str) and (not col.strip() or not raw["header"]):
      fail(f"columns.{field}", f"the header name {col!r} needs \"header\": true and a non-empty "
           "name (or use a 0-based column index)")
  values = list(columns.values())
  for field in FIELDS:
    if values.count(columns[field]) > 1:
      fail(f"columns.{field}", f"column {columns[field]!r} is given to two fields")

  codes = raw["codes"]
  if not isinstance(codes, dict) or set(codes) != set(CLASSES):
    fail("codes", "must be an object with exactly the keys gender and smile")
  for task, names in CLASSES.items():
    table = codes[task]
    if not isinstance(table, dict) or not table:
      fail(f"codes.{task}", "must be a non-empty object mapping codes to classes")
    allowed = (*names, OTHER)
    for code, cls in table.items():
      if cls not in allowed:
        fail(f"codes.{task}.{code}", f"class must be one of {', '.join(allowed)}, got {cls!r}")
    for name in names:
      if name not in table.values():
        fail(f"codes.{task}", f"no code maps to {name!r}")

  splits = raw["splits"]
  if not isinstance(splits, dict) or not splits:
    fail("splits", "must be a non-empty object {split: {\"labels\": ..., \"images\": ...}}")
  for split, entry in splits.items():
    if not _SPLIT_NAME.match(split):
      fail(f"splits.{split}", "split names are letters, digits and _ (starting with a letter)")
    if not isinstance(entry, dict) or set(entry) != {"labels", "images"}:
      fail(f"splits.{split}", "must be an object with exactly the keys labels and images")
    if not isinstance(entry["labels"], str) or not entry["labels"]:
      fail(f"splits.{split}.labels", "must be a non-empty path relative to the manual directory")
    if not isinstance(entry["images"], str):
      fail(f"splits.{split}.images", "must be a path relative to the manual directory "
           "(\"\" for the manual directory itself)")
  return Schema(path=path, delimiter=raw["delimiter"], header=raw["header"],
                columns=dict(columns), codes={k: dict(v) for k, v in codes.items()},
                splits={k: dict(v) for k, v in splits.items()})


@dataclasses.dataclass(eq=False)
class FotwConfig(tfds.core.BuilderConfig):
  """Schema file and "other"-code policy of a ``fotw`` config."""
  schema: str = DEFAULT_SCHEMA
  other: str = "skip"
  detect: detect_lib.Settings | None = None  # None: the box only, no landmarks

  def class_names(self, task: str) -> list[str]:
    if self.other not in OTHER_POLICIES:
      raise ValueError(f"FotwConfig.other must be one of {', '.join(OTHER_POLICIES)}, "
                       f"got {self.other!r}")
    return [*CLASSES[task], *([OTHER] if self.other == "class" else [])]


class Fotw(tfds_compat.ManualBuilderMixin, tfds.core.GeneratorBasedBuilder):
  """FotW Track 3: face box, gender and smile, parsed by a JSON schema."""

  name = "fotw"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      FotwConfig(name="default", description="Two classes per task; 'other' codes skipped."),
      FotwConfig(name="with_other", other="class",
                 description="'other' kept as a third class of gender and smile."),
  ]
  # Landmarks for the stored box: only MTCNN gives them, and the box picks the face (no select).
  BUILDER_CONFIGS += [
      dataclasses.replace(base, name=base.name + s.suffix, detect=s,
                          description=f"{base.description} Landmarks from MTCNN at build time.")
      for base in list(BUILDER_CONFIGS)
      for s in detect_lib.all_settings(detectors=("mtcnn",))
      if s.select == detect_lib.DEFAULT_SELECT]
  DETECTORS = ("mtcnn",)  # --detect of data_pipelines.build
  DEFAULT_CONFIG_NAME = "default"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Place the ChaLearn LAP 2016 FotW Track 3 (smile and gender) files in the manual directory in the
layout that the schema names; with the shipped data_pipelines/datasets/fotw_schema.json:
  train.csv, val.csv, test.csv   one row per image: file,x,y,width,height,gender,smile (no header;
                                 gender 0 m / 1 f / 2 other, smile 0 no / 1 yes / 2 other)
  train/<file>, val/<file>, test/<file>   the images the rows name
This layout is UNVERIFIED: if the real files differ, copy the schema, edit it (delimiter, header,
columns by index or header name, codes, split files and folders) and build with
FotwConfig(schema=<path, absolute or relative to the manual directory>). Build with --detect mtcnn
(configs <config>_mtcnn) for the landmarks of Zhang et al.'s crops 1, 3 and 5.
"""

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "box": tfds.features.Tensor(shape=(4,), dtype=np.float32),
            "gender": tfds.features.ClassLabel(names=cfg.class_names("gender")),
            "smile": tfds.features.ClassLabel(names=cfg.class_names("smile")),
            "id": tfds.features.Text(),
            **(detect_lib.features() if cfg.detect else {}),
        }),
        homepage="https://chalearnlap.cvc.uab.cat/",
    )

  def summary_extra(self) -> dict[str, Any]:
    """The detection counts of a detected config (a reused build keeps its first summary's)."""
    if not self.builder_config.detect:
      return {}
    detection = getattr(self, "_detection", None)
    return {"detection": detection.summary() if detection is not None else {}}

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual = os.fspath(dl_manager.manual_dir)
    schema = load_schema(os.path.join(manual, self.builder_config.schema))
    detect = self.builder_config.detect
    self._detection = detect_lib.Pass(detect) if detect else None
    generators = {}
    for split, entry in schema.splits.items():
      labels = self.manual_path(dl_manager, entry["labels"])
      images = self.manual_path(dl_manager, entry["images"]) if entry["images"] else manual
      generators[split] = self._generate_examples(split, schema, labels, images, entry["images"])
    return generators

  def _column_indices(self, schema: Schema, labels: str, header: list[str] | None
                      ) -> dict[str, int]:
    """Field -> cell index; header names are looked up in ``header`` (spaces stripped)."""
    indices = {}
    for field, col in schema.columns.items():
      if isinstance(col, int):
        indices[field] = col
        continue
      names = [h.strip() for h in header]
      if col.strip() not in names:
        raise ValueError(f"{labels}: the header {header!r} has no column {col!r} (schema "
                         f"{schema.path}: columns.{field})")
      indices[field] = names.index(col.strip())
    return indices

  def _parse_row(self, schema: Schema, cells: list[str], indices: dict[str, int],
                 expected: int | None) -> tuple[str | None, dict[str, Any] | str]:
    """(file, labels) of one CSV row, or (None, why it is unusable)."""
    needed = max(indices.values()) + 1
    if expected is not None and len(cells) != expected:
      return None, f"expected {expected} cells (as in the header), got {len(cells)}"
    if len(cells) < needed:
      return None, f"expected at least {needed} cells, got {len(cells)}"
    file = cells[indices["file"]].strip()
    if not file:
      return None, "empty file name"
    try:
      x, y, w, h = (float(cells[indices[k]]) for k in ("x", "y", "width", "height"))
    except ValueError:
      box = [cells[indices[k]] for k in ("x", "y", "width", "height")]
      return None, f"box x, y, width, height must be numbers, got {box}"
    if not (np.isfinite([x, y, w, h]).all() and w > 0 and h > 0):
      return None, f"box width and height must be positive and finite, got {w:g} x {h:g}"
    labels, problems = {}, []
    for task in CLASSES:
      code = cells[indices[task]].strip()
      table = schema.codes[task]
      if code not in table:
        problems.append(f"unknown {task} code {code!r} (schema codes.{task}: "
                        f"{', '.join(table)})")
      elif table[code] == OTHER and self.builder_config.other == "skip":
        problems.append(f"{task} code {code!r} means other (config other='skip')")
      else:
        labels[task] = table[code]
    if problems:
      return None, "; ".join(problems)
    return file, {"box": np.array([x, y, x + w, y + h], np.float32), **labels}

  def _generate_examples(self, split: str, schema: Schema, labels: str, images: str,
                         images_rel: str) -> Iterator[tuple[str, dict[str, Any]]]:
    name = os.path.basename(labels)
    # utf-8-sig: spreadsheet exports often start with a byte-order mark.
    with open(labels, encoding="utf-8-sig", newline="") as f:
      rows = list(_numbered_rows(f, schema.delimiter))
    header = None
    if schema.header:
      if not rows:
        raise ValueError(f"{labels}: empty, but the schema {schema.path} says header: true")
      header = rows.pop(0)[1]
    indices = self._column_indices(schema, labels, header)
    first_line: dict[str, int] = {}
    for number, cells in rows:
      file, parsed = self._parse_row(schema, cells, indices, len(header) if header else None)
      if file is None:
        self.skip(split, f"{name} line {number}", f"{name} line {number}: {parsed}")
        continue
      example_id = os.path.join(images_rel, file) if images_rel else file
      if file in first_line:
        self.skip(split, example_id, f"{name} line {number}: repeats {file} (first on line "
                  f"{first_line[file]}, kept)")
        continue
      first_line[file] = number
      data, reason = tfds_compat.read_checked_image(os.path.join(images, file))
      if reason:
        self.skip(split, example_id, f"{name} line {number}: {reason}")
        continue
      if self._detection is not None:
        found, reason = self._detection.landmarks_for(data, parsed["box"])
        if reason:
          self.skip(split, example_id, f"{name} line {number}: {reason}")
          continue
        parsed.update(found)
      yield file, {"image": data, **parsed, "id": example_id}


def _numbered_rows(f, delimiter: str) -> Iterator[tuple[int, list[str]]]:
  """(line number, cells) of every non-blank CSV row; the number is the row's first line."""
  reader = csv.reader(f, delimiter=delimiter)
  start = 1
  for cells in reader:
    if any(c.strip() for c in cells):
      yield start, cells
    start = reader.line_num + 1
