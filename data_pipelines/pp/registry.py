"""The op registry and the pipe-string parser, with the checks every op shares.

``register(name)`` adds an ``Op`` subclass (or a function) under a name; ``parse(pipe)`` turns a
pipe string into op instances; ``lookup`` finds a registered op, importing its plugin module first
when it lives outside this package. The argument checks (``int_arg`` ...) raise ``ValueError``
naming the op and the argument; the example accessors (``get_image``, ``maps_at``, ``need``) raise
``BadExampleError`` for what an example lacks.
"""

from __future__ import annotations

import abc
import ast
import importlib
import inspect
import math
from typing import Any, Callable

import cv2
import numpy as np

Example = dict[str, Any]

# Keys of the maps that travel with the image through geometric ops; ``saliency(r)`` reads the
# first one present.
MAP_KEYS = ("saliency", "fixation")


class BadExampleError(Exception):
  """An example that cannot be preprocessed (the loader skips and counts it)."""

  def __init__(self, example_id: Any, reason: str):
    super().__init__(f"example {example_id!r}: {reason}")
    self.id = example_id
    self.reason = reason


class Op(abc.ABC):
  """Base class of registered ops.

  Subclasses validate their arguments in ``__init__`` (keeping them as attributes of the same
  names, which ``__str__`` prints) and implement ``apply``. ``random`` marks ops that use the rng.
  """
  name: str = "?"
  random: bool = False

  def __init__(self):
    pass  # no arguments; subclasses with arguments define their own

  @abc.abstractmethod
  def apply(self, example: Example, rng: np.random.Generator | None) -> Example:
    """Returns the transformed example."""

  def __call__(self, example: Example, rng: np.random.Generator | None = None) -> Example:
    if self.random and rng is None:
      raise ValueError(f"{self.name}: a random op needs an np.random.Generator")
    return self.apply(dict(example), rng)  # a shallow copy: the caller's dict stays as it was

  def params(self) -> dict[str, Any]:
    names = list(inspect.signature(type(self).__init__).parameters)[1:]
    return {n: getattr(self, n) for n in names}

  def __str__(self) -> str:
    p = self.params()
    return self.name + (f"({', '.join(f'{k}={v!r}' for k, v in p.items())})" if p else "")

  def __repr__(self) -> str:
    return f"<Op {self}>"

  def __eq__(self, other) -> bool:
    return isinstance(other, Op) and str(self) == str(other)

  def __hash__(self) -> int:
    return hash(str(self))


OPS: dict[str, type[Op]] = {}
# Ops defined outside this package (they need heavier imports): op name -> module that registers
# it, imported the first time a pipe names the op.
PLUGIN_OPS = {
    "cached_saliency": "data_pipelines.saliency_cache",
}


def lookup(name: str) -> type[Op]:
  """The op class registered under ``name`` (importing its plugin module if needed)."""
  if name not in OPS and name in PLUGIN_OPS:
    importlib.import_module(PLUGIN_OPS[name])
  if name not in OPS:
    raise ValueError(f"unknown op {name!r}; known ops: "
                     f"{', '.join(sorted(set(OPS) | set(PLUGIN_OPS)))}")
  return OPS[name]


def register(name: str) -> Callable:
  """Registers an ``Op`` subclass, or a function ``fn(example, rng, **params) -> example``.

  A function op is treated as random (it receives the rng); its keyword parameters (after
  ``example`` and ``rng``) are its arguments, checked for count only.
  """
  if not name.isidentifier():
    raise ValueError(f"op name must be an identifier, got {name!r}")

  def wrap(obj):
    if name in OPS:
      raise ValueError(f"op {name!r} is already registered")
    if isinstance(obj, type) and issubclass(obj, Op):
      cls = obj
    elif callable(obj):
      cls = _function_op(obj)
    else:
      raise TypeError(f"register({name!r}) needs an Op subclass or a function, got {obj!r}")
    cls.name = name
    OPS[name] = cls
    return obj

  return wrap


def _function_op(fn: Callable) -> type[Op]:
  sig = inspect.signature(fn)
  arg_names = list(sig.parameters)[2:]

  class FunctionOp(Op):
    random = True

    def __init__(self, *args, **kwargs):
      try:
        bound = sig.replace(parameters=list(sig.parameters.values())[2:]).bind(*args, **kwargs)
      except TypeError as e:
        raise ValueError(f"{self.name}: {e}") from None
      bound.apply_defaults()
      self._kwargs = dict(bound.arguments)

    def params(self):
      return {n: self._kwargs[n] for n in arg_names}

    def apply(self, example, rng):
      return fn(example, rng, **self._kwargs)

  FunctionOp.__name__ = f"FunctionOp_{fn.__name__}"
  return FunctionOp


