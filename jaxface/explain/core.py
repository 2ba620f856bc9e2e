"""Shared pieces of the explainers: a model as a function, targets, scores, map hygiene.

A model is explained through ``forward(variables, x_BHWC) -> (logits_BK, aux)``; :func:`bind`
builds one from a Flax module (choosing one task of a dict output and an optional preprocessing).

Gradients with respect to a feature map are taken at any entry of ``aux`` without editing the
model: :func:`with_layer_delta` traces ``forward`` to a jaxpr and re-evaluates it with a
perturbation added where that entry is produced, so ``d score / d aux[layer]`` is the gradient of
everything downstream of the tensor, exactly what a forward hook on that tensor gives in torch.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
from jax.extend import core as jcore
import jax.numpy as jnp
import numpy as np

Forward = Callable[[Any, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
SCORES = ("logit", "prob")
_EPS = 1e-12  # A map whose value range is below this is treated as constant.


def bind(model, *, output: str | None = None,
         preprocess: Callable[[jax.Array], jax.Array] | None = None) -> Forward:
  """``forward(variables, x)`` for a jaxface model returning ``(output, aux)``.

  Args:
    model: a Flax module with ``apply(variables, x, train=False) -> (output, aux)``.
    output: the task to explain when the output is a dict (e.g. "gender").
    preprocess: maps the images given to the explainers (e.g. floats in [0, 1], the space in which
      occlusion fills and explanation images are defined) to the model's input.
  """

  def forward(variables, x_BHWC):
    if preprocess is not None:
      x_BHWC = preprocess(x_BHWC)
    out, aux = model.apply(variables, x_BHWC, train=False)
    if isinstance(out, dict):
      if output is None:
        raise ValueError(f"the model has several outputs {sorted(out)}; choose one with output=")
      if output not in out:
        raise ValueError(f"unknown output {output!r}; the model has {sorted(out)}")
      out = out[output]
    elif output is not None:
      raise ValueError(f"output={output!r} given but the model has a single output")
    return out, aux

  return forward


def default_layer(aux: dict[str, Any]) -> str:
  """The last conv block: ``aux['features']`` (every conv backbone records it)."""
  if "features" in aux:
    return "features"
  raise ValueError(f"the model's aux has no 'features' entry; name a layer from {sorted(aux)}")


def check_score(score: str) -> str:
  if score not in SCORES:
    raise ValueError(f"score must be one of {SCORES}, got {score!r}")
  return score


def target_indices(logits_BK: jax.Array, target) -> jax.Array:
  """Class per image: "argmax", one int for all images, or a (B,) array of labels."""
  b = logits_BK.shape[0]
  if isinstance(target, str):
    if target != "argmax":
      raise ValueError(f"target must be 'argmax', a class index or a (B,) label array, "
                       f"got {target!r}")
    return jnp.argmax(jax.lax.stop_gradient(logits_BK), axis=-1)
  t = jnp.asarray(target, jnp.int32)
  if t.ndim == 0:
    return jnp.full((b,), t)
  if t.shape != (b,):
    raise ValueError(f"target labels have shape {t.shape}, expected ({b},)")
  return t


def target_kind(target) -> str:
  """How the target was chosen, recorded with every result."""
  if isinstance(target, str):
    return target
  return "class" if np.ndim(target) == 0 else "label"


def class_score(logits_BK: jax.Array, idx_B: jax.Array, score: str) -> jax.Array:
  """The confidence explained: the class logit or its softmax probability."""
  logits_BK = logits_BK.astype(jnp.float32)
  if score == "prob":
    logits_BK = jax.nn.softmax(logits_BK, axis=-1)
  return jnp.take_along_axis(logits_BK, idx_B[:, None], axis=1)[:, 0]


def minmax(maps_BHW: jax.Array) -> jax.Array:
  """Per-map min-max scaling to [0, 1]; a constant map (all zeros after ReLU included) gives zeros.

  pytorch-grad-cam divides by (max - min + 1e-7) and Score-CAM's reference code by (max - min),
  which gives NaN for constant maps (its issues #214, #173); here they are exactly zero.
  """
  lo = jnp.min(maps_BHW, axis=(-2, -1), keepdims=True)
  hi = jnp.max(maps_BHW, axis=(-2, -1), keepdims=True)
  rng = hi - lo
  ok = rng > _EPS
  return jnp.where(ok, (maps_BHW - lo) / jnp.where(ok, rng, 1.0), 0.0)


def interp_matrix(n_in: int, n_out: int, align_corners: bool) -> np.ndarray:
  """(n_out, n_in) linear interpolation weights, as torch's bilinear upsampling on one axis."""
  m = np.zeros((n_out, n_in), np.float64)
  for i in range(n_out):
    if align_corners:
      x = 0.0 if n_out == 1 else i * (n_in - 1) / (n_out - 1)
    else:
      x = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
    x0 = min(int(np.floor(x)), n_in - 1)
    x1 = min(x0 + 1, n_in - 1)
    f = x - x0
    m[i, x0] += 1.0 - f
    m[i, x1] += f
  return m


def upsample(maps_BHWK: jax.Array, size: Sequence[int], align_corners: bool = False) -> jax.Array:
  """Bilinear resize of (B, h, w, K) maps to (B, H, W, K), torch's two corner conventions."""
  h, w = maps_BHWK.shape[1:3]
  if (h, w) == tuple(size):
    return maps_BHWK
  mh = jnp.asarray(interp_matrix(h, size[0], align_corners), maps_BHWK.dtype)
  mw = jnp.asarray(interp_matrix(w, size[1], align_corners), maps_BHWK.dtype)
  return jnp.einsum("Hh,bhwk,Ww->bHWk", mh, maps_BHWK, mw)


def _shape_of(tree):
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), tree)


