"""Preprocessing ops, named in a config by a pipe string.

A pipe string such as ``"decode|face_crop(0.3)|resize(224)|flip_lr|rotate(3)|saliency(0.3)"`` names
registered ops and their literal arguments (ints, floats, strings, tuples, None; positional or
``key=value``). ``Pipeline(pipe)`` applies them in order to one example dict, and ``str(pipeline)``
is the canonical pipe string with every argument spelled out, so a run logs exactly what it did.

Examples are dicts:

* "image": encoded bytes before ``decode``, afterwards RGB uint8 (H, W, 3);
* "saliency" (optional; "fixation" in ``data_pipelines.datasets.synthetic`` is treated the same way): a
  saliency / fixation map aligned with the image, encoded bytes or uint8 (H, W);
* "box" (optional): float32 [x1, y1, x2, y2]; "landmarks" (optional): float32 (5, 2) (x, y) in
  ``LANDMARK_NAMES`` order;
* anything else (labels, "id") passes through untouched.

Coordinates follow ``jaxface.faces.crops``: pixel centres at integers, pixel ``x`` spans
``[x - 0.5, x + 0.5]``. Geometric ops move the image, every map, the box and the landmarks
together; a box is carried as the axis-aligned bound of its four transformed corners.

All ops emit uint8 (normalisation happens on the device). Random ops draw only from the
``np.random.Generator`` they are given, so a seeded generator reproduces the output; the other
ops ignore it. Bad configuration raises ``ValueError`` naming the op and the argument; a bad example
(corrupt bytes, a missing box, landmarks or map that the op needs) raises ``BadExampleError`` so the
loader can skip it and count it.
"""

from __future__ import annotations

import abc
import ast
import importlib
import inspect
import math
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from jaxface.faces import crops
from jaxface.faces.types import Face, LANDMARK_NAMES

Example = dict[str, Any]

