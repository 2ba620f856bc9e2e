"""``loader.Stream``: the same stream as grain's source -> shard -> shuffle -> repeat ->
map_with_index chain it replaces (so that the record skips grain's per-element layers)."""

import grain
import pytest

from data_pipelines import loader


class _Records:
  """Distinct records; None for one index (grain's map then gives None too)."""

  def __init__(self, n, none_at=None):
    self.n, self.none_at = n, none_at

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    if not 0 <= i < self.n:
      raise IndexError(i)
    return None if i == self.none_at else {"i": i}


def _tag(position, record):
  return (position, record["i"])


@pytest.mark.parametrize("size,shard,count,shuffle,epochs", [
    (37, 0, 1, True, None), (37, 2, 3, True, None), (37, 1, 4, False, 1), (5, 0, 2, True, 3),
    (1, 0, 1, True, None), (12, 3, 4, False, None)])
def test_stream_is_grains_chain(size, shard, count, shuffle, epochs):
  source = _Records(size)
  ds = grain.MapDataset.source(source)[shard::count]
  if shuffle:
    ds = ds.shuffle(seed=11)
  if epochs != 1:
    ds = ds.repeat(epochs)
  ds = ds.map_with_index(_tag)
  stream = loader.Stream(source, loader.stream_index(
      size, seed=11, shuffle=shuffle, num_epochs=epochs, shard_index=shard, shard_count=count),
      _tag)
  assert len(stream) == len(ds)
  n = min(len(ds), 5 * len(range(shard, size, count)))  # several epochs where repeated
  assert [stream[p] for p in range(n)] == [ds[p] for p in range(n)]
  if epochs is None:  # later epochs are new permutations of the shard
    shard_ids = sorted(range(shard, size, count))
    k = len(shard_ids)
    assert sorted(stream[p][1] for p in range(7 * k, 8 * k)) == shard_ids


def test_a_missing_record_maps_to_none_as_in_grain():
  source = _Records(6, none_at=4)
  stream = loader.Stream(source, loader.stream_index(6, seed=0, shuffle=False, num_epochs=1,
                                                     shard_index=0, shard_count=1), _tag)
  ds = grain.MapDataset.source(source).map_with_index(_tag)
  assert [stream[p] for p in range(6)] == [ds[p] for p in range(6)]
  assert stream[4] is None
