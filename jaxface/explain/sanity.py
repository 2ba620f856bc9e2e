"""Model-parameter randomisation test (Adebayo et al. 2018), cascading from the top.

:func:`layer_order` lists the model's parameterised layers in the order the forward pass calls
them (found by intercepting module calls, not from the order of definition). :func:`cascade`
re-initialises one more of them per step, starting from the output; each layer's random values
depend only on the seed and the layer, so step k+1 extends step k. :func:`run` compares each
image's map from the trained model with the map after every step: Spearman rank correlation of
the signed maps and of their absolute values, and SSIM of the 2-D maps. A method whose maps stay
similar after every layer is randomised does not depend on the model and is reported as failing.

Differences from Quantus' MPRT: it randomises modules in *definition* order (reversed), computes
SSIM on flattened 1-D maps, and its layer average skips a key named "orig" while writing
"original", so the un-randomised self-similarity (about 1) is averaged in. Here the order is the
forward order, SSIM is 2-D (Gaussian window, sigma 1.5, as Wang et al.), and the averages are
over the randomised steps only.

Re-initialisation: kernels (2-D or more) get LeCun-normal values (Flax's default initialiser for
Dense and Conv); 1-D parameters (biases, norm scales) get normal values with the trained leaf's
standard deviation. Batch statistics are left as trained.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import cv2
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Explainer = Callable[[Any, jax.Array], Any]  # (variables, x) -> (B, H, W) maps


def layer_order(model: nn.Module, variables, x) -> list[tuple[str, ...]]:
  """Paths (in ``variables['params']``) of the parameterised modules, in forward call order."""
  calls: list[tuple[str, ...]] = []

  def record(next_fun, args, kwargs, context):
    if context.method_name == "__call__":
      calls.append(tuple(context.module.scope.path))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  order, params = [], variables.get("params", {})
  for path in calls:
    node = params
    for key in path:
      node = node.get(key, {}) if isinstance(node, dict) else {}
    owns = isinstance(node, dict) and any(not isinstance(v, dict) for v in node.values())
    if owns and path not in order:
      order.append(path)
  return order


def _get(tree, path):
  for k in path:
    tree = tree[k]
  return tree


def _set(tree, path, value):
  tree = dict(tree)
  if len(path) == 1:
    tree[path[0]] = value
  else:
    tree[path[0]] = _set(tree[path[0]], path[1:], value)
  return tree


def randomise_layer(layer_params: dict, seed: Sequence[int]) -> dict:
  """Fresh values for one layer's own (direct) parameters, drawn from ``seed`` (host numpy: no
  compile per parameter shape)."""
  out = dict(layer_params)
  names = sorted(k for k, v in layer_params.items() if not isinstance(v, dict))
  for i, name in enumerate(names):
    leaf = np.asarray(layer_params[name], np.float32)
    z = np.random.default_rng([*seed, i]).standard_normal(leaf.shape)
    if leaf.ndim >= 2:
      scale = 1.0 / np.sqrt(max(1, int(np.prod(leaf.shape[:-1]))))
    else:
      scale = float(leaf.std())
    out[name] = (z * scale).astype(layer_params[name].dtype)
  return out


def cascade(variables, order: Sequence[tuple[str, ...]], seed: int):
  """Yields ``(layer path, variables)`` with the top 1, 2, ..., all layers randomised."""
  params = variables["params"]
  for idx in reversed(range(len(order))):
    path = order[idx]
    params = _set(params, path, randomise_layer(_get(params, path), (int(seed), idx)))
    yield path, {**variables, "params": params}


def _ranks(a: np.ndarray) -> np.ndarray:
  """Average ranks (ties share the mean of their positions), as scipy's rankdata."""
  _, inv, cnt = np.unique(a, return_inverse=True, return_counts=True)
  ends = np.cumsum(cnt)
  return ((ends - cnt + ends + 1) / 2.0)[inv]


def spearman(a, b) -> float:
  """Spearman rank correlation of two maps (0 when either is constant: no order to compare)."""
  ra, rb = _ranks(np.ravel(a)), _ranks(np.ravel(b))
  ra, rb = ra - ra.mean(), rb - rb.mean()
  den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
  return float((ra * rb).sum() / den) if den > 0 else 0.0


