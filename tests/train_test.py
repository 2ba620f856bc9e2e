"""Training and evaluation end to end: every config's smoke run, one vs eight devices, SIGKILL and
resume, NaN stop, gradient accumulation, init_from, and bad config values."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxface import checkpointing
from jaxface import config_lib
from jaxface import evaluate as evaluate_lib
from jaxface import stages as stages_lib
from jaxface import steps as steps_lib
from jaxface import train as train_lib
from jaxface.tasks import Task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")

# The proof that each config runs is tests/configs_e2e_test.py, on its dataset's native layout.
# Here: the readings it does not train (no saliency, one gender dataset, GilNet's age task), on the
# synthetic faces, which have every label.
SMOKE = [
    "affectnet.py:smoke,r=0",
    "vegac.py:smoke,task=gender,dataset=lfw",
    "gilnet_adience.py:smoke,task=age",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """One synthetic_faces/small build shared by the module (the configs build it on first use)."""
  return str(tmp_path_factory.mktemp("tfds"))


def _load(spec: str, data_dir: str, **overrides):
  config = config_lib.load(os.path.join(CONFIGS, spec))
  with config.unlocked():
    targets = [config] + [s for s in config.stages.values()] if config.stages else [config]
    for c in targets:
      c.data.data_dir = data_dir
      for key, value in overrides.items():
        node = c
        *path, leaf = key.split(".")
        for p in path:
          node = node[p]
        node[leaf] = value
  return config


@pytest.mark.slow
@pytest.mark.parametrize("spec", SMOKE)
def test_config_smoke_trains_two_steps_and_evaluates(spec, data_dir, tmp_path):
  config = _load(spec, data_dir)
  assert config.smoke and config.train_steps == 2
  summary = train_lib.train_and_evaluate(config, str(tmp_path))
  assert summary["step"] == 2 and summary["latest_step"] == 2
  with open(tmp_path / "eval" / "results.json") as f:
    results = json.load(f)
  tasks = ["saliency"] if config.task.kind == "saliency" else list(config.data.labels)
  for task in tasks:
    assert results[task]["n"] == 16  # eval.max_batches=2 of 8
    if task != "saliency":
      assert 0.0 <= results[task]["accuracy"] <= 1.0
      assert (tmp_path / "eval" / f"confusion_{task}.png").stat().st_size > 1000
    else:
      assert np.isfinite(results[task]["loss"])
  assert (tmp_path / "config.json").exists() and (tmp_path / "metrics.jsonl").exists()
  assert os.listdir(tmp_path / "tb")


def test_demo_smoke_runs_the_whole_chain(data_dir, tmp_path):
  config = _load("demo.py:smoke", data_dir)
  results = train_lib.train_and_evaluate(config, str(tmp_path))
  assert set(results) == {"mlnet", "classifier"}
  for task in ("age", "gender", "expression"):
    assert results["classifier"][task]["n"] == 16
  cls = tmp_path / "classifier"
  assert (cls / "eval" / "samples.png").stat().st_size > 1000
  assert (cls / "eval" / "confusion_age.png").exists()
  with open(cls / "saliency_cache.json") as f:
    assert json.load(f)  # the cache the classifier read, made with the mlnet stage's weights
  with open(tmp_path / "results.json") as f:
    assert set(json.load(f)) == {"mlnet", "classifier"}


def test_every_example_counts_once(data_dir, tmp_path):
  config = _load("utkface.py:smoke,model=resnet18", data_dir, **{"eval.max_batches": 0,
                                                                 "eval.batch_size": 8})
  train_lib.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / "eval" / "results.json") as f:
    results = json.load(f)
  # 50 test examples in batches of 8: the padded last batch is masked.
  assert results["age"]["n"] == 50 and results["gender"]["n"] == 50
  assert sum(map(sum, results["gender"]["confusion"])) == 50


# ----------------------------------------------------------------------------- subprocess runs

_RUN = r"""
import json, sys
import numpy as np
from jaxface import config_lib, checkpointing, train
config = config_lib.load(sys.argv[1])
with config.unlocked():
  for kv in sys.argv[3:]:
    k, v = kv.split("=", 1)
    node = config
    *path, leaf = k.split(".")
    for p in path:
      node = node[p]
    node[leaf] = type(node[leaf])(v) if not isinstance(node[leaf], bool) else v == "True"
