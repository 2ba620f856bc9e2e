"""Lists the model zoo: ``python -m jaxface.models [--json] [--width W] [NAME ...]``.

Parameter counts, input and output shapes come from ``jax.eval_shape`` (nothing is computed).
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxface import models


def _shapes(tree):
  return jax.tree_util.tree_map(lambda a: list(a.shape), tree)


def describe(name: str, width: float = 1.0) -> dict:
  """Parameter count and shapes of a registered model at its reference size."""
  s = models.spec(name)
  model = models.get(name, width=width)
  x = jax.ShapeDtypeStruct((1, *s.input_shape), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)
  out, _ = jax.eval_shape(lambda v, x: model.apply(v, x), variables, x)
  n_params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(variables["params"]))
  return {"name": name, "params": n_params, "input": [1, *s.input_shape], "output": _shapes(out),
          "description": s.description}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m jaxface.models", description=__doc__)
  parser.add_argument("names", nargs="*", help="models to describe (default: all)")
  parser.add_argument("--json", action="store_true", help="one JSON object per line")
  parser.add_argument("--width", type=float, default=1.0, help="width multiplier (default 1.0)")
  args = parser.parse_args(argv)
  if args.width <= 0:
    parser.error(f"--width must be positive, got {args.width}")
  names = args.names or models.names()
  unknown = [n for n in names if n not in models.names()]
  if unknown:
    parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(models.names())}")
  if not args.json:
    print(f"{'name':<16}{'params':>14}  {'input':<20}output")
  for name in names:
    d = describe(name, args.width)
    if args.json:
      print(json.dumps({k: d[k] for k in ("name", "params", "input", "output")}), flush=True)
    else:
      print(f"{name:<16}{d['params']:>14,}  {str(tuple(d['input'])):<20}{d['output']}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
