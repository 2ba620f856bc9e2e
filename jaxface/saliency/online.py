"""Saliency reweighting on the device: the jnp twin of ``data_pipelines.pp.saliency.Saliency``.

``x' = x * ((1 - r) + r * S)`` with ``S`` the map normalised by its own maximum (per image; an
all-zero map gives ``S = 0``) and resized to the image: jaxface's reading of the reweighting in
SAF-BAGE (Gurnani et al., WACV 2019, arXiv:1803.05719: a "30% reweighted ratio", r = 0.3) and
VEGAC (Gurnani et al., arXiv preprint 2018: "normal image (100%) and visual salient image (70%)",
r = 0.7). r = 0 gives the plain image, r = 1 the plain product ``x * S``.

:func:`saliency_reweight_step` is the "saliency computed inside the jitted step" option: ML-Net
runs on the batch the step receives (after the loader's flips and rotations, unlike the cache,
where ML-Net sees the crop and the map then follows the augmentation), so nothing is stored.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from jaxface.saliency import inference


def resize_maps(maps_BHW: jax.Array, size: Sequence[int]) -> jax.Array:
  """Bilinear, half-pixel centres, no antialiasing: the op's ``cv2.INTER_LINEAR``.

  uint8 maps are resized and rounded back to integers, as OpenCV does for uint8 input (OpenCV's
  fixed-point arithmetic may still round an odd value differently, by one grey level).
  """
  m = jnp.asarray(maps_BHW)
  h, w = int(size[0]), int(size[1])
  if m.shape[1:] == (h, w):
    return m
  out = jax.image.resize(m.astype(jnp.float32), (m.shape[0], h, w), method="linear",
                         antialias=False)
  if m.dtype == jnp.uint8:
    out = jnp.clip(jnp.round(out), 0, 255)
  return out


def reweight(images_BHWC: jax.Array, maps_BHW: jax.Array, r: float,
             round_to_uint8: bool = True) -> jax.Array:
  """``images * ((1 - r) + r * S)``; uint8 like the op when ``round_to_uint8``, else float32.

  Args:
    images_BHWC: (B, H, W, 3) images (uint8 or float, 0..255).
    maps_BHW: (B, h, w) maps, any non-negative scale (uint8 0..255 or float); resized to (H, W).
    r: reweighting ratio in [0, 1] (0: images unchanged; 1: the plain product).
    round_to_uint8: round half to even and clip to 0..255, exactly as the op does.
  """
  images = jnp.asarray(images_BHWC)
  maps = jnp.asarray(maps_BHW)
  if images.ndim != 4 or maps.ndim != 3 or maps.shape[0] != images.shape[0]:
    raise ValueError(f"need images (B, H, W, C) and maps (B, h, w) with the same B, got "
                     f"{images.shape} and {maps.shape}")
  if isinstance(r, (int, float)) and not 0.0 <= r <= 1.0:
    raise ValueError(f"r must be in [0, 1], got {r!r}")
  s = resize_maps(maps, images.shape[1:3]).astype(jnp.float32)
  s = inference.normalize_max(s)
  weight = (1.0 - r) + r * s
  out = images.astype(jnp.float32) * weight[..., None]
  if round_to_uint8:
    return jnp.clip(jnp.round(out), 0, 255).astype(jnp.uint8)
  return out


def saliency_reweight_step(mlnet_apply: Callable[[Any, jax.Array], Any], mlnet_variables: Any,
                           images_uint8: jax.Array, r: float, input_size: Sequence[int],
                           round_to_uint8: bool = True, blur_sigma: float = 0.0) -> jax.Array:
  """ML-Net maps of a batch and the reweighted batch, traceable inside a jitted train step.

  ``mlnet_apply(variables, x)`` is e.g. ``model.apply`` (a ``(map, aux)`` output is accepted);
  ML-Net sees :func:`inference.preprocess` at ``input_size`` and its map is post-processed back
  to the image size (:func:`inference.postprocess`). No gradient flows into ML-Net.
  """
  images = jnp.asarray(images_uint8)
  x = inference.preprocess(images, input_size)
  out = mlnet_apply(mlnet_variables, x)
  out = out[0] if isinstance(out, tuple) else out
  maps = inference.postprocess(jax.lax.stop_gradient(out), images.shape[1:3], blur_sigma)
  return reweight(images, maps, r, round_to_uint8=round_to_uint8)
