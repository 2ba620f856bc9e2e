"""Launchers and multi-process training: the jax.distributed.initialize arguments, a real run of
two CPU processes against one process with the same devices, and the launch/ scripts."""

import json
import os
import re
import socket
import subprocess
import sys
import time

from absl import app
import numpy as np
import pytest

from jaxface import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(REPO, "launch")
SCRIPTS = ("single_gpu.sh", "multi_gpu.sh", "multihost.sh", "slurm.sbatch")

# ----------------------------------------------------------------------------- initialize args


def test_single_process_calls_nothing():
  assert cli.distributed_args(False, {}) is None
  assert cli.distributed_args(False, {"JAX_LOCAL_DEVICE_IDS": "0"}) is None


def test_managed_clusters_are_left_to_jax_detection():
  # --multihost alone (Slurm, Open MPI) or an address override: jax detects the rest.
  assert cli.distributed_args(True, {"SLURM_JOB_ID": "7"}) == {}
  assert cli.distributed_args(False, {"JAX_COORDINATOR_ADDRESS": "n1:1234"}) == {}


def test_plain_cluster_env_is_passed_explicitly():
  env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4",
         "JAX_PROCESS_ID": "3", "JAX_LOCAL_DEVICE_IDS": "0,2"}
  assert cli.distributed_args(False, env) == {
      "coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3,
      "local_device_ids": [0, 2], "cluster_detection_method": "deactivate"}
  del env["JAX_LOCAL_DEVICE_IDS"]
  assert "local_device_ids" not in cli.distributed_args(True, env)


@pytest.mark.parametrize("env, message", [
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}, r"JAX_COORDINATOR_ADDRESS not"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_PROCESS_ID": "0"}, r"JAX_NUM_PROCESSES not"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"},
     r"JAX_NUM_PROCESSES='two' is not an integer"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"},
     r"JAX_PROCESS_ID=2 must be in \[0, JAX_NUM_PROCESSES=2\)"),
    ({"JAX_COORDINATOR_ADDRESS": "h", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"},
     r"JAX_COORDINATOR_ADDRESS='h' must be host:port"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1",
      "JAX_LOCAL_DEVICE_IDS": "0;1"}, r"JAX_LOCAL_DEVICE_IDS='0;1' is not a comma-separated"),
])
def test_bad_plain_cluster_env_names_the_variable(env, message):
  with pytest.raises(app.UsageError, match=message):
    cli.distributed_args(False, env)


def test_installed_jax_detects_slurm_one_gpu_per_task(monkeypatch):
  """Why slurm.sbatch passes nothing but --multihost and runs one task per GPU: the installed
  jax takes the coordinator (first node), count and id from Slurm and restricts each task to
  the GPU of its SLURM_LOCALID."""
  from jax._src import clusters  # pylint: disable=g-import-not-at-top
  for k in list(os.environ):
    if k.startswith(("SLURM_", "OMPI_", "JAX_")):
      monkeypatch.delenv(k)
  monkeypatch.setenv("SLURM_JOB_ID", "4097")
  monkeypatch.setenv("SLURM_STEP_NODELIST", "gpu[017-018]")
  monkeypatch.setenv("SLURM_NTASKS", "16")
  monkeypatch.setenv("SLURM_PROCID", "11")
  monkeypatch.setenv("SLURM_LOCALID", "3")
  address, n, i, local = clusters.ClusterEnv.auto_detect_unset_distributed_params(
      None, None, None, None, None, 10)
  # Port: 4097 % 4096 + 61440, from the job id, so all tasks agree without talking.
  assert (address, n, i, local) == ("gpu017:61441", 16, 11, [3])


# ----------------------------------------------------------------------------- two processes

