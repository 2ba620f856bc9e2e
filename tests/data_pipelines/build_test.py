"""The ``synthetic_faces`` tfds builder and ``python -m data_pipelines.build``: summary, records
equal to the generator, errors, and no TensorFlow."""

import contextlib
import io
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines import build
from data_pipelines import show
from data_pipelines.datasets import synthetic
from data_pipelines.datasets import synthetic_faces

SIZES = {"train": 200, "validation": 50, "test": 50}
STARTS = {"train": 0, "validation": 200, "test": 250}
LABELS = {"age": synthetic.AGE_GROUPS, "gender": ("m", "f"), "expression": synthetic.EXPRESSIONS}


def _main(*argv: str) -> str:
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    assert build.main(list(argv)) == 0
  return out.getvalue()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  return data_dir, _main("synthetic_faces", "--config", "small", "--data_dir", data_dir)


def test_summary_is_printed_and_saved(built):
  data_dir, printed = built
  assert "synthetic_faces/small 1.1.0 (built in" in printed
  for split, n in SIZES.items():
    assert f"\n{split:<12}{n:>10}\n" in printed
  assert "\nskipped: 0\n" in printed
  with open(os.path.join(data_dir, "synthetic_faces", "small", "summary.json")) as f:
    summary = json.load(f)
  assert summary["dataset"] == "synthetic_faces" and summary["config"] == "small"
  assert summary["file_format"] == "array_record" and not summary["reused"]
  assert summary["skipped"] == {"count": 0, "examples": []}
  assert list(summary["splits"]) == list(SIZES)
  for split, n in SIZES.items():
    info = summary["splits"][split]
    assert info["num_examples"] == n
    assert list(info["histograms"]) == list(LABELS)
    for label, names in LABELS.items():
      hist = info["histograms"][label]
      assert list(hist) == list(names) and sum(hist.values()) == n
  assert any(name.endswith(".array_record-00000-of-00001")
             for name in os.listdir(summary["path"]))


def test_histograms_match_the_generator(built):
  data_dir, _ = built
  with open(os.path.join(data_dir, "synthetic_faces", "small", "summary.json")) as f:
    summary = json.load(f)
  cfg = synthetic_faces.SyntheticFaces.builder_configs["small"].synthetic_config()
  examples = [synthetic.generate_example(i, cfg) for i in range(STARTS["validation"], 300)]
  for label, names in LABELS.items():
    got = summary["splits"]["validation"]["histograms"][label]
    want = [sum(ex[label] == c for ex in examples[:50]) for c in range(len(names))]
    assert list(got.values()) == want


@pytest.mark.parametrize("split", list(SIZES))
def test_records_equal_generate_example(built, split):
  data_dir, _ = built
  source = tfds.data_source("synthetic_faces/small", split=split, data_dir=data_dir,
                            download=False, decoders={"image": tfds.decode.SkipDecoding()})
  assert len(source) == SIZES[split]
  records = [source[i] for i in range(len(source))]
  indices = sorted(int(r["id"].decode().split("/")[1]) for r in records)
  assert indices == list(range(STARTS[split], STARTS[split] + SIZES[split]))  # disjoint splits
  cfg = synthetic.SyntheticConfig(seed=0)
  for r in records[:6]:
    ex = synthetic.generate_example(int(r["id"].decode().split("/")[1]), cfg)
    assert r["image"] == synthetic.encode_example(ex)["image"]
    bgr = cv2.imdecode(np.frombuffer(r["image"], np.uint8), cv2.IMREAD_COLOR)
    mse = np.mean((cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float64) - ex["image"])**2)
    assert 10 * np.log10(255**2 / mse) > 30  # JPEG quality 95 of a noisy scene: 32-35 dB
    np.testing.assert_array_equal(r["saliency"], ex["fixation"][..., None])
    np.testing.assert_array_equal(r["box"], ex["box"])
    np.testing.assert_array_equal(r["landmarks"], ex["landmarks"])
    assert r["box"].dtype == r["landmarks"].dtype == np.float32
    assert (r["age"], r["gender"], r["expression"]) == (ex["age"], ex["gender"], ex["expression"])
    assert r["id"].decode() == ex["id"]


def test_second_run_reuses_the_data(built):
  data_dir, first = built
  again = _main("synthetic_faces", "--config", "small", "--data_dir", data_dir)
  assert "(reused)" in again
  # The same sizes, histograms and skipped list (tfds' own messages come first on stdout).
  assert again[again.index("\nsplit "):] == first[first.index("\nsplit "):]


def test_unknown_dataset_and_config(capsys, tmp_path):
  with pytest.raises(SystemExit) as e:
    build.main(["no_such_faces", "--data_dir", str(tmp_path)])
  assert e.value.code == 2
  assert capsys.readouterr().err == (
      "python -m data_pipelines.build: error: unknown dataset 'no_such_faces'; known: adience, "
      "affectnet, celeba, fer2013, fotw, image_folder, lfw_gender, salicon, synthetic_faces, "
      "utkface\n")
  with pytest.raises(SystemExit):
    build.main(["synthetic_faces", "--config", "huge", "--data_dir", str(tmp_path)])
  err = capsys.readouterr().err
  assert err == ("python -m data_pipelines.build: error: unknown config 'huge' of dataset "
                 "'synthetic_faces'; known: default, small\n")
  with pytest.raises(build.BuildError, match="known: default, small"):
    build.build("synthetic_faces", "huge", str(tmp_path))
  assert not os.listdir(tmp_path)


