"""Reward-model losses and evaluation metrics on hand-computed cases; a tiny RM learns."""

import dataclasses
import itertools
import math

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest
import sacrebleu
import test_utils

from rest_jax.core import partitioning, trainer
from rest_jax.core import train_state as train_state_lib
from rest_jax.rewards import reward_model, rm_metrics


def _rm_config(**overrides) -> reward_model.RewardModelConfig:
  base = reward_model.RewardModelConfig(encoder=test_utils.tiny_config(), max_length=16)
  return dataclasses.replace(base, **overrides)


# Kendall tau and Pearson.


def test_kendall_and_pearson_perfect_and_reversed():
  gold = [0.1, 0.4, 0.5, 0.9]
  assert rm_metrics.kendall_tau([1, 2, 3, 4], gold) == pytest.approx(1.0)
  assert rm_metrics.kendall_tau([4, 3, 2, 1], gold) == pytest.approx(-1.0)
  assert rm_metrics.pearson([2, 4, 6, 8], [1, 2, 3, 4]) == pytest.approx(1.0)
  assert rm_metrics.pearson([8, 6, 4, 2], [1, 2, 3, 4]) == pytest.approx(-1.0)


def test_kendall_tau_b_by_hand():
  # pred = [1, 2, 2, 5, 0], gold = [1, 3, 2, 4, 4]; the 10 pairs (i, j):
  #   concordant: (0,1) (0,2) (0,3) (1,3) (2,3)        -> C = 5
  #   discordant: (0,4) (1,4) (2,4) (pred 0 is lowest) -> D = 3
  #   tied in pred only: (1,2); tied in gold only: (3,4)
  # tau-b = (C - D) / sqrt((n0 - n_pred_ties) * (n0 - n_gold_ties)) = 2 / sqrt(9 * 9) = 2/9.
  pred, gold = [1, 2, 2, 5, 0], [1, 3, 2, 4, 4]
  assert rm_metrics.kendall_tau(pred, gold) == pytest.approx(2 / 9)
  # Same pairs: 9 with differing gold, 5 ordered alike, 1 predicted tie -> 5.5 / 9.
  assert rm_metrics.pairwise_accuracy(pred, gold) == pytest.approx(5.5 / 9)


def test_pearson_by_hand():
  # Centered: x = [-1, 0, 1], y = [-1, 1, 0]; x.y = 1; |x| |y| = 2 -> 0.5.
  assert rm_metrics.pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)


def test_constant_and_tiny_inputs_give_zero():
  for fn in (rm_metrics.kendall_tau, rm_metrics.pearson):
    assert fn([0.3, 0.3, 0.3], [1, 2, 3]) == 0.0
    assert fn([1, 2, 3], [5, 5, 5]) == 0.0
    assert fn([1.0], [2.0]) == 0.0


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match='equal'):
    rm_metrics.kendall_tau([1, 2], [1, 2, 3])
  with pytest.raises(ValueError, match='non-finite.*index 1'):
    rm_metrics.pearson([1, math.nan, 3], [1, 2, 3])
  with pytest.raises(ValueError, match='groups'):
    rm_metrics.pairwise_accuracy([1, 2], [1, 2], groups=['a'])


# Pairwise accuracy.


def test_pairwise_accuracy_groups_ties_and_no_pairs():
  pred = [1, 2, 3, 3, 2, 1, 7]
  gold = [1, 2, 3, 1, 2, 3, 9]
  groups = ['a', 'a', 'a', 'b', 'b', 'b', 'c']
  # Group a: 3 pairs, all right; b: 3 pairs, all wrong; c: one row, no pair -> 3 / 6.
  assert rm_metrics.pairwise_accuracy(pred, gold, groups) == pytest.approx(0.5)
  # A predicted tie counts half; a gold tie is not a pair.
  assert rm_metrics.pairwise_accuracy([1, 1], [0, 1]) == pytest.approx(0.5)
  assert rm_metrics.pairwise_accuracy([1, 2, 3], [0, 0, 1]) == pytest.approx(1.0)
  assert math.isnan(rm_metrics.pairwise_accuracy([1, 2, 3], [4, 4, 4]))
  assert math.isnan(rm_metrics.pairwise_accuracy([1, 2], [1, 2], groups=[0, 1]))
  assert math.isnan(rm_metrics.pairwise_accuracy([], []))


