"""Helpers shared by the TF-free tfds builders: file format, skipped-example records, decoders."""

from __future__ import annotations

import os
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


def read_checked_image(path: str, what: str = "image") -> tuple[bytes | None, str | None]:
  """The encoded bytes of the image file at ``path`` and None, or None and the reason it is
  unusable (missing, empty, or bytes OpenCV cannot decode, e.g. a truncated JPEG).

  Builders call this so a bad file becomes a ``Skipped`` record rather than a crash or a record
  that fails later in every epoch.
  """
  import cv2  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  if not os.path.exists(path):
    return None, f"{what} file missing: {path}"
  with open(path, "rb") as f:
    data = f.read()
  if not data:
    return None, f"{what} file empty: {path}"
  if cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is None:
    return None, f"{what} file cannot be decoded (corrupt or truncated): {path}"
  if data[:2] == b"\xff\xd8" and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
    # OpenCV decodes a truncated JPEG with a warning and grey rows; refuse it like a corrupt one.
    return None, f"{what} file truncated (no JPEG end marker): {path}"
  return data, None


class ManualBuilderMixin:
  """Shared behaviour of the builders over manually downloaded data: ArrayRecord output and a
  ``skipped`` list of ``Skipped`` records that ``build.py`` reports.

  Use as ``class Adience(ManualBuilderMixin, tfds.core.GeneratorBasedBuilder)`` and call
  ``self.skip(split, id, reason)`` for every example left out.
  """

  def __init__(self, **kwargs):
    kwargs.setdefault("file_format", FILE_FORMAT)
    super().__init__(**kwargs)
    self.skipped: list[Skipped] = []

  def skip(self, split: str, example_id: str, reason: str) -> None:
    self.skipped.append(Skipped(split, str(example_id), reason))

  def manual_path(self, dl_manager, *parts: str) -> str:
    """``manual_dir/parts...``; raises ``FileNotFoundError`` naming the expected path."""
    path = os.path.join(os.fspath(dl_manager.manual_dir), *parts)
    if not os.path.exists(path):
      raise FileNotFoundError(
          f"{self.name}: expected {os.path.join(*parts)} in the manual directory "
          f"{dl_manager.manual_dir} (not found: {path}).\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    return path
