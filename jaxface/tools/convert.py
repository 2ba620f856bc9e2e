"""``python -m jaxface.convert``: foreign weight files into jaxface ``.npz`` trees.

  python -m jaxface.convert FORMAT SRC DST [--arch NAME]
  python -m jaxface.convert --list

The output holds the variables tree (params and batch_stats) with '/'-joined keys and a JSON record of
the source format, the source file's SHA-256, the target model and the input preprocessing the weights
expect; ``jaxface.weights.load(DST)`` reads it back.
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import numpy as np

from jaxface import cli
from jaxface import weights


def main(argv=None) -> int:
  parser = cli.Parser(prog="python -m jaxface.convert", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("format", nargs="?", help="source format (see --list)")
  parser.add_argument("src", nargs="?", help="foreign weight file")
  parser.add_argument("dst", nargs="?", help="output .npz")
  parser.add_argument("--arch", default=None, help="target model when the format holds several")
  parser.add_argument("--list", action="store_true", help="list the formats and exit")
  args = parser.parse_args(argv)
  if args.list:
    for name, f in weights.FORMATS.items():
      print(f"{name:<20}{f.description}  [archs: {', '.join(f.archs)}]")
    return 0
  if not (args.format and args.src and args.dst):
    parser.error("FORMAT, SRC and DST are required (or --list)")
  if args.format not in weights.FORMATS:
    parser.error(f"unknown format {args.format!r}; choose one of {', '.join(weights.FORMATS)}")
  if not os.path.exists(args.src):
    parser.error(f"SRC not found: {args.src}")
  imported = weights.import_weights(args.format, args.src, arch=args.arch)
  weights.save(args.dst, imported.variables, imported.meta)
  n = sum(int(np.prod(np.shape(p)))
          for p in jax.tree_util.tree_leaves(imported.variables.get("params", {})))
  summary = {k: imported.meta[k] for k in ("model", "model_kwargs", "source_sha256")}
  print(f"wrote {args.dst}: {n:,} parameters; {json.dumps(summary)}")
  print(f"preprocessing: {json.dumps(imported.meta['preprocessing'])}")
  return 0


def run() -> None:
  """The command: every import error (a wrong or truncated file, a missing array) in one line."""
  cli.run(main, expected=(weights.WeightImportError, ValueError))
