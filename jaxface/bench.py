"""``python -m jaxface.bench``: the benchmarks' command.

The benchmarks are ``jaxface/tools/bench.py`` (train, conv, models, detect, loader) and the
modules its demo / predict / explain subcommands delegate to.
"""

from jaxface import cli
from jaxface.tools import bench

if __name__ == "__main__":
  cli.run(bench.main)
