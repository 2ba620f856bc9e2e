"""The ``detect`` op: a face box (and landmarks) from a detector run on the decoded image.

``face_crop``, ``align`` and ``task_crop`` read "box" and "landmarks"; datasets without stored
boxes (in-the-wild photos) get them here, e.g. ``"decode|detect|face_crop(0.3)|resize(224)"``.
Importing this module registers the op; ``ops.lookup`` does so the first time a pipe names it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from data_pipelines import ops
from jaxface import faces

# One box per example: "all" is not a choice here.
SELECT_POLICIES = tuple(p for p in faces.POLICIES if p != "all")


@ops.register("detect")
class Detect(ops.Op):
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
      raise ops.BadExampleError(example.get("id"), f"{self.name}: {self.detector} found no face")
    face = found[0]
    example["box"] = np.asarray(face.box, np.float32).reshape(4)
    if face.landmarks is not None:
      example["landmarks"] = np.asarray(face.landmarks, np.float32).reshape(5, 2)
    else:
      example.pop("landmarks", None)
    return example

