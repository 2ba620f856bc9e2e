"""dlib's shape predictor (Kazemi and Sullivan's cascade of regression trees), in numpy.

``ShapePredictor(arrays)(image, rect)`` gives the landmarks dlib's ``shape_predictor`` gives for the
same photo and rectangle. The arrays are those of ``jaxface.weights.dlib_shape`` (the shipped
``shape_predictor_5.npz``: ``load_5_point()``). Per cascade level:

1. the similarity (Umeyama's least squares, in double as dlib's ``find_similarity_transform``)
   from the initial shape to the current shape, its 2x2 part cast to float32;
2. each feature pixel = that 2x2 times its delta plus its anchor landmark of the current shape
   (float32), mapped by the rectangle's unnormalising affine (unit square -> ``(left, top)`` ..
   ``(right, bottom)``) and rounded to the nearest pixel; its value is the pixel's intensity
   (grey as is; RGB: the floored mean of the three channels, dlib's ``get_pixel_intensity``), or
   0 outside the photo;
3. every tree walks from node 0 to child 2i+1 when ``f[idx1] - f[idx2] > thresh`` and 2i+2
   otherwise; its leaf's increment is added to the shape (float32, in tree order).

The final shape is mapped through the same unnormalising affine. dlib returns integer points (it
rounds); ``__call__`` returns the unrounded points and ``round_points`` gives dlib's.
"""

from __future__ import annotations

import functools
import os
from typing import Mapping

import numpy as np

SHIPPED = os.path.join(os.path.dirname(os.path.dirname(__file__)), "weights", "pretrained",
                       "shape_predictor_5.npz")


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
  """2x3 similarity taking ``src`` (N, 2) to ``dst`` in least squares (dlib's float64 Umeyama)."""
  src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
  ms, md = src.mean(0), dst.mean(0)
  s, d = src - ms, dst - md
  var_s = (s ** 2).sum(1).mean()
  cov = d.T @ s / len(src)
  u, sv, vt = np.linalg.svd(cov)
  flip = np.ones(2)
  det = np.linalg.det(cov)
  if det < 0 or (det == 0 and np.linalg.det(u) * np.linalg.det(vt) < 0):
    flip[1 if sv[1] < sv[0] else 0] = -1
  r = u @ np.diag(flip) @ vt
  c = (sv * flip).sum() / var_s if var_s != 0 else 1.0
  return np.concatenate([c * r, (md - c * r @ ms)[:, None]], axis=1)


def unnormalising(rect) -> np.ndarray:
  """2x3 affine from the unit square to the pixel rectangle ``(left, top, right, bottom)``."""
  left, top, right, bottom = (float(v) for v in rect)
  return np.array([[right - left, 0.0, left], [0.0, bottom - top, top]])


def intensity(image: np.ndarray) -> np.ndarray:
  """dlib's pixel intensity: grey as is, RGB the floored mean of its channels (float32)."""
  image = np.asarray(image)
  if image.ndim == 2:
    return image.astype(np.float32)
  if image.ndim == 3 and image.shape[2] == 3:
    return (image.astype(np.uint32).sum(-1) // 3).astype(np.float32)
  raise ValueError(f"image must be (H, W) grey or (H, W, 3) RGB, got shape {image.shape}")


def round_points(points: np.ndarray) -> np.ndarray:
  """dlib's float -> integer point conversion (nearest, halves up)."""
  return np.floor(np.asarray(points, np.float64) + 0.5)


class ShapePredictor:
  """A dlib shape predictor from its arrays (see ``jaxface.weights.dlib_shape``)."""

  def __init__(self, arrays: Mapping[str, np.ndarray]):
    self.initial = np.asarray(arrays["initial_shape"], np.float32).reshape(-1, 2)
    self.splits = np.asarray(arrays["splits"], np.int64)
    self.thresh = np.asarray(arrays["thresh"], np.float32)
    self.leaves = np.asarray(arrays["leaf_values"], np.float32)
    self.anchors = np.asarray(arrays["anchor_idx"], np.int64)
    self.deltas = np.asarray(arrays["deltas"], np.float32)
    self.depth = int(np.log2(self.splits.shape[2] + 1))
    if 2 ** self.depth - 1 != self.splits.shape[2]:
      raise ValueError(f"trees with {self.splits.shape[2]} splits are not complete binary trees")

  @property
  def num_points(self) -> int:
    return len(self.initial)

  def __call__(self, image: np.ndarray, rect) -> np.ndarray:
    """(P, 2) float64 landmarks (x, y) of the face in ``rect`` = (left, top, right, bottom).

    ``image``: (H, W) grey or (H, W, 3) RGB; only the feature pixels' intensities are computed.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
      raise ValueError(f"image must be (H, W) grey or (H, W, 3) RGB, got shape {image.shape}")
    h, w = image.shape[:2]
    to_img = unnormalising(rect)
    shape = self.initial.copy()
    trees = np.arange(self.splits.shape[1])
    for level in range(len(self.splits)):
      tform = similarity(self.initial, shape)[:, :2].astype(np.float32)
      unit = self.deltas[level] @ tform.T + shape[self.anchors[level]]  # float32
      pix = round_points(unit.astype(np.float64) @ to_img[:, :2].T + to_img[:, 2]).astype(np.int64)
      inside = (pix[:, 0] >= 0) & (pix[:, 0] < w) & (pix[:, 1] >= 0) & (pix[:, 1] < h)
      f = np.zeros(len(pix), np.float32)
      f[inside] = intensity(image[pix[inside, 1], pix[inside, 0]][None])[0]
      node = np.zeros(len(trees), np.int64)
      for _ in range(self.depth):
        idx = self.splits[level, trees, node]
        left = (f[idx[:, 0]] - f[idx[:, 1]]) > self.thresh[level, trees, node]
        node = np.where(left, 2 * node + 1, 2 * node + 2)
      increments = self.leaves[level, trees, node - self.splits.shape[2]]  # (T, 2P)
      # float32 sums in tree order, as dlib adds them (cumsum is sequential, not pairwise)
      shape = np.cumsum(np.concatenate([shape.reshape(1, -1), increments]), axis=0,
                        dtype=np.float32)[-1].reshape(-1, 2)
    return shape.astype(np.float64) @ to_img[:, :2].T + to_img[:, 2]


@functools.lru_cache(maxsize=1)
def load_5_point() -> ShapePredictor:
  """The shipped dlib 5-point predictor (``shape_predictor_5_face_landmarks.dat``, CC0)."""
  from jaxface.weights import common  # pylint: disable=g-import-not-at-top
  return ShapePredictor(common.load(SHIPPED).variables["params"])
