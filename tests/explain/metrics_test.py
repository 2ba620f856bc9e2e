"""Faithfulness metrics against hand-computed values (Canonical Saliency Maps, arXiv:2105.01386, eqs. 9-13)."""

import jax
import numpy as np
import pytest

from jaxface.explain import core
from jaxface.explain import metrics
from tests.explain import tiny


def test_average_drop_and_increase_hand_values():
  y = [.8, .5, .2, .9]
  o = [.4, .6, .2, 0.]
  # Drops: .5, 0 (increase), 0 (tie), 1 -> mean 1.5 / 4 = 37.5 %; one strict increase in four.
  assert metrics.average_drop(y, o, "prob") == pytest.approx(37.5, abs=1e-9)
  assert metrics.increase_in_confidence(y, o, "prob") == pytest.approx(25.0, abs=1e-9)


def test_average_drop_rejects_non_positive_y():
  with pytest.raises(ValueError, match="Y > 0"):
    metrics.average_drop([.5, 0.0], [.1, .1], "prob")
  with pytest.raises(ValueError, match="Y > 0"):
    metrics.average_drop([2.0, -1.0], [1.0, 1.0], "logit")
  with pytest.raises(ValueError, match="probabilities"):
    metrics.average_drop([1.5], [.5], "prob")


# Rows: images; columns: (GC, GC++, SC, CMS). Winners (lowest): CMS; GC; GC and GC++ tied.
_TABLE = [[.5, .4, .6, .1], [.2, .3, .3, .25], [.3, .3, .5, .6]]
_NAMES = ["gc", "gcpp", "sc", "cms"]


def test_win_percent_split_ties():
  r = metrics.win_percent(_TABLE, _NAMES, tie="split")
  expected = {"gc": 150 / 3, "gcpp": 50 / 3, "sc": 0.0, "cms": 100 / 3}
  assert r["win"] == pytest.approx(expected, abs=1e-9)
  assert sum(r["win"].values()) == pytest.approx(100.0, abs=1e-9)
  assert r["tie"] == "split" and r["ties"] == 1


def test_win_percent_first_wins_as_official():
  r = metrics.win_percent(_TABLE, _NAMES, tie="first")
  expected = {"gc": 200 / 3, "gcpp": 0.0, "sc": 0.0, "cms": 100 / 3}
  assert r["win"] == pytest.approx(expected, abs=1e-9)
  assert sum(r["win"].values()) == pytest.approx(100.0, abs=1e-9)
  with pytest.raises(ValueError, match="tie"):
    metrics.win_percent(_TABLE, _NAMES, tie="last")


def test_equal_sum_and_clipped_explanation():
  h = np.array([[[0., 1.], [1., 2.]]])
  np.testing.assert_allclose(metrics.equal_sum(h, [1.0])[0], [[0, .25], [.25, .5]], atol=1e-7)
  big = metrics.equal_sum(h, [3.0])
  assert float(big.max()) == pytest.approx(1.5, abs=1e-6)
  img = np.full((1, 2, 2, 3), 0.8, np.float32)
  for kind in metrics.KINDS:
    e = np.asarray(metrics.explanation_images(img, big, kind))
    assert e.min() >= 0.0 and e.max() <= 0.8 + 1e-7  # No wrap-around: a clip, not a uint8 cast.
  neg = np.asarray(metrics.explanation_images(img, big, "negative"))
  assert neg[0, 1, 1, 0] == 0.0 and neg[0, 0, 0, 0] == pytest.approx(0.8)
  # A constant map is all zeros after min-max, never NaN; the equal-sum rescale keeps it zero.
  flat = metrics.equal_sum(np.ones((1, 3, 3)), [4.0])
  assert np.all(np.asarray(flat) == 0)


def test_standardise_gives_every_method_the_reference_sum():
  rng = np.random.default_rng(0)
  maps = {"a": rng.random((2, 5, 5)), "b": rng.random((2, 5, 5)) ** 3}
  std = metrics.standardise(maps, reference="a")
  ref = np.asarray(core.minmax(maps["a"])).sum(axis=(1, 2))
  for v in std.values():
    np.testing.assert_allclose(np.asarray(v).sum(axis=(1, 2)), ref, rtol=1e-5)


@pytest.fixture(scope="module")
def gapnet():
  model = tiny.GapNet(channels=3, num_classes=4)
  x = np.random.default_rng(1).random((100, 6, 6, 3)).astype(np.float32)
  variables = tiny.init(model, x[:1], 0)
  return core.bind(model), variables, x, model


@pytest.mark.parametrize("score", ["prob", "logit"])
def test_confidences_batch_size_invariant_and_permutation_equivariant(gapnet, score):
  forward, variables, x, model = gapnet
  loop = []
  apply1 = jax.jit(model.apply)
  for i in range(len(x)):  # The unbatched reference: one image per call.
    logits, _ = apply1(variables, x[i:i + 1])
    logits = np.asarray(logits, np.float64)[0]
    if score == "prob":
      logits = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    loop.append(logits.max())
  # float32 forward in different batch shapes: reductions may reorder, so a few ulps of ~1.
  for bs in (1, 7, 32):
    s, _ = metrics.confidences(forward, variables, x, "argmax", score=score, batch_size=bs)
    np.testing.assert_allclose(s, loop, rtol=1e-5, atol=1e-6)
  perm = np.random.default_rng(2).permutation(len(x))
  s, c = metrics.confidences(forward, variables, x, "argmax", score=score, batch_size=32)
  sp, cp = metrics.confidences(forward, variables, x[perm], "argmax", score=score, batch_size=7)
  np.testing.assert_allclose(sp, s[perm], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(cp, c[perm])


def test_region_model_oracle_map():
  model = tiny.RegionSum(box=(2, 6, 3, 7))
  forward = core.bind(model)
  img = np.ones((3, 10, 10, 1), np.float32)
  oracle = np.zeros((3, 10, 10), np.float32)
  oracle[:, 2:6, 3:7] = 1
  disjoint = np.zeros((3, 10, 10), np.float32)
  disjoint[:, 7:10, 0:3] = 1
  maps = {"disjoint": disjoint, "oracle": oracle}
  r = metrics.evaluate(forward, {}, img, maps, 0, score="logit", reference="oracle")
  assert r["methods"]["oracle"]["average_drop"] == pytest.approx(100.0, abs=1e-5)
  assert r["methods"]["disjoint"]["average_drop"] == pytest.approx(0.0, abs=1e-5)
  assert r["methods"]["oracle"]["win"] == pytest.approx(100.0)
  assert r["methods"]["disjoint"]["win"] == 0.0
  assert r["settings"] == {"score": "logit", "kind": "negative", "tie": "split",
                           "reference": "oracle", "target": "class"}
  # The positive explanation keeps exactly R: the oracle's confidence does not drop at all.
  r = metrics.evaluate(forward, {}, img, maps, 0, score="logit", kind="positive",
                       reference="oracle")
  assert r["methods"]["oracle"]["average_drop"] == pytest.approx(0.0, abs=1e-5)
  assert r["methods"]["disjoint"]["average_drop"] == pytest.approx(100.0, abs=1e-5)
