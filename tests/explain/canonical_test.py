"""Canonical Saliency Maps: Algorithm 1 against loops, density normalisation, correspondences."""

import os

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.io

from jaxface.explain import canonical
from jaxface.explain import core
from tests.explain import tiny


def _mean_model(k):
  return lambda variables, x: k * jnp.mean(x, axis=(1, 2, 3))


def test_density_normalisation_flat_where_sum_is_not():
  h = w = 48
  dense = [(x, y) for y in range(10, 38) for x in range(10, 20)]
  sparse = [(x, y) for y in (10, 18, 26, 34) for x in (27, 35)]
  pts = np.array(dense + sparse, np.float64)  # Every patch lies inside the image.
  corr = canonical.from_vertices(pts, pts)
  k = 3.0
  img = np.ones((1, h, w, 1), np.float32)
  r = canonical.cis(_mean_model(k), {}, img, [corr], canonical_shape=(h, w), patch=15,
                    fill="black")
  covered = r.count[0] > 0
  # Each occlusion removes 225 of the 48*48 ones: drop = 225 k / (H W) for every vertex.
  # float32 means of 2304 values: relative error ~1e-7.
  np.testing.assert_allclose(r.maps[0][covered], 225 * k / (h * w), rtol=1e-5)
  assert np.all(r.maps[0][~covered] == 0)
  star = r.unnormalised[0][covered]
  assert star.max() / star.min() > 50  # P* follows the vertex density (paper Fig. 4).
  assert r.settings["vertices"] == len(pts) and r.settings["canonical_patch"] == 15
  # One vertex per vmapped call (a 1-byte budget) gives the same drops as all at once.
  r1 = canonical.cis(_mean_model(k), {}, img, [corr], canonical_shape=(h, w), patch=15,
                     fill="black", max_bytes=1)
  # Each drop is k times a difference of two float32 means of h * w values <= 1, reduced in
  # whatever order the vmapped or the single call picks: ~sqrt(h * w) * 2^-24 * k each, so twice
  # that (about 3e-5 * k below the 0.1 k drops); a vertex's patch misplaced moves it by ~k / 10.
  np.testing.assert_allclose(r1.drops, r.drops, rtol=0, atol=2 * np.sqrt(h * w) * 2.0**-24 * k)


