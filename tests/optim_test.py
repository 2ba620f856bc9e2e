"""Schedules and optimiser groups of jaxface.optim against hand-computed values."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxface import config_lib
from jaxface import optim


def _params():
  """A tiny AlexNet-like tree: two convs, fc7, fc8 (kernels and biases)."""
  rng = np.random.default_rng(0)
  shapes = {"conv1": (3, 2), "conv2": (2, 2), "fc7": (2, 2), "fc8": (2, 3)}
  return {"params": {name: {"kernel": jnp.asarray(rng.normal(size=s), jnp.float32),
                            "bias": jnp.asarray(rng.normal(size=s[-1:]), jnp.float32)}
                     for name, s in shapes.items()}}


def _grads(params, seed=1):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)


def _updates(cfg, params, grads_seq, **kw):
  """The updates of consecutive steps (init and all updates in one compiled program)."""
  tx = optim.make_optimizer(cfg, params, **kw)

  def run(params, grads_seq):
    state = tx.init(params)
    out = []
    for g in grads_seq:
      u, state = tx.update(g, state, params)
      out.append(u)
    return out

  return jax.jit(run)(params, list(grads_seq))


# The tests below compare float32 updates and schedules with hand formulas in float64: one to a
# few float32 roundings (2^-24 ~ 6e-8 relative each), so rtol 1e-6 (1e-5 where a momentum trace,
# a clip norm or a power adds a few more) is a fixed margin; a wrong factor is off by > 1e-2.


def _sched(cfg, steps, **kw):
  s = optim.make_schedule(cfg, **kw)
  return np.asarray(jax.jit(s)(jnp.asarray(steps)))


def test_constant_and_step_schedules():
  np.testing.assert_allclose(_sched({"lr": 0.01}, [0, 1000]), [0.01, 0.01], rtol=1e-6)
  # VEGAC: 1e-3 for 50 epochs, then /10 every 10 epochs (80 epochs); 10 steps per epoch.
  cfg = {"lr": 1e-3, "schedule": "step", "boundaries_epochs": (50, 60, 70)}
  got = _sched(cfg, [0, 499, 500, 599, 600, 700, 799], steps_per_epoch=10)
  np.testing.assert_allclose(got, [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-6, 1e-6], rtol=1e-5)
  # GilNet: Caffe step policy, gamma 0.1 every 10,000 iterations.
  cfg = {"lr": 1e-3, "schedule": "step", "boundaries_steps": (10000, 20000), "decay_factor": 0.5}
  np.testing.assert_allclose(_sched(cfg, [9999, 10000, 20000]), [1e-3, 5e-4, 2.5e-4], rtol=1e-6)
  # optax calls the schedule with a scalar count.
  np.testing.assert_allclose(float(optim.make_schedule(cfg)(10000)), 5e-4, rtol=1e-6)


def test_polynomial_cosine_keras_time_and_warmup():
  cfg = {"lr": 0.01, "schedule": "polynomial", "power": 0.5}
  np.testing.assert_allclose(_sched(cfg, [0, 75, 100, 200], total_steps=100),
                             [0.01, 0.005, 0.0, 0.0], rtol=1e-6, atol=1e-9)
  cfg = {"lr": 0.01, "schedule": "polynomial", "end_lr": 0.001}
  np.testing.assert_allclose(_sched(cfg, [50], total_steps=100), [0.0055], rtol=1e-6)
  cfg = {"lr": 1.0, "schedule": "cosine"}
  np.testing.assert_allclose(_sched(cfg, [0, 25, 50, 100], total_steps=100),
                             [1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.0], atol=1e-6)
  # ML-Net: Keras SGD(lr=1e-3, decay=5e-4) is lr / (1 + 5e-4 * t).
  cfg = {"lr": 1e-3, "schedule": "keras_time", "decay": 5e-4}
  np.testing.assert_allclose(_sched(cfg, [0, 1000, 3000]), [1e-3, 1e-3 / 1.5, 1e-3 / 2.5],
                             rtol=1e-6)
  cfg = {"lr": 1.0, "warmup_steps": 4}
  np.testing.assert_allclose(_sched(cfg, [0, 1, 3, 10]), [0.25, 0.5, 1.0, 1.0], rtol=1e-6)


def test_config_errors_name_the_field():
  with pytest.raises(ValueError, match=r"optim\.lr: must be > 0"):
    optim.make_schedule({"lr": -0.1})
  with pytest.raises(ValueError, match=r"optim\.lr: is required"):
    optim.make_schedule({"name": "sgd"})
  with pytest.raises(ValueError, match=r"optim\.schedule: .*'exp'"):
    optim.make_schedule({"lr": 0.1, "schedule": "exp"})
  with pytest.raises(ValueError, match=r"unknown field\(s\) \['boundaries'\]"):
    optim.make_schedule({"lr": 0.1, "boundaries": (1,)})
  with pytest.raises(ValueError, match=r"optim\.schedule: 'polynomial' .*total_steps"):
    optim.make_schedule({"lr": 0.1, "schedule": "polynomial"})
  with pytest.raises(ValueError, match=r"optim\.boundaries_epochs: .*exactly one"):
    optim.make_schedule({"lr": 0.1, "schedule": "step", "boundaries_epochs": (1,),
                         "boundaries_steps": (5,)})
  with pytest.raises(ValueError, match=r"optim\.boundaries_epochs: needs steps_per_epoch"):
    optim.make_schedule({"lr": 0.1, "schedule": "step", "boundaries_epochs": (30,)})
  with pytest.raises(ValueError, match=r"optim\.boundaries_steps: must be strictly increasing"):
    optim.make_schedule({"lr": 0.1, "schedule": "step", "boundaries_steps": (20, 10)})
  with pytest.raises(ValueError, match=r"optim\.momentum"):
    optim.make_schedule({"lr": 0.1, "momentum": 1.5})
  params = _params()
  with pytest.raises(ValueError, match=r"optim\.freeze: pattern 'conv9' matches no parameter; "
                     r"parameter paths are like: conv1/bias, conv1/kernel"):
    optim.make_optimizer({"lr": 0.1, "freeze": ("conv9",)}, params)
  with pytest.raises(ValueError, match=r"optim\.lr_mult: pattern 'fc9'"):
    optim.make_optimizer({"lr": 0.1, "lr_mult": (("fc9", 0.5),)}, params)
  with pytest.raises(ValueError, match=r"optim\.lr_mult: entry 0 .*>= 0"):
    optim.make_optimizer({"lr": 0.1, "lr_mult": (("fc7", -1),)}, params)
  with pytest.raises(ValueError, match="exclusive"):
    optim.make_optimizer({"lr": 0.1, "freeze": ("fc7",), "trainable": ("fc8",)}, params)
  with pytest.raises(ValueError, match=r"optim\.freeze: pattern '\(' is not a valid"):
    optim.make_optimizer({"lr": 0.1, "freeze": ("(",)}, params)
  with pytest.raises(ValueError, match="no trainable parameter"):
    optim.make_optimizer({"lr": 0.1, "freeze": (".*",)}, params)


def test_config_errors_are_config_errors_naming_the_config_field():
  """ConfigError is what the entry points print as one line (exit code 2), not a traceback."""
  params = _params()
  for cfg, message in (
      ({"lr": 0.1, "lr_mult": (("fc9", 0.5),)}, r"config\.optim\.lr_mult: pattern 'fc9' matches "
                                                 "no parameter"),
      ({"lr": 0.1, "trainable": ("fc9",)}, r"config\.optim\.trainable: pattern 'fc9' matches "
                                            "no parameter"),
      ({"lr": 0.1, "freeze": (".*",)}, r"config\.optim: freeze/trainable/lr_mult leave no "
                                        "trainable parameter"),
      ({"lr": 0.1, "freeze": ("fc7",), "trainable": ("fc8",)}, r"config\.optim\.freeze and "
                                                               r"config\.optim\.trainable"),
      ({"lr": 0.1, "lrr": 1}, r"config\.optim: unknown field\(s\) \['lrr'\]")):
    with pytest.raises(config_lib.ConfigError, match="^" + message):
      optim.make_optimizer(cfg, params)


def test_configdict_and_groups_report():
  cfg = ml_collections.ConfigDict({"optim": {
      "name": "sgd", "lr": 0.01, "weight_decay": 5e-4, "freeze": ("conv1",),
      "lr_mult": (("conv.*", 0.1), ("fc7", 0.5)), "schedule": None}})
  rows = optim.describe_param_groups(cfg, _params())
  got = {r.path: (r.group, r.lr_mult, r.frozen) for r in rows}
  assert got == {
      "conv1/bias": ("frozen", 0.0, True), "conv1/kernel": ("frozen", 0.0, True),
      "conv2/bias": ("lr_x0.1", 0.1, False), "conv2/kernel": ("lr_x0.1+wd", 0.1, False),
      "fc7/bias": ("lr_x0.5", 0.5, False), "fc7/kernel": ("lr_x0.5+wd", 0.5, False),
      "fc8/bias": ("lr_x1", 1.0, False), "fc8/kernel": ("lr_x1+wd", 1.0, False)}
  text = optim.format_param_groups(cfg, _params())
  assert "conv2/kernel  (2, 2)" in text and "frozen: 8 parameters" in text
  # Patterns are searched in the path: anchor them to select one module exactly.
  tree = {"conv1": {"kernel": jnp.ones(1)}, "conv1_1": {"kernel": jnp.ones(1)},
          "fc7": {"kernel": jnp.ones(1)}}
  rows = optim.describe_param_groups({"lr": 0.1, "freeze": ("conv1",)}, tree)
  assert [r.frozen for r in rows] == [True, True, False]
  rows = optim.describe_param_groups({"lr": 0.1, "freeze": ("^conv1/",)}, {"params": tree})
  assert [(r.path, r.frozen) for r in rows] == [
      ("conv1/kernel", True), ("conv1_1/kernel", False), ("fc7/kernel", False)]
  rows = optim.describe_param_groups({"lr": 0.1, "lr_mult": ((r"conv\d_\d/", 0.1),)}, tree)
  assert [r.lr_mult for r in rows] == [1.0, 0.1, 1.0]


def test_caffe_blob_multipliers_are_expressible():
  # Levi & Hassner's prototxt: blobs_lr 1 / 2 (weights / biases), 10 / 20 on fc8; biases undecayed.
  cfg = {"lr": 1e-3, "weight_decay": 5e-4,
         "lr_mult": (("^fc8/bias", 20.0), ("^fc8/", 10.0), ("/bias$", 2.0))}
  got = {r.path: (r.group, r.lr_mult) for r in optim.describe_param_groups(cfg, _params())}
  assert got["fc8/bias"] == ("lr_x20", 20.0) and got["fc8/kernel"] == ("lr_x10+wd", 10.0)
  assert got["conv1/bias"] == ("lr_x2", 2.0) and got["conv1/kernel"] == ("lr_x1+wd", 1.0)


def test_frozen_and_trainable_parameters_get_zero_updates():
  params = _params()
  g1, g2 = _grads(params, 1), _grads(params, 2)
  cfg = {"lr": 0.1, "weight_decay": 0.01, "freeze": ("conv1",), "grad_clip_norm": 100.0}
  for u in _updates(cfg, params, [g1, g2]):
    for name, layer in u["params"].items():
      for leaf in layer.values():
        assert np.all(np.asarray(leaf) == 0) == (name == "conv1"), name
  # SAF-BAGE: only fc6-fc8 train.
  (u,) = _updates({"lr": 0.1, "trainable": ("fc[678]",)}, params, [g1])
  for name, layer in u["params"].items():
    for leaf in layer.values():
      assert np.all(np.asarray(leaf) == 0) == name.startswith("conv"), name


def test_lr_multipliers_scale_sgd_updates():
  params = _params()
  g1, g2 = _grads(params, 1), _grads(params, 2)
  cfg = {"lr": 0.1, "momentum": 0.9, "lr_mult": (("conv.*", 0.1), ("fc7", 0.5))}
  u1, u2 = _updates(cfg, params, [g1, g2])
  mults = {"conv1": 0.1, "conv2": 0.1, "fc7": 0.5, "fc8": 1.0}
  for name, mult in mults.items():
    for leaf in ("kernel", "bias"):
      a, b = np.asarray(g1["params"][name][leaf]), np.asarray(g2["params"][name][leaf])
      np.testing.assert_allclose(u1["params"][name][leaf], -0.1 * mult * a, rtol=1e-6)
      # Momentum trace: v2 = g2 + 0.9 * g1.
      np.testing.assert_allclose(u2["params"][name][leaf], -0.1 * mult * (b + 0.9 * a),
                                 rtol=1e-5)


def test_weight_decay_kernels_only_and_caffe_order():
  params = _params()
  zero = jax.tree.map(jnp.zeros_like, params)
  cfg = {"lr": 0.5, "momentum": 0.0, "weight_decay": 0.1, "lr_mult": (("fc7", 0.5),)}
  (u,) = _updates(cfg, params, [zero])
  p = params["params"]
  np.testing.assert_allclose(u["params"]["fc8"]["kernel"], -0.5 * 0.1 * p["fc8"]["kernel"],
                             rtol=1e-6)
  np.testing.assert_allclose(u["params"]["fc7"]["kernel"], -0.5 * 0.5 * 0.1 * p["fc7"]["kernel"],
                             rtol=1e-6)
  assert np.all(np.asarray(u["params"]["fc8"]["bias"]) == 0)
  (u,) = _updates(dict(cfg, weight_decay_mask="all"), params, [zero])
  np.testing.assert_allclose(u["params"]["fc8"]["bias"], -0.5 * 0.1 * p["fc8"]["bias"], rtol=1e-6)
  # Caffe: the decay joins the gradient before the learning rate and multiplier.
  g = _grads(params)
  (u,) = _updates(cfg, params, [g])
  np.testing.assert_allclose(
      u["params"]["fc7"]["kernel"],
      -0.5 * 0.5 * (g["params"]["fc7"]["kernel"] + 0.1 * p["fc7"]["kernel"]), rtol=1e-5)


def test_adam_l2_versus_adamw_decoupled():
  params = {"dense": {"kernel": jnp.array([[2.0, -4.0]])}}
  zero = {"dense": {"kernel": jnp.zeros((1, 2))}}
  (u,) = _updates({"name": "adamw", "lr": 0.1, "weight_decay": 0.01}, params, [zero])
  np.testing.assert_allclose(u["dense"]["kernel"], [[-0.1 * 0.01 * 2.0, 0.1 * 0.01 * 4.0]],
                             rtol=1e-6)
  # Adam with L2: the decay is a gradient, normalised by Adam: the first step is -lr * sign(w).
  (u,) = _updates({"name": "adam", "lr": 0.1, "weight_decay": 0.01}, params, [zero])
  np.testing.assert_allclose(u["dense"]["kernel"], [[-0.1, 0.1]], rtol=1e-5)


def test_clip_ignores_frozen_gradients_and_keras_time_decay_in_updates():
  params = {"a": {"kernel": jnp.zeros((2,))}, "b": {"kernel": jnp.zeros((2,))}}
  grads = {"a": {"kernel": jnp.array([300.0, 400.0])}, "b": {"kernel": jnp.array([0.3, 0.4])}}
  cfg = {"lr": 1.0, "momentum": 0.0, "freeze": ("a",), "grad_clip_norm": 1.0}
  (u,) = _updates(cfg, params, [grads])
  np.testing.assert_allclose(u["b"]["kernel"], [-0.3, -0.4], rtol=1e-6)  # Norm 0.5: unclipped.
  (u,) = _updates(dict(cfg, freeze=()), params, [grads])
  np.testing.assert_allclose(u["b"]["kernel"], -np.array([0.3, 0.4]) / math.hypot(500, 0.5),
                             rtol=1e-5)
  cfg = {"lr": 1e-3, "momentum": 0.0, "schedule": "keras_time", "decay": 0.5}
  us = _updates(cfg, params, [grads] * 3)
  for t, u in enumerate(us):
    np.testing.assert_allclose(u["a"]["kernel"], -1e-3 / (1 + 0.5 * t) * np.array([300, 400]),
                               rtol=1e-6)