# Keys of the maps that travel with the image through geometric ops; ``saliency(r)`` reads the
# first one present.
MAP_KEYS = ("saliency", "fixation")
# Landmark order after a horizontal mirror: the subject's left and right swap places.
_FLIP_ORDER = [LANDMARK_NAMES.index(n) for n in
               ("right_eye", "left_eye", "nose", "mouth_right", "mouth_left")]


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
# Ops defined in other modules (they need heavier imports): op name -> module that registers it,
# imported the first time a pipe names the op.
PLUGIN_OPS = {
    "detect": "data_pipelines.detect",
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


class Pipeline:
  """Ops applied in order; ``str`` gives the canonical pipe string.

  With ``fuse=True`` each run of two or more consecutive geometric ops (crops, resize, flip,
  rotate; ``cached_saliency`` may sit inside a run) resamples the image and each map once, through
  the composed affine (``fused_warp``), instead of once per op. The ops draw the same random
  numbers and move the box and landmarks exactly as op by op; the pixels differ by interpolation
  rounding (one bilinear sample instead of a chain) and, where a rotation brings in pixels from
  outside the crop, by showing the photo there instead of the crop's replicated edge.
  """

  def __init__(self, pipe: str | Sequence[Op], fuse: bool = False):
    self.ops = parse(pipe) if isinstance(pipe, str) else list(pipe)
    if not isinstance(fuse, bool):
      raise ValueError(f"fuse must be True or False, got {fuse!r}")
    self.fuse = fuse
    self._steps = _fused_steps(self.ops) if fuse else [[op] for op in self.ops]

  @property
  def random(self) -> bool:
    return any(op.random for op in self.ops)

  def __call__(self, example: Example, rng: np.random.Generator | None = None) -> Example:
    for step in self._steps:
      example = step[0](example, rng) if len(step) == 1 else _run_fused(step, example, rng)
    _check_output(example)
    return example

  def __str__(self) -> str:
    return "|".join(str(op) for op in self.ops)

  def __repr__(self) -> str:
    return f"Pipeline({str(self)!r}{', fuse=True' if self.fuse else ''})"

  def __eq__(self, other) -> bool:
    return isinstance(other, Pipeline) and (str(self), self.fuse) == (str(other), other.fuse)


def _check_output(example: Example) -> None:
  """The final check: the loader only ever emits uint8 images and maps."""
  img = example.get("image")
  if not isinstance(img, np.ndarray):
    raise ValueError(f"example {example.get('id')!r}: 'image' is not decoded "
                     "(start the pipe with decode)")
  if img.dtype != np.uint8 or img.ndim not in (3, 4) or img.shape[-1] != 3:
    raise ValueError(f"example {example.get('id')!r}: 'image' must be uint8 (H, W, 3) or "
                     f"(N, H, W, 3), got {img.dtype} {img.shape}")
  for key in MAP_KEYS:
    if key in example and (not isinstance(example[key], np.ndarray)
                           or example[key].dtype != np.uint8):
      raise ValueError(f"example {example.get('id')!r}: {key!r} must be a decoded uint8 map")


# ----------------------------------------------------------------------------- argument checks


def _int(op: str, arg: str, v, minimum: int = 1) -> int:
  if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
    raise ValueError(f"{op}: {arg} must be an integer >= {minimum}, got {v!r}")
  return int(v)


def _float(op: str, arg: str, v, lo: float = 0.0, hi: float = math.inf) -> float:
  if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
    raise ValueError(f"{op}: {arg} must be a number in [{lo}, {hi}], got {v!r}")
  return float(v)


def _hw(op: str, arg: str, v) -> tuple[int, int] | int:
  """A size: an int (square) or an (h, w) pair."""
  if isinstance(v, (tuple, list)):
    if len(v) != 2:
      raise ValueError(f"{op}: {arg} must be an int or an (h, w) pair, got {v!r}")
    return (_int(op, arg, v[0]), _int(op, arg, v[1]))
  return _int(op, arg, v)


def _pair(size) -> tuple[int, int]:
  return (size, size) if isinstance(size, int) else size


# ----------------------------------------------------------------------------- example access


def _image(example: Example, op: str) -> np.ndarray:
  img = example.get("image")
  if not isinstance(img, np.ndarray):
    raise ValueError(f"{op}: 'image' is not decoded (put decode first)")
  if img.ndim != 3 or img.shape[2] != 3:
    raise ValueError(f"{op}: needs one (H, W, 3) image, got shape {img.shape}")
  return img


def _raw_maps(example: Example, op: str) -> dict[str, np.ndarray]:
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


def _maps(example: Example, op: str, shape: tuple[int, int]) -> dict[str, np.ndarray]:
  """The maps present, each at the image's size (a map at another resolution covers the same
  field of view, so it is resized before the image's geometry applies to it)."""
  out = _raw_maps(example, op)
  for key, m in out.items():
    if m.shape != tuple(shape):
      out[key] = cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
  return out


def _move_points(example: Example, F) -> None:
  """Maps the landmarks and the box (by its four corners) through the 2x3 affine ``F``
  (input -> output pixel coordinates)."""
  # Plain float arithmetic (float64, as numpy would): ~10x faster than numpy on so few points.
  (a, b, c), (d, e, f) = np.asarray(F, np.float64).reshape(2, 3).tolist()
  if example.get("landmarks") is not None:
    lm = np.asarray(example["landmarks"])
    moved = [[a * x + b * y + c, d * x + e * y + f] for x, y in lm.reshape(-1, 2).tolist()]
    example["landmarks"] = np.array(moved, np.float32).reshape(lm.shape)
  if example.get("box") is not None:
    x1, y1, x2, y2 = np.asarray(example["box"]).reshape(4).tolist()
    corners = ((x1, y1), (x2, y1), (x1, y2), (x2, y2))
    xs = [a * x + b * y + c for x, y in corners]
    ys = [d * x + e * y + f for x, y in corners]
    example["box"] = np.array([min(xs), min(ys), max(xs), max(ys)], np.float32)


def _translation(dx: float, dy: float) -> np.ndarray:
  return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])


def _scale_affine(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> np.ndarray:
  """The affine from ``dst_hw`` pixel coordinates to ``src_hw`` ones when both grids cover the
  same field of view (pixel centres: x_src = (x_dst + 0.5) * W_src / W_dst - 0.5)."""
  sx, sy = src_hw[1] / dst_hw[1], src_hw[0] / dst_hw[0]
  return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])


