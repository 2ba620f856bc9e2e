"""tfds builder ``synthetic_faces``: the procedural face scenes of ``synthetic.py`` as ArrayRecord.

Nothing is downloaded and no manual data is needed: example ``i`` is ``generate_example(i)`` for
the config's seed and image size. The splits take consecutive, disjoint index ranges (train first,
then validation, then test), so no example appears in two splits, and the index is the example
key and the number in its ``id`` (``synthetic/000123``).

Features (all TF-free):
  image: Image, the JPEG bytes of ``encode_example`` (quality 95, RGB) stored as they are;
    read with ``decoders={"image": tfds.decode.SkipDecoding()}`` to get the bytes back.
  saliency: Image (H, W, 1), the PNG bytes of the fixation map, stored as they are.
  box: float32 (4,) [x1, y1, x2, y2] in pixels.
  landmarks: float32 (5, 2) (x, y) in pixels: eyes, nose tip, mouth corners.
  age: ClassLabel, the 8 Adience groups; gender: ClassLabel ["m", "f"];
  expression: ClassLabel, AffectNet's first 7 expressions in AffectNet order.
  id: Text.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.datasets import synthetic
from data_pipelines.datasets import tfds_compat

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(eq=False)
class SyntheticFacesConfig(tfds.core.BuilderConfig):
  """Split sizes, seed and scene size of a ``synthetic_faces`` config."""
  train_size: int = 2000
  validation_size: int = 500
  test_size: int = 500
  seed: int = 0
  image_size: tuple[int, int] = (256, 256)

  def split_ranges(self) -> dict[str, range]:
    """Disjoint example-index ranges of the splits, in ``SPLITS`` order."""
    ranges, start = {}, 0
    for split, n in zip(SPLITS, (self.train_size, self.validation_size, self.test_size)):
      ranges[split] = range(start, start + n)
      start += n
    return ranges

  def synthetic_config(self) -> synthetic.SyntheticConfig:
    return synthetic.SyntheticConfig(image_size=tuple(self.image_size), seed=self.seed)


class SyntheticFaces(tfds.core.GeneratorBasedBuilder):
  """Procedural face scenes with age, gender and expression labels, box, landmarks and a fixation
  map."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release.",
      "1.1.0": "Stronger expression cues (intensity 0.8-1.25, half the spread around the prototypes, "
               "larger mouth curvature / opening and eyebrow moves): a small CNN learnt "
               "expression barely above chance on 1.0.0.",
  }
  BUILDER_CONFIGS = [
      SyntheticFacesConfig(name="default", description="2000 / 500 / 500 scenes of 256 x 256."),
      SyntheticFacesConfig(name="small", train_size=200, validation_size=50, test_size=50,
                           description="200 / 50 / 50 scenes of 256 x 256, for tests."),
  ]
  DEFAULT_CONFIG_NAME = "default"

  def __init__(self, **kwargs):
    kwargs.setdefault("file_format", tfds_compat.FILE_FORMAT)
    super().__init__(**kwargs)
    self.skipped: list[tfds_compat.Skipped] = []  # filled while generating (none here)

  def _info(self) -> tfds.core.DatasetInfo:
    h, w = self.builder_config.image_size
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(h, w, 3), encoding_format="jpeg"),
            "saliency": tfds.features.Image(shape=(h, w, 1), encoding_format="png"),
            "box": tfds.features.Tensor(shape=(4,), dtype=np.float32),
            "landmarks": tfds.features.Tensor(shape=(5, 2), dtype=np.float32),
            "age": tfds.features.ClassLabel(names=list(synthetic.AGE_GROUPS)),
            "gender": tfds.features.ClassLabel(names=["m", "f"]),
            "expression": tfds.features.ClassLabel(names=list(synthetic.EXPRESSIONS)),
            "id": tfds.features.Text(),
        }),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # generated, nothing to download
    return {split: self._generate_examples(split, indices)
            for split, indices in self.builder_config.split_ranges().items()}

  def _generate_examples(self, split: str, indices: range) -> Iterator[tuple[int, dict[str, Any]]]:
    del split  # a later builder records skipped examples per split
    cfg = self.builder_config.synthetic_config()
    for i in indices:
      ex = synthetic.encode_example(synthetic.generate_example(i, cfg))
      yield i, {
          "image": ex["image"],
          "saliency": ex["fixation"],
          "box": ex["box"],
          "landmarks": ex["landmarks"],
          "age": ex["age"],
          "gender": ex["gender"],
          "expression": ex["expression"],
          "id": ex["id"],
      }
