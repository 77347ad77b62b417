"""Train step: learning, sharded equivalence, non-finite detection."""

import flax.linen as nn
import jax
import numpy as np
import pytest
import test_utils

from rest_jax import optimizers, partitioning, trainer
from rest_jax import train_state as train_state_lib


def _setup(mesh_config, devices, learning_rate=3e-3, steps=100):
  model = test_utils.tiny_model()
  tx = optimizers.make(
    optimizers.OptimizerConfig(learning_rate=learning_rate, warmup_steps=5, weight_decay=0.0),
    steps,
  )
  mesh = partitioning.make_mesh(mesh_config, devices)
  state, shardings = train_state_lib.create_sharded(
    lambda r: model.init(r, 8, 8)['params'], tx, jax.random.key(0), mesh
  )
  steps_fn = trainer.Trainer(loss_fn=model.loss_fn, tx=tx, mesh=mesh, state_shardings=shardings)
  return model, mesh, state, shardings, steps_fn


def test_tiny_model_overfits_a_few_pairs():
  _, mesh, state, _, steps_fn = _setup(partitioning.MeshConfig(), jax.devices()[:1])
  batch = partitioning.shard_batch(test_utils.toy_batch(4, 8, 8, seed=1), mesh)
  rng = jax.random.key(1)
  first = None
  for _ in range(200):
    state, metrics = steps_fn.train_step(state, batch, rng)
    first = float(metrics['loss']) if first is None else first
  final = steps_fn.eval_step(state.params, batch)
  assert first > 3.0
  assert float(final['loss']) < 0.1, float(final['loss'])
  assert float(final['accuracy']) == 1.0
  assert int(state.step) == 200


def _run_steps(mesh_config, devices, n=3):
  _, mesh, state, _, steps_fn = _setup(mesh_config, devices)
  rng = jax.random.key(2)
  losses = []
  for i in range(n):
    batch = partitioning.shard_batch(test_utils.toy_batch(8, 8, 8, seed=10 + i), mesh)
    state, metrics = steps_fn.train_step(state, batch, rng)
    losses.append(float(metrics['loss']))
  return losses, trainer.to_host(state.params), state


def test_sharded_train_step_matches_single_device():
  assert len(jax.devices()) == 8, 'conftest sets 8 fake CPU devices'
  ref_losses, ref_params, _ = _run_steps(partitioning.MeshConfig(), jax.devices()[:1])
  losses, params, state = _run_steps(
    partitioning.MeshConfig(data=2, fsdp=2, model=2), jax.devices()
  )
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-4)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
  # The state really is sharded: MLP kernels split over 'model', embed over 'fsdp'.
  wi = state.params['encoder_layer_0']['mlp']['wi_0']['kernel']
  assert wi.sharding.spec == jax.sharding.PartitionSpec('fsdp', 'model')
  mu = jax.tree.leaves(state.opt_state)
  assert any(getattr(x, 'sharding', None) is not None and x.ndim == 2 for x in mu)


def test_mesh_config_errors():
  with pytest.raises(ValueError, match='needs 6 devices'):
    partitioning.MeshConfig(data=3, fsdp=2, model=1).shape(8)
  assert partitioning.MeshConfig(data=-1, fsdp=2, model=2).shape(8) == (2, 2, 2)


def test_non_finite_loss_names_phase_and_step():
  with pytest.raises(trainer.NonFiniteLossError, match='bc: non-finite loss nan at step 7'):
    trainer.check_finite({'loss': np.nan}, step=7, phase='bc')


def test_train_step_is_pure_function():
  model = test_utils.tiny_model()
  tx = optimizers.make(optimizers.OptimizerConfig(), 10)
  params = nn.unbox(model.init(jax.random.key(0), 8, 8))['params']
  state = train_state_lib.TrainState.create(params, tx)
  batch = test_utils.toy_batch(2, 8, 8)
  a, ma = trainer.train_step(state, batch, jax.random.key(0), loss_fn=model.loss_fn, tx=tx)
  b, mb = trainer.train_step(state, batch, jax.random.key(0), loss_fn=model.loss_fn, tx=tx)
  assert float(ma['loss']) == float(mb['loss'])
  assert int(a.step) == 1
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_array_equal(x, y)
