"""Preprocessing ops: parsing, geometry of image + map + box + landmarks, reweighting, GilNet
over-sampling, decoding errors, determinism."""

import cv2
import numpy as np
import pytest

from data_pipelines import pp
from data_pipelines.datasets import synthetic
from jaxface.faces import crops

SAMPLE = "decode|face_crop(0.3)|resize(224)|flip_lr|rotate(3)|saliency(0.3)"


def _rng(seed=0):
  return np.random.default_rng(seed)


def _flip_seeds():
  """A seed whose first draw flips (random() < 0.5) and one whose first draw does not."""
  flips = [s for s in range(50) if _rng(s).random() < 0.5]
  keeps = [s for s in range(50) if _rng(s).random() >= 0.5]
  return flips[0], keeps[0]


@pytest.fixture(scope="module")
def encoded():
  return synthetic.encode_example(synthetic.generate_example(0))


# ----------------------------------------------------------------------------- parsing


def test_parse_and_str_round_trip():
  p = pp.Pipeline(SAMPLE)
  canonical = ("decode|face_crop(margin=0.3, size=None, square=False)|resize(size=224)|flip_lr|"
               "rotate(degrees=3.0)|saliency(r=0.3)")
  assert str(p) == canonical
  assert str(pp.Pipeline(canonical)) == canonical
  assert pp.parse(canonical) == p.ops
  # Positional, key=value and spacing all name the same op.
  assert pp.parse("resize( size = (32, 48) )") == pp.parse("resize((32,48))")
  assert str(pp.Pipeline("resize((32, 48))")) == "resize(size=(32, 48))"
  assert str(pp.Pipeline("task_crop(3, context=0.5)")) == \
      "task_crop(scheme=3, size=224, context=0.5)"
  assert pp.parse("") == [] and str(pp.Pipeline("")) == ""
  assert [type(o) for o in p.ops] == [pp.OPS[n] for n in ("decode", "face_crop", "resize",
                                                            "flip_lr", "rotate", "saliency")]
  assert p.random and not pp.Pipeline("decode|resize(8)").random


@pytest.mark.parametrize("pipe, words", [
    ("decode|blur(3)", ["unknown op", "'blur'"]),
    ("resize", ["resize", "size"]),
    ("resize(-1)", ["resize", "size", "-1"]),
    ("resize(0)", ["resize", "size"]),
    ("resize(2.5)", ["resize", "size"]),
    ("resize((1, 2, 3))", ["resize", "size"]),
    ("resize(224, 3)", ["resize", "positional"]),
    ("center_crop(True)", ["center_crop", "size"]),
    ("saliency(1.5)", ["saliency", "r", "1.5"]),
    ("saliency(-0.1)", ["saliency", "r"]),
    ("saliency(r='a')", ["saliency", "r"]),
    ("face_crop(-0.3)", ["face_crop", "margin"]),
    ("face_crop(0.3, size=-5)", ["face_crop", "size"]),
    ("face_crop(x=1)", ["face_crop", "'x'"]),
    ("face_crop(square=1)", ["face_crop", "square"]),
    ("rotate('a')", ["rotate", "degrees"]),
    ("rotate(-3)", ["rotate", "degrees"]),
    ("color_jitter(brightness=-1)", ["color_jitter", "brightness"]),
    ("task_crop(7)", ["task_crop", "scheme"]),
    ("oversample10(0)", ["oversample10", "crop"]),
    ("decode(1)", ["decode", "positional"]),
    ("resize(a)", ["resize", "literal"]),
    ("decode||resize(3)", ["cannot parse"]),
    ("decode|3", ["name(args)"]),
])
def test_bad_pipes_raise_value_errors_naming_op_and_argument(pipe, words):
  with pytest.raises(ValueError) as e:
    pp.parse(pipe)
  for w in words:
    assert w in str(e.value), (w, str(e.value))