def _brute_pairwise(pred, gold, groups):
  credit = pairs = 0
  for i, j in itertools.combinations(range(len(pred)), 2):
    if groups[i] != groups[j] or gold[i] == gold[j]:
      continue
    pairs += 1
    if pred[i] == pred[j]:
      credit += 0.5
    elif (pred[i] < pred[j]) == (gold[i] < gold[j]):
      credit += 1
  return credit / pairs


def test_pairwise_accuracy_matches_brute_force(monkeypatch):
  rs = np.random.RandomState(0)
  pred, gold = rs.randint(0, 4, 60), rs.randint(0, 5, 60)  # Many ties on both sides.
  groups = rs.randint(0, 5, 60)
  want = _brute_pairwise(pred, gold, groups)
  assert rm_metrics.pairwise_accuracy(pred, gold, groups) == pytest.approx(want)
  want_all = _brute_pairwise(pred, gold, [0] * 60)
  assert rm_metrics.pairwise_accuracy(pred, gold) == pytest.approx(want_all)
  monkeypatch.setattr(rm_metrics, '_PAIR_BLOCK', 7)  # Several row blocks per group.
  assert rm_metrics.pairwise_accuracy(pred, gold) == pytest.approx(want_all)
  assert rm_metrics.pairwise_accuracy(pred, gold, groups) == pytest.approx(want)


def test_summarize():
  out = rm_metrics.summarize([1, 2, 2, 5, 0], [1, 3, 2, 4, 4], groups=None)
  assert set(out) == {'kendall_tau', 'pearson', 'pairwise_accuracy', 'n'}
  assert out['n'] == 5
  assert out['kendall_tau'] == pytest.approx(2 / 9)
  assert out['pairwise_accuracy'] == pytest.approx(5.5 / 9)
  assert out['pearson'] == pytest.approx(np.corrcoef([1, 2, 2, 5, 0], [1, 3, 2, 4, 4])[0, 1])


# Probes and baselines.


def test_probe_deltas_with_length_scorer():
  calls = []

  def score_fn(sources, candidates):
    assert len(sources) == len(candidates)
    return np.array([len(c) for c in candidates], np.float32)

  def probe_fn(text, source, kind):
    calls.append((text, source, kind))
    return {'repeat': f'{text} {text}', 'empty': '', 'copy': source, 'same': 'zz'}[kind]

  sources, references = ['xyz', 'x'], ['ab', 'abcd']  # Reference scores 2 and 4.
  out = rm_metrics.probe_deltas(
    score_fn, sources, references, probe_fn, ['repeat', 'empty', 'copy', 'same']
  )
  assert list(out) == ['repeat', 'empty', 'copy', 'same']
  # repeat: 'ab ab' = 5, 'abcd abcd' = 9 -> deltas 3, 5.
  assert out['repeat'] == {
    'mean_delta': 4.0,
    'fraction_increased': 1.0,
    'fraction_decreased': 0.0,
    'mean_score_reference': 3.0,
    'mean_score_probed': 7.0,
  }
  # empty: 0, 0 -> deltas -2, -4.
  assert out['empty'] == {
    'mean_delta': -3.0,
    'fraction_increased': 0.0,
    'fraction_decreased': 1.0,
    'mean_score_reference': 3.0,
    'mean_score_probed': 0.0,
  }
  # copy the source: 3, 1 -> deltas 1, -3.
  assert out['copy'] == {
    'mean_delta': -1.0,
    'fraction_increased': 0.5,
    'fraction_decreased': 0.5,
    'mean_score_reference': 3.0,
    'mean_score_probed': 2.0,
  }
  # 'zz' scores 2, 2 -> deltas 0 (a tie: neither increased nor decreased), -2.
  assert out['same']['fraction_increased'] == 0.0 and out['same']['fraction_decreased'] == 0.5
  assert calls[:2] == [('ab', 'xyz', 'repeat'), ('abcd', 'x', 'repeat')]
  with pytest.raises(ValueError, match='no examples'):
    rm_metrics.probe_deltas(score_fn, [], [], probe_fn, ['empty'])
  with pytest.raises(ValueError, match='shape'):
    rm_metrics.probe_deltas(lambda s, c: np.zeros(3), sources, references, probe_fn, ['empty'])


