"""read_image: conversions to RGB uint8 and one-line errors for every kind of bad file."""

import struct

import cv2
import numpy as np
import pytest

from jaxface.faces import HaarDetector, ImageReadError, read_image, validate_rgb


def _write(path, array) -> str:
  assert cv2.imwrite(str(path), array)
  return str(path)


def _assert_error(path, match, **kw):
  with pytest.raises(ImageReadError, match=match) as info:
    read_image(path, **kw)
  message = str(info.value)
  assert str(path) in message and "\n" not in message
  return message


def test_missing_directory_and_empty_file(tmp_path):
  _assert_error(tmp_path / "nope.jpg", "no such file")
  _assert_error(tmp_path, "is a directory")
  (tmp_path / "empty.png").write_bytes(b"")
  _assert_error(tmp_path / "empty.png", r"empty file \(0 bytes\)")


def test_text_and_random_bytes_are_refused(tmp_path):
  (tmp_path / "notes.jpg").write_text("these are not pixels\n")
  _assert_error(tmp_path / "notes.jpg", "not a readable image")
  (tmp_path / "noise.png").write_bytes(np.random.default_rng(0).bytes(5000))
  _assert_error(tmp_path / "noise.png", "not a readable image")


def test_truncated_jpeg_and_png_are_refused(tmp_path, capfd):
  image = cv2.resize(np.arange(64, dtype=np.uint8).reshape(8, 8), (64, 64))
  image = np.stack([image, image[::-1], image.T], -1)
  for ext in (".jpg", ".png"):
    data = cv2.imencode(ext, image)[1].tobytes()
    for cut in (len(data) // 2, len(data) - 2):  # half the file; only the last 2 bytes lost
      (tmp_path / f"cut{ext}").write_bytes(data[:cut])
      _assert_error(tmp_path / f"cut{ext}", "truncated|not a readable image")
  # libpng's own complaint is silenced: our one-line error is the only message.
  assert capfd.readouterr().err == ""


def test_sixteen_bit_colour_is_scaled_by_257_with_rounding(tmp_path):
  values = np.array([0, 128, 129, 257 * 100, 65535], np.uint16)
  bgr = np.stack([values, values[::-1], np.full(5, 257 * 7, np.uint16)], -1)[None]  # (1, 5, 3)
  out = read_image(_write(tmp_path / "deep.png", bgr))
  assert out.dtype == np.uint8 and out.shape == (1, 5, 3)
  # 128/257 = 0.498 -> 0; 129/257 = 0.502 -> 1; RGB order (the file holds BGR).
  np.testing.assert_array_equal(out[0, :, 2], [0, 0, 1, 100, 255])
  np.testing.assert_array_equal(out[0, :, 1], [255, 100, 1, 0, 0])
  np.testing.assert_array_equal(out[0, :, 0], [7] * 5)


def test_gray_8_and_16_bit_become_three_equal_channels(tmp_path):
  gray = np.array([[0, 50], [200, 255]], np.uint8)
  out = read_image(_write(tmp_path / "gray.png", gray))
  assert out.shape == (2, 2, 3)
  for c in range(3):
    np.testing.assert_array_equal(out[..., c], gray)
  out16 = read_image(_write(tmp_path / "gray16.png", gray.astype(np.uint16) * 257))
  np.testing.assert_array_equal(out16[..., 1], gray)


def test_rgba_is_composited_on_white(tmp_path):
  bgra = np.array([[[10, 20, 200, 255], [10, 20, 200, 0], [10, 20, 200, 128]]], np.uint8)
  out = read_image(_write(tmp_path / "alpha.png", bgra))
  assert out.shape == (1, 3, 3)
  np.testing.assert_array_equal(out[0, 0], [200, 20, 10])  # opaque: the colour, as RGB
  np.testing.assert_array_equal(out[0, 1], [255, 255, 255])  # transparent: white
  # c * 128/255 + 255 * 127/255 = c * 0.502 + 127: 200 -> 227.39, 20 -> 137.04, 10 -> 132.02
  np.testing.assert_array_equal(out[0, 2], [227, 137, 132])


def test_float_tiff_is_refused(tmp_path):
  path = _write(tmp_path / "hdr.tiff", np.full((4, 4, 3), 0.5, np.float32))
  _assert_error(path, "floating-point")


def _with_orientation(jpeg: bytes, orientation: int) -> bytes:
  """Inserts an APP1 EXIF segment holding only the orientation tag (little-endian TIFF)."""
  tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
  tiff += struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
  payload = b"Exif\x00\x00" + tiff
  return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_opencv(tmp_path, orientation):
  rng = np.random.default_rng(orientation)
  image = cv2.resize(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8), (32, 24),
                     interpolation=cv2.INTER_NEAREST)
  data = _with_orientation(cv2.imencode(".jpg", image)[1].tobytes(), orientation)
  (tmp_path / "o.jpg").write_bytes(data)
  out = read_image(tmp_path / "o.jpg")
  # Reference: OpenCV's IMREAD_COLOR applies EXIF orientation itself (BGR order).
  expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
  assert out.shape[:2] == ((24, 32) if orientation <= 4 else (32, 24))
  np.testing.assert_array_equal(out, expected)


def test_huge_flat_png_is_read_and_detected_on_a_downscaled_copy(tmp_path):
  # 12000 x 12000 = 144 MP: under the default 150 MP limit. A flat colour compresses to ~0.5 MB.
  path = _write(tmp_path / "huge.png", np.full((12000, 12000, 3), (30, 90, 200), np.uint8))
  image = read_image(path)
  assert image.shape == (12000, 12000, 3) and image.dtype == np.uint8
  np.testing.assert_array_equal(image[::4000, ::4000].reshape(-1, 3)[0], [200, 90, 30])
  assert (image == image[0, 0]).all()
  assert HaarDetector(max_side=1024).detect(image) == []
  # A lower limit refuses it from the PNG header, before decoding.
  message = _assert_error(path, "above the limit", max_pixels=100_000_000)
  assert "12000x12000" in message and "144.0 MP" in message


def test_pixel_limit_after_decoding_for_formats_without_header_parsing(tmp_path):
  path = _write(tmp_path / "big.bmp", np.zeros((100, 80, 3), np.uint8))
  _assert_error(path, "80x100 is 0.0 MP, above the limit", max_pixels=5000)
  assert read_image(path, max_pixels=8000).shape == (100, 80, 3)


def test_tiny_image_is_returned(tmp_path):
  out = read_image(_write(tmp_path / "tiny.png", np.full((5, 7, 3), 9, np.uint8)))
  assert out.shape == (5, 7, 3)


@pytest.mark.parametrize("bad, match", [
    ([[1, 2, 3]], "numpy array, got list"),
    (np.zeros((4, 4, 3), np.float32), "dtype uint8, got float32"),
    (np.zeros((4, 4), np.uint8), r"shape \(H, W, 3\) RGB, got \(4, 4\)"),
    (np.zeros((4, 4, 4), np.uint8), r"got \(4, 4, 4\)"),
    (np.zeros((0, 4, 3), np.uint8), "empty image"),
])
def test_validate_rgb_names_the_argument(bad, match):
  with pytest.raises(ValueError, match=match) as info:
    validate_rgb(bad, "photo")
  assert str(info.value).startswith("photo: ")


def test_validate_rgb_returns_contiguous():
  a = np.zeros((4, 6, 3), np.uint8)[:, ::2]
  out = validate_rgb(a)
  assert out.flags.c_contiguous and out.shape == (4, 3, 3)
