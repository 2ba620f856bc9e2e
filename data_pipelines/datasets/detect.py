"""The build-time face detection pass: a detector runs ONCE per image while a dataset is built, and
the records store what it found, so no epoch runs a detector.

Used by the builders whose records lack a usable face box (``adience``: its ``source_box`` is a box
in the original Flickr photo, not in the stored crop) or lack the landmarks a crop needs (``fotw``:
Zhang et al.'s SNet crops 1 and 5 and GNet crop 3). A detected dataset is its own builder config,
``<config>_<detector>[_<select>][_whole_image]`` (e.g. ``faces_age_mtcnn``), so anything keyed by
the dataset's name and config (the prepared files, the saliency cache) never mixes detected and
undetected records.

Stored per record (``FEATURES``): ``box`` float32 [x1, y1, x2, y2] in pixels of the stored image,
``score`` float32 (the detector's; 0 for a whole-image box), ``landmarks`` float32 (5, 2) in
``jaxface.faces.LANDMARK_NAMES`` order, NaN where there are none (Haar, a whole-image box): the
crops that need landmarks (``align``, ``task_crop`` 1 / 3 / 5) then skip the example and name why.

Multi-face policy (``select``; the papers detect one face per Adience image, which is already a crop
around one person, and their 30 % margin box is of that face):
  * ``largest_nearest_centre`` (default): among the faces of at least ``LARGE_FRACTION`` of the
    largest face's area, the one whose box centre is nearest the image centre (a large face of a
    bystander at the border loses to the centred subject; a small background face never wins).
  * ``largest``: the face with the largest box.
  * ``nearest_centre``: the box centre nearest the image centre, whatever its size.
No-face policy (``no_face``): ``skip`` (default) leaves the example out and counts it with the
reason ``NO_FACE`` in the build summary; ``whole_image`` keeps it with the whole image as its box
(score 0, no landmarks) and counts it too.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Any

import numpy as np

DETECTORS = ("mtcnn", "haar")
SELECT_POLICIES = ("largest_nearest_centre", "largest", "nearest_centre")
NO_FACE_POLICIES = ("skip", "whole_image")
DEFAULT_SELECT = "largest_nearest_centre"
DEFAULT_NO_FACE = "skip"
LARGE_FRACTION = 0.5  # "among the largest": at least half the largest face's box area
NO_FACE = "no face found"
WHOLE_IMAGE = "no face found: whole image as the box"


def features() -> dict[str, Any]:
  """The tfds features a detected config adds to its records."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return {"box": tfds.features.Tensor(shape=(4,), dtype=np.float32),
          "score": tfds.features.Scalar(dtype=np.float32),
          "landmarks": tfds.features.Tensor(shape=(5, 2), dtype=np.float32)}


@dataclasses.dataclass(frozen=True)
class Settings:
  """How a builder config detects: the detector and both policies (see the module docstring)."""
  detector: str = "mtcnn"
  select: str = DEFAULT_SELECT
  no_face: str = DEFAULT_NO_FACE

  def __post_init__(self):
    for field, allowed in (("detector", DETECTORS), ("select", SELECT_POLICIES),
                           ("no_face", NO_FACE_POLICIES)):
      if getattr(self, field) not in allowed:
        raise ValueError(f"detect {field} must be one of {', '.join(allowed)}, got "
                         f"{getattr(self, field)!r}")

  @property
  def suffix(self) -> str:
    """What the detected config's name adds to the undetected one's."""
    return (f"_{self.detector}" + ("" if self.select == DEFAULT_SELECT else f"_{self.select}") +
            ("" if self.no_face == DEFAULT_NO_FACE else f"_{self.no_face}"))

  def describe(self) -> str:
    return (f"faces detected once at build time by {self.detector} (one face per image: "
            f"{self.select}; no face: {self.no_face})")


def all_settings(detectors=DETECTORS, no_face=NO_FACE_POLICIES) -> list[Settings]:
  return [Settings(d, s, n) for d in detectors for s in SELECT_POLICIES for n in no_face]


