"""The face record shared by detectors, crops and the command line."""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import numpy as np

# Standard MTCNN landmark order.
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclasses.dataclass(frozen=True)
class Face:
  """One detected face in photo pixel coordinates (x to the right, y down)."""
  box: np.ndarray  # (4,) float32 [x1, y1, x2, y2]
  score: float
  landmarks: np.ndarray | None = None  # (5, 2) float32 (x, y) in LANDMARK_NAMES order

  @property
  def width(self) -> float:
    return float(self.box[2] - self.box[0])

  @property
  def height(self) -> float:
    return float(self.box[3] - self.box[1])

  @property
  def area(self) -> float:
    return max(self.width, 0.0) * max(self.height, 0.0)

  @property
  def center(self) -> tuple[float, float]:
    return (float(self.box[0] + self.box[2]) / 2, float(self.box[1] + self.box[3]) / 2)

  def to_dict(self) -> dict[str, Any]:
    d = {"box": [float(v) for v in self.box], "score": float(self.score)}
    if self.landmarks is not None:
      d["landmarks"] = {n: [float(v) for v in p] for n, p in zip(LANDMARK_NAMES, self.landmarks)}
    return d


class Detector(Protocol):
  """Anything that turns an RGB uint8 (H, W, 3) photo into faces."""
  name: str

  def detect(self, image_rgb: np.ndarray) -> list[Face]:
    ...
