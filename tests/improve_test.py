"""Improve: the filtered round task, every loss end to end, early stopping, resume."""

import json
import os
import shutil

import jax
import numpy as np
import pytest
import test_utils

from rest_jax import errors
from rest_jax.core import (
  checkpoints,
  faults,
  filter_masks,
  filtering,
  improve_losses,
  losses,
  models,
  partitioning,
  preemption,
  train_loop,
)
from rest_jax.core import model_dir as model_dir_lib
from rest_jax.data import grow_io, improve_data, tasks
from rest_jax.rewards import reward_fns
from rest_jax.runs import evaluation, grow, improve

L = 16
MESH = partitioning.MeshConfig(num_devices=1)


@pytest.fixture(scope='module')
def grown(tmp_path_factory):
  """A tiny corpus, a random policy as bc/best and one Grow round scored by chrF."""
  root = tmp_path_factory.mktemp('improve')
  task, _ = test_utils.tiny_task(str(root), 'improve_test_corpus', held_out=8)
  cfg = test_utils.tiny_config(vocab_size=128)
  model_dir = str(root / 'run')
  test_utils.save_random_policy(model_dir, cfg, step=3)
  grow.grow(
    model_dir=model_dir,
    model_config=cfg,
    grow_config=grow.GrowConfig(
      task=task, max_sources=16, sources_per_shard=8, batch_size=8, input_length=L, target_length=L
    ),
    sampling=grow.SamplingConfig(num_samples=3),
    reward=reward_fns.SentenceChrF(),
    grow_round=1,
    mesh_config=MESH,
    progress=False,
  )
  return task, cfg, model_dir


def _config(**kw):
  base = dict(
    schedule=filtering.GlobalPercentiles((50.0, 75.0)),
    min_kept=filtering.MinKeptPolicy(min_examples=4),
    num_train_steps=4,
    batch_size=8,
    input_length=L,
    target_length=L,
    eval_period=2,
    patience=0,
    value=improve.ValueConfig(num_train_steps=2, batch_size=8),
  )
  base.update(kw)
  return improve.ImproveConfig(**base)


def _improve(grown, model_dir, config, step=1, init='bc/best', reward=None):
  task, cfg, _ = grown
  return improve.improve(
    model_dir=model_dir,
    model_config=cfg,
    improve_config=config,
    eval_config=evaluation.EvalConfig(task=task, batch_size=8, input_length=L, target_length=L),
    reward=reward or reward_fns.SentenceChrF(),
    grow_round=1,
    improve_step=step,
    init_checkpoint=init,
    mesh_config=MESH,
    progress=False,
  )


def _copy_run(grown, tmp_path):
  """A fresh run directory holding the fixture's round and bc/best (shared, read-only)."""
  src = grown[2]
  dst = str(tmp_path / 'run')
  os.makedirs(os.path.join(dst, 'checkpoints'))
  os.makedirs(os.path.join(dst, 'grow'))
  os.symlink(os.path.join(src, 'grow', 'g1'), os.path.join(dst, 'grow', 'g1'))
  os.symlink(os.path.join(src, 'checkpoints', 'bc'), os.path.join(dst, 'checkpoints', 'bc'))
  return dst


def _policy(model_dir, name, cfg):
  model = models.EncoderDecoderModel(cfg)
  params, step = checkpoints.restore_params(
    os.path.join(model_dir, 'checkpoints', name),
    model.init_params_fn(L, L),
    partitioning.make_mesh(MESH),
  )
  return params, step


def _in_order(name, batch_size, **kw):
  """One pass over a task's train split in file order."""
  return tasks.get_dataset(
    name,
    'train',
    input_length=L,
    target_length=L,
    batch_size=batch_size,
    shuffle=False,
    seed=0,
    repeat=False,
    **kw,
  )


def test_keys_filter_selects_exactly_the_mask(grown):
  _, _, model_dir = grown
  round_dir = model_dir_lib.ModelDir(model_dir).grow_round(1)
  cols = grow_io.read_records(round_dir)
  mask = filter_masks.top_k_per_source_mask(cols['reward'], cols['source_id'], 1)
  keys = grow_io.record_keys(cols['source_id'], cols['sample_index'])
  assert len(set(keys.tolist())) == len(keys)  # One key per record.
  name = grow_io.register_round_task(
    round_dir, grow_io.read_manifest(round_dir)['vocab_path'], keep_keys=keys[mask], tag='top1'
  )
  got = []
  for b in _in_order(name, 4, features=('reward', 'source_id')):
    got += list(zip(b['source_id'].tolist(), np.round(b['reward'], 5).tolist()))
  want = list(zip(cols['source_id'][mask].tolist(), np.round(cols['reward'][mask], 5).tolist()))
  assert sorted(got) == sorted(want) and len(got) == 16  # One record per source.
  with pytest.raises(ValueError, match='tag'):
    grow_io.register_round_task(round_dir, 'unused', keep_keys=keys)


