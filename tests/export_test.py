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
