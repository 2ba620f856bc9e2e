"""``init_from`` (jaxface.init_from): the path mapping between a backbone with and without a head,
the Zhang et al. chain's steps, every importer's output loaded into the model of the config that
uses it, the expectation rules, and a run whose file lacks the backbone failing at start.

The foreign files are written at reduced width with random weights in their exact layouts by the
writers of tests/weights/ (torch state dicts, Keras HDF5, binary .caffemodel), converted with
``python -m jaxface.convert``'s main, and loaded as the trainer loads them.
"""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch

from jaxface import checkpointing
from jaxface import config_lib
from jaxface import init_from
from jaxface.models import from_config
from jaxface.models import heads
from jaxface.tasks import Task
from jaxface.tools import convert
from jaxface.weights import common as weights_common
from tests.weights import alexnet_vgg_test as avt
from tests.weights import caffemodel_test as cmt
from tests.weights import resnet_test as rnt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")
CLASSES = {"age": 8, "gender": 2, "smile": 2, "expression": 7, "attributes": 40}
W16 = 1 / 16


def _config(spec: str, **overrides):
  c = config_lib.load(os.path.join(CONFIGS, spec))
  with c.unlocked():
    for key, value in overrides.items():
      node = c
      *path, leaf = key.split(".")
      for part in path:
        node = node[part]
      node[leaf] = value
  return c


def _tasks(c):
  kind = c.task.kind
  return [Task(name, kind, tuple(f"{name}{i}" for i in range(CLASSES[name])))
          for name in c.data.labels]


def _model_shapes(c):
  return init_from.model_shapes(from_config.build_model(c, _tasks(c)), c)


def _random_like(shapes, seed):
  rng = np.random.default_rng(seed)
  return {k: rng.normal(size=v.shape).astype(np.float32)
          for k, v in init_from.flat_paths(shapes).items()}


def _tree(flat):
  return weights_common.unflatten(flat)


def _s(*shape):
  return jax.ShapeDtypeStruct(shape, np.float32)


# ----------------------------------------------------------------------------- the rule


def test_prefixes_are_the_submodules_of_a_model_with_a_head():
  model = from_config.build_model(
      _config("vegac.py:smoke", **{"model.head": "softmax"}), [Task("gender", "class",
                                                                   ("m", "f"))])
  assert isinstance(model, heads.WithHead)
  shapes = init_from.model_shapes(model, _config("vegac.py:smoke"))
  assert tuple(sorted(shapes["params"])) == tuple(sorted(init_from.PREFIXES))


def test_mapping_with_and_without_a_head_both_directions():
  bare = {"params/conv1/kernel": np.ones((3, 3, 3, 4), np.float32),
          "params/conv1/bias": np.ones(4, np.float32),
          "params/fc8/kernel": np.ones((4, 10), np.float32),
          "params/fc8/bias": np.ones(10, np.float32),
          "batch_stats/bn1/mean": np.full(4, 2.0, np.float32)}
  with_head = {"params/backbone/conv1/kernel": _s(3, 3, 3, 4), "params/backbone/conv1/bias": _s(4),
               "batch_stats/backbone/bn1/mean": _s(4),
               "params/head/fc/kernel": _s(4, 3), "params/head/fc/bias": _s(3)}
  # bare -> with a head: "backbone/" added; the head is new; fc8 unused (another name).
  p = init_from.plan(with_head, bare)
  assert p.mapping == {"params/backbone/conv1/kernel": "params/conv1/kernel",
                       "params/backbone/conv1/bias": "params/conv1/bias",
                       "batch_stats/backbone/bn1/mean": "batch_stats/bn1/mean"}
  assert p.report.unused == ["params/fc8/bias", "params/fc8/kernel"]
  assert sorted(p.report.new) == ["params/head/fc/bias (not in the file)",
                                  "params/head/fc/kernel (not in the file)"]
  assert "3 under another prefix" in p.report.format()
  # with a head -> bare: "backbone/" removed; fc8 is new (the head's fc is not renamed to it).
  source = {k: np.zeros(v.shape, np.float32) + 5 for k, v in with_head.items()}
  target = {k: _s(*v.shape) for k, v in bare.items()}
  p = init_from.plan(target, source)
  assert p.mapping == {"params/conv1/kernel": "params/backbone/conv1/kernel",
                       "params/conv1/bias": "params/backbone/conv1/bias",
                       "batch_stats/bn1/mean": "batch_stats/backbone/bn1/mean"}
  assert p.report.unused == ["params/head/fc/bias", "params/head/fc/kernel"]
  merged = p.apply(_tree({k: np.zeros(v.shape, np.float32) for k, v in bare.items()}), source)
  assert float(merged["params"]["conv1"]["kernel"].sum()) == 5.0 * 3 * 3 * 3 * 4
  assert float(merged["params"]["fc8"]["kernel"].sum()) == 0.0


