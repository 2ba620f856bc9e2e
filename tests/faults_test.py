"""Fault injection on a smoke run (issue 12): two runs on one workdir, SIGTERM at a random step,
a truncated array file and a garbled JSON item in the newest checkpoint, a failed asynchronous
save, a workdir that cannot be written, bad pipe strings, a stale lock, a kill between a step's
save and its validation, a validation that raises, and the retention's kill-safe deletes.

The training runs are ``python -m jaxface.train`` subprocesses of GilNet's smoke config (the
fastest smoke run) and are shared by the tests through module fixtures; each case checks the
message, the exit status and, where the run can go on, that the final parameters are
bit-identical to those of an undisturbed run.
"""

import asyncio
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxface import checkpointing
from jaxface import config_lib
from jaxface import evaluator as evaluator_lib
from jaxface import faults
from jaxface import train as train_lib
from jaxface.tasks import Task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(REPO, "configs", "gilnet_adience.py") + ":smoke,task=gender"
STEPS = 12
# Validation at the last step only, on the centre crop (GilNet's ten-view pipe has no
# validation metrics), so a finished run's summary has something to keep.
TRAIN_FLAGS = (f"--config.train_steps={STEPS}", "--config.checkpoint_every_steps=4",
               f"--config.eval_every_steps={STEPS}", "--config.eval.after_train=False",
               "--config.data.eval_pipe=decode|resize(72)|center_crop(64)",
               "--config.log_every_steps=1", "--config.keep_checkpoints=3",
               "--config.best_metric=val/gender/accuracy")


def _env():
  return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO}


def _cmd(workdir, data_dir, *extra):
  return [sys.executable, "-m", "jaxface.train", f"--config={SPEC}", f"--workdir={workdir}",
          f"--config.data.data_dir={data_dir}", *TRAIN_FLAGS, *extra]


# Caps the size of any file the run writes (RLIMIT_FSIZE, inherited through exec) and ignores
# SIGXFSZ, so a write past the cap fails with EFBIG ("File too large") as on a quota'd disk.
_FSIZE_CAP = ("import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
              "cap = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap)); "
              "os.execv(sys.executable, [sys.executable] + sys.argv[2:])")


def _train(workdir, data_dir, *extra, file_size_cap=0):
  cmd = _cmd(workdir, data_dir, *extra)
  if file_size_cap:
    cmd = [sys.executable, "-c", _FSIZE_CAP, str(file_size_cap)] + cmd[1:]
  return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)


_PROGRESS = re.compile(r"^step \d+/\d+ \[")


def _lines(text):
  return [line for line in text.splitlines() if line.strip()]


