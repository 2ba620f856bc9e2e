"""``python -m jaxface.explain`` on the shipped gender model: outputs, settings, one-line errors."""

import json
import os

import cv2
import jax
import numpy as np
import pytest
import skimage.data

from jaxface.explain import __main__ as cli
from jaxface.explain import canonical


@pytest.fixture(scope="module")
def images(tmp_path_factory):
  d = tmp_path_factory.mktemp("faces")
  face = skimage.data.astronaut()[20:220, 120:300]  # Eileen Collins' face, 200 x 180.
  cv2.imwrite(str(d / "face.png"), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
  (d / "broken.png").write_bytes(b"not an image")
  # Landmarks as if the crop were aligned: the template scaled to the crop (photo pixels).
  lm = canonical.five_point_template(face.shape[:2])
  lm_file = d.parent / "landmarks.json"
  lm_file.write_text(json.dumps({"face.png": lm.tolist()}))
  return str(d), str(lm_file)


def test_cli_writes_maps_metrics_and_skips_bad_images(images, tmp_path, capsys):
  folder, lm = images
  out = str(tmp_path / "out")
  rc = cli.main(["--model", "pretrained:gender", "--method", "gradcam,occlusion,cis,cms",
                 "--images", folder, "--out", out, "--landmarks", lm, "--metrics",
                 "--score", "logit", "--patch", "5"])
  err = capsys.readouterr().err
  assert rc == 0, err
  assert "skipped broken.png" in err and "[2/2] face.png" in err
  for m in ("gradcam", "occlusion", "cis", "cms"):
    assert os.path.exists(os.path.join(out, f"face_{m}.png"))
    assert os.path.exists(os.path.join(out, f"face_{m}_overlay.png"))
  for f in ("face_input.png", "face_compare.png", "face_cis_canonical.png", "cms.png", "cms.npy",
            "cms_coverage.png", "metrics.md"):
    assert os.path.exists(os.path.join(out, f)), f
  res = json.load(open(os.path.join(out, "results.json")))
  assert [r["image"] for r in res["images"]] == ["face.png"]
  rec = res["images"][0]
  assert rec["gradcam"]["score"] == "logit" and rec["gradcam"]["target"] == "argmax"
  assert rec["occlusion"]["fill"] == "mean" and rec["occlusion"]["patch"] == [5, 5]
  assert rec["cis"]["vertices"] > 500
  met = json.load(open(os.path.join(out, "metrics.json")))
  assert set(met["methods"]) == {"gradcam", "occlusion", "cis", "cms"}
  assert met["settings"]["reference"] == "cms" and met["settings"]["score"] == "logit"
  assert sum(v["win"] for v in met["methods"].values()) == pytest.approx(100.0)


@pytest.mark.parametrize("argv,needle", [
    (["--model", "pretrained:gender", "--method", "nope"], "--method"),
    (["--model", "pretrained:nobody", "--method", "gradcam"], "nobody"),
    (["--model", "weights.txt"], "weights.txt"),
    (["--model", "pretrained:gender", "--method", "cam"], "GAP head"),
    (["--model", "pretrained:gender", "--target", "first"], "--target"),
    (["--model", "pretrained:gender", "--landmarks", "/no/such.json"], "--landmarks"),
    (["--model", "pretrained:gender", "--workdir", "/tmp"], "not allowed"),
    (["--model", "pretrained:gender", "--fill", "grey"], "--fill"),
])
def test_cli_errors_are_one_line_exit_2(images, tmp_path, capsys, argv, needle):
  folder, _ = images
  try:  # argparse's own errors exit through jaxface.cli.Parser; the checks after parsing return 2
    rc = cli.main(argv + ["--images", folder, "--out", str(tmp_path / "o")])
  except SystemExit as e:
    rc = e.code
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 2 and len(err) == 1 and needle in err[0], err


def test_cli_missing_images_and_workdir(tmp_path, capsys):
  rc = cli.main(["--model", "pretrained:gender", "--images", str(tmp_path / "none"),
                 "--out", str(tmp_path / "o")])
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 2 and len(err) == 1 and "none" in err[0]
  img = tmp_path / "x.png"
  cv2.imwrite(str(img), np.zeros((8, 8, 3), np.uint8))
  rc = cli.main(["--workdir", str(tmp_path), "--images", str(img), "--out", str(tmp_path / "o")])
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 2 and len(err) == 1 and "config.json" in err[0]


def test_cli_restores_a_training_workdir(tmp_path, capsys):
  """A workdir as jaxface.train writes it (Orbax state, model meta, config.json, run.json's tasks),
  and --sanity."""
  import jax  # pylint: disable=g-import-not-at-top
  from jaxface import checkpointing  # pylint: disable=g-import-not-at-top
  from jaxface import pretrained  # pylint: disable=g-import-not-at-top
  shipped = pretrained.load("gender")
  ckpt = checkpointing.Checkpointer(str(tmp_path), async_save=False)
  ckpt.save(3, {"params": jax.tree.map(np.asarray, shipped.variables["params"])}, {},
            {"model": {"name": "dlib_gender", "kwargs": {}, "head": None, "head_kwargs": {}}})
  ckpt.close()
  from jaxface import config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.base_config()
  config.model.name, config.model.preprocessing, config.model.input_size = (
      "dlib_gender", "unit", (32, 32))
  config.data.labels = ("gender",)
  (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
  (tmp_path / "run.json").write_text(json.dumps(
      {"tasks": [{"name": "gender", "kind": "class", "class_names": ["female", "male"]}]}))
  img = tmp_path / "x.png"
  face = skimage.data.astronaut()[20:220, 120:300]
  cv2.imwrite(str(img), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
  out = tmp_path / "o"
  rc = cli.main(["--workdir", str(tmp_path), "--images", str(img), "--out", str(out),
                 "--method", "gradcam", "--score", "logit", "--sanity"])
  assert rc == 0, capsys.readouterr().err
  res = json.load(open(out / "results.json"))
  s = json.load(open(out / "sanity.json"))["gradcam"]
  assert len(s["steps"]) == len(s["layers"]) >= 3 and "passes" in s
  assert res["model"] == str(tmp_path) and res["images"][0]["gradcam"]["score"] == "logit"
  # The restored weights are the shipped ones: the same class logit on the same pixels
  # (preprocessing "unit" differs from the shipped model's, so compare through the forward).
  from jaxface.explain import loading  # pylint: disable=g-import-not-at-top
  ex = loading.load(workdir=str(tmp_path))
  x = np.random.default_rng(0).random((1, 32, 32, 3)).astype(np.float32) * 255
  a, _ = ex.forward(ex.variables, x)
  b, _ = shipped.model.apply(shipped.variables, (x / 255 - 0.5) / 0.5)
  # The two preprocessings round the input differently (a few 2^-24 of values <= 1), and the
  # two programs reorder float32 sums: depth * sqrt(n_max) * 2^-24 of the logits' scale, plus
  # the input's share (same order). Weights restored wrongly change the logits by O(0.1).
  kernels = [k for k in jax.tree.leaves(shipped.variables) if np.ndim(k) >= 2]
  rel = len(kernels) * np.sqrt(max(int(np.prod(k.shape[:-1])) for k in kernels)) * 2.0**-24
  np.testing.assert_allclose(a, b, rtol=0, atol=2 * rel * float(np.abs(b).max()))


def test_cli_reads_a_converted_npz(tmp_path, capsys):
  """A jaxface.convert-style .npz (variables + meta with the model and its preprocessing)."""
  from jaxface import pretrained  # pylint: disable=g-import-not-at-top
  from jaxface.weights import common  # pylint: disable=g-import-not-at-top
  shipped = pretrained.load("gender")
  npz = tmp_path / "gender.npz"
  common.save(npz, shipped.variables, {"model": "dlib_gender", "model_kwargs": {},
                                       "format": "test",
                                       "preprocessing": shipped.spec.preprocessing.to_dict()})
  img = tmp_path / "x.png"
  cv2.imwrite(str(img), np.full((40, 40, 3), 120, np.uint8))
  rc = cli.main(["--model", str(npz), "--images", str(img), "--out", str(tmp_path / "o"),
                 "--method", "gradcam", "--target", "1"])
  assert rc == 0, capsys.readouterr().err
  rec = json.load(open(tmp_path / "o" / "results.json"))["images"][0]["gradcam"]
  assert rec["class"] == 1 and rec["target"] == "class" and rec["score"] == "prob"


def test_cli_cis_from_user_meshes(images, tmp_path, capsys):
  """The paper's setting: per-image meshes (x, y, z) and a canonical mesh, same indexing."""
  folder, _ = images
  gy, gx = np.mgrid[5:200:12, 5:180:12]
  grid = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float64)
  mesh_dir = tmp_path / "meshes"
  mesh_dir.mkdir()
  # A flat face: z constant, so every vertex is visible; the canonical mesh is the same grid.
  np.save(mesh_dir / "face.npy", np.hstack([grid, np.zeros((len(grid), 1))]))
  np.save(tmp_path / "frontal.npy", grid)
  out = tmp_path / "o"
  rc = cli.main(["--model", "pretrained:gender", "--method", "cis", "--images",
                 os.path.join(folder, "face.png"), "--out", str(out), "--vertices",
                 str(mesh_dir), "--canonical", str(tmp_path / "frontal.npy"),
                 "--canonical-size", "200,180", "--vertex-stride", "2", "--patch", "5"])
  assert rc == 0, capsys.readouterr().err
  rec = json.load(open(out / "results.json"))["images"][0]["cis"]
  assert rec["vertices"] == (len(grid) + 1) // 2 and rec["stride"] == 2
  assert np.load(out / "cms.npy").shape == (32, 32)
  rc = cli.main(["--model", "pretrained:gender", "--method", "cis", "--images", folder,
                 "--out", str(out), "--vertices", str(mesh_dir)])
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 2 and len(err) == 1 and "--canonical" in err[0]
