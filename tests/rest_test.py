"""The ReST loop: end to end on the tiny config, resume after every phase, ReST-EM."""

import json
import os

import jax
import numpy as np
import pytest
import test_utils

from rest_jax import errors
from rest_jax.core import (
  checkpoints,
  filtering,
  models,
  network,
  optimizers,
  partitioning,
)
from rest_jax.core import model_dir as model_dir_lib
from rest_jax.data import grow_io, tasks
from rest_jax.rewards import corruptions, reward_model
from rest_jax.runs import (
  bc,
  evaluation,
  grow,
  improve,
  infer,
  rest,
  rest_phases,
  rest_rewards,
  rest_state,
  rest_summary,
  train_rm,
)

L = 16
MESH = partitioning.MeshConfig(num_devices=1)


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  root = tmp_path_factory.mktemp('rest_corpus')
  return test_utils.tiny_task(str(root), 'rest_test_corpus', held_out=12)[0]


def _rm_phase(task, **judgments):
  """A tiny reward-model phase; `judgments` override its JudgmentsConfig fields."""
  return rest.RewardModelPhase(
    rm_config=reward_model.RewardModelConfig(
      encoder=network.T5Config(
        vocab_size=128,
        emb_dim=16,
        num_heads=2,
        head_dim=8,
        mlp_dim=32,
        num_encoder_layers=1,
        num_decoder_layers=0,
      ),
      max_length=32,
    ),
    judgments=train_rm.JudgmentsConfig(
      task=task,
      num_train_sources=16,
      num_eval_sources=8,
      policy_samples_per_source=1,
      corruptions_per_pair=1,
      use_mqm=False,
      input_length=L,
      target_length=L,
      **judgments,
    ),
    optimizer=optimizers.OptimizerConfig(learning_rate=3e-3, warmup_steps=2),
    num_train_steps=6,
    batch_size=8,
  )


def run_rest(task, model_dir, *, max_phases=None, **overrides):
  kwargs = dict(
    model_dir=model_dir,
    model_config=test_utils.tiny_config(vocab_size=128),
    task=task,
    bc=rest.BCConfig(
      train_data=bc.TrainDataConfig(task=task, batch_size=16, input_length=L, target_length=L),
      optimizer=optimizers.OptimizerConfig(learning_rate=3e-3, warmup_steps=2),
      num_train_steps=8,
      eval_period=8,
      log_period=4,
    ),
    reward_model_phase=_rm_phase(task),
    judge_phase=_rm_phase(task, first_train_source=-40, seed=1),
    control=True,
    guard=True,
    grow_config=grow.GrowConfig(
      task=task, max_sources=16, sources_per_shard=8, batch_size=8, input_length=L, target_length=L
    ),
    sampling=grow.SamplingConfig(num_samples=2),
    improve_config=improve.ImproveConfig(
      schedule=filtering.GlobalPercentiles((50.0, 75.0)),
      min_kept=filtering.MinKeptPolicy(min_examples=4),
      num_train_steps=4,
      batch_size=8,
      input_length=L,
      target_length=L,
      eval_period=2,
      patience=0,
    ),
    eval_config=evaluation.EvalConfig(task=task, batch_size=12, input_length=L, target_length=L),
    best_of_n=infer.InferConfig(
      task=task,
      max_sources=8,
      num_samples=4,
      curve_ns=(1, 2, 4),
      batch_size=8,
      input_length=L,
      target_length=L,
    ),
    num_grow_rounds=2,
    num_improve_steps=2,
    mesh_config=MESH,
    progress=False,
    max_phases=max_phases,
  )
  kwargs.update(overrides)
  return rest.rest(**kwargs)


def _params(model_dir, checkpoint):
  model = models.EncoderDecoderModel(test_utils.tiny_config(vocab_size=128))
  params, _ = checkpoints.restore_params(
    os.path.join(model_dir, 'checkpoints', checkpoint),
    model.init_params_fn(L, L),
    partitioning.make_mesh(MESH),
  )
  return params


@pytest.fixture(scope='module')
def full_run(corpus, tmp_path_factory):
  model_dir = str(tmp_path_factory.mktemp('rest_full') / 'run')
  return model_dir, run_rest(corpus, model_dir)


