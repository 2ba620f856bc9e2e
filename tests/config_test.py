"""Config schema rules (jaxface.config_lib) and the paper settings the configs encode."""

import glob
import json
import os
import re

import jax
import jax.numpy as jnp
import pytest
from absl import flags
from ml_collections import config_flags

from jaxface import config_lib
from jaxface import models
from jaxface import optim

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")


def _load(spec: str):
  return config_lib.load(os.path.join(CONFIGS, spec))


def _params(name: str, size: int = 64, **kwargs):
  """Parameter shapes of a registered model (no computation: jax.eval_shape)."""
  model = models.get(name, **kwargs)
  x = jnp.zeros((1, size, size, 3), jnp.float32)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), x))["params"]


def _groups(config, params) -> dict[str, tuple[float, bool]]:
  return {r.path: (r.lr_mult, r.frozen) for r in optim.describe_param_groups(config.optim, params)}


# ----------------------------------------------------------------------------- model.kwargs


def test_any_field_of_the_model_can_be_overridden_from_the_command_line():
  spec = os.path.join(CONFIGS, "gilnet_adience.py")
  argv = ["prog", "--config", spec, "--config.model.kwargs.width=0.5"]
  values = flags.FlagValues()
  flag = config_flags.DEFINE_config_file("config", None, "", flag_values=values,
                                         lock_config=True, sys_argv=argv)
  values(argv)
  config = flag.value
  assert config.model.kwargs.width == 0.5
  assert config.model.kwargs.dropout_rate == 0.5  # the config's own value is kept
  config_lib.validate(config)


def test_opened_kwargs_are_the_constructors_defaults_so_the_model_is_unchanged():
  fields = config_lib.model_fields("resnet18")
  assert "width" in fields
  # Set by the trainer (tasks, model.dtype, heads) or fixed by the registered builder.
  for key in ("num_classes", "dtype", "features_only", "stage_sizes", "bottleneck"):
    assert key not in fields
  for name in ("alexnet", "vgg16", "gilnet", "mlnet", "resnet50", "attention56"):
    fields = config_lib.model_fields(name)
    assert models.get(name, **fields) == models.get(name), name
  assert config_lib.model_fields("no_such_model") is None


def test_an_unknown_model_kwarg_fails_naming_it():
  config = _load("gilnet_adience.py")
  with config.unlocked():
    config.model.kwargs.widht = 0.5
  with pytest.raises(config_lib.ConfigError,
                     match=r"^config\.model\.kwargs: widht: not a field of model 'gilnet' "
                           r"\(its fields: dropout_rate, width\)$"):
    config_lib.validate(config)


# ----------------------------------------------------------------------------- saliency ratio


def test_saliency_ratio_disagreeing_with_the_pipe_is_refused():
  config = _load("adience_gender.py:mlnet=/x/mlnet.npz")
  config_lib.validate(config)
  with config.unlocked():
    config.saliency.r = 0.5  # what --config.saliency.r=0.5 does: the pipes still say 0.3
  with pytest.raises(config_lib.ConfigError,
                     match=r"^config\.saliency\.r: 0\.5, but config\.data\.train_pipe reweights "
                           r"with saliency\(0\.3\)"):
    config_lib.validate(config)
  config_lib.validate(_load("adience_gender.py:r=0.5,mlnet=/x/mlnet.npz"))  # the argument sets both


def test_saliency_ratio_check_reads_only_the_reweighting_op():
  config = _load("demo.py")
  stage = config.stages.classifier
  with stage.unlocked():
    stage.saliency.r = 0.3
    stage.data.eval_pipe = "decode|face_crop(0.3)|resize(96)|cached_saliency|saliency(r=0.3)"
  config_lib.validate(config)
  with stage.unlocked():
    stage.data.eval_pipe = "decode|face_crop(0.3)|resize(96)|cached_saliency|saliency(r=0.7)"
  with pytest.raises(config_lib.ConfigError, match=r"eval_pipe reweights with saliency\(0\.7\)"):
    config_lib.validate(config)


# ----------------------------------------------------------------------------- smoke


@pytest.mark.parametrize("spec", ["adience_gender.py:smoke", "affectnet.py:smoke",
                                  "vegac.py:smoke", "saliency_ratio_ablation.py:smoke,r=0.7",
                                  "gilnet_adience.py:smoke,r=0.3"])
def test_smoke_without_mlnet_reads_the_synthetic_maps(spec):
  config = _load(spec)
  assert config.saliency.mode == "dataset"
  assert "cached_saliency" not in config.data.train_pipe + config.data.eval_pipe
  assert "|saliency(" in config.data.train_pipe and "|saliency(" in config.data.eval_pipe
  config_lib.validate(config)
  with_mlnet = _load(spec + ",mlnet=/x/mlnet.npz")
  assert with_mlnet.saliency.mode == "cache"
  assert "|cached_saliency" in with_mlnet.data.train_pipe


# ----------------------------------------------------------------------------- paper settings


def test_gilnet_uses_caffes_per_blob_learning_rates():
  config = _load("gilnet_adience.py")
  groups = _groups(config, _params("gilnet", size=227, num_classes=2, width=0.125))
  assert groups["fc8/kernel"] == (10.0, False) and groups["fc8/bias"] == (20.0, False)
  for layer in ("conv1", "conv2", "conv3", "fc6", "fc7"):
    assert groups[f"{layer}/kernel"] == (1.0, False) and groups[f"{layer}/bias"] == (2.0, False)


