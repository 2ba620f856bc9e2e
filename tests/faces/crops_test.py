"""Margin boxes, crops with border replication, the crop -> photo affine, alignment, task schemes,
face selection. Expected values are worked out by hand in the comments."""

import numpy as np
import pytest

from jaxface.faces import crops
from jaxface.faces.types import Face

T = crops.ARCFACE_TEMPLATE_112


def _rotation(deg, scale=1.0):
  r = np.deg2rad(deg)
  return scale * np.array([[np.cos(r), -np.sin(r)], [np.sin(r), np.cos(r)]])


def _centres(size):
  jj, ii = np.meshgrid(np.arange(size), np.arange(size))
  return np.stack([jj, ii], -1).astype(np.float64)  # (i, j) -> (x = j, y = i)


def _coordinate_image(h, w):
  """Float image whose two channels are each pixel's own x and y."""
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
  return np.stack([xx, yy], -1)


def test_margin_box_by_hand():
  box = [0.5, 1.5, 4.5, 3.5]  # 4 wide, 2 tall, centre (2.5, 2.5)
  np.testing.assert_allclose(crops.margin_box(box, 0.5), [-0.5, 1.0, 5.5, 4.0])  # 6 x 3
  np.testing.assert_allclose(crops.margin_box(box, 0.5, per_side=True), [-1.5, 0.5, 6.5, 4.5])
  np.testing.assert_allclose(crops.margin_box(box, 0.5, square=True), [-0.5, -0.5, 5.5, 5.5])
  # The paper's 30 %: 100 x 200 -> 130 x 260 about the centre (60, 120).
  np.testing.assert_allclose(crops.margin_box([10, 20, 110, 220]), [-5, -10, 125, 250])
  np.testing.assert_allclose(crops.margin_box([10, 20, 110, 220], 0.0), [10, 20, 110, 220])


@pytest.mark.parametrize("box", [[0, 0, 0, 5], [3, 0, 1, 5], [0, 0, np.nan, 5], [1, 2, 3]])
def test_bad_boxes_are_refused(box):
  with pytest.raises(ValueError, match="box must be"):
    crops.margin_box(box)


def test_crop_values_with_border_replication_by_hand():
  # 5 x 6 image, value 10 * row + column, in channel 0; channel 1 = 100 + that; channel 2 = 7.
  base = (10 * np.arange(5)[:, None] + np.arange(6)).astype(np.uint8)
  image = np.stack([base, base + 100, np.full_like(base, 7)], -1)
  # Box [-2.5, -1.5, 3.5, 4.5] -> 6 x 6 crop at scale 1: crop (i, j) samples photo (j - 2, i - 1),
  # clamped into the image (columns -2, -1 -> 0; row -1 -> 0).
  patch, A = crops.crop(image, [-2.5, -1.5, 3.5, 4.5], size=6)
  np.testing.assert_array_equal(A, [[1, 0, -2], [0, 1, -1]])
  expected = np.array([[0, 0, 0, 1, 2, 3],
                       [0, 0, 0, 1, 2, 3],
                       [10, 10, 10, 11, 12, 13],
                       [20, 20, 20, 21, 22, 23],
                       [30, 30, 30, 31, 32, 33],
                       [40, 40, 40, 41, 42, 43]])
  assert patch.dtype == np.uint8 and patch.shape == (6, 6, 3)
  np.testing.assert_array_equal(patch[..., 0], expected)
  np.testing.assert_array_equal(patch[..., 1], expected + 100)
  np.testing.assert_array_equal(patch[..., 2], 7)
  # Past the bottom-right corner: every pixel replicates the corner value 45.
  far, _ = crops.crop(image, [10, 10, 13, 13], size=3)
  np.testing.assert_array_equal(far[..., 0], 45)


def test_halving_crop_averages_two_by_two_blocks():
  image = (2 * np.arange(16).reshape(4, 4)).astype(np.uint8)  # 0 2 4 6 / 8 10 12 14 / ...
  patch, A = crops.crop(image, [-0.5, -0.5, 3.5, 3.5], size=2)
  # Block means: (0+2+8+10)/4 = 5, (4+6+12+14)/4 = 9, 21, 25; each centred on the point A maps to.
  np.testing.assert_array_equal(patch, [[5, 9], [21, 25]])
  np.testing.assert_allclose(crops.apply_affine(A, [[0, 0], [1, 1]]), [[0.5, 0.5], [2.5, 2.5]])
  patch_f, _ = crops.crop(image.astype(np.float64) / 2, [-0.5, -0.5, 3.5, 3.5], size=2)
  np.testing.assert_array_equal(patch_f, [[2.5, 4.5], [10.5, 12.5]])


