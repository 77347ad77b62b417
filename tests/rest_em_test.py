"""ReST-EM in the ReST loop with a decoder-only LM, and the online GRPO arms after it.

The policy is the tiny decoder-only LM (`models.DecoderOnlyModel`; tests/rest_test.py
runs the encoder-decoder through the same loop, with its helpers used here), every
evaluated policy gets pass@k. A file of its own so that pytest-xdist runs it beside
rest_test.py's long module fixture instead of after it.
"""

import json
import os

import numpy as np
import pytest
import test_utils
from rest_test import L, run_rest

from rest_jax.core import files, filtering, network
from rest_jax.core import model_dir as model_dir_lib
from rest_jax.data import grow_io
from rest_jax.rewards import reward_fns
from rest_jax.runs import (
  evaluation,
  grow,
  improve,
  online_rl_steps,
  rest_online,
  rest_phases,
  rest_state,
)

LM = network.DecoderConfig(
  vocab_size=128, emb_dim=32, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=64, num_layers=2
)


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  root = tmp_path_factory.mktemp('rest_em_corpus')
  return test_utils.tiny_task(str(root), 'rest_em_test_corpus', held_out=12)[0]


def test_rest_em_restarts_every_iteration_from_base_and_online_arms_follow(corpus, tmp_path):
  model_dir = str(tmp_path / 'run')
  test_utils.save_random_policy(model_dir, LM, step=1)
  rows = run_rest(
    corpus,
    model_dir,
    model_config=LM,
    initial_policy='bc/best',
    reward=reward_fns.Binarized(reward_fns.SentenceChrF(), threshold=0.05),
    grow_config=grow.GrowConfig(
      task=corpus,
      max_sources=16,
      sources_per_shard=16,
      batch_size=8,
      input_length=L,
      target_length=L,
      human_fraction=0.0,
    ),
    improve_config=improve.ImproveConfig(
      loss='reward_weighted',
      init_from='base',
      schedule=filtering.TopKPerSource(k=1, min_reward=0.5),
      min_kept=filtering.MinKeptPolicy(min_examples=1),
      num_train_steps=2,
      batch_size=8,
      input_length=L,
      target_length=L,
      eval_period=2,
      pack=False,
    ),
    num_improve_steps=1,
    eval_config=evaluation.EvalConfig(
      task=corpus, batch_size=12, input_length=L, target_length=L, pass_k=3
    ),
    judge_phase=None,
    control=False,
    online_arms=rest_online.OnlineArms(
      online_rl_steps.OnlineRLConfig(
        algorithm='grpo',
        sources_per_iteration=4,
        num_samples=2,
        epochs=1,
        minibatch_size=8,
        learning_rate=1e-3,
        eval_every=4,
      ),
      max_iterations=6,  # The time arm would run dozens of the tiny iterations.
    ),
  )
  state = rest_state.read_state(model_dir)
  arms = ['online_samples', 'eval_online_samples', 'online_time', 'eval_online_time']
  assert state['plan'] == rest_phases.plan(2, 1, bc=False, rm=False) + arms
  # The online arms: as many samples as Grow round 1 (16 sources x 2), and the
  # ReST phases' wall time at the measured rate; every row says what it cost.
  by_phase = {r['phase']: r for r in rows}
  assert (
    by_phase['online_samples']['samples'] == 32 == by_phase['online_samples']['n_train_examples']
  )
  assert by_phase['online_samples']['loss_name'] == 'grpo'
  rest_seconds = sum(s for p, s in state['seconds'].items() if p.startswith(('grow', 'improve')))
  paths = model_dir_lib.ModelDir(model_dir)
  done = [json.load(open(paths.validation(a))) for a in ('online_samples', 'online_time')]
  # The rate: the mean time between online_samples' samplings, the first gap (compiling) left out.
  starts = [r['started'] for r in files.read_jsonl(paths.rollout_log('online_samples'))]
  gaps = np.diff(starts)[1:]
  by_time = max(1, int(rest_seconds / gaps.mean()))
  assert len(starts) == 4 and done[1]['iterations'] == min(6, by_time)
  grpo = online_rl_steps.OnlineRLConfig(
    algorithm='grpo', sources_per_iteration=4, num_samples=2, minibatch_size=8
  )
  assert rest_online.iterations(model_dir, 'online_time', grpo) == by_time  # Before the cap.
  assert rows[0]['samples'] == rows[0]['train_tokens'] == rows[0]['seconds'] == 0  # BC.
  assert [r['samples'] for r in rows[1:3]] == [32, 64]  # ReST (G=1), (G=2): both rounds.
  assert all(r['seconds'] > 0 and r['train_tokens'] > 0 for r in rows[1:])
  html = open(os.path.join(model_dir_lib.ModelDir(model_dir).report, 'report.html')).read()
  assert 'Online GRPO (equal samples)' in html and 'Online GRPO (equal time)' in html
  assert 'reward_per_cost.png' in html and 'Distinct samples' in html
  rows = rows[:3]
  # Grow samples the latest policy; every Improve starts again from the base.
  assert state['policies'] == {
    'grow_g1': 'bc/best',
    'improve_g1_i1': 'bc/best',
    'grow_g2': 'g1_i1/best',
    'improve_g2_i1': 'bc/best',
  }
  for g in (1, 2):
    cols = grow_io.read_records(model_dir_lib.ModelDir(model_dir).grow_round(g))
    assert not cols['is_human'].any()  # ReST-EM adds no human data.
    assert set(np.unique(cols['reward'])) <= {0.0, 1.0}
  assert [r['loss_name'] for r in rows[1:]] == ['reward_weighted'] * 2
  assert all(r['tau'] == 0.5 for r in rows[1:])
  # pass@k of 3 samples per source on both splits; majority@k needs a reward
  # that votes (verifiers.FinalAnswer; Binarized chrF does not).
  for r in rows:
    assert 0 <= r['test_pass_at_k'] <= 1 and 0 <= r['val_pass_at_k'] <= 1
    assert r['test_majority_at_k'] is None
