"""ML-Net Theano-era weight importers against a torch reference of the Keras 1 / Theano network.

The reference below re-implements the semantics of marcellacornia/mlnet independently of jaxface:
Theano true convolutions (torch conv2d with the stored kernel flipped), Keras 1 Theano "same"
pooling (pad 1 on both sides, floor pooling, keep the first ceil(H/s) outputs), and the prior
upsampled by interpolation matrices built by running Theano's ``bilinear_upsampling`` algorithm
(edge padding + transposed conv with the triangle kernel) on unit vectors. It runs at width 1/16 on
a 160x240 input: 20x30 features, so a (2, 3) prior exercises the reference ratio-10 grid.
"""

import json
import pickle

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxface import models
from jaxface.weights import common, import_weights
from jaxface.weights import mlnet as mlnet_weights
from jaxface.weights.common import WeightImportError

# (model name, out channels at width 1/16, in channels).
_WIDTH = 1 / 16
_LAYERS = [("conv1_1", 4, 3), ("conv1_2", 4, 4), ("conv2_1", 8, 4), ("conv2_2", 8, 8),
           ("conv3_1", 16, 8), ("conv3_2", 16, 16), ("conv3_3", 16, 16), ("conv4_1", 32, 16),
           ("conv4_2", 32, 32), ("conv4_3", 32, 32), ("conv5_1", 32, 32), ("conv5_2", 32, 32),
           ("conv5_3", 32, 32), ("int_conv", 4, 80), ("pre_final_conv", 1, 4)]
_INPUT_HW = (160, 240)
_PRIOR = (2, 3)
_RATIO = 10
_VGG_INDICES = (1, 3, 6, 8, 11, 13, 15, 18, 20, 22, 25, 27, 29)


# ---------------------------------------------------------------------------------------------
# Reference network (torch, NCHW, Theano-layout kernels as stored in the files).

def _random_theano_weights(seed):
  g = torch.Generator().manual_seed(seed)
  weights = {}
  for name, cout, cin in _LAYERS:
    k = 1 if name == "pre_final_conv" else 3
    std = (2.0 / (cin * k * k)) ** 0.5
    weights[name] = (torch.randn(cout, cin, k, k, generator=g, dtype=torch.float64) * std,
                     torch.rand(cout, generator=g, dtype=torch.float64) * 0.1)
  weights["prior"] = torch.randn(*_PRIOR, generator=g, dtype=torch.float64) * 0.3
  return weights


