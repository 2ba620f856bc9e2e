"""Fault injection on a smoke run (issue 12): two runs on one workdir, SIGTERM at a random step,
a truncated array file and a garbled JSON item in the newest checkpoint, a failed asynchronous
save, a workdir that cannot be written, bad pipe strings, a stale lock.

The training runs are ``python -m jaxface.train`` subprocesses of GilNet's smoke config (the
fastest smoke run) and are shared by the tests through module fixtures; each case checks the
message, the exit status and, where the run can go on, that the final parameters are
bit-identical to those of an undisturbed run.
"""

import asyncio
import json
import os
import random
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
  errors = [line for line in _lines(proc.stderr) if line.startswith("error:")]
  assert errors == _lines(proc.stderr)[-1:], proc.stderr[-3000:]
  assert (f"error: saving checkpoint step {STEPS + 4} to {workdir / 'checkpoints'} failed: "
          in errors[0]) and "File too large" in errors[0], errors
  assert f"the previous checkpoint (step {STEPS}) is kept" in errors[0]
  # Known defect (open, issue 12): checkpointing._quiet_closed_loop drops most of TensorStore's
  # "Event loop is closed" echoes of the save's other writes, but on some runs a few still reach
  # stderr before the error line by another path; the one error line is still the last line and
  # the only "error:" line.
  assert sum(line.startswith("error:") for line in _lines(proc.stderr)) == 1, proc.stderr[-3000:]
  _assert_same(_params(workdir), _params(full_run))  # step STEPS, readable
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


def test_closed_loop_echoes_of_a_failed_save_are_dropped_and_nothing_else():
  """``checkpointing._quiet_closed_loop`` drops exactly TensorStore's calls into Orbax's closed
  loop (outermost frame asyncio's call_soon_threadsafe) and passes on every other exception."""
  seen = []
  hook = checkpointing._quiet_closed_loop(lambda *a: seen.append(a))  # pylint: disable=protected-access
  loop = asyncio.new_event_loop()
  loop.close()
  try:
    loop.call_soon_threadsafe(print)
  except RuntimeError as e:
    err = e
  from_tensorstore = err.__traceback__.tb_next  # starts in asyncio, as from a C++ thread
  assert from_tensorstore.tb_frame.f_code.co_name == "call_soon_threadsafe"
  hook(RuntimeError, err, from_tensorstore)
  assert not seen
  hook(RuntimeError, err, err.__traceback__)  # our frame above it: a real bug, passed on
  hook(ValueError, ValueError("x"), from_tensorstore)
  assert len(seen) == 2
