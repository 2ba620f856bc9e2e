"""jaxface.load: a training workdir, a converted .npz and a pretrained model as one Trained object."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxface
from jaxface import checkpointing, config_lib, models, pretrained, steps
from jaxface import trained as trained_lib
from jaxface.models import from_config
from jaxface.saliency import inference, online
from jaxface.weights import common as weights_common



@pytest.fixture(scope="module")
def workdir(smoke_run_workdir):
  return smoke_run_workdir  # tests/conftest.py: AlexNet on affectnet.py:smoke,r=0, trained once


def _crops(n, size, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_workdir_predict_equals_the_model_on_the_checkpoint(workdir):
  m = jaxface.load(workdir, checkpoint="latest")
  assert isinstance(m, trained_lib.Trained) and m.step == 2 and m.saliency is None
  assert [t.name for t in m.tasks] == ["expression"]
  assert m.tasks[0].class_names[:2] == ("Neutral", "Happy")
  x = _crops(5, m.input_size[0])
  got = m.predict(x, batch_size=2)  # two full batches and a padded one
  variables, name, kwargs = checkpointing.load_model_variables(workdir, "latest")
  config = config_lib.ConfigDict(trained_lib._read_json(os.path.join(workdir, "config.json")))
  net = from_config.build_model(config, m.tasks)
  logits, _ = net.apply(variables, steps.normalize(jnp.asarray(x), config.model.preprocessing))
  want = np.asarray(jax.nn.softmax(logits, -1))
  # Same program up to batch padding: XLA may pick other kernels per batch shape, so rounding of
  # float32 logits (a few ulps of values of order 1) is the only difference.
  np.testing.assert_allclose(got["expression"], want, atol=1e-5)
  assert got["expression"].shape == (5, m.tasks[0].num_classes)
  # Crops of another size are resized to the input size first.
  assert m.predict(_crops(3, 2 * m.input_size[0]))["expression"].shape == (3, 7)


def test_best_falls_back_to_latest_when_the_run_kept_no_best(workdir):
  assert jaxface.load(workdir).step == jaxface.load(workdir, checkpoint="latest").step


def test_saliency_runs_reweight_with_their_mlnet(workdir, tmp_path):
  m = jaxface.load(workdir)
  mlnet = models.get("mlnet", width=1 / 16, prior_shape=(2, 2), dropout_rate=0.0)
  mv = mlnet.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  path = str(tmp_path / "mlnet.npz")
  weights_common.save(path, mv, {"model": "mlnet", "model_kwargs": {
      "width": 1 / 16, "prior_shape": [2, 2], "dropout_rate": 0.0}, "format": "test",
      "source_sha256": "", "preprocessing": weights_common.CAFFE_IMAGENET_BGR.to_dict()})
  s = dataclasses.replace(m, saliency=trained_lib.Saliency(0.3, path, (32, 32)))
  x = _crops(3, m.input_size[0], seed=1)
  got = s.predict(x)["expression"]
  apply_fn, variables = inference.load_mlnet(path)
  weighted = online.saliency_reweight_step(apply_fn, variables, jnp.asarray(x), 0.3, (32, 32))
  assert not np.array_equal(np.asarray(weighted), x)  # the reweighting does something
  want = m.predict(np.asarray(weighted))["expression"]
  np.testing.assert_allclose(got, want, atol=1e-5)  # as above: rounding of the same program


def test_pretrained_and_npz_sources(tmp_path):
  g = jaxface.load("pretrained:gender")
  assert g.tasks[0].class_names == ("female", "male") and g.input_size == (32, 32)
  chips = _crops(4, 32, seed=2)
  np.testing.assert_allclose(g.predict(chips)["gender"], pretrained.load("gender").probs(chips),
                             atol=1e-6)
  age = jaxface.load("pretrained:age")
  years = age.expected_value("age", age.predict(_crops(2, 64))["age"])
  assert years.shape == (2,) and np.all((0 <= years) & (years <= 80))
  expr = jaxface.load("pretrained:expression")
  assert expr.channels == 1 and expr.predict(_crops(2, 64))["expression"].shape == (2, 7)
  # A converted file: the weights' own record gives model and preprocessing.
  net = models.get("alexnet", width=1 / 16, num_classes=3)
  v = net.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  path = str(tmp_path / "a.npz")
  prep = dataclasses.replace(weights_common.TORCHVISION, input_size=(64, 64))
  weights_common.save(path, v, {"model": "alexnet", "model_kwargs": {"width": 1 / 16,
                                "num_classes": 3}, "format": "test", "source_sha256": "",
                                "preprocessing": prep.to_dict()})
  a = jaxface.load(path)
  assert a.input_size == (64, 64) and a.tasks[0].class_names == ("0", "1", "2")
  assert a.predict(_crops(2, 64))["output"].shape == (2, 3)


def test_bad_sources_name_the_problem(tmp_path):
  with pytest.raises(FileNotFoundError, match="no such workdir or file"):
    jaxface.load(str(tmp_path / "missing"))
  with pytest.raises(KeyError, match="unknown pretrained model"):
    jaxface.load("pretrained:height")
  with pytest.raises(FileNotFoundError, match="config.json not found"):
    jaxface.load(str(tmp_path))
  with pytest.raises(ValueError, match="must be uint8"):
    jaxface.load("pretrained:gender").predict(np.zeros((1, 32, 32, 3), np.float32))
