"""Heads on real backbones: single task, gender->age multi-task, attributes, GAP / CAM."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxface import models
from jaxface.models import heads

W = 1 / 16  # tiny width: AlexNet fc6/fc7 have 256 units, conv5 16 channels.


def _init(model, x):
  return model.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}, x)


def test_num_classes_zero_returns_pre_logits_and_features_only_returns_fmap():
  x = jnp.ones((2, 224, 224, 3))
  m = models.get("alexnet", width=W, num_classes=0)
  v = jax.eval_shape(lambda x: _init(m, x), x)
  (out, aux) = jax.eval_shape(lambda v, x: m.apply(v, x), v, x)
  assert out.shape == (2, 256) and "fc8" not in v["params"]
  assert aux["pre_logits"].shape == (2, 256)
  m = models.get("alexnet", width=W, features_only=True)
  v = jax.eval_shape(lambda x: _init(m, x), x)
  out, _ = jax.eval_shape(lambda v, x: m.apply(v, x), v, x)
  assert out.shape == (2, 13, 13, 16) and not any(k.startswith("fc") for k in v["params"])


def test_softmax_and_attribute_heads_shapes():
  x = jnp.ones((2, 224, 224, 3))
  for head, kw, n in (("softmax", {"num_classes": 7}, 7), ("attributes", {}, 40)):
    m = models.get("alexnet", width=W, head=head, **kw)
    v = jax.eval_shape(lambda x, m=m: _init(m, x), x)
    out, aux = jax.eval_shape(lambda v, x, m=m: m.apply(v, x), v, x)
    assert out.shape == (2, n)
    assert "features" in aux and "head/logits" in aux


def _gender_age(**head_kwargs):
  m = models.get("resnet18", width=1 / 16, head="gender_age",
                 head_kwargs={"num_age_classes": 10, "hidden": 8, **head_kwargs})
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 32, 32, 3)), jnp.float32)
  return m, jax.jit(lambda x: _init(m, x))(x), x


def test_gender_age_head_feeds_gender_probabilities_to_age():
  m, v, x = _gender_age()
  apply = jax.jit(m.apply)
  out, _ = apply(v, x)
  assert out["gender"].shape == (3, 2) and out["age"].shape == (3, 10)
  # The age layer reads [hidden (8), gender probs (2)].
  assert v["params"]["head"]["age_fc"]["kernel"].shape == (8 + 2, 10)
  # Changing only the gender layer changes the age logits (through the probabilities)...
  v2 = jax.tree_util.tree_map(lambda a: a, v)
  v2["params"]["head"]["gender_fc"]["bias"] = jnp.asarray([5.0, -5.0])
  out2, _ = apply(v2, x)
  assert not np.allclose(out["age"], out2["age"])
  # ...and the gender logits by exactly the bias: the same program up to the bias add, so only
  # two float32 roundings at magnitude |logit| + 5 apart (2 * 2^-24 of it); a second path from the
  # bias into the logits would be off by O(1).
  np.testing.assert_allclose(out["gender"] + jnp.asarray([5.0, -5.0]), out2["gender"], rtol=0,
                             atol=2 * 2.0**-24 * (np.abs(out2["gender"]).max() + 5))

  def age_loss(params, stop):
    mm = models.get("resnet18", width=1 / 16, head="gender_age",
                    head_kwargs={"num_age_classes": 10, "hidden": 8,
                                 "stop_gradient_gender": stop})
    o, _ = mm.apply({**v, "params": params}, x)
    return jnp.sum(jax.nn.log_softmax(o["age"])[:, 3])

  grad = jax.jit(jax.grad(age_loss), static_argnums=1)
  g = grad(v["params"], False)
  assert float(jnp.abs(g["head"]["gender_fc"]["kernel"]).sum()) > 0
  g = grad(v["params"], True)
  assert float(jnp.abs(g["head"]["gender_fc"]["kernel"]).sum()) == 0


def test_gender_age_head_without_feedback_has_independent_age_layer():
  m = models.get("resnet18", width=1 / 16, head="gender_age",
                 head_kwargs={"num_age_classes": 10, "hidden": 8, "feed_gender": False})
  v = jax.eval_shape(lambda x: _init(m, x), jnp.zeros((1, 32, 32, 3)))
  assert v["params"]["head"]["age_fc"]["kernel"].shape == (8, 10)


def test_gap_head_logits_equal_mean_of_class_activation_map():
  m = models.get("alexnet", width=W, head="gap", num_classes=5)
  x = jnp.asarray(np.random.default_rng(1).uniform(0, 1, size=(2, 96, 96, 3)), jnp.float32)
  v = _init(m, x)
  logits, aux = m.apply(v, x)
  fmap = aux["features"]
  fc = v["params"]["head"]["fc"]
  for k in range(5):
    cam = heads.cam(fmap, fc["kernel"], jnp.full((2,), k))
    assert cam.shape == fmap.shape[:3]
    # The same sum of H * W * C products, reordered (dot per pixel then mean, vs mean then dot):
    # at most (H * W + C + 1) * 2^-24 * sum of |terms| apart (float32 worst case).
    _, h, w, c = fmap.shape
    mag = (jnp.abs(fmap) @ jnp.abs(fc["kernel"][:, k])).mean(axis=(1, 2)) + abs(fc["bias"][k])
    np.testing.assert_array_less(np.abs(cam.mean(axis=(1, 2)) + fc["bias"][k] - logits[:, k]),
                                 np.asarray((h * w + c + 1) * 2.0**-24 * mag))


def test_registry_errors_name_the_problem():
  with pytest.raises(KeyError, match="unknown model 'alexnett'.*alexnet"):
    models.get("alexnett")
  with pytest.raises(ValueError, match="not a classifier"):
    models.get("mlnet", head="softmax", num_classes=2)
  with pytest.raises(ValueError, match="unknown head 'sigmoid'"):
    models.get("alexnet", head="sigmoid", num_classes=2)
  with pytest.raises(ValueError, match="needs num_classes"):
    models.get("alexnet", head="softmax")
