"""Image ops that do not move pixels: ``decode`` (bytes to uint8 arrays) and ``color_jitter``."""

from __future__ import annotations

import struct

import cv2
import numpy as np

from data_pipelines.pp.registry import (BadExampleError, MAP_KEYS, Op, float_arg, get_image,
                                        maps_at, register)


_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)
# libjpeg's DCT-domain scalings that OpenCV exposes: denominator -> the IMREAD_REDUCED_COLOR flag.
REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                 8: cv2.IMREAD_REDUCED_COLOR_8}
_IS_BYTES = (bytes, bytearray, memoryview, np.bytes_)


def jpeg_size(data) -> tuple[int, int] | None:
  """(height, width) from a baseline/progressive JPEG's frame header, or None when ``data`` is not
  a JPEG OpenCV would decode as stored: not a JPEG, an unreadable header, or an Exif orientation
  other than 1 (OpenCV turns such a photo on decoding, so its frame is not the header's).

  Reading the header costs microseconds; it lets the geometry be planned before decoding.
  """
  b = bytes(data[:65536]) if not isinstance(data, bytes) else data
  if b[:2] != b"\xff\xd8":
    return None
  i, n = 2, len(b)
  size = None
  while i + 4 <= n:
    if b[i] != 0xFF:
      return None
    marker = b[i + 1]
    if marker == 0xFF:  # fill byte
      i += 1
      continue
    if marker in (0x01,) or 0xD0 <= marker <= 0xD7:  # markers without a length
      i += 2
      continue
    length = (b[i + 2] << 8) | b[i + 3]
    if length < 2:
      return None
    seg = b[i + 4:i + 2 + length]
    if marker == 0xE1 and seg[:6] == b"Exif\x00\x00" and _exif_orientation(seg[6:]) not in (
        None, 1):
      return None
    # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC): precision, height, width, ...
    if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
      if len(seg) < 5:
        return None
      h, w = struct.unpack(">HH", seg[1:5])
      size = (h, w) if h > 0 and w > 0 else None
      break
    if marker == 0xDA:  # start of scan before any frame header: not a JPEG we can read
      return None
    i += 2 + length
  return size


def _exif_orientation(tiff: bytes) -> int | None:
  """The Orientation tag (0x0112) of IFD0 in an Exif TIFF block; None when absent or unreadable
  (OpenCV then keeps the stored orientation too)."""
  if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
    return None
  e = "<" if tiff[:2] == b"II" else ">"
  (ifd,) = struct.unpack(e + "I", tiff[4:8])
  if ifd + 2 > len(tiff):
    return None
  (count,) = struct.unpack(e + "H", tiff[ifd:ifd + 2])
  for k in range(count):
    at = ifd + 2 + 12 * k
    if at + 12 > len(tiff):
      return None
    tag, kind = struct.unpack(e + "HH", tiff[at:at + 4])
    if tag == 0x0112:
      return struct.unpack(e + "H", tiff[at + 8:at + 10])[0] if kind == 3 else None
  return None


def _imdecode_rgb(buf: np.ndarray, scale: int = 1) -> np.ndarray | None:
  """RGB uint8 from encoded bytes, at 1/``scale`` (libjpeg's scaled IDCT) when ``scale`` > 1."""
  flag = cv2.IMREAD_COLOR if scale == 1 else REDUCED_FLAGS[scale]
  if _IMREAD_RGB is not None:  # OpenCV >= 4.10: the decoder writes RGB, no extra pass
    # IMREAD_REDUCED_COLOR_k includes IMREAD_COLOR (BGR), which excludes IMREAD_COLOR_RGB.
    return cv2.imdecode(buf, (flag & ~cv2.IMREAD_COLOR) | _IMREAD_RGB)
  img = cv2.imdecode(buf, flag)
  return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@register("decode")
