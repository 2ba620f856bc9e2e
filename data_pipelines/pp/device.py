"""Device geometry: the host decodes and plans, the accelerator resamples and reweights.

``DeviceGeometry(pipeline)`` splits a fused pipe ``decode | <geometric run> [| saliency(r)]`` in two:

* ``host(example, rng)`` (picklable, runs in the loader's threads and workers) decodes, draws the
  run's random numbers, moves the box and landmarks and composes the affines exactly as
  ``geometry.run_fused`` does (the same code path, so the same numbers, bit for bit), then picks
  the region of each array that the output reads, exactly as ``geometry.fused_warp`` does, and
  emits that region together with the warp in OpenCV's own fixed-point form instead of warping it.
* ``finish(batch)`` (jitted) does the warp and the reweighting on the device: OpenCV's
  ``warpAffine(INTER_LINEAR | WARP_INVERSE_MAP, BORDER_REPLICATE)`` reproduced in integer
  arithmetic, then ``saliency(r)``'s float32 reweighting and rounding. The output is the host
  fused pipe's, bit for bit (tested); it is uint8, as the host loader emits and the trainer's
  ``prepare`` normalises on the device.

Why bit-exact, not "within rounding": OpenCV's bilinear warp of uint8 images is integer
arithmetic. For output pixel (x, y) it takes ``X = (X0[y] + dx[x]) >> 5`` with
``dx[x] = round(M00 x 1024)``, ``X0[y] = round((M01 y + M02) 1024) + 16`` (AB_BITS = 10,
INTER_BITS = 5; the same for Y with row 1 of M), so a source coordinate in 1/32 pixel steps; the
four weights are ``(32 - fx)(32 - fy) ... `` in 1/1024 (its 15-bit table entries are exactly 32
times these), and the pixel is ``(sum w p + 512) >> 10``. The only float64 step is the rounding of
the affine's products to 1/1024, which the host does (``_fixed_point``: 2 (oh + ow) integers per
array, float64 as OpenCV); the device's part is integer, exact on every backend. The reweighting
is float32 ``x * ((1 - r) + r * m / peak)`` rounded half to even, as ``saliency._reweight`` computes
it (its OpenCV multiply rounds the float32 product half to even); the weights of the 256 map
levels for each possible peak are numpy's own (``weight_table``, a 256 KB constant), so the device
computes only the IEEE float32 product and its rounding.

Where the host path block-averages first (a shrink by ``geometry.SHRINK_PREFILTER`` = 2 or more:
``cv2.resize(INTER_AREA)`` of the region over whole blocks) that step stays on the host, exactly as
``fused_warp`` does it: it is one cheap pass that also shrinks what is sent by the block area, and
a data-dependent block size does not compile into one program. Only the bilinear warp after it runs
on the device.

Batch layout (``collate``, and the loader's batches with ``device_geometry=True``): for each array
``K`` in "image" and the maps ("saliency", "fixation") the run resamples,

* ``K``: uint8 (B, Hc, Wc, 3) for the image, (B, Hc, Wc) for a map: each example's source region
  at the top-left of a zero canvas; Hc, Wc = the batch's largest region side rounded up to a
  multiple of ``BUCKET`` (64), so a loader compiles at most one program per pair of buckets (a
  handful: a face crop's region is bounded by about 2 sqrt(2) times the output side);
* ``K.hw``: int32 (B, 2), the region's true (h, w): the border replicated is the region's, which is
  the image's wherever the output reaches past the image (``fused_warp`` clips the region to the
  image and grows it by two pixels beyond what the output reads), never the canvas padding;
* ``K.rows``: int32 (B, oh, 2), OpenCV's ``X0[y]``, ``Y0[y]`` (with the rounding offset, in 1/1024
  pixel); ``K.cols``: int32 (B, ow, 2), its ``dx[x]``, ``dy[x]``. (oh, ow) is the run's output size.

``finish`` returns the batch with "image" uint8 (B, oh, ow, 3), the maps uint8 (B, oh, ow) when
kept, and the other keys (labels, "mask") as they were; the ``K.*`` keys are consumed.

Pipes that cannot run this way fail at construction with one line naming the op: anything but
``decode`` before the geometric run (``detect``, ``color_jitter``: the host only decodes), any op
after it other than one final ``saliency(r)`` (a second run, ``oversample10``, an op after the
reweighting: they need the resampled pixels on the host), a pipe without fused geometry, and a run
of one geometric op (the host resamples that with the op's own method, e.g. ``cv2.resize``, which
the device warp does not reproduce). Nothing falls back to the host silently.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import cv2
import numpy as np

from data_pipelines.pp import geometry
from data_pipelines.pp.image import Decode
from data_pipelines.pp.pipeline import Pipeline
from data_pipelines.pp.registry import (BadExampleError, Example, MAP_KEYS, get_image, raw_maps)
from data_pipelines.pp.saliency import Saliency

BUCKET = 64  # canvas sides are multiples of this (few distinct shapes, little padding)
_AB_SCALE = 1024  # OpenCV's warpAffine: AB_BITS = 10 fractional bits for the affine's products
_ROUND_DELTA = 16  # AB_SCALE / INTER_TAB_SIZE / 2: rounds to the nearest 1/32 pixel
ARRAY_KEYS = ("image",) + MAP_KEYS
_SUFFIXES = (".hw", ".rows", ".cols")


class DeviceGeometryError(ValueError):
  """A pipe whose geometry cannot run on the device (the message names the op)."""


def _fail(op, why: str):
  raise DeviceGeometryError(f"device geometry: {op} {why}")


def check(pipeline: Pipeline) -> tuple[list, list, float | None]:
  """(ops before the run, the run, saliency r or None); raises ``DeviceGeometryError`` naming
  the first op that cannot run this way."""
  if not pipeline.fuse:
    raise DeviceGeometryError("device geometry needs fused geometry (Pipeline(pipe, fuse=True), "
                              "config.data.fuse_geometry = True)")
  ops = list(pipeline.ops)
  geometric = [isinstance(op, (geometry.GeometricOp, geometry.MapSourceOp)) for op in ops]
  for i, op in enumerate(ops):
    if geometric[i] or (i == 0 and isinstance(op, Decode)):
      continue
    if isinstance(op, Saliency) and any(geometric[:i]):
      if i + 1 < len(ops):
        _fail(ops[i + 1], f"comes after {op}: nothing may follow the reweighting, which runs "
              "on the device")
      continue
    if any(geometric[i + 1:]):
      _fail(op, "comes before or between the geometric ops: with device geometry the host only "
            "decodes (decode, first, is the only op allowed before them)")
    if any(geometric[:i]):
      _fail(op, "comes after the geometric ops: it needs the resampled pixels on the host; only "
            "one final saliency(r) may follow them")
    raise DeviceGeometryError(f"device geometry: the pipe {str(pipeline)!r} has no geometric "
                              "ops to run on the device")
  if not any(geometric):
    raise DeviceGeometryError(f"device geometry: the pipe {str(pipeline)!r} has no geometric "
                              "ops to run on the device")
  before, run, r = [], None, None
  for step in geometry.fused_steps(ops):
    if len(step) > 1 or geometry._defers(step[0]):  # pylint: disable=protected-access
      run = step
    elif isinstance(step[0], geometry.GeometricOp):
      _fail(step[0], "is the pipe's only geometric op: the host resamples a lone op with its own "
            "method, which the device warp does not reproduce (fuse it with another geometric "
            "op, or keep device geometry off)")
    elif isinstance(step[0], Saliency):
      r = step[0].r
    elif run is None and isinstance(step[0], Decode):
      before.append(step[0])
  if run is None:  # only map sources: nothing moves
    raise DeviceGeometryError(f"device geometry: the pipe {str(pipeline)!r} has no geometric "
                              "ops to run on the device")
  return before, run, r


class HostPlan:
  """The host's half (picklable: the loader's workers run it): decode, plan, pick regions."""

  def __init__(self, pipeline: Pipeline):
    self.pipeline = pipeline
    self.before, self.run, self.r = check(pipeline)

  @property
  def random(self) -> bool:
    return self.pipeline.random

  def __call__(self, example: Example, rng: np.random.Generator | None = None) -> Example:
    for op in self.before:
      example = op(example, rng)
    example, layers, out_hw = _plan_run(self.run, example, rng)
    if self.r is not None and not any(k in layers for k in MAP_KEYS):
      # As the host's saliency op, which finds no map: the loader skips and counts the example.
      raise BadExampleError(example.get("id"), f"saliency needs one of {MAP_KEYS}")
    for key, (a, A) in layers.items():
      if a.dtype != np.uint8:
        raise ValueError(f"example {example.get('id')!r}: {key!r} must be uint8 for device "
                         f"geometry, got {a.dtype}")
      region, R = _region(a, A, out_hw, identity=A is None)
      example[key] = region
      example[key + ".hw"] = np.array(region.shape[:2], np.int32)
      example[key + ".rows"], example[key + ".cols"] = _fixed_point(R, out_hw)
    return example

  def keys(self, keep_maps: bool) -> tuple[str, ...]:
    """The keys this plan adds that the loader must keep (the maps also when only the device's
    reweighting reads them)."""
    arrays = ("image",) + (MAP_KEYS if keep_maps or self.r is not None else ())
    return tuple(k + s for k in arrays for s in ("",) + _SUFFIXES)


def output_hw(example: Example) -> tuple[int, int]:
  """The (oh, ow) the device will give an example planned by ``HostPlan``."""
  return len(example["image.rows"]), len(example["image.cols"])


def _plan_run(run: Sequence, example: Example, rng) -> tuple[Example, dict, tuple[int, int]]:
  """``geometry.run_fused`` up to, not including, the warps: the same planning code in the same
  order (the same random draws, points and affines, bit for bit); returns the example, each
  array with its flat affine (output -> its pixels; None: the identity) and the output size."""
  # Kept line for line with run_fused; the device tests compare every output with it.
  # pylint: disable=protected-access
  example = dict(example)
  decoder, hw = None, None
  if geometry._defers(run[0]):
    decoder, run = run[0], run[1:]
    hw = decoder.defer(example)
    if hw is None:
      decoder = None
  layers: dict[str, list] = {}
  if decoder is None:
    img = get_image(example, run[0].name)
    hw = img.shape[:2]
    layers["image"] = [img, None]
  else:
    layers["image"] = [None, None]
  full_hw = hw
  for key, m in raw_maps(example, run[0].name).items():
    layers[key] = [m, None if m.shape == hw else
                   geometry._flat(geometry._scale_affine(m.shape, hw))]
  for op in run:
    if op.random and rng is None:
      raise ValueError(f"{op.name}: a random op needs an np.random.Generator")
    if isinstance(op, geometry.MapSourceOp):
      m = op.attach(example)
      for key in MAP_KEYS:
        layers.pop(key, None)
      layers["saliency"] = [m, None if m.shape == hw else
                            geometry._flat(geometry._scale_affine(m.shape, hw))]
      continue
    A, out_hw = op.plan(example, hw, rng)
    if A is not None:
      A = geometry._flat(A)
      for layer in layers.values():
        layer[1] = A if layer[1] is None else geometry._compose(layer[1], A)
    hw = tuple(out_hw)
  if decoder is not None:
    A = layers["image"][1]
    scale = 1 if A is None else geometry.reduction_scale(A, full_hw)
    layers["image"][0] = decoder.finish(example, full_hw, scale)
    if scale > 1:
      layers["image"][1] = geometry._flat(geometry.crops.compose_affine(
          geometry.reduced_affine(scale), A))
  for key in MAP_KEYS:
    example.pop(key, None)  # replaced by the layers' regions
  return example, {k: (a, A) for k, (a, A) in layers.items()}, (int(hw[0]), int(hw[1]))


def _region(image: np.ndarray, A, out_hw: tuple[int, int],
            identity: bool = False) -> tuple[np.ndarray, tuple[float, ...]]:
  """The region of ``image`` that ``fused_warp(image, A, out_hw)`` warps (block-averaged on the
  host where it prefilters) and the affine from output pixels to the region's pixels: warping
  the region with OpenCV gives ``fused_warp``'s array, bit for bit. ``identity``: run_fused's
  untouched array (no affine, already at the output size) becomes a warp by the identity, which
  copies every pixel exactly (weights 1024, 0, 0, 0)."""
  oh, ow = out_hw
  h, w = image.shape[:2]
  if identity:  # run_fused: untouched at the output size, else fused_warp by the identity
    A = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    if (h, w) == (oh, ow):
      return image, A
  a, b, c, d, e, f = A
  # From here on line for line fused_warp's choice of region and prefilter.
  corners = ((-0.5, -0.5), (ow - 0.5, -0.5), (-0.5, oh - 0.5), (ow - 0.5, oh - 0.5))
  xs = [a * x + b * y + c for x, y in corners]
  ys = [d * x + e * y + f for x, y in corners]
  x0 = min(max(math.floor(min(xs)) - 2, 0), w - 1)
  y0 = min(max(math.floor(min(ys)) - 2, 0), h - 1)
  x1 = max(min(math.ceil(max(xs)) + 3, w), x0 + 1)
  y1 = max(min(math.ceil(max(ys)) + 3, h), y0 + 1)
  kx, ky = math.hypot(a, b), math.hypot(d, e)
  if max(kx, ky) >= geometry.SHRINK_PREFILTER:
    fx, fy = max(1, int(kx)), max(1, int(ky))
    x0, x1 = geometry._whole_blocks(x0, x1, fx, w)  # pylint: disable=protected-access
    y0, y1 = geometry._whole_blocks(y0, y1, fy, h)  # pylint: disable=protected-access
    nw, nh = -(-(x1 - x0) // fx), -(-(y1 - y0) // fy)
    region = cv2.resize(image[y0:y1, x0:x1], (nw, nh), interpolation=cv2.INTER_AREA)
    region = region.reshape((nh, nw) + image.shape[2:])
    R = geometry.crops.compose_affine(
        geometry._scale_affine((nh, nw), (y1 - y0, x1 - x0)),  # pylint: disable=protected-access
        np.array([[a, b, c - x0], [d, e, f - y0]]))
    return region, tuple(np.asarray(R, np.float64).reshape(6).tolist())
  return image[y0:y1, x0:x1], (a, b, c - x0, d, e, f - y0)


def _fixed_point(A, out_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
  """OpenCV warpAffine's integer decomposition of output -> input affine ``A`` (imgwarp.cpp,
  WarpAffineInvoker): rows (oh, 2) = round((A01 y + A02) 1024) + 16 and the same with row 1;
  cols (ow, 2) = round(A00 x 1024), round(A10 x 1024). float64 products and round half to even
  (cvRound), as OpenCV computes them."""
  a, b, c, d, e, f = A
  oh, ow = out_hw
  y = np.arange(oh, dtype=np.float64)
  x = np.arange(ow, dtype=np.float64)
  rows = np.empty((oh, 2), np.int32)
  rows[:, 0] = np.rint((b * y + c) * _AB_SCALE)
  rows[:, 1] = np.rint((e * y + f) * _AB_SCALE)
  rows += _ROUND_DELTA
  cols = np.empty((ow, 2), np.int32)
  cols[:, 0] = np.rint(a * x * _AB_SCALE)
  cols[:, 1] = np.rint(d * x * _AB_SCALE)
  return rows, cols


# ----------------------------------------------------------------------------- batching


def canvas_side(n: int) -> int:
  """A canvas side for regions up to ``n`` pixels: ``n`` rounded up to a multiple of BUCKET."""
  return max(1, -(-int(n) // BUCKET)) * BUCKET


def stack_canvases(regions: Sequence[np.ndarray]) -> np.ndarray:
  """Regions (h_i, w_i[, C]) into one zero canvas (B, Hc, Wc[, C]), each at the top-left; Hc, Wc
  the largest sides rounded up to BUCKET."""
  hc = canvas_side(max(r.shape[0] for r in regions))
  wc = canvas_side(max(r.shape[1] for r in regions))
  out = np.zeros((len(regions), hc, wc) + regions[0].shape[2:], np.uint8)
  for i, r in enumerate(regions):
    out[i, :r.shape[0], :r.shape[1]] = r
  return out


def is_canvas_key(key: str) -> bool:
  return key in ARRAY_KEYS


def collate(examples: Sequence[Example]) -> dict[str, np.ndarray]:
  """Examples from ``HostPlan`` into the batch layout of the module docstring (numeric keys)."""
  batch = {}
  for key in examples[0]:
    values = [e[key] for e in examples]
    if is_canvas_key(key):
      batch[key] = stack_canvases(values)
    elif isinstance(values[0], (np.ndarray, int, float, np.number)):
      batch[key] = np.stack([np.asarray(v) for v in values])
  return batch


# ----------------------------------------------------------------------------- device


def _sample(canvas, hw, rows, cols):
  """One array's warp (jnp, one example): OpenCV's bilinear fixed-point sampling of the region
  ``canvas[:h, :w]`` with its edge replicated."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  hc, wc = canvas.shape[:2]
  flat = canvas.reshape((hc * wc, -1)).astype(jnp.int32)
  sx = (rows[:, None, 0] + cols[None, :, 0]) >> 5  # 1/32 pixel
  sy = (rows[:, None, 1] + cols[None, :, 1]) >> 5
  xi, yi, fx, fy = sx >> 5, sy >> 5, sx & 31, sy & 31
  x0, x1 = jnp.clip(xi, 0, hw[1] - 1), jnp.clip(xi + 1, 0, hw[1] - 1)
  y0, y1 = jnp.clip(yi, 0, hw[0] - 1), jnp.clip(yi + 1, 0, hw[0] - 1)
  gx, gy = 32 - fx, 32 - fy

  def tap(yy, xx, weight):
    return flat[yy * wc + xx] * weight[..., None]

  s = tap(y0, x0, gx * gy) + tap(y0, x1, fx * gy) + tap(y1, x0, gx * fy) + tap(y1, x1, fx * fy)
  out = ((s + 512) >> 10).astype(jnp.uint8)
  return out.reshape(out.shape[:2] + canvas.shape[2:])