def _bind(eqn, invals):
  """Re-applies one jaxpr equation (as ``jax.core.eval_jaxpr`` does, across its two API forms)."""
  params = eqn.primitive.get_bind_params(eqn.params)
  subfuns = []
  if isinstance(params, tuple):  # Older JAX: (subfuns, params).
    subfuns, params = params
  ctx = getattr(getattr(eqn, "ctx", None), "manager", None)
  if ctx is None:
    return eqn.primitive.bind(*subfuns, *invals, **params)
  with ctx:
    return eqn.primitive.bind(*subfuns, *invals, **params)


def with_layer_delta(forward: Forward, layer: str):
  """``f(variables, x, delta) -> (logits, aux)``, ``delta`` added where ``aux[layer]`` is made.

  Returns ``make``: ``make(variables, x)`` traces ``forward`` for those shapes (at trace time when
  called under jit) and gives ``(f, layer ShapeDtypeStruct)``.
  """

  def make(variables, x):
    closed = jax.make_jaxpr(forward)(_shape_of(variables), _shape_of(x))
    out_tree = jax.tree.structure(jax.eval_shape(forward, _shape_of(variables), _shape_of(x)))
    leaves = jax.tree.unflatten(out_tree, list(range(out_tree.num_leaves)))[1]
    if layer not in leaves:
      raise ValueError(f"unknown layer {layer!r}; the model's aux has {sorted(leaves)}")
    pos = leaves[layer]
    if not isinstance(pos, int):
      raise ValueError(f"aux[{layer!r}] is not a single array")
    jaxpr = closed.jaxpr
    target = jaxpr.outvars[pos]
    if isinstance(target, jcore.Literal):
      raise ValueError(f"aux[{layer!r}] is a constant; it has no gradient")
    shape = jax.ShapeDtypeStruct(target.aval.shape, target.aval.dtype)

    def f(variables, x, delta):
      env = {}
      read = lambda v: v.val if isinstance(v, jcore.Literal) else env[v]

      def write(v, val):
        env[v] = val + delta.astype(val.dtype) if v is target else val

      for v, c in zip(jaxpr.constvars, closed.consts):
        write(v, c)
      for v, a in zip(jaxpr.invars, jax.tree.leaves((variables, x))):
        write(v, a)
      for eqn in jaxpr.eqns:
        ans = _bind(eqn, [read(v) for v in eqn.invars])
        outs = ans if eqn.primitive.multiple_results else [ans]
        for v, o in zip(eqn.outvars, outs):
          write(v, o)
      return jax.tree.unflatten(out_tree, [read(v) for v in jaxpr.outvars])

    return f, shape

  return make


@dataclasses.dataclass(frozen=True)
class Result:
  """Maps with the settings that produced them (a pytree: maps and indices are leaves)."""
  maps: jax.Array  # (B, H, W) at the input's size, each min-max scaled to [0, 1].
  raw: jax.Array  # (B, h, w) before upsampling and scaling (the layer's grid for the CAMs).
  targets: jax.Array  # (B,) class explained per image.
  scores: jax.Array  # (B,) confidence of that class on the clean input.
  settings: dict[str, Any]

  def tree_flatten(self):
    return (self.maps, self.raw, self.targets, self.scores), tuple(sorted(self.settings.items()))

  @classmethod
  def tree_unflatten(cls, aux, children):
    return cls(*children, settings=dict(aux))


jax.tree_util.register_pytree_node(Result, Result.tree_flatten, Result.tree_unflatten)
