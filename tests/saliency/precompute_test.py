"""The saliency cache end to end on synthetic_faces/small with a tiny random ML-Net: precompute,
its record in the workdir, reuse, the cached_saliency op in the loader, refusal of another crop
pipe, interrupted writes, ids missing from the cache, and the command line."""

import contextlib
import io
import json
import os
import subprocess
import sys
import threading

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines import build
from data_pipelines import loader
from data_pipelines import pp
from data_pipelines import saliency_cache as sc
from data_pipelines.datasets import sources
from jaxface import config_lib
from jaxface import models
from jaxface.saliency import __main__ as cli
from jaxface.saliency import inference
from jaxface.saliency import precompute as precompute_lib
from tests import helpers

CROP = "decode|face_crop(0.3)|resize(32)"
R = 0.3
CONFIG = '''
import ml_collections

def get_config(arg=None):
  args = dict(a.split("=") for a in arg.split(",")) if arg else {{}}
  c = ml_collections.ConfigDict()
  c.data = ml_collections.ConfigDict(dict(
      name="synthetic_faces", config="small", data_dir={data_dir!r}, train_split="train",
      eval_split="validation", test_split="test"))
  c.saliency = ml_collections.ConfigDict(dict(
      mode="cache", r={r!r}, crop_pipe=args.get("crop", {crop!r}), mlnet={mlnet!r},
      mlnet_input=(32, 32), cache_size=(16, 16), cache_dir="", batch_size=16))
  return c
'''


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("saliency_cache")
  data_dir = str(root / "tfds")
  build.build("synthetic_faces", "small", data_dir)
  model = models.get("mlnet", width=1 / 32)
  variables = helpers.random_variables(model, jnp.zeros((1, 32, 32, 3)), seed=0)
  # A unit prior and a positive output bias keep the final ReLUs alive (maps not all zero).
  variables["params"]["prior"]["W"][:] = 0.0
  variables["params"]["pre_final_conv"]["bias"][:] = 0.5
  mlnet = str(root / "mlnet_tiny.npz")
  from jaxface.weights import common  # pylint: disable=g-import-not-at-top
  common.save(mlnet, variables, {"model": "mlnet", "model_kwargs": {"width": 1 / 32}})
  config_file = root / "tiny_config.py"
  config_file.write_text(CONFIG.format(data_dir=data_dir, r=R, crop=CROP, mlnet=mlnet))
  config = config_lib.load(str(config_file))
  workdir = str(root / "work")
  cache_dir = precompute_lib.precompute(config, workdir, splits=["validation"])
  return dict(root=root, data_dir=data_dir, mlnet=mlnet, config_file=str(config_file),
              config=config, workdir=workdir, cache_dir=cache_dir, model=model,
              variables=variables)


def _source(setup, split):
  return sources.open_source(sources.prepare("synthetic_faces", "small", setup["data_dir"]), split)


def test_precompute_writes_a_complete_cache(setup):
  cache_dir = setup["cache_dir"]
  key = os.path.basename(cache_dir)
  assert cache_dir == os.path.join(setup["data_dir"], "synthetic_faces", "small",
                                   "saliency_cache", key)
  c = sc.SaliencyCache.open(cache_dir)
  source = _source(setup, "validation")
  ids = [source[i]["id"].decode() for i in range(len(source))]
  assert all(i in c for i in ids) and len(set(ids)) == 50
  assert c.size == (16, 16) and c.crop_pipe == str(pp.Pipeline(CROP))
  m = c[ids[0]]
  assert m.dtype == np.uint8 and m.shape == (16, 16) and m.max() == 255
  assert c.meta["mlnet"]["sha256"] == inference.load_mlnet(setup["mlnet"]).sha256
  assert c.meta["mlnet"]["model_kwargs"] == {"width": 1 / 32}
  assert c.meta["mlnet"]["input_size"] == [32, 32] and c.meta["key"] == key
  assert c.splits["validation"]["num_maps"] == 50
  assert c.splits["validation"]["skipped"]["count"] == 0
  with open(os.path.join(setup["workdir"], precompute_lib.SUMMARY_FILE)) as f:
    summary = json.load(f)
  assert summary["cache_dir"] == cache_dir and not summary["reused"]
  assert summary["splits"]["validation"]["num_maps"] == 50
  png = cv2.imread(os.path.join(setup["workdir"], precompute_lib.FIGURE_FILE))
  assert png is not None and png.shape[0] > 100