def _warp(image: np.ndarray, A: np.ndarray, size: int) -> np.ndarray:
  """``crops.warp``, bit for bit, with a faster path for axis-aligned affines without area
  reduction (a box crop at about its native size, as ``face_crop`` makes)."""
  A = np.asarray(A, np.float64).reshape(2, 3)
  img = np.asarray(image)
  if (A[0, 1] != 0 or A[1, 0] != 0 or not np.all(np.isfinite(A)) or img.ndim not in (2, 3)
      or img.dtype.kind not in "ui" or img.dtype.itemsize > 2 or img.size == 0
      or not 1e-12 <= abs(A[0, 0] * A[1, 1]) < 4.0 or int(size) != size or size < 1):
    return crops.warp(image, A, size)  # the general case (and its argument errors)
  # Same arithmetic as crops.warp, element for element, but separable: x depends on the column
  # only and y on the row only, so each needed row is interpolated horizontally once and the
  # rows are then blended, instead of four 2-D gathers over float64 coordinate grids.
  dtype, flat = img.dtype, img.ndim == 2
  if flat:
    img = img[:, :, None]
  h, w, c = img.shape
  grid = np.arange(size, dtype=np.float64)
  x, y = A[0, 0] * grid + A[0, 2], A[1, 1] * grid + A[1, 2]
  x0, y0 = np.floor(x), np.floor(y)
  fx = (x - x0).astype(np.float32)
  fy = (y - y0).astype(np.float32)[:, None]
  xa = np.clip(x0, 0, w - 1).astype(np.intp)
  xb = np.clip(x0 + 1, 0, w - 1).astype(np.intp)
  ya = np.clip(y0, 0, h - 1).astype(np.intp)
  yb = np.clip(y0 + 1, 0, h - 1).astype(np.intp)
  used, where = np.unique(np.concatenate([ya, yb]), return_inverse=True)
  rows = np.take(img, used, axis=0)
  n = len(used)
  # The weights are laid out along the contiguous (column, channel) axis: numpy multiplies a
  # long inner axis many times faster than it broadcasts a (size, 1) weight over 3 channels.
  horiz = _gather_columns(rows, xa).reshape(n, size * c).astype(np.float32)
  horiz *= np.repeat(1 - fx, c)
  right = _gather_columns(rows, xb).reshape(n, size * c).astype(np.float32)
  right *= np.repeat(fx, c)
  horiz += right
  out = np.take(horiz, where[:size], axis=0)
  out *= 1 - fy
  bottom = np.take(horiz, where[size:], axis=0)
  bottom *= fy
  out += bottom
  info = np.iinfo(dtype)
  np.rint(out, out=out)
  np.clip(out, info.min, info.max, out=out)
  out = out.astype(dtype).reshape(size, size, c)
  return out[:, :, 0] if flat else out


def _gather_columns(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
  """``rows[:, cols]`` for (n, w, c) rows; OpenCV's nearest-neighbour remap at integer
  coordinates is the same copy, several times faster than numpy's gather of 3-byte pixels."""
  n, w, c = rows.shape
  if rows.dtype == np.uint8 and c in (1, 3, 4) and max(n, w, len(cols)) < 32767:
    xy = np.empty((n, len(cols), 2), np.int16)
    xy[:, :, 0] = cols
    xy[:, :, 1] = np.arange(n, dtype=np.int16)[:, None]
    out = cv2.remap(rows, xy, None, cv2.INTER_NEAREST)
    return out.reshape(n, len(cols), c)
  return np.take(rows, cols, axis=1)


def _need(example: Example, key: str, op: str) -> np.ndarray:
  v = example.get(key)
  if v is None:
    raise BadExampleError(example.get("id"), f"{op} needs {key!r}")
  return np.asarray(v, np.float64)


# ----------------------------------------------------------------------------- ops


_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)


@register("decode")
class Decode(Op):
  """Decodes "image" bytes to RGB uint8 (H, W, 3) and map bytes to gray uint8 (H, W).

  Arrays pass through (a gray image gets three channels). A map at another size than the image is
  resized to it (it is taken to cover the same field of view). Corrupt or empty bytes raise
  ``BadExampleError``.
  """

  def apply(self, example, rng):
    eid = example.get("id")
    img = example.get("image")
    if isinstance(img, (bytes, bytearray, memoryview, np.bytes_)):
      buf = np.frombuffer(img, np.uint8)
      if _IMREAD_RGB is not None:  # OpenCV >= 4.10: the decoder writes RGB, no extra pass
        img = cv2.imdecode(buf, _IMREAD_RGB)
      else:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        img = None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
      if img is None:
        raise BadExampleError(eid, "image bytes cannot be decoded")
    elif isinstance(img, np.ndarray):
      if img.dtype != np.uint8:
        raise BadExampleError(eid, f"image array must be uint8, got {img.dtype}")
      if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
        img = np.repeat(img.reshape(img.shape[0], img.shape[1], 1), 3, axis=2)
      if img.ndim != 3 or img.shape[2] != 3:
        raise BadExampleError(eid, f"image array must be (H, W, 3), got {img.shape}")
    else:
      raise BadExampleError(eid, f"no image (got {type(img).__name__})")
    example["image"] = img
    for key in MAP_KEYS:
      m = example.get(key)
      if isinstance(m, (bytes, bytearray, memoryview, np.bytes_)):
        m = cv2.imdecode(np.frombuffer(m, np.uint8), cv2.IMREAD_GRAYSCALE)
        if m is None:
          raise BadExampleError(eid, f"{key} bytes cannot be decoded")
        example[key] = m
      elif isinstance(m, np.ndarray) and m.dtype != np.uint8:
        raise BadExampleError(eid, f"{key} array must be uint8, got {m.dtype}")
    example.update(_maps(example, self.name, img.shape[:2]))
    return example


