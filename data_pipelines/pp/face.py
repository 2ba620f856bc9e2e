"""Face ops: crops from the stored box or landmarks (``face_crop``, ``align``, ``task_crop``) and
``detect``, which fills the box and landmarks from a detector run on the decoded image.

``face_crop``, ``align`` and ``task_crop`` read "box" and "landmarks"; datasets without stored
boxes (in-the-wild photos) get them from ``detect``, e.g.
``"decode|detect|face_crop(0.3)|resize(224)"``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from data_pipelines.pp.geometry import GeometricOp, move_points, warp
from data_pipelines.pp.registry import (BadExampleError, Example, Op, float_arg, int_arg, need,
                                        register)
from jaxface import faces
from jaxface.faces import crops
from jaxface.faces.types import Face


def _crop_plan(example: Example, A: np.ndarray, size: int):
  move_points(example, crops.invert_affine(A))
  return A, (size, size)


@register("face_crop")
class FaceCrop(GeometricOp):
  """Crops the stored "box" enlarged by ``margin`` (``crops.margin_box``: 0.3 = 30 % larger in
  total) with border replication (``crops.crop``).

  ``size=None`` keeps the native resolution: the side is the margin box's longer side, rounded.
  ``square=True`` makes the margin box square first, so the face is not stretched; otherwise a
  non-square box is stretched to the square crop, as SAF-BAGE's crop-then-rescale does.
  """

  def __init__(self, margin: float = 0.3, size: int | None = None, square: bool = False):
    self.margin = float_arg(self.name, "margin", margin)
    self.size = None if size is None else int_arg(self.name, "size", size)
    if not isinstance(square, bool):
      raise ValueError(f"{self.name}: square must be True or False, got {square!r}")
    self.square = square

  def plan(self, example, hw, rng):
    box = need(example, "box", self.name)
    try:
      mbox = crops.margin_box(box, self.margin, square=self.square)
    except ValueError as e:
      raise BadExampleError(example.get("id"), f"{self.name}: {e}") from None
    size = self.size or max(1, int(round(max(mbox[2] - mbox[0], mbox[3] - mbox[1]))))
    return _crop_plan(example, crops.box_affine(mbox, size), size)  # what crops.crop does

  def resample(self, a, A, out_hw):
    return warp(a, A, out_hw[0])


@register("align")
class Align(GeometricOp):
  """Five-point similarity alignment to the ArcFace template (``crops.align``)."""

  def __init__(self, size: int = 224):
    self.size = int_arg(self.name, "size", size)

  def plan(self, example, hw, rng):
    lm = need(example, "landmarks", self.name)
    try:
      A = crops.align_affine(lm, self.size)
    except ValueError as e:
      raise BadExampleError(example.get("id"), f"{self.name}: {e}") from None
    return _crop_plan(example, A, self.size)

  def resample(self, a, A, out_hw):
    return warp(a, A, out_hw[0])


@register("task_crop")
class TaskCrop(GeometricOp):
  """Zhang et al.'s task-aware crop ``scheme`` 1..5 (``crops.task_crop``), from "box" and, for
  schemes 1, 3 and 5, "landmarks"."""

  def __init__(self, scheme: int, size: int = 224, context: float = 0.3):
    if isinstance(scheme, bool) or scheme not in crops.SCHEMES:
      raise ValueError(f"{self.name}: scheme must be one of {sorted(crops.SCHEMES)}, "
                       f"got {scheme!r}")
    self.scheme = int(scheme)
    self.size = int_arg(self.name, "size", size)
    self.context = float_arg(self.name, "context", context)

  def plan(self, example, hw, rng):
    box = need(example, "box", self.name)
    lm = example.get("landmarks")
    face = Face(box=box.astype(np.float32), score=1.0,
                landmarks=None if lm is None else np.asarray(lm, np.float32))
    try:
      A = crops.task_affine(face, self.scheme, self.size, self.context)
    except ValueError as e:
      raise BadExampleError(example.get("id"), f"{self.name}: {e}") from None
    return _crop_plan(example, A, self.size)

  def resample(self, a, A, out_hw):
    return warp(a, A, out_hw[0])



# One box per example: "all" is not a choice here.
SELECT_POLICIES = tuple(p for p in faces.POLICIES if p != "all")


@register("detect")
class Detect(Op):
  """Fills "box" (float32 [x1, y1, x2, y2]) and, when the detector gives them (MTCNN does),
  "landmarks" (float32 (5, 2)) from ``jaxface.faces.get_detector(detector)``.

  With ``keep_stored=True`` an example that already has a box passes through untouched (the
  detector never runs); otherwise the detection replaces the stored box, and stored landmarks are
  dropped when the detector gives none (they may belong to another face). ``select`` picks one
  face: "largest", "central" or "score" (``faces.select_faces``). No face found raises
  ``BadExampleError``, so the loader skips and counts the example.

  The detector is built on first use in each process and never pickled: loader workers each
  build their own.
  """

  def __init__(self, detector: str = "haar", keep_stored: bool = True, select: str = "largest"):
    if detector not in faces.DETECTORS:
      raise ValueError(f"{self.name}: detector must be one of {', '.join(faces.DETECTORS)}, "
                       f"got {detector!r}")
    if not isinstance(keep_stored, bool):
      raise ValueError(f"{self.name}: keep_stored must be True or False, got {keep_stored!r}")
    if select not in SELECT_POLICIES:
      raise ValueError(f"{self.name}: select must be one of {', '.join(SELECT_POLICIES)}, "
                       f"got {select!r}")
    self.detector = detector
    self.keep_stored = keep_stored
    self.select = select
    self._detector = None

  def _get_detector(self) -> faces.Detector:
    if self._detector is None:
      self._detector = faces.get_detector(self.detector)
    return self._detector

  def __getstate__(self) -> dict[str, Any]:
    # The detector holds OpenCV / JAX objects that do not pickle: a worker builds its own.
    state = dict(self.__dict__)
    state["_detector"] = None
    return state

  def apply(self, example, rng):
    if self.keep_stored and example.get("box") is not None:
      return example
    img = example.get("image")
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3:
      raise ValueError(f"{self.name}: needs a decoded (H, W, 3) 'image' (put decode first), got "
                       f"{getattr(img, 'shape', type(img).__name__)}")
    found = faces.select_faces(self._get_detector().detect(img), self.select, img.shape)
    if not found:
      raise BadExampleError(example.get("id"), f"{self.name}: {self.detector} found no face")
    face = found[0]
    example["box"] = np.asarray(face.box, np.float32).reshape(4)
    if face.landmarks is not None:
      example["landmarks"] = np.asarray(face.landmarks, np.float32).reshape(5, 2)
    else:
      example.pop("landmarks", None)
    return example