# Up-sampling, then k = 1, k = 2 and k = 7 pixel blocks averaged before sampling.
@pytest.mark.parametrize("scale", [0.45, 1.3, 2.6, 7.9])
@pytest.mark.parametrize("angle", [0.0, 23.0])
def test_affine_maps_crop_pixel_centres_to_the_sampled_photo_points(scale, angle):
  h, w, size = 400, 500, 40
  image = _coordinate_image(h, w)
  # A similarity crop (align) centred in the photo, crop pixel = `scale` photo pixels.
  landmarks = (T - 55.5) @ _rotation(angle, scale * size / 112).T + [250.3, 199.7]
  patch, A = crops.align(image, landmarks, size=size)
  points = crops.apply_affine(A, _centres(size))
  np.testing.assert_allclose(np.sqrt(abs(np.linalg.det(A[:, :2]))), scale, rtol=1e-9)
  # Away from the border (where replication takes over), what was sampled is where A points:
  # float32 ramp values < 512 (ulp 2^-15) and bilinear weights round to ~1e-4 px; 1e-3 is a fixed
  # margin over that, far below a half-pixel convention error (0.5 px).
  k = max(1, int(scale))
  inside = ((points[..., 0] > 2 * k) & (points[..., 0] < w - 1 - 2 * k) &
            (points[..., 1] > 2 * k) & (points[..., 1] < h - 1 - 2 * k))
  assert inside.mean() > 0.5
  np.testing.assert_allclose(patch[inside], points[inside], atol=1e-3)
  # The margin crop too (same rounding) (a box with fractional corners, not square: sx != sy).
  patch, A = crops.crop(image, [100.2, 50.7, 100.2 + size * scale, 50.7 + size * scale * 0.8], size)
  points = crops.apply_affine(A, _centres(size))
  inside = ((points[..., 0] < w - 1 - 2 * k) & (points[..., 1] < h - 1 - 2 * k))
  np.testing.assert_allclose(patch[inside], points[inside], atol=1e-3)


def test_umeyama_by_hand_and_without_reflection():
  src = np.array([[0, 0], [1, 0], [0, 1], [1, 1.0]])
  dst = src @ np.array([[0, -2], [2, 0]]).T + [3, 4]  # rotate 90 degrees, scale 2, shift (3, 4)
  np.testing.assert_allclose(crops.umeyama(src, dst), [[0, -2, 3], [2, 0, 4]], atol=1e-12)
  mirrored = T * [-1, 1]
  assert np.linalg.det(crops.umeyama(mirrored, T)[:, :2]) > 0  # best rotation, never a reflection
  with pytest.raises(ValueError, match="coincide"):
    crops.umeyama(np.ones((5, 2)), T)


@pytest.mark.parametrize("face_fraction", [1.0, 0.7])
def test_alignment_puts_the_landmarks_on_the_template(face_fraction):
  size = 224
  landmarks = T @ _rotation(-35, 1.7).T + [80.4, 130.9]  # an exact similarity of the template
  # Photo: a Gaussian spot (sigma 2.5 px) at each landmark, on black.
  h, w = 420, 420
  yy, xx = np.mgrid[0:h, 0:w]
  image = np.zeros((h, w), np.float64)
  for x, y in landmarks:
    image += 200 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.5 ** 2))
  patch, A = crops.align(image.astype(np.uint8), landmarks, size, face_fraction=face_fraction)
  # Documented target: size/2 - 0.5 + (p + 0.5 - 56) * face_fraction * size / 112.
  target = size / 2 - 0.5 + (T + 0.5 - 56) * face_fraction * size / 112
  # float64 similarity fit of an exact similarity: ~1e-13 px; 1e-6 is a fixed margin.
  np.testing.assert_allclose(crops.apply_affine(crops.invert_affine(A), landmarks), target,
                             atol=1e-6)
  # In the pixels: each spot's intensity centroid lies within 1 px of its template point.
  cy, cx = np.mgrid[0:size, 0:size]
  for tx, ty in target:
    win = (abs(cx - tx) < 12) & (abs(cy - ty) < 12)
    wgt = patch.astype(np.float64) * win
    centroid = np.array([(wgt * cx).sum(), (wgt * cy).sum()]) / wgt.sum()
    assert np.hypot(*(centroid - [tx, ty])) < 1.0


def test_alignment_needs_five_landmarks():
  with pytest.raises(ValueError, match="five .* landmarks"):
    crops.align(np.zeros((50, 50, 3), np.uint8), np.zeros((4, 2)))
  face = Face(box=np.array([10, 10, 40, 40], np.float32), score=1.0)
  for scheme in (1, 5):
    with pytest.raises(ValueError, match="landmarks"):
      crops.task_crop(np.zeros((50, 50, 3), np.uint8), face, scheme)
  with pytest.raises(ValueError, match="scheme must be one of"):
    crops.task_crop(np.zeros((50, 50, 3), np.uint8), face, 6)


# A synthetic face: the template scaled by 2 and shifted by (100, 60), so template pixel t sits at
# photo 2 t + (100, 60); its detector box is 140 x 160, centre (210, 200).
FACE = Face(box=np.array([140, 120, 280, 280], np.float32), score=0.9,
            landmarks=(2 * T + [100, 60]).astype(np.float32))


def _region(A, size):
  """Photo rectangle covered by an axis-aligned crop: its outer corners through A."""
  return np.concatenate(crops.apply_affine(A, [[-0.5, -0.5], [size - 0.5, size - 0.5]]))


