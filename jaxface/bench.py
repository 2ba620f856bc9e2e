"""Benchmarks: ``python -m jaxface.bench models|detect [options]``.

``models`` measures inference and training throughput (images/s) of registry models on the default
JAX backend (GPU when present), with XLA's FLOP count of the compiled step and the achieved TFLOP/s.
``detect`` measures face detection (MTCNN on the default JAX backend, OpenCV's Haar cascade on the
CPU) in images/s on 640x480 photos, both on the same photos in the same run.
Speed targets live here, never in timed test assertions.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxface import models


def _cost_flops(lowered) -> float | None:
  try:
    cost = lowered.cost_analysis()
  except Exception:  # noqa: BLE001 - cost analysis is optional per backend.
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost.get("flops", 0.0)) or None if cost else None


def _flops(jitted, *args) -> float | None:
  """FLOPs of one call, from XLA's analysis of the lowered (pre-backend) HLO.

  The compiled GPU program hides convolutions in cuDNN custom calls that its cost analysis does not
  count, and the GPU lowering may offer no analysis at all; the same program lowered for the CPU
  (no compilation) gives the device-independent count.
  """
  flops = _cost_flops(jitted.lower(*args))
  if flops is None and jax.default_backend() != "cpu":
    cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
    abstract = jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=cpu), args)
    flops = _cost_flops(jitted.lower(*abstract))
  return flops


def _time(fn, args, steps: int, min_seconds: float) -> float:
  """Seconds per call: at least ``steps`` calls and ``min_seconds`` of timed work, after warm-up."""
  for _ in range(2):
    jax.block_until_ready(fn(*args))
  calls, elapsed = 0, 0.0
  t0 = time.perf_counter()
  while calls < steps or elapsed < min_seconds:
    out = fn(*args)
    calls += 1
    if calls % steps == 0:
      jax.block_until_ready(out)
      elapsed = time.perf_counter() - t0
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / calls


def bench_model(name: str, batch: int, steps: int, dtype: str, width: float,
                size: int | None, min_seconds: float = 2.0) -> dict:
  spec = models.spec(name)
  shape = spec.input_shape if size is None else (size, size, spec.input_shape[2])
  kwargs = {"width": width, "dtype": jnp.dtype(dtype)}
  model = models.get(name, **kwargs)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(batch, *shape)), jnp.float32)
  variables = model.init(jax.random.PRNGKey(0), x[:1])
  params = variables["params"]
  state = {k: v for k, v in variables.items() if k != "params"}

  def scalar_out(out):
    leaves = jax.tree_util.tree_leaves(out)
    return sum(jnp.mean(jnp.square(l.astype(jnp.float32))) for l in leaves)

  @jax.jit
  def infer(params, x):
    out, _ = model.apply({"params": params, **state}, x.astype(kwargs["dtype"]))
    return out

  tx = optax.sgd(1e-3, momentum=0.9)
  opt_state = tx.init(params)

  def train_step(params, opt_state, x):
    def loss_fn(p):
      (out, _), _ = model.apply({"params": p, **state}, x.astype(kwargs["dtype"]), train=True,
                                rngs={"dropout": jax.random.PRNGKey(1)}, mutable=list(state))
      return scalar_out(out)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  train = jax.jit(train_step, donate_argnums=(0, 1))
  f_inf, f_train = _flops(infer, params, x), _flops(train, params, opt_state, x)
  infer_c = infer.lower(params, x).compile()
  train_c = train.lower(params, opt_state, x).compile()
  t_inf = _time(infer_c, (params, x), steps, min_seconds)
  # Training donates its state: thread it through the timed loop.
  carry = [params, opt_state]

  def run_train(_p, _o, x):
    carry[0], carry[1], loss = train_c(carry[0], carry[1], x)
    return loss

  t_train = _time(run_train, (None, None, x), steps, min_seconds)
  return {
      "model": name, "input": list(shape), "batch": batch, "dtype": dtype, "width": width,
      "infer_ms": 1e3 * t_inf, "train_ms": 1e3 * t_train,
      "infer_gflop_per_img": f_inf / batch / 1e9 if f_inf else None,
      "infer_img_s": batch / t_inf, "train_img_s": batch / t_train,
      "infer_tflop_s": f_inf / t_inf / 1e12 if f_inf else None,
      "train_tflop_s": f_train / t_train / 1e12 if f_train else None,
  }


def device_description() -> str:
  d = jax.devices()[0]
  return f"{len(jax.devices())}x {getattr(d, 'device_kind', d.platform)} ({d.platform})"


def cmd_models(args) -> int:
  names = args.names or ["alexnet", "alexnet_caffe", "vgg16", "resnet18", "resnet50",
                         "attention56", "attention92", "gilnet", "mlnet"]
  unknown = [n for n in names if n not in models.names()]
  if unknown:
    print(f"error: unknown model(s) {', '.join(unknown)}", file=sys.stderr)
    return 2
  print(f"# device: {device_description()}; jax {jax.__version__}; host {platform.node()}",
        flush=True)
  if not args.json:
    print(f"{'model':<14}{'input':<16}{'batch':>6}{'dtype':>10}{'infer img/s':>13}"
          f"{'train img/s':>13}{'infer TF/s':>12}{'train TF/s':>12}", flush=True)
  for name in names:
    r = bench_model(name, args.batch, args.steps, args.dtype, args.width, args.size,
                    args.min_seconds)
    if args.json:
      print(json.dumps(r), flush=True)
    else:
      fmt = lambda v: f"{v:12.1f}" if v is not None else f"{'n/a':>12}"
      print(f"{name:<14}{str(tuple(r['input'])):<16}{r['batch']:>6}{r['dtype']:>10}"
            f"{r['infer_img_s']:13.1f}{r['train_img_s']:13.1f}{fmt(r['infer_tflop_s'])}"
            f"{fmt(r['train_tflop_s'])}", flush=True)
  return 0


def detection_scenes(n_faces: int = 12, n_empty: int = 4, seed: int = 0) -> list[np.ndarray]:
  """640x480 RGB photos: skimage's astronaut pasted at random sizes (120-400 px) and places onto
  noisy gradients, then photos without faces (skimage's coffee, cat, rocket) resized to 640x480."""
  import cv2  # noqa: PLC0415 - only this command needs them.
  from skimage import data  # noqa: PLC0415

  rng = np.random.default_rng(seed)
  astronaut = data.astronaut()
  yy, xx = np.mgrid[0:480, 0:640] / 640.0
  scenes = []
  for _ in range(n_faces):
    a, b, c = rng.uniform(0, 255, size=(3, 3))
    bg = a + (b - a) * xx[..., None] + (c - a) * yy[..., None] + rng.normal(0, 8, (480, 640, 3))
    scene = np.clip(bg, 0, 255).astype(np.uint8)
    side = int(rng.integers(120, 401))
    face = cv2.resize(astronaut, (side, side), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
      face = face[:, ::-1]
    x, y = int(rng.integers(0, 640 - side + 1)), int(rng.integers(0, 480 - side + 1))
    scene[y:y + side, x:x + side] = face
    scenes.append(scene)
  others = [data.coffee(), data.chelsea(), data.rocket()]
  for k in range(n_empty):
    scenes.append(cv2.resize(others[k % len(others)], (640, 480), interpolation=cv2.INTER_AREA))
  return scenes


def cmd_detect(args) -> int:
  from jaxface import faces  # noqa: PLC0415 - the face module loads OpenCV and the MTCNN weights.

  names = args.detectors.split(",")
  unknown = [n for n in names if n not in faces.DETECTORS]
  if unknown:
    print(f"error: unknown detector(s) {', '.join(unknown)}; choose from "
          f"{', '.join(faces.DETECTORS)}", file=sys.stderr)
    return 2
  scenes = detection_scenes(args.images, args.empty)
  print(f"# device: {device_description()}; jax {jax.__version__}; host {platform.node()}; "
        f"{len(scenes)} photos 640x480 ({args.images} with a face, {args.empty} without)",
        flush=True)
  if not args.json:
    print(f"{'detector':<10}{'img/s':>10}{'ms/img':>10}{'found':>8}{'false+':>8}", flush=True)
  failed = 0
  for name in names:
    try:
      detector = faces.get_detector(name)
    except (ImportError, OSError, ValueError) as e:  # e.g. OpenCV 5 has no Haar cascades
      print(f"error: {name}: {e}", file=sys.stderr, flush=True)
      failed += 1
      continue
    for scene in scenes:  # warm-up: MTCNN compiles one program per pyramid bucket shape
      detector.detect(scene)
    calls, t0 = 0, time.perf_counter()
    while calls < len(scenes) or time.perf_counter() - t0 < args.min_seconds:
      found = [len(detector.detect(s)) for s in scenes]
      calls += len(scenes)
    dt = (time.perf_counter() - t0) / calls
    r = {"detector": name, "img_s": 1 / dt, "ms_per_img": 1e3 * dt,
         "photos_with_a_face_found": sum(f > 0 for f in found[:args.images]),
         "faces_in_empty_photos": sum(found[args.images:]), "photos": len(scenes)}
    if args.json:
      print(json.dumps(r), flush=True)
    else:
      print(f"{name:<10}{r['img_s']:10.1f}{r['ms_per_img']:10.1f}"
            f"{r['photos_with_a_face_found']:>5}/{args.images:<2}{r['faces_in_empty_photos']:>8}",
            flush=True)
  return 1 if failed else 0


COMMANDS = {"models": cmd_models, "detect": cmd_detect}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m jaxface.bench", description=__doc__)
  sub = parser.add_subparsers(dest="command", required=True)
  p = sub.add_parser("models", help="model inference / training throughput")
  p.add_argument("names", nargs="*", help="registry names (default: the classifiers and ML-Net)")
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--steps", type=int, default=10, help="minimum timed calls")
  p.add_argument("--min_seconds", type=float, default=2.0, help="minimum timed seconds per mode")
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
  p.add_argument("--width", type=float, default=1.0)
  p.add_argument("--size", type=int, default=None, help="square input size (default: reference)")
  p.add_argument("--json", action="store_true")
  d = sub.add_parser("detect", help="face detection throughput on 640x480 photos")
  d.add_argument("--detectors", default="mtcnn,haar", help="comma-separated: mtcnn,haar")
  d.add_argument("--images", type=int, default=12, help="photos with a face")
  d.add_argument("--empty", type=int, default=4, help="photos without a face")
  d.add_argument("--min_seconds", type=float, default=3.0,
                 help="minimum timed seconds per detector")
  d.add_argument("--json", action="store_true")
  args = parser.parse_args(argv)
  if args.command == "detect" and (args.images < 0 or args.empty < 0 or
                                   args.images + args.empty == 0):
    parser.error("--images and --empty must be >= 0 and not both 0")
  if getattr(args, "batch", 1) <= 0 or getattr(args, "steps", 1) <= 0:
    parser.error("--batch and --steps must be positive")
  return COMMANDS[args.command](args)


if __name__ == "__main__":
  sys.exit(main())
