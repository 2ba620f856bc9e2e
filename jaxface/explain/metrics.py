"""Faithfulness metrics of saliency maps (John et al., "Canonical Saliency Maps: Decoding Deep
Face Models", IEEE T-BIOM 2021, arXiv:2105.01386, eqs. 9-13).

* :func:`equal_sum`: min-max normalise each map and rescale it to a given pixel sum (eq. 10), so no
  method gains by highlighting a larger area.
* :func:`explanation_images`: the negative explanation ``(1 - H) * I`` (eq. 9) or the positive one
  ``H * I`` (Grad-CAM++'s original form).
* :func:`average_drop` (eq. 11), :func:`increase_in_confidence` (eq. 12), :func:`win_percent`
  (eq. 13, any number of methods, explicit tie policy), and :func:`evaluate`, which runs them all.

Where the references (the paper, the authors' released metric code, pytorch-grad-cam) differ:

* The official CSM metric code writes each batch's scores into a growing slice, so every slot but
  the last of a batch holds the last image's score. Here scores are computed per image in fixed,
  padded batches; the result does not depend on the batch size or the order of the images.
* The official code rescales maps to the CMS's sum, which can push values above 1, and then casts
  ``255 * (1 - H) * I`` to uint8, which wraps negative values to bright pixels. Here H is clipped
  to [0, 1] in float and nothing is quantised, so E stays in the range of I.
* The official confidence is the raw logit; pytorch-grad-cam's "drop in confidence" is
  ``max(0, Y - O)`` without the division by Y or the mean. Here the confidence is the softmax
  probability or the logit, chosen explicitly and recorded, and the drop is divided by Y. A ratio
  with Y <= 0 has no meaning (its sign flips), so it raises instead of being averaged in.
* The official Win % gives a tie to the first method (``argmin``); that is ``tie="first"`` here,
  and ``tie="split"`` (the default) shares it, so the Win % of all methods sums to 100 either way.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxface.explain import core

TIES = ("split", "first")
KINDS = ("negative", "positive")


def equal_sum(maps_BHW, total_B) -> jax.Array:
  """Eq. 10: ``H = s / sum(H') * H'`` with ``H'`` the min-max normalised map (zeros stay zeros).

  The result can exceed 1 when ``s`` is larger than the map's own sum; :func:`explanation_images`
  clips it.
  """
  h = core.minmax(jnp.asarray(maps_BHW, jnp.float32))
  sums = jnp.sum(h, axis=(-2, -1), keepdims=True)
  total = jnp.asarray(total_B, jnp.float32).reshape(-1, 1, 1)
  return jnp.where(sums > 0, h * total / jnp.where(sums > 0, sums, 1.0), 0.0)


def standardise(maps: Mapping[str, Any], reference: str | None = None) -> dict[str, jax.Array]:
  """Eq. 10 for several methods: every method's map of an image gets the same pixel sum ``s``.

  ``s`` is the sum of the reference method's min-max map (the official code uses the CMS), or
  without a reference the mean of all methods' min-max sums for that image.
  """
  normed = {k: core.minmax(jnp.asarray(v, jnp.float32)) for k, v in maps.items()}
  sums = {k: jnp.sum(v, axis=(-2, -1)) for k, v in normed.items()}
  if reference is None:
    total = jnp.mean(jnp.stack(list(sums.values())), axis=0)
  elif reference not in maps:
    raise ValueError(f"unknown reference method {reference!r}; methods are {sorted(maps)}")
  else:
    total = sums[reference]
  return {k: equal_sum(v, total) for k, v in maps.items()}


def explanation_images(images_BHWC, maps_BHW, kind: str = "negative") -> jax.Array:
  """``(1 - H) * I`` (negative, eq. 9) or ``H * I`` (positive), with H clipped to [0, 1]."""
  if kind not in KINDS:
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
  h = jnp.clip(jnp.asarray(maps_BHW, jnp.float32), 0.0, 1.0)[..., None]
  images = jnp.asarray(images_BHWC, jnp.float32)
  return (1.0 - h) * images if kind == "negative" else h * images


def _check_confidences(y, o, score: str | None):
  y = np.asarray(y, np.float64)
  o = np.asarray(o, np.float64)
  if y.shape != o.shape or y.ndim != 1:
    raise ValueError(f"Y and O must be 1-D of the same length, got {y.shape} and {o.shape}")
  if not (np.all(np.isfinite(y)) and np.all(np.isfinite(o))):
    raise ValueError("confidences contain NaN or Inf")
  if score == "prob" and (np.any(y > 1) or np.any(o > 1) or np.any(o < 0)):
    raise ValueError("probabilities outside [0, 1]; pass score='logit' for logits")
  return y, o


def average_drop(y, o, score: str | None = None) -> float:
  """Eq. 11: ``100 * mean(max(0, (Y - O) / Y))``; raises when some ``Y <= 0``."""
  y, o = _check_confidences(y, o, score)
  if np.any(y <= 0):
    bad = np.flatnonzero(y <= 0)
    raise ValueError(f"average drop needs Y > 0 (a ratio with Y <= 0 flips sign); images "
                     f"{bad[:10].tolist()} have Y <= 0")
  return float(100.0 * np.mean(np.maximum(0.0, (y - o) / y)))


def increase_in_confidence(y, o, score: str | None = None) -> float:
  """Eq. 12: percentage of images with ``O > Y`` strictly (a tie is no increase)."""
  y, o = _check_confidences(y, o, score)
  return float(100.0 * np.mean(o > y))


def win_percent(o_BM, names: Sequence[str], tie: str = "split") -> dict[str, Any]:
  """Eq. 13: share of images on which each method's explanation gives the lowest confidence.

  Args:
    o_BM: confidence of each image (rows) under each method's explanation (columns).
    names: the methods, in column order (``tie="first"`` favours earlier ones).
    tie: "split" shares a tie equally among the tied methods; "first" gives it to the first of
      them, as the official code's argmin does.

  Returns:
    ``{"win": {name: percent}, "tie": tie, "ties": number of images with a tie}``.
  """
  if tie not in TIES:
    raise ValueError(f"tie must be one of {TIES}, got {tie!r}")
  o = np.asarray(o_BM, np.float64)
  if o.ndim != 2 or o.shape[1] != len(names) or o.shape[0] == 0:
    raise ValueError(f"confidences of shape {o.shape} do not match {len(names)} methods")
  lowest = o == o.min(axis=1, keepdims=True)
  if tie == "first":
    credit = np.zeros_like(o)
    credit[np.arange(o.shape[0]), np.argmax(lowest, axis=1)] = 1.0
  else:
    credit = lowest / lowest.sum(axis=1, keepdims=True)
  win = 100.0 * credit.mean(axis=0)
  return {"win": {n: float(w) for n, w in zip(names, win)}, "tie": tie,
          "ties": int(np.sum(lowest.sum(axis=1) > 1))}


@functools.partial(jax.jit, static_argnames=("forward", "score"))
def _scores(forward, variables, x_BHWC, idx_B, score):
  logits, _ = forward(variables, x_BHWC)
  return core.class_score(logits, idx_B, score), jnp.argmax(logits, axis=-1)


def confidences(forward: core.Forward, variables, images_BHWC, target="argmax", *, score: str,
                batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
  """Per-image confidence of the target class, in fixed padded batches (one compiled shape).

  ``target``: "argmax" (of each image's own logits), one class, or a (B,) label array. Returns
  ``(scores (B,), classes (B,))``. Each image is scored on its own row of its batch, so the result
  is the same for every batch size and permutes with the images.
  """
  core.check_score(score)
  images = np.asarray(images_BHWC, np.float32)
  n = images.shape[0]
  labels = None if isinstance(target, str) else np.broadcast_to(np.asarray(target, np.int32), (n,))
  if isinstance(target, str) and target != "argmax":
    raise ValueError(f"target must be 'argmax', a class or labels, got {target!r}")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  out_s, out_c = np.zeros(n, np.float32), np.zeros(n, np.int32)
  for start in range(0, n, batch_size):
    chunk = images[start:start + batch_size]
    m = chunk.shape[0]
    pad = batch_size - m
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
    if labels is None:
      # Two passes keep the argmax path in one compiled function: classes first, then scores.
      _, cls = _scores(forward, variables, chunk, jnp.zeros(batch_size, jnp.int32), score)
      idx = cls
    else:
      idx = np.concatenate([labels[start:start + m], np.zeros(pad, np.int32)])
    s, _ = _scores(forward, variables, chunk, jnp.asarray(idx, jnp.int32), score)
    out_s[start:start + m] = np.asarray(s)[:m]
    out_c[start:start + m] = np.asarray(idx)[:m]
  return out_s, out_c


def evaluate(forward: core.Forward, variables, images_BHWC, maps: Mapping[str, Any],
             target="argmax", *, score: str, kind: str = "negative", tie: str = "split",
             reference: str | None = None, batch_size: int = 32) -> dict[str, Any]:
  """Average Drop %, % Increase and Win % of several methods' maps on the same images.

  The class explained is fixed on the clean image (``target``) and scored on each explanation
  image. Returns per-method metrics plus the settings (score, kind, tie, reference, target).
  """
  images = np.asarray(images_BHWC, np.float32)
  names = list(maps)
  if not names:
    raise ValueError("no maps given")
  for k, v in maps.items():
    if np.shape(v) != images.shape[:3]:
      raise ValueError(f"maps of {k!r} have shape {np.shape(v)}, expected {images.shape[:3]}")
  y, cls = confidences(forward, variables, images, target, score=score, batch_size=batch_size)
  std = standardise(maps, reference)
  o = {}
  for k in names:
    e = np.asarray(explanation_images(images, std[k], kind))
    o[k], _ = confidences(forward, variables, e, cls, score=score, batch_size=batch_size)
  win = win_percent(np.stack([o[k] for k in names], axis=1), names, tie)
  return {
      "methods": {k: {"average_drop": average_drop(y, o[k], score),
                      "increase": increase_in_confidence(y, o[k], score),
                      "win": win["win"][k]} for k in names},
      "n": int(images.shape[0]), "ties": win["ties"],
      "settings": {"score": score, "kind": kind, "tie": tie, "reference": reference,
                   "target": core.target_kind(target)},
      "y": y.tolist(), "o": {k: v.tolist() for k, v in o.items()},
  }
