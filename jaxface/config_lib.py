"""Helpers shared by the configs: the base schema, typed config arguments, periods, validation.

A config file defines ``get_config(arg: str | None) -> ConfigDict``. ``arg`` is the text after the
colon in ``--config configs/vegac.py:task=gender,smoke``; ``parse_arg`` turns it into typed values
(``smoke`` alone means ``smoke=True``). Every config starts from ``base_config()`` so all runs share
one schema, and ``finalize`` locks it: an unknown field given on the command line
(``--config.optim.lrr=0.1``) is an error that names it. ``finalize`` first fills
``model.kwargs`` with every field the model's constructor takes (at its default), so
``--config.model.kwargs.width=0.5`` can shrink any model from the command line; ``validate``
refuses a key the model does not take.

Periods use one vocabulary: ``<name>_steps``, ``<name>_epochs`` or ``<name>_examples`` (at most
one of them non-zero), resolved by ``period_steps``.
"""

from __future__ import annotations

import importlib.util
import os
import re
from typing import Any

import ml_collections

from jaxface import errors

ConfigDict = ml_collections.ConfigDict

PERIODS = ("train", "eval_every", "checkpoint_every", "log_every")
TASK_KINDS = ("class", "attributes", "saliency")
SALIENCY_MODES = ("none", "cache", "online", "dataset")
SALIENCY_LOSSES = ("mlnet", "kld")  # config.task.saliency_loss (jaxface.tasks.saliency)
# config.init_from_expect: rules naming the arrays init_from must load (jaxface.init_from);
# anything else in the tuple is a regular expression.
INIT_FROM_KEYWORDS = ("backbone", "all", "any", "none")
INIT_FROM_ALONE = ("any", "none")  # only as the whole tuple
INIT_FROM_DEFAULT = ("backbone",)


ConfigError = errors.ConfigError  # a config value that cannot work; the message names the field