class GeometricOp(Op):
  """An op that only moves pixels: its output samples its input through one affine.

  ``plan`` draws the op's random numbers, moves "box" and "landmarks" and returns the affine;
  ``apply`` then resamples the image and its maps with the op's own method (exact, op by op).
  ``Pipeline(pipe, fuse=True)`` instead composes the plans of consecutive geometric ops and
  resamples once (``fused_warp``); both draw the same random numbers and move the points alike.
  """

  @abc.abstractmethod
  def plan(self, example: Example, hw: tuple[int, int],
           rng: np.random.Generator | None) -> tuple[np.ndarray | None, tuple[int, int]]:
    """Returns ``(A, (oh, ow))``: ``A`` the 2x3 affine from output to input pixel coordinates
    (None: the identity, nothing moves) and the output size; moves ``example``'s points."""

  @abc.abstractmethod
  def resample(self, a: np.ndarray, A: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """This op's own resampling of one image or map (at the image's size) through ``A``."""

  def apply(self, example, rng):
    A, out_hw = self.plan(example, _image(example, self.name).shape[:2], rng)
    if A is None:
      return example
    return _resample_arrays(example, self.name, A, out_hw, self.resample)


def _resample_arrays(example: Example, op: str, A: np.ndarray, out_hw: tuple[int, int],
                     resample: Callable) -> Example:
  """The image and its maps through ``resample(a, A, out_hw)`` (the points are already moved)."""
  img = _image(example, op)
  for key, m in _maps(example, op, img.shape[:2]).items():
    example[key] = resample(m, A, out_hw)
  example["image"] = resample(img, A, out_hw)
  return example


class MapSourceOp(Op):
  """An op that brings in a map in the current image frame (``cached_saliency``); a fused pipeline
  moves such a map through the geometric ops after it without resampling it twice."""

  @abc.abstractmethod
  def attach(self, example: Example) -> np.ndarray:
    """Takes the new uint8 (h, w) map out of ``example`` (any size: it covers the current image)
    and removes the maps it replaces."""

  def apply(self, example, rng):
    img = example.get("image")
    if not isinstance(img, np.ndarray) or img.ndim != 3:
      raise ValueError(f"{self.name}: needs one decoded (H, W, 3) image (put it after the crop)")
    m = self.attach(example)
    h, w = img.shape[:2]
    if m.shape != (h, w):
      m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)  # as _maps resizes maps
    example["saliency"] = m
    return example


def _crop_plan(example: Example, A: np.ndarray, size: int):
  _move_points(example, crops.invert_affine(A))
  return A, (size, size)


@register("face_crop")
class FaceCrop(GeometricOp):
  """Crops the stored "box" enlarged by ``margin`` (``crops.margin_box``: 0.3 = 30 % larger in
  total) with border replication (``crops.crop``).

  ``size=None`` keeps the native resolution: the side is the margin box's longer side, rounded.
  ``square=True`` makes the margin box square first, so the face is not stretched; otherwise a
  non-square box is stretched to the square crop, as SAF-BAGE's crop-then-rescale does.
  """

  def __init__(self, margin: float = 0.3, size: int | None = None, square: bool = False):
    self.margin = _float(self.name, "margin", margin)
    self.size = None if size is None else _int(self.name, "size", size)
    if not isinstance(square, bool):
      raise ValueError(f"{self.name}: square must be True or False, got {square!r}")
    self.square = square

  def plan(self, example, hw, rng):
    box = _need(example, "box", self.name)
    try:
      mbox = crops.margin_box(box, self.margin, square=self.square)
    except ValueError as e:
      raise BadExampleError(example.get("id"), f"{self.name}: {e}") from None
    size = self.size or max(1, int(round(max(mbox[2] - mbox[0], mbox[3] - mbox[1]))))
    return _crop_plan(example, crops.box_affine(mbox, size), size)  # what crops.crop does

  def resample(self, a, A, out_hw):
    return _warp(a, A, out_hw[0])


