"""Face crops of new photos cut as a trained run's eval pipe cuts its dataset's faces.

``crop_pipe(config)`` keeps the geometric part of ``config.data.eval_pipe``: ``decode`` goes (the
photo is decoded already), so do ``detect`` (the caller's detector gives the box and landmarks),
``cached_saliency`` and ``saliency`` (``Trained.predict`` reweights on the device from the run's
ML-Net), and ``oversample10(c)`` becomes ``center_crop(c)``, its centre view: one crop per face.
``cut(pipe, image, face)`` applies it to ``{"image", "box", "landmarks"}``.

A pipe that cuts no face (no ``face_crop``, ``align`` or ``task_crop``: the run trained on faces
its dataset had cut already) or draws random numbers (an augmentation in the eval pipe) is refused
with ``CropPipeError``; a face the pipe cannot cut (``align`` without landmarks, e.g. from the haar
detector) raises ``pp.BadExampleError`` naming what is missing.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from data_pipelines import pp
from jaxface.faces.types import Face

# Ops that are not part of the crop: see the module docstring.
DROPPED_OPS = ("decode", "detect", "cached_saliency", "saliency")
# Ops that locate the face from the box or the landmarks.
FACE_OPS = ("face_crop", "align", "task_crop")


class CropPipeError(ValueError):
  """A run's eval pipe cannot be reproduced on detected faces."""


def read_config(workdir: str):
  """The run's ``config.json`` as a ConfigDict."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from jaxface import trained  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict(trained._read_json(os.path.join(workdir, "config.json")))  # pylint: disable=protected-access


def crop_pipe(config) -> pp.Pipeline:
  """The geometric part of ``config.data.eval_pipe`` (see the module docstring)."""
  from jaxface import data as data_lib  # pylint: disable=g-import-not-at-top
  pipe_str = config.data.eval_pipe
  try:
    full = data_lib.pipeline(config, pipe_str)
  except ValueError as e:
    raise CropPipeError(f"eval_pipe {pipe_str!r}: {e}") from None
  kept = []
  for op in full.ops:
    if op.name in DROPPED_OPS:
      continue
    if op.random:
      raise CropPipeError(f"eval_pipe {pipe_str!r}: op {op} is random; a prediction needs a "
                          "deterministic crop")
    kept.append(pp.lookup("center_crop")(op.crop) if op.name == "oversample10" else op)
  if not any(op.name in FACE_OPS for op in kept):
    raise CropPipeError(f"eval_pipe {pipe_str!r} cuts no face ({', '.join(FACE_OPS)}): the run "
                        "trained on faces its dataset had cut already")
  return pp.Pipeline(kept, fuse=full.fuse)


def cut(pipe: pp.Pipeline, image: np.ndarray, face: Face, trained, example_id: Any = None
        ) -> np.ndarray:
  """uint8 (*trained.input_size, 3): ``face`` of the RGB ``image`` through ``pipe``, resized by
  ``trained.prepare`` when the pipe ends at another size (so crops of many faces stack)."""
  example = {"image": image, "box": np.asarray(face.box, np.float32), "id": example_id}
  if face.landmarks is not None:
    example["landmarks"] = np.asarray(face.landmarks, np.float32)
  crop = pipe(example)["image"]
  if crop.shape[:2] != tuple(trained.input_size) and trained.channels == 3:
    crop = trained.prepare(crop[None])[0]
  return crop
