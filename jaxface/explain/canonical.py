"""Canonical Saliency Maps (John et al., IEEE T-BIOM 2021, arXiv:2105.01386): CIS per image, CMS
per model, re-projection.

A :class:`Correspondence` pairs N points of a face image (``image_xy``, pixels, x = column) with
N points of a canonical frontal frame (``canonical_xy``); ``valid`` marks the points that may
contribute. It comes from

* :func:`from_landmarks`: five MTCNN points, a canonical template (the ArcFace five points scaled
  to the frame) extended by the frame's corners and edge midpoints, whose image positions follow
  the least-squares affine of the five points; a Delaunay triangulation of the template and one
  affine map per triangle (piecewise affine) give every canonical grid vertex its image position.
  Vertices of a triangle that flips orientation in the image (a fold, i.e. self-occlusion), that
  fall outside the image, or (``hull="landmarks"``) outside the five points' hull are invalid.
* :func:`from_vertices` / :func:`load_vertices`: per-image vertices computed elsewhere (PRNet
  meshes, ``.npy`` or ``.mat``), vertex i of every mesh being the same facial point (the paper's
  setting).

* the same from dlib's 68 points (:mod:`jaxface.explain.dlib68`, optional extra ``dlib``): the
  canonical template is the predictor's mean shape, in the five-point template's frame.

Landmark correspondence replaces PRNet's 3D fit: it is exact at the landmarks and affine
between them, so it follows pose and scale but not the 3D shape (with five points the nose and
cheeks of a turned face are placed by a plane; 68 points add the jaw line, brows, nose ridge and
lip contours, so the face's outline follows the face), and what lies beyond the landmarks (the
forehead; with five points the outline too) is extrapolated. There is no depth, so self-occlusion
is seen only where the landmarks fold over (a turned face's far jaw line crossing the nose), not
in a z-buffer as with a mesh.

:func:`cis` is Algorithm 1: for each valid vertex (every ``stride``-th) a ``patch`` x ``patch``
square around its image point is filled, the confidence drop is added over a square of
``patch * H_F / H_I`` pixels around its canonical point and counted; ``P = P* / N`` with
``P[N = 0] = 0``. Squares are clipped to the frame on every side. :class:`CMS` is the streaming
mean of CIS maps with a coverage map; :func:`reproject` maps a canonical map back onto a face.

Where the official code differs: it shifts border patches inside at the left/top but clips them
at the right/bottom (here clipping on all sides), has no visibility test although the paper
excludes self-occluded points (here folds, out-of-image points and, for 3-D meshes, points behind
the mesh in a z-buffer are invalid), sums CIS maps in
its demo CMS (here a mean, eq. 6), rescales the caller's vertices in place (here nothing given is
modified), and in its command-line re-projection subsamples only the frontal mesh, so vertex
indices no longer match (here both sides always carry the same indices).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from jaxface.explain import core
from jaxface.explain import occlusion as occlusion_lib
from jaxface.faces.crops import five_point_template

Confidence = Callable[[Any, jax.Array], jax.Array]  # (variables, x_BHWC) -> (B,) confidences


@dataclasses.dataclass(frozen=True)
class Correspondence:
  """N image points (x, y) matched to N canonical points; invalid points contribute nothing."""
  image_xy: np.ndarray  # (N, 2) float, image pixels.
  canonical_xy: np.ndarray  # (N, 2) float, canonical-frame pixels.
  valid: np.ndarray  # (N,) bool.

  def __len__(self) -> int:
    return int(self.image_xy.shape[0])

  def subsample(self, stride: int) -> "Correspondence":
    """Every ``stride``-th vertex (the paper's vertex stride, index subsampling as its code)."""
    if stride < 1:
      raise ValueError(f"vertex stride must be >= 1, got {stride}")
    return Correspondence(self.image_xy[::stride], self.canonical_xy[::stride],
                          self.valid[::stride])


def from_vertices(image_xy, canonical_xy, valid=None, image_shape=None,
                  canonical_shape=None, occlusion_tolerance: float | None = None
                  ) -> Correspondence:
  """Per-image vertices and canonical vertices with the same indexing (copies; NaN = invalid).

  With (N, 3) image vertices and ``occlusion_tolerance`` set (and ``image_shape``), vertices
  hidden behind the mesh (:func:`visible`) are invalid: the paper maps no self-occluded point.
  """
  if occlusion_tolerance is not None:
    if image_shape is None:
      raise ValueError("the occlusion test needs image_shape")
    hidden = ~visible(image_xy, image_shape, occlusion_tolerance)
    valid = ~hidden if valid is None else np.asarray(valid, bool) & ~hidden
  mi = np.array(image_xy, np.float64)[:, :2]
  mf = np.array(canonical_xy, np.float64)[:, :2]
  if mi.ndim != 2 or mi.shape != mf.shape:
    raise ValueError(f"image vertices {mi.shape} and canonical vertices {mf.shape} differ")
  ok = np.ones(len(mi), bool) if valid is None else np.array(valid, bool).reshape(-1).copy()
  if ok.shape != (len(mi),):
    raise ValueError(f"valid has {ok.shape[0]} entries for {len(mi)} vertices")
  ok &= np.all(np.isfinite(mi), axis=1) & np.all(np.isfinite(mf), axis=1)
  for pts, shape in ((mi, image_shape), (mf, canonical_shape)):
    if shape is not None:
      h, w = shape[:2]
      ok &= (pts[:, 0] > -0.5) & (pts[:, 0] < w - 0.5) & (pts[:, 1] > -0.5) & (pts[:, 1] < h - 0.5)
  return Correspondence(np.nan_to_num(mi), np.nan_to_num(mf), ok)


def load_vertices(path: str) -> np.ndarray:
  """(N, 2 or 3) vertices from ``.npy`` or ``.mat`` (``vertices``, or ``x``, ``y`` [, ``z``])."""
  ext = os.path.splitext(path)[1].lower()
  if ext == ".npy":
    v = np.load(path, allow_pickle=False)
  elif ext == ".mat":
    try:
      import scipy.io  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ValueError(f"{path}: reading .mat needs scipy") from e
    m = scipy.io.loadmat(path)
    if "vertices" in m:
      v = m["vertices"]
    elif "x" in m and "y" in m:
      cols = [np.ravel(m[k]) for k in ("x", "y", "z") if k in m]
      v = np.stack(cols, axis=1)
    else:
      raise ValueError(f"{path}: no 'vertices' or 'x'/'y' variables")
  else:
    raise ValueError(f"{path}: vertices must be .npy or .mat")
  v = np.asarray(v, np.float64)
  if v.ndim != 2 or v.shape[1] < 2:
    raise ValueError(f"{path}: vertices of shape {v.shape}, expected (N, 2) or (N, 3)")
  return v


def visible(vertices_xyz, image_shape, tolerance: float = 1.0, radius: int = 1) -> np.ndarray:
  """Self-occlusion test of a projected 3-D mesh (z towards the camera, as PRNet's output).

  A point z-buffer: each vertex writes its z over the (2 radius + 1)^2 pixels around its
  projection; a vertex is visible when no other vertex there is more than ``tolerance`` closer.
  Vertices outside the image are not visible.
  """
  v = np.asarray(vertices_xyz, np.float64)
  if v.ndim != 2 or v.shape[1] < 3:
    raise ValueError(f"visibility needs (N, 3) vertices, got {v.shape}")
  h, w = int(image_shape[0]), int(image_shape[1])
  x = np.round(v[:, 0]).astype(np.int64)
  y = np.round(v[:, 1]).astype(np.int64)
  inside = (x >= 0) & (x < w) & (y >= 0) & (y < h) & np.isfinite(v[:, 2])
  zbuf = np.full((h, w), -np.inf)
  for dy in range(-radius, radius + 1):
    for dx in range(-radius, radius + 1):
      xx, yy = x + dx, y + dy
      ok = inside & (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
      np.maximum.at(zbuf, (yy[ok], xx[ok]), v[ok, 2])
  out = np.zeros(len(v), bool)
  out[inside] = v[inside, 2] >= zbuf[y[inside], x[inside]] - tolerance
  return out


def _frame_ring(size) -> np.ndarray:
  h, w = size
  xs, ys = [0.0, (w - 1) / 2, w - 1.0], [0.0, (h - 1) / 2, h - 1.0]
  return np.array([(x, y) for y in ys for x in xs if not (x == xs[1] and y == ys[1])])


def _affine_fit(src, dst) -> np.ndarray:
  """Least-squares 2x3 affine taking src points to dst points."""
  a = np.hstack([src, np.ones((len(src), 1))])
  sol, *_ = np.linalg.lstsq(a, dst, rcond=None)
  return sol.T


def delaunay(points, size) -> np.ndarray:
  """(T, 3) vertex indices of the Delaunay triangles of points inside an (H, W) frame."""
  h, w = size
  lo = np.minimum(np.floor(points.min(0)) - 1, -1).astype(int)  # Points may lie off the frame
  hi = np.maximum(np.ceil(points.max(0)) + 2, [w + 2, h + 2]).astype(int)  # (a 68-point chin).
  sub = cv2.Subdiv2D((int(lo[0]), int(lo[1]), int(hi[0] - lo[0]), int(hi[1] - lo[1])))
  for p in points:
    sub.insert((float(p[0]), float(p[1])))
  tris = []
  for t in sub.getTriangleList().reshape(-1, 3, 2):
    d = np.linalg.norm(points[None, :, :] - t[:, None, :], axis=-1)
    idx = np.argmin(d, axis=1)
    if np.all(d[np.arange(3), idx] < 1e-3) and len(set(idx.tolist())) == 3:
      tris.append(idx)
  return np.array(tris, np.int64)


def _barycentric(pts, tri_xy):
  """(P, T, 3) barycentric coordinates of P points in T triangles (T, 3, 2)."""
  a, b, c = tri_xy[:, 0], tri_xy[:, 1], tri_xy[:, 2]
  v0, v1 = b - a, c - a
  det = v0[:, 0] * v1[:, 1] - v0[:, 1] * v1[:, 0]
  d = pts[:, None, :] - a[None]
  l1 = (d[..., 0] * v1[:, 1] - d[..., 1] * v1[:, 0]) / det
  l2 = (v0[:, 0] * d[..., 1] - v0[:, 1] * d[..., 0]) / det
  return np.stack([1 - l1 - l2, l1, l2], axis=-1)


def piecewise_affine(src_pts, dst_pts, tris, query) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Maps query points through the triangle-wise affine src -> dst.

  Returns ``(mapped (P, 2), inside (P,) bool, folded (P,) bool)``: points outside every triangle
  are not inside; a triangle whose orientation flips from src to dst is folded.
  """
  tri_src, tri_dst = src_pts[tris], dst_pts[tris]
  bary = _barycentric(query, tri_src)
  inside_t = np.all(bary >= -1e-9, axis=-1)
  inside = inside_t.any(axis=1)
  t = np.argmax(inside_t, axis=1)
  lam = bary[np.arange(len(query)), t]
  mapped = np.einsum("pk,pkd->pd", lam, tri_dst[t])
  area = lambda tr: ((tr[:, 1, 0] - tr[:, 0, 0]) * (tr[:, 2, 1] - tr[:, 0, 1])  # noqa: E731
                     - (tr[:, 1, 1] - tr[:, 0, 1]) * (tr[:, 2, 0] - tr[:, 0, 0]))
  folded = (np.sign(area(tri_src)) != np.sign(area(tri_dst)))[t]
  return mapped, inside, folded


def from_landmarks(landmarks_xy, image_shape, canonical_shape=(224, 224), grid: int = 1,
                   hull: str = "frame", template=None) -> Correspondence:
  """Dense correspondence of a face from its landmarks (piecewise affine, see module doc).

  Args:
    landmarks_xy: (5, 2) image landmarks, in the template's order (MTCNN: left eye, right eye,
      nose, left and right mouth corner), or dlib's (68, 2) (:mod:`jaxface.explain.dlib68`; the
      default 68-point template needs the ``dlib`` extra).
    image_shape: (H_I, W_I) of the image.
    canonical_shape: (H_F, W_F) of the canonical frame.
    grid: spacing in canonical pixels of the vertices (1: one vertex per canonical pixel).
    hull: "frame" keeps the extrapolated border region; "landmarks" keeps only the points inside
      the landmarks' hull (five points: eyes to mouth; 68 points: jaw and brows, the face).
    template: canonical landmarks of the same shape (default :func:`five_point_template`, or
      :func:`jaxface.explain.dlib68.template` for 68 points).
  """
  lm = np.asarray(landmarks_xy, np.float64)
  if template is not None:
    tpl = np.asarray(template, float)
  elif lm.shape == (68, 2):
    from jaxface.explain import dlib68  # pylint: disable=g-import-not-at-top
    tpl = dlib68.template(canonical_shape)
  else:
    tpl = five_point_template(canonical_shape)
  if lm.shape != tpl.shape:
    raise ValueError(f"landmarks of shape {lm.shape} do not match the template's {tpl.shape}")
  if hull not in ("frame", "landmarks"):
    raise ValueError(f"hull must be 'frame' or 'landmarks', got {hull!r}")
  ring = _frame_ring(canonical_shape)
  a = _affine_fit(tpl, lm)
  src = np.vstack([tpl, ring])
  dst = np.vstack([lm, ring @ a[:, :2].T + a[:, 2]])
  h, w = canonical_shape
  gy, gx = np.mgrid[0:h:grid, 0:w:grid]
  query = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float64)
  tris = delaunay(src, canonical_shape) if hull == "frame" else delaunay(tpl, canonical_shape)
  pts_src, pts_dst = (src, dst) if hull == "frame" else (tpl, lm)
  mapped, inside, folded = piecewise_affine(pts_src, pts_dst, tris, query)
  corr = from_vertices(mapped, query, inside & ~folded, image_shape, canonical_shape)
  return corr


def _boxes(centres_BN2, half_lo: int, size: int, extent: Sequence[int]):
  """Row and column 0/1 indicators (B, N, H) and (B, N, W) of size x size squares, clipped."""
  c = jnp.round(centres_BN2).astype(jnp.int32)
  lo = c - half_lo
  rows = jnp.arange(extent[0])
  cols = jnp.arange(extent[1])
  ry = (rows >= lo[..., 1:2]) & (rows < lo[..., 1:2] + size)
  rx = (cols >= lo[..., 0:1]) & (cols < lo[..., 0:1] + size)
  return ry, rx


@functools.partial(jax.jit, static_argnames=("confidence", "patch", "chunk"))
def _vertex_drops(confidence, variables, x, centres_BN2, valid_BN, fill_BC, *, patch, chunk):
  ry, rx = _boxes(centres_BN2, patch // 2, patch, x.shape[1:3])
  s0 = confidence(variables, x)
  fill = fill_BC[:, None, None, :].astype(x.dtype)

  def one(args):
    ry_B, rx_B = args  # (B, H), (B, W)
    m = ry_B[:, :, None] & rx_B[:, None, :]
    return s0 - confidence(variables, jnp.where(m[..., None], fill, x))

  d_NB = jax.lax.map(one, (jnp.moveaxis(ry, 1, 0), jnp.moveaxis(rx, 1, 0)), batch_size=chunk)
  return jnp.where(valid_BN, d_NB.T, 0.0), s0


@functools.partial(jax.jit, static_argnames=("fpatch", "size"))
def splat(values_BN, centres_BN2, valid_BN, *, fpatch: int, size: tuple[int, int]):
  """``P* = sum_n v_n box_n``, ``N = sum_n box_n`` over valid vertices; ``P = P*/N``, 0 at N = 0."""
  ry, rx = _boxes(centres_BN2, fpatch // 2, fpatch, size)
  v = jnp.where(valid_BN, values_BN, 0.0).astype(jnp.float32)
  ryf, rxf = ry.astype(jnp.float32), rx.astype(jnp.float32)
  p_star = jnp.einsum("bnh,bn,bnw->bhw", ryf, v, rxf)
  count = jnp.einsum("bnh,bn,bnw->bhw", ryf, valid_BN.astype(jnp.float32), rxf)
  p = jnp.where(count > 0, p_star / jnp.where(count > 0, count, 1.0), 0.0)
  return p, count, p_star


def _stack(corrs: Sequence[Correspondence], stride: int):
  corrs = [c.subsample(stride) for c in corrs]
  n = max(len(c) for c in corrs)
  mi = np.zeros((len(corrs), n, 2), np.float32)
  mf = np.zeros((len(corrs), n, 2), np.float32)
  ok = np.zeros((len(corrs), n), bool)
  for i, c in enumerate(corrs):  # Shorter meshes are padded with invalid vertices.
    mi[i, :len(c)], mf[i, :len(c)], ok[i, :len(c)] = c.image_xy, c.canonical_xy, c.valid
  return mi, mf, ok


@dataclasses.dataclass(frozen=True)
class CIS:
  """Canonical image saliency maps of a batch and how they were made."""
  maps: np.ndarray  # (B, H_F, W_F) P = P* / N, 0 where no patch landed.
  count: np.ndarray  # (B, H_F, W_F) N.
  unnormalised: np.ndarray  # (B, H_F, W_F) P*.
  drops: np.ndarray  # (B, N) drop per (subsampled) vertex, 0 for invalid ones.
  scores: np.ndarray  # (B,) confidence of the clean images.
  settings: dict[str, Any]


def cis(confidence: Confidence, variables, x_BHWC, corrs: Sequence[Correspondence], *,
        canonical_shape: Sequence[int], patch: int = 15, stride: int = 1, fill: Any = "mean",
        max_bytes: int = 1 << 28) -> CIS:
  """Algorithm 1 for a batch of faces, each with its own correspondence.

  Args:
    confidence: ``(variables, x) -> (B,)``, e.g. :func:`class_confidence`, :func:`nn_identity` or
      :func:`verification`.
    x_BHWC: the faces, in the space ``fill`` is given in.
    corrs: one correspondence per face.
    canonical_shape: (H_F, W_F) of the canonical frame.
    patch: occluding square in image pixels; the canonical square is ``round(patch H_F / H_I)``.
    stride: vertex stride (every stride-th vertex is occluded: ceil(N / stride) forward passes).
    fill: "mean" (each face's mean colour, the official code's 0 after mean subtraction when the
      mean is the image's), "black" or a value.
  """
  x = jnp.asarray(x_BHWC)
  b, h, w, c = x.shape
  if len(corrs) != b:
    raise ValueError(f"{len(corrs)} correspondences for {b} images")
  if patch < 1:
    raise ValueError(f"patch must be >= 1, got {patch}")
  mi, mf, ok = _stack(corrs, stride)
  hf, wf = int(canonical_shape[0]), int(canonical_shape[1])
  fpatch = max(1, int(round(patch * hf / h)))
  chunk = int(max(1, min(mi.shape[1], max_bytes // max(1, b * h * w * c * 4))))
  drops, s0 = _vertex_drops(confidence, variables, x, jnp.asarray(mi), jnp.asarray(ok),
                            occlusion_lib.fill_values(x, fill), patch=int(patch), chunk=chunk)
  p, count, p_star = splat(drops, jnp.asarray(mf), jnp.asarray(ok), fpatch=fpatch, size=(hf, wf))
  settings = {"method": "cis", "patch": int(patch), "canonical_patch": fpatch,
              "stride": int(stride), "fill": fill if isinstance(fill, str) else
              tuple(np.ravel(fill).tolist()), "canonical_shape": (hf, wf),
              "vertices": int(ok.sum())}
  return CIS(np.asarray(p), np.asarray(count), np.asarray(p_star), np.asarray(drops),
             np.asarray(s0), settings)


class CMS:
  """Canonical model saliency: the streaming mean of CIS maps (eq. 6) with a coverage map.

  ``mean("all")`` is eq. 6: a pixel no patch reached counts as 0 in that image's map.
  ``mean("covered")`` divides each pixel by the number of images whose patches reached it.
  """

  def __init__(self, shape: Sequence[int]):
    self.shape = tuple(int(s) for s in shape)
    self.total = np.zeros(self.shape, np.float64)
    self.covered = np.zeros(self.shape, np.int64)
    self.n = 0

  def update(self, result: CIS) -> "CMS":
    if result.maps.shape[1:] != self.shape:
      raise ValueError(f"CIS maps of shape {result.maps.shape[1:]} for a CMS of {self.shape}")
    self.total += np.asarray(result.maps, np.float64).sum(axis=0)
    self.covered += (np.asarray(result.count) > 0).sum(axis=0)
    self.n += result.maps.shape[0]
    return self

  def mean(self, policy: str = "all") -> np.ndarray:
    if self.n == 0:
      raise ValueError("the CMS has no maps yet")
    if policy == "all":
      return self.total / self.n
    if policy == "covered":
      return np.where(self.covered > 0, self.total / np.maximum(self.covered, 1), 0.0)
    raise ValueError(f"policy must be 'all' or 'covered', got {policy!r}")

  @property
  def coverage(self) -> np.ndarray:
    """Share of the images whose patches reached each canonical pixel."""
    return self.covered / max(self.n, 1)


def _bilinear(img, xy):
  h, w = img.shape
  x = np.clip(xy[:, 0], 0, w - 1)
  y = np.clip(xy[:, 1], 0, h - 1)
  x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
  x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
  fx, fy = x - x0, y - y0
  return ((1 - fy) * ((1 - fx) * img[y0, x0] + fx * img[y0, x1])
          + fy * ((1 - fx) * img[y1, x0] + fx * img[y1, x1]))


def reproject(canonical_map, corr: Correspondence, image_shape: Sequence[int],
              patch: int = 15) -> tuple[np.ndarray, np.ndarray]:
  """A canonical map (a CMS) on a face: each valid vertex carries the map's value at its
  canonical point onto a ``patch`` square at its image point, count-averaged; uncovered = 0.

  Returns ``(map (H_I, W_I), count)``.
  """
  m = np.asarray(canonical_map, np.float64)
  vals = _bilinear(m, corr.canonical_xy)
  p, count, _ = splat(jnp.asarray(vals[None], jnp.float32), jnp.asarray(corr.image_xy[None]),
                      jnp.asarray(corr.valid[None]), fpatch=int(patch),
                      size=(int(image_shape[0]), int(image_shape[1])))
  return np.asarray(p[0]), np.asarray(count[0])


def to_canonical(image, corr: Correspondence, canonical_shape: Sequence[int]) -> np.ndarray:
  """The face resampled into the canonical frame (bilinear at each valid vertex; others 0)."""
  img = np.asarray(image, np.float32)
  if img.ndim == 2:
    img = img[..., None]
  out = np.zeros((int(canonical_shape[0]), int(canonical_shape[1]), img.shape[-1]), np.float32)
  ok = corr.valid
  cx = np.round(corr.canonical_xy[ok]).astype(int)
  for ch in range(img.shape[-1]):
    out[cx[:, 1], cx[:, 0], ch] = _bilinear(img[..., ch], corr.image_xy[ok])
  return out


def class_confidence(forward: core.Forward, labels, score: str) -> Confidence:
  """The class confidence of Canonical Saliency Maps' eq. 1: each image's label's logit or
  probability."""
  core.check_score(score)
  labels = jnp.asarray(labels, jnp.int32)

  def conf(variables, x):
    logits, _ = forward(variables, x)
    return core.class_score(logits, jnp.broadcast_to(labels, (x.shape[0],)), score)

  return conf


def embedding(forward: core.Forward, key: str = "pre_logits"):
  """``(variables, x) -> (B, D)`` features read from the model's aux."""

  def embed(variables, x):
    _, aux = forward(variables, x)
    if key not in aux:
      raise ValueError(f"aux has no {key!r}; choose one of {sorted(aux)}")
    f = aux[key]
    return f.reshape(f.shape[0], -1).astype(jnp.float32)

  return embed


def _cos(a, b):
  na = jnp.linalg.norm(a, axis=-1, keepdims=True)
  nb = jnp.linalg.norm(b, axis=-1, keepdims=True)
  return (a / jnp.maximum(na, 1e-12)) @ (b / jnp.maximum(nb, 1e-12)).T


def nn_identity(embed, gallery_GD, gallery_labels, labels) -> Confidence:
  """Eq. 7: cosine of the query to the closest gallery image of its true identity.

  The closest image is chosen again at every evaluation, so an occlusion that makes another image
  of the identity the nearest is scored by that one. A query whose identity has no gallery image
  raises.
  """
  g = jnp.asarray(gallery_GD, jnp.float32)
  gl = np.asarray(gallery_labels)
  lab = np.asarray(labels)
  missing = sorted(set(lab.tolist()) - set(gl.tolist()))
  if missing:
    raise ValueError(f"identities {missing[:5]} have no gallery image")
  same = jnp.asarray(lab[:, None] == gl[None, :])

  def conf(variables, x):
    c = _cos(embed(variables, x), g)
    return jnp.max(jnp.where(same[:c.shape[0]], c, -jnp.inf), axis=1)

  return conf


def verification_score(q1, q2, c, tau):
  """Eq. 8: ``c * (tau - cos(Q1, Q2))`` with c in {-1, +1}."""
  q1 = jnp.atleast_2d(jnp.asarray(q1, jnp.float32))
  q2 = jnp.atleast_2d(jnp.asarray(q2, jnp.float32))
  cos = jnp.sum(q1 * q2, -1) / jnp.maximum(
      jnp.linalg.norm(q1, axis=-1) * jnp.linalg.norm(q2, axis=-1), 1e-12)
  return jnp.asarray(c, jnp.float32) * (tau - cos)


def verification(embed, c, tau: float, channels: int) -> Confidence:
  """Eq. 8 on pairs stacked along channels (B, H, W, 2C), so one occlusion covers the same
  region of both images of a pair (the paper occludes both)."""
  c = jnp.asarray(c, jnp.float32)

  def conf(variables, x):
    return verification_score(embed(variables, x[..., :channels]),
                              embed(variables, x[..., channels:]),
                              jnp.broadcast_to(c, (x.shape[0],)), tau)

  return conf
