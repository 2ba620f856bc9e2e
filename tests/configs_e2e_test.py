"""Every config of ``configs/`` end to end on its dataset's native layout (issue 13).

Each case loads the real config (not its ``smoke`` variant, which trains on synthetic faces),
shrinks it as ``config_lib.apply_smoke`` does (two steps, batch 4, 64 px, width 1/16) but keeps
its dataset, splits, labels and pipes (with their detectors), points it at a manual directory in
the dataset's native layout (tests/fixtures/native.py and the builder tests' writers) and runs
``train.train_and_evaluate``: the trainer's automatic build (with the build-time MTCNN pass where
the config reads a ``*_mtcnn`` config), the saliency precompute with an ML-Net converted by
``jaxface.convert`` from a random file in the reference's Keras 1 / Theano layout, two training
steps from ``init_from`` (a random file in the pretrained format's own layout, converted the same
way) and the test evaluation. It checks ``results.json`` (the config's tasks with the dataset's
class names, every test example evaluated) and, where the config starts from a pretrained file,
the run's init report: every backbone array loaded, only the new head initialised.

``configs/demo.py`` has no case here: its data are the embedded synthetic faces, which are its
native layout; tests/train_test.py::test_demo_smoke_runs_the_whole_chain trains its chain (ML-Net,
then the saliency cache and the classifier) and the CI's first command runs the whole demo with
its accuracy floors.

The datasets, converted files and the Zhang chain's step-3 workdirs are module fixtures: one tfds
directory holds every build, so the six Adience runs build each Adience config once (the
build-time MTCNN pass once per task) and share their saliency caches where the crops agree.
"""

from __future__ import annotations

# The writers are the builder and importer tests' own (module-private) functions.
# pylint: disable=protected-access

import dataclasses
import json
import os
import re
from typing import Any, Callable

import pytest

from data_pipelines.datasets import celeba
from jaxface import config_lib
from jaxface import train as train_lib
from jaxface.tools import convert
from tests.data_pipelines.datasets import celeba_test
from tests.data_pipelines.datasets import fer2013_test
from tests.data_pipelines.datasets import fotw_test
from tests.data_pipelines.datasets import lfw_gender_test
from tests.data_pipelines.datasets import salicon_test
from tests.data_pipelines.datasets import utkface_test
from tests.fixtures import foreign_weights
from tests.fixtures import native

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
SIZE = 64  # model input (AlexNet's smallest that keeps a 1x1 pool5)
# VGG-Face has no adaptive pool: its fc6 fits the 7 x 7 map of a 224 px input only, so the VGG-Face
# configs (csm, Zhang et al.) keep 224 px (at width 1/16 a step costs about what AlexNet's does).
VGG_FACE_SIZE = 224
WIDTH = foreign_weights.WIDTH  # so the converted files fit the models

ADIENCE_AGE = ["0-2", "4-6", "8-12", "15-20", "25-32", "38-43", "48-53", "60-100"]
M_F = ["m", "f"]
NO_YES = ["no", "yes"]
EXPRESSIONS = ["Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger"]
FER_EMOTIONS = ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]
UTK_AGE = ["0-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70-79", "80-89", "90-99",
           "100+"]


# --------------------------------------------------------------------------- converted files

def _convert(fmt: str, src: str, dst: str, arch: str | None = None) -> str:
  """``python -m jaxface.convert FORMAT SRC DST`` (its main, in this process: a subprocess would
  import jax and torch again, seconds per file)."""
  assert convert.main([fmt, src, dst] + (["--arch", arch] if arch else [])) == 0
  return dst


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  return tmp_path_factory.mktemp("foreign_weights")


@pytest.fixture(scope="module")
def mlnet_npz(files):
  return _convert("mlnet_theano", foreign_weights.mlnet_theano(str(files / "mlnet_salicon.pkl")),
                  str(files / "mlnet.npz"))


@pytest.fixture(scope="module")
def alexnet_npz(files):
  return _convert("torchvision",
                  foreign_weights.torchvision_alexnet(str(files / "alexnet-owt.pth")),
                  str(files / "alexnet.npz"), arch="alexnet")


@pytest.fixture(scope="module")
def gilnet_npz(files):
  return _convert("caffemodel",
                  foreign_weights.gilnet_caffemodel(str(files / "gender_net.caffemodel")),
                  str(files / "gender_net.npz"), arch="gilnet")


@pytest.fixture(scope="module")
def vgg16_npz(files):
  return _convert("torchvision", foreign_weights.torchvision_vgg16(str(files / "vgg16.pth")),
                  str(files / "vgg16.npz"), arch="vgg16")


