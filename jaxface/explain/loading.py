"""A model to explain, from a training workdir, a converted ``.npz`` or ``pretrained:NAME``.

The explainers see float32 pixels in 0..255 (RGB, or one grey channel for grey models), the
space in which occlusion fills and explanation images are defined; :attr:`Explainable.forward`
applies the model's own preprocessing on the device.

``jaxface.load`` (a single loader for every predicting entry point) does not exist yet; this
module restores a workdir the way ``jaxface.evaluate`` does (``checkpointing`` plus the model
name, kwargs and head written in the checkpoint's meta, and ``config.json`` for the
preprocessing and input size) and reads shipped models through ``jaxface.pretrained``.
"""

from __future__ import annotations

import dataclasses
import json
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
  """Exactly one of ``model`` ("pretrained:NAME" or a ``.npz`` path) and ``workdir``."""
  if (model is None) == (workdir is None):
    raise ValueError("give exactly one of --model and --workdir")
  from jaxface import models  # pylint: disable=g-import-not-at-top
  if workdir is not None:
    return _load_workdir(workdir, checkpoint, output)
  if model.startswith("pretrained:"):
    from jaxface import pretrained  # pylint: disable=g-import-not-at-top
    try:
      loaded = pretrained.load(model)
    except KeyError as e:
      raise ValueError(str(e.args[0])) from None
    s = loaded.spec
    return Explainable(loaded.model, loaded.variables, input_size=tuple(s.preprocessing.input_size),
                       grey=s.colour == "gray", classes=tuple(s.classes), source=model,
                       output=output, **_from_preprocessing(s.preprocessing))
  if not model.endswith(".npz"):
    raise ValueError(f"--model {model!r}: expected pretrained:NAME or a converted .npz file")
  from jaxface.weights import common  # pylint: disable=g-import-not-at-top
  imported = common.load(model)
  meta = imported.meta
  net = models.get(meta["model"], **meta.get("model_kwargs", {}))
  p = imported.preprocessing
  spec = models.spec(meta["model"])
  size = tuple(p.input_size or spec.input_shape[:2])
  return Explainable(net, imported.variables, input_size=size, grey=spec.input_shape[2] == 1,
                     classes=None, source=model, output=output, **_from_preprocessing(p))


def _load_workdir(workdir: str, checkpoint: str | None, output: str | None) -> Explainable:
  from jaxface import checkpointing  # pylint: disable=g-import-not-at-top
  from jaxface import models  # pylint: disable=g-import-not-at-top
  from jaxface import steps as steps_lib  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise ValueError(f"--workdir {workdir}: no config.json (not a jaxface.train workdir)")
  with open(path, encoding="utf-8") as f:
    config = json.load(f)
  variables, _, _ = checkpointing.load_model_variables(workdir, checkpoint)
  ckpt = checkpointing.Checkpointer(workdir, read_only=True)
  try:
    meta = ckpt.restore_meta(checkpointing.resolve_step(ckpt, checkpoint)).get("model", {})
  finally:
    ckpt.close()
  kwargs = dict(meta.get("kwargs", {}))
  if "dtype" in kwargs:
    kwargs["dtype"] = steps_lib.DTYPES[kwargs["dtype"]]
  net = models.get(meta["name"], head=meta.get("head") or None,
                   head_kwargs=meta.get("head_kwargs") or {}, **kwargs)
  mcfg = config.get("model", {})
  name = mcfg.get("preprocessing", "imagenet")
  if name not in steps_lib.PREPROCESSING:
    raise ValueError(f"{path}: unknown model.preprocessing {name!r}")
  size = tuple(mcfg.get("input_size") or models.spec(meta["name"]).input_shape[:2])
  return Explainable(net, variables, input_size=(int(size[0]), int(size[1])), grey=False,
                     classes=None, source=os.path.abspath(workdir), output=output,
                     **_from_preprocessing(steps_lib.PREPROCESSING[name]))
