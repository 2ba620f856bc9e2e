"""Optimisers and learning-rate schedules of the papers, built from a config's ``optim`` section.

``make_optimizer(cfg, params, steps_per_epoch, total_steps)`` returns one optax transformation that
does, in order: zero the gradients of frozen parameters, clip by global norm (over the trainable
parameters only), then per parameter group: weight decay, SGD momentum or Adam, and the scheduled
learning rate times the group's multiplier. Fields of ``optim`` (a ConfigDict or a dict; a field
left out or set to None takes the default shown):

  name            "sgd" | "adam" | "adamw"                                     ("sgd")
  lr              base learning rate, > 0                                      (required)
  momentum        SGD momentum, 0 turns it off                                 (0.9)
  nesterov        SGD Nesterov momentum                                        (False)
  b1, b2, eps     Adam moments and epsilon                                     (0.9, 0.999, 1e-8)
  weight_decay    SGD and Adam: L2 added to the gradient, ``g + wd * w`` (Caffe's solver
                  weight_decay, Keras l2 regularisers up to a factor 2); adamw: decoupled,
                  ``update -= lr * wd * w`` (optax.adamw)                      (0.0)
  weight_decay_mask  "kernels" (Flax ``kernel`` leaves: conv and dense weights, the Caffe
                  prototxts' ``decay_mult: 0`` on biases) | "all"              ("kernels")
  schedule        "constant" | "step" | "polynomial" | "keras_time" | "cosine" ("constant")
  boundaries_epochs / boundaries_steps   step: where the rate is multiplied by decay_factor
                  (give exactly one; epochs are rounded to steps)             (())
  decay_factor    step: multiplier per boundary passed                         (0.1)
  power, end_lr   polynomial: ``end + (lr - end) * (1 - t/T)^power`` over T = total_steps
                  (Caffe "poly" is end_lr = 0); cosine also decays to end_lr   (1.0, 0.0)
  decay           keras_time: ``lr / (1 + decay * t)`` (Keras 1/2 ``SGD(decay=...)``)  (0.0)
  warmup_steps    linear ramp ``min(1, (t + 1) / warmup_steps)`` multiplying the schedule (0)
  freeze          regex patterns; matching parameters get zero updates and no decay  (())
  trainable       regex patterns; only matching parameters train (exclusive with freeze) (())
  lr_mult         ((pattern, multiplier), ...): first match wins, default 1; multiplier 0
                  freezes, as Caffe's ``lr_mult: 0`` does                      (())
  grad_clip_norm  clip by global norm; 0 is off                               (0.0)

``t`` is the number of updates already applied (optax's count): the first update uses ``t = 0``,
as Caffe's ``iter`` and Keras' ``iterations`` do.

Patterns are Python regular expressions searched (``re.search``) in '/'-joined parameter paths
with a leading ``params`` collection name removed (``conv1/kernel``, ``fc7/bias``). So ``fc6``
selects ``fc6/kernel`` and ``fc6/bias``, ``conv\\d_\\d/`` every VGG conv layer, and an anchor
selects one module exactly: ``^conv1/`` does not select ``conv1_1/kernel`` (``conv1`` alone
would). A pattern that matches no parameter is an error: it is almost always a typo that would
silently train everything. Every such error is a ``config_lib.ConfigError`` naming
``config.optim.<field>``, raised when the optimiser is built (before the first step). Caffe's per-blob rates are first-match rules too: Levi & Hassner's
``blobs_lr`` 1/2 (weights/biases) and 10/20 on fc8 are
``lr_mult = (("^fc8/bias", 20), ("^fc8/", 10), ("/bias$", 2))``.

Momentum and the learning rate: Caffe and Keras fold the current rate into the velocity, optax
scales the accumulated trace by the current rate. The two agree while the rate is constant and
differ briefly after a step change; the schedules here are otherwise literal.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxface import config_lib

NAMES = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "polynomial", "keras_time", "cosine")
DECAY_MASKS = ("kernels", "all")
FROZEN = "frozen"

_DEFAULTS: dict[str, Any] = {
    "name": "sgd",
    "lr": None,
    "momentum": 0.9,
    "nesterov": False,
    "b1": 0.9,
    "b2": 0.999,
    "eps": 1e-8,
    "weight_decay": 0.0,
    "weight_decay_mask": "kernels",
    "schedule": "constant",
    "boundaries_epochs": (),
    "boundaries_steps": (),
    "decay_factor": 0.1,
    "power": 1.0,
    "end_lr": 0.0,
    "decay": 0.0,
    "warmup_steps": 0,
    "freeze": (),
    "trainable": (),
    "lr_mult": (),
    "grad_clip_norm": 0.0,
}


class ParamGroup(NamedTuple):
  """How one parameter is optimised (a row of the trainer's printed report)."""
  path: str
  group: str
  lr_mult: float
  frozen: bool


def _fail(field: str, message: str) -> config_lib.ConfigError:
  """A config error (a ValueError the entry points print as one line) naming the field."""
  return config_lib.ConfigError(f"config.optim.{field}: {message}")


def _section(cfg: Any) -> dict[str, Any]:
  """The ``optim`` fields as a plain dict with defaults filled in and types checked."""
  if hasattr(cfg, "to_dict"):
    cfg = cfg.to_dict()
  if not isinstance(cfg, Mapping):
    raise TypeError(f"optim config must be a ConfigDict or a mapping, got {type(cfg).__name__}")
  if "optim" in cfg and isinstance(cfg["optim"], Mapping):
    cfg = cfg["optim"]
  unknown = sorted(set(cfg) - set(_DEFAULTS))
  if unknown:
    raise config_lib.ConfigError(f"config.optim: unknown field(s) {unknown}; known fields: "
                                 f"{sorted(_DEFAULTS)}")
  c = {k: (cfg[k] if cfg.get(k) is not None else v) for k, v in _DEFAULTS.items()}

  if c["name"] not in NAMES:
    raise _fail("name", f"must be one of {NAMES}, got {c['name']!r}")
  if c["lr"] is None:
    raise _fail("lr", "is required")
  for key in ("lr", "momentum", "b1", "b2", "eps", "weight_decay", "decay_factor", "power",
              "end_lr", "decay", "grad_clip_norm"):
    try:
      c[key] = float(c[key])
    except (TypeError, ValueError):
      raise _fail(key, f"must be a number, got {c[key]!r}") from None
    if not math.isfinite(c[key]):
      raise _fail(key, f"must be finite, got {c[key]}")
  if c["lr"] <= 0:
    raise _fail("lr", f"must be > 0, got {c['lr']}")
  for key in ("momentum", "b1", "b2"):
    if not 0.0 <= c[key] < 1.0:
      raise _fail(key, f"must be in [0, 1), got {c[key]}")
  for key in ("eps", "decay_factor", "power"):
    if c[key] <= 0:
      raise _fail(key, f"must be > 0, got {c[key]}")
  for key in ("weight_decay", "end_lr", "decay", "grad_clip_norm"):
    if c[key] < 0:
      raise _fail(key, f"must be >= 0, got {c[key]}")
  if c["end_lr"] > c["lr"]:
    raise _fail("end_lr", f"{c['end_lr']} is above lr {c['lr']}")
  if c["weight_decay_mask"] not in DECAY_MASKS:
    raise _fail("weight_decay_mask", f"must be one of {DECAY_MASKS}, got "
                f"{c['weight_decay_mask']!r}")
  if c["schedule"] not in SCHEDULES:
    raise _fail("schedule", f"must be one of {SCHEDULES}, got {c['schedule']!r}")
  if not isinstance(c["warmup_steps"], (int, np.integer)) or c["warmup_steps"] < 0:
    raise _fail("warmup_steps", f"must be an integer >= 0, got {c['warmup_steps']!r}")
  if not isinstance(c["nesterov"], bool):
    raise _fail("nesterov", f"must be True or False, got {c['nesterov']!r}")

  for key in ("freeze", "trainable"):
    patterns = c[key]
    if isinstance(patterns, str):
      patterns = (patterns,)
    c[key] = tuple(_compile(key, p) for p in patterns)
  if c["freeze"] and c["trainable"]:
    raise config_lib.ConfigError("config.optim.freeze and config.optim.trainable are exclusive: "
                                 "give one of them")
  pairs = []
  for i, pair in enumerate(c["lr_mult"]):
    if isinstance(pair, Mapping) or isinstance(pair, str) or len(pair) != 2:
      raise _fail("lr_mult", f"entry {i} must be a (pattern, multiplier) pair, got {pair!r}")
    pattern, mult = pair
    try:
      mult = float(mult)
    except (TypeError, ValueError):
      raise _fail("lr_mult", f"entry {i} ({pattern!r}): multiplier {mult!r} is not a "
                  "number") from None
    if not math.isfinite(mult) or mult < 0:
      raise _fail("lr_mult", f"entry {i} ({pattern!r}): multiplier must be >= 0, got {mult}")
    pairs.append((_compile("lr_mult", pattern), mult))
  c["lr_mult"] = tuple(pairs)
  return c


def _compile(field: str, pattern: Any) -> re.Pattern:
  if not isinstance(pattern, str) or not pattern:
    raise _fail(field, f"patterns must be non-empty strings, got {pattern!r}")
  try:
    return re.compile(pattern)
  except re.error as e:
    raise _fail(field, f"pattern {pattern!r} is not a valid regular expression: {e}") from None


# ---------------------------------------------------------------------------------------------
# Schedules.


def _boundaries(c: dict[str, Any], steps_per_epoch: float | None) -> tuple[int, ...]:
  epochs, steps = tuple(c["boundaries_epochs"]), tuple(c["boundaries_steps"])
  if bool(epochs) == bool(steps):
    raise _fail("boundaries_epochs", "the step schedule needs exactly one of "
                "boundaries_epochs and boundaries_steps")
  if epochs:
    field = "boundaries_epochs"
    if not steps_per_epoch or steps_per_epoch <= 0:
      raise _fail(field, f"needs steps_per_epoch > 0, got {steps_per_epoch!r}")
    if any(not isinstance(e, (int, float, np.number)) or e <= 0 for e in epochs):
      raise _fail(field, f"must be positive numbers, got {epochs}")
    bounds = tuple(int(round(e * steps_per_epoch)) for e in epochs)
  else:
    field = "boundaries_steps"
    if any(not isinstance(s, (int, np.integer)) or s <= 0 for s in steps):
      raise _fail(field, f"must be positive integers, got {steps}")
    bounds = tuple(int(s) for s in steps)
  if any(b >= a for b, a in zip(bounds, bounds[1:])) or bounds[0] <= 0:
    raise _fail(field, f"must be strictly increasing and give steps > 0, got {bounds} steps")
  return bounds


def _need_total(total_steps: int | None, schedule: str) -> int:
  if total_steps is None or total_steps <= 0:
    raise _fail("schedule", f"{schedule!r} decays over total_steps, which must be > 0 "
                f"(got {total_steps!r})")
  return int(total_steps)


def _schedule(c: dict[str, Any], steps_per_epoch: float | None,
              total_steps: int | None) -> optax.Schedule:
  lr, kind = c["lr"], c["schedule"]
  if kind == "constant":
    base = lambda t: jnp.full(jnp.shape(t), lr, jnp.float32)
  elif kind == "step":
    bounds = jnp.asarray(_boundaries(c, steps_per_epoch), jnp.int32)
    factor = c["decay_factor"]
    # Update t uses the decayed rate from the boundary on (Caffe: gamma^floor(iter/stepsize)).
    base = lambda t: lr * factor ** jnp.sum(t[..., None] >= bounds, axis=-1).astype(jnp.float32)
  elif kind == "polynomial":
    total = _need_total(total_steps, kind)
    end, power = c["end_lr"], c["power"]
    base = lambda t: end + (lr - end) * (1.0 - jnp.minimum(t, total) / total) ** power
  elif kind == "keras_time":
    decay = c["decay"]
    base = lambda t: lr / (1.0 + decay * t)
  else:  # cosine
    total = _need_total(total_steps, kind)
    end = c["end_lr"]
    base = lambda t: end + (lr - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.minimum(t, total)
                                                              / total))
  warmup = int(c["warmup_steps"])

  def schedule(count: jax.Array) -> jax.Array:
    t = jnp.asarray(count, jnp.float32) if kind != "step" else jnp.asarray(count, jnp.int32)
    value = jnp.asarray(base(t), jnp.float32)
    if warmup:
      ramp = jnp.minimum(1.0, (jnp.asarray(count, jnp.float32) + 1.0) / warmup)
      value = value * ramp
    return value

  return schedule


