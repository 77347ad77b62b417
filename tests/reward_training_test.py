"""The reward-model driver end to end (tiny), and its sharded train step."""

import json
import os

import jax
import numpy as np
import test_utils

from rest_jax import (
  checkpoints,
  optimizers,
  partitioning,
  reward_model,
  reward_training,
  tasks,
  trainer,
)
from rest_jax import train_state as train_state_lib


def _rm_config(vocab_size=128, max_length=24):
  return reward_model.RewardModelConfig(
    encoder=test_utils.tiny_config(vocab_size=vocab_size), max_length=max_length
  )


def _toy_batch(rows=8, length=24, seed=0):
  rs = np.random.RandomState(seed)
  inputs = rs.randint(2, 100, size=(rows, length)).astype(np.int32)
  inputs[:, -3:] = 0
  return {'inputs': inputs, 'score': rs.rand(rows).astype(np.float32)}


def _steps(mesh_config, devices):
  cfg = _rm_config()
  tx = optimizers.make(optimizers.OptimizerConfig(learning_rate=1e-3, warmup_steps=0), 10)
  mesh = partitioning.make_mesh(mesh_config, devices)
  state, shardings = train_state_lib.create_sharded(
    lambda r: reward_model.init_params(cfg, r)['params'], tx, jax.random.key(0), mesh
  )
  steps = trainer.Trainer(
    loss_fn=reward_model.make_loss_fn(cfg), tx=tx, mesh=mesh, state_shardings=shardings
  )
  losses = []
  for i in range(3):
    batch = partitioning.shard_batch(_toy_batch(seed=i), mesh)
    state, m = steps.train_step(state, batch, jax.random.key(1))
    losses.append(float(m['loss']))
  return losses, trainer.to_host(state.params)


def test_rm_train_step_on_8_devices_matches_1():
  ref_losses, ref_params = _steps(partitioning.MeshConfig(), jax.devices()[:1])
  losses, params = _steps(partitioning.MeshConfig(data=2, fsdp=2, model=2), jax.devices())
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-4)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_train_rm_end_to_end_tiny(tmp_path):
  tsv, vocab = test_utils.write_tiny_corpus(str(tmp_path))
  corpus = tasks.ParallelCorpus(
    name='rm_test_corpus', train_path=tsv, vocab_path=vocab, num_validation=20, num_test=10
  )
  policy_cfg = test_utils.tiny_config(vocab_size=128)
  model_dir = str(tmp_path / 'run')
  test_utils.save_random_policy(model_dir, policy_cfg, step=1)
  result = reward_training.train_rm(
    model_dir=model_dir,
    rm_config=_rm_config(),
    policy_config=policy_cfg,
    judgments_config=reward_training.JudgmentsConfig(
      task=corpus,
      num_train_sources=40,
      num_eval_sources=20,
      policy_samples_per_source=1,
      corruptions_per_pair=2,
      use_mqm=False,
    ),
    optimizer=optimizers.OptimizerConfig(learning_rate=3e-3, warmup_steps=5),
    num_train_steps=30,
    batch_size=8,
    eval_batch_size=16,
    mesh_config=partitioning.MeshConfig(num_devices=1),
    progress=False,
  )
  on_disk = json.loads(open(os.path.join(model_dir, 'eval', 'reward_model.json')).read())
  assert on_disk['step'] == 30 and result['num_train_judgments'] == 40 * 3 + 40
  for key in ('kendall_tau', 'pearson', 'pairwise_accuracy', 'baselines', 'probes'):
    assert key in on_disk
  assert set(on_disk['baselines']) == {'length', 'chrf'}
  assert set(on_disk['probes']) == {
    'repetition',
    'permutation',
    'truncation',
    'copy_source',
    'empty',
  }
  assert on_disk['sets']['synthetic_validation']['model']['n'] == 20 * 3
  # The synthetic labels are chrF, so the chrF baseline agrees with them exactly.
  assert on_disk['baselines']['chrf']['kendall_tau'] > 0.99
  assert os.path.exists(os.path.join(model_dir, 'grow', 'g0', 'manifest.json'))
  assert (
    checkpoints.Checkpointer(os.path.join(model_dir, 'checkpoints', 'rm', 'last')).latest_step()
    == 30
  )
