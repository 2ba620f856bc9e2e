"""Fused geometry (``pp.Pipeline(pipe, fuse=True)``): one resampling per run of geometric ops,
with the same random draws, points and geometry as op by op."""

import cv2
import numpy as np
import pytest

from data_pipelines import pp, saliency_cache
from data_pipelines.datasets import synthetic
from jaxface import config_lib
from jaxface.faces import crops


def _rng(seed=0):
  return np.random.default_rng(seed)


def _smooth_image(h, w, seed=0):
  """A smooth colour image (low-frequency sines): interpolation differences stay small."""
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
  rng = _rng(seed)
  chans = []
  for _ in range(3):
    fx, fy, ph = rng.uniform(0.01, 0.04), rng.uniform(0.01, 0.04), rng.uniform(0, 6)
    chans.append(127.5 + 110 * np.sin(fx * xx + ph) * np.cos(fy * yy))
  return np.rint(np.stack(chans, -1)).astype(np.uint8)


def _example(seed=0, h=120, w=160):
  img = _smooth_image(h, w, seed)
  box = np.array([50.0, 30.0, 110.0, 95.0], np.float32)
  lm = np.array([[65, 50], [95, 50], [80, 65], [68, 80], [92, 80]], np.float32)
  return {"image": img, "saliency": img[..., 1].copy(), "box": box, "landmarks": lm,
          "age": 3, "id": "x"}


def test_steps_group_runs_of_two_or_more_geometric_ops():
  pipe = ("decode|face_crop(0.3)|resize(64)|cached_saliency|flip_lr|rotate(3)|saliency(0.3)|"
          "resize(32)|color_jitter(0.1)|flip_lr|saliency(0.3)")
  steps = pp.Pipeline(pipe, fuse=True)._steps
  names = [[op.name for op in step] for step in steps]
  assert names == [["decode"], ["face_crop", "resize", "cached_saliency", "flip_lr", "rotate"],
                   ["saliency"], ["resize"], ["color_jitter"], ["flip_lr"], ["saliency"]]
  assert [len(s) for s in pp.Pipeline(pipe)._steps] == [1] * 11  # op by op


def test_pipeline_fuse_argument_equality_and_repr():
  a, b = pp.Pipeline("resize(8)|flip_lr", fuse=True), pp.Pipeline("resize(8)|flip_lr")
  assert str(a) == str(b) and a != b and a == pp.Pipeline("resize(8)|flip_lr", fuse=True)
  assert "fuse=True" in repr(a) and "fuse" not in repr(b)
  with pytest.raises(ValueError, match="fuse"):
    pp.Pipeline("resize(8)", fuse="yes")


@pytest.mark.parametrize("seed", range(6))
def test_same_draws_points_and_pixels_as_op_by_op(seed):
  pipe = "face_crop(0.3)|resize(96)|flip_lr|rotate(10)|random_crop(88)|saliency(0.3)"
  ex = _example(seed)
  a = pp.Pipeline(pipe)(dict(ex), _rng(seed))
  b = pp.Pipeline(pipe, fuse=True)(dict(ex), _rng(seed))
  assert set(a) == set(b) and a["age"] == b["age"]
  for key in ("image", "saliency"):
    assert a[key].shape == b[key].shape and b[key].dtype == np.uint8
  # The points go through the same affines (composed in another order: float64 rounding, then
  # float32 storage, 2^-16 px below 256): 1e-3 px is a fixed margin; a missed flip is > 1 px.
  np.testing.assert_allclose(b["landmarks"], a["landmarks"], atol=1e-3)
  np.testing.assert_allclose(b["box"], a["box"], atol=1e-3)
  # Pixels: one bilinear sample instead of three. Away from the corners a rotation brings in
  # (op by op shows the crop's replicated edge there, fused the photo), they agree closely.
  inner = (slice(12, -12), slice(12, -12))
  diff = np.abs(a["image"].astype(int) - b["image"])[inner]
  assert diff.mean() < 1.0 and diff.max() <= 6, (diff.mean(), diff.max())
  diff_map = np.abs(a["saliency"].astype(int) - b["saliency"])[inner]
  assert diff_map.mean() < 1.0 and diff_map.max() <= 6