# ----------------------------------------------------------------------------- parsing


def _flatten_pipe(node: ast.expr) -> list[ast.expr]:
  # "a|b(1)|c" parses as Python's (a | b(1)) | c, so the op list is the left-to-right BitOr chain;
  # quoted strings containing "|" stay intact.
  if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
    return _flatten_pipe(node.left) + _flatten_pipe(node.right)
  return [node]


def _literal(op: str, what: str, node: ast.expr) -> Any:
  try:
    return ast.literal_eval(node)
  except ValueError:
    raise ValueError(f"{op}: argument {what} must be a literal (number, string, tuple, None), "
                     f"got {ast.unparse(node)!r}") from None


def parse(pipe: str) -> list[Op]:
  """Parses a pipe string into ops; "" gives no ops."""
  if not isinstance(pipe, str):
    raise ValueError(f"pipe must be a string, got {type(pipe).__name__}")
  if not pipe.strip():
    return []
  try:
    tree = ast.parse(pipe.strip(), mode="eval").body
  except SyntaxError as e:
    raise ValueError(f"cannot parse pipe {pipe!r}: {e.msg}") from None
  ops = []
  for node in _flatten_pipe(tree):
    if isinstance(node, ast.Name):
      name, args, kwargs = node.id, [], {}
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
      name = node.func.id
      if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None
                                                                   for k in node.keywords):
        raise ValueError(f"{name}: *args / **kwargs are not allowed")
      args = [_literal(name, f"#{i + 1}", a) for i, a in enumerate(node.args)]
      kwargs = {k.arg: _literal(name, k.arg, k.value) for k in node.keywords}
    else:
      raise ValueError(f"each op must be a name or name(args), got {ast.unparse(node)!r}")
    cls = lookup(name)
    try:  # the argument count and names, before the op checks the values
      inspect.signature(cls).bind(*args, **kwargs)
    except TypeError as e:
      raise ValueError(f"{name}: {e}") from None
    ops.append(cls(*args, **kwargs))
  return ops


# ----------------------------------------------------------------------------- argument checks


def int_arg(op: str, arg: str, v, minimum: int = 1) -> int:
  if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
    raise ValueError(f"{op}: {arg} must be an integer >= {minimum}, got {v!r}")
  return int(v)


def float_arg(op: str, arg: str, v, lo: float = 0.0, hi: float = math.inf) -> float:
  if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
    raise ValueError(f"{op}: {arg} must be a number in [{lo}, {hi}], got {v!r}")
  return float(v)


def size_arg(op: str, arg: str, v) -> tuple[int, int] | int:
  """A size: an int (square) or an (h, w) pair."""
  if isinstance(v, (tuple, list)):
    if len(v) != 2:
      raise ValueError(f"{op}: {arg} must be an int or an (h, w) pair, got {v!r}")
    return (int_arg(op, arg, v[0]), int_arg(op, arg, v[1]))
  return int_arg(op, arg, v)


def pair(size) -> tuple[int, int]:
  return (size, size) if isinstance(size, int) else size


# ----------------------------------------------------------------------------- example access


def get_image(example: Example, op: str) -> np.ndarray:
  img = example.get("image")
  if not isinstance(img, np.ndarray):
    raise ValueError(f"{op}: 'image' is not decoded (put decode first)")
  if img.ndim != 3 or img.shape[2] != 3:
    raise ValueError(f"{op}: needs one (H, W, 3) image, got shape {img.shape}")
  return img


def raw_maps(example: Example, op: str) -> dict[str, np.ndarray]:
  """The maps present, checked to be (H, W) arrays (of any size)."""
  out = {}
  for key in MAP_KEYS:
    if key in example and example[key] is not None:
      m = example[key]
      if not isinstance(m, np.ndarray):
        raise ValueError(f"{op}: {key!r} is not decoded (put decode first)")
      if m.ndim == 3 and m.shape[2] == 1:
        m = m[:, :, 0]
      if m.ndim != 2:
        raise ValueError(f"{op}: {key!r} must be an (H, W) map, got shape {m.shape}")
      out[key] = m
  return out


def maps_at(example: Example, op: str, shape: tuple[int, int]) -> dict[str, np.ndarray]:
  """The maps present, each at the image's size (a map at another resolution covers the same
  field of view, so it is resized before the image's geometry applies to it)."""
  out = raw_maps(example, op)
  for key, m in out.items():
    if m.shape != tuple(shape):
      out[key] = cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
  return out


def need(example: Example, key: str, op: str) -> np.ndarray:
  v = example.get(key)
  if v is None:
    raise BadExampleError(example.get("id"), f"{op} needs {key!r}")
  return np.asarray(v, np.float64)