# Runs ``jaxface.train``'s own flags and main() (so jax.distributed.initialize is called as on
# a cluster) and records the ids of every training batch this process fed, in order. With
# argv[2] = K > 1 it is the single-process reference: the trainer's loader is replaced by K
# real shard loaders (shard k of K, as process k of K reads it) whose batches are concatenated
# in process order, i.e. the global batch the K processes build together.
_MAIN = r"""
import json, sys
from absl import app, flags
import jax
import numpy as np
from data_pipelines import loader as loader_lib
from jaxface import data as data_lib
from jaxface import train

record, emulate = sys.argv[1], int(sys.argv[2])
fed = []


class Recorded:
  def __init__(self, loaders):
    self.loaders = loaders

  @property
  def skipped(self):
    total = loader_lib.SkipCounter()
    for l in self.loaders:
      total.count += l.skipped.count
      total.examples += l.skipped.examples
    return total

  def __next__(self):
    parts = [next(l) for l in self.loaders]
    batch = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    fed.append([str(i) for i in batch["id"]])
    return batch

  def get_state(self):
    return {"shards": [l.get_state() for l in self.loaders]}

  def close(self):
    for l in self.loaders:
      l.close()


real_train_loader = data_lib.train_loader


def train_loader(config, src, seed, local_batch):
  if emulate == 1:
    return Recorded([real_train_loader(config, src, seed, local_batch)])
  return Recorded([loader_lib.make_loader(
      src, pipe=config.data.train_pipe, batch_size=local_batch // emulate, seed=seed,
      shard_index=k, shard_count=emulate, label_keys=data_lib.label_keys(config),
      read_threads=config.data.read_threads, worker_count=int(config.data.worker_count))
      for k in range(emulate)])


data_lib.train_loader = train_loader


def main(argv):
  try:
    rc = train.main(argv)
  finally:
    with open(f"{record}.{jax.process_index()}.json", "w") as f:
      json.dump(fed, f)
  # The final parameters, restored the way evaluation does (into this run's sharded, replicated
  # target: an untargeted restore refuses a checkpoint of another device topology).
  from jaxface import evaluator
  _, state, _, _, _ = evaluator.restore(train._FLAGS["config"].value,
                                         train._FLAGS["workdir"].value, "latest")
  leaves = jax.tree_util.tree_flatten_with_path(
      {"params": state["params"], "batch_stats": state["batch_stats"]})[0]
  if jax.process_index() == 0:
    np.savez(f"{record}.params.npz", **{jax.tree_util.keystr(p): np.asarray(v.addressable_data(0))
                                        for p, v in leaves})
  return rc


sys.argv = ["jaxface.train"] + sys.argv[3:]
train.define_flags()
flags.FLAGS.set_default("verbosity", -1)
app.run(main)
"""

_SPEC = "gilnet_adience.py:smoke,task=age"  # SGD with momentum, dropout: the rng matters too
_OVERRIDES = ("--config.batch_size=8", "--config.eval_every_steps=0",
              "--config.log_every_steps=1", "--config.eval.max_batches=0")