def base_config() -> ConfigDict:
  """Every field a training or evaluation run reads, with neutral defaults."""
  c = ConfigDict()
  c.name = ""
  c.seed = 0
  c.smoke = False

  c.data = ConfigDict(dict(
      name="synthetic_faces", config="default", data_dir="", manual_dir="",
      build=True,  # prepare the dataset if it is not (needs manual_dir for real datasets)
      train_split="train", eval_split="validation", test_split="test",
      train_pipe="decode|face_crop(0.3)|resize(224)",
      eval_pipe="decode|face_crop(0.3)|resize(224)",
      labels=("age",),  # record keys the loader keeps as labels
      read_threads=2, worker_count=0,
      # Consecutive geometric ops resample once (data_pipelines.pp.Pipeline(fuse=True)): same
      # geometry and random draws as op by op, one interpolation instead of a chain, ~1.5x faster.
      fuse_geometry=True,
      # Several datasets in one run (data.name = "mixture", see jaxface.mixture): classes gives
      # each label key's class names in order, datasets maps an entry name to {name, config,
      # manual_dir, splits: {split name: split string}, labels: {key: {class: class}}, rate}.
      mixture=ConfigDict(dict(classes=ConfigDict({}, type_safe=False),
                              datasets=ConfigDict({}, type_safe=False))),
  ))
  c.model = ConfigDict(dict(
      name="alexnet",
      # constructor fields of the model; finalize adds the ones a config leaves out, at their
      # defaults, so each can be overridden on the command line (validate refuses others)
      kwargs=ConfigDict(dict(dropout_rate=0.5), type_safe=False),
      head="", head_kwargs=ConfigDict({}, type_safe=False),
      dtype="float32",  # computation dtype; parameters stay float32
      input_size=(224, 224),
      # input convention of the weights: imagenet (torchvision: RGB, /255, ImageNet mean/std) |
      # caffe_bgr (Caffe/Keras ImageNet BGR minus the mean) | vggface | unit ([-1, 1]); the table
      # is jaxface.steps.PREPROCESSING
      preprocessing="imagenet",
  ))
  c.task = ConfigDict(dict(
      kind="class",
      class_weights="none",  # none | inverse | balanced (from the training split's labels)
      label_smoothing=0.0,
      loss_weights=ConfigDict({}, type_safe=False),  # task name -> weight (multi-task)
      ordinal=("age",),  # label keys whose classes are ordered (one-off accuracy, AABD)
      # saliency kind: "mlnet" (the reference, each map divided by its maximum) or "kld"
      # (KL divergence of the sum-normalised maps; see jaxface.tasks.saliency.kld_loss)
      saliency_loss="mlnet",
  ))
  c.saliency = ConfigDict(dict(
      mode="none", r=0.3,
      crop_pipe="decode|face_crop(0.3)|resize(224)",
      mlnet="",  # imported .npz or an ML-Net training workdir ("stage:NAME" in a chain)
      mlnet_input=(224, 224), cache_size=(64, 64), cache_dir="", batch_size=32,
      blur_sigma=0.0,  # Gaussian blur of the predicted maps (the reference: none)
  ))
  c.optim = ConfigDict(dict(
      name="sgd", lr=0.001, momentum=0.9, nesterov=False, b1=0.9, b2=0.999, eps=1e-8,
      weight_decay=0.0, weight_decay_mask="kernels",
      schedule="constant", boundaries_epochs=(), boundaries_steps=(), decay_factor=0.1,
      power=1.0, end_lr=0.0, decay=0.0, warmup_steps=0,
      freeze=(), trainable=(), lr_mult=(), grad_clip_norm=0.0,
  ))
  c.batch_size = 128  # global effective batch (all devices, all processes)
  c.accum_steps = 1  # gradient accumulation: the batch is split into this many micro-batches
  c.batch_norm = "global"  # statistics over the global batch (the only mode; recorded in the run)
  c.train_steps = 0
  c.train_epochs = 0.0
  c.train_examples = 0
  c.eval_every_steps = 0
  c.eval_every_epochs = 0.0
  c.eval_every_examples = 0
  c.checkpoint_every_steps = 0
  c.checkpoint_every_epochs = 0.0
  c.checkpoint_every_examples = 0
  c.log_every_steps = 10
  c.log_every_epochs = 0.0
  c.log_every_examples = 0
  c.keep_checkpoints = 2
  c.best_metric = ""  # e.g. "val/age/accuracy"
  c.best_mode = "max"
  c.init_from = ""  # imported .npz weights or another run's workdir
  # What init_from must load, else the run fails at start (jaxface.init_from): "backbone" (every
  # backbone array; head / classifier arrays may be new), "all", "any", "none" or regexes of
  # array paths ("^fc7/"), the union of the rules given
  c.init_from_expect = INIT_FROM_DEFAULT
  c.resume = ""  # another run's workdir to continue from (after this workdir's own checkpoint)
  c.eval = ConfigDict(dict(batch_size=0, checkpoint="best", split="test", max_batches=0,
                           num_sample_images=16,
                           after_train=True,  # evaluate the test split when training ends
                           # {task: minimum test accuracy}: the run fails below it (the demo
                           # checks the accuracy its README states)
                           expect=ConfigDict({}, type_safe=False)))
  c.stages = ConfigDict({}, type_safe=False)  # a chain of runs (configs/demo.py)
  c.stage_order = ()  # the order the stages run in (ConfigDict iterates its keys sorted)
  return c


def parse_arg(arg: str | None, **defaults: Any) -> ConfigDict:
  """Typed ``key=value,flag`` arguments; each key must be in ``defaults`` (its type is kept)."""
  out = dict(defaults)
  out.setdefault("smoke", False)
  if arg:
    for item in arg.split(","):
      item = item.strip()
      if not item:
        continue
      key, sep, value = item.partition("=")
      key = key.strip()
      if key not in out:
        raise ConfigError(f"unknown config argument {key!r}; known: {', '.join(sorted(out))}")
      if not sep:
        if not isinstance(out[key], bool):
          raise ConfigError(f"config argument {key!r} needs a value ({key}=...)")
        out[key] = True
        continue
      out[key] = _typed(key, value.strip(), out[key])
  return ConfigDict(out)


def _typed(key: str, value: str, default: Any) -> Any:
  try:
    if isinstance(default, bool):
      if value.lower() in ("1", "true", "yes"):
        return True
      if value.lower() in ("0", "false", "no"):
        return False
      raise ValueError(value)
    if isinstance(default, int):
      return int(value)
    if isinstance(default, float):
      return float(value)
  except ValueError:
    raise ConfigError(
        f"config argument {key}={value!r}: expected {type(default).__name__}") from None
  return value


# Model fields the trainer sets itself (from the tasks, config.model.dtype and the head), so a
# config never lists them in model.kwargs.
_TRAINER_MODEL_FIELDS = ("num_classes", "dtype", "features_only")


