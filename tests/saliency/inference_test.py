"""ML-Net pre-/post-processing against OpenCV re-implementations of the reference steps, and
loading from an imported .npz and from an in-memory (variables, name, kwargs) triple."""

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxface import models
from jaxface.saliency import inference
from jaxface.weights import common
from tests import helpers

WIDTH = 1 / 32
MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)


@pytest.fixture(scope="module")
def tiny():
  model = models.get("mlnet", width=WIDTH)
  variables = helpers.random_variables(model, jnp.zeros((1, 32, 32, 3)), seed=0)
  # A unit prior and a positive output bias keep the final ReLUs alive (maps not all zero).
  variables["params"]["prior"]["W"][:] = 0.0
  variables["params"]["pre_final_conv"]["bias"][:] = 0.5
  return model, variables


def test_preprocess_pads_centred_and_subtracts_the_bgr_mean():
  img = np.arange(2 * 4 * 3, dtype=np.uint8).reshape(1, 2, 4, 3)
  # 2x4 into 4x4: the width limits, rows (2 * 4) // 4 = 2, no resize; one zero row above/below.
  x = np.asarray(inference.preprocess(img, (4, 4)))
  assert x.shape == (1, 4, 4, 3) and x.dtype == np.float32
  np.testing.assert_allclose(x[0, 1:3], img[0, :, :, ::-1] - MEAN_BGR, rtol=1e-6)
  np.testing.assert_allclose(x[0, [0, 3]], np.broadcast_to(-MEAN_BGR, (2, 4, 3)), rtol=1e-6)


def test_preprocess_resize_matches_the_cv2_reference(rng):
  img = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
  # Reference: the rows ratio 6/12 < cols 8/12, so rows = 6 * 12 // 8 = 9, cols 12; pasted at
  # row (12 - 9) // 2 = 1 of a zero canvas; BGR minus mean.
  canvas = np.zeros((12, 12, 3), np.uint8)
  canvas[1:10] = cv2.resize(img, (12, 9), interpolation=cv2.INTER_LINEAR)
  want = canvas[..., ::-1].astype(np.float32) - MEAN_BGR
  got = np.asarray(inference.preprocess(img[None], (12, 12)))[0]
  # OpenCV's uint8 resize is fixed-point: a rounding may differ by one grey level.
  assert np.abs(got - want).max() <= 1.0 + 1e-4
  assert np.mean(np.abs(got - want) < 1e-4) > 0.9
  np.testing.assert_allclose(got[[0, 10, 11]], np.broadcast_to(-MEAN_BGR, (3, 12, 3)), rtol=1e-6)


def test_fit_size_uses_the_limiting_side():
  assert inference.fit_size((480, 640), (480, 640)) == (480, 640)
  assert inference.fit_size((100, 100), (480, 640)) == (480, 480)
  assert inference.fit_size((300, 1000), (480, 640)) == (192, 640)


def test_postprocess_covers_crops_and_normalises(rng):
  pred = rng.uniform(0.1, 2.0, (1, 2, 3, 1)).astype(np.float32)
  # Reference for a 4x4 image: rows ratio 4/2 > cols 4/3, so cols = 3 * 4 // 2 = 6; resize to
  # 4x6, keep columns (6 - 4) // 2 = 1 .. 4, divide by the max.
  big = cv2.resize(pred[0, :, :, 0], (6, 4), interpolation=cv2.INTER_LINEAR)[:, 1:5]
  got = np.asarray(inference.postprocess(pred, (4, 4)))
  assert got.shape == (1, 4, 4)
  # Two float32 bilinear implementations (OpenCV's float weights vs ours) and the division by the
  # max: a few roundings each of values <= 1, so 16 * 2^-24; a half-pixel shift moves them ~1e-1.
  np.testing.assert_allclose(got[0], big / big.max(), rtol=0, atol=16 * 2.0**-24)
  zero = np.asarray(inference.postprocess(np.zeros((2, 3, 3)), (5, 5)))
  assert zero.shape == (2, 5, 5) and not zero.any()


def test_gaussian_blur_of_a_delta_is_the_kernel():
  delta = np.zeros((1, 9, 9), np.float32)
  delta[0, 4, 4] = 1.0
  k = np.exp(-0.5 * np.arange(-3, 4) ** 2)
  k /= k.sum()
  got = np.asarray(inference.gaussian_blur(jnp.asarray(delta), 1.0))[0]
  # On a delta every sum adds zeros (exact): each tap is k_i * k_j with k rounded to float32, so
  # 3 roundings (4 * 2^-24 relative); the total adds 81 float32 values (81 * 2^-24 more).
  np.testing.assert_allclose(got[1:8, 1:8], np.outer(k, k), rtol=4 * 2.0**-24, atol=0)
  np.testing.assert_allclose(got.sum(), 1.0, rtol=(81 + 4) * 2.0**-24)