def test_register_function_op():
  @pp.register("test_add_label")
  def add_label(example, rng, value=1):
    example["extra"] = value
    return example

  try:
    p = pp.Pipeline("test_add_label(value=5)")
    assert str(p) == "test_add_label(value=5)"
    img = np.zeros((4, 4, 3), np.uint8)
    assert p({"image": img}, _rng())["extra"] == 5
    with pytest.raises(ValueError, match="test_add_label"):
      pp.parse("test_add_label(1, 2)")
    with pytest.raises(ValueError, match="already registered"):
      pp.register("test_add_label")(add_label)
  finally:
    del pp.OPS["test_add_label"]


# ----------------------------------------------------------------------------- decode


def test_decode_rgb_and_maps(encoded):
  img = np.zeros((6, 5, 3), np.uint8)
  img[..., 0] = 200  # red in RGB
  sal = np.arange(30, dtype=np.uint8).reshape(6, 5)
  ex = {"image": cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[1].tobytes(),
        "saliency": cv2.imencode(".png", sal)[1].tobytes(), "id": "a", "age": 3}
  out = pp.Pipeline("decode")(ex)
  np.testing.assert_array_equal(out["image"], img)
  np.testing.assert_array_equal(out["saliency"], sal)
  assert out["age"] == 3 and out["id"] == "a"
  assert isinstance(ex["image"], bytes)  # the input dict is not modified
  # The synthetic set's JPEG image and PNG fixation map.
  dec = pp.Pipeline("decode")(encoded)
  assert dec["image"].shape == (256, 256, 3) and dec["fixation"].dtype == np.uint8


@pytest.mark.parametrize("key", ["image", "saliency"])
def test_decode_corrupt_bytes_raise_bad_example_naming_the_id(key):
  ok = cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes()
  ex = {"image": ok, "saliency": ok, "id": "adience/123"}
  ex[key] = b"\x89PNG not really an image"
  with pytest.raises(pp.BadExampleError, match="adience/123") as e:
    pp.Pipeline("decode")(ex)
  assert e.value.id == "adience/123" and key in e.value.reason


def test_missing_inputs():
  img = np.zeros((8, 8, 3), np.uint8)
  with pytest.raises(pp.BadExampleError, match="box"):
    pp.Pipeline("face_crop")({"image": img, "id": "x"})
  with pytest.raises(pp.BadExampleError, match="landmarks"):
    pp.Pipeline("align(8)")({"image": img, "id": "x"})
  with pytest.raises(pp.BadExampleError, match="saliency"):
    pp.Pipeline("saliency(0.3)")({"image": img, "id": "x"})
  with pytest.raises(ValueError, match="decode"):
    pp.Pipeline("resize(4)")({"image": b"bytes"})
  with pytest.raises(ValueError, match="rng|Generator"):
    pp.Pipeline("flip_lr")({"image": img})
  with pytest.raises(ValueError, match="larger than the image"):
    pp.Pipeline("center_crop(9)")({"image": img})


# ----------------------------------------------------------------------------- crops


def test_face_crop_pixels_and_border_replication():
  img = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
  sal = img[..., 1].copy()
  # The box is centred on pixel (0, 0); margin 2/3 makes it 5 x 5 pixels wide, from -2.5 to 2.5:
  # crop pixel j samples photo column j - 2, so the two columns/rows off the image repeat the
  # border.
  box = np.array([-1.5, -1.5, 1.5, 1.5], np.float32)
  out = pp.Pipeline("face_crop(margin=0.6666666666666666, size=5)")(
      {"image": img, "saliency": sal, "box": box})
  idx = np.clip(np.arange(5) - 2, 0, 7)
  np.testing.assert_array_equal(out["image"], img[np.ix_(idx, idx)])
  np.testing.assert_array_equal(out["saliency"], sal[np.ix_(idx, idx)])
  ref, _ = crops.crop(img, crops.margin_box(box, 2 / 3), 5)
  np.testing.assert_array_equal(out["image"], ref)
  np.testing.assert_allclose(out["box"], [0.5, 0.5, 3.5, 3.5], atol=1e-3)