_TEST_SIZE = 50  # synthetic_faces/small test split


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(workdir, data_dir, log, devices: int, emulate: int = 1, **env_vars):
  env = dict(os.environ, JAX_PLATFORMS="cpu", **env_vars)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      f" --xla_force_host_platform_device_count={devices}").strip()
  args = [sys.executable, "-c", _MAIN, str(workdir / "fed"), str(emulate),
          "--config", os.path.join(REPO, "configs", _SPEC), "--workdir", str(workdir),
          f"--config.data.data_dir={data_dir}", *_OVERRIDES]
  return subprocess.Popen(args, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


def _wait_all(procs, logs, timeout: float = 300):
  """Waits for every process; on a failure stops the others (a lone peer would wait for the
  coordinator until its timeout) and shows the failed one's log."""
  deadline = time.time() + timeout
  while any(p.poll() is None for p in procs) and time.time() < deadline:
    if any(p.poll() not in (None, 0) for p in procs):
      break
    time.sleep(0.2)
  failed = [(p, log) for p, log in zip(procs, logs) if p.poll() != 0]
  for p in procs:
    if p.poll() is None:
      p.kill()
      p.wait()
  for p, log in failed:
    log.seek(0)
    pytest.fail(f"{p.args[-len(_OVERRIDES) - 6:]} exited {p.returncode}:\n"
                + log.read().decode()[-4000:])


def _losses(workdir):
  with open(workdir / "metrics.jsonl") as f:
    return [(r["step"], r["train/age/loss"]) for r in map(json.loads, f)
            if "train/age/loss" in r]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """synthetic_faces/small, built before the processes start (each would otherwise race)."""
  from data_pipelines import build  # pylint: disable=g-import-not-at-top
  path = str(tmp_path_factory.mktemp("tfds"))
  build.build("synthetic_faces", "small", path)
  return path


@pytest.mark.slow
def test_two_processes_train_and_evaluate_like_one(data_dir, tmp_path):
  """2 processes x 2 CPU devices (gloo collectives, coordinator on localhost) vs 1 process x 4:
  the same losses and parameters (to float32 reduction-order rounding), each process its own shard, and the evaluation after
  training counts every test example once."""
  two, one = tmp_path / "two", tmp_path / "one"
  port = _free_port()
  logs = [open(tmp_path / f"log{i}", "w+b") for i in range(3)]
  cluster = {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2"}
  procs = [_start(two, data_dir, logs[i], devices=2, JAX_PROCESS_ID=str(i), **cluster)
           for i in range(2)]
  procs.append(_start(one, data_dir, logs[2], devices=4, emulate=2))
  _wait_all(procs, logs)
  out = []
  for log in logs:
    log.seek(0)
    out.append(log.read().decode())
    log.close()
  assert "process 0/2: 2 local / 4 global devices (cpu)" in out[0]
  assert "process 1/2: 2 local / 4 global devices (cpu)" in out[1]
  assert "process 0/1: 4 local / 4 global devices (cpu)" in out[2]
  with open(two / "run.json") as f:
    run = json.load(f)
  assert run["process_count"] == 2 and run["mesh"] == {"data": 4}

  # Each process fed 4 examples a step from its own shard; together, the reference's batches.
  fed = [json.load(open(two / f"fed.{i}.json")) for i in range(2)]
  ref = json.load(open(one / "fed.0.json"))
  assert [len(b) for b in fed[0]] == [len(b) for b in fed[1]] == [4, 4]
  assert not set(sum(fed[0], [])) & set(sum(fed[1], []))
  assert [a + b for a, b in zip(*fed)] == ref

  l2, l1 = _losses(two), _losses(one)
  assert [s for s, _ in l2] == [s for s, _ in l1] == [1, 2]
  assert abs(l1[0][1] - l1[1][1]) > 1e-3  # the first step changed the parameters
  with np.load(two / "fed.params.npz") as f2, np.load(one / "fed.params.npz") as f1:
    assert f2.files == f1.files and f1.files
    p2, p1 = dict(f2), dict(f1)
  # Tolerance from the computation (as in train_test's 1-vs-8 devices): the gloo all-reduce sums
  # the per-device float32 partial sums in another order than one process does, and XLA:CPU picks
  # kernels per shape and CPU. A float32 dot of length n errs by ~sqrt(n) * 2^-24 relative; through
  # the conv / dense layers (depth) at most depth * sqrt(n_max) * 2^-24 (n_max: the largest fan-in).
  # A wrong shard (duplicated or dropped examples) moves the loss by more than 1e-2.
  kernels = [v for k, v in p1.items() if k.endswith("['kernel']")]
  depth = len(kernels)
  n_max = max(int(np.prod(v.shape[:-1])) for v in kernels)
  rel = depth * np.sqrt(n_max) * 2.0**-24
  assert depth >= 3 and rel * abs(l1[0][1]) < 1e-3, (depth, rel)  # far below a sharding bug
  for (_, a), (_, b) in zip(l2, l1):
    np.testing.assert_allclose(a, b, rtol=0, atol=rel * abs(b))
  for k in p1:
    np.testing.assert_allclose(p2[k], p1[k], rtol=0, atol=rel * max(np.abs(p1[k]).max(), 1e-3),
                               err_msg=k)

  # eval.after_train: 50 test examples over 2 x 25, each counted once; same numbers as one run.
  with open(two / "eval" / "results.json") as f:
    r2 = json.load(f)
  with open(one / "eval" / "results.json") as f:
    r1 = json.load(f)
  assert r2["age"]["n"] == r2["_run"]["n"] == _TEST_SIZE == r1["age"]["n"]
  assert sum(map(sum, r2["age"]["confusion"])) == _TEST_SIZE
  assert r2["age"]["confusion"] == r1["age"]["confusion"]
  assert r2["age"]["accuracy"] == pytest.approx(r1["age"]["accuracy"], abs=1e-9)


# ----------------------------------------------------------------------------- the scripts


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_syntax_and_help(script):
  path = os.path.join(LAUNCH, script)
  subprocess.run(["bash", "-n", path], check=True)
  proc = subprocess.run(["bash", path, "--help"], capture_output=True, text=True, check=True)
  assert proc.stdout.startswith("Usage:") and "CONFIG WORKDIR [TRAIN_ARGS...]" in proc.stdout
  proc = subprocess.run(["bash", path], capture_output=True, text=True)
  assert proc.returncode == 2 and "CONFIG and WORKDIR are required" in proc.stderr
  with open(path) as f:
    assert "set -euo pipefail" in f.read()


def _dry_run(script, *args, **env_vars):
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_"))}
  env.update(env_vars, PYTHON="py")
  proc = subprocess.run(["bash", os.path.join(LAUNCH, script), "--dry-run", *args],
                        capture_output=True, text=True, env=env)
  assert proc.returncode == 0, proc.stderr
  return proc.stdout.strip()


def test_dry_runs_print_the_command_with_args_passed_through():
  tail = "py -m jaxface.train --config configs/x.py:smoke --workdir /w --config.seed=3 a\\ b"
  extra = ("configs/x.py:smoke", "/w", "--config.seed=3", "a b")
  assert _dry_run("single_gpu.sh", "--gpu", "2", *extra) == (
      f"env CUDA_VISIBLE_DEVICES=2 PYTHONPATH={REPO} {tail}")
  assert _dry_run("multi_gpu.sh", *extra) == f"env PYTHONPATH={REPO} {tail}"
  assert _dry_run("multi_gpu.sh", "--gpus=0,1", *extra) == (
      f"env PYTHONPATH={REPO} CUDA_VISIBLE_DEVICES=0\\,1 {tail}")
  multihost = tail.replace(" --config.seed", " --multihost --config.seed")
  assert _dry_run("multihost.sh", "--coordinator", "10.0.0.1:8476", "--num-processes", "2",
                  "--process-id", "1", "--local-device-ids", "0,1", *extra) == (
      f"env PYTHONPATH={REPO} JAX_COORDINATOR_ADDRESS=10.0.0.1:8476 JAX_NUM_PROCESSES=2 "
      f"JAX_PROCESS_ID=1 JAX_LOCAL_DEVICE_IDS=0\\,1 {multihost}")
  assert _dry_run("multihost.sh", *extra, JAX_COORDINATOR_ADDRESS="h:1", JAX_NUM_PROCESSES="4",
                  JAX_PROCESS_ID="0") == (
      f"env PYTHONPATH={REPO} JAX_COORDINATOR_ADDRESS=h:1 JAX_NUM_PROCESSES=4 JAX_PROCESS_ID=0 "
      f"{multihost}")
  assert _dry_run("slurm.sbatch", *extra, SLURM_SUBMIT_DIR=REPO) == (
      f"srun --kill-on-bad-exit=1 env PYTHONPATH={REPO} {multihost}")


def test_slurm_header_runs_one_task_per_gpu():
  with open(os.path.join(LAUNCH, "slurm.sbatch")) as f:
    opts = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)$", f.read(), re.M))
  assert {"nodes", "ntasks-per-node", "gpus-per-node"} <= set(opts)
  assert opts["ntasks-per-node"] == opts["gpus-per-node"]
  assert "gpus-per-task" not in opts  # would hide the GPU of SLURM_LOCALID from the task


@pytest.mark.parametrize("args, message", [
    (("--num-processes", "2", "--process-id", "0"), "--coordinator (or JAX_COORDINATOR_ADDRESS)"),
    (("--coordinator", "h", "--num-processes", "2", "--process-id", "0"), "must be HOST:PORT"),
    (("--coordinator", "h:1", "--process-id", "0"), "--num-processes (or JAX_NUM_PROCESSES)"),
    (("--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"),
     "--process-id must be in 0 .. 1, got '2'"),
    (("--coordinator", "h:1", "--num-processes", "x", "--process-id", "0"),
     "--num-processes must be a positive integer"),
])
def test_multihost_script_names_the_missing_or_bad_option(args, message):
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
  proc = subprocess.run(["bash", os.path.join(LAUNCH, "multihost.sh"), "--dry-run", *args,
                         "c.py", "/w"], capture_output=True, text=True, env=env)
  assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_multihost_script_really_joins_two_processes(tmp_path):
  """Both processes launched by multihost.sh reach the coordinator and report their place, then
  stop at the config check (a negative learning rate), before any data or compile work."""
  port = _free_port()
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
  env.update(PYTHON=sys.executable, JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen(
      ["bash", os.path.join(LAUNCH, "multihost.sh"), "--coordinator", f"127.0.0.1:{port}",
       "--num-processes", "2", "--process-id", str(i),
       os.path.join(REPO, "configs", "utkface.py:smoke"), str(tmp_path), "--config.optim.lr=-1"],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=120) for p in procs]
  for i, (p, (out, err)) in enumerate(zip(procs, outs)):
    assert p.returncode == 2, err[-2000:]
    assert f"process {i}/2: 1 local / 2 global devices (cpu)" in out
    assert "config.optim.lr: must be positive" in err