def test_configs_have_disjoint_ranges_and_the_documented_sizes():
  configs = synthetic_faces.SyntheticFaces.builder_configs
  assert build.config_names("synthetic_faces") == ["default", "small"]
  ranges = configs["default"].split_ranges()
  assert {k: len(r) for k, r in ranges.items()} == {"train": 2000, "validation": 500, "test": 500}
  assert ranges["train"].stop == ranges["validation"].start
  assert ranges["validation"].stop == ranges["test"].start
  assert configs["default"].synthetic_config() == synthetic.SyntheticConfig()


def test_skipped_examples_are_counted_and_the_first_few_shown():
  skipped = [{"split": "train", "id": f"x/{i}", "reason": "corrupt JPEG"} for i in range(12)]
  text = build.format_summary({
      "dataset": "d", "config": "c", "version": "1.0.0", "path": "/p", "build_seconds": 1.0,
      "splits": {"train": {"num_examples": 3, "histograms": {"gender": {"m": 1, "f": 2}}}},
      "skipped": {"count": 12, "examples": skipped}})
  assert "train       gender      m:1 f:2" in text
  assert "skipped: 12" in text and "  train x/9: corrupt JPEG" in text
  assert "x/10" not in text and "... 2 more in summary.json" in text


def test_building_does_not_import_tensorflow(tmp_path):
  data_dir = str(tmp_path)
  code = ("import sys\n"
          "from data_pipelines import build\n"
          f"build.build('synthetic_faces', 'small', {data_dir!r})\n"
          "import tensorflow_datasets as tfds\n"
          f"s = tfds.data_source('synthetic_faces/small', split='test', data_dir={data_dir!r})\n"
          "s[0]\n"
          "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
          "print('ok')\n")
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=repo, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().endswith("ok")


MANUAL_BUILDERS = sorted(n for n in build.BUILDERS if n != "synthetic_faces")


def _error_line(capsys, *argv: str) -> str:
  """The one stderr line of a build run that must fail with exit status 2."""
  with pytest.raises(SystemExit) as e:
    build.main(list(argv))
  assert e.value.code == 2
  captured = capsys.readouterr()
  assert captured.err.endswith("\n") and captured.err.count("\n") == 1, captured.err
  assert "Traceback" not in captured.err
  return captured.err.rstrip("\n")


@pytest.mark.parametrize("name", MANUAL_BUILDERS)
def test_a_wrong_manual_dir_is_one_line(name, tmp_path, capsys):
  data_dir = str(tmp_path / "tfds")
  prefix = "python -m data_pipelines.build: error: "
  layout = f"(layout: python -m data_pipelines.build {name} --layout)"
  missing = str(tmp_path / "nowhere")
  line = _error_line(capsys, name, "--manual_dir", missing, "--data_dir", data_dir)
  assert line.startswith(prefix + f"{name}/")
  assert line.endswith(f": manual data not found in {missing} (looked for that folder; found "
                       f"nothing (it does not exist)) {layout}")
  empty = tmp_path / "empty"
  empty.mkdir()
  line = _error_line(capsys, name, "--manual_dir", str(empty), "--data_dir", data_dir)
  # tfds refuses an empty manual directory before the builder looks inside.
  assert line.endswith(f": manual data not found in {empty} (looked for that folder; found an "
                       f"empty folder) {layout}")
  # Another data set's files: the line names what it looked for and lists what is there.
  other = tmp_path / "other"
  for k in range(10):
    (other / f"part{k}").mkdir(parents=True)
  (other / "list.txt").write_text("x")
  line = _error_line(capsys, name, "--manual_dir", str(other), "--data_dir", data_dir)
  assert "expected" in line and line.endswith(
      f"; found in {other}: list.txt, part0/, part1/, part2/, part3/, part4/, part5/, part6/, "
      f"... (11 entries) {layout}")


@pytest.mark.parametrize("name", MANUAL_BUILDERS)
def test_layout_prints_the_manual_instructions(name, capsys):
  assert build.main([name, "--layout"]) == 0
  assert capsys.readouterr().out == build.builder_class(name).MANUAL_DOWNLOAD_INSTRUCTIONS + "\n"


def test_describe_dir(tmp_path):
  assert build.describe_dir(str(tmp_path / "x")) == "nothing (it does not exist)"
  (tmp_path / "f").write_text("")
  assert build.describe_dir(str(tmp_path / "f")) == "a file, not a folder"
  (tmp_path / "d").mkdir()
  assert build.describe_dir(str(tmp_path / "d")) == "an empty folder"
  assert build.describe_dir(str(tmp_path)) == "d/, f"


def test_show_answers_in_one_line(built, tmp_path, capsys):
  data_dir, _ = built
  prefix = "python -m data_pipelines.show: error: "
  with pytest.raises(SystemExit) as e:
    show.main(["synthetic_faces", "--data_dir", data_dir])  # default config not prepared
  assert e.value.code == 2
  assert capsys.readouterr().err == (
      f"{prefix}synthetic_faces/default is not prepared in {data_dir}; run: python -m "
      f"data_pipelines.build synthetic_faces --config default --data_dir {data_dir} (prepared "
      "there: --config small)\n")
  for argv in (["synthetic_faces", "--config", "small", "--data_dir", data_dir, "--pipe",
                "no_such_op"],
               ["synthetic_faces", "--num", "many"]):
    with pytest.raises(SystemExit) as e:
      show.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(prefix) and err.count("\n") == 1, err
