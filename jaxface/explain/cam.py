"""Class activation maps: Grad-CAM, Grad-CAM++, Score-CAM and CAM for the GAP head (SAF-BAGE,
arXiv:1803.05719, explains its GAP AlexNet with CAM).

All four run jitted on a batch, each image with its own target (argmax, a class or a label), on
any entry of the model's ``aux`` (default ``aux['features']``, the last conv block), with the
explained score chosen explicitly as the class logit or its softmax probability and recorded in
``Result.settings``. A map is ReLU(sum_k w_k A_k), bilinearly upsampled to the input and min-max
scaled; constant or all-negative maps give zeros, never NaN.

Variants (``variant=``):

* Grad-CAM++ "official" (Chattopadhay et al.'s code): alpha = g^2 / (2 g^2 + sum(A) g^3) with
  the exp(S) factors of its closed form (S the class logit there: ``score="logit"``), alphas
  normalised to sum 1 over the grid (a zero sum is left unnormalised instead of dividing by 0),
  weights sum(alpha * ReLU(exp(S) g)). "pgc" (pytorch-grad-cam): no exp factor, no alpha
  normalisation, 1e-6 in the denominator. With a GAP head (constant g) the weights are
  exp(S) ReLU(g) and Z ReLU(g) / (2 + sum(A) g) respectively. exp(S) is taken of min(S, 80) so
  float32 cannot overflow; the factor is a positive per-image scale that min-max scaling removes.
* Score-CAM "official" (Wang et al.'s code): each channel, upsampled (half-pixel bilinear) and
  min-max scaled, masks the input; its weight is the score of the masked input (the code uses the
  softmax probability: ``score="prob"``); constant channels are skipped (weight 0); the map is
  summed at the input's resolution (a constant result is zeros here, None in that code).
  "pgc": corner-aligned upsampling, (max - min + 1e-8) scaling, softmax of the channel scores,
  map on the layer's grid.

Where the references differ: pytorch-grad-cam maps only the first image of a batch correctly in
one open issue (#264) and gives NaN or all-zero Score-CAMs for constant maps (#214, #173); a JAX
Grad-CAM (flax_gradcam) takes the max over the whole batch, so the other images get no gradient.
Here the objective is the sum of per-image scores, whose gradient separates by image.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from jaxface.explain import core
from jaxface.models import heads

METHODS = ("gradcam", "gradcampp", "scorecam", "cam")
VARIANTS = ("official", "pgc")
_EXP_CLAMP = 80.0  # exp(80) ~ 5.5e34 stays finite in float32 even times a gradient cube.


def _weighted(a_BhwK, w_BK):
  return jax.nn.relu(jnp.einsum("bhwk,bk->bhw", a_BhwK.astype(jnp.float32), w_BK))


def _gradpp_weights(a, g, s_B, variant):
  """Grad-CAM++ channel weights from activations, first-order gradients and the scores."""
  sum_a = jnp.sum(a, axis=(1, 2), keepdims=True)
  if variant == "pgc":
    g2 = g * g
    alpha = g2 / (2 * g2 + sum_a * g2 * g + 1e-6)
    alpha = jnp.where(g != 0, alpha, 0.0)
    return jnp.sum(jax.nn.relu(g) * alpha, axis=(1, 2))
  e = jnp.exp(jnp.minimum(s_B, _EXP_CLAMP))[:, None, None, None]
  second, third = e * g * g, e * g * g * g
  denom = 2 * second + sum_a * third
  alpha = second / jnp.where(denom != 0, denom, 1.0)
  norm = jnp.sum(alpha, axis=(1, 2), keepdims=True)
  alpha = alpha / jnp.where(norm != 0, norm, 1.0)
  return jnp.sum(jax.nn.relu(e * g) * alpha, axis=(1, 2))


def _scorecam(forward, variables, x, a, idx, score, variant, chunk):
  size = x.shape[1:3]
  up = core.upsample(a.astype(jnp.float32), size, align_corners=(variant == "pgc"))
  lo = jnp.min(up, axis=(1, 2), keepdims=True)
  hi = jnp.max(up, axis=(1, 2), keepdims=True)
  if variant == "pgc":
    masks = (up - lo) / (hi - lo + 1e-8)
  else:
    masks = core.minmax(jnp.moveaxis(up, -1, 1))
    masks = jnp.moveaxis(masks, 1, -1)
  masks_KBHW = jnp.moveaxis(masks, -1, 0)

  def one(m_BHW):
    logits, _ = forward(variables, x * m_BHW[..., None].astype(x.dtype))
    return core.class_score(logits, idx, score)

  s_KB = jax.lax.map(one, masks_KBHW, batch_size=chunk)
  if variant == "pgc":
    return _weighted(a, jax.nn.softmax(s_KB.T, axis=-1))
  constant = (hi - lo)[:, 0, 0, :] <= 0  # (B, K): the reference code skips these channels.
  w = jnp.where(constant, 0.0, s_KB.T)
  return _weighted(up, w)


@functools.partial(jax.jit, static_argnames=("forward", "method", "variant", "layer", "score",
                                             "chunk"))
def _run(forward, variables, x, labels, fc_kernel, *, method, variant, layer, score, chunk):
  make = core.with_layer_delta(forward, layer)
  f, shape = make(variables, x)

  def objective(delta):
    logits, aux = f(variables, x, delta)
    idx = core.target_indices(logits, "argmax") if labels is None else labels
    s = core.class_score(logits, idx, score)
    return jnp.sum(s), (aux[layer], idx, s)

  delta0 = jnp.zeros(shape.shape, shape.dtype)
  if method in ("gradcam", "gradcampp"):
    g, (a, idx, s) = jax.grad(objective, has_aux=True)(delta0)
    g = g.astype(jnp.float32)
    a = a.astype(jnp.float32)
    if method == "gradcam":
      w = jnp.mean(g, axis=(1, 2))
    else:
      w = _gradpp_weights(a, g, s, variant)
    raw = _weighted(a, w)
  else:
    _, (a, idx, s) = objective(delta0)
    if method == "cam":
      raw = jax.nn.relu(heads.cam(a.astype(jnp.float32), fc_kernel.astype(jnp.float32), idx))
    else:
      raw = _scorecam(forward, variables, x, a, idx, score, variant, chunk)
  maps = core.minmax(core.upsample(raw[..., None], x.shape[1:3])[..., 0])
  return maps, raw, idx, s


def gap_kernel(variables) -> jax.Array:
  """The GAP head's Dense kernel (C, K) of a ``head="gap"`` model (``params/head/fc/kernel``)."""
  try:
    return variables["params"]["head"]["fc"]["kernel"]
  except (KeyError, TypeError):
    raise ValueError("CAM needs a model with the GAP head (params/head/fc/kernel) "
                     "or fc_kernel=") from None


