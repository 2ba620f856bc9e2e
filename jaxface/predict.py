"""Age, gender and expression of every face in photos, folders and videos.

  python -m jaxface.predict INPUTS... --out DIR [--detector mtcnn|haar] [--policy all]
      [--every K] [--max-side 2048] [--batch 32] [--no-annotate]
      [--workdir RUN]... [--ensemble] [--pretrained]

INPUTS are image files, folders (walked recursively in sorted order) and video files (every K-th
frame). For each photo or frame it writes ``DIR/<relative path>[.frameNNNNNN].json``: the image,
its size, the detector and the faces, each with its box [x1, y1, x2, y2], score, landmarks and per
task the label and the class probabilities (for age also the expected age in years); and
``<name>.annotated.png`` (boxes, landmarks, labels). ``DIR/summary.csv`` has one row per face.

Models: the three shipped pretrained ones (``jaxface.pretrained``): gender and age on dlib-style
chips fitted to MTCNN's landmarks, expression on fer's crop of the face box. With ``--detector
haar`` there are no landmarks, so only the expression is predicted. Faces are cut on the CPU and
the networks run batched and jitted (batches padded to powers of two, so a folder compiles each
network a few times at most).

Trained runs: ``--workdir RUN`` (repeatable) adds a ``jaxface.train`` workdir (a chain's stage
folder, e.g. ``runs/demo/classifier``). Each face is cut as the run's ``data.eval_pipe`` cuts
(``jaxface.predict_crops``: its geometric ops on the detected box and landmarks), and a run that
trained on saliency-reweighted crops gets the same reweighting from its ML-Net
(``jaxface.load``). A face's record gets ``"runs": {NAME: {task: label, confidence, probs}}``,
NAME the workdir's folder name (``chain/stage`` for a chain's stage; made unique with ``-2``...).
``--ensemble`` averages the probabilities of all runs with the same task name and class names into
``"ensemble": {task: {..., "runs": [NAMES]}}``; runs with other classes under the same task name
are refused. With ``--workdir`` the pretrained models run only when ``--pretrained`` is given too.
A face a run's pipe cannot cut (``align`` needs landmarks, which haar does not give) gets
``{"error": ...}`` under that run and one ``error:`` line on stderr.

A file that cannot be used (missing, empty, not an image, truncated, a non-image file met in a
folder walk) gives one ``error:`` line on stderr and is skipped; the last line is the summary.
Exit status 0 when at least one image was processed, 1 when none was, 2 for bad arguments.

In Python: ``jaxface.predict.analyze(image_or_path)`` returns the JSON's face records.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import os
import sys
import time
from typing import Any, Iterator, Sequence

import cv2
import numpy as np

from data_pipelines import pp
from jaxface import cli
from jaxface import predict_crops, pretrained
from jaxface.faces import chips, crops, get_detector
from jaxface.faces.image_io import ImageReadError, is_image_file, read_image, validate_rgb
from jaxface.faces.types import Face

TASKS = ("gender", "age", "expression")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


def _bucket(n: int) -> int:
  return 1 << max(0, (n - 1).bit_length())


def task_record(spec: pretrained.Pretrained, probs: np.ndarray) -> dict[str, Any]:
  """One task's JSON entry: label, probabilities (and the expected value in years for age)."""
  k = int(np.argmax(probs))
  rec: dict[str, Any] = {"label": spec.classes[k], "confidence": round(float(probs[k]), 6)}
  if spec.class_values is not None:
    rec["years"] = round(float(pretrained.expected_value(spec, probs)), 3)
    rec["probs"] = [round(float(p), 6) for p in probs]
  else:
    rec["probs"] = {c: round(float(p), 6) for c, p in zip(spec.classes, probs)}
  return rec


@dataclasses.dataclass(frozen=True)
class Run:
  """A trained run used by predict: its record name, the loaded model and its crop pipe."""
  name: str
  workdir: str
  trained: Any  # jaxface.trained.Trained
  pipe: pp.Pipeline
  note: str | None = None  # said once on stderr (e.g. a reweighting predict cannot reproduce)

  @property
  def tasks(self):
    return tuple(t for t in self.trained.tasks if t.labelled)


