"""Image ops that do not move pixels: ``decode`` (bytes to uint8 arrays) and ``color_jitter``."""

from __future__ import annotations

import cv2
import numpy as np

from data_pipelines.pp.registry import (BadExampleError, MAP_KEYS, Op, float_arg, get_image,
                                        maps_at, register)


_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)


@register("decode")
class Decode(Op):
  """Decodes "image" bytes to RGB uint8 (H, W, 3) and map bytes to gray uint8 (H, W).

  Arrays pass through (a gray image gets three channels). A map at another size than the image is
  resized to it (it is taken to cover the same field of view). Corrupt or empty bytes raise
  ``BadExampleError``.
  """

  def apply(self, example, rng):
    eid = example.get("id")
    img = example.get("image")
    if isinstance(img, (bytes, bytearray, memoryview, np.bytes_)):
      buf = np.frombuffer(img, np.uint8)
      if _IMREAD_RGB is not None:  # OpenCV >= 4.10: the decoder writes RGB, no extra pass
        img = cv2.imdecode(buf, _IMREAD_RGB)
      else:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        img = None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
      if img is None:
        raise BadExampleError(eid, "image bytes cannot be decoded")
    elif isinstance(img, np.ndarray):
      if img.dtype != np.uint8:
        raise BadExampleError(eid, f"image array must be uint8, got {img.dtype}")
      if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
        img = np.repeat(img.reshape(img.shape[0], img.shape[1], 1), 3, axis=2)
      if img.ndim != 3 or img.shape[2] != 3:
        raise BadExampleError(eid, f"image array must be (H, W, 3), got {img.shape}")
    else:
      raise BadExampleError(eid, f"no image (got {type(img).__name__})")
    example["image"] = img
    example.setdefault("decoded_shape", img.shape)  # for the loader's size check's message
    for key in MAP_KEYS:
      m = example.get(key)
      if isinstance(m, (bytes, bytearray, memoryview, np.bytes_)):
        m = cv2.imdecode(np.frombuffer(m, np.uint8), cv2.IMREAD_GRAYSCALE)
        if m is None:
          raise BadExampleError(eid, f"{key} bytes cannot be decoded")
        example[key] = m
      elif isinstance(m, np.ndarray) and m.dtype != np.uint8:
        raise BadExampleError(eid, f"{key} array must be uint8, got {m.dtype}")
    example.update(maps_at(example, self.name, img.shape[:2]))
    return example


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