@pytest.fixture(scope="module")
def vggface_npz(files):
  return _convert("keras_vggface",
                  foreign_weights.keras_vggface(str(files / "vgg_face_weights.h5")),
                  str(files / "vggface.npz"))


@pytest.fixture(scope="module")
def vgg16_theano_npz(files):
  return _convert("vgg16_theano", foreign_weights.vgg16_theano(str(files / "vgg16_weights.h5")),
                  str(files / "vgg16_theano.npz"))


# --------------------------------------------------------------------------- native layouts

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """One tfds directory for every build: configs reading the same dataset share its build and
  its saliency cache."""
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def manual(tmp_path_factory):
  return tmp_path_factory.mktemp("manual")


@pytest.fixture(scope="module")
def adience_dir(manual):
  root = str(manual / "adience")
  native.write_adience(root)
  return root


@pytest.fixture(scope="module")
def lfw_dir(manual):
  root = str(manual / "lfw")
  lfw_gender_test._write_tree(root, "lfw", "male_names.txt", "female_names.txt")
  return root


@pytest.fixture(scope="module")
def affectnet_dir(manual):
  root = str(manual / "affectnet")
  native.write_affectnet(root)
  return root


@pytest.fixture(scope="module")
def celeba_dir(manual):
  """CelebA's native tree (Img/img_align_celeba, Anno/, Eval/) of the builder test, its images
  replaced by LFW faces: the configs detect the face with MTCNN at train time."""
  root = str(manual / "celeba")
  files = celeba_test._write_tree(root, flat=False, images="img_align_celeba")
  native.faces_over(os.path.join(root, "Img", "img_align_celeba"), sorted(files))
  return root


@pytest.fixture(scope="module")
def fotw_dir(manual):
  root = str(manual / "fotw")
  fotw_test.write_face_tree(root)
  return root


@pytest.fixture(scope="module")
def fer_csv_dir(manual):
  root = manual / "fer2013"
  os.makedirs(root)
  fer2013_test._write(root / "fer2013.csv", "emotion,pixels,Usage", ("emotion", "pixels", "Usage"))
  return str(root)


@pytest.fixture(scope="module")
def fer_folders_dir(manual):
  root = manual / "fer2013_folders"
  os.makedirs(root)
  native.write_fer_folders(root)
  return str(root)


@pytest.fixture(scope="module")
def expression_folders_dir(manual):
  """One folder per class in the canonical expression set (no contempt: not one of the 7)."""
  root = manual / "expression_folders"
  os.makedirs(root)
  native.write_class_folders(root, native.IMAGE_FOLDER_CLASSES[:3])
  return str(root)


@pytest.fixture(scope="module")
def salicon_dir(manual):
  root = str(manual / "salicon")
  salicon_test.make_tree(root)
  return root


@pytest.fixture(scope="module")
def utkface_dir(manual):
  """An extracted ``crop_part1/`` folder itself, as the config's docstring says to pass it."""
  return utkface_test._crop_part1(str(manual / "utkface"))


# --------------------------------------------------------------------------- the runs

def real_config(spec: str, data_dir: str, manual_dir: str, size: int = SIZE,
                width: float = WIDTH, **overrides):
  """The config ``spec`` (``name.py:args``) at smoke size on its own dataset."""
  c = config_lib.load(os.path.join(CONFIGS, spec))
  with c.unlocked():
    keep = {k: c.data[k] for k in ("name", "config", "train_split", "eval_split", "test_split",
                                   "labels")}
    samples = c.eval.num_sample_images
    config_lib.apply_smoke(c, size=size)
    for k, v in keep.items():
      c.data[k] = v
    if not samples:  # a config that draws no sample grid (gilnet_adience with saliency)
      c.eval.num_sample_images = 0
    c.data.manual_dir, c.data.data_dir, c.data.build = manual_dir, data_dir, True
    for key in ("train_pipe", "eval_pipe"):  # sizes apply_smoke leaves (face_crop(size=224))
      c.data[key] = c.data[key].replace("size=224", f"size={size}")
    c.saliency.crop_pipe = c.saliency.crop_pipe.replace("size=224", f"size={size}")
    if "width" in c.model.kwargs:
      c.model.kwargs.width = width
    for key, value in overrides.items():
      node = c
      *parents, leaf = key.split(".")
      for p in parents:
        node = node[p]
      node[leaf] = value
  return c