def _theano_conv(x, kernel, bias):
  """Theano conv2d (filter_flip=True, border_mode='half') = cross-correlation with the flipped
  kernel."""
  k = kernel.shape[-1]
  return F.relu(F.conv2d(x, torch.flip(kernel, [2, 3]), bias, padding=k // 2))


def _keras1_theano_pool(x, stride):
  """Keras 1 Theano pool2d(border_mode='same') for a 2x2 pool: pad 1 on every side (inputs are
  post-ReLU, so zeros never win), pool without the border, crop to ceil(H/stride)."""
  h, w = x.shape[-2:]
  y = F.max_pool2d(F.pad(x, (1, 1, 1, 1)), 2, stride)
  return y[..., :(h + stride - 1) // stride, :(w + stride - 1) // stride]


def _theano_upsampling_matrix(n, ratio):
  """(n*ratio, n) matrix of Theano's bilinear_upsampling along one axis, built column by column by
  running the algorithm (edge-pad by one, transposed conv with the normalised triangle kernel of
  length 2r-1, stride r, padding 2r - (r-1)//2 - 1) on unit vectors."""
  half = torch.arange(1, ratio + 1, dtype=torch.float64)
  kern = (torch.cat([half, half.flip(0)[1:]]) / ratio)[None, None]
  pad = 2 * ratio - (ratio - 1) // 2 - 1
  extra = n * ratio - ((n + 1) * ratio - 2 * pad + 2 * ratio - 1)
  cols = []
  for i in range(n):
    e = torch.zeros(n, dtype=torch.float64)
    e[i] = 1.0
    padded = torch.cat([e[:1], e, e[-1:]])[None, None]
    cols.append(F.conv_transpose1d(padded, kern, stride=ratio, padding=pad,
                                   output_padding=extra)[0, 0])
  return torch.stack(cols, dim=1)


def _reference_forward(weights, x_nchw):
  """ML-Net (model.py of marcellacornia/mlnet) in inference mode -> (output, intermediates)."""
  inter = {}
  x = x_nchw
  blocks = [("conv1_1", "conv1_2"), ("conv2_1", "conv2_2"), ("conv3_1", "conv3_2", "conv3_3"),
            ("conv4_1", "conv4_2", "conv4_3"), ("conv5_1", "conv5_2", "conv5_3")]
  for b, names in enumerate(blocks, start=1):
    for name in names:
      x = _theano_conv(x, *weights[name])
    if b <= 4:
      x = _keras1_theano_pool(x, 2 if b <= 3 else 1)
      inter[f"conv{b}_pool"] = x
  inter["conv5_3"] = x
  x = torch.cat([inter["conv3_pool"], inter["conv4_pool"], inter["conv5_3"]], dim=1)
  x = _theano_conv(x, *weights["int_conv"])
  x = _theano_conv(x, *weights["pre_final_conv"])
  inter["pre_prior"] = x
  rows = _theano_upsampling_matrix(_PRIOR[0], _RATIO)
  cols = _theano_upsampling_matrix(_PRIOR[1], _RATIO)
  prior = rows @ (1.0 + weights["prior"]) @ cols.T
  inter["prior"] = prior
  return F.relu(x * prior), inter


# ---------------------------------------------------------------------------------------------
# Writers of the file layouts.

def _keras1_layer_list(weights):
  """(layer name, [(weight name, array)]) in the order of the Keras 1 functional model."""
  out = [("input_1", [])]
  conv_i, pool_i = 0, 0
  for name, _, _ in _LAYERS:
    conv_i += 1
    layer = f"convolution2d_{conv_i}"
    w, b = weights[name]
    out.append((layer, [(f"{layer}_W", w.numpy().astype(np.float32)),
                        (f"{layer}_b", b.numpy().astype(np.float32))]))
    if name in ("conv1_2", "conv2_2", "conv3_3", "conv4_3"):
      pool_i += 1
      out.append((f"maxpooling2d_{pool_i}", []))
    if name == "conv5_3":
      out += [("merge_1", []), ("dropout_1", [])]
  # The EltWiseProduct weight is created without a name, so Keras 1 calls it param_0.
  out.append(("eltwiseproduct_1", [("param_0", weights["prior"].numpy().astype(np.float32))]))
  out.append(("activation_1", []))
  return out


def _write_keras1_group(group, layer_list):
  """Keras 1.1 ``save_weights_to_hdf5_group``."""
  group.attrs["layer_names"] = [name.encode("utf8") for name, _ in layer_list]
  for name, ws in layer_list:
    g = group.create_group(name)
    g.attrs["weight_names"] = [w_name.encode("utf8") for w_name, _ in ws]
    for w_name, arr in ws:
      g.create_dataset(w_name, data=arr)


def write_mlnet_weights_only(path, weights, layer_list=None):
  with h5py.File(path, "w") as f:
    _write_keras1_group(f, layer_list or _keras1_layer_list(weights))


def write_mlnet_full_model(path, weights):
  """Keras 1.1 ``model.save``: config attributes and the weights under ``model_weights``."""
  with h5py.File(path, "w") as f:
    f.attrs["keras_version"] = b"1.1.0"
    f.attrs["model_config"] = json.dumps({"class_name": "Model", "config": {}}).encode()
    _write_keras1_group(f.create_group("model_weights"), _keras1_layer_list(weights))
    f.create_group("optimizer_weights").attrs["weight_names"] = []


def write_vgg16_theano(path, weights, skip=None):
  """Old Keras 0.x Sequential ``save_weights``: layer_{i} groups with nb_params and param_{n}."""
  convs = dict(zip(_VGG_INDICES, [n for n, _, _ in _LAYERS[:13]]))
  rng = np.random.default_rng(5)
  dense = {32: (32 * 5 * 7, 6), 34: (6, 6), 36: (6, 10)}  # fc6-8 (unused by ML-Net).
  with h5py.File(path, "w") as f:
    f.attrs["nb_layers"] = 38
    for i in range(38):
      if i == skip:
        continue
      g = f.create_group(f"layer_{i}")
      params = []
      if i in convs:
        w, b = weights[convs[i]]
        params = [w.numpy().astype(np.float32), b.numpy().astype(np.float32)]
      elif i in dense:
        params = [rng.standard_normal(dense[i]).astype(np.float32),
                  np.zeros(dense[i][1], np.float32)]
      g.attrs["nb_params"] = len(params)
      for n, p in enumerate(params):
        g.create_dataset(f"param_{n}", data=p)


# ---------------------------------------------------------------------------------------------
# Fixtures.

@pytest.fixture(scope="module")
def reference():
  weights = _random_theano_weights(0)
  x = np.random.default_rng(1).uniform(-60, 60, (1, 3, *_INPUT_HW))
  out, inter = _reference_forward(weights, torch.from_numpy(x))
  # The comparison must not be vacuous: a good part of the map is alive.
  assert (out > 0).double().mean() > 0.3
  return weights, x, out.numpy(), {k: v.numpy() for k, v in inter.items()}


@pytest.fixture(scope="module")
def weights_only_file(reference, tmp_path_factory):
  path = tmp_path_factory.mktemp("mlnet") / "mlnet_salicon_weights.pkl"
  write_mlnet_weights_only(path, reference[0])
  return path


@pytest.fixture(scope="module")
def apply_fn():
  model = models.get("mlnet", width=_WIDTH, prior_shape=_PRIOR)
  return jax.jit(lambda v, x: model.apply(v, x))


def _nhwc(x_nchw):
  return jnp.asarray(np.transpose(x_nchw, (0, 2, 3, 1)), jnp.float32)


def _nchw(x_nhwc):
  return np.transpose(np.asarray(x_nhwc), (0, 3, 1, 2))


def _max_diff(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# ---------------------------------------------------------------------------------------------
# ML-Net SALICON file.

def test_import_mlnet_parity(reference, weights_only_file, apply_fn):
  _, x, want, inter = reference
  imp = mlnet_weights.import_mlnet(weights_only_file)
  assert imp.meta["model_kwargs"] == {"width": _WIDTH, "prior_shape": _PRIOR}
  assert imp.meta["layout"] == "weights_only"
  assert imp.meta["layer_map"]["convolution2d_14"] == "int_conv"
  assert imp.meta["layer_map"]["eltwiseproduct_1"] == "prior"
  pre = imp.preprocessing
  assert pre.channel_order == "BGR" and pre.scale == 1.0
  assert pre.mean == (103.939, 116.779, 123.68) and pre.input_size == (160, 240)
  np.testing.assert_array_equal(imp.variables["params"]["prior"]["W"],
                                reference[0]["prior"].numpy().astype(np.float32))

  out, aux = apply_fn(imp.variables, _nhwc(x))
  assert out.shape == (1, 20, 30, 1)
  for key in ("conv3_pool", "conv4_pool", "conv5_3", "pre_prior"):
    assert _max_diff(_nchw(aux[key]), inter[key]) <= 1e-4 * max(1.0, np.abs(inter[key]).max()), key
  assert _max_diff(aux["prior"][0, :, :, 0], inter["prior"]) <= 1e-6
  assert _max_diff(_nchw(out), want) <= 1e-4

  # The flip matters: importing the stored kernels without it would not reproduce the reference.
  unflipped = jax.tree_util.tree_map_with_path(
      lambda p, v: v[::-1, ::-1] if p[-1].key == "kernel" else v, imp.variables)
  wrong, _ = apply_fn(unflipped, _nhwc(x))
  assert _max_diff(_nchw(wrong), want) > 1e-2 * np.abs(want).max()


def test_import_mlnet_full_model_layout(reference, weights_only_file, tmp_path):
  path = tmp_path / "mlnet_full.h5"
  write_mlnet_full_model(path, reference[0])
  full = mlnet_weights.import_mlnet(path)
  assert full.meta["layout"] == "full_model"
  ref = mlnet_weights.import_mlnet(weights_only_file)
  flat_full, flat_ref = common.flatten(full.variables), common.flatten(ref.variables)
  assert flat_full.keys() == flat_ref.keys()
  for k in flat_ref:
    np.testing.assert_array_equal(flat_full[k], flat_ref[k], err_msg=k)


def test_import_through_format_table_and_save(weights_only_file, tmp_path):
  imp = import_weights("mlnet_theano", str(weights_only_file))
  assert imp.meta["source_format"] == "mlnet_theano" and imp.meta["model"] == "mlnet"
  common.save(tmp_path / "mlnet.npz", imp.variables, imp.meta)
  back = common.load(tmp_path / "mlnet.npz")
  assert back.meta["model_kwargs"]["prior_shape"] == list(_PRIOR)
  with pytest.raises(ValueError, match="mlnet"):
    mlnet_weights.import_mlnet(weights_only_file, arch="vgg16")


def test_non_hdf5_file_is_refused(tmp_path):
  path = tmp_path / "mlnet_salicon_weights.pkl"
  with open(path, "wb") as f:
    pickle.dump({"W": np.zeros(3)}, f)
  with pytest.raises(WeightImportError, match="not an HDF5 file"):
    mlnet_weights.import_mlnet(path)
  with pytest.raises(WeightImportError, match="not an HDF5 file"):
    mlnet_weights.import_vgg16_theano(path)


def test_hdf5_without_keras_layout_is_refused(tmp_path):
  path = tmp_path / "other.h5"
  with h5py.File(path, "w") as f:
    f.create_dataset("x", data=np.zeros(3))
  with pytest.raises(WeightImportError, match="layer_names"):
    mlnet_weights.import_mlnet(path)
  with pytest.raises(WeightImportError, match="layer_1"):
    mlnet_weights.import_vgg16_theano(path)


def test_wrong_shape_is_refused(reference, tmp_path):
  layer_list = _keras1_layer_list(reference[0])
  for i, (name, ws) in enumerate(layer_list):
    if name == "convolution2d_3":  # conv2_1: (8, 4, 3, 3) expected.
      layer_list[i] = (name, [(ws[0][0], np.zeros((8, 5, 3, 3), np.float32)), ws[1]])
  path = tmp_path / "bad.pkl"
  write_mlnet_weights_only(path, reference[0], layer_list)
  with pytest.raises(WeightImportError) as e:
    mlnet_weights.import_mlnet(path)
  msg = str(e.value)
  assert "convolution2d_3" in msg and "conv2_1" in msg
  assert "(8, 5, 3, 3)" in msg and "(8, 4, 3, 3)" in msg


def test_missing_layer_is_refused(reference, tmp_path):
  layer_list = [l for l in _keras1_layer_list(reference[0]) if l[0] != "convolution2d_15"]
  path = tmp_path / "short.pkl"
  write_mlnet_weights_only(path, reference[0], layer_list)
  with pytest.raises(WeightImportError, match="15 conv layers, the file has 14"):
    mlnet_weights.import_mlnet(path)


# ---------------------------------------------------------------------------------------------
# vgg16_weights.h5 (ML-Net's initialisation).

def test_import_vgg16_theano(reference, tmp_path, apply_fn):
  weights, x, _, _ = reference
  path = tmp_path / "vgg16_weights.h5"
  write_vgg16_theano(path, weights)
  imp = mlnet_weights.import_vgg16_theano(path)
  assert imp.meta["model_kwargs"] == {"width": _WIDTH}
  assert imp.meta["imported_layers"] == [n for n, _, _ in _LAYERS[:13]]
  assert imp.meta["layer_map"]["layer_29"] == "conv5_3"
  assert imp.preprocessing.input_size == (480, 640)
  p = imp.variables["params"]
  for name, _, _ in _LAYERS[:13]:
    w, b = weights[name]
    want = np.transpose(w.numpy()[:, :, ::-1, ::-1], (2, 3, 1, 0)).astype(np.float32)
    np.testing.assert_array_equal(p[name]["kernel"], want, err_msg=name)
    np.testing.assert_array_equal(p[name]["bias"], b.numpy().astype(np.float32))
  # The rest keeps a fresh Keras-style init: glorot_normal convs with zero bias, zero prior.
  assert p["int_conv"]["kernel"].shape == (3, 3, 80, 4) and np.std(p["int_conv"]["kernel"]) > 0
  assert not np.any(p["int_conv"]["bias"]) and not np.any(p["prior"]["W"])
  assert p["prior"]["W"].shape == (6, 8)

  # Backbone parity with the reference, and the same with unflipped kernels fails.
  variables = {"params": {**p, "prior": {"W": jnp.zeros(_PRIOR)}}}
  _, aux = apply_fn(variables, _nhwc(x))
  _, inter = _reference_forward({**weights, "prior": torch.zeros(_PRIOR, dtype=torch.float64)},
                                torch.from_numpy(x))
  want = inter["conv5_3"].numpy()
  assert _max_diff(_nchw(aux["conv5_3"]), want) <= 1e-4 * np.abs(want).max()
  unflipped = jax.tree_util.tree_map_with_path(
      lambda q, v: v[::-1, ::-1] if q[-1].key == "kernel" else v, variables)
  _, aux_wrong = apply_fn(unflipped, _nhwc(x))
  assert _max_diff(_nchw(aux_wrong["conv5_3"]), want) > 1e-2 * np.abs(want).max()


def test_vgg16_theano_bad_files(reference, tmp_path):
  weights = dict(reference[0])
  weights["conv2_1"] = (torch.zeros(8, 5, 3, 3), weights["conv2_1"][1])
  path = tmp_path / "bad_vgg.h5"
  write_vgg16_theano(path, weights)
  with pytest.raises(WeightImportError) as e:
    mlnet_weights.import_vgg16_theano(path)
  msg = str(e.value)
  assert "layer_6" in msg and "(8, 5, 3, 3)" in msg and "(8, 4, 3, 3)" in msg
  path = tmp_path / "short_vgg.h5"
  write_vgg16_theano(path, reference[0], skip=22)
  with pytest.raises(WeightImportError, match="layer_22"):
    mlnet_weights.import_vgg16_theano(path)
