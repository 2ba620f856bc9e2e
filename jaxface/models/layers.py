"""Layer primitives shared by the model zoo.

Each helper reproduces one reference semantics exactly (Caffe ceil pooling, Caffe LRN, align-corners
bilinear resize, torch adaptive average pooling, PReLU), because weight parity with the source
frameworks depends on these details: Caffe's and PyTorch's ceil_mode pooling rule, Caffe's LRN
(alpha divided by local_size), torch's UpsamplingBilinear2d / Caffe's Interp (align_corners=True).
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen import dtypes as flax_dtypes
from flax.linen import linear as flax_linear
from jax import lax

PaddingLike = str | int | Sequence[int | tuple[int, int]]
LOWERINGS = ("auto", "direct", "im2col", "tap_wgrad")
_CONV_DIMS = ("NHWC", "HWIO", "NHWC")
# XLA:CPU's direct convolution (and the two convolutions of its backward) loses to one matrix
# product over the patch matrix when the output map is tiny. Forward + backward, float32, best of 7
# interleaved calls (`python -m jaxface.bench conv`, 2-core EPYC): 2x2 outputs 48x faster as im2col
# (2106 -> 44 ms, batch 64, 512 channels), 4x4 a tie at batch 64 and 1.3x at batch 16. Hence:
# im2col up to 16 output pixels. 1x1 kernels need no patch copies and their backward is two matrix
# products: 1.9-7x faster as im2col at every measured size.
IM2COL_MAX_OUTPUT_AREA = 16
# On large maps XLA:CPU's backward-filter convolution (the kernel gradient) is the pathology: at
# batch 16 it takes 8-12x PyTorch's time at 56x56x256 and 28x28x512 (81 s vs 9.8 s, 30 s vs 2.6 s;
# the forward and the input gradient are on par with PyTorch), and 15x the time per output pixel
# of a 16x16 map. From ``LARGE_MAP_MIN_AREA`` output pixels per image (and past the image stem,
# whose backward has no input gradient) the rule takes "tap_wgrad" (XLA's forward and input
# gradient, the kernel gradient as one matrix product per tap), or "im2col" (whose kernel gradient
# is one matrix product over the patch matrix) for few input channels (at most
# ``IM2COL_MAX_LARGE_MAP_CHANNELS`` per group) while one image's patch matrix fits
# ``IM2COL_MAX_PATCH_BYTES_PER_IMAGE``. Forward + both gradients, ms, float32, this 2-core EPYC
# (`python -m jaxface.bench conv` times such shapes), direct / im2col / tap_wgrad:
# batch 16 at 56x56x64 249 / 173 / 192, 28x28x128 122 / 126 / 112, 28x28x512 2166 / 1316 / 1279,
# 14x14x512 418 / 323 / 323, 14x14x256 94 / 96 / 94; batch 64 at 16x16x64 72 / 63 / 60; batch 4
# at 224x224x64 2022 / 1156 / 676 (im2col's forward and input gradient copy 115 MB of patches
# an image). The limits are per image, so the choice never depends on the batch: one and eight
# devices (each its shard of the batch) run the same lowering, and a batch-polymorphic export
# (symbolic batch) can decide.
LARGE_MAP_MIN_AREA = 196  # 14x14: VGG's conv5, ResNet's 224 px layer3, 16x16 maps at 64 px
LARGE_MAP_MIN_CHANNELS = 16
IM2COL_MAX_LARGE_MAP_CHANNELS = 64
IM2COL_MAX_PATCH_BYTES_PER_IMAGE = 16 << 20
_FORCED_LOWERING: list[str | None] = [None]


@contextlib.contextmanager
def force_lowering(lowering: str | None):
  """Within the block, ``lowering="auto"`` convs traced use ``lowering`` (None: the rule).

  For benchmarks that compare lowerings in one process; jit caches keyed on the same function and
  shapes may hold the other lowering, so use it around fresh ``jit``/``lower`` calls.
  """
  if lowering not in (None, *LOWERINGS[1:]):
    raise ValueError(f"lowering must be one of {LOWERINGS[1:]} or None, got {lowering!r}")
  _FORCED_LOWERING.append(lowering)
  try:
    yield
  finally:
    _FORCED_LOWERING.pop()


def conv_pads(in_hw: Sequence[int], kernel_hw: Sequence[int], strides: Sequence[int],
              padding: PaddingLike) -> list[tuple[int, int]]:
  """Explicit (low, high) padding per spatial axis for any padding form ``nn.Conv`` takes."""
  pads = flax_linear.canonicalize_padding(padding, 2)
  if isinstance(pads, str):
    if pads not in ("SAME", "VALID"):
      raise ValueError(f"padding {pads!r} is not supported (SAME, VALID, ints or pairs)")
    return [tuple(p) for p in lax.padtype_to_pads(in_hw, kernel_hw, strides, pads)]
  return [(int(lo), int(hi)) for lo, hi in pads]


def choose_lowering(x_shape: Sequence[int], kernel_shape: Sequence[int],
                    strides: Sequence[int], pads: Sequence[tuple[int, int]],
                    backend: str | None = None, itemsize: int = 4) -> str:
  """The lowering :func:`conv2d` uses for ``lowering="auto"``: "direct", "im2col" or "tap_wgrad".

  Off the CPU always "direct" (cuDNN and the TPU compiler choose their own algorithms). On the CPU
  "im2col" for 1x1 kernels and for outputs of at most ``IM2COL_MAX_OUTPUT_AREA`` pixels; on large
  maps (at least ``LARGE_MAP_MIN_AREA`` output pixels, ``LARGE_MAP_MIN_CHANNELS`` input channels
  per group) "im2col" for at most ``IM2COL_MAX_LARGE_MAP_CHANNELS`` input channels per group while
  one image's patch matrix (``itemsize`` bytes a value) fits ``IM2COL_MAX_PATCH_BYTES_PER_IMAGE``,
  else "tap_wgrad"; "direct" in between. The batch size (``x_shape[0]``, possibly symbolic) never
  enters the choice.
  """
  backend = backend or jax.default_backend()
  if backend != "cpu":
    return "direct"
  kh, kw, cin_g = kernel_shape[:3]
  if (kh, kw) == (1, 1):
    return "im2col"
  ho, wo = (_out_size(n, k, s, p) for n, k, s, p in zip(x_shape[1:3], (kh, kw), strides, pads))
  if ho * wo <= IM2COL_MAX_OUTPUT_AREA:
    return "im2col"
  if ho * wo < LARGE_MAP_MIN_AREA or cin_g < LARGE_MAP_MIN_CHANNELS:
    return "direct"
  patch_bytes = ho * wo * kh * kw * x_shape[3] * itemsize  # one image's
  if cin_g <= IM2COL_MAX_LARGE_MAP_CHANNELS and patch_bytes <= IM2COL_MAX_PATCH_BYTES_PER_IMAGE:
    return "im2col"
  return "tap_wgrad"


def _out_size(n: int, k: int, s: int, pad: tuple[int, int]) -> int:
  return (n + pad[0] + pad[1] - k) // s + 1


def _taps(x_BHWC: jax.Array, kh: int, kw: int, strides: Sequence[int],
          pads: Sequence[tuple[int, int]]) -> list[jax.Array]:
  """The kh*kw (B, Ho, Wo, C) inputs of each kernel tap, in HWIO's (h, w) order: strided slices
  of the padded input.

  Plain slices (not ``lax.conv_general_dilated_patches``, a depthwise convolution with a one-hot
  kernel, 2x slower forward and up to 10x backward on XLA:CPU) copy values exactly, and their
  gradient is a sum of padded copies.
  """
  zero = jnp.zeros((), x_BHWC.dtype)
  x = lax.pad(x_BHWC, zero, ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))
  b, h, w, c = x.shape
  (sh, sw) = strides
  ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
  return [lax.slice(x, (0, i, j, 0), (b, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c),
                    (1, sh, sw, 1))
          for i in range(kh) for j in range(kw)]


def _im2col(x_BHWC: jax.Array, kh: int, kw: int, strides: Sequence[int],
            pads: Sequence[tuple[int, int]]) -> jax.Array:
  """(B, Ho, Wo, kh*kw, C) patches in HWIO's (h, w) tap order (:func:`_taps` stacked)."""
  taps = _taps(x_BHWC, kh, kw, strides, pads)
  return taps[0][:, :, :, None] if len(taps) == 1 else jnp.stack(taps, axis=3)


