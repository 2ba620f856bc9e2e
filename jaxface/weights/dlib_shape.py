"""Importer for dlib's shape predictor files (``shape_predictor_5_face_landmarks.dat``).

A dlib shape predictor is a cascade of forests of regression trees (Kazemi and Sullivan, "One
millisecond face alignment with an ensemble of regression trees", CVPR 2014). dlib's ``serialize``
writes, in order:

* ``int`` version (1);
* ``initial_shape``: a float column matrix, the mean shape ``(x0, y0, x1, y1, ...)`` in the face
  rectangle's unit frame;
* ``forests``: ``vector<vector<regression_tree>>``, one forest per cascade level; a tree is its
  ``splits`` (``vector`` of ``{idx1, idx2, thresh}``: ulong, ulong, float) followed by its
  ``leaf_values`` (``vector`` of float column matrices, one shape increment per leaf);
* ``anchor_idx``: ``vector<vector<ulong>>``, per level the landmark each feature pixel hangs on;
* ``deltas``: ``vector<vector<vector<float,2>>>``, per level each feature pixel's offset (x, y)
  from its landmark in the reference shape's frame.

dlib's encodings: an integer is a control byte (low nibble: the number of bytes that follow,
bit 0x80: negative) and then its magnitude's bytes, least significant first; a float is an int64
mantissa and an int16 exponent (value = mantissa * 2 ** exponent; exponents 32000..32002 mean
+inf, -inf and NaN); a ``vector`` is its length then its items; a matrix is its row and column
counts (negated by dlib 19 and later to mark the format) then its entries, row by row.

The arrays (every tree of a level has the same depth in dlib's trainer, so they stack):

* ``initial_shape`` (2P,) float32;
* ``splits`` (L, T, S, 2) int32 feature-pixel indices and ``thresh`` (L, T, S) float32; node i's
  children are 2i+1 (taken when ``f[idx1] - f[idx2] > thresh``) and 2i+2;
* ``leaf_values`` (L, T, S + 1, 2P) float32;
* ``anchor_idx`` (L, F) int32 and ``deltas`` (L, F, 2) float32.

All values are exactly those of the file (its floats have 24-bit mantissas, so float32 holds them).
"""

from __future__ import annotations

import io
import math
import os
from typing import Mapping

import numpy as np

from jaxface.weights.common import (Imported, Preprocessing, WeightImportError, check_file,
                                    make_meta)

ARRAYS = ("initial_shape", "splits", "thresh", "leaf_values", "anchor_idx", "deltas")
_INF, _NINF, _NAN = 32000, 32001, 32002


class _Reader:
  """dlib's stream decoder over a bytes buffer; errors name the byte offset."""

  def __init__(self, data: bytes, name: str):
    self.data, self.pos, self.name = data, 0, name

  def fail(self, what: str):
    raise WeightImportError(f"{self.name}: {what} at byte {self.pos} (not a dlib shape predictor?)")

  def integer(self, what: str = "integer") -> int:
    if self.pos >= len(self.data):
      self.fail(f"file ends where a {what} should be")
    control = self.data[self.pos]
    n = control & 0x0F
    if n > 8 or control & 0x70:
      self.fail(f"bad {what} control byte 0x{control:02x}")
    if self.pos + 1 + n > len(self.data):
      self.fail(f"file ends inside a {what}")
    value = int.from_bytes(self.data[self.pos + 1:self.pos + 1 + n], "little")
    self.pos += 1 + n
    return -value if control & 0x80 else value

  def count(self, what: str, limit: int = 1 << 28) -> int:
    n = self.integer(what)
    if not 0 <= n <= limit:
      self.fail(f"{what} {n} out of range")
    return n

  def real(self) -> float:
    mantissa, exponent = self.integer("float mantissa"), self.integer("float exponent")
    if exponent == _INF:
      return math.inf
    if exponent == _NINF:
      return -math.inf
    if exponent == _NAN:
      return math.nan
    return math.ldexp(mantissa, exponent)

  def column(self, what: str) -> np.ndarray:
    nr, nc = self.integer(f"{what} rows"), self.integer(f"{what} columns")
    nr, nc = abs(nr), abs(nc)  # dlib >= 19 negates both to mark its current matrix format
    if nc != 1 or nr > 1 << 20:
      self.fail(f"{what} is {nr}x{nc}, expected a column")
    return np.array([self.real() for _ in range(nr)], np.float64)