def run_name(workdir: str) -> str:
  """The folder name, or ``chain/stage`` when the parent folder is the chain that ran it."""
  wd = os.path.abspath(workdir)
  parent, base = os.path.split(wd)
  try:
    with open(os.path.join(parent, "config.json"), encoding="utf-8") as f:
      stages = json.load(f).get("stages") or {}
  except (OSError, ValueError, AttributeError):
    stages = {}
  return f"{os.path.basename(parent)}/{base}" if base in stages else base


def load_run(workdir: str, name: str | None = None) -> Run:
  """A workdir as a :class:`Run`; ValueError / FileNotFoundError name what is wrong."""
  from jaxface import trained as trained_lib  # pylint: disable=g-import-not-at-top
  trained = trained_lib.load(workdir)
  config = predict_crops.read_config(workdir)
  try:
    pipe = predict_crops.crop_pipe(config)
  except predict_crops.CropPipeError as e:
    raise ValueError(f"{workdir}: {e}") from None
  note = None
  if config.saliency.mode == "dataset" and float(config.saliency.r) > 0:
    note = (f"{workdir} trained on its dataset's own saliency maps (saliency.mode=dataset); a "
            "new photo has none, so its crops are not reweighted")
  run = Run(name or run_name(workdir), os.path.abspath(workdir), trained, pipe, note)
  if not run.tasks:
    raise ValueError(f"{workdir}: no class or attribute task (tasks: "
                     f"{', '.join(f'{t.name} ({t.kind})' for t in trained.tasks)})")
  return run


def load_runs(workdirs: Sequence[str]) -> list[Run]:
  """Runs of the workdirs, names made unique with ``-2``, ``-3``... in the order given."""
  runs, seen = [], set()
  for wd in workdirs:
    base = name = run_name(wd)
    k = 1
    while name in seen:
      k += 1
      name = f"{base}-{k}"
    seen.add(name)
    runs.append(load_run(wd, name))
  return runs


def ensemble_groups(runs: Sequence[Run]) -> dict[str, tuple[Any, list[str]]]:
  """``{task name: (task, run names)}`` of the runs sharing it; ValueError when two runs name a task
  alike with other kinds or classes."""
  groups: dict[str, tuple[Any, list[str]]] = {}
  for run in runs:
    for t in run.tasks:
      if t.name in groups:
        first, names = groups[t.name]
        if (first.kind, first.class_names) != (t.kind, t.class_names):
          raise ValueError(f"--ensemble: task {t.name!r} has classes {list(first.class_names)} in "
                           f"{names[0]} but {list(t.class_names)} in {run.name}")
        names.append(run.name)
      else:
        groups[t.name] = (t, [run.name])
  return groups


def run_task_record(task, probs: np.ndarray) -> dict[str, Any]:
  """A run's task entry: label and confidence (classes) or the attributes at >= 0.5, and probs."""
  return task.record(probs)