def model_fields(name: str) -> dict[str, Any] | None:
  """``{field: default}`` a config may set in ``model.kwargs`` for the registered model ``name``.

  The constructor's dataclass fields with plain defaults (numbers, strings, booleans, tuples),
  less those the trainer sets and those the registered builder fixes itself (e.g. ResNet-18's
  ``stage_sizes``). None when ``name`` is not a registered model (validation names it later).
  """
  import dataclasses  # pylint: disable=g-import-not-at-top
  from jaxface.models import registry  # pylint: disable=g-import-not-at-top
  try:
    builder = registry.spec(name).builder
  except KeyError:
    return None
  module = builder()
  out = {}
  for f in dataclasses.fields(module):
    if f.name in ("parent", "name") + _TRAINER_MODEL_FIELDS:
      continue
    value = getattr(module, f.name)
    if not isinstance(value, (bool, int, float, str, tuple)):
      continue
    try:
      builder(**{f.name: value})
    except TypeError:  # the builder passes this field itself
      continue
    out[f.name] = value
  return out


def _open_model_kwargs(config: ConfigDict) -> None:
  """Adds each of the model's fields missing from ``model.kwargs``, at its default."""
  fields = model_fields(str(config.model.name)) if config.get("model") else None
  for key, value in (fields or {}).items():
    if key not in config.model.kwargs:
      config.model.kwargs[key] = value


def finalize(config: ConfigDict) -> ConfigDict:
  """Opens ``model.kwargs`` to the model's fields (the config's and each stage's) and locks.

  After it, an unknown field anywhere is an error naming it, and every field of the model can be
  overridden (``--config.model.kwargs.width=0.5``); the defaults added are the constructor's
  own, so the model built is the same.
  """
  for stage in (config.stages.values() if config.get("stages") else ()):
    _open_model_kwargs(stage)
  if not config.get("stages"):
    _open_model_kwargs(config)
  config.lock()
  return config


