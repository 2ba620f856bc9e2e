"""Test settings: CPU only, fast XLA compiles, few threads, deterministic seeds."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Lower LLVM optimisation: tests compile many small programs and run each only a few times.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_backend_optimization_level=0").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

try:
  import torch  # noqa: E402

  torch.set_num_threads(2)
except ImportError:  # torch is in the test extra; parity tests import it themselves.
  torch = None


@pytest.fixture
def rng():
  return np.random.default_rng(0)


@pytest.fixture(scope="session")
def smoke_run_workdir(tmp_path_factory):
  """A two-step smoke run (AlexNet, ``configs/affectnet.py:smoke,r=0``), trained once per test
  process and shared read-only by the tests of jaxface.load and of predict --workdir."""
  from jaxface import config_lib  # pylint: disable=g-import-not-at-top
  from jaxface import train as train_lib  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  config = config_lib.load(os.path.join(repo, "configs", "affectnet.py:smoke,r=0"))
  root = tmp_path_factory.mktemp("trained")
  with config.unlocked():
    config.data.data_dir = str(root / "tfds")
  wd = str(root / "run")
  train_lib.train_and_evaluate(config, wd)
  return wd
