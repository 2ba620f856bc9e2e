"""Training-step and convolution-lowering benchmarks behind ``python -m jaxface.bench train|conv``.

``train``: one SGD-momentum step on softmax cross-entropy over 1000 classes (random inputs and
labels), jitted with donated state; median step time, compile time, images/s, peak memory, XLA's
FLOPs per step and the utilisation of the device's peak. ``--vs-torch`` times the same layout in
PyTorch (``jaxface.tools.torch_refs``) with the same batch, dtype, loss and optimiser, in the same
process on the same device, and reports jaxface / torch. All variants of one model (conv
lowerings, PyTorch) are timed interleaved, step by step, so they see the same load. On a GPU, run
with ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` so that JAX leaves memory to PyTorch.
``conv``: the direct, im2col and tap_wgrad lowerings of ``layers.conv2d`` on the zoo's convolution
shapes, forward and forward + backward; the measurements behind ``layers.choose_lowering``.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxface import models
from jaxface.models import layers

TRAIN_MODELS = ("alexnet", "vgg16", "resnet18", "resnet50", "gilnet", "mini_xception",
                "attention56", "dlib_age", "dlib_gender")
NUM_CLASSES = 1000
LEARNING_RATE, MOMENTUM = 0.01, 0.9
# Dense datasheet peaks in FLOP/s (NVIDIA H100/H200 SXM and A100 datasheets; float32 is the TF32
# tensor-core rate XLA uses for float32 matmuls by default). Matched in order on device_kind.
GPU_PEAKS = (
    ("H100 PCIe", {"bfloat16": 756e12, "float16": 756e12, "float32": 378e12}),
    ("H100", {"bfloat16": 989e12, "float16": 989e12, "float32": 495e12}),
    ("H200", {"bfloat16": 989e12, "float16": 989e12, "float32": 495e12}),
    ("A100", {"bfloat16": 312e12, "float16": 312e12, "float32": 156e12}),
)


def _reset_peak_rss() -> bool:
  """Resets the kernel's resident-set high-water mark of this process (Linux clear_refs 5)."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def _rss_bytes(field: str) -> int | None:
  """VmRSS (now) or VmHWM (peak since the last reset) of this process, from /proc."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def device_peak_flops(dtype: str, device=None) -> tuple[float, str]:
  """(FLOP/s, source): the datasheet peak of a known GPU, else a measured matmul peak."""
  device = device or jax.devices()[0]
  kind = getattr(device, "device_kind", "")
  for key, peaks in GPU_PEAKS:
    if key in kind and dtype in peaks:
      return peaks[dtype], f"datasheet {key} {dtype}"
  return measured_matmul_peak(dtype), f"measured {dtype} matmul (n=1024, best of 10)"


def measured_matmul_peak(dtype: str, n: int = 1024, repeats: int = 10) -> float:
  """Best FLOP/s of an n x n matmul on the default device (the best is the least disturbed)."""
  a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), jnp.dtype(dtype))
  f = jax.jit(lambda a: a @ a).lower(a).compile()
  jax.block_until_ready(f(a))
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(f(a))
    best = min(best, time.perf_counter() - t0)
  return 2.0 * n**3 / best


def _flops(compiled, lowered) -> float | None:
  for obj in (compiled, lowered):
    try:
      cost = obj.cost_analysis()
    except Exception:  # noqa: BLE001 - cost analysis is optional per backend.
      continue
    if isinstance(cost, (list, tuple)):
      cost = cost[0] if cost else None
    if cost and cost.get("flops"):
      return float(cost["flops"])
  return None


def _step_memory(step, calls: int, torch_cuda: bool) -> tuple[dict[str, Any], float]:
  """(peak memory over the first ``calls`` calls of ``step``, seconds of its first call).

  On an accelerator the allocator's peak; on the CPU the process's peak resident set and its rise
  over the resident set before the first call (the step's own memory: the first call allocates
  what later steps reuse, and the other variants' state is resident throughout).
  """
  def run() -> float:
    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    for _ in range(calls - 1):
      step()
    return first

  if torch_cuda:
    import torch  # noqa: PLC0415

    torch.cuda.reset_peak_memory_stats()
    first = run()
    return {"peak_memory_bytes": torch.cuda.max_memory_allocated(), "peak_memory_kind": "device",
            "step_memory_bytes": None}, first
  if jax.devices()[0].platform != "cpu":
    first = run()
    stats = jax.devices()[0].memory_stats() or {}
    return {"peak_memory_bytes": stats.get("peak_bytes_in_use"), "peak_memory_kind": "device",
            "step_memory_bytes": None}, first
  before = _rss_bytes("VmRSS")
  reset = _reset_peak_rss()
  first = run()
  peak = _rss_bytes("VmHWM") if reset else None
  if peak is None:  # no clear_refs: the lifetime peak is all there is
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  return {"peak_memory_bytes": peak, "peak_memory_kind": "host_rss",
          "step_memory_bytes": peak - before if reset and before is not None else None}, first


def time_interleaved(steps_by_name: dict[str, Any], steps: int) -> dict[str, float]:
  """Median seconds per call of each step function, timed round-robin (one call of each per
  round), so that every variant sees the same load from other processes."""
  times = {k: [] for k in steps_by_name}
  for _ in range(steps):
    for key, step in steps_by_name.items():
      t0 = time.perf_counter()
      step()
      times[key].append(time.perf_counter() - t0)
  return {k: statistics.median(v) for k, v in times.items()}


def prepare_jax(name: str, batch: int, size: int, dtype: str, width: float,
                lowering: str = "auto") -> tuple[Any, dict[str, Any]]:
  """(step(), facts) for jaxface's jitted training step of ``name``; ``lowering`` is forced on
  every convolution unless "auto" (the per-backend rule)."""
  model = models.get(name, num_classes=NUM_CLASSES, width=width, dtype=jnp.dtype(dtype))
  rng = np.random.default_rng(0)
  channels = models.spec(name).input_shape[-1]  # mini-Xception reads grey faces
  x = jnp.asarray(rng.normal(size=(batch, size, size, channels)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, NUM_CLASSES, size=batch), jnp.int32)
  tx = optax.sgd(LEARNING_RATE, momentum=MOMENTUM)

  def train_step(state, x, labels):
    params, stats, opt_state, key = state
    key, dropout_key = jax.random.split(key)

    def loss_fn(p):
      (logits, _), new_stats = model.apply({"params": p, **stats}, x, train=True,
                                           rngs={"dropout": dropout_key}, mutable=list(stats))
      loss = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
      return loss.mean(), new_stats

    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), new_stats, opt_state, key), loss

  with layers.force_lowering(None if lowering == "auto" else lowering):
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), x[:1])  # one compile, not one per op
    params = variables["params"]
    stats = {k: v for k, v in variables.items() if k != "params"}
    state = (params, stats, tx.init(params), jax.random.PRNGKey(1))
    t0 = time.perf_counter()
    lowered = jax.jit(train_step, donate_argnums=0).lower(state, x, labels)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
  carry = [state]

  def step():
    carry[0], loss = compiled(carry[0], x, labels)
    jax.block_until_ready(loss)

  n_params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
  return step, {"compile_s": compile_s, "flops_per_step": _flops(compiled, lowered),
                "params": n_params}


def prepare_torch(name: str, batch: int, size: int, dtype: str,
                  width: float) -> tuple[Any, dict[str, Any]]:
  """(step(), facts) for the same layout's eager PyTorch step (CUDA when JAX runs on a GPU)."""
  import torch  # noqa: PLC0415 - optional (test extra).
  import torch.nn.functional as F  # noqa: PLC0415

  from jaxface.tools import torch_refs  # noqa: PLC0415

  cuda = jax.default_backend() == "gpu" and torch.cuda.is_available()
  device = torch.device("cuda" if cuda else "cpu")
  tdtype = getattr(torch, dtype)
  torch.manual_seed(0)
  channels = models.spec(name).input_shape[-1]
  model = torch_refs.build(name, width, NUM_CLASSES, size, channels).to(
      device=device, dtype=tdtype).train()
  opt = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
  gen = torch.Generator().manual_seed(0)
  x = torch.randn(batch, channels, size, size, generator=gen).to(device=device, dtype=tdtype)
  labels = torch.randint(0, NUM_CLASSES, (batch,), generator=gen).to(device)

  def step():
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x).float(), labels)
    loss.backward()
    opt.step()
    if cuda:
      torch.cuda.synchronize()

  return step, {"params": sum(p.numel() for p in model.parameters()), "device": str(device),
                "threads": torch.get_num_threads(), "version": torch.__version__, "cuda": cuda}


