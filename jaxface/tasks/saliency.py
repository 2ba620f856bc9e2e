"""The saliency kind: ML-Net's training loss and learned-prior regulariser (Cornia et al., "A Deep
Multi-Level Network for Saliency Prediction", ICPR 2016, arXiv:1609.01064) and the evaluation
metrics of a batch of maps (:mod:`jaxface.saliency.metrics`)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

import jax
import jax.numpy as jnp

from jaxface.saliency import metrics
from jaxface.tasks.task import Task


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


SALIENCY_LOSSES = ("mlnet", "kld")


def kld_loss(pred_BHW1: jax.Array, gt_BHW1: jax.Array, eps: float = 1e-7) -> jax.Array:
  """Mean over images of KL(gt || pred) of the sum-normalised maps (the benchmark's KLD).

  The usual training loss of later saliency models (SalGAN, SAM, DeepGaze). Unlike
  :func:`mlnet_loss` it has no degenerate optimum from random weights: a map that puts mass
  where there is no fixation takes it from where there is, so neither an all-zero map nor one
  spurious peak scores well. (ML-Net's max-normalised loss is blind to a map's scale: the
  brightest pixel's own term is ``(1 - gt)^2 / (alpha - gt)`` whatever it predicts, and raising it
  dims every other pixel, so from random weights it grows one spurious peak or dies.)
  """
  pred = pred_BHW1.astype(jnp.float32)
  gt = gt_BHW1.astype(jnp.float32)
  if pred.shape != gt.shape:
    raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
  q = pred / jnp.maximum(jnp.sum(pred, axis=(1, 2, 3), keepdims=True), eps)
  p = gt / jnp.maximum(jnp.sum(gt, axis=(1, 2, 3), keepdims=True), eps)
  return jnp.mean(jnp.sum(p * jnp.log(eps + p / (eps + q)), axis=(1, 2, 3)))


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
                     prior_weight: float | None = None, loss: str = "mlnet") -> jax.Array:
  """The objective ML-Net minimises: ``loss`` ("mlnet": :func:`mlnet_loss`, the reference, or
  "kld": :func:`kld_loss`) plus :func:`prior_regularizer`."""
  if loss not in SALIENCY_LOSSES:
    raise ValueError(f"saliency loss must be one of {SALIENCY_LOSSES}, got {loss!r}")
  data = (mlnet_loss(pred_BHW1, gt_BHW1, alpha=alpha, eps=eps) if loss == "mlnet"
          else kld_loss(pred_BHW1, gt_BHW1))
  return data + prior_regularizer(params, weight=prior_weight)


# ----------------------------------------------------------------------------- evaluation metrics

# Metrics every saliency evaluation reports (sums over images, divided by the count at the end).
MAP_METRICS = ("cc", "nss", "auc_judd", "auc_shuffled", "kld", "sim")


def fixation_points(gt_HW: jax.Array, min_fraction: float = 0.1) -> jax.Array:
  """Binary fixation map of a density map that has no fixation points: its local maxima.

  Pixels equal to the maximum of their 3x3 neighbourhood and at least ``min_fraction`` of the
  map's maximum (so flat zero areas are not "fixated"). On the synthetic faces these are the
  centres of the eye, nose and mouth Gaussians; on SALICON maps the centres of fixation clusters.
  """
  g = gt_HW.astype(jnp.float32)
  neighbourhood = jax.lax.reduce_window(g, -jnp.inf, jax.lax.max, (3, 3), (1, 1), "SAME")
  return (g >= neighbourhood) & (g >= min_fraction * jnp.max(g)) & (g > 0)


def _image_metrics(s: jax.Array, g: jax.Array, fix: jax.Array, other: jax.Array
                   ) -> dict[str, jax.Array]:
  """The MIT-benchmark metrics of one predicted map ``s`` against a density ``g`` (both (H, W)),
  its fixations ``fix`` and the other images' fixations ``other`` (shuffled AUC's negatives).

  A constant prediction (e.g. ML-Net's all-zero dead optimum) is scored as the uniform map it
  carries no more information than: CC 0, NSS 0, the AUCs 0.5, KLD and SIM of the uniform
  distribution (the benchmark's formulas divide by its zero spread and give NaN).
  """
  constant = jnp.max(s) - jnp.min(s) <= 0
  s_safe = jnp.where(constant, jnp.arange(s.size, dtype=jnp.float32).reshape(s.shape), s)
  uniform = jnp.full(s.shape, 1.0 / s.size)
  g_min, g_max = jnp.min(g), jnp.max(g)
  g_dist = (g - g_min) / jnp.maximum(g_max - g_min, 1e-12)
  g_dist = g_dist / jnp.maximum(jnp.sum(g_dist), 1e-12)
  return {
      "cc": jnp.where(constant, 0.0, metrics.cc(s_safe, g)),
      "nss": jnp.where(constant, 0.0, metrics.nss(s_safe, fix)),
      "auc_judd": jnp.where(constant, 0.5, metrics.auc_judd_jnp(s_safe, fix)),
      "auc_shuffled": jnp.where(constant, 0.5, metrics.auc_shuffled_jnp(s_safe, fix, other)),
      "kld": jnp.where(constant, metrics.kld(uniform, g), metrics.kld(s_safe, g)),
      "sim": jnp.where(constant, jnp.sum(jnp.minimum(uniform, g_dist)), metrics.sim(s_safe, g)),
  }


def map_metrics(pred_BHW1: jax.Array, gt_BHW: jax.Array, mask_B: jax.Array
                ) -> dict[str, tuple[jax.Array, jax.Array]]:
  """``{"saliency/<metric>": (sum, count)}`` over the masked images of a batch.

  The prediction is resized (bilinear) to the ground truth's size first, as the benchmark
  prescribes; ``gt_BHW`` may be uint8 (0-255) or float. The fixations are the local maxima of
  each density (:func:`fixation_points`). Shuffled AUC takes as negatives the pixels fixated in
  the batch's other (unmasked) images, so it depends on the evaluation batch: an image alone in
  its batch has no negatives and is left out of its count.
  """
  g = gt_BHW.astype(jnp.float32)
  s = jax.image.resize(pred_BHW1.astype(jnp.float32)[..., 0], g.shape, "linear")
  m = mask_B.astype(jnp.float32)
  fix = jax.vmap(fixation_points)(g)
  real_fix = fix & (m > 0)[:, None, None]
  fixated_in = jnp.sum(real_fix.astype(jnp.int32), axis=0)  # (H, W) images fixating each pixel
  other = (fixated_in[None] - real_fix.astype(jnp.int32)) > 0
  per_image = jax.vmap(_image_metrics)(s, g, fix, other)
  out = {f"saliency/{k}": (jnp.sum(jnp.where(m > 0, v, 0.0)), jnp.sum(m))
         for k, v in per_image.items()}
  scored = jnp.where((m > 0) & jnp.any(other, axis=(1, 2)) & jnp.any(fix, axis=(1, 2)), 1.0, 0.0)
  out["saliency/auc_shuffled"] = (jnp.sum(scored * per_image["auc_shuffled"]), jnp.sum(scored))
  return out


# ----------------------------------------------------------------------------- the kind


@dataclasses.dataclass(frozen=True)
class Saliency(Task):
  """ML-Net's map (``batch["saliency"]`` the dataset's fixation density, uint8): trained with
  ``config.task.saliency_loss`` plus the prior regulariser, scored with :data:`MAP_METRICS`."""
  kind: str = "saliency"
  KIND: ClassVar[str] = "saliency"
  dense: ClassVar[bool] = True

  @classmethod
  def from_dataset(cls, config, builder) -> list[Task]:
    return [cls("saliency")]

  def loss_and_metrics(self, output, batch, mask, params, config, class_weights):
    gt = batch["saliency"].astype(jnp.float32) / 255.0
    gt = jax.image.resize(gt[..., None], output.shape, "linear", antialias=True)
    loss = mlnet_total_loss(output, jnp.clip(gt, 0.0, 1.0), params, loss=config.task.saliency_loss)
    return loss, {f"{self.name}/loss": (loss * mask.sum(), mask.sum())}

  def eval_metrics(self, output, batch):
    return map_metrics(output, batch["saliency"], batch["mask"])

  def report(self, probs, labels, sums, n):
    """The means of the evaluation's ``saliency/<metric>`` sums (and the loss), and ``n``."""
    if sums is None:
      return None
    prefix = f"{self.name}/"
    out = {k[len(prefix):]: total / count for k, (total, count) in sums.items()
           if k.startswith(prefix) and count}
    out["n"] = int(n)
    return out
