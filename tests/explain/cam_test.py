"""Grad-CAM, Grad-CAM++, Score-CAM and CAM against hand-computed values on tiny models."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxface.explain import cam
from jaxface.explain import core
from jaxface.models import heads
from tests.explain import tiny

# Identity2: aux['features'] is the input, logits = W^T mean(x) + b. Z = 4 pixels.
_X = np.stack([[[1., 2.], [3., 4.]], [[0., 1.], [0., 1.]]], axis=-1)[None].astype(np.float32)
_W = np.array([[1.0, -1.0], [0.5, 2.0]], np.float32)  # (channel, class)
_IDENT_VARS = {"params": {"fc": {"kernel": _W, "bias": np.zeros(2, np.float32)}}}
_FWD_IDENT = core.bind(tiny.Identity2())
# float32 products of a few terms of size <= 30: relative error a few ulps; 1e-5 leaves margin.
_RTOL = 1e-5


def _sum_bound(a, w, z):
  """Worst-case float32 error of relu(sum_k a_k w_k) over K channels, with w from a gradient
  averaged over z positions: (K + z + 4) * 2^-24 * sum_k |a_k w_k| (any summation order; the 4:
  the chain rule's and 1 / z's own roundings). ReLU is 1-Lipschitz, so it adds nothing."""
  a, w = np.abs(np.asarray(a, np.float64)), np.abs(np.asarray(w, np.float64))
  return (a.shape[-1] + z + 4) * 2.0**-24 * np.einsum("bhwk,bk->bhw", a, w)


def _relu_map(w):
  return np.maximum(w[0] * _X[0, ..., 0] + w[1] * _X[0, ..., 1], 0)


@pytest.fixture(scope="module")
def gapnet():
  model = tiny.GapNet(channels=4, num_classes=3, stride=2)
  x = np.random.default_rng(0).random((2, 8, 8, 3)).astype(np.float32)
  return model, tiny.init(model, x[:1], 0), x


def test_gradcam_equals_closed_form_on_gap_head(gapnet):
  model, variables, x = gapnet
  _, aux = model.apply(variables, x)
  a = np.asarray(aux["features"], np.float64)
  targets = np.array([0, 2])
  r = cam.gradcam(core.bind(model), variables, x, targets, score="logit")
  z = a.shape[1] * a.shape[2]
  w = np.asarray(variables["params"]["fc"]["kernel"], np.float64)[:, targets].T / z
  expected = np.maximum(np.einsum("bhwk,bk->bhw", a, w), 0)
  np.testing.assert_array_less(np.abs(r.raw - expected), _sum_bound(a, w, z) + 1e-30)
  np.testing.assert_array_equal(r.targets, targets)
  assert r.settings == {"method": "gradcam", "score": "logit", "layer": "features",
                        "target": "label"}
  assert r.maps.shape == (2, 8, 8) and float(r.maps.max()) == pytest.approx(1.0)


@pytest.mark.parametrize("method,variant", cam.COMBOS)
def test_batch_with_different_targets_equals_single_calls(gapnet, method, variant):
  model, variables, x = gapnet
  fwd = core.bind(model)
  kw = dict(method=method, score="prob", variant=variant,
            fc_kernel=variables["params"]["fc"]["kernel"])
  both = cam.explain(fwd, variables, x, [1, 2], **kw)
  for i, t in enumerate([1, 2]):
    one = cam.explain(fwd, variables, x[i:i + 1], t, **kw)
    # Batch 2 vs 1 reorders the tiny net's float32 sums (2 layers, fan-in <= 27): about
    # 2 * sqrt(27) * 2^-24 ~ 6e-7 relative, at most 3x through Grad-CAM++'s cubed gradients and 2x
    # through the min-max normalisation; rtol 1e-5 is a fixed margin over that. A target swapped
    # between the batch's images changes the maps by O(1).
    np.testing.assert_allclose(both.raw[i], one.raw[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(both.maps[i], one.maps[0], rtol=1e-5, atol=1e-6)
  assert both.settings["score"] == "prob"


def test_gradcampp_hand_values_both_variants():
  # Class 0: g = W[:, 0] / Z = (.25, .125) everywhere; activation sums S = (10, 2); logit 2.75.
  g = np.array([.25, .125])
  s_a = np.array([10., 2.])
  pgc = 4 * np.maximum(g, 0) * g**2 / (2 * g**2 + s_a * g**3 + 1e-6)  # ~Z ReLU(g) / (2 + S g).
  official = np.exp(2.75) * np.maximum(g, 0)  # Alphas normalised to 1/Z each.
  for variant, w in (("pgc", pgc), ("official", official)):
    r = cam.gradcampp(_FWD_IDENT, _IDENT_VARS, _X, 0, score="logit", variant=variant)
    np.testing.assert_allclose(r.raw[0], _relu_map(w), rtol=_RTOL)
    assert r.settings["variant"] == variant
  # Class 1: g = (-.25, .5): the negative gradient's channel gets no weight in either variant.
  r = cam.gradcampp(_FWD_IDENT, _IDENT_VARS, _X, 1, score="logit", variant="official")
  logit1 = -1 * 2.5 + 2 * 0.5
  np.testing.assert_allclose(r.raw[0], _relu_map([0, np.exp(logit1) * .5]), rtol=_RTOL)


def test_scorecam_hand_values_both_variants():
  # Masks: min-max of each channel, [[0, 1/3], [2/3, 1]] and [[0, 1], [0, 1]]; class-0 logits
  # of the masked inputs: mean(x0*M)*1 + mean(x1*M)*.5 = 1.8333 and 1.75.
  s = np.array([1 * (0 + 2 / 3 + 2 + 4) / 4 + .5 * (0 + 1 / 3 + 0 + 1) / 4,
                1 * (0 + 2 + 0 + 4) / 4 + .5 * (0 + 1 + 0 + 1) / 4])
  r = cam.scorecam(_FWD_IDENT, _IDENT_VARS, _X, 0, score="logit", variant="official")
  np.testing.assert_allclose(r.raw[0], _relu_map(s), rtol=_RTOL)
  soft = np.exp(s) / np.exp(s).sum()
  r = cam.scorecam(_FWD_IDENT, _IDENT_VARS, _X, 0, score="logit", variant="pgc")
  # pgc divides by (max - min + 1e-8): masks are smaller by a relative 1e-8 (range >= 1 here).
  np.testing.assert_allclose(r.raw[0], _relu_map(soft), rtol=_RTOL)
  # Probability scores: softmax over the two classes of each masked input.
  r = cam.scorecam(_FWD_IDENT, _IDENT_VARS, _X, 0, score="prob", variant="official")
  l1 = np.array([-1 * (2 / 3 + 2 + 4) / 4 + 2 * (1 / 3 + 1) / 4, -1 * 6 / 4 + 2 * 2 / 4])
  p = 1 / (1 + np.exp(l1 - s))
  np.testing.assert_allclose(r.raw[0], _relu_map(p), rtol=_RTOL)


def test_constant_and_negative_maps_are_zero_not_nan():
  x = _X.copy()
  x[..., 1] = 1.0  # Constant channel: the official Score-CAM skips it (weight 0).
  r = cam.scorecam(_FWD_IDENT, _IDENT_VARS, x, 0, score="logit", variant="official")
  s0 = (0 + 2 / 3 + 2 + 4) / 4 + .5 * (0 + 1 / 3 + 2 / 3 + 1) / 4
  np.testing.assert_allclose(r.raw[0], np.maximum(s0 * x[0, ..., 0], 0), rtol=_RTOL)
  neg = {"params": {"fc": {"kernel": -np.abs(_W), "bias": np.zeros(2, np.float32)}}}
  for method, variant in cam.COMBOS:
    r = cam.explain(_FWD_IDENT, neg, _X, 0, method=method, score="logit", variant=variant,
                    fc_kernel=neg["params"]["fc"]["kernel"])
    assert np.all(np.isfinite(r.maps)), (method, variant)
    if method != "scorecam" or variant == "official":  # pgc's softmax weights are positive.
      assert np.all(np.asarray(r.maps) == 0), (method, variant)
  flat = np.ones_like(_X)  # Every channel constant: every map is constant -> zeros.
  for method in cam.METHODS:
    r = cam.explain(_FWD_IDENT, _IDENT_VARS, flat, 0, method=method, score="logit",
                    fc_kernel=_W)
    assert np.all(np.asarray(r.maps) == 0), method


def test_quadrant_model_mass_in_quadrant():
  model = tiny.GapNet(channels=4, num_classes=2, stride=2, mask=(0, 8, 0, 8))
  x = np.random.default_rng(3).random((2, 16, 16, 3)).astype(np.float32)
  v = jax.tree.map(np.asarray, tiny.init(model, x[:1], 1))
  v = {"params": {"conv": {"kernel": np.abs(v["params"]["conv"]["kernel"]),
                           "bias": np.zeros(4, np.float32)},
                  "fc": {"kernel": np.abs(v["params"]["fc"]["kernel"]),
                         "bias": np.zeros(2, np.float32)}}}
  fwd = core.bind(model)
  for method, variant in cam.COMBOS:
    r = cam.explain(fwd, v, x, "argmax", method=method, score="logit", variant=variant,
                    fc_kernel=v["params"]["fc"]["kernel"])
    m = np.asarray(r.maps)
    share = m[:, :8, :8].sum(axis=(1, 2)) / m.sum(axis=(1, 2))
    assert np.all(share > 0.9), (method, variant, share)


class _Backbone(nn.Module):
  """A features-only conv backbone, as ``with_head`` builds for the GAP head."""

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.relu(nn.Conv(5, (3, 3), strides=2, name="conv")(x))
    return x, {"features": x}


def test_cam_of_gap_head_model():
  model = heads.WithHead(backbone=_Backbone(), head=heads.GapHead(num_classes=3))
  x = np.random.default_rng(4).random((2, 12, 12, 3)).astype(np.float32)
  v = tiny.init(model, x[:1], 0)
  fwd = core.bind(model)
  c = cam.cam(fwd, v, x, "argmax", score="logit")
  g = cam.gradcam(fwd, v, x, "argmax", score="logit")
  _, aux = model.apply(v, x)
  z = aux["features"].shape[1] * aux["features"].shape[2]
  # GAP head: d logit / d A = w / Z, so CAM = Z * Grad-CAM (both after the ReLU).
  # Both are relu(sum_k a_k w_k) (Grad-CAM's w averaged from the gradient over z positions):
  # each within _sum_bound of the exact map, so within twice that of each other.
  bound = 2 * _sum_bound(aux["features"], np.asarray(v["params"]["head"]["fc"]["kernel"]).T[
      np.asarray(c.targets)], z)
  np.testing.assert_array_less(np.abs(c.raw - z * np.asarray(g.raw)), bound + 1e-30)
  np.testing.assert_array_equal(c.targets, g.targets)


def test_other_layers_and_errors(gapnet):
  model, variables, x = gapnet
  fwd = core.bind(model)
  r = cam.gradcam(fwd, variables, x, 0, score="logit", layer="conv")
  _, aux = model.apply(variables, x)
  z = np.asarray(aux["conv"])
  # Before the ReLU the gradient is (w / Z) where conv > 0, else 0.
  w = np.asarray(variables["params"]["fc"]["kernel"])[:, 0] / 16
  alpha = ((z > 0) * w).mean(axis=(1, 2))
  np.testing.assert_array_less(
      np.abs(r.raw - np.maximum(np.einsum("bhwk,bk->bhw", z, alpha), 0)),
      _sum_bound(z, alpha, 16) + 1e-30)
  assert r.settings["layer"] == "conv" and r.settings["target"] == "class"
  with pytest.raises(ValueError, match="unknown layer"):
    cam.gradcam(fwd, variables, x, 0, score="logit", layer="nope")
  with pytest.raises(ValueError, match="score"):
    cam.gradcam(fwd, variables, x, 0, score="softmax")
  with pytest.raises(ValueError, match="target"):
    cam.gradcam(fwd, variables, x, "max", score="logit")
  with pytest.raises(ValueError, match="GAP head"):
    cam.cam(fwd, {"params": {}}, x, 0, score="logit")


class _TwoTasks(nn.Module):
  """Two heads on one feature map, as the multi-task models return ``{task: logits}``."""

  @nn.compact
  def __call__(self, x, train=False):
    a = nn.relu(nn.Conv(3, (3, 3), name="conv")(x))
    pooled = jnp.mean(a, axis=(1, 2))
    out = {"age": nn.Dense(4, name="age")(pooled), "gender": nn.Dense(2, name="gender")(pooled)}
    return out, {"features": a}


def test_dict_outputs_choose_a_task():
  model = _TwoTasks()
  x = np.random.default_rng(5).random((2, 6, 6, 3)).astype(np.float32)
  v = tiny.init(model, x[:1], 0)
  r = cam.gradcam(core.bind(model, output="gender"), v, x, [0, 1], score="logit")
  _, aux = model.apply(v, x)
  w = np.asarray(v["params"]["gender"]["kernel"])[:, [0, 1]].T / 36
  expected = np.maximum(np.einsum("bhwk,bk->bhw", np.asarray(aux["features"]), w), 0)
  np.testing.assert_array_less(np.abs(r.raw - expected), _sum_bound(aux["features"], w, 36) + 1e-30)
  with pytest.raises(ValueError, match="several outputs"):
    cam.gradcam(core.bind(model), v, x, 0, score="logit")
  with pytest.raises(ValueError, match="unknown output"):
    cam.gradcam(core.bind(model, output="race"), v, x, 0, score="logit")
