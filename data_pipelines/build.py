"""Prepares a dataset: ``python -m data_pipelines.build NAME [--config CFG] [--manual_dir DIR]
[--data_dir DIR] [--overwrite] [--layout] [--detect mtcnn|haar|none]``.

``--detect`` builds the config's detected variant (``faces_age`` -> ``faces_age_mtcnn``): the
detector runs once per image and the records store box, score and five landmarks
(``data_pipelines.datasets.detect``; ``--detect_select``, ``--detect_no_face``: its policies).

Without ``--config`` the builder's default config is built, unless the builder picks one from what
the manual directory holds (``config_for_manual_dir``, e.g. utkface: ``crop_part1/``). ``--layout``
prints the manual directory layout the builder expects. A wrong ``--manual_dir`` (missing, or not
holding what the builder reads) and any other bad argument or file is answered with one line on
stderr naming what was looked for and what is there, exit status 2.

Writes ArrayRecord files with tfds (no TensorFlow) to ``DATA_DIR/NAME/CONFIG/VERSION`` and prints
a summary: split sizes, a histogram of every class-label feature per split (read back from the
written files), and the examples the builder skipped with their reasons. The summary is also
saved as ``DATA_DIR/NAME/CONFIG/summary.json``.

DATA_DIR defaults to $TFDS_DATA_DIR, else ~/tensorflow_datasets.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import io
import json
import os
import time
from typing import Any, Sequence

import data_pipelines  # noqa: F401  (the importlib_resources shim, before tfds builds)
from data_pipelines.datasets import tfds_compat
import tensorflow_datasets as tfds
from jaxface import cli

# Dataset name -> "module:class"; modules are imported only when their dataset is built.
BUILDERS = {
    "synthetic_faces": "data_pipelines.datasets.synthetic_faces:SyntheticFaces",
    "adience": "data_pipelines.datasets.adience:Adience",
    "affectnet": "data_pipelines.datasets.affectnet:AffectNet",
    "utkface": "data_pipelines.datasets.utkface:UTKFace",
    "celeba": "data_pipelines.datasets.celeba:CelebA",
    "lfw_gender": "data_pipelines.datasets.lfw_gender:LfwGender",
    "fotw": "data_pipelines.datasets.fotw:Fotw",
    "salicon": "data_pipelines.datasets.salicon:Salicon",
    "fer2013": "data_pipelines.datasets.fer2013:Fer2013",
    "image_folder": "data_pipelines.datasets.image_folder:ImageFolder",
}
SHOW_SKIPPED = 10  # skipped examples printed (summary.json holds them all)
SHOW_SIZES = 8  # most common image sizes listed per split; the rest are counted together
SHOW_ENTRIES = 8  # manual directory entries named in a one-line error


class BuildError(ValueError):
  """An unknown dataset or config, or missing manual data."""


class ManualDataError(BuildError, FileNotFoundError):
  """Manual data not where the builder looks. ``line``: what was looked for and what is there,
  in one line (what the CLI prints); the message adds the builder's download instructions."""

  def __init__(self, line: str, instructions: str | None = None):
    super().__init__(line + (f"\nExpected:\n{instructions}" if instructions else ""))
    self.line = line


