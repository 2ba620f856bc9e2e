"""Dataset mixtures (``jaxface.mixture``): VEGAC's gender model on Adience + LFW end to end from
both datasets' native layouts, the mixture's seeded and resumable training order, the label
mapping and rates, and the one-line errors for bad ``config.data.mixture`` fields."""

import copy
import json
import os
import pickle
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines import loader as loader_lib
from data_pipelines.datasets import sources
from jaxface import config_lib
from jaxface import data as data_lib
from jaxface import mixture as mixture_lib
from jaxface import models
from jaxface import train as train_lib
from tests.fixtures import native
from tests import helpers
from tests.data_pipelines.datasets import lfw_gender_test

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VEGAC = os.path.join(REPO, "configs", "vegac.py")
# Worked out from the fixture writers: native.write_adience gives row n of the fold files gender
# "mf"[n % 2] (fold 1 has a fifth, faceless row), so fold 4 holds rows 17..20 = f, m, f, m;
# lfw_gender_test's test split is Frank_Lee (m) and Gina_Moss (f, two images).
TEST_COUNTS = {"adience": {"male": 2, "female": 2}, "lfw": {"male": 1, "female": 2}}
SPLIT_SIZES = {"train": {"adience": 12, "lfw": 4}, "validation": {"adience": 4, "lfw": 1},
               "test": {"adience": 4, "lfw": 3}}


def _mlnet(path: str) -> str:
  """A random ML-Net (width 1/32) whose maps are not all zero."""
  from jaxface.weights import common  # pylint: disable=g-import-not-at-top
  model = models.get("mlnet", width=1 / 32)
  variables = helpers.random_variables(model, jnp.zeros((1, 32, 32, 3)), seed=0)
  variables["params"]["prior"]["W"][:] = 0.0
  variables["params"]["pre_final_conv"]["bias"][:] = 0.5
  common.save(path, variables, {"model": "mlnet", "model_kwargs": {"width": 1 / 32}})
  return path


def _config(root: str, mlnet: str, **mixture_edits):
  """configs/vegac.py's gender mixture at smoke size, back on the two native layouts."""
  full = config_lib.load(f"{VEGAC}:mlnet={mlnet}")
  config = config_lib.load(f"{VEGAC}:smoke,mlnet={mlnet}")
  with config.unlocked():  # apply_smoke switched the data to synthetic: back to the mixture
    config.data.name, config.data.config = full.data.name, full.data.config
    config.data.mixture = copy.deepcopy(full.data.mixture)
    config.data.mixture.unlock()  # a config file may write any field there (checked at start)
    config.data.mixture.datasets.adience.manual_dir = os.path.join(root, "adience")
    config.data.mixture.datasets.lfw.manual_dir = os.path.join(root, "lfw")
    config.data.data_dir, config.data.build = os.path.join(root, "tfds"), True
    for path, value in mixture_edits.items():
      node = config.data.mixture
      *parents, leaf = path.split(".")
      for p in parents:
        node = node[p]
      node[leaf] = value
  return config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """Both manual directories, the VEGAC gender mixture trained two steps and evaluated."""
  root = str(tmp_path_factory.mktemp("mixture"))
  native.write_adience(os.path.join(root, "adience"))
  lfw_gender_test._write_tree(os.path.join(root, "lfw"), "lfw", "male_names.txt",
                              "female_names.txt")
  mlnet = _mlnet(os.path.join(root, "mlnet.npz"))
  config = _config(root, mlnet)
  workdir = os.path.join(root, "run")
  summary = train_lib.train_and_evaluate(config, workdir)
  return dict(root=root, mlnet=mlnet, config=config, workdir=workdir, summary=summary)


def test_vegac_gender_is_the_papers_adience_plus_lfw_mixture():
  config = config_lib.load(f"{VEGAC}:mlnet=/x/mlnet.npz")
  assert config.data.name == "mixture" and tuple(config.data.labels) == ("gender",)
  datasets = config.data.mixture.datasets
  assert (datasets.adience.name, datasets.adience.config) == ("adience", "faces_gender_mtcnn")
  assert (datasets.lfw.name, datasets.lfw.config) == ("lfw_gender", "lfw")
  assert dict(datasets.adience.splits) == {"train": "fold0+fold1+fold2", "validation": "fold3",
                                           "test": "fold4"}
  assert config.eval.split == "test" and config.best_metric == "val/gender/accuracy"
  config_lib.validate(config)
  for dataset, name in (("adience", "adience"), ("lfw", "lfw_gender")):  # the other reading
    single = config_lib.load(f"{VEGAC}:dataset={dataset},mlnet=/x/mlnet.npz")
    assert single.data.name == name and not single.data.mixture.datasets