def test_the_record_names_the_precomputed_cache(setup):
  record = sc.read_record(setup["workdir"])
  assert record["cache_dir"] == setup["cache_dir"]
  assert record["settings"] == sc.run_settings(setup["config"].saliency, False)
  only = sc.open_recorded(setup["workdir"], "validation",
                          sc.run_settings(setup["config"].saliency, False))
  assert list(only.splits) == ["validation"] and len(only) == 50
  assert only.cache_dir == setup["cache_dir"]
  with pytest.raises(sc.CacheError, match="split not found"):
    sc.open_recorded(setup["workdir"], "train")
  # Written atomically: no temporary file stays next to it.
  assert not [n for n in os.listdir(setup["workdir"]) if n.startswith(sc.TMP_PREFIX)]


def test_a_config_changed_since_the_precompute_is_refused(setup):
  cfg = config_lib.load(setup["config_file"] + ":crop=decode|face_crop(0.5)|resize(32)")
  with pytest.raises(sc.CacheError, match=r"crop_pipe=.*face_crop\(margin=0.3.*precompute"):
    sc.open_recorded(setup["workdir"], "validation", sc.run_settings(cfg.saliency, False))
  cfg = config_lib.load(setup["config_file"])
  cfg.saliency.mlnet = "/elsewhere/mlnet.npz"
  with pytest.raises(sc.CacheError, match="mlnet="):
    sc.open_recorded(setup["workdir"], "validation", sc.run_settings(cfg.saliency, False))


def test_a_missing_record_names_the_workdir_and_the_command(tmp_path):
  with pytest.raises(sc.CacheError) as e:
    sc.open_recorded(str(tmp_path), "validation")
  msg = str(e.value)
  assert str(tmp_path) in msg and "python -m jaxface.saliency precompute" in msg
  assert "\n" not in msg
  with pytest.raises(sc.CacheError, match="no workdir"):
    sc.read_record(None)
  (tmp_path / sc.RECORD_FILE).write_text("{}")
  with pytest.raises(sc.CacheError, match="names no cache_dir"):
    sc.read_record(str(tmp_path))


READ_PATH = """
import sys
from data_pipelines import saliency_cache as sc
from data_pipelines.datasets import sources
from jaxface import checkpointing, config_lib, data
restored = []
checkpointing.Checkpointer = lambda *a, **k: restored.append(a)  # no checkpoint is restored
config = config_lib.load(sys.argv[1])
config.data.fuse_geometry = False
builder = sources.prepare("synthetic_faces", "small", config.data.data_dir)
src = data.source(config, builder, "validation", workdir=sys.argv[2])
record = src[0]
assert isinstance(src, sc.CachedSource) and src.cache.cache_dir == sys.argv[3], src
assert record[sc.CROP_KEY].shape == (16, 16), record.keys()
# ML-Net's inference, reweighting and producer, any model or weight importer (the map metrics,
# jaxface.saliency.metrics, are plain functions the saliency task kind uses, and may load).
ml_net = sorted(m for m in sys.modules if m.startswith((
    "jaxface.saliency.inference", "jaxface.saliency.online", "jaxface.saliency.precompute",
    "jaxface.models", "jaxface.weights")))
assert not ml_net and not restored, (ml_net, restored)
print("ok")
"""


