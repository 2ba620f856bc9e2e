"""The config -> model glue: which registered model, with which kwargs and head, a config builds.

``build_model(config, tasks)`` reads ``config.model`` (name, kwargs, dtype, head, head_kwargs) and
sizes the head from the tasks (their class counts); ``model_kwargs`` gives the same as the
kwargs that a checkpoint's meta records, so the model can be rebuilt from it.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax.numpy as jnp

from jaxface import config_lib
from jaxface.models import registry

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def model_kwargs(config, tasks: Sequence[Any]) -> tuple[dict[str, Any], str | None, dict]:
  """``(kwargs, head, head_kwargs)`` for ``models.get`` from the config and the tasks."""
  kwargs = dict(config.model.kwargs.to_dict() if hasattr(config.model.kwargs, "to_dict")
                else config.model.kwargs)
  if config.model.dtype != "float32":
    kwargs["dtype"] = config.model.dtype
  head = config.model.head or None
  head_kwargs = dict(config.model.head_kwargs.to_dict()
                     if hasattr(config.model.head_kwargs, "to_dict") else config.model.head_kwargs)
  if any(t.dense for t in tasks):  # a map: the model's own output, no classifier head
    return kwargs, None, {}
  by_name = {t.name: t for t in tasks}
  if head == "gender_age":
    if set(by_name) != {"gender", "age"}:
      raise config_lib.ConfigError("config.model.head 'gender_age' needs config.data.labels = "
                                   f"('gender', 'age'), got {tuple(by_name)}")
    head_kwargs.setdefault("num_age_classes", by_name["age"].num_classes)
    head_kwargs.setdefault("num_gender_classes", by_name["gender"].num_classes)
  elif head == "attributes":
    head_kwargs.setdefault("num_attributes", tasks[0].num_classes)
  elif head == "multi_softmax":
    head_kwargs["tasks"] = tuple((t.name, t.num_classes) for t in tasks)
  else:
    if len(tasks) != 1:
      raise config_lib.ConfigError(
          f"config.data.labels: {len(tasks)} tasks need a multi-task head (config.model.head)")
    kwargs["num_classes"] = tasks[0].num_classes
  return kwargs, head, head_kwargs


def build_model(config, tasks: Sequence[Any]):
  kwargs, head, head_kwargs = model_kwargs(config, tasks)
  if "dtype" in kwargs:
    kwargs["dtype"] = DTYPES[kwargs["dtype"]]
  try:
    return registry.get(config.model.name, head=head, head_kwargs=head_kwargs, **kwargs)
  except KeyError as e:
    raise config_lib.ConfigError(f"config.model.name: {e.args[0]}") from None
  except TypeError as e:
    raise config_lib.ConfigError(f"config.model.kwargs: {e}") from None
