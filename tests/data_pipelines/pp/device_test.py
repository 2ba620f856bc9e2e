"""Device geometry (``pp.device``): the host decodes and plans, the device warps and reweights.

The comparisons are exact (``assert_array_equal``), not within a tolerance: OpenCV's bilinear warp
of uint8 arrays is integer arithmetic once the affine's products are rounded to 1/1024 (AB_BITS =
10), which the host does in float64 as OpenCV does; the 1/32-pixel coordinates, the weights
(32 - fx)(32 - fy) in 1/1024 and the rounding (s + 512) >> 10 are integers on the device, exact on
every backend and instruction set. The reweighting's float32 weights are numpy's own
(``device.weight_table``) and the device only multiplies and rounds (IEEE, half to even). So any
difference, even one grey level, is a bug.
"""

import cv2
import numpy as np
import pytest
import skimage.data

from data_pipelines import loader, pp, saliency_cache
from data_pipelines.pp import device
from data_pipelines.datasets import synthetic

ASTRONAUT = np.ascontiguousarray(skimage.data.astronaut())  # 512x512 RGB, one face
FACE = np.array([170.0, 30.0, 300.0, 190.0], np.float32)  # about the astronaut's head
LANDMARKS = np.array([[205, 95], [260, 95], [232, 125], [210, 150], [255, 150]], np.float32)


def _map(h, w, cx, cy, sigma):
  yy, xx = np.mgrid[0:h, 0:w]
  return np.rint(255 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2))).astype(
      np.uint8)


def _examples(n=6, jpeg=False):
  """Astronaut examples with boxes moved about (some past the photo's edge), a saliency map at
  another resolution than the photo, landmarks and a label."""
  rng = np.random.default_rng(0)
  image = ASTRONAUT
  if jpeg:
    image = cv2.imencode(".jpg", cv2.cvtColor(ASTRONAUT, cv2.COLOR_RGB2BGR))[1].tobytes()
  out = []
  for i in range(n):
    shift = rng.uniform(-120, 120, 2) if i else np.zeros(2)
    scale = rng.uniform(0.6, 1.6)
    c = (FACE[:2] + FACE[2:]) / 2 + shift
    half = (FACE[2:] - FACE[:2]) / 2 * scale
    out.append({"image": image, "saliency": _map(128, 128, 60 + 4 * i, 40, 18),
                "box": np.concatenate([c - half, c + half]).astype(np.float32),
                "landmarks": (LANDMARKS + shift).astype(np.float32), "age": i, "id": f"a{i}"})
  return out


def _both(pipe, examples, keep_maps=True, seed=1):
  """The host fused pipe's examples and the device split's finished batch, same rngs."""
  pipeline = pp.Pipeline(pipe, fuse=True)
  split = device.DeviceGeometry(pipeline, keep_maps=keep_maps)
  host, plans, rngs = [], [], []
  for i, e in enumerate(examples):
    host.append(pipeline(dict(e), np.random.default_rng([seed, i])))
    rng = np.random.default_rng([seed, i])
    plans.append(split.host(dict(e), rng))
    rngs.append(rng)
  return host, plans, rngs, split.finish(device.collate(plans)), split


PIPES = [
    # the training pipe of the configs: crop, resize, flip, rotation, reweighting
    "decode|face_crop(0.3)|resize(96)|flip_lr|rotate(25)|saliency(0.3)",
    # random windows and a flip, a stronger reweighting
    "decode|resize(120)|random_crop(100)|flip_lr|saliency(0.7)",
    # a 4x-8x shrink: the host block-averages the region first (INTER_AREA), the device warps
    "decode|face_crop(0.5)|resize(24)|rotate(40)",
]


