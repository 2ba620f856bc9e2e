"""Layer primitives against their torch counterparts (the reference semantics)."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxface.models import layers


def _nchw(x_BHWC):
  return torch.from_numpy(np.ascontiguousarray(np.transpose(x_BHWC, (0, 3, 1, 2))))


def _nhwc(t):
  return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


@pytest.mark.parametrize("size,window,stride,pad", [
    (13, 3, 2, 0), (14, 3, 2, 0), (56, 3, 2, 0), (22, 3, 2, 0), (9, 3, 2, 0), (10, 2, 2, 0),
    (7, 3, 2, 1), (8, 3, 2, 1), (5, 2, 2, 1), (55, 3, 2, 0)])
def test_max_pool_ceil_matches_torch_ceil_mode(rng, size, window, stride, pad):
  x = rng.normal(size=(2, size, size + 1, 3)).astype(np.float32)
  ref = F.max_pool2d(_nchw(x), window, stride, pad, ceil_mode=True)
  got = layers.max_pool_ceil(jnp.asarray(x), window, stride, pad)
  assert got.shape[1:3] == (layers.ceil_pool_size(size, window, stride, pad),
                            layers.ceil_pool_size(size + 1, window, stride, pad))
  np.testing.assert_allclose(np.asarray(got), _nhwc(ref), atol=0)


def test_ceil_pool_sizes_of_the_papers():
  # GilNet 56 -> 28 -> 14 -> 7 (Levi & Hassner's paper: 96x28x28 after pool1), bvlc_alexnet
  # 55 -> 27 -> 13 -> 6, MTCNN RNet 22 -> 11.
  assert [layers.ceil_pool_size(s, 3, 2) for s in (56, 28, 14)] == [28, 14, 7]
  assert [layers.ceil_pool_size(s, 3, 2) for s in (55, 27, 13)] == [27, 13, 6]
  assert layers.ceil_pool_size(22, 3, 2) == 11


def test_max_pool_floor_matches_torch(rng):
  x = rng.normal(size=(1, 9, 8, 2)).astype(np.float32)
  ref = F.max_pool2d(_nchw(x), 3, 2, 1)
  np.testing.assert_allclose(np.asarray(layers.max_pool_floor(jnp.asarray(x), 3, 2, 1)), _nhwc(ref))


@pytest.mark.parametrize("channels", [1, 3, 7, 12])
def test_lrn_matches_torch_local_response_norm(rng, channels):
  x = (rng.normal(size=(2, 4, 5, channels)) * 30).astype(np.float32)
  ref = torch.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)(_nchw(x))
  got = layers.lrn_caffe(jnp.asarray(x), 5, 1e-4, 0.75, 1.0)
  # Tolerance: each output is a / (k + alpha/n * sum of 5 squares)^beta; the two libraries sum the
  # squares in different orders (5 roundings) and evaluate pow differently (exp/log, a few ulps),
  # so the relative error is below ~16 float32 ulps = 16 * 2^-23 ~ 2e-6; rtol 1e-5 leaves 5x,
  # and atol 1e-5 covers outputs near zero (|a| < 1e-5 carries no relative digits worth testing).
  np.testing.assert_allclose(np.asarray(got), _nhwc(ref), rtol=1e-5, atol=1e-5)


def test_lrn_hand_computed_single_pixel():
  # Three channels, size 3: b_1 = a_1 / (1 + (1/3) * (a_0^2 + a_1^2 + a_2^2))^0.5
  a = jnp.asarray([[[[1.0, 2.0, 3.0]]]])
  got = np.asarray(layers.lrn_caffe(a, size=3, alpha=1.0, beta=0.5, k=1.0))[0, 0, 0]
  expect = [1 / np.sqrt(1 + 5 / 3), 2 / np.sqrt(1 + 14 / 3), 3 / np.sqrt(1 + 13 / 3)]
  np.testing.assert_allclose(got, expect, rtol=1e-6)


@pytest.mark.parametrize("src,dst", [((7, 7), (14, 14)), ((4, 5), (13, 9)), ((13, 13), (25, 25)),
                                     ((6, 8), (3, 2)), ((1, 3), (4, 1))])
def test_align_corners_resize_matches_torch(rng, src, dst):
  x = rng.normal(size=(2, *src, 3)).astype(np.float32)
  ref = F.interpolate(_nchw(x), size=dst, mode="bilinear", align_corners=True)
  got = layers.resize_bilinear_align_corners(jnp.asarray(x), dst)
  # Tolerance: an output is a convex combination of 4 inputs (|x| < ~5 for N(0, 1) samples) with
  # weights computed from the source coordinate in float32 by each library in its own way (a few
  # roundings each): error <= ~8 roundings * 5 * 2^-24 ~ 2.4e-6; atol 1e-5 leaves 4x.
  np.testing.assert_allclose(np.asarray(got), _nhwc(ref), atol=1e-5)


@pytest.mark.parametrize("src,dst", [((7, 7), (14, 14)), ((4, 5), (13, 9)), ((16, 12), (8, 6))])
def test_half_pixel_resize_matches_torch(rng, src, dst):
  x = rng.normal(size=(1, *src, 2)).astype(np.float32)
  ref = F.interpolate(_nchw(x), size=dst, mode="bilinear", align_corners=False)
  got = layers.resize_bilinear_half_pixel(jnp.asarray(x), dst)
  # Tolerance: as the align-corners case (4-tap convex combination, weights rounded differently).
  np.testing.assert_allclose(np.asarray(got), _nhwc(ref), atol=1e-5)


@pytest.mark.parametrize("src,dst", [((13, 13), (6, 6)), ((6, 6), (6, 6)), ((14, 14), (7, 7)),
                                     ((5, 9), (7, 7)), ((1, 1), (7, 7)), ((10, 3), (4, 2))])
def test_adaptive_avg_pool_matches_torch(rng, src, dst):
  x = rng.normal(size=(2, *src, 3)).astype(np.float32)
  ref = F.adaptive_avg_pool2d(_nchw(x), dst)
  got = layers.adaptive_avg_pool(jnp.asarray(x), dst)
  # Tolerance: a mean of at most 3 x 3 = 9 inputs here (the largest window of these cases), summed
  # in a different order: error <= (9 - 1) * 2^-24 * mean|x| (~0.8 for N(0, 1)) + the division's
  # half ulp ~ 4.5e-7; atol 1e-6 leaves 2x.
  np.testing.assert_allclose(np.asarray(got), _nhwc(ref), atol=1e-6)


def test_prelu_matches_torch(rng):
  x = rng.normal(size=(2, 3, 3, 4)).astype(np.float32)
  slopes = np.asarray([0.1, 0.25, -0.5, 2.0], np.float32)
  ref = F.prelu(_nchw(x), torch.from_numpy(slopes))
  got = layers.PReLU().apply({"params": {"alpha": slopes}}, jnp.asarray(x))
  # Exact: each output is x or one correctly rounded IEEE product alpha * x in both libraries.
  np.testing.assert_allclose(np.asarray(got), _nhwc(ref), atol=0)


def test_scaled_width():
  assert layers.scaled(64, 1.0) == 64
  assert layers.scaled(64, 0.125) == 8
  assert layers.scaled(3, 0.01) == 1