def test_box_and_landmarks_through_face_crop_and_resize():
  img = np.zeros((100, 100, 3), np.uint8)
  box = np.array([10, 20, 50, 60], np.float32)  # 40 x 40, centre (30, 40)
  lm = np.array([[20, 30], [40, 30], [30, 40], [22, 50], [38, 50]], np.float32)
  ex = {"image": img, "saliency": img[..., 0], "box": box, "landmarks": lm}
  # margin 0.3 -> 52 x 52 box [4, 14, 56, 66]; size=None keeps 52 px, one crop pixel per photo
  # pixel: photo x -> crop x - 4 - 0.5 (crop pixel 0 spans photo [4, 5], centre 4.5).
  out = pp.Pipeline("face_crop(0.3)")(ex)
  assert out["image"].shape == (52, 52, 3) and out["saliency"].shape == (52, 52)
  np.testing.assert_allclose(out["box"], [5.5, 5.5, 45.5, 45.5], atol=1e-3)
  np.testing.assert_allclose(out["landmarks"], lm - [4.5, 14.5], atol=1e-3)
  # resize(26): x -> (x + 0.5) / 2 - 0.5.
  out2 = pp.Pipeline("face_crop(0.3)|resize(26)")(ex)
  np.testing.assert_allclose(out2["box"], [2.5, 2.5, 22.5, 22.5], atol=1e-3)
  np.testing.assert_allclose(out2["landmarks"], (lm - [4.5, 14.5] + 0.5) / 2 - 0.5, atol=1e-3)
  # Non-square target (h, w) = (13, 104): x scales by 2, y by 1/4.
  out3 = pp.Pipeline("face_crop(0.3)|resize((13, 104))")(ex)
  assert out3["image"].shape == (13, 104, 3) and out3["saliency"].shape == (13, 104)
  np.testing.assert_allclose(out3["box"], [11.5, 1.0, 91.5, 11.0], atol=1e-3)


def test_resize_moves_a_marked_block_with_its_landmark():
  img = np.zeros((16, 16, 3), np.uint8)
  img[4:6, 6:8] = 255
  sal = img[..., 0].copy()
  out = pp.Pipeline("resize(8)")({"image": img, "saliency": sal,
                                   "landmarks": np.full((5, 2), [6.5, 4.5], np.float32)})
  assert np.argwhere(out["image"][..., 0] == 255).tolist() == [[2, 3]]
  assert np.argwhere(out["saliency"] == 255).tolist() == [[2, 3]]
  np.testing.assert_allclose(out["landmarks"][0], [3, 2], atol=1e-3)


def test_align_and_task_crop_reuse_crops(encoded):
  ex = pp.Pipeline("decode")(encoded)
  out = pp.Pipeline("align(64)")(ex)
  ref, A = crops.align(ex["image"], ex["landmarks"], 64)
  np.testing.assert_array_equal(out["image"], ref)
  np.testing.assert_array_equal(out["fixation"], crops.warp(ex["fixation"], A, 64))
  # Aligned landmarks land near the (scaled) template.
  template = (crops.ARCFACE_TEMPLATE_112 + 0.5) * 64 / 112 - 0.5
  assert np.abs(out["landmarks"] - template).max() < 6
  for scheme in range(1, 6):
    out = pp.Pipeline(f"task_crop({scheme}, size=48)")(ex)
    face = crops.Face(box=ex["box"], score=1.0, landmarks=ex["landmarks"])
    ref, A = crops.task_crop(ex["image"], face, scheme, 48)
    np.testing.assert_array_equal(out["image"], ref)
    np.testing.assert_allclose(
        out["landmarks"], crops.apply_affine(crops.invert_affine(A), ex["landmarks"]), atol=1e-3)


def test_center_and_random_crop():
  img = np.arange(256 * 256 * 3, dtype=np.uint32).reshape(256, 256, 3).astype(np.uint8)
  lm = np.full((5, 2), 100, np.float32)
  out = pp.Pipeline("center_crop(227)")({"image": img, "landmarks": lm})
  np.testing.assert_array_equal(out["image"], img[14:241, 14:241])  # Caffe's centre offset
  np.testing.assert_allclose(out["landmarks"], lm - 14)
  ex = {"image": img, "saliency": img[..., 2], "landmarks": lm}
  out = pp.Pipeline("random_crop((200, 100))")(ex, _rng(3))
  top, left = 100 - int(out["landmarks"][0, 1]), 100 - int(out["landmarks"][0, 0])
  np.testing.assert_array_equal(out["image"], img[top:top + 200, left:left + 100])
  np.testing.assert_array_equal(out["saliency"], img[top:top + 200, left:left + 100, 2])


