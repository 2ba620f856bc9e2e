"""The device MTCNN cascade (jaxface/faces/mtcnn_device.py) against the host cascade, today's
reference (``MTCNNDetector(backend="host")``): its pieces (pyramid, window means, crops, NMS) and
the faces found on the bench's photos, the astronaut and LFW photos."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data

from jaxface.faces import mtcnn, mtcnn_device
from jaxface.tools.bench import detection_scenes
from tests.helpers import lfw_photo

# A window mean < 256 within one float32 ulp (2^-16 above 128) of the host's, then (x - 127.5)
# rounds once more (<= 2^-17 below 128) and * 2^-7 is exact: 2^-22 on the normalised scale.
# A window one pixel off moves a mean by ~1 grey level, 2^-7 here.
PIXEL_ATOL = 2.0**-22


@pytest.fixture(scope="module")
def detectors():
  return mtcnn.MTCNNDetector(backend="device"), mtcnn.MTCNNDetector(backend="host")


def test_bucket_and_capacity_sizes():
  assert [mtcnn_device.bucket_side(n) for n in (480, 640, 200, 250, 720, 13)] == [
      480, 640, 208, 256, 768, 16]
  caps = [mtcnn_device.capacity(n, 16) for n in (1, 16, 17, 24, 25, 33, 49, 81, 170)]
  assert caps == [16, 16, 24, 24, 32, 48, 64, 96, 192]


def test_window_mean_rounds_as_float64_division():
  rng = np.random.default_rng(0)
  # Small sums (one float32 division) and sums above 2^24 (the quotient / remainder split).
  counts = rng.integers(1, 200_000, 4000).astype(np.int32)
  sums = (counts.astype(np.int64) * rng.uniform(0, 255, 4000)).astype(np.int32)
  got = np.asarray(jax.jit(mtcnn_device._mean)(sums, counts))
  want = (sums.astype(np.float64) / counts).astype(np.float32)
  assert (sums >= 2**24).sum() > 1000 and (sums < 2**24).sum() > 1000
  small = sums < 2**24
  # Below 2^24: one correctly rounded division; the host rounds float64 then float32, which
  # differs only when the float64 quotient lands on a float32 rounding midpoint.
  np.testing.assert_array_equal(got[small], want[small])
  # Above: q + r / n rounds twice, within one ulp of the value.
  np.testing.assert_array_less(np.abs(got - want), np.spacing(want) * 1.01)


@pytest.mark.parametrize("hw", [(37, 53), (48, 64)])  # padded to the (40, 56) bucket / exact
def test_pyramid_levels_equal_host_area_resize(hw):
  image = np.random.default_rng(1).integers(0, 256, (2, *hw, 3), dtype=np.uint8)
  plan = mtcnn_device.plan(*hw, 12.0, 0.709)
  bh, bw = plan.bucket
  padded = np.pad(image, ((0, 0), (0, bh - hw[0]), (0, bw - hw[1]), (0, 0)))
  levels = jax.jit(mtcnn_device._levels)(mtcnn_device._integral(jnp.asarray(padded)),
                                          plan.tables)
  scales = mtcnn.pyramid_scales(*hw, 12.0, 0.709)
  assert len(scales) >= 3
  for level, (lh, lw), scale in zip(levels, np.asarray(plan.tables["level_hw"]), scales):
    assert (lh, lw) == (int(hw[0] * scale + 1), int(hw[1] * scale + 1))
    want = (mtcnn.area_resize(image, (lh, lw)) - np.float32(127.5)) * np.float32(0.0078125)
    np.testing.assert_allclose(np.asarray(level)[:, :lh, :lw], want, rtol=0, atol=PIXEL_ATOL)


def test_crops_equal_host_crops():
  rng = np.random.default_rng(2)
  images = rng.integers(0, 256, (2, 40, 50, 3), dtype=np.uint8)
  x1 = rng.uniform(-20, 60, 64)
  y1 = rng.uniform(-20, 50, 64)
  side = rng.uniform(0.5, 40, 64)
  boxes = np.stack([x1, y1, x1 + side, y1 + side], axis=1).astype(np.float32)
  inds = rng.integers(0, 2, 64)
  want, want_ok = mtcnn._crops(mtcnn._integral(images), inds, boxes, 24)
  got, ok = jax.jit(mtcnn_device._crops, static_argnums=4)(
      mtcnn_device._integral(jnp.asarray(images)), jnp.asarray(inds, jnp.int32),
      jnp.asarray(boxes), jnp.asarray([40, 50], jnp.int32), 24)
  assert want_ok.sum() > 32 and (~want_ok).sum() > 4  # Both kinds are exercised.
  np.testing.assert_array_equal(np.asarray(ok), want_ok)
  # Both take exact integer window sums; the mean and the normalisation round as above.
  np.testing.assert_allclose(np.asarray(got)[want_ok], want, rtol=0, atol=PIXEL_ATOL)


@pytest.mark.parametrize("mode,plus_one,threshold", [("union", False, 0.5), ("union", False, 0.7),
                                                     ("min", True, 0.7)])
def test_nms_equals_host_greedy_nms(mode, plus_one, threshold):
  rng = np.random.default_rng(3)
  n = 300
  xy = rng.uniform(0, 30, (n, 2))  # Crowded: long suppression chains.
  wh = rng.uniform(15, 25, (n, 2))
  boxes = np.floor(np.concatenate([xy, xy + wh], axis=1)).astype(np.float32)  # Ties in IoU.
  scores = np.round(rng.uniform(0, 1, n), 2).astype(np.float32)  # Ties in score.
  photo = rng.integers(0, 3, n)
  live = rng.random(n) < 0.9
  want = mtcnn._batched_nms(boxes[live], scores[live], photo[live], threshold, mode, plus_one)
  want = np.flatnonzero(live)[want]

  @jax.jit
  def run(boxes, scores, photo, live):
    order = mtcnn_device._priority(scores, live)
    kept = mtcnn_device._nms(boxes[order], photo[order], live[order], threshold,
                             jnp.zeros((), jnp.int32), mode, plus_one)
    (idx,), count = mtcnn_device._compact(kept, order)
    return idx, count

  idx, count = run(boxes, scores, jnp.asarray(photo, jnp.int32), live)
  assert 40 < len(want) < 0.7 * live.sum()  # Measured 61, 179 and 49 of 267.
  got = np.asarray(idx)[:int(count)]
  # The same boxes in the same (decreasing score, stable) order within each photo. Across photos
  # equal scores may interleave otherwise (the host orders them by photo): no stage mixes photos.
  for b in range(3):
    np.testing.assert_array_equal(got[photo[got] == b], want[photo[want] == b])
  assert len(got) == len(want)


def _photos():
  scenes = detection_scenes()
  lfw = [lfw_photo(p) for p in skimage.data.lfw_subset()[::25]]  # 4 faces, 4 non-faces
  # The bench scenes hold the astronaut's face at several sizes and places (640 x 480); every
  # other photo size is another set of compiled programs (tens of seconds of CPU each).
  return {"bench": scenes[:2] + scenes[12:13], "lfw": lfw}


def test_same_faces_as_host_cascade(detectors):
  device, host = detectors
  kernels = [k for k in jax.tree.leaves(host.onet) if k.ndim >= 2]
  # PNet runs at other shapes and RNet / ONet at other batch sizes than on the host: each net's
  # outputs then differ by about depth * sqrt(largest fan-in) float32 roundings (relative), which
  # ONet's offsets and landmarks scale by the box side. (Measured: 1-2 ulps of the coordinates.)
  rel = len(kernels) * np.sqrt(max(int(np.prod(k.shape[:-1])) for k in kernels)) * 2.0**-24
  faces = 0
  for name, photos in _photos().items():
    # The LFW photos as one batch (another program per stage), the others one by one.
    if name == "lfw":
      got, want = device.detect_batch(photos), host.detect_batch(photos)
    else:
      got, want = [device.detect(p) for p in photos], [host.detect(p) for p in photos]
    for i, (g, w) in enumerate(zip(got, want)):
      assert len(g) == len(w), (name, i)
      for fg, fw in zip(g, w):
        px = rel * max(fw.width, fw.height)
        np.testing.assert_allclose(fg.box, fw.box, rtol=0, atol=px, err_msg=f"{name} {i}")
        np.testing.assert_allclose(fg.landmarks, fw.landmarks, rtol=0, atol=px)
        assert abs(fg.score - fw.score) <= rel
        faces += 1
  assert faces >= 6  # 2 bench faces, 4 LFW faces


def test_backend_is_checked():
  with pytest.raises(ValueError, match="backend must be one of"):
    mtcnn.MTCNNDetector(backend="gpu")