train.train_and_evaluate(config, sys.argv[2])
variables, _, _ = checkpointing.load_model_variables(sys.argv[2])
flat = {"/".join(map(str, p)): np.asarray(v) for p, v in
        __import__("jax").tree_util.tree_flatten_with_path(variables)[0]}
np.savez(sys.argv[2] + "/final_params.npz", **{k.replace("'", ""): v for k, v in flat.items()})
"""


def _run(spec, workdir, data_dir, *overrides, devices=1, wait=True):
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      f" --xla_force_host_platform_device_count={devices}").strip()
  env["JAX_PLATFORMS"] = "cpu"
  args = [sys.executable, "-c", _RUN, os.path.join(CONFIGS, spec), str(workdir),
          f"data.data_dir={data_dir}", *overrides]
  if not wait:
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def _params(workdir):
  with np.load(os.path.join(workdir, "final_params.npz")) as f:
    return {k: f[k] for k in f.files}


def _train_losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return [(r["step"], r["train/age/loss"]) for r in rows if "train/age/loss" in r]


@pytest.mark.slow
def test_one_and_eight_devices_agree(data_dir, tmp_path):
  # ResNet-18 (batch norm over the global batch) with the gender->age multi-task head. SGD, as
  # Adam's first steps are lr * sign(g): rounding noise on a near-zero gradient flips a sign.
  common = ("utkface.py:smoke,model=resnet18",)
  overrides = ("batch_size=8", "eval.after_train=False", "eval_every_steps=0",
               "log_every_steps=1", "optim.name=sgd", "optim.lr=0.01")
  one, eight = tmp_path / "one", tmp_path / "eight"
  _run(*common, one, data_dir, *overrides, devices=1)
  _run(*common, eight, data_dir, *overrides, devices=8)
  with open(eight / "run.json") as f:
    assert json.load(f)["mesh"] == {"data": 8}
  l1, l8 = _train_losses(one), _train_losses(eight)
  assert [s for s, _ in l1] == [1, 2] and [s for s, _ in l8] == [1, 2]
  p1, p8 = _params(one), _params(eight)
  assert p1.keys() == p8.keys()
  # Tolerance from the computation: 8 devices sum the same float32 products in another order
  # (per-device partial sums, then an all-reduce), and XLA:CPU picks other kernels per shape and
  # CPU. A float32 dot of length n has a typical relative rounding error of sqrt(n) * 2^-24;
  # through the network's conv / dense layers (depth) that is at most depth * sqrt(n_max) * 2^-24
  # relative (n_max: the largest fan-in). A per-device BatchNorm or a wrongly sharded batch moves
  # the loss by more than 1e-2; the tolerance below is about 5e-5 for this smoke ResNet-18.
  kernels = [v for k, v in p1.items() if k.rstrip("]").endswith("kernel")]
  depth = len(kernels)
  n_max = max(int(np.prod(v.shape[:-1])) for v in kernels)
  rel = depth * np.sqrt(n_max) * 2.0**-24
  # Step 1's loss comes from the same parameters: the bound above. What follows an update (step 2's
  # loss, the parameters) carries step 1's gradient, whose rounding BatchNorm's backward over this
  # batch of 8 on 2x2 maps amplifies (it divides by each channel's batch std, small here): measured
  # 4.1e-5 relative on step 2's loss on an AVX2-only EPYC (1.2x the forward bound), far less on
  # Zen 4. amplify = 16 covers that with room; the bound (1.2e-3 on the loss) stays 8x below the
  # 1e-2 a sharding bug moves it.
  amplify = 16
  (_, a1), (_, b1) = l1[0], l8[0]
  np.testing.assert_allclose(a1, b1, rtol=0, atol=rel * abs(a1))
  for (_, a), (_, b) in zip(l1[1:], l8[1:]):
    np.testing.assert_allclose(a, b, rtol=0, atol=amplify * rel * abs(a))
  assert amplify * rel * abs(l1[0][1]) < 2e-3, rel  # still far below what a sharding bug changes
  # The state as a whole (every parameter and batch statistic, one vector): on this check single
  # arrays are no guide, since small ones (BatchNorm biases and means, sums of many cancelling
  # terms) carry differences of a few per cent of their own size on some CPUs (measured on an
  # AVX2-only EPYC: bn1's bias 2 %) while the vector moves by less than the bound. The losses above
  # are the sharding check.
  keys = sorted(p1)
  v1 = np.concatenate([np.ravel(p1[k]) for k in keys]).astype(np.float64)
  v8 = np.concatenate([np.ravel(p8[k]) for k in keys]).astype(np.float64)
  drift = np.linalg.norm(v1 - v8) / np.linalg.norm(v1)
  assert drift <= amplify * rel, (drift, amplify * rel)


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(data_dir, tmp_path):
  spec = "affectnet.py:smoke,r=0"  # AlexNet with dropout: the rng must resume too
  overrides = ("train_steps=30", "checkpoint_every_steps=3", "eval_every_steps=0",
               "eval.after_train=False", "log_every_steps=1", "keep_checkpoints=50")
  full, killed = tmp_path / "full", tmp_path / "killed"
  _run(spec, full, data_dir, *overrides)
  proc = _run(spec, killed, data_dir, *overrides, wait=False)
  ckpt_dir = killed / "checkpoints"
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if (ckpt_dir / "6").is_dir():
      break
    time.sleep(0.02)
  assert proc.poll() is None, "the run ended before it could be killed"
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  steps_at_kill = sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
  assert steps_at_kill and max(steps_at_kill) < 30, steps_at_kill
  _run(spec, killed, data_dir, *overrides)  # resumes from the newest complete checkpoint
  with open(killed / "run.json") as f:
    assert "step" in json.load(f)["resumed_from"]
  p_full, p_killed = _params(full), _params(killed)
  for k in p_full:
    np.testing.assert_array_equal(p_full[k], p_killed[k], err_msg=k)


# ----------------------------------------------------------------------------- in-process


def test_nan_stops_with_message_and_keeps_last_good_checkpoint(data_dir, tmp_path):
  config = _load("affectnet.py:smoke,r=0", data_dir, **{
      "train_steps": 6, "checkpoint_every_steps": 1, "eval_every_steps": 0,
      "optim.lr": 1e30, "optim.trainable": (), "eval.after_train": False})
  with pytest.raises(train_lib.TrainingDiverged, match=r"not finite at step \d.*last good"):
    train_lib.train_and_evaluate(config, str(tmp_path))
  steps = checkpointing.Checkpointer(str(tmp_path), read_only=True).all_steps()
  assert max(steps, default=0) < 6
  for s in steps:  # every kept checkpoint holds finite parameters
    variables, _, _ = checkpointing.load_model_variables(str(tmp_path), s)
    assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(variables))


def test_gradient_accumulation_equals_the_full_batch():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  class Tiny(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
      return nn.Dense(3)(x.reshape(x.shape[0], -1)), {}

  config = config_lib.base_config()
  config.data.labels = ("age",)
  tasks = [Task("age", "class", ("a", "b", "c"))]
  model = Tiny()
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.integers(0, 255, (8, 4, 4, 3)), jnp.uint8),
           "age": jnp.asarray(rng.integers(0, 3, 8)), "mask": jnp.ones(8, bool)}
  results = []
  for accum in (1, 4):
    config.accum_steps = accum
    tx = optax.sgd(0.1)
    variables = steps_lib.init_variables(model, (4, 4), 0)
    state = steps_lib.create_state(variables, tx, 0)
    step = jax.jit(steps_lib.make_train_step(model, tx, tasks, config, {}, lambda s: 0.1,
                                             lambda im: im.astype(jnp.float32) / 255))
    new_state, metrics = step(state, batch)
    results.append((new_state["params"], metrics["age/loss"]))
  # Accumulation regroups the same float32 sums (8 examples, Dense fan-in 48): two orders of
  # n terms differ by at most n * 2^-24 * sum|terms|, n = 8 + 48 for the parameters' gradient
  # path (values of order max|p| after one lr=0.1 step) and n = 8 for the summed loss. A wrong
  # micro-batch average (e.g. summing instead of averaging gradients) is off by 3x.
  for a, b in zip(jax.tree.leaves(results[0][0]), jax.tree.leaves(results[1][0])):
    np.testing.assert_allclose(a, b, rtol=0, atol=(8 + 48) * 2.0**-24 * max(np.abs(a).max(), 1))
  np.testing.assert_allclose(results[0][1][0], results[1][1][0], rtol=8 * 2.0**-24 * 2)


def test_merge_pretrained_reports_loaded_and_new():
  variables = {"params": {"conv1": {"kernel": jnp.zeros((3, 3, 3, 4)), "bias": jnp.zeros(4)},
                          "fc8": {"kernel": jnp.zeros((4, 2)), "bias": jnp.zeros(2)}}}
  pretrained = {"params": {"conv1": {"kernel": jnp.ones((3, 3, 3, 4)), "bias": jnp.ones(4)},
                           "fc8": {"kernel": jnp.ones((4, 1000)), "bias": jnp.ones(1000)},
                           "extra": {"w": jnp.ones(1)}}}
  merged, report = steps_lib.merge_pretrained(variables, pretrained)
  assert float(merged["params"]["conv1"]["kernel"].sum()) == 108.0
  assert float(merged["params"]["fc8"]["kernel"].sum()) == 0.0
  assert sorted(report.loaded) == ["params/conv1/bias", "params/conv1/kernel"]
  assert report.new == ["params/fc8/bias (shape (1000,) != (2,))",
                        "params/fc8/kernel (shape (4, 1000) != (4, 2))"]
  assert report.unused == ["params/extra/w"]
  assert "2 arrays loaded, 2 newly initialised, 1 in the file unused" in report.format()


def test_trainer_maps_init_from_into_the_fresh_state(data_dir, tmp_path):
  """An imported-looking AlexNet file without fc8: the trainer's state holds the file's arrays
  (jaxface.init_from; the mapping and the failures are tested in tests/init_from_test.py)."""
  from jaxface import init_from  # pylint: disable=g-import-not-at-top
  from jaxface import optim  # pylint: disable=g-import-not-at-top
  from jaxface.models import from_config  # pylint: disable=g-import-not-at-top
  from jaxface.weights import common as weights_common  # pylint: disable=g-import-not-at-top
  config = _load("affectnet.py:smoke,r=0", data_dir)
  model = from_config.build_model(config, [Task("expression", "class", tuple("abcdefg"))])
  rng = np.random.default_rng(0)
  flat = {k: rng.normal(size=v.shape).astype(np.float32)
          for k, v in init_from.flat_paths(init_from.model_shapes(model, config)).items()
          if "/fc8/" not in k}
  good = tmp_path / "alexnet.npz"
  weights_common.save(good, weights_common.unflatten(flat), {"model": "alexnet"})
  with config.unlocked():
    config.init_from = str(good)
  trainer = train_lib.Trainer(config, str(tmp_path / "run"))
  shapes = jax.eval_shape(lambda: steps_lib.init_variables(
      trainer.model, tuple(config.model.input_size), config.seed))
  tx = optim.make_optimizer(config.optim, shapes["params"], 1, 2)
  state, report = trainer._init_state(tx)  # pylint: disable=protected-access
  assert len(report.loaded) == 14 and len(report.new) == 2  # conv1-5, fc6, fc7; fc8 new
  for path, value in flat.items():
    _, layer, leaf = path.split("/")
    np.testing.assert_array_equal(np.asarray(state["params"][layer][leaf]), value, err_msg=path)


def test_checkpointer_keeps_latest_and_best(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=2, best_metric="val/acc")
  state = {"w": jnp.zeros(3)}
  for step, acc in [(1, 0.2), (2, 0.9), (3, 0.5), (4, 0.4), (5, 0.3)]:
    ckpt.save(step, {"w": jnp.full(3, float(step))}, {"pos": step}, {"step": step},
              {"val/acc": acc})
  ckpt.wait()
  assert ckpt.all_steps() == [2, 4, 5] and ckpt.best_step() == 2
  restored, data, meta = ckpt.restore(2, state)
  np.testing.assert_array_equal(restored["w"], [2.0, 2.0, 2.0])
  assert data == {"pos": 2} and meta == {"step": 2}
  assert checkpointing.resolve_step(ckpt, "best") == 2
  assert checkpointing.resolve_step(ckpt, "latest") == 5
  with pytest.raises(ValueError, match="no checkpoint of step 3"):
    checkpointing.resolve_step(ckpt, "3")
  ckpt.close()


# ----------------------------------------------------------------------------- bad configs


def test_bad_values_fail_at_start_naming_the_field(data_dir, tmp_path):
  config = _load("affectnet.py:smoke", data_dir, **{"optim.lr": -0.1})
  with pytest.raises(config_lib.ConfigError, match=r"config\.optim\.lr: must be positive"):
    train_lib.train_and_evaluate(config, str(tmp_path))
  config = _load("affectnet.py:smoke", data_dir, **{"data.manual_dir": "/no/such/dir"})
  with pytest.raises(config_lib.ConfigError, match=r"config\.data\.manual_dir: .*/no/such/dir"):
    train_lib.train_and_evaluate(config, str(tmp_path))
  config = _load("affectnet.py:r=0", data_dir)  # the real dataset: not prepared, no manual dir
  with pytest.raises(config_lib.ConfigError, match=r"config\.data\.manual_dir: affectnet"):
    train_lib.train_and_evaluate(config, str(tmp_path))
  config = _load("affectnet.py:smoke", data_dir, **{"data.labels": ("smile",)})
  with pytest.raises(config_lib.ConfigError, match=r"config\.data\.labels: 'smile'"):
    train_lib.train_and_evaluate(config, str(tmp_path))
  bad = tmp_path / "bad.npz"
  bad.write_bytes(b"not an npz")
  config = _load("affectnet.py:smoke,r=0", data_dir, **{"init_from": str(bad)})
  with pytest.raises(config_lib.ConfigError, match=r"config\.init_from: .*bad\.npz is not a"):
    train_lib.train_and_evaluate(config, str(tmp_path / "badinit"))
  with pytest.raises(config_lib.ConfigError, match="unknown config argument 'tsk'"):
    config_lib.load(os.path.join(CONFIGS, "vegac.py:tsk=age"))


def test_unknown_field_on_the_command_line_is_named(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "jaxface.train", "--config", os.path.join(CONFIGS, "affectnet.py"),
       "--workdir", str(tmp_path), "--config.optim.lrr=0.1"],
      capture_output=True, text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode != 0
  assert "lrr" in proc.stderr


# ----------------------------------------------------------------------------- more modes


def test_online_saliency_and_bfloat16(data_dir, tmp_path):
  """Saliency computed inside the jitted step from an imported ML-Net .npz, bf16 computation."""
  from jaxface import models  # pylint: disable=g-import-not-at-top
  from jaxface.weights import common  # pylint: disable=g-import-not-at-top
  kwargs = {"width": 1 / 16, "dropout_rate": 0.0, "prior_shape": (2, 2)}
  mlnet = models.get("mlnet", **kwargs)
  variables = jax.jit(lambda: mlnet.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))()
  npz = str(tmp_path / "mlnet.npz")
  common.save(npz, variables, {"model": "mlnet", "model_kwargs": kwargs, "format": "test",
                               "preprocessing": common.CAFFE_IMAGENET_BGR.to_dict()})
  config = _load("affectnet.py:smoke,r=0", data_dir, **{
      "saliency.mode": "online", "saliency.mlnet": npz, "saliency.r": 0.3,
      "saliency.mlnet_input": (32, 32), "model.dtype": "bfloat16"})
  summary = train_lib.train_and_evaluate(config, str(tmp_path / "run"))
  assert summary["step"] == 2 and np.isfinite(summary["test"]["expression"]["accuracy"])
  with open(tmp_path / "run" / "config.json") as f:
    saved = json.load(f)
  assert saved["saliency"]["mode"] == "online" and saved["model"]["dtype"] == "bfloat16"


def test_folds_and_ensemble_evaluation(data_dir, tmp_path):
  runs = []
  for seed in (0, 1):
    config = _load("gilnet_adience.py:smoke,task=gender", data_dir, **{
        "seed": seed, "eval.after_train": False, "eval.max_batches": 0})
    train_lib.train_and_evaluate(config, str(tmp_path / f"run{seed}"))
    runs.append(str(tmp_path / f"run{seed}"))
  folds = evaluate_lib.evaluate_folds(runs, str(tmp_path / "folds"))
  per = [r["gender"]["accuracy"] for r in folds["per_fold"]]
  summary = folds["summary"]["gender"]["accuracy"]
  assert summary["mean"] == pytest.approx(np.mean(per))
  assert summary["std"] == pytest.approx(np.std(per, ddof=1))
  assert folds["summary"]["gender"]["n"] == 100  # 50 test examples per run
  ens = evaluate_lib.evaluate_ensemble(runs, str(tmp_path / "ens"))
  assert ens["gender"]["n"] == 50 and set(ens["members"]) == set(runs)
  # GilNet's ten-view oversampling: the ensemble of a run with itself is that run.
  same = evaluate_lib.evaluate_ensemble([runs[0], runs[0]], str(tmp_path / "same"))
  assert same["gender"]["accuracy"] == pytest.approx(per[0])
  assert (tmp_path / "ens" / "confusion_gender.png").exists()


def test_expectations_fail_the_run_below_the_stated_accuracy():
  config = config_lib.base_config()
  config.eval.expect = {"age": 0.4, "gender": 0.8}
  stages_lib.check_expectations(config, {"age": {"accuracy": 0.41}, "gender": {"accuracy": 0.8}})
  with pytest.raises(stages_lib.BelowExpectation, match=r"gender/accuracy: 0.79 < 0.8"):
    stages_lib.check_expectations(config, {"age": {"accuracy": 0.5},
                                          "gender": {"accuracy": 0.79}})
  with pytest.raises(stages_lib.BelowExpectation, match=r"age/accuracy: None < 0.4"):
    stages_lib.check_expectations(config, {"gender": {"accuracy": 0.9}})
  # A saliency task's headline is its CC; other metrics by name; a NaN never passes.
  config.eval.expect = {"saliency": 0.4, "saliency/nss": 1.0}
  stages_lib.check_expectations(config, {"saliency": {"cc": 0.41, "nss": 1.2, "kld": 0.7}})
  with pytest.raises(stages_lib.BelowExpectation, match=r"saliency/cc: 0.0 < 0.4"):
    stages_lib.check_expectations(config, {"saliency": {"cc": 0.0, "nss": 1.2}})
  with pytest.raises(stages_lib.BelowExpectation, match=r"saliency/nss: nan < 1.0"):
    stages_lib.check_expectations(config, {"saliency": {"cc": 0.5, "nss": float("nan")}})
  config.eval.expect = {"saliency/kld": 0.5}
  with pytest.raises(config_lib.ConfigError, match=r"expect.saliency/kld: KLD is lower-is-better"):
    stages_lib.check_expectations(config, {"saliency": {"kld": 0.7}})
  demo = config_lib.load(os.path.join(CONFIGS, "demo.py"))
  floors = dict(demo.stages.classifier.eval.expect)
  chance = {"age": 1 / 8, "gender": 1 / 2, "expression": 1 / 7}
  assert set(floors) == set(chance)
  for label, floor in floors.items():  # every floor at least 15 points above chance
    assert floor >= chance[label] + 0.15, (label, floor)
  assert dict(demo.stages.mlnet.eval.expect) == {"saliency": 0.4}


def test_forty_attribute_step_on_a_native_celeba_tree(tmp_path):
  """Zhang et al. step 2 (multi-label sigmoid head) end to end on a CelebA tree in its native
  layout, built by the real builder."""
  from tests.data_pipelines.datasets import celeba_test  # pylint: disable=g-import-not-at-top
  manual = tmp_path / "celeba"
  celeba_test._write_tree(str(manual), flat=False, images="img_celeba")
  # In the wild: stored boxes and landmarks feed task_crop (the aligned set has no box; the
  # real config runs MTCNN on it, which random fixture pixels would not satisfy).
  config = _load("zhang_gnet.py:smoke,step=2", str(tmp_path / "tfds"), **{
      "data.name": "celeba", "data.config": "in_the_wild", "data.manual_dir": str(manual),
      "data.labels": ("attributes",), "task.kind": "attributes", "model.head": "attributes",
      "optim.lr_mult": ((r"conv\d_\d/", 0.1), (r"fc7/", 0.5), ("head/", 1.0)),
      "best_metric": "val/attributes/accuracy", "eval.split": "train"})
  summary = train_lib.train_and_evaluate(config, str(tmp_path / "run"))
  result = summary["test"]["attributes"]
  assert len(result["per_attribute"]) == 40 and "Male" in result["per_attribute"]
  assert 0.0 <= result["accuracy"] <= 1.0 and result["n"] == 2  # 000001, 000012: the fixture's other train rows are bad
