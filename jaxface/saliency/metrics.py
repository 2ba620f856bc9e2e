"""Saliency metrics as defined by the MIT saliency benchmark (Bylinskii, Judd, Oliva, Torralba,
Durand, "What do different evaluation metrics tell us about saliency models?", TPAMI 2019).

Each function compares one predicted map ``s`` (H, W) with one ground truth of the same size:
a continuous fixation density ``g`` (CC, KLD, SIM) or a binary fixation map ``f`` (NSS and the
AUCs; any nonzero pixel is a fixated location). Resize the prediction to the ground truth first.

* CC: Pearson correlation of ``s`` and ``g``: ``cov(s, g) / (std(s) std(g))``; in [-1, 1].
* NSS: mean of the standardised map ``(s - mean(s)) / std(s)`` over the fixated pixels; the
  benchmark uses MATLAB's ``std`` (normalised by N - 1), hence ``ddof=1`` by default.
* KLD: ``sum_i g_i log(eps + g_i / (eps + s_i))`` with both maps divided by their sums and
  ``eps = 2.2204e-16`` (MATLAB's ``eps``); 0 for identical maps, lower is better.
* SIM: histogram intersection ``sum_i min(s_i, g_i)``, each map first rescaled to [0, 1]
  (min-max) and then divided by its sum; 1 for identical distributions, 0 for disjoint ones.
* AUC-Judd: ``s`` rescaled to [0, 1]; every fixated pixel's value is a threshold. With the
  thresholds sorted in decreasing order, the k-th gives the true-positive rate ``k / Nf`` and the
  false-positive rate ``(#pixels >= threshold - k) / (Npixels - Nf)``; the points (0, 0) and
  (1, 1) close the curve, whose trapezoidal area is the score. (The benchmark adds a tiny random
  jitter to break ties; this version is deterministic.)
* AUC-shuffled (sAUC) and AUC-Borji: the area under the ROC curve that separates the saliency at
  the fixated pixels (positives) from the saliency at negative locations: the fixations of other
  images (shuffled, which discounts centre bias) or pixels drawn uniformly at random (Borji,
  averaged over ``n_splits`` draws). The area is computed exactly, as the probability that a
  positive outscores a negative with ties counted one half (the Mann-Whitney statistic), instead
  of the benchmark's 0.1-spaced thresholds.

CC, NSS, KLD and SIM are jnp functions (jit/vmap-able, batched with :func:`batched`). Each AUC
has one implementation, run in float64 numpy by :func:`auc_judd`, :func:`roc_auc`,
:func:`auc_shuffled` and :func:`auc_borji` (host side, inputs checked) and in float32 jnp by
:func:`auc_judd_jnp` and :func:`auc_shuffled_jnp` (what the evaluation step of a saliency run
reports, see :func:`jaxface.tasks.saliency.map_metrics`).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

MATLAB_EPS = 2.2204e-16


def _check_pair(s, g, what: str = "ground truth") -> None:
  if s.shape != g.shape:
    raise ValueError(f"saliency map {s.shape} and {what} {g.shape} differ in shape; resize the "
                     "prediction to the ground truth first")
  if s.ndim != 2:
    raise ValueError(f"maps must be 2-D (H, W), got shape {s.shape}")


def cc(s: jax.Array, g: jax.Array) -> jax.Array:
  """Pearson linear correlation coefficient between two maps (NaN if either is constant)."""
  s, g = jnp.asarray(s, jnp.float32), jnp.asarray(g, jnp.float32)
  _check_pair(s, g)
  ds, dg = s - s.mean(), g - g.mean()
  return jnp.sum(ds * dg) / jnp.sqrt(jnp.sum(ds * ds) * jnp.sum(dg * dg))


def nss(s: jax.Array, fixations: jax.Array, ddof: int = 1) -> jax.Array:
  """Normalized scanpath saliency: mean standardised saliency at the fixated pixels."""
  s = jnp.asarray(s, jnp.float32)
  f = jnp.asarray(fixations) != 0
  _check_pair(s, f, "fixation map")
  z = (s - s.mean()) / jnp.std(s, ddof=ddof)
  return jnp.sum(jnp.where(f, z, 0.0)) / jnp.sum(f)


def kld(s: jax.Array, g: jax.Array, eps: float = MATLAB_EPS) -> jax.Array:
  """Kullback-Leibler divergence KL(g || s) of the sum-normalised maps (lower is better)."""
  s, g = jnp.asarray(s, jnp.float32), jnp.asarray(g, jnp.float32)
  _check_pair(s, g)
  p, q = g / jnp.sum(g), s / jnp.sum(s)
  return jnp.sum(p * jnp.log(eps + p / (eps + q)))


def sim(s: jax.Array, g: jax.Array) -> jax.Array:
  """Similarity (histogram intersection) of the min-max then sum-normalised maps."""
  s, g = jnp.asarray(s, jnp.float32), jnp.asarray(g, jnp.float32)
  _check_pair(s, g)

  def as_distribution(x):
    x = (x - x.min()) / (x.max() - x.min())
    return x / jnp.sum(x)

  return jnp.sum(jnp.minimum(as_distribution(s), as_distribution(g)))


def batched(metric: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
  """``metric`` over a leading batch axis of every argument: (B, H, W) -> (B,)."""
  return jax.vmap(metric)


# ----------------------------------------------------------------------------- AUCs
#
# One implementation of each AUC, written over the array module ``xp``: numpy (float64, on the
# host, for ``auc_judd`` / ``roc_auc`` / ``auc_shuffled``, which check their inputs and return a
# float) or jax.numpy (float32, fixed shapes, inside a jitted step: ``auc_judd_jnp`` /
# ``auc_shuffled_jnp``, where a map without fixations or negatives scores 0.5 instead of raising).


def _auc_judd(xp, s, fixated):
  """AUC-Judd of the map ``s`` and the boolean fixation map ``fixated`` in the array module ``xp``.

  The thresholds are the fixated pixels' values, sorted in decreasing order, in an array as long
  as the map (fixed shapes): the unused slots collapse onto the (1, 1) end point and add no area.
  """
  v = s.ravel()
  f = fixated.ravel()
  lo, hi = xp.min(v), xp.max(v)
  v = xp.where(hi > lo, (v - lo) / xp.where(hi > lo, hi - lo, 1.0), 0.0)
  n_pix = v.size
  n_fix = xp.sum(f)
  thresholds = -xp.sort(-xp.where(f, v, -xp.inf))
  above = n_pix - xp.searchsorted(xp.sort(v), thresholds, side="left")  # #pixels >= threshold
  k = xp.arange(1, n_pix + 1)
  valid = k <= n_fix
  tp = xp.where(valid, k / xp.maximum(n_fix, 1), 1.0)
  fp = xp.where(valid, (above - k) / xp.maximum(n_pix - n_fix, 1), 1.0)
  tp = xp.concatenate([xp.zeros(1), tp, xp.ones(1)])
  fp = xp.concatenate([xp.zeros(1), fp, xp.ones(1)])
  return xp.sum((fp[1:] - fp[:-1]) * (tp[1:] + tp[:-1]) / 2)


def _roc_auc(xp, values, positive, negative):
  """P(pos > neg) + P(pos == neg) / 2 of the ``values`` marked ``positive`` against those marked
  ``negative`` (boolean masks of the same shape; a value may be both), in ``xp``."""
  v = values.ravel()
  pos, neg = positive.ravel(), negative.ravel()
  ascending = xp.sort(xp.where(neg, v, xp.inf))  # the negatives, then +inf: never below a value
  below = xp.searchsorted(ascending, v, side="left")
  ties = xp.searchsorted(ascending, v, side="right") - below
  n_pos, n_neg = xp.sum(pos), xp.sum(neg)
  total = xp.sum(xp.where(pos, below + 0.5 * ties, 0.0))
  return total / xp.maximum(n_pos * n_neg, 1)


def _fixation_mask(s: np.ndarray, fixations) -> np.ndarray:
  f = np.asarray(fixations) != 0
  _check_pair(s, f, "fixation map")
  if not f.any():
    raise ValueError("fixation map has no fixated pixel")
  return f


def auc_judd(s, fixations) -> float:
  """AUC-Judd (see the module docstring); 0.5 is chance, 1 perfect."""
  s = np.asarray(s, np.float64)
  f = _fixation_mask(s, fixations)
  if f.all():
    raise ValueError("every pixel is fixated: AUC-Judd needs non-fixated pixels")
  return float(_auc_judd(np, s, f))


def auc_judd_jnp(s: jax.Array, fixations: jax.Array) -> jax.Array:
  """:func:`auc_judd` in float32 jnp (jit/vmap-able); 0.5 when no pixel is fixated."""
  s = jnp.asarray(s, jnp.float32)
  f = jnp.asarray(fixations) != 0
  _check_pair(s, f, "fixation map")
  return _auc_judd(jnp, s, f)


def roc_auc(positives, negatives) -> float:
  """Area under the ROC curve separating two samples: P(pos > neg) + P(pos == neg) / 2."""
  pos = np.asarray(positives, np.float64).ravel()
  neg = np.asarray(negatives, np.float64).ravel()
  if pos.size == 0 or neg.size == 0:
    raise ValueError(f"roc_auc needs positives and negatives, got {pos.size} and {neg.size}")
  values = np.concatenate([pos, neg])
  is_pos = np.arange(values.size) < pos.size
  return float(_roc_auc(np, values, is_pos, ~is_pos))


def auc_shuffled(s, fixations, other_fixations) -> float:
  """Shuffled AUC: fixated pixels against the pixels fixated in other images.

  ``other_fixations`` is a map of the same size (e.g. the union of other images' fixation maps);
  a pixel fixated in both counts in both samples.
  """
  s = np.asarray(s, np.float64)
  f = _fixation_mask(s, fixations)
  other = np.asarray(other_fixations) != 0
  _check_pair(s, other, "other-fixation map")
  if not other.any():
    raise ValueError("other-fixation map has no fixated pixel")
  return float(_roc_auc(np, s, f, other))


def auc_shuffled_jnp(s: jax.Array, fixations: jax.Array, other_fixations: jax.Array) -> jax.Array:
  """:func:`auc_shuffled` in float32 jnp (jit/vmap-able); 0.5 without positives or negatives."""
  s = jnp.asarray(s, jnp.float32)
  f = jnp.asarray(fixations) != 0
  other = jnp.asarray(other_fixations) != 0
  _check_pair(s, f, "fixation map")
  _check_pair(s, other, "other-fixation map")
  return jnp.where(jnp.any(f) & jnp.any(other), _roc_auc(jnp, s, f, other), 0.5)


def auc_borji(s, fixations, n_splits: int = 100, seed: int = 0) -> float:
  """AUC-Borji: fixated pixels against as many uniformly random pixels, averaged over splits."""
  s = np.asarray(s, np.float64)
  f = _fixation_mask(s, fixations)
  if n_splits < 1:
    raise ValueError(f"n_splits must be >= 1, got {n_splits}")
  rng = np.random.default_rng(seed)
  pos, values = s[f], s.ravel()
  return float(np.mean([roc_auc(pos, values[rng.integers(0, values.size, pos.size)])
                        for _ in range(n_splits)]))