def _reference_cis(conf, x, mi, mf, ok, hf, wf, patch, fill):
  """Algorithm 1 by loops (clean-room): squares clipped to the frame on every side."""
  h, w = x.shape[1:3]
  fp = int(round(patch * hf / h))
  p, n = np.zeros((hf, wf)), np.zeros((hf, wf))
  s0 = float(conf(x)[0])
  for (xi, yi), (xf, yf), good in zip(mi, mf, ok):
    if not good:
      continue
    cx, cy = int(round(xi)), int(round(yi))
    xo = x.copy()
    xo[0, max(0, cy - patch // 2):max(0, cy - patch // 2 + patch),
       max(0, cx - patch // 2):max(0, cx - patch // 2 + patch)] = fill
    d = s0 - float(conf(xo)[0])
    fx, fy = int(round(xf)), int(round(yf))
    sl = (slice(max(0, fy - fp // 2), max(0, fy - fp // 2 + fp)),
          slice(max(0, fx - fp // 2), max(0, fx - fp // 2 + fp)))
    p[sl] += d
    n[sl] += 1
  return np.where(n > 0, p / np.maximum(n, 1), 0), n


def test_cis_matches_loop_reference_with_borders_invalid_and_scaling():
  model = tiny.GapNet(channels=3, num_classes=2)
  x = np.random.default_rng(0).random((2, 16, 16, 3)).astype(np.float32)
  v = tiny.init(model, x[:1], 0)
  fwd = core.bind(model)
  rng = np.random.default_rng(1)
  corrs = []
  for _ in range(2):
    mi = np.vstack([rng.uniform(0, 15, (30, 2)), [[0, 0], [15, 15], [0, 15], [15.4, 0.2]]])
    mf = rng.uniform(0, 31, (len(mi), 2))
    ok = rng.random(len(mi)) > 0.2
    corrs.append(canonical.from_vertices(mi, mf, ok))
  labels = np.array([0, 1])
  conf = canonical.class_confidence(fwd, labels, "prob")
  r = canonical.cis(conf, v, x, corrs, canonical_shape=(32, 32), patch=5, fill=0.5)
  assert r.settings["canonical_patch"] == 10  # 5 * H_F / H_I.
  for i, c in enumerate(corrs):
    ci = canonical.class_confidence(fwd, labels[i:i + 1], "prob")
    ci_jit = jax.jit(lambda z, ci=ci: ci(v, z))
    ref, n = _reference_cis(lambda z: np.asarray(ci_jit(z)), x[i:i + 1], c.image_xy,
                            c.canonical_xy, c.valid, 32, 32, 5, 0.5)
    np.testing.assert_array_equal(r.count[i], n)
    # Probabilities ~0.5 from float32 forwards of different batch shapes: ~1e-7 absolute.
    np.testing.assert_allclose(r.maps[i], ref, atol=2e-6)
    assert np.all(r.drops[i][~c.valid] == 0)
  # Vertex stride: every 3rd vertex, ceil(34 / 3) = 12 of them before the validity mask.
  r3 = canonical.cis(conf, v, x, corrs, canonical_shape=(32, 32), patch=5, stride=3)
  assert r3.drops.shape == (2, 12)


def _face(size=64):
  """A synthetic canonical face: eyes, nose, mouth drawn at the template's points, a marker dot."""
  f = np.full((size, size, 3), 40, np.uint8)
  tpl = canonical.five_point_template((size, size))
  cv2.ellipse(f, (size // 2, size // 2), (size // 3, int(size * 0.45)), 0, 0, 360,
              (200, 160, 140), -1)
  for p in tpl:
    cv2.circle(f, (int(round(p[0])), int(round(p[1]))), 3, (30, 30, 90), -1)
  f[19:22, 43:46] = 255  # A 3x3 white marker centred at (x 44, y 20).
  return f, tpl


def test_affine_warped_face_maps_back_within_a_pixel(monkeypatch):
  import socket  # pylint: disable=g-import-not-at-top

  def no_network(*args, **kwargs):
    raise AssertionError("the correspondence must not touch the network")

  monkeypatch.setattr(socket, "socket", no_network)  # Landmarks and warp run offline.
  face, tpl = _face()
  ang, s = np.deg2rad(12), 1.3
  a = np.array([[s * np.cos(ang), -s * np.sin(ang), 10.0], [s * np.sin(ang), s * np.cos(ang), 4.0]])
  img = cv2.warpAffine(face, a, (112, 112), flags=cv2.INTER_LINEAR)
  lm = tpl @ a[:, :2].T + a[:, 2]
  corr = canonical.from_landmarks(lm, img.shape, (64, 64))
  v = corr.valid
  assert v.mean() > 0.9
  # An affine face: the piecewise-affine map is that affine everywhere (float64, ~1e-12 px).
  np.testing.assert_allclose(corr.image_xy[v], corr.canonical_xy[v] @ a[:, :2].T + a[:, 2],
                             atol=1e-6)
  back = canonical.to_canonical(img.astype(np.float32), corr, (64, 64))
  inner = np.zeros((64, 64), bool)
  inner[4:60, 4:60] = True
  valid_px = np.zeros((64, 64), bool)
  cx = np.round(corr.canonical_xy[v]).astype(int)
  valid_px[cx[:, 1], cx[:, 0]] = True
  m = inner & valid_px
  # Two bilinear resamplings blur edges; the mean error stays a few grey levels.
  assert np.abs(back[m] - face[m].astype(np.float32)).mean() < 6.0
  green = back[..., 1] * m  # The marker is the only place greener than the skin (160).
  yy, xx = np.unravel_index(np.argmax(green), green.shape)
  assert green[yy, xx] > 200
  assert abs(yy - 20) <= 1 and abs(xx - 44) <= 1


def test_hull_and_folds_make_points_invalid():
  tpl = canonical.five_point_template((64, 64))
  inner = canonical.from_landmarks(tpl, (64, 64), (64, 64), hull="landmarks")
  full = canonical.from_landmarks(tpl, (64, 64), (64, 64))
  assert full.valid.all() and 0.1 < inner.valid.mean() < 0.5
  q = inner.canonical_xy
  assert not inner.valid[np.argmin(np.linalg.norm(q - [2, 2], axis=1))]  # A corner: outside.
  swapped = tpl[[1, 0, 2, 3, 4]]  # Eyes swapped: the triangles between them fold over.
  folded = canonical.from_landmarks(swapped, (64, 64), (64, 64))
  assert 0 < folded.valid.mean() < 1
  off = canonical.from_landmarks(tpl + [50, 0], (64, 64), (64, 64))  # Half outside the image.
  assert not off.valid[np.argmin(np.linalg.norm(q - [63, 32], axis=1))]


def test_cms_streaming_mean_coverage_and_identity_round_trip():
  rng = np.random.default_rng(0)
  conf = _mean_model(1.0)
  img = rng.random((3, 20, 20, 1)).astype(np.float32)
  pts = [rng.uniform(3, 16, (12, 2)) for _ in range(3)]
  corrs = [canonical.from_vertices(p, p) for p in pts]
  full = canonical.cis(conf, {}, img, corrs, canonical_shape=(20, 20), patch=3)
  cms = canonical.CMS((20, 20))
  for i in range(3):  # Streaming, one image at a time, equals the batch mean (eq. 6).
    cms.update(canonical.cis(conf, {}, img[i:i + 1], corrs[i:i + 1], canonical_shape=(20, 20),
                             patch=3))
  # A mean of 3 float32 maps accumulated in another order: ~3 roundings (2e-7 relative); rtol
  # 1e-6 is a fixed margin, a map counted twice or dropped is off by ~30 %.
  np.testing.assert_allclose(cms.mean("all"), full.maps.mean(axis=0), rtol=1e-6, atol=1e-9)
  cov = (full.count > 0).sum(axis=0)
  np.testing.assert_allclose(cms.coverage, cov / 3)
  np.testing.assert_allclose(cms.mean("covered"),
                             np.where(cov > 0, full.maps.sum(0) / np.maximum(cov, 1), 0), rtol=1e-6)
  # Identity correspondence, one vertex per pixel, 1-pixel squares: reprojection is the map.
  gy, gx = np.mgrid[0:20, 0:20]
  grid = np.stack([gx.ravel(), gy.ravel()], 1).astype(float)
  ident = canonical.from_vertices(grid, grid, valid=(gx.ravel() % 7) != 0)
  m = cms.mean()
  back, count = canonical.reproject(m, ident, (20, 20), patch=1)
  covered = count > 0
  np.testing.assert_allclose(back[covered], m[covered], rtol=1e-6, atol=1e-9)
  assert np.all(back[~covered] == 0) and not covered[:, 0].any()


def test_confidences_without_classes():
  s = canonical.verification_score([1.0, 0.0], [.6, .8], jnp.array([1.0, -1.0]), 0.5)
  np.testing.assert_allclose(s, [-0.1, 0.1], atol=1e-7)
  gallery = np.array([[1., 0.], [0., 1.], [1., 1.]])
  embed = lambda variables, x: x.reshape(x.shape[0], -1)  # noqa: E731
  conf = canonical.nn_identity(embed, gallery, [7, 7, 8], [7, 8])
  q = np.array([[[[.6], [.8]]], [[[1.], [0.]]]], np.float32)  # (B, 1, 2, 1) -> features (B, 2).
  # Query 1 (identity 7): closest of (1, 0), (0, 1) is (0, 1) with cos .8; query 2 (identity 8):
  # its only image (1, 1), cos 1 / sqrt 2.
  np.testing.assert_allclose(conf({}, q), [.8, 1 / np.sqrt(2)], rtol=1e-6)
  with pytest.raises(ValueError, match="no gallery"):
    canonical.nn_identity(embed, gallery, [7, 7, 8], [9])
  pair = canonical.verification(embed, [1.0], 0.5, channels=1)
  x = np.stack([q[1], q[0]], -1).reshape(1, 1, 2, 2)  # Pair (1, 0) and (.6, .8) on channels.
  np.testing.assert_allclose(pair({}, x), [-0.1], atol=1e-7)


def test_load_vertices(tmp_path):
  v = np.random.default_rng(0).random((10, 3))
  np.save(tmp_path / "m.npy", v)
  scipy.io.savemat(tmp_path / "a.mat", {"vertices": v})
  scipy.io.savemat(tmp_path / "b.mat", {"x": v[:, 0], "y": v[:, 1]})
  np.testing.assert_array_equal(canonical.load_vertices(str(tmp_path / "m.npy")), v)
  np.testing.assert_array_equal(canonical.load_vertices(str(tmp_path / "a.mat")), v)
  np.testing.assert_array_equal(canonical.load_vertices(str(tmp_path / "b.mat")), v[:, :2])
  with pytest.raises(ValueError, match=".npy or .mat"):
    canonical.load_vertices(os.path.join(tmp_path, "m.txt"))


def test_zbuffer_hides_the_back_layer():
  # Two overlapping 5x5 sheets; the one at z = 10 hides the one at z = 0 where they overlap.
  gy, gx = np.mgrid[0:5, 0:5]
  front = np.stack([gx.ravel() + 2.0, gy.ravel() + 2.0, np.full(25, 10.0)], 1)
  back = np.stack([gx.ravel() + 5.0, gy.ravel() + 2.0, np.zeros(25)], 1)
  mesh = np.vstack([front, back])
  vis = canonical.visible(mesh, (12, 12), tolerance=1.0, radius=0)
  assert vis[:25].all()
  hidden = back[:, 0] <= 6  # Columns x = 5, 6 lie under the front sheet (x 2..6).
  np.testing.assert_array_equal(vis[25:], ~hidden)
  corr = canonical.from_vertices(mesh, mesh[:, :2], image_shape=(12, 12),
                                 occlusion_tolerance=1.0)
  # radius 1 also hides the back column right next to the front sheet's edge (x = 7).
  assert corr.valid[:25].all() and corr.valid[25:].sum() == 25 - 15


def test_cis_region_model_drops_are_patch_intersections_and_quadrant_mass():
  # f = sum of the input over R = rows [2, 6) x cols [3, 7) on an all-ones image, one vertex per
  # pixel, identity correspondence, black 3 x 3 patches: each vertex's drop is |patch ∩ R|.
  fwd = core.bind(tiny.RegionSum(box=(2, 6, 3, 7)))
  gy, gx = np.mgrid[0:10, 0:10]
  grid = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float64)
  corr = canonical.from_vertices(grid, grid)
  conf = canonical.class_confidence(fwd, [0], "logit")
  r = canonical.cis(conf, {}, np.ones((1, 10, 10, 1), np.float32), [corr],
                    canonical_shape=(10, 10), patch=3, fill="black")
  rows = np.clip(np.minimum(gy + 2, 6) - np.maximum(gy - 1, 2), 0, None)
  cols = np.clip(np.minimum(gx + 2, 7) - np.maximum(gx - 1, 3), 0, None)
  np.testing.assert_array_equal(r.drops[0], (rows * cols).ravel())
  d = r.drops[0].reshape(10, 10)
  assert d[4, 4] == 9 and d[0, 0] == 0 and d[6, 7] == 1 and d[1, 3] == 2  # By hand.
  # A model whose decision depends on the top-left quadrant only: windows aligned with it (one
  # vertex every 4 px, 4 x 4 patches), > 90 % of the CIS mass lies in it.
  model = tiny.GapNet(channels=4, num_classes=2, stride=2, mask=(0, 8, 0, 8))
  x = np.random.default_rng(3).random((2, 16, 16, 3)).astype(np.float32)
  v = jax.tree.map(np.abs, tiny.init(model, x[:1], 1))
  qy, qx = np.mgrid[2:16:4, 2:16:4]
  pts = np.stack([qx.ravel(), qy.ravel()], 1).astype(np.float64)
  corrs = [canonical.from_vertices(pts, pts)] * 2
  conf = canonical.class_confidence(core.bind(model), [0, 1], "prob")
  m = np.abs(canonical.cis(conf, v, x, corrs, canonical_shape=(16, 16), patch=4).maps)
  share = m[:, :8, :8].sum(axis=(1, 2)) / m.sum(axis=(1, 2))  # |drops|: class 1's are < 0.
  assert np.all(share > 0.9), share