class OneLineParser(argparse.ArgumentParser):
  """Bad arguments: one line on stderr, exit status 2 (argparse would print the usage too)."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message}\n")


def describe_dir(path: str) -> str:
  """What ``path`` is, in a few words: missing, a file, empty, or its first entries."""
  if not os.path.exists(path):
    return "nothing (it does not exist)"
  if not os.path.isdir(path):
    return "a file, not a folder"
  entries = sorted(e.name + ("/" if e.is_dir() else "") for e in os.scandir(path))
  if not entries:
    return "an empty folder"
  shown = ", ".join(entries[:SHOW_ENTRIES])
  more = f", ... ({len(entries)} entries)" if len(entries) > SHOW_ENTRIES else ""
  return f"{shown}{more}"


def one_line(text: str) -> str:
  """``text`` with its lines joined (error messages for a one-line CLI answer)."""
  return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def default_data_dir() -> str:
  return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def builder_class(name: str) -> type[tfds.core.DatasetBuilder]:
  """The builder class registered under ``name`` (imports its module)."""
  if name not in BUILDERS:
    raise BuildError(f"unknown dataset {name!r}; known: {', '.join(sorted(BUILDERS))}")
  module, cls = BUILDERS[name].split(":")
  return getattr(importlib.import_module(module), cls)


def config_names(name: str) -> list[str]:
  return [c.name for c in builder_class(name).BUILDER_CONFIGS]


def _histograms(builder: tfds.core.DatasetBuilder, split: str) -> dict[str, dict[str, int]]:
  """Counts of every top-level ClassLabel feature in ``split``, by class name, zeros included."""
  features = builder.info.features
  labels = {k: f for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)}
  counts = {k: collections.Counter() for k in labels}
  sizes = collections.Counter()
  source = builder.as_data_source(split, decoders=tfds_compat.skip_image_decoding(features))
  for i in range(len(source)):
    record = source[i]
    for k in labels:
      counts[k][int(record[k])] += 1
    if "image" in record:
      sizes[_image_size(record["image"])] += 1
  return ({k: {f.int2str(c): counts[k][c] for c in range(f.num_classes)}
           for k, f in labels.items()}, _size_histogram(sizes))


def _image_size(data) -> str:
  """"WxH" of encoded image bytes, read from the file header alone (no decode)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top  (matplotlib's dependency)
  try:
    with Image.open(io.BytesIO(bytes(data))) as im:
      return f"{im.size[0]}x{im.size[1]}"
  except Exception:  # pylint: disable=broad-except  (the loader's decode skips and names it)
    return "unreadable"


def _size_histogram(sizes: collections.Counter) -> dict[str, int]:
  """The ``SHOW_SIZES`` most common sizes (most frequent first, ties by name), the rest as "other sizes": a
  photo of an odd size among fixed-size chips (a 1x1 file among UTKFace's 200x200) shows here."""
  common = sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))[:SHOW_SIZES]  # ties by name
  out = dict(common)
  rest = sum(sizes.values()) - sum(n for _, n in common)
  if rest:
    out["other sizes"] = rest
  return out


def summarize(builder: tfds.core.DatasetBuilder, skipped: Sequence[tfds_compat.Skipped],
              **extra: Any) -> dict[str, Any]:
  """The JSON-ready summary of a prepared dataset."""
  splits = {}
  for split, info in builder.info.splits.items():
    histograms, sizes = _histograms(builder, split)
    splits[split] = {"num_examples": int(info.num_examples), "histograms": histograms,
                     "image_sizes": sizes}
  return {
      "dataset": builder.name,
      "config": builder.builder_config.name if builder.builder_config else None,
      "version": str(builder.version),
      "path": os.fspath(builder.data_path),
      **extra,
      "splits": splits,
      "skipped": {"count": len(skipped), "examples": [s._asdict() for s in skipped]},
  }


def choose_config(cls: type[tfds.core.DatasetBuilder], config: str | None,
                  manual_dir: str | None) -> str | None:
  """``config``, else the one the builder picks from ``manual_dir``, else its default."""
  known = [c.name for c in cls.BUILDER_CONFIGS]
  if config is None and manual_dir and hasattr(cls, "config_for_manual_dir"):
    config = cls.config_for_manual_dir(os.path.expanduser(manual_dir))
  if config is None and known:
    config = cls.DEFAULT_CONFIG_NAME or known[0]
  return config


def detected_config(cls: type[tfds.core.DatasetBuilder], config: str | None, detect: str | None,
                    select: str | None = None, no_face: str | None = None) -> str | None:
  """The builder config holding ``config``'s records with faces detected by ``detect`` at build
  time (``data_pipelines.datasets.detect``); ``config`` itself for ``detect`` None / "none"."""
  from data_pipelines.datasets import detect as detect_lib  # pylint: disable=g-import-not-at-top
  if not detect or detect == "none":
    return config
  allowed = getattr(cls, "DETECTORS", ())
  if detect not in allowed:
    raise BuildError(f"--detect {detect}: dataset {cls.name!r} " + (
        f"detects with {', '.join(allowed)} (or none)" if allowed else "has no detection pass "
        "(its records hold the face box or need none)"))
  try:
    return detect_lib.config_name(config, detect, select or detect_lib.DEFAULT_SELECT,
                                  no_face or detect_lib.DEFAULT_NO_FACE)
  except ValueError as e:
    raise BuildError(str(e)) from None