@pytest.mark.parametrize("pipe", PIPES)
def test_same_arrays_points_and_draws_as_the_host_fused_pipe(pipe):
  host, plans, rngs, out, _ = _both(pipe, _examples())
  assert out["image"].shape == (6,) + host[0]["image"].shape and out["image"].dtype == np.uint8
  for i, h in enumerate(host):
    np.testing.assert_array_equal(np.asarray(out["image"][i]), h["image"])
    np.testing.assert_array_equal(np.asarray(out["saliency"][i]), h["saliency"])
    # The same random numbers, drawn in the same order: the points move alike, bit for bit, and
    # the generators are left in the same state.
    np.testing.assert_array_equal(plans[i]["box"], h["box"])
    np.testing.assert_array_equal(plans[i]["landmarks"], h["landmarks"])
  after_host = [np.random.default_rng([1, i]) for i in range(len(host))]
  pipeline = pp.Pipeline(pipe, fuse=True)
  for i, e in enumerate(_examples()):
    pipeline(dict(e), after_host[i])
    assert rngs[i].bit_generator.state == after_host[i].bit_generator.state
  # The output is not trivially equal: the flips and rotations changed the pictures.
  assert len({np.asarray(out["image"][i]).tobytes() for i in range(6)}) == 6


def test_rotation_flip_and_reduced_decode_of_a_jpeg():
  # decode(reduced=True) decodes at 1/2 .. 1/8 where the run shrinks that much; the region and
  # the rescaled affine go to the device, the same pixels as the host's fused warp.
  pipe = "decode(reduced=True)|face_crop(0.3)|resize(48)|flip_lr|rotate(30)|saliency(0.3)"
  host, plans, _, out, _ = _both(pipe, _examples(4, jpeg=True), keep_maps=False)
  assert "saliency" not in out  # reweighted on the device, then dropped as asked
  for i, h in enumerate(host):
    np.testing.assert_array_equal(np.asarray(out["image"][i]), h["image"])
    np.testing.assert_array_equal(plans[i]["box"], h["box"])
  assert plans[0]["image"].shape[0] < 200  # the region of a reduced decode, not the photo


def test_cached_map_inside_the_run():
  # cached_saliency brings a 32x32 map in the crop's frame; flip and rotation move it on.
  pipe = "decode|face_crop(0.3)|resize(64)|cached_saliency|flip_lr|rotate(10)|saliency(0.3)"
  examples = []
  for i, e in enumerate(_examples(4)):
    e = dict(e)
    e[saliency_cache.CROP_KEY] = _map(32, 32, 10 + 3 * i, 16, 6)
    examples.append(e)
  host, _, _, out, _ = _both(pipe, examples)
  for i, h in enumerate(host):
    np.testing.assert_array_equal(np.asarray(out["image"][i]), h["image"])
    np.testing.assert_array_equal(np.asarray(out["saliency"][i]), h["saliency"])


def _warp_batch(regions, affines, out_hw, fill):
  """The device warp of hand-made regions in canvases whose padding is ``fill``."""
  canvas = device.stack_canvases(regions)
  for i, r in enumerate(regions):
    canvas[i, r.shape[0]:] = fill
    canvas[i, :, r.shape[1]:] = fill
  batch = {"image": canvas, "image.hw": np.array([r.shape[:2] for r in regions], np.int32)}
  terms = [device._fixed_point(tuple(np.ravel(A).tolist()), out_hw) for A in affines]
  batch["image.rows"] = np.stack([t[0] for t in terms])
  batch["image.cols"] = np.stack([t[1] for t in terms])
  split = device.DeviceGeometry(pp.Pipeline("resize(8)|flip_lr", fuse=True))
  return np.asarray(split.finish(batch)["image"])


def test_border_replication_is_the_true_edge_not_the_canvas_padding():
  # Regions of 50x37 .. 70x61 in 64- and 128-wide canvases whose padding is white; affines that
  # read far past the regions' right and bottom edges (and their left and top). OpenCV warps the
  # region alone, replicating its edge: the device must give the same, never the white.
  rng = np.random.default_rng(3)
  regions, affines = [], []
  for i in range(8):
    h, w = int(rng.integers(50, 71)), int(rng.integers(37, 62))
    regions.append(np.ascontiguousarray(ASTRONAUT[100:100 + h, 200:200 + w] // 2))
    M = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(-60, 60)),
                                float(rng.uniform(0.4, 1.5)))
    M[:, 2] += rng.uniform(-40, 40, 2)
    affines.append(M)
  out = _warp_batch(regions, affines, (40, 52), fill=255)
  for i, (r, M) in enumerate(zip(regions, affines)):
    ref = cv2.warpAffine(r, M, (52, 40), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REPLICATE)
    np.testing.assert_array_equal(out[i], ref)
  assert out.max() <= 127  # the regions are halved: no white from the padding got in