@register("align")
class Align(GeometricOp):
  """Five-point similarity alignment to the ArcFace template (``crops.align``)."""

  def __init__(self, size: int = 224):
    self.size = _int(self.name, "size", size)

  def plan(self, example, hw, rng):
    lm = _need(example, "landmarks", self.name)
    try:
      A = crops.align_affine(lm, self.size)
    except ValueError as e:
      raise BadExampleError(example.get("id"), f"{self.name}: {e}") from None
    return _crop_plan(example, A, self.size)

  def resample(self, a, A, out_hw):
    return _warp(a, A, out_hw[0])


@register("task_crop")
class TaskCrop(GeometricOp):
  """Zhang et al.'s task-aware crop ``scheme`` 1..5 (``crops.task_crop``), from "box" and, for
  schemes 1, 3 and 5, "landmarks"."""

  def __init__(self, scheme: int, size: int = 224, context: float = 0.3):
    if isinstance(scheme, bool) or scheme not in crops.SCHEMES:
      raise ValueError(f"{self.name}: scheme must be one of {sorted(crops.SCHEMES)}, "
                       f"got {scheme!r}")
    self.scheme = int(scheme)
    self.size = _int(self.name, "size", size)
    self.context = _float(self.name, "context", context)

  def plan(self, example, hw, rng):
    box = _need(example, "box", self.name)
    lm = example.get("landmarks")
    face = Face(box=box.astype(np.float32), score=1.0,
                landmarks=None if lm is None else np.asarray(lm, np.float32))
    try:
      A = crops.task_affine(face, self.scheme, self.size, self.context)
    except ValueError as e:
      raise BadExampleError(example.get("id"), f"{self.name}: {e}") from None
    return _crop_plan(example, A, self.size)

  def resample(self, a, A, out_hw):
    return _warp(a, A, out_hw[0])


@register("resize")
class Resize(GeometricOp):
  """Resizes to ``size`` (an int for a square, or (h, w)); the aspect ratio is not kept.

  OpenCV's INTER_AREA when shrinking (no aliasing), INTER_LINEAR otherwise; both use the pixel
  centre convention, so a point moves as x' = (x + 0.5) * w / W - 0.5.
  """

  def __init__(self, size: int | tuple[int, int]):
    self.size = _hw(self.name, "size", size)

  def plan(self, example, hw, rng):
    out_hw = _pair(self.size)
    _move_points(example, _scale_affine(out_hw, hw))
    return _scale_affine(hw, out_hw), out_hw

  def resample(self, a, A, out_hw):
    (h, w), (oh, ow) = a.shape[:2], out_hw
    interp = cv2.INTER_AREA if oh <= h and ow <= w else cv2.INTER_LINEAR
    return cv2.resize(a, (ow, oh), interpolation=interp).reshape((oh, ow) + a.shape[2:])


