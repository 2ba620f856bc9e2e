"""Theano-era Keras weight files of ML-Net -> jaxface ``mlnet`` trees.

The files are the ones ML-Net's authors distribute with their Keras 1 / Theano code
(marcellacornia/mlnet; M. Cornia et al., "A Deep Multi-Level Network for Saliency Prediction",
ICPR 2016, arXiv:1609.01064).

* ``import_mlnet``: ``mlnet_salicon_weights.pkl``, an HDF5 file despite its extension (Keras 1.1
  ``load_weights`` opens it with h5py). Both Keras 1 layouts are read: weights-only (root attribute
  ``layer_names``, each layer group with attribute ``weight_names``) and a full ``model.save`` file
  (the same under group ``model_weights``). Layers are taken in ``layer_names`` order (the reference
  names are auto-generated, ``convolution2d_N``): the 15 conv layers map in order to conv1_1 ..
  conv5_3, int_conv, pre_final_conv; the single 2-D array (the ``EltWiseProduct`` layer) is the
  prior.
* ``import_vgg16_theano``: the old Keras 0.x Sequential ``vgg16_weights.h5`` ML-Net starts from
  (groups ``layer_{i}`` with attribute ``nb_params`` and datasets ``param_0`` kernel /
  ``param_1`` bias). It fills conv1_1 .. conv5_3; the other ML-Net layers keep a fresh init.

Both files hold kernels ``(out, in, kh, kw)`` for Theano's true convolution, so they are flipped
spatially before the HWIO transpose (``common.conv_theano_to_hwio``). Width multiplier and prior
shape are inferred from the file.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import h5py
import jax
import jax.numpy as jnp
import numpy as np

from jaxface.models import layers
from jaxface.weights import common
from jaxface.weights.common import Imported, Preprocessing, WeightImportError

ARCH = "mlnet"
BACKBONE = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
            "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3")
CONVS = BACKBONE + ("int_conv", "pre_final_conv")
# Indices of the conv layers in the old Sequential vgg16_weights.h5 (even ones: padding / pooling).
VGG16_THEANO_LAYERS = (1, 3, 6, 8, 11, 13, 15, 18, 20, 22, 25, 27, 29)
_DEFAULT_PRIOR = (6, 8)
_STRIDE = 8


def preprocessing(prior_shape: tuple[int, int] = _DEFAULT_PRIOR) -> Preprocessing:
  """The reference's input: BGR, 0..255 minus the ImageNet B, G, R mean, no scaling.

  Size = stride 8 * upsampling factor 10 * prior shape (480 x 640 for the released (6, 8) prior).
  """
  size = (_STRIDE * 10 * prior_shape[0], _STRIDE * 10 * prior_shape[1])
  return Preprocessing("BGR", 1.0, (103.939, 116.779, 123.68), (1.0, 1.0, 1.0), size)


def _check_arch(arch: str | None) -> str:
  if arch not in (None, ARCH):
    raise ValueError(f"ML-Net weight files hold arch {ARCH!r}, not {arch!r}")
  return ARCH


@contextlib.contextmanager
def _open_hdf5(src, what: str) -> Iterator[h5py.File]:
  path = common.check_file(src)
  if not h5py.is_hdf5(path):
    with open(path, "rb") as f:
      head = f.read(8)
    raise WeightImportError(
        f"{path} is not an HDF5 file (starts with {head!r}); {what} must be HDF5: Keras 1 "
        "load_weights reads it with h5py whatever its extension (mlnet_salicon_weights.pkl is "
        "HDF5 too), and a real pickle is not a supported format.")
  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise WeightImportError(f"h5py cannot open {path}: {e}") from e
  with f:
    yield f


def _names(attr) -> list[str]:
  return [n.decode("utf8") if isinstance(n, bytes) else str(n) for n in np.asarray(attr).ravel()]


def _infer_width(kernel_oihw: np.ndarray, layer: str) -> float:
  if kernel_oihw.ndim != 4:
    raise WeightImportError(f"layer {layer!r}: expected a 4-D conv kernel, file has shape "
                            f"{kernel_oihw.shape}")
  width = kernel_oihw.shape[0] / 64
  if layers.scaled(64, width) != kernel_oihw.shape[0]:
    raise WeightImportError(f"layer {layer!r}: cannot infer a width from {kernel_oihw.shape}")
  return width


def _model_kwargs(width: float, prior_shape: tuple[int, int]) -> dict[str, Any]:
  kwargs: dict[str, Any] = {}
  if width != 1.0:
    kwargs["width"] = width
  if tuple(prior_shape) != _DEFAULT_PRIOR:
    kwargs["prior_shape"] = tuple(int(s) for s in prior_shape)
  return kwargs


def _expected_shapes(model_kwargs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
  from jaxface import models  # pylint: disable=g-import-not-at-top
  model = models.get(ARCH, **model_kwargs)
  template = common.abstract_variables(model, (1, 32, 32, 3))
  return {"/".join(str(k.key) for k in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_flatten_with_path(template)[0]}


def _put_conv(arrays: dict[str, np.ndarray], expected: dict[str, tuple[int, ...]], name: str,
              kernel_oihw: np.ndarray, bias: np.ndarray, layer: str) -> None:
  """Checks the Theano-layout kernel against the model before flipping, so the error speaks the
  file's own layout, then stores HWIO."""
  kh, kw, cin, cout = expected[f"params/{name}/kernel"]
  want = (cout, cin, kh, kw)
  if tuple(kernel_oihw.shape) != want:
    raise WeightImportError(f"layer {layer!r} (model {name}): file kernel has shape "
                            f"{tuple(kernel_oihw.shape)} (Theano out, in, kh, kw) but the model "
                            f"expects {want}")
  if tuple(bias.shape) != (cout,):
    raise WeightImportError(f"layer {layer!r} (model {name}): file bias has shape "
                            f"{tuple(bias.shape)} but the model expects {(cout,)}")
  arrays[f"params/{name}/kernel"] = common.conv_theano_to_hwio(kernel_oihw)
  arrays[f"params/{name}/bias"] = np.asarray(bias)


