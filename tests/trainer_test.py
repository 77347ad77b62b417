"""Train step: learning, sharded equivalence, non-finite detection."""

import flax.linen as nn
import jax
import numpy as np
import pytest
import test_utils

from rest_jax.core import optimizers, partitioning, trainer
from rest_jax.core import train_state as train_state_lib


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


def _leaves(tree):
  return [np.array(x) for x in jax.tree.leaves(tree)]  # Host copies.


def test_train_step_is_pure_function():
  """Same inputs give bitwise-equal outputs; the input state is left as it was."""
  model = test_utils.tiny_model()
  # No warm-up: the first update has a nonzero learning rate.
  config = optimizers.OptimizerConfig(learning_rate=1e-2, warmup_steps=0, decay='constant')
  tx = optimizers.make(config, 10)
  params = nn.unbox(model.init(jax.random.key(0), 8, 8))['params']
  state = train_state_lib.TrainState.create(params, tx)
  before = _leaves(state)
  batch = test_utils.toy_batch(2, 8, 8)
  step = lambda s: trainer.train_step(s, batch, jax.random.key(0), loss_fn=model.loss_fn, tx=tx)  # noqa: E731
  a, ma = step(state)
  b, mb = step(state)

  # The input state (step, params, optimizer state) is unchanged.
  for x, y in zip(_leaves(state), before, strict=True):
    np.testing.assert_array_equal(x, y)
  # Both calls agree bit for bit: new state and every metric.
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(_leaves(a), _leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)
  assert sorted(ma) == sorted(mb) and {'loss', 'grad_norm'} <= set(ma)
  for k in ma:
    np.testing.assert_array_equal(np.asarray(ma[k]), np.asarray(mb[k]), err_msg=k)
  # And the step did something: one update, every parameter moved.
  assert int(a.step) == 1
  assert float(ma['grad_norm']) > 0
  still = [
    jax.tree_util.keystr(path)
    for (path, x), y in zip(
      jax.tree_util.tree_leaves_with_path(a.params), jax.tree.leaves(params), strict=True
    )
    if np.array_equal(np.asarray(x), np.asarray(y))
  ]
  assert not still, f'parameters the step left unchanged: {still}'
