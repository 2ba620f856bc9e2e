"""MTCNN's cascade as four jitted device programs (issue 16): no pixel or candidate leaves the
device between the photo upload and the final faces.

1. ``_pyramid_pnet``: the photo's exact summed-area table (int32), every pyramid level read off it
   (adaptive-average windows, as :func:`jaxface.faces.mtcnn.area_resize`), PNet on each level, and
   the mask of PNet cells at or above the threshold.
2. ``_stage1``: those cells gathered into a fixed-capacity array (row-major per level, levels in
   order, as the host loop visits them), boxes generated, the per-scale and the cross-scale NMS.
3. ``_stage2``: 24x24 crops gathered off the summed-area table, RNet, threshold, NMS, regression.
4. ``_stage3``: 48x48 crops, ONet, landmarks, regression, the final "min" NMS.

Between programs the host reads one count (how many candidates are live) to pick the next
program's capacity; nothing else comes back until the faces. Shapes are bucketed so that few
programs are compiled: the photo is zero-padded at the bottom/right to eight sizes per octave and
side (640x480 and most camera sizes are buckets themselves), each level keeps the shape it has for
the padded photo (the true size is a runtime input: cells outside it are masked), and candidate
capacities round up to four sizes per octave. The compiled programs are therefore one per
(photo bucket, batch) for stage 1's PNet, plus one per capacity bucket for the other stages.

The result equals the host cascade (``backend="host"``, the reference) up to float rounding:

* Window sums are exact in both (int32 here; two's-complement wrap-around keeps every difference
  exact while one window sums to less than 2**31). Means below 2**24 are one float32 division here
  against float64-then-float32 on the host (identical unless the double rounding bites); above
  2**24 (windows over 65,000 pixels, photos over ~3000 px) the mean is ``q + r / n``, within one
  float32 ulp.
* Box arithmetic is float32 in the host's order. XLA contracts ``a * b + c`` into fused
  multiply-adds (one rounding instead of two); :func:`_mul` rounds each product the host rounds,
  so boxes and crop bounds match numpy bit for bit.
* PNet runs each level at its own shape (the host batches levels that share a bucket), and RNet /
  ONet at other batch sizes: the convolutions sum in another order, a few float32 ulps of the
  network outputs.
* Greedy NMS is the unique fixed point of "kept = not overlapped by an earlier kept box", reached
  by iterating that rule over the whole overlap matrix (each pass fixes at least the next box in
  score order); ties in score keep the earlier candidate, as the host's stable sort.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxface.faces import mtcnn_nets as host

_EXACT_F32 = 2**24  # Integers below this convert to float32 exactly.


def bucket_side(n: int) -> int:
  """Pads a photo side to one of eight sizes per octave (at most 12.5 % padding)."""
  step = 1 << max(3, n.bit_length() - 4)
  return -(-n // step) * step


def capacity(n: int, least: int) -> int:
  """A candidate capacity: ``n`` rounded up to two sizes per octave (2**k, 1.5 * 2**k), at
  least ``least``: at most 50 % (about 20 % on average) of RNet / ONet work is padding, and a
  stage compiles once per capacity (3-5 CPU seconds each)."""
  n = max(n, 1)
  top = 1 << (n - 1).bit_length()
  return max(least, top * 3 // 4 if n <= top * 3 // 4 else top)


def _mul(a, b, zero):
  """``a * b`` rounded to float32 before any following add: ORs a runtime zero into the bits, so
  XLA cannot fuse the product into a multiply-add (numpy rounds the product, then adds)."""
  p = lax.bitcast_convert_type(a * b, jnp.int32) | zero
  return lax.bitcast_convert_type(p, jnp.float32)


def _cumsum0(x, axis: int):
  """Inclusive prefix sums along ``axis`` with a leading zero. On the CPU a sequential scan
  carrying one row (as fast as numpy; XLA:CPU lowers ``jnp.cumsum`` to a reduce_window and the
  log-depth associative scan does 9 full passes: both 2x slower); elsewhere the log-depth scan
  (one kernel per pass instead of one per row)."""
  if jax.default_backend() == "cpu":
    moved = jnp.moveaxis(x, axis, 0)

    def step(carry, row):
      carry = carry + row
      return carry, carry

    _, c = lax.scan(step, jnp.zeros_like(moved[0]), moved)
    c = jnp.moveaxis(c, 0, axis)
  else:
    c = lax.associative_scan(jnp.add, x, axis=axis)
  pad = [(0, 0)] * x.ndim
  pad[axis] = (1, 0)
  return jnp.pad(c, pad)


def _mean(sums, counts):
  """Window means of exact int32 ``sums`` over int32 ``counts`` (>= 1), rounded as the host's
  float64 division then float32 (see the module docstring)."""
  direct = sums.astype(jnp.float32) / counts.astype(jnp.float32)
  q = sums // counts
  split = q.astype(jnp.float32) + (sums - q * counts).astype(jnp.float32) / counts.astype(
      jnp.float32)
  return jnp.where(sums < _EXACT_F32, direct, split)


def _normalise(x):
  return (x - jnp.float32(127.5)) * jnp.float32(0.0078125)


# ---------------------------------------------------------------------------------------------
# Host-side tables (one per true photo size, cached): pyramid windows and level sizes.


class _Plan:
  """Static shapes of one photo bucket and the runtime tables of one true photo size."""

  def __init__(self, height: int, width: int, min_face_size: float, factor: float):
    self.bucket = (bucket_side(height), bucket_side(width))
    bh, bw = self.bucket
    scales = host.pyramid_scales(bh, bw, min_face_size, factor)
    true_scales = host.pyramid_scales(height, width, min_face_size, factor)
    # The true pyramid is a prefix of the bucket's (same repeated products, fewer levels).
    assert true_scales == scales[:len(true_scales)], (true_scales, scales)
    self.scales = tuple(float(np.float32(s)) for s in scales)
    # Each level keeps its size for the padded photo (the host pads to four sizes per octave:
    # 640x480 runs 30 % faster on the CPU without that padding); levels of equal shape (photo
    # batches) run as one batch.
    self.level_shapes = tuple((int(bh * s + 1), int(bw * s + 1)) for s in scales)
    map_size = host._pnet_map_size  # pylint: disable=protected-access
    self.map_shapes = tuple((map_size(h), map_size(w)) for h, w in self.level_shapes)
    groups = {}
    for k, shape in enumerate(self.level_shapes):
      groups.setdefault(shape, []).append(k)
    self.groups = tuple(tuple(g) for g in groups.values())
    windows, level_hw, map_hw = [], [], []
    for k, (lh_b, lw_b) in enumerate(self.level_shapes):
      if k < len(true_scales):
        s = true_scales[k]
        lh, lw = int(height * s + 1), int(width * s + 1)
      else:
        lh = lw = 0
      windows.append((_windows(height, lh, lh_b), _windows(width, lw, lw_b)))
      level_hw.append((lh, lw))
      map_hw.append((max(0, map_size(lh)) if lh else 0, max(0, map_size(lw)) if lw else 0))
    self.tables = jax.device_put({
        "windows": windows, "level_hw": np.asarray(level_hw, np.int32),
        "map_hw": np.asarray(map_hw, np.int32), "hw": np.asarray((height, width), np.int32)})


def _windows(n_in: int, n_out: int, n_padded: int) -> np.ndarray:
  """(2, n_padded) int32 [start, end) input indices of the adaptive-average windows of the
  ``n_out`` true output cells; padding cells get the empty window [0, 0)."""
  out = np.zeros((2, n_padded), np.int32)
  i = np.arange(n_out)
  out[0, :n_out] = (i * n_in) // max(n_out, 1)
  out[1, :n_out] = -((-(i + 1) * n_in) // max(n_out, 1))
  return out


@functools.lru_cache(maxsize=256)
def plan(height: int, width: int, min_face_size: float, factor: float) -> _Plan:
  return _Plan(height, width, min_face_size, factor)


# ---------------------------------------------------------------------------------------------
# Stage 1: pyramid and PNet.


def _integral(images_BHWC):
  """(B, H+1, W+1, C) int32 summed-area table with a zero first row and column."""
  return _cumsum0(_cumsum0(images_BHWC.astype(jnp.int32), 1), 2)


def _levels(integral, tables):
  """The normalised pyramid levels, each (B, level rows, level cols, 3) at its padded shape:
  adaptive-average window sums read off the summed-area table (rows, then columns)."""
  levels = []
  for rows, cols in tables["windows"]:
    strip = jnp.take(integral, rows[1], axis=1) - jnp.take(integral, rows[0], axis=1)
    sums = jnp.take(strip, cols[1], axis=2) - jnp.take(strip, cols[0], axis=2)
    counts = jnp.maximum((rows[1] - rows[0])[:, None] * (cols[1] - cols[0])[None, :], 1)
    levels.append(_normalise(_mean(sums, counts[None, :, :, None])))
  return levels


@functools.partial(jax.jit, static_argnames=("threshold", "groups"))
def _pyramid_pnet(pnet, images_BHWC, tables, threshold: float, groups):
  """Returns the summed-area table, the flat PNet probabilities / offsets / above-threshold mask
  over all (level, photo, row, col) cells in the host's visiting order, and the mask's count.

  ``groups``: level indices of equal shape, run as one batch.
  """
  batch = images_BHWC.shape[0]
  integral = _integral(images_BHWC)
  levels = _levels(integral, tables)
  maps = [None] * len(levels)
  for group in groups:
    x = jnp.concatenate([levels[k] for k in group], axis=0)
    valid = jnp.concatenate([jnp.broadcast_to(tables["level_hw"][k], (batch, 2)) for k in group])
    prob, reg = host._pnet_run(pnet, x, valid)  # pylint: disable=protected-access
    for j, k in enumerate(group):
      maps[k] = (prob[j * batch:(j + 1) * batch], reg[j * batch:(j + 1) * batch])
  probs, regs, masks = [], [], []
  for (prob, reg), mhw in zip(maps, tables["map_hw"]):
    inside = ((jnp.arange(prob.shape[1]) < mhw[0])[:, None] &
              (jnp.arange(prob.shape[2]) < mhw[1])[None, :])
    probs.append(prob.reshape(-1))
    regs.append(reg.reshape(-1, 4))
    masks.append(((prob >= threshold) & inside[None]).reshape(-1))
  mask = jnp.concatenate(masks)
  return integral, jnp.concatenate(probs), jnp.concatenate(regs), mask, jnp.sum(mask)


# ---------------------------------------------------------------------------------------------
# NMS, boxes and crops.


def _nms(boxes, group, valid, threshold: float, zero, mode: str = "union",
         plus_one: bool = False):
  """Greedy NMS over candidates already in priority order: the kept mask. Pairs in different
  groups (photos, or photo and scale) never suppress each other; invalid entries are never kept
  and suppress nothing. Arithmetic as :func:`jaxface.faces.mtcnn.nms`."""
  one = jnp.float32(1.0 if plus_one else 0.0)
  x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
  area = (x2 - x1 + one) * (y2 - y1 + one)
  w = jnp.maximum(0.0, jnp.minimum(x2[:, None], x2[None]) - jnp.maximum(x1[:, None], x1[None]) +
                  one)
  h = jnp.maximum(0.0, jnp.minimum(y2[:, None], y2[None]) - jnp.maximum(y1[:, None], y1[None]) +
                  one)
  inter = _mul(w, h, zero)
  if mode == "min":
    denom = jnp.minimum(area[:, None], area[None])
  else:
    denom = area[:, None] + area[None] - inter
  # NaN (degenerate pairs) compares false: no overlap, as the host.
  n = len(boxes)
  earlier = jnp.arange(n)[:, None] < jnp.arange(n)[None]
  suppresses = (inter / denom > threshold) & (group[:, None] == group[None]) & earlier

  def body(state):
    keep, _ = state
    new = valid & ~jnp.any(suppresses & keep[:, None], axis=0)
    return new, jnp.any(new != keep)

  keep, _ = lax.while_loop(lambda s: s[1], body, (valid, jnp.bool_(True)))
  return keep


def _priority(scores, live):
  """Stable order by decreasing score, dead entries last (the host's stable argsort)."""
  return jnp.argsort(jnp.where(live, -scores, jnp.inf), stable=True)


def _regress(boxes, reg, plus_one: bool, zero):
  one = jnp.float32(1.0 if plus_one else 0.0)
  w = boxes[:, 2] - boxes[:, 0] + one
  h = boxes[:, 3] - boxes[:, 1] + one
  return boxes + _mul(reg, jnp.stack([w, h, w, h], axis=1), zero)


def _square(boxes):
  """``rerec`` (products by 0.5 are exact, so a fused multiply-add rounds as numpy does)."""
  w = boxes[:, 2] - boxes[:, 0]
  h = boxes[:, 3] - boxes[:, 1]
  side = jnp.maximum(w, h)
  half = jnp.float32(0.5)
  x1 = boxes[:, 0] + w * half - side * half
  y1 = boxes[:, 1] + h * half - side * half
  return jnp.stack([x1, y1, x1 + side, y1 + side], axis=1)


def _compact(keep, *arrays):
  """The kept rows first (order kept), padded with row 0; and their count."""
  sel = jnp.nonzero(keep, size=len(keep), fill_value=0)[0]
  return tuple(a[sel] for a in arrays), jnp.sum(keep)


def _crops(integral, image_inds, boxes, hw, size: int):
  """:func:`jaxface.faces.mtcnn._crops` on the device: normalised (N, size, size, 3) area-resized
  clamped crops and the mask of non-empty ones."""
  # Clipping keeps the int32 conversion defined; it changes no clamped bound below.
  b = jnp.trunc(jnp.clip(boxes, -2.0**30, 2.0**30)).astype(jnp.int32)
  x, y = jnp.maximum(b[:, 0], 1), jnp.maximum(b[:, 1], 1)
  ex, ey = jnp.minimum(b[:, 2], hw[1]), jnp.minimum(b[:, 3], hw[0])
  ok = (ey > y - 1) & (ex > x - 1)
  x, y = jnp.where(ok, x, 1), jnp.where(ok, y, 1)
  ex, ey = jnp.where(ok, ex, 1), jnp.where(ok, ey, 1)
  i = jnp.arange(size)

  def windows(first, n):
    n = n[:, None]
    return first[:, None] + (i * n) // size, first[:, None] - ((-(i + 1) * n) // size)

  r0, r1 = windows(y - 1, ey - y + 1)
  c0, c1 = windows(x - 1, ex - x + 1)
  # One gather from the flat table (four corner lookups per cell and channel): 2x faster to
  # compile than four (N, size, size) advanced-index gathers.
  _, hp, wp, ch = integral.shape
  rows = (image_inds * hp)[None, :, None] + jnp.stack([r0, r1])  # (2, N, S)
  corners = (rows * wp)[:, None, :, :, None] + jnp.stack([c0, c1])[None, :, :, None, :]
  v = jnp.take(integral.reshape(-1), corners[..., None] * ch + jnp.arange(ch), axis=0,
               mode="clip")  # (2, 2, N, S, S, C); every index is in range
  sums = v[1, 1] - v[0, 1] - v[1, 0] + v[0, 0]
  r0, r1, c0, c1 = r0[:, :, None], r1[:, :, None], c0[:, None, :], c1[:, None, :]
  counts = ((r1 - r0) * (c1 - c0))[..., None]
  return _normalise(_mean(sums, counts)), ok


# ---------------------------------------------------------------------------------------------
# Stages 1 (selection), 2 and 3.


@functools.partial(jax.jit, static_argnames=("size", "batch", "map_shapes", "scales",
                                             "nms_scale", "nms_pyramid"))
def _stage1(prob, reg, mask, zero, *, size: int, batch: int, map_shapes, scales,
            nms_scale: float, nms_pyramid: float):
  """Candidates (size, 4) squared boxes, their photo indices, and how many are live."""
  cells = np.array([batch * h * w for h, w in map_shapes], np.int64)
  starts = np.concatenate([[0], np.cumsum(cells)[:-1]]).astype(np.int32)
  idx = jnp.nonzero(mask, size=size, fill_value=0)[0].astype(jnp.int32)
  live = jnp.arange(size) < jnp.sum(mask)
  level = jnp.searchsorted(jnp.asarray(starts), idx, side="right").astype(jnp.int32) - 1
  within = idx - jnp.asarray(starts)[level]
  map_w = jnp.asarray(np.array([max(w, 1) for _, w in map_shapes], np.int32))[level]
  per_photo = jnp.asarray(np.array([max(h * w, 1) for h, w in map_shapes], np.int32))[level]
  photo, cell = within // per_photo, within % per_photo
  row, col = (cell // map_w).astype(jnp.float32), (cell % map_w).astype(jnp.float32)
  s = jnp.asarray(np.array(scales, np.float32))[level]
  two = jnp.float32(2)
  boxes = jnp.stack([jnp.floor((two * col + 1) / s), jnp.floor((two * row + 1) / s),
                     jnp.floor((two * col + 12) / s), jnp.floor((two * row + 12) / s)], axis=1)
  score, offsets = prob[idx], reg[idx]
  order = _priority(score, live)
  boxes, offsets, photo, level, live = (a[order] for a in (boxes, offsets, photo, level, live))
  kept = _nms(boxes, level * batch + photo, live, nms_scale, zero)
  kept = _nms(boxes, photo, kept, nms_pyramid, zero)
  boxes = _square(_regress(boxes, offsets, False, zero))
  return _compact(kept, boxes, photo)


@functools.partial(jax.jit, static_argnames=("threshold", "nms_threshold"))
def _stage2(rnet, integral, hw, boxes, photo, n, zero, *, threshold: float,
            nms_threshold: float):
  """RNet on the first ``n`` candidates: squared boxes for ONet, photo indices, live count."""
  crops, ok = _crops(integral, photo, boxes, hw, 24)
  prob, reg = host._rnet_run(rnet, crops)  # pylint: disable=protected-access
  passed = ok & (jnp.arange(len(boxes)) < n) & (prob > threshold)
  order = _priority(prob, passed)
  boxes, reg, photo, passed = (a[order] for a in (boxes, reg, photo, passed))
  kept = _nms(boxes, photo, passed, nms_threshold, zero)
  boxes = _square(_regress(boxes, reg, True, zero))
  return _compact(kept, boxes, photo)


@functools.partial(jax.jit, static_argnames=("threshold", "nms_threshold"))
def _stage3(onet, integral, hw, boxes, photo, n, zero, *, threshold: float,
            nms_threshold: float):
  """ONet on the first ``n`` candidates: boxes, scores, landmarks (N, 5, 2), photo indices."""
  crops, ok = _crops(integral, photo, boxes, hw, 48)
  prob, reg, marks = host._onet_run(onet, crops)  # pylint: disable=protected-access
  passed = ok & (jnp.arange(len(boxes)) < n) & (prob > threshold)
  one = jnp.float32(1)
  w = (boxes[:, 2] - boxes[:, 0] + one)[:, None]
  h = (boxes[:, 3] - boxes[:, 1] + one)[:, None]
  px = _mul(w, marks[:, :5], zero) + boxes[:, 0:1] - one
  py = _mul(h, marks[:, 5:], zero) + boxes[:, 1:2] - one
  points = jnp.stack([px, py], axis=2)
  boxes = _regress(boxes, reg, True, zero)
  order = _priority(prob, passed)
  boxes, prob, points, photo, passed = (a[order] for a in (boxes, prob, points, photo, passed))
  kept = _nms(boxes, photo, passed, nms_threshold, zero, mode="min", plus_one=True)
  return _compact(kept, boxes, prob, points, photo)


# ---------------------------------------------------------------------------------------------
# The cascade.

_ZERO = None


def _zero():
  global _ZERO  # pylint: disable=global-statement
  if _ZERO is None:
    _ZERO = jax.device_put(np.zeros((), np.int32))
  return _ZERO


def cascade(detector, images_BHWC: np.ndarray):
  """The device cascade of ``detector`` (an MTCNNDetector) on same-size uint8 photos: boxes
  (N, 4), scores (N,), landmarks (N, 5, 2) and photo indices (N,) as numpy, in the order of the
  host cascade."""
  batch, height, width, _ = images_BHWC.shape
  p = plan(height, width, detector.min_face_size, detector.factor)
  bh, bw = p.bucket
  if batch > 1 and batch * (bh + 1) * (bw + 1) * 3 >= 2**31:  # int32 flat crop indices
    half = batch // 2
    parts = [cascade(detector, images_BHWC[:half]), cascade(detector, images_BHWC[half:])]
    parts[1][3][:] += half
    return tuple(np.concatenate(x) for x in zip(*parts))
  if (bh, bw) != (height, width):
    images_BHWC = np.pad(images_BHWC, ((0, 0), (0, bh - height), (0, bw - width), (0, 0)))
  zero = _zero()
  thr, nms = detector.thresholds, detector.nms
  integral, prob, reg, mask, count = _pyramid_pnet(detector.pnet, images_BHWC, p.tables,
                                                   threshold=thr[0], groups=p.groups)
  empty = (np.zeros((0, 4), np.float32), np.zeros((0,), np.float32),
           np.zeros((0, 5, 2), np.float32), np.zeros((0,), np.int64))
  count = int(count)
  if not count:
    return empty
  (boxes, photo), n = _stage1(prob, reg, mask, zero, size=capacity(count, 64), batch=batch,
                              map_shapes=p.map_shapes, scales=p.scales, nms_scale=nms[0],
                              nms_pyramid=nms[1])
  n = int(n)
  rows = capacity(n, 16)
  (boxes, photo), n = _stage2(detector.rnet, integral, p.tables["hw"], boxes[:rows],
                              photo[:rows], n, zero, threshold=thr[1], nms_threshold=nms[2])
  n = int(n)
  if not n:
    return empty
  rows = capacity(n, 4)
  (boxes, scores, points, photo), n = _stage3(
      detector.onet, integral, p.tables["hw"], boxes[:rows], photo[:rows], n, zero,
      threshold=thr[2], nms_threshold=nms[3])
  n = int(n)
  boxes, scores, points, photo = jax.device_get((boxes[:n], scores[:n], points[:n], photo[:n]))
  return (np.asarray(boxes, np.float32), np.asarray(scores, np.float32),
          np.asarray(points, np.float32), np.asarray(photo, np.int64))
