"""The demo's robustness matrix: ``configs/demo.py`` under several XLA:CPU instruction sets and seeds.

  python -m jaxface.bench demo [--isa default,AVX512,AVX2] [--seeds 0,1,2] [--out runs/matrix]

XLA:CPU generates different code for different instruction sets (``--xla_cpu_max_isa``), so the
same run gives slightly different floating-point results on different CPUs, and a tiny model
trained from random weights can end in a different place. Each (ISA, seed) pair is one
``python -m jaxface.train --config configs/demo.py:seed=S`` in its own process and workdir; the
table gives each run's test accuracy per label, the ML-Net stage's test CC and the wall time,
then min / median / max over the runs, and how far the worst run is above each floor
(``config.eval.expect``). A run that fails its floors is reported and makes the command exit 1.
Finished runs are kept in ``OUT/runs.jsonl``: rerunning the command only runs the missing ones.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

LABELS = ("age", "gender", "expression")


def _run_one(config: str, isa: str, seed: int, workdir: str, log_path: str) -> dict[str, Any]:
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_cpu_max_isa")]
  if isa != "default":
    flags.append(f"--xla_cpu_max_isa={isa}")
  env["XLA_FLAGS"] = " ".join(flags)
  cmd = [sys.executable, "-m", "jaxface.train", "--config", f"{config}:seed={seed}",
         "--workdir", workdir]
  start = time.time()
  with open(log_path, "w", encoding="utf-8") as log:
    rc = subprocess.call(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
  row: dict[str, Any] = {"isa": isa, "seed": seed, "rc": rc, "wall_s": round(time.time() - start, 1),
                         "workdir": workdir}
  try:
    with open(os.path.join(workdir, "classifier", "eval", "results.json"), encoding="utf-8") as f:
      results = json.load(f)
    row.update({k: results[k]["accuracy"] for k in LABELS if k in results})
    with open(os.path.join(workdir, "mlnet", "eval", "results.json"), encoding="utf-8") as f:
      sal = json.load(f)["saliency"]
    row.update({f"mlnet_{k}": sal[k] for k in ("cc", "nss", "auc_judd", "kld", "sim") if k in sal})
  except (OSError, KeyError, ValueError) as e:
    row["error"] = f"no results ({e}); see {log_path}"
  return row


def floors(config: str) -> dict[str, float]:
  """The demo's floors: ``{label: minimum accuracy, "mlnet_cc": minimum CC}``."""
  from jaxface import config_lib  # pylint: disable=g-import-not-at-top
  c = config_lib.load(config)
  out = {k: float(v) for k, v in dict(c.stages.classifier.eval.expect).items()}
  out["mlnet_cc"] = float(dict(c.stages.mlnet.eval.expect)["saliency"])
  return out


def summarize(rows: list[dict[str, Any]], floor: dict[str, float]) -> str:
  """Markdown: one line per run, then min / median / max and the worst margin over each floor."""
  cols = [*LABELS, "mlnet_cc"]
  lines = ["| ISA | seed | " + " | ".join(cols) + " | wall s |",
           "| --- | ---: | " + " | ".join("---:" for _ in cols) + " | ---: |"]
  for r in rows:
    vals = " | ".join(f"{100 * r[c]:.1f}" if c in LABELS and c in r else
                      (f"{r[c]:.3f}" if c in r else "-") for c in cols)
    lines.append(f"| {r['isa']} | {r['seed']} | {vals} | {r['wall_s']:.0f} |")
  for name, fn in (("min", np.min), ("median", np.median), ("max", np.max)):
    vals = []
    for c in cols:
      got = [r[c] for r in rows if c in r]
      vals.append("-" if not got else (f"{100 * fn(got):.1f}" if c in LABELS else f"{fn(got):.3f}"))
    walls = [r["wall_s"] for r in rows]
    lines.append(f"| **{name}** | | " + " | ".join(vals) + f" | {fn(walls):.0f} |")
  margins = []
  for c in cols:
    got = [r[c] for r in rows if c in r]
    if c in floor and got:
      scale = 100 if c in LABELS else 1
      margins.append(f"{c} {scale * (min(got) - floor[c]):+.{1 if c in LABELS else 3}f}")
  lines.append("")
  lines.append("worst run above its floor: " + ", ".join(margins))
  return "\n".join(lines)


def _list(kind):
  def parse(text: str):
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
      raise argparse.ArgumentTypeError("needs at least one value")
    try:
      return [kind(t) for t in items]
    except ValueError:
      raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, "
                                       f"got {text!r}") from None
  return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("--config", default="configs/demo.py", help="the demo config file")
  p.add_argument("--isa", type=_list(str), default=["default", "AVX512", "AVX2"],
                 help="comma-separated --xla_cpu_max_isa values ('default': unset)")
  p.add_argument("--seeds", type=_list(int), default=[0, 1, 2], help="comma-separated seeds")
  p.add_argument("--out", default="runs/demo_matrix", help="one workdir per run under this")


def run(args) -> int:
  if not os.path.isfile(args.config):
    print(f"error: --config: {args.config} not found (run from the repository root)",
          file=sys.stderr)
    return 2
  floor = floors(args.config)
  os.makedirs(args.out, exist_ok=True)
  # Each finished run is appended here; a rerun of the command reuses them (an interrupted
  # matrix goes on where it stopped).
  done_path = os.path.join(args.out, "runs.jsonl")
  done = {}
  if os.path.exists(done_path):
    with open(done_path, encoding="utf-8") as f:
      for line in f:
        r = json.loads(line)
        if r["rc"] == 0 and "error" not in r:
          done[(r["isa"], r["seed"])] = r
  rows = []
  for isa in args.isa:
    for seed in args.seeds:
      row = done.get((isa, seed))
      if row is None:
        name = f"{isa}_seed{seed}"
        row = _run_one(args.config, isa, seed, os.path.join(args.out, name),
                       os.path.join(args.out, f"{name}.log"))
        with open(done_path, "a", encoding="utf-8") as f:
          f.write(json.dumps(row) + "\n")
      rows.append(row)
      print(json.dumps(row), flush=True)
  with open(os.path.join(args.out, "matrix.json"), "w", encoding="utf-8") as f:
    json.dump({"floors": floor, "runs": rows}, f, indent=1)
  table = summarize(rows, floor)
  with open(os.path.join(args.out, "matrix.md"), "w", encoding="utf-8") as f:
    f.write(table + "\n")
  print(table)
  failed = [f"{r['isa']}/seed {r['seed']}" for r in rows if r["rc"] != 0 or "error" in r]
  if failed:
    print(f"error: {len(failed)} of {len(rows)} runs failed: {', '.join(failed)}",
          file=sys.stderr)
    return 1
  return 0


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m jaxface.bench demo", description=__doc__.split("\n\n")[0])
  add_arguments(p)
  return run(p.parse_args(argv))


if __name__ == "__main__":
  sys.exit(main())
