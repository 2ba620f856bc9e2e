"""The grain loader over synthetic_faces/small: determinism, per-epoch reshuffle, exact resume,
sharding, masked evaluation, skipping corrupt examples, output dtypes and shapes, and the same
stream and state for every chunk size, thread count and worker count."""

import itertools
import json
import multiprocessing

import grain
import numpy as np
import pytest

from data_pipelines import build
from data_pipelines import loader
from data_pipelines import pp
from data_pipelines.datasets import sources

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
  return sources.open_source(sources.prepare("synthetic_faces", "small", data_dir), "validation")


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
  # A classifier's loader leaves the maps out (the pipe has applied them); same images.
  (lean,) = _take(_train(source, pipe=PIPE, batch_size=16, keep_maps=False), 1)
  assert set(lean) == set(batch) - {"saliency"}
  np.testing.assert_array_equal(lean["image"], batch["image"])


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
  """Wraps a source; record ``bad`` (an index or a tuple of them) gets bytes that do not decode."""

  def __init__(self, source, bad: int | tuple[int, ...]):
    self.source, self.bad = source, (bad,) if isinstance(bad, int) else tuple(bad)

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    record = dict(self.source[i])
    if i in self.bad:
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
  with pytest.raises(ValueError, match="chunk_size must be an integer >= 1, got 0"):
    loader.make_loader(source, pipe=PIPE, batch_size=4, seed=0, chunk_size=0)
  ld = loader.make_eval_loader(source, pipe=PIPE, batch_size=4)
  with pytest.raises(ValueError, match=r"position 51 is outside this stream \[0, 50\]"):
    ld.set_state({"position": 51, "skipped": {"count": 0, "examples": []}})
  with pytest.raises(ValueError, match=r"state has no 'position' \(keys: \['skipped'\]\)"):
    ld.set_state({"skipped": {"count": 0, "examples": []}})


def test_chunk_size_and_threads_change_nothing(source):
  # Unshuffled (the evaluation loader), bad records 6 and 7 sit at chunk edges: 6 ends the first
  # chunk of 7 positions and starts the third chunk of 3, 7 starts the second chunk of 7; the 50
  # positions leave a last chunk of 1 (7), 2 (3, 16) or 50 (64) positions.
  bad = _CorruptOne(source, (6, 7))
  bad_ids = [source[6]["id"].decode(), source[7]["id"].decode()]
  ref = _train(bad, seed=4)  # chunks of 10 positions (the batch size), two threads
  reference = list(itertools.islice(ref, 7))  # crosses an epoch
  ref_state = ref.get_state()
  ref.close()
  ref_eval = _take(loader.make_eval_loader(bad, pipe=PIPE, batch_size=16), 100)
  assert [int(b["mask"].sum()) for b in ref_eval] == [16, 16, 16]  # 48 good, no padding
  for chunk_size, threads in ((1, 0), (3, 2), (7, 1), (64, 2)):
    ld = _train(bad, seed=4, chunk_size=chunk_size, read_threads=threads)
    _assert_batches_equal(_take(ld, 7), reference)
    assert ld.get_state() == ref_state and ref_state["skipped"]["count"] >= 2  # epoch 1: both
    ev = loader.make_eval_loader(bad, pipe=PIPE, batch_size=16, chunk_size=chunk_size,
                                 read_threads=threads)
    _assert_batches_equal(_take(ev, 100), ref_eval)
    assert ev.get_state()["position"] == 50
    assert [e["id"] for e in ev.skipped.examples] == bad_ids  # counted in stream order


def test_a_state_restores_mid_chunk_for_any_chunk_size(source):
  reference = _take(_train(source, seed=6, batch_size=6), 9)
  ld = _train(source, seed=6, batch_size=6, chunk_size=4)
  head = list(itertools.islice(ld, 3))
  state = json.loads(json.dumps(ld.get_state()))
  assert state == {"position": 18, "skipped": {"count": 0, "examples": []}}  # 18 = 4 * 4 + 2
  # Rewinding while chunks are being preprocessed ahead drops them.
  _assert_batches_equal(list(itertools.islice(ld, 2)), reference[3:5])
  ld.set_state(state)
  _assert_batches_equal(head + _take(ld, 6), reference)
  fresh = _train(source, seed=6, batch_size=6, chunk_size=5, read_threads=0)
  fresh.set_state(state)
  _assert_batches_equal(_take(fresh, 6), reference[3:])