def load(spec: str) -> ConfigDict:
  """Imports ``path/to/config.py[:arg]`` and returns ``get_config(arg)`` (outside absl flags)."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file not found: {path}")
  module_spec = importlib.util.spec_from_file_location(
      f"jaxface_config_{abs(hash(os.path.abspath(path)))}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"{path} defines no get_config()")
  return module.get_config(arg or None)


def period_steps(config: ConfigDict, name: str, steps_per_epoch: int) -> int:
  """``<name>_steps`` | ``<name>_epochs`` | ``<name>_examples`` as a number of steps (0 = never).

  Examples are counted at the global effective batch (``config.batch_size``); epochs use
  ``steps_per_epoch`` (training examples // batch size).
  """
  steps = int(config.get(f"{name}_steps", 0) or 0)
  epochs = float(config.get(f"{name}_epochs", 0) or 0)
  examples = int(config.get(f"{name}_examples", 0) or 0)
  given = [f"{name}_{k}" for k, v in (("steps", steps), ("epochs", epochs),
                                      ("examples", examples)) if v]
  if len(given) > 1:
    raise ConfigError(f"set only one of {', '.join(given)}")
  if min(steps, epochs, examples) < 0:
    raise ConfigError(f"config.{given[0]} must not be negative")
  if steps:
    return steps
  if epochs:
    return max(1, int(round(epochs * steps_per_epoch)))
  if examples:
    return max(1, -(-examples // int(config.batch_size)))
  return 0


def validate(config: ConfigDict) -> None:
  """Fails early, naming the field, on values that cannot work."""
  def need(cond: bool, field: str, msg: str):
    if not cond:
      raise ConfigError(f"config.{field}: {msg}")

  if config.get("stages"):
    for name, stage in config.stages.items():  # all before the first stage trains
      try:
        validate(stage)
      except ConfigError as e:
        raise ConfigError(f"stage {name}: {e}") from None
    return
  need(config.task.kind in TASK_KINDS, "task.kind", f"must be one of {TASK_KINDS}, got "
       f"{config.task.kind!r}")
  need(config.optim.lr > 0, "optim.lr", f"must be positive, got {config.optim.lr}")
  need(config.optim.weight_decay >= 0, "optim.weight_decay",
       f"must be >= 0, got {config.optim.weight_decay}")
  need(config.task.saliency_loss in SALIENCY_LOSSES, "task.saliency_loss",
       f"must be one of {SALIENCY_LOSSES}, got {config.task.saliency_loss!r}")
  need(config.batch_size >= 1, "batch_size", f"must be >= 1, got {config.batch_size}")
  need(config.accum_steps >= 1, "accum_steps", f"must be >= 1, got {config.accum_steps}")
  need(config.batch_size % config.accum_steps == 0, "accum_steps",
       f"{config.accum_steps} does not divide batch_size {config.batch_size}")
  need(config.saliency.mode in SALIENCY_MODES, "saliency.mode",
       f"must be one of {SALIENCY_MODES}, got {config.saliency.mode!r}")
  need(0.0 <= config.saliency.r <= 1.0, "saliency.r", f"must be in [0, 1], got {config.saliency.r}")
  need(config.batch_norm == "global", "batch_norm",
       f"only 'global' (statistics over the global batch) is supported, got {config.batch_norm!r}")
  need(config.best_mode in ("max", "min"), "best_mode", "must be 'max' or 'min'")
  need(config.keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1")
  need(config.model.dtype in ("float32", "bfloat16", "float16"), "model.dtype",
       f"must be float32, bfloat16 or float16, got {config.model.dtype!r}")
  need(isinstance(config.data.fuse_geometry, bool), "data.fuse_geometry",
       f"must be True or False, got {config.data.fuse_geometry!r}")
  need(bool(config.data.labels) or config.task.kind == "saliency", "data.labels",
       "name at least one label key")
  if config.saliency.mode in ("cache", "online"):
    need(bool(config.saliency.mlnet), "saliency.mlnet",
         "needs ML-Net weights (.npz) or an ML-Net workdir for saliency mode "
         f"{config.saliency.mode!r}")
    if config.saliency.mode == "cache":
      need("cached_saliency" in config.data.train_pipe, "data.train_pipe",
           "saliency mode 'cache' needs the cached_saliency op after the crop")
  fields = model_fields(str(config.model.name))
  if fields is not None:
    unknown = sorted(set(config.model.kwargs) - set(fields))
    need(not unknown, "model.kwargs", f"{', '.join(unknown)}: not a field of model "
         f"{config.model.name!r} (its fields: {', '.join(sorted(fields))})")
  _check_saliency_ratio(config)
  _check_init_from_expect(config.get("init_from_expect", INIT_FROM_DEFAULT))
  from jaxface import mixture_config  # pylint: disable=g-import-not-at-top
  mixture_config.validate(config)
  from data_pipelines import pp  # pylint: disable=g-import-not-at-top
  for field, pipe in (("data.train_pipe", config.data.train_pipe),
                      ("data.eval_pipe", config.data.eval_pipe),
                      ("saliency.crop_pipe", config.saliency.crop_pipe)):
    # Parsed here, not when the loaders are made: after the dataset and the model are built.
    need(isinstance(pipe, str) and bool(pipe.strip()), field, f"must be a pipe string, got "
         f"{pipe!r}")
    try:
      pp.Pipeline(pipe, fuse=bool(config.data.get("fuse_geometry", False)))
    except (ValueError, TypeError, KeyError, SyntaxError) as e:
      raise ConfigError(f"config.{field}: {e}") from None
  for name in PERIODS:
    period_steps(config, name, 1)
  need(period_steps(config, "train", 1) > 0, "train_steps",
       "set one of train_steps, train_epochs, train_examples")
  for field in ("data_dir", "manual_dir"):
    path = config.data.get(field)
    if path and field == "manual_dir":
      need(os.path.isdir(os.path.expanduser(path)), f"data.{field}",
           f"directory does not exist: {path}")


def _check_init_from_expect(expect: Any) -> None:
  """A tuple of keywords (``INIT_FROM_KEYWORDS``; "any" and "none" alone) or regexes."""
  field = "config.init_from_expect"
  if isinstance(expect, str) or not isinstance(expect, (tuple, list)):
    raise ConfigError(f"{field}: must be a tuple of rules ({', '.join(INIT_FROM_KEYWORDS)} or "
                      f"regular expressions), got {expect!r}")
  if not expect:
    raise ConfigError(f"{field}: empty; ('none',) requires nothing")
  for rule in expect:
    if not isinstance(rule, str) or not rule:
      raise ConfigError(f"{field}: {rule!r} is not a rule (a keyword or a regular expression)")
    if rule in INIT_FROM_ALONE and len(expect) > 1:
      raise ConfigError(f"{field}: {rule!r} stands alone, got {tuple(expect)}")
    if rule not in INIT_FROM_KEYWORDS:
      try:
        re.compile(rule)
      except re.error as e:
        raise ConfigError(f"{field}: {rule!r} is not a keyword ({', '.join(INIT_FROM_KEYWORDS)}) "
                          f"or a regular expression ({e})") from None


# The reweighting op of a pipe with its ratio (not ``cached_saliency``: "_" is a word character).
_SALIENCY_OP = re.compile(r"\bsaliency\(\s*(?:r\s*=\s*)?([^),]*)\)")


def _check_saliency_ratio(config: ConfigDict) -> None:
  """``saliency.r`` and the ``saliency(r)`` ops of the pipes must agree: the loader reweights with
  the pipe's ratio, while online saliency, ``jaxface.load`` and the reports read ``saliency.r``,
  so a ratio given in one place only would train and predict with different images."""
  r = float(config.saliency.r)
  for field in ("train_pipe", "eval_pipe"):
    pipe = config.data[field]
    for text in _SALIENCY_OP.findall(pipe if isinstance(pipe, str) else ""):
      try:
        ratio = float(text)
      except ValueError:
        continue  # not a number: the pipe parser names it
      if abs(ratio - r) > 1e-9:
        raise ConfigError(
            f"config.saliency.r: {r:g}, but config.data.{field} reweights with saliency({text}); "
            "give the ratio in both (the configs' ':r=...' argument sets both)")


def apply_smoke(c: ConfigDict, *, size: int = 64, labels: tuple[str, ...] | None = None,
                width: float = 0.125) -> ConfigDict:
  """Shrinks a config so it trains two steps and evaluates on a 2-core CPU in seconds.

  The data become the embedded ``synthetic_faces/small`` (built on first use); a config whose
  labels the synthetic data lack passes ``labels`` it has instead (the smoke run checks the
  machinery, not the paper's number). Models get ``width`` and ``size`` x ``size`` inputs. A
  saliency-cache config given no ML-Net reads the synthetic data's own saliency maps instead
  (``saliency.mode = "dataset"``, the ``cached_saliency`` op dropped from its pipes), so its smoke
  run needs no ML-Net weights.
  """
  c.smoke = True
  c.data.name, c.data.config, c.data.manual_dir, c.data.build = (
      "synthetic_faces", "small", "", True)
  c.data.train_split, c.data.eval_split, c.data.test_split = "train", "validation", "test"
  if labels is not None:
    c.data.labels = labels
  c.data.train_pipe = _resize_pipe(c.data.train_pipe, size)
  c.data.eval_pipe = _resize_pipe(c.data.eval_pipe, size)
  c.saliency.crop_pipe = _resize_pipe(c.saliency.crop_pipe, size)
  c.saliency.mlnet_input = (size, size)
  c.saliency.cache_size = (16, 16)
  c.saliency.batch_size = 8
  c.model.input_size = (size, size)
  if c.model.name not in ("mlnet",):
    c.model.kwargs.width = width
  else:
    c.model.kwargs.width = 1 / 16
  c.model.dtype = "float32"
  c.batch_size = 4
  c.accum_steps = min(c.accum_steps, 2)
  for name in ("train", "eval_every", "checkpoint_every", "log_every"):
    for unit in ("steps", "epochs", "examples"):
      c[f"{name}_{unit}"] = 0 if unit != "epochs" else 0.0
  c.train_steps = 2
  c.eval_every_steps = 2
  c.checkpoint_every_steps = 2
  c.log_every_steps = 1
  c.eval.batch_size = 8
  c.eval.max_batches = 2
  c.eval.num_sample_images = 2
  c.optim.warmup_steps = 0
  if c.saliency.mode == "cache" and not c.saliency.mlnet:
    c.saliency.mode = "dataset"
    c.data.train_pipe = c.data.train_pipe.replace("|cached_saliency", "")
    c.data.eval_pipe = c.data.eval_pipe.replace("|cached_saliency", "")
  return c


def _resize_pipe(pipe: str, size: int) -> str:
  """Replaces every crop/resize size in a pipe by smoke sizes (``size`` + 1/8 for crops)."""
  big = size + size // 8
  pipe = re.sub(r"resize\(\s*\d+\s*\)", f"resize({big})", pipe)
  pipe = re.sub(r"(random_crop|center_crop|oversample10)\(\s*\d+\s*\)", rf"\1({size})", pipe)
  pipe = re.sub(r"(align|task_crop)\(([^)]*?)size\s*=\s*\d+", rf"\1(\2size={big}", pipe)
  if "random_crop" not in pipe and "center_crop" not in pipe and "oversample10" not in pipe:
    pipe = pipe.replace(f"resize({big})", f"resize({size})").replace(f"size={big}",
                                                                   f"size={size}")
  if pipe and not re.search(r"resize\(|crop\(|oversample10\(|size=", pipe):
    # A pipe that feeds the photos at their stored size (UTKFace's 200x200 chips): the smoke
    # data are 256 px, so they are resized right after decoding to the smoke model's input.
    pipe = re.sub(r"^(\s*decode\s*)(\||$)", rf"\1|resize({size})\2", pipe, count=1)
  return pipe
