"""Face crops: margin boxes, 5-point alignment, Zhang et al.'s task-aware schemes, face selection.

Coordinates. Photo and crop pixel centres sit at integer coordinates (x right, y down): pixel
column ``x`` spans ``[x - 0.5, x + 0.5]``, the OpenCV / ``cv2.warpAffine`` convention. A box
``[x1, y1, x2, y2]`` is a continuous rectangle in these coordinates; cropping it to ``size`` pixels
splits it into ``size`` equal cells per axis, so crop pixel ``(i, j)`` (row i, column j) samples the
photo at ``A @ [j, i, 1]`` with ``A = [[sx, 0, x1 + sx/2], [0, sy, y1 + sy/2]]`` and
``sx = (x2 - x1) / size``. Every crop function returns that 2x3 affine ``A`` (crop pixel -> photo).

Sampling is bilinear with explicit index clamping, which replicates the border pixels wherever the
region leaves the photo (SAF-BAGE: "we pad with the last pixels at the border"). When one crop pixel
covers two or more photo pixels, the photo region is first averaged over k x k blocks
(k = floor(scale)), so large faces are not aliased; the block average of pixels centred on a point
is still attributed to that point, so ``A`` stays exact. Integer images are rounded back to their
dtype, float images are sampled without rounding (handy for maps that travel with the image).
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

from jaxface.faces.types import Face

# The five-point template of the 112 x 112 ArcFace crop (InsightFace's face_align "arcface_dst"),
# in that crop's pixel-centre coordinates, MTCNN order: left eye, right eye, nose, mouth left,
# mouth right ("left" = the subject's right, on the left of the photo).
ARCFACE_TEMPLATE_112 = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
], np.float64)
TEMPLATE_SIZE = 112


def five_point_template(size: Sequence[int]) -> np.ndarray:
  """The ArcFace five points (eyes, nose, mouth corners) scaled to an (H, W) canonical frame."""
  h, w = size
  return ARCFACE_TEMPLATE_112 / TEMPLATE_SIZE * np.array([w, h])

POLICIES = ("all", "largest", "central", "score")

# One-line descriptions of the task-aware schemes (Zhang et al., Fig. 3 b-f / Table 3).
SCHEMES = {
    1: "aligned whole face (5-point similarity to the ArcFace template, zoomed out by the context)",
    2: "non-aligned whole face (square box enlarged by the context; includes the neck)",
    3: "non-aligned whole face without neck (scheme 2's square, lifted so its bottom is the chin)",
    4: "non-aligned tight face (the detector box made square, no context)",
    5: "aligned mouth-and-cheeks region (lower face in the template frame)",
}
# Chin below the mouth, in units of the eye-to-mouth distance (scheme 3). Anthropometric estimate:
# stomion-to-menton is about 0.6 of the pupil-line-to-stomion distance in adults.
CHIN_BELOW_MOUTH = 0.6
# Scheme 5 window: side in mouth widths (mouth corner to corner), centred between nose and mouth.
MOUTH_WINDOW_WIDTHS = 2.2


def _check_box(box) -> np.ndarray:
  b = np.asarray(box, np.float64).reshape(-1)
  if b.shape != (4,) or not np.all(np.isfinite(b)) or b[2] <= b[0] or b[3] <= b[1]:
    raise ValueError(f"box must be finite [x1, y1, x2, y2] with x2 > x1 and y2 > y1, got {box}")
  return b


def _check_size(size: int) -> int:
  if int(size) != size or size < 1:
    raise ValueError(f"size must be a positive integer, got {size}")
  return int(size)


def margin_box(box, margin: float = 0.3, square: bool = False,
               per_side: bool = False) -> np.ndarray:
  """Enlarges a box about its centre.

  SAF-BAGE / VEGAC "increase the margin of the detected B-Box by 30 %": read as the box growing by
  30 % of its width and height in total (15 % on each side), the way a box "enlarged by 30 %" is
  1.3 times as large, and the convention of facenet-pytorch's ``margin`` (split half/half).

  Args:
    box: [x1, y1, x2, y2].
    margin: relative enlargement.
    square: make the result a square of side max(width, height) (after the margin), same centre,
      so that resizing it to a square crop does not distort the face.
    per_side: add ``margin`` times width/height on each side instead (1 + 2 * margin in total).

  Returns:
    float64 [x1, y1, x2, y2].
  """
  b = _check_box(box)
  if margin < 0 or not math.isfinite(margin):
    raise ValueError(f"margin must be a finite number >= 0, got {margin}")
  grow = 1.0 + (2.0 * margin if per_side else margin)
  cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
  w, h = (b[2] - b[0]) * grow, (b[3] - b[1]) * grow
  if square:
    w = h = max(w, h)
  return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def box_affine(box, size: int) -> np.ndarray:
  """The crop-pixel -> photo affine of cropping ``box`` to ``size`` x ``size``."""
  b, size = _check_box(box), _check_size(size)
  sx, sy = (b[2] - b[0]) / size, (b[3] - b[1]) / size
  return np.array([[sx, 0.0, b[0] + sx / 2], [0.0, sy, b[1] + sy / 2]])


def apply_affine(A, points) -> np.ndarray:
  """Maps (..., 2) points (x, y) through a 2x3 affine."""
  A = np.asarray(A, np.float64)
  p = np.asarray(points, np.float64)
  return p @ A[:, :2].T + A[:, 2]


# The two helpers below run per example in the data loader: closed forms on plain floats are
# ~10x faster than numpy's general routines on 2x3 arrays.


def invert_affine(A) -> np.ndarray:
  """The inverse of a 2x3 affine (raises ValueError for a singular one)."""
  (a, b, c), (d, e, f) = np.asarray(A, np.float64).reshape(2, 3).tolist()
  det = a * e - b * d
  if det == 0 or not math.isfinite(det):
    raise ValueError(f"affine is not invertible: {[[a, b, c], [d, e, f]]}")
  ia, ib, id_, ie = e / det, -b / det, -d / det, a / det
  return np.array([[ia, ib, -(ia * c + ib * f)], [id_, ie, -(id_ * c + ie * f)]])


def compose_affine(A, B) -> np.ndarray:
  """The affine x -> A(B(x))."""
  (a0, a1, a2), (a3, a4, a5) = np.asarray(A, np.float64).reshape(2, 3).tolist()
  (b0, b1, b2), (b3, b4, b5) = np.asarray(B, np.float64).reshape(2, 3).tolist()
  return np.array([[a0 * b0 + a1 * b3, a0 * b1 + a1 * b4, a0 * b2 + a1 * b5 + a2],
                   [a3 * b0 + a4 * b3, a3 * b1 + a4 * b4, a3 * b2 + a4 * b5 + a5]])


def _block_reduce(image: np.ndarray, A: np.ndarray, size: int, k: int):
  """Averages the photo region that the crop reads over k x k blocks; returns it and the new A."""
  corners = apply_affine(A, [[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5],
                             [size - 0.5, size - 0.5]])
  # Put a block centre on crop pixel (0, 0)'s sample point when it allows: then an axis-aligned
  # crop at an integer scale samples exact block means instead of blending neighbouring blocks.
  anchor = np.round(apply_affine(A, [0.0, 0.0]) - (k - 1) / 2).astype(np.int64)
  lo = anchor - k * (np.ceil((anchor - corners.min(0)) / k).astype(np.int64) + 2)
  hi = np.ceil(corners.max(0)).astype(np.int64) + 2 * k
  n = -(-(hi - lo) // k)  # blocks per axis (x, y)
  h, w = image.shape[:2]
  cols = np.clip(lo[0] + np.arange(n[0] * k), 0, w - 1)
  rows = np.clip(lo[1] + np.arange(n[1] * k), 0, h - 1)
  region = image[np.ix_(rows, cols)]  # clamped indices replicate the border
  if region.dtype == np.uint8 and region.shape[2] <= 4:
    # An integer factor makes INTER_AREA the exact block mean (rounded); it is much faster.
    reduced = cv2.resize(region, (int(n[0]), int(n[1])), interpolation=cv2.INTER_AREA)
    reduced = reduced.reshape(int(n[1]), int(n[0]), image.shape[2])
  else:
    reduced = region.reshape(int(n[1]), k, int(n[0]), k, -1).mean(axis=(1, 3))
  # Reduced pixel u averages photo pixels lo + k*u .. lo + k*u + k-1, centred at lo + k*u + (k-1)/2.
  to_reduced = np.array([[1 / k, 0, -(lo[0] + (k - 1) / 2) / k],
                         [0, 1 / k, -(lo[1] + (k - 1) / 2) / k]])
  return reduced, compose_affine(to_reduced, A)


def warp(image, A, size: int) -> np.ndarray:
  """Samples a ``size`` x ``size`` crop: crop pixel (i, j) <- photo point ``A @ [j, i, 1]``.

  Args:
    image: (H, W) or (H, W, C) array, uint8 / other integer or float.
    A: 2x3 affine from crop pixel coordinates to photo pixel coordinates.
    size: crop side in pixels.

  Returns:
    The crop, same dtype and channel layout as ``image``.
  """
  size = _check_size(size)
  img = np.asarray(image)
  if img.ndim not in (2, 3) or img.shape[0] == 0 or img.shape[1] == 0:
    raise ValueError(f"image must be a non-empty (H, W) or (H, W, C) array, got {img.shape}")
  if img.dtype.kind not in "uif":
    raise ValueError(f"image dtype must be integer or float, got {img.dtype}")
  dtype, flat = img.dtype, img.ndim == 2
  if flat:
    img = img[:, :, None]
  A = np.asarray(A, np.float64).reshape(2, 3)
  if not np.all(np.isfinite(A)) or abs(np.linalg.det(A[:, :2])) < 1e-12:
    raise ValueError(f"affine must be finite and invertible, got {A.tolist()}")
  k = int(math.sqrt(abs(np.linalg.det(A[:, :2]))))
  if k >= 2:
    img, A = _block_reduce(img, A, size, k)
  h, w = img.shape[:2]
  jj, ii = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64))
  x = A[0, 0] * jj + A[0, 1] * ii + A[0, 2]
  y = A[1, 0] * jj + A[1, 1] * ii + A[1, 2]
  x0, y0 = np.floor(x), np.floor(y)
  wdt = np.float32 if dtype.itemsize <= 2 or dtype == np.float32 else np.float64
  fx, fy = (x - x0).astype(wdt)[..., None], (y - y0).astype(wdt)[..., None]
  xa = np.clip(x0, 0, w - 1).astype(np.intp)
  xb = np.clip(x0 + 1, 0, w - 1).astype(np.intp)
  ya = np.clip(y0, 0, h - 1).astype(np.intp)
  yb = np.clip(y0 + 1, 0, h - 1).astype(np.intp)
  top = img[ya, xa].astype(wdt) * (1 - fx) + img[ya, xb].astype(wdt) * fx
  bottom = img[yb, xa].astype(wdt) * (1 - fx) + img[yb, xb].astype(wdt) * fx
  out = top * (1 - fy) + bottom * fy
  if dtype.kind in "ui":
    info = np.iinfo(dtype)
    out = np.clip(np.rint(out), info.min, info.max)
  out = out.astype(dtype)
  return out[:, :, 0] if flat else out


def crop(image, box, size: int = 224) -> tuple[np.ndarray, np.ndarray]:
  """Crops ``box`` (stretched to a square if it is not one) to ``size`` x ``size``.

  Returns:
    (crop, A): the crop and the 2x3 affine from crop pixel coordinates to photo coordinates.
  """
  A = box_affine(box, size)
  return warp(image, A, size), A


def umeyama(src, dst) -> np.ndarray:
  """Least-squares similarity (rotation, uniform scale, translation; no reflection) src -> dst.

  Umeyama (1991), "Least-squares estimation of transformation parameters between two point
  patterns": minimises sum |s R src_i + t - dst_i|^2 with det R = +1.

  Returns:
    2x3 affine.
  """
  src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
  if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
    raise ValueError(f"need matching (N >= 2, 2) point sets, got {src.shape} and {dst.shape}")
  if not (np.all(np.isfinite(src)) and np.all(np.isfinite(dst))):
    raise ValueError("points must be finite")
  mu_s, mu_d = src.mean(0), dst.mean(0)
  sc, dc = src - mu_s, dst - mu_d
  var_s = (sc ** 2).sum() / len(src)
  if var_s < 1e-12:
    raise ValueError("source points coincide: no similarity transform is defined")
  cov = dc.T @ sc / len(src)
  u, d, vt = np.linalg.svd(cov)
  sign = np.array([1.0, 1.0 if np.linalg.det(u) * np.linalg.det(vt) >= 0 else -1.0])
  rot = (u * sign) @ vt
  scale = (d * sign).sum() / var_s
  t = mu_d - scale * rot @ mu_s
  return np.concatenate([scale * rot, t[:, None]], axis=1)


def _check_landmarks(landmarks) -> np.ndarray:
  lm = np.asarray(landmarks, np.float64) if landmarks is not None else None
  if lm is None or lm.shape != (5, 2) or not np.all(np.isfinite(lm)):
    raise ValueError("five (x, y) landmarks are needed (the mtcnn detector provides them; "
                     f"haar does not), got {None if lm is None else lm.shape}")
  return lm


def _template_window_affine(landmarks, centre, side: float, size: int,
                            template=ARCFACE_TEMPLATE_112) -> np.ndarray:
  """Crop -> photo affine of a square window (centre, side) given in template pixel coordinates."""
  size = _check_size(size)
  to_template = umeyama(_check_landmarks(landmarks), template)
  window = box_affine([centre[0] - side / 2, centre[1] - side / 2, centre[0] + side / 2,
                       centre[1] + side / 2], size)
  return compose_affine(invert_affine(to_template), window)


def align(image, landmarks, size: int = 224, template=ARCFACE_TEMPLATE_112,
          template_size: int = TEMPLATE_SIZE,
          face_fraction: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
  """Five-point similarity alignment to a template.

  The similarity maps the landmarks onto the template in the least-squares sense (``umeyama``),
  and the crop shows the template's ``template_size`` frame scaled to ``size``. With
  ``face_fraction`` < 1 the frame is zoomed out about its centre (the face fills that fraction of
  the crop's width), adding context.

  Returns:
    (crop, A): the crop and the 2x3 affine from crop pixel coordinates to photo coordinates;
    the template point p lands at crop coordinates
    ``size/2 - 0.5 + (p + 0.5 - template_size/2) * face_fraction * size / template_size``.
  """
  A = align_affine(landmarks, size, template, template_size, face_fraction)
  return warp(image, A, size), A


def align_affine(landmarks, size: int = 224, template=ARCFACE_TEMPLATE_112,
                 template_size: int = TEMPLATE_SIZE, face_fraction: float = 1.0) -> np.ndarray:
  """The crop -> photo affine of ``align`` (same arguments), without sampling the crop."""
  if not 0 < face_fraction <= 10:
    raise ValueError(f"face_fraction must be in (0, 10], got {face_fraction}")
  c = (template_size - 1) / 2
  return _template_window_affine(landmarks, (c, c), template_size / face_fraction, size, template)


def _as_face(face) -> Face:
  if isinstance(face, Face):
    return face
  box = np.asarray(face["box"], np.float32)
  lm = face.get("landmarks")
  if isinstance(lm, dict):
    lm = [lm[k] for k in ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")]
  return Face(box=box, score=float(face.get("score", 1.0)),
              landmarks=None if lm is None else np.asarray(lm, np.float32))


def task_affine(face: Face, scheme: int, size: int = 224, context: float = 0.3) -> np.ndarray:
  """Crop -> photo affine of Zhang et al.'s task-aware crop ``scheme`` (1..5); see ``task_crop``."""
  face = _as_face(face)
  size = _check_size(size)
  if scheme not in SCHEMES:
    raise ValueError(f"scheme must be one of {sorted(SCHEMES)}, got {scheme!r}")
  box = _check_box(face.box)
  t = ARCFACE_TEMPLATE_112
  if scheme == 1:
    c = (TEMPLATE_SIZE - 1) / 2
    return _template_window_affine(face.landmarks, (c, c), TEMPLATE_SIZE * (1 + context), size)
  if scheme == 2:
    return box_affine(margin_box(box, context, square=True), size)
  if scheme == 3:
    sq = margin_box(box, context, square=True)
    side = sq[2] - sq[0]
    if face.landmarks is not None:
      lm = _check_landmarks(face.landmarks)
      eye_y, mouth_y = lm[:2, 1].mean(), lm[3:, 1].mean()
      chin = mouth_y + CHIN_BELOW_MOUTH * (mouth_y - eye_y)
    else:  # Haar: no landmarks, the box bottom stands in for the chin.
      chin = box[3]
    return box_affine([sq[0], chin - side, sq[2], chin], size)
  if scheme == 4:
    return box_affine(margin_box(box, 0.0, square=True), size)
  # scheme 5: lower face, centred between the nose and the mouth-corner midpoint.
  centre = ((TEMPLATE_SIZE - 1) / 2, (t[2, 1] + t[3:, 1].mean()) / 2)
  side = MOUTH_WINDOW_WIDTHS * (t[4, 0] - t[3, 0])
  return _template_window_affine(face.landmarks, centre, side, size)


def task_crop(image, face: Face, scheme: int, size: int = 224,
              context: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
  """Zhang et al. (2017) task-aware crops, numbered as in their Table 3 (Fig. 3 b-f).

  The paper shows the five regions only as example pictures; these definitions follow its words
  and fill in the numbers it does not give (``context`` = 0.3, as the SAF-BAGE margin):

  1. aligned whole face: the ArcFace 112 template frame, zoomed out by (1 + context), after a
     five-point similarity alignment.
  2. non-aligned whole face: the detector box enlarged by ``context`` (in total) and made square;
     it reaches below the chin (neck).
  3. non-aligned whole face without neck: the same square as 2, moved vertically so its bottom edge
     is the chin, estimated as mouth_y + 0.6 * (mouth_y - eye_y) from the landmarks (box bottom
     without landmarks). The paper's conclusion calls its best gender crop "without neck and
     alignment" while Section 3.3 says only (b) is aligned; we follow Section 3.3.
  4. the remaining non-aligned variant (the paper does not describe it): the tight square of the
     detector box, no context, so that the 3 + 4 ensemble pairs a context view with a tight view.
  5. aligned mouth and cheeks: in the aligned template frame, a square of 2.2 mouth widths centred
     between the nose and the mouth, from about the eye line down to the chin.

  Returns:
    (crop, A) as ``crop``.
  """
  A = task_affine(face, scheme, size, context)
  return warp(image, A, size), A


def select_faces(faces: Sequence[Face], policy: str,
                 image_shape: Sequence[int]) -> list[Face]:
  """Chooses faces: "all" (detector order), "largest" (box area), "central" (box centre nearest
  the image centre, as Zhang et al. at test time), "score" (highest score). Ties keep the first."""
  if policy not in POLICIES:
    raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
  faces = list(faces)
  if policy == "all" or not faces:
    return faces
  if policy == "largest":
    key = lambda f: -f.area
  elif policy == "score":
    key = lambda f: -f.score
  else:
    cy, cx = (image_shape[0] - 1) / 2, (image_shape[1] - 1) / 2
    key = lambda f: (f.center[0] - cx) ** 2 + (f.center[1] - cy) ** 2
  return [min(faces, key=key)]
