"""A model to explain, from a training workdir, a converted ``.npz`` or ``pretrained:NAME``.

The explainers see float32 pixels in 0..255 (RGB, or one grey channel for grey models), the
space in which occlusion fills and explanation images are defined; :attr:`Explainable.forward`
applies the model's own preprocessing on the device.

Every source is read with ``jaxface.load`` (``jaxface/trained.py``), the loader that predict,
export and evaluate share.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax.numpy as jnp

from jaxface.explain import core


@dataclasses.dataclass(frozen=True)
class Explainable:
  model: Any
  variables: Any
  channel_order: str  # "RGB" or "BGR": what the network expects.
  scale: float
  mean: tuple[float, ...]
  std: tuple[float, ...]
  input_size: tuple[int, int]
  grey: bool  # The network takes one grey channel.
  classes: tuple[str, ...] | None
  source: str
  output: str | None = None  # Task explained when the model has several outputs.

  def preprocess(self, pixels_BHWC):
    x = pixels_BHWC[..., ::-1] if self.channel_order == "BGR" and not self.grey else pixels_BHWC
    x = x.astype(jnp.float32) * self.scale
    return (x - jnp.asarray(self.mean, jnp.float32)) / jnp.asarray(self.std, jnp.float32)

  @property
  def forward(self) -> core.Forward:
    return core.bind(self.model, output=self.output, preprocess=self.preprocess)


def _from_preprocessing(p, **kw) -> dict[str, Any]:
  return dict(channel_order=p.channel_order, scale=float(p.scale), mean=tuple(p.mean),
              std=tuple(p.std), **kw)


def load(model: str | None = None, workdir: str | None = None, checkpoint: str | None = None,
         output: str | None = None) -> Explainable:
  """Exactly one of ``model`` ("pretrained:NAME" or a ``.npz`` path) and ``workdir``, read with
  ``jaxface.load``. A run trained on saliency-reweighted crops is explained on the crop as the
  classifier sees it without the reweighting (the reweighting rounds to uint8, which has no
  input gradient)."""
  if (model is None) == (workdir is None):
    raise ValueError("give exactly one of --model and --workdir")
  from jaxface import trained  # pylint: disable=g-import-not-at-top
  if model is not None and not (model.startswith(trained.PRETRAINED_PREFIX)
                                or model.endswith(".npz")):
    raise ValueError(f"--model {model!r}: expected pretrained:NAME or a converted .npz file")
  source = workdir if workdir is not None else model
  if workdir is not None and not os.path.isfile(os.path.join(workdir, "config.json")):
    raise ValueError(f"--workdir {workdir}: no config.json (not a jaxface.train workdir)")
  try:
    t = trained.load(source, checkpoint=checkpoint or "latest")
  except KeyError as e:
    raise ValueError(str(e.args[0])) from None
  classes = tuple(t.tasks[0].class_names) if len(t.tasks) == 1 and t.tasks[0].class_names else None
  if model is not None and not model.startswith(trained.PRETRAINED_PREFIX):
    classes = None  # a converted file's classes are only numbers
  return Explainable(t.model, t.variables, input_size=tuple(t.input_size), grey=t.channels == 1,
                     classes=classes, source=model if model and model.startswith(
                         trained.PRETRAINED_PREFIX) else t.source, output=output,
                     **_from_preprocessing(t.preprocessing))
