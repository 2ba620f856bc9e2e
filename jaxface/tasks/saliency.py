"""ML-Net training loss (SPEC section 1.5) and the learned-prior regulariser (section 1.4)."""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp


def mlnet_loss(pred_BHW1: jax.Array, gt_BHW1: jax.Array, alpha: float = 1.1,
               eps: float = 1e-8) -> jax.Array:
  """ML-Net's normalised, weighted squared error.

  ``mean over (batch, pixels) of (pred / m - gt)^2 / (alpha - gt)`` with ``m`` the maximum of each
  image's predicted map and ``gt`` in [0, 1] (the reference writes ``alpha`` as ``1 - gt + 0.1``).

  Epsilon: the reference divides by ``m`` unguarded and yields NaN for an all-zero prediction (a
  dead ReLU output). Here ``m`` is clamped from below at ``eps``, so the loss equals the reference
  whenever ``m > eps`` and an all-zero map gives ``mean(gt^2 / (alpha - gt))`` instead of NaN.
  """
  pred = pred_BHW1.astype(jnp.float32)
  gt = gt_BHW1.astype(jnp.float32)
  if pred.shape != gt.shape:
    raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
  # One maximum per image (and channel), over the spatial axes.
  m = jnp.max(pred, axis=(1, 2), keepdims=True)
  normed = pred / jnp.maximum(m, eps)
  return jnp.mean(jnp.square(normed - gt) / (alpha - gt))


def _prior_w(params: Mapping[str, Any]) -> jax.Array:
  if "params" in params:  # A full variables dict.
    params = params["params"]
  try:
    return params["prior"]["W"]
  except KeyError as e:
    raise KeyError("params have no 'prior/W' (is this an ML-Net parameter tree?)") from e


def prior_regularizer(params: Mapping[str, Any], weight: float | None = None) -> jax.Array:
  """Keras 1 ``l2(1 / (rows * cols))`` on the prior: ``weight * sum(W^2)``.

  ``weight=None`` uses ``1 / W.size``, i.e. 1/48 for the reference (6, 8) prior. Equal to the
  paper's ``lambda * ||1 - w||^2`` with ``w = 1 + W``. ``params`` may be the ``params`` collection
  or the whole variables dict.
  """
  w = _prior_w(params).astype(jnp.float32)
  if weight is None:
    weight = 1.0 / w.size
  return weight * jnp.sum(jnp.square(w))


def mlnet_total_loss(pred_BHW1: jax.Array, gt_BHW1: jax.Array, params: Mapping[str, Any],
                     alpha: float = 1.1, eps: float = 1e-8,
                     prior_weight: float | None = None) -> jax.Array:
  """The objective ML-Net minimises: :func:`mlnet_loss` plus :func:`prior_regularizer`."""
  return (mlnet_loss(pred_BHW1, gt_BHW1, alpha=alpha, eps=eps)
          + prior_regularizer(params, weight=prior_weight))
