"""``saliency``: reweighting the image by its saliency map (SAF-BAGE, arXiv:1803.05719; VEGAC,
2018)."""

from __future__ import annotations

import cv2
import numpy as np

from data_pipelines.pp.registry import (BadExampleError, MAP_KEYS, Op, float_arg, get_image,
                                        maps_at, register)


@register("saliency")
class Saliency(Op):
  """Saliency reweighting x' = x * ((1 - r) + r * S), rounded to uint8.

  r = 0.3 reads SAF-BAGE's "30% reweighted ratio", r = 0.7 VEGAC's "image 100 %, salient image
  70 %".

  S is the map normalised by its own maximum (per image) to [0, 1] and resized to the image if
  needed; an all-zero map gives S = 0, i.e. x * (1 - r). r = 0 leaves the image as it is, r = 1
  is the plain product. The map itself is kept.
  """

  def __init__(self, r: float):
    self.r = float_arg(self.name, "r", r, 0.0, 1.0)

  def apply(self, example, rng):
    img = get_image(example, self.name)
    maps = maps_at(example, self.name, img.shape[:2])
    if not maps:
      raise BadExampleError(example.get("id"), f"{self.name} needs one of {MAP_KEYS}")
    example["image"] = _reweight(img, next(iter(maps.values())), self.r)
    return example


def _reweight(img: np.ndarray, saliency: np.ndarray, r: float) -> np.ndarray:
  """``rint(img * ((1 - r) + r * S))`` in float32, S = saliency / its peak, as uint8.

  The map is uint8, so its weights are the float32 arithmetic on the 256 possible values, looked
  up per pixel by OpenCV, and OpenCV's uint8 x float32 product rounds half to even like
  ``np.rint``: the same numbers as computing on the whole map, several times faster.
  """
  if saliency.dtype != np.uint8:  # another map type: the same formula on the whole map
    s = saliency.astype(np.float32)
    peak = s.max()
    s = s / peak if peak > 0 else np.zeros_like(s)
    return np.clip(np.rint(img * ((1.0 - r) + r * s)[..., None]), 0, 255).astype(np.uint8)
  saliency = np.ascontiguousarray(saliency)
  peak = int(saliency.max())
  levels = np.arange(256, dtype=np.float32)
  s = levels / np.float32(peak) if peak > 0 else np.zeros_like(levels)
  lut = (1.0 - r) + r * s  # float32, as on the whole map
  weight = cv2.cvtColor(cv2.LUT(saliency, lut), cv2.COLOR_GRAY2RGB)  # (H, W, 3) float32
  img = np.ascontiguousarray(img)
  return cv2.multiply(img, weight, dtype=cv2.CV_8U).reshape(img.shape)  # saturates at 0, 255
