"""``config.init_from``: which arrays of imported weights or of an earlier run start a new run, and
the check that they are the ones the config expects (``config.init_from_expect``).

A fine-tuning run that loads nothing still trains, only from random weights: a backbone named
``backbone/conv1_1`` in one model and ``conv1_1`` in the other once made the Zhang et al. chain
load 0 of 32 arrays and report it in a line nobody reads. So the mapping below is one fixed rule,
and a run whose file does not provide what the config expects fails at start.

Mapping (``plan``). Arrays are named by their flattened path ``collection/module/.../leaf``
(``params/conv1_1/kernel``, ``batch_stats/backbone/bn1/mean``). A model built with a head
(``config.model.head``, ``jaxface.models.heads.WithHead``) holds the zoo model under ``backbone/``
and the head under ``head/``; the same zoo model without a head, every importer's output
(``python -m jaxface.convert``) and the checkpoint of a headless run hold the layers at the top.
Each array of the new model is looked up in the source, within its collection:

1. the same path;
2. else the path with one of ``PREFIXES`` (``backbone/``, ``head/``) removed when it starts with
   one (``params/backbone/conv1_1/kernel`` <- ``params/conv1_1/kernel``), or added when it starts
   with none (``params/conv1_1/kernel`` <- ``params/backbone/conv1_1/kernel``).

The array loads when exactly one candidate is in the source and the shapes agree; a shape that
differs leaves it newly initialised (reported with both shapes: a classifier with another class
count). Two candidates in step 2 (``backbone/x`` and ``head/x`` for a bare ``x``), or one source
array claimed by two arrays of the model, is a ``ConfigError``: the rule never chooses. Nothing
else is renamed: a layer another model names differently (a head's ``head/fc``, a zoo model's
``fc8``) is new.

Expectation (``config.init_from_expect``): a tuple of rules; the arrays that must load are the
union of what they name (paths matched without the collection: ``fc8/kernel``, ``bn1/mean``):

* ``"backbone"`` (the default): every array of the model's backbone. With a head: the arrays
  under ``backbone/``. Without: the arrays the model also has when built without its classifier
  (``num_classes=0``; AlexNet / VGG without fc8, ResNet without fc). A model that is not a
  classifier (ML-Net) or a dense task: every array. Head and classifier arrays may be new.
* ``"all"``: every array of the model (a step that keeps the previous step's head).
* a regular expression (anything else): every array whose path it matches (``re.search``, as
  ``config.optim.freeze``); one that matches no array of the model is an error (a typo would
  otherwise require nothing).
* ``"any"`` (alone): at least one array; ``"none"`` (alone): nothing, the report only.

The trainer checks twice, both before anything is compiled: ``check_backbone`` before the
dataset is built (the backbone's shapes need no class count, so the model's shapes come from
``jax.eval_shape`` on the backbone alone), and ``Plan.check`` on the whole model's shapes once
the tasks are known. A failure is one line naming the arrays that did not load and why.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxface import config_lib
from jaxface.weights import common as weights_common

PyTree = Any

# The submodules of jaxface.models.heads.WithHead: where a model with a head keeps its zoo model
# and its head (tests/init_from_test.py checks the names against the module).
PREFIXES = ("backbone", "head")
# The rules' keywords live in config_lib, whose validate refuses an unreadable init_from_expect.
ALONE = config_lib.INIT_FROM_ALONE
DEFAULT_EXPECT = config_lib.INIT_FROM_DEFAULT
_SHOWN = 24  # modules named per reason in a failure line


def flat_paths(tree: PyTree) -> dict[str, Any]:
  """``{"collection/module/.../leaf": leaf}``."""
  return {"/".join(str(getattr(k, "key", k)) for k in path): v
          for path, v in jax.tree_util.tree_leaves_with_path(tree)}


def _layer_path(path: str) -> str:
  """The path without its collection: what ``init_from_expect`` regexes match."""
  return path.partition("/")[2] or path


# ----------------------------------------------------------------------------- the expectation


def required(expect: Sequence[str], model_paths: Sequence[str], backbone: set[str],
             partial: bool = False) -> set[str]:
  """The paths of ``model_paths`` that ``expect`` says must load.

  ``partial``: ``model_paths`` are only part of the model (the backbone, before the tasks are
  known), so a regex matching none of them is not an error yet.
  """
  out: set[str] = set()
  for rule in expect:
    if rule == "backbone":
      out |= backbone & set(model_paths)
    elif rule == "all":
      out |= set(model_paths)
    elif rule not in ALONE:
      matched = {p for p in model_paths if re.search(rule, _layer_path(p))}
      if not matched and not partial:
        sample = ", ".join(_layer_path(p) for p in list(model_paths)[:6])
        raise config_lib.ConfigError(f"config.init_from_expect: {rule!r} matches no array of "
                                     f"the model; its paths are like {sample}, ...")
      out |= matched
  return out


# ----------------------------------------------------------------------------- the mapping


@dataclasses.dataclass
class InitReport:
  """What ``init_from`` did to each array: loaded (from which source path), new (why), unused."""
  loaded: list[str]
  new: list[str]  # "path (reason)"
  unused: list[str]
  renamed: dict[str, str] = dataclasses.field(default_factory=dict)  # target -> source path
  reasons: dict[str, str] = dataclasses.field(default_factory=dict)  # new path -> reason

  def format(self) -> str:
    lines = [f"init_from: {len(self.loaded)} arrays loaded, {len(self.new)} newly initialised, "
             f"{len(self.unused)} in the file unused"]
    if self.renamed:
      lines[0] += f" ({len(self.renamed)} under another prefix, e.g. "
      first = next(iter(self.renamed.items()))
      lines[0] += f"{first[0]} <- {first[1]})"
    lines += [f"  new: {p}" for p in self.new]
    lines += [f"  unused: {p}" for p in self.unused[:20]]
    return "\n".join(lines)


def candidates(path: str) -> list[str]:
  """Step 2 of the rule: the source paths ``path`` may come from under another prefix."""
  collection, _, rest = path.partition("/")
  first, _, tail = rest.partition("/")
  if first in PREFIXES and tail:
    return [f"{collection}/{tail}"]
  return [f"{collection}/{p}/{rest}" for p in PREFIXES]


@dataclasses.dataclass
class Plan:
  """Which source array initialises each array of the model (``plan``)."""
  mapping: dict[str, str]  # target path -> source path
  report: InitReport
  source_name: str
  source_size: int
  source_sample: list[str]

  def check(self, expect: Sequence[str], model_paths: Sequence[str], backbone: set[str],
            partial: bool = False) -> None:
    """Raises ``ConfigError`` in one line when less loads than ``expect`` requires."""
    if "none" in expect:
      return
    where = f"config.init_from: {self.source_name}"
    if "any" in expect:
      if not self.report.loaded and not partial:
        raise config_lib.ConfigError(
            f"{where} loads none of the model's {len(model_paths)} arrays "
            f"(config.init_from_expect={tuple(expect)}){self._sample()}")
      return
    need = required(expect, model_paths, backbone, partial)
    missing = sorted(need - set(self.mapping))
    if not missing:
      return
    what = "the backbone's" if tuple(expect) == DEFAULT_EXPECT else "the"
    raise config_lib.ConfigError(
        f"{where} loads {len(need) - len(missing)} of {what} {len(need)} arrays "
        f"config.init_from_expect={tuple(expect)} requires; {len(missing)} did not load: "
        f"{self._describe(missing)}{self._sample()}")

  def _describe(self, missing: Sequence[str]) -> str:
    by_reason: dict[str, dict[str, list[str]]] = {}
    for path in missing:
      reason = self.report.reasons.get(path, "not in the file")
      module, _, leaf = path.rpartition("/")
      kind = "not in the file" if reason == "not in the file" else "shape in the file != model"
      if kind != "not in the file":
        leaf = f"{leaf} {reason[len('shape '):]}"
      by_reason.setdefault(kind, {}).setdefault(module, []).append(leaf)
    parts = []
    for kind, modules in by_reason.items():
      names = [f"{m}/{{{','.join(leaves)}}}" if len(leaves) > 1 else f"{m}/{leaves[0]}"
               for m, leaves in modules.items()]
      more = f" and {len(names) - _SHOWN} more layers" if len(names) > _SHOWN else ""
      parts.append(f"{kind}: {', '.join(names[:_SHOWN])}{more}")
    return "; ".join(parts)

  def _sample(self) -> str:
    return (f" (the source holds {self.source_size} arrays, e.g. "
            f"{', '.join(self.source_sample)}; mapping rule: jaxface/init_from.py)")

  def apply(self, variables: PyTree, source: Mapping[str, Any]) -> PyTree:
    """``variables`` with every mapped array replaced by its source array (in its dtype)."""
    def put(path, leaf):
      key = "/".join(str(getattr(k, "key", k)) for k in path)
      src = self.mapping.get(key)
      return leaf if src is None else jnp.asarray(source[src], leaf.dtype)
    return jax.tree_util.tree_map_with_path(put, variables)


def plan(target: Mapping[str, Any], source: Mapping[str, Any], source_name: str = "the file"
         ) -> Plan:
  """The rule of the module docstring applied to ``target`` (flat paths -> arrays or shapes)
  and ``source`` (flat paths -> arrays)."""
  mapping, renamed, reasons, named = {}, {}, {}, set()
  for path, leaf in target.items():
    src = path if path in source else None
    if src is None:
      found = [c for c in candidates(path) if c in source]
      if len(found) > 1:
        raise config_lib.ConfigError(
            f"config.init_from: {source_name}: {path} could come from {found[0]} or {found[1]}; "
            "the mapping rule does not choose (jaxface/init_from.py): remove one from the file")
      src = found[0] if found else None
    if src is None:
      reasons[path] = "not in the file"
      continue
    named.add(src)
    shape, want = tuple(np.shape(source[src])), tuple(leaf.shape)
    if shape != want:
      reasons[path] = f"shape {shape} != {want}"  # file != model
      continue
    mapping[path] = src
    if src != path:
      renamed[path] = src
  claimed: dict[str, str] = {}
  for path, src in mapping.items():
    if src in claimed:
      raise config_lib.ConfigError(
          f"config.init_from: {source_name}: {src} would initialise both {claimed[src]} and "
          f"{path}; the mapping rule does not choose (jaxface/init_from.py)")
    claimed[src] = path
  new = [f"{p} ({r})" for p, r in reasons.items()]
  report = InitReport(loaded=list(mapping), new=new, unused=sorted(set(source) - named),
                      renamed=renamed, reasons=reasons)
  return Plan(mapping, report, source_name, len(source), sorted(source)[:4])


def merge_pretrained(variables: PyTree, pretrained: PyTree) -> tuple[PyTree, InitReport]:
  """Copies the arrays of ``pretrained`` that the rule maps into ``variables`` (no expectation:
  the trainer checks that with ``Plan.check``)."""
  source = flat_paths(pretrained)
  p = plan(flat_paths(variables), source)
  return p.apply(variables, source), p.report


# ----------------------------------------------------------------------------- the source


def load_pretrained(path: str) -> PyTree:
  """Variables of an imported ``.npz`` (``jaxface.convert``) or of a training workdir."""
  if os.path.isdir(path):
    from jaxface import checkpointing  # pylint: disable=g-import-not-at-top
    try:
      variables, _, _ = checkpointing.load_model_variables(path)
    except FileNotFoundError as e:
      raise config_lib.ConfigError(f"config.init_from: {e}") from None
    return variables
  if not os.path.exists(path):
    raise config_lib.ConfigError(f"config.init_from: no such file or workdir: {path}")
  try:
    return weights_common.load(path).variables
  except weights_common.WeightImportError as e:
    raise config_lib.ConfigError(f"config.init_from: {e}") from None


def _describe_source(path: str) -> str:
  return f"workdir {path}" if os.path.isdir(path) else path


# ----------------------------------------------------------------------------- the model's parts


def backbone_shapes(config) -> dict[str, Any]:
  """Shapes of the config's backbone arrays under the paths of the full model (``backbone/``
  prefixed when the config has a head), from ``jax.eval_shape``: no class count needed."""
  from jaxface.models import from_config  # pylint: disable=g-import-not-at-top
  from jaxface.models import heads  # pylint: disable=g-import-not-at-top
  from jaxface.models import registry  # pylint: disable=g-import-not-at-top
  try:
    spec = registry.spec(config.model.name)
  except KeyError as e:
    raise config_lib.ConfigError(f"config.model.name: {e.args[0]}") from None
  kwargs = dict(config.model.kwargs.to_dict() if hasattr(config.model.kwargs, "to_dict")
                else config.model.kwargs)
  if config.model.dtype != "float32":
    kwargs["dtype"] = from_config.DTYPES[config.model.dtype]
  head = config.model.head or None
  prefix = ""
  if not spec.classifier or config.task.kind == "saliency":
    module = spec.builder(**kwargs)  # every array is the backbone's
  else:
    if head:
      if head not in heads.HEADS:
        raise config_lib.ConfigError(f"config.model.head: unknown {head!r}; one of "
                                     f"{sorted(heads.HEADS)}")
      prefix = f"{PREFIXES[0]}/"
      top = {"features_only": True} if heads.HEADS[head][1] else {"num_classes": 0}
    else:
      top = {"num_classes": 0}
    try:
      module = spec.builder(**top, **kwargs)
    except TypeError as e:
      raise config_lib.ConfigError(f"config.model.kwargs: {e}") from None
  return {_prefixed(path, prefix): leaf
          for path, leaf in flat_paths(model_shapes(module, config)).items()}


def model_shapes(module, config) -> PyTree:
  """``module.init``'s variables as shapes at ``config.model.input_size`` (nothing computed)."""
  x = jax.ShapeDtypeStruct((1, *tuple(config.model.input_size), 3), jnp.float32)
  key = jax.random.key(0)
  return jax.eval_shape(lambda x: module.init({"params": key, "dropout": key}, x, train=False),
                        x)


