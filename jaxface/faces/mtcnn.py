"""MTCNN face detector with facenet-pytorch's weights and detect_face semantics.

MTCNN: K. Zhang, Z. Zhang, Z. Li, Y. Qiao, "Joint Face Detection and Alignment Using Multitask
Cascaded Convolutional Networks", IEEE Signal Processing Letters 23(10), 2016, arXiv:1604.02878;
the reference implementation followed is timesler/facenet-pytorch (models/utils/detect_face.py).

Two cascades give the same faces up to float rounding. ``backend="device"`` (opt-in) runs the
whole cascade as four jitted programs on the default JAX backend (``mtcnn_device``: pyramid, PNet,
box generation, NMS, crop gathering, RNet and ONet; the host reads one count between programs).
``backend="host"`` (the default) is the reference this module implements: the three networks
jitted, everything data dependent (pyramid, box generation, NMS, crops) in numpy, as
facenet-pytorch does for its final NMS.

Choices that differ from, or pin down, the reference implementation (the host cascade; the device
cascade's own choices are in ``mtcnn_device``):

* Area resizing. facenet-pytorch resizes with ``F.interpolate(mode="area")``, i.e. adaptive
  average pooling: output cell i averages input indices ``floor(i*In/Out) .. ceil((i+1)*In/Out)-1``.
  ``cv2.INTER_AREA`` weights fractional pixels instead and differs for non-integer ratios, so
  :func:`area_resize` implements the adaptive-average rule with cumulative sums (float64, so the
  window sums of uint8 pixels are exact) on the host.
* PNet buckets. Each pyramid level is zero-padded at the bottom/right to a bucketed shape (four
  sizes per octave) so that few programs are compiled; levels and photos that share a bucket run as
  one batch. PNet's first pool uses the ceil output size, so a level with an odd side has a
  one-row (one-column) last pooling window; the conv1 activations of the padding are masked to
  -inf before that pool, which keeps every valid output cell identical to the unpadded network.
* RNet / ONet run on candidate batches padded to a power of two (at least 16), in chunks of 2048.
* A candidate whose clamped crop is empty (the box lies entirely outside the photo) is dropped; the
  reference would fail on it with a length mismatch.
* Ties in NMS keep the earlier candidate (stable sort by decreasing score).
* ``max_side``: photos whose longer side exceeds it are area-downscaled to that side for detection;
  boxes and landmarks are multiplied back by the per-axis size ratio (so they are in the coordinates
  of the photo given, up to the precision lost by the downscale).
"""

from __future__ import annotations

import functools
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import cv2
import numpy as np

# The networks and the pyramid rule live in mtcnn_nets, shared with the device cascade.
from jaxface.faces.mtcnn_nets import _onet_run, _pnet_map_size, _pnet_run, _rnet_run
from jaxface.faces.mtcnn_nets import pyramid_scales
from jaxface.faces.types import Face
from jaxface.weights import common

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
_WEIGHT_FILES = {"pnet": "mtcnn_pnet.npz", "rnet": "mtcnn_rnet.npz", "onet": "mtcnn_onet.npz"}
_CHUNK = 2048  # Largest RNet / ONet batch per call.
BACKENDS = ("device", "host")


# ---------------------------------------------------------------------------------------------
# Host-side geometry.


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union",
        plus_one: bool = False) -> np.ndarray:
  """Greedy non-maximum suppression; returns kept indices by decreasing score.

  Args:
    boxes: (N, 4) [x1, y1, x2, y2].
    scores: (N,).
    threshold: a box is dropped when its overlap with a kept box is strictly greater.
    mode: "union" (intersection over union) or "min" (intersection over the smaller area).
    plus_one: legacy pixel-count areas, ``(x2 - x1 + 1) * (y2 - y1 + 1)`` and likewise for the
      intersection (facenet-pytorch's final numpy NMS); False gives torchvision's continuous areas.
  """
  mode = mode.lower()
  if mode not in ("union", "min"):
    raise ValueError(f"nms mode must be 'union' or 'min', got {mode!r}")
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  scores = np.asarray(scores, np.float32).reshape(-1)
  if len(boxes) != len(scores):
    raise ValueError(f"nms: {len(boxes)} boxes but {len(scores)} scores")
  one = np.float32(1.0 if plus_one else 0.0)
  x1, y1, x2, y2 = boxes.T
  area = (x2 - x1 + one) * (y2 - y1 + one)
  order = np.argsort(-scores, kind="stable")
  keep = []
  while order.size:
    i, rest = order[0], order[1:]
    keep.append(i)
    w = np.maximum(np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + one)
    h = np.maximum(np.float32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + one)
    inter = w * h
    if mode == "min":
      denom = np.minimum(area[i], area[rest])
    else:
      denom = area[i] + area[rest] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
      overlap = inter / denom
    # NaN (degenerate zero-area pairs) counts as no overlap, as in both references.
    order = rest[~(overlap > threshold)]
  return np.asarray(keep, np.int64)


