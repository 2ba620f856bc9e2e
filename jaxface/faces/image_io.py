"""Reading photos into RGB uint8 arrays, with one-line errors that name the file.

``read_image`` decodes the file's bytes with OpenCV (``IMREAD_UNCHANGED``, so bit depth and alpha
are seen as stored) and normalises what it finds:

* grayscale -> RGB (the gray value in all three channels);
* alpha (BGRA, gray + alpha) -> composited on white, the colour a transparent region shows on a
  page, rather than dropped (dropping exposes whatever colour the encoder left under transparent
  pixels, often black);
* 16-bit -> 8-bit by ``round(v / 257)`` (65535 -> 255);
* float images (HDR, 32-bit TIFF) have no single 8-bit mapping: they are refused with a clear error;
* JPEG EXIF orientation is applied (``IMREAD_UNCHANGED`` ignores it; phone photos are often stored
  sideways, and a sideways face is not detected).

Refused with ``ImageReadError``: missing or unreadable file, directory, empty file, bytes that no
decoder accepts, truncated images, images above ``max_pixels`` (checked from the PNG / JPEG header
before decoding where possible, so a decompression bomb is not decoded). Images smaller than a
detector's window are returned as they are: the detectors return no faces for them.
"""

from __future__ import annotations

import contextlib
import os
import struct

import cv2
import numpy as np

# 12000 x 12000 (144 MP) passes; bigger photos are almost always a mistake or a decompression bomb.
DEFAULT_MAX_PIXELS = 150_000_000

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp",
                    ".pbm", ".pgm", ".ppm", ".pnm", ".jp2", ".sr", ".ras")

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): they carry the size.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class ImageReadError(ValueError):
  """A file that is not a usable image; the message is one line that names the file."""


def is_image_file(path: str | os.PathLike) -> bool:
  return os.fspath(path).lower().endswith(IMAGE_EXTENSIONS)


@contextlib.contextmanager
def _quiet_stderr():
  """Silences C libraries (libpng prints "libpng error: ..." itself) while decoding.

  Our own one-line error replaces their message; file descriptor 2 is redirected for the process,
  so another thread writing to stderr during the decode loses that text.
  """
  try:
    saved = os.dup(2)
  except OSError:
    yield
    return
  try:
    with open(os.devnull, "wb") as null:
      os.dup2(null.fileno(), 2)
      yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


def _jpeg_info(data: bytes) -> tuple[tuple[int, int] | None, int]:
  """((width, height) or None, EXIF orientation 1..8) from the JPEG markers before the scan."""
  size, orientation = None, 1
  i, n = 2, len(data)
  while i + 4 <= n:
    if data[i] != 0xFF:
      break
    marker = data[i + 1]
    if marker == 0xFF:  # fill byte
      i += 1
      continue
    if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
      i += 2
      continue
    if marker in (0xD9, 0xDA):  # end of image / start of scan: the header is over
      break
    length = struct.unpack(">H", data[i + 2:i + 4])[0]
    segment = data[i + 4:i + 2 + length]
    if marker in _JPEG_SOF and len(segment) >= 5:
      h, w = struct.unpack(">HH", segment[1:5])
      size = (w, h)
    elif marker == 0xE1 and segment[:6] == b"Exif\x00\x00":
      orientation = _exif_orientation(segment[6:])
    i += 2 + length
  return size, orientation


def _exif_orientation(tiff: bytes) -> int:
  """Tag 0x0112 of IFD0 in a TIFF-structured EXIF block; 1 (as stored) when absent or malformed."""
  try:
    endian = {b"II": "<", b"MM": ">"}[tiff[:2]]
    (ifd,) = struct.unpack(endian + "I", tiff[4:8])
    (count,) = struct.unpack(endian + "H", tiff[ifd:ifd + 2])
    for k in range(count):
      entry = tiff[ifd + 2 + 12 * k:ifd + 14 + 12 * k]
      tag, typ = struct.unpack(endian + "HH", entry[:4])
      if tag == 0x0112 and typ == 3:  # SHORT
        (value,) = struct.unpack(endian + "H", entry[8:10])
        return value if 1 <= value <= 8 else 1
  except (KeyError, struct.error):
    pass
  return 1


def _apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
  """Turns a stored image into its displayed orientation (EXIF values, as OpenCV's IMREAD_COLOR)."""
  if orientation in (5, 6, 7, 8):
    image = np.swapaxes(image, 0, 1)
  flip_rows = orientation in (3, 4, 7, 8)
  flip_cols = orientation in (2, 3, 6, 7)
  if flip_rows:
    image = image[::-1]
  if flip_cols:
    image = image[:, ::-1]
  return np.ascontiguousarray(image)


def _header_size(data: bytes) -> tuple[int, int] | None:
  if data.startswith(_PNG_MAGIC) and data[12:16] == b"IHDR":
    return struct.unpack(">II", data[16:24])
  if data.startswith(b"\xff\xd8"):
    return _jpeg_info(data)[0]
  return None