def test_exact_path_first_and_shape_mismatch_reported():
  source = {"params/head/fc/kernel": np.ones((4, 2), np.float32),
            "params/fc/kernel": np.ones((4, 7), np.float32)}
  p = init_from.plan({"params/head/fc/kernel": _s(4, 2)}, source)
  assert p.mapping == {"params/head/fc/kernel": "params/head/fc/kernel"}
  p = init_from.plan({"params/fc/kernel": _s(4, 3)},
                     {"params/fc/kernel": source["params/fc/kernel"]})
  assert p.mapping == {} and p.report.new == ["params/fc/kernel (shape (4, 7) != (4, 3))"]
  assert p.report.unused == []  # found by name, refused by shape


def test_ambiguous_mapping_is_an_error():
  source = {"params/backbone/x/kernel": np.ones(2, np.float32),
            "params/head/x/kernel": np.ones(2, np.float32)}
  with pytest.raises(config_lib.ConfigError,
                     match=r"params/x/kernel could come from params/backbone/x/kernel or "
                     r"params/head/x/kernel; the mapping rule does not choose"):
    init_from.plan({"params/x/kernel": _s(2)}, source)
  # One source array claimed by two arrays of the model.
  with pytest.raises(config_lib.ConfigError,
                     match=r"params/x/kernel would initialise both params/x/kernel and "
                     r"params/backbone/x/kernel"):
    init_from.plan({"params/x/kernel": _s(2), "params/backbone/x/kernel": _s(2)},
                   {"params/x/kernel": np.ones(2, np.float32)})


def test_expectation_rules():
  target = {"params/conv1/kernel": _s(2), "params/fc7/kernel": _s(2), "params/fc8/kernel": _s(3)}
  backbone = {"params/conv1/kernel", "params/fc7/kernel"}
  source = {"params/conv1/kernel": np.ones(2, np.float32), "params/fc8/kernel": np.ones(5)}
  p = init_from.plan(target, source, "f.npz")
  paths = list(target)
  for ok in (("none",), ("any",), (r"^conv",), ("^conv1/", "^conv1/kernel$")):
    p.check(ok, paths, backbone)
  with pytest.raises(config_lib.ConfigError) as e:
    p.check(("backbone",), paths, backbone)
  assert str(e.value).startswith("config.init_from: f.npz loads 1 of the backbone's 2 arrays")
  assert "not in the file: params/fc7/kernel" in str(e.value) and "\n" not in str(e.value)
  with pytest.raises(config_lib.ConfigError, match=r"loads 1 of the 3 arrays .*'all'.*shape in "
                     r"the file != model: params/fc8/kernel \(5,\) != \(3,\)"):
    p.check(("all",), paths, backbone)
  with pytest.raises(config_lib.ConfigError, match=r"init_from_expect: '\^fc9/' matches no array"):
    p.check(("^fc9/",), paths, backbone)
  p.check(("^fc9/",), paths, backbone, partial=True)  # the backbone alone: the head may match
  empty = init_from.plan(target, {"params/other": np.ones(1)}, "f.npz")
  with pytest.raises(config_lib.ConfigError, match=r"loads none of the model's 3 arrays"):
    empty.check(("any",), paths, backbone)