def test_identity_and_fractional_affines_match_opencv_on_every_rounding():
  # The integer terms round (M x) 1024 half to even as OpenCV's cvRound: coordinates on and next
  # to the 1/32 and 1/1024 grid points, where a float warp would round the other way.
  region = np.ascontiguousarray(ASTRONAUT[:64, :64])
  affines = [np.array([[1.0, 0, 0], [0, 1.0, 0]]),
             np.array([[1.0, 0, 1 / 64], [0, 1.0, 3 / 64]]),  # exactly half a 1/32 step
             np.array([[0.5, 0, 0.25 + 1 / 2048], [0, 0.75, -1 / 2048]]),
             np.array([[1 / 3, 1 / 7, 5 / 11], [-1 / 7, 1 / 3, 13.5]])]
  out = _warp_batch([region] * 4, affines, (64, 64), fill=0)
  np.testing.assert_array_equal(out[0], region)
  for i, M in enumerate(affines):
    ref = cv2.warpAffine(region, M, (64, 64), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REPLICATE)
    np.testing.assert_array_equal(out[i], ref)


def test_weight_table_is_the_host_reweighting():
  # Every peak and level: the device's lookup gives the host's product, including an all-zero map.
  rng = np.random.default_rng(4)
  img = rng.integers(0, 256, (16, 256, 3), np.uint8)
  for r in (0.3, 0.7, 1.0):
    table = device.weight_table(r)
    for peak in (0, 1, 97, 255):
      m = np.minimum(np.tile(np.arange(256, dtype=np.uint8), (16, 1)), peak).astype(np.uint8)
      want = pp.saliency._reweight(img, m, r)
      got = np.clip(np.rint(img * table[m.max()][m][..., None]), 0, 255).astype(np.uint8)
      np.testing.assert_array_equal(got, want)


def test_canvases_are_bucketed_and_bound_the_compiled_programs():
  pipe = "decode|face_crop(0.3)|resize(32)|flip_lr"
  pipeline = pp.Pipeline(pipe, fuse=True)
  split = device.DeviceGeometry(pipeline)
  sides = set()
  for batch_seed in range(5):
    plans = [split.host(dict(e), np.random.default_rng([batch_seed, i]))
             for i, e in enumerate(_examples(3))]
    batch = device.collate(plans)
    assert batch["image"].shape[1] % device.BUCKET == 0
    assert batch["image"].shape[2] % device.BUCKET == 0
    sides.add(batch["image"].shape[1:3] + batch["saliency"].shape[1:3])
    split.finish(batch)
  # One program per canvas shape pair: at most as many as there are bucket pairs.
  assert len(split.shapes_seen) == len(sides) <= 4
  assert device.canvas_side(1) == 64 and device.canvas_side(64) == 64
  assert device.canvas_side(65) == 128


@pytest.mark.parametrize("pipe, op", [
    ("decode|detect|face_crop(0.3)|resize(64)", "detect("),
    ("decode|face_crop(0.3)|color_jitter(0.1)|resize(64)|flip_lr", "color_jitter("),
    ("decode|face_crop(0.3)|resize(64)|saliency(0.3)|flip_lr", "flip_lr"),
    ("decode|face_crop(0.3)|resize(64)|saliency(0.3)|saliency(0.3)", "saliency(r=0.3)"),
    ("decode|resize(64)|saliency(0.3)", "resize(size=64)"),
    ("decode|face_crop(0.3)|resize(64)|oversample10(56)", "oversample10("),
    ("decode|saliency(0.3)", "no geometric ops"),
])
def test_pipes_that_cannot_run_on_the_device_fail_in_one_line(pipe, op):
  with pytest.raises(ValueError) as e:
    device.DeviceGeometry(pp.Pipeline(pipe, fuse=True))
  assert op in str(e.value) and "\n" not in str(e.value)
  # The loader refuses at construction, before any example is read.
  with pytest.raises(ValueError, match="device geometry"):
    loader.make_loader(_examples(2), pipe=pp.Pipeline(pipe, fuse=True), batch_size=2, seed=0,
                       shard_index=0, shard_count=1, device_geometry=True)


