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
