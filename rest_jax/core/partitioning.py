"""Device mesh and the one table that maps logical axis names to mesh axes.

The mesh always has the axes `('data', 'fsdp', 'model')`:

* `data`: pure data parallelism (batch split, parameters replicated);
* `fsdp`: batch split *and* parameters / optimizer state sharded (ZeRO-3);
* `model`: tensor parallelism over heads, MLP width and vocabulary.

Modules name their axes (`network.py`); `standard_logical_axis_rules` maps the
names; `state_shardings` turns an abstract boxed state into `NamedSharding`s
(`jax.eval_shape` -> `nn.get_partition_spec` -> `nn.logical_to_mesh_sharding`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rest_jax.core import multihost

MESH_AXES = ('data', 'fsdp', 'model')
BATCH_AXES = ('data', 'fsdp')

LogicalRules = Sequence[tuple[str, Any]]


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Shape of the device mesh; one entry may be -1 (fill with what is left)."""

  data: int = -1  # Data-parallel replicas.
  fsdp: int = 1  # Fully-sharded data parallelism (params sharded over it).
  model: int = 1  # Tensor (model) parallelism.
  num_devices: int | None = None  # Use only the first N devices (None = all).

  def shape(self, num_devices: int) -> tuple[int, int, int]:
    """Resolves -1 against `num_devices`; raises ValueError if it can't."""
    dims = [self.data, self.fsdp, self.model]
    if dims.count(-1) > 1:
      raise ValueError(f'MeshConfig: at most one axis may be -1, got {dims}.')
    known = int(np.prod([d for d in dims if d != -1]))
    if -1 in dims:
      if num_devices % known:
        raise ValueError(f'MeshConfig {dims}: {num_devices} devices not divisible by {known}.')
      dims[dims.index(-1)] = num_devices // known
    if int(np.prod(dims)) != num_devices:
      raise ValueError(
        f'MeshConfig {dims} needs {int(np.prod(dims))} devices but {num_devices} are available;'
        ' set --gin.MESH_DATA / MESH_FSDP / MESH_MODEL (or use -1 for one of them).'
      )
    return tuple(dims)


def make_mesh(config: MeshConfig = MeshConfig(), devices: Sequence[Any] | None = None) -> Mesh:
  """Builds a ('data', 'fsdp', 'model') mesh over `devices` (default: all)."""
  devices = list(jax.devices() if devices is None else devices)
  if config.num_devices is not None:
    devices = devices[: config.num_devices]
  shape = config.shape(len(devices))
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def standard_logical_axis_rules() -> tuple[tuple[str, Any], ...]:
  """Logical name -> mesh axis. Earlier rules win when a mesh axis is taken."""
  return (
    # Parameters.
    ('vocab', 'model'),
    ('mlp', 'model'),
    ('heads', 'model'),
    ('kv_heads', 'model'),  # Grouped key/value heads (decoder-only LM).
    ('embed', 'fsdp'),
    ('kv', None),
    ('relpos_buckets', None),
    # Activations.
    ('activation_batch', BATCH_AXES),
    ('activation_length', None),
    ('activation_embed', None),
    ('activation_heads', 'model'),
    ('activation_kv_heads', 'model'),
    ('activation_kv', None),
    ('activation_mlp', 'model'),
    ('activation_vocab', 'model'),
  )


@contextlib.contextmanager
def axis_rules(mesh: Mesh, rules: LogicalRules | None = None):
  """Context under which `nn.with_logical_constraint` resolves on `mesh`."""
  rules = standard_logical_axis_rules() if rules is None else rules
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def state_shardings(abstract_boxed: Any, mesh: Mesh, rules: LogicalRules | None = None) -> Any:
  """NamedSharding tree for a pytree of (possibly boxed) abstract arrays.

  Leaves created with `nn.with_logical_partitioning` are sharded by their
  logical names; every other leaf (step counters, scalars) is replicated.
  """
  rules = standard_logical_axis_rules() if rules is None else rules
  specs = nn.get_partition_spec(abstract_boxed)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of a [B, ...] batch: B split over ('data', 'fsdp')."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  """Fully replicated sharding."""
  return NamedSharding(mesh, PartitionSpec())


def num_batch_shards(mesh: Mesh) -> int:
  """How many ways a batch is split (data x fsdp)."""
  return mesh.shape['data'] * mesh.shape['fsdp']


@functools.lru_cache(maxsize=64)
def spans_processes(mesh: Mesh) -> bool:
  """Whether `mesh` has devices of other processes (cached: meshes are hashable)."""
  return any(d.process_index != jax.process_index() for d in mesh.devices.flat)


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Places a global host batch on the mesh, split over the batch axes.

  Every process holds the same global batch (the input pipeline is
  deterministic and reads it on every host) and transfers only the rows its own
  devices hold: in a multi-process run, process p feeds its share of every
  batch. On a mesh that spans processes, calls 1, 2, 4, 8, ... check that every
  process passed the same batch (`multihost.check_same`). Non-numeric entries
  (e.g. texts) are dropped.

  Args:
    batch: {name: [B, ...] numpy array}; B divisible by `num_batch_shards(mesh)`.
    mesh: the device mesh.

  Returns:
    {name: [B, ...] global jax.Array sharded over ('data', 'fsdp')}.
  """
  global _shard_batch_calls
  sharding = batch_sharding(mesh)
  arrays = {k: np.asarray(v) for k, v in sorted(batch.items())}
  out = {k: v for k, v in arrays.items() if v.dtype.kind in 'biuf'}
  if not spans_processes(mesh):
    return {k: jax.device_put(v, sharding) for k, v in out.items()}  # A host-local mesh.
  # The mesh spans processes. Check that they hold the same batch at calls 1, 2,
  # 4, 8, ...: cheap, and it catches a host whose input pipeline differs early.
  _shard_batch_calls += 1
  if _shard_batch_calls & (_shard_batch_calls - 1) == 0:
    data = b''.join(k.encode() + np.ascontiguousarray(v).tobytes() for k, v in out.items())
    multihost.check_same(data, f'shard_batch call {_shard_batch_calls}')
  return {
    k: jax.make_array_from_callback(v.shape, sharding, lambda index, v=v: v[index])
    for k, v in out.items()
  }


_shard_batch_calls = 0  # This process's shard_batch calls on meshes that span processes.
