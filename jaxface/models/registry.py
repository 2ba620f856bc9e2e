"""Name -> model builder registry used by configs, the CLI and the tests."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  name: str
  builder: Callable[..., nn.Module]
  input_shape: tuple[int, int, int]  # Default full-size (H, W, C) input.
  num_classes: int | None  # Reference number of classes (None: not a classifier).
  description: str
  classifier: bool = True  # Accepts num_classes / features_only / heads.


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, *, input_shape: tuple[int, int, int], num_classes: int | None,
             description: str, classifier: bool = True):
  """Decorator registering ``builder(**kwargs) -> nn.Module`` under ``name``."""

  def deco(builder):
    if name in _REGISTRY:
      raise ValueError(f"model {name!r} registered twice")
    _REGISTRY[name] = ModelSpec(name, builder, tuple(input_shape), num_classes, description,
                                classifier)
    return builder

  return deco


def names() -> list[str]:
  return list(_REGISTRY)


def spec(name: str) -> ModelSpec:
  if name not in _REGISTRY:
    raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}")
  return _REGISTRY[name]


def get(name: str, *, head: str | None = None, head_kwargs: dict[str, Any] | None = None,
        **kwargs) -> nn.Module:
  """Builds a model by name.

  Args:
    name: registered model name (see ``python -m jaxface.models``).
    head: None keeps the reference top (``num_classes``-way logits); otherwise a head from
      :mod:`jaxface.models.heads` ("softmax", "gender_age", "attributes", "gap") placed on the
      backbone's features.
    head_kwargs: arguments of the head (e.g. ``num_age_classes``).
    **kwargs: model fields such as ``num_classes``, ``width``, ``dtype``, ``dropout_rate``.
  """
  s = spec(name)
  if head is None:
    return s.builder(**kwargs)
  if not s.classifier:
    raise ValueError(f"model {name!r} is not a classifier backbone; head={head!r} is not allowed")
  from jaxface.models import heads  # pylint: disable=g-import-not-at-top
  return heads.with_head(s.builder, head, head_kwargs or {}, kwargs)