def test_flip_only_pipeline_is_exact():
  ex = _example(1)
  seed = next(s for s in range(50) if _rng(s).random() < 0.5)  # the first draw flips
  out = pp.Pipeline("flip_lr|center_crop(100)", fuse=True)(dict(ex), _rng(seed))
  np.testing.assert_array_equal(out["image"], ex["image"][10:110, 30:130][:, ::-1])
  np.testing.assert_array_equal(out["saliency"], ex["saliency"][10:110, 30:130][:, ::-1])
  # The subject's left eye (index 0, at x = 65) is now the right eye, at 99 - (65 - 30).
  np.testing.assert_allclose(out["landmarks"][1], [99 - 35, 40], atol=1e-4)


def test_fused_warp_upscale_matches_the_exact_crop_and_replicates_the_border():
  img = _smooth_image(60, 80, 2)
  # A box half outside the photo, on its top-left corner: 2x upscale.
  box = np.array([-20.0, -10.0, 20.0, 30.0])
  A = crops.box_affine(box, 80)
  exact = crops.warp(img, A, 80)
  fused = pp.fused_warp(img, A, (80, 80))
  # One warp each, other bilinear arithmetic (OpenCV's 1/32-px fixed-point weights): rounding to
  # uint8 is 0.5 level per side, the weights' quantisation < 1 level on this smooth image, so
  # <= 2 levels; a sample off by a pixel is far more on the border ramp.
  assert np.abs(exact.astype(int) - fused).max() <= 2
  # Off the photo, the crop repeats the photo's first column / row.
  np.testing.assert_array_equal(fused[45:, :35], np.broadcast_to(
      fused[45:, 35:36], fused[45:, :35].shape))  # left of x = 0: constant along each row
  np.testing.assert_array_equal(fused[:15, 45], np.broadcast_to(fused[15, 45], (15, 3)))
  # A map (2-D) goes through the same code.
  np.testing.assert_array_equal(pp.fused_warp(img[..., 0].copy(), A, (80, 80)), fused[..., 0])


def test_fused_warp_prefilters_when_shrinking():
  # 1-pixel stripes shrunk 4x: a bilinear sample alone would alias to 0 or 255 stripes; the area
  # prefilter gives their mean, as the op-by-op INTER_AREA resize does.
  img = np.zeros((200, 200, 3), np.uint8)
  img[:, ::2] = 255
  A = crops.box_affine([0.0, 0.0, 200.0, 200.0], 50)
  out = pp.fused_warp(img, A, (50, 50))
  # The stripes' mean 127.5 up to uint8 rounding (0.5) and the fixed-point weights (< 1 level);
  # aliasing would give 0 or 255.
  assert np.abs(out.astype(int) - 127.5).max() <= 2
  fused = pp.Pipeline("resize(100)|resize(50)", fuse=True)({"image": img})
  op_by_op = pp.Pipeline("resize(100)|resize(50)")({"image": img})
  # Op by op rounds to uint8 after each of its two resizes, fused once: <= 0.5 + 0.5 + 0.5 levels
  # plus fixed-point weights, so <= 2.
  assert np.abs(fused["image"].astype(int) - op_by_op["image"]).max() <= 2