def weight_table(r: float) -> np.ndarray:
  """float32 (256, 256): row p is ``saliency._reweight``'s weight per map level for a map whose
  peak is p, (1 - r) + r * level / p (row 0: an all-zero map, 1 - r), computed by numpy exactly
  as the host computes it. The device looks the weights up instead of recomputing them: XLA
  contracts (1 - r) + r * s into one fused multiply-add (one rounding instead of numpy's two;
  measured: 68 of 256 levels differ by an ulp at r = 0.3), and an ulp can move a product across
  a rounding boundary."""
  levels = np.arange(256, dtype=np.float32)
  table = np.empty((256, 256), np.float32)
  table[0] = (1.0 - r) + r * np.zeros_like(levels)
  for peak in range(1, 256):
    table[peak] = (1.0 - r) + r * (levels / np.float32(peak))
  return table


def _reweight(image, m, table):
  """``saliency._reweight`` on the device for one example: the uint8 image (oh, ow, 3) times the
  float32 weight of each map level (``weight_table``'s row for the map's peak), rounded half to
  even and saturated, as OpenCV's uint8 x float32 multiply on the host."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  lut = table[jnp.max(m).astype(jnp.int32)]
  weight = lut[m.astype(jnp.int32)]
  out = jnp.round(image.astype(jnp.float32) * weight[..., None])  # one IEEE product, rounded
  return jnp.clip(out, 0, 255).astype(jnp.uint8)


def _finish_arrays(arrays: dict, r: float | None, keep_maps: bool) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  out = {}
  for key in ARRAY_KEYS:
    if key in arrays:
      out[key] = jax.vmap(_sample)(arrays[key], arrays[key + ".hw"], arrays[key + ".rows"],
                                   arrays[key + ".cols"])
  if r is not None:
    m = next(out[k] for k in MAP_KEYS if k in out)  # the map saliency(r) reads, as on the host
    table = jnp.asarray(weight_table(r))  # a constant of the program
    out["image"] = jax.vmap(_reweight, in_axes=(0, 0, None))(out["image"], m, table)
  if not keep_maps:
    for key in MAP_KEYS:
      out.pop(key, None)
  return out


class DeviceGeometry:
  """A fused pipe split into the host's ``host`` (decode, plan) and the device's ``finish``.

  ``keep_maps``: whether ``finish`` returns the warped maps (a classifier whose pipe reweights
  needs only the image; the map still travels, for the reweighting). ``sharding``: where
  ``finish``'s jitted program puts its outputs (e.g. the trainer's batch sharding); None lets jax
  follow the inputs.
  """

  def __init__(self, pipeline: Pipeline, keep_maps: bool = True, sharding: Any = None):
    self.host = HostPlan(pipeline)
    self.keep_maps = keep_maps
    self._sharding = sharding
    self._jitted = None
    self.shapes_seen: set[tuple] = set()  # input shape signatures compiled (one program each)

  @property
  def r(self) -> float | None:
    return self.host.r

  def with_sharding(self, sharding: Any) -> "DeviceGeometry":
    """The same split whose ``finish`` places its outputs with ``sharding``."""
    return DeviceGeometry(self.host.pipeline, self.keep_maps, sharding)

  def finish(self, batch: dict[str, Any]) -> dict[str, Any]:
    """The batch with its regions warped (and reweighted) on the device; see the module
    docstring for the layout in and out."""
    import jax  # pylint: disable=g-import-not-at-top

    geo = {k: batch[k] for k in batch if k.split(".")[0] in ARRAY_KEYS}
    missing = [k + s for k in ARRAY_KEYS if k in geo for s in _SUFFIXES if k + s not in geo]
    if "image" not in geo or missing:
      raise ValueError(f"device geometry: the batch lacks {missing or ['image']}: it was not "
                       "made by a device-geometry loader (make_loader(device_geometry=True))")
    if self._jitted is None:
      fn = functools.partial(_finish_arrays, r=self.r, keep_maps=self.keep_maps)
      self._jitted = (jax.jit(fn) if self._sharding is None else
                      jax.jit(fn, out_shardings=self._sharding))
    self.shapes_seen.add(tuple(sorted((k, tuple(v.shape)) for k, v in geo.items())))
    out = {k: v for k, v in batch.items() if k not in geo}
    out.update(self._jitted(geo))
    return out
