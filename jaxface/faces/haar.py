"""OpenCV's Viola-Jones Haar cascade: the zero-setup face detector (boxes only, no landmarks).

Box convention (shared with ``crops``): pixel centres sit at integer coordinates, so pixel column
``x`` spans ``[x - 0.5, x + 0.5]``; an OpenCV rectangle ``(x, y, w, h)`` covering columns
``x .. x + w - 1`` becomes the box ``[x - 0.5, y - 0.5, x + w - 0.5, y + h - 0.5]``.

Scores are the cascade's last-stage sums (``detectMultiScale3`` level weights): larger is more
face-like, but they are not probabilities and are not comparable with MTCNN's.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from jaxface.faces.image_io import validate_rgb
from jaxface.faces.types import Face


def cascade_path(cascade: str) -> str:
  """Full path of a cascade file: as given if it exists, else from OpenCV's bundled data."""
  if os.path.isfile(cascade):
    return cascade
  data_dir = getattr(getattr(cv2, "data", None), "haarcascades", None)
  path = os.path.join(data_dir, cascade) if data_dir else None
  if path is None or not os.path.isfile(path):
    raise FileNotFoundError(
        f"Haar cascade {cascade!r} not found (looked in {data_dir or 'cv2.data: absent'}); "
        "OpenCV 5 no longer ships the cascades: install opencv-python-headless<5 or pass the "
        "path of an .xml cascade file")
  return path


class HaarDetector:
  """Frontal-face Haar cascade detector.

  Args:
    scale_factor: pyramid step of ``detectMultiScale``.
    min_neighbors: overlapping raw detections needed to keep a face.
    min_size: smallest face (w, h) in pixels of the image searched (after any downscale).
    cascade: cascade file name in ``cv2.data.haarcascades`` or a path.
    max_side: photos whose longer side exceeds it are area-downscaled to it for detection (boxes are
      mapped back to the photo); None searches the full resolution.
  """

  name = "haar"

  def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5,
               min_size: tuple[int, int] = (20, 20),
               cascade: str = "haarcascade_frontalface_default.xml", max_side: int | None = None):
    if scale_factor <= 1.0:
      raise ValueError(f"scale_factor must be > 1, got {scale_factor}")
    if max_side is not None and max_side < max(min_size):
      raise ValueError(f"max_side ({max_side}) must be at least min_size {tuple(min_size)}")
    self.scale_factor = scale_factor
    self.min_neighbors = min_neighbors
    self.min_size = (int(min_size[0]), int(min_size[1]))
    self.max_side = max_side
    if not hasattr(cv2, "CascadeClassifier"):
      raise ImportError(f"OpenCV {cv2.__version__} has no CascadeClassifier (removed in OpenCV 5); "
                        "install opencv-python-headless<5 for the Haar detector")
    path = cascade_path(cascade)
    self._cascade = cv2.CascadeClassifier(path)
    if self._cascade.empty():
      raise ValueError(f"{path}: not a valid OpenCV cascade file")

  def detect(self, image_rgb: np.ndarray) -> list[Face]:
    image_rgb = validate_rgb(image_rgb, "image_rgb")
    h, w = image_rgb.shape[:2]
    scale = 1.0
    if self.max_side is not None and max(h, w) > self.max_side:
      scale = self.max_side / max(h, w)
      size = (max(1, round(w * scale)), max(1, round(h * scale)))
      image_rgb = cv2.resize(image_rgb, size, interpolation=cv2.INTER_AREA)
    gray = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
    if gray.shape[0] < self.min_size[1] or gray.shape[1] < self.min_size[0]:
      return []
    rects, _, weights = self._cascade.detectMultiScale3(
        gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
        minSize=self.min_size, outputRejectLevels=True)
    if len(rects) == 0:
      return []
    rects = np.asarray(rects, np.float64).reshape(-1, 4)
    weights = np.asarray(weights, np.float64).reshape(-1)
    edges = np.stack([rects[:, 0], rects[:, 1], rects[:, 0] + rects[:, 2],
                      rects[:, 1] + rects[:, 3]], axis=1) - 0.5
    if scale != 1.0:
      # Same half-pixel-centre mapping as cv2.resize: x_photo = (x_small + 0.5) / s - 0.5, with
      # the per-axis scale actually used after rounding the size.
      sx, sy = gray.shape[1] / w, gray.shape[0] / h
      edges = (edges + 0.5) / np.array([sx, sy, sx, sy]) - 0.5
    order = np.argsort(-weights, kind="stable")
    return [Face(box=edges[i].astype(np.float32), score=float(weights[i])) for i in order]