def _to_rgb_uint8(image: np.ndarray) -> np.ndarray:
  """Decoded OpenCV array (BGR order, any channel count and integer depth) -> RGB uint8."""
  if image.ndim == 3 and image.shape[2] == 1:
    image = image[:, :, 0]
  channels = 1 if image.ndim == 2 else image.shape[2]
  if channels not in (1, 2, 3, 4):
    raise ValueError(f"unsupported number of channels ({channels})")
  if image.dtype == np.uint8 and channels in (1, 3):
    return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB if channels == 1 else cv2.COLOR_BGR2RGB)
  if image.dtype.kind == "f":
    raise ValueError(f"floating-point ({image.dtype}) images are not supported; "
                     "convert the file to 8- or 16-bit")
  if image.dtype not in (np.uint8, np.uint16):
    raise ValueError(f"unsupported pixel type {image.dtype}")
  full = float(np.iinfo(image.dtype).max)
  if channels in (2, 4):
    # Composite on white in [0, 1] floats, before any rounding to 8 bits.
    alpha = image[..., -1:].astype(np.float64) / full
    colour = image[..., :-1].astype(np.float64) / full
    unit = colour * alpha + (1.0 - alpha)
    image = np.rint(unit * 255.0).astype(np.uint8)
  else:
    image = np.rint(image / 257.0).astype(np.uint8)  # 16-bit gray or colour
  if image.ndim == 3 and image.shape[2] == 1:
    image = image[:, :, 0]
  return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB if image.ndim == 2 else cv2.COLOR_BGR2RGB)


def read_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
  """Reads an image file as an RGB uint8 (H, W, 3) array; raises ``ImageReadError`` if unusable.

  Args:
    path: the image file.
    max_pixels: refuse images with more pixels than this (None: no limit beyond OpenCV's own).
  """
  name = os.fspath(path)
  if not os.path.exists(name):
    raise ImageReadError(f"{name}: no such file")
  if os.path.isdir(name):
    raise ImageReadError(f"{name}: is a directory, not an image file")
  try:
    with open(name, "rb") as f:
      data = f.read()
  except OSError as e:
    raise ImageReadError(f"{name}: cannot read ({e.strerror or e})") from None
  if not data:
    raise ImageReadError(f"{name}: empty file (0 bytes)")
  size = _header_size(data)
  if size is not None and max_pixels is not None and size[0] * size[1] > max_pixels:
    raise ImageReadError(f"{name}: {size[0]}x{size[1]} is {size[0] * size[1] / 1e6:.1f} MP, above "
                         f"the limit of {max_pixels / 1e6:.1f} MP")
  if data.startswith(b"\xff\xd8") and data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
    # Older libjpeg builds return the decoded part of a cut file and only warn.
    raise ImageReadError(f"{name}: truncated JPEG (no end-of-image marker after the last scan)")
  try:
    with _quiet_stderr():
      image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  except cv2.error as e:
    raise ImageReadError(f"{name}: cannot decode ({str(e).strip().splitlines()[-1]})") from None
  if image is None or image.size == 0:
    raise ImageReadError(f"{name}: not a readable image (unknown format, corrupt or truncated)")
  h, w = image.shape[:2]
  if max_pixels is not None and h * w > max_pixels:
    raise ImageReadError(f"{name}: {w}x{h} is {w * h / 1e6:.1f} MP, above the limit of "
                         f"{max_pixels / 1e6:.1f} MP")
  try:
    rgb = _to_rgb_uint8(image)
  except ValueError as e:
    raise ImageReadError(f"{name}: {e}") from None
  if data.startswith(b"\xff\xd8"):
    rgb = _apply_orientation(rgb, _jpeg_info(data)[1])
  return rgb


def validate_rgb(image, name: str = "image") -> np.ndarray:
  """Checks that ``image`` is an RGB uint8 (H, W, 3) array; returns it C-contiguous.

  Raises:
    ValueError: one line naming ``name`` and what was found instead.
  """
  if not isinstance(image, np.ndarray):
    raise ValueError(f"{name}: expected a numpy array, got {type(image).__name__}")
  if image.dtype != np.uint8:
    raise ValueError(f"{name}: expected dtype uint8, got {image.dtype} (convert with "
                     "np.clip(x, 0, 255).astype(np.uint8) for 0..255 values)")
  if image.ndim != 3 or image.shape[2] != 3:
    raise ValueError(f"{name}: expected shape (H, W, 3) RGB, got {image.shape}")
  if image.shape[0] == 0 or image.shape[1] == 0:
    raise ValueError(f"{name}: empty image of shape {image.shape}")
  return np.ascontiguousarray(image)


def find_images(path: str) -> list[tuple[str, str]]:
  """(file, name relative to the input) pairs: the file itself, or the image files under a folder
  (walked in sorted order, hidden files skipped)."""
  if os.path.isfile(path):
    return [(path, os.path.basename(path))]
  found = []
  for root, dirs, files in os.walk(path):
    dirs.sort()
    for f in sorted(files):
      if is_image_file(f) and not f.startswith("."):
        full = os.path.join(root, f)
        found.append((full, os.path.relpath(full, path)))
  return found