def _batched_nms(boxes, scores, image_inds, threshold, mode="union", plus_one=False) -> np.ndarray:
  """NMS within each photo; kept indices by decreasing score over all photos."""
  keep = [np.flatnonzero(image_inds == b)[nms(boxes[image_inds == b], scores[image_inds == b],
                                              threshold, mode, plus_one)]
          for b in np.unique(image_inds)]
  keep = np.concatenate(keep) if keep else np.zeros((0,), np.int64)
  return keep[np.argsort(-scores[keep], kind="stable")]


def _sum_dtype(x: np.ndarray):
  """Exact accumulator for window sums over the last three axes (H, W, C) of ``x``.

  Integer pixels sum exactly in int32 while no sum can reach 2**31 (about 8 MP of uint8), which
  is 4x faster than float64 cumulative sums; int64 beyond that; float input keeps float64.
  """
  if not np.issubdtype(x.dtype, np.integer):
    return np.float64
  bound = int(x.shape[-3]) * int(x.shape[-2]) * int(np.iinfo(x.dtype).max)
  return np.int32 if bound < 2**31 else np.int64


def _cumsum0(x: np.ndarray, axis: int, dtype) -> np.ndarray:
  """Cumulative sum along ``axis`` with a leading zero (window sums are differences)."""
  csum = np.cumsum(x, axis=axis, dtype=dtype)
  pad = [(0, 0)] * x.ndim
  pad[axis] = (1, 0)
  return np.pad(csum, pad)


