"""The grain loader over synthetic_faces/small: determinism, per-epoch reshuffle, exact resume,
sharding, masked evaluation, skipping corrupt examples, output dtypes and shapes."""

import itertools
import json

import numpy as np
import pytest

from data_pipelines import build
from data_pipelines import loader

PIPE = "decode|face_crop(0.3)|resize(64)|saliency(0.3)"
RANDOM_PIPE = "decode|face_crop(0.3)|resize(64)|flip_lr|rotate(3)|saliency(0.3)"
N_VAL = 50


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  build.build("synthetic_faces", "small", data_dir)
  return data_dir


@pytest.fixture(scope="module")
def source(data_dir):
  return loader.open_source("synthetic_faces", "small", "validation", data_dir)


def _take(ld: loader.Loader, n: int) -> list[dict[str, np.ndarray]]:
  try:
    return list(itertools.islice(ld, n))
  finally:
    ld.close()


def _train(source, seed=0, pipe=RANDOM_PIPE, batch_size=10, **kwargs) -> loader.Loader:
  return loader.make_loader(source, pipe=pipe, batch_size=batch_size, seed=seed,
                            shard_index=0, shard_count=1, **kwargs)


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def _ids(batches) -> list[str]:
  return [i for b in batches for i in b["id"]]


def test_output_dtypes_and_shapes(source):
  (batch,) = _take(_train(source, pipe=PIPE, batch_size=16), 1)
  assert batch["image"].dtype == np.uint8 and batch["image"].shape == (16, 64, 64, 3)
  assert batch["saliency"].dtype == np.uint8 and batch["saliency"].shape == (16, 64, 64)
  for key in loader.DEFAULT_LABEL_KEYS:
    assert batch[key].shape == (16,) and np.issubdtype(batch[key].dtype, np.integer)
  assert batch["id"].dtype == object and all(isinstance(i, str) for i in batch["id"])
  assert batch["mask"].dtype == bool and batch["mask"].all()
  assert set(batch) == {"image", "saliency", "age", "gender", "expression", "id", "mask"}


def test_same_seed_same_batches_other_seed_differs(source):
  a = _take(_train(source, seed=3), 7)
  b = _take(_train(source, seed=3), 7)
  _assert_batches_equal(a, b)  # images too: random ops draw from per-example seeded rngs
  c = _take(_train(source, seed=4), 7)
  assert _ids(a) != _ids(c)


def test_each_epoch_is_a_new_deterministic_permutation(source):
  batches = _take(_train(source, seed=1), 10)  # 2 epochs of 5 batches
  again = _take(_train(source, seed=1), 10)
  first, second = _ids(batches[:5]), _ids(batches[5:])
  assert sorted(first) == sorted(second) and len(set(first)) == N_VAL
  assert first != second
  assert _ids(again) == first + second


def test_state_restores_mid_epoch_exactly(source):
  k, m = 3, 6  # crosses the epoch boundary after batch 5
  reference = _take(_train(source, seed=2), k + m)
  ld = _train(source, seed=2)
  head = list(itertools.islice(ld, k))
  state = json.loads(json.dumps(ld.get_state()))
  ld.close()
  _assert_batches_equal(head, reference[:k])
  fresh = _train(source, seed=2)
  fresh.set_state(state)
  _assert_batches_equal(_take(fresh, m), reference[k:])


def test_shards_are_disjoint_and_cover_the_split(source):
  ids = []
  for index in range(2):
    ld = loader.make_eval_loader(source, pipe=PIPE, batch_size=8, shard_index=index,
                                 shard_count=2)
    batches = _take(ld, 100)
    ids.append({i for b in batches for i, real in zip(b["id"], b["mask"]) if real})
  assert len(ids[0]) == len(ids[1]) == N_VAL // 2
  assert not ids[0] & ids[1]
  assert len(ids[0] | ids[1]) == N_VAL


def test_eval_loader_sees_every_example_once_with_a_mask(source):
  batches = _take(loader.make_eval_loader(source, pipe=PIPE, batch_size=16), 100)
  assert len(batches) == 4
  assert all(b["image"].shape == (16, 64, 64, 3) and b["mask"].shape == (16,) for b in batches)
  assert sum(int(b["mask"].sum()) for b in batches) == N_VAL
  assert batches[-1]["mask"].tolist() == [True] * 2 + [False] * 14
  real = [i for b in batches for i, m in zip(b["id"], b["mask"]) if m]
  assert len(set(real)) == N_VAL
  assert real == [source[i]["id"].decode() for i in range(N_VAL)]  # unshuffled


