"""Geometric ops (resize, crops, flip, rotate, over-sampling) and the fused warp.

A ``GeometricOp`` plans an affine (drawing its random numbers and moving the box and landmarks)
and resamples the image and its maps through it; ``Pipeline(fuse=True)`` composes the plans of
consecutive geometric ops and resamples once (``fused_warp``). Coordinates follow
``jaxface.faces.crops``: pixel centres at integers.
"""

from __future__ import annotations

import abc
import math
from typing import Callable, Sequence

import cv2
import numpy as np

from data_pipelines.pp.registry import (Example, MAP_KEYS, Op, get_image, maps_at, pair, raw_maps,
                                        register, size_arg, float_arg, int_arg)
from jaxface.faces import crops
from jaxface.faces.types import LANDMARK_NAMES

# Landmark order after a horizontal mirror: the subject's left and right swap places.
_FLIP_ORDER = [LANDMARK_NAMES.index(n) for n in
               ("right_eye", "left_eye", "nose", "mouth_right", "mouth_left")]


def move_points(example: Example, F) -> None:
  """Maps the landmarks and the box (by its four corners) through the 2x3 affine ``F``
  (input -> output pixel coordinates)."""
  # Plain float arithmetic (float64, as numpy would): ~10x faster than numpy on so few points,
  # on flat lists (one numpy round trip per array).
  a, b, c, d, e, f = np.asarray(F, np.float64).ravel().tolist()
  lm = example.get("landmarks")
  if lm is not None:
    lm = np.asarray(lm)
    flat = lm.ravel().tolist()
    moved = []
    for x, y in zip(flat[0::2], flat[1::2]):
      moved += (a * x + b * y + c, d * x + e * y + f)
    example["landmarks"] = np.array(moved, np.float32).reshape(lm.shape)
  if example.get("box") is not None:
    x1, y1, x2, y2 = np.asarray(example["box"]).ravel().tolist()
    xs = (a * x1 + b * y1 + c, a * x2 + b * y1 + c, a * x1 + b * y2 + c, a * x2 + b * y2 + c)
    ys = (d * x1 + e * y1 + f, d * x2 + e * y1 + f, d * x1 + e * y2 + f, d * x2 + e * y2 + f)
    example["box"] = np.array([min(xs), min(ys), max(xs), max(ys)], np.float32)


def _translation(dx: float, dy: float) -> np.ndarray:
  return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])


def _scale_affine(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> np.ndarray:
  """The affine from ``dst_hw`` pixel coordinates to ``src_hw`` ones when both grids cover the
  same field of view (pixel centres: x_src = (x_dst + 0.5) * W_src / W_dst - 0.5)."""
  sx, sy = src_hw[1] / dst_hw[1], src_hw[0] / dst_hw[0]
  return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])