def _window_sum(csum: np.ndarray, axis: int, n_out: int):
  """Sums over the adaptive-average windows ``floor(i*In/Out) .. ceil((i+1)*In/Out)-1`` from a
  ``_cumsum0``, and the window lengths."""
  n_in = csum.shape[axis] - 1
  i = np.arange(n_out)
  start = (i * n_in) // n_out
  end = -((-(i + 1) * n_in) // n_out)
  return np.take(csum, end, axis=axis) - np.take(csum, start, axis=axis), end - start


def _area_from_row_csum(row_csum: np.ndarray, size: Sequence[int], dtype) -> np.ndarray:
  """Area resize of (..., H, W, C) given its ``_cumsum0`` along H; float32 window means."""
  h_axis = row_csum.ndim - 3
  rows, count_h = _window_sum(row_csum, h_axis, int(size[0]))
  sums, count_w = _window_sum(_cumsum0(rows, h_axis + 1, dtype), h_axis + 1, int(size[1]))
  # One rounding: exact integer sum over exact count (float64), then float32.
  return (sums / np.multiply.outer(count_h, count_w)[..., None]).astype(np.float32)


def area_resize(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
  """``F.interpolate(mode="area")`` (adaptive average pooling) of (..., H, W, C) to ``size``.

  Returns float32. Integer pixels are summed exactly (int32 / int64), float input in float64, so
  the result is the window mean rounded once to float32.
  """
  oh, ow = int(size[0]), int(size[1])
  if oh < 1 or ow < 1:
    raise ValueError(f"area_resize: output size must be positive, got {tuple(size)}")
  x = np.asarray(image)
  dtype = _sum_dtype(x)
  return _area_from_row_csum(_cumsum0(x, x.ndim - 3, dtype), (oh, ow), dtype)


def generate_boxes(prob_hw: np.ndarray, reg_hw4: np.ndarray, scale: float,
                   threshold: float) -> np.ndarray:
  """Stage-1 candidates from one PNet map: (K, 9) float32 [x1, y1, x2, y2, score, 4 offsets].

  Cell (row, col) with ``prob >= threshold`` maps back to the photo with stride 2 and cell 12 and
  the 1-based legacy offset: ``x1 = floor((2*col + 1)/scale)``, ``x2 = floor((2*col + 12)/scale)``
  (rows likewise); arithmetic in float32 as the reference. Cells are in row-major order.
  """
  rows, cols = np.nonzero(np.asarray(prob_hw) >= threshold)
  xy = np.stack([cols, rows], axis=1).astype(np.float32)
  s = np.float32(scale)
  q1 = np.floor((np.float32(2) * xy + np.float32(1)) / s)
  q2 = np.floor((np.float32(2) * xy + np.float32(12)) / s)
  score = np.asarray(prob_hw, np.float32)[rows, cols][:, None]
  reg = np.asarray(reg_hw4, np.float32)[rows, cols].reshape(-1, 4)
  return np.concatenate([q1, q2, score, reg], axis=1).astype(np.float32)


def _regress(boxes: np.ndarray, reg: np.ndarray, plus_one: bool) -> np.ndarray:
  """Applies offsets scaled by the box size (+1 in the ``bbreg`` of stages 2 and 3)."""
  one = np.float32(1.0 if plus_one else 0.0)
  w = boxes[:, 2] - boxes[:, 0] + one
  h = boxes[:, 3] - boxes[:, 1] + one
  size = np.stack([w, h, w, h], axis=1)
  return (boxes[:, :4] + reg * size).astype(np.float32)


def _square(boxes: np.ndarray) -> np.ndarray:
  """``rerec``: square boxes of side max(w, h) around the same centre."""
  w = boxes[:, 2] - boxes[:, 0]
  h = boxes[:, 3] - boxes[:, 1]
  side = np.maximum(w, h)
  half = np.float32(0.5)
  x1 = boxes[:, 0] + w * half - side * half
  y1 = boxes[:, 1] + h * half - side * half
  return np.stack([x1, y1, x1 + side, y1 + side], axis=1).astype(np.float32)


def _crop_bounds(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
  """The reference ``pad`` helper: truncated, 1-based, clamped (not zero-padded) bounds.

  Returns (N, 4) int [y, ey, x, ex]; the crop is ``rows y-1 : ey, cols x-1 : ex``.
  """
  b = np.trunc(boxes[:, :4]).astype(np.int64)
  x = np.maximum(b[:, 0], 1)
  y = np.maximum(b[:, 1], 1)
  ex = np.minimum(b[:, 2], width)
  ey = np.minimum(b[:, 3], height)
  return np.stack([y, ey, x, ex], axis=1)


def _integral(images_BHWC: np.ndarray) -> np.ndarray:
  """(B, H+1, W+1, C) exact summed-area table with a zero first row and column."""
  dtype = _sum_dtype(images_BHWC)
  return _cumsum0(_cumsum0(images_BHWC, 1, dtype), 2, dtype)


def _crops(integral: np.ndarray, image_inds: np.ndarray, boxes: np.ndarray, size: int):
  """Area-resized, normalised crops (N, size, size, 3) and the mask of non-empty crops.

  Every output cell is the mean of its adaptive-average window of the clamped crop, read off the
  summed-area table with four lookups, so all crops are resized at once.
  """
  _, hp, wp, _ = integral.shape
  bounds = _crop_bounds(boxes, wp - 1, hp - 1)
  ok = (bounds[:, 1] > bounds[:, 0] - 1) & (bounds[:, 3] > bounds[:, 2] - 1)
  y, ey, x, ex = bounds[ok].T
  i = np.arange(size)

  def windows(first, n):  # Photo index ranges [start, end) of the cells along one axis.
    n = n[:, None]
    return first[:, None] + (i * n) // size, first[:, None] + -((-(i + 1) * n) // size)

  r0, r1 = windows(y - 1, ey - y + 1)
  c0, c1 = windows(x - 1, ex - x + 1)
  b = image_inds[ok][:, None, None]
  r0, r1 = r0[:, :, None], r1[:, :, None]
  c0, c1 = c0[:, None, :], c1[:, None, :]
  sums = integral[b, r1, c1] - integral[b, r0, c1] - integral[b, r1, c0] + integral[b, r0, c0]
  means = sums / ((r1 - r0) * (c1 - c0))[..., None]
  return _normalise(means.astype(np.float32)), ok


def _normalise(x: np.ndarray) -> np.ndarray:
  return ((x - np.float32(127.5)) * np.float32(0.0078125)).astype(np.float32)


def _bucket(n: int) -> int:
  """Rounds a side up to one of four sizes per octave (at most 25% padding)."""
  step = 1 << max(2, n.bit_length() - 3)
  return -(-n // step) * step


def _pow2(n: int, least: int = 1) -> int:
  return max(least, 1 << max(0, (n - 1).bit_length()))


def _run_padded(fn, variables, x_NHWC: np.ndarray, least: int):
  """Runs ``fn`` on batches padded to a power of two; returns host arrays for the N inputs."""
  outs = []
  for start in range(0, len(x_NHWC), _CHUNK):
    chunk = x_NHWC[start:start + _CHUNK]
    n = len(chunk)
    padded = np.zeros((_pow2(n, least), *chunk.shape[1:]), np.float32)
    padded[:n] = chunk
    outs.append([np.asarray(o)[:n] for o in fn(variables, padded)])
  return [np.concatenate(parts) for parts in zip(*outs)]


# ---------------------------------------------------------------------------------------------
# The detector.


def _check_image(image, argname: str) -> np.ndarray:
  if not isinstance(image, np.ndarray):
    raise ValueError(f"{argname} must be a numpy array (H, W, 3) of RGB uint8 pixels, got "
                     f"{type(image).__name__}")
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
    raise ValueError(f"{argname} must be an RGB uint8 array of shape (H, W, 3), got dtype "
                     f"{image.dtype} and shape {image.shape}")
  return image


def _load(weights_dir: str, net: str, expected_model: str):
  path = os.path.join(weights_dir, _WEIGHT_FILES[net])
  if not os.path.isfile(path):
    raise FileNotFoundError(f"MTCNN weights not found: {path} (weights_dir={weights_dir!r})")
  imported = common.load(path)
  if imported.meta.get("model") != expected_model:
    raise common.WeightImportError(f"{path} holds {imported.meta.get('model')!r}, expected "
                                   f"{expected_model!r}")
  return jax.tree_util.tree_map(jnp.asarray, imported.variables)


class MTCNNDetector:
  """Three-stage MTCNN cascade; ``detect`` returns faces sorted by score (descending).

  Args:
    min_face_size: smallest face side in pixels the pyramid looks for.
    thresholds: face-probability thresholds of PNet (>=), RNet (>) and ONet (>).
    factor: pyramid scale step.
    nms: IoU thresholds of stage 1 within a scale, stage 1 across scales, stage 2, and the final
      "min"-overlap NMS.
    weights_dir: folder with mtcnn_{pnet,rnet,onet}.npz; the shipped weights by default.
    max_side: when set, photos whose longer side exceeds it are downscaled for detection.
    backend: "host" (the default, the reference): networks jitted, pyramid, crops and NMS in
      numpy. "device": the whole cascade as jitted programs (``mtcnn_device``), same faces up to
      float rounding (tests/faces/mtcnn_device_test.py); it compiles more programs (one per
      photo-size bucket and per candidate capacity), so it is opt-in for now.
  """
  name = "mtcnn"

  def __init__(self, min_face_size: float = 20, thresholds: Sequence[float] = (0.6, 0.7, 0.7),
               factor: float = 0.709, nms: Sequence[float] = (0.5, 0.7, 0.7, 0.7),
               weights_dir: str | os.PathLike | None = None, max_side: int | None = None,
               backend: str = "host"):
    if not min_face_size > 0:
      raise ValueError(f"min_face_size must be positive, got {min_face_size}")
    if not 0 < factor < 1:
      raise ValueError(f"factor must be in (0, 1), got {factor}")
    if len(thresholds) != 3:
      raise ValueError(f"thresholds must hold 3 values (PNet, RNet, ONet), got {thresholds}")
    if len(nms) != 4:
      raise ValueError(f"nms must hold 4 thresholds (scale, pyramid, RNet, ONet), got {nms}")
    if max_side is not None and max_side < 12:
      raise ValueError(f"max_side must be at least 12 pixels, got {max_side}")
    if backend not in BACKENDS:
      raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    self.backend = backend
    self.min_face_size = float(min_face_size)
    self.thresholds = tuple(float(t) for t in thresholds)
    self.factor = float(factor)
    self.nms = tuple(float(t) for t in nms)
    self.max_side = max_side
    weights_dir = os.fspath(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    self.pnet = _load(weights_dir, "pnet", "mtcnn_pnet")
    self.rnet = _load(weights_dir, "rnet", "mtcnn_rnet")
    self.onet = _load(weights_dir, "onet", "mtcnn_onet")

  def detect(self, image_rgb_uint8: np.ndarray) -> list[Face]:
    """Faces in one RGB uint8 (H, W, 3) photo."""
    image = _check_image(image_rgb_uint8, "image_rgb_uint8")
    return self._detect(image[None])[0]

  def detect_batch(self, images) -> list[list[Face]]:
    """Faces in several RGB uint8 photos of the same size (a list or an (N, H, W, 3) array)."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
      images = list(images)
    if not isinstance(images, (list, tuple)):
      raise ValueError("images must be a list of (H, W, 3) uint8 arrays or an (N, H, W, 3) uint8 "
                       f"array, got {type(images).__name__}")
    if not images:
      return []
    images = [_check_image(im, f"images[{i}]") for i, im in enumerate(images)]
    if len({im.shape for im in images}) > 1:
      raise ValueError("images must all have the same size, got shapes "
                       f"{sorted({im.shape for im in images})}")
    return self._detect(np.stack(images))

  # -------------------------------------------------------------------------------------------

  def _detect(self, images_BHWC: np.ndarray) -> list[list[Face]]:
    batch, height, width, _ = images_BHWC.shape
    images = images_BHWC
    ratio = (1.0, 1.0)
    if self.max_side is not None and max(height, width) > self.max_side:
      s = self.max_side / max(height, width)
      small = (max(1, round(height * s)), max(1, round(width * s)))
      # OpenCV's uint8 INTER_AREA: the float64 window sums of area_resize would take ~7 GB on a
      # 12000x12000 photo, and this downscale is ours (facenet-pytorch has none), not a parity step.
      images = np.stack([cv2.resize(im, (small[1], small[0]), interpolation=cv2.INTER_AREA)
                         for im in images_BHWC])
      ratio = (width / small[1], height / small[0])
    if self.backend == "device":
      from jaxface.faces import mtcnn_device  # pylint: disable=import-outside-toplevel
      boxes, scores, points, inds = mtcnn_device.cascade(self, images)
    else:
      boxes, scores, points, inds = self._cascade(images)
    faces = [[] for _ in range(batch)]
    sx, sy = np.float32(ratio[0]), np.float32(ratio[1])
    boxes = boxes * np.array([sx, sy, sx, sy], np.float32)
    points = points * np.array([sx, sy], np.float32)
    for k in np.argsort(-scores, kind="stable"):
      faces[inds[k]].append(Face(box=boxes[k].astype(np.float32), score=float(scores[k]),
                                 landmarks=points[k].astype(np.float32)))
    return faces

  def _stage1(self, images: np.ndarray):
    """PNet over the pyramid: (K, 9) candidates and their photo indices after both NMS."""
    batch, height, width, _ = images.shape
    scales = pyramid_scales(height, width, self.min_face_size, self.factor)
    groups = {}  # Bucket shape -> list of (level, level image batch).
    dtype = _sum_dtype(images)
    row_csum = _cumsum0(images, 1, dtype)  # Shared by all levels: each picks its row windows.
    for level, scale in enumerate(scales):
      size = (int(height * scale + 1), int(width * scale + 1))
      level_images = _area_from_row_csum(row_csum, size, dtype)
      groups.setdefault((_bucket(size[0]), _bucket(size[1])), []).append(
          (level, _normalise(level_images)))
    per_level = {}
    for (bh, bw), members in groups.items():
      n = sum(len(x) for _, x in members)
      x = np.zeros((_pow2(n), bh, bw, 3), np.float32)
      valid = np.zeros((len(x), 2), np.int32)
      valid[:] = (bh, bw)
      j = 0
      for _, lvl in members:
        x[j:j + len(lvl), :lvl.shape[1], :lvl.shape[2]] = lvl
        valid[j:j + len(lvl)] = lvl.shape[1:3]
        j += len(lvl)
      prob, reg = (np.asarray(o) for o in _pnet_run(self.pnet, x, valid))
      j = 0
      for level, lvl in members:
        ph, pw = _pnet_map_size(lvl.shape[1]), _pnet_map_size(lvl.shape[2])
        per_level[level] = (prob[j:j + len(lvl), :ph, :pw], reg[j:j + len(lvl), :ph, :pw])
        j += len(lvl)
    cands, inds = [], []
    for level, scale in enumerate(scales):
      prob, reg = per_level[level]
      for b in range(batch):
        c = generate_boxes(prob[b], reg[b], scale, self.thresholds[0])
        c = c[nms(c[:, :4], c[:, 4], self.nms[0])]
        cands.append(c)
        inds.append(np.full(len(c), b, np.int64))
    if not cands:
      return np.zeros((0, 9), np.float32), np.zeros((0,), np.int64)
    cands, inds = np.concatenate(cands), np.concatenate(inds)
    keep = _batched_nms(cands[:, :4], cands[:, 4], inds, self.nms[1])
    return cands[keep], inds[keep]

  def _cascade(self, images: np.ndarray):
    """Returns boxes (N, 4), scores (N,), landmarks (N, 5, 2) and photo indices (N,)."""
    empty = (np.zeros((0, 4), np.float32), np.zeros((0,), np.float32),
             np.zeros((0, 5, 2), np.float32), np.zeros((0,), np.int64))
    cands, inds = self._stage1(images)
    if not len(cands):
      return empty
    boxes = _square(_regress(cands[:, :4], cands[:, 5:9], plus_one=False))

    # Stage 2: RNet on 24x24 crops.
    integral = _integral(images)
    x, ok = _crops(integral, inds, boxes, 24)
    boxes, inds = boxes[ok], inds[ok]
    if not len(boxes):
      return empty
    prob, reg = _run_padded(_rnet_run, self.rnet, x, least=16)
    passed = prob > self.thresholds[1]
    boxes, scores, reg, inds = boxes[passed], prob[passed], reg[passed], inds[passed]
    keep = _batched_nms(boxes, scores, inds, self.nms[2])
    boxes, reg, inds = boxes[keep], reg[keep], inds[keep]
    boxes = _square(_regress(boxes, reg, plus_one=True))
    if not len(boxes):
      return empty

    # Stage 3: ONet on 48x48 crops; landmarks relative to the boxes ONet saw.
    x, ok = _crops(integral, inds, boxes, 48)
    boxes, inds = boxes[ok], inds[ok]
    if not len(boxes):
      return empty
    prob, reg, marks = _run_padded(_onet_run, self.onet, x, least=16)
    passed = prob > self.thresholds[2]
    boxes, scores, reg, marks, inds = (boxes[passed], prob[passed], reg[passed], marks[passed],
                                       inds[passed])
    one = np.float32(1)
    w = (boxes[:, 2] - boxes[:, 0] + one)[:, None]
    h = (boxes[:, 3] - boxes[:, 1] + one)[:, None]
    px = w * marks[:, :5] + boxes[:, 0:1] - one
    py = h * marks[:, 5:] + boxes[:, 1:2] - one
    points = np.stack([px, py], axis=2).astype(np.float32)
    boxes = _regress(boxes, reg, plus_one=True)
    keep = _batched_nms(boxes, scores, inds, self.nms[3], mode="min", plus_one=True)
    return boxes[keep], scores[keep].astype(np.float32), points[keep], inds[keep]


@functools.lru_cache(maxsize=None)
def default_detector() -> MTCNNDetector:
  """A shared detector with the default settings and the shipped weights."""
  return MTCNNDetector()
