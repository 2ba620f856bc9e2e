"""Precomputes the ML-Net saliency cache of a config's dataset.

  python -m jaxface.saliency precompute --config configs/X.py[:ARGS] --workdir DIR
      [--splits train,validation]

Runs ``config.saliency.crop_pipe`` over each split (default: the config's train / eval / test
splits; ``--splits`` takes tfds split strings), ML-Net (``config.saliency.mlnet``) in jitted
batches, and stores the maps as uint8 in the cache directory (``config.saliency.cache_dir``, or
``<data_dir>/<name>/<config>/saliency_cache/<key>``). A split already cached with the same key is
reused. Records the cache in ``DIR/saliency_cache.json`` (where training and evaluation in DIR
read it) and draws ``DIR/saliency_cache.png``; prints the cache directory on the last line.
Exit status 0 on success, 2 for bad input (an argument, a missing file, a config field or a
cache that does not match), each answered in one line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys



def cmd_precompute(args, parser) -> int:
  from jaxface import config_lib  # pylint: disable=g-import-not-at-top
  from jaxface.saliency import precompute  # pylint: disable=g-import-not-at-top (jax loads here)

  splits = [s.strip() for s in args.splits.split(",") if s.strip()] if args.splits else None
  if args.splits is not None and not splits:
    parser.error(f"--splits names no split: {args.splits!r}")
  from jaxface import mixture  # pylint: disable=g-import-not-at-top
  try:
    config = config_lib.load(args.config)
    if mixture.is_mixture(config):  # one cache per dataset, each recorded in workdir/datasets/
      if splits:
        parser.error("--splits: a mixture config precomputes each dataset's own splits")
      caches = mixture.precompute_saliency(config, args.workdir)
      workdirs = {k: mixture.entry_workdir(args.workdir, k) for k in caches}
    else:
      caches = {"": precompute.precompute(config, args.workdir, splits)}
      workdirs = {"": args.workdir}
  except (FileNotFoundError, ValueError, KeyError) as e:  # CacheError is a ValueError
    print(f"error: {e}", file=sys.stderr)
    return 2
  for key, cache_dir in caches.items():
    with open(os.path.join(workdirs[key], precompute.SUMMARY_FILE)) as f:
      summary = json.load(f)
    for split, info in summary["splits"].items():
      how = "reused" if info.get("reused") else f"{info.get('rate', 0):.1f} maps/s"
      skipped = info.get("skipped", {}).get("count", 0)
      print(f"{key + ' ' if key else ''}{split}: {info['num_maps']} maps, {skipped} skipped "
            f"({how})")
    print(cache_dir)
  return 0


def main(argv=None) -> int:
  from jaxface import cli  # pylint: disable=g-import-not-at-top
  parser = cli.Parser(prog="python -m jaxface.saliency", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  p = sub.add_parser("precompute", help="compute and store ML-Net maps of a dataset's crops",
                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", required=True, metavar="FILE.py[:ARGS]",
                 help="config file; ARGS go to its get_config(arg)")
  p.add_argument("--workdir", required=True, metavar="DIR",
                 help="where saliency_cache.json and the sample PNG go (created)")
  p.add_argument("--splits", default=None, metavar="S1,S2",
                 help="comma-separated tfds split strings (default: the config's splits)")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  if args.command == "precompute":
    return cmd_precompute(args, parser)
  return 2


if __name__ == "__main__":
  from jaxface import cli  # pylint: disable=g-import-not-at-top
  cli.run(main)