def test_predict_matches_apply_then_reference_postprocess(tiny, rng):
  model, variables = tiny
  images = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
  x = images[..., ::-1].astype(np.float32) - MEAN_BGR  # already 32x32: no resize, no padding
  raw = np.asarray(jax.jit(model.apply)(variables, x)[0])[..., 0]  # (5, 4, 4) at stride 8
  assert raw.shape == (5, 4, 4) and raw.max() > 0
  want = [cv2.resize(m, (16, 16), interpolation=cv2.INTER_LINEAR) for m in raw]
  want = np.stack([w / w.max() for w in want])
  # Batches of 2 (the last padded) give the same maps as the reference.
  got = inference.predict(lambda v, t: model.apply(v, t), variables, images, input_size=(32, 32),
                          output_size=(16, 16), batch_size=2)
  assert got.shape == (5, 16, 16) and got.dtype == np.float32
  # Batch 2 vs 5 runs other XLA kernels (other summation orders): the raw map errs by about
  # depth * sqrt(n_max) * 2^-24 relative, and the division by the max doubles that; the two
  # bilinear resizes (OpenCV's, ours) add 16 * 2^-24 as above. A padded image leaking into a map
  # is O(1).
  kernels = [k for k in jax.tree.leaves(variables) if k.ndim == 4]
  rel = len(kernels) * np.sqrt(max(int(np.prod(k.shape[:-1])) for k in kernels)) * 2.0**-24
  np.testing.assert_allclose(got, want, rtol=0, atol=2 * rel + 16 * 2.0**-24)
  assert got.min() >= 0.0 and np.allclose(got.max(axis=(1, 2)), 1.0)
  u8 = inference.maps_to_uint8(got)
  assert u8.dtype == np.uint8 and np.array_equal(u8, np.rint(got * 255).astype(np.uint8))


def test_load_mlnet_from_npz_and_from_a_triple(tiny, tmp_path, rng):
  model, variables = tiny
  path = tmp_path / "mlnet_tiny.npz"
  common.save(path, variables, {"model": "mlnet", "model_kwargs": {"width": WIDTH}})
  from_file = inference.load_mlnet(str(path))
  assert from_file.model_name == "mlnet" and from_file.model_kwargs == {"width": WIDTH}
  assert from_file.sha256 == common.sha256_file(path)
  assert from_file.source == str(path.resolve())
  from_triple = inference.load_mlnet((variables, "mlnet", {"width": WIDTH}))
  assert from_triple.sha256 == inference.variables_sha256(variables)
  images = rng.integers(0, 256, (2, 24, 40, 3), dtype=np.uint8)
  kw = dict(input_size=(32, 32), output_size=(12, 20), batch_size=2)
  a = inference.predict(from_file.apply, from_file.variables, images, **kw)
  b = inference.predict(from_triple.apply, from_triple.variables, images, **kw)
  np.testing.assert_array_equal(a, b)
  assert a.shape == (2, 12, 20)
  # Another weight value is another sha256.
  changed = jax.tree.map(np.copy, variables)
  changed["params"]["prior"]["W"][0, 0] += 1.0
  assert inference.variables_sha256(changed) != from_triple.sha256


def test_load_mlnet_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere.npz"):
    inference.load_mlnet(str(tmp_path / "nowhere.npz"))
  path = tmp_path / "nomodel.npz"
  common.save(path, {"params": {"a": np.zeros(2, np.float32)}}, {"source_format": "x"})
  with pytest.raises(ValueError, match="nomodel.npz.*'model'"):
    inference.load_mlnet(str(path))
  with pytest.raises(ValueError, match="variables, model_name, model_kwargs"):
    inference.load_mlnet(({}, "mlnet"))
  with pytest.raises(ValueError, match="images must be uint8"):
    inference.predict(None, {}, np.zeros((1, 4, 4, 3), np.float32), input_size=(8, 8))


def test_load_mlnet_from_a_training_workdir(tiny, tmp_path):
  from jaxface import checkpointing  # pylint: disable=g-import-not-at-top
  model, variables = tiny
  ckpt = checkpointing.Checkpointer(str(tmp_path), async_save=False)
  ckpt.save(3, {"params": variables["params"], "step": np.int32(3)}, None,
            {"model": {"name": "mlnet", "kwargs": {"width": WIDTH}}})
  ckpt.close()
  w = inference.load_mlnet(str(tmp_path))
  assert w.model_name == "mlnet" and w.model_kwargs == {"width": WIDTH}
  assert w.sha256 == inference.variables_sha256({"params": variables["params"]})
  apply_fn, restored = w  # also unpacks as (apply_fn, variables)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves({"params": variables["params"]})):
    np.testing.assert_array_equal(a, b)
  x = jnp.zeros((1, 16, 16, 3))
  np.testing.assert_array_equal(apply_fn(restored, x), model.apply(variables, x)[0])


def test_preprocess_at_the_input_size_is_the_trainers_caffe_bgr(rng):
  # ML-Net trains on loader crops already at its input size, normalised by the trainer's
  # "caffe_bgr" convention; inference must feed it the same numbers.
  from jaxface import steps  # pylint: disable=g-import-not-at-top
  images = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
  np.testing.assert_array_equal(inference.preprocess(images, (8, 8)),
                                steps.normalize(jnp.asarray(images), "caffe_bgr"))