def test_baselines():
  cands = ['Der Hund schläft.', 'Ein Hund', '']
  refs = ['Der Hund schläft.', 'Der Hund schläft.', 'Die Katze.']
  np.testing.assert_array_equal(rm_metrics.length_baseline(cands), [17.0, 8.0, 0.0])
  chrf = rm_metrics.chrf_baseline(cands, refs)
  want = [sacrebleu.sentence_chrf(c, [r]).score / 100 for c, r in zip(cands, refs)]
  np.testing.assert_allclose(chrf, want, rtol=1e-6)
  assert chrf[0] == pytest.approx(1.0) and chrf[2] == 0.0


# Loss math.


def test_mse_by_hand():
  pred, target = np.array([0.5, 1.0]), np.array([0.0, 1.0])
  assert float(reward_model._mse(pred, target)) == pytest.approx(0.125)  # (0.25 + 0) / 2
  assert float(reward_model._mse(pred, target, np.array([2.0, 0.0]))) == pytest.approx(0.25)
  assert float(reward_model._mse(pred, target, np.array([1.0, 3.0]))) == pytest.approx(0.0625)
  assert float(reward_model._mse(pred, target, np.zeros(2))) == 0.0


def test_bt_loss_by_hand():
  # d = raw_a - raw_b = log 3 -> sigmoid(d) = 0.75.
  a, b = np.array([math.log(3.0) + 1.0]), np.array([1.0])
  assert float(reward_model._bt_loss(a, b, np.array([1.0]))) == pytest.approx(-math.log(0.75))
  assert float(reward_model._bt_loss(a, b, np.array([0.0]))) == pytest.approx(-math.log(0.25))
  half = -(0.5 * math.log(0.75) + 0.5 * math.log(0.25))
  assert float(reward_model._bt_loss(a, b, np.array([0.5]))) == pytest.approx(half)
  # Equal scores: log 2 whatever the preference; weights average rows.
  zeros = np.zeros(2)
  assert float(reward_model._bt_loss(zeros, zeros, np.array([1.0, 0.0]))) == pytest.approx(
    math.log(2.0)
  )
  rows = reward_model._bt_loss(
    np.array([math.log(3.0), 0.0]), np.zeros(2), np.array([1.0, 1.0]), np.array([1.0, 3.0])
  )
  assert float(rows) == pytest.approx((-math.log(0.75) + 3 * math.log(2.0)) / 4)
  # Stable far in the tails (log_sigmoid): -log s(100) ~ 0 and -log s(-100) = 100.
  big = reward_model._bt_loss(np.array([100.0, 100.0]), np.zeros(2), np.array([1.0, 0.0]))
  assert float(big) == pytest.approx(50.0, rel=1e-5)


def test_pair_accuracy_by_hand():
  raw_a = np.array([2.0, 0.0, 1.0, 5.0, 3.0])
  raw_b = np.array([1.0, 1.0, 1.0, 0.0, 0.0])
  pref = np.array([1.0, 1.0, 0.0, 0.5, 0.0])
  # Right, wrong, predicted tie (0.5); the 0.5 preference is ignored; wrong -> 1.5 / 4.
  assert float(reward_model._pair_accuracy(raw_a, raw_b, pref)) == pytest.approx(1.5 / 4)
  weight = np.array([1.0, 0.0, 0.0, 1.0, 0.0])
  assert float(reward_model._pair_accuracy(raw_a, raw_b, pref, weight)) == pytest.approx(1.0)
  assert float(reward_model._pair_accuracy(raw_a, raw_b, np.full(5, 0.5))) == 0.0


# The losses on a tiny model.


