"""``Pipeline``: a pipe string's ops applied in order, op by op or with fused geometry."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from data_pipelines.pp.geometry import check_deferred_decodes, fused_steps, run_fused
from data_pipelines.pp.registry import Example, MAP_KEYS, Op, parse


class Pipeline:
  """Ops applied in order; ``str`` gives the canonical pipe string.

  With ``fuse=True`` each run of two or more consecutive geometric ops (crops, resize, flip,
  rotate; ``cached_saliency`` may sit inside a run) resamples the image and each map once, through
  the composed affine (``fused_warp``), instead of once per op. The ops draw the same random
  numbers and move the box and landmarks exactly as op by op; the pixels differ by interpolation
  rounding (one bilinear sample instead of a chain) and, where a rotation brings in pixels from
  outside the crop, by showing the photo there instead of the crop's replicated edge.
  ``decode(reduced=True)`` (fused only) joins the run after it and decodes a JPEG at the reduced
  DCT scale that run's shrink allows.
  """

  def __init__(self, pipe: str | Sequence[Op], fuse: bool = False):
    self.ops = parse(pipe) if isinstance(pipe, str) else list(pipe)
    if not isinstance(fuse, bool):
      raise ValueError(f"fuse must be True or False, got {fuse!r}")
    self.fuse = fuse
    check_deferred_decodes(self.ops, fuse)
    self._steps = fused_steps(self.ops) if fuse else [[op] for op in self.ops]

  @property
  def random(self) -> bool:
    return any(op.random for op in self.ops)

  def __call__(self, example: Example, rng: np.random.Generator | None = None) -> Example:
    for step in self._steps:
      example = step[0](example, rng) if len(step) == 1 else run_fused(step, example, rng)
    _check_output(example)
    return example

  def __str__(self) -> str:
    return "|".join(str(op) for op in self.ops)

  def __repr__(self) -> str:
    return f"Pipeline({str(self)!r}{', fuse=True' if self.fuse else ''})"

  def __eq__(self, other) -> bool:
    return isinstance(other, Pipeline) and (str(self), self.fuse) == (str(other), other.fuse)


def _check_output(example: Example) -> None:
  """The final check: the loader only ever emits uint8 images and maps."""
  img = example.get("image")
  if not isinstance(img, np.ndarray):
    raise ValueError(f"example {example.get('id')!r}: 'image' is not decoded "
                     "(start the pipe with decode)")
  if img.dtype != np.uint8 or img.ndim not in (3, 4) or img.shape[-1] != 3:
    raise ValueError(f"example {example.get('id')!r}: 'image' must be uint8 (H, W, 3) or "
                     f"(N, H, W, 3), got {img.dtype} {img.shape}")
  for key in MAP_KEYS:
    if key in example and (not isinstance(example[key], np.ndarray)
                           or example[key].dtype != np.uint8):
      raise ValueError(f"example {example.get('id')!r}: {key!r} must be a decoded uint8 map")