def test_gilnet_saliency_is_an_option_with_safbages_ratio():
  plain = _load("gilnet_adience.py")
  assert plain.saliency.mode == "none" and "saliency" not in plain.data.train_pipe
  config = _load("gilnet_adience.py:r=0.3,mlnet=/x/mlnet.npz")
  config_lib.validate(config)
  assert config.saliency.mode == "cache" and config.saliency.r == 0.3
  assert config.data.train_pipe == (
      "decode|resize(256)|cached_saliency|saliency(0.3)|random_crop(227)|flip_lr")
  assert config.data.eval_pipe == (
      "decode|resize(256)|cached_saliency|saliency(0.3)|oversample10(227)")
  assert config.saliency.crop_pipe == "decode|resize(256)"


def test_saf_bage_trains_fc6_to_fc8_and_the_vgg16_ablation_only_fc8():
  alexnet = _groups(_load("adience_gender.py"), _params("alexnet", num_classes=2, width=0.125))
  assert {p for p, (_, frozen) in alexnet.items() if not frozen} == {
      f"fc{k}/{w}" for k in (6, 7, 8) for w in ("kernel", "bias")}
  vgg = _groups(_load("adience_gender.py:model=vgg16"),
                _params("vgg16", num_classes=2, width=0.125))
  assert {p for p, (_, frozen) in vgg.items() if not frozen} == {"fc8/kernel", "fc8/bias"}
  with pytest.raises(config_lib.ConfigError, match="model='resnet18'"):
    _load("adience_gender.py:model=resnet18")


def test_saf_bage_copies_trains_the_papers_number_of_updates():
  one, four = _load("adience_age.py"), _load("adience_age.py:copies=4")
  assert (one.train_epochs, four.train_epochs) == (30.0, 120.0)
  with pytest.raises(config_lib.ConfigError, match="copies=2"):
    _load("adience_age.py:copies=2")


@pytest.mark.parametrize("reading, last_frozen", [("convs", "conv4_3"), ("keras", "conv3_3")])
def test_vegac_first_ten_layers_both_readings(reading, last_frozen):
  config = _load(f"vegac.py:frozen={reading}")
  groups = _groups(config, _params("vgg16", num_classes=2, width=0.125))
  frozen = sorted({p.split("/")[0] for p, (_, f) in groups.items() if f})
  convs = ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
           "conv4_1", "conv4_2", "conv4_3"]
  assert frozen == convs[:convs.index(last_frozen) + 1]


def test_config_docstrings_cite_papers_not_files_outside_the_repository():
  paths = glob.glob(os.path.join(CONFIGS, "*.py")) + [
      os.path.join(REPO, "jaxface", name) for name in ("config_lib.py", "config_presets.py")]
  for path in paths:
    with open(path) as f:
      text = f.read()
    assert "shared/" not in text and "SPEC" not in text, path
  for name in ("adience_age", "adience_gender", "affectnet", "saliency_ratio_ablation",
               "gilnet_adience", "demo"):
    with open(os.path.join(CONFIGS, f"{name}.py")) as f:
      assert "arXiv:1803.05719" in f.read(), name  # SAF-BAGE


def _commands(pattern: str) -> list[tuple[str, tuple[str, ...]]]:
  """``(file, groups)`` of every command matching ``pattern`` in the configs and the README."""
  found = []
  for path in sorted(glob.glob(os.path.join(CONFIGS, "*.py"))) + [os.path.join(REPO, "README.md")]:
    with open(path) as f:
      text = f.read()
    found += [(os.path.basename(path), m.groups()) for m in re.finditer(pattern, text)]
  return found


def test_the_documented_commands_name_existing_formats_and_builder_configs():
  """A user copies these lines: a convert format or a builder config that does not exist (a
  renamed importer, a config folded into another) must fail here, not on their machine."""
  from data_pipelines import build  # pylint: disable=g-import-not-at-top
  from jaxface import weights  # pylint: disable=g-import-not-at-top
  converts = _commands(r"python -m jaxface\.convert\s+([a-z][a-z_0-9]*)")
  assert len(converts) >= 15, converts
  for path, (fmt,) in converts:
    assert fmt in weights.FORMATS, (path, fmt)
  builds = _commands(r"python -m data_pipelines\.build\s+([a-z][a-z_0-9]*)\s+--config\s+"
                     r"([a-z][a-z_0-9]*)(\s+--detect\s+mtcnn)?")
  assert len(builds) >= 12, builds
  for path, (name, config, detect) in builds:
    known = [c.name for c in build.builder_class(name).BUILDER_CONFIGS]
    assert config in known, (path, name, config)
    if detect:
      assert build.detected_config(build.builder_class(name), config, "mtcnn") in known, (
          path, name, config)


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["gilnet_adience.py:smoke,task=gender,r=0.3",
                                  "adience_gender.py:smoke,model=vgg16",
                                  "vegac.py:smoke,task=expression,frozen=keras"])
def test_the_new_options_train_two_steps_and_evaluate(spec, tmp_path):
  from jaxface import train as train_lib  # pylint: disable=g-import-not-at-top
  config = _load(spec)
  with config.unlocked():
    config.data.data_dir = str(tmp_path / "tfds")
  summary = train_lib.train_and_evaluate(config, str(tmp_path / "run"))
  assert summary["step"] == 2
  with open(tmp_path / "run" / "eval" / "results.json") as f:
    results = json.load(f)
  for task in config.data.labels:
    assert results[task]["n"] == 16 and 0.0 <= results[task]["accuracy"] <= 1.0
