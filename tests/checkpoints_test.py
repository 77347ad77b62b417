"""Orbax round trip: whole state, sharded target, params-only restore."""

import jax
import numpy as np
import test_utils

from rest_jax import checkpoints, optimizers, partitioning
from rest_jax import train_state as train_state_lib


def _state(mesh):
  model = test_utils.tiny_model()
  tx = optimizers.make(optimizers.OptimizerConfig(), 10)
  return train_state_lib.create_sharded(
    lambda r: model.init(r, 4, 4)['params'], tx, jax.random.key(0), mesh
  )


def test_save_restore_round_trip(tmp_path):
  mesh = partitioning.make_mesh(partitioning.MeshConfig(data=2, fsdp=2, model=2))
  state, shardings = _state(mesh)
  state = state.replace(step=state.step + 7)
  ckpt = checkpoints.Checkpointer(str(tmp_path / 'last'), max_to_keep=2)
  for step in (3, 5, 7):
    ckpt.save(step, state)
  assert ckpt.all_steps() == [5, 7]
  assert ckpt.latest_step() == 7
  # Restore into a differently sharded (single-device) target.
  mesh1 = partitioning.make_mesh(partitioning.MeshConfig(), jax.devices()[:1])
  fresh, shardings1 = _state(mesh1)
  restored = ckpt.restore(train_state_lib.abstract_state(fresh, shardings1))
  assert int(restored.step) == 7
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  leaf = restored.params['encoder_layer_0']['mlp']['wi_0']['kernel']
  assert len(leaf.sharding.device_set) == 1


def test_params_only_partial_restore_and_best(tmp_path):
  mesh = partitioning.make_mesh(partitioning.MeshConfig(), jax.devices()[:1])
  state, shardings = _state(mesh)
  best = checkpoints.Checkpointer(str(tmp_path / 'best'), max_to_keep=1, best_metric='chrf')
  best.save(1, state, {'chrf': 10.0})
  best.save(2, state, {'chrf': 30.0})
  best.save(3, state, {'chrf': 20.0})
  assert best.best_step() == 2
  assert best.all_steps() == [2]
  target = {'params': train_state_lib.abstract_state(state.params, shardings.params)}
  restored = best.restore(target, partial=True)
  assert set(restored) == {'params'}
  for a, b in zip(jax.tree.leaves(restored['params']), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_restore_missing_names_directory(tmp_path):
  ckpt = checkpoints.Checkpointer(str(tmp_path / 'empty'))
  try:
    ckpt.restore({'x': np.zeros(2)})
  except FileNotFoundError as e:
    assert str(tmp_path / 'empty') in str(e)
  else:
    raise AssertionError('expected FileNotFoundError')