def parse(data: bytes, name: str = "shape predictor") -> dict[str, np.ndarray]:
  """The arrays (see the module docstring) of a serialized dlib shape predictor."""
  r = _Reader(data, name)
  version = r.integer("version")
  if version != 1:
    r.fail(f"version {version}, expected 1")
  initial = r.column("initial_shape")
  if len(initial) == 0 or len(initial) % 2:
    r.fail(f"initial_shape has {len(initial)} entries, expected 2 per landmark")
  levels = r.count("number of cascade levels", 1 << 12)
  splits, thresh, leaves = [], [], []
  for level in range(levels):
    trees = r.count(f"level {level} tree count", 1 << 16)
    for t in range(trees):
      ns = r.count("split count", 1 << 16)
      sp = [(r.integer("idx1"), r.integer("idx2"), r.real()) for _ in range(ns)]
      nl = r.count("leaf count", 1 << 17)
      if nl != ns + 1:
        r.fail(f"level {level} tree {t} has {ns} splits and {nl} leaves, expected {ns + 1}")
      lv = [r.column("leaf value") for _ in range(nl)]
      if any(len(v) != len(initial) for v in lv):
        r.fail(f"level {level} tree {t} has a leaf of another size than initial_shape")
      if level == t == 0:
        depth_splits = ns
      elif ns != depth_splits:
        r.fail(f"level {level} tree {t} has {ns} splits, the first tree {depth_splits}")
      splits.append([s[:2] for s in sp])
      thresh.append([s[2] for s in sp])
      leaves.append(lv)
    if level == 0:
      trees0 = trees
    elif trees != trees0:
      r.fail(f"level {level} has {trees} trees, level 0 {trees0}")
  if r.count("anchor level count", 1 << 12) != levels:
    r.fail("anchor_idx has another number of levels than the forests")
  anchors = []
  for _ in range(levels):
    anchors.append([r.integer("anchor index") for _ in range(r.count("anchor count", 1 << 20))])
  if r.count("delta level count", 1 << 12) != levels:
    r.fail("deltas has another number of levels than the forests")
  deltas = []
  for level in range(levels):
    n = r.count("delta count", 1 << 20)
    if n != len(anchors[level]) or n != len(anchors[0]):
      r.fail(f"level {level} has {n} deltas and {len(anchors[level])} anchors")
    deltas.append([(r.real(), r.real()) for _ in range(n)])
  if r.pos != len(data):
    r.fail(f"{len(data) - r.pos} bytes left after the predictor")
  n_trees = trees0 if levels else 0
  out = {
      "initial_shape": initial.astype(np.float32),
      "splits": np.array(splits, np.int64).reshape(levels, n_trees, -1, 2),
      "thresh": np.array(thresh, np.float64).reshape(levels, n_trees, -1).astype(np.float32),
      "leaf_values": np.array(leaves, np.float64).reshape(levels, n_trees, -1, len(initial)
                                                          ).astype(np.float32),
      "anchor_idx": np.array(anchors, np.int64).reshape(levels, -1),
      "deltas": np.array(deltas, np.float64).reshape(levels, -1, 2).astype(np.float32),
  }
  n_feat, n_pts = out["anchor_idx"].shape[1], len(initial) // 2
  if out["splits"].size and (out["splits"].min() < 0 or out["splits"].max() >= n_feat):
    raise WeightImportError(f"{name}: a split reads a feature pixel outside 0..{n_feat - 1}")
  if out["anchor_idx"].size and (out["anchor_idx"].min() < 0 or out["anchor_idx"].max() >= n_pts):
    raise WeightImportError(f"{name}: an anchor names a landmark outside 0..{n_pts - 1}")
  out["splits"] = out["splits"].astype(np.int32)
  out["anchor_idx"] = out["anchor_idx"].astype(np.int32)
  return out