def test_cached_map_inside_a_fused_run_moves_with_the_image():
  img = np.zeros((64, 64, 3), np.uint8)
  img[28:36, 4:12] = 255  # a bright block on the left
  m = np.zeros((16, 16), np.uint8)
  m[7:9, 1:3] = 255  # the cached map (4x coarser) marks the same block
  seed = next(s for s in range(50) if _rng(s).random() < 0.5)  # flips
  ex = {"image": img, saliency_cache.CROP_KEY: m, "fixation": img[..., 0].copy(), "id": "a"}
  pipe = "resize(64)|cached_saliency|flip_lr|rotate(0)"
  a = pp.Pipeline(pipe)(dict(ex), _rng(seed))
  b = pp.Pipeline(pipe, fuse=True)(dict(ex), _rng(seed))
  assert "fixation" not in b and saliency_cache.CROP_KEY not in b  # replaced, as op by op
  assert b["saliency"].shape == (64, 64)
  for out in (a, b):
    assert out["image"][32, 56, 0] == 255 and out["image"][32, 8, 0] == 0  # mirrored
    assert out["saliency"][32, 56] > 200 and out["saliency"][32, 8] == 0
  # uint8 rounding per warp (op by op: resize then flip / rotate; fused: one): <= 2 levels, while
  # a map that does not follow the flip differs by > 200 on the block.
  assert np.abs(a["saliency"].astype(int) - b["saliency"]).max() <= 2


def test_random_op_needs_rng_and_bad_examples_still_raise():
  with pytest.raises(ValueError, match="rotate"):
    pp.Pipeline("resize(32)|rotate(5)", fuse=True)({"image": np.zeros((8, 8, 3), np.uint8)})
  with pytest.raises(pp.BadExampleError, match="box"):
    pp.Pipeline("face_crop(0.3)|resize(32)", fuse=True)(
        {"image": np.zeros((8, 8, 3), np.uint8), "id": "nobox"})


def test_synthetic_sample_pipe_fused_close_to_op_by_op():
  ex = synthetic.encode_example(synthetic.generate_example(3))
  pipe = "decode|face_crop(0.3)|resize(112)|flip_lr|rotate(3)|saliency(0.3)"
  a = pp.Pipeline(pipe)(dict(ex), _rng(4))
  b = pp.Pipeline(pipe, fuse=True)(dict(ex), _rng(4))
  diff = np.abs(a["image"].astype(int) - b["image"])[6:-6, 6:-6]
  assert diff.mean() < 3.0, diff.mean()  # textured scene: mostly interpolation rounding
  np.testing.assert_allclose(a["landmarks"], b["landmarks"], atol=1e-3)  # as in the test above


def test_config_field_is_checked_and_keys_the_saliency_cache():
  c = config_lib.base_config()
  c.train_steps = 1
  c.data.fuse_geometry = True
  config_lib.validate(c)
  c.data.fuse_geometry = None  # the only non-bool a typed ConfigDict field accepts
  with pytest.raises(config_lib.ConfigError, match="data.fuse_geometry"):
    config_lib.validate(c)
  args = ("0" * 64, "decode|face_crop(0.3)|resize(224)", (224, 224), (64, 64), 0.0)
  assert saliency_cache.cache_key(*args, True) != saliency_cache.cache_key(*args, False)


def test_check_matches_refuses_a_cache_made_with_the_other_resampling(tmp_path):
  crop = "decode|face_crop(0.3)|resize(32)"
  meta = {"key": "k", "format_version": saliency_cache.FORMAT_VERSION, "cache_size": [4, 4],
          "crop_pipe": saliency_cache.canonical_pipe(crop), "fuse_geometry": True,
          "mlnet": {"sha256": "0" * 64}}
  saliency_cache.write_meta(str(tmp_path), meta)
  with saliency_cache.SplitWriter(str(tmp_path), "train", 1, (4, 4)) as w:
    w.add(["a"], np.zeros((1, 4, 4), np.uint8))
    w.commit()
  cache = saliency_cache.SaliencyCache.open(tmp_path)
  saliency_cache.check_matches(cache, pp.Pipeline(crop, fuse=True))
  saliency_cache.check_matches(cache, crop)  # a string says nothing about resampling
  with pytest.raises(saliency_cache.CacheError, match="fuse_geometry"):
    saliency_cache.check_matches(cache, pp.Pipeline(crop + "|cached_saliency"))