def _read_keras1_layers(f: h5py.File) -> tuple[str, list[tuple[str, list[np.ndarray]]]]:
  """(layout, [(layer name, weights)]) for the layers that have weights, in file order."""
  layout, root = "weights_only", f
  if "layer_names" not in f.attrs and "model_weights" in f:
    layout, root = "full_model", f["model_weights"]
  if "layer_names" not in root.attrs:
    raise WeightImportError(
        f"{f.filename} is HDF5 but not a Keras 1 weight file: no 'layer_names' attribute at the "
        f"root or in 'model_weights' (top-level keys: {sorted(f.keys())[:6]})")
  out = []
  for name in _names(root.attrs["layer_names"]):
    if name not in root:
      raise WeightImportError(f"layer {name!r} is listed in layer_names but has no group")
    g = root[name]
    weight_names = _names(g.attrs["weight_names"]) if "weight_names" in g.attrs else []
    if weight_names:
      out.append((name, [np.asarray(g[w], dtype=np.float32) for w in weight_names]))
  return layout, out


def import_mlnet(src, arch: str | None = None) -> Imported:
  """ML-Net SALICON weights (Keras 1.1, Theano kernels) -> ``mlnet`` variables."""
  arch = _check_arch(arch)
  with _open_hdf5(src, "ML-Net weights") as f:
    layout, weighted = _read_keras1_layers(f)

  convs, prior = [], None
  for name, ws in weighted:
    ndims = sorted(w.ndim for w in ws)
    if ndims == [1, 4]:
      kernel = next(w for w in ws if w.ndim == 4)
      bias = next(w for w in ws if w.ndim == 1)
      convs.append((name, kernel, bias))
    elif ndims == [2] and prior is None:
      prior = (name, ws[0])
    else:
      raise WeightImportError(f"layer {name!r} has weights of shapes {[w.shape for w in ws]}, "
                              "neither a conv (kernel + bias) nor the (rows, cols) prior of ML-Net")
  if len(convs) != len(CONVS):
    raise WeightImportError(f"ML-Net has {len(CONVS)} conv layers, the file has {len(convs)} "
                            f"({[c[0] for c in convs][:4]} ...)")
  if prior is None:
    raise WeightImportError("no prior (EltWiseProduct layer with one 2-D weight) in the file")

  width = _infer_width(convs[0][1], convs[0][0])
  model_kwargs = _model_kwargs(width, prior[1].shape)
  expected = _expected_shapes(model_kwargs)
  arrays: dict[str, np.ndarray] = {}
  mapping = {}
  for model_name, (layer, kernel, bias) in zip(CONVS, convs):
    _put_conv(arrays, expected, model_name, kernel, bias, layer)
    mapping[layer] = model_name
  arrays["params/prior/W"] = prior[1]
  mapping[prior[0]] = "prior"
  return common.build_imported(
      "mlnet_theano", src, arch, arrays, model_kwargs,
      preprocessing(tuple(prior[1].shape)), layout=layout, layer_map=mapping,
      kernel_transform="theano_flip")


def import_vgg16_theano(src, arch: str | None = None, seed: int = 0) -> Imported:
  """Old Keras ``vgg16_weights.h5`` -> ``mlnet`` variables: VGG convs imported, the encoding
  layers (int_conv, pre_final_conv) glorot-initialised with ``seed``, the prior zero."""
  arch = _check_arch(arch)
  with _open_hdf5(src, "vgg16_weights.h5") as f:
    raw = []
    for idx in VGG16_THEANO_LAYERS:
      layer = f"layer_{idx}"
      if layer not in f:
        raise WeightImportError(
            f"{f.filename} is not an old Keras Sequential VGG-16 file: no group {layer!r} "
            f"(top-level keys: {sorted(f.keys())[:6]})")
      g = f[layer]
      nb = int(g.attrs.get("nb_params", -1))
      if nb != 2 or "param_0" not in g or "param_1" not in g:
        raise WeightImportError(f"layer {layer!r}: expected a conv layer with nb_params=2 "
                                f"(param_0 kernel, param_1 bias), found nb_params={nb}, "
                                f"datasets {sorted(g.keys())}")
      raw.append((layer, np.asarray(g["param_0"], np.float32), np.asarray(g["param_1"],
                                                                           np.float32)))

  width = _infer_width(raw[0][1], raw[0][0])
  model_kwargs = _model_kwargs(width, _DEFAULT_PRIOR)
  from jaxface import models  # pylint: disable=g-import-not-at-top
  model = models.get(arch, **model_kwargs)
  # Parameter shapes do not depend on the input size, so a small input keeps the init cheap.
  fresh = jax.jit(model.init)(jax.random.PRNGKey(seed), jnp.zeros((1, 32, 32, 3), jnp.float32))
  arrays = common.flatten(fresh)
  expected = {k: tuple(v.shape) for k, v in arrays.items()}
  mapping = {}
  for model_name, (layer, kernel, bias) in zip(BACKBONE, raw):
    _put_conv(arrays, expected, model_name, kernel, bias, layer)
    mapping[layer] = model_name
  return common.build_imported(
      "vgg16_theano", src, arch, arrays, model_kwargs, preprocessing(_DEFAULT_PRIOR),
      layer_map=mapping, imported_layers=list(BACKBONE),
      initialised_layers=["int_conv", "pre_final_conv", "prior"], init_seed=seed,
      kernel_transform="theano_flip")
