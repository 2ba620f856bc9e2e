"""Run logging: TensorBoard event files (tensorboardX, no TensorFlow), a JSON-lines metrics file,
and a one-line progress report with rate and ETA."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Mapping

import jax


class MetricWriter:
  """Writes scalars to ``workdir/tb`` and ``workdir/metrics.jsonl`` (process 0 only)."""

  def __init__(self, workdir: str, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._tb = None
    self._jsonl = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(os.path.join(workdir, "tb"))
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in scalars.items()}
    for k, v in clean.items():
      if math.isfinite(v):
        self._tb.add_scalar(k, v, step)
    self._jsonl.write(json.dumps({"step": int(step), **clean}) + "\n")
    self._jsonl.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._jsonl.close()
      self._tb = self._jsonl = None


def format_duration(seconds: float) -> str:
  seconds = max(0, int(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
  """``step 120/1000 [12%] loss 1.234 ... 85.1 img/s ETA 3m10s`` lines on stderr.

  ``label`` and ``unit`` name what is counted and what the rate counts (the saliency producer:
  ``saliency train 120/1000 [12%] | 85.1 maps/s``).
  """

  def __init__(self, total_steps: int, batch_size: int, start_step: int = 0, stream=None,
               label: str = "step", unit: str = "img"):
    self.total = total_steps
    self.batch_size = batch_size
    self.label, self.unit = label, unit
    self.stream = stream or sys.stderr
    self._t0 = time.perf_counter()
    self._s0 = start_step
    self.enabled = jax.process_index() == 0

  def rate(self, step: int) -> float:
    dt = time.perf_counter() - self._t0
    return (step - self._s0) * self.batch_size / dt if dt > 0 and step > self._s0 else 0.0

  def report(self, step: int, scalars: Mapping[str, Any]) -> str:
    rate = self.rate(step)
    remaining = (self.total - step) * self.batch_size / rate if rate > 0 else float("nan")
    parts = [f"{self.label} {step}/{self.total} [{100 * step / max(1, self.total):3.0f}%]"]
    parts += [f"{k} {v:.4g}" for k, v in scalars.items()]
    parts.append(f"{rate:.1f} {self.unit}/s")
    if math.isfinite(remaining):
      parts.append(f"ETA {format_duration(remaining)}")
    line = " | ".join(parts)
    if self.enabled:
      print(line, file=self.stream, flush=True)
    return line