def test_loop_end_to_end(full_run, corpus):
  model_dir, rows = full_run
  assert [(r['phase'], r['g'], r['i']) for r in rows] == [
    ('bc', 0, 0),
    ('improve', 1, 1),
    ('improve', 1, 2),
    ('bc_more', 1, 2),
    ('improve', 2, 1),
    ('improve', 2, 2),
    ('bc_more', 2, 2),
  ]
  summary = json.load(open(os.path.join(model_dir, 'eval', 'summary.json')))
  assert summary['rows'] == rows
  for row in rows:
    assert set(rest_summary.SUMMARY_COLUMNS) <= set(row)
    for split in ('val', 'test'):
      assert 0 <= row[f'{split}_reward'] <= 1 and row[f'{split}_chrf'] >= 0
  assert rows[0]['n_train_examples'] == tasks.dataset_size(corpus, 'train')
  state = rest_state.read_state(model_dir)
  assert (
    state['finished']
    == state['plan']
    == rest_phases.plan(2, 2, bc=True, rm=True, judge=True, control=True)
  )
  assert state['current'] is None
  # ReST: each Improve step starts from the previous policy, each Grow samples the latest.
  assert state['policies'] == {
    'grow_g1': 'bc/best',
    'improve_g1_i1': 'bc/best',
    'improve_g1_i2': 'g1_i1/best',
    'grow_g2': 'g1_i2/best',
    'improve_g2_i1': 'g1_i2/best',
    'improve_g2_i2': 'g2_i1/best',
    # The control runs its own chain from BC.
    'bc_more_g1_i1': 'bc/best',
    'bc_more_g1_i2': 'bc_more_g1_i1/best',
    'bc_more_g2_i1': 'bc_more_g1_i2/best',
    'bc_more_g2_i2': 'bc_more_g2_i1/best',
  }
  # Each Improve row's tau and count come from its own filter of its round.
  for row in [r for r in rows if r['phase'] == 'improve']:
    cols = grow_io.read_records(model_dir_lib.ModelDir(model_dir).grow_round(row['g']))
    human = cols['is_human'].astype(bool)
    tau = np.percentile(cols['reward'][~human], (50.0, 75.0)[row['i'] - 1])
    assert row['tau'] == pytest.approx(tau, rel=1e-5)
    assert row['n_train_examples'] == int((cols['reward'] > np.float32(tau)).sum())
  manifest = grow_io.read_manifest(model_dir_lib.ModelDir(model_dir).grow_round(2))
  assert manifest['reward_source'] == 'guarded_learned_reward'
  # Best-of-N curves of BC and the final policy, and the report, regenerated.
  for name, checkpoint in (('bc', 'bc/best'), ('final', 'g2_i2/best')):
    curve = json.load(open(os.path.join(model_dir, 'eval', f'best_of_n_{name}.json')))
    assert curve['n'] == [1, 2, 4] and curve['checkpoint'].endswith(checkpoint)
    assert curve['reward'] == sorted(curve['reward'])
  page = open(os.path.join(model_dir, 'report', 'report.html')).read()
  assert '<table id="summary">' in page
  for png in ('best_of_n.png', 'reward_per_phase.png', 'reward_distribution_g2.png'):
    assert png in page and os.path.exists(os.path.join(model_dir, 'report', png))
  for row in rows:
    for split in ('val', 'test'):
      assert 0 <= row[f'{split}_hacking_rate'] <= 1 and row[f'{split}_length_ratio'] > 0
  assert manifest['policy_checkpoint'].endswith(os.path.join('g1_i2', 'best'))


def test_control_matches_the_improve_steps_on_human_data(full_run, corpus):
  model_dir, _ = full_run
  for g in (1, 2):
    for i in (1, 2):
      done = json.load(open(os.path.join(model_dir, 'eval', f'g{g}_i{i}_validation.json')))
      ctl = json.load(open(os.path.join(model_dir, 'eval', f'bc_more_g{g}_i{i}_validation.json')))
      # Same optimizer steps, learning rate and batch; its own (human) data; selected the same way.
      assert ctl['steps'] == done['steps'] and ctl['learning_rate'] == done['learning_rate']
      assert ctl['loss_name'] == 'bc' and ctl['tau'] is None
      assert ctl['n_train_examples'] == tasks.dataset_size(corpus, 'train')
      history = [
        json.loads(line)
        for line in open(os.path.join(model_dir, 'eval', f'bc_more_g{g}_i{i}_history.jsonl'))
      ]
      assert ctl['reward'] == max(r['reward'] for r in history)
  # The control's parameters moved away from BC (it trained).
  moved = [
    not np.array_equal(a, b)
    for a, b in zip(
      jax.tree.leaves(_params(model_dir, 'bc/best')),
      jax.tree.leaves(_params(model_dir, 'bc_more_g1_i1/last')),
    )
  ]
  assert any(moved)