def ssim(a, b) -> float:
  """2-D SSIM of two maps min-max scaled to [0, 1] (Gaussian window sigma 1.5, the 11-tap window
  of Wang et al. shrunk to the map when smaller; mean over the pixels the window fits in)."""

  def scale(m):
    m = np.asarray(m, np.float64)
    r = m.max() - m.min()
    return (m - m.min()) / r if r > 0 else np.zeros_like(m)

  a, b = scale(a), scale(b)
  k = min(11, min(a.shape) - (1 - min(a.shape) % 2))
  if k < 3:
    raise ValueError(f"maps of shape {a.shape} are too small for SSIM")
  blur = lambda m: cv2.GaussianBlur(m, (k, k), 1.5, borderType=cv2.BORDER_REFLECT)  # noqa: E731
  mu_a, mu_b = blur(a), blur(b)
  va = blur(a * a) - mu_a**2
  vb = blur(b * b) - mu_b**2
  cov = blur(a * b) - mu_a * mu_b
  c1, c2 = 0.01**2, 0.03**2
  s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
  p = (k - 1) // 2
  return float(s[p:s.shape[0] - p, p:s.shape[1] - p].mean())


def run(explainer: Explainer, model: nn.Module, variables, x, *, seeds: Sequence[int] = (0,),
        threshold: float = 0.5) -> dict[str, Any]:
  """Cascading randomisation: similarity of each image's map to the trained model's, per step.

  Returns ``{"layers": [...top first], "steps": [{"layer", "spearman", "spearman_abs", "ssim"}]``
  (means over images and seeds), ``"mean"`` (over the randomised steps only), ``"final"`` (all
  layers randomised) and ``"passes"``: the mean |Spearman| of the absolute maps after full
  randomisation is below ``threshold`` (a model-independent method stays near 1 and fails).
  """
  order = layer_order(model, variables, x)
  if not order:
    raise ValueError("the model has no parameterised layers to randomise")
  ref = np.asarray(explainer(variables, x))
  per_step = [[] for _ in order]
  for seed in seeds:
    for step, (_, v) in enumerate(cascade(variables, order, seed)):
      maps = np.asarray(explainer(v, x))
      for r, m in zip(ref, maps):
        per_step[step].append((spearman(r, m), spearman(np.abs(r), np.abs(m)), ssim(r, m)))
  steps = []
  for path, vals in zip(reversed(order), per_step):
    v = np.asarray(vals)
    steps.append({"layer": "/".join(path), "spearman": float(v[:, 0].mean()),
                  "spearman_abs": float(v[:, 1].mean()), "ssim": float(v[:, 2].mean())})
  keys = ("spearman", "spearman_abs", "ssim")
  mean = {k: float(np.mean([s[k] for s in steps])) for k in keys}
  final = {k: steps[-1][k] for k in keys}
  return {"layers": ["/".join(p) for p in reversed(order)], "steps": steps, "mean": mean,
          "final": final, "passes": bool(abs(final["spearman_abs"]) < threshold),
          "threshold": threshold, "seeds": list(seeds)}


def gradient_explainer(forward, labels, score: str = "logit") -> Explainer:
  """|d score / d x|, max over channels: the plain gradient map of the randomisation paper."""
  from jaxface.explain import core  # pylint: disable=g-import-not-at-top

  @jax.jit
  def fn(variables, x):
    def total(x):
      logits, _ = forward(variables, x)
      return jnp.sum(core.class_score(logits, jnp.asarray(labels, jnp.int32), score))
    return jnp.max(jnp.abs(jax.grad(total)(x)), axis=-1)

  return fn


def edge_explainer(variables, x) -> np.ndarray:
  """Sobel gradient magnitude of the grey image: a 'saliency map' that ignores the model."""
  del variables
  out = []
  for img in np.asarray(x, np.float32):
    g = img.mean(axis=-1)
    out.append(np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)))
  return np.stack(out)
