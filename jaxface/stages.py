"""Chains of runs and the results they must reach.

A config with ``stages`` (``configs/demo.py``) is a chain: each stage is a full config run in
``workdir/<name>``, in ``config.stage_order`` (default: sorted names), and a stage names an
earlier one's workdir as ``"stage:NAME"`` in ``saliency.mlnet`` or ``init_from``.
``config.eval.expect`` gives minimum test results; ``check_expectations`` fails below them.
"""

from __future__ import annotations

import os
from typing import Any

from jaxface import config_lib

STAGE_PREFIX = "stage:"


class BelowExpectation(RuntimeError):
  """A test result below ``config.eval.expect``."""


def order(config) -> list[str]:
  """The stage names of a chain config in the order they run."""
  names = list(config.stage_order) or sorted(config.stages)
  if sorted(names) != sorted(config.stages):
    raise config_lib.ConfigError(f"config.stage_order {names} must name each of config.stages "
                                 f"({sorted(config.stages)}) once")
  return names


def resolve_stage_refs(config, workdir_root: str):
  """``"stage:NAME"`` in ``saliency.mlnet`` / ``init_from`` -> ``workdir_root/NAME``."""
  with config.unlocked():
    for holder, field in ((config.saliency, "mlnet"), (config, "init_from")):
      v = holder[field]
      if isinstance(v, str) and v.startswith(STAGE_PREFIX):
        holder[field] = os.path.join(workdir_root, v[len(STAGE_PREFIX):])
  return config


def stages(config, workdir_root: str) -> list[tuple[str, Any, str]]:
  """``(name, stage config with its refs resolved, stage workdir)`` of each stage, in order."""
  root = os.path.abspath(workdir_root)
  return [(name, resolve_stage_refs(config.stages[name], root), os.path.join(root, name))
          for name in order(config)]


# The metric an ``expect`` entry named by the task alone checks, per kind of result.
HEADLINE_METRICS = ("accuracy", "cc")


def _expected_metric(results: dict[str, Any], key: str) -> tuple[str, float | None]:
  """``("task/metric", value)`` of an expect key ``task`` (its headline metric) or ``task/metric``."""
  task, _, metric = key.partition("/")
  got = results.get(task, {})
  if not metric:
    metric = next((m for m in HEADLINE_METRICS if m in got), HEADLINE_METRICS[0])
  value = got.get(metric)
  return f"{task}/{metric}", None if value is None else float(value)


def check_expectations(config, results: dict[str, Any]) -> None:
  """Fails when a test result is below its ``config.eval.expect`` minimum.

  Keys are a task (its accuracy, or CC for a saliency map) or ``task/metric`` (e.g.
  ``saliency/nss``); KLD is a divergence and cannot be given a minimum.
  """
  expect = dict(config.eval.get("expect") or {})
  low, reached = [], []
  for key, minimum in expect.items():
    name, got = _expected_metric(results, key)
    if name.endswith("/kld"):
      raise config_lib.ConfigError(f"config.eval.expect.{key}: KLD is lower-is-better; "
                                   "give a minimum of cc, nss, auc_judd or sim instead")
    if got is None or not got >= float(minimum):
      low.append(f"{name}: {got if got is None else round(got, 4)} < {minimum}")
    else:
      reached.append(f"{name} {got:.3f} >= {minimum}")
  if low:
    raise BelowExpectation("test result below config.eval.expect: " + "; ".join(low))
  if expect:
    print("expected results reached: " + ", ".join(reached), flush=True)
