"""MTCNN's three jitted networks and its pyramid rule, shared by the host cascade
(``jaxface.faces.mtcnn``) and the device cascade (``jaxface.faces.mtcnn_device``).

Module level, so the compiled programs are shared by every detector.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxface.models.mtcnn import ONet, PNet, RNet


def pyramid_scales(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
  """``m * factor**k`` while ``min(h, w) * m * factor**k >= 12`` (repeated products, as the
  reference, so the level sizes ``int(h*s + 1)`` agree to the last bit)."""
  m = 12.0 / min_face_size
  minl = min(height, width) * m
  scale, scales = m, []
  while minl >= 12:
    scales.append(scale)
    scale *= factor
    minl *= factor
  return scales


_PNET, _RNET, _ONET = PNet(), RNet(), ONet()


@jax.jit
def _pnet_run(variables, x_BHWC, valid_B2):
  """PNet on zero-padded levels whose true sizes are ``valid_B2`` (rows, cols)."""
  conv1_hw = valid_B2 - 2  # Valid conv1 output size of each level.

  def mask_padding(next_fun, args, kwargs, context):
    name = context.module.name if context.method_name == "__call__" else None
    if name == "conv2":
      # Pool cells made only of padding are -inf; give conv2 finite numbers (outputs cropped).
      args = (jnp.where(jnp.isfinite(args[0]), args[0], 0.0),) + tuple(args[1:])
    out = next_fun(*args, **kwargs)
    if name == "prelu1":
      rows = jnp.arange(out.shape[1])[None, :, None] < conv1_hw[:, 0, None, None]
      cols = jnp.arange(out.shape[2])[None, None, :] < conv1_hw[:, 1, None, None]
      out = jnp.where((rows & cols)[..., None], out, -jnp.inf)
    return out

  with nn.intercept_methods(mask_padding):
    out, _ = _PNET.apply(variables, x_BHWC)
  return out["prob"], out["box"]


@jax.jit
def _rnet_run(variables, x_BHWC):
  out, _ = _RNET.apply(variables, x_BHWC)
  return out["prob"], out["box"]


@jax.jit
def _onet_run(variables, x_BHWC):
  out, _ = _ONET.apply(variables, x_BHWC)
  return out["prob"], out["box"], out["landmarks"]


def _pnet_map_size(n: int) -> int:
  return -(-(n - 2) // 2) - 4