class Analyzer:
  """Detector + the pretrained models; ``analyze(image)`` returns one record per face.

  Args:
    detector: "mtcnn" (landmarks: every task) or "haar" (boxes only: expression only).
    tasks: which pretrained models to run.
    policy: which faces to keep (``jaxface.faces.select_faces``).
    max_side: detect on a copy downscaled to this longer side (None: full resolution).
    batch: largest face batch sent to a network at once.
    runs: trained runs (:func:`load_runs`) whose predictions go under each face's "runs".
    ensemble: also average the runs' probabilities per shared task (:func:`ensemble_groups`).
  """

  def __init__(self, detector: str = "mtcnn", tasks: Sequence[str] = TASKS, policy: str = "all",
               max_side: int | None = 2048, batch: int = 32, runs: Sequence[Run] = (),
               ensemble: bool = False):
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
      raise ValueError(f"unknown task {unknown[0]!r}; choose from {', '.join(TASKS)}")
    if policy not in crops.POLICIES:
      raise ValueError(f"unknown policy {policy!r}; choose one of {', '.join(crops.POLICIES)}")
    if batch < 1:
      raise ValueError(f"batch must be positive, got {batch}")
    self.detector = get_detector(detector, max_side=max_side)
    self.policy = policy
    self.batch = batch
    self.models = {t: pretrained.load(t) for t in tasks}
    self.runs = list(runs)
    self.groups = ensemble_groups(self.runs) if ensemble else None
    self.context = ""  # the image being described, named in the error lines of faces
    # Time spent in the detector and in the networks (np.asarray waits for the device).
    self.detect_seconds = self.network_seconds = 0.0

  def detect(self, image: np.ndarray) -> list[Face]:
    t0 = time.perf_counter()
    found = self.detector.detect(image)
    self.detect_seconds += time.perf_counter() - t0
    return crops.select_faces(found, self.policy, image.shape)

  def _probs(self, loaded: pretrained.Loaded, chips_N: np.ndarray) -> np.ndarray:
    t0 = time.perf_counter()
    out = []
    for i in range(0, len(chips_N), self.batch):
      part = chips_N[i:i + self.batch]
      pad = _bucket(len(part)) - len(part)
      if pad:
        part = np.concatenate([part, np.zeros((pad, *part.shape[1:]), part.dtype)])
      out.append(loaded.probs(part)[:len(part) - pad])
    self.network_seconds += time.perf_counter() - t0
    return np.concatenate(out)

  def describe(self, image: np.ndarray, faces: Sequence[Face]) -> list[dict[str, Any]]:
    """Face records of already detected faces."""
    return self.describe_many([image], [faces])[0]

  def describe_many(self, images: Sequence[np.ndarray],
                    faces: Sequence[Sequence[Face]]) -> list[list[dict[str, Any]]]:
    """Face records of several photos; each network runs once over all their faces."""
    records = [[f.to_dict() for f in fs] for fs in faces]
    grays: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    # dlib's 5 points of a face, shared by every dlib-chip network (gender at 32 px, age at 64).
    points: dict[tuple[int, int], np.ndarray] = {}
    for task, loaded in self.models.items():
      chip = loaded.spec.chip
      cut, where = [], []
      for i, (image, fs) in enumerate(zip(images, faces)):
        for k, f in enumerate(fs):
          if chip["kind"] == "dlib":
            if f.landmarks is None:
              records[i][k][task] = None  # dlib chips need landmarks (the haar detector has none)
              continue
            if (i, k) not in points:
              points[i, k] = chips.dlib_points(image, f.landmarks)
            cut.append(chips.dlib_chip(image, points[i, k], chip["size"],
                                       template=chips.DLIB_TEMPLATE_5)[0])
          else:
            if i not in grays:
              gray = chips.to_gray(image)
              grays[i] = gray, chips.fer_pad(gray)
            gray, padded = grays[i]
            try:
              cut.append(chips.fer_crop(gray, f.box, chip["offsets"], chip["size"], padded)[0])
            except ValueError:  # a box entirely outside the photo
              records[i][k][task] = None
              continue
          where.append((i, k))
      if cut:
        for (i, k), p in zip(where, self._probs(loaded, np.stack(cut))):
          records[i][k][task] = task_record(loaded.spec, p)
    if self.runs:
      self._describe_runs(images, faces, records)
    return records

  def _run_probs(self, run: Run, crops_N: np.ndarray) -> dict[str, np.ndarray]:
    # Pad to a power of two up to the batch size (then full batches): few compiled shapes.
    t0 = time.perf_counter()
    n = len(crops_N)
    size = min(self.batch, _bucket(n))
    if n < size:
      crops_N = np.concatenate([crops_N, np.zeros((size - n, *crops_N.shape[1:]), np.uint8)])
    out = {k: v[:n] for k, v in run.trained.predict(crops_N, batch_size=size).items()}
    self.network_seconds += time.perf_counter() - t0
    return out

  def _describe_runs(self, images, faces, records) -> None:
    all_probs: dict[str, dict[tuple[int, int], np.ndarray]] = {}  # "run/task" -> face -> probs
    for run in self.runs:
      cut, where = [], []
      for i, (image, fs) in enumerate(zip(images, faces)):
        for k, f in enumerate(fs):
          entry = records[i][k].setdefault("runs", {})
          try:
            cut.append(predict_crops.cut(run.pipe, image, f, run.trained, example_id=k))
          except (pp.BadExampleError, ValueError) as e:
            reason = getattr(e, "reason", str(e))
            entry[run.name] = {"error": reason}
            print(f"error: {self.context}face {k}: {run.name}: {reason}", file=sys.stderr)
            continue
          where.append((i, k))
      if not cut:
        continue
      probs = self._run_probs(run, np.stack(cut))
      for t in run.tasks:
        for j, (i, k) in enumerate(where):
          p = probs[t.name][j]
          records[i][k]["runs"].setdefault(run.name, {})[t.name] = run_task_record(t, p)
          all_probs.setdefault(f"{run.name}/{t.name}", {})[(i, k)] = p
    if self.groups is None:
      return
    for task, (t, names) in self.groups.items():
      for i, fs in enumerate(faces):
        for k in range(len(fs)):
          got = [(n, all_probs[f"{n}/{task}"][(i, k)]) for n in names
                 if (i, k) in all_probs.get(f"{n}/{task}", {})]
          if not got:
            continue
          # Mean in float64 of the runs' float32 probabilities (a sum of probabilities stays one).
          mean = np.mean(np.stack([p.astype(np.float64) for _, p in got]), axis=0)
          rec = run_task_record(t, mean)
          rec["runs"] = [n for n, _ in got]
          records[i][k].setdefault("ensemble", {})[task] = rec

  def analyze(self, image: np.ndarray) -> list[dict[str, Any]]:
    image = validate_rgb(image, "image")
    return self.describe(image, self.detect(image))

  def analyze_many(self, images: Sequence[np.ndarray]) -> list[list[dict[str, Any]]]:
    images = [validate_rgb(im, f"images[{i}]") for i, im in enumerate(images)]
    return self.describe_many(images, [self.detect(im) for im in images])


