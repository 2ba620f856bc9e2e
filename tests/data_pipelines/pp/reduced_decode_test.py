"""``decode(reduced=True)``: JPEGs decoded at libjpeg's reduced DCT scale when the fused geometry
after the decode shrinks by 2x or more; the points, maps and where things land are unchanged."""

import struct

import cv2
import numpy as np
import pytest
import skimage.data

from data_pipelines import pp
from data_pipelines.pp import geometry, image as pimage

FULL, REDUCED = "decode", "decode(reduced=True)"


def _jpeg(rgb, quality=95, **params):
  flags = [cv2.IMWRITE_JPEG_QUALITY, quality]
  for k, v in params.items():
    flags += [getattr(cv2, k), v]
  ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), flags)
  assert ok
  return buf.tobytes()


def _both(ex, tail, seed=1):
  """The full and the reduced decode through the same fused pipe and random draws."""
  return [pp.Pipeline(f"{dec}|{tail}", fuse=True)(dict(ex), np.random.default_rng(seed))
          for dec in (FULL, REDUCED)]


def _grey(x):
  return cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.int32)


@pytest.fixture(scope="module")
def blobs():
  """A 1000x1100 JPEG with a Gaussian blob (sigma 18 px) on each of five landmarks."""
  h, w = 1000, 1100
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
  lm = np.array([[400.3, 420.7], [620.6, 410.2], [515.5, 540.1], [430.8, 650.4],
                 [600.1, 660.9]])
  g = 40 + sum(200 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 18.0 ** 2)) for x, y in lm)
  img = np.repeat(np.rint(g).astype(np.uint8)[:, :, None], 3, axis=2)
  return {"image": _jpeg(img), "box": np.array([330, 330, 690, 740], np.float32),
          "landmarks": lm.astype(np.float32), "id": "blobs"}


def test_jpeg_size_reads_the_frame_header():
  rng = np.random.default_rng(0)
  for h, w in [(1, 1), (37, 250), (480, 640), (333, 17)]:
    img = rng.integers(0, 256, (h, w, 3), np.uint8)
    for params in ({}, {"IMWRITE_JPEG_PROGRESSIVE": 1}, {"IMWRITE_JPEG_OPTIMIZE": 1}):
      data = _jpeg(img, 80, **params)
      assert pimage.jpeg_size(data) == (h, w) == cv2.imdecode(np.frombuffer(data, np.uint8),
                                                                cv2.IMREAD_COLOR).shape[:2]
      assert pimage.jpeg_size(memoryview(data)) == (h, w)
  grey = cv2.imencode(".jpg", rng.integers(0, 256, (20, 30), np.uint8))[1].tobytes()
  assert pimage.jpeg_size(grey) == (20, 30)
  png = cv2.imencode(".png", img)[1].tobytes()
  assert pimage.jpeg_size(png) is None and pimage.jpeg_size(b"") is None
  assert pimage.jpeg_size(b"\xff\xd8\xff\xe0\x00") is None  # truncated


