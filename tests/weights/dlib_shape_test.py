"""dlib shape predictor import: tiny predictors written here byte by byte in dlib's serialization
(control-byte integers, mantissa/exponent floats, negated matrix sizes), parsed, round-tripped,
refused when damaged; and the shipped converted 5-point predictor."""

import math
import os

import numpy as np
import pytest

from jaxface.faces import dlib_shape as faces_dlib_shape
from jaxface.weights import dlib_shape, import_weights, load
from jaxface.weights.common import WeightImportError

SHIPPED = faces_dlib_shape.SHIPPED


def enc_int(v):
  """dlib's integer: control byte (byte count | 0x80 if negative), magnitude little-endian."""
  mag = abs(v)
  n = max(1, (mag.bit_length() + 7) // 8)
  return bytes([n | (0x80 if v < 0 else 0)]) + mag.to_bytes(n, "little")


def enc_float(v):
  """dlib's float: int64 mantissa, int16 exponent, value = mantissa * 2**exponent (the mantissa
  a float's 24 bits less its whole trailing zero bytes)."""
  m, e = math.frexp(v)
  m, e = int(m * 2 ** 24), e - 24
  while m and m % 256 == 0:
    m, e = m // 256, e + 8
  return enc_int(m) + enc_int(e)


def enc_col(values):
  return enc_int(-len(values)) + enc_int(-1) + b"".join(enc_float(v) for v in values)


def tiny_file(version=1, leaves_per_tree=3, trailing=b""):
  """2 landmarks, 2 levels of 2 depth-1 trees... written as dlib writes a shape predictor."""
  out = enc_int(version) + enc_col([0.25, 0.5, 0.75, -0.5])
  out += enc_int(2)  # levels
  for level in range(2):
    out += enc_int(2)  # trees
    for t in range(2):
      out += enc_int(1) + enc_int(level) + enc_int(2) + enc_float(-1.5 * (t + 1))  # one split
      out += enc_int(leaves_per_tree)
      out += b"".join(enc_col([level, t, k, 0.125]) for k in range(leaves_per_tree))
  out += enc_int(2) + b"".join(enc_int(3) + enc_int(0) + enc_int(1) + enc_int(1) for _ in range(2))
  out += enc_int(2) + b"".join(enc_int(3) + b"".join(enc_float(x) for x in
                                                    (0.5, -0.25, 3.0, 0.0, -2.0, 2 ** -10))
                              for _ in range(2))
  return out + trailing


def test_parse_reads_every_field():
  a = dlib_shape.parse(tiny_file(leaves_per_tree=2))
  np.testing.assert_array_equal(a["initial_shape"], [0.25, 0.5, 0.75, -0.5])
  assert a["splits"].shape == (2, 2, 1, 2) and a["splits"].dtype == np.int32
  np.testing.assert_array_equal(a["splits"][1, 0, 0], [1, 2])
  np.testing.assert_array_equal(a["thresh"], [[[-1.5], [-3.0]]] * 2)
  assert a["leaf_values"].shape == (2, 2, 2, 4)
  np.testing.assert_array_equal(a["leaf_values"][1, 1, 1], [1, 1, 1, 0.125])
  np.testing.assert_array_equal(a["anchor_idx"], [[0, 1, 1]] * 2)
  np.testing.assert_array_equal(a["deltas"][0], np.float32([[0.5, -0.25], [3, 0], [-2, 2 ** -10]]))


def test_serialize_writes_dlibs_bytes_back():
  data = tiny_file(leaves_per_tree=2)
  assert dlib_shape.serialize(dlib_shape.parse(data)) == data


@pytest.mark.parametrize("data,match", [
    (tiny_file(version=2, leaves_per_tree=2), "version 2"),
    (tiny_file(leaves_per_tree=3), "1 splits and 3 leaves"),
    (tiny_file(leaves_per_tree=2)[:-3], "file ends"),
    (tiny_file(leaves_per_tree=2, trailing=b"\x01\x00"), "2 bytes left"),
    (b"\x71", "control byte"),
])
def test_damaged_files_are_refused_naming_the_problem(data, match):
  with pytest.raises(WeightImportError, match=match):
    dlib_shape.parse(data, "x.dat")


def test_import_and_convert_entry(tmp_path):
  src = tmp_path / "tiny.dat"
  src.write_bytes(tiny_file(leaves_per_tree=2))
  imported = import_weights("dlib_shape", str(src))
  assert imported.meta["model"] == "dlib_shape_predictor"
  assert imported.meta["model_kwargs"]["landmarks"] == 2
  from jaxface.tools import convert  # pylint: disable=g-import-not-at-top
  dst = tmp_path / "tiny.npz"
  assert convert.main(["dlib_shape", str(src), str(dst)]) == 0
  back = load(dst).variables["params"]
  np.testing.assert_array_equal(back["leaf_values"], imported.variables["params"]["leaf_values"])


def test_shipped_predictor_record_and_arrays():
  shipped = load(SHIPPED)
  assert shipped.meta["source_file"] == "shape_predictor_5_face_landmarks.dat"
  assert shipped.meta["source_sha256"] == (
      "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888")
  p = shipped.variables["params"]
  assert p["splits"].shape == (15, 500, 15, 2) and p["leaf_values"].shape == (15, 500, 16, 10)
  assert p["anchor_idx"].shape == (15, 800) and p["deltas"].shape == (15, 800, 2)
  assert p["splits"].max() < 800 and p["anchor_idx"].max() < 5
  assert os.path.getsize(SHIPPED) < 7_000_000