@functools.lru_cache(maxsize=4)
def _default_analyzer(detector: str) -> Analyzer:
  return Analyzer(detector)


def analyze(image_or_path, detector: str = "mtcnn"):
  """Face records (as in the JSON) of an RGB uint8 array or an image path.

  A list of them gives a list of record lists; its faces go through each network in one batch.
  """
  many = isinstance(image_or_path, (list, tuple))
  items = list(image_or_path) if many else [image_or_path]
  images = [read_image(x) if isinstance(x, (str, os.PathLike)) else x for x in items]
  out = _default_analyzer(detector).analyze_many(images)
  return out if many else out[0]


# ---------------------------------------------------------------------------------------------
# Command line.


def is_video_file(path: str) -> bool:
  return path.lower().endswith(VIDEO_EXTENSIONS)


def walk_inputs(inputs: Sequence[str]) -> Iterator[tuple[str, str, str | None]]:
  """(path, name relative to its input, problem or None) for every file under the inputs.

  Folders are walked in sorted order (hidden files skipped); a file that is neither an image nor a
  video by its extension comes with a problem, so the caller reports it.
  """
  for top in inputs:
    if os.path.isfile(top):
      yield top, os.path.basename(top), None
      continue
    for root, dirs, files in os.walk(top):
      dirs[:] = sorted(d for d in dirs if not d.startswith("."))
      for f in sorted(files):
        if f.startswith("."):
          continue
        full = os.path.join(root, f)
        rel = os.path.relpath(full, top)
        ok = is_image_file(f) or is_video_file(f)
        yield full, rel, None if ok else "not an image or video file (skipped)"


def video_frames(path: str, every: int) -> Iterator[tuple[int, np.ndarray]]:
  """(frame index, RGB frame) of every ``every``-th frame; ImageReadError if it cannot be opened."""
  cap = cv2.VideoCapture(path)
  try:
    if not cap.isOpened():
      raise ImageReadError(f"{path}: not a readable video")
    index = 0
    got_any = False
    while True:
      ok = cap.grab()
      if not ok:
        break
      if index % every == 0:
        ok, frame = cap.retrieve()
        if ok and frame is not None:
          got_any = True
          yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
      index += 1
    if not got_any:
      raise ImageReadError(f"{path}: no decodable frames")
  finally:
    cap.release()


def video_frame_count(path: str) -> int:
  """The container's frame count (0 when it does not say)."""
  cap = cv2.VideoCapture(path)
  try:
    return max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))) if cap.isOpened() else 0
  finally:
    cap.release()


