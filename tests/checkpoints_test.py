"""Orbax round trip: whole state, sharded target, params-only restore."""

import os

import jax
import numpy as np
import pytest
import test_utils

from rest_jax.core import checkpoints, models, optimizers, partitioning
from rest_jax.core import train_state as train_state_lib


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


def test_async_save_keeps_the_saved_values_under_donation(tmp_path):
  # The train loop donates the state to the next step right after `save`
  # returns; an async save must already hold its own copy by then.
  mesh = partitioning.make_mesh(partitioning.MeshConfig(data=2, fsdp=2, model=2))
  state, shardings = _state(mesh)
  want = jax.tree.map(np.array, state)
  ckpt = checkpoints.Checkpointer(str(tmp_path / 'last'), max_to_keep=2, async_save=True)
  ckpt.save(1, state)
  bump = jax.jit(lambda s: jax.tree.map(lambda x: x + 1, s), donate_argnums=0)
  state = bump(bump(state))
  ckpt.save(2, state)  # Waits for step 1's write first.
  assert ckpt.all_steps() == [1, 2]  # Reading waits for step 2's write.
  for step, expect in ((1, want), (2, jax.tree.map(lambda x: (x + 1) + 1, want))):
    got = ckpt.restore(train_state_lib.abstract_state(state, shardings), step=step)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expect)):
      np.testing.assert_array_equal(np.asarray(a), b)
  ckpt.close()
  with pytest.raises(ValueError, match='async_save'):
    checkpoints.Checkpointer(str(tmp_path / 'best'), best_metric='chrf', async_save=True)


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


def _tiny_state(value=0.0):
  return {'x': np.full((2,), value, np.float32)}


def test_tied_metric_keeps_the_earlier_best(tmp_path):
  best = checkpoints.Checkpointer(str(tmp_path / 'best'), max_to_keep=1, best_metric='reward')
  assert best.save(1, _tiny_state(1), {'reward': 0.5})
  assert not best.save(2, _tiny_state(2), {'reward': 0.5})  # A tie is no gain: not written.
  assert best.best_step() == 1 and best.all_steps() == [1]
  assert best.save(3, _tiny_state(3), {'reward': 0.6})  # Strictly better: becomes best.
  assert best.best_step() == 3 and best.all_steps() == [3]
  restored = best.restore(_tiny_state())
  np.testing.assert_array_equal(restored['x'], [3, 3])
  # A fresh Checkpointer on the same directory (a resumed run) applies the same rule.
  again = checkpoints.Checkpointer(str(tmp_path / 'best'), max_to_keep=1, best_metric='reward')
  assert not again.save(4, _tiny_state(4), {'reward': 0.6})
  assert again.best_step() == 3


def test_tie_rule_in_min_mode_and_with_two_kept(tmp_path):
  low = checkpoints.Checkpointer(
    str(tmp_path / 'min'), max_to_keep=1, best_metric='loss', best_mode='min'
  )
  low.save(1, _tiny_state(), {'loss': 2.0})
  low.save(2, _tiny_state(), {'loss': 2.0})
  assert low.best_step() == 1
  low.save(3, _tiny_state(), {'loss': 1.5})
  assert low.best_step() == 3 and low.all_steps() == [3]
  two = checkpoints.Checkpointer(str(tmp_path / 'two'), max_to_keep=2, best_metric='reward')
  two.save(1, _tiny_state(), {'reward': 0.5})
  two.save(2, _tiny_state(), {'reward': 0.5})  # Not full yet: kept, but ranks below step 1.
  assert two.best_step() == 1 and two.all_steps() == [1, 2]
  assert not two.save(3, _tiny_state(), {'reward': 0.5})  # Full: a tie does not enter.
  two.save(4, _tiny_state(), {'reward': 0.7})  # Replaces the later of the tied steps.
  assert two.best_step() == 4 and two.all_steps() == [1, 4]


def test_is_better_is_strict_and_ranks_nan_last():
  assert checkpoints.is_better(0.6, 0.5) and not checkpoints.is_better(0.5, 0.5)
  assert checkpoints.is_better(0.4, 0.5, 'min') and not checkpoints.is_better(0.5, 0.5, 'min')
  assert checkpoints.is_better(0.0, float('nan')) and not checkpoints.is_better(float('nan'), 0.0)
  assert checkpoints.is_better(0.1, -np.inf)
  with pytest.raises(ValueError, match='best_mode'):
    checkpoints.is_better(1.0, 0.0, 'maximum')


def test_restore_params_names_what_differs(tmp_path):
  mesh = partitioning.make_mesh(partitioning.MeshConfig(), jax.devices()[:1])
  state, _ = _state(mesh)
  extra = {**state.params, 'bvmpo_log_temperature': np.zeros((), np.float32)}
  ckpt = checkpoints.Checkpointer(str(tmp_path / 'best'))
  ckpt.save(4, state.replace(params=extra))
  model = test_utils.tiny_model()
  # Entries beside the model's own (Improve's temperature) ride along.
  params, step = checkpoints.restore_params(ckpt.directory, model.init_params_fn(4, 4), mesh)
  assert step == 4 and 'bvmpo_log_temperature' not in params
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for config, pattern in [
    (test_utils.tiny_config(emb_dim=32), r'another architecture.*shape of'),
    (test_utils.tiny_config(num_decoder_layers=3), r'checkpoint lacks \d+ model params'),
    (test_utils.tiny_config(num_encoder_layers=1), r'model lacks \d+ checkpoint params'),
    (test_utils.tiny_config(vocab_size=64), r'shape of .*checkpoint \(16, 32\), model \(16, 64\)'),
  ]:
    other = models.EncoderDecoderModel(config)
    with pytest.raises(checkpoints.CheckpointMismatchError, match=pattern):
      checkpoints.restore_params(ckpt.directory, other.init_params_fn(4, 4), mesh)
  with pytest.raises(FileNotFoundError, match=r'step 9 .*\[4\]'):
    checkpoints.restore_params(ckpt.directory, model.init_params_fn(4, 4), mesh, step=9)
  missing = str(tmp_path / 'none')
  with pytest.raises(FileNotFoundError, match='train one first'):
    checkpoints.restore_params(missing, model.init_params_fn(4, 4), mesh)
  assert not os.path.exists(missing)