def _prefixed(path: str, prefix: str) -> str:
  collection, _, rest = path.partition("/")
  return f"{collection}/{prefix}{rest}"


def expect_of(config) -> tuple[str, ...]:
  return tuple(config.get("init_from_expect", DEFAULT_EXPECT))


def check_backbone(config) -> dict[str, Any]:
  """Loads ``config.init_from`` and checks the backbone part of the expectation before the
  dataset is built; returns the source's flat arrays for ``plan_model``."""
  source = flat_paths(load_pretrained(config.init_from))
  backbone = backbone_shapes(config)
  p = plan(backbone, source, _describe_source(config.init_from))
  p.check(expect_of(config), list(backbone), set(backbone), partial=True)
  return source


def plan_model(config, variables_shape: PyTree, source: Mapping[str, Any]) -> Plan:
  """The plan for the whole model (its variables' shapes), checked against the expectation."""
  target = flat_paths(variables_shape)
  if config.model.head and config.task.kind != "saliency":
    # A model with a head shows its backbone (no second trace of a deep network).
    backbone = {p for p in target if p.split("/")[1:2] == [PREFIXES[0]]}
  else:
    backbone = set(backbone_shapes(config))
  stray = sorted(backbone - set(target))
  if stray:  # the backbone built alone must be a part of the model: a bug, not a user's mistake
    raise RuntimeError(f"backbone arrays {stray[:3]} are not in the model {config.model.name}")
  p = plan(target, source, _describe_source(config.init_from))
  p.check(expect_of(config), list(target), backbone)
  return p