# ----------------------------------------------------------------------------- flip, rotate


def test_flip_lr_moves_image_map_box_and_landmarks_together():
  img = np.zeros((6, 8, 3), np.uint8)
  img[2, 1] = [255, 0, 0]
  sal = np.zeros((6, 8), np.uint8)
  sal[2, 1] = 255
  lm = np.array([[1, 2], [5, 2], [3, 3], [2, 4], [4, 4]], np.float32)
  box = np.array([0.5, 1.0, 5.5, 5.0], np.float32)
  ex = {"image": img, "saliency": sal, "landmarks": lm, "box": box, "id": "f"}
  flip_seed, keep_seed = _flip_seeds()
  out = pp.Pipeline("flip_lr")(ex, _rng(flip_seed))
  assert np.argwhere(out["image"][..., 0] == 255).tolist() == [[2, 6]]
  assert np.argwhere(out["saliency"] == 255).tolist() == [[2, 6]]
  # The marked left eye (x=1) is now at x=6 and is the *right* eye; mouth corners swap too.
  np.testing.assert_allclose(out["landmarks"],
                             [[2, 2], [6, 2], [4, 3], [3, 4], [5, 4]])
  np.testing.assert_allclose(out["box"], [1.5, 1.0, 6.5, 5.0])
  kept = pp.Pipeline("flip_lr")(ex, _rng(keep_seed))
  np.testing.assert_array_equal(kept["image"], img)
  np.testing.assert_array_equal(kept["landmarks"], lm)
  n = sum(pp.Pipeline("flip_lr")(ex, _rng(s))["image"][2, 6, 0] == 255 for s in range(400))
  assert 150 < n < 250


def _blob(h, w, x, y, sigma=2.0):
  yy, xx = np.mgrid[:h, :w]
  return np.rint(255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))).astype(
      np.uint8)


def _centroid(m):
  m = m.astype(np.float64)
  yy, xx = np.mgrid[:m.shape[0], :m.shape[1]]
  return np.array([(xx * m).sum(), (yy * m).sum()]) / m.sum()