def test_summary_and_report_name_the_split_of_every_number(full_run):
  model_dir, rows = full_run
  summary = json.load(open(os.path.join(model_dir, 'eval', 'summary.json')))
  assert 'selected on' in summary['splits']['val'] and 'never' in summary['splits']['test']
  # The results (test) come before the selection split in the columns.
  columns = summary['columns']
  assert columns.index('test_reward') < columns.index('val_reward')
  table = rest_summary.format_summary(rows)
  assert table.splitlines()[0].startswith('test_*: never selected on')
  page = open(os.path.join(model_dir, 'report', 'report.html')).read()
  assert 'Val reward (selection)' in page and 'Test reward' in page
  assert 'Test judge reward' in page and 'BC control (G=2, I=2)' in page


def test_eval_phases_bootstrap_test_bleu_against_bc_and_the_control(full_run):
  model_dir, rows = full_run
  path = lambda name: os.path.join(model_dir, 'eval', name)  # noqa: E731
  bc = json.load(open(path('eval_bc_test_outputs.json')))
  assert 'vs_bc' not in json.load(open(path('eval_bc.json')))['test']
  final = json.load(open(path('eval_g2_i2.json')))['test']
  control = json.load(open(path('eval_bc_more_g2_i2.json')))['test']
  n = len(bc['references'])
  assert final['vs_bc']['num_sentences'] == n == final['num_examples']
  # The whole-set difference is the table's difference; the interval holds it.
  by_phase = {(r['phase'], r['g'], r['i']): r for r in rows}
  want = by_phase[('improve', 2, 2)]['test_bleu'] - by_phase[('bc', 0, 0)]['test_bleu']
  assert final['vs_bc']['bleu']['diff'] == pytest.approx(want, abs=1e-6)
  lo, hi = final['vs_bc']['bleu']['ci95']
  assert lo <= final['vs_bc']['bleu']['diff'] <= hi
  want = by_phase[('improve', 2, 2)]['test_chrf'] - by_phase[('bc_more', 2, 2)]['test_chrf']
  assert control['rest_vs_control']['chrf']['diff'] == pytest.approx(want, abs=1e-6)
  assert 'rest_vs_control' not in final
  page = open(os.path.join(model_dir, 'report', 'report.html')).read()
  assert 'Test, paired bootstrap' in page
  assert 'ReST (G=2, I=2) - BC control (G=2, I=2)' in page


def test_judge_is_a_second_reward_model_on_other_sources(full_run, corpus):
  model_dir, rows = full_run
  for row in rows:
    for split in ('val', 'test'):
      assert 0 <= row[f'{split}_judge_reward'] <= 1
  assert any(r['test_judge_reward'] != r['test_reward'] for r in rows)
  rm = json.load(open(os.path.join(model_dir, 'eval', 'reward_model.json')))
  judge = json.load(open(os.path.join(model_dir, 'eval', 'reward_model_rm_judge.json')))
  size = tasks.dataset_size(corpus, 'train')
  spans = {
    'rm': range(rm['train_sources']['first'], rm['train_sources']['first'] + 16),
    'judge': range(judge['train_sources']['first'], judge['train_sources']['first'] + 16),
    'grow': range(0, 16),
  }
  assert spans['rm'] == range(size - 16, size) and spans['judge'] == range(size - 40, size - 24)
  for a, b in (('rm', 'judge'), ('rm', 'grow'), ('judge', 'grow')):
    assert not set(spans[a]) & set(spans[b])
  # Every Grow manifest records its own sources and the reward models'.
  manifest = grow_io.read_manifest(model_dir_lib.ModelDir(model_dir).grow_round(1))
  assert manifest['sources'] == {'split': 'train', 'first': 0, 'count': 16}
  assert manifest['reward_train_sources']['rm'] == rm['train_sources']
  assert manifest['reward_train_sources']['rm_judge'] == judge['train_sources']
  # The run's reward (the reward model behind the guards) was probed.
  probes = json.load(open(os.path.join(model_dir, 'eval', 'reward_probes.json')))
  assert set(probes['probes']) == set(corruptions.PROBES) and probes['n'] == 8
  assert probes['reward'] == 'guarded_learned_reward'
  for kind in ('empty', 'copy_source'):  # The guards give them 0, below any sigmoid.
    assert probes['probes'][kind]['fraction_decreased'] == 1.0