def test_opencv_flags_used_by_fused_warp_exist():
  # fused_warp relies on WARP_INVERSE_MAP reading A as output -> input.
  img = np.arange(16, dtype=np.uint8).reshape(4, 4)
  A = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # output x reads input x + 1
  out = cv2.warpAffine(img, A, (4, 4), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                       borderMode=cv2.BORDER_REPLICATE)
  np.testing.assert_array_equal(out[:, :3], img[:, 1:])
  np.testing.assert_array_equal(pp.fused_warp(img, A, (4, 4)), out)


def test_anisotropic_shrink_prefilters_one_axis_only():
  # Rows shrink 4x (prefiltered over 4-row blocks), columns grow 2x (no prefilter): horizontal
  # 1-pixel stripes average out, a vertical edge stays sharp.
  img = np.zeros((80, 40, 3), np.uint8)
  img[::2] = 200
  img[:, 20:] = 0
  out = pp.Pipeline("resize((20, 80))|flip_lr", fuse=True)({"image": img}, _rng(1))
  op_by_op = pp.Pipeline("resize((20, 80))|flip_lr")({"image": img}, _rng(1))
  assert out["image"].shape == (20, 80, 3)
  # uint8 rounding of one resize each, other fixed-point weights: <= 2 levels (see above).
  assert np.abs(out["image"].astype(int) - op_by_op["image"]).max() <= 2
  bright = out["image"][:, :, 0]
  left, right = (bright[:, :38], bright[:, 42:]) if op_by_op["image"][0, 0, 0] else (
      bright[:, 42:], bright[:, :38])
  assert np.abs(left.astype(int) - 100).max() <= 2 and right.max() == 0


def test_flat_affine_algebra_is_crops_bit_for_bit():
  # run_fused composes the ops' affines on six floats instead of crops.compose_affine's arrays:
  # the same float64 operations in the same order, so the same bits.
  rng = _rng(7)
  for _ in range(200):
    A, B = rng.normal(0, 10, (2, 2, 3)) * rng.choice([1e-3, 1, 1e3], (2, 1, 1))
    flat = pp.geometry._compose(pp.geometry._flat(A), pp.geometry._flat(B))
    assert np.array_equal(np.array(flat).reshape(2, 3), crops.compose_affine(A, B))


def test_move_points_is_the_float64_formula_rounded_once_to_float32():
  rng = _rng(8)
  for n in (0, 1, 5, 68):
    for _ in range(20):
      F = rng.normal(0, 3, (2, 3)) * rng.choice([1e-2, 1, 1e2])
      lm = rng.uniform(-500, 500, (n, 2)).astype(np.float32)
      box = np.sort(rng.uniform(-500, 500, (2, 2)), axis=0).T.reshape(4).astype(np.float32)
      ex = {"landmarks": lm, "box": box}
      pp.geometry.move_points(ex, F)
      # numpy's elementwise float64 ops in the same order (no fused multiply-add), then float32.
      x, y = lm[:, 0].astype(np.float64), lm[:, 1].astype(np.float64)
      want = np.stack([F[0, 0] * x + F[0, 1] * y + F[0, 2], F[1, 0] * x + F[1, 1] * y + F[1, 2]],
                      -1).astype(np.float32)
      assert ex["landmarks"].dtype == np.float32 and np.array_equal(ex["landmarks"], want)
      cx = np.array(box[[0, 2, 0, 2]], np.float64)
      cy = np.array(box[[1, 1, 3, 3]], np.float64)
      xs, ys = F[0, 0] * cx + F[0, 1] * cy + F[0, 2], F[1, 0] * cx + F[1, 1] * cy + F[1, 2]
      assert np.array_equal(ex["box"], np.array([xs.min(), ys.min(), xs.max(), ys.max()],
                                                np.float32))