def test_states_of_the_loader_before_chunks_still_resume(source):
  # Training checkpoints written before chunks hold grain's iterator states; each consumed example
  # was one stream position: 23 here, the 24th record of the unshuffled stream.
  skipped = {"count": 0, "examples": []}
  threaded = {"grain": {"next_index": 23}, "skipped": skipped}
  workers = {"grain": {"next_index_in_cycle": 1, "next_index_in_datasets": 2,
                       "iterators_in_use_indices": [0, 1], "exhausted": [0, 0],
                       "iterators_in_use_states": [{"next_index": 12}, {"next_index": 11}],
                       "future_states": {}}, "skipped": skipped}
  for state in (threaded, workers):
    ld = _train(source, shuffle=False)
    ld.set_state(state)
    assert ld.get_state() == {"position": 23, "skipped": skipped}
    (batch,) = _take(ld, 1)
    assert list(batch["id"]) == [source[i]["id"].decode() for i in range(23, 33)]


def test_a_worker_chunk_travels_in_a_slot_or_pickled(source):
  ds = grain.MapDataset.source(_CorruptOne(source, 1)).map_with_index(
      loader._Preprocess(pp.Pipeline(PIPE), 0, 0, loader.DEFAULT_LABEL_KEYS))
  expected = loader.chunks.build_chunk(ds, 0, 4)  # positions 0, 2, 3 good; 1 bad
  assert list(expected.bad) == [1] and len(expected.values["image"]) == 3
  # Rows of 3 good examples, each array aligned to 64 bytes: images 3 * 64 * 64 * 3 = 36864,
  # maps 3 * 64 * 64 = 12288, three int64 labels 3 * 8 = 24 -> 64 each.
  needed = 36864 + 12288 + 3 * 64
  released = []
  for buf in (memoryview(bytearray(needed)), memoryview(bytearray(needed - 1)), None):
    packed = loader.workers.pack_chunk(ds, 0, 4, buf)
    assert packed.needed == needed
    in_slot = {key for key, *_ in packed.placed}
    assert in_slot == ({"image", "saliency", "age", "gender", "expression"}
                       if buf is not None and len(buf) == needed else set())
    assert set(packed.lists) == {"id"}
    chunk = packed.unpack(0, buf, lambda: released.append(1))
    assert chunk.size == 4 and list(chunk.bad) == [1] and chunk.bad[1].id == expected.bad[1].id
    assert list(chunk.values) == list(expected.values)
    for key, rows in expected.values.items():
      np.testing.assert_array_equal(chunk.values[key], loader._stack(rows), err_msg=key)
    chunk.release()
    chunk.release()
    assert chunk.values == {}
  assert released == [1, 1, 1]  # once per chunk


# Worker processes cost seconds to start (each imports jax, grain and OpenCV): few tests use them.


def _worker_processes() -> list[str]:
  return [p.name for p in multiprocessing.active_children()
          if p.name.startswith("data-loader-worker")]


def test_workers_give_the_same_stream_and_skip_count(source):
  # Chunks of 4 positions: bad 7 ends one, bad 8 starts the next, bad 49 ends the last (48, 49).
  # Two workers with two threads keep 6 chunks ahead; the first ones come back pickled, the rest
  # (the 13 chunks minus those) in shared-memory slots.
  corrupt = _CorruptOne(source, (7, 8, 49))
  batches, skipped = [], []
  for workers, chunk_size in ((0, None), (2, 4)):
    ld = loader.make_eval_loader(corrupt, pipe=PIPE, batch_size=16, worker_count=workers,
                                 chunk_size=chunk_size)
    batches.append(_take(ld, 100))
    skipped.append(ld.skipped.to_dict())
  _assert_batches_equal(batches[0], batches[1])
  assert batches[1][-1]["mask"].tolist() == [True] * 15 + [False]  # 47 good examples
  # The workers only mark the bad examples: the consumer counts them, in stream order.
  reason = "image bytes cannot be decoded"
  assert skipped[0] == skipped[1] == {"count": 3, "examples": [
      {"id": source[i]["id"].decode(), "reason": reason} for i in (7, 8, 49)]}
  assert not _worker_processes()  # close() stopped them


def test_state_with_workers_resumes_the_threaded_stream_mid_chunk(source):
  k, m = 3, 4  # crosses the epoch boundary after batch 5 (49 good examples a pass)
  ref = _train(_CorruptOne(source, 7), seed=5)  # no workers, 10-position chunks
  head = list(itertools.islice(ref, k))
  ref_state = json.loads(json.dumps(ref.get_state()))
  reference = head + _take(ref, m)
  assert ref_state["position"] % 4 != 0  # in the middle of a 4-position chunk

  ld = _train(_CorruptOne(source, 7), seed=5, worker_count=2, chunk_size=4)
  _assert_batches_equal(list(itertools.islice(ld, k)), reference[:k])
  state = json.loads(json.dumps(ld.get_state()))
  assert state == ref_state  # the same state whatever the worker count
  _assert_batches_equal(list(itertools.islice(ld, 2)), reference[k:k + 2])
  ld.set_state(state)  # rewinds while the workers preprocess chunks ahead
  _assert_batches_equal(_take(ld, m), reference[k:])

  fresh = _train(_CorruptOne(source, 7), seed=5, worker_count=2, chunk_size=7)
  fresh.set_state(state)
  assert fresh.skipped.to_dict() == state["skipped"]
  _assert_batches_equal(_take(fresh, m), reference[k:])
  assert fresh.skipped.count == 2  # the bad example once in each of the two passes
  assert not _worker_processes()


