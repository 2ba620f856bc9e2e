"""tfds builder ``lfw_gender``: LFW images with the male/female name lists, as VEGAC adds LFW.

LFW: G. B. Huang, M. Ramesh, T. Berg, E. Learned-Miller, "Labeled Faces in the Wild: A Database for
Studying Face Recognition in Unconstrained Environments", UMass Amherst Technical Report 07-49,
2007. VEGAC (Gurnani et al., arXiv preprint 2018) trains gender on Adience plus LFW and reports LFW
gender accuracy (its Tables 1 and 5).

Gender is not part of LFW; the labels come from two lists of image file names, one per line
(``male_names.txt`` / ``female_names.txt``, e.g. ``Aaron_Eckhart_0001.jpg``). The identity of an
image is its file name without ``_NNNN.jpg`` and its path is ``<tree>/<identity>/<file>``.

Configs (the tree is a config field; named configs for the three LFW trees):
  lfw (default): ``lfw/``, the original images.
  deepfunneled: ``lfw-deepfunneled/``.  funneled: ``lfw_funneled/``.
Other copies: build with an ``LfwGenderConfig`` of your own (``tree``, ``male_list``,
``female_list`` are paths relative to the manual directory; ``split_seed``; ``fractions``).

Splits train / validation / test are subject-exclusive: each identity goes to one split by a
stable hash, ``u = int(sha256(f"{split_seed}/{identity}")[:8 bytes]) / 2**64``, compared with the
cumulative ``fractions`` (default 0.7 / 0.1 / 0.2 of the identities, not of the images: George W.
Bush's 530 images go to one split together). The hash does not depend on which other identities
exist, so adding or removing people never moves anyone else.

Features (TF-free):
  image: Image, the JPEG file's bytes as they are.
  gender: ClassLabel ["m", "f"] (male list -> "m", female list -> "f").
  identity: Text, e.g. ``Aaron_Eckhart``.
  box: float32 (4,) [x1, y1, x2, y2], the face box derived from the LFW construction: each image
    is the Viola-Jones detection enlarged 2.2 times about its centre and rescaled (250 x 250), so
    the face is the centred region of 1/2.2 of the image in each dimension (side 250 / 2.2 =
    113.6 px in LFW). Computed from each image's own size, so resized trees work too. In the
    pixel-centre coordinates of ``jaxface.faces.crops`` (the image spans [-0.5, W - 0.5]), a
    W x H image gives [(W-1)/2 - W/4.4, (H-1)/2 - H/4.4, (W-1)/2 + W/4.4, (H-1)/2 + H/4.4]:
    [67.68, 67.68, 181.32, 181.32] for 250 x 250. An approximation: the detector box was not
    always centred on the face and funneled images are re-aligned.
  id: Text, ``<identity>/<file>``, also the example key.

Skipped (``builder.skipped``): an image in neither list (e.g. Tara_Kirk in some copies) or in a
folder other than its identity's; an image in both lists; a listed image that is missing or
corrupt; a list line that is not a ``<Name>_<NNNN>.jpg`` file name, or repeats an earlier line of
the same list (the first is kept), with the list file and line number. List-line records whose
identity is unknown have split ``(none)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from typing import Any, Iterator

import cv2
import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.datasets import tfds_compat

SPLITS = ("train", "validation", "test")
GENDERS = ("m", "f")
NO_SPLIT = "(none)"
# LFW's images are the detection enlarged by this factor in each dimension (LFW README).
ENLARGEMENT = 2.2
_FILE_NAME = re.compile(r"^(?P<identity>.+)_(?P<number>\d{4})\.jpg$")


@dataclasses.dataclass(eq=False)
class LfwGenderConfig(tfds.core.BuilderConfig):
  """Image tree, label lists (relative to the manual directory) and identity split of a config."""
  tree: str = "lfw"
  male_list: str = "male_names.txt"
  female_list: str = "female_names.txt"
  split_seed: int = 0
  fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)


def check_fractions(fractions) -> tuple[float, float, float]:
  """The three split fractions as floats; ValueError naming ``fractions`` if they are not three
  non-negative numbers that sum to 1."""
  try:
    f = tuple(float(v) for v in fractions)
  except (TypeError, ValueError):
    raise ValueError(f"LfwGenderConfig.fractions must be 3 numbers, got {fractions!r}") from None
  if len(f) != 3 or min(f) < 0 or abs(sum(f) - 1) > 1e-6:
    raise ValueError("LfwGenderConfig.fractions must be 3 non-negative numbers (train, "
                     f"validation, test) that sum to 1, got {fractions!r}")
  return f


def split_of(identity: str, seed: int, fractions) -> str:
  """The split of ``identity``: a stable hash of seed and name against the cumulative fractions."""
  f = check_fractions(fractions)
  digest = hashlib.sha256(f"{seed}/{identity}".encode("utf-8")).digest()
  u = int.from_bytes(digest[:8], "big") / 2**64
  if u < f[0]:
    return SPLITS[0]
  if u < f[0] + f[1]:
    return SPLITS[1]
  return SPLITS[2]


def face_box(width: int, height: int) -> np.ndarray:
  """The centred face box of an LFW image of ``width`` x ``height`` (see the module docstring)."""
  cx, cy = (width - 1) / 2, (height - 1) / 2
  hw, hh = width / (2 * ENLARGEMENT), height / (2 * ENLARGEMENT)
  return np.array([cx - hw, cy - hh, cx + hw, cy + hh], np.float32)


def identity_of(file: str) -> str | None:
  """``Aaron_Eckhart`` for ``Aaron_Eckhart_0001.jpg``; None for any other name."""
  m = _FILE_NAME.match(file)
  return m.group("identity") if m else None


class LfwGender(tfds_compat.ManualBuilderMixin, tfds.core.GeneratorBasedBuilder):
  """LFW with male/female labels, subject-exclusive splits and the derived face box."""

  name = "lfw_gender"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      LfwGenderConfig(name="lfw", tree="lfw", description="The original LFW images (lfw/)."),
      LfwGenderConfig(name="deepfunneled", tree="lfw-deepfunneled",
                      description="Deep-funneled LFW images (lfw-deepfunneled/)."),
      LfwGenderConfig(name="funneled", tree="lfw_funneled",
                      description="Funneled LFW images (lfw_funneled/)."),
  ]
  DEFAULT_CONFIG_NAME = "lfw"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Place in the manual directory:
  lfw/<Person_Name>/<Person_Name>_<NNNN>.jpg   (lfw.tgz from vis-www.cs.umass.edu/lfw, unpacked;
                                                config "deepfunneled": lfw-deepfunneled/...,
                                                config "funneled": lfw_funneled/...)
  male_names.txt     one image file name per line, e.g. Aaron_Eckhart_0001.jpg
  female_names.txt   the same for women
The list paths and the tree are fields of LfwGenderConfig (relative to the manual directory).
"""

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "gender": tfds.features.ClassLabel(names=list(GENDERS)),
            "identity": tfds.features.Text(),
            "box": tfds.features.Tensor(shape=(4,), dtype=np.float32),
            "id": tfds.features.Text(),
        }),
        homepage="http://vis-www.cs.umass.edu/lfw/",
    )

  def _split(self, identity: str) -> str:
    cfg = self.builder_config
    return split_of(identity, cfg.split_seed, cfg.fractions)

  def _read_list(self, path: str, rel: str) -> dict[str, int]:
    """File name -> line number of one list; bad and repeated lines are skipped and counted."""
    name = os.path.basename(rel)
    files: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
      for number, line in enumerate(f, start=1):
        file = line.strip()
        if not file:
          continue
        identity = identity_of(file)
        if identity is None:
          self.skip(NO_SPLIT, f"{name} line {number}",
                    f"{name} line {number}: {file!r} is not a <Name>_<NNNN>.jpg file name")
        elif file in files:
          self.skip(self._split(identity), f"{identity}/{file}",
                    f"{name} line {number}: repeats {file} (first on line {files[file]}, kept)")
        else:
          files[file] = number
    return files

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    cfg = self.builder_config
    fractions = check_fractions(cfg.fractions)
    tree = self.manual_path(dl_manager, cfg.tree)
    lists = {g: (self._read_list(self.manual_path(dl_manager, rel), rel), os.path.basename(rel))
             for g, rel in zip(GENDERS, (cfg.male_list, cfg.female_list))}
    (male, male_name), (female, female_name) = lists["m"], lists["f"]
    by_split: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}  # (file, gender)
    for file in sorted(set(male) | set(female)):
      identity = identity_of(file)
      if file in male and file in female:
        self.skip(self._split(identity), f"{identity}/{file}",
                  f"listed in both {male_name} (line {male[file]}) and {female_name} "
                  f"(line {female[file]})")
        continue
      by_split[self._split(identity)].append((file, "m" if file in male else "f"))
    # Images of the tree that no list names.
    for person in sorted(os.listdir(tree)):
      folder = os.path.join(tree, person)
      if not os.path.isdir(folder):
        continue
      for file in sorted(os.listdir(folder)):
        if not file.lower().endswith(".jpg"):
          continue
        if file not in male and file not in female:
          reason = f"in neither {male_name} nor {female_name}"
        elif identity_of(file) != person:
          reason = f"listed, but in the folder {person}/ instead of {identity_of(file)}/"
        else:
          continue
        self.skip(self._split(person), f"{person}/{file}", reason)
    # A split with fraction 0 gets nobody; leave it out rather than write an empty one.
    return {split: self._generate_examples(split, tree, by_split[split])
            for split, fraction in zip(SPLITS, fractions) if fraction > 0}

  def _generate_examples(self, split: str, tree: str, examples: list[tuple[str, str]]
                         ) -> Iterator[tuple[str, dict[str, Any]]]:
    for file, gender in examples:
      identity = identity_of(file)
      example_id = f"{identity}/{file}"
      data, reason = tfds_compat.read_checked_image(os.path.join(tree, identity, file))
      if reason:
        self.skip(split, example_id, reason)
        continue
      # Only the size is needed; the bytes are stored as they are.
      h, w = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).shape[:2]
      yield example_id, {
          "image": data,
          "gender": gender,
          "identity": identity,
          "box": face_box(w, h),
          "id": example_id,
      }