def test_pack_with_features_is_a_clear_error(grown):
  task = grown[0]
  with pytest.raises(errors.DataError, match='pack'):
    tasks.get_dataset(
      task,
      'train',
      input_length=L,
      target_length=L,
      batch_size=4,
      shuffle=False,
      seed=0,
      repeat=False,
      pack=True,
      features=('reward',),
    )


def test_human_mix_fills_a_share_of_every_batch_from_all_of_the_human_data(grown, tmp_path):
  task, _, model_dir = grown
  cfg = _config(human_mix=0.25, pack=False)
  with pytest.raises(errors.UserInputError, match='human task'):
    improve_data.training_data(model_dir, cfg, 1, 1, 'mix', None)
  data, facts, human = improve_data.training_data(model_dir, cfg, 1, 1, 'mix', None, task)
  assert facts['human_mix'] == 0.25 and facts['n_human_examples'] == human[1]
  assert '25% of each batch from the human data' in facts['filter']

  def inputs(name):
    return {tuple(r) for b in _in_order(name, 64) for r in b['encoder_input_tokens'].tolist()}

  kept, everything = inputs(data), inputs(task)
  assert len(everything) > 2 * len(kept)  # The round holds 16 of the train sources.
  from_round, from_human = set(), set()
  batches = improve_data.train_batches(data, cfg, facts['n_train_examples'], human)(0)
  for _ in range(12):
    rows = next(batches)['encoder_input_tokens'].tolist()
    assert len(rows) == 8  # 6 from the filtered round, then 2 from the human data.
    from_round |= {tuple(r) for r in rows[:6]}
    from_human |= {tuple(r) for r in rows[6:]}
  assert from_round <= kept and from_human <= everything
  assert from_human - kept  # Human rows come from sources Grow never sampled.
  assert improve_data.human_rows(64, 0.5) == 32 and improve_data.human_rows(8, 0.01) == 1
  assert improve_data.human_rows(8, 0.99) == 7 and improve_data.human_rows(8, 0.0) == 0


def test_human_mix_is_checked():
  with pytest.raises(errors.UserInputError, match=r'\[0, 1\)'):
    improve.ImproveConfig(human_mix=1.0)
  with pytest.raises(errors.UserInputError, match="needs loss 'bc'"):
    improve.ImproveConfig(human_mix=0.5, loss='reward_weighted')


def test_learning_rate_decays_per_improve_step():
  cfg = improve.ImproveConfig(learning_rate=1e-3, lr_decay=0.5)
  assert [cfg.learning_rate_at(i) for i in (1, 2, 3)] == pytest.approx([1e-3, 5e-4, 2.5e-4])


def test_config_rejects_unknown_loss_and_init():
  with pytest.raises(ValueError, match='loss'):
    improve.ImproveConfig(loss='ppo')
  with pytest.raises(ValueError, match='init_from'):
    improve.ImproveConfig(init_from='scratch')


@pytest.mark.parametrize(
  'rewards_seen, patience, expected',
  [
    ([0.1, 0.2, 0.3], 2, False),
    ([0.3, 0.2, 0.1], 2, True),
    ([0.3, 0.2, 0.4, 0.4], 2, False),  # A tie is no improvement: one validation since 0.4.
    ([0.3, 0.2, 0.4, 0.4, 0.4], 2, True),  # ... and two ties stop.
    ([0.3, 0.2, 0.1], 0, False),  # patience 0 never stops.
  ],
)
def test_early_stopping_rule(rewards_seen, patience, expected):
  history = [{'step': i, 'reward': r} for i, r in enumerate(rewards_seen)]
  config = train_loop.LoopConfig(num_steps=10, best_metric='reward', patience=patience)
  assert train_loop.should_stop(history, config) == expected


