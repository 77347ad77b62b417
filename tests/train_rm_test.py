"""The reward-model driver end to end (tiny), and its sharded train step."""

import json
import os

import jax
import numpy as np
import pytest
import test_utils

from rest_jax import errors
from rest_jax.core import checkpoints, optimizers, partitioning, trainer
from rest_jax.core import train_state as train_state_lib
from rest_jax.data import grow_io, grow_sources, rm_data, tasks
from rest_jax.rewards import reward_model
from rest_jax.runs import grow, train_rm


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


def _tiny_corpus(root: str) -> tasks.ParallelCorpus:
  tsv, vocab = test_utils.write_tiny_corpus(root)
  return tasks.ParallelCorpus(
    name='rm_test_corpus', train_path=tsv, vocab_path=vocab, num_validation=20, num_test=10
  )


def _manifest(round_dir: str) -> dict:
  return json.loads(open(os.path.join(round_dir, 'manifest.json')).read())


def test_train_source_slice():
  corpus = tasks.tatoeba_en_de()
  size = len(corpus.splits()['train'])

  def slice_of(**kwargs):
    return rm_data.train_source_slice(train_rm.JudgmentsConfig(task=corpus, **kwargs))

  assert slice_of(num_train_sources=500) == (size - 500, 500)  # Default: the last sources.
  assert slice_of(num_train_sources=500, first_train_source=0) == (0, 500)
  assert slice_of(num_train_sources=500, first_train_source=-1000) == (size - 1000, 500)
  assert slice_of(num_train_sources=500, first_train_source=size - 100) == (size - 100, 100)
  for bad in (size, -size - 1):
    with pytest.raises(errors.DataError, match='first_train_source'):
      slice_of(num_train_sources=5, first_train_source=bad)


def test_grow_first_source_selects_the_slice(tmp_path):
  corpus = _tiny_corpus(str(tmp_path))
  train = corpus.splits()['train']

  def load(**kwargs):
    return grow_sources.load_sources(
      grow.GrowConfig(task=corpus, input_length=16, target_length=16, **kwargs)
    )

  got = load(first_source=7, max_sources=5)
  assert got.texts == [s for s, _ in train[7:12]] and got.references == [t for _, t in train[7:12]]
  assert [len(t) for t in got.tokens] == [len(t) for t in load(max_sources=12).tokens[7:]]
  assert load(first_source=len(train) - 3).texts == [s for s, _ in train[-3:]]  # To the end.
  assert load().texts == [s for s, _ in train]
  with pytest.raises(errors.DataError, match='first_source'):
    load(first_source=len(train), max_sources=2)


def test_train_rm_name_must_be_a_plain_name():
  with pytest.raises(errors.UserInputError, match='name'):
    train_rm.train_rm(
      model_dir='/tmp/unused',
      rm_config=None,
      policy_config=None,
      judgments_config=None,
      optimizer=None,
      num_train_steps=1,
      name='../judge',
    )