def warp(image: np.ndarray, A: np.ndarray, size: int) -> np.ndarray:
  """``crops.warp``, bit for bit, with a faster path for axis-aligned affines without area
  reduction (a box crop at about its native size, as ``face_crop`` makes)."""
  A = np.asarray(A, np.float64).reshape(2, 3)
  img = np.asarray(image)
  if (A[0, 1] != 0 or A[1, 0] != 0 or not np.all(np.isfinite(A)) or img.ndim not in (2, 3)
      or img.dtype.kind not in "ui" or img.dtype.itemsize > 2 or img.size == 0
      or not 1e-12 <= abs(A[0, 0] * A[1, 1]) < 4.0 or int(size) != size or size < 1):
    return crops.warp(image, A, size)  # the general case (and its argument errors)
  # Same arithmetic as crops.warp, element for element, but separable: x depends on the column
  # only and y on the row only, so each needed row is interpolated horizontally once and the
  # rows are then blended, instead of four 2-D gathers over float64 coordinate grids.
  dtype, flat = img.dtype, img.ndim == 2
  if flat:
    img = img[:, :, None]
  h, w, c = img.shape
  grid = np.arange(size, dtype=np.float64)
  x, y = A[0, 0] * grid + A[0, 2], A[1, 1] * grid + A[1, 2]
  x0, y0 = np.floor(x), np.floor(y)
  fx = (x - x0).astype(np.float32)
  fy = (y - y0).astype(np.float32)[:, None]
  xa = np.clip(x0, 0, w - 1).astype(np.intp)
  xb = np.clip(x0 + 1, 0, w - 1).astype(np.intp)
  ya = np.clip(y0, 0, h - 1).astype(np.intp)
  yb = np.clip(y0 + 1, 0, h - 1).astype(np.intp)
  used, where = np.unique(np.concatenate([ya, yb]), return_inverse=True)
  rows = np.take(img, used, axis=0)
  n = len(used)
  # The weights are laid out along the contiguous (column, channel) axis: numpy multiplies a
  # long inner axis many times faster than it broadcasts a (size, 1) weight over 3 channels.
  horiz = _gather_columns(rows, xa).reshape(n, size * c).astype(np.float32)
  horiz *= np.repeat(1 - fx, c)
  right = _gather_columns(rows, xb).reshape(n, size * c).astype(np.float32)
  right *= np.repeat(fx, c)
  horiz += right
  out = np.take(horiz, where[:size], axis=0)
  out *= 1 - fy
  bottom = np.take(horiz, where[size:], axis=0)
  bottom *= fy
  out += bottom
  info = np.iinfo(dtype)
  np.rint(out, out=out)
  np.clip(out, info.min, info.max, out=out)
  out = out.astype(dtype).reshape(size, size, c)
  return out[:, :, 0] if flat else out


