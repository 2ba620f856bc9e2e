"""MTCNN PNet / RNet / ONet: parameter counts pinned against the facenet-pytorch state-dict shapes
(those of its released ``pnet.pt`` / ``rnet.pt`` / ``onet.pt``), output shapes, and forward +
backward at real size. Numerical parity with torch is in tests/weights/mtcnn_test.py."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxface import models
from tests.helpers import count_params as _count

# facenet-pytorch's state-dict shapes (torch layouts: conv (O, I, kh, kw), Linear (out, in)); biases
# have the conv / dense output size.
_STATE_DICT_SHAPES = {
    "mtcnn_pnet": {"conv1": (10, 3, 3, 3), "prelu1": (10,), "conv2": (16, 10, 3, 3),
                   "prelu2": (16,), "conv3": (32, 16, 3, 3), "prelu3": (32,),
                   "conv4_1": (2, 32, 1, 1), "conv4_2": (4, 32, 1, 1)},
    "mtcnn_rnet": {"conv1": (28, 3, 3, 3), "prelu1": (28,), "conv2": (48, 28, 3, 3),
                   "prelu2": (48,), "conv3": (64, 48, 2, 2), "prelu3": (64,),
                   "dense4": (128, 576), "prelu4": (128,), "dense5_1": (2, 128),
                   "dense5_2": (4, 128)},
    "mtcnn_onet": {"conv1": (32, 3, 3, 3), "prelu1": (32,), "conv2": (64, 32, 3, 3),
                   "prelu2": (64,), "conv3": (64, 64, 3, 3), "prelu3": (64,),
                   "conv4": (128, 64, 2, 2), "prelu4": (128,), "dense5": (256, 1152),
                   "prelu5": (256,), "dense6_1": (2, 256), "dense6_2": (4, 256),
                   "dense6_3": (10, 256)},
}
_COUNTS = {"mtcnn_pnet": 6_632, "mtcnn_rnet": 100_178, "mtcnn_onet": 389_040}



def _abstract(name, hw=None, **kw):
  model = models.get(name, **kw)
  x = jax.ShapeDtypeStruct((2, *(hw or models.spec(name).input_shape[:2]), 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)
  out, aux = jax.eval_shape(lambda v, x: model.apply(v, x), variables, x)
  return variables, out, aux


@pytest.mark.parametrize("name", sorted(_COUNTS))
def test_parameter_counts(name):
  shapes = _STATE_DICT_SHAPES[name]
  from_state_dict = sum(math.prod(s) + (s[0] if not k.startswith("prelu") else 0)
                  for k, s in shapes.items())
  assert from_state_dict == _COUNTS[name]
  variables, _, _ = _abstract(name)
  p = variables["params"]
  assert set(variables) == {"params"}
  assert sorted(p) == sorted(shapes)
  assert _count(p) == _COUNTS[name]
  for k, s in shapes.items():
    if k.startswith("prelu"):
      assert p[k]["alpha"].shape == s
    elif k.startswith("conv"):
      assert p[k]["kernel"].shape == (s[2], s[3], s[1], s[0])
    else:
      assert p[k]["kernel"].shape == (s[1], s[0])
  assert not models.spec(name).classifier


def test_output_shapes():
  _, out, aux = _abstract("mtcnn_pnet")
  assert out["prob"].shape == (2, 1, 1) and out["box"].shape == (2, 1, 1, 4)
  # Fully convolutional: 30x40 -> 28x38 -> pool (ceil) 14x19 -> 12x17 -> 10x15.
  _, out, aux = _abstract("mtcnn_pnet", hw=(30, 40))
  assert out["prob"].shape == (2, 10, 15) and out["probs"].shape == (2, 10, 15, 2)
  assert out["box"].shape == (2, 10, 15, 4) and aux["pool1"].shape == (2, 14, 19, 10)
  _, out, aux = _abstract("mtcnn_rnet")
  assert out["prob"].shape == (2,) and out["box"].shape == (2, 4)
  assert aux["pool1"].shape == (2, 11, 11, 28) and aux["pool2"].shape == (2, 4, 4, 48)
  assert aux["features"].shape == (2, 3, 3, 64) and aux["pre_logits"].shape == (2, 128)
  _, out, aux = _abstract("mtcnn_onet")
  assert out["prob"].shape == (2,) and out["box"].shape == (2, 4)
  assert out["landmarks"].shape == (2, 10)
  assert aux["pool1"].shape == (2, 23, 23, 32) and aux["pool2"].shape == (2, 10, 10, 64)
  assert aux["pool3"].shape == (2, 4, 4, 64) and aux["features"].shape == (2, 3, 3, 128)
  _, out, _ = _abstract("mtcnn_onet", dtype=jnp.bfloat16)
  assert out["probs"].dtype == jnp.float32  # Softmax in float32 even for bf16 compute.


@pytest.mark.parametrize("name,hw", [("mtcnn_pnet", (20, 26)), ("mtcnn_rnet", (24, 24)),
                                     ("mtcnn_onet", (48, 48))])
def test_forward_backward(name, hw):
  model = models.get(name)
  x = jax.random.normal(jax.random.PRNGKey(1), (3, *hw, 3))
  # jit: op-by-op dispatch of init / grad compiles every small op separately (slower).
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
  out, _ = jax.jit(model.apply)(variables, x)
  probs = np.asarray(out["probs"])
  # A float32 softmax over 2 classes: exp, sum, divide and this sum round ~4 times each at
  # magnitude 1; 1e-6 is 16 units of 2^-24, a fixed margin over that (a missing max shift or a
  # softmax over the wrong axis is off by O(1)).
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
  np.testing.assert_array_equal(out["prob"], probs[..., 1])

  def loss_fn(params):
    o, _ = model.apply({"params": params}, x)
    loss = -jnp.mean(jnp.log(o["prob"] + 1e-6)) + jnp.mean(jnp.square(o["box"] - 0.1))
    if "landmarks" in o:
      loss += jnp.mean(jnp.square(o["landmarks"] - 0.5))
    return loss

  loss, grads = jax.jit(jax.value_and_grad(loss_fn))(variables["params"])
  assert np.isfinite(float(loss))
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    g = np.asarray(g)
    assert np.all(np.isfinite(g)) and np.any(g != 0), path


def test_width():
  variables, out, _ = _abstract("mtcnn_onet", width=0.5)
  assert variables["params"]["conv1"]["kernel"].shape == (3, 3, 3, 16)
  assert variables["params"]["dense5"]["kernel"].shape == (3 * 3 * 64, 128)
  assert out["landmarks"].shape == (2, 10)