def test_overlapping_reward_model_and_grow_sources_are_refused(corpus):
  phase = _rm_phase(corpus, first_train_source=8)
  grow_config = grow.GrowConfig(task=corpus, max_sources=16)
  with pytest.raises(errors.UserInputError, match=r'overlap the Grow sources \[0, 16\)'):
    rest_rewards.check_disjoint_sources(corpus, grow_config, phase, None)
  judge = _rm_phase(corpus, first_train_source=None)  # The last 16, as the reward model's.
  with pytest.raises(errors.UserInputError, match='judge'):
    rest_rewards.check_disjoint_sources(corpus, grow_config, _rm_phase(corpus), judge)
  # Disjoint: fine.
  rest_rewards.check_disjoint_sources(corpus, grow_config, _rm_phase(corpus), None)


# Slow (47 s of the suite's 10 minutes): `.ci/run` checks the same property on every
# push with tests/fault_injection.py, which SIGKILLs and SIGTERMs the tiny loop at
# points spread over its phases and compares the result with an uninterrupted run.
@pytest.mark.slow
def test_resume_after_every_phase_equals_uninterrupted(full_run, corpus, tmp_path):
  # Every phase is a function of the phases before it, so a G=1 run is the
  # first part of the G=2 run: stop it after each of its phases in turn
  # (bc, rm, eval_bc, grow, improve, eval, improve, eval), restart, and compare.
  full_dir, full_rows = full_run
  model_dir = str(tmp_path / 'run')
  plan = rest_phases.plan(1, 2, bc=True, rm=True, judge=True, control=True)
  assert plan == rest_phases.plan(2, 2, bc=True, rm=True, judge=True, control=True)[: len(plan)]
  for n in range(1, len(plan) + 1):
    run_rest(corpus, model_dir, max_phases=1, num_grow_rounds=1)
    state = rest_state.read_state(model_dir)
    assert state['finished'] == plan[:n] and state['current'] is None
  rows = rest_summary.read_summary(model_dir)
  # The checkpoint paths and the wall time differ between the runs; nothing else.
  strip = lambda rs: [
    {k: v for k, v in r.items() if k not in ('checkpoint', 'seconds')} for r in rs
  ]
  assert strip(rows) == strip(full_rows[:4])
  for name in ('bc/best', 'g1_i1/best', 'g1_i2/best', 'g1_i2/last', 'bc_more_g1_i2/best'):
    pairs = zip(jax.tree.leaves(_params(full_dir, name)), jax.tree.leaves(_params(model_dir, name)))
    for a, b in pairs:
      np.testing.assert_array_equal(a, b)
  full_g1 = grow_io.read_manifest(model_dir_lib.ModelDir(full_dir).grow_round(1))
  g1 = grow_io.read_manifest(model_dir_lib.ModelDir(model_dir).grow_round(1))
  assert [s['sha256'] for s in g1['shards']] == [s['sha256'] for s in full_g1['shards']]
  # A finished run does nothing more and returns the same rows.
  assert strip(run_rest(corpus, model_dir, num_grow_rounds=1)) == strip(full_rows[:4])


def test_restart_with_another_config_is_a_clear_error(tmp_path):
  model_dir = str(tmp_path)
  config = {'num_grow_rounds': 1, 'loss': 'bc'}
  run = rest_state.RunState(model_dir, rest_phases.plan(1, 2, bc=True, rm=False), config)
  run.start('bc')
  run.finish('bc', 1.0)
  # More Grow rounds continue the run.
  rest_state.RunState(
    model_dir, rest_phases.plan(2, 2, bc=True, rm=False), {**config, 'num_grow_rounds': 2}
  )
  with pytest.raises(errors.UserInputError, match='does not continue'):
    rest_state.RunState(
      model_dir, rest_phases.plan(1, 2, bc=True, rm=False), {**config, 'loss': 'gold'}
    )
  with pytest.raises(errors.UserInputError, match='does not continue'):
    rest_state.RunState(model_dir, rest_phases.plan(1, 2, bc=False, rm=False), config)
