"""python -m jaxface.export: the serialized, batch-polymorphic function reloaded in a fresh
process (JAX only) gives the in-process model's probabilities at two batch sizes."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxface import export, pretrained

_RELOAD = """
import json, sys
import jax, numpy as np
jax.config.update("jax_default_matmul_precision", "highest")
with open(sys.argv[1], "rb") as f:
  exported = jax.export.deserialize(bytearray(f.read()))
chips = np.load(sys.argv[2])
out = {str(n): np.asarray(exported.call(chips[:n])).tolist() for n in (1, len(chips))}
print(json.dumps(out))
"""


@pytest.mark.parametrize("name,shape", [("gender", (32, 32, 3))])
def test_fresh_process_reload(tmp_path, name, shape):
  path = str(tmp_path / f"{name}.jaxexport")
  assert export.main(["--model", f"pretrained:{name}", "--out", path]) == 0
  record = json.loads(open(f"{path}.json").read())
  assert record["input"]["shape"] == ["B", *shape] and record["platforms"] == ["cpu", "cuda"]
  assert record["classes"] == list(pretrained.get(name).classes)
  chips = np.random.default_rng(0).integers(0, 256, (5, *shape), dtype=np.uint8)
  np.save(tmp_path / "chips.npy", chips)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  # The reloading script imports only JAX and numpy: the artifact carries model and weights.
  proc = subprocess.run([sys.executable, "-c", _RELOAD, path, str(tmp_path / "chips.npy")],
                        capture_output=True, text=True, env=env, cwd=str(tmp_path), check=True)
  got = json.loads(proc.stdout)
  loaded = pretrained.load(name)
  expected = loaded.probs(chips)
  # Same graph, another compile (fusion order; batch 1 other kernels): float32 sums reordered,
  # so the logits err by ~depth * sqrt(n_max) * 2^-24 of their scale, and a softmax moves each
  # probability by at most half the largest logit change; plus a few roundings of its own. A
  # wrong preprocessing or weight in the artifact is off by O(0.1).
  kernels = [k for k in jax.tree.leaves(loaded.variables) if k.ndim >= 2]
  rel = len(kernels) * np.sqrt(max(int(np.prod(k.shape[:-1])) for k in kernels)) * 2.0**-24
  logits, _ = loaded.model.apply(loaded.variables, loaded.normalise(chips))
  tol = rel * float(np.abs(logits).max()) / 2 + 8 * 2.0**-24
  np.testing.assert_allclose(np.array(got["5"]), expected, rtol=0, atol=tol)
  np.testing.assert_allclose(np.array(got["1"]), expected[:1], rtol=0, atol=tol)


def test_bad_arguments_one_line_exit_2(tmp_path, capsys):
  for argv, needle in ((["--model", "pretrained:height"], "unknown pretrained model"),
                       (["--model", "runs/x"], "pretrained:NAME"),
                       (["--model", "pretrained:age", "--platforms", "gpu"], "unknown platform")):
    with pytest.raises(SystemExit) as e:
      export.main(argv + ["--out", str(tmp_path / "f")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


_RELOAD_TASKS = """
import json, sys
import jax, numpy as np
jax.config.update("jax_default_matmul_precision", "highest")
with open(sys.argv[1], "rb") as f:
  exported = jax.export.deserialize(bytearray(f.read()))
chips = np.load(sys.argv[2])
out = {str(n): {k: np.asarray(v).tolist() for k, v in exported.call(chips[:n]).items()}
       for n in (1, len(chips))}
print(json.dumps(out))
"""


def test_workdir_export_reloads_with_every_task(smoke_run_workdir, tmp_path, capsys):
  """A trained run (AlexNet, two tasks): the artifact gives jaxface.load's probabilities per task
  in a fresh process that imports only JAX, at two batch sizes."""
  import jaxface  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / "run.jaxexport")
  assert export.main(["--workdir", smoke_run_workdir, "--out", path, "--platforms", "cpu"]) == 0
  assert "run.jaxexport" in capsys.readouterr().out
  record = json.loads(open(f"{path}.json").read())
  m = jaxface.load(smoke_run_workdir)
  assert record["step"] == m.step and record["input"]["shape"] == ["B", *m.input_size, 3]
  assert {k: v["classes"] for k, v in record["outputs"].items()} == {
      t.name: list(t.class_names) for t in m.tasks}
  chips = np.random.default_rng(1).integers(0, 256, (3, *m.input_size, 3), dtype=np.uint8)
  np.save(tmp_path / "chips.npy", chips)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", _RELOAD_TASKS, path, str(tmp_path / "chips.npy")],
                        capture_output=True, text=True, env=env, cwd=str(tmp_path), check=True)
  got = json.loads(proc.stdout)
  expected = m.predict(chips)
  # Tolerance as above: the same graph compiled again (float32 sums regrouped) through the
  # run's conv / dense layers, then a softmax.
  kernels = [k for k in jax.tree.leaves(m.variables) if k.ndim >= 2]
  rel = len(kernels) * np.sqrt(max(int(np.prod(k.shape[:-1])) for k in kernels)) * 2.0**-24
  tol = rel * 50 / 2 + 8 * 2.0**-24  # logits of a 2-step smoke run stay far below 50:
  assert max(float(np.log(p.max(1) / p.min(1)).max()) for p in expected.values()) < 50
  for name, probs in expected.items():
    np.testing.assert_allclose(np.array(got["3"][name]), probs, rtol=0, atol=tol, err_msg=name)
    np.testing.assert_allclose(np.array(got["1"][name]), probs[:1], rtol=0, atol=tol,
                               err_msg=name)


def test_workdir_that_is_not_a_run_is_one_line(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    export.main(["--workdir", str(tmp_path), "--out", str(tmp_path / "f")])
  assert e.value.code == 2
  assert f"--workdir {tmp_path}: not a jaxface.train workdir" in capsys.readouterr().err
