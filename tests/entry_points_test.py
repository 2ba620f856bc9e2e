"""Every ``python -m`` entry point answers bad input in one line on stderr with exit status 2.

Three kinds of bad input per command: an argument it does not have, a file that does not exist,
and a config field (or, for a command without a config, a named choice) it does not know. None
may print a traceback. The commands run as subprocesses all at once, so the test takes about as
long as the slowest one.
"""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MISSING = "/nonexistent/jaxface_entry_points"

# (command, kind of bad input, arguments, a word the one line must name)
CASES = [
    ("jaxface.train", "argument", ["--no_such_flag=1"], "no_such_flag"),
    ("jaxface.train", "file", ["--config", f"{MISSING}.py", "--workdir", "{tmp}"], MISSING),
    ("jaxface.train", "field", ["--config", "configs/demo.py", "--workdir", "{tmp}",
                                "--config.no_such_field=1"], "no_such_field"),
    ("jaxface.train", "field", ["--config", "configs/demo.py", "--workdir", "{tmp}",
                                "--config.model.kwargs.width=0.5"], "width"),
    ("jaxface.train", "field", ["--config", "configs/demo.py:no_such_arg=1", "--workdir",
                                "{tmp}"], "no_such_arg"),
    ("jaxface.evaluate", "argument", ["--no_such_flag=1"], "no_such_flag"),
    ("jaxface.evaluate", "file", ["--workdir", MISSING], MISSING),
    ("jaxface.evaluate", "field", ["--workdir", "{tmp}", "--config",
                                   "configs/demo.py:no_such_arg=1"], "no_such_arg"),
    ("jaxface.predict", "argument", ["--no-such-flag", "x", "--out", "{tmp}"], "--no-such-flag"),
    ("jaxface.predict", "file", [f"{MISSING}.jpg", "--out", "{tmp}"], MISSING),
    ("jaxface.predict", "field", ["{tmp}", "--out", "{tmp}/o", "--tasks", "no_such_task"],
     "no_such_task"),
    ("jaxface.export", "argument", ["--model", "pretrained:gender", "--out", "{tmp}/f",
                                  "--no-such-flag"], "--no-such-flag"),
    ("jaxface.export", "file", ["--model", f"{MISSING}.npz", "--out", "{tmp}/f"], MISSING),
    ("jaxface.export", "field", ["--model", "pretrained:no_such_model", "--out", "{tmp}/f"],
     "no_such_model"),
    ("jaxface.explain", "argument", ["--model", "pretrained:gender", "--images", "{tmp}",
                                   "--out", "{tmp}/o", "--no-such-flag"], "--no-such-flag"),
    ("jaxface.explain", "file", ["--model", "pretrained:gender", "--images", f"{MISSING}.jpg",
                                 "--out", "{tmp}"], MISSING),
    ("jaxface.explain", "field", ["--model", "pretrained:gender", "--images", "{tmp}", "--out",
                                  "{tmp}/o", "--method", "no_such_method"], "no_such_method"),
    ("jaxface.faces", "argument", ["detect", "{tmp}", "--out", "{tmp}/o", "--no-such-flag"],
     "--no-such-flag"),
    ("jaxface.faces", "file", ["detect", f"{MISSING}.jpg", "--out", "{tmp}"], MISSING),
    ("jaxface.faces", "field", ["detect", "{tmp}", "--out", "{tmp}/o", "--policy",
                                "no_such_policy"], "no_such_policy"),
    ("jaxface.saliency", "argument", ["precompute", "--config", "configs/demo.py", "--workdir",
                                   "{tmp}", "--no-such-flag"], "--no-such-flag"),
    ("jaxface.saliency", "file", ["precompute", "--config", f"{MISSING}.py", "--workdir",
                                  "{tmp}"], MISSING),
    ("jaxface.saliency", "field", ["precompute", "--config", "configs/demo.py:no_such_arg=1",
                                   "--workdir", "{tmp}"], "no_such_arg"),
    ("jaxface.convert", "argument", ["--no-such-flag"], "--no-such-flag"),
    ("jaxface.convert", "file", ["caffemodel", f"{MISSING}.caffemodel", "{tmp}/o.npz"], MISSING),
    ("jaxface.convert", "field", ["no_such_format", "{tmp}", "{tmp}/o.npz"], "no_such_format"),
    ("jaxface.bench", "argument", ["models", "--no-such-flag"], "--no-such-flag"),
    ("jaxface.bench", "file", ["predict", f"{MISSING}"], MISSING),
    ("jaxface.bench", "field", ["no_such_command"], "no_such_command"),
    ("data_pipelines.build", "argument", ["fotw", "--no-such-flag"], "--no-such-flag"),
    ("data_pipelines.build", "file", ["fotw", "--manual_dir", MISSING, "--data_dir", "{tmp}"],
     MISSING),
    ("data_pipelines.build", "field", ["no_such_dataset"], "no_such_dataset"),
    ("data_pipelines.show", "argument", ["fotw", "--no-such-flag"], "--no-such-flag"),
    ("data_pipelines.show", "file", ["fotw", "--data_dir", MISSING], MISSING),
    ("data_pipelines.show", "field", ["no_such_dataset"], "no_such_dataset"),
]


@pytest.fixture(scope="module")
def answers(tmp_path_factory):
  """``{case index: (exit status, stderr)}``, every command run at once."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  procs = []
  for i, (module, _, args, _) in enumerate(CASES):
    tmp = str(tmp_path_factory.mktemp(f"case{i}"))
    argv = [a.replace("{tmp}", tmp) for a in args]
    procs.append(subprocess.Popen([sys.executable, "-m", module, *argv], cwd=REPO, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  out = {}
  for i, p in enumerate(procs):
    try:
      _, err = p.communicate(timeout=600)
    except subprocess.TimeoutExpired:
      p.kill()
      _, err = p.communicate()
    out[i] = (p.returncode, err)
  return out


@pytest.mark.parametrize("i", range(len(CASES)),
                         ids=[f"{c[0]}-{c[1]}-{j}" for j, c in enumerate(CASES)])
def test_bad_input_is_one_line_with_status_2(answers, i):
  module, _, args, word = CASES[i]
  code, err = answers[i]
  lines = [line for line in err.splitlines() if line.strip()]
  shown = f"python -m {module} {' '.join(args)} -> {code}:\n{err[-3000:]}"
  assert "Traceback" not in err, shown
  assert code == 2, shown
  assert len(lines) == 1, shown
  assert word in lines[0], shown