def test_the_read_path_needs_neither_ml_net_nor_a_checkpoint(setup):
  """``data.source`` of a cache-mode config finds the cache from the workdir's record alone:
  nothing of ML-Net (inference, the model, its weights) is imported, no checkpoint restored."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", READ_PATH, setup["config_file"], setup["workdir"],
                        setup["cache_dir"]], capture_output=True, text=True, env=env,
                       cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
                       timeout=300)
  assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


def test_cached_maps_are_ml_net_on_the_crop(setup):
  c = sc.SaliencyCache.open(setup["cache_dir"])
  source = _source(setup, "validation")
  pipe = pp.Pipeline(CROP)
  records = [pipe(dict(source[i])) for i in (0, 7, 49)]
  crops = np.stack([r["image"] for r in records])
  w = inference.load_mlnet(setup["mlnet"])
  want = inference.maps_to_uint8(inference.predict(
      w.apply, w.variables, crops, input_size=(32, 32), output_size=(16, 16), batch_size=3))
  got = np.stack([c[r["id"]] for r in records])
  # Same program, other batch mates: equal up to float rounding of the last bit.
  assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_loader_with_cached_saliency_reweights_with_the_cached_map(setup):
  c = sc.SaliencyCache.open(setup["cache_dir"])
  sc.check_matches(c, f"{CROP}|cached_saliency|flip_lr|saliency({R})")
  source = _source(setup, "validation")
  ld = loader.make_eval_loader(sc.with_cache(source, c), pipe=f"{CROP}|cached_saliency|"
                               f"saliency({R})", batch_size=8, shard_index=0, shard_count=1)
  batch = next(ld)
  ld.close()
  assert ld.skipped.count == 0
  plain = pp.Pipeline(CROP)
  for k in range(8):
    crop = plain(dict(source[k]))["image"]
    m = cv2.resize(c[batch["id"][k]], (32, 32), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    s = m / m.max()
    want = np.clip(np.rint(crop * ((1 - R) + R * s)[..., None]), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(batch["image"][k], want)
    np.testing.assert_array_equal(batch["saliency"][k], m.astype(np.uint8))
  # The dataset's own fixation map is gone: the saliency is ML-Net's, not the ground truth.
  gt = pp.Pipeline(CROP)(dict(source[0]))["saliency"]
  assert not np.array_equal(batch["saliency"][0], gt)


def test_ids_missing_from_the_cache_are_skipped_and_counted(setup):
  c = sc.SaliencyCache.open(setup["cache_dir"])
  val, train = _source(setup, "validation"), _source(setup, "train")
  mixed = [val[i] for i in range(6)] + [train[i] for i in range(3)]
  ld = loader.make_eval_loader(sc.with_cache(mixed, c), pipe=f"{CROP}|cached_saliency",
                               batch_size=4, shard_index=0, shard_count=1)
  batches = list(ld)
  ld.close()
  assert sum(int(b["mask"].sum()) for b in batches) == 6
  assert ld.skipped.count == 3
  assert "not in the saliency cache" in ld.skipped.examples[0]["reason"]


def test_precompute_reuses_an_existing_cache(setup, tmp_path):
  maps = os.path.join(setup["cache_dir"], sc.split_dirname("validation"), sc.MAPS_FILE)
  before = os.stat(maps).st_mtime_ns
  again = precompute_lib.precompute(setup["config"], str(tmp_path), splits=["validation"])
  assert again == setup["cache_dir"] and os.stat(maps).st_mtime_ns == before
  with open(tmp_path / precompute_lib.SUMMARY_FILE) as f:
    summary = json.load(f)
  assert summary["reused"] and summary["splits"]["validation"]["reused"]
  assert summary["figure"] == str(tmp_path / precompute_lib.FIGURE_FILE)
  assert cv2.imread(summary["figure"]) is not None


def test_another_crop_pipe_is_refused(setup):
  c = sc.SaliencyCache.open(setup["cache_dir"])
  with pytest.raises(sc.CacheError, match=r"crop_pipe.*face_crop\(margin=0.5"):
    sc.check_matches(c, "decode|face_crop(0.5)|resize(32)|cached_saliency|saliency(0.3)")
  with pytest.raises(sc.CacheError, match="sha256"):
    sc.check_matches(c, CROP, mlnet_sha256="0" * 64)
  with pytest.raises(sc.CacheError, match="no split 'test'"):
    sc.check_matches(c, CROP, splits=["test"])
  # Another crop pipe is another key, hence another directory.
  other = sc.cache_key("x", "decode|face_crop(0.5)|resize(32)", (32, 32), (16, 16), 0.0)
  assert other != sc.cache_key("x", CROP, (32, 32), (16, 16), 0.0)
  assert sc.cache_key("x", "decode|face_crop(margin=0.3)|resize(size=32)", (32, 32),
                      (16, 16), 0.0) == sc.cache_key("x", CROP, (32, 32), (16, 16), 0.0)
  # The weights enter by their sha256, the dataset by its builder's version.
  assert sc.cache_key("y", CROP, (32, 32), (16, 16), 0.0) != sc.cache_key(
      "x", CROP, (32, 32), (16, 16), 0.0)
  assert sc.cache_key("x", CROP, (32, 32), (16, 16), 0.0, dataset_version="1.0.0") != \
      sc.cache_key("x", CROP, (32, 32), (16, 16), 0.0, dataset_version="1.0.1")
  # Two datasets (or two configs of one builder) never share a key, even in one cache_dir.
  keys = {sc.cache_key("x", CROP, (32, 32), (16, 16), 0.0, dataset=d)
          for d in (("adience", "faces_age"), ("adience", "faces_gender"), ("affectnet", None),
                    ("affectnet", "default"))}
  assert len(keys) == 4


def test_an_interrupted_write_leaves_no_complete_looking_split(setup, tmp_path, monkeypatch):
  cache_dir = setup["cache_dir"]
  calls = []
  real = inference.maps_to_uint8

  def interrupted(maps):
    calls.append(1)
    if len(calls) == 2:
      raise KeyboardInterrupt  # the user stops the run in the middle of the split
    return real(maps)

  monkeypatch.setattr(inference, "maps_to_uint8", interrupted)
  with pytest.raises(KeyboardInterrupt):
    precompute_lib.precompute(setup["config"], str(tmp_path), splits=["test"])
  monkeypatch.setattr(inference, "maps_to_uint8", real)
  assert not sc.has_split(cache_dir, "test")
  assert not [n for n in os.listdir(cache_dir) if n.startswith(sc.TMP_PREFIX)]
  assert "test" not in sc.SaliencyCache.open(cache_dir).splits

  # A hard kill skips the clean-up: the partial files stay in a .tmp- directory, which readers
  # ignore and the next run removes before writing the split for real.
  killed = sc.SplitWriter(cache_dir, "test", 50, (16, 16))
  killed.add(["synthetic/000250"], np.zeros((1, 16, 16), np.uint8))
  del killed
  assert "test" not in sc.SaliencyCache.open(cache_dir).splits
  precompute_lib.precompute(setup["config"], str(tmp_path), splits=["test"])
  assert not [n for n in os.listdir(cache_dir) if n.startswith(sc.TMP_PREFIX)]
  c = sc.SaliencyCache.open(cache_dir)
  assert c.splits["test"]["num_maps"] == 50 and len(c) == 100


def test_an_empty_cache_directory_is_not_a_cache(tmp_path):
  sc.write_meta(str(tmp_path), {"key": "k", "cache_size": [4, 4], "crop_pipe": CROP})
  with pytest.raises(sc.CacheError, match="no complete split"):
    sc.SaliencyCache.open(str(tmp_path))
  with pytest.raises(sc.CacheError, match="not found"):
    sc.SaliencyCache.open(str(tmp_path / "absent"))
  with pytest.raises(sc.CacheError, match="another cache"):
    sc.write_meta(str(tmp_path), {"key": "other"})


def test_config_errors_name_the_field(setup, tmp_path):
  cfg = config_lib.load(setup["config_file"] + ":crop=decode|face_crop(0.3)|flip_lr")
  with pytest.raises(ValueError, match="crop_pipe .* random ops"):
    precompute_lib.precompute(cfg, str(tmp_path))
  cfg = config_lib.load(setup["config_file"])
  cfg.saliency.mode = "online"
  with pytest.raises(ValueError, match="saliency.mode is 'online'"):
    precompute_lib.precompute(cfg, str(tmp_path))
  cfg = config_lib.load(setup["config_file"])
  cfg.saliency.mlnet_input = (32,)
  with pytest.raises(ValueError, match="config.saliency.mlnet_input"):
    precompute_lib.precompute(cfg, str(tmp_path))
  with pytest.raises(FileNotFoundError, match="nope.py"):
    config_lib.load(str(tmp_path / "nope.py"))


def test_command_line(setup, tmp_path):
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    rc = cli.main(["precompute", "--config", setup["config_file"], "--workdir", str(tmp_path),
                   "--splits", "validation"])
  assert rc == 0, err.getvalue()
  lines = out.getvalue().splitlines()
  assert lines[-1] == setup["cache_dir"]
  assert lines[0] == "validation: 50 maps, 0 skipped (reused)"
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    rc = cli.main(["precompute", "--config", str(tmp_path / "missing.py"), "--workdir",
                   str(tmp_path)])
  assert rc == 2 and "missing.py" in err.getvalue()


def test_writer_lock_makes_a_second_writer_wait(tmp_path):
  entered = threading.Event()

  def second():
    with sc.writer_lock(str(tmp_path)):
      entered.set()

  with sc.writer_lock(str(tmp_path)):
    t = threading.Thread(target=second)
    t.start()
    assert not entered.wait(0.3)
  assert entered.wait(5)
  t.join()


def test_an_unprepared_dataset_is_named(setup, tmp_path):
  cfg = config_lib.load(setup["config_file"])
  cfg.data.data_dir = str(tmp_path / "empty")
  with pytest.raises(ValueError, match="synthetic_faces/small is not prepared in .*empty"):
    precompute_lib.precompute(cfg, str(tmp_path))
