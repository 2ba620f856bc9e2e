"""Classification losses and metric sums against hand-computed values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxface.tasks import classification as cls

# Logits chosen so the softmax is easy to write down: log-probabilities are log(p).
P = np.array([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]], np.float32)
LOGITS = jnp.asarray(np.log(P))


def test_cross_entropy_plain_mean_and_count():
  loss, count = cls.cross_entropy(LOGITS, jnp.array([0, 2, 1]))
  want = -(math.log(0.5) + math.log(0.7) + math.log(0.3)) / 3
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  assert float(count) == 3


def test_cross_entropy_ignores_unlabelled_and_padded():
  labels = jnp.array([0, -1, 1])
  loss, count = cls.cross_entropy(LOGITS, labels, mask=jnp.array([True, True, False]))
  np.testing.assert_allclose(loss, -math.log(0.5), rtol=1e-6)
  assert float(count) == 1
  # Nothing labelled: (0, 0), and no NaN in the gradient.
  loss, count = cls.cross_entropy(LOGITS, jnp.array([-1, -1, -1]))
  assert float(loss) == 0 and float(count) == 0
  g = jax.grad(lambda x: cls.cross_entropy(x, jnp.array([-1, -1, -1]))[0])(LOGITS)
  assert np.all(np.asarray(g) == 0)


def test_cross_entropy_class_weights_count_vs_weights_normalisation():
  labels = jnp.array([0, 2, 1])
  w = jnp.array([1.0, 2.0, 4.0])
  ce = np.array([-math.log(0.5), -math.log(0.7), -math.log(0.3)])
  weighted_sum = 1 * ce[0] + 4 * ce[1] + 2 * ce[2]
  loss, count = cls.cross_entropy(LOGITS, labels, class_weights=w)
  np.testing.assert_allclose(loss, weighted_sum / 3, rtol=1e-6)  # Keras: over the count.
  assert float(count) == 3
  loss, count = cls.cross_entropy(LOGITS, labels, class_weights=w, normalize="weights")
  np.testing.assert_allclose(loss, weighted_sum / 7, rtol=1e-6)
  np.testing.assert_allclose(count, 7.0)
  with pytest.raises(ValueError, match="class_weights"):
    cls.cross_entropy(LOGITS, labels, class_weights=[1.0, 2.0])
  with pytest.raises(ValueError, match="normalize"):
    cls.cross_entropy(LOGITS, labels, normalize="mean")


def test_cross_entropy_label_smoothing():
  # eps = 0.3, K = 3: target (0.8, 0.1, 0.1) for class 0.
  loss, _ = cls.cross_entropy(LOGITS[:1], jnp.array([0]), label_smoothing=0.3)
  want = -(0.8 * math.log(0.5) + 0.1 * math.log(0.25) + 0.1 * math.log(0.25))
  np.testing.assert_allclose(loss, want, rtol=1e-6)


def test_cross_entropy_shape_errors():
  with pytest.raises(ValueError, match="labels"):
    cls.cross_entropy(LOGITS, jnp.array([0, 1]))
  with pytest.raises(ValueError, match="mask"):
    cls.cross_entropy(LOGITS, jnp.array([0, 1, 2]), mask=jnp.ones(2))


def test_cross_entropy_jits():
  f = jax.jit(lambda x, y, m: cls.cross_entropy(x, y, m, class_weights=jnp.ones(3)))
  loss, count = f(LOGITS, jnp.array([0, 2, 1]), jnp.array([1.0, 1.0, 0.0]))
  np.testing.assert_allclose(loss, -(math.log(0.5) + math.log(0.7)) / 2, rtol=1e-6)
  assert float(count) == 2


def _bce(x, t):
  p = 1 / (1 + math.exp(-x))
  return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def test_sigmoid_attributes_loss():
  logits = jnp.array([[0.0, 2.0], [-1.0, 30.0]])
  targets = jnp.array([[1, 0], [-1, 1]])
  entries = [_bce(0.0, 1), _bce(2.0, 0), _bce(30.0, 1)]
  loss, count = cls.sigmoid_attributes_loss(logits, targets)
  np.testing.assert_allclose(loss, sum(entries) / 3, rtol=1e-5)
  assert float(count) == 3
  loss, count = cls.sigmoid_attributes_loss(logits, targets, normalize="examples")
  np.testing.assert_allclose(loss, sum(entries) / 2, rtol=1e-5)
  assert float(count) == 2
  loss, count = cls.sigmoid_attributes_loss(logits, targets, mask=jnp.array([1, 0]))
  np.testing.assert_allclose(loss, (entries[0] + entries[1]) / 2, rtol=1e-5)
  # Large logits stay finite.
  loss, _ = cls.sigmoid_attributes_loss(jnp.array([[-200.0]]), jnp.array([[1]]))
  np.testing.assert_allclose(loss, 200.0, rtol=1e-6)
  with pytest.raises(ValueError, match="targets01"):
    cls.sigmoid_attributes_loss(logits, targets[:, :1])


def test_class_weights_from_counts():
  counts = [10, 20, 40]
  np.testing.assert_allclose(cls.class_weights_from_counts(counts, "inverse"), [4, 2, 1])
  # sklearn balanced: 70 / (3 * count).
  np.testing.assert_allclose(cls.class_weights_from_counts(counts, "balanced"),
                             [70 / 30, 70 / 60, 70 / 120], rtol=1e-6)
  np.testing.assert_allclose(cls.class_weights_from_counts(counts, "none"), [1, 1, 1])
  with pytest.raises(ValueError, match=r"classes \[1\]"):
    cls.class_weights_from_counts([3, 0], "balanced")
  with pytest.raises(ValueError, match="scheme"):
    cls.class_weights_from_counts(counts, "sqrt")


def test_metric_sums():
  logits = jnp.asarray(np.eye(4, dtype=np.float32)[[0, 2, 3, 1, 0]])  # Predictions 0 2 3 1 0.
  labels = jnp.array([0, 1, 1, -1, 3])
  mask = jnp.array([1, 1, 1, 1, 0])
  correct, count = cls.accuracy_counts(logits, labels, mask)
  assert (float(correct), float(count)) == (1, 3)
  hits, count = cls.one_off_counts(logits, labels, mask)  # |0-0|, |2-1| within 1; |3-1| not.
  assert (float(hits), float(count)) == (2, 3)
  total, count = cls.abs_class_diff_sums(logits, labels, mask)
  assert (float(total), float(count)) == (3, 3)
  conf = np.asarray(cls.confusion_counts(logits, labels, mask))
  want = np.zeros((4, 4))
  want[0, 0] = want[1, 2] = want[1, 3] = 1
  np.testing.assert_array_equal(conf, want)


def test_attribute_accuracy_counts():
  logits = jnp.array([[1.0, -1.0], [2.0, 3.0], [-0.5, 0.5]])
  targets = jnp.array([[1, 1], [0, -1], [0, 1]])
  correct, count = cls.attribute_accuracy_counts(logits, targets)
  np.testing.assert_array_equal(correct, [2, 1])
  np.testing.assert_array_equal(count, [3, 2])