def test_loss_fn_bc_and_binary_reward_weighted_equal_the_model_nll():
  model = test_utils.tiny_model()
  batch = test_utils.toy_batch()
  batch['reward'] = np.ones(len(batch['decoder_target_tokens']), np.float32)
  bc_fn = improve_losses.make_loss_fn(model, improve.ImproveConfig(loss='bc'))
  rw_fn = improve_losses.make_loss_fn(model, improve.ImproveConfig(loss='reward_weighted'))

  @jax.jit
  def all_three(rng, batch):
    params = jax.tree.map(
      lambda x: x.value if hasattr(x, 'value') else x,
      model.init(rng, 7, 6)['params'],
      is_leaf=lambda x: hasattr(x, 'value'),
    )
    return [f(params, batch, None)[0] for f in (model.loss_fn, bc_fn, rw_fn)]

  want, bc, rw = all_three(jax.random.key(0), batch)
  np.testing.assert_allclose([bc, rw], [want, want], rtol=1e-5)


# 'bc' and 'reward_weighted' also run in every ReST-loop test (tests/rest_test.py).
@pytest.mark.parametrize(
  'loss',
  [
    pytest.param(name, marks=pytest.mark.slow) if name in ('bc', 'reward_weighted') else name
    for name in sorted(losses.LOSSES)
  ],
)
def test_improve_step_trains_on_the_filtered_round(grown, tmp_path, loss):
  task, cfg, _ = grown
  model_dir = _copy_run(grown, tmp_path)
  result = _improve(grown, model_dir, _config(loss=loss, num_train_steps=2))
  cols = grow_io.read_records(model_dir_lib.ModelDir(model_dir).grow_round(1))
  mask = filtering.GlobalPercentiles((50.0, 75.0)).mask(
    0, cols['reward'], cols['source_id'], cols['is_human'].astype(bool)
  )
  assert result['n_train_examples'] == int(mask.sum()) == result['kept']
  assert result['kept_human'] + result['kept_samples'] == result['kept']
  assert result['tau'] == pytest.approx(
    np.percentile(cols['reward'][~cols['is_human'].astype(bool)], 50), rel=1e-5
  )
  assert result['loss_name'] == loss and result['steps'] == 2
  # Step 0 (the starting policy) is validated too: the baseline to beat.
  assert result['best_step'] in (0, 2) and np.isfinite(result['reward'])
  assert result['improved'] == (result['best_step'] == 2)
  # Checkpoints restore as a plain policy (BVMPO's temperature is dropped).
  before, _ = _policy(model_dir, 'bc/best', cfg)
  _, step = _policy(model_dir, 'g1_i1/best', cfg)
  after, _ = _policy(model_dir, 'g1_i1/last', cfg)
  assert step == result['best_step']
  assert set(after) == set(before)
  pairs = zip(jax.tree.leaves(after), jax.tree.leaves(before))
  assert max(float(np.abs(a - b).max()) for a, b in pairs) > 0
  if loss in ('bvmpo', 'oac'):
    value_dir = os.path.join(model_dir, 'checkpoints', 'g1_value', 'last')
    assert checkpoints.Checkpointer(value_dir).latest_step() == 2


def test_improve_resumes_and_finished_step_is_not_rerun(grown, tmp_path):
  _, cfg, _ = grown
  full_dir = _copy_run(grown, tmp_path / 'full')
  full = _improve(grown, full_dir, _config(num_train_steps=4))
  history = [json.loads(x) for x in open(os.path.join(full_dir, 'eval', 'g1_i1_history.jsonl'))]
  assert [h['step'] for h in history] == [0, 2, 4] and full['best_step'] in (0, 2, 4)
  cut_dir = _copy_run(grown, tmp_path / 'cut')
  _improve(grown, cut_dir, _config(num_train_steps=4))
  # Kill after step 2: drop what came later, as a crash would have left it.
  os.remove(os.path.join(cut_dir, 'eval', 'g1_i1_validation.json'))
  last = checkpoints.Checkpointer(os.path.join(cut_dir, 'checkpoints', 'g1_i1', 'last'))
  shutil.rmtree(os.path.join(last.directory, '4'))
  resumed = _improve(grown, cut_dir, _config(num_train_steps=4))
  for key in ('best_step', 'reward', 'bleu', 'chrf', 'steps'):
    assert resumed[key] == full[key], key
  a, _ = _policy(full_dir, 'g1_i1/last', cfg)
  b, _ = _policy(cut_dir, 'g1_i1/last', cfg)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
  # Finished: the result file short-circuits a rerun.
  again = _improve(grown, cut_dir, _config(num_train_steps=4))
  assert again == json.loads(open(os.path.join(cut_dir, 'eval', 'g1_i1_validation.json')).read())