def bench_train(name: str, batch: int, size: int | None, dtype: str, width: float, steps: int,
                warmup: int, vs_torch: bool, lowerings=("auto",),
                peak: tuple[float, str] | None = None) -> list[dict[str, Any]]:
  """One row per jaxface conv lowering (each with the PyTorch step and the ratio when
  ``vs_torch``), all variants timed interleaved in this process after ``warmup`` calls each."""
  size = size or models.spec(name).input_shape[0]
  variants = {lowering: prepare_jax(name, batch, size, dtype, width, lowering)
              for lowering in lowerings}
  if vs_torch:
    variants["torch"] = prepare_torch(name, batch, size, dtype, width)
  memory, first = {}, {}
  for key, (step, facts) in variants.items():  # the first call allocates what the steps reuse
    torch_cuda = key == "torch" and facts["cuda"]
    memory[key], first[key] = _step_memory(step, max(warmup, 1), torch_cuda)
  seconds = time_interleaved({k: step for k, (step, _) in variants.items()}, steps)
  peak_flops, source = peak or device_peak_flops(dtype)
  torch_row = None
  if vs_torch:
    torch_row = {"step_ms": 1e3 * seconds["torch"], "first_step_s": first["torch"],
                 "img_s": batch / seconds["torch"], **variants["torch"][1], **memory["torch"]}
  rows = []
  for lowering in lowerings:
    facts, sec = variants[lowering][1], seconds[lowering]
    flops = facts["flops_per_step"]
    achieved = flops / sec if flops else None
    row = {"model": name, "input": [size, size, 3], "batch": batch, "dtype": dtype,
           "width": width, "conv_lowering": lowering, "steps": steps, "warmup": warmup,
           "step_ms": 1e3 * sec, "img_s": batch / sec, **facts, "first_step_s": first[lowering],
           **memory[lowering], "achieved_flop_s": achieved, "peak_flop_s": peak_flops,
           "peak_source": source, "utilisation": achieved / peak_flops if achieved else None,
           "backend": jax.default_backend(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
           "timing": "median of interleaved steps" if len(variants) > 1 else "median"}
    if torch_row:
      row["torch"] = torch_row
      row["ratio_jaxface_torch"] = row["step_ms"] / torch_row["step_ms"]
    rows.append(row)
  return rows


# Convolutions of the zoo (batch, input side, in, out, kernel, stride, pad, groups) at the bench's
# training shapes: ResNet-18 at 64 px / batch 64 (its 2x2 stage is the 80x case of issue 16) and
# at 224 px / batch 16, AlexNet, VGG-16 and the Caffe AlexNet's grouped convs at batch 16.
CONV_SHAPES = (
    (64, 32, 3, 64, 7, 2, 3, 1), (64, 16, 64, 64, 3, 1, 1, 1), (64, 8, 128, 128, 3, 1, 1, 1),
    (64, 4, 256, 256, 3, 1, 1, 1), (64, 2, 512, 512, 3, 1, 1, 1), (64, 4, 256, 512, 3, 2, 1, 1),
    (64, 4, 256, 512, 1, 2, 0, 1), (16, 224, 3, 64, 7, 2, 3, 1), (16, 56, 64, 64, 3, 1, 1, 1),
    (16, 28, 128, 128, 3, 1, 1, 1), (16, 14, 256, 256, 3, 1, 1, 1), (16, 7, 512, 512, 3, 1, 1, 1),
    (16, 14, 256, 512, 3, 2, 1, 1), (16, 56, 64, 256, 1, 1, 0, 1), (16, 14, 1024, 2048, 1, 2, 0, 1),
    (16, 224, 3, 64, 11, 4, 2, 1), (16, 27, 64, 192, 5, 1, 2, 1), (16, 13, 192, 384, 3, 1, 1, 1),
    (16, 27, 48, 128, 5, 1, 2, 2), (16, 13, 192, 192, 3, 1, 1, 2),
    # VGG-16's 3x3 convolutions at 224 px, batch 16 (first conv of a block at its input width).
    (16, 224, 3, 64, 3, 1, 1, 1), (16, 224, 64, 64, 3, 1, 1, 1), (16, 112, 128, 128, 3, 1, 1, 1),
    (16, 56, 256, 256, 3, 1, 1, 1), (16, 28, 512, 512, 3, 1, 1, 1), (16, 14, 512, 512, 3, 1, 1, 1),
)
CONV_LOWERINGS = ("direct", "im2col", "tap_wgrad")


def bench_conv(shape, repeats: int = 5, dtype: str = "float32",
               lowerings: tuple[str, ...] = CONV_LOWERINGS) -> dict[str, Any]:
  """Best-of-``repeats`` ms of each lowering, forward and forward + backward, interleaved (the
  best is the least disturbed by other load), and the lowering the rule picks. "tap_wgrad" has
  the direct forward, so only its forward + backward is timed."""
  b, side, cin, cout, k, s, p, g = shape
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(b, side, side, cin)), jnp.dtype(dtype))
  w = jnp.asarray(rng.normal(size=(k, k, cin // g, cout)), jnp.dtype(dtype))
  fns = {}
  for lowering in lowerings:
    conv = lambda x, w, lowering=lowering: layers.conv2d(  # noqa: E731
        x, w, (s, s), p, g, lowering=lowering)
    if lowering != "tap_wgrad":
      fns[f"{lowering}_fwd_ms"] = jax.jit(conv)
    fns[f"{lowering}_fwd_bwd_ms"] = jax.jit(jax.grad(
        lambda x, w, conv=conv: jnp.sum(jnp.square(conv(x, w).astype(jnp.float32))), (0, 1)))
  for f in fns.values():
    jax.block_until_ready(f(x, w))
  best = dict.fromkeys(fns, float("inf"))
  for _ in range(repeats):
    for key, f in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(f(x, w))
      best[key] = min(best[key], 1e3 * (time.perf_counter() - t0))
  pads = layers.conv_pads((side, side), (k, k), (s, s), p)
  return {"batch": b, "input": [side, side, cin], "out_channels": cout, "kernel": k, "stride": s,
          "pad": p, "groups": g, "dtype": dtype, **best,
          "rule": layers.choose_lowering(x.shape, w.shape, (s, s), pads),
          "fastest_fwd_bwd": min(lowerings, key=lambda l: best[f"{l}_fwd_bwd_ms"])}
