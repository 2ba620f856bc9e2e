"""``python -m jaxface.explain``: saliency maps, faithfulness metrics and sanity checks of a model.

  python -m jaxface.explain (--workdir DIR | --model pretrained:NAME | --model FILE.npz)
      --method gradcam,gradcampp,scorecam,cam,occlusion,cis,cms --images PATH --out DIR
      [--metrics] [--sanity] [--score prob|logit] [--target argmax|CLASS] [--faces none|mtcnn]

Each image (a face crop, or a photo with ``--faces mtcnn``) is resized to the model's input. Per
image it writes ``<name>_input.png``, per method ``<name>_<method>.png`` (the map) and
``<name>_<method>_overlay.png``, and ``<name>_compare.png`` (all side by side); CIS also
``<name>_cis_canonical.png``. ``cis``/``cms`` take the correspondence from
per-image meshes (``--vertices DIR --canonical FILE``, the paper's PRNet setting) or else from
landmarks (``--landmarks FILE``, or found: five by MTCNN, or with ``--points 68`` dlib's 68 when
the ``dlib`` extra is installed). ``cms.png`` (the CMS on the mean canonical face),
``cms.npy`` and ``cms_coverage.png`` summarise the folder; ``results.json`` records every
setting. ``--metrics`` writes ``metrics.json`` and ``metrics.md`` (Average Drop %, % Increase,
Win % of the methods on the negative explanation images, CMS re-projected onto each face);
``--sanity`` writes ``sanity.json`` (cascading randomisation of the model for each method but
CIS/CMS, on up to four images).
Unreadable images, and images without a face where one is needed, are reported and skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

import cv2
import numpy as np

from jaxface import cli

METHODS = ("gradcam", "gradcampp", "scorecam", "cam", "occlusion", "cis", "cms")
_CAMS = ("gradcam", "gradcampp", "scorecam", "cam")


class UsageError(ValueError):
  pass


def build_parser() -> argparse.ArgumentParser:
  p = cli.Parser(prog="python -m jaxface.explain", description=__doc__.split("\n")[0])
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--workdir", help="a jaxface.train run directory")
  src.add_argument("--model", help="pretrained:NAME (gender, age, expression) or a converted .npz")
  p.add_argument("--checkpoint", default=None, help="latest | best | STEP (with --workdir)")
  p.add_argument("--output", default=None, help="task explained when the model has several")
  p.add_argument("--method", default="gradcam", help="comma list of " + ",".join(METHODS))
  p.add_argument("--images", required=True, help="an image file or a folder of images")
  p.add_argument("--out", required=True, help="output directory")
  p.add_argument("--score", default="prob", choices=("prob", "logit"),
                 help="confidence explained: softmax probability or logit")
  p.add_argument("--target", default="argmax", help="argmax or a class index")
  p.add_argument("--layer", default=None, help="aux entry for the CAMs (default: features)")
  p.add_argument("--variant", default="official", choices=("official", "pgc"),
                 help="Grad-CAM++ / Score-CAM variant (official code or pytorch-grad-cam)")
  p.add_argument("--patch", type=int, default=0,
                 help="occlusion / CIS patch (default: 15 at 224 px, scaled to the input)")
  p.add_argument("--stride", type=int, default=0, help="occlusion stride (default: patch / 2)")
  p.add_argument("--fill", default="mean", help="mean, black or a pixel value 0..255")
  p.add_argument("--vertices", default=None,
                 help="folder of per-image meshes <name>.npy|.mat, (N, 2|3) photo pixels (e.g. "
                      "PRNet); z enables the occlusion test")
  p.add_argument("--canonical", default=None, help="canonical mesh .npy|.mat, same indexing")
  p.add_argument("--canonical-size", default=None, help="H,W of the canonical mesh's frame")
  p.add_argument("--vertex-stride", type=int, default=1, help="use every k-th mesh vertex")
  p.add_argument("--faces", default="none", choices=("none", "mtcnn"),
                 help="mtcnn: crop the largest face of each photo first")
  p.add_argument("--landmarks", default=None,
                 help="JSON {image name: [[x, y] x 5 or 68]} in photo pixels (else they are found)")
  p.add_argument("--points", type=int, default=5, choices=(5, 68),
                 help="cis / cms correspondence: 5 MTCNN points or dlib's 68 (extra 'dlib')")
  p.add_argument("--batch-size", type=int, default=8)
  p.add_argument("--metrics", action="store_true", help="Average Drop / Increase / Win %%")
  p.add_argument("--sanity", action="store_true", help="cascading randomisation check")
  return p


def _fail(msg: str) -> int:
  print(f"jaxface.explain: error: {msg}", file=sys.stderr)
  return 2


def _find_images(path: str) -> list[tuple[str, str]]:
  from jaxface.faces.image_io import find_images  # pylint: disable=g-import-not-at-top
  if not os.path.exists(path):
    raise UsageError(f"--images {path}: no such file or directory")
  found = find_images(path)
  if not found:
    raise UsageError(f"--images {path}: no image files in the folder")
  return found


def _check(args) -> tuple[list[str], Any]:
  methods = [m.strip() for m in args.method.split(",") if m.strip()]
  bad = [m for m in methods if m not in METHODS]
  if bad or not methods:
    raise UsageError(f"--method {args.method!r}: choose from {','.join(METHODS)}")
  target: Any = "argmax"
  if args.target != "argmax":
    try:
      target = int(args.target)
    except ValueError:
      raise UsageError(f"--target {args.target!r}: 'argmax' or a class index") from None
  if args.batch_size < 1:
    raise UsageError(f"--batch-size {args.batch_size}: must be >= 1")
  if args.vertex_stride < 1:
    raise UsageError(f"--vertex-stride {args.vertex_stride}: must be >= 1")
  if args.patch < 0 or args.stride < 0:
    raise UsageError("--patch and --stride must be positive")
  if args.fill not in ("mean", "black"):
    try:
      float(args.fill)
    except ValueError:
      raise UsageError(f"--fill {args.fill!r}: mean, black or a number") from None
  return methods, target


class _Faces:
  """Reads, crops and resizes images; finds landmarks when CIS needs them."""

  def __init__(self, ex, crop: bool, landmarks: bool, given: dict | None = None,
               points: int = 5):
    self.ex, self.crop, self.landmarks = ex, crop, landmarks
    self.given = given or {}
    self.points = points
    self._det = None
    self._dlib = None
    if landmarks and points == 68:
      from jaxface.explain import dlib68  # pylint: disable=g-import-not-at-top
      try:
        self._dlib = dlib68.Landmarks68()
      except dlib68.Unavailable as e:
        raise UsageError(f"--points 68: {e}") from None

  def detector(self):
    if self._det is None:
      from jaxface.faces import get_detector  # pylint: disable=g-import-not-at-top
      self._det = get_detector("mtcnn")
    return self._det

  def __call__(self, path: str, name: str):
    """``(pixels (H, W, C) float32 0..255, display RGB uint8, landmarks (P, 2) or None,
    photo -> input point map, photo shape)``."""
    from jaxface.faces import crops, read_image, select_faces  # pylint: disable=g-import-not-at-top
    rgb = read_image(path)
    photo_shape = rgb.shape[:2]
    lm, to_crop = None, None  # Landmarks in photo pixels; photo -> crop affine.
    if name in self.given and not self.crop:
      lm = np.asarray(self.given[name], np.float64)
      if lm.shape != (self.points, 2):
        raise ValueError(f"--landmarks: {name} needs {self.points} (x, y) points "
                         f"(--points), got shape {lm.shape}")
    elif self._dlib is not None and not self.crop:
      lm = self._dlib(rgb)
    elif self.crop or self.landmarks:
      five = self.landmarks and self._dlib is None
      faces = [f for f in self.detector().detect(rgb) if f.landmarks is not None or not five]
      if not faces and (self.crop or self.landmarks):
        raise ValueError("no face found" if self.crop else
                         "no face landmarks found (needed by cis / cms)")
      face = select_faces(faces, "largest", rgb.shape)[0]
      if self._dlib is not None:  # dlib's 68 points of the face MTCNN chose.
        lm = self._dlib(rgb, near=face.box)
      elif face.landmarks is not None:
        lm = np.asarray(face.landmarks, np.float64)
      if self.crop:
        side = max(self.ex.input_size)
        rgb, a = crops.crop(rgb, crops.margin_box(face.box, 0.3, square=True), side)
        to_crop = crops.invert_affine(a)
    h, w = self.ex.input_size
    scale = np.array([w / rgb.shape[1], h / rgb.shape[0]])

    def to_input(points):
      p = np.asarray(points, np.float64)
      if to_crop is not None:
        p = crops.apply_affine(to_crop, p)
      return (p + 0.5) * scale - 0.5  # Pixel centres map to pixel centres.

    small = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    px = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)[..., None] if self.ex.grey else small
    return (px.astype(np.float32), small, None if lm is None else to_input(lm), to_input,
            photo_shape)


def _load_vertex_files(args):
  """``(canonical vertices in the input frame's source pixels, canonical (H, W))`` or None."""
  from jaxface.explain import canonical  # pylint: disable=g-import-not-at-top
  if not args.vertices and not args.canonical:
    return None
  if not (args.vertices and args.canonical):
    raise UsageError("--vertices and --canonical go together")
  if not os.path.isdir(args.vertices):
    raise UsageError(f"--vertices {args.vertices}: not a folder")
  try:
    ref = canonical.load_vertices(args.canonical)
  except (ValueError, OSError) as e:
    raise UsageError(f"--canonical: {e}") from None
  if args.canonical_size:
    try:
      hc, wc = (int(v) for v in args.canonical_size.split(","))
    except ValueError:
      raise UsageError(f"--canonical-size {args.canonical_size!r}: expected H,W") from None
  else:
    hc, wc = int(np.ceil(ref[:, 1].max())) + 1, int(np.ceil(ref[:, 0].max())) + 1
  return ref[:, :2], (hc, wc)


def _mesh_correspondence(args, name, ref, to_input, photo_shape, input_size):
  """The correspondence of one image from its own vertex file (the paper's PRNet setting)."""
  from jaxface.explain import canonical  # pylint: disable=g-import-not-at-top
  stem = os.path.splitext(name.replace(os.sep, "_"))[0]
  found = [os.path.join(args.vertices, stem + e) for e in (".npy", ".mat")
           if os.path.exists(os.path.join(args.vertices, stem + e))]
  if not found:
    raise ValueError(f"no {stem}.npy or {stem}.mat in --vertices")
  v = canonical.load_vertices(found[0])
  (mf, (hc, wc)) = ref
  if len(v) != len(mf):
    raise ValueError(f"{found[0]} has {len(v)} vertices, --canonical {len(mf)}")
  valid = canonical.visible(v, photo_shape) if v.shape[1] >= 3 else None
  h, w = input_size
  mf_in = (mf + 0.5) * np.array([w / wc, h / hc]) - 0.5
  return canonical.from_vertices(to_input(v[:, :2]), mf_in, valid, (h, w), (h, w))


def _png(path: str, rgb: np.ndarray, size: int) -> None:
  img = _up(rgb, size)
  if not cv2.imwrite(path, cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
    raise OSError(f"could not write {path}")


def _up(rgb: np.ndarray, size: int) -> np.ndarray:
  """Nearest-neighbour upscale by an integer factor to at least ``size`` pixels."""
  scale = max(1, int(np.ceil(size / max(rgb.shape[:2]))))
  return cv2.resize(rgb, (rgb.shape[1] * scale, rgb.shape[0] * scale),
                    interpolation=cv2.INTER_NEAREST)


def _label(rgb: np.ndarray, text: str) -> np.ndarray:
  out = np.ascontiguousarray(rgb).copy()
  cv2.putText(out, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
              cv2.LINE_AA)
  return out


def _colour(m: np.ndarray) -> np.ndarray:
  m = np.asarray(m, np.float64)
  r = m.max() - m.min()
  u8 = np.uint8(np.clip(255 * (m - m.min()) / r if r > 0 else 0 * m, 0, 255))
  return cv2.cvtColor(cv2.applyColorMap(u8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def _overlay(rgb: np.ndarray, m: np.ndarray) -> np.ndarray:
  return np.uint8(0.5 * rgb.astype(np.float32) + 0.5 * _colour(m).astype(np.float32))


def _defaults(args, ex) -> tuple[int, int, Any]:
  h = ex.input_size[0]
  patch = args.patch or max(3, int(round(15 * h / 224)) | 1)
  stride = args.stride or max(1, patch // 2)
  fill = args.fill if args.fill in ("mean", "black") else float(args.fill)
  return patch, stride, fill


def _explain_batch(methods, ex, px, target, args, corrs) -> dict[str, Any]:
  from jaxface.explain import cam, canonical, occlusion  # pylint: disable=g-import-not-at-top
  fwd, v = ex.forward, ex.variables
  patch, stride, fill = _defaults(args, ex)
  out = {}
  for m in methods:
    if m in _CAMS:
      out[m] = cam.explain(fwd, v, px, target, method=m, score=args.score, layer=args.layer,
                           variant=args.variant)
    elif m == "occlusion":
      out[m], _ = occlusion.occlusion(fwd, v, px, target, score=args.score, patch=patch,
                                      stride=stride, fill=fill)
    elif m == "cis" or (m == "cms" and "cis" not in out):
      labels = cam.explain(fwd, v, px, target, method="gradcam", score=args.score).targets \
          if target == "argmax" else np.full(len(px), target)
      conf = canonical.class_confidence(fwd, np.asarray(labels), args.score)
      out["cis"] = canonical.cis(conf, v, px, corrs, canonical_shape=ex.input_size, patch=patch,
                                 stride=args.vertex_stride, fill=fill)
      out["cis_labels"] = np.asarray(labels)
  return out


def run(args) -> dict[str, Any]:
  from jaxface.explain import canonical, loading  # pylint: disable=g-import-not-at-top
  from jaxface.faces import ImageReadError  # pylint: disable=g-import-not-at-top
  methods, target = _check(args)
  images = _find_images(args.images)
  ex = loading.load(args.model, args.workdir, args.checkpoint, args.output)
  if "cam" in methods:
    from jaxface.explain import cam  # pylint: disable=g-import-not-at-top
    cam.gap_kernel(ex.variables)  # Fails now, naming the need for a GAP head.
  os.makedirs(args.out, exist_ok=True)
  need_lm = "cis" in methods or "cms" in methods
  given = None
  if args.landmarks:
    try:
      with open(args.landmarks, encoding="utf-8") as f:
        given = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise UsageError(f"--landmarks {args.landmarks}: {e}") from None
    if not isinstance(given, dict):
      raise UsageError(f"--landmarks {args.landmarks}: expected a JSON object of image names")
  mesh = _load_vertex_files(args)
  reader = _Faces(ex, args.faces == "mtcnn", need_lm and mesh is None, given, args.points)
  h, w = ex.input_size
  disp = max(224, h)
  kept, px_all, shown, corrs = [], [], [], []
  for i, (path, name) in enumerate(images):
    if len(images) > 1:
      print(f"[{i + 1}/{len(images)}] {name}", file=sys.stderr)
    try:
      px, small, lm, to_input, photo_shape = reader(path, name)
      if mesh is not None:
        corr = _mesh_correspondence(args, name, mesh, to_input, photo_shape, (h, w))
      else:
        corr = canonical.from_landmarks(lm, (h, w), (h, w)) if need_lm else None
    except (ImageReadError, ValueError, OSError) as e:
      print(f"jaxface.explain: skipped {name}: {e}", file=sys.stderr)
      continue
    kept.append(name)
    px_all.append(px)
    shown.append(small)
    corrs.append(corr)
  if not kept:
    raise UsageError("no image could be explained")
  px_all = np.stack(px_all)
  maps: dict[str, list[np.ndarray]] = {}
  records = [{"image": n} for n in kept]
  target_kind = "argmax" if target == "argmax" else "class"
  cms = canonical.CMS((h, w)) if need_lm else None
  canon_faces = []
  for s in range(0, len(kept), args.batch_size):
    sl = slice(s, s + args.batch_size)
    res = _explain_batch(methods, ex, px_all[sl], target, args, corrs[sl])
    for m, r in res.items():
      if m == "cis_labels":
        continue
      for j in range(len(px_all[sl])):
        rec = records[s + j]
        if m == "cis":
          rec["cis"] = {**r.settings, "score": args.score, "target": target_kind,
                        "class": int(res["cis_labels"][j]), "confidence": float(r.scores[j]),
                        "correspondence": "mesh" if mesh is not None else
                        f"{args.points} landmarks"}
        else:
          rec[m] = {**r.settings, "class": int(r.targets[j]), "confidence": float(r.scores[j])}
      if m == "cis":
        cms.update(r)
        maps.setdefault("cis_canonical", []).extend(np.asarray(r.maps))
      else:
        maps.setdefault(m, []).extend(np.asarray(r.maps))
  for j, name in enumerate(kept):
    stem = os.path.join(args.out, os.path.splitext(name.replace(os.sep, "_"))[0])
    _png(stem + "_input.png", shown[j], disp)
    if need_lm:
      canon_faces.append(canonical.to_canonical(shown[j], corrs[j], (h, w)))
      cis_img, _ = canonical.reproject(maps["cis_canonical"][j], corrs[j], (h, w),
                                       _defaults(args, ex)[0])
      maps.setdefault("cis", []).append(cis_img)
      if "cis" in methods:
        _png(stem + "_cis_canonical.png",
             _overlay(np.uint8(canon_faces[-1]), maps["cis_canonical"][j]), disp)
  summary: dict[str, Any] = {"model": ex.source, "images": records, "score": args.score,
                             "target": target if target == "argmax" else int(target)}
  if need_lm:
    mean_cms = cms.mean("all")
    np.save(os.path.join(args.out, "cms.npy"), mean_cms)
    face = np.uint8(np.clip(np.mean(canon_faces, axis=0), 0, 255))
    _png(os.path.join(args.out, "cms.png"), _overlay(face, mean_cms), disp)
    _png(os.path.join(args.out, "cms_coverage.png"), _colour(cms.coverage), disp)
    summary["cms"] = {"images": cms.n, "policy": "all (eq. 6: uncovered pixels count as 0)"}
    if "cms" in methods:
      maps["cms"] = [canonical.reproject(mean_cms, c, (h, w), _defaults(args, ex)[0])[0]
                     for c in corrs]
  shown_methods = [m for m in methods if m in maps]
  for j, name in enumerate(kept):
    stem = os.path.join(args.out, os.path.splitext(name.replace(os.sep, "_"))[0])
    first = next((records[j][m] for m in methods if m in records[j]), None)
    title = "input"
    if first is not None:  # The explained class and its confidence, e.g. "female 0.88 prob".
      cls = first["class"]
      name = ex.classes[cls] if ex.classes and 0 <= cls < len(ex.classes) else f"class {cls}"
      title = f"{name} {first['confidence']:.2f} {args.score}"
    panels = [_label(_up(shown[j], disp), title)]
    for m in shown_methods:
      _png(f"{stem}_{m}.png", _colour(maps[m][j]), disp)
      _png(f"{stem}_{m}_overlay.png", _overlay(shown[j], maps[m][j]), disp)
      panels.append(_label(_up(_overlay(shown[j], maps[m][j]), disp), m))
    _png(f"{stem}_compare.png", np.concatenate(panels, axis=1), 0)
  if args.metrics:
    summary["metrics"] = _metrics(ex, px_all, {m: np.stack(maps[m]) for m in shown_methods},
                                  target, args)
  if args.sanity:
    summary["sanity"] = _sanity(ex, px_all[:4], [m for m in methods if m not in ("cis", "cms")],
                                target, args)
  with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=1)
  return summary


def _metrics(ex, px, maps, target, args) -> dict[str, Any]:
  from jaxface.explain import metrics  # pylint: disable=g-import-not-at-top
  r = metrics.evaluate(ex.forward, ex.variables, px, maps, target, score=args.score,
                       reference="cms" if "cms" in maps else None, batch_size=args.batch_size)
  with open(os.path.join(args.out, "metrics.json"), "w", encoding="utf-8") as f:
    json.dump(r, f, indent=1)
  lines = [f"{len(px)} images, {args.score} confidences, negative explanations (1 - H) * I, "
           f"equal pixel sums ({r['settings']['reference'] or 'mean of the methods'}), "
           f"ties {r['settings']['tie']}", "",
           "| method | Average Drop % (higher better) | % Increase (lower better) | Win % |",
           "|---|---|---|---|"]
  for m, v in r["methods"].items():
    lines.append(f"| {m} | {v['average_drop']:.2f} | {v['increase']:.2f} | {v['win']:.2f} |")
  with open(os.path.join(args.out, "metrics.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines[2:]))
  return {k: v for k, v in r.items() if k in ("methods", "settings", "n")}


def _sanity(ex, px, methods, target, args) -> dict[str, Any]:
  from jaxface.explain import cam, occlusion, sanity  # pylint: disable=g-import-not-at-top
  fwd = ex.forward
  labels = cam.explain(fwd, ex.variables, px, target, method="gradcam", score=args.score).targets
  patch, stride, fill = _defaults(args, ex)
  out = {}
  for m in methods:
    if m == "occlusion":
      def fn(v, x):
        return occlusion.occlusion(fwd, v, x, labels, score=args.score, patch=patch,
                                   stride=stride, fill=fill)[0].raw
    else:
      def fn(v, x, m=m):
        return cam.explain(fwd, v, x, labels, method=m, score=args.score, layer=args.layer,
                           variant=args.variant).maps
    out[m] = sanity.run(fn, ex.model, ex.variables, px, seeds=(0,))
    print(f"sanity {m}: Spearman of |maps| after full randomisation "
          f"{out[m]['final']['spearman_abs']:.3f}"
          f" -> {'passes' if out[m]['passes'] else 'FAILS'}")
  with open(os.path.join(args.out, "sanity.json"), "w", encoding="utf-8") as f:
    json.dump(out, f, indent=1)
  return out


def main(argv: Sequence[str] | None = None) -> int:
  try:
    args = build_parser().parse_args(argv)
    run(args)
  except UsageError as e:
    return _fail(str(e))
  except (ValueError, KeyError, OSError) as e:
    return _fail(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
  return 0


if __name__ == "__main__":
  cli.run(main)
