"""Importer machinery: layout transforms, shape-checked assembly, the .npz format, preprocessing."""

import os

import numpy as np
import pytest
import torch

from jaxface.weights import common


def test_conv_transpose_matches_torch_conv(rng):
  import jax.numpy as jnp
  from jax import lax
  w = rng.normal(size=(5, 3, 3, 2)).astype(np.float32)  # (O, I, kh, kw)
  x = rng.normal(size=(1, 3, 6, 7)).astype(np.float32)
  ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w)).numpy()
  got = lax.conv_general_dilated(jnp.asarray(x.transpose(0, 2, 3, 1)),
                                 jnp.asarray(common.conv_oihw_to_hwio(w)), (1, 1), "VALID",
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
  # Worst-case float32 rounding of a sum of n = 18 products in any order: n * 2^-24 * sum |x w|
  # (the conv of the magnitudes); a flipped or transposed kernel is off by O(1).
  mag = torch.nn.functional.conv2d(torch.from_numpy(np.abs(x)), torch.from_numpy(np.abs(w))).numpy()
  np.testing.assert_array_less(np.abs(np.asarray(got).transpose(0, 3, 1, 2) - ref),
                               18 * 2.0**-24 * mag + 1e-30)


def test_theano_kernel_is_flipped():
  w = np.arange(2 * 1 * 2 * 3, dtype=np.float32).reshape(2, 1, 2, 3)
  hwio = common.conv_theano_to_hwio(w)
  assert hwio.shape == (2, 3, 1, 2)
  np.testing.assert_array_equal(hwio[0, 0, 0, 1], w[1, 0, 1, 2])
  np.testing.assert_array_equal(hwio[1, 2, 0, 0], w[0, 0, 0, 0])


def test_dense_row_permutations_match_flatten_orders(rng):
  c, h, w, out = 3, 2, 4, 5
  act_HWC = rng.normal(size=(h, w, c)).astype(np.float32)
  wt = rng.normal(size=(out, c * h * w)).astype(np.float32)  # torch Linear on a C,H,W flatten
  ref = wt @ act_HWC.transpose(2, 0, 1).reshape(-1)
  got = act_HWC.reshape(-1) @ common.dense_rows_chw_to_hwc(common.linear_to_dense(wt), c, h, w)
  # Dots of length n = 24 summed in another order: at most n * 2^-24 * |wt| @ |act| apart (an
  # absolute bound: rtol alone fails on a near-zero output); a wrong row order is off by O(1).
  bound = 24 * 2.0**-24 * (np.abs(wt) @ np.abs(act_HWC).reshape(-1))
  np.testing.assert_array_less(np.abs(got - ref), bound)
  ref_whc = wt @ act_HWC.transpose(1, 0, 2).reshape(-1)  # facenet-pytorch permute(0, 3, 2, 1)
  got_whc = act_HWC.reshape(-1) @ common.dense_rows_whc_to_hwc(common.linear_to_dense(wt), c, h, w)
  bound_whc = 24 * 2.0**-24 * (np.abs(wt) @ np.abs(act_HWC).transpose(1, 0, 2).reshape(-1))
  np.testing.assert_array_less(np.abs(got_whc - ref_whc), bound_whc)


def _template():
  import jax
  return {"params": {"conv1": {"kernel": jax.ShapeDtypeStruct((3, 3, 3, 8), np.float32),
                               "bias": jax.ShapeDtypeStruct((8,), np.float32)}}}


def test_assemble_builds_tree_and_names_layer_and_shapes_on_mismatch():
  arrays = {"params/conv1/kernel": np.zeros((3, 3, 3, 8)), "params/conv1/bias": np.ones(8)}
  tree = common.assemble(_template(), arrays)
  assert tree["params"]["conv1"]["bias"].dtype == np.float32
  assert tree["params"]["conv1"]["kernel"].shape == (3, 3, 3, 8)
  bad = dict(arrays, **{"params/conv1/kernel": np.zeros((3, 3, 3, 16))})
  with pytest.raises(common.WeightImportError, match=r"params/conv1/kernel.*\(3, 3, 3, 16\).*"
                     r"\(3, 3, 3, 8\)"):
    common.assemble(_template(), bad, source="f.pth")
  with pytest.raises(common.WeightImportError, match="params/conv1/bias.*missing"):
    common.assemble(_template(), {"params/conv1/kernel": np.zeros((3, 3, 3, 8))})
  with pytest.raises(common.WeightImportError, match="params/fc9/kernel.*does not exist"):
    common.assemble(_template(), dict(arrays, **{"params/fc9/kernel": np.zeros(2)}))


def test_save_load_roundtrip_keeps_meta_and_is_atomic(tmp_path):
  src = tmp_path / "src.bin"
  src.write_bytes(b"abc")
  meta = common.make_meta("fmt", src, "alexnet", {"num_classes": 3}, common.TORCHVISION)
  assert meta["source_sha256"] == ("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
  variables = {"params": {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}},
               "batch_stats": {"bn": {"mean": np.ones(3, np.float32)}}}
  dst = tmp_path / "out" / "w.npz"
  common.save(dst, variables, meta)
  assert [p.name for p in dst.parent.iterdir()] == ["w.npz"]  # no temporary file left behind
  got = common.load(dst)
  np.testing.assert_array_equal(got.variables["params"]["a"]["kernel"],
                                variables["params"]["a"]["kernel"])
  assert got.meta == meta
  assert got.preprocessing == common.TORCHVISION


def test_load_rejects_missing_empty_and_foreign_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.npz"):
    common.load(tmp_path / "nope.npz")
  empty = tmp_path / "empty.npz"
  empty.write_bytes(b"")
  with pytest.raises(common.WeightImportError, match="empty"):
    common.load(empty)
  junk = tmp_path / "junk.npz"
  junk.write_bytes(os.urandom(64))
  with pytest.raises(common.WeightImportError, match="junk.npz"):
    common.load(junk)
  plain = tmp_path / "plain.npz"
  np.savez(plain, a=np.zeros(2))
  with pytest.raises(common.WeightImportError, match="__meta__"):
    common.load(plain)


def test_preprocessing_apply_torchvision_and_bgr_caffe():
  px = np.asarray([[[255, 0, 51]]], np.uint8)
  got = common.TORCHVISION.apply(px)
  # Hand-computed values: float32 scale, subtract and divide round ~3 times (~2e-7 relative);
  # rtol 1e-5 / 1e-6 are fixed margins above that, while a wrong mean or std is off by > 1e-3.
  np.testing.assert_allclose(got[0, 0], [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224,
                                         (0.2 - 0.406) / 0.225], rtol=1e-5)
  got = common.CAFFE_IMAGENET_BGR.apply(px)
  np.testing.assert_allclose(got[0, 0], [51 - 103.939, 0 - 116.779, 255 - 123.68], rtol=1e-6)
  np.testing.assert_allclose(common.MTCNN.apply(np.asarray([[[255, 127, 0]]], np.uint8))[0, 0],
                             [127.5 / 128, -0.5 / 128, -127.5 / 128], rtol=1e-6)
  with pytest.raises(ValueError, match="channel_order"):
    common.Preprocessing("GBR")