def init_report(out: str) -> tuple[int, list[str]]:
  """(arrays loaded, paths newly initialised) of the run's printed init report."""
  m = re.search(r"^init_from: (\d+) arrays loaded, (\d+) newly initialised", out, re.M)
  assert m, f"no init report in the run's output:\n{out[-2000:]}"
  new = re.findall(r"^  new: (\S+)", out[m.end():], re.M)[:int(m.group(2))]
  return int(m.group(1)), new


def check_init(out: str, head: tuple[str, ...]) -> None:
  """Every array outside the config's new ``head`` came from the converted file."""
  loaded, new = init_report(out)
  assert loaded > 0
  backbone_new = [p for p in new if not re.sub(r"^(params|batch_stats)/", "", p).startswith(head)]
  assert not backbone_new, f"backbone arrays not loaded from init_from: {backbone_new}"


def results_of(workdir: str) -> dict[str, Any]:
  with open(os.path.join(workdir, "eval", "results.json")) as f:
    return json.load(f)


def check_results(results: dict[str, Any], tasks: dict[str, list[str] | None]) -> None:
  """``tasks``: task -> class names (None: a saliency map task)."""
  got = sorted(k for k in results if not k.startswith("_") and k != "per_dataset")
  assert got == sorted(tasks), results.keys()
  for task, names in tasks.items():
    r = results[task]
    assert r["n"] > 0
    if names is None:
      assert "cc" in r
    else:
      assert r["class_names"] == names
      assert 0.0 <= r["accuracy"] <= 1.0
  assert results["_run"]["skipped"]["count"] == 0, results["_run"]["skipped"]


@dataclasses.dataclass(frozen=True)
class Case:
  spec: str  # configs/<spec>
  manual: str  # the fixture of its manual directory
  tasks: dict[str, list[str] | None]
  saliency: bool = False  # the config reweights by a cached ML-Net map
  pretrained: str = ""  # the fixture of the converted init_from file
  head: tuple[str, ...] = ("fc8/",)  # parameters the config initialises itself
  size: int = SIZE
  width: float = WIDTH
  overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
  check: Callable[[dict[str, Any], str, str], None] | None = None  # (results, workdir, data_dir)


def _adience_built(task: str, detected: int):
  def check(results, workdir, data_dir):
    del workdir
    with open(os.path.join(data_dir, "adience", f"faces_{task}_mtcnn", "summary.json")) as f:
      built = json.load(f)
    assert built["detection"]["counts"] == {"detected": detected, "no face found": 1}
    assert [s["reason"] for s in built["skipped"]["examples"]] == [
        "fold_1_data.txt line 6: no face found by mtcnn"]
    assert [built["splits"][f"fold{k}"]["num_examples"] for k in range(5)] == [
        native.ADIENCE_PER_FOLD] * 5
    assert results["_run"]["split"] == "fold0"
    assert results[task]["n"] == native.ADIENCE_PER_FOLD  # the test fold, every face detected
  return check


def _saliency_cache_used(results, workdir, data_dir):
  del results, data_dir
  with open(os.path.join(workdir, "saliency_cache.json")) as f:
    record = json.load(f)
  for split, info in record["splits"].items():
    assert info["num_maps"] > 0, split


def _both(*checks):
  def check(*args):
    for c in checks:
      c(*args)
  return check