def build(name: str, config: str | None = None, data_dir: str | None = None,
          manual_dir: str | None = None, overwrite: bool = False, detect: str | None = None,
          detect_select: str | None = None, detect_no_face: str | None = None) -> dict[str, Any]:
  """Prepares ``name/config`` (unless already there), writes and returns its summary.

  ``detect`` ("mtcnn" | "haar" | "none"): build the config's detected variant instead
  (``detected_config``: ``faces_age`` -> ``faces_age_mtcnn``), a detector run once per image.

  ``BuildError`` (one line) for an unknown dataset or config and for manual data that is not
  where the builder looks: it names what was looked for and what the manual directory holds.
  """
  cls = builder_class(name)
  known = [c.name for c in cls.BUILDER_CONFIGS]
  config = detected_config(cls, choose_config(cls, config, manual_dir), detect, detect_select,
                           detect_no_face)
  if known and config not in known:
    raise BuildError(f"unknown config {config!r} of dataset {name!r}; known: {', '.join(known)}")
  data_dir = os.path.expanduser(data_dir or default_data_dir())
  manual_dir = os.path.expanduser(manual_dir) if manual_dir else None
  manual = manual_dir or os.path.join(data_dir, "downloads", "manual")
  builder = cls(config=config, data_dir=data_dir, file_format=tfds_compat.FILE_FORMAT)
  summary_path = os.path.join(data_dir, name, config or "", "summary.json")
  reused = builder.is_prepared() and not overwrite
  mode = (tfds.download.GenerateMode.FORCE_REDOWNLOAD if overwrite else
          tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  layout = f"layout: python -m data_pipelines.build {name} --layout"
  instructions = getattr(cls, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
  start = time.perf_counter()
  try:
    # The builder already has the file format (passing it here again fails on rebuilds).
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir, download_mode=mode))
  except AssertionError as e:
    if "Manual directory" not in str(e):
      raise
    raise ManualDataError(
        f"{name}/{config}: manual data not found in {manual} (looked for that folder; found "
        f"{describe_dir(manual)}) ({layout})", instructions) from e
  except (FileNotFoundError, NotADirectoryError) as e:
    # The builders name the path they expected; the download instructions make it many lines.
    what = one_line(str(e).replace(instructions, "") if instructions else str(e))
    raise ManualDataError(f"{name}/{config}: {what}; found in {manual}: {describe_dir(manual)} "
                          f"({layout})", instructions) from e
  seconds = time.perf_counter() - start
  skipped = list(getattr(builder, "skipped", []))
  extra = builder.summary_extra() if hasattr(builder, "summary_extra") else {}
  if reused and os.path.exists(summary_path):  # keep what the original build found
    with open(summary_path) as f:
      old = json.load(f)
    skipped = [tfds_compat.Skipped(**s) for s in old["skipped"]["examples"]]
    extra = {k: old[k] for k in extra if k in old}
  summary = summarize(builder, skipped, file_format=tfds_compat.FILE_FORMAT, reused=reused,
                      build_seconds=round(seconds, 3), **extra)
  os.makedirs(os.path.dirname(summary_path), exist_ok=True)
  with open(summary_path, "w") as f:
    json.dump(summary, f, indent=2)
  summary["summary_path"] = summary_path
  return summary


def _listing(title: str, count: int, items: Sequence[str]) -> list[str]:
  """``title: count`` and the first ``SHOW_SKIPPED`` items, the rest counted."""
  lines = [f"{title}: {count}"] + [f"  {item}" for item in items[:SHOW_SKIPPED]]
  if count > SHOW_SKIPPED:
    lines.append(f"  ... {count - SHOW_SKIPPED} more in summary.json")
  return lines


