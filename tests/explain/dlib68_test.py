"""68-point correspondence: the piecewise-affine path on synthetic points, the model-file reader,
and the dlib wrapper on a stand-in module.

dlib and face-recognition-models are an optional extra (``jaxface[dlib]``), not part of the test
install, so nothing here loads the real predictor: the 68-point geometry is tested with a
synthetic 68-point face, the reader with bytes in dlib's format (one sequence copied from the head
of the real model file), and the wrapper with a stand-in ``dlib`` module.
"""

import sys
import types

import numpy as np
import pytest

from jaxface.explain import __main__ as cli
from jaxface.explain import canonical
from jaxface.explain import dlib68


def synthetic68(size=64):
  """A face-like 68-point layout in dlib's order, integer positions in a size x size frame."""
  s = size / 64.0
  t = np.linspace(np.pi, 0, 17)  # Jaw 0-16: image left, round the chin, to image right.
  jaw = np.stack([32 + 26 * np.cos(t), 30 + 28 * np.sin(t)], 1)
  brows = [(8 + 4 * i, 18 - (2 - abs(i - 2))) for i in range(5)]
  brows += [(40 + 4 * i, 18 - (2 - abs(i - 2))) for i in range(5)]
  nose = [(32, 22 + 3 * i) for i in range(4)] + [(26 + 3 * i, 36 - (i in (1, 2, 3))) for i in
                                                  range(5)]
  def eye(cx):
    return [(cx - 5, 24), (cx - 2, 22), (cx + 2, 22), (cx + 5, 24), (cx + 2, 26), (cx - 2, 26)]
  mouth = [(22, 46), (26, 43), (29, 42), (32, 43), (35, 42), (38, 43), (42, 46), (38, 50),
           (35, 51), (32, 52), (29, 51), (26, 50)]
  inner = [(24, 46), (29, 45), (32, 45), (35, 45), (40, 46), (35, 48), (32, 49), (29, 48)]
  pts = np.vstack([jaw, brows, nose, eye(18), eye(46), mouth, inner]).astype(np.float64)
  assert pts.shape == (68, 2) and len(np.unique(np.round(pts), axis=0)) == 68
  return np.round(pts) * s


def test_68_points_affine_face_is_that_affine_and_hull_is_the_face():
  tpl = synthetic68()
  ang, sc = np.deg2rad(-9), 1.4
  a = np.array([[sc * np.cos(ang), -sc * np.sin(ang), 12.0],
                [sc * np.sin(ang), sc * np.cos(ang), 6.0]])
  lm = tpl @ a[:, :2].T + a[:, 2]
  corr = canonical.from_landmarks(lm, (120, 120), (64, 64), template=tpl)
  v = corr.valid
  assert v.mean() > 0.9
  # One affine for the whole face: every triangle's map is that affine (float64, ~1e-12 px).
  np.testing.assert_allclose(corr.image_xy[v], corr.canonical_xy[v] @ a[:, :2].T + a[:, 2],
                             atol=1e-6)
  inner = canonical.from_landmarks(lm, (120, 120), (64, 64), template=tpl, hull="landmarks")
  q = inner.canonical_xy

  def at(x, y):
    return inner.valid[np.argmin(np.linalg.norm(q - [x, y], axis=1))]

  # The 68 points' hull is the face (jaw and brows): the nose, a cheek and the chin are in it,
  # the frame's corners and the forehead above the brows are not.
  assert at(32, 30) and at(12, 34) and at(32, 57)
  assert not at(1, 1) and not at(62, 62) and not at(32, 6)


def test_68_points_piecewise_affine_moves_only_the_triangles_of_a_moved_point():
  tpl = synthetic68()
  lm = tpl.copy()
  lm[48] += [3.0, 0.0]  # The image-left mouth corner moved 3 px outwards.
  corr = canonical.from_landmarks(lm, (64, 64), (64, 64), template=tpl)
  c, m = corr.canonical_xy, corr.image_xy
  # At the moved landmark the map is exact: the vertex (22, 46) goes to (25, 46).
  k = np.argmin(np.linalg.norm(c - tpl[48], axis=1))
  np.testing.assert_allclose(c[k], [22, 46])
  np.testing.assert_allclose(m[k], [25, 46], atol=1e-9)
  # Half-way to its neighbour 49 (26, 43) along their shared edge, (24, 44.5) moves by half: to
  # (25.5, 44.5), linear along the edge whatever triangle holds it.
  src = np.vstack([tpl, canonical._frame_ring((64, 64))])
  tris = canonical.delaunay(src, (64, 64))
  mid = np.array([[24.0, 44.5]])
  mapped, inside, folded = canonical.piecewise_affine(
      src, np.vstack([lm, canonical._frame_ring((64, 64))]), tris, mid)
  assert inside[0] and not folded[0]
  np.testing.assert_allclose(mapped[0], [25.5, 44.5], atol=1e-9)
  # Points of triangles between the other landmarks do not move. (The frame's ring follows the
  # least-squares affine of all 68 points, which the moved corner shifts a little, so triangles
  # with a ring vertex move too.)
  bary = canonical._barycentric(c, src[tris])
  moved = np.any((tris == 48) | (tris >= 68), axis=1)
  closed = np.all(bary >= -1e-9, axis=-1)  # (P, T): point p lies in triangle t (or on it).
  still = ~(closed & moved[None]).any(axis=1) & corr.valid
  assert still.sum() > 1000  # Most of the hull (1855 px): eyes, nose, brows, chin.
  np.testing.assert_allclose(m[still], c[still], atol=1e-9)
  around = (closed & (np.any(tris == 48, axis=1))[None]).any(axis=1)
  shift = np.linalg.norm(m[around] - c[around], axis=1)
  assert shift.max() == pytest.approx(3.0) and shift.min() < 0.5  # 3 px at 48, less around.