def _with_exif_orientation(data: bytes, orientation: int) -> bytes:
  # APP1 "Exif": a little-endian TIFF header and IFD0 with the one Orientation (SHORT) entry.
  tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
  tiff += struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
  payload = b"Exif\x00\x00" + tiff
  return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def test_a_turned_exif_photo_is_decoded_in_full():
  img = np.random.default_rng(1).integers(0, 256, (40, 60, 3), np.uint8)
  base = _jpeg(img)
  upright, turned = _with_exif_orientation(base, 1), _with_exif_orientation(base, 6)
  assert pimage.jpeg_size(upright) == (40, 60)
  # OpenCV turns orientation 6 on decoding: the header's frame is not the decoded one.
  assert cv2.imdecode(np.frombuffer(turned, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (60, 40)
  assert pimage.jpeg_size(turned) is None
  tail = "resize(20)|flip_lr"
  full, reduced = _both({"image": turned, "id": 0}, tail)
  np.testing.assert_array_equal(full["image"], reduced["image"])  # the full decode, exactly
  assert full["image"].shape == (20, 20, 3)


def test_no_reduction_means_the_same_arrays():
  # Shrinks under 2x, PNG images and decoded arrays all take the full decode: identical outputs.
  astro = skimage.data.astronaut()
  box = np.array([170, 20, 330, 220], np.float32)
  lm = np.array([[220, 100], [280, 100], [250, 130], [225, 165], [275, 165]], np.float32)
  sal = cv2.imencode(".png", astro[::4, ::4, 1])[1].tobytes()
  png = cv2.imencode(".png", astro[..., ::-1])[1].tobytes()
  cases = [(_jpeg(astro), "face_crop(0.3)|resize(224)|flip_lr|rotate(3)"),
           (_jpeg(astro), "resize(300)|flip_lr|rotate(10)"),
           (_jpeg(astro), "face_crop(0.3)|resize((140, 40))"),  # shrinks 1.86x vertically only
           (png, "face_crop(0.3)|resize(32)|flip_lr"),
           (astro, "resize(64)|rotate(5)")]
  for data, tail in cases:
    ex = {"image": data, "fixation": sal, "box": box, "landmarks": lm, "id": 0}
    full, reduced = _both(ex, tail)
    assert full.keys() == reduced.keys()
    for key in full:
      np.testing.assert_array_equal(full[key], reduced[key], err_msg=f"{tail}: {key}")


def test_scale_choice():
  assert geometry.reduction_scale(np.array([[1.99, 0, 0], [0, 5, 0]]), (1000, 1000)) == 1
  assert geometry.reduction_scale(np.array([[2.0, 0, 0], [0, 3.9, 0]]), (1000, 1000)) == 2
  assert geometry.reduction_scale(np.array([[0, 4.5, 0], [-4.5, 0, 0]]), (1000, 1000)) == 4
  assert geometry.reduction_scale(np.array([[30.0, 0, 0], [0, 30, 0]]), (1000, 1000)) == 8
  # Never below two pixels along an axis: 5 rows at 1/4 still give 2.
  assert geometry.reduction_scale(np.array([[30.0, 0, 0], [0, 30, 0]]), (5, 1000)) == 4
  assert geometry.reduction_scale(np.array([[30.0, 0, 0], [0, 30, 0]]), (1, 1000)) == 1


@pytest.mark.parametrize("out", [200, 100, 50])  # 470 px crops: scales 2, 4 and 8
def test_points_and_blobs_land_where_the_full_decode_puts_them(blobs, out):
  tail = f"face_crop(0.3)|resize({out})|flip_lr|rotate(20)"
  full, reduced = _both(blobs, tail, seed=3)
  # The points are planned on the header's full-resolution frame: exactly the same.
  np.testing.assert_array_equal(full["landmarks"], reduced["landmarks"])
  np.testing.assert_array_equal(full["box"], reduced["box"])
  assert reduced["image"].shape == (out, out, 3)
  r = max(2, round(36 * out / 470))  # two blob sigmas, in output pixels

  def centroids(img):
    g = img[:, :, 0].astype(np.float64) - 40
    out_pts = []
    for x, y in full["landmarks"]:
      x0, y0 = int(round(x)), int(round(y))
      ys, xs = np.mgrid[y0 - r:y0 + r + 1, x0 - r:x0 + r + 1]
      w = g[y0 - r:y0 + r + 1, x0 - r:x0 + r + 1]
      out_pts.append([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])
    return np.array(out_pts)

  # Each blob's centroid sits where the full decode puts it. Measured: within 0.025 output px.
  # Misplacing the reduced grid by half a reduced pixel (pixel i at s * i instead of
  # s * i + (s - 1) / 2) would move them by (s - 1) / (2 k) >= 0.21 px for these crops
  # (k = 470 / out input pixels per output pixel, s = 2, 4, 8), so 0.06 px tells them apart.
  np.testing.assert_allclose(centroids(reduced["image"]), centroids(full["image"]), atol=0.06)


def test_pixels_stay_close_to_the_full_decode():
  # The scaled IDCT keeps the low frequencies of each 8x8 block where the full path averages
  # 2x2 pixel blocks (or larger, floor(k) x floor(k), while the reduced path stays at a power of
  # two), so they agree on smooth content and differ at fine detail and edges. Bounds: the
  # measured values (mean, max grey-level difference) with about 50 % headroom, on the
  # astronaut's face (mean 0.6-1.6 measured) and on a smooth picture (0.26, 2).
  astro = skimage.data.astronaut()
  ex = {"image": _jpeg(astro, 90), "box": np.array([150, 10, 350, 230], np.float32), "id": 0}
  for out, mean_bound, max_bound in [(112, 1.5, 30), (64, 2.5, 40)]:
    full, reduced = _both(ex, f"face_crop(0.3)|resize({out})|flip_lr|rotate(3)")
    d = np.abs(_grey(full["image"]) - _grey(reduced["image"]))
    assert d.mean() < mean_bound and d.max() <= max_bound, (out, d.mean(), d.max())
    assert d.mean() > 0  # the reduced decode did run
  yy, xx = np.mgrid[0:600, 0:800].astype(np.float64)
  smooth = np.stack([127.5 + 100 * np.sin(0.011 * xx + c) * np.cos(0.009 * yy) for c in (0, 1, 2)],
                    -1)
  ex = {"image": _jpeg(np.rint(smooth).astype(np.uint8)), "id": 0}
  full, reduced = _both(ex, "resize(200)|rotate(5)")
  d = np.abs(_grey(full["image"]) - _grey(reduced["image"]))
  assert 0 < d.mean() < 0.4 and d.max() <= 3, (d.mean(), d.max())


def test_maps_follow_the_full_resolution_frame(blobs):
  # A map (any size) covers the image's field of view: it is resized to the header's size and
  # warped exactly as with the full decode.
  fix = cv2.imencode(".png", np.random.default_rng(2).integers(0, 256, (250, 275), np.uint8))[1]
  ex = dict(blobs, fixation=fix.tobytes())
  full, reduced = _both(ex, "face_crop(0.3)|resize(100)|flip_lr|rotate(20)")
  np.testing.assert_array_equal(full["fixation"], reduced["fixation"])
  assert reduced["decoded_shape"] == full["decoded_shape"] == (1000, 1100, 3)


def test_pipes_that_cannot_reduce_fail_at_start():
  assert str(pp.Pipeline("decode|resize(4)")) == "decode|resize(size=4)"  # the plain name stays
  assert str(pp.Pipeline(f"{REDUCED}|resize(4)", fuse=True)).startswith("decode(reduced=True)|")
  with pytest.raises(ValueError, match="needs fused geometry"):
    pp.Pipeline(f"{REDUCED}|resize(4)|flip_lr")
  with pytest.raises(ValueError, match="followed by color_jitter"):
    pp.Pipeline(f"{REDUCED}|color_jitter(0.1)|resize(4)", fuse=True)
  with pytest.raises(ValueError, match="followed by nothing"):
    pp.Pipeline(REDUCED, fuse=True)
  with pytest.raises(ValueError, match="reduced must be True or False"):
    pp.parse("decode(reduced=1)")
  # One geometric op is enough after a reducing decode (it joins the run).
  steps = pp.Pipeline(f"{REDUCED}|resize(4)|saliency(0.3)", fuse=True)._steps
  assert [[op.name for op in s] for s in steps] == [["decode", "resize"], ["saliency"]]


def test_corrupt_jpeg_is_a_bad_example(blobs):
  data = blobs["image"]
  broken = data[:600]  # the header survives, the scan does not
  pipe = pp.Pipeline(f"{REDUCED}|face_crop(0.3)|resize(50)", fuse=True)
  try:
    out = pipe({"image": broken, "box": blobs["box"], "id": "b"})
  except pp.BadExampleError as e:
    assert "cannot be decoded" in str(e)
  else:  # libjpeg may pad a truncated scan with grey; then it is the header's shape, reduced
    assert out["image"].shape == (50, 50, 3)
  with pytest.raises(pp.BadExampleError, match="cannot be decoded"):
    pipe({"image": data[:2] + b"\xff\xc0\x00\x0b\x08\x00\x10\x00\x10\x01\x01\x11\x00",
          "box": blobs["box"], "id": "b"})