@pytest.mark.parametrize("value,message", [
    ((), "empty"),
    (("none", "backbone"), "'none' stands alone"),
    (("conv(",), "not a keyword .* or a regular expression"),
    ((3,), "is not a rule"),
])
def test_bad_expectation_is_refused_by_validate(value, message):
  # (A plain string is refused by the locked ConfigDict itself: the field is a tuple; on the
  # command line --config.init_from_expect=all arrives as ('all',).)
  c = _config("affectnet.py:smoke,r=0", init_from_expect=value)
  with pytest.raises(config_lib.ConfigError, match=r"config\.init_from_expect: .*" + message):
    config_lib.validate(c)


# ----------------------------------------------------------------------------- the chain


def _save_run(workdir, variables, c):
  ckpt = checkpointing.Checkpointer(str(workdir), async_save=False)
  ckpt.save(7, {k: v for k, v in variables.items()}, {},
            {"model": {"name": c.model.name, "kwargs": {}, "head": c.model.head or None}})
  ckpt.close()


@pytest.mark.parametrize("config", ["zhang_gnet.py", "zhang_snet.py:crop=5"])
def test_zhang_chain_carries_the_backbone_from_step_to_step(tmp_path, config):
  sep = "," if ":" in config else ":"
  width = {"model.kwargs.width": W16}
  steps = {s: _config(f"{config}{sep}step={s}", **width) for s in (2, 3, 4)}
  # Step 2 with the attribute head (params under backbone/ and head/), as trained.
  assert steps[2].model.head == "attributes"
  step2 = _tree(_random_like(_model_shapes(steps[2]), 0))
  assert sorted(step2["params"]) == ["backbone", "head"]
  _save_run(tmp_path / "step2", step2, steps[2])
  c3 = steps[3]
  with c3.unlocked():
    c3.init_from = str(tmp_path / "step2")
  source = init_from.check_backbone(c3)
  shapes3 = _model_shapes(c3)
  p = init_from.plan_model(c3, shapes3, source)
  backbone = set(init_from.backbone_shapes(c3))
  assert len(backbone) == 30 and backbone <= set(p.mapping)  # 13 convs, fc6, fc7
  assert set(p.mapping) == backbone  # fc8 (2 classes) is new: step 2's head had 40 attributes
  flat2 = init_from.flat_paths(step2)
  merged = init_from.flat_paths(p.apply(_tree(_random_like(shapes3, 1)), source))
  np.testing.assert_array_equal(merged["params/conv5_3/kernel"],
                                flat2["params/backbone/conv5_3/kernel"])
  # Step 3 -> 4: the same network, head included ("all").
  step3 = _tree(merged)
  _save_run(tmp_path / "step3", step3, c3)
  c4 = steps[4]
  assert c4.init_from_expect == ("all",)
  with c4.unlocked():
    c4.init_from = str(tmp_path / "step3")
  p = init_from.plan_model(c4, _model_shapes(c4), init_from.check_backbone(c4))
  assert set(p.mapping) == set(merged)


# ----------------------------------------------------------------------------- every importer


def _torchvision(tmp_path, net):
  _, st = avt._save_state_dict(net, tmp_path, "net")  # pylint: disable=protected-access
  return "torchvision", st


def _alexnet_tv(tmp_path):
  return _torchvision(tmp_path, avt.TorchAlexNet().eval())


def _vgg16_tv(tmp_path):
  return _torchvision(tmp_path, avt.TorchVGG16().eval())


def _keras(style, fmt):
  def write(tmp_path):
    convs, fcs = avt._keras_vgg_weights(seed=3, num_classes=12)  # pylint: disable=protected-access
    path = tmp_path / f"{style}.h5"
    layers = avt._keras_layers(convs, fcs, style)  # pylint: disable=protected-access
    avt._write_keras_h5(path, layers)  # pylint: disable=protected-access
    return fmt, path
  return write


def _gilnet(tmp_path):
  net = cmt.TorchGilNet(12, 32, 48, 64, 8).eval()  # width 0.125, 8 age groups
  cmt._randomise(net, 0)  # pylint: disable=protected-access
  path = tmp_path / "age_net.caffemodel"
  layers = cmt._caffe_layers(net, cmt._GIL_ORDER)  # pylint: disable=protected-access
  path.write_bytes(cmt.encode_caffemodel(layers, 2))
  return "caffemodel", path


