"""Detects faces in photos and writes JSON records, crops and annotated copies.

  python -m jaxface.faces detect IMAGE_OR_DIR --out DIR [--detector mtcnn|haar]
      [--policy all|largest|central|score] [--crops] [--crop-mode margin|align|task1..task5]
      [--margin 0.3] [--square] [--size 224] [--annotate] [--max-side 2048]

For each photo (a directory is walked recursively for image files, in sorted order) it writes
``DIR/<relative path>.json``: the image path, its width and height, the detector, the policy and the
chosen faces (box [x1, y1, x2, y2] in pixel-centre coordinates, score, landmarks by name). With
``--crops`` each face's crop goes to ``<relative path>.face<k>.png`` and its JSON entry gains the
crop file and the 2x3 affine from crop pixels to photo pixels; ``--annotate`` writes
``<relative path>.annotated.png`` with boxes, landmarks and scores drawn. A file that cannot be read
gives one ``error:`` line on stderr and the run goes on; the last line is
``N images, M faces, K errors`` (N = images processed). Exit status 0 when at least one image was
processed, 1 when none was, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import cv2
import numpy as np

from jaxface import cli
from jaxface.faces import crops, get_detector
from jaxface.faces.draw import annotate
from jaxface.faces.image_io import ImageReadError, find_images, read_image
from jaxface.faces.types import Face

CROP_MODES = ("margin", "align") + tuple(f"task{k}" for k in crops.SCHEMES)
# Crop modes that cannot work without landmarks (task3 falls back to the box bottom).
NEEDS_LANDMARKS = ("align", "task1", "task5")



def face_crop(image: np.ndarray, face: Face, args) -> tuple[np.ndarray, np.ndarray]:
  if args.crop_mode == "margin":
    return crops.crop(image, crops.margin_box(face.box, args.margin, square=args.square), args.size)
  if args.crop_mode == "align":
    return crops.align(image, face.landmarks, args.size, face_fraction=1 / (1 + args.margin))
  return crops.task_crop(image, face, int(args.crop_mode[4:]), args.size, context=args.margin)


def _write_png(path: str, image_bgr: np.ndarray) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  if not cv2.imwrite(path, image_bgr):
    raise OSError(f"cannot write {path}")


def cmd_detect(args, parser) -> int:
  if not os.path.exists(args.input):
    parser.error(f"IMAGE_OR_DIR not found: {args.input}")
  if args.size <= 0:
    parser.error(f"--size must be positive, got {args.size}")
  if args.margin < 0:
    parser.error(f"--margin must be >= 0, got {args.margin}")
  if args.max_side < 0:
    parser.error(f"--max-side must be >= 0 (0: no downscale), got {args.max_side}")
  if args.crops and args.detector == "haar" and args.crop_mode in NEEDS_LANDMARKS:
    parser.error(f"--crop-mode {args.crop_mode} needs landmarks; the haar detector has none "
                 "(use --detector mtcnn or --crop-mode margin)")
  images = find_images(args.input)
  if not images:
    print(f"error: no image files under {args.input}", file=sys.stderr)
    print("0 images, 0 faces, 0 errors")
    return 1
  try:
    detector = get_detector(args.detector, max_side=args.max_side or None)
  except (OSError, ValueError, ImportError) as e:
    print(f"error: cannot build the {args.detector} detector: {e}", file=sys.stderr)
    return 2
  n_images = n_faces = n_errors = 0
  for path, rel in images:
    t0 = time.perf_counter()
    try:
      image = read_image(path)
    except ImageReadError as e:
      print(f"error: {e}", file=sys.stderr)
      n_errors += 1
      continue
    faces = crops.select_faces(detector.detect(image), args.policy, image.shape)
    record = {"image": path, "width": int(image.shape[1]), "height": int(image.shape[0]),
              "detector": detector.name, "policy": args.policy, "faces": []}
    base = os.path.join(args.out, rel)
    for k, face in enumerate(faces):
      entry = face.to_dict()
      if args.crops:
        patch, A = face_crop(image, face, args)
        crop_path = f"{base}.face{k}.png"
        _write_png(crop_path, cv2.cvtColor(patch, cv2.COLOR_RGB2BGR))
        entry.update(crop=os.path.relpath(crop_path, args.out), crop_mode=args.crop_mode,
                     crop_affine=A.tolist())
      record["faces"].append(entry)
    if args.annotate:
      _write_png(f"{base}.annotated.png", annotate(image, faces))
    os.makedirs(os.path.dirname(base) or ".", exist_ok=True)
    with open(f"{base}.json", "w") as f:
      json.dump(record, f, indent=1)
    n_images += 1
    n_faces += len(faces)
    print(f"{path}: {len(faces)} face(s), {time.perf_counter() - t0:.2f} s", flush=True)
  print(f"{n_images} images, {n_faces} faces, {n_errors} errors")
  return 0 if n_images else 1


def main(argv=None) -> int:
  parser = cli.Parser(prog="python -m jaxface.faces",
                      description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  p = sub.add_parser("detect", help="detect faces, write JSON / crops / annotated images",
                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("input", metavar="IMAGE_OR_DIR")
  p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
  p.add_argument("--detector", default="mtcnn", choices=["mtcnn", "haar"])
  p.add_argument("--policy", default="all", choices=list(crops.POLICIES),
                 help="which faces to keep per image")
  p.add_argument("--crops", action="store_true", help="write a crop PNG per face")
  p.add_argument("--crop-mode", default="margin", choices=list(CROP_MODES),
                 help="margin: box + margin; align: 5-point alignment zoomed out by the margin; "
                      "taskN: Zhang et al. scheme N with the margin as context")
  p.add_argument("--margin", type=float, default=0.3,
                 help="relative box enlargement in total (0.3: 15%% per side)")
  p.add_argument("--square", action="store_true", help="margin mode: square the box first")
  p.add_argument("--size", type=int, default=224, help="crop side in pixels")
  p.add_argument("--annotate", action="store_true", help="write an annotated copy of each image")
  p.add_argument("--max-side", type=int, default=2048,
                 help="detect on a copy downscaled to this longer side (0: full resolution)")
  args = parser.parse_args(argv)
  if args.command == "detect":
    return cmd_detect(args, parser)
  return 2


if __name__ == "__main__":
  cli.run(main)