def explain(forward: core.Forward, variables, x_BHWC, target: Any = "argmax", *, method: str,
            score: str, layer: str | None = None, variant: str = "official", chunk: int = 16,
            fc_kernel=None) -> core.Result:
  """A CAM of each image for its own target.

  Args:
    forward: ``forward(variables, x) -> (logits, aux)`` (see :func:`core.bind`).
    variables: the model's variables.
    x_BHWC: a batch of images in the forward's input space.
    target: "argmax", one class for all images, or a (B,) array of labels.
    method: "gradcam", "gradcampp", "scorecam" or "cam" (GAP head; ``fc_kernel`` or the head's).
    score: "logit" or "prob", the confidence that is differentiated / compared.
    layer: the ``aux`` entry explained (default "features", the last conv block).
    variant: "official" or "pgc" (pytorch-grad-cam) for Grad-CAM++ and Score-CAM.
    chunk: masked copies per forward call in Score-CAM (memory vs speed).
  """
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
  if variant not in VARIANTS:
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
  core.check_score(score)
  if method == "cam":
    fc_kernel = gap_kernel(variables) if fc_kernel is None else jnp.asarray(fc_kernel)
  x = jnp.asarray(x_BHWC)
  if layer is None:
    aux = jax.eval_shape(forward, variables, x)[1]
    layer = core.default_layer(aux)
  labels = None
  if not isinstance(target, str):
    labels = jnp.broadcast_to(jnp.asarray(target, jnp.int32), (x.shape[0],))
  elif target != "argmax":
    raise ValueError(f"target must be 'argmax', a class index or labels, got {target!r}")
  maps, raw, idx, s = _run(forward, variables, x, labels, fc_kernel, method=method,
                           variant=variant, layer=layer, score=score, chunk=int(chunk))
  settings = {"method": method, "score": score, "layer": layer, "target": core.target_kind(target)}
  if method in ("gradcampp", "scorecam"):
    settings["variant"] = variant
  return core.Result(maps=maps, raw=raw, targets=idx, scores=s, settings=settings)


# (method, variant) pairs that differ: Grad-CAM and CAM have no variants.
COMBOS = (("gradcam", "official"), ("gradcampp", "official"), ("gradcampp", "pgc"),
          ("scorecam", "official"), ("scorecam", "pgc"), ("cam", "official"))


def gradcam(forward, variables, x, target="argmax", **kw) -> core.Result:
  return explain(forward, variables, x, target, method="gradcam", **kw)


def gradcampp(forward, variables, x, target="argmax", **kw) -> core.Result:
  return explain(forward, variables, x, target, method="gradcampp", **kw)


def scorecam(forward, variables, x, target="argmax", **kw) -> core.Result:
  return explain(forward, variables, x, target, method="scorecam", **kw)


def cam(forward, variables, x, target="argmax", **kw) -> core.Result:
  return explain(forward, variables, x, target, method="cam", **kw)


__all__ = ["COMBOS", "METHODS", "VARIANTS", "cam", "explain", "gap_kernel", "gradcam", "gradcampp",
           "scorecam"]