def test_68_points_far_jaw_folding_over_the_nose_is_invalid():
  tpl = synthetic68()
  lm = tpl.copy()
  # A face turned to its left: the image-left jaw line (0-3) swings across the nose ridge (x 32).
  lm[0:4, 0] = 40.0 + np.arange(4)
  corr = canonical.from_landmarks(lm, (64, 64), (64, 64), template=tpl, hull="landmarks")
  full = canonical.from_landmarks(tpl, (64, 64), (64, 64), template=tpl, hull="landmarks")
  q = corr.canonical_xy

  def near(x, y):
    return np.argmin(np.linalg.norm(q - [x, y], axis=1))

  assert full.valid[near(9, 30)] and not corr.valid[near(9, 30)]  # The far cheek: folded.
  assert corr.valid[near(50, 34)] and corr.valid[near(46, 24)]  # The near cheek and eye: kept.
  assert 0.5 < corr.valid.sum() / full.valid.sum() < 1


def test_model_file_reader_on_dlib_bytes():
  # The head of shape_predictor_68_face_landmarks.dat: version 1, rows -136, cols -1, then the
  # first element, mantissa 0xf1384d (3 bytes) and exponent -29: 15808589 / 2^29 = 0.029446.
  assert dlib68._read_int(bytes([0x01, 0x01]), 0) == (1, 2)
  assert dlib68._read_int(bytes([0x81, 0x88]), 0) == (-136, 2)
  assert dlib68._read_int(bytes([0x03, 0x4D, 0x38, 0xF1]), 0) == (15808589, 4)
  head = bytes([0x01, 0x01, 0x81, 0x04, 0x81, 0x01, 0x03, 0x4D, 0x38, 0xF1, 0x81, 0x1D])
  vals = [0.5, -0.25, 1.0696]
  body = head + b"".join(dlib68.pack_float(v) for v in vals)
  assert dlib68.pack_float(0.5) == bytes([0x01, 0x01, 0x81, 0x01])  # 1 * 2^-1.
  assert dlib68.pack_float(-0.25) == bytes([0x81, 0x01, 0x81, 0x02])  # -1 * 2^-2.
  import tempfile  # pylint: disable=g-import-not-at-top
  with tempfile.NamedTemporaryFile(suffix=".dat") as f:
    f.write(body)
    f.flush()
    m = dlib68.read_mean_shape(f.name)
  np.testing.assert_array_equal(m, [[15808589 / 2**29, 0.5], [-0.25, 1.0696]])
  with tempfile.NamedTemporaryFile(suffix=".dat") as f:
    f.write(bytes([0x01, 0x02]) + body[2:])
    f.flush()
    with pytest.raises(ValueError, match="version 2"):
      dlib68.read_mean_shape(f.name)


def test_template_from_mean_shape_lands_on_the_five_point_template():
  # A mean shape in a unit box whose five derived points are the five-point template at 1/100
  # scale, shifted: the template is that shape scaled by 100 and shifted back, exactly.
  five = canonical.five_point_template((112, 112))
  shape = synthetic68(112)
  shape[36:42] += five[0] - shape[36:42].mean(0)  # Put the derived points on the template.
  shape[42:48] += five[1] - shape[42:48].mean(0)
  shape[[30, 48, 54]] = five[2:]
  np.testing.assert_allclose(dlib68.five_of_68(shape), five, atol=1e-12)
  unit = shape / 100.0 + 0.2
  t = dlib68.template_from_mean_shape(unit, (112, 112))
  np.testing.assert_allclose(t, shape, atol=1e-9)
  # A rotated, scaled copy is recovered by the similarity fit (Umeyama).
  r = np.deg2rad(20)
  a = np.array([[2 * np.cos(r), -2 * np.sin(r), 5.0], [2 * np.sin(r), 2 * np.cos(r), -3.0]])
  np.testing.assert_allclose(dlib68.similarity_fit(five, five @ a[:, :2].T + a[:, 2]), a,
                             atol=1e-9)


