"""Parity of the AlexNet / VGG importers against reference networks written here in torch.

Every reference is built at width 1/16 with seeded random weights, written in the foreign file's
exact layout (torch.save / safetensors state dict, Keras HDF5, caffe-tensorflow .npy dict),
imported, and run on the same input as the reference (max abs difference <= 1e-4).
"""

import json

import h5py
import jax
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from torch import nn
from torch.nn import functional as F

from jaxface import models
from jaxface.weights import WeightImportError, common, import_weights
from jaxface.weights import alexnet_vgg

# Issue 2's parity bound (max abs difference, float32), kept fixed: float32 rounding through
# depth <= 16 layers of fan-in n <= 576 is about depth * sqrt(n) * 2^-24 ~ 2e-5 relative to the
# O(1) logits, while a transposed kernel or a missing bias moves them by O(0.1).
TOL = 1e-4
# Channel counts at width 1/16, written out rather than computed by jaxface.
ALEXNET_TV = (4, 12, 24, 16, 16)
ALEXNET_CAFFE = (6, 16, 24, 24, 16)
VGG = (4, 4, 8, 8, 16, 16, 16, 32, 32, 32, 32, 32, 32)
VGG_BLOCKS = (2, 2, 3, 3, 3)
HIDDEN = 256


def _randomize(module: nn.Module, seed: int, input_scale: float = 1.0) -> nn.Module:
  """He-normal weights and small random biases, so every layer carries signal."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in module.named_parameters():
      if name.endswith("weight"):
        fan_in = p[0].numel()
        p.copy_(torch.randn(p.shape, generator=g) * np.sqrt(2.0 / fan_in))
      else:
        p.copy_(torch.randn(p.shape, generator=g) * 0.1 * input_scale)
  return module.eval()


def _jax_forward(imported, x_NHWC):
  model = models.get(imported.meta["model"], **imported.meta["model_kwargs"])
  return np.asarray(jax.jit(lambda v, x: model.apply(v, x)[0])(imported.variables, x_NHWC))


def _torch_forward(module, x_NHWC):
  with torch.no_grad():
    return module(torch.from_numpy(x_NHWC).permute(0, 3, 1, 2)).numpy()


def _assert_close(ours, ref):
  assert ours.shape == ref.shape
  assert np.abs(ref).max() > 0.1  # The comparison must not be between two near-zero outputs.
  np.testing.assert_allclose(ours, ref, rtol=0, atol=TOL)


def _assert_same_tree(a, b):
  fa, fb = common.flatten(a), common.flatten(b)
  assert sorted(fa) == sorted(fb)
  for k in fa:
    np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)


def _save_state_dict(module, tmp_path, stem):
  sd = module.state_dict()
  pth = tmp_path / f"{stem}.pth"
  torch.save(sd, pth)
  st = tmp_path / f"{stem}.safetensors"
  save_file({k: v.numpy() for k, v in sd.items()}, str(st))
  return pth, st


# ---------------------------------------------------------------------------------------------
# torchvision AlexNet and VGG-16.

class TorchAlexNet(nn.Module):
  """torchvision AlexNet layout (features / avgpool / classifier indices as in the .pth)."""

  def __init__(self, c=ALEXNET_TV, hidden=HIDDEN, num_classes=10):
    super().__init__()
    self.features = nn.Sequential(
        nn.Conv2d(3, c[0], 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(c[0], c[1], 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(c[1], c[2], 3, padding=1), nn.ReLU(),
        nn.Conv2d(c[2], c[3], 3, padding=1), nn.ReLU(),
        nn.Conv2d(c[3], c[4], 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))
    self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
    self.classifier = nn.Sequential(
        nn.Dropout(0.5), nn.Linear(c[4] * 36, hidden), nn.ReLU(),
        nn.Dropout(0.5), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

  def forward(self, x):
    return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class TorchVGG16(nn.Module):
  """torchvision VGG-16 layout (cfg "D")."""

  def __init__(self, c=VGG, hidden=HIDDEN, num_classes=10):
    super().__init__()
    feats, cin, it = [], 3, iter(c)
    for n in VGG_BLOCKS:
      for _ in range(n):
        cout = next(it)
        feats += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]
        cin = cout
      feats.append(nn.MaxPool2d(2, 2))
    self.features = nn.Sequential(*feats)
    self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
    self.classifier = nn.Sequential(
        nn.Linear(cin * 49, hidden), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(0.5), nn.Linear(hidden, num_classes))

  def forward(self, x):
    return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@pytest.mark.parametrize("arch,ref_cls,hw", [
    # 127 px: pool5 is 2x2, so the adaptive pool and the C,H,W -> H,W,C row permutation both
    # see spatially varying maps.
    ("alexnet", TorchAlexNet, 127),
    ("vgg16", TorchVGG16, 64),
])
def test_torchvision_parity_pth_and_safetensors(tmp_path, arch, ref_cls, hw):
  ref = _randomize(ref_cls(), seed=1)
  x = np.random.default_rng(0).normal(size=(2, hw, hw, 3)).astype(np.float32)
  expected = _torch_forward(ref, x)
  pth, st = _save_state_dict(ref, tmp_path, arch)

  imported = import_weights("torchvision", str(pth))  # The architecture is guessed from the keys.
  assert imported.meta["model"] == arch
  assert imported.meta["model_kwargs"] == {"width": 1 / 16, "num_classes": 10}
  assert imported.preprocessing == common.TORCHVISION
  _assert_close(_jax_forward(imported, x), expected)

  from_st = import_weights("torchvision", str(st), arch=arch)
  _assert_same_tree(from_st.variables, imported.variables)


def test_torchvision_without_classifier_is_features_only(tmp_path):
  sd = {k: v.numpy() for k, v in _randomize(TorchAlexNet(), 1).state_dict().items()
        if k.startswith("features.")}
  save_file(sd, str(tmp_path / "a.safetensors"))
  imported = import_weights("torchvision", str(tmp_path / "a.safetensors"), arch="alexnet")
  assert imported.meta["model_kwargs"] == {"width": 1 / 16, "features_only": True}
  assert sorted(imported.variables["params"]) == ["conv1", "conv2", "conv3", "conv4", "conv5"]


def test_torchvision_wrong_shapes_are_refused(tmp_path):
  sd = {k: v.numpy() for k, v in _randomize(TorchAlexNet(), 1).state_dict().items()}
  bad = dict(sd)
  bad["features.3.weight"] = np.zeros((13, 4, 5, 5), np.float32)
  bad["features.3.bias"] = np.zeros((13,), np.float32)
  save_file(bad, str(tmp_path / "bad.safetensors"))
  with pytest.raises(WeightImportError, match=r"features\.3\.weight.*conv2.*\(13, 4, 5, 5\).*"
                     r"expects \(12, 4, 5, 5\)"):
    import_weights("torchvision", str(tmp_path / "bad.safetensors"))

  bad = dict(sd)
  bad["classifier.1.weight"] = np.zeros((HIDDEN, 16 * 25), np.float32)
  save_file(bad, str(tmp_path / "bad_fc6.safetensors"))
  with pytest.raises(WeightImportError, match=r"classifier\.1\.weight.*\(256, 400\).*576"):
    import_weights("torchvision", str(tmp_path / "bad_fc6.safetensors"))

  bad = dict(sd, **{"features.1.weight": np.zeros((3,), np.float32)})
  save_file(bad, str(tmp_path / "extra.safetensors"))
  with pytest.raises(WeightImportError, match=r"features\.1\.weight"):
    import_weights("torchvision", str(tmp_path / "extra.safetensors"))


def test_infer_width_at_uneven_widths():
  from jaxface.models import alexnet, vgg  # pylint: disable=g-import-not-at-top
  for fn in (alexnet.channels_torchvision, alexnet.channels_caffe, vgg.channels):
    for width in (0.1, 0.3, 1 / 16, 0.75, 1.0):
      found = fn(width)
      assert fn(alexnet_vgg.infer_width(found, fn)) == found


# ---------------------------------------------------------------------------------------------
# Caffe bvlc_alexnet as a caffe-tensorflow .npy dict.

class TorchCaffeAlexNet(nn.Module):
  """bvlc_alexnet deploy.prototxt: LRN before pooling, ceil pooling, groups 2 on conv2/4/5."""

  def __init__(self, c=ALEXNET_CAFFE, hidden=HIDDEN, num_classes=10):
    super().__init__()
    lrn = lambda: nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
    pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)
    self.features = nn.Sequential(
        nn.Conv2d(3, c[0], 11, stride=4), nn.ReLU(), lrn(), pool(),
        nn.Conv2d(c[0], c[1], 5, padding=2, groups=2), nn.ReLU(), lrn(), pool(),
        nn.Conv2d(c[1], c[2], 3, padding=1), nn.ReLU(),
        nn.Conv2d(c[2], c[3], 3, padding=1, groups=2), nn.ReLU(),
        nn.Conv2d(c[3], c[4], 3, padding=1, groups=2), nn.ReLU(), pool())
    self.fc6 = nn.Linear(c[4] * 36, hidden)
    self.fc7 = nn.Linear(hidden, hidden)
    self.fc8 = nn.Linear(hidden, num_classes)

  def forward(self, x):
    x = torch.flatten(self.features(x), 1)  # Caffe flattens C,H,W.
    return self.fc8(F.relu(self.fc7(F.relu(self.fc6(x)))))


def _caffe_tf_dict(ref: TorchCaffeAlexNet) -> dict:
  """The caffe-tensorflow conversion: conv (O, I/g, kh, kw) -> (kh, kw, I/g, O); fc (in, out) with
  fc6 rows reordered from C,H,W to H,W,C."""
  sd = {k: v.numpy() for k, v in ref.state_dict().items()}
  d = {}
  for name, idx in zip(("conv1", "conv2", "conv3", "conv4", "conv5"), (0, 4, 8, 10, 12)):
    d[name] = [sd[f"features.{idx}.weight"].transpose(2, 3, 1, 0), sd[f"features.{idx}.bias"]]
  c = ALEXNET_CAFFE[-1]
  w6 = sd["fc6.weight"].T.reshape(c, 6, 6, HIDDEN).transpose(1, 2, 0, 3).reshape(36 * c, HIDDEN)
  d["fc6"] = [w6, sd["fc6.bias"]]
  for name in ("fc7", "fc8"):
    d[name] = [sd[f"{name}.weight"].T, sd[f"{name}.bias"]]
  return d


def test_bvlc_alexnet_npy_parity(tmp_path):
  ref = _randomize(TorchCaffeAlexNet(), seed=2, input_scale=30.0)
  with torch.no_grad():  # Logits of order 1, so 1e-4 is a float32-meaningful tolerance.
    ref.fc6.weight.mul_(0.01)
    ref.fc6.bias.mul_(0.01)
  # BGR 0..255 minus the mean: large enough that the LRN denominators are far from 1.
  x = (np.random.default_rng(0).uniform(0, 255, size=(2, 227, 227, 3)) - 118).astype(np.float32)
  with torch.no_grad():
    conv1 = F.relu(ref.features[0](torch.from_numpy(x).permute(0, 3, 1, 2)))
    lrn_scale = (conv1 / ref.features[2](conv1).clamp_min(1e-6))[conv1 > 1].mean()
  assert lrn_scale > 1.2  # LRN is exercised, not a no-op.
  expected = _torch_forward(ref, x)
  path = tmp_path / "bvlc_alexnet.npy"
  np.save(path, _caffe_tf_dict(ref), allow_pickle=True)

  imported = import_weights("caffe_alexnet_npy", str(path))
  assert imported.meta["model"] == "alexnet_caffe"
  assert imported.meta["model_kwargs"] == {"width": 1 / 16, "num_classes": 10}
  prep = imported.preprocessing
  assert prep.channel_order == "BGR" and prep.scale == 1.0 and prep.input_size == (227, 227)
  # The npy mean image's channel means, stated to 3 decimals: 1e-3 is that rounding, not float error.
  np.testing.assert_allclose(prep.mean, (104.007, 116.669, 122.679), atol=1e-3)
  _assert_close(_jax_forward(imported, x), expected)

  # At 227 px every pool divides exactly; at 103 px (conv1 24x24) pool1 and pool2 take the ceil
  # (12 and 6 rather than 11 and 5), so the conv5 maps check Caffe's rounding.
  x = x[:, :103, :103]
  model = models.get("alexnet_caffe", width=1 / 16, features_only=True)
  convs = {"params": {k: v for k, v in imported.variables["params"].items()
                      if k.startswith("conv")}}
  ours = np.asarray(jax.jit(lambda v, x: model.apply(v, x)[0])(convs, x))
  with torch.no_grad():
    conv5 = ref.features[:-1](torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
  assert ours.shape == (2, 6, 6, 16)
  # Activations here are O(100): compare relative to their scale. 5 float32 convs of fan-in
  # <= 11 * 11 * 3 reordered by another kernel (torch vs XLA, AVX2 vs AVX-512) err by about
  # depth * sqrt(n_max) * 2^-24 ~ 6e-6 of it; a floor-instead-of-ceil pool moves maps by O(1).
  scale = np.abs(conv5.numpy()).max()
  np.testing.assert_allclose(ours, conv5.numpy(), rtol=0, atol=5 * np.sqrt(363) * 2.0**-24 * scale)

  # The caffe-tensorflow {'weights', 'biases'} spelling of the same file.
  d = {k: {"weights": w, "biases": b} for k, (w, b) in _caffe_tf_dict(ref).items()}
  np.save(tmp_path / "ctf.npy", d, allow_pickle=True)
  _assert_same_tree(import_weights("caffe_alexnet_npy", str(tmp_path / "ctf.npy")).variables,
                    imported.variables)


def test_bvlc_alexnet_npy_wrong_shapes_are_refused(tmp_path):
  d = _caffe_tf_dict(_randomize(TorchCaffeAlexNet(), seed=2))
  # An ungrouped conv4 kernel (full input depth) does not fit the grouped layer.
  bad = dict(d, conv4=[np.zeros((3, 3, 24, 24), np.float32), d["conv4"][1]])
  np.save(tmp_path / "bad.npy", bad, allow_pickle=True)
  with pytest.raises(WeightImportError,
                     match=r"'conv4'.*\(3, 3, 24, 24\).*expects \(3, 3, 12, 24\)"):
    import_weights("caffe_alexnet_npy", str(tmp_path / "bad.npy"))
  np.save(tmp_path / "extra.npy", dict(d, norm1=[np.zeros(1), np.zeros(1)]), allow_pickle=True)
  with pytest.raises(WeightImportError, match="norm1"):
    import_weights("caffe_alexnet_npy", str(tmp_path / "extra.npy"))


# ---------------------------------------------------------------------------------------------
# Keras applications VGG16 and rcmalli keras-vggface VGG16.

def _keras_vgg_weights(seed: int, num_classes: int | None):
  """Random HWIO / (in, out) weights of a width-1/16 VGG-16 (fc6 rows in H,W,C order)."""
  rng = np.random.default_rng(seed)
  convs, cin = [], 3
  for cout in VGG:
    convs.append(((rng.normal(size=(3, 3, cin, cout)) * np.sqrt(2 / (9 * cin))).astype(np.float32),
                  (rng.normal(size=cout) * 0.1).astype(np.float32)))
    cin = cout
  fcs = []
  if num_classes is not None:
    for fin, fout in ((49 * cin, HIDDEN), (HIDDEN, HIDDEN), (HIDDEN, num_classes)):
      fcs.append(((rng.normal(size=(fin, fout)) * np.sqrt(2 / fin)).astype(np.float32),
                  (rng.normal(size=fout) * 0.1).astype(np.float32)))
  return convs, fcs


def _reference_vgg_channels_last(x_NHWC, convs, fcs):
  """Keras VGG-16 semantics in torch: HWIO kernels, valid 2x2 pools, channels-last flatten."""
  x, it = torch.from_numpy(x_NHWC).permute(0, 3, 1, 2), iter(convs)
  with torch.no_grad():
    for n in VGG_BLOCKS:
      for _ in range(n):
        w, b = next(it)
        x = F.relu(F.conv2d(x, torch.from_numpy(w).permute(3, 2, 0, 1), torch.from_numpy(b),
                            padding=1))
      features = x
      x = F.max_pool2d(x, 2, 2)
    if not fcs:
      return features.permute(0, 2, 3, 1).numpy()
    x = x.permute(0, 2, 3, 1).flatten(1)
    for i, (w, b) in enumerate(fcs):
      x = x @ torch.from_numpy(w) + torch.from_numpy(b)
      x = F.relu(x) if i < len(fcs) - 1 else x
    return x.numpy()


def _keras_layers(convs, fcs, style: str):
  """(layer name, weights) in model order, weightless layers included, as Keras lists them."""
  if style == "applications":
    conv_names = [f"block{b}_conv{i}" for b, n in enumerate(VGG_BLOCKS, 1)
                  for i in range(1, n + 1)]
    pools = [f"block{b}_pool" for b in range(1, 6)]
    top = [("flatten", []), ("fc1", None), ("fc2", None), ("predictions", None)]
  else:  # rcmalli keras-vggface
    conv_names = [f"conv{b}_{i}" for b, n in enumerate(VGG_BLOCKS, 1) for i in range(1, n + 1)]
    pools = [f"pool{b}" for b in range(1, 6)]
    top = [("flatten", []), ("fc6", None), ("fc6/relu", []), ("fc7", None), ("fc7/relu", []),
           ("fc8", None), ("fc8/softmax", [])]
  layers, it = [("input_1", [])], iter(zip(conv_names, convs))
  for b, n in enumerate(VGG_BLOCKS):
    for _ in range(n):
      name, (w, bias) = next(it)
      layers.append((name, [w, bias]))
    layers.append((pools[b], []))
  if fcs:
    fc_it = iter(fcs)
    layers += [(name, list(next(fc_it)) if w is None else w) for name, w in top]
  return layers


def _write_keras_h5(path, layers, weight_naming: str = "keras2", full_model: bool = False):
  """Keras 2 ``save_weights`` layout (``full_model``: ``model.save``, under ``model_weights``).

  weight_naming "keras1" gives the 2016 applications file's ``block1_conv1_W_1:0`` datasets
  stored flat in the layer group; "keras2" gives ``block1_conv1/kernel:0`` (a nested group).
  """
  with h5py.File(path, "w") as f:
    g = f
    if full_model:
      f.attrs["model_config"] = json.dumps({"class_name": "Functional"}).encode()
      f.attrs["keras_version"] = b"2.4.0"
      f.attrs["backend"] = b"tensorflow"
      g = f.create_group("model_weights")
    g.attrs["layer_names"] = np.asarray([name.encode("utf8") for name, _ in layers])
    g.attrs["backend"] = b"tensorflow"
    g.attrs["keras_version"] = b"2.4.0"
    # Keras creates the layer groups in sorted order ("fc6" before "fc6/relu", nested in it).
    for name, weights in sorted(layers, key=lambda l: l[0]):
      lg = g.create_group(name)
      if weight_naming == "keras1":
        wnames = [f"{name}_W_1:0", f"{name}_b_1:0"][:len(weights)]
      else:
        wnames = [f"{name}/kernel:0", f"{name}/bias:0"][:len(weights)]
      lg.attrs["weight_names"] = np.asarray([w.encode("utf8") for w in wnames])
      for wname, value in zip(wnames, weights):
        lg.create_dataset(wname, data=value)


def test_keras_vgg16_parity_weights_and_model_files(tmp_path):
  convs, fcs = _keras_vgg_weights(seed=3, num_classes=12)
  x = np.random.default_rng(0).normal(size=(1, 224, 224, 3)).astype(np.float32)
  expected = _reference_vgg_channels_last(x, convs, fcs)
  layers = _keras_layers(convs, fcs, "applications")
  weights_file = tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
  _write_keras_h5(weights_file, layers, weight_naming="keras1")
  imported = import_weights("keras_vgg16", str(weights_file))
  assert imported.meta["model"] == "vgg16"
  assert imported.meta["model_kwargs"] == {"width": 1 / 16, "num_classes": 12}
  assert imported.meta["source_layers"]["fc6"] == "fc1"
  assert imported.preprocessing == common.CAFFE_IMAGENET_BGR
  _assert_close(_jax_forward(imported, x), expected)

  model_file = tmp_path / "vgg16_model.h5"
  _write_keras_h5(model_file, layers, weight_naming="keras2", full_model=True)
  _assert_same_tree(import_weights("keras_vgg16", str(model_file)).variables, imported.variables)


def test_keras_vgg16_notop_imports_features_only(tmp_path):
  convs, _ = _keras_vgg_weights(seed=4, num_classes=None)
  x = np.random.default_rng(1).normal(size=(1, 64, 64, 3)).astype(np.float32)
  path = tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
  _write_keras_h5(path, _keras_layers(convs, [], "applications"))
  imported = import_weights("keras_vgg16", str(path))
  assert imported.meta["model_kwargs"] == {"width": 1 / 16, "features_only": True}
  assert "fc6" not in imported.variables["params"]
  _assert_close(_jax_forward(imported, x), _reference_vgg_channels_last(x, convs, []))


def test_keras_vggface_parity(tmp_path):
  convs, fcs = _keras_vgg_weights(seed=5, num_classes=7)
  x = np.random.default_rng(2).normal(size=(1, 224, 224, 3)).astype(np.float32)
  expected = _reference_vgg_channels_last(x, convs, fcs)
  path = tmp_path / "rcmalli_vggface_tf_vgg16.h5"
  _write_keras_h5(path, _keras_layers(convs, fcs, "vggface"))
  with h5py.File(path, "r") as f:  # The port's "fc6/relu" layer group sits inside "fc6".
    assert "relu" in f["fc6"] and "fc6" in f["fc6"]
  imported = import_weights("keras_vggface", str(path))
  assert imported.meta["model"] == "vgg_face"
  assert imported.meta["model_kwargs"] == {"width": 1 / 16, "num_classes": 7}
  assert imported.preprocessing == common.VGGFACE_BGR
  _assert_close(_jax_forward(imported, x), expected)

  notop = tmp_path / "rcmalli_vggface_tf_notop_vgg16.h5"
  _write_keras_h5(notop, _keras_layers(convs, [], "vggface"))
  features = import_weights("keras_vggface", str(notop))
  assert features.meta["model_kwargs"] == {"width": 1 / 16, "features_only": True}
  _assert_same_tree(features.variables["params"],
                    {k: v for k, v in imported.variables["params"].items() if k.startswith("conv")})


def test_keras_wrong_files_are_refused(tmp_path):
  convs, fcs = _keras_vgg_weights(seed=3, num_classes=12)
  convs[5] = (np.zeros((3, 3, 16, 17), np.float32), np.zeros(17, np.float32))
  _write_keras_h5(tmp_path / "bad.h5", _keras_layers(convs, fcs, "applications"))
  with pytest.raises(WeightImportError, match=r"'block3_conv2'.*\(3, 3, 16, 17\).*"
                     r"expects \(3, 3, 16, 16\)"):
    import_weights("keras_vgg16", str(tmp_path / "bad.h5"))

  convs, fcs = _keras_vgg_weights(seed=3, num_classes=12)
  _write_keras_h5(tmp_path / "short.h5", _keras_layers(convs, fcs, "applications")[:-6])
  with pytest.raises(WeightImportError, match="13 conv layers"):
    import_weights("keras_vgg16", str(tmp_path / "short.h5"))

  with h5py.File(tmp_path / "keras3.weights.h5", "w") as f:
    f.create_group("layers/vgg16")
  with pytest.raises(WeightImportError, match="layer_names"):
    import_weights("keras_vgg16", str(tmp_path / "keras3.weights.h5"))
  with pytest.raises(ValueError, match="arch"):
    import_weights("keras_vgg16", str(tmp_path / "bad.h5"), arch="vgg_face")
