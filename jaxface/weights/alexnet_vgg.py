"""AlexNet / VGG weight importers: torchvision's AlexNet and VGG-16, Keras' VGG16, VGG-Face
(Parkhi, Vedaldi, Zisserman, "Deep Face Recognition", BMVC 2015) and Caffe's bvlc_alexnet.

* torchvision state dicts (``torchvision_arrays``, called by :mod:`jaxface.weights.torchvision`).
* Keras applications VGG16 HDF5, TF ordering (``import_keras_vgg16``), with or without the top.
* rcmalli keras-vggface VGG16 HDF5 (``import_keras_vggface``), with or without the top.
* caffe-tensorflow ``bvlc_alexnet.npy`` (``import_bvlc_alexnet_npy``).

Widths are inferred from the file (so reduced-width files load into reduced-width models), and
the number of classes from its last layer. Files without a top:
* no fc layers at all (Keras ``*_notop.h5``) -> ``features_only=True``: the model ends at
  relu(conv5_3) and has no fc layers, which is the only tree such a file can fill;
* fc6 and fc7 but no fc8 -> ``num_classes=0`` (pre-logits output).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from jaxface.weights import common
from jaxface.weights.common import WeightImportError

# Caffe's ilsvrc_2012_mean.npy averaged per channel (B, G, R): what caffe.io users subtract from
# 0..255 BGR input for bvlc_alexnet when not using the full mean image.
CAFFE_ALEXNET_BGR = common.Preprocessing("BGR", 1.0, (104.00698793, 116.66876762, 122.67891434),
                                         (1.0, 1.0, 1.0), (227, 227))

_ALEXNET_CONVS = ("conv1", "conv2", "conv3", "conv4", "conv5")
_FCS = ("fc6", "fc7", "fc8")


def _vgg_convs() -> tuple[str, ...]:
  from jaxface.models import vgg  # pylint: disable=g-import-not-at-top
  return vgg.CONV_NAMES


def _channel_fn(arch: str) -> Callable[[float], dict[str, int]]:
  from jaxface.models import alexnet, vgg  # pylint: disable=g-import-not-at-top
  return {"alexnet": alexnet.channels_torchvision, "alexnet_caffe": alexnet.channels_caffe,
          "vgg16": vgg.channels, "vgg_face": vgg.channels}[arch]


def infer_width(found: Mapping[str, int], channel_fn: Callable[[float], dict[str, int]]) -> float:
  """The width multiplier under which the model has the layer widths ``found`` (layer -> out).

  Candidates are the ratios found/reference, the widest layer first (finest resolution); the first
  that reproduces every layer wins. If none does, the conv1 ratio is returned and the shape check
  then names the first layer that does not fit.
  """
  ref = channel_fn(1.0)
  keys = [k for k in found if k in ref]
  if not keys:
    raise WeightImportError("no layer to infer the network width from")
  candidates = [found[k] / ref[k] for k in sorted(keys, key=lambda k: -ref[k])]
  for w in candidates:
    chans = channel_fn(w)
    if all(chans[k] == found[k] for k in keys):
      return float(w)
  return float(found[keys[0]] / ref[keys[0]])


def _model_kwargs(arch: str, out_channels: Mapping[str, int]) -> dict[str, Any]:
  """width, and num_classes / features_only from which fc layers the file holds."""
  kwargs: dict[str, Any] = {"width": infer_width(
      {k: v for k, v in out_channels.items() if k != "fc8"}, _channel_fn(arch))}
  if not any(k in out_channels for k in _FCS):
    kwargs["features_only"] = True
  else:
    kwargs["num_classes"] = int(out_channels.get("fc8", 0))
  return kwargs


def _check_shapes(arch: str, model_kwargs: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
                  origin: Mapping[str, tuple[str, tuple[int, ...]]],
                  to_source_layout: Callable[[tuple[int, ...]], tuple[int, ...]],
                  source: str) -> None:
  """Compares every array with the model built from ``model_kwargs`` and reports a mismatch in the
  file's own terms: its layer name and its layout (``origin[key] = (name, original shape)``).

  ``build_imported`` checks the same again; this pass only makes the message readable.
  """
  from jaxface import models  # pylint: disable=g-import-not-at-top
  abstract = common.abstract_variables(models.get(arch, **model_kwargs),
                                      (1, *models.spec(arch).input_shape))
  template = {"/".join(str(getattr(k, "key", k)) for k in path): tuple(leaf.shape)
              for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]}
  for key, arr in arrays.items():
    if key in template and tuple(arr.shape) != template[key]:
      name, shape = origin[key]
      raise WeightImportError(
          f"layer {name!r} ({key}) in {source}: file has shape {shape} but the model "
          f"({arch}, {dict(model_kwargs)}) expects {to_source_layout(template[key])}")


def _identity_layout(shape: tuple[int, ...]) -> tuple[int, ...]:
  return tuple(shape)


def _torch_layout(shape: tuple[int, ...]) -> tuple[int, ...]:
  """Flax shape -> PyTorch shape: HWIO -> OIHW, (in, out) -> (out, in)."""
  if len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  if len(shape) == 2:
    return (shape[1], shape[0])
  return tuple(shape)


def _expect_ndim(name: str, arr: np.ndarray, ndim: int, what: str, source: str) -> np.ndarray:
  arr = np.asarray(arr)
  if arr.ndim != ndim:
    raise WeightImportError(f"layer {name!r} in {source}: expected a {ndim}-D {what}, file has "
                            f"shape {tuple(arr.shape)}")
  return arr


def _fc6_rows_check(name: str, kernel_in_out: np.ndarray, c: int, hw: int, source: str,
                    shape_in_file: tuple[int, ...]) -> None:
  if kernel_in_out.shape[0] != c * hw * hw:
    raise WeightImportError(
        f"layer {name!r} (fc6) in {source}: file has shape {shape_in_file}, whose input size "
        f"{kernel_in_out.shape[0]} is not {hw}x{hw}x{c} = {c * hw * hw} (the last conv has {c} "
        "channels)")


# ---------------------------------------------------------------------------------------------
# torchvision.

def _torchvision_layer_map(arch: str) -> dict[str, str]:
  if arch == "alexnet":
    convs = dict(zip(_ALEXNET_CONVS, (0, 3, 6, 8, 10)))
    fcs = dict(zip(_FCS, (1, 4, 6)))
  elif arch == "vgg16":
    convs = dict(zip(_vgg_convs(), (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)))
    fcs = dict(zip(_FCS, (0, 3, 6)))
  else:
    raise ValueError(f"torchvision_arrays handles alexnet and vgg16, not {arch!r}")
  return {**{k: f"features.{i}" for k, i in convs.items()},
          **{k: f"classifier.{i}" for k, i in fcs.items()}}


def torchvision_arrays(sd: Mapping[str, np.ndarray], arch: str,
                       source: str = "") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """torchvision AlexNet / VGG-16 state dict -> (flat arrays, model kwargs).

  Conv kernels OIHW -> HWIO, Linear (out, in) -> (in, out), fc6 rows from the C,H,W flatten of
  the 6x6 (AlexNet) / 7x7 (VGG) adaptive pool to H,W,C. ``model_kwargs`` holds ``width`` (from
  the channel counts, so reduced-width files import into reduced-width models) and
  ``num_classes`` (from classifier.6), or ``features_only`` when the file has no classifier.
  """
  layer_map = _torchvision_layer_map(arch)
  convs = [k for k in layer_map if k.startswith("conv")]
  pool_hw = 6 if arch == "alexnet" else 7
  known = {f"{p}.{s}" for p in layer_map.values() for s in ("weight", "bias")}
  extra = sorted(set(sd) - known)
  if extra:
    raise WeightImportError(f"{source}: key {extra[0]!r} is not part of torchvision {arch} "
                            f"({len(extra)} unexpected keys; expected e.g. {sorted(known)[:3]})")

  arrays: dict[str, np.ndarray] = {}
  origin: dict[str, tuple[str, tuple[int, ...]]] = {}
  out_channels: dict[str, int] = {}
  for name, prefix in layer_map.items():
    if f"{prefix}.weight" not in sd:
      if name in convs:
        raise WeightImportError(f"{source}: {prefix}.weight ({name}) is missing")
      continue
    if f"{prefix}.bias" not in sd:
      raise WeightImportError(f"{source}: {prefix}.bias ({name}) is missing")
    w = np.asarray(sd[f"{prefix}.weight"])
    if name in convs:
      kernel = common.conv_oihw_to_hwio(
          _expect_ndim(f"{prefix}.weight", w, 4, "conv kernel (O, I, kh, kw)", source))
    else:
      kernel = common.linear_to_dense(
          _expect_ndim(f"{prefix}.weight", w, 2, "Linear weight (out, in)", source))
      if name == "fc6":
        c = out_channels[convs[-1]]
        _fc6_rows_check(f"{prefix}.weight", kernel, c, pool_hw, source, tuple(w.shape))
        kernel = common.dense_rows_chw_to_hwc(kernel, c, pool_hw, pool_hw)
    out_channels[name] = int(w.shape[0])
    for leaf, value, key in (("kernel", kernel, "weight"), ("bias", sd[f"{prefix}.bias"], "bias")):
      arrays[f"params/{name}/{leaf}"] = np.asarray(value)
      origin[f"params/{name}/{leaf}"] = (f"{prefix}.{key}", tuple(np.shape(sd[f"{prefix}.{key}"])))
  model_kwargs = _model_kwargs(arch, out_channels)
  _check_shapes(arch, model_kwargs, arrays, origin, _torch_layout, source)
  return arrays, model_kwargs


# ---------------------------------------------------------------------------------------------
# Keras HDF5 (Keras 2 ``save_weights`` and ``save`` layouts).

def _as_str(x) -> str:
  return x.decode("utf8") if isinstance(x, bytes) else str(x)


def _read_attr_list(group, name: str) -> list[str]:
  """A list attribute, also when Keras split it into ``name0``, ``name1``... (64 KB header cap)."""
  if name in group.attrs:
    return [_as_str(v) for v in np.atleast_1d(group.attrs[name])]
  out, i = [], 0
  while f"{name}{i}" in group.attrs:
    out += [_as_str(v) for v in np.atleast_1d(group.attrs[f"{name}{i}"])]
    i += 1
  return out


def read_keras_h5(src) -> list[tuple[str, list[np.ndarray]]]:
  """Layers that hold weights, in file order: ``[(layer_name, [arrays in weight_names order])]``.

  Reads both the weights-only file (``layer_names`` at the root) and a full model file (the same
  under the ``model_weights`` group).
  """
  import h5py  # pylint: disable=g-import-not-at-top
  path = common.check_file(src)
  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise WeightImportError(f"{path} is not an HDF5 file: {e}") from e
  with f:
    root = f["model_weights"] if "model_weights" in f else f
    layer_names = _read_attr_list(root, "layer_names")
    if not layer_names:
      raise WeightImportError(
          f"{path} has no 'layer_names' attribute: not a Keras 2 HDF5 weight or model file "
          "(Keras 3 '.weights.h5' files are not supported; save with the legacy h5 format)")
    out = []
    for lname in layer_names:
      if lname not in root:
        raise WeightImportError(f"{path}: layer {lname!r} is listed in layer_names but absent")
      group = root[lname]
      weight_names = _read_attr_list(group, "weight_names")
      if weight_names:
        out.append((lname, [np.asarray(group[w]) for w in weight_names]))
  return out


def _vgg_arrays_from_keras(layers_: Sequence[tuple[str, list[np.ndarray]]], arch: str,
                           source: str):
  """Keras VGG-16 layers (13 convs, then 0, 2 or 3 dense layers) -> arrays, kwargs, origin."""
  conv_names = _vgg_convs()
  ndims = [np.ndim(weights[0]) for _, weights in layers_]
  convs = [l for l, n in zip(layers_, ndims) if n == 4]
  dense = [l for l, n in zip(layers_, ndims) if n == 2]
  if (ndims != [4] * len(convs) + [2] * len(dense) or len(convs) != len(conv_names)
      or len(dense) not in (0, 2, 3)):
    raise WeightImportError(
        f"{source}: not a VGG-16 layout: expected 13 conv layers followed by 0, 2 or 3 dense "
        f"layers, file has {len(convs)} conv and {len(dense)} dense layers "
        f"({[name for name, _ in layers_]})")
  arrays, origin, out_channels, source_layers = {}, {}, {}, {}
  for name, (lname, weights) in zip(conv_names + _FCS, convs + dense):
    if len(weights) != 2:
      raise WeightImportError(f"layer {lname!r} in {source}: expected [kernel, bias], file has "
                              f"{len(weights)} arrays {[tuple(w.shape) for w in weights]}")
    kernel, bias = weights
    _expect_ndim(lname, bias, 1, "bias", source)
    out_channels[name] = int(kernel.shape[-1])
    source_layers[name] = lname
    for leaf, value in (("kernel", kernel), ("bias", bias)):
      arrays[f"params/{name}/{leaf}"] = value  # Keras TF ordering: HWIO, (in, out), H,W,C flatten.
      origin[f"params/{name}/{leaf}"] = (lname, tuple(value.shape))
  model_kwargs = _model_kwargs(arch, out_channels)
  _check_shapes(arch, model_kwargs, arrays, origin, _identity_layout, source)
  return arrays, model_kwargs, source_layers


def _import_keras(fmt: str, src, arch: str, preprocessing: common.Preprocessing) -> common.Imported:
  source = os.fspath(src)
  arrays, model_kwargs, source_layers = _vgg_arrays_from_keras(read_keras_h5(src), arch, source)
  return common.build_imported(fmt, src, arch, arrays, model_kwargs, preprocessing,
                               source_layers=source_layers)


def _check_arch(arch: str | None, allowed: str, fmt: str) -> str:
  arch = arch or allowed
  if arch != allowed:
    raise ValueError(f"format {fmt!r} holds {allowed}, not arch={arch!r}")
  return arch


def import_keras_vgg16(src, arch: str | None = None) -> common.Imported:
  """Keras applications VGG16 (``vgg16_weights_tf_dim_ordering_tf_kernels[_notop].h5`` or a
  saved model) -> ``vgg16``. Input: BGR, 0..255 minus the Caffe ImageNet means.

  The ``_notop`` file has no fc layers and imports as ``features_only=True``. fc1/fc2/predictions
  become fc6/fc7/fc8; the 7x7 adaptive pool of ``vgg16`` is the identity at Keras' 224 px.
  """
  arch = _check_arch(arch, "vgg16", "keras_vgg16")
  return _import_keras("keras_vgg16", src, arch, common.CAFFE_IMAGENET_BGR)


def import_keras_vggface(src, arch: str | None = None) -> common.Imported:
  """rcmalli keras-vggface VGG16 (``rcmalli_vggface_tf_vgg16.h5`` / ``_notop``) -> ``vgg_face``.
  Input: BGR, 0..255 minus the VGG-Face means (keras_vggface.utils version=1)."""
  arch = _check_arch(arch, "vgg_face", "keras_vggface")
  return _import_keras("keras_vggface", src, arch, common.VGGFACE_BGR)


# ---------------------------------------------------------------------------------------------
# caffe-tensorflow bvlc_alexnet.npy.

def _npy_layer(name: str, value, source: str) -> tuple[np.ndarray, np.ndarray]:
  """``[W, b]`` (Guerzhoy / myalexnet) or ``{'weights': W, 'biases': b}`` (caffe-tensorflow)."""
  if isinstance(value, dict):
    if "weights" not in value or "biases" not in value:
      raise WeightImportError(f"layer {name!r} in {source}: expected keys 'weights' and 'biases', "
                              f"file has {sorted(value)}")
    return np.asarray(value["weights"]), np.asarray(value["biases"])
  if not isinstance(value, (list, tuple)) or len(value) != 2:
    what = f"a {type(value).__name__}" + (f" of length {len(value)}"
                                          if isinstance(value, (list, tuple)) else "")
    raise WeightImportError(f"layer {name!r} in {source}: expected [W, b], file has {what}")
  return np.asarray(value[0]), np.asarray(value[1])


def import_bvlc_alexnet_npy(src, arch: str | None = None) -> common.Imported:
  """``bvlc_alexnet.npy`` (a pickled dict conv1..fc8 -> [W, b]) -> ``alexnet_caffe``.

  Kernels are already HWIO, and the grouped layers' (kh, kw, in/2, out) with group-major outputs
  is exactly the ``feature_group_count=2`` layout; fc6 rows are already H,W,C. Nothing is
  transposed. Input: BGR 0..255 minus the ImageNet channel means, 227 px, conv1 VALID (Caffe),
  not the "SAME" conv1 of the Guerzhoy forward script. The file is a pickle: load trusted files
  only.
  """
  arch = _check_arch(arch, "alexnet_caffe", "caffe_alexnet_npy")
  path = common.check_file(src)
  try:
    d = np.load(path, allow_pickle=True, encoding="latin1").item()
  except Exception as e:  # noqa: BLE001 - any numpy/pickle error means the same to the user.
    raise WeightImportError(f"cannot read {path} as a pickled dict .npy: {e}") from e
  if not isinstance(d, dict):
    raise WeightImportError(f"{path} holds a {type(d).__name__}, not a dict of layers")
  names = _ALEXNET_CONVS + _FCS
  extra = sorted(set(d) - set(names))
  if extra:
    raise WeightImportError(f"{path}: layer {extra[0]!r} is not part of bvlc_alexnet "
                            f"(expected {list(names)})")
  arrays, origin, out_channels = {}, {}, {}
  for name in names:
    if name not in d:
      if name in _ALEXNET_CONVS:
        raise WeightImportError(f"{path}: layer {name!r} is missing")
      continue
    w, b = _npy_layer(name, d[name], path)
    is_conv = name.startswith("conv")
    _expect_ndim(name, w, 4 if is_conv else 2,
                 "conv kernel (HWIO)" if is_conv else "dense kernel (in, out)", path)
    _expect_ndim(name, b, 1, "bias", path)
    if name == "fc6":
      c = out_channels["conv5"]
      _fc6_rows_check(name, w, c, 6, path, tuple(w.shape))
    out_channels[name] = int(w.shape[-1])
    for leaf, value in (("kernel", w), ("bias", b)):
      arrays[f"params/{name}/{leaf}"] = value
      origin[f"params/{name}/{leaf}"] = (name, tuple(value.shape))
  model_kwargs = _model_kwargs(arch, out_channels)
  _check_shapes(arch, model_kwargs, arrays, origin, _identity_layout, path)
  return common.build_imported("caffe_alexnet_npy", src, arch, arrays, model_kwargs,
                               CAFFE_ALEXNET_BGR)