def _toy_rows(n: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Rows of 4..L-1 tokens; the judgment is the fraction of token 5 in the row."""
  rs = np.random.RandomState(seed)
  rows = np.zeros((n, length), np.int32)
  score = np.zeros(n, np.float32)
  others = np.array([t for t in range(2, 32) if t != 5])
  for i in range(n):
    k = rs.randint(4, length)
    fives = rs.rand(k) < rs.rand()
    rows[i, :k] = np.where(fives, 5, rs.choice(others, k))
    score[i] = fives.mean()
  return rows, score


def test_losses_match_the_math_with_finite_gradients():
  cfg = _rm_config(encoder=test_utils.tiny_config(dropout_rate=0.1, num_encoder_layers=1))
  linear = dataclasses.replace(cfg, output='linear')
  rows, score = _toy_rows(4, 16, seed=1)
  rows[3] = 0  # A padding row (as trainer.zeros_like_batch adds): weight 0.
  weight = np.array([1.0, 2.0, 1.0, 1.0], np.float32)
  batch = {'inputs': rows, 'score': score, 'weight': weight}
  pref = np.array([1.0, 0.0, 0.5, 1.0], np.float32)
  pairs = {'inputs_a': rows, 'inputs_b': rows[[1, 2, 0, 3]], 'preference': pref}
  regression = reward_model.make_loss_fn(cfg)
  bt = reward_model.make_loss_fn(cfg, 'bradley_terry')

  @jax.jit
  def run(rng):  # One compilation for every pass below.
    params = nn.unbox(reward_model.init_params(cfg, rng))['params']
    grad = lambda fn, b: jax.value_and_grad(fn, has_aux=True)(params, b, rng)
    return {
      'raw': reward_model.score(cfg, params, rows)[0],
      'sigmoid': regression(params, batch, None),
      'linear': reward_model.regression_loss(linear, params, batch, None),
      'bt': bt(params, pairs, None),
      'regression_dropout': grad(regression, batch),
      'bt_dropout': grad(bt, pairs),
    }

  out = jax.tree.map(np.asarray, run(jax.random.key(0)))
  raw, w = out['raw'], weight * [1, 1, 1, 0]
  for name, pred in (('sigmoid', 1 / (1 + np.exp(-raw))), ('linear', raw)):
    loss, metrics = out[name]
    assert set(metrics) == {'loss', 'mse', 'mean_prediction'}
    np.testing.assert_allclose(loss, np.sum(w * (pred - score) ** 2) / w.sum(), rtol=1e-5)
    np.testing.assert_allclose(metrics['mse'], loss, rtol=1e-6)
    np.testing.assert_allclose(metrics['mean_prediction'], np.sum(w * pred) / w.sum(), rtol=1e-5)
  loss, metrics = out['bt']
  assert set(metrics) == {'loss', 'pairwise_accuracy'}
  raw_b, valid = raw[[1, 2, 0, 3]], np.array([1.0, 1.0, 1.0, 0.0])
  np.testing.assert_allclose(loss, reward_model._bt_loss(raw, raw_b, pref, valid), rtol=1e-5)
  want_acc = reward_model._pair_accuracy(raw, raw_b, pref, valid)
  np.testing.assert_allclose(metrics['pairwise_accuracy'], want_acc, rtol=1e-6)
  # With dropout (an rng): finite losses and gradients, not the deterministic loss.
  for name, det in (('regression_dropout', out['sigmoid'][0]), ('bt_dropout', out['bt'][0])):
    (loss, _), grads = out[name]
    assert np.isfinite(loss) and abs(loss - det) > 1e-7, (name, loss, det)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    assert any(np.abs(g).sum() > 0 for g in jax.tree.leaves(grads))
  with pytest.raises(ValueError, match='regression, bradley_terry'):
    reward_model.make_loss_fn(cfg, 'hinge')


def test_tiny_reward_model_learns_a_monotone_judgment():
  cfg = _rm_config()
  rows, score = _toy_rows(512, 16, seed=2)
  test_rows, test_score = _toy_rows(128, 16, seed=3)
  tx = optax.adam(3e-3)
  mesh = partitioning.make_mesh(partitioning.MeshConfig(), jax.devices()[:1])
  state, shardings = train_state_lib.create_sharded(
    lambda r: reward_model.init_params(cfg, r)['params'], tx, jax.random.key(0), mesh
  )
  steps = trainer.Trainer(
    loss_fn=reward_model.make_loss_fn(cfg), tx=tx, mesh=mesh, state_shardings=shardings
  )
  rs = np.random.RandomState(0)
  rng = jax.random.key(1)
  for _ in range(150):
    idx = rs.choice(len(rows), 32, replace=False)
    state, metrics = steps.train_step(state, {'inputs': rows[idx], 'score': score[idx]}, rng)
  trainer.check_finite(metrics, step=150, phase='rm_test')
  _, reward = reward_model.score(cfg, trainer.to_host(state.params), test_rows)
  tau = rm_metrics.kendall_tau(np.asarray(reward), test_score)
  print(f'held-out Kendall tau {tau:.3f}')
  assert tau > 0.6, tau