class _CorruptOne:
  """Wraps a source; record ``bad`` gets image bytes that do not decode."""

  def __init__(self, source, bad: int):
    self.source, self.bad = source, bad

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    record = dict(self.source[i])
    if i == self.bad:
      record["image"] = b"not a jpeg"
    return record


def test_corrupt_example_is_skipped_and_counted(source):
  bad_id = source[7]["id"].decode()
  ld = loader.make_eval_loader(_CorruptOne(source, 7), pipe=PIPE, batch_size=16)
  batches = _take(ld, 100)
  real = [i for b in batches for i, m in zip(b["id"], b["mask"]) if m]
  assert len(real) == N_VAL - 1 and bad_id not in real
  assert ld.skipped.count == 1
  assert ld.skipped.examples == [{"id": bad_id, "reason": "image bytes cannot be decoded"}]
  # The counter travels with the state and is restored with it.
  # Unshuffled: 5 batches of 10 good examples span stream positions 0..50, the bad one (7) once.
  train = _train(_CorruptOne(source, 7), batch_size=10, shuffle=False)
  list(itertools.islice(train, 5))
  state = train.get_state()
  train.close()
  assert state["skipped"]["count"] == 1
  fresh = _train(_CorruptOne(source, 7), batch_size=10, shuffle=False)
  fresh.set_state(json.loads(json.dumps(state)))
  assert fresh.skipped.count == 1 and fresh.skipped.examples[0]["id"] == bad_id
  fresh.close()


def test_bad_arguments(source):
  with pytest.raises(ValueError, match="shard_index"):
    loader.make_loader(source, pipe=PIPE, batch_size=4, seed=0, shard_index=2, shard_count=2)
  with pytest.raises(ValueError, match="batch_size"):
    loader.make_loader(source, pipe=PIPE, batch_size=0, seed=0)
  with pytest.raises(ValueError, match="worker_count must be an integer >= 0, got -1"):
    loader.make_loader(source, pipe=PIPE, batch_size=4, seed=0, worker_count=-1)


# Worker processes cost seconds to start (each imports jax, grain and OpenCV): two tests only.


def test_workers_give_the_same_stream_and_skip_count(source):
  bad_id = source[7]["id"].decode()
  batches, counts = [], []
  for workers in (0, 2):
    ld = loader.make_eval_loader(_CorruptOne(source, 7), pipe=PIPE, batch_size=16,
                                 worker_count=workers)
    batches.append(_take(ld, 100))
    counts.append(ld.skipped.to_dict())
  _assert_batches_equal(batches[0], batches[1])
  assert len(batches[1]) == 4  # 49 good examples, padded
  # The workers only mark the bad example: the consumer counts it.
  assert counts[0] == counts[1] == {
      "count": 1, "examples": [{"id": bad_id, "reason": "image bytes cannot be decoded"}]}


def test_state_with_workers_resumes_the_threaded_stream(source):
  k, m = 3, 4  # crosses the epoch boundary after batch 5 (49 good examples a pass)
  reference = _take(_train(_CorruptOne(source, 7), seed=5), k + m)
  ld = _train(_CorruptOne(source, 7), seed=5, worker_count=2)
  head = list(itertools.islice(ld, k))
  state = json.loads(json.dumps(ld.get_state()))
  ld.close()
  _assert_batches_equal(head, reference[:k])
  fresh = _train(_CorruptOne(source, 7), seed=5, worker_count=2)
  fresh.set_state(state)
  assert fresh.skipped.to_dict() == state["skipped"]
  _assert_batches_equal(_take(fresh, m), reference[k:])
  assert fresh.skipped.count == 2  # the bad example once in each of the two passes


def test_a_shard_of_only_bad_examples_raises_instead_of_spinning():
  source = [{"image": b"not an image", "age": 0, "gender": 0, "expression": 0, "id": f"x{i}"}
            for i in range(3)]
  ld = loader.make_loader(source, pipe="decode", batch_size=2, seed=0)
  with pytest.raises(loader.AllExamplesBadError, match="all 3 examples of this shard"):
    next(ld)
  ld.close()
