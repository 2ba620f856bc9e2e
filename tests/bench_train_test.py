"""``python -m jaxface.bench train|conv`` at tiny sizes: the output fields, not the speed; the
PyTorch layouts against the Flax models' parameter counts."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxface import models
from jaxface.models import alexnet
from jaxface.tools import bench, torch_refs, train_bench


def _alexnet_macs(width: float, size: int) -> int:
  """Multiply-adds of one AlexNet forward at ``size`` px (convs and dense layers, per image)."""
  ch = alexnet.channels_torchvision(width)
  side = lambda n, k, s, p: (n + 2 * p - k) // s + 1  # noqa: E731
  h = side(size, 11, 4, 2)
  macs = h * h * 11 * 11 * 3 * ch["conv1"]
  h = side(side(h, 3, 2, 0), 5, 1, 2)
  macs += h * h * 25 * ch["conv1"] * ch["conv2"]
  h = side(h, 3, 2, 0)
  macs += h * h * 9 * (ch["conv2"] * ch["conv3"] + ch["conv3"] * ch["conv4"] +
                       ch["conv4"] * ch["conv5"])
  return macs + 36 * ch["conv5"] * ch["fc6"] + ch["fc6"] * ch["fc7"] + ch["fc7"] * 1000


def test_train_vs_torch_json_rows(capsys):
  width, size, batch = 0.0625, 64, 2
  assert bench.main(["train", "--model", "alexnet", "--vs-torch", "--size", str(size),
                     "--width", str(width), "--batch", str(batch), "--steps", "2",
                     "--warmup", "1", "--conv", "direct,auto"]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].startswith("# device:") and len(lines) == 3
  rows = [json.loads(l) for l in lines[1:]]
  assert [r["conv_lowering"] for r in rows] == ["direct", "auto"]
  assert rows[0]["torch"] == rows[1]["torch"]  # one PyTorch measurement, interleaved with both
  macs = _alexnet_macs(width, size) * batch
  for r in rows:
    assert (r["model"], r["input"], r["batch"], r["width"], r["dtype"], r["steps"]) == (
        "alexnet", [size, size, 3], batch, width, "float32", 2)
    assert r["backend"] == "cpu" and r["timing"] == "median of interleaved steps"
    assert r["step_ms"] > 0 and r["compile_s"] > 0 and r["first_step_s"] > 0
    assert r["img_s"] == pytest.approx(batch / (r["step_ms"] / 1e3))
    # XLA counts 2 FLOPs per multiply-add. A step is the forward, the weight gradients (as many
    # again) and the input gradients of every layer but the first (at most as many again), plus
    # elementwise work (ReLU, pooling, softmax, SGD: well under a third at these sizes).
    assert 2 * 2 * macs <= r["flops_per_step"] <= 2 * 3 * macs * 1.3
    assert r["achieved_flop_s"] == pytest.approx(r["flops_per_step"] / (r["step_ms"] / 1e3))
    assert r["peak_source"].startswith("measured float32 matmul") and r["peak_flop_s"] > 0
    assert r["utilisation"] == pytest.approx(r["achieved_flop_s"] / r["peak_flop_s"])
    assert r["peak_memory_kind"] == "host_rss" and r["peak_memory_bytes"] > 0
    assert isinstance(r["step_memory_bytes"], int)
    t = r["torch"]
    assert t["params"] == r["params"] and t["device"] == "cpu" and t["step_ms"] > 0
    assert t["peak_memory_kind"] == "host_rss" and t["peak_memory_bytes"] > 0
    assert r["ratio_jaxface_torch"] == pytest.approx(r["step_ms"] / t["step_ms"])


# Tiny inputs at which every layout is valid (mini-Xception's four stride-2 blocks, the attention
# masks' three pools, GilNet's 7x7/4 stem and three ceil pools each need a few pixels).
_PARITY_SIZES = {"alexnet": 64, "vgg16": 32, "gilnet": 64, "attention56": 64}


@pytest.mark.parametrize("name", train_bench.TRAIN_MODELS)
def test_torch_layouts_match_the_flax_models(name, rng):
  # Same layers, channels and weight layout: the Flax model's variables copied into the torch twin
  # give the same outputs, in float64 on both sides. Flax's BatchNorm computes its factor
  # scale * rsqrt(var + eps) in the float32 of its parameters (two roundings, 1.2e-7 relative),
  # and the deepest path (Attention-56's mask branch) crosses fewer than 100 of them: relative
  # differences up to ~1.2e-5, the rest (float64) below 1e-12. Any layout difference (a transposed
  # kernel, a shifted pad, another pool alignment, a missed statistic) is of order 1.
  width, size = 0.125, _PARITY_SIZES.get(name, 32)
  channels = models.spec(name).input_shape[-1]
  x = rng.normal(size=(2, size, size, channels))
  ref = torch_refs.build(name, width, 10, size, channels).double()
  with jax.enable_x64(True):
    model = models.get(name, num_classes=10, width=width, dtype=jnp.float64)
    v = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, size, size, channels)))
    # Batch statistics and the non-kernel parameters (biases, BN / dlib affine scales and offsets)
    # away from their initial 0 / 1, so that every normalisation is tested too.
    def perturb(path, leaf):
      name = path[-1].key
      if name == "kernel":
        return leaf
      noise = rng.uniform(0.5, 1.5, leaf.shape) if name in ("var", "scale") else (
          1 + 0.2 * rng.normal(size=leaf.shape))
      return (leaf * noise if name in ("var", "scale") else leaf + noise - 1).astype(leaf.dtype)
    v = jax.tree_util.tree_map_with_path(perturb, v)
    logits = np.asarray(jax.jit(model.apply)(v, jnp.asarray(x))[0])
    flax_count = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(v["params"]))
    assert sum(p.numel() for p in ref.parameters()) == flax_count
    torch_refs.load_flax_variables(ref, model, v, x)
  with torch.no_grad():
    got = ref.eval()(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  assert got.shape == logits.shape == (2, 10)
  scale = np.abs(logits).max()
  assert scale > 0 and np.abs(got - logits).max() <= 2e-5 * scale


def test_conv_bench_row():
  r = train_bench.bench_conv((2, 4, 8, 8, 3, 1, 1, 1), repeats=1)
  assert r["rule"] == "im2col" and r["fastest_fwd_bwd"] in ("direct", "im2col")
  for key in ("direct_fwd_ms", "direct_fwd_bwd_ms", "im2col_fwd_ms", "im2col_fwd_bwd_ms"):
    assert r[key] > 0


def test_train_bad_arguments(capsys):
  assert bench.main(["train", "--model", "alexnet,lenet"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "unknown model(s) lenet" in err[0]
  with pytest.raises(SystemExit) as e:
    bench.main(["train", "--conv", "winograd"])
  assert e.value.code == 2
  assert "unknown --conv lowering(s) winograd" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    bench.main(["train", "--width", "0"])
  assert "--width" in capsys.readouterr().err
