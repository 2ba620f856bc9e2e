"""Cascading randomisation: forward order, determinism, gradient maps decorrelate, edges fail."""

import jax
import numpy as np
import pytest
import scipy.stats
import skimage.metrics

from jaxface.explain import core
from jaxface.explain import sanity
from tests.explain import tiny


@pytest.fixture(scope="module")
def trained():
  model, variables, acc = tiny.train_two_conv()
  x, y = tiny.blob_data(8, seed=1)
  return model, variables, acc, x, y


def test_forward_order_and_one_more_layer_per_step(trained):
  model, variables, _, x, _ = trained
  order = sanity.layer_order(model, variables, x[:1])
  assert order == [("conv1",), ("conv2",), ("fc",)]  # Not the definition order (fc first).
  leaves = lambda v: jax.tree_util.tree_leaves_with_path(v["params"])  # noqa: E731
  orig = {jax.tree_util.keystr(k): np.asarray(a) for k, a in leaves(variables)}
  steps = list(sanity.cascade(variables, order, seed=3))
  assert [p for p, _ in steps] == [("fc",), ("conv2",), ("conv1",)]
  for k, (_, v) in enumerate(steps, start=1):
    changed = {jax.tree_util.keystr(p).split("'")[1] for p, a in leaves(v)
               if not np.array_equal(np.asarray(a), orig[jax.tree_util.keystr(p)])}
    assert changed == {p[0] for p in order[len(order) - k:]}
  again = list(sanity.cascade(variables, order, seed=3))
  other = list(sanity.cascade(variables, order, seed=4))
  flat = lambda v: np.concatenate([np.ravel(a) for a in jax.tree.leaves(v)])  # noqa: E731
  assert np.array_equal(flat(steps[-1][1]), flat(again[-1][1]))
  assert not np.array_equal(flat(steps[-1][1]), flat(other[-1][1]))
  # Cascading: the top layer keeps the values it got at step 1.
  np.testing.assert_array_equal(steps[0][1]["params"]["fc"]["kernel"],
                                steps[-1][1]["params"]["fc"]["kernel"])


def test_gradient_maps_decorrelate_and_edge_filter_fails(trained):
  model, variables, acc, x, y = trained
  assert acc >= 0.9  # The model has learnt the task, so its gradients carry information.
  grad = sanity.gradient_explainer(core.bind(model), y, score="logit")
  r = sanity.run(grad, model, variables, x, seeds=range(5))
  assert r["layers"] == ["fc", "conv2", "conv1"] and len(r["steps"]) == 3
  assert abs(r["final"]["spearman_abs"]) < 0.2, r["final"]
  assert abs(r["final"]["spearman"]) < 0.2, r["final"]
  assert r["passes"]
  e = sanity.run(sanity.edge_explainer, model, variables, x, seeds=range(5))
  assert e["final"]["spearman_abs"] > 0.999 and e["final"]["ssim"] > 0.999
  assert e["mean"]["spearman"] > 0.999  # Averaged over randomised steps only: exactly 1 here.
  assert not e["passes"]


def test_spearman_and_ssim_match_scipy_and_skimage():
  rng = np.random.default_rng(0)
  a = rng.random((16, 16))
  b = a + rng.random((16, 16)) * 0.5
  b[:4, :4] = 0.0  # Ties: average ranks.
  a[:2] = 0.0
  # Rank correlation in float64 over 256 values: agreement to ~1e-12.
  assert sanity.spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a.ravel(), b.ravel())[0],
                                                abs=1e-10)
  ref = skimage.metrics.structural_similarity(
      a / a.max(), (b - b.min()) / (b.max() - b.min()), data_range=1.0, gaussian_weights=True,
      sigma=1.5, use_sample_covariance=False)
  # cv2's and scipy's Gaussian kernels agree to ~1e-7 per tap; SSIM moves by less than 1e-5.
  assert sanity.ssim(a, b) == pytest.approx(ref, abs=1e-5)
  assert sanity.spearman(np.ones(5), np.arange(5)) == 0.0
