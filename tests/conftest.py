"""Test settings: CPU only, fast XLA compiles, few threads, deterministic seeds."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Lower LLVM optimisation: tests compile many small programs and run each only a few times.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_backend_optimization_level=0").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# One XLA compile cache for the whole test session: the controller creates it before xdist starts
# its workers, and every worker and every subprocess a test starts (python -m jaxface.train, the
# launcher) inherits the variables. Many tests build the same small programs in fresh closures or
# fresh processes, which jit's in-memory cache cannot share. A compiled program is deterministic,
# so a hit changes no number.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  import tempfile  # noqa: E402

  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxface-test-xla-cache-")
  os.environ["JAXFACE_TEST_CACHE_OWNER"] = str(os.getpid())
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

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


def pytest_unconfigure(config):
  """The process that created the session's compile cache removes it."""
  del config
  if os.environ.get("JAXFACE_TEST_CACHE_OWNER") == str(os.getpid()):
    import shutil  # pylint: disable=g-import-not-at-top

    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
