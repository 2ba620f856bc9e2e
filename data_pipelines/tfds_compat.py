"""Helpers shared by the TF-free tfds builders: file format, skipped-example records, decoders."""

from __future__ import annotations

from typing import Any, NamedTuple

import tensorflow_datasets as tfds

# The default tfrecord writer needs TensorFlow; ArrayRecord does not (and gives random access).
FILE_FORMAT = "array_record"


class Skipped(NamedTuple):
  """An example a builder left out while generating, and why (corrupt file, missing label...)."""
  split: str
  id: str
  reason: str


def skip_image_decoding(features: tfds.features.FeaturesDict) -> dict[str, Any]:
  """Decoders that return the encoded bytes of every top-level Image feature (decoded later with
  OpenCV); for reading labels fast or decoding images ourselves."""
  return {k: tfds.decode.SkipDecoding() for k, f in features.items()
          if isinstance(f, tfds.features.Image)}
