"""Looks at a prepared dataset: ``python -m data_pipelines.show NAME [--config CFG]
[--split SPLIT] [--data_dir DIR] [--num 16] [--pipe PIPE] [--seed 0] [--out FILE.png]
[--tile 256]``.

Reads ``--num`` examples of a split prepared by ``python -m data_pipelines.build`` (a seeded random
sample, the same for the same seed), applies a preprocessing pipe (``data_pipelines.pp``; default
"decode") and writes a PNG grid. Each cell shows:

* the image, downscaled (never upscaled) to fit ``--tile`` pixels, with the example's box (green)
  and landmarks (left eye red, right eye blue, nose yellow, mouth left magenta, mouth right cyan)
  as the example carries them after the pipe, so a geometric op's effect on them is visible;
* beside it, when the example has a map (a key of ``pp.MAP_KEYS``), the map in the JET colour map;
  raw fixation points (e.g. SALICON's "fixations") are dotted on it in white only when the pipe is
  plain "decode", because the ops do not move them;
* below both, a label strip: the id, then "key value" for every class label (by class name),
  every scalar, and the number of rows of other tensors (e.g. "fixations 120"). Text never covers
  the image, so a tile's pixels are the decoded image's wherever nothing is drawn.

Examples that the pipe rejects (``BadExampleError``) are counted and replaced by the next ones.
A pipe that stacks views (``oversample10``) gives one cell per view, "[k/N]" after the id.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from typing import Any, Sequence

import cv2
import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import build
from data_pipelines import pp
from data_pipelines.datasets import sources
from jaxface import cli

GAP = 4  # pixels between cells and between an image and its map
LINE_H = 14  # pixels per text line
STRIP_PAD = 6  # pixels below the text lines
FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.4
BACKGROUND = (40, 40, 40)
TEXT_COLOR = (255, 255, 255)
BOX_COLOR = (0, 255, 0)
# RGB, in LANDMARK_NAMES order: left eye, right eye, nose, mouth left, mouth right.
LANDMARK_COLORS = ((255, 0, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255))
POINT_KEYS = ("fixations",)  # raw point lists drawn on the map panel


class ShowError(ValueError):
  """The dataset is not prepared, or a bad split / argument."""


@dataclasses.dataclass
class Sample:
  """One example after the pipe, its id and the label parts of its strip."""
  example: dict[str, Any]
  id: str
  parts: list[str]


def label_parts(example: dict[str, Any], features: tfds.features.FeaturesDict) -> list[str]:
  """"key value" for every label-like feature in feature order: class labels by name, scalars by
  value, other non-image tensors by row count (box and landmarks are drawn instead)."""
  parts = []
  for key, feature in features.items():
    if key not in example or key in ("id", "box", "landmarks") or key in pp.MAP_KEYS:
      continue
    value = example[key]
    if isinstance(feature, tfds.features.ClassLabel):
      parts.append(f"{key} {feature.int2str(int(value))}")
    elif isinstance(feature, (tfds.features.Image, tfds.features.Text)):
      continue
    elif isinstance(feature, tfds.features.Tensor):
      arr = np.asarray(value)
      if arr.ndim == 0:
        v = arr.item()
        parts.append(f"{key} {v:.4g}" if isinstance(v, float) else f"{key} {v}")
      else:
        parts.append(f"{key} {arr.shape[0]}")
  return parts


def wrap(parts: Sequence[str], width: int) -> list[str]:
  """Joins ``parts`` with " | " into lines no wider than ``width`` pixels (a part longer than a
  line gets a line of its own)."""
  lines: list[str] = []
  for part in parts:
    if lines and _text_width(lines[-1] + " | " + part) <= width:
      lines[-1] += " | " + part
    else:
      lines.append(part)
  return lines


def _text_width(text: str) -> int:
  return cv2.getTextSize(text, FONT, FONT_SCALE, 1)[0][0]


def _to_str(value: Any) -> str:
  return value.decode("utf-8", "replace") if isinstance(value, (bytes, np.bytes_)) else str(value)


def resolve(name: str, config: str | None, split: str | None,
            data_dir: str | None) -> tuple[tfds.core.DatasetBuilder, str | None, str]:
  """The prepared builder, config and split; ``ShowError`` if not prepared or unknown."""
  data_dir = os.path.expanduser(data_dir or build.default_data_dir())
  if name in build.BUILDERS:  # registers the class and gives its default config
    cls = build.builder_class(name)
    known = [c.name for c in cls.BUILDER_CONFIGS]
    if config is None and known:
      config = cls.DEFAULT_CONFIG_NAME or known[0]
    if known and config not in known:
      raise ShowError(f"unknown config {config!r} of dataset {name!r}; known: "
                         f"{', '.join(known)}")
  elif not os.path.isdir(os.path.join(data_dir, name)):
    # Checked here: tfds would also search its community catalogue for an unknown name.
    raise ShowError(f"unknown dataset {name!r}: not prepared in {data_dir} and not one of "
                       f"python -m data_pipelines.build's: {', '.join(sorted(build.BUILDERS))}")
  full = f"{name}/{config}" if config else name
  hint = (f"{full} is not prepared in {data_dir}; run: python -m data_pipelines.build {name}"
          + (f" --config {config}" if config else "") + f" --data_dir {data_dir}")
  folder = os.path.join(data_dir, name)
  prepared = sorted(c for c in os.listdir(folder) if c != config and not c.startswith(".") and
                    os.path.isdir(os.path.join(folder, c))) if os.path.isdir(folder) else []
  if prepared and config:  # e.g. utkface built from crop_part1/ without --config
    hint += f" (prepared there: --config {', '.join(prepared)})"
  try:
    builder = tfds.builder(full, data_dir=data_dir)
  except tfds.core.DatasetNotFoundError as e:
    raise ShowError(hint) from e
  if not builder.is_prepared():
    raise ShowError(hint)
  splits = list(builder.info.splits)
  if split is None:
    split = "train" if "train" in splits else splits[0]
  if split not in splits:
    raise ShowError(f"{full} has no split {split!r}; splits: {', '.join(splits)}")
  return builder, config, split


def load_samples(builder: tfds.core.DatasetBuilder, split: str, num: int, pipe: str,
                 seed: int) -> tuple[list[Sample], int]:
  """Up to ``num`` examples of ``split`` in a seeded random order through ``pipe``, and how many
  the pipe rejected."""
  features = builder.info.features
  source = sources.open_source(builder, split)
  pipeline = pp.Pipeline(pipe)
  order = np.random.default_rng(seed).permutation(len(source))
  samples, rejected = [], 0
  for index in order:
    if len(samples) == num:
      break
    record = dict(source[int(index)])
    try:
      example = pipeline(record, np.random.default_rng([seed, int(index)]))
    except pp.BadExampleError as e:
      rejected += 1
      print(f"skipped {_to_str(record.get('id', index))}: {e.reason}")
      continue
    eid = _to_str(example.get("id", f"#{index}"))
    parts = label_parts(example, features)
    views = _views(example)
    for k, view in enumerate(views[:num - len(samples)]):
      samples.append(Sample(view, f"{eid} [{k + 1}/{len(views)}]" if len(views) > 1 else eid,
                            parts))
  return samples, rejected


def _views(example: dict[str, Any]) -> list[dict[str, Any]]:
  """One example per view of a stacked (N, H, W, 3) image (e.g. ``oversample10``), each with
  its own box, landmarks and maps; the example itself otherwise."""
  image = example["image"]
  if np.ndim(image) != 4:
    return [example]
  views = []
  for k in range(image.shape[0]):
    view = dict(example, image=image[k])
    for key in ("box", "landmarks") + pp.MAP_KEYS:
      if example.get(key) is not None:
        view[key] = np.asarray(example[key])[k]
    views.append(view)
  return views


def _fit(image: np.ndarray, tile: int) -> tuple[np.ndarray, float]:
  """``image`` downscaled (area interpolation) so its longer side is at most ``tile``."""
  h, w = image.shape[:2]
  s = min(1.0, tile / max(h, w))
  if s < 1.0:
    size = (max(1, round(w * s)), max(1, round(h * s)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
  return image, s


def _scaled(p: np.ndarray, s: float) -> np.ndarray:
  # Pixel centres sit at integers, so a scale keeps the pixel edge -0.5 fixed.
  return (np.asarray(p, np.float64) + 0.5) * s - 0.5


def image_tile(example: dict[str, Any], tile: int) -> np.ndarray:
  """The image, fitted to ``tile``, with its box and landmarks drawn."""
  image, s = _fit(example["image"], tile)
  image = np.ascontiguousarray(image)
  box = example.get("box")
  if box is not None and np.size(box) == 4:
    x1, y1, x2, y2 = np.round(_scaled(np.reshape(box, 4), s)).astype(int)
    cv2.rectangle(image, (int(x1), int(y1)), (int(x2), int(y2)), BOX_COLOR, 1)
  landmarks = example.get("landmarks")
  if landmarks is not None and np.shape(landmarks) == (5, 2):
    for (x, y), color in zip(np.round(_scaled(landmarks, s)).astype(int), LANDMARK_COLORS):
      cv2.circle(image, (int(x), int(y)), 2, color, -1)
  return image


def map_tile(example: dict[str, Any], tile: int, draw_points: bool) -> np.ndarray | None:
  """The first map of the example in the JET colour map (RGB), fitted to ``tile``; raw fixation
  points dotted in white when ``draw_points``."""
  key = next((k for k in pp.MAP_KEYS if example.get(k) is not None), None)
  if key is None:
    return None
  m = np.asarray(example[key])
  if m.ndim == 3:
    m = m[:, :, 0]
  m, s = _fit(m, tile)
  panel = cv2.cvtColor(cv2.applyColorMap(m, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
  if draw_points:
    for k in POINT_KEYS:
      pts = np.asarray(example.get(k, np.zeros((0, 2))), np.float64).reshape(-1, 2)
      # Fixations index pixels (SALICON: map[int(y), int(x)]); keep those inside the map.
      xy = np.round(_scaled(np.floor(pts), s)).astype(int)
      inside = ((xy[:, 0] >= 0) & (xy[:, 0] < panel.shape[1]) &
                (xy[:, 1] >= 0) & (xy[:, 1] < panel.shape[0]))
      panel[xy[inside, 1], xy[inside, 0]] = 255
  return panel


def render_grid(samples: Sequence[Sample], tile: int, draw_points: bool) -> np.ndarray:
  """The RGB uint8 grid: ceil(sqrt(n)) columns of cells (image, map if any, label strip)."""
  if not samples:
    raise ShowError("no examples to draw")
  images = [image_tile(s.example, tile) for s in samples]
  maps = [map_tile(s.example, tile, draw_points) for s in samples]
  tile_h = max(t.shape[0] for t in images + [m for m in maps if m is not None])
  tile_w = max(t.shape[1] for t in images + [m for m in maps if m is not None])
  has_maps = any(m is not None for m in maps)
  cell_w = 2 * tile_w + GAP if has_maps else tile_w
  lines = [[s.id] + wrap(s.parts, cell_w) for s in samples]
  strip_h = LINE_H * max(len(x) for x in lines) + STRIP_PAD
  cell_h = tile_h + strip_h
  cols = math.ceil(math.sqrt(len(samples)))
  rows = math.ceil(len(samples) / cols)
  grid = np.empty((GAP + rows * (cell_h + GAP), GAP + cols * (cell_w + GAP), 3), np.uint8)
  grid[:] = BACKGROUND
  for i, (image, panel, text) in enumerate(zip(images, maps, lines)):
    top = GAP + (i // cols) * (cell_h + GAP)
    left = GAP + (i % cols) * (cell_w + GAP)
    grid[top:top + image.shape[0], left:left + image.shape[1]] = image
    if panel is not None:
      x = left + tile_w + GAP
      grid[top:top + panel.shape[0], x:x + panel.shape[1]] = panel
    # Drawn on its own strip so text longer than the cell (a very long id) is clipped there.
    strip = np.empty((strip_h, cell_w, 3), np.uint8)
    strip[:] = BACKGROUND
    for j, line in enumerate(text):
      baseline = LINE_H * (j + 1) - 3  # descenders stay inside the line
      cv2.putText(strip, line, (0, baseline), FONT, FONT_SCALE, TEXT_COLOR, 1, cv2.LINE_AA)
    grid[top + tile_h:top + cell_h, left:left + cell_w] = strip
  return grid


def show(name: str, config: str | None = None, split: str | None = None,
            data_dir: str | None = None, num: int = 16, pipe: str = "decode", seed: int = 0,
            out: str | None = None, tile: int = 256) -> dict[str, Any]:
  """Writes the grid; returns its path, shape, the ids drawn (grid order) and the rejections."""
  if num < 1:
    raise ShowError(f"--num must be >= 1, got {num}")
  if tile < 8:
    raise ShowError(f"--tile must be >= 8, got {tile}")
  builder, config, split = resolve(name, config, split, data_dir)
  samples, rejected = load_samples(builder, split, num, pipe, seed)
  draw_points = str(pp.Pipeline(pipe)) == "decode"
  grid = render_grid(samples, tile, draw_points)
  out = out or f"show_{name}_{config or 'default'}_{split}.png"
  if os.path.dirname(out):
    os.makedirs(os.path.dirname(out), exist_ok=True)
  if not cv2.imwrite(out, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
    raise ShowError(f"could not write {out} (a .png path in a writable folder?)")
  return {"path": out, "shape": grid.shape, "ids": [s.id for s in samples],
          "rejected": rejected, "split": split, "config": config}


def main(argv: Sequence[str] | None = None) -> int:
  parser = build.OneLineParser(prog="python -m data_pipelines.show", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("name", help="dataset name, e.g. " + ", ".join(sorted(build.BUILDERS)))
  parser.add_argument("--config", help="builder config (default: the builder's default)")
  parser.add_argument("--split", help="split (default: train, else the first)")
  parser.add_argument("--data_dir", help="prepared data root (default: $TFDS_DATA_DIR or "
                      "~/tensorflow_datasets)")
  parser.add_argument("--num", type=int, default=16, help="examples to draw")
  parser.add_argument("--pipe", default="decode", help="preprocessing pipe (data_pipelines.pp)")
  parser.add_argument("--seed", type=int, default=0, help="sample order and random ops")
  parser.add_argument("--out", help="PNG path (default: show_NAME_CONFIG_SPLIT.png)")
  parser.add_argument("--tile", type=int, default=256, help="longest side of an image tile")
  args = parser.parse_args(argv)
  try:
    result = show(args.name, args.config, args.split, args.data_dir, args.num, args.pipe,
                     args.seed, args.out, args.tile)
  except (ShowError, ValueError, OSError) as e:  # ValueError: a bad pipe string
    parser.error(getattr(e, "line", None) or build.one_line(e))
  h, w = result["shape"][:2]
  extra = f", {result['rejected']} rejected by the pipe" if result["rejected"] else ""
  print(f"wrote {result['path']} ({len(result['ids'])} examples of {args.name}/"
        f"{result['config']} {result['split']}, {w}x{h}{extra})")
  return 0


if __name__ == "__main__":
  cli.run(main)
