"""PNG plots for the workdir: confusion matrices, learning curves, image grids.

Figures are drawn on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``, no pyplot),
so nothing needs a display, no global figure state is kept between calls, and plotting from a
trainer's background thread is safe. Every function creates the output's parent folder and returns
the path written.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Log-event names whose panel is drawn on a log axis (learning rates span decades).
LOG_Y_NAMES = ("lr", "learning_rate")
# Split prefixes stripped from metric names, so train and eval curves of one metric share a panel.
SPLIT_PREFIXES = ("train", "val", "validation", "eval", "test")


def _save(fig: Figure, path: str | os.PathLike, dpi: int) -> str:
  path = os.fspath(path)
  folder = os.path.dirname(path)
  if folder:
    os.makedirs(folder, exist_ok=True)
  FigureCanvasAgg(fig)
  fig.savefig(path, dpi=dpi, format="png")
  return path


def confusion_matrix_png(confusion: Any, class_names: Sequence[str], path: str | os.PathLike,
                          title: str | None = None, dpi: int = 100) -> str:
  """Confusion matrix (rows true, columns predicted): each cell shows its count and row %.

  Cells are coloured by the row-normalised share, so a small class reads as clearly as a large
  one; a class with no examples shows "-" instead of a percentage.
  """
  cm = np.asarray(confusion)
  names = [str(n) for n in class_names]
  if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
    raise ValueError(f"confusion must be a square (K, K) matrix, got shape {cm.shape}")
  if cm.shape[0] != len(names):
    raise ValueError(f"confusion is {cm.shape[0]}x{cm.shape[1]} but class_names has "
                     f"{len(names)} entries")
  if cm.size == 0:
    raise ValueError("confusion is empty")
  if not np.all(np.isfinite(cm)) or np.any(cm < 0):
    raise ValueError("confusion must hold finite counts >= 0")
  k = len(names)
  support = cm.sum(axis=1, keepdims=True)
  share = np.divide(cm, support, out=np.zeros(cm.shape, np.float64), where=support > 0)

  side = max(4.0, 0.9 * k + 2.0)
  fig = Figure(figsize=(side + 1.0, side))
  ax = fig.add_subplot()
  image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
  integer = np.allclose(cm, np.round(cm))
  for i in range(k):
    for j in range(k):
      count = f"{int(round(cm[i, j]))}" if integer else f"{cm[i, j]:.3g}"
      pct = f"{100 * share[i, j]:.1f}%" if support[i, 0] > 0 else "-"
      ax.text(j, i, f"{count}\n{pct}", ha="center", va="center", fontsize=8,
              color="white" if share[i, j] > 0.5 else "black")
  ax.set_xticks(range(k), names, rotation=45, ha="right")
  ax.set_yticks(range(k), names)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  if title:
    ax.set_title(title)
  fig.tight_layout()
  return _save(fig, path, dpi)


def read_metrics_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
  """The log events of a JSON-lines metrics file (one ``{"step": ..., name: value}`` per line).

  A malformed line is an error naming the file and line, except the last line, which a running
  trainer may be writing at this moment: it is skipped with a warning.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"metrics file {path} does not exist")
  with open(path, encoding="utf-8") as f:
    lines = f.read().split("\n")
  last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
  events = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      event = json.loads(line)
      if not isinstance(event, dict):
        raise ValueError(f"expected a JSON object, got {type(event).__name__}")
      if "step" not in event:
        raise ValueError("no 'step' field")
    except ValueError as e:
      if i == last:
        logging.warning("%s: skipping an incomplete last line %d (%s)", path, i + 1, e)
        continue
      raise ValueError(f"{path}, line {i + 1}: not a metrics event: {e}") from None
    events.append(event)
  return events


def _panel(name: str) -> str:
  head, _, rest = name.partition("/")
  return rest if rest and head in SPLIT_PREFIXES else name


