"""A trained model as one object: ``jaxface.load(workdir | file.npz | "pretrained:NAME")``.

  >>> import jaxface
  >>> m = jaxface.load("runs/demo/classifier")           # or "pretrained:gender", or "alexnet.npz"
  >>> m.tasks[0].name, m.tasks[0].class_names, m.input_size
  >>> probs = m.predict(face_crops_uint8)                  # {task: (N, classes)}, jitted, batched

:class:`Trained` holds the network, its variables, the input it expects (size, colour, the
normalisation), the tasks with their class names, and the saliency setting the run trained with.
``predict`` takes uint8 crops (N, H, W, 3), already cut as the run's pipe cuts them (e.g. a 30 %
margin crop for the paper configs; ``jaxface.faces``), resizes them to the input size when they
differ, and returns per task the softmax probabilities, sigmoid attribute probabilities or maps.

A run that trained on saliency-reweighted crops (``config.saliency.mode`` "cache" or "online")
gets the same reweighting ``x * ((1 - r) + r * S)`` here, with ML-Net's map computed on the device
from the run's ML-Net (the cache stores those maps at ``cache_size`` and quantised to 8 bits, so
the two paths differ by that rounding). Workdirs are restored onto whatever devices are present,
whatever mesh saved them (restored replicated onto the present mesh; see ``load``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable

import cv2
import numpy as np

from jaxface.tasks import Task
from jaxface.weights import common as weights_common

PRETRAINED_PREFIX = "pretrained:"


@dataclasses.dataclass(frozen=True)
class Saliency:
  """The reweighting a run's inputs get: ``x * ((1 - r) + r * S)`` with ML-Net's map ``S``."""
  r: float
  mlnet: str  # the ML-Net weights (.npz) or training workdir
  mlnet_input: tuple[int, int]


@dataclasses.dataclass(frozen=True)
class Trained:
  """A model ready to predict; see the module docstring."""
  model: Any
  variables: Any
  preprocessing: weights_common.Preprocessing
  input_size: tuple[int, int]
  channels: int  # 3 (RGB) or 1 (grey: the crops are converted with OpenCV's weights)
  tasks: tuple[Task, ...]
  source: str
  saliency: Saliency | None = None
  class_values: dict[str, tuple[float, ...]] = dataclasses.field(default_factory=dict)
  step: int | None = None  # the checkpoint step of a workdir

  def task(self, name: str) -> Task:
    for t in self.tasks:
      if t.name == name:
        return t
    raise KeyError(f"{self.source} has no task {name!r}; tasks: {[t.name for t in self.tasks]}")

  def prepare(self, images_uint8: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) RGB -> uint8 (N, *input_size, channels): resized and coloured."""
    x = np.asarray(images_uint8)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"images must be uint8 (N, H, W, 3) RGB, got {x.dtype} {x.shape}")
    h, w = self.input_size
    out = np.empty((len(x), h, w, self.channels), np.uint8)
    for i, im in enumerate(x):
      if im.shape[:2] != (h, w):
        shrink = im.shape[0] > h or im.shape[1] > w
        im = cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
      out[i] = cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)[..., None] if self.channels == 1 else im
    return out

  @functools.cached_property
  def _step(self) -> Callable[[Any, Any], dict[str, Any]]:
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    from jaxface import steps  # pylint: disable=g-import-not-at-top
    p = self.preprocessing
    reweight = _saliency_reweight(self.saliency) if self.saliency else None

    def normalise(images):
      if reweight is not None:
        images = reweight(images)
      x = images[..., ::-1] if p.channel_order == "BGR" and self.channels == 3 else images
      x = x.astype(jnp.float32) * p.scale
      return (x - jnp.asarray(p.mean, jnp.float32)) / jnp.asarray(p.std, jnp.float32)

    def step(variables, images):
      out, _ = self.model.apply(variables, normalise(images))
      outputs = steps.outputs_by_task(out, self.tasks)
      result = {}
      for t in self.tasks:
        o = outputs[t.name].astype(jnp.float32)
        result[t.name] = t.predict(o)
      return result

    return jax.jit(step)

  def predict(self, images_uint8: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
    """``{task: (N, ...)}`` probabilities (or maps) of uint8 RGB crops, in fixed-size batches (the
    last one padded), so a loop over many images compiles once."""
    x = self.prepare(images_uint8)
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(x)
    bs = min(batch_size, max(n, 1))
    parts: dict[str, list[np.ndarray]] = {t.name: [] for t in self.tasks}
    for start in range(0, n, bs):
      chunk = x[start:start + bs]
      if len(chunk) < bs:
        chunk = np.concatenate([chunk, np.zeros((bs - len(chunk), *chunk.shape[1:]), np.uint8)])
      out = self._step(self.variables, chunk)
      for name, v in out.items():
        parts[name].append(np.asarray(v)[:min(bs, n - start)])
    return {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in parts.items()}

  def expected_value(self, task: str, probs: np.ndarray) -> np.ndarray | None:
    """``probs @ class_values`` (e.g. the expected age in years), None without class values."""
    values = self.class_values.get(task)
    return None if values is None else np.asarray(probs, np.float64) @ np.asarray(values)


def _saliency_reweight(s: Saliency):
  import jax  # pylint: disable=g-import-not-at-top
  from jaxface.saliency import inference, online  # pylint: disable=g-import-not-at-top
  apply_fn, variables = inference.load_mlnet(s.mlnet)
  variables = jax.device_put(variables)
  return lambda images: online.saliency_reweight_step(apply_fn, variables, images, s.r,
                                                      s.mlnet_input)


def load(source: str | os.PathLike, checkpoint: str | int | None = "best", *, config=None,
         mesh=None) -> Trained:
  """A training workdir, a converted ``.npz`` (``python -m jaxface.convert``) or
  ``"pretrained:NAME"`` (``jaxface.pretrained``) as a :class:`Trained`.

  Workdirs only: ``checkpoint`` is "best" (the best validation step; the latest when the run kept
  none), "latest" or a step number; "best" and "latest" fall back from an unreadable checkpoint to
  the newest readable one (one line on stderr each), an explicit step does not. ``config``
  replaces the run's saved ``config.json`` (``jaxface.evaluate`` passes its overridden one);
  ``mesh`` (default ``parallel.make_mesh()``: every device of every process) is where the
  variables are placed, replicated, so a run saved on one mesh restores onto any other.
  """
  src = os.fspath(source)
  if src.startswith(PRETRAINED_PREFIX):
    return _load_pretrained(src[len(PRETRAINED_PREFIX):])
  if os.path.isdir(src):
    return _load_workdir(src, checkpoint, config, mesh)
  if src.endswith(".npz") and os.path.isfile(src):
    return _load_npz(src)
  if not os.path.exists(src):
    raise FileNotFoundError(f"{src}: no such workdir or file (give a jaxface.train workdir, a "
                            "converted .npz or pretrained:NAME)")
  raise ValueError(f"{src}: not a workdir, a .npz or pretrained:NAME")


def _load_pretrained(name: str) -> Trained:
  from jaxface import pretrained  # pylint: disable=g-import-not-at-top
  loaded = pretrained.load(name)
  s = loaded.spec
  values = {s.task: tuple(s.class_values)} if s.class_values else {}
  return Trained(loaded.model, loaded.variables, s.preprocessing,
                 tuple(s.preprocessing.input_size), 1 if s.colour == "gray" else 3,
                 (Task(s.task, "class", tuple(s.classes), ordinal=s.task == "age"),),
                 PRETRAINED_PREFIX + s.name, class_values=values)


def _load_npz(path: str) -> Trained:
  from jaxface import models  # pylint: disable=g-import-not-at-top
  imported = weights_common.load(path)
  meta = imported.meta
  spec = models.spec(meta["model"])
  net = models.get(meta["model"], **meta.get("model_kwargs", {}))
  p = imported.preprocessing
  size = tuple(p.input_size or spec.input_shape[:2])
  kwargs = meta.get("model_kwargs", {})
  n = kwargs.get("num_classes", spec.num_classes)
  kind = "class" if spec.classifier and n else "output"
  tasks = (Task("output", kind, tuple(str(i) for i in range(n or 0))),)
  return Trained(net, imported.variables, p, (int(size[0]), int(size[1])),
                 int(spec.input_shape[2]), tasks, os.path.abspath(path))


def _read_json(path: str) -> dict[str, Any]:
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: not a jaxface.train workdir")
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except ValueError as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from None


def _load_workdir(workdir: str, checkpoint: str | int | None, config=None, mesh=None) -> Trained:
  import ml_collections  # pylint: disable=g-import-not-at-top
  from jaxface import parallel, steps  # pylint: disable=g-import-not-at-top
  from jaxface.models import from_config  # pylint: disable=g-import-not-at-top
  workdir = os.path.abspath(workdir)
  if config is None:
    config = ml_collections.ConfigDict(_read_json(os.path.join(workdir, "config.json")))
  if config.get("stages"):
    raise ValueError(f"{workdir} is a chain of stages: load one stage's workdir "
                     f"({', '.join(sorted(config.stages))})")
  run = _read_json(os.path.join(workdir, "run.json"))
  tasks = tuple(Task(t["name"], t["kind"], tuple(t.get("class_names", ())),
                     bool(t.get("ordinal", False))) for t in run.get("tasks", ()))
  if not tasks:
    raise ValueError(f"{workdir}/run.json lists no tasks")
  model = from_config.build_model(config, tasks)
  mesh = mesh if mesh is not None else parallel.make_mesh()
  import jax  # pylint: disable=g-import-not-at-top
  from jaxface import checkpointing  # pylint: disable=g-import-not-at-top
  # One process: the arrays as saved (any device count, and a checkpoint holding only the
  # model's variables), then replicated onto this process' devices. Several processes: each
  # restores its shards of the replicated state onto the global mesh (an untargeted restore
  # refuses a checkpoint written by another process topology).
  target = steps.abstract_state(config, model, mesh) if jax.process_count() > 1 else None
  step, variables, _ = checkpointing.restore_variables(
      workdir, checkpoint, target, best_metric=config.best_metric, best_mode=config.best_mode)
  if jax.process_count() == 1:
    variables = jax.device_put(variables, jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec()))
  name = config.model.preprocessing
  if name not in steps.PREPROCESSING:
    raise ValueError(f"{workdir}/config.json: unknown model.preprocessing {name!r}")
  saliency = None
  if config.saliency.mode in ("cache", "online") and float(config.saliency.r) > 0:
    saliency = Saliency(float(config.saliency.r), str(config.saliency.mlnet),
                        tuple(int(v) for v in config.saliency.mlnet_input))
  size = tuple(int(v) for v in config.model.input_size)
  return Trained(model, variables, steps.PREPROCESSING[name], size, 3, tasks, workdir, saliency,
                 step=step)