def _params(workdir, step=None):
  variables, _, _ = checkpointing.load_model_variables(str(workdir), step)
  return {jax.tree_util.keystr(p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(variables)[0]}


def _assert_same(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _metric_steps(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return [r["step"] for r in rows if any(k.startswith("train/") for k in r)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def full_run(data_dir, tmp_path_factory):
  """The undisturbed run every faulted one is compared with (builds the data on first use)."""
  workdir = tmp_path_factory.mktemp("full") / "run"
  proc = _train(workdir, data_dir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert not os.path.exists(workdir / faults.LOCK_NAME)  # released on exit
  return workdir


def _wait_for(predicate, proc, what, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return
    assert proc.poll() is None, f"the run ended before {what}: {proc.stderr.read()[-3000:]}"
    time.sleep(0.02)
  raise AssertionError(f"timed out waiting for {what}")


def _logged_step(workdir):
  try:
    return max(_metric_steps(workdir), default=0)
  except (OSError, ValueError, KeyError):  # not written yet, or a line being written
    return 0


def test_second_run_refused_then_sigterm_saves_and_resumes_bit_identical(
    full_run, data_dir, tmp_path):
  workdir = tmp_path / "run"
  proc = subprocess.Popen(_cmd(workdir, data_dir), env=_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  try:
    _wait_for(lambda: _logged_step(workdir) >= 1, proc, "the first step")
    # Stopped (alive, holding the lock) while a second run starts on the same workdir.
    os.kill(proc.pid, signal.SIGSTOP)
    try:
      second = _train(workdir, data_dir, "--config.seed=7")
    finally:
      os.kill(proc.pid, signal.SIGCONT)
    assert second.returncode == 2, second.stderr[-3000:]
    assert _lines(second.stderr) == [
        f"error: workdir {workdir} is in use by pid {proc.pid} on {socket.gethostname()} since "
        + _lines(second.stderr)[0].split(" since ", 1)[1]]
    assert "(lock " in second.stderr and "training gilnet" not in second.stdout

    target = random.randint(2, STEPS - 4)  # the step after which SIGTERM is sent
    print(f"SIGTERM after step {target}")
    _wait_for(lambda: _logged_step(workdir) >= target, proc, f"step {target}")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
  last = _lines(err)[-1]
  assert last.startswith("stopped: SIGTERM received: stopped after step "), err[-3000:]
  stopped = int(last.split("after step ")[1].split(",")[0])
  assert target <= stopped < STEPS
  ckpt = checkpointing.Checkpointer(str(workdir), read_only=True)
  assert ckpt.latest_step() == stopped  # saved at the step it stopped, even between periods
  ckpt.close()
  assert not os.path.exists(workdir / faults.LOCK_NAME)

  rerun = _train(workdir, data_dir)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  with open(workdir / "run.json") as f:
    assert json.load(f)["resumed_from"] == f"{workdir} step {stopped}"
  assert _metric_steps(workdir) == list(range(1, STEPS + 1))  # no step logged twice
  _assert_same(_params(full_run), _params(workdir))


def _truncate_largest_array_file(step_dir):
  data = os.path.join(step_dir, "state", "ocdbt.process_0", "d")
  path = max((os.path.join(data, n) for n in os.listdir(data)), key=os.path.getsize)
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(size // 2)
  return path


def test_truncated_newest_checkpoint_falls_back_and_training_redoes_it(
    full_run, data_dir, tmp_path, capsys):
  workdir = tmp_path / "run"
  shutil.copytree(full_run, workdir)
  newest = workdir / "checkpoints" / str(STEPS)
  _truncate_largest_array_file(newest)

  # Evaluation / export (read-only): falls back to the previous step, moves nothing.
  _assert_same(_params(workdir), _params(full_run, STEPS - 4))
  err = capsys.readouterr().err
  assert f"checkpoint step {STEPS} ({newest}) unreadable: " in err
  assert f"restored checkpoint step {STEPS - 4} from {workdir / 'checkpoints'}" in err
  assert newest.is_dir()
  with pytest.raises(checkpointing.CheckpointUnreadable, match=f"checkpoint step {STEPS} "):
    checkpointing.load_model_variables(str(workdir), STEPS)  # an explicit step: no fallback
  config = evaluator_lib.load_run_config(str(workdir))
  with config.unlocked():
    config.eval.num_sample_images = 0
  results = evaluator_lib.evaluate(config, str(workdir), "latest")
  assert results["_run"]["step"] == STEPS - 4
  assert f"checkpoint step {STEPS} ({newest}) unreadable: " in capsys.readouterr().err
  with pytest.raises(checkpointing.CheckpointUnreadable, match=f"checkpoint step {STEPS} "):
    evaluator_lib.evaluate(config, str(workdir), str(STEPS))

  # Training resumes from the previous step, keeps the bad one aside and ends as undisturbed.
  proc = _train(workdir, data_dir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  aside = f"{newest}{checkpointing.CORRUPT_SUFFIX}"
  assert f"moved unreadable checkpoint step {STEPS} aside to {aside}" in proc.stderr
  assert os.path.isdir(aside)
  ckpt = checkpointing.Checkpointer(str(workdir), read_only=True)
  assert STEPS in ckpt.all_steps() and all(isinstance(s, int) for s in ckpt.all_steps())
  ckpt.close()
  _assert_same(_params(full_run), _params(workdir))
  with open(workdir / "train_summary.json") as f:
    assert json.load(f)["step"] == STEPS


def test_missing_or_garbled_json_item_names_the_file_and_step(full_run, tmp_path, capsys):
  workdir = tmp_path / "run"
  shutil.copytree(full_run, workdir)
  # A save in progress (as a concurrent run leaves it) is not a step to read.
  shutil.copytree(workdir / "checkpoints" / str(STEPS),
                  workdir / "checkpoints" / f"{STEPS + 4}.orbax-checkpoint-tmp")
  ckpt = checkpointing.Checkpointer(str(workdir), read_only=True)
  assert ckpt.all_steps() == [STEPS - 8, STEPS - 4, STEPS]
  ckpt.close()
  garbled = workdir / "checkpoints" / str(STEPS) / "meta" / "metadata"
  garbled.write_text("{not json")
  _assert_same(_params(workdir), _params(full_run, STEPS - 4))
  assert f"checkpoint step {STEPS} ({garbled}) unreadable: garbled JSON" in capsys.readouterr().err
  missing = workdir / "checkpoints" / str(STEPS - 4) / "data" / "metadata"
  missing.unlink()
  with pytest.raises(checkpointing.CheckpointUnreadable,
                     match=rf"checkpoint step {STEPS - 4} \({missing}\) unreadable: file missing"):
    checkpointing.Checkpointer(str(workdir), read_only=True).restore_readable(STEPS - 4, {})


def _config_of(data_dir, *flags):
  """The config ``_cmd`` gives the CLI (the same ``--config.field=value`` overrides)."""
  config = config_lib.load(SPEC)
  with config.unlocked():
    for flag in (*TRAIN_FLAGS, *flags, f"--config.data.data_dir={data_dir}"):
      key, value = flag[len("--config."):].split("=", 1)
      *path, leaf = key.split(".")
      node = config
      for p in path:
        node = node[p]
      old = node[leaf]
      node[leaf] = (value == "True") if isinstance(old, bool) else type(old)(value)
  return config


def test_rerun_of_a_finished_workdir_keeps_its_summary(full_run, data_dir, tmp_path, capfd):
  workdir = tmp_path / "run"
  shutil.copytree(full_run, workdir)
  with open(workdir / "train_summary.json") as f:
    before = json.load(f)
  assert before["val"]["val/gender/accuracy"] >= 0
  train_lib.train_and_evaluate(_config_of(data_dir), str(workdir))  # nothing left to train
  with open(workdir / "train_summary.json") as f:
    assert json.load(f) == before
  assert "tracked_metric" not in capfd.readouterr().err
  assert _metric_steps(workdir) == list(range(1, STEPS + 1))


def test_failed_async_save_is_reported_at_once_and_keeps_the_previous(
    full_run, data_dir, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(full_run, workdir)
  # The checkpoint's largest array file (tens of kB) exceeds the limit; the logs stay below it.
  largest = max(os.path.getsize(os.path.join(d, n)) for d, _, names in
                os.walk(workdir / "checkpoints" / str(STEPS)) for n in names)
  proc = _train(workdir, data_dir, f"--config.train_steps={STEPS + 4}",
                file_size_cap=largest // 2)
  assert proc.returncode == 2, proc.stderr[-3000:]
  # stderr: the progress lines of steps 13..16, then the one error line, and nothing else (no
  # traceback, no "Event loop is closed" echo of the save's other writes).
  lines = _lines(proc.stderr)
  assert [line for line in lines if not _PROGRESS.match(line)] == lines[-1:], proc.stderr[-3000:]
  assert (f"error: saving checkpoint step {STEPS + 4} to {workdir / 'checkpoints'} failed: "
          in lines[-1]) and "File too large" in lines[-1], lines[-1]
  assert f"the previous checkpoint (step {STEPS}) is kept" in lines[-1]
  assert "Traceback" not in proc.stderr and "Event loop" not in proc.stderr
  _assert_same(_params(workdir), _params(full_run))  # step STEPS, readable
  assert not os.path.exists(workdir / faults.LOCK_NAME)


# ``python -m jaxface.train`` whose validation, once the step's checkpoint ``argv[1]`` is
# finalized (Orbax renames its temporary folder), kills the process: a kill right after the
# save and before the validation. Exit 3: the checkpoint never came, i.e. the save did not come
# before the validation.
_KILL_IN_VALIDATION = """
import os, runpy, signal, sys, time
from jaxface import evaluator
step_dir = sys.argv.pop(1)
def validate(self, state):
  deadline = time.time() + 120
  while not os.path.isdir(step_dir):
    if time.time() > deadline:
      os._exit(3)
    time.sleep(0.01)
  os.kill(os.getpid(), signal.SIGKILL)
evaluator.Evaluator.validate = validate
sys.argv[0] = "jaxface.train"
runpy.run_module("jaxface.train", run_name="__main__", alter_sys=True)
"""


def _without_the_last_step(full_run, workdir):
  """A copy of the full run as it was before step STEPS was saved (it resumes from STEPS - 4)."""
  shutil.copytree(full_run, workdir)
  shutil.rmtree(workdir / "checkpoints" / str(STEPS))
  record = workdir / "checkpoints" / checkpointing.RECORD_NAME
  steps = json.loads(record.read_text())
  del steps["steps"][str(STEPS)]
  record.write_text(json.dumps(steps))
  os.remove(workdir / "train_summary.json")


def test_kill_between_save_and_validation_then_failing_validation_lose_nothing(
    full_run, data_dir, tmp_path, monkeypatch, capfd):
  workdir = tmp_path / "run"
  _without_the_last_step(full_run, workdir)
  step_dir = workdir / "checkpoints" / str(STEPS)
  cmd = _cmd(workdir, data_dir)
  proc = subprocess.run([sys.executable, "-c", _KILL_IN_VALIDATION, str(step_dir)] + cmd[3:],
                        env=_env(), capture_output=True, text=True, timeout=600)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
  ckpt = checkpointing.Checkpointer(str(workdir), read_only=True)
  assert ckpt.all_steps() == [STEPS - 8, STEPS - 4, STEPS]  # saved before its validation
  assert ckpt.validation(STEPS) is None and ckpt.best_step() is None
  ckpt.close()
  _assert_same(_params(workdir), _params(full_run))  # the killed run's step STEPS, complete
  assert os.path.exists(workdir / faults.LOCK_NAME)  # the killed run's, stale now

  # A rerun whose validation raises: the stale lock is taken over, the step validated first;
  # the failure leaves the checkpoint and the record as they were, and releases the lock.
  def broken(self, state):
    raise RuntimeError("validation broke")
  monkeypatch.setattr(evaluator_lib.Evaluator, "validate", broken)
  with pytest.raises(RuntimeError, match="validation broke"):
    train_lib.train_and_evaluate(_config_of(data_dir), str(workdir))
  out, err = capfd.readouterr()
  assert "taking over the stale lock" in err
  assert f"validating step {STEPS}: its checkpoint was saved, its validation was not" in out
  ckpt = checkpointing.Checkpointer(str(workdir), read_only=True)
  assert ckpt.all_steps() == [STEPS - 8, STEPS - 4, STEPS] and ckpt.validation(STEPS) is None
  ckpt.close()
  assert not os.path.exists(workdir / faults.LOCK_NAME)
  monkeypatch.undo()

  # The next rerun validates step STEPS and ends as the undisturbed run: same summary (the
  # validation, the best step), same parameters, each step and validation logged once.
  train_lib.train_and_evaluate(_config_of(data_dir), str(workdir))
  with open(full_run / "train_summary.json") as f, open(workdir / "train_summary.json") as g:
    want, got = json.load(f), json.load(g)
  assert got == want and got["best_step"] == STEPS, (got, want)
  _assert_same(_params(full_run), _params(workdir))
  assert _metric_steps(workdir) == list(range(1, STEPS + 1))
  with open(workdir / "metrics.jsonl") as f:
    val_rows = [json.loads(line)["step"] for line in f if "val/gender/accuracy" in line]
  assert val_rows == [STEPS]
  assert checkpointing.restore_variables(str(workdir), "best")[0] == STEPS


def test_validation_failing_at_a_fresh_step_keeps_that_steps_checkpoint(
    full_run, data_dir, tmp_path, monkeypatch):
  workdir = tmp_path / "run"
  _without_the_last_step(full_run, workdir)
  def broken(self, state):
    raise RuntimeError("validation broke")
  monkeypatch.setattr(evaluator_lib.Evaluator, "validate", broken)
  with pytest.raises(RuntimeError, match="validation broke"):
    train_lib.train_and_evaluate(_config_of(data_dir), str(workdir))
  ckpt = checkpointing.Checkpointer(str(workdir), read_only=True)
  assert ckpt.all_steps() == [STEPS - 8, STEPS - 4, STEPS] and ckpt.validation(STEPS) is None
  ckpt.close()
  _assert_same(_params(full_run), _params(workdir))
  assert not os.path.exists(workdir / faults.LOCK_NAME)


def test_workdir_under_a_regular_file_fails_in_one_line(data_dir, tmp_path):
  # Tests run as root, for whom chmod does not stop writes: a path below a regular file cannot
  # be created by anyone (ENOTDIR).
  blocker = tmp_path / "file"
  blocker.write_text("x")
  workdir = blocker / "run"
  proc = _train(workdir, data_dir)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert _lines(proc.stderr) == [f"error: workdir {workdir}: cannot write there "
                                 f"(Not a directory: {workdir})"], proc.stderr
  assert "training gilnet" not in proc.stdout  # before the data and the model


@pytest.mark.parametrize("field", ["data.train_pipe", "data.eval_pipe", "saliency.crop_pipe"])
def test_bad_pipe_fails_before_anything_is_built(field, tmp_path):
  config = config_lib.load(SPEC)
  data_dir = tmp_path / "tfds"
  with config.unlocked():
    config.data.data_dir = str(data_dir)
    section, key = field.split(".")
    config[section][key] = "decode|resize(64"
  with pytest.raises(config_lib.ConfigError,
                     match=rf"^config\.{field}: cannot parse pipe 'decode\|resize\(64'"):
    train_lib.train_and_evaluate(config, str(tmp_path / "run"))
  assert not data_dir.exists() and not (tmp_path / "run").exists()


def test_best_metric_of_no_task_fails_before_training(full_run, data_dir, tmp_path):
  config = _config_of(data_dir, "--config.best_metric=val/gendr/accuracy")
  with pytest.raises(config_lib.ConfigError, match=r"^config\.best_metric: 'val/gendr/accuracy' "
                     r"is not a validation metric 'val/<task>/<metric>' of the tasks gender"):
    train_lib.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run" / "checkpoints").exists()
  for name in ("val/gender/accuracy", "val/entry/gender/accuracy"):
    train_lib.check_best_metric(name, [Task("gender", "class", ("f", "m"))])


def test_bad_pipe_in_a_later_stage_fails_before_the_first_stage():
  config = config_lib.load(os.path.join(REPO, "configs", "demo.py") + ":smoke")
  with config.unlocked():
    config.stages.classifier.data.eval_pipe = "decode|nosuchop"
  with pytest.raises(config_lib.ConfigError,
                     match=r"^stage classifier: config\.data\.eval_pipe: unknown op 'nosuchop'"):
    config_lib.validate(config)


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()  # reaped: its pid names no process now
  lock_path = tmp_path / faults.LOCK_NAME
  lock_path.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid,
                                   "since": "2026-01-01T00:00:00+00:00"}))
  with faults.WorkdirLock(str(tmp_path)) as lock:
    assert f"taking over the stale lock {lock_path} of pid {dead.pid}" in capsys.readouterr().err
    with open(lock_path) as f:
      assert json.load(f)["pid"] == os.getpid()
    with pytest.raises(faults.WorkdirBusy, match=f"in use by pid {os.getpid()} on "):
      faults.WorkdirLock(str(tmp_path)).acquire()  # held by a live process
  assert not lock_path.exists()
  # A live holder on another host cannot be checked from here: refused, with what to do.
  lock_path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "since": "?"}))
  with pytest.raises(faults.WorkdirBusy, match="pid 1 on elsewhere .*if that host's run is gone"):
    faults.WorkdirLock(str(tmp_path)).acquire()
  assert lock_path.exists()


def test_sigint_is_turned_into_a_stop_request():
  # The handler the training loop installs: a flag read after each step, no KeyboardInterrupt.
  before = signal.getsignal(signal.SIGINT)
  with faults.StopSignals() as signals:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.01)  # the handler runs at the next bytecode boundary of the main thread
    assert signals.stop_requested(check_all=False) and signals.signum == signal.SIGINT
  assert signal.getsignal(signal.SIGINT) is before
  stop = faults.Preempted(signal.SIGINT, 5, "/w/checkpoints")
  assert str(stop).startswith("SIGINT received: stopped after step 5, checkpoint saved in /w/")


def test_slurm_script_asks_for_sigterm_before_the_time_limit():
  with open(os.path.join(REPO, "launch", "slurm.sbatch")) as f:
    header = f.read()
  # Every task gets SIGTERM (not "B:", the batch shell only) early enough to save.
  seconds = int(header.split("#SBATCH --signal=TERM@", 1)[1].split()[0])
  assert seconds >= 60


# A save whose first array write fails (RLIMIT_FSIZE below that array's file, as on a quota'd
# disk) while 30 others are in flight: the case where Orbax closed its event loop under
# TensorStore's pending writes. Arrays of random values (zeros would compress below the cap).
_FAILING_SAVE = """
import resource, signal, sys
import jax.numpy as jnp, numpy as np
from jaxface import checkpointing
ckpt = checkpointing.Checkpointer(sys.argv[1])
state = {f"w{i}": jnp.asarray(np.random.default_rng(i).normal(size=100 * (i + 1) ** 2),
                              jnp.float32) for i in range(30)}
ckpt.save(1, state, {}, {"step": 1})
ckpt.wait()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
ckpt.save(2, state, {}, {"step": 2})
try:
  ckpt.wait()
except checkpointing.SaveFailed as e:
  print(f"error: {e}", file=sys.stderr, flush=True)
  sys.exit(2)
"""


@pytest.mark.parametrize("cap", [20000, 200000])
def test_failed_save_leaves_one_line_and_no_closed_loop_echo(cap, tmp_path):
  """Without ``checkpointing._finishing_other_writes`` the 30 pending writes called into the
  closed loop and printed "Event loop is closed" tracebacks (on most runs, at these caps)."""
  proc = subprocess.run([sys.executable, "-c", _FAILING_SAVE, str(tmp_path), str(cap)],
                        env=_env(), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert len(_lines(proc.stderr)) == 1, proc.stderr[-3000:]
  assert proc.stderr.startswith(f"error: saving checkpoint step 2 to {tmp_path / 'checkpoints'} "
                                "failed: ") and "File too large" in proc.stderr, proc.stderr
  assert checkpointing.Checkpointer(str(tmp_path), read_only=True).all_steps() == [1]


def test_a_failing_coroutine_lets_the_other_tasks_finish_first():
  """The wrapper Orbax's save loop runs in: the failure is re-raised only after the other
  tasks have ended (their own errors retrieved), so nothing calls into a closed loop."""
  from orbax.checkpoint._src import asyncio_utils  # pylint: disable=g-import-not-at-top
  assert asyncio_utils._run_sync_via_new_loop._jaxface_draining  # pylint: disable=protected-access
  finished = []

  async def write(i, delay, fail=False):
    await asyncio.sleep(delay)
    finished.append(i)
    if fail:
      raise OSError(27, "File too large")

  async def save():
    await asyncio.gather(write(0, 0.0, fail=True), write(1, 0.05), write(2, 0.1, fail=True))

  with pytest.raises(OSError, match="File too large"):
    asyncio_utils.run_sync(save())
  assert sorted(finished) == [0, 1, 2]


# ----------------------------------------------------------------------------- retention


def _tiny_state(step):
  return {"params": {"w": np.full(3, float(step), np.float32)}}


def test_retention_keeps_the_newest_and_the_best_and_deletes_kill_safely(tmp_path, capsys):
  workdir = str(tmp_path)
  ckpt = checkpointing.Checkpointer(workdir, keep=2, best_metric="val/loss", best_mode="min",
                                    async_save=False)
  for step, loss in [(1, 0.9), (2, 0.2), (3, 0.5), (4, 0.7)]:
    ckpt.save(step, _tiny_state(step), {}, {"step": step})
    ckpt.record(step, {"val/loss": loss})
  assert ckpt.all_steps() == [2, 3, 4] and ckpt.best_step() == 2
  # Saved, not validated yet (a kill now leaves exactly this): newest kept, the best kept.
  ckpt.save(5, _tiny_state(5), {}, {"step": 5})
  ckpt.check_errors()
  assert ckpt.all_steps() == [2, 4, 5] and ckpt.best_step() == 2
  assert ckpt.validation(5) is None and ckpt.validation(4) == {"val/loss": 0.7}
  ckpt.record(5, {"val/loss": 0.1})  # the new best: the old one goes
  assert ckpt.all_steps() == [4, 5] and ckpt.best_step() == 5
  with open(ckpt.record_path) as f:
    assert sorted(json.load(f)["steps"]) == ["4", "5"]
  ckpt.record(6, {"val/loss": 0.0})  # a record of a step that is not (yet) there ranks nothing
  assert ckpt.best_step() == 5 and ckpt.all_steps() == [4, 5]
  ckpt.close()
  assert capsys.readouterr().err == ""

  # A kill between a delete's rename and its removal: the step is gone for every reader, and the
  # next run removes the folder.
  directory = tmp_path / "checkpoints"
  os.rename(directory / "4", directory / f"4{checkpointing.DELETING_SUFFIX}")
  reader = checkpointing.Checkpointer(workdir, read_only=True)
  assert reader.all_steps() == [5] and reader.best_step() == 5  # ranked by the record's metric
  assert (directory / f"4{checkpointing.DELETING_SUFFIX}").is_dir()  # a reader deletes nothing
  reader.close()
  checkpointing.Checkpointer(workdir, keep=2).close()
  assert sorted(os.listdir(directory)) == ["5", checkpointing.RECORD_NAME]
  step, variables, meta = checkpointing.restore_variables(workdir, "best")
  assert step == 5 and meta == {"step": 5}
  np.testing.assert_array_equal(variables["params"]["w"], [5.0, 5.0, 5.0])

  # The record is replaced atomically; one damaged from outside is named in one line.
  (directory / checkpointing.RECORD_NAME).write_text("{not json")
  with pytest.raises(checkpointing.CheckpointUnreadable,
                     match=rf"{checkpointing.RECORD_NAME} unreadable: garbled JSON"):
    checkpointing.restore_variables(workdir, "best")
  assert checkpointing.restore_variables(workdir, "latest")[0] == 5  # latest needs no record


def test_best_of_a_workdir_written_before_the_record_comes_from_orbax_metadata(tmp_path):
  """Older runs let Orbax keep each step's metrics in its ``_CHECKPOINT_METADATA``."""
  workdir = str(tmp_path)
  ckpt = checkpointing.Checkpointer(workdir, keep=5, async_save=False)
  for step in (1, 2, 3):
    ckpt.save(step, _tiny_state(step), {}, {"step": step})
  ckpt.close()
  for step, acc in [(1, 0.3), (2, 0.8), (3, 0.5)]:
    path = tmp_path / "checkpoints" / str(step) / "_CHECKPOINT_METADATA"
    meta = json.loads(path.read_text())
    meta["metrics"] = {"val/acc": acc}
    path.write_text(json.dumps(meta))
  reader = checkpointing.Checkpointer(workdir, read_only=True, best_metric="val/acc")
  assert reader.best_step() == 2
  reader.close()
  assert checkpointing.Checkpointer(workdir, read_only=True).best_step() is None  # no metric
