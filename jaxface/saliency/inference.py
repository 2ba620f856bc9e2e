"""ML-Net inference: the reference pre- and post-processing around a jitted model.

The reference is ML-Net's released code (M. Cornia, L. Baraldi, G. Serra, R. Cucchiara, "A Deep
Multi-Level Network for Saliency Prediction", ICPR 2016, arXiv:1609.01064; the authors' Keras 1 /
Theano code, marcellacornia/mlnet, ``utilities.py`` and ``main.py``; it reads images with
OpenCV, hence BGR 0..255).

* :func:`preprocess` turns RGB uint8 images into ML-Net input: aspect-preserving bilinear resize
  to fit ``size``, centred on a zero canvas, RGB -> BGR, minus the ImageNet BGR mean. The trainer
  uses the same function when it trains ML-Net, so training and inference see identical input.
* :func:`postprocess` turns the stride-8 output into maps covering the original image: resize
  (bilinear) so it covers the image keeping its aspect, centre-crop, divide by the maximum.
  The reference does not blur; ``blur_sigma > 0`` adds an optional Gaussian blur.
* :func:`load_mlnet` builds the model and its variables from an imported ``.npz`` weight file,
  an ML-Net training workdir, or a ``(variables, model_name, model_kwargs)`` triple, together
  with a sha256 that identifies the weights (used as a cache key).
* :func:`predict` runs all of it batched and jitted: maps (B, H, W) float32 in [0, 1].

Resizing is half-pixel-centre bilinear without antialiasing (source coordinate
``(i + 0.5) * in / out - 0.5``, clamped): ``cv2.resize``'s default ``INTER_LINEAR``, which the
reference uses, and ``jax.image.resize(method="linear", antialias=False)``; jax's default
``antialias=True`` would change every downscale.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# The reference's per-channel ImageNet mean in B, G, R order, subtracted from 0..255 pixels; no
# scaling (ML-Net's utilities.py; the same values as Caffe's VGG-16 and Keras' "caffe" mode).
MEAN_BGR = (103.939, 116.779, 123.68)
# The reference input (rows, cols), ML-Net's config.py; the output is 8 times smaller (60 x 80).
REFERENCE_INPUT = (480, 640)

Variables = dict[str, Any]
ApplyFn = Callable[[Variables, jax.Array], Any]


def _hw(size: Sequence[int], what: str) -> tuple[int, int]:
  try:
    h, w = (int(s) for s in size)
  except (TypeError, ValueError):
    raise ValueError(f"{what} must be an (h, w) pair of positive ints, got {size!r}") from None
  if h < 1 or w < 1:
    raise ValueError(f"{what} must be an (h, w) pair of positive ints, got {size!r}")
  return h, w


def _resize_bilinear(x_BHWC: jax.Array, size: tuple[int, int]) -> jax.Array:
  b, _, _, c = x_BHWC.shape
  return jax.image.resize(x_BHWC, (b, size[0], size[1], c), method="linear", antialias=False)


def fit_size(image_hw: Sequence[int], canvas_hw: Sequence[int]) -> tuple[int, int]:
  """(rows, cols) of an image scaled to fit the canvas keeping its aspect.

  The side that limits the scale fills the canvas; the other is scaled with floor division, as
  the reference's integer arithmetic does.
  """
  (h, w), (ch, cw) = image_hw, canvas_hw
  if h / ch > w / cw:
    return ch, min(cw, (w * ch) // h)
  return min(ch, (h * cw) // w), cw


def preprocess(images_BHWC_uint8: jax.Array, size: Sequence[int] = REFERENCE_INPUT) -> jax.Array:
  """RGB uint8 (B, H, W, 3) -> ML-Net input (B, size[0], size[1], 3) float32.

  The images are resized (bilinear, rounded to 0..255 like the reference's uint8 ``cv2.resize``)
  to fit ``size`` keeping their aspect, pasted centred on a zero canvas, converted to BGR, and
  the BGR mean is subtracted (so the padding becomes ``-mean``, as in the reference). Shapes are
  static, so the function is jit-friendly.
  """
  x = jnp.asarray(images_BHWC_uint8)
  if x.ndim != 4 or x.shape[-1] != 3:
    raise ValueError(f"images must be (B, H, W, 3), got shape {x.shape}")
  ch, cw = _hw(size, "size")
  nh, nw = fit_size(x.shape[1:3], (ch, cw))
  x = x.astype(jnp.float32)
  if (nh, nw) != tuple(x.shape[1:3]):
    x = jnp.clip(jnp.round(_resize_bilinear(x, (nh, nw))), 0.0, 255.0)
  top, left = (ch - nh) // 2, (cw - nw) // 2
  x = jnp.pad(x, ((0, 0), (top, ch - nh - top), (left, cw - nw - left), (0, 0)))
  return x[..., ::-1] - jnp.asarray(MEAN_BGR, jnp.float32)


def gaussian_blur(maps_BHW: jax.Array, sigma: float) -> jax.Array:
  """Separable Gaussian blur (kernel radius ``ceil(3 sigma)``, edges replicated)."""
  if sigma <= 0:
    return maps_BHW
  radius = max(1, int(math.ceil(3 * sigma)))
  t = np.arange(-radius, radius + 1, dtype=np.float64)
  k = np.exp(-0.5 * (t / sigma) ** 2)
  k = jnp.asarray(k / k.sum(), jnp.float32)
  x = jnp.pad(maps_BHW, ((0, 0), (radius, radius), (radius, radius)), mode="edge")
  n_h, n_w = maps_BHW.shape[1], maps_BHW.shape[2]
  x = sum(k[i] * x[:, i:i + n_h, :] for i in range(2 * radius + 1))
  return sum(k[i] * x[:, :, i:i + n_w] for i in range(2 * radius + 1))


def normalize_max(maps_BHW: jax.Array) -> jax.Array:
  """Divides each map by its maximum; an all-zero (or negative) map becomes all zero."""
  peak = jnp.max(maps_BHW, axis=(1, 2), keepdims=True)
  return jnp.where(peak > 0, maps_BHW / jnp.where(peak > 0, peak, 1.0), 0.0)


def postprocess(pred: jax.Array, image_size: Sequence[int], blur_sigma: float = 0.0) -> jax.Array:
  """ML-Net output (B, h, w[, 1]) -> maps (B, H, W) float32 in [0, 1] covering the image.

  The map is resized (bilinear) so that it covers ``image_size`` keeping its own aspect, then
  centre-cropped to ``image_size``: this undoes the padding of :func:`preprocess`. Then the
  optional blur (in output pixels) and the division by the per-map maximum. Asking for a smaller
  ``image_size`` with the aspect of the original image gives the same geometry at a lower
  resolution.
  """
  p = jnp.asarray(pred, jnp.float32)
  if p.ndim == 4:
    if p.shape[-1] != 1:
      raise ValueError(f"ML-Net output must have one channel, got shape {p.shape}")
    p = p[..., 0]
  if p.ndim != 3:
    raise ValueError(f"ML-Net output must be (B, h, w) or (B, h, w, 1), got shape {p.shape}")
  oh, ow = _hw(image_size, "image_size")
  ph, pw = p.shape[1:]
  if oh / ph > ow / pw:
    rh, rw = oh, (pw * oh) // ph
  else:
    rh, rw = (ph * ow) // pw, ow
  rh, rw = max(rh, oh), max(rw, ow)  # floor division can fall one short of covering
  p = _resize_bilinear(p[..., None], (rh, rw))[..., 0]
  top, left = (rh - oh) // 2, (rw - ow) // 2
  p = p[:, top:top + oh, left:left + ow]
  return normalize_max(gaussian_blur(p, blur_sigma))


# ----------------------------------------------------------------------------- weights


@dataclasses.dataclass
class MLNetWeights:
  """An ML-Net ready to run: the Flax module, its variables, and where they came from."""
  model: nn.Module
  variables: Variables
  model_name: str
  model_kwargs: dict[str, Any]
  sha256: str  # identifies the weights: of the .npz file, else of the variables' arrays
  source: str  # the file or workdir, or "<in-memory variables>"
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)

  def apply(self, variables: Variables, x: jax.Array) -> jax.Array:
    """Saliency map at stride 8 (B, h, w, 1); the model's aux outputs are dropped."""
    out = self.model.apply(variables, x)
    return out[0] if isinstance(out, tuple) else out

  def __iter__(self):
    """Unpacks as ``apply_fn, variables = load_mlnet(...)``."""
    return iter((self.apply, self.variables))


def variables_sha256(variables: Mapping[str, Any]) -> str:
  """A sha256 of a variables tree: its '/'-joined paths, dtypes, shapes and bytes, in path order."""
  from jaxface.weights import common  # pylint: disable=g-import-not-at-top

  h = hashlib.sha256()
  for key, arr in sorted(common.flatten(variables).items()):
    arr = np.ascontiguousarray(arr)
    h.update(f"{key}|{arr.dtype.str}|{arr.shape}\n".encode())
    h.update(arr.tobytes())
  return h.hexdigest()


def _kwargs_from_json(kwargs: Mapping[str, Any]) -> dict[str, Any]:
  # JSON turns tuples (e.g. prior_shape) into lists; Flax module fields want them hashable.
  return {k: tuple(v) if isinstance(v, list) else v for k, v in dict(kwargs).items()}


def _build(model_name: str, model_kwargs: Mapping[str, Any]) -> nn.Module:
  from jaxface import models  # pylint: disable=g-import-not-at-top

  return models.get(model_name, **_kwargs_from_json(model_kwargs))


def load_mlnet(source: str | os.PathLike | tuple[Variables, str, Mapping[str, Any]],
               step: int | None = None) -> MLNetWeights:
  """ML-Net from an imported weight file, a training workdir, or an in-memory triple.

  The result also unpacks as ``apply_fn, variables``.

  Args:
    source: a ``.npz`` written by ``jaxface.weights.common.save`` (e.g. by ``python -m
      jaxface.convert``); a directory, read with ``jaxface.checkpointing.load_model_variables``
      (an ML-Net training workdir); or ``(variables, model_name, model_kwargs)``.
    step: checkpoint step of a workdir (None: the latest).
  """
  if isinstance(source, tuple):
    if len(source) != 3:
      raise ValueError("mlnet source tuple must be (variables, model_name, model_kwargs), "
                       f"got {len(source)} items")
    variables, name, kwargs = source
    return MLNetWeights(_build(name, kwargs), variables, name, _kwargs_from_json(kwargs),
                        variables_sha256(variables), "<in-memory variables>")
  path = os.fspath(source)
  if not os.path.exists(path):
    raise FileNotFoundError(f"mlnet weights not found: {path} (expected an imported .npz or an "
                            "ML-Net training workdir)")
  if os.path.isdir(path):
    try:
      from jaxface import checkpointing  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(f"mlnet source {path} is a directory (an ML-Net training workdir), which "
                        f"needs jaxface.checkpointing: {e}") from e
    variables, name, kwargs = checkpointing.load_model_variables(path, step=step)
    if not name:
      raise ValueError(f"{path}: the checkpoint's metadata names no model")
    return MLNetWeights(_build(name, kwargs), variables, name, _kwargs_from_json(kwargs),
                        variables_sha256(variables), os.path.abspath(path),
                        {"workdir": os.path.abspath(path), "step": step})
  from jaxface.weights import common  # pylint: disable=g-import-not-at-top

  imported = common.load(path)
  name = imported.meta.get("model")
  if not name:
    raise ValueError(f"{path}: weight metadata names no 'model'")
  kwargs = _kwargs_from_json(imported.meta.get("model_kwargs", {}))
  return MLNetWeights(_build(name, kwargs), imported.variables, name, kwargs,
                      common.sha256_file(path), os.path.abspath(path), dict(imported.meta))


# ----------------------------------------------------------------------------- prediction


def make_predict_fn(apply_fn: ApplyFn, input_size: Sequence[int],
                    output_size: Sequence[int] | None = None,
                    blur_sigma: float = 0.0) -> Callable[[Variables, jax.Array], jax.Array]:
  """A jitted ``fn(variables, images_BHWC_uint8) -> maps (B, H, W)`` in [0, 1].

  ``apply_fn(variables, x)`` returns the stride-8 map (a ``(map, aux)`` tuple is accepted);
  ``output_size=None`` gives maps at the images' own size.
  """
  input_size = _hw(input_size, "input_size")
  out_size = None if output_size is None else _hw(output_size, "output_size")

  @jax.jit
  def fn(variables, images):
    out = apply_fn(variables, preprocess(images, input_size))
    out = out[0] if isinstance(out, tuple) else out
    return postprocess(out, out_size or images.shape[1:3], blur_sigma)

  return fn


def predict(apply_fn: ApplyFn, variables: Variables, images_BHWC_uint8: np.ndarray, *,
            input_size: Sequence[int], output_size: Sequence[int] | None = None,
            blur_sigma: float = 0.0, batch_size: int = 32,
            predict_fn: Callable | None = None) -> np.ndarray:
  """Saliency maps (N, H, W) float32 in [0, 1] of RGB uint8 images, in jitted batches.

  The last batch is padded to ``batch_size`` so one compiled program serves every batch. Pass a
  ``predict_fn`` from :func:`make_predict_fn` to reuse its compilation across calls.
  """
  images = np.asarray(images_BHWC_uint8)
  if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
    raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  fn = predict_fn or make_predict_fn(apply_fn, input_size, output_size, blur_sigma)
  out = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    n = len(chunk)
    if n < batch_size:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - n, axis=0)])
    out.append(np.asarray(fn(variables, chunk))[:n])
  if not out:
    h, w = output_size or images.shape[1:3]
    return np.zeros((0, h, w), np.float32)
  return np.concatenate(out)


def maps_to_uint8(maps: np.ndarray) -> np.ndarray:
  """[0, 1] maps -> uint8 0..255 (rounded), the reference's 8-bit output and the cache format."""
  return np.clip(np.rint(np.asarray(maps, np.float32) * 255.0), 0, 255).astype(np.uint8)


def describe(weights: MLNetWeights) -> dict[str, Any]:
  """JSON-ready provenance of the weights (for cache metadata and run logs)."""
  return {"source": weights.source, "sha256": weights.sha256, "model": weights.model_name,
          "model_kwargs": json.loads(json.dumps(weights.model_kwargs, default=str))}