def test_a_worker_error_is_raised_by_the_consumer_with_its_traceback(source):
  ld = loader.make_eval_loader(source, pipe=PIPE, batch_size=4, worker_count=1,
                               label_keys=("age", "no_such_label"))
  for _ in range(2):  # the failing chunk is not skipped: it raises again
    with pytest.raises(KeyError, match=r"has no \['no_such_label'\]") as error:
      next(ld)
    assert error.value.__notes__[-1].startswith("in data loader worker process 0:\nTraceback")
    assert ld.get_state()["position"] == 0
  ld.close()
  assert not _worker_processes()


class _FailsOnce(_CorruptOne):
  """Also raises OSError the first time record ``fail`` is read (say, a network file system)."""

  def __init__(self, source, bad: int, fail: int):
    super().__init__(source, bad)
    self.fail = fail

  def __getitem__(self, i):
    if i == self.fail:
      self.fail = None
      raise OSError(f"record {i} is not there yet")
    return super().__getitem__(i)


def test_a_failed_batch_leaves_the_state_as_it_was(source):
  # Unshuffled, chunks of 4: the second batch takes 10 and (bad) 11 from chunk [8, 12), then
  # chunk [12, 16) fails. The retry must neither lose 10 nor count 11 twice.
  ld = _train(_FailsOnce(source, bad=11, fail=13), shuffle=False, chunk_size=4, read_threads=0)
  next(ld)
  with pytest.raises(OSError, match="record 13 is not there yet"):
    next(ld)
  assert ld.get_state() == {"position": 10, "skipped": {"count": 0, "examples": []}}
  (batch,) = _take(ld, 1)
  assert list(batch["id"]) == [source[i]["id"].decode() for i in [10] + list(range(12, 21))]
  assert ld.get_state()["position"] == 21 and ld.skipped.count == 1


def test_a_shard_of_only_bad_examples_raises_instead_of_spinning():
  source = [{"image": b"not an image", "age": 0, "gender": 0, "expression": 0, "id": f"x{i}"}
            for i in range(3)]
  ld = loader.make_loader(source, pipe="decode", batch_size=2, seed=0)
  with pytest.raises(loader.AllExamplesBadError, match="all 3 examples of this shard"):
    next(ld)
  ld.close()


class _OddSizes:
  """Wraps a source; records 3 and 11 hold a 1x1 and a 120x90 JPEG instead of their image."""

  SIZES = {3: (1, 1), 11: (90, 120)}  # (H, W)

  def __init__(self, source):
    self.source = source

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    record = dict(self.source[i])
    if i in self.SIZES:
      import cv2  # pylint: disable=g-import-not-at-top
      ok, buf = cv2.imencode(".jpg", np.full(self.SIZES[i] + (3,), 128, np.uint8))
      assert ok
      record["image"] = buf.tobytes()
    return record


@pytest.mark.parametrize("workers", [0, 2])
def test_wrong_size_images_are_skipped_with_id_and_shape(source, workers):
  # A pipe without a resize passes each photo at its own size: without image_size the batch
  # fails to stack (naming no file); with it the two odd photos are skipped and named.
  odd = _OddSizes(source)
  size = np.shape(pp.Pipeline("decode")(dict(source[0]), np.random.default_rng(0))["image"])[:2]
  with pytest.raises(ValueError, match="same shape"):
    _take(loader.make_eval_loader(odd, pipe="decode", batch_size=16), 100)
  ld = loader.make_eval_loader(odd, pipe="decode", batch_size=16, image_size=size,
                               worker_count=workers)
  batches = _take(ld, 100)
  real = [i for b in batches for i, m in zip(b["id"], b["mask"]) if m]
  assert len(real) == N_VAL - 2 and all(b["image"].shape[1:3] == size for b in batches)
  ids = [source[i]["id"].decode() for i in (3, 11)]
  assert ld.skipped.to_dict() == {"count": 2, "examples": [
      {"id": ids[0], "reason": f"a 1x1 image gives an image of shape (1, 1, 3) after the pipe; "
                               f"the model takes {size[0]}x{size[1]}"},
      {"id": ids[1], "reason": f"a 120x90 image gives an image of shape (90, 120, 3) after the "
                               f"pipe; the model takes {size[0]}x{size[1]}"}]}
  # A pipe that resizes makes every photo fit: nothing is skipped.
  ld = loader.make_eval_loader(odd, pipe=PIPE, batch_size=16, image_size=(64, 64))
  assert len([m for b in _take(ld, 100) for m in b["mask"] if m]) == N_VAL
  assert ld.skipped.count == 0