@pytest.mark.parametrize("scheme, region", [
    # 1: template frame [-0.5, 111.5] zoomed out 1.3x about 55.5: [-17.3, 128.3] -> 2 t + offset.
    (1, [65.4, 25.4, 356.6, 316.6]),
    # 2: box 140 x 160 + 30 % = 182 x 208, squared to 208 about (210, 200).
    (2, [106, 96, 314, 304]),
    # 3: the same 208 square with its bottom at the chin: eye y = 2 * 51.59885 + 60 = 163.1977,
    #    mouth y = 2 * 92.2848 + 60 = 244.5696, chin = 244.5696 + 0.6 * 81.3719 = 293.39274.
    (3, [106, 85.39274, 314, 293.39274]),
    # 4: the tight square of the box: side 160 about (210, 200).
    (4, [130, 120, 290, 280]),
    # 5: template square of 2.2 * 29.1806 = 64.19732 centred at (55.5, (71.7366 + 92.2848) / 2 =
    #    82.0107): x [23.40134, 87.59866], y [49.91204, 114.10936] -> 2 t + offset.
    (5, [146.80268, 159.82408, 275.19732, 288.21872]),
])
def test_task_schemes_cover_the_defined_regions(scheme, region):
  size = 64
  A = crops.task_affine(FACE, scheme, size)
  # Upright face: no rotation (float32 landmarks < 512 carry 2^-15 px each, ~1e-7 of rotation).
  # The region's hand-computed corners are given to 5 decimals and the landmarks are float32
  # (2^-15 px at these coordinates): 1e-3 px is a fixed margin over both; 0.5 px is a real error.
  np.testing.assert_allclose(A[[0, 1], [1, 0]], 0, atol=1e-5)
  np.testing.assert_allclose(_region(A, size), region, atol=1e-3)
  image = np.full((400, 400, 3), 50, np.uint8)
  patch, A2 = crops.task_crop(image, FACE, scheme, size)
  assert patch.shape == (size, size, 3) and patch.dtype == np.uint8
  np.testing.assert_array_equal(A2, A)
  np.testing.assert_array_equal(patch, 50)


def test_task_scheme_contents_on_a_two_tone_photo():
  # Rows from y = 298 down are dark: scheme 3 ("without neck", bottom edge at the chin, y = 293.4;
  # its 2 x 2 anti-aliasing blocks reach 1-2 px further) sees none of them, scheme 2 (which reaches
  # y = 304) has dark bottom rows.
  image = np.full((400, 400, 3), 200, np.uint8)
  image[298:] = 20
  s3, _ = crops.task_crop(image, FACE, 3, 104)
  s2, _ = crops.task_crop(image, FACE, 2, 104)
  assert s3.min() == 200
  assert (s2[-1] == 20).all() and (s2[0] == 200).all()


def test_aligned_schemes_follow_the_rotation_of_the_face():
  rot = _rotation(30)
  centre = np.array([210.0, 200.0])
  lm = (FACE.landmarks - centre) @ rot.T + centre
  tilted = Face(box=FACE.box, score=0.9, landmarks=lm.astype(np.float32))
  for scheme in (1, 5):
    upright, turned = crops.task_affine(FACE, scheme, 64), crops.task_affine(tilted, scheme, 64)
    corners = _centres(64)[[0, -1]][:, [0, -1]].reshape(-1, 2)
    expected = (crops.apply_affine(upright, corners) - centre) @ rot.T + centre
    # float32 rotated landmarks (2^-15 px each at < 512), propagated through a least-squares fit
    # to corners ~100 px away: ~1e-4 px; 1e-3 is a fixed margin, a wrong rotation sign is > 10 px.
    np.testing.assert_allclose(crops.apply_affine(turned, corners), expected, atol=1e-3)


def test_scheme_3_without_landmarks_ends_at_the_box_bottom():
  face = Face(box=FACE.box, score=0.5)
  np.testing.assert_allclose(_region(crops.task_affine(face, 3, 32), 32), [106, 72, 314, 280],
                             atol=1e-9)


def _face(x1, y1, x2, y2, score):
  return Face(box=np.array([x1, y1, x2, y2], np.float32), score=score)


def test_select_faces_policies():
  shape = (100, 200, 3)  # image centre (99.5, 49.5)
  big = _face(0, 0, 60, 60, 0.70)  # area 3600, centre (30, 30)
  central = _face(90, 40, 110, 60, 0.80)  # area 400, centre (100, 50)
  sure = _face(150, 60, 190, 100, 0.99)  # area 1600, centre (170, 80)
  faces = [big, central, sure]
  assert crops.select_faces(faces, "all", shape) == faces
  assert crops.select_faces(faces, "largest", shape) == [big]
  assert crops.select_faces(faces, "central", shape) == [central]
  assert crops.select_faces(faces, "score", shape) == [sure]
  for policy in crops.POLICIES:
    assert crops.select_faces([], policy, shape) == []
  twin = _face(150, 60, 190, 100, 0.99)
  assert crops.select_faces([sure, twin], "score", shape)[0] is sure  # ties keep the first
  with pytest.raises(ValueError, match="policy must be one of"):
    crops.select_faces(faces, "biggest", shape)
