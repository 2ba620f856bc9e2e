"""tfds builder ``image_folder``: any data set shipped as one folder of images per class.

Many expression sets (CK+, RAF-DB, ExpW, FER2013's folder release) and small attribute sets come
as ``<class>/<image>`` folders. The manual directory holds either

  <class>/<image>                  one folder per class: a seeded train / validation / test split
  <split>/<class>/<image>          split folders: train, val or validation, test (any of them)

Which one is found from the top-level folders: when every one of them is a split name, the second.

The spec file. tfds configs are fixed, so what varies per data set is read from an optional
``image_folder.json`` in the manual directory (its keys, all optional):

  "classes":   the class folders to use, in label order: a list of folder names, or an object
               folder -> label name (e.g. RAF-DB's {"1": "Surprise", "2": "Fear", ...}). Default:
               every class folder found, sorted by name, named as the folder. Class folders
               not listed are left out (named in ``builder.ignored``).
  "fractions": [train, validation, test] of the seeded split (default [0.8, 0.1, 0.1]); a split
               with fraction 0 is left out. Ignored with split folders.
  "seed":      the split seed (default 0). A file goes to the split where the first 8 bytes of
               sha256("<seed>:<class folder>/<file name>") / 2**64 fall in the cumulative
               fractions: stable under listing order and under adding other files.

The spec used is part of the build summary. Since the data of every image-folder set land in
``DATA_DIR/image_folder/<config>``, give each set its own ``--data_dir`` (or ``--overwrite``).

Configs:
  ``default``: feature ``label``, the class names of the folders or the spec (stored with the
    data: tfds restores them from ``label.labels.txt``).
  ``expression``: feature ``expression`` in the canonical AffectNet order of
    ``data_pipelines.datasets.synthetic.EXPRESSIONS`` (Neutral, Happy, Sad, Surprise, Fear, Disgust,
    Anger), so every expression set trains and evaluates with the same classes. Label names are
    matched ignoring case, with the usual synonyms (angry / anger, happiness / happy, sadness,
    surprised, fearful, disgusted); a class that is no AffectNet expression (e.g. CK+'s contempt)
    is an error unless the spec's "classes" leaves it out. Not every class needs to be present.

Features: image (the file's bytes as they are: JPEG, PNG or BMP; decoded later with OpenCV), the
label, ``folder`` (the class folder as on disk) and ``id`` "<split>/<class folder>/<file name>".
Skipped and counted (``builder.skipped``): an empty, corrupt or truncated image. Ignored and listed
(``builder.ignored``): files without an image ending, the spec file, folders below a class folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterator

import tensorflow_datasets as tfds

from data_pipelines.datasets import synthetic
from data_pipelines.datasets import tfds_compat
from data_pipelines.datasets import utkface

SPEC_FILE = "image_folder.json"
SPLITS = ("train", "validation", "test")
SPLIT_FOLDERS = {"train": "train", "val": "validation", "validation": "validation",
                 "test": "test"}
IMAGE_ENDINGS = (".jpg", ".jpeg", ".png", ".bmp")
SPEC_KEYS = ("classes", "fractions", "seed")
# Lowercase label name -> AffectNet expression (synthetic.EXPRESSIONS).
EXPRESSION_SYNONYMS = {
    "neutral": "Neutral", "happy": "Happy", "happiness": "Happy", "sad": "Sad",
    "sadness": "Sad", "surprise": "Surprise", "surprised": "Surprise", "fear": "Fear",
    "fearful": "Fear", "disgust": "Disgust", "disgusted": "Disgust", "anger": "Anger",
    "angry": "Anger",
}


class SpecError(ValueError):
  """A bad ``image_folder.json`` or a class the config cannot map."""


@dataclasses.dataclass(eq=False)
class ImageFolderConfig(tfds.core.BuilderConfig):
  """The label feature's name and whether labels map onto AffectNet's expression order."""
  label_key: str = "label"
  canonical: bool = False


@dataclasses.dataclass
class Spec:
  """The parsed ``image_folder.json`` (defaults where a key is absent)."""
  classes: dict[str, str] | None = None  # folder -> label name, in label order
  fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
  seed: int = 0

  def as_json(self) -> dict[str, Any]:
    return {"classes": self.classes, "fractions": list(self.fractions), "seed": self.seed}


def read_spec(manual_dir: str) -> Spec:
  """The spec in ``manual_dir/image_folder.json``; the defaults when there is none."""
  path = os.path.join(manual_dir, SPEC_FILE)
  if not os.path.exists(path):
    return Spec()
  try:
    with open(path, encoding="utf-8") as f:
      raw = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise SpecError(f"{path}: not readable JSON ({e})") from None
  if not isinstance(raw, dict) or set(raw) - set(SPEC_KEYS):
    raise SpecError(f"{path}: expected a JSON object with keys among {', '.join(SPEC_KEYS)}, got "
                    f"{sorted(raw) if isinstance(raw, dict) else type(raw).__name__}")
  spec = Spec()
  classes = raw.get("classes")
  if isinstance(classes, list) and all(isinstance(c, str) for c in classes):
    classes = {c: c for c in classes}
  if classes is not None:
    if (not isinstance(classes, dict) or not classes or
        not all(isinstance(k, str) and isinstance(v, str) for k, v in classes.items())):
      raise SpecError(f"{path}: classes must be a non-empty list of folder names or an object "
                      f"folder -> label name, got {raw['classes']!r}")
    if len(set(classes.values())) != len(classes):
      raise SpecError(f"{path}: classes gives a label name twice: {list(classes.values())}")
    spec.classes = classes
  if "fractions" in raw:
    fr = raw["fractions"]
    if (not isinstance(fr, list) or len(fr) != 3 or
        not all(isinstance(x, (int, float)) and x >= 0 for x in fr) or abs(sum(fr) - 1) > 1e-9):
      raise SpecError(f"{path}: fractions must be 3 non-negative numbers (train, validation, "
                      f"test) summing to 1, got {fr!r}")
    spec.fractions = tuple(float(x) for x in fr)
  if "seed" in raw:
    if not isinstance(raw["seed"], int) or isinstance(raw["seed"], bool):
      raise SpecError(f"{path}: seed must be an integer, got {raw['seed']!r}")
    spec.seed = raw["seed"]
  return spec


def canonical_expression(label: str) -> str | None:
  """The AffectNet expression that ``label`` names (case and synonyms ignored), else None."""
  return EXPRESSION_SYNONYMS.get(label.strip().lower())


class ImageFolder(tfds_compat.ManualBuilderMixin, tfds.core.GeneratorBasedBuilder):
  """Images in one folder per class, optionally below split folders."""

  name = "image_folder"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      ImageFolderConfig(name="default", description="Class names from the folders or the spec."),
      ImageFolderConfig(name="expression", label_key="expression", canonical=True, description=(
          "Labels mapped onto AffectNet's seven expressions (synthetic.EXPRESSIONS order).")),
  ]
  DEFAULT_CONFIG_NAME = "default"
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Put the images in the manual directory as one folder per class, optionally below split folders:
  <class>/<image>.jpg|.jpeg|.png|.bmp          (a seeded train/validation/test split), or
  train/<class>/<image>, val/<class>/<image>, test/<class>/<image>   (any of the three)
Optional {SPEC_FILE} in the manual directory: {{"classes": [folder, ...] or {{folder: label}},
"fractions": [0.8, 0.1, 0.1], "seed": 0}}. Config "expression" maps the labels onto AffectNet's
order {", ".join(synthetic.EXPRESSIONS)}. Use a separate --data_dir per data set.
"""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.ignored: list[str] = []
    self.spec: Spec | None = None
    self.layout: str | None = None

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    # Without canonical order the names are known only from the manual directory: set in
    # _split_generators, saved with the data and restored by tfds when the set is read.
    label = (tfds.features.ClassLabel(names=list(synthetic.EXPRESSIONS)) if cfg.canonical
             else tfds.features.ClassLabel())
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(),
            cfg.label_key: label,
            "folder": tfds.features.Text(),
            "id": tfds.features.Text(),
        }),
    )

  def summary_extra(self) -> dict[str, Any]:
    """What ``build.py`` adds to the summary: the layout, the spec and what was ignored."""
    return {"layout": self.layout, "spec": self.spec.as_json() if self.spec else None,
            "ignored": list(self.ignored)}

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    cfg = self.builder_config
    manual = os.fspath(dl_manager.manual_dir)
    self.spec = spec = read_spec(manual)
    folders = sorted(e.name for e in os.scandir(manual) if e.is_dir())
    if not folders:
      raise FileNotFoundError(f"{self.name}: expected class folders (<class>/<image>) or split "
                              f"folders (train/<class>/<image>, ...) in the manual directory "
                              f"{manual}, found no folder")
    split_folders = [f for f in folders if f in SPLIT_FOLDERS]
    # (split, class folder, path of the class folder)
    class_dirs: list[tuple[str | None, str, str]] = []
    if len(split_folders) == len(folders):
      self.layout = "split folders"
      if len({SPLIT_FOLDERS[f] for f in folders}) != len(folders):
        raise SpecError(f"{self.name}: {manual} holds both val/ and validation/")
      for top in folders:
        for c in sorted(e.name for e in os.scandir(os.path.join(manual, top)) if e.is_dir()):
          class_dirs.append((SPLIT_FOLDERS[top], c, os.path.join(manual, top, c)))
    elif split_folders:
      others = ", ".join(f for f in folders if f not in SPLIT_FOLDERS)
      raise SpecError(f"{self.name}: {manual} mixes split folders ({', '.join(split_folders)}) "
                      f"with class folders ({others}): use one layout")
    else:
      self.layout = "class folders, seeded split"
      class_dirs = [(None, c, os.path.join(manual, c)) for c in folders]
    found = sorted({c for _, c, _ in class_dirs})
    classes = spec.classes or {c: c for c in found}
    missing = [c for c in classes if c not in found]
    if missing:
      raise SpecError(f"{self.name}: {SPEC_FILE} lists class folders not in {manual}: "
                      f"{', '.join(missing)} (found: {', '.join(found) or 'none'})")
    label_of = self._labels(classes)
    per_split: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}  # (class folder, path)
    for split, folder, path in class_dirs:
      if folder not in label_of:
        self.ignored.append(path)
        continue
      for file_name in sorted(os.listdir(path)):
        file_path = os.path.join(path, file_name)
        if not os.path.isfile(file_path) or not file_name.lower().endswith(IMAGE_ENDINGS):
          self.ignored.append(file_path)
          continue
        target = split or utkface.assign_split(f"{folder}/{file_name}", spec.seed, spec.fractions)
        per_split[target].append((folder, file_path))
    if not any(per_split.values()):
      raise FileNotFoundError(
          f"{self.name}: expected images ({', '.join(IMAGE_ENDINGS)}) in the class folders of the "
          f"manual directory {manual}, found none in {len(class_dirs)} class folders")
    if self.layout == "split folders":
      keep = [s for s in SPLITS if any(SPLIT_FOLDERS[f] == s for f in folders)]
    else:
      keep = [s for s, fraction in zip(SPLITS, spec.fractions) if fraction > 0]
    return {split: self._generate_examples(split, per_split[split], label_of) for split in keep}

  def _labels(self, classes: dict[str, str]) -> dict[str, int]:
    """Class folder -> label index; sets the label names when they come from the data."""
    cfg = self.builder_config
    feature = self.info.features[cfg.label_key]
    if not cfg.canonical:
      names = list(classes.values())
      feature.names = names
      return {folder: names.index(name) for folder, name in classes.items()}
    unknown = [n for n in classes.values() if canonical_expression(n) is None]
    if unknown:
      raise SpecError(f"{self.name}/{cfg.name}: classes {', '.join(unknown)} are no AffectNet "
                      f"expression ({', '.join(synthetic.EXPRESSIONS)}); leave them out with "
                      f'"classes" in {SPEC_FILE}')
    mapped = {folder: canonical_expression(name) for folder, name in classes.items()}
    twice = sorted({e for e in mapped.values() if list(mapped.values()).count(e) > 1})
    if twice:
      raise SpecError(f"{self.name}/{cfg.name}: several classes map to {', '.join(twice)}; "
                      f'keep one with "classes" in {SPEC_FILE}')
    return {folder: synthetic.EXPRESSIONS.index(e) for folder, e in mapped.items()}

  def _generate_examples(self, split: str, items: list[tuple[str, str]],
                         label_of: dict[str, int]) -> Iterator[tuple[str, dict[str, Any]]]:
    key = self.builder_config.label_key
    yielded = skipped = 0
    for folder, path in items:
      example_id = f"{split}/{folder}/{os.path.basename(path)}"
      data, reason = tfds_compat.read_checked_image(path)
      if reason:
        self.skip(split, example_id, reason)
        skipped += 1
        continue
      yielded += 1
      yield example_id, {"image": data, key: label_of[folder], "folder": folder,
                         "id": example_id}
    if not yielded:
      # tfds would only say "No examples were yielded": name the split and why.
      raise SpecError(f"{self.name}/{self.builder_config.name}: no usable image in split "
                      f"{split!r} ({len(items)} files, {skipped} skipped)")
