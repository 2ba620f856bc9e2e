"""The command lines: ``python -m jaxface.models`` and ``python -m jaxface.convert``."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from jaxface import weights

# The exact reference parameter counts. Residual Attention: the totals of the authors' released
# deploy prototxts (see tests/models/residual_attention_test.py; Attention-92's prototxt has 2.27 %
# more than the paper's 51.3M). MTCNN: from facenet-pytorch's state-dict shapes (see
# tests/models/mtcnn_test.py).
EXPECTED_PARAMS = {
    "alexnet": 61_100_840,
    "alexnet_caffe": 60_965_224,
    "vgg16": 138_357_544,
    "vgg_face": 145_002_878,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "gilnet": 11_415_048,
    "mlnet": 15_452_145,
    "attention56": 31_810_728,
    "attention92": 52_466_344,
    "mtcnn_pnet": 6_632,
    "mtcnn_rnet": 100_178,
    "mtcnn_onet": 389_040,
}
ALL_NAMES = ["alexnet", "alexnet_caffe", "vgg16", "vgg_face", "resnet18", "resnet50", "attention56",
             "attention92", "attention92_32", "gilnet", "mlnet", "mtcnn_pnet", "mtcnn_rnet",
             "mtcnn_onet"]


def _run(*args, check=True):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env,
                        timeout=600)
  if check and proc.returncode != 0:
    raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
  return proc


@pytest.mark.slow
def test_models_json_lists_every_model_with_exact_counts():
  proc = _run("jaxface.models", "--json")
  rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
  by_name = {r["name"]: r for r in rows}
  assert set(ALL_NAMES) <= set(by_name)
  for r in rows:
    assert set(r) == {"name", "params", "input", "output"}
  for name, n in EXPECTED_PARAMS.items():
    assert by_name[name]["params"] == n, name
  assert abs(by_name["attention56"]["params"] - 31.9e6) <= 0.01 * 31.9e6
  assert by_name["alexnet"]["input"] == [1, 224, 224, 3]
  assert by_name["alexnet"]["output"] == [1, 1000]
  assert by_name["alexnet_caffe"]["input"] == [1, 227, 227, 3]
  assert by_name["vgg_face"]["output"] == [1, 2622]
  assert by_name["gilnet"]["output"] == [1, 8]
  assert by_name["mlnet"]["input"] == [1, 480, 640, 3]
  assert by_name["mlnet"]["output"] == [1, 60, 80, 1]
  assert by_name["mtcnn_onet"]["output"]["landmarks"] == [1, 10]


def test_models_cli_rejects_unknown_name_and_bad_width():
  proc = _run("jaxface.models", "nosuchnet", check=False)
  assert proc.returncode == 2 and "nosuchnet" in proc.stderr
  proc = _run("jaxface.models", "--width", "-1", "gilnet", check=False)
  assert proc.returncode == 2 and "--width" in proc.stderr


def _tiny_torchvision_alexnet(num_classes=3, fc6_in=16):
  """torchvision AlexNet keys and shapes at width 1/16 (conv channels 4, 12, 24, 16, 16)."""
  rng = np.random.default_rng(0)
  shapes = {
      "features.0.weight": (4, 3, 11, 11), "features.0.bias": (4,),
      "features.3.weight": (12, 4, 5, 5), "features.3.bias": (12,),
      "features.6.weight": (24, 12, 3, 3), "features.6.bias": (24,),
      "features.8.weight": (16, 24, 3, 3), "features.8.bias": (16,),
      "features.10.weight": (16, 16, 3, 3), "features.10.bias": (16,),
      "classifier.1.weight": (256, fc6_in * 36), "classifier.1.bias": (256,),
      "classifier.4.weight": (256, 256), "classifier.4.bias": (256,),
      "classifier.6.weight": (num_classes, 256), "classifier.6.bias": (num_classes,),
  }
  return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


def test_convert_cli_writes_tree_with_provenance(tmp_path):
  src = tmp_path / "alexnet_tiny.safetensors"
  save_file(_tiny_torchvision_alexnet(), str(src))
  dst = tmp_path / "out" / "alexnet.npz"
  proc = _run("jaxface.convert", "torchvision", str(src), str(dst))
  assert "wrote" in proc.stdout
  got = weights.load(dst)
  assert got.meta["source_format"] == "torchvision"
  assert got.meta["model"] == "alexnet"
  assert got.meta["model_kwargs"]["num_classes"] == 3
  assert got.meta["source_sha256"] == weights.common.sha256_file(src)
  assert got.preprocessing == weights.common.TORCHVISION
  np.testing.assert_array_equal(got.variables["params"]["fc8"]["bias"],
                                _tiny_torchvision_alexnet()["classifier.6.bias"])
  proc = _run("jaxface.convert", "--list")
  assert all(f in proc.stdout for f in weights.FORMATS)


def test_convert_cli_errors_are_clear(tmp_path):
  proc = _run("jaxface.convert", "onnx", "a", "b", check=False)
  assert proc.returncode == 2 and "unknown format 'onnx'" in proc.stderr
  proc = _run("jaxface.convert", "torchvision", str(tmp_path / "missing.pth"), "b", check=False)
  assert proc.returncode == 2 and "missing.pth" in proc.stderr
  bad = tmp_path / "bad.safetensors"
  save_file(_tiny_torchvision_alexnet(fc6_in=8), str(bad))
  proc = _run("jaxface.convert", "torchvision", str(bad), str(tmp_path / "o.npz"), check=False)
  assert proc.returncode == 2
  assert "classifier.1.weight" in proc.stderr and "(256, 288)" in proc.stderr
  assert not (tmp_path / "o.npz").exists()
  proc = _run("jaxface.convert", "torchvision", str(bad), "o.npz", "--arch", "gilnet", check=False)
  assert proc.returncode == 2 and "gilnet" in proc.stderr
