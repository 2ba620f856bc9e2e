"""Model-specific face chips: dlib's chip geometry written out by hand for an axis-aligned face,
rotation equivariance, and fer's box crop against slicing done by hand."""

import math

import cv2
import numpy as np
import pytest

from jaxface.faces import chips, crops


def test_dlib_affine_axis_aligned_by_hand():
  # A face exactly 100 px wide in the unit frame, shifted by (50, 20): the similarity from the
  # padded 64 px template has scale 100 / (64 / 1.4) and no rotation.
  pts = chips.DLIB_TEMPLATE_5 * 100 + [50, 20]
  A = chips.dlib_chip_affine(pts, 64, padding=0.2, template=chips.DLIB_TEMPLATE_5)
  s = 100 / (64 / 1.4)
  t = np.array([50, 20]) - s * 0.2 / 1.4 * 64  # photo point of template pixel (0, 0)
  centre = t + s * 32
  step = (64 * s - 1) / 63  # first to last chip pixel spans the inclusive rectangle
  shift = (2 ** math.floor(math.log2(s)) - 1) / 2  # one pyramid level at s = 2.19
  expected = np.array([[step, 0, centre[0] - 31.5 * step - shift],
                       [0, step, centre[1] - 31.5 * step + shift]])
  np.testing.assert_allclose(A, expected, atol=1e-9)


def test_dlib_affine_rotates_with_the_face():
  rng = np.random.default_rng(0)
  pts = chips.MTCNN_IN_DLIB_FRAME * 80 + rng.normal(0, 1.0, (5, 2)) + [100, 90]
  theta = math.radians(25)
  R = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
  c = np.array([140.0, 130.0])
  A0 = chips.dlib_chip_affine(pts, 64)
  A1 = chips.dlib_chip_affine((pts - c) @ R.T + c, 64)
  # Below one pyramid level (scale < 2) the chip turns with the photo exactly.
  assert math.hypot(A0[0, 0], A0[1, 0]) * 64 / 63 < 2
  np.testing.assert_allclose(A1[:, :2], R @ A0[:, :2], atol=1e-9)
  np.testing.assert_allclose(A1[:, 2], R @ (A0[:, 2] - c) + c, atol=1e-9)


def test_dlib_chip_samples_through_the_affine():
  yy, xx = np.mgrid[0:200, 0:220].astype(np.float32)
  ramp = np.stack([xx, yy, np.zeros_like(xx)], -1)
  pts = chips.MTCNN_IN_DLIB_FRAME * 60 + [70, 60]
  chip, A = chips.dlib_chip(ramp, pts, 64)
  j, i = np.meshgrid(np.arange(64), np.arange(64))
  # Bilinear sampling of a linear ramp is exact inside the photo up to float32 rounding: values
  # < 256 have ulps of 2^-16 and the weights add a few more, so 1e-3 px is a fixed margin that a
  # half-pixel convention error (0.5 px) still fails.
  np.testing.assert_allclose(chip[..., :2], crops.apply_affine(A, np.stack([j, i], -1)),
                             atol=1e-3)


def test_fer_rect_inverts_haar_edges():
  assert chips.fer_rect([49.5, 59.5, 89.5, 109.5]) == (50, 60, 40, 50)


def test_fer_crop_by_hand():
  rng = np.random.default_rng(0)
  gray = rng.integers(0, 256, (200, 210), dtype=np.uint8)
  # Box x=50, y=60, w=40, h=50: squared to x=45, w=50; offsets 10 -> rows 50:120, cols 35:105.
  chip, A = chips.fer_crop(gray, [49.5, 59.5, 89.5, 109.5])
  np.testing.assert_array_equal(chip, cv2.resize(gray[50:120, 35:105], (64, 64)))
  np.testing.assert_allclose(crops.apply_affine(A, [[-0.5, -0.5], [63.5, 63.5]]),
                             [[34.5, 49.5], [104.5, 119.5]])


def test_fer_crop_pads_with_the_bottom_rows_mean():
  gray = np.full((100, 100), 10, np.uint8)
  gray[-2:] = 200  # the pad colour comes from the last two rows only
  chip, _ = chips.fer_crop(gray, [-20.5, -20.5, 29.5, 29.5])
  # Rows/cols -30..39 of the photo: the top-left 30 pixels are padding (value 200).
  region = cv2.copyMakeBorder(gray, 40, 40, 40, 40, cv2.BORDER_CONSTANT, value=200)[10:80, 10:80]
  np.testing.assert_array_equal(chip, cv2.resize(region, (64, 64)))
  assert chip[0, 0] == 200 and chip[-1, -1] == 10
  with pytest.raises(ValueError, match="outside"):
    chips.fer_crop(gray, [400, 400, 450, 450])