def _window(a: np.ndarray, A: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
  """A copy of the ``out_hw`` window at the integer offset of translation ``A``."""
  top, left = int(A[1, 2]), int(A[0, 2])
  return a[top:top + out_hw[0], left:left + out_hw[1]].copy()


def _slice_crop(example: Example, op: str, top: int, left: int, oh: int, ow: int) -> Example:
  _move_points(example, _translation(-left, -top))
  return _resample_arrays(example, op, _translation(left, top), (oh, ow), _window)


def _check_fits(op: str, hw: tuple[int, int], oh: int, ow: int) -> tuple[int, int]:
  h, w = hw
  if oh > h or ow > w:
    raise ValueError(f"{op}: size ({oh}, {ow}) is larger than the image ({h}, {w}); "
                     "resize first")
  return h, w


class _WindowOp(GeometricOp):
  """A ``size`` window (int or (h, w)) at an integer offset: a copy of a slice."""

  def __init__(self, size: int | tuple[int, int]):
    self.size = _hw(self.name, "size", size)

  @abc.abstractmethod
  def offset(self, h: int, w: int, oh: int, ow: int, rng) -> tuple[int, int]:
    """(top, left) of the window."""

  def plan(self, example, hw, rng):
    oh, ow = _pair(self.size)
    h, w = _check_fits(self.name, hw, oh, ow)
    top, left = self.offset(h, w, oh, ow, rng)
    _move_points(example, _translation(-left, -top))
    return _translation(left, top), (oh, ow)

  def resample(self, a, A, out_hw):
    return _window(a, A, out_hw)


@register("center_crop")
class CenterCrop(_WindowOp):
  """The central ``size`` window (int or (h, w)); an odd surplus leaves the extra row/column
  at the bottom/right, as Caffe's centre crop does."""

  def offset(self, h, w, oh, ow, rng):
    return (h - oh) // 2, (w - ow) // 2


@register("random_crop")
class RandomCrop(_WindowOp):
  """A ``size`` window (int or (h, w)) at a uniformly random integer offset."""
  random = True

  def offset(self, h, w, oh, ow, rng):
    return int(rng.integers(0, h - oh + 1)), int(rng.integers(0, w - ow + 1))


def _flip(a: np.ndarray) -> np.ndarray:
  """``a[:, ::-1].copy()``; OpenCV's flip makes the same uint8 array several times faster."""
  if a.dtype == np.uint8 and a.size and (a.ndim == 2 or (a.ndim == 3 and a.shape[2] <= 4)):
    return cv2.flip(a, 1).reshape(a.shape)  # (H, W, 1) comes back as (H, W)
  return a[:, ::-1].copy()


def _mirror_plan(example: Example, w: int) -> np.ndarray:
  """Mirrors the points of an image ``w`` wide; returns the (self-inverse) mirror affine."""
  # x -> (w - 1) - x mirrors pixel centres and pixel edges alike.
  A = np.array([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0]])
  _move_points(example, A)
  if example.get("landmarks") is not None and np.shape(example["landmarks"]) == (5, 2):
    # The subject's left eye is now on the other side: keep the names true to the picture.
    example["landmarks"] = example["landmarks"][_FLIP_ORDER]
  return A


def _mirror(example: Example, op: str) -> Example:
  img = _image(example, op)
  A = _mirror_plan(example, img.shape[1])
  return _resample_arrays(example, op, A, img.shape[:2], lambda a, _A, _hw: _flip(a))


@register("flip_lr")
class FlipLR(GeometricOp):
  """Mirrors left-right with probability 1/2, swapping left/right eyes and mouth corners."""
  random = True

  def plan(self, example, hw, rng):
    if rng.random() < 0.5:
      return _mirror_plan(example, hw[1]), hw
    return None, hw

  def resample(self, a, A, out_hw):
    return _flip(a)


@register("rotate")
class Rotate(GeometricOp):
  """Rotates about the image centre by an angle uniform in [-degrees, degrees] (positive =
  counter-clockwise on screen), bilinear, replicating the border pixels."""
  random = True

  def __init__(self, degrees: float):
    self.degrees = _float(self.name, "degrees", degrees, 0.0, 180.0)

  def plan(self, example, hw, rng):
    angle = float(rng.uniform(-self.degrees, self.degrees))
    h, w = hw
    M = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)  # input -> output
    _move_points(example, M)
    return crops.invert_affine(M), hw

  def resample(self, a, A, out_hw):
    return cv2.warpAffine(a, A, (out_hw[1], out_hw[0]),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


@register("color_jitter")
class ColorJitter(Op):
  """Brightness, then contrast, then saturation, each by a factor uniform in
  [max(0, 1 - v), 1 + v] (torchvision's ranges, in a fixed order). Maps are untouched."""
  random = True

  def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0):
    self.brightness = _float(self.name, "brightness", brightness)
    self.contrast = _float(self.name, "contrast", contrast)
    self.saturation = _float(self.name, "saturation", saturation)

  def apply(self, example, rng):
    img = _image(example, self.name)
    # Draw all three factors always, so the stream of draws does not depend on the values.
    fb, fc, fs = (rng.uniform(max(0.0, 1 - v), 1 + v)
                  for v in (self.brightness, self.contrast, self.saturation))
    x = img.astype(np.float32)
    gray = lambda a: a @ np.array([0.299, 0.587, 0.114], np.float32)
    x = np.clip(x * fb, 0, 255)
    mean = gray(x).mean()
    x = np.clip((x - mean) * fc + mean, 0, 255)
    g = gray(x)[..., None]
    x = np.clip((x - g) * fs + g, 0, 255)
    example["image"] = np.rint(x).astype(np.uint8)
    return example


