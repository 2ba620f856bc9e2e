"""dlib's 68 facial landmarks for Canonical Saliency Maps (optional extra ``jaxface[dlib]``).

``pip install 'jaxface[dlib]'`` brings ``dlib-bin`` (a prebuilt dlib) and
``face-recognition-models``, whose wheel holds ``shape_predictor_68_face_landmarks.dat`` (the
iBUG 300-W points: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67; dlib's licence
notes that the training data is for research use). Nothing is downloaded at run time.

The canonical 68-point template is not a table of numbers kept here: it is the predictor's own
mean shape (the ``initial_shape`` that its cascade starts from, the mean of its training faces,
read from the model file's header), placed in the canonical frame by the similarity that takes its
five derived points (eye centres, nose tip 30, mouth corners 48 and 54) closest to the five-point
template of :func:`jaxface.faces.crops.five_point_template`. So the 5- and 68-point
correspondences share one canonical frame, and a CMS made with one can be compared with the other.

``face_recognition_models`` is located without being imported: its ``__init__`` needs
``pkg_resources``, which current setuptools no longer installs.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import struct
from typing import Sequence

import numpy as np

from jaxface.faces.crops import five_point_template

_MODEL = "shape_predictor_68_face_landmarks.dat"
EXTRA = "pip install 'jaxface[dlib]'"


class Unavailable(ValueError):
  """The optional extra is not installed."""


def model_path() -> str:
  """Path of the 68-point predictor inside the installed ``face-recognition-models``."""
  spec = importlib.util.find_spec("face_recognition_models")
  if spec is None or not spec.submodule_search_locations:
    raise Unavailable(f"68-point landmarks need the dlib extra: {EXTRA}")
  for root in spec.submodule_search_locations:
    path = os.path.join(root, "models", _MODEL)
    if os.path.exists(path):
      return path
  raise Unavailable(f"face-recognition-models has no models/{_MODEL}; reinstall: {EXTRA}")


def _read_int(buf: bytes, pos: int) -> tuple[int, int]:
  """dlib's integer serialisation: a control byte (bit 7 sign, low 4 bits byte count), then the
  magnitude little-endian."""
  ctrl = buf[pos]
  n = ctrl & 0x0F
  if n > 8 or pos + 1 + n > len(buf):
    raise ValueError(f"corrupt dlib integer at byte {pos}")
  v = int.from_bytes(buf[pos + 1:pos + 1 + n], "little")
  return (-v if ctrl & 0x80 else v), pos + 1 + n


def read_mean_shape(path: str) -> np.ndarray:
  """(68, 2) ``initial_shape`` of a dlib shape predictor file, in its box-normalised [0, 1] frame.

  The file starts with the version (1), the matrix's rows and columns (negated: dlib's current
  matrix format) and its float elements, each a mantissa and a base-2 exponent integer.
  """
  with open(path, "rb") as f:
    buf = f.read(4096)  # 136 floats take at most 136 * 12 bytes.
  version, pos = _read_int(buf, 0)
  if version != 1:
    raise ValueError(f"{path}: shape predictor version {version}, expected 1")
  nr, pos = _read_int(buf, pos)
  nc, pos = _read_int(buf, pos)
  nr, nc = abs(nr), abs(nc)
  if nc != 1 or nr % 2:
    raise ValueError(f"{path}: initial shape of {nr} x {nc}, expected (2 n) x 1")
  vals = []
  for _ in range(nr):
    mant, pos = _read_int(buf, pos)
    expo, pos = _read_int(buf, pos)
    vals.append(float(np.ldexp(np.float64(mant), expo)))
  return np.array(vals, np.float64).reshape(-1, 2)


def five_of_68(points68) -> np.ndarray:
  """The five MTCNN / ArcFace points from 68: eye centres (36-41, 42-47), nose tip, mouth corners.

  Image-left eye first, as MTCNN and the five-point template order them.
  """
  p = np.asarray(points68, np.float64)
  if p.shape != (68, 2):
    raise ValueError(f"expected (68, 2) landmarks, got {p.shape}")
  return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])


def similarity_fit(src, dst) -> np.ndarray:
  """Least-squares 2x3 similarity (rotation, uniform scale, shift) taking src to dst (Umeyama)."""
  src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
  ms, md = src.mean(0), dst.mean(0)
  s, d = src - ms, dst - md
  u, sig, vt = np.linalg.svd(d.T @ s / len(src))
  e = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
  r = u @ e @ vt
  scale = np.trace(np.diag(sig) @ e) / (s ** 2).sum(1).mean()
  a = scale * r
  return np.hstack([a, (md - a @ ms)[:, None]])


def template_from_mean_shape(mean_shape, size: Sequence[int]) -> np.ndarray:
  """A 68-point mean shape placed in an (H, W) frame by its five points' best similarity to the
  five-point template."""
  m = np.asarray(mean_shape, np.float64)
  a = similarity_fit(five_of_68(m), five_point_template(size))
  return m @ a[:, :2].T + a[:, 2]


@functools.lru_cache(maxsize=None)
def _mean_shape_cached(path: str) -> np.ndarray:
  return read_mean_shape(path)


def template(size: Sequence[int]) -> np.ndarray:
  """The canonical 68-point template in an (H, W) frame (needs the extra; see the module doc)."""
  return template_from_mean_shape(_mean_shape_cached(model_path()), tuple(size))


def _import_dlib():
  try:
    import dlib  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise Unavailable(f"68-point landmarks need the dlib extra: {EXTRA}") from None
  return dlib


class Landmarks68:
  """dlib's HOG face detector (built into dlib, no model file) and its 68-point predictor.

  The predictor was trained on boxes of that detector, so its boxes are used; ``near`` (x0, y0,
  x1, y1) picks the detection overlapping a box found by another detector the most.
  """

  def __init__(self, path: str | None = None):
    dlib = _import_dlib()
    self._dlib = dlib
    self._detector = dlib.get_frontal_face_detector()
    self._predictor = dlib.shape_predictor(path or model_path())

  def boxes(self, rgb: np.ndarray, upsample: int = 1) -> np.ndarray:
    """(F, 4) x0, y0, x1, y1 of the faces dlib finds in an RGB uint8 image."""
    rects = self._detector(np.ascontiguousarray(rgb, np.uint8), upsample)
    return np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects],
                    np.float64).reshape(-1, 4)

  def predict(self, rgb: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """(68, 2) landmarks (x, y) in the image's pixels of the face in ``box``."""
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    shape = self._predictor(np.ascontiguousarray(rgb, np.uint8),
                            self._dlib.rectangle(x0, y0, x1, y1))
    return np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)],
                    np.float64)

  def __call__(self, rgb: np.ndarray, near: Sequence[float] | None = None) -> np.ndarray:
    """The 68 landmarks of the largest face, or of the one overlapping ``near`` the most."""
    b = self.boxes(rgb)
    if len(b) == 0:
      raise ValueError("dlib found no face for its 68 landmarks")
    if near is None:
      score = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    else:
      n = np.asarray(near, np.float64)
      iw = np.clip(np.minimum(b[:, 2], n[2]) - np.maximum(b[:, 0], n[0]), 0, None)
      ih = np.clip(np.minimum(b[:, 3], n[3]) - np.maximum(b[:, 1], n[1]), 0, None)
      score = iw * ih
    return self.predict(rgb, b[int(np.argmax(score))])


def pack_float(value: float) -> bytes:
  """dlib's serialisation of one float (the inverse of the reader; used to build test files)."""
  mant, expo = _float_details(value)
  return _pack_int(mant) + _pack_int(expo)


def _float_details(value: float) -> tuple[int, int]:
  if value == 0:
    return 0, 0
  m, e = np.frexp(np.float64(value))  # value = m 2^e, 0.5 <= |m| < 1.
  mant = int(m * (1 << 53))
  expo = int(e) - 53
  while mant % 2 == 0:  # Shortest exact mantissa, as dlib stores it.
    mant //= 2
    expo += 1
  return mant, expo


def _pack_int(v: int) -> bytes:
  mag = abs(int(v))
  body = mag.to_bytes(max(1, (mag.bit_length() + 7) // 8), "little")
  return struct.pack("B", len(body) | (0x80 if v < 0 else 0)) + body