def _is_number(v: Any) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def learning_curves_png(metrics_path: str | os.PathLike, path: str | os.PathLike,
                         names: Sequence[str] | None = None, title: str | None = None,
                         dpi: int = 100) -> str:
  """One panel per metric, against step, from a JSON-lines metrics file.

  Names ``train/loss`` and ``val/loss`` share the ``loss`` panel (a leading split name in
  ``SPLIT_PREFIXES`` is dropped for grouping, kept in the legend). ``names`` picks metric names
  (default: every numeric field except ``step``). Learning-rate panels use a log axis.
  """
  events = read_metrics_jsonl(metrics_path)
  series: dict[str, tuple[list[float], list[float]]] = {}
  for event in events:
    step = event["step"]
    if not _is_number(step):
      raise ValueError(f"{os.fspath(metrics_path)}: step must be a number, got {step!r}")
    for key, value in event.items():
      if key == "step" or not _is_number(value) or (names is not None and key not in names):
        continue
      xs, ys = series.setdefault(key, ([], []))
      xs.append(float(step))
      ys.append(float(value))
  if names is not None:
    missing = [n for n in names if n not in series]
    if missing:
      raise ValueError(f"{os.fspath(metrics_path)}: no numeric values for {missing}; have "
                       f"{sorted(series)}")
  if not series:
    raise ValueError(f"{os.fspath(metrics_path)}: no numeric metrics to plot")
  panels: dict[str, list[str]] = {}
  for key in sorted(series):
    panels.setdefault(_panel(key), []).append(key)

  ncols = min(3, len(panels))
  nrows = math.ceil(len(panels) / ncols)
  fig = Figure(figsize=(4.5 * ncols, 3.2 * nrows))
  for n, (panel, keys) in enumerate(panels.items()):
    ax = fig.add_subplot(nrows, ncols, n + 1)
    for key in keys:
      xs, ys = series[key]
      ax.plot(xs, ys, marker="." if len(xs) < 50 else None, label=key)
    values = np.concatenate([series[k][1] for k in keys])
    if panel in LOG_Y_NAMES and np.all(values[np.isfinite(values)] > 0):
      ax.set_yscale("log")
    ax.set_title(panel)
    ax.set_xlabel("step")
    ax.grid(True, alpha=0.3)
    if len(keys) > 1:
      ax.legend(fontsize=8)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  return _save(fig, path, dpi)


def save_image_grid(images_uint8: Any, titles: Sequence[str] | None, path: str | os.PathLike,
                    ncols: int = 4, dpi: int = 100) -> str:
  """Images (a (N, H, W[, C]) uint8 array or a list of such images) in a grid with titles.

  C is 1, 3 (RGB) or 4 (RGBA); images of a list may differ in size (each keeps its aspect).
  """
  images = list(images_uint8)
  if not images:
    raise ValueError("images_uint8 is empty")
  for i, im in enumerate(images):
    im = np.asarray(im)
    if im.dtype != np.uint8:
      raise ValueError(f"images_uint8[{i}] has dtype {im.dtype}, expected uint8")
    if not (im.ndim == 2 or (im.ndim == 3 and im.shape[-1] in (1, 3, 4))):
      raise ValueError(f"images_uint8[{i}] has shape {im.shape}, expected (H, W) or (H, W, C) "
                       "with C in 1, 3, 4")
    images[i] = im[..., 0] if im.ndim == 3 and im.shape[-1] == 1 else im
  if titles is not None and len(titles) != len(images):
    raise ValueError(f"titles has {len(titles)} entries for {len(images)} images")
  if ncols < 1:
    raise ValueError(f"ncols must be >= 1, got {ncols}")
  ncols = min(ncols, len(images))
  nrows = math.ceil(len(images) / ncols)
  fig = Figure(figsize=(2.5 * ncols, 2.7 * nrows))
  for i, im in enumerate(images):
    ax = fig.add_subplot(nrows, ncols, i + 1)
    if im.ndim == 2:
      ax.imshow(im, cmap="gray", vmin=0, vmax=255)
    else:
      ax.imshow(im)
    ax.set_axis_off()
    if titles is not None:
      ax.set_title(str(titles[i]), fontsize=8)
  fig.tight_layout()
  return _save(fig, path, dpi)