class Decode(Op):
  """Decodes "image" bytes to RGB uint8 (H, W, 3) and map bytes to gray uint8 (H, W).

  Arrays pass through (a gray image gets three channels). A map at another size than the image is
  resized to it (it is taken to cover the same field of view). Corrupt or empty bytes raise
  ``BadExampleError``.

  ``reduced=True`` (with fused geometry, directly before the geometric ops): when those ops shrink
  a JPEG by 2x or more along both axes, libjpeg decodes it at 1/2, 1/4 or 1/8 scale in the DCT
  domain (OpenCV's IMREAD_REDUCED_COLOR_k) instead of decoding every pixel and averaging blocks
  of them away; the warp reads the smaller image through the same affine, rescaled, so the box,
  the landmarks and where they land in the output are unchanged. The pixels are not those of the
  full decode (the scaled IDCT is not a block mean; see README, "Data loader" for the measured
  difference), so it is off by default; other formats, and crops that shrink less, are decoded in
  full as with ``reduced=False``.
  """

  def __init__(self, *, reduced: bool = False):  # keyword only: decode(reduced=True)
    if not isinstance(reduced, bool):
      raise ValueError(f"{self.name}: reduced must be True or False, got {reduced!r}")
    self.reduced = reduced

  def params(self):
    # Plain "decode" stays "decode": saliency caches and runs key on the canonical pipe string.
    return {"reduced": True} if self.reduced else {}

  def apply(self, example, rng):
    eid = example.get("id")
    img = example.get("image")
    if isinstance(img, _IS_BYTES):
      img = _imdecode_rgb(np.frombuffer(img, np.uint8))
      if img is None:
        raise BadExampleError(eid, "image bytes cannot be decoded")
    else:
      img = _check_array(eid, img)
    example["image"] = img
    example.setdefault("decoded_shape", img.shape)  # for the loader's size check's message
    self._decode_maps(example, img.shape[:2])
    return example

  def defer(self, example) -> tuple[int, int] | None:
    """For a fused run after this op: when the image is JPEG bytes whose size the header gives,
    decodes only the maps (at that size, as ``apply`` would) and returns the image's (h, w),
    leaving its bytes for ``finish``; otherwise decodes everything as ``apply`` and returns None."""
    img = example.get("image")
    hw = jpeg_size(img) if isinstance(img, _IS_BYTES) else None
    if hw is None:
      self.apply(example, None)
      return None
    example.setdefault("decoded_shape", hw + (3,))
    self._decode_maps(example, hw)
    return hw

  def finish(self, example, hw: tuple[int, int], scale: int) -> np.ndarray:
    """The deferred image decoded at 1/``scale``; its size is checked against the header's
    (libjpeg rounds up: ceil(h / scale) x ceil(w / scale))."""
    eid = example.get("id")
    img = _imdecode_rgb(np.frombuffer(example["image"], np.uint8), scale)
    if img is None:
      raise BadExampleError(eid, "image bytes cannot be decoded")
    want = (-(-hw[0] // scale), -(-hw[1] // scale), 3)
    if img.shape != want:
      raise BadExampleError(eid, f"JPEG header says {hw[1]}x{hw[0]} but decoding at 1/{scale} "
                            f"gave {img.shape[1]}x{img.shape[0]}")
    return img

  def _decode_maps(self, example, hw: tuple[int, int]) -> None:
    eid = example.get("id")
    for key in MAP_KEYS:
      m = example.get(key)
      if isinstance(m, _IS_BYTES):
        m = cv2.imdecode(np.frombuffer(m, np.uint8), cv2.IMREAD_GRAYSCALE)
        if m is None:
          raise BadExampleError(eid, f"{key} bytes cannot be decoded")
        example[key] = m
      elif isinstance(m, np.ndarray) and m.dtype != np.uint8:
        raise BadExampleError(eid, f"{key} array must be uint8, got {m.dtype}")
    example.update(maps_at(example, self.name, hw))


def _check_array(eid, img) -> np.ndarray:
  if isinstance(img, np.ndarray):
    if img.dtype != np.uint8:
      raise BadExampleError(eid, f"image array must be uint8, got {img.dtype}")
    if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
      img = np.repeat(img.reshape(img.shape[0], img.shape[1], 1), 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
      raise BadExampleError(eid, f"image array must be (H, W, 3), got {img.shape}")
    return img
  raise BadExampleError(eid, f"no image (got {type(img).__name__})")


@register("color_jitter")
class ColorJitter(Op):
  """Brightness, then contrast, then saturation, each by a factor uniform in
  [max(0, 1 - v), 1 + v] (torchvision's ranges, in a fixed order). Maps are untouched."""
  random = True

  def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0):
    self.brightness = float_arg(self.name, "brightness", brightness)
    self.contrast = float_arg(self.name, "contrast", contrast)
    self.saturation = float_arg(self.name, "saturation", saturation)

  def apply(self, example, rng):
    img = get_image(example, self.name)
    # Draw all three factors always, so the stream of draws does not depend on the values.
    fb, fc, fs = (rng.uniform(max(0.0, 1 - v), 1 + v)
                  for v in (self.brightness, self.contrast, self.saturation))
    x = img.astype(np.float32)
    gray = lambda a: a @ np.array([0.299, 0.587, 0.114], np.float32)
    x = np.clip(x * fb, 0, 255)
    mean = gray(x).mean()
    x = np.clip((x - mean) * fc + mean, 0, 255)
    g = gray(x)[..., None]
    x = np.clip((x - g) * fs + g, 0, 255)
    example["image"] = np.rint(x).astype(np.uint8)
    return example