def test_early_stopping_ends_the_step(grown, tmp_path):
  model_dir = _copy_run(grown, tmp_path)
  # Validate every step, stop after one validation without a better reward.
  result = _improve(grown, model_dir, _config(num_train_steps=5, eval_period=1, patience=1))
  history = [json.loads(x) for x in open(os.path.join(model_dir, 'eval', 'g1_i1_history.jsonl'))]
  assert [h['step'] for h in history] == list(range(len(history)))  # 0 (the start), 1, 2, ...
  config = train_loop.LoopConfig(num_steps=5, best_metric='reward', patience=1)
  stops = [train_loop.should_stop(history[: n + 1], config) for n in range(len(history))]
  # It trained until the first validation that said stop (or to the end), and no further.
  expected = stops.index(True) if True in stops else 5
  assert result['steps'] == history[-1]['step'] == expected
  assert result['stopped_early'] == (expected < 5)
  assert result['reward'] == max(h['reward'] for h in history)


def test_too_strict_filter_stops_with_statistics(grown, tmp_path):
  model_dir = _copy_run(grown, tmp_path)
  strict = _config(
    schedule=filtering.FixedThresholds((0.999,)),
    min_kept=filtering.MinKeptPolicy(min_examples=10_000),
  )
  with pytest.raises(filtering.FilterTooStrictError, match='Reward statistics'):
    _improve(grown, model_dir, strict)
  with pytest.raises(ValueError, match='only 1 steps'):
    _improve(grown, model_dir, _config(schedule=filtering.FixedThresholds((0.1,))), step=2)


def test_tied_validation_reward_keeps_the_starting_policy(grown, tmp_path):
  # A random policy never matches a reference exactly: every validation ties at 0,
  # so no step beats the starting policy (step 0), which stays `best`.
  _, cfg, _ = grown
  model_dir = _copy_run(grown, tmp_path)
  result = _improve(
    grown, model_dir, _config(num_train_steps=2, eval_period=1), reward=reward_fns.ExactMatch()
  )
  history = [json.loads(x) for x in open(os.path.join(model_dir, 'eval', 'g1_i1_history.jsonl'))]
  assert [(h['step'], h['reward']) for h in history] == [(0, 0.0), (1, 0.0), (2, 0.0)]
  assert result['best_step'] == 0 and result['improved'] is False
  best_dir = os.path.join(model_dir, 'checkpoints', 'g1_i1', 'best')
  assert checkpoints.Checkpointer(best_dir).all_steps() == [0]
  start, _ = _policy(model_dir, 'bc/best', cfg)
  kept, step = _policy(model_dir, 'g1_i1/best', cfg)
  assert step == 0
  for a, b in zip(jax.tree.leaves(kept), jax.tree.leaves(start)):
    np.testing.assert_array_equal(a, b)


def test_gold_with_a_lag_period_resumes_between_resyncs_exactly(grown, tmp_path, monkeypatch):
  """A notice after step 3 (re-syncs before steps 3 and 5): the rerun restores theta~ of step 2."""
  _, cfg, _ = grown
  config = _config(loss='gold', gold_lag_period=2, num_train_steps=6, eval_period=6)
  full_dir = _copy_run(grown, tmp_path / 'full')
  full = _improve(grown, full_dir, config)
  cut_dir = _copy_run(grown, tmp_path / 'cut')
  seen = {'steps': 0}
  point = faults.point

  def notice_after_step_3(name, during=False):
    if name == 'train_step':
      seen['steps'] += 1
      if seen['steps'] == 3:
        preemption.notify()
    point(name, during)

  monkeypatch.setattr(faults, 'point', notice_after_step_3)
  try:
    with pytest.raises(preemption.Preempted, match='at step 3'):
      _improve(grown, cut_dir, config)
  finally:
    preemption.reset()
  lagged = checkpoints.Checkpointer(model_dir_lib.ModelDir(cut_dir).lagged('g1_i1'))
  assert lagged.all_steps() == [2]
  resumed = _improve(grown, cut_dir, config)
  assert resumed['reward'] == full['reward'] and resumed['steps'] == full['steps'] == 6
  a, _ = _policy(full_dir, 'g1_i1/last', cfg)
  b, _ = _policy(cut_dir, 'g1_i1/last', cfg)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)
  assert not os.path.exists(model_dir_lib.ModelDir(cut_dir).lagged('g1_i1'))  # Done: removed.