def test_train_rm_end_to_end_tiny_and_a_second_named_model(tmp_path):
  corpus = _tiny_corpus(str(tmp_path))
  train = corpus.splits()['train']
  size = len(train)
  policy_cfg = test_utils.tiny_config(vocab_size=128)
  model_dir = str(tmp_path / 'run')
  test_utils.save_random_policy(model_dir, policy_cfg, step=1)

  def run_train_rm(num_train_steps, **kwargs):
    name, seed = kwargs.pop('name', 'rm'), kwargs.pop('seed', 0)
    return train_rm.train_rm(
      model_dir=model_dir,
      rm_config=_rm_config(),
      policy_config=policy_cfg,
      judgments_config=train_rm.JudgmentsConfig(
        task=corpus,
        num_train_sources=40,
        num_eval_sources=20,
        policy_samples_per_source=1,
        corruptions_per_pair=2,
        use_mqm=False,
        input_length=16,
        target_length=12,
        seed=seed,
        **kwargs,
      ),
      optimizer=optimizers.OptimizerConfig(learning_rate=3e-3, warmup_steps=5),
      num_train_steps=num_train_steps,
      batch_size=8,
      eval_batch_size=16,
      mesh_config=partitioning.MeshConfig(num_devices=1),
      seed=seed,
      name=name,
      progress=False,
    )

  result = run_train_rm(30)
  eval_path = os.path.join(model_dir, 'eval', 'reward_model.json')
  on_disk = json.loads(open(eval_path).read())
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
    'over_length',
  }
  for p in on_disk['probes'].values():
    assert p['fraction_increased'] + p['fraction_decreased'] <= 1.0
  assert on_disk['sets']['synthetic_validation']['model']['n'] == 20 * 3
  assert on_disk['name'] == 'rm' and on_disk['labels'] == 'rules'
  # By default the judgments use the LAST 40 train sources.
  assert on_disk['train_sources'] == {'split': 'train', 'first': size - 40, 'count': 40}
  g0 = os.path.join(model_dir, 'grow', 'g0')
  manifest = _manifest(g0)
  # The policy samples use the run's lengths (not a fixed 32) and the same slice.
  assert manifest['grow_config']['input_length'] == 16
  assert manifest['grow_config']['target_length'] == 12
  assert manifest['grow_config']['first_source'] == size - 40
  assert manifest['grow_config']['max_sources'] == 40
  rec = grow_io.read_records(g0)
  ids = sorted(set(rec['source_id'].tolist()))
  assert ids == list(range(size - 40, size))  # Indices within the train split.
  for sid, src, ref in zip(rec['source_id'], rec['inputs_pretokenized'], rec['reference']):
    assert (src, ref) == train[sid]
  assert max(len(t) for t in rec['targets']) <= 12
  # Disjoint from the sources Grow samples by default (the first MAX_SOURCES of train).
  max_sources = size - 40
  grown = grow_sources.load_sources(
    grow.GrowConfig(task=corpus, max_sources=max_sources, input_length=16, target_length=16)
  )
  assert grown.texts == [s for s, _ in train[:max_sources]]
  assert not set(ids) & set(range(max_sources))
  assert (
    checkpoints.Checkpointer(os.path.join(model_dir, 'checkpoints', 'rm', 'last')).latest_step()
    == 30
  )

  # A judge in the same run directory: another name, seed, slice and labelling.
  before = {
    path: open(path, 'rb').read()
    for path in (eval_path, os.path.join(g0, 'manifest.json'), f'{model_dir}/config_rm.gin')
  }
  judge = run_train_rm(10, name='judge', seed=1, first_train_source=-80, labels='chrf')
  for path, data in before.items():
    assert open(path, 'rb').read() == data, path
  judge_eval = json.loads(open(os.path.join(model_dir, 'eval', 'reward_model_judge.json')).read())
  assert judge_eval == json.loads(json.dumps(judge))
  assert judge_eval['name'] == 'judge' and judge_eval['step'] == 10
  assert judge_eval['train_sources'] == {'split': 'train', 'first': size - 80, 'count': 40}
  # chrF labels: the chrF baseline agrees with them exactly (the rules do not).
  assert judge_eval['baselines']['chrf']['kendall_tau'] > 0.99
  assert on_disk['baselines']['chrf']['kendall_tau'] < 0.99
  judge_g0 = os.path.join(model_dir, 'grow', 'judge_g0')
  assert judge_eval['policy_samples_dir'] == judge_g0
  assert _manifest(judge_g0)['grow_config']['first_source'] == size - 80
  judge_ids = set(grow_io.read_records(judge_g0)['source_id'].tolist())
  assert judge_ids == set(range(size - 80, size - 40))
  for name, step in (('rm', 30), ('judge', 10)):
    ckpt = os.path.join(model_dir, 'checkpoints', name, 'last')
    assert checkpoints.Checkpointer(ckpt).latest_step() == step
    assert os.path.isdir(os.path.join(model_dir, 'summaries', name))
    assert os.path.exists(os.path.join(model_dir, f'config_{name}.gin'))
  assert os.path.exists(os.path.join(model_dir, 'config_grow_judge_g0.gin'))
