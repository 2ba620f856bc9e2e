"""Explainer throughput: Grad-CAM maps/s and CIS maps/s, and pytorch-grad-cam's Grad-CAM.

  python -m jaxface.explain.bench [--model resnet18] [--width 0.25] [--size 112] [--batch 8]
      [--patch 15] [--vertices 2194] [--min_seconds 2] [--json]

Grad-CAM runs jitted on a batch of random images (argmax targets, logit score, the last conv
block); CIS on one face with a five-point correspondence whose vertex grid gives about
``--vertices`` vertices (the paper's PRNet meshes subsampled to 2194), 15 x 15 patches, one
forward pass per vertex. On the PyTorch twin of the same architecture (``jaxface.tools.torch_refs``,
default initialisation, same batch) it times a two-hook Grad-CAM written here and, when
``pytorch_grad_cam`` imports (it needs torchvision), that library's GradCAM. Rates are medians of
repeated calls after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any, Callable

import jax
import numpy as np


def _rate(fn: Callable[[], Any], items: int, min_seconds: float, min_calls: int = 3,
          warmup: int = 2) -> float:
  """Items per second: median over calls, after ``warmup`` untimed calls (the first compiles;
  PyTorch's oneDNN kernels also settle only after a few calls)."""
  for _ in range(warmup):
    fn()
  times, start = [], time.perf_counter()
  while len(times) < min_calls or time.perf_counter() - start < min_seconds:
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return items / float(np.median(times))


def _block(x):
  return jax.block_until_ready(x)


def bench_jax(args) -> dict[str, Any]:
  from jaxface import models  # pylint: disable=g-import-not-at-top
  from jaxface.explain import cam, canonical, core  # pylint: disable=g-import-not-at-top
  model = models.get(args.model, num_classes=10, width=args.width)
  rng = np.random.default_rng(0)
  x = rng.random((args.batch, args.size, args.size, 3)).astype(np.float32)
  # Jitted: one compile, instead of one per initialiser when init runs eagerly.
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x[:1])
  fwd = core.bind(model)
  out: dict[str, Any] = {}
  out["gradcam_maps_per_s"] = _rate(
      lambda: _block(cam.gradcam(fwd, variables, x, score="logit").maps), args.batch,
      args.min_seconds)
  grid = max(1, int(round(args.size / math.sqrt(args.vertices))))
  tpl = canonical.five_point_template((args.size, args.size))
  corr = canonical.from_landmarks(tpl, (args.size, args.size), (args.size, args.size), grid=grid)
  labels = np.zeros(1, np.int32)
  conf = canonical.class_confidence(fwd, labels, "logit")
  out["cis_vertices"] = int(corr.valid.sum())
  out["cis_maps_per_s"] = _rate(
      lambda: canonical.cis(conf, variables, x[:1], [corr], canonical_shape=(args.size,) * 2,
                            patch=args.patch), 1, args.min_seconds, min_calls=1, warmup=1)
  return out


def _torch_target_layer(model):
  from torch import nn  # pylint: disable=g-import-not-at-top
  mods = list(model)
  last = max(i for i, m in enumerate(mods) if isinstance(m, nn.Conv2d) or
             m.__class__.__name__ == "_Block")
  if last + 1 < len(mods) and isinstance(mods[last + 1], nn.ReLU):
    last += 1
  return mods[last]


def _torch_hook_gradcam(model, layer, x):
  """Grad-CAM written with two hooks (not pytorch-grad-cam): a floor for any torch version."""
  import torch  # pylint: disable=g-import-not-at-top
  store = {}
  h = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
  try:
    logits = model(x)
    a = store["a"]
    g, = torch.autograd.grad(logits.max(dim=1).values.sum(), a)
    cam = torch.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=x.shape[2:], mode="bilinear")
    lo = cam.amin(dim=(2, 3), keepdim=True)
    hi = cam.amax(dim=(2, 3), keepdim=True)
    return ((cam - lo) / (hi - lo).clamp_min(1e-12)).detach()
  finally:
    h.remove()


def bench_torch(args) -> dict[str, Any]:
  import torch  # pylint: disable=g-import-not-at-top
  from jaxface.tools import torch_refs  # pylint: disable=g-import-not-at-top
  try:
    model = torch_refs.build(args.model, args.width, 10, args.size).eval()
  except KeyError as e:
    return {"torch": f"no PyTorch twin ({e.args[0]})"}
  x = torch.rand(args.batch, 3, args.size, args.size)
  layer = _torch_target_layer(model)
  out: dict[str, Any] = {"torch_threads": torch.get_num_threads()}
  out["torch_hook_gradcam_maps_per_s"] = _rate(lambda: _torch_hook_gradcam(model, layer, x),
                                               args.batch, args.min_seconds)
  try:
    from pytorch_grad_cam import GradCAM  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    out["pytorch_grad_cam"] = f"not available ({e})"
    return out
  with GradCAM(model=model, target_layers=[layer]) as gc:
    out["pytorch_grad_cam_maps_per_s"] = _rate(lambda: gc(input_tensor=x), args.batch,
                                               args.min_seconds)
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m jaxface.bench explain", description=__doc__)
  p.add_argument("--model", default="resnet18")
  p.add_argument("--width", type=float, default=0.25)
  p.add_argument("--size", type=int, default=112)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--patch", type=int, default=15)
  p.add_argument("--vertices", type=int, default=2194)
  p.add_argument("--min_seconds", type=float, default=2.0)
  p.add_argument("--json", action="store_true")
  args = p.parse_args(argv)
  if min(args.batch, args.size, args.patch, args.vertices) <= 0 or args.width <= 0:
    p.error("--batch, --size, --patch, --vertices and --width must be positive")
  from jaxface import models  # pylint: disable=g-import-not-at-top
  if args.model not in models.names():
    p.error(f"--model {args.model!r}: unknown; choose from {', '.join(models.names())}")
  res = {"model": args.model, "width": args.width, "size": args.size, "batch": args.batch,
         "patch": args.patch, "backend": jax.default_backend(),
         "device": str(jax.devices()[0].device_kind)}
  res.update(bench_jax(args))
  res.update(bench_torch(args))
  if args.json:
    print(json.dumps(res))
  else:
    for k, v in res.items():
      print(f"{k:28s} {v:.2f}" if isinstance(v, float) else f"{k:28s} {v}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