class _Rect:
  def __init__(self, x0, y0, x1, y1):
    self.box = (x0, y0, x1, y1)

  def left(self):
    return self.box[0]

  def top(self):
    return self.box[1]

  def right(self):
    return self.box[2]

  def bottom(self):
    return self.box[3]


def _fake_dlib(seen):
  def detector(img, upsample):
    seen.append((img.dtype, img.flags["C_CONTIGUOUS"], upsample))
    return [_Rect(10, 10, 50, 50), _Rect(60, 5, 120, 70)]

  def predictor(path):
    def predict(img, rect):
      pts = [types.SimpleNamespace(x=rect.left() + i, y=rect.top() + 2 * i) for i in range(68)]
      return types.SimpleNamespace(num_parts=68, part=lambda i: pts[i])
    return predict

  return types.SimpleNamespace(get_frontal_face_detector=lambda: detector,
                               shape_predictor=predictor, rectangle=_Rect)


def test_landmarks68_picks_the_largest_or_the_overlapping_face(monkeypatch):
  seen = []
  monkeypatch.setitem(sys.modules, "dlib", _fake_dlib(seen))
  lm = dlib68.Landmarks68(path="unused.dat")
  img = np.zeros((80, 130, 3), np.float32)[:, ::-1]  # Not uint8, not contiguous: converted.
  big = lm(img)
  assert seen[0] == (np.uint8, True, 1)
  np.testing.assert_array_equal(big[:2], [[60, 5], [61, 7]])  # The 60 x 65 face, not 40 x 40.
  near = lm(img, near=(0, 0, 40, 40))  # Overlaps the small face only.
  np.testing.assert_array_equal(near[67], [10 + 67, 10 + 134])


def test_cli_68_points_without_the_extra_is_one_line(monkeypatch, tmp_path, capsys):
  monkeypatch.setitem(sys.modules, "dlib", None)  # `import dlib` raises ImportError.
  img = tmp_path / "x.png"
  img.write_bytes(b"")
  rc = cli.main(["--model", "pretrained:gender", "--method", "cis", "--points", "68",
                 "--images", str(img), "--out", str(tmp_path / "o")])
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 2 and len(err) == 1 and "--points 68" in err[0] and "jaxface[dlib]" in err[0], err
  with pytest.raises(dlib68.Unavailable, match="jaxface\\[dlib\\]"):
    dlib68.Landmarks68()


def test_cli_68_points_end_to_end_with_a_stand_in_dlib(monkeypatch, tmp_path, capsys):
  import cv2  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  import skimage.data  # pylint: disable=g-import-not-at-top
  unit = synthetic68() / 64.0  # A mean shape in dlib's box-normalised frame.
  dat = tmp_path / "sp68.dat"
  dat.write_bytes(bytes([0x01, 0x01, 0x81, 0x88, 0x81, 0x01])
                  + b"".join(dlib68.pack_float(v) for v in unit.ravel()))
  monkeypatch.setattr(dlib68, "model_path", lambda: str(dat))
  boxes = []

  def detector(img, upsample):
    return [_Rect(20, 30, 160, 190)]

  def predictor(path):
    assert path == str(dat)

    def predict(img, rect):
      boxes.append((rect.left(), rect.top(), rect.right(), rect.bottom()))
      w, h = rect.right() - rect.left(), rect.bottom() - rect.top()
      p = unit * [w, h] + [rect.left(), rect.top()]  # The mean shape in the box, as dlib starts.
      pts = [types.SimpleNamespace(x=int(round(x)), y=int(round(y))) for x, y in p]
      return types.SimpleNamespace(num_parts=68, part=lambda i: pts[i])
    return predict

  monkeypatch.setitem(sys.modules, "dlib", types.SimpleNamespace(
      get_frontal_face_detector=lambda: detector, shape_predictor=predictor, rectangle=_Rect))
  face = skimage.data.astronaut()[20:220, 120:300]
  img = tmp_path / "face.png"
  cv2.imwrite(str(img), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
  out = tmp_path / "out"
  rc = cli.main(["--model", "pretrained:gender", "--method", "cis", "--points", "68",
                 "--images", str(img), "--out", str(out)])
  assert rc == 0, capsys.readouterr().err
  assert boxes == [(20, 30, 160, 190)]
  rec = json.loads((out / "results.json").read_text())["images"][0]["cis"]
  assert rec["correspondence"] == "68 landmarks" and rec["canonical_shape"] == [32, 32]
  # The whole 32 x 32 canonical frame is covered (hull "frame"), so every pixel is a vertex.
  assert rec["vertices"] > 0.9 * 32 * 32
  assert (out / "face_cis_canonical.png").exists() and (out / "cms.npy").exists()