def annotate(image: np.ndarray, faces: Sequence[Face], records: Sequence[dict]) -> np.ndarray:
  """BGR copy with the detector drawing of ``jaxface.faces`` plus each face's labels."""
  from jaxface.faces.draw import annotate as draw_faces  # pylint: disable=g-import-not-at-top
  out = draw_faces(image, list(faces))
  t = max(1, round(max(image.shape[:2]) / 400))
  for f, rec in zip(faces, records):
    parts = []
    if rec.get("gender"):
      parts.append(rec["gender"]["label"])
    if rec.get("age"):
      parts.append(f"{rec['age']['years']:.0f}y")
    if rec.get("expression"):
      parts.append(rec["expression"]["label"])
    # Trained runs: the ensemble's labels when there is one, else each run's.
    for entry in [rec["ensemble"]] if rec.get("ensemble") else list(rec.get("runs", {}).values()):
      parts += [v["label"] for v in entry.values() if isinstance(v, dict) and "label" in v]
    x, y = int(round(f.box[0])), int(round(f.box[3])) + 12 * t
    cv2.putText(out, " ".join(parts), (max(0, x), min(out.shape[0] - 2, y)),
                cv2.FONT_HERSHEY_SIMPLEX, 0.4 * t, (255, 255, 0), max(1, t // 2))
  return out


CSV_COLUMNS = ("image", "frame", "face", "x1", "y1", "x2", "y2", "score", "gender",
               "gender_confidence", "age_years", "expression", "expression_confidence")


def run_columns(runs: Sequence[Run], ensemble: bool) -> list[str]:
  """Extra CSV columns: ``RUN:TASK`` (the label) per run's class task, ``ensemble:TASK``."""
  cols = [f"{r.name}:{t.name}" for r in runs for t in r.tasks if t.single_label]
  if ensemble:
    cols += sorted({f"ensemble:{t.name}" for r in runs for t in r.tasks if t.single_label})
  return cols


def csv_rows(image: str, frame: int | None, records: Sequence[dict],
             extra: Sequence[str] = ()) -> Iterator[list]:
  for k, r in enumerate(records):
    g, a, e = r.get("gender"), r.get("age"), r.get("expression")
    more = []
    for col in extra:
      who, task = col.rsplit(":", 1)
      entry = r.get("ensemble", {}) if who == "ensemble" else r.get("runs", {}).get(who, {})
      more.append(entry.get(task, {}).get("label", ""))
    yield [image, "" if frame is None else frame, k, *(f"{v:.1f}" for v in r["box"]),
           f"{r['score']:.4f}", g["label"] if g else "", g["confidence"] if g else "",
           a["years"] if a else "", e["label"] if e else "", e["confidence"] if e else "", *more]


def build_parser() -> argparse.ArgumentParser:
  p = cli.Parser(prog="python -m jaxface.predict", description=__doc__.split("\n\n")[0],
                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  p.add_argument("inputs", nargs="+", metavar="INPUT", help="image, folder or video")
  p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
  p.add_argument("--detector", default="mtcnn", choices=["mtcnn", "haar"])
  p.add_argument("--policy", default="all", choices=list(crops.POLICIES))
  p.add_argument("--every", type=int, default=10, metavar="K", help="video: every K-th frame")
  p.add_argument("--max-side", type=int, default=2048,
                 help="detect on a copy downscaled to this longer side (0: full resolution)")
  p.add_argument("--batch", type=int, default=32, help="faces per network call")
  p.add_argument("--tasks", default=",".join(TASKS), help="comma list of " + ", ".join(TASKS))
  p.add_argument("--no-annotate", action="store_true", help="skip the annotated PNGs")
  p.add_argument("--workdir", action="append", default=[], metavar="RUN",
                 help="a jaxface.train workdir to predict with (repeatable); the pretrained models "
                 "then run only with --pretrained")
  p.add_argument("--ensemble", action="store_true",
                 help="average the --workdir runs' probabilities per shared task")
  p.add_argument("--pretrained", action="store_true",
                 help="with --workdir: run the pretrained models too")
  return p


def _predict_one(analyzer: Analyzer, image: np.ndarray, path: str, name: str,
                 frame_index: int | None, args) -> list[dict]:
  """Detects, describes and writes the JSON (and annotated PNG) of one photo or frame."""
  faces = analyzer.detect(image)
  analyzer.context = f"{name}: "
  records = analyzer.describe(image, faces)
  record = {"image": path, "frame": frame_index, "width": int(image.shape[1]),
            "height": int(image.shape[0]), "detector": analyzer.detector.name,
            "policy": args.policy, "faces": records}
  base = os.path.join(args.out, name)
  os.makedirs(os.path.dirname(base) or ".", exist_ok=True)
  with open(f"{base}.json", "w") as f:
    json.dump(record, f, indent=1)
  if not args.no_annotate and not cv2.imwrite(f"{base}.annotated.png",
                                              annotate(image, faces, records)):
    raise OSError(f"cannot write {base}.annotated.png")
  return records


def main(argv=None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  for name, value, least in (("--every", args.every, 1), ("--batch", args.batch, 1),
                             ("--max-side", args.max_side, 0)):
    if value < least:
      parser.error(f"{name} must be >= {least}, got {value}")
  missing = [p for p in args.inputs if not os.path.exists(p)]
  if missing:
    parser.error(f"input not found: {missing[0]}")
  if os.path.exists(args.out) and not os.path.isdir(args.out):
    parser.error(f"--out {args.out} exists and is not a folder")
  tasks = [t for t in args.tasks.split(",") if t]
  if args.ensemble and not args.workdir:
    parser.error("--ensemble needs --workdir runs")
  if args.workdir and not args.pretrained:
    tasks = []
  bad = [w for w in args.workdir if not os.path.isdir(w)]
  if bad:
    parser.error(f"--workdir {bad[0]}: not a folder")
  try:
    runs = load_runs(args.workdir)
  except (OSError, ValueError, KeyError) as e:
    parser.error(str(e).strip("'\"").replace("\n", " "))
  for run in runs:
    if run.note:
      print(f"note: {run.note}", file=sys.stderr)
  try:
    analyzer = Analyzer(args.detector, tasks, args.policy, args.max_side or None, args.batch,
                        runs, args.ensemble)
  except (ValueError, KeyError) as e:
    parser.error(str(e).strip("'\""))
  except (OSError, ImportError) as e:
    print(f"error: cannot build the {args.detector} detector or the models: {e}", file=sys.stderr)
    return 2
  if args.detector == "haar" and {"gender", "age"} & set(tasks):
    print("note: the haar detector gives no landmarks; gender and age need them (use mtcnn)",
          file=sys.stderr)
  files = list(walk_inputs(args.inputs))
  from jaxface.logging_lib import Progress  # pylint: disable=g-import-not-at-top
  progress = Progress(len(files), 1)
  os.makedirs(args.out, exist_ok=True)
  n_images = n_frames = n_faces = n_bad = 0
  t0 = last = time.perf_counter()
  with open(os.path.join(args.out, "summary.csv"), "w", newline="") as fcsv:
    writer = csv.writer(fcsv)
    extra = run_columns(runs, args.ensemble)
    writer.writerow(list(CSV_COLUMNS) + extra)
    for i, (path, rel, problem) in enumerate(files, start=1):
      try:
        if problem:
          raise ImageReadError(f"{path}: {problem}")
        frame_progress = None
        if is_video_file(path):
          items = ((f"{rel}.frame{k:06d}", k, frame) for k, frame in video_frames(path, args.every))
          count = video_frame_count(path)
          if count:  # a progress line per video too: one video can take longer than a folder
            frame_progress = Progress(-(-count // args.every), 1)
            print(f"{path}: {count} frames, reading every {args.every}", file=sys.stderr)
        else:
          items = iter([(rel, None, read_image(path))])
        for j, (name, frame_index, image) in enumerate(items, start=1):
          records = _predict_one(analyzer, image, path, name, frame_index, args)
          writer.writerows(csv_rows(path, frame_index, records, extra))
          n_faces += len(records)
          n_images += frame_index is None
          n_frames += frame_index is not None
          if frame_progress is not None and time.perf_counter() - last > 2.0:
            frame_progress.report(j, {"faces": n_faces})
            last = time.perf_counter()
      except ImageReadError as e:
        print(f"error: {e}", file=sys.stderr)
        n_bad += 1
      now = time.perf_counter()
      if now - last > 2.0 or i == len(files):
        progress.report(i, {"faces": n_faces})
        last = now
  dt = time.perf_counter() - t0
  print(f"{n_images} images, {n_frames} video frames, {n_faces} faces, {n_bad} bad files skipped, "
        f"{dt:.1f} s (detector {analyzer.detect_seconds:.1f} s); wrote {args.out}")
  return 0 if n_images + n_frames else 1


if __name__ == "__main__":
  cli.run(main)