def test_rotate_moves_image_map_and_landmarks_together():
  h, w = 41, 51
  sal = _blob(h, w, 40, 12)
  img = np.stack([sal, sal // 2, np.zeros_like(sal)], axis=-1)
  lm = np.tile(np.array([[40, 12]], np.float32), (5, 1))
  ex = {"image": img, "saliency": sal, "landmarks": lm, "box": np.array([30, 5, 45, 20])}
  seed = next(s for s in range(50) if abs(_rng(s).uniform(-30, 30)) > 15)
  a = np.deg2rad(_rng(seed).uniform(-30, 30))
  out = pp.Pipeline("rotate(30)")(ex, _rng(seed))
  c_img, c_map = _centroid(out["image"][..., 0]), _centroid(out["saliency"])
  # Counter-clockwise on screen (y down) about the centre (25, 20), by hand.
  dx, dy = 40 - 25, 12 - 20
  expected = [25 + np.cos(a) * dx + np.sin(a) * dy, 20 - np.sin(a) * dx + np.cos(a) * dy]
  assert np.linalg.norm(c_map - expected) < 0.5
  assert np.linalg.norm(c_img - [40, 12]) > 2  # it did rotate
  # Channel 0 is the map itself, warped as a 3-channel image vs a 1-channel map: OpenCV's kernels
  # may round a pixel 1 level apart, which moves a centroid far less than 0.05 px (fixed); a map
  # that is not rotated with the image is > 2 px away.
  np.testing.assert_allclose(c_img, c_map, atol=0.05)
  assert np.linalg.norm(out["landmarks"][0] - c_map) < 0.5
  # The dot stays at its distance from the centre ((w-1)/2, (h-1)/2).
  centre = np.array([(w - 1) / 2, (h - 1) / 2])
  assert abs(np.linalg.norm(c_map - centre) - np.linalg.norm([40 - 25, 12 - 20])) < 0.3
  # The box is the bound of its rotated corners: it contains the moved dot and grows.
  x1, y1, x2, y2 = out["box"]
  assert x1 < c_map[0] < x2 and y1 < c_map[1] < y2 and (x2 - x1) > 15
  # Border replication: a constant image stays constant.
  flat = pp.Pipeline("rotate(30)")({"image": np.full((9, 9, 3), 77, np.uint8)}, _rng(1))
  assert (flat["image"] == 77).all()


# ----------------------------------------------------------------------------- saliency


def test_saliency_reweighting_hand_values():
  x = np.array([[100, 200], [50, 255]], np.uint8)
  img = np.stack([x, x, x], axis=-1)
  sal = np.array([[0, 128], [255, 64]], np.uint8)  # max 255: S = sal / 255
  ex = {"image": img, "saliency": sal}

  def run(r, e=ex):
    out = pp.Pipeline(f"saliency({r})")(e)["image"]
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    return out[..., 0]

  np.testing.assert_array_equal(run(0), x)
  # r = 1: x * S; 200 * 128/255 = 100.39 -> 100, 50 * 1 = 50, 255 * 64/255 = 64.
  np.testing.assert_array_equal(run(1), [[0, 100], [50, 64]])
  # r = 0.3: x * (0.7 + 0.3 S): 100*0.7 = 70; 200*(0.7+0.3*0.50196) = 170.12 -> 170; 50*1 = 50;
  # 255*(0.7+0.3*0.25098) = 197.7 -> 198.
  np.testing.assert_array_equal(run(0.3), [[70, 170], [50, 198]])
  # The map is normalised by its own max: halving it changes nothing.
  np.testing.assert_array_equal(run(0.3, {"image": img, "saliency": sal // 2 * 2}), run(0.3))
  # An all-zero map gives x * (1 - r): 255 * 0.7 = 178.5 -> 178 (round half to even).
  np.testing.assert_array_equal(run(0.3, {"image": img, "saliency": np.zeros_like(sal)}),
                                [[70, 140], [35, 178]])
  # A map at another resolution is resized to the image first.
  big = pp.Pipeline("saliency(1.0)")({"image": np.full((4, 4, 3), 200, np.uint8),
                                       "fixation": np.array([[0, 255], [0, 255]], np.uint8)})
  np.testing.assert_array_equal(big["image"][:, 0, 0], 0)
  np.testing.assert_array_equal(big["image"][:, 3, 0], 200)


# ----------------------------------------------------------------------------- oversampling


def test_oversample10_views_equal_slices_and_mirrors():
  img = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3)
  sal = img[..., 0].copy()
  lm = np.array([[1, 1], [3, 1], [2, 2], [1, 3], [3, 3]], np.float32)
  out = pp.Pipeline("oversample10(3)")({"image": img, "saliency": sal, "landmarks": lm,
                                         "box": np.array([1, 1, 3, 3], np.float32), "age": 2})
  assert out["image"].shape == (10, 3, 3, 3) and out["saliency"].shape == (10, 3, 3)
  assert out["landmarks"].shape == (10, 5, 2) and out["box"].shape == (10, 4)
  assert out["age"] == 2
  offsets = [(0, 0), (0, 3), (2, 0), (2, 3), (1, 1)]  # corners, then centre
  for k, (t, l) in enumerate(offsets):
    np.testing.assert_array_equal(out["image"][k], img[t:t + 3, l:l + 3])
    np.testing.assert_array_equal(out["image"][k + 5], img[t:t + 3, l:l + 3][:, ::-1])
    np.testing.assert_array_equal(out["saliency"][k + 5], sal[t:t + 3, l:l + 3][:, ::-1])
    np.testing.assert_allclose(out["landmarks"][k], lm - [l, t])
    mirrored = (lm - [l, t]) * [-1, 1] + [2, 0]
    np.testing.assert_allclose(out["landmarks"][k + 5], mirrored[[1, 0, 2, 4, 3]])
  big = pp.Pipeline("oversample10(227)")({"image": np.zeros((256, 256, 3), np.uint8)})
  assert big["image"].shape == (10, 227, 227, 3) and big["image"].dtype == np.uint8


# ----------------------------------------------------------------------------- jitter, determinism


def test_color_jitter_brightness_factor_and_uint8():
  img = np.full((4, 4, 3), 100, np.uint8)
  out = pp.Pipeline("color_jitter(brightness=0.4)")({"image": img}, _rng(5))
  f = _rng(5).uniform(0.6, 1.4)
  assert out["image"].dtype == np.uint8
  np.testing.assert_array_equal(out["image"], np.rint(100 * np.float32(f)))
  # Saturation 0 -> 1 factor range [0, 2]; contrast of a flat image changes nothing.
  same = pp.Pipeline("color_jitter(contrast=0.5)")({"image": img}, _rng(5))
  np.testing.assert_array_equal(same["image"], img)


RANDOM_PIPE = ("decode|face_crop(0.3, size=128)|random_crop(112)|flip_lr|rotate(10)|"
               "color_jitter(0.2, 0.2, 0.2)|saliency(0.3)")


def test_same_seed_same_output_different_seed_differs(encoded):
  p = pp.Pipeline(RANDOM_PIPE)
  a, b = p(encoded, _rng(7)), p(encoded, _rng(7))
  for key in ("image", "fixation", "box", "landmarks"):
    np.testing.assert_array_equal(a[key], b[key])
  assert a["image"].shape == (112, 112, 3) and a["image"].dtype == np.uint8
  for name in ("random_crop(112)", "flip_lr", "rotate(10)", "color_jitter(0.2, 0.2, 0.2)"):
    q = pp.Pipeline(f"decode|face_crop(0.3, size=128)|{name}")
    outs = [q(encoded, _rng(s))["image"] for s in range(4)]
    assert any(not np.array_equal(outs[0], o) for o in outs[1:]), name
  # Non-random ops ignore the rng (and need none).
  det = pp.Pipeline("decode|face_crop(0.3)|resize(64)|saliency(0.3)")
  np.testing.assert_array_equal(det(encoded)["image"], det(encoded, _rng(1))["image"])


def test_sample_pipe_on_synthetic(encoded):
  out = pp.Pipeline(SAMPLE)(encoded, _rng(0))
  assert out["image"].shape == (224, 224, 3) and out["image"].dtype == np.uint8
  assert out["fixation"].shape == (224, 224) and out["landmarks"].shape == (5, 2)
  assert out["id"] == encoded["id"] and out["age"] == encoded["age"]


# ----------------------------------------------------------------------------- faster paths


def _reweight_reference(img, sal, r):
  """The saliency op as first written: the float32 formula on the whole map."""
  s = sal.astype(np.float32)
  peak = s.max()
  s = s / peak if peak > 0 else np.zeros_like(s)
  return np.clip(np.rint(img * ((1.0 - r) + r * s)[..., None]), 0, 255).astype(np.uint8)


def test_saliency_lookup_equals_the_whole_map_formula():
  # Every (pixel value, map value) pair under several peaks and ratios, then random images
  # (odd sizes, all-zero maps, non-contiguous maps).
  img = np.tile(np.arange(256, dtype=np.uint8)[None, :, None], (256, 1, 3))
  for peak in (1, 3, 100, 254, 255):
    sal = np.minimum(np.arange(256), peak).astype(np.uint8)[:, None].repeat(256, 1)
    for r in (0.0, 0.1, 0.25, 0.3, 0.7, 1.0):
      np.testing.assert_array_equal(pp.saliency._reweight(img, sal, r), _reweight_reference(img, sal, r))
  rng = _rng(3)
  for t in range(40):
    h, w = rng.integers(1, 40, 2)
    img = rng.integers(0, 256, (h, w, 3), np.uint8)
    sal = rng.integers(0, rng.integers(1, 257), (h, 2 * w), np.uint8)[:, ::2]
    if t % 9 == 0:
      sal[:] = 0
    r = float(rng.random())
    np.testing.assert_array_equal(pp.saliency._reweight(img, sal, r), _reweight_reference(img, sal, r))
    np.testing.assert_array_equal(pp.saliency._reweight(img, sal.astype(np.float32), r),
                                  _reweight_reference(img, sal, r))