@register("saliency")
class Saliency(Op):
  """Saliency reweighting x' = x * ((1 - r) + r * S), rounded to uint8 (SPEC 9.1).

  S is the map normalised by its own maximum (per image) to [0, 1] and resized to the image if
  needed; an all-zero map gives S = 0, i.e. x * (1 - r). r = 0 leaves the image as it is, r = 1
  is the plain product. The map itself is kept.
  """

  def __init__(self, r: float):
    self.r = _float(self.name, "r", r, 0.0, 1.0)

  def apply(self, example, rng):
    img = _image(example, self.name)
    maps = _maps(example, self.name, img.shape[:2])
    if not maps:
      raise BadExampleError(example.get("id"), f"{self.name} needs one of {MAP_KEYS}")
    example["image"] = _reweight(img, next(iter(maps.values())), self.r)
    return example


def _reweight(img: np.ndarray, saliency: np.ndarray, r: float) -> np.ndarray:
  """``rint(img * ((1 - r) + r * S))`` in float32, S = saliency / its peak, as uint8.

  The map is uint8, so its weights are the float32 arithmetic on the 256 possible values, looked
  up per pixel by OpenCV, and OpenCV's uint8 x float32 product rounds half to even like
  ``np.rint``: the same numbers as computing on the whole map, several times faster.
  """
  if saliency.dtype != np.uint8:  # another map type: the same formula on the whole map
    s = saliency.astype(np.float32)
    peak = s.max()
    s = s / peak if peak > 0 else np.zeros_like(s)
    return np.clip(np.rint(img * ((1.0 - r) + r * s)[..., None]), 0, 255).astype(np.uint8)
  saliency = np.ascontiguousarray(saliency)
  peak = int(saliency.max())
  levels = np.arange(256, dtype=np.float32)
  s = levels / np.float32(peak) if peak > 0 else np.zeros_like(levels)
  lut = (1.0 - r) + r * s  # float32, as on the whole map
  weight = cv2.cvtColor(cv2.LUT(saliency, lut), cv2.COLOR_GRAY2RGB)  # (H, W, 3) float32
  img = np.ascontiguousarray(img)
  return cv2.multiply(img, weight, dtype=cv2.CV_8U).reshape(img.shape)  # saturates at 0, 255


