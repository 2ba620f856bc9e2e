"""Devices: the data-parallel mesh, host -> device transfer and the cross-process gathers.

Every jitted step of training and evaluation runs on ``make_mesh()``: one ``data`` axis over all
devices of all processes, the batch sharded along it and the state replicated. A process feeds
its own part of each global batch (``to_device``) and reads back the global batch's host values
(``gather`` / ``gather_ids``) in the order of the step's outputs.
"""

from __future__ import annotations

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np


def make_mesh() -> jax.sharding.Mesh:
  # Auto axes: jit propagates the batch sharding (Flax layers such as dropout are not written
  # for explicit-sharding mode, the default axis type of jax.make_mesh since JAX 0.9).
  return jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


def data_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """The batch's sharding: rows split along ``data``."""
  return NamedSharding(mesh, P("data"))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  """The state's sharding: a full copy on every device."""
  return NamedSharding(mesh, P())


def to_device(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Numeric arrays of this process' batch -> global arrays sharded along ``data``."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()
          if v.dtype != object}


def gather(x: np.ndarray) -> np.ndarray:
  """This process' part of a batch -> the global batch, in the order of the step's outputs.

  The rows are placed with the evaluation step's own sharding (the ``data`` axis of
  ``make_mesh()``), so labels and masks line up with the predictions whatever order the mesh
  gives the processes' devices.
  """
  if jax.process_count() == 1:
    return np.asarray(x)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  global_x = jax.make_array_from_process_local_data(data_sharding(make_mesh()), np.asarray(x))
  return np.asarray(multihost_utils.process_allgather(global_x, tiled=True))


def gather_ids(ids) -> np.ndarray:
  """String ids of this process' part of a batch -> those of the global batch (as ``gather``).

  Collectives move numbers only: each id travels as UTF-8 bytes in a zero-padded uint8 row, with
  its length gathered first (to agree on the row width and to cut the padding off exactly).
  """
  if ids is None:
    return np.zeros(0, object)
  if jax.process_count() == 1:
    return np.asarray(ids, object)
  encoded = [str(i).encode("utf-8") for i in ids]
  lengths = gather(np.asarray([len(b) for b in encoded], np.int32))
  rows = np.zeros((len(encoded), max(int(lengths.max(initial=0)), 1)), np.uint8)
  for row, b in zip(rows, encoded):
    row[:len(b)] = np.frombuffer(b, np.uint8)
  gathered = gather(rows)
  out = np.empty(len(gathered), object)
  out[:] = [bytes(r[:n]).decode("utf-8") for r, n in zip(gathered, lengths)]
  return out