# --- writer (dlib's encoding), for tests and round trips -------------------------------------

def _int(v: int) -> bytes:
  mag = abs(int(v))
  body = mag.to_bytes(max(1, (mag.bit_length() + 7) // 8), "little")  # 0 is one zero byte
  return bytes([len(body) | (0x80 if v < 0 else 0)]) + body


def _real(v: float) -> bytes:
  v = float(v)
  if math.isnan(v):
    return _int(0) + _int(_NAN)
  if math.isinf(v):
    return _int(0) + _int(_INF if v > 0 else _NINF)
  m, e = math.frexp(v)  # v = m * 2**e, 0.5 <= |m| < 1; dlib keeps float's 24 mantissa bits
  mantissa, exponent = int(m * (1 << 24)), e - 24
  while mantissa and mantissa % 256 == 0:  # and drops whole zero bytes from the mantissa
    mantissa, exponent = mantissa // 256, exponent + 8
  return _int(mantissa) + _int(exponent)


def _column(values) -> bytes:
  values = np.asarray(values, np.float64).ravel()
  return _int(-len(values)) + _int(-1) + b"".join(_real(v) for v in values)


def serialize(arrays: Mapping[str, np.ndarray]) -> bytes:
  """dlib's serialization of the arrays ``parse`` returns (used by the tests)."""
  out = io.BytesIO()
  w = out.write
  w(_int(1))
  w(_column(arrays["initial_shape"]))
  splits, thresh, leaves = arrays["splits"], arrays["thresh"], arrays["leaf_values"]
  w(_int(splits.shape[0]))
  for level in range(splits.shape[0]):
    w(_int(splits.shape[1]))
    for t in range(splits.shape[1]):
      w(_int(splits.shape[2]))
      for (a, b), th in zip(splits[level, t], thresh[level, t]):
        w(_int(a) + _int(b) + _real(th))
      w(_int(leaves.shape[2]))
      for leaf in leaves[level, t]:
        w(_column(leaf))
  anchors, deltas = arrays["anchor_idx"], arrays["deltas"]
  w(_int(len(anchors)))
  for row in anchors:
    w(_int(len(row)) + b"".join(_int(a) for a in row))
  w(_int(len(deltas)))
  for row in deltas:
    w(_int(len(row)) + b"".join(_real(x) + _real(y) for x, y in row))
  return out.getvalue()


# Shape predictors have no pixel preprocessing of a network input; the record says so.
NO_PREPROCESSING = Preprocessing("RGB", 1.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), None)


def import_dlib_shape(src: str | os.PathLike, arch: str | None = None) -> Imported:
  """``python -m jaxface.convert dlib_shape shape_predictor_5_face_landmarks.dat OUT.npz``."""
  path = check_file(src)
  if arch not in (None, "dlib_shape_predictor"):
    raise WeightImportError(f"arch {arch!r}: dlib_shape files hold a dlib_shape_predictor")
  with open(path, "rb") as f:
    data = f.read()
  arrays = parse(data, os.path.basename(path))
  lv, nt, ns = arrays["splits"].shape[:3]
  meta = make_meta("dlib_shape", path, "dlib_shape_predictor",
                   {"landmarks": int(len(arrays["initial_shape"]) // 2), "levels": int(lv),
                    "trees": int(nt), "splits": int(ns),
                    "feature_pixels": int(arrays["anchor_idx"].shape[1])}, NO_PREPROCESSING)
  return Imported({"params": arrays}, meta)