def make_schedule(cfg: Any, steps_per_epoch: float | None = None,
                  total_steps: int | None = None) -> optax.Schedule:
  """The learning rate as a function of the update count (see the module docstring).

  The function is elementwise, so it also takes an array of counts (to plot or log a whole
  schedule at once).

  ``steps_per_epoch`` is needed for ``boundaries_epochs``; ``total_steps`` for the polynomial
  and cosine schedules.
  """
  return _schedule(_section(cfg), steps_per_epoch, total_steps)


# ---------------------------------------------------------------------------------------------
# Parameter groups.


def _key_name(k: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _path(keypath: Sequence[Any]) -> str:
  parts = [_key_name(k) for k in keypath]
  if len(parts) > 1 and parts[0] == "params":
    parts = parts[1:]
  return "/".join(parts)


def _matches(pattern: re.Pattern, path: str) -> bool:
  return pattern.search(path) is not None


def _assign(c: dict[str, Any], path: str) -> tuple[str, float, bool]:
  """(group label, lr multiplier, frozen) of one parameter."""
  frozen = any(_matches(p, path) for p in c["freeze"])
  if c["trainable"] and not any(_matches(p, path) for p in c["trainable"]):
    frozen = True
  mult = next((m for p, m in c["lr_mult"] if _matches(p, path)), 1.0)
  if frozen or mult == 0:
    return FROZEN, 0.0, True
  decayed = c["weight_decay"] > 0 and (c["weight_decay_mask"] == "all"
                                       or path.rsplit("/", 1)[-1] == "kernel")
  return f"lr_x{mult:g}" + ("+wd" if decayed else ""), mult, False


def _labels(c: dict[str, Any]) -> Callable[[Any], Any]:
  return lambda tree: jax.tree_util.tree_map_with_path(
      lambda kp, _: _assign(c, _path(kp))[0], tree)


def _check_patterns(c: dict[str, Any], paths: Sequence[str]) -> None:
  if not paths:
    raise ValueError("params has no leaves: nothing to optimise")
  listed = [p.pattern for p in c["freeze"]] + [p.pattern for p in c["trainable"]]
  fields = ["freeze"] * len(c["freeze"]) + ["trainable"] * len(c["trainable"])
  listed += [p.pattern for p, _ in c["lr_mult"]]
  fields += ["lr_mult"] * len(c["lr_mult"])
  for field, pattern in zip(fields, listed):
    compiled = re.compile(pattern)
    if not any(_matches(compiled, path) for path in paths):
      sample = ", ".join(paths[:6]) + (", ..." if len(paths) > 6 else "")
      raise _fail(field, f"pattern {pattern!r} matches no parameter; parameter paths are "
                  f"like: {sample}")
  if all(_assign(c, path)[2] for path in paths):
    raise config_lib.ConfigError("config.optim: freeze/trainable/lr_mult leave no trainable "
                                 "parameter")


def describe_param_groups(cfg: Any, params: Any) -> list[ParamGroup]:
  """One :class:`ParamGroup` per parameter leaf, in tree order."""
  return _describe(_section(cfg), params)


def _describe(c: dict[str, Any], params: Any) -> list[ParamGroup]:
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  paths = [_path(kp) for kp, _ in leaves]
  _check_patterns(c, paths)
  return [ParamGroup(path, *_assign(c, path)) for path in paths]


def format_param_groups(cfg: Any, params: Any) -> str:
  """A text table: path, shape, group, lr multiplier, frozen; then totals per group."""
  rows = describe_param_groups(cfg, params)
  shapes = [tuple(np.shape(x)) for x in jax.tree_util.tree_leaves(params)]
  width = max(len(r.path) for r in rows)
  lines = [f"{'parameter':<{width}}  {'shape':<20}  {'group':<14}  lr_mult  frozen"]
  totals: dict[str, int] = {}
  for r, shape in zip(rows, shapes):
    lines.append(f"{r.path:<{width}}  {str(shape):<20}  {r.group:<14}  {r.lr_mult:>7g}  "
                 f"{'yes' if r.frozen else 'no'}")
    totals[r.group] = totals.get(r.group, 0) + int(np.prod(shape))
  lines.append("")
  lines += [f"{group}: {n:,} parameters" for group, n in sorted(totals.items())]
  return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The optimiser.


def _group_transform(c: dict[str, Any], schedule: optax.Schedule, mult: float,
                     decayed: bool) -> optax.GradientTransformation:
  parts = []
  if decayed and c["name"] in ("sgd", "adam"):
    parts.append(optax.add_decayed_weights(c["weight_decay"]))
  if c["name"] == "sgd":
    if c["momentum"]:
      parts.append(optax.trace(decay=c["momentum"], nesterov=c["nesterov"]))
  else:
    parts.append(optax.scale_by_adam(b1=c["b1"], b2=c["b2"], eps=c["eps"]))
  if decayed and c["name"] == "adamw":
    parts.append(optax.add_decayed_weights(c["weight_decay"]))
  rate = schedule if mult == 1.0 else (lambda t: mult * schedule(t))
  parts.append(optax.scale_by_learning_rate(rate))
  return optax.chain(*parts)


def make_optimizer(cfg: Any, params: Any, steps_per_epoch: float | None = None,
                   total_steps: int | None = None) -> optax.GradientTransformation:
  """The optax transformation for ``params`` (the ``params`` collection, or a tree holding it).

  ``params`` fixes the groups and checks every pattern; the returned transformation labels
  whatever tree it is initialised with the same way, so pass that same tree to ``init``.
  """
  c = _section(cfg)
  schedule = _schedule(c, steps_per_epoch, total_steps)
  rows = _describe(c, params)
  transforms: dict[str, optax.GradientTransformation] = {FROZEN: optax.set_to_zero()}
  for r in rows:
    if not r.frozen and r.group not in transforms:
      transforms[r.group] = _group_transform(c, schedule, r.lr_mult, r.group.endswith("+wd"))
  labels = _labels(c)
  parts = []
  if c["grad_clip_norm"] > 0:
    if any(r.frozen for r in rows):
      # Zero frozen gradients first, so they do not count in the global norm.
      parts.append(optax.masked(
          optax.set_to_zero(),
          lambda tree: jax.tree.map(lambda label: label == FROZEN, labels(tree))))
    parts.append(optax.clip_by_global_norm(c["grad_clip_norm"]))
  parts.append(optax.multi_transform(transforms, labels))
  return optax.chain(*parts)