def _direct(x_BHWC, kernel_HWIO, strides, pads, groups, precision):
  return lax.conv_general_dilated(x_BHWC, kernel_HWIO, strides, pads,
                                  dimension_numbers=_CONV_DIMS, feature_group_count=groups,
                                  precision=precision)


def _tap_kernel_grad(x_BHWC, g_BHWC, kernel_shape, strides, pads, groups, precision):
  """d(loss)/d(kernel) of a convolution as one matrix product per kernel tap.

  Tap (i, j) of the kernel gradient is (its input slice)^T @ g, contracted over batch and output
  pixels: the same sum of products as XLA's backward-filter convolution, in another order.
  """
  kh, kw, cin_g, cout = kernel_shape
  b, ho, wo, _ = g_BHWC.shape
  cout_g = cout // groups
  out = []
  if groups == 1:
    # g^T @ tap, transposed: XLA folds both transposes into one product over the rows (no copy).
    # With the tap on the left, or a unit group dimension, XLA:CPU instead copied every tap into
    # a transposed (C, B*Ho*Wo) buffer for its matmul kernel: 1.7-2.3x slower at 224x224x64.
    g_t = g_BHWC.reshape(b * ho * wo, cout).T
    for t in _taps(x_BHWC, kh, kw, strides, pads):
      out.append(jnp.dot(g_t, t.reshape(b * ho * wo, cin_g), precision=precision).T)
    return jnp.stack(out).reshape(kernel_shape).astype(g_BHWC.dtype)
  g = g_BHWC.reshape(b * ho * wo, groups, cout_g)
  for t in _taps(x_BHWC, kh, kw, strides, pads):
    t = t.reshape(b * ho * wo, groups, cin_g)
    # (G, Cin/G, Cout/G): contract the rows, batch over the groups.
    d = lax.dot_general(t, g, (((0,), (0,)), ((1,), (1,))), precision=precision)
    out.append(jnp.transpose(d, (1, 0, 2)).reshape(cin_g, cout))
  return jnp.stack(out).reshape(kernel_shape).astype(g_BHWC.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _direct_tap_wgrad(x_BHWC, kernel_HWIO, strides, pads, groups, precision):
  """XLA's direct convolution and its input gradient; the kernel gradient by
  :func:`_tap_kernel_grad` (XLA:CPU's backward-filter convolution is up to 12x slower than
  PyTorch's at VGG's 28x28x512, see ``LARGE_MAP_MIN_AREA``)."""
  return _direct(x_BHWC, kernel_HWIO, strides, pads, groups, precision)


def _direct_tap_wgrad_fwd(x_BHWC, kernel_HWIO, strides, pads, groups, precision):
  return _direct(x_BHWC, kernel_HWIO, strides, pads, groups, precision), (x_BHWC, kernel_HWIO)


def _direct_tap_wgrad_bwd(strides, pads, groups, precision, residuals, g):
  x, kernel = residuals
  _, vjp_x = jax.vjp(lambda x: _direct(x, kernel, strides, pads, groups, precision), x)
  (dx,) = vjp_x(g)
  return dx, _tap_kernel_grad(x, g, kernel.shape, strides, pads, groups, precision)


_direct_tap_wgrad.defvjp(_direct_tap_wgrad_fwd, _direct_tap_wgrad_bwd)


def conv2d(x_BHWC: jax.Array, kernel_HWIO: jax.Array, strides: Sequence[int] = (1, 1),
           padding: PaddingLike = "SAME", feature_group_count: int = 1, precision: Any = None,
           lowering: str = "auto") -> jax.Array:
  """2-D convolution, NHWC x HWIO -> NHWC, equal to ``lax.conv_general_dilated`` up to rounding.

  ``lowering``: "direct" (``lax.conv_general_dilated``), "im2col" (patch matrix + one matrix
  product per group; a 1x1 kernel needs no patch copies), "tap_wgrad" (direct, with the kernel
  gradient as one matrix product per tap) or "auto" (:func:`choose_lowering`).
  Gradients come from autodiff of the chosen lowering ("tap_wgrad": its custom VJP). Grouped kernels
  (Caffe ``group``) have group-major outputs, as in ``lax.conv_general_dilated``.
  """
  if lowering not in LOWERINGS:
    raise ValueError(f"lowering must be one of {LOWERINGS}, got {lowering!r}")
  strides = tuple(strides)
  kh, kw, cin_g, cout = kernel_HWIO.shape
  pads = conv_pads(x_BHWC.shape[1:3], (kh, kw), strides, padding)
  if lowering == "auto":
    lowering = (_FORCED_LOWERING[-1] or
                choose_lowering(x_BHWC.shape, kernel_HWIO.shape, strides, pads,
                                itemsize=jnp.dtype(x_BHWC.dtype).itemsize))
  if lowering == "direct":
    return _direct(x_BHWC, kernel_HWIO, strides, pads, feature_group_count, precision)
  if lowering == "tap_wgrad":
    return _direct_tap_wgrad(x_BHWC, kernel_HWIO, strides, tuple(map(tuple, pads)),
                             feature_group_count, precision)
  g = feature_group_count
  cols = _im2col(x_BHWC, kh, kw, strides, pads)  # (B, Ho, Wo, kh*kw, C)
  b, ho, wo, taps, _ = cols.shape
  if g == 1:
    y = jnp.dot(cols.reshape(b * ho * wo, taps * cin_g), kernel_HWIO.reshape(taps * cin_g, cout),
                precision=precision)
  else:
    y = jnp.einsum("ntgc,tcgo->ngo", cols.reshape(b * ho * wo, taps, g, cin_g),
                   kernel_HWIO.reshape(taps, cin_g, g, cout // g), precision=precision)
  return y.reshape(b, ho, wo, cout)


class Conv(nn.Module):
  """2-D convolution with the parameters of ``nn.Conv`` (``kernel`` HWIO, ``bias``), lowered by
  :func:`conv2d` (the fastest exact lowering for the backend and shape).

  Same fields and defaults as ``nn.Conv`` for the 2-D NHWC case (an int ``kernel_size`` means a
  square kernel), plus ``lowering`` to force one. Checkpoints and importers written for
  ``nn.Conv`` load unchanged.
  """
  features: int
  kernel_size: int | Sequence[int]
  strides: int | Sequence[int] = 1
  padding: PaddingLike = "SAME"
  feature_group_count: int = 1
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Callable = flax_linear.default_kernel_init
  bias_init: Callable = nn.initializers.zeros_init()
  lowering: str = "auto"

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    if x_BHWC.ndim != 4:
      raise ValueError(f"Conv expects NHWC inputs, got shape {x_BHWC.shape}")
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    kernel_size, strides = pair(self.kernel_size), pair(self.strides)
    cin, g = x_BHWC.shape[-1], self.feature_group_count
    if cin % g or self.features % g:
      raise ValueError(f"feature_group_count {g} must divide the input ({cin}) and output "
                       f"({self.features}) channels")
    kernel = self.param("kernel", self.kernel_init, (*kernel_size, cin // g, self.features),
                        self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = flax_dtypes.promote_dtype(x_BHWC, kernel, bias, dtype=self.dtype)
    y = conv2d(x, kernel, strides, self.padding, g, self.precision, self.lowering)
    return y if bias is None else y + bias


def scaled(channels: int, width: float) -> int:
  """Channel count under a width multiplier (at least 1)."""
  return max(1, int(round(channels * width)))


def ceil_pool_size(size: int, window: int, stride: int, pad: int = 0) -> int:
  """Output size of a Caffe / torch ``ceil_mode=True`` pooling along one axis."""
  out = int(math.ceil((size + 2 * pad - window) / stride)) + 1
  # Caffe and torch drop a last window that would start inside the bottom/right padding only.
  if pad > 0 and (out - 1) * stride >= size + pad:
    out -= 1
  return out


def max_pool_ceil(x_BHWC: jax.Array, window: int, stride: int, pad: int = 0) -> jax.Array:
  """Max pooling with Caffe's ceil output size (also torch ``ceil_mode=True``).

  The missing bottom/right rows are emulated with ``-inf`` padding so they never win the max.
  """
  _, h, w, _ = x_BHWC.shape
  pads = []
  for size in (h, w):
    out = ceil_pool_size(size, window, stride, pad)
    high = (out - 1) * stride + window - size - pad
    pads.append((pad, max(high, 0)))
  return lax.reduce_window(
      x_BHWC, -jnp.inf, lax.max, (1, window, window, 1), (1, stride, stride, 1),
      ((0, 0), pads[0], pads[1], (0, 0)))


def max_pool_floor(x_BHWC: jax.Array, window: int, stride: int, pad: int = 0) -> jax.Array:
  """Max pooling with floor output size and symmetric ``-inf`` padding (torch default).

  On XLA:CPU, tiling windows (window == stride, no padding: VGG's 2x2) take :func:`_tiled_max_pool`
  (its forward and backward 1.4-2.8x faster than ``reduce_window`` and its select-and-scatter
  gradient at VGG's maps); elsewhere, and on other backends, ``reduce_window``.
  """
  if window == stride and pad == 0 and jax.default_backend() == "cpu":
    return _tiled_max_pool(x_BHWC, window)
  return nn.max_pool(x_BHWC, (window, window), (stride, stride), ((pad, pad), (pad, pad)))


def _window_major(x_BHWC: jax.Array, k: int) -> jax.Array:
  """(B, Ho, k, Wo, k, C) view of the floor-cropped map: window (i, j) of output (h, w) is
  ``[:, h, i, w, j]``."""
  b, h, w, c = x_BHWC.shape
  ho, wo = h // k, w // k
  return x_BHWC[:, :ho * k, :wo * k].reshape(b, ho, k, wo, k, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _tiled_max_pool(x_BHWC: jax.Array, k: int) -> jax.Array:
  """k x k max pooling with stride k and floor size: a max over reshaped window axes, no
  ``reduce_window``. Its gradient (custom VJP) routes each output's cotangent to the first
  maximum of its window in row-major order, the element XLA's select-and-scatter (``ge``
  selection) picks for ``reduce_window``'s gradient, so ties (ReLU zeros) get the same gradient.
  """
  return jnp.max(_window_major(x_BHWC, k), axis=(2, 4))


def _tiled_max_pool_fwd(x_BHWC, k):
  y = _tiled_max_pool(x_BHWC, k)
  return y, (x_BHWC, y)


def _tiled_max_pool_bwd(k, residuals, g):
  x, y = residuals
  xw = _window_major(x, k)
  taken = jnp.zeros(y.shape, bool)
  rows = []
  for i in range(k):
    cols = []
    for j in range(k):
      first = (xw[:, :, i, :, j] == y) & ~taken
      taken = taken | first
      cols.append(jnp.where(first, g, jnp.zeros((), g.dtype)))
    rows.append(jnp.stack(cols, axis=3))  # (B, Ho, Wo, k, C)
  dx = jnp.stack(rows, axis=2).reshape(x.shape[0], y.shape[1] * k, y.shape[2] * k, x.shape[3])
  _, h, w, _ = x.shape
  return (jnp.pad(dx, ((0, 0), (0, h - dx.shape[1]), (0, w - dx.shape[2]), (0, 0))),)


_tiled_max_pool.defvjp(_tiled_max_pool_fwd, _tiled_max_pool_bwd)


def lrn_caffe(x_BHWC: jax.Array, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
              k: float = 1.0) -> jax.Array:
  """Caffe ACROSS_CHANNELS local response normalisation (alpha divided by ``size``).

  Equal to ``torch.nn.LocalResponseNorm(size, alpha, beta, k)``; channels outside the range add
  zero.
  """
  half = size // 2
  sq = jnp.square(x_BHWC.astype(jnp.float32))
  summed = lax.reduce_window(sq, 0.0, lax.add, (1, 1, 1, size), (1, 1, 1, 1),
                             ((0, 0), (0, 0), (0, 0), (half, size - 1 - half)))
  return (x_BHWC / jnp.power(k + (alpha / size) * summed, beta)).astype(x_BHWC.dtype)


def interpolate_axis(x: jax.Array, axis: int, coords: np.ndarray) -> jax.Array:
  """Linear interpolation of ``x`` along ``axis`` at (static) source coordinates, edge-clamped."""
  n = x.shape[axis]
  coords = np.clip(np.asarray(coords, np.float64), 0.0, n - 1)
  i0 = np.floor(coords).astype(np.int32)
  i1 = np.minimum(i0 + 1, n - 1)
  frac = (coords - i0).astype(np.float32)
  shape = [1] * x.ndim
  shape[axis] = len(coords)
  frac = jnp.asarray(frac, dtype=x.dtype).reshape(shape)
  a = jnp.take(x, jnp.asarray(i0), axis=axis)
  b = jnp.take(x, jnp.asarray(i1), axis=axis)
  return a + (b - a) * frac


def align_corners_coords(n_in: int, n_out: int) -> np.ndarray:
  """Source coordinates of bilinear resizing with ``align_corners=True``."""
  if n_out == 1:
    return np.zeros((1,))
  return np.arange(n_out) * ((n_in - 1) / (n_out - 1))


def resize_bilinear_align_corners(x_BHWC: jax.Array, size: Sequence[int]) -> jax.Array:
  """Bilinear resize with align_corners=True (Caffe ``Interp``, torch ``UpsamplingBilinear2d``)."""
  h, w = int(size[0]), int(size[1])
  y = interpolate_axis(x_BHWC, 1, align_corners_coords(x_BHWC.shape[1], h))
  return interpolate_axis(y, 2, align_corners_coords(x_BHWC.shape[2], w))


def resize_bilinear_half_pixel(x_BHWC: jax.Array, size: Sequence[int]) -> jax.Array:
  """Bilinear resize with half-pixel centres and no antialiasing (cv2 INTER_LINEAR, torch
  ``align_corners=False``)."""
  b, _, _, c = x_BHWC.shape
  return jax.image.resize(x_BHWC, (b, int(size[0]), int(size[1]), c), method="linear",
                          antialias=False)


def adaptive_avg_pool(x_BHWC: jax.Array, size: Sequence[int]) -> jax.Array:
  """torch ``AdaptiveAvgPool2d``: cell i averages ``floor(i*In/Out) .. ceil((i+1)*In/Out)-1``."""
  _, h, w, _ = x_BHWC.shape
  oh, ow = int(size[0]), int(size[1])
  if (h, w) == (oh, ow):
    return x_BHWC
  if h % oh == 0 and w % ow == 0:
    kh, kw = h // oh, w // ow
    return nn.avg_pool(x_BHWC, (kh, kw), (kh, kw))

  def pool_axis(t, axis, n_in, n_out):
    cells = []
    for i in range(n_out):
      start = (i * n_in) // n_out
      end = -((-(i + 1) * n_in) // n_out)
      cells.append(jnp.mean(lax.slice_in_dim(t, start, end, axis=axis), axis=axis, keepdims=True))
    return jnp.concatenate(cells, axis=axis)

  return pool_axis(pool_axis(x_BHWC, 1, h, oh), 2, w, ow)


def flatten_hwc(x_BHWC: jax.Array) -> jax.Array:
  """NHWC flatten (H, W, C order). Importers permute foreign dense rows to this order."""
  return x_BHWC.reshape(x_BHWC.shape[0], -1)


class PReLU(nn.Module):
  """Parametric ReLU with one slope per channel: ``max(0, x) + a_c * min(0, x)``."""
  init_slope: float = 0.25
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    a = self.param("alpha", nn.initializers.constant(self.init_slope), (x.shape[-1],),
                   self.param_dtype)
    return jnp.maximum(x, 0) + a.astype(x.dtype) * jnp.minimum(x, 0)


class Classifier(nn.Module):
  """Fields shared by the classifier backbones (AlexNet, VGG, GilNet).

  ``num_classes=0`` makes the model return its pre-logits, ``features_only`` its last conv map;
  ``width`` scales every channel count; ``dtype`` is the computation dtype (parameters stay f32).
  """
  num_classes: int = 1000
  width: float = 1.0
  dtype: Any = jnp.float32
  dropout_rate: float = 0.5
  features_only: bool = False