ADIENCE_FOLD0 = _adience_built("age", 5 * native.ADIENCE_PER_FOLD)
CASES = {
    "adience_age": Case(
        "adience_age.py:fold=0", "adience_dir", {"age": ADIENCE_AGE}, saliency=True,
        pretrained="alexnet_npz", check=_both(ADIENCE_FOLD0, _saliency_cache_used)),
    "adience_gender": Case(
        "adience_gender.py:fold=0", "adience_dir", {"gender": M_F}, saliency=True,
        pretrained="alexnet_npz",
        check=_both(_adience_built("gender", 5 * native.ADIENCE_PER_FOLD), _saliency_cache_used)),
    "saliency_ratio_ablation": Case(
        "saliency_ratio_ablation.py:r=0.7,fold=0", "adience_dir", {"gender": M_F},
        saliency=True, pretrained="alexnet_npz", check=_saliency_cache_used),
    # SAF-BAGE's GilNet ablation (r = 0.3) from Levi & Hassner's released Caffe model: GilNet
    # has no adaptive pool, so the caffemodel's fc6 fits 227 px crops only (as in the paper).
    "gilnet_adience": Case(
        "gilnet_adience.py:task=gender,fold=0,r=0.3", "adience_dir", {"gender": M_F},
        saliency=True, pretrained="gilnet_npz", size=227, width=foreign_weights.GILNET_WIDTH,
        check=_saliency_cache_used,
        # The map of the whole resized face the crops are cut from (as its smoke variant).
        overrides={"saliency.crop_pipe": "decode|resize(255)"}),
    "affectnet": Case(
        "affectnet.py", "affectnet_dir", {"expression": EXPRESSIONS}, saliency=True,
        pretrained="alexnet_npz", check=_saliency_cache_used),
    "csm": Case("csm.py:attribute=gender", "celeba_dir", {"gender": M_F},
                pretrained="vggface_npz", size=VGG_FACE_SIZE),
    "fer2013_csv": Case("fer2013.py:dataset=csv", "fer_csv_dir", {"emotion": FER_EMOTIONS}),
    "fer2013_folders": Case("fer2013.py:dataset=folders", "fer_folders_dir",
                            {"emotion": FER_EMOTIONS}),
    "fer2013_any": Case("fer2013.py:dataset=any", "expression_folders_dir",
                        {"expression": EXPRESSIONS}),
    "mlnet_salicon": Case(
        "mlnet_salicon.py", "salicon_dir", {"saliency": None}, pretrained="vgg16_theano_npz",
        head=(),  # the importer gives every ML-Net array (VGG convs and ML-Net's own init)
        # 480 x 640 scaled by 1/10 (6 x 8 features, the reference prior's own size).
        overrides={"data.train_pipe": "decode|resize((48, 64))",
                   "data.eval_pipe": "decode|resize((48, 64))", "model.input_size": (48, 64)}),
    # The default subset (crop_part1) on an extracted crop_part1/ folder. model=resnet18: the
    # layout is what is tested, and ResNet-50's compile alone takes longer than the other runs.
    "utkface": Case("utkface.py:model=resnet18", "utkface_dir",
                    {"gender": M_F, "age": UTK_AGE}),
    "vegac_age": Case(
        "vegac.py:task=age", "adience_dir", {"age": ADIENCE_AGE}, saliency=True,
        pretrained="vgg16_npz", check=_saliency_cache_used),
    "vegac_expression": Case(
        "vegac.py:task=expression", "affectnet_dir", {"expression": EXPRESSIONS}, saliency=True,
        pretrained="vgg16_npz", check=_saliency_cache_used),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_config_on_its_native_layout(name, request, data_dir, tmp_path, capsys):
  case = CASES[name]
  args = {}
  if case.saliency:
    args["mlnet"] = request.getfixturevalue("mlnet_npz")
  if case.pretrained:
    args["init_from"] = request.getfixturevalue(case.pretrained)
  spec = case.spec + ("," if ":" in case.spec else ":") + ",".join(
      f"{k}={v}" for k, v in args.items()) if args else case.spec
  config = real_config(spec, data_dir, request.getfixturevalue(case.manual), case.size,
                       case.width, **case.overrides)
  if case.saliency:
    assert config.saliency.mode == "cache" and "cached_saliency" in config.data.train_pipe
  workdir = str(tmp_path / "run")
  capsys.readouterr()
  summary = train_lib.train_and_evaluate(config, workdir)
  out = capsys.readouterr().out
  assert summary["step"] == 2
  results = results_of(workdir)
  check_results(results, case.tasks)
  if case.pretrained:
    check_init(out, case.head)
  if case.check:
    case.check(results, workdir, data_dir)


# --------------------------------------------------------------------------- VEGAC gender

def test_vegac_gender_trains_on_the_adience_lfw_mixture(request, data_dir, adience_dir, lfw_dir,
                                                       tmp_path, capsys):
  """Paper 001 trained one gender model on Adience + LFW together: the default of
  ``configs/vegac.py:task=gender`` is that mixture, with each dataset's test result apart."""
  spec = (f"vegac.py:task=gender,mlnet={request.getfixturevalue('mlnet_npz')},"
          f"init_from={request.getfixturevalue('vgg16_npz')}")
  config = real_config(spec, data_dir, "")
  with config.unlocked():
    config.data.manual_dir = ""
    config.data.mixture.datasets.adience.manual_dir = adience_dir
    config.data.mixture.datasets.lfw.manual_dir = lfw_dir
  workdir = str(tmp_path / "run")
  capsys.readouterr()
  assert train_lib.train_and_evaluate(config, workdir)["step"] == 2
  check_init(capsys.readouterr().out, ("fc8/",))
  results = results_of(workdir)
  check_results(results, {"gender": ["male", "female"]})
  per_dataset = results["per_dataset"]
  assert sorted(per_dataset) == ["adience", "lfw"]
  # Adience's test split is fold 4 (4 faces), LFW's the builder fixture's test split (3 faces).
  assert per_dataset["adience"]["gender"]["n"] == native.ADIENCE_PER_FOLD
  assert per_dataset["lfw"]["gender"]["n"] == 3
  assert results["gender"]["n"] == native.ADIENCE_PER_FOLD + 3


# --------------------------------------------------------------------------- Zhang et al.

def _zhang(spec: str, init_from: str, manual_dir: str, data_dir: str, workdir: str,
           capsys) -> tuple[dict[str, Any], tuple[int, list[str]]]:
  config = real_config(f"{spec},init_from={init_from}", data_dir, manual_dir, VGG_FACE_SIZE)
  capsys.readouterr()
  assert train_lib.train_and_evaluate(config, workdir)["step"] == 2
  return results_of(workdir), init_report(capsys.readouterr().out)


def _steps_2_and_3(name: str, crop: int, attribute_task: str, vggface_npz: str, celeba_dir: str,
                   data_dir: str, root, capsys) -> str:
  # Step 2: CelebA's 40 attributes through the attribute head, from the converted VGG-Face file:
  # every VGG-Face layer under backbone/ loads (fc8, the identity classifier, is replaced by the
  # head).
  results, (loaded, new) = _zhang(f"{name}.py:step=2,crop={crop}", vggface_npz, celeba_dir,
                                  data_dir, str(root / "step2"), capsys)
  assert sorted(k for k in results if not k.startswith("_")) == ["attributes"]
  assert list(results["attributes"]["per_attribute"]) == list(celeba.ATTRIBUTES)
  assert loaded > 0
  assert [p for p in new if not p.startswith("params/head/")] == [], new
  # Step 3: the single CelebA attribute from the step-2 workdir: the backbone carries over.
  results, (loaded, new) = _zhang(f"{name}.py:step=3,crop={crop}", str(root / "step2"),
                                  celeba_dir, data_dir, str(root / "step3"), capsys)
  check_results(results, {attribute_task: M_F if attribute_task == "gender" else NO_YES})
  assert [p for p in new if not p.startswith("params/fc8/")] == [], new
  return str(root / "step3")


@pytest.fixture(scope="module")
def zhang_step3(tmp_path_factory, vggface_npz, celeba_dir, data_dir):
  """``step3(name, crop, task, capsys)``: the step-3 workdir of a config and crop, trained (steps
  2 and 3 on CelebA, MTCNN detection at train time) on first use and then shared."""
  done = {}

  def step3(name: str, crop: int, task: str, capsys) -> str:
    if (name, crop) not in done:
      root = tmp_path_factory.mktemp(f"{name}_crop{crop}")
      done[(name, crop)] = _steps_2_and_3(name, crop, task, vggface_npz, celeba_dir, data_dir,
                                          root, capsys)
    return done[(name, crop)]
  return step3


@pytest.mark.parametrize("name,crop,task", [("zhang_gnet", 3, "gender"),
                                            ("zhang_snet", 1, "smile")])
def test_zhang_general_to_specific_chain(name, crop, task, zhang_step3, fotw_dir, data_dir,
                                         tmp_path, capsys):
  """Steps 2 -> 3 -> 4 of Zhang et al.: CelebA attributes, the CelebA attribute, FotW (with the
  build-time MTCNN landmarks the crops need), each step from the previous step's workdir."""
  step3 = zhang_step3(name, crop, task, capsys)
  results, (loaded, new) = _zhang(f"{name}.py:step=4,crop={crop}", step3, fotw_dir, data_dir,
                                  str(tmp_path / "step4"), capsys)
  check_results(results, {task: M_F if task == "gender" else NO_YES})
  assert loaded > 0 and new == []  # same model, same classes: every array carries over


def test_zhang_snet_crop5_on_fotw_landmarks(zhang_step3, fotw_dir, data_dir, tmp_path, capsys):
  """SNet crop 5 (aligned mouth and cheeks) needs five landmarks per FotW face: the step-4 config
  reads the build-time MTCNN detections. It starts from crop 1's step 3 (the same network; the
  crops differ only in the data), shared with the chain test above."""
  step3 = zhang_step3("zhang_snet", 1, "smile", capsys)
  results, (loaded, new) = _zhang("zhang_snet.py:step=4,crop=5", step3, fotw_dir, data_dir,
                                  str(tmp_path / "step4"), capsys)
  check_results(results, {"smile": NO_YES})
  assert loaded > 0 and new == []