def test_trains_evaluates_and_reports_each_dataset(run):
  assert run["summary"]["step"] == 2
  with open(os.path.join(run["workdir"], "eval", "results.json")) as f:
    results = json.load(f)
  names = ["male", "female"]
  assert results["gender"]["class_names"] == names and results["gender"]["n"] == 7
  per = results["per_dataset"]
  assert sorted(per) == ["adience", "lfw"]
  total = np.zeros((2, 2), np.int64)
  for entry, counts in TEST_COUNTS.items():
    r = per[entry]["gender"]
    assert r["class_names"] == names
    assert r["n"] == sum(counts.values())
    assert {c: r["per_class"][c]["support"] for c in names} == counts
    cm = np.asarray(r["confusion"])
    assert np.trace(cm) / cm.sum() == pytest.approx(r["accuracy"], abs=1e-12)  # counts / n
    total += cm
    run_info = results["_run"]["per_dataset"][entry]
    assert run_info["n"] == run_info["source_examples"] == SPLIT_SIZES["test"][entry]
    assert os.path.isfile(os.path.join(run["workdir"], "eval", "per_dataset", entry,
                                       "confusion_gender.csv"))
  # The whole mixture's confusion is the sum of the datasets' (every test example is in one).
  np.testing.assert_array_equal(np.asarray(results["gender"]["confusion"]), total)
  assert results["_run"]["per_dataset"]["adience"]["split"] == "fold4"
  with open(os.path.join(run["workdir"], "eval", "report.txt")) as f:
    report = f.read()
  assert "==== dataset adience: adience/faces_gender_mtcnn split 'fold4', n=4 of 4" in report
  assert "==== dataset lfw: lfw_gender/lfw split 'test', n=3 of 3" in report
  # Each dataset got its own saliency cache, recorded beside the run.
  for entry in ("adience", "lfw"):
    with open(os.path.join(run["workdir"], "datasets", entry, "saliency_cache.json")) as f:
      assert json.load(f)["splits"]
  with open(os.path.join(run["workdir"], "run.json")) as f:
    assert json.load(f)["train_examples"] == sum(SPLIT_SIZES["train"].values())
  # Validation logs the whole mixture and each dataset.
  with open(os.path.join(run["workdir"], "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  val = next(r for r in rows if "val/gender/accuracy" in r)
  assert {"val/adience/gender/accuracy", "val/lfw/gender/accuracy"} <= set(val)


def test_evaluate_from_the_saved_config_reports_the_same(run):
  """``python -m jaxface.evaluate --workdir DIR`` reads the mixture back from config.json."""
  from jaxface import evaluator as evaluator_lib  # pylint: disable=g-import-not-at-top
  with open(os.path.join(run["workdir"], "eval", "results.json")) as f:
    first = json.load(f)
  again = evaluator_lib.evaluate(evaluator_lib.load_run_config(run["workdir"]), run["workdir"])
  for entry in TEST_COUNTS:
    assert again["per_dataset"][entry]["gender"]["confusion"] == (
        first["per_dataset"][entry]["gender"]["confusion"])
  assert again["_run"]["per_dataset"] == first["_run"]["per_dataset"]


def _loader(config, builder, seed=0):
  src = data_lib.source(config, builder, "train", with_saliency=False)
  return src, loader_lib.make_loader(src, pipe="decode|face_crop(0.3)|resize(16)", batch_size=4,
                                     seed=seed, shard_index=0, shard_count=1,
                                     label_keys=("gender",), read_threads=0)


def test_the_mixture_order_is_seeded_and_resumes_exactly(run):
  config = run["config"]
  builder = data_lib.prepare(config)
  src, loader = _loader(config, builder)
  assert len(src) == 16 and src.part_sizes() == SPLIT_SIZES["train"]
  batches = [next(loader) for _ in range(2)]
  state = json.loads(json.dumps(loader.get_state()))  # as a checkpoint stores it
  rest = [next(loader) for _ in range(4)]  # into the second epoch
  loader.close()
  epoch = [i for b in batches + rest[:2] for i in b["id"]]
  assert sorted(epoch) == sorted(src[i]["id"] for i in range(len(src)))  # each once per epoch
  assert {mixture_lib.dataset_of(i) for i in epoch} == {"adience", "lfw"}
  _, resumed = _loader(config, builder)
  resumed.set_state(state)
  for want in rest:
    got = next(resumed)
    assert list(got["id"]) == list(want["id"])
    np.testing.assert_array_equal(got["image"], want["image"])
    np.testing.assert_array_equal(got["gender"], want["gender"])
  resumed.close()
  # The loader's worker processes receive the source pickled.
  copied = pickle.loads(pickle.dumps(src))
  for i in (0, 11, 12, 15):
    assert copied[i]["id"] == src[i]["id"] and copied[i]["image"] == src[i]["image"]
  _, other = _loader(config, builder, seed=1)
  assert [list(next(other)["id"]) for _ in range(2)] != [list(b["id"]) for b in batches]
  other.close()


def test_labels_are_remapped_onto_the_runs_class_order(run):
  # The run's classes reversed: each dataset's "m" (its label 0) must become label 1.
  config = _config(run["root"], run["mlnet"], **{"classes.gender": ("female", "male")})
  builder = data_lib.prepare(config)
  assert [t.class_names for t in data_lib.tasks(config, builder)] == [("female", "male")]
  src = data_lib.source(config, builder, "test", with_saliency=False)
  plain = {e.key: sources.open_source(e.builder, e.splits["test"]) for e in builder.entries}
  for i in range(len(src)):
    entry, _, raw_id = src[i]["id"].partition(":")
    raw = next(r for r in (plain[entry][j] for j in range(len(plain[entry])))
               if r["id"].decode() == raw_id)
    assert int(src[i]["gender"]) == 1 - int(raw["gender"])
  counts = data_lib.label_counts(builder, "test", "gender", 2)
  assert counts.tolist() == [4, 3]  # female, male over both test splits (TEST_COUNTS)


def test_rates_repeat_or_subsample_the_training_split_deterministically(run):
  config = _config(run["root"], run["mlnet"], **{"datasets.lfw.rate": 2.5,
                                                 "datasets.adience.rate": 0.5})
  builder = data_lib.prepare(config)
  src = data_lib.source(config, builder, "train", with_saliency=False)
  assert src.part_sizes() == {"adience": 6, "lfw": 10}  # 0.5 * 12; 2 * 4 + 0.5 * 4
  lfw = builder.entries[1]
  rows = builder.indices(lfw, "train", 4)
  assert sorted(np.bincount(rows, minlength=4).tolist()) == [2, 2, 3, 3]
  again = data_lib.prepare(config)
  np.testing.assert_array_equal(again.indices(again.entries[1], "train", 4), rows)
  adience_rows = builder.indices(builder.entries[0], "train", 12)
  assert len(set(adience_rows.tolist())) == 6  # without replacement
  # Evaluation splits read every example once, whatever the rate.
  test = data_lib.source(config, builder, "test", with_saliency=False)
  assert test.part_sizes() == SPLIT_SIZES["test"]


def test_mixture_source_maps_labels_keeps_unknown_and_prefixes_ids():
  a = [{"id": b"x/1", "gender": np.int64(0)}, {"id": b"x/2", "gender": np.int64(-1)}]
  b = [{"id": "y/1", "gender": np.int64(1)}, {"id": "y/2", "gender": np.int64(0)}]
  src = mixture_lib.MixtureSource([("one", a, {"gender": np.array([1, 0])}, np.array([1, 0])),
                                   ("two", b, {"gender": np.array([0, 1])}, np.array([1, 1]))])
  got = [(src[i]["id"], int(src[i]["gender"])) for i in range(len(src))]
  assert got == [("one:x/2", -1), ("one:x/1", 1), ("two:y/2", 0), ("two:y/2", 0)]
  assert [mixture_lib.dataset_of(i) for i, _ in got] == ["one", "one", "two", "two"]
  with pytest.raises(IndexError):
    src[4]


def test_the_sample_grid_shows_every_dataset_in_turn():
  from jaxface import evaluator as evaluator_lib  # pylint: disable=g-import-not-at-top
  src = mixture_lib.MixtureSource([(k, [{}] * n, {}, np.arange(n))
                                   for k, n in (("a", 3), ("b", 1), ("c", 2))])
  assert evaluator_lib._sample_rows(src, 5) == [0, 3, 4, 1, 5]  # a0 b0 c0 a1 c1
  assert evaluator_lib._sample_rows([{}] * 10, 3) == [0, 1, 2]


BAD_FIELDS = [
    ({"datasets.lfw.rat": 1.0}, r"config\.data\.mixture\.datasets\.lfw\.rat: unknown field"),
    ({"datasets.lfw.rate": 0.0}, r"config\.data\.mixture\.datasets\.lfw\.rate: must be a number"),
    ({"datasets.lfw.splits": {"train": "train", "test": "test"}},
     r"datasets\.lfw\.splits\.validation: missing"),
    ({"datasets.lfw.labels": {"gender": {"m": "man", "f": "female"}}},
     r"datasets\.lfw\.labels\.gender\.m: 'man' is not a class of config\.data\.mixture\.classes"),
    ({"datasets.adience.labels": {}}, r"datasets\.adience\.labels\.gender: missing"),
    ({"classes.gender": ("male", "female", "other")},
     r"mixture\.classes\.gender: no dataset's labels map onto \['other'\]"),
    ({"datasets.lfw.manual_dir": "/nonexistent/lfw"},
     r"datasets\.lfw\.manual_dir: directory does not exist"),
    ({"datasets.lfw.splits.test": "", "datasets.adience.splits.test": ""},
     r"datasets: no dataset gives a split for 'test'"),
]


@pytest.mark.parametrize("edits, message", BAD_FIELDS)
def test_bad_mixture_fields_fail_at_start_in_one_line(run, edits, message):
  config = _config(run["root"], run["mlnet"], **edits)
  with pytest.raises(config_lib.ConfigError, match=message) as e:
    config_lib.validate(config)
  assert "\n" not in str(e.value)


def test_a_mixture_needs_its_name_and_class_labels(run):
  config = _config(run["root"], run["mlnet"])
  with config.unlocked():
    config.data.name = "adience"
  with pytest.raises(config_lib.ConfigError, match=r"datasets: adience, lfw given, but "
                     r"config\.data\.name is 'adience'"):
    config_lib.validate(config)
  config = _config(run["root"], run["mlnet"])
  with config.unlocked():
    config.task.kind = "attributes"
  with pytest.raises(config_lib.ConfigError, match=r"config\.task\.kind: a mixture maps class"):
    config_lib.validate(config)


@pytest.mark.parametrize("edits, message", [
    # a class of the dataset left unmapped (validation passes: adience still gives "female")
    ({"datasets.lfw.labels": {"gender": {"m": "male"}}},
     r"datasets\.lfw\.labels\.gender: lfw_gender/lfw class 'f' is not mapped \(its classes: m, f"),
    ({"datasets.lfw.labels": {"gender": {"m": "male", "f": "female", "x": "female"}}},
     r"datasets\.lfw\.labels\.gender\.x: not a class of lfw_gender/lfw"),
    ({"datasets.lfw.splits.test": "fold4"},
     r"datasets\.lfw\.splits\.test 'fold4': .*splits: "),
])
def test_label_and_split_mismatches_with_the_datasets_fail_in_one_line(run, edits, message):
  config = _config(run["root"], run["mlnet"], **edits)
  config_lib.validate(config)
  with pytest.raises(config_lib.ConfigError, match=message) as e:
    builder = data_lib.prepare(config)
    data_lib.source(config, builder, "test", with_saliency=False)
  assert "\n" not in str(e.value)


def test_a_label_one_dataset_lacks_fails_naming_it(run):
  config = _config(run["root"], run["mlnet"])
  with config.unlocked():
    config.data.labels = ("age",)
    config.data.mixture.classes = config_lib.ConfigDict({"age": ("young", "old")})
    for entry in ("adience", "lfw"):
      config.data.mixture.datasets[entry].labels = {"age": {"m": "young", "f": "old"}}
  config_lib.validate(config)
  with pytest.raises(config_lib.ConfigError, match=r"datasets\.adience\.labels\.age: "
                     r"adience/faces_gender_mtcnn has no class label 'age'"):
    data_lib.prepare(config)


def test_the_trainer_answers_a_bad_mixture_field_in_one_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "jaxface.train", f"--config={VEGAC}:mlnet=/x/mlnet.npz",
       "--config.data.mixture.datasets.lfw.rate=-1", f"--workdir={tmp_path / 'run'}"],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and "config.data.mixture.datasets.lfw.rate: must be a number > 0" in (
      lines[0]), proc.stderr


def test_the_saliency_command_precomputes_each_dataset_of_a_mixture(run, tmp_path, capsys):
  """``python -m jaxface.saliency precompute`` on the mixture config: one cache per dataset (the
  trainer's, reused here), each recorded in ``<workdir>/datasets/<entry>/``."""
  from jaxface.saliency import __main__ as saliency_cli  # pylint: disable=g-import-not-at-top
  spec = tmp_path / "mixture_config.py"
  spec.write_text("from tests import mixture_test\n\n\ndef get_config(arg=None):\n"
                  f"  return mixture_test._config({run['root']!r}, {run['mlnet']!r})\n")
  workdir = tmp_path / "w"
  rc = saliency_cli.main(["precompute", "--config", str(spec), "--workdir", str(workdir)])
  out = capsys.readouterr().out.strip().splitlines()
  assert rc == 0, out
  for entry in ("adience", "lfw"):
    lines = [line for line in out if line.startswith(f"{entry} ")]
    assert lines and all(line.endswith("(reused)") for line in lines), out
    with open(workdir / "datasets" / entry / "saliency_cache.json") as f:
      assert os.path.isdir(json.load(f)["cache_dir"])
  with pytest.raises(SystemExit):  # --splits names one dataset's splits, not a mixture's
    saliency_cli.main(["precompute", "--config", str(spec), "--workdir", str(workdir),
                       "--splits", "train"])