def format_summary(summary: dict[str, Any]) -> str:
  """Human-readable summary: sizes, histograms per split, skipped examples."""
  s = summary
  how = "reused" if s.get("reused") else f"built in {s.get('build_seconds', 0):.1f} s"
  lines = [f"{s['dataset']}/{s['config']} {s['version']} ({how}): {s['path']}",
           f"{'split':<12}{'examples':>10}"]
  for split, info in s["splits"].items():
    lines.append(f"{split:<12}{info['num_examples']:>10}")
  usable = sum(info["num_examples"] for info in s["splits"].values())
  if s.get("files") is not None:
    lines.append(f"usable: {usable} of {s['files']} files in {s.get('source')} "
                 f"({s['skipped']['count']} skipped)")
  for split, info in s["splits"].items():
    for label, hist in info["histograms"].items():
      counts = " ".join(f"{k}:{v}" for k, v in hist.items())
      lines.append(f"{split:<12}{label:<12}{counts}")
  for split, info in s["splits"].items():
    if info.get("image_sizes"):  # absent in summaries written before the field existed
      sizes = " ".join(f"{k}:{v}" for k, v in info["image_sizes"].items())
      lines.append(f"{split:<12}{'image size':<12}{sizes}")
  skipped = s["skipped"]
  lines += _listing("skipped", skipped["count"],
                    [f"{e['split']} {e['id']}: {e['reason']}" for e in skipped["examples"]])
  detection = s.get("detection")
  if detection:
    counts = " ".join(f"{k}:{v}" for k, v in detection.get("counts", {}).items())
    lines.append(f"detection ({detection['detector']}, one face: {detection['select']}, no face: "
                 f"{detection['no_face']}): {counts or 'no image'}")
  repaired = s.get("repaired")
  if repaired is not None:
    lines += _listing("repaired", repaired["count"],
                      [f"{e['split']} {e['id']}: {e['repair']}" for e in repaired["examples"]])
  ignored = s.get("ignored")
  if ignored is not None:
    if isinstance(ignored, dict):  # utkface: {"count", "paths"}
      count, paths = ignored["count"], ignored["paths"]
    else:  # image_folder: the list of paths
      count, paths = len(ignored), list(ignored)
    lines += _listing("ignored (not examples)", count, paths)
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  parser = OneLineParser(prog="python -m data_pipelines.build", description=__doc__,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("name", help=f"dataset: {', '.join(sorted(BUILDERS))}")
  parser.add_argument("--config", help="builder config (default: the builder's default)")
  parser.add_argument("--manual_dir", help="manually downloaded data (datasets that need it)")
  parser.add_argument("--data_dir", help="output root (default: $TFDS_DATA_DIR or "
                      "~/tensorflow_datasets)")
  parser.add_argument("--overwrite", action="store_true", help="rebuild even if prepared")
  parser.add_argument("--detect", choices=("mtcnn", "haar", "none"), default="none",
                      help="detect the faces once at build time and store box, score and five "
                      "landmarks (builds the config's <config>_<detector> variant)")
  parser.add_argument("--detect_select", choices=("largest_nearest_centre", "largest",
                                                  "nearest_centre"),
                      help="which face of a multi-face image (default largest_nearest_centre)")
  parser.add_argument("--detect_no_face", choices=("skip", "whole_image"),
                      help="an image without a face: skipped and counted (default) or kept "
                      "with the whole image as its box")
  parser.add_argument("--layout", action="store_true",
                      help="print the manual directory layout the builder reads, and exit")
  args = parser.parse_args(argv)
  try:
    if args.layout:
      cls = builder_class(args.name)
      print(getattr(cls, "MANUAL_DOWNLOAD_INSTRUCTIONS", None) or
            f"{args.name} needs no manual data.")
      return 0
    summary = build(args.name, args.config, args.data_dir, args.manual_dir, args.overwrite,
                    args.detect, args.detect_select, args.detect_no_face)
  except ManualDataError as e:
    parser.error(e.line)
  except (BuildError, ValueError, OSError) as e:
    # ValueError / OSError: a builder's answer to a bad file (bad header, unreadable folder).
    parser.error(one_line(e))
  print(format_summary(summary))
  print(f"summary: {summary['summary_path']}")
  return 0


if __name__ == "__main__":
  cli.run(main)