def test_unfused_pipes_and_bad_arguments_fail():
  with pytest.raises(ValueError, match="needs fused geometry"):
    loader.make_loader(_examples(2), pipe="decode|face_crop(0.3)|resize(64)", batch_size=2,
                       seed=0, shard_index=0, shard_count=1, device_geometry=True)
  with pytest.raises(ValueError, match="device_geometry must be True or False"):
    loader.make_loader(_examples(2), pipe="decode|face_crop(0.3)|resize(64)", batch_size=2,
                       seed=0, shard_index=0, shard_count=1, device_geometry="yes")
  host = loader.make_loader(_examples(2), pipe="decode|face_crop(0.3)|resize(64)", batch_size=2,
                            seed=0, shard_index=0, shard_count=1, read_threads=0,
                            label_keys=("age",))
  with pytest.raises(ValueError, match="batches are final"):
    host.finish(next(host))
  split = device.DeviceGeometry(pp.Pipeline("decode|face_crop(0.3)|resize(64)", fuse=True))
  with pytest.raises(ValueError, match="not made by a device-geometry loader"):
    split.finish(next(host))


@pytest.fixture(scope="module")
def synthetic_source():
  config = synthetic.SyntheticConfig(image_size=(96, 128), face_size=(0.3, 0.6), seed=2)
  return [synthetic.encode_example(e) for e in synthetic.generate(10, config)]


@pytest.mark.parametrize("workers, keep_maps", [(0, True), (1, False)])
def test_loader_batches_finish_to_the_host_loaders(synthetic_source, workers, keep_maps):
  # Training loader (threads, or a worker process: the regions of each size travel pickled)
  # and the padded evaluation loader, against the host loaders on the same stream.
  pipe = pp.Pipeline("decode|face_crop(0.3)|resize(64)|flip_lr|rotate(5)|saliency(0.3)",
                     fuse=True)
  kw = dict(pipe=pipe, batch_size=4, shard_index=0, shard_count=1, worker_count=workers,
            read_threads=1, keep_maps=keep_maps, image_size=(64, 64),
            label_keys=("age", "gender"))
  pairs = [(loader.make_loader(synthetic_source, seed=5, **kw),
            loader.make_loader(synthetic_source, seed=5, device_geometry=True, **kw))]
  if workers == 0:
    pairs.append((loader.make_eval_loader(synthetic_source, **kw),
                  loader.make_eval_loader(synthetic_source, device_geometry=True, **kw)))
  for host, dev in pairs:
    try:
      for _ in range(3):
        want, raw = next(host), next(dev)
        assert raw["image"].shape[1] % device.BUCKET == 0  # a canvas, not the output
        got = dev.finish(raw)
        assert sorted(got) == sorted(want)
        for k, v in want.items():
          np.testing.assert_array_equal(np.asarray(got[k]), v, err_msg=k)
      assert dev.get_state() == host.get_state()
    finally:
      host.close()
      dev.close()
  assert ("fixation" in want) == keep_maps and want["mask"].dtype == bool


def test_loader_size_check_uses_the_device_output(synthetic_source):
  # image_size is checked against what the device will give, not the region's size.
  ld = loader.make_loader(synthetic_source, pipe=pp.Pipeline(
      "decode|face_crop(0.3)|resize(48)|flip_lr", fuse=True), batch_size=2, seed=0,
      shard_index=0, shard_count=1, read_threads=0, image_size=(64, 64), device_geometry=True)
  with pytest.raises(loader.AllExamplesBadError, match="the model takes 64x64"):
    next(ld)