def _resnet(arch, base):
  def write(tmp_path):
    net = rnt._torch_resnet(arch, base)  # pylint: disable=protected-access
    path = tmp_path / f"{arch}.pth"
    torch.save(net.state_dict(), path)
    return "torchvision", path
  return write


IMPORTS = [  # (writer, config, width, expected to load beyond the backbone)
    (_alexnet_tv, "adience_age.py", W16, ()),
    (_alexnet_tv, "adience_gender.py", W16, ()),
    (_alexnet_tv, "saliency_ratio_ablation.py", W16, ()),
    (_alexnet_tv, "affectnet.py", W16, ()),
    (_vgg16_tv, "adience_gender.py:model=vgg16", W16, ()),
    (_vgg16_tv, "vegac.py", W16, ()),
    (_keras("applications", "keras_vgg16"), "vegac.py:task=age", W16, ()),
    (_keras("vggface", "keras_vggface"), "csm.py", W16, ()),
    (_keras("vggface", "keras_vggface"), "zhang_gnet.py:step=2", W16, ()),
    (_keras("vggface", "keras_vggface"), "zhang_snet.py:crop=1,step=2", W16, ()),
    (_gilnet, "gilnet_adience.py:task=age", 0.125, ("params/fc8/kernel", "params/fc8/bias")),
    (_gilnet, "gilnet_adience.py:task=gender", 0.125, ()),
    # ResNet-18 only: ResNet-50's keys map by the same rule, and tracing it costs 10 s.
    (_resnet("resnet18", 8), "utkface.py:model=resnet18", 0.125, ()),
]


@pytest.mark.parametrize("writer,config,width,extra", IMPORTS, ids=[c for _, c, _, _ in IMPORTS])
def test_every_importer_output_loads_the_backbone_of_its_config(tmp_path, writer, config, width,
                                                                extra):
  fmt, src = writer(tmp_path)
  dst = tmp_path / "converted.npz"
  assert convert.main([fmt, str(src), str(dst)]) == 0
  c = _config(config, **{"model.kwargs.width": width, "init_from": str(dst)})
  source = init_from.check_backbone(c)  # what the trainer runs before building the dataset
  p = init_from.plan_model(c, _model_shapes(c), source)
  backbone = set(init_from.backbone_shapes(c))
  assert backbone and backbone <= set(p.mapping), sorted(backbone - set(p.mapping))[:4]
  assert set(p.mapping) - backbone == set(extra)


# ----------------------------------------------------------------------------- at start


def _alexnet_npz(path, c, keep):
  """An imported-looking AlexNet file at the smoke config's width holding only ``keep``."""
  flat = {k: v for k, v in _random_like(_model_shapes(c), 0).items() if keep(k)}
  weights_common.save(path, _tree(flat), {"model": c.model.name, "source_format": "test"})


def test_file_lacking_the_backbone_fails_at_start_in_one_line(tmp_path):
  c = _config("affectnet.py:smoke,r=0")
  bad = tmp_path / "fc_only.npz"
  _alexnet_npz(bad, c, keep=lambda k: "/fc" in k)
  data_dir = tmp_path / "tfds"
  proc = subprocess.run(
      [sys.executable, "-m", "jaxface.train", "--config",
       os.path.join(CONFIGS, "affectnet.py:smoke,r=0"), "--workdir", str(tmp_path / "run"),
       f"--config.init_from={bad}", f"--config.data.data_dir={data_dir}"],
      capture_output=True, text=True, timeout=300, cwd=REPO,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 2, proc.stderr
  assert len(lines) == 1, proc.stderr
  assert "config.init_from: " in lines[0] and "loads 4 of the backbone's 14 arrays" in lines[0]
  for layer in ("conv1", "conv2", "conv3", "conv4", "conv5"):
    assert f"params/{layer}/{{bias,kernel}}" in lines[0]
  # It failed before the dataset was built.
  assert not data_dir.exists() or not any(data_dir.iterdir())