def _gather_columns(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
  """``rows[:, cols]`` for (n, w, c) rows; OpenCV's nearest-neighbour remap at integer
  coordinates is the same copy, several times faster than numpy's gather of 3-byte pixels."""
  n, w, c = rows.shape
  if rows.dtype == np.uint8 and c in (1, 3, 4) and max(n, w, len(cols)) < 32767:
    xy = np.empty((n, len(cols), 2), np.int16)
    xy[:, :, 0] = cols
    xy[:, :, 1] = np.arange(n, dtype=np.int16)[:, None]
    out = cv2.remap(rows, xy, None, cv2.INTER_NEAREST)
    return out.reshape(n, len(cols), c)
  return np.take(rows, cols, axis=1)


class GeometricOp(Op):
  """An op that only moves pixels: its output samples its input through one affine.

  ``plan`` draws the op's random numbers, moves "box" and "landmarks" and returns the affine;
  ``apply`` then resamples the image and its maps with the op's own method (exact, op by op).
  ``Pipeline(pipe, fuse=True)`` instead composes the plans of consecutive geometric ops and
  resamples once (``fused_warp``); both draw the same random numbers and move the points alike.
  """

  @abc.abstractmethod
  def plan(self, example: Example, hw: tuple[int, int],
           rng: np.random.Generator | None) -> tuple[np.ndarray | None, tuple[int, int]]:
    """Returns ``(A, (oh, ow))``: ``A`` the 2x3 affine from output to input pixel coordinates
    (None: the identity, nothing moves) and the output size; moves ``example``'s points."""

  @abc.abstractmethod
  def resample(self, a: np.ndarray, A: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """This op's own resampling of one image or map (at the image's size) through ``A``."""

  def apply(self, example, rng):
    A, out_hw = self.plan(example, get_image(example, self.name).shape[:2], rng)
    if A is None:
      return example
    return resample_arrays(example, self.name, A, out_hw, self.resample)


def resample_arrays(example: Example, op: str, A: np.ndarray, out_hw: tuple[int, int],
                     resample: Callable) -> Example:
  """The image and its maps through ``resample(a, A, out_hw)`` (the points are already moved)."""
  img = get_image(example, op)
  for key, m in maps_at(example, op, img.shape[:2]).items():
    example[key] = resample(m, A, out_hw)
  example["image"] = resample(img, A, out_hw)
  return example


class MapSourceOp(Op):
  """An op that brings in a map in the current image frame (``cached_saliency``); a fused pipeline
  moves such a map through the geometric ops after it without resampling it twice."""

  @abc.abstractmethod
  def attach(self, example: Example) -> np.ndarray:
    """Takes the new uint8 (h, w) map out of ``example`` (any size: it covers the current image)
    and removes the maps it replaces."""

  def apply(self, example, rng):
    img = example.get("image")
    if not isinstance(img, np.ndarray) or img.ndim != 3:
      raise ValueError(f"{self.name}: needs one decoded (H, W, 3) image (put it after the crop)")
    m = self.attach(example)
    h, w = img.shape[:2]
    if m.shape != (h, w):
      m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)  # as maps_at resizes maps
    example["saliency"] = m
    return example


@register("resize")
class Resize(GeometricOp):
  """Resizes to ``size`` (an int for a square, or (h, w)); the aspect ratio is not kept.

  OpenCV's INTER_AREA when shrinking (no aliasing), INTER_LINEAR otherwise; both use the pixel
  centre convention, so a point moves as x' = (x + 0.5) * w / W - 0.5.
  """

  def __init__(self, size: int | tuple[int, int]):
    self.size = size_arg(self.name, "size", size)

  def plan(self, example, hw, rng):
    out_hw = pair(self.size)
    move_points(example, _scale_affine(out_hw, hw))
    return _scale_affine(hw, out_hw), out_hw

  def resample(self, a, A, out_hw):
    (h, w), (oh, ow) = a.shape[:2], out_hw
    interp = cv2.INTER_AREA if oh <= h and ow <= w else cv2.INTER_LINEAR
    return cv2.resize(a, (ow, oh), interpolation=interp).reshape((oh, ow) + a.shape[2:])


def _window(a: np.ndarray, A: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
  """A copy of the ``out_hw`` window at the integer offset of translation ``A``."""
  top, left = int(A[1, 2]), int(A[0, 2])
  return a[top:top + out_hw[0], left:left + out_hw[1]].copy()


def _slice_crop(example: Example, op: str, top: int, left: int, oh: int, ow: int) -> Example:
  move_points(example, _translation(-left, -top))
  return resample_arrays(example, op, _translation(left, top), (oh, ow), _window)


def _check_fits(op: str, hw: tuple[int, int], oh: int, ow: int) -> tuple[int, int]:
  h, w = hw
  if oh > h or ow > w:
    raise ValueError(f"{op}: size ({oh}, {ow}) is larger than the image ({h}, {w}); "
                     "resize first")
  return h, w


class _WindowOp(GeometricOp):
  """A ``size`` window (int or (h, w)) at an integer offset: a copy of a slice."""

  def __init__(self, size: int | tuple[int, int]):
    self.size = size_arg(self.name, "size", size)

  @abc.abstractmethod
  def offset(self, h: int, w: int, oh: int, ow: int, rng) -> tuple[int, int]:
    """(top, left) of the window."""

  def plan(self, example, hw, rng):
    oh, ow = pair(self.size)
    h, w = _check_fits(self.name, hw, oh, ow)
    top, left = self.offset(h, w, oh, ow, rng)
    move_points(example, _translation(-left, -top))
    return _translation(left, top), (oh, ow)

  def resample(self, a, A, out_hw):
    return _window(a, A, out_hw)


@register("center_crop")
class CenterCrop(_WindowOp):
  """The central ``size`` window (int or (h, w)); an odd surplus leaves the extra row/column
  at the bottom/right, as Caffe's centre crop does."""

  def offset(self, h, w, oh, ow, rng):
    return (h - oh) // 2, (w - ow) // 2


@register("random_crop")
class RandomCrop(_WindowOp):
  """A ``size`` window (int or (h, w)) at a uniformly random integer offset."""
  random = True

  def offset(self, h, w, oh, ow, rng):
    return int(rng.integers(0, h - oh + 1)), int(rng.integers(0, w - ow + 1))


def _flip(a: np.ndarray) -> np.ndarray:
  """``a[:, ::-1].copy()``; OpenCV's flip makes the same uint8 array several times faster."""
  if a.dtype == np.uint8 and a.size and (a.ndim == 2 or (a.ndim == 3 and a.shape[2] <= 4)):
    return cv2.flip(a, 1).reshape(a.shape)  # (H, W, 1) comes back as (H, W)
  return a[:, ::-1].copy()


def _mirror_plan(example: Example, w: int) -> np.ndarray:
  """Mirrors the points of an image ``w`` wide; returns the (self-inverse) mirror affine."""
  # x -> (w - 1) - x mirrors pixel centres and pixel edges alike.
  A = np.array([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0]])
  move_points(example, A)
  if example.get("landmarks") is not None and np.shape(example["landmarks"]) == (5, 2):
    # The subject's left eye is now on the other side: keep the names true to the picture.
    example["landmarks"] = example["landmarks"][_FLIP_ORDER]
  return A


def _mirror(example: Example, op: str) -> Example:
  img = get_image(example, op)
  A = _mirror_plan(example, img.shape[1])
  return resample_arrays(example, op, A, img.shape[:2], lambda a, _A, size_arg: _flip(a))


@register("flip_lr")
class FlipLR(GeometricOp):
  """Mirrors left-right with probability 1/2, swapping left/right eyes and mouth corners."""
  random = True

  def plan(self, example, hw, rng):
    if rng.random() < 0.5:
      return _mirror_plan(example, hw[1]), hw
    return None, hw

  def resample(self, a, A, out_hw):
    return _flip(a)


@register("rotate")
class Rotate(GeometricOp):
  """Rotates about the image centre by an angle uniform in [-degrees, degrees] (positive =
  counter-clockwise on screen), bilinear, replicating the border pixels."""
  random = True

  def __init__(self, degrees: float):
    self.degrees = float_arg(self.name, "degrees", degrees, 0.0, 180.0)

  def plan(self, example, hw, rng):
    angle = float(rng.uniform(-self.degrees, self.degrees))
    h, w = hw
    M = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)  # input -> output
    move_points(example, M)
    return crops.invert_affine(M), hw

  def resample(self, a, A, out_hw):
    return cv2.warpAffine(a, A, (out_hw[1], out_hw[0]),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


@register("oversample10")
class Oversample10(Op):
  """GilNet's test-time over-sampling (Levi & Hassner, CVPR-W 2015): the four corner and the centre
  ``crop`` windows, then their mirrors, stacked: "image" (10, crop, crop, 3), maps (10, crop, crop), "box" (10, 4),
  "landmarks" (10, 5, 2) (mirrored views with left/right swapped). Comes last in a pipe."""

  def __init__(self, crop: int):
    self.crop = int_arg(self.name, "crop", crop)

  def apply(self, example, rng):
    c = self.crop
    h, w = _check_fits(self.name, get_image(example, self.name).shape[:2], c, c)
    offsets = [(0, 0), (0, w - c), (h - c, 0), (h - c, w - c), ((h - c) // 2, (w - c) // 2)]
    views = [_slice_crop(dict(example), self.name, t, l, c, c) for t, l in offsets]
    views += [_mirror(dict(v), self.name) for v in views]
    for key in ("image", "box", "landmarks") + MAP_KEYS:
      if example.get(key) is not None:
        example[key] = np.stack([v[key] for v in views])
    return example


# ----------------------------------------------------------------------------- fused geometry

# Shrinking by this factor or more (input pixels per output pixel, per axis) first averages the
# region over whole blocks of floor(factor) pixels, as ``crops.warp`` does, so that the bilinear
# warp after it never skips pixels; below it a bilinear sample still reads every input pixel.
SHRINK_PREFILTER = 2.0


def fused_steps(op_list: Sequence[Op]) -> list[list[Op]]:
  """Groups the ops: runs of geometric ops (with map sources inside) that hold two or more
  geometric ops become one fused step; every other op is a step of its own. A ``decode`` that
  defers (``decode(reduced=True)``) joins the run right after it, which then needs only one
  geometric op (it decides the scale the image is decoded at)."""
  steps, run = [], []

  def flush():
    geometric = sum(isinstance(op, GeometricOp) for op in run)
    if geometric >= 2 or (geometric and _defers(run[0])):
      steps.append(list(run))
    else:
      steps.extend([op] for op in run)
    run.clear()

  for op in op_list:
    if isinstance(op, (GeometricOp, MapSourceOp)):
      run.append(op)
    else:
      flush()
      if _defers(op):
        run.append(op)
      else:
        steps.append([op])
  flush()
  return steps


def _defers(op: Op) -> bool:
  return bool(getattr(op, "reduced", False)) and hasattr(op, "defer")


def check_deferred_decodes(op_list: Sequence[Op], fuse: bool) -> None:
  """Raises ``ValueError`` for a ``decode(reduced=True)`` that could not reduce anything (it
  would silently decode in full): without fused geometry, or not followed by a geometric op."""
  for i, op in enumerate(op_list):
    if not _defers(op):
      continue
    if not fuse:
      raise ValueError(f"{op}: decoding at a reduced scale needs fused geometry "
                       "(Pipeline(fuse=True), config.data.fuse_geometry=True)")
    after = next((o for o in op_list[i + 1:] if not isinstance(o, MapSourceOp)), None)
    if not isinstance(after, GeometricOp):
      raise ValueError(f"{op}: must come right before the geometric ops that shrink the image "
                       f"(it is followed by {after or 'nothing'})")


def reduction_scale(A: np.ndarray, hw: tuple[int, int]) -> int:
  """The largest of 1, 2, 4, 8 that is at most the shrink factor (input pixels per output pixel)
  of output -> input affine ``A`` along both axes: decoding at 1/scale then never drops below the
  output's sampling rate (the warp after it shrinks by less than 2 more, or block-averages)."""
  (a, b, _), (d, e, _) = np.asarray(A, np.float64).reshape(2, 3).tolist()
  k = min(math.hypot(a, b), math.hypot(d, e))
  scale = 1
  while scale < 8 and k >= 2 * scale and min(hw) >= 2 * scale:
    scale *= 2
  return scale


def reduced_affine(scale: int) -> np.ndarray:
  """Full-resolution pixel coordinates -> those of the 1/``scale`` decode: libjpeg's scaled IDCT
  turns each 8x8 block into (8/scale)^2 samples at the centres of scale x scale pixel groups, so
  reduced pixel i sits at full-resolution x = scale * i + (scale - 1) / 2."""
  return np.array([[1.0 / scale, 0.0, -(scale - 1) / (2.0 * scale)],
                   [0.0, 1.0 / scale, -(scale - 1) / (2.0 * scale)]])


def run_fused(run: Sequence[Op], example: Example, rng: np.random.Generator | None) -> Example:
  """Applies a run of geometric ops (and map sources) with one resampling per array; a deferring
  ``decode`` at the run's head decodes the image only once the run's affine is known."""
  example = dict(example)
  decoder, hw = None, None
  if _defers(run[0]):
    decoder, run = run[0], run[1:]
    hw = decoder.defer(example)  # None: decoded in full already
    if hw is None:
      decoder = None
  layers: dict[str, list] = {}
  if decoder is None:
    img = get_image(example, run[0].name)
    hw = img.shape[:2]
    layers["image"] = [img, None]
  else:
    layers["image"] = [None, None]  # the bytes, decoded below at the scale the affine allows
  full_hw = hw
  # Each array with the affine from the current frame to its own pixels (None: the identity).
  for key, m in raw_maps(example, run[0].name).items():
    layers[key] = [m, None if m.shape == hw else _flat(_scale_affine(m.shape, hw))]
  for op in run:
    if op.random and rng is None:
      raise ValueError(f"{op.name}: a random op needs an np.random.Generator")
    if isinstance(op, MapSourceOp):
      m = op.attach(example)
      for key in MAP_KEYS:
        layers.pop(key, None)
      layers["saliency"] = [m, None if m.shape == hw else _flat(_scale_affine(m.shape, hw))]
      continue
    A, out_hw = op.plan(example, hw, rng)
    if A is not None:
      A = _flat(A)
      for layer in layers.values():
        layer[1] = A if layer[1] is None else _compose(layer[1], A)
    hw = tuple(out_hw)
  if decoder is not None:
    A = layers["image"][1]
    scale = 1 if A is None else reduction_scale(A, full_hw)
    layers["image"][0] = decoder.finish(example, full_hw, scale)
    if scale > 1:
      layers["image"][1] = crops.compose_affine(reduced_affine(scale), A)
  for key, (a, A) in layers.items():
    if A is None and a.shape[:2] == hw:
      example[key] = a
    else:
      example[key] = fused_warp(a, _translation(0, 0) if A is None else A, hw)
  return example


def _flat(A) -> tuple[float, ...]:
  """A 2x3 affine as six Python floats (row-major)."""
  return tuple(np.asarray(A, np.float64).reshape(6).tolist())


def _compose(A: tuple[float, ...], B: tuple[float, ...]) -> tuple[float, ...]:
  """``crops.compose_affine`` (x -> A(B(x))) on flat affines: the same float64 operations in the
  same order, so the same numbers, without the numpy round trips (three to six per example)."""
  a0, a1, a2, a3, a4, a5 = A
  b0, b1, b2, b3, b4, b5 = B
  return (a0 * b0 + a1 * b3, a0 * b1 + a1 * b4, a0 * b2 + a1 * b5 + a2,
          a3 * b0 + a4 * b3, a3 * b1 + a4 * b4, a3 * b2 + a4 * b5 + a5)


def _whole_blocks(lo: int, hi: int, k: int, n: int) -> tuple[int, int]:
  """[lo, hi) grown to a multiple of ``k`` within [0, n) when it fits (else as much as fits)."""
  span = -(-(hi - lo) // k) * k
  hi = min(lo + span, n)
  return max(hi - span, 0), hi


def fused_warp(image: np.ndarray, A: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
  """``image`` sampled at ``A @ [x, y, 1]`` for each output pixel (x, y), bilinear (OpenCV's
  fixed-point weights), replicating the border.

  Only the region the output reads is touched; when ``A`` shrinks by ``SHRINK_PREFILTER`` or
  more along an axis, that region is first averaged over blocks of floor(factor) pixels
  (anti-aliasing, as ``crops.warp``).
  """
  (a, b, c), (d, e, f) = np.asarray(A, np.float64).reshape(2, 3).tolist()
  oh, ow = out_hw
  h, w = image.shape[:2]
  corners = ((-0.5, -0.5), (ow - 0.5, -0.5), (-0.5, oh - 0.5), (ow - 0.5, oh - 0.5))
  xs = [a * x + b * y + c for x, y in corners]
  ys = [d * x + e * y + f for x, y in corners]
  # The pixels the output's footprint touches, plus two for the bilinear neighbours, clipped to
  # the image: where the region meets the image's edge, replicating the region's edge is
  # replicating the image's.
  x0 = min(max(math.floor(min(xs)) - 2, 0), w - 1)
  y0 = min(max(math.floor(min(ys)) - 2, 0), h - 1)
  x1 = max(min(math.ceil(max(xs)) + 3, w), x0 + 1)
  y1 = max(min(math.ceil(max(ys)) + 3, h), y0 + 1)
  kx, ky = math.hypot(a, b), math.hypot(d, e)  # input pixels per output pixel, per axis
  if max(kx, ky) >= SHRINK_PREFILTER:
    fx, fy = max(1, int(kx)), max(1, int(ky))
    # Whole blocks (INTER_AREA at an integer factor is the exact block mean, and fast): grow the
    # region to a multiple of the block, inside the image where it fits.
    x0, x1 = _whole_blocks(x0, x1, fx, w)
    y0, y1 = _whole_blocks(y0, y1, fy, h)
    nw, nh = -(-(x1 - x0) // fx), -(-(y1 - y0) // fy)
    region = cv2.resize(image[y0:y1, x0:x1], (nw, nh), interpolation=cv2.INTER_AREA)
    region = region.reshape((nh, nw) + image.shape[2:])
    A = crops.compose_affine(_scale_affine((nh, nw), (y1 - y0, x1 - x0)),
                             np.array([[a, b, c - x0], [d, e, f - y0]]))
  else:
    region = image[y0:y1, x0:x1]
    A = np.array([[a, b, c - x0], [d, e, f - y0]])
  out = cv2.warpAffine(region, A, (ow, oh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                       borderMode=cv2.BORDER_REPLICATE)
  return out.reshape((oh, ow) + image.shape[2:])