def config_name(base: str, detect: str | None, select: str = DEFAULT_SELECT,
                no_face: str = DEFAULT_NO_FACE) -> str:
  """The builder config of ``base`` detected by ``detect`` ("none", "" or None: ``base``)."""
  if not detect or detect == "none":
    return base
  return base + Settings(detect, select, no_face).suffix


@functools.lru_cache(maxsize=None)
def detector(name: str):
  """One detector per process and name (MTCNN compiles its networks once)."""
  from jaxface import faces  # pylint: disable=g-import-not-at-top
  return faces.get_detector(name)


def decode_rgb(data: bytes) -> np.ndarray:
  import cv2  # pylint: disable=g-import-not-at-top
  image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def select(found, policy: str, shape) -> Any:
  """The one face ``policy`` picks from ``found`` (None when there is none)."""
  found = list(found)
  if not found:
    return None
  cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2
  dist = lambda f: (f.center[0] - cx) ** 2 + (f.center[1] - cy) ** 2
  if policy == "largest":
    return max(found, key=lambda f: f.area)  # ties: the first (highest score)
  if policy == "nearest_centre":
    return min(found, key=dist)
  biggest = max(f.area for f in found)
  return min((f for f in found if f.area >= LARGE_FRACTION * biggest), key=dist)


def iou(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = w * h
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return inter / union if union > 0 else 0.0


def _fields(box, score: float, landmarks) -> dict[str, np.ndarray]:
  lm = (np.full((5, 2), np.nan, np.float32) if landmarks is None else
        np.asarray(landmarks, np.float32).reshape(5, 2))
  return {"box": np.asarray(box, np.float32).reshape(4), "score": np.float32(score),
          "landmarks": lm}


class Pass:
  """The detection of one build: ``find`` / ``landmarks_for`` per image, and the counts."""

  def __init__(self, settings: Settings):
    self.settings = settings
    self.counts: collections.Counter = collections.Counter()

  def find(self, data: bytes) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """The detection fields of the encoded image ``data`` and None, or None and why not (the
    no-face policy ``skip``)."""
    image = decode_rgb(data)
    face = select(detector(self.settings.detector).detect(image), self.settings.select,
                  image.shape)
    if face is not None:
      self.counts["detected"] += 1
      return _fields(face.box, face.score, face.landmarks), None
    if self.settings.no_face == "whole_image":
      self.counts[WHOLE_IMAGE] += 1
      h, w = image.shape[:2]
      return _fields([-0.5, -0.5, w - 0.5, h - 0.5], 0.0, None), None
    self.counts[NO_FACE] += 1
    return None, f"{NO_FACE} by {self.settings.detector}"

  def landmarks_for(self, data: bytes, box) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """The stored ``box`` kept, with the score and landmarks of the detection whose box overlaps
    it most (IoU > 0); None and why when no detection overlaps it (``skip``), or the box with no
    landmarks (``whole_image``: the box is kept, not replaced)."""
    image = decode_rgb(data)
    found = detector(self.settings.detector).detect(image)
    overlaps = [(iou(f.box, box), i) for i, f in enumerate(found)]
    best = max(overlaps, default=(0.0, -1))
    if best[0] > 0:
      face = found[best[1]]
      self.counts["detected"] += 1
      return _fields(box, face.score, face.landmarks), None
    if self.settings.no_face == "whole_image":
      self.counts["no face found: box kept without landmarks"] += 1
      return _fields(box, 0.0, None), None
    self.counts[NO_FACE] += 1
    return None, (f"{NO_FACE} by {self.settings.detector} overlapping the box "
                  f"{[round(float(v), 1) for v in box]} ({len(found)} elsewhere)")

  def summary(self) -> dict[str, Any]:
    s = self.settings
    return {"detector": s.detector, "select": s.select, "no_face": s.no_face,
            "counts": dict(sorted(self.counts.items()))}
