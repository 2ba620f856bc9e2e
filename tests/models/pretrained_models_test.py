"""The three pretrained architectures (dlib_gender, dlib_age, mini_xception): full-size shapes and
parameter counts without compute, width / head variants, aux names, dlib's padded residual add."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxface import models
from jaxface.models.dlib_age import pad_add
from tests.helpers import abstract, count_params


@pytest.mark.parametrize("name,n_params,out,features", [
    # Counts of the source files: gender-v1.onnx / age-v1.onnx initializers (minus the two 0.5
    # scalars and the pad vectors), fer's 58,423 Keras parameters minus 1,472 BN statistics.
    ("dlib_gender", 131_538, (2, 2), (2, 16, 16, 64)),
    ("dlib_age", 2_689_617, (2, 81), (2, 3, 3, 256)),
    ("mini_xception", 56_951, (2, 7), (2, 4, 4, 128)),
])
def test_full_size(name, n_params, out, features):
  variables, logits, aux = abstract(name)
  assert count_params(variables["params"]) == n_params
  assert logits.shape == out
  assert aux["features"].shape == features
  assert aux["pre_logits"].shape == (2, features[-1] if name != "dlib_gender" else 16)


def test_mini_xception_batch_stats_and_width():
  variables, _, aux = abstract("mini_xception", width=0.5, num_classes=3)
  assert count_params(variables["batch_stats"]) == 2 * (4 + 4 + 8 * 3 + 16 * 3 + 32 * 3 + 64 * 3)
  assert aux["class_maps"].shape == (2, 4, 4, 3)
  _, out, _ = abstract("mini_xception", features_only=True)
  assert out.shape == (2, 4, 4, 128)


@pytest.mark.parametrize("name", ["dlib_gender", "dlib_age", "mini_xception"])
def test_headless_and_with_head(name):
  _, out, _ = abstract(name, num_classes=0)
  assert out.ndim == 2
  _, out, _ = abstract(name, head="softmax", num_classes=5)
  assert out.shape == (2, 5)


def test_pad_add_is_trailing_zero_padding():
  a = jnp.ones((1, 3, 3, 2))
  b = 2 * jnp.ones((1, 2, 2, 4))
  s = np.asarray(pad_add(a, b))
  assert s.shape == (1, 3, 3, 4)
  np.testing.assert_array_equal(s[0, :2, :2, :2], 3)  # both
  np.testing.assert_array_equal(s[0, :2, :2, 2:], 2)  # b only (a has 2 channels)
  np.testing.assert_array_equal(s[0, 2, :, :2], 1)  # a only (b has 2 rows)
  np.testing.assert_array_equal(s[0, 2, :, 2:], 0)  # neither


def test_bf16_compute_keeps_f32_params():
  model = models.get("dlib_gender", dtype=jnp.bfloat16, width=0.25)
  x = jnp.zeros((1, 32, 32, 3))
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  assert jax.eval_shape(model.apply, variables, x)[0].dtype == jnp.bfloat16