@register("oversample10")
class Oversample10(Op):
  """GilNet's test-time over-sampling (SPEC 4.2): the four corner and the centre ``crop`` windows,
  then their mirrors, stacked: "image" (10, crop, crop, 3), maps (10, crop, crop), "box" (10, 4),
  "landmarks" (10, 5, 2) (mirrored views with left/right swapped). Comes last in a pipe."""

  def __init__(self, crop: int):
    self.crop = _int(self.name, "crop", crop)

  def apply(self, example, rng):
    c = self.crop
    h, w = _check_fits(self.name, _image(example, self.name).shape[:2], c, c)
    offsets = [(0, 0), (0, w - c), (h - c, 0), (h - c, w - c), ((h - c) // 2, (w - c) // 2)]
    views = [_slice_crop(dict(example), self.name, t, l, c, c) for t, l in offsets]
    views += [_mirror(dict(v), self.name) for v in views]
    for key in ("image", "box", "landmarks") + MAP_KEYS:
      if example.get(key) is not None:
        example[key] = np.stack([v[key] for v in views])
    return example


# ----------------------------------------------------------------------------- fused geometry

# Shrinking by this factor or more (input pixels per output pixel, per axis) first averages the
# region over whole blocks of floor(factor) pixels, as ``crops.warp`` does, so that the bilinear
# warp after it never skips pixels; below it a bilinear sample still reads every input pixel.
SHRINK_PREFILTER = 2.0


def _fused_steps(op_list: Sequence[Op]) -> list[list[Op]]:
  """Groups the ops: runs of geometric ops (with map sources inside) that hold two or more
  geometric ops become one fused step; every other op is a step of its own."""
  steps, run = [], []

  def flush():
    if sum(isinstance(op, GeometricOp) for op in run) >= 2:
      steps.append(list(run))
    else:
      steps.extend([op] for op in run)
    run.clear()

  for op in op_list:
    if isinstance(op, (GeometricOp, MapSourceOp)):
      run.append(op)
    else:
      flush()
      steps.append([op])
  flush()
  return steps


def _run_fused(run: Sequence[Op], example: Example, rng: np.random.Generator | None) -> Example:
  """Applies a run of geometric ops (and map sources) with one resampling per array."""
  example = dict(example)
  img = _image(example, run[0].name)
  hw = img.shape[:2]
  # Each array with the affine from the current frame to its own pixels (None: the identity).
  layers: dict[str, list] = {"image": [img, None]}
  for key, m in _raw_maps(example, run[0].name).items():
    layers[key] = [m, None if m.shape == hw else _scale_affine(m.shape, hw)]
  for op in run:
    if op.random and rng is None:
      raise ValueError(f"{op.name}: a random op needs an np.random.Generator")
    if isinstance(op, MapSourceOp):
      m = op.attach(example)
      for key in MAP_KEYS:
        layers.pop(key, None)
      layers["saliency"] = [m, None if m.shape == hw else _scale_affine(m.shape, hw)]
      continue
    A, out_hw = op.plan(example, hw, rng)
    if A is not None:
      for layer in layers.values():
        layer[1] = A if layer[1] is None else crops.compose_affine(layer[1], A)
    hw = tuple(out_hw)
  for key, (a, A) in layers.items():
    if A is None and a.shape[:2] == hw:
      example[key] = a
    else:
      example[key] = fused_warp(a, _translation(0, 0) if A is None else A, hw)
  return example


def _whole_blocks(lo: int, hi: int, k: int, n: int) -> tuple[int, int]:
  """[lo, hi) grown to a multiple of ``k`` within [0, n) when it fits (else as much as fits)."""
  span = -(-(hi - lo) // k) * k
  hi = min(lo + span, n)
  return max(hi - span, 0), hi


def fused_warp(image: np.ndarray, A: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
  """``image`` sampled at ``A @ [x, y, 1]`` for each output pixel (x, y), bilinear (OpenCV's
  fixed-point weights), replicating the border.

  Only the region the output reads is touched; when ``A`` shrinks by ``SHRINK_PREFILTER`` or
  more along an axis, that region is first averaged over blocks of floor(factor) pixels
  (anti-aliasing, as ``crops.warp``).
  """
  (a, b, c), (d, e, f) = np.asarray(A, np.float64).reshape(2, 3).tolist()
  oh, ow = out_hw
  h, w = image.shape[:2]
  corners = ((-0.5, -0.5), (ow - 0.5, -0.5), (-0.5, oh - 0.5), (ow - 0.5, oh - 0.5))
  xs = [a * x + b * y + c for x, y in corners]
  ys = [d * x + e * y + f for x, y in corners]
  # The pixels the output's footprint touches, plus two for the bilinear neighbours, clipped to
  # the image: where the region meets the image's edge, replicating the region's edge is
  # replicating the image's.
  x0 = min(max(math.floor(min(xs)) - 2, 0), w - 1)
  y0 = min(max(math.floor(min(ys)) - 2, 0), h - 1)
  x1 = max(min(math.ceil(max(xs)) + 3, w), x0 + 1)
  y1 = max(min(math.ceil(max(ys)) + 3, h), y0 + 1)
  kx, ky = math.hypot(a, b), math.hypot(d, e)  # input pixels per output pixel, per axis
  if max(kx, ky) >= SHRINK_PREFILTER:
    fx, fy = max(1, int(kx)), max(1, int(ky))
    # Whole blocks (INTER_AREA at an integer factor is the exact block mean, and fast): grow the
    # region to a multiple of the block, inside the image where it fits.
    x0, x1 = _whole_blocks(x0, x1, fx, w)
    y0, y1 = _whole_blocks(y0, y1, fy, h)
    nw, nh = -(-(x1 - x0) // fx), -(-(y1 - y0) // fy)
    region = cv2.resize(image[y0:y1, x0:x1], (nw, nh), interpolation=cv2.INTER_AREA)
    region = region.reshape((nh, nw) + image.shape[2:])
    A = crops.compose_affine(_scale_affine((nh, nw), (y1 - y0, x1 - x0)),
                             np.array([[a, b, c - x0], [d, e, f - y0]]))
  else:
    region = image[y0:y1, x0:x1]
    A = np.array([[a, b, c - x0], [d, e, f - y0]])
  out = cv2.warpAffine(region, A, (ow, oh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                       borderMode=cv2.BORDER_REPLICATE)
  return out.reshape((oh, ow) + image.shape[2:])
