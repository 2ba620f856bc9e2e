"""Grid occlusion: exact drops on a region model, Captum's count averaging, settings, quadrant."""

import os

import jax
import numpy as np
import pytest

from jaxface.explain import core
from jaxface.explain import metrics
from jaxface.explain import occlusion
from tests.explain import tiny

_BOX = (2, 6, 3, 7)


def _reference_map(drops, h, w, patch, stride):
  """Captum's definition by loops: each pixel's mean drop over the windows covering it."""
  num, cnt = np.zeros((h, w)), np.zeros((h, w))
  for i, y in enumerate(occlusion.starts(h, patch, stride)):
    for j, x in enumerate(occlusion.starts(w, patch, stride)):
      num[y:y + patch, x:x + patch] += drops[i, j]
      cnt[y:y + patch, x:x + patch] += 1
  return num / cnt


def test_region_model_drop_is_patch_intersection():
  fwd = core.bind(tiny.RegionSum(box=_BOX))
  img = np.ones((2, 10, 10, 1), np.float32)
  r, drops = occlusion.occlusion(fwd, {}, img, 0, score="logit", patch=3, stride=2, fill="black")
  ys = occlusion.starts(10, 3, 2)
  assert ys.tolist() == [0, 2, 4, 6, 8]  # ceil((10 - 3) / 2) + 1 positions, the last cut off.
  for i, y in enumerate(ys):
    for j, x in enumerate(ys):
      inter = (max(0, min(y + 3, 10, _BOX[1]) - max(y, _BOX[0]))
               * max(0, min(x + 3, 10, _BOX[3]) - max(x, _BOX[2])))
      assert float(drops[0, i, j]) == inter and float(drops[1, i, j]) == inter
  # Sums of ones: exact in float32, so the count-averaged map matches the loop to rounding.
  np.testing.assert_allclose(r.raw[0], _reference_map(np.asarray(drops[0]), 10, 10, 3, 2),
                             rtol=1e-6)
  assert r.settings == {"method": "occlusion", "score": "logit", "target": "class",
                        "patch": (3, 3), "stride": (2, 2), "fill": "black"}
  # The map ranks R first: as an explanation it scores Average Drop 100 % and Win 100 %.
  disjoint = np.zeros((2, 10, 10), np.float32)
  disjoint[:, 7:, :2] = 1
  ev = metrics.evaluate(fwd, {}, img, {"occlusion": np.asarray(r.maps) >= 1.0 - 1e-6,
                                       "disjoint": disjoint}, 0, score="logit",
                        reference="occlusion")
  assert ev["methods"]["occlusion"]["win"] == 100.0


def test_fill_policies_and_memory_chunks():
  fwd = core.bind(tiny.RegionSum(box=_BOX))
  img = np.random.default_rng(0).random((2, 10, 10, 2)).astype(np.float32)
  region = img[:, 2:6, 3:7]
  full = region.sum(axis=(1, 2, 3))
  # Each forward sums the n = 32 region values (<= 1) in float32, in any order: at most
  # n * 2^-24 * sum apart from the exact sum; a drop is two of them. A window one pixel off
  # changes a drop by a pixel value (~0.5).
  n = region[0].size
  # A window covering all of R (start 2..3 with patch 5): the drop is sum(R) - |R| * sum(fill).
  for fill, fill_c in (("black", np.zeros((2, 2))), (0.25, np.full((2, 2), .25)),
                       ((0.1, 0.7), np.array([[.1, .7]] * 2)),
                       ("mean", img.mean(axis=(1, 2)))):
    r, drops = occlusion.occlusion(fwd, {}, img, 0, score="logit", patch=5, stride=1, fill=fill)
    expected = full - 16 * fill_c.sum(axis=1)
    bound = 2 * n * 2.0**-24 * (full + 16 * np.abs(fill_c).sum(axis=1))
    np.testing.assert_array_less(np.abs(drops[:, 2, 2] - expected), bound)
    assert r.settings["fill"] == (fill if isinstance(fill, str) else tuple(np.ravel(fill)))
  # A tiny memory budget (one position per call) gives the same drops as one big call.
  _, small = occlusion.occlusion(fwd, {}, img, 0, score="logit", patch=5, stride=1, max_bytes=1)
  _, big = occlusion.occlusion(fwd, {}, img, 0, score="logit", patch=5, stride=1)
  np.testing.assert_allclose(small, big, rtol=0, atol=2 * 2 * n * 2.0**-24 * full.max())  # as above
  with pytest.raises(ValueError, match="stride"):
    occlusion.occlusion(fwd, {}, img, 0, score="logit", patch=2, stride=3)
  with pytest.raises(ValueError, match="fill"):
    occlusion.occlusion(fwd, {}, img, 0, score="logit", fill="grey")


def test_occlusion_quadrant_and_per_image_targets():
  model = tiny.GapNet(channels=4, num_classes=2, stride=2, mask=(0, 8, 0, 8))
  x = np.random.default_rng(3).random((2, 16, 16, 3)).astype(np.float32)
  v = jax.tree.map(np.abs, tiny.init(model, x[:1], 1))
  fwd = core.bind(model)
  # Windows aligned with the quadrant: those outside it change nothing, so their drop is 0.
  r, _ = occlusion.occlusion(fwd, v, x, [0, 1], score="prob", patch=4, stride=4)
  m = np.asarray(r.maps)
  share = m[:, :8, :8].sum(axis=(1, 2)) / m.sum(axis=(1, 2))
  assert np.all(share > 0.9), share
  for i, t in enumerate([0, 1]):
    one, _ = occlusion.occlusion(fwd, v, x[i:i + 1], t, score="prob", patch=4, stride=4)
    # Batch 2 vs 1: the tiny net's float32 sums reorder (2 layers, fan-in <= 27: ~6e-7 relative
    # on probabilities < 1, differences of two); rtol 1e-5 is a fixed margin over that, while a
    # swapped target changes the map by O(1).
    np.testing.assert_allclose(one.raw[0], r.raw[i], rtol=1e-5, atol=1e-7)
  assert np.asarray(r.targets).tolist() == [0, 1] and r.settings["target"] == "label"


def test_two_devices_shard_the_batch_and_agree(tmp_path):
  """Two forced host devices: the batch is sharded over a data mesh; drops equal one device's."""
  import subprocess
  import sys
  code = (
      "import numpy as np, jax\n"
      "from jaxface.explain import core, occlusion\n"
      "from tests.explain import tiny\n"
      "assert jax.device_count() == 2\n"
      "x = np.random.default_rng(0).random((4, 10, 10, 1)).astype(np.float32)\n"
      "sx = occlusion._maybe_shard(x)\n"
      "assert len(sx.sharding.device_set) == 2\n"
      "_, d = occlusion.occlusion(core.bind(tiny.RegionSum()), {}, x, 0, score='logit', "
      "patch=3, stride=2)\n"
      "np.save(%r, np.asarray(d))\n" % str(tmp_path / "d.npy"))
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu", PYTHONPATH=os.getcwd())
  subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
  x = np.random.default_rng(0).random((4, 10, 10, 1)).astype(np.float32)
  _, d = occlusion.occlusion(core.bind(tiny.RegionSum()), {}, x, 0, score="logit", patch=3,
                             stride=2)
  # Sums of <= 16 values in [0, 1] in float32, possibly reduced in another order: ~1e-6.
  np.testing.assert_allclose(np.load(tmp_path / "d.npy"), d, rtol=1e-5, atol=1e-5)
