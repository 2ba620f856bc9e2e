"""ML-Net loss, prior regulariser and the evaluation metrics of maps against hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxface.saliency import metrics
from jaxface.tasks import saliency


def _map(rows):
  return jnp.asarray(rows, jnp.float32)[None, :, :, None]


def test_mlnet_loss_single_image():
  pred = _map([[1.0, 2.0], [3.0, 4.0]])  # max 4 -> 0.25, 0.5, 0.75, 1.
  gt = _map([[0.0, 0.5], [1.0, 0.25]])
  # (0.25-0)^2/1.1 + 0/0.6 + (0.75-1)^2/0.1 + (1-0.25)^2/0.85, averaged over 4 pixels.
  want = (0.0625 / 1.1 + 0.0 + 0.0625 / 0.1 + 0.5625 / 0.85) / 4
  np.testing.assert_allclose(saliency.mlnet_loss(pred, gt), want, rtol=1e-6)


def test_mlnet_loss_normalises_each_image_by_its_own_max():
  pred = jnp.concatenate([_map([[1.0, 2.0], [3.0, 4.0]]), _map([[0.0, 0.0], [0.0, 2.0]])])
  gt = jnp.concatenate([_map([[0.0, 0.5], [1.0, 0.25]]), jnp.zeros((1, 2, 2, 1))])
  first = 0.0625 / 1.1 + 0.0625 / 0.1 + 0.5625 / 0.85
  second = 1.0 / 1.1  # Second image: only its max pixel (-> 1) differs from gt = 0.
  np.testing.assert_allclose(saliency.mlnet_loss(pred, gt), (first + second) / 8, rtol=1e-6)
  # A different alpha changes the weights.
  np.testing.assert_allclose(saliency.mlnet_loss(pred[1:], gt[1:], alpha=2.0), 0.5 / 4, rtol=1e-6)


def test_mlnet_loss_all_zero_prediction_is_finite():
  pred = jnp.zeros((1, 2, 2, 1))
  gt = _map([[0.0, 0.5], [1.0, 0.25]])
  want = (0.0 + 0.25 / 0.6 + 1.0 / 0.1 + 0.0625 / 0.85) / 4
  np.testing.assert_allclose(saliency.mlnet_loss(pred, gt), want, rtol=1e-6)
  g = jax.grad(lambda p: saliency.mlnet_loss(p, gt))(pred)
  assert np.all(np.isfinite(np.asarray(g)))


def test_mlnet_loss_shape_mismatch():
  with pytest.raises(ValueError, match="shape"):
    saliency.mlnet_loss(jnp.ones((1, 2, 2, 1)), jnp.ones((1, 3, 2, 1)))


def test_prior_regularizer():
  params = {"prior": {"W": jnp.full((6, 8), 0.5)}, "int_conv": {"bias": jnp.ones(3)}}
  # (1/48) * 48 * 0.25.
  np.testing.assert_allclose(saliency.prior_regularizer(params), 0.25, rtol=1e-6)
  np.testing.assert_allclose(saliency.prior_regularizer({"params": params}), 0.25, rtol=1e-6)
  w = jnp.arange(48, dtype=jnp.float32).reshape(6, 8)
  want = 35720 / 48  # sum of i^2 for i < 48 is 47 * 48 * 95 / 6 = 35720.
  np.testing.assert_allclose(saliency.prior_regularizer({"prior": {"W": w}}), want, rtol=1e-6)
  np.testing.assert_allclose(saliency.prior_regularizer({"prior": {"W": w}}, weight=0.1),
                             0.1 * 35720, rtol=1e-6)
  with pytest.raises(KeyError, match="prior"):
    saliency.prior_regularizer({"conv1_1": {}})


def test_total_loss_is_sum():
  pred = _map([[1.0, 2.0], [3.0, 4.0]])
  gt = _map([[0.0, 0.5], [1.0, 0.25]])
  params = {"prior": {"W": jnp.full((6, 8), 0.5)}}
  np.testing.assert_allclose(saliency.mlnet_total_loss(pred, gt, params),
                             float(saliency.mlnet_loss(pred, gt)) + 0.25, rtol=1e-6)


# ----------------------------------------------------------------------------- evaluation metrics


def _maps(seed: int, n: int = 3, hw=(12, 16)):
  rng = np.random.default_rng(seed)
  g = rng.random((n, *hw)).astype(np.float32) ** 4  # peaky, like fixation densities
  s = rng.random((n, *hw)).astype(np.float32)
  return s, g


def test_fixation_points_are_the_local_maxima_of_a_density():
  g = np.zeros((9, 9), np.float32)
  g[2, 2], g[6, 5], g[6, 6] = 1.0, 0.6, 0.3  # two peaks; (6, 6) is below its neighbour
  g[0, 8] = 0.05  # a local maximum under 10 % of the peak is not a fixation
  got = np.asarray(saliency.fixation_points(jnp.asarray(g)))
  assert sorted(zip(*np.nonzero(got))) == [(2, 2), (6, 5)]


def test_auc_judd_in_float32_jnp_equals_the_float64_numpy_reference():
  s, g = _maps(0)
  s[0][s[0] < 0.5] = 0  # ties at zero
  for i in range(len(s)):
    fix = np.asarray(saliency.fixation_points(jnp.asarray(g[i])))
    # One implementation, in float32 jnp vs float64 numpy: the counts are exact, each rate rounds once and the
    # trapezoids (areas summing to <= 1) add over <= n = 192 thresholds: (n + 2) * 2^-24 at worst.
    # Another tie rule moves the area by ~1 / (number of fixations) ~ 1e-1.
    np.testing.assert_allclose(float(metrics.auc_judd_jnp(jnp.asarray(s[i]), jnp.asarray(fix))),
                               metrics.auc_judd(s[i], fix), rtol=0, atol=(s[i].size + 2) * 2.0**-24)


def test_map_metrics_average_the_benchmark_metrics_over_unmasked_images():
  s, g = _maps(1)
  pred = jnp.asarray(s)[..., None]  # already at the ground truth's size: resize is identity
  mask = jnp.asarray([1.0, 1.0, 0.0])
  got = saliency.map_metrics(pred, jnp.asarray(g), mask)
  # Batched vs per image (float32 both, other reduction orders): the metrics are ratios of sums
  # over n = 192 pixels, each at most n * 2^-24 relative off, numerator and denominator: so
  # 2 * n * 2^-24 of max(1, |value|). Averaging in the masked image moves them by ~1e-1.
  n = s[0].size
  tol = lambda v: 2 * n * 2.0**-24 * max(1.0, abs(v))
  assert set(got) == {f"saliency/{k}" for k in saliency.MAP_METRICS}
  for name, fn in (("cc", metrics.cc), ("kld", metrics.kld), ("sim", metrics.sim)):
    total, count = got[f"saliency/{name}"]
    want = np.mean([float(fn(s[i], g[i])) for i in range(2)])
    assert float(count) == 2.0
    np.testing.assert_allclose(float(total) / 2, want, rtol=0, atol=tol(want), err_msg=name)
  fix = [np.asarray(saliency.fixation_points(jnp.asarray(g[i]))) for i in range(2)]
  total, _ = got["saliency/nss"]
  want = np.mean([float(metrics.nss(s[i], fix[i])) for i in range(2)])
  np.testing.assert_allclose(float(total) / 2, want, rtol=0, atol=tol(want))
  total, _ = got["saliency/auc_judd"]
  np.testing.assert_allclose(float(total) / 2,
                             np.mean([metrics.auc_judd(s[i], fix[i]) for i in range(2)]),
                             rtol=0, atol=(n + 2) * 2.0**-24)  # as in the test above


def test_map_metrics_shuffled_auc_takes_the_other_unmasked_images_fixations_as_negatives():
  s, g = _maps(3, n=4)
  mask = jnp.asarray([1.0, 1.0, 1.0, 0.0])  # the padded fourth image is nobody's negative
  got = saliency.map_metrics(jnp.asarray(s)[..., None], jnp.asarray(g), mask)
  fix = [np.asarray(saliency.fixation_points(jnp.asarray(g[i]))) for i in range(4)]
  want = [metrics.auc_shuffled(s[i], fix[i], np.any([fix[j] for j in range(3) if j != i], 0))
          for i in range(3)]
  total, count = got["saliency/auc_shuffled"]
  assert float(count) == 3.0
  # Sums of <= n = 192 half-counts per positive, exact in float32; one rounding per division.
  np.testing.assert_allclose(float(total) / 3, np.mean(want), rtol=0, atol=8 * 2.0**-24)
  # An image alone in its batch has no negatives: no shuffled AUC (count 0), the rest still count.
  alone = saliency.map_metrics(jnp.asarray(s)[..., None], jnp.asarray(g), jnp.asarray([0, 1, 0, 0]))
  assert float(alone["saliency/auc_shuffled"][1]) == 0.0
  assert float(alone["saliency/cc"][1]) == 1.0


def test_shuffled_auc_discounts_a_centre_bias_that_auc_judd_rewards():
  # Every image is fixated at the centre and at one image-specific point; a centre blob predicts
  # the shared fixations well (high AUC-Judd) but cannot tell them from other images' (the
  # centre is fixated everywhere): shuffled AUC near chance. A map of each image's own point
  # scores near 1 on both.
  yy, xx = np.mgrid[:24, :24]
  blob = lambda y, x: np.exp(-((yy - y)**2 + (xx - x)**2) / 4.0).astype(np.float32)
  own = [(4, 4), (4, 19), (19, 4), (19, 19)]
  g = np.stack([blob(12, 12) + blob(*p) for p in own])
  centre = np.stack([blob(12, 12)] * 4)
  specific = np.stack([blob(*p) + 0.5 * blob(12, 12) for p in own])
  values = {}
  for name, pred in (("centre", centre), ("specific", specific)):
    got = saliency.map_metrics(jnp.asarray(pred)[..., None], jnp.asarray(g), jnp.ones(4))
    values[name] = {k.split("/")[1]: float(t) / float(n) for k, (t, n) in got.items()}
  # Centre map: the shared centre ties with the negatives' centre (1/2) and beats their three
  # other points; the image's own point loses to their centre: about (3.5 + 1.5) / 8 = 0.625.
  assert values["centre"]["auc_judd"] > 0.8
  assert values["centre"]["auc_shuffled"] < values["centre"]["auc_judd"] - 0.15
  assert values["specific"]["auc_shuffled"] > 0.9


def test_map_metrics_score_a_dead_all_zero_map_as_uninformative_not_nan():
  _, g = _maps(2, n=2)
  got = saliency.map_metrics(jnp.zeros((2, 12, 16, 1)), jnp.asarray(g), jnp.ones(2))
  values = {k.split("/")[1]: float(t) / float(n) for k, (t, n) in got.items()}
  assert values["cc"] == 0.0 and values["nss"] == 0.0 and values["auc_judd"] == 0.5
  assert values["auc_shuffled"] == 0.5
  uniform = np.full(g[0].shape, 1.0 / g[0].size, np.float32)
  want = np.mean([float(metrics.kld(uniform, gi)) for gi in g])
  np.testing.assert_allclose(values["kld"], want, rtol=0,
                             atol=2 * g[0].size * 2.0**-24 * max(1.0, want))  # sums as above
  assert 0.0 < values["sim"] < 1.0


def test_map_metrics_resize_the_prediction_to_the_ground_truth():
  yy, xx = np.mgrid[:16, :16]
  g = np.exp(-((yy - 5.0)**2 + (xx - 10.0)**2) / (2 * 3.0**2)).astype(np.float32)[None]
  small = jax.image.resize(jnp.asarray(g)[..., None], (1, 4, 4, 1), "linear")
  got = saliency.map_metrics(small, jnp.asarray(g), jnp.ones(1))
  assert float(got["saliency/cc"][0]) > 0.9  # the upsampled coarse copy matches the blob
  moved = saliency.map_metrics(small[:, ::-1, ::-1], jnp.asarray(g), jnp.ones(1))
  assert float(moved["saliency/cc"][0]) < 0.0  # the same blob mirrored does not


def test_kld_loss_hand_computed_and_scale_invariant():
  pred = _map([[1.0, 1.0], [2.0, 0.0]])
  gt = _map([[0.0, 1.0], [1.0, 2.0]])
  q = np.array([0.25, 0.25, 0.5, 0.0])
  p = np.array([0.0, 0.25, 0.25, 0.5])
  eps = 1e-7
  want = np.sum(p * np.log(eps + p / (eps + q)))
  np.testing.assert_allclose(float(saliency.kld_loss(pred, gt)), want, rtol=1e-5)
  np.testing.assert_allclose(float(saliency.kld_loss(10 * pred, gt)), want, rtol=1e-5)
  assert float(saliency.kld_loss(gt, gt)) == pytest.approx(0.0, abs=1e-6)
  # The objective picks the data term by name and still adds the prior regulariser.
  params = {"prior": {"W": jnp.ones((2, 2))}}
  np.testing.assert_allclose(float(saliency.mlnet_total_loss(pred, gt, params, loss="kld")),
                             want + 1.0, rtol=1e-5)
  with pytest.raises(ValueError, match="saliency loss must be one of"):
    saliency.mlnet_total_loss(pred, gt, params, loss="mse")


def test_kld_loss_has_no_spurious_peak_optimum():
  # ML-Net's max-normalised loss scores a map with one wrong bright pixel almost like the
  # all-zero map; KLD makes it far worse than a map with mass on the fixated pixels.
  gt = _map([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
  right = _map([[0.1, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 0.1]])
  spurious = _map([[1.0, 0.0, 0.0], [0.0, 0.01, 0.0], [0.0, 0.0, 0.0]])
  assert float(saliency.kld_loss(spurious, gt)) > 5 * float(saliency.kld_loss(right, gt))
