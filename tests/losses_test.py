"""Every loss on small cases computed by hand (the arithmetic is in the comments)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rest_jax.core import losses

# The shared B=2, T=3 case: row 1's last token is padding (its value must not matter).
LP = np.array([[-1.0, -2.0, -0.5], [-0.25, -3.0, -77.0]], np.float32)
W = np.array([[1, 1, 1], [1, 1, 0]], np.float32)
# NLL on real tokens: row 0 [1, 2, 0.5] (sum 3.5), row 1 [0.25, 3] (sum 3.25); 5 tokens.

TOL = dict(rtol=1e-6, atol=1e-6)


def _close(actual, expected):
  np.testing.assert_allclose(np.asarray(actual), np.asarray(expected, np.float32), **TOL)


def _padding_changed(x):
  """LP-shaped array with the padded token (row 1, t 2) changed."""
  x = np.array(x, np.float32)
  x[1, 2] = 123.0
  return x


# BC.


def test_bc_loss_and_masking():
  loss, metrics = losses.bc_loss(LP, W)
  _close(loss, 1.35)  # (3.5 + 3.25) / 5
  _close(metrics['num_tokens'], 5.0)
  _close(losses.bc_loss(_padding_changed(LP), W)[0], 1.35)
  grad = jax.grad(lambda lp: losses.bc_loss(lp, W)[0])(LP)
  _close(grad, -W / 5.0)  # d/dlp of -sum(w lp)/5


def test_empty_batch_gives_zero_and_finite_grads():
  zeros = np.zeros_like(W)
  for fn in (
    lambda lp: losses.bc_loss(lp, zeros)[0],
    lambda lp: losses.reward_weighted_nll(lp, zeros, np.ones(2))[0],
    lambda lp: losses.gold_loss(lp, zeros, LP)[0],
    lambda lp: losses.oac_loss(lp, zeros, np.ones(2))[0],
    lambda lp: losses.bvmpo_loss(lp, zeros, np.ones(2), 0.0, np.zeros(2), 1.0)[0],
  ):
    loss, grad = jax.value_and_grad(fn)(LP)
    _close(loss, 0.0)
    _close(grad, np.zeros_like(LP))


# Reward-weighted NLL (ReST-EM).


@pytest.mark.parametrize(
  'normalize, expected',
  [
    # numerator: 1.0 * 3.5 + 0.5 * 3.25 = 5.125
    ('sum', 5.125 / 4.0),  # Z = 1.0 * 3 tokens + 0.5 * 2 tokens = 4
    ('mean', 5.125 / 5.0),  # Z = 5 tokens
    (None, 5.125 / 2.0),  # Z = 2 sequences
  ],
)
def test_reward_weighted_nll(normalize, expected):
  rewards = np.array([1.0, 0.5], np.float32)
  loss, metrics = losses.reward_weighted_nll(LP, W, rewards, normalize=normalize)
  _close(loss, expected)
  _close(losses.reward_weighted_nll(_padding_changed(LP), W, rewards, normalize)[0], expected)
  _close(metrics['mean_reward'], 0.75)
  _close(metrics['nll'], 1.35)
  # Rewards are data: no gradient flows to them.
  grad_r = jax.grad(lambda r: losses.reward_weighted_nll(LP, W, r, normalize)[0])(rewards)
  _close(grad_r, [0.0, 0.0])


def test_reward_weighted_binary_sum_is_bc_on_kept_rows():
  loss, _ = losses.reward_weighted_nll(LP, W, np.array([1.0, 0.0]), normalize='sum')
  _close(loss, 3.5 / 3.0)  # row 0 only
  _close(loss, losses.bc_loss(LP[:1], W[:1])[0])
  loss, _ = losses.reward_weighted_nll(LP, W, np.zeros(2), normalize='sum')
  _close(loss, 0.0)


def test_reward_weighted_bad_normalize():
  with pytest.raises(ValueError, match='normalize'):
    losses.reward_weighted_nll(LP, W, np.ones(2), normalize='tokens')


# GOLD.


def test_k_step_returns_by_hand_t7():
  r = np.array([[0.5, 0.2, 0.05, 0.9, 0.3, 0.6, 0.8]], np.float32)
  w = np.array([[1, 1, 1, 1, 1, 1, 0]], np.float32)
  q = losses.k_step_returns(r, w, k=5, discount=0.5, reward_min=0.1, end_reward=1.0)
  # r~ = [0.5, 0.2, 0.1 (floored), 0.9, 0.3, 0.6, 1.0 (padding)], then 1.0 past T.
  # Q_t = sum_{j=0..5} 0.5^j r~_{t+j}; coefficients 1, .5, .25, .125, .0625, .03125:
  expected = [
    0.5 + 0.1 + 0.025 + 0.1125 + 0.01875 + 0.01875,  # 0.775
    0.2 + 0.05 + 0.225 + 0.0375 + 0.0375 + 0.03125,  # 0.58125
    0.1 + 0.45 + 0.075 + 0.075 + 0.0625 + 0.03125,  # 0.79375
    0.9 + 0.15 + 0.15 + 0.125 + 0.0625 + 0.03125,  # 1.41875
    0.3 + 0.3 + 0.25 + 0.125 + 0.0625 + 0.03125,  # 1.06875
    0.6 + 0.5 + 0.25 + 0.125 + 0.0625 + 0.03125,  # 1.56875
    1.0 + 0.5 + 0.25 + 0.125 + 0.0625 + 0.03125,  # 1.96875 (padding itself)
  ]
  _close(q, [expected])
  # Undiscounted, unfloored, end reward 0: plain windowed sums of 6 rewards.
  q1 = losses.k_step_returns(r, w, k=5, discount=1.0, end_reward=0.0)
  r0 = [0.5, 0.2, 0.05, 0.9, 0.3, 0.6, 0.0, 0, 0, 0, 0, 0]
  _close(q1, [[sum(r0[t : t + 6]) for t in range(7)]])
  # k = 0: the (floored) token reward itself.
  _close(
    losses.k_step_returns(r, w, k=0, reward_min=0.1),
    [[0.5, 0.2, 0.1, 0.9, 0.3, 0.6, 1.0]],
  )


def test_gold_loss_by_hand():
  lagged_p = np.array([[0.5, 0.1, 0.9], [1.0, 0.3, 0.7]], np.float32)
  lagged = np.log(lagged_p)
  loss, metrics = losses.gold_loss(LP, W, lagged, k=1, discount=1.0, clip_min=0.2, reward_min=0.1)
  # iw = clip(p~, 0.2, 1)            = [[0.5, 0.2, 0.9], [1.0, 0.3, -]]
  # r~ = max(p~, 0.1), 1.0 past end   = [[0.5, 0.1, 0.9 | 1.0], [1.0, 0.3, 1.0 | 1.0]]
  # Q_t = r~_t + r~_{t+1}            = [[0.6, 1.0, 1.9], [1.3, 1.3, -]]
  # iw * Q                           = [[0.3, 0.2, 1.71], [1.3, 0.39, -]]
  # sum iw Q NLL = 0.3*1 + 0.2*2 + 1.71*0.5 + 1.3*0.25 + 0.39*3 = 3.05; / 5 tokens
  _close(loss, 0.61)
  _close(metrics['nll'], 1.35)
  _close(metrics['importance_weight'], (0.5 + 0.2 + 0.9 + 1.0 + 0.3) / 5)
  _close(losses.gold_loss(_padding_changed(LP), W, lagged, k=1)[0], 0.61)
  # Stop-gradient: nothing flows to the lagged policy; the policy gets -w iw Q / 5.
  grad_lagged = jax.grad(lambda lg: losses.gold_loss(LP, W, lg, k=1)[0])(lagged)
  _close(grad_lagged, np.zeros_like(LP))
  grad_lp = jax.grad(lambda lp: losses.gold_loss(lp, W, lagged, k=1)[0])(LP)
  _close(grad_lp, -np.array([[0.3, 0.2, 1.71], [1.3, 0.39, 0.0]]) / 5)


def test_gold_explicit_token_rewards_and_defaults():
  lagged = np.log(np.full(LP.shape, 0.5, np.float32))
  mle_lp = np.log(np.array([[0.8, 0.05, 0.4], [0.6, 0.7, 0.9]], np.float32))
  rewards = losses.gold_token_rewards(mle_lp)
  _close(rewards, np.exp(mle_lp))
  _close(losses.gold_token_rewards(mle_lp, reward_type='logp', baseline=-60.0), mle_lp + 60.0)
  loss, _ = losses.gold_loss(LP, W, lagged, rewards)  # k=5, gamma=1, floor 0.1, end 1.0
  # iw = 0.5 everywhere. r~ row 0 = [0.8, 0.1, 0.4 | 1 x5]: Q = [1.3+3, 0.5+4, 0.4+5]
  #                        = [4.3, 4.5, 5.4]
  # r~ row 1 = [0.6, 0.7, 1.0 (padding) | 1 x5]: Q = [2.3 + 3, 1.7 + 4, -] = [5.3, 5.7, -]
  # sum iw Q NLL = 0.5 * (4.3*1 + 4.5*2 + 5.4*0.5 + 5.3*0.25 + 5.7*3)
  #              = 0.5 * (4.3 + 9 + 2.7 + 1.325 + 17.1) = 17.2125; / 5 tokens
  _close(loss, 17.2125 / 5)
  grad_r = jax.grad(lambda r: losses.gold_loss(LP, W, lagged, r)[0])(rewards)
  _close(grad_r, np.zeros_like(LP))
  with pytest.raises(ValueError, match='reward_type'):
    losses.gold_token_rewards(mle_lp, reward_type='bleu')


# BVMPO.


def test_top_half_mask():
  adv = np.array([0.5, -1.0, 2.0, 0.0])
  np.testing.assert_array_equal(losses.top_half_mask(adv, np.ones(4, bool)), [1, 0, 1, 0])
  # 5 valid rows -> ceil(5/2) = 3; the invalid row's huge advantage is ignored.
  adv = np.array([3.0, 1.0, 100.0, 2.0, -1.0, 0.0])
  valid = np.array([1, 1, 0, 1, 1, 1], bool)
  np.testing.assert_array_equal(losses.top_half_mask(adv, valid), [1, 1, 0, 1, 0, 0])
  # Ties: the earlier rows win, and exactly half is kept.
  np.testing.assert_array_equal(losses.top_half_mask(np.ones(4), np.ones(4, bool)), [1, 1, 0, 0])
  np.testing.assert_array_equal(losses.top_half_mask(np.ones(1), np.ones(1, bool)), [1])
  np.testing.assert_array_equal(losses.top_half_mask(np.ones(2), np.zeros(2, bool)), [0, 0])


def test_temperature_dual_by_hand():
  adv = np.array([2.0, 0.0, 1.0, -1.0], np.float32)
  mask = np.array([1, 0, 1, 0], bool)
  log_eta = np.float32(math.log(2.0))
  # eta = 2, eps = 0.1: L = 2 * 0.1 + 2 * log((e^(2/2) + e^(1/2)) / 2)
  log_mean = math.log((math.e + math.exp(0.5)) / 2)  # log(2.183501) = 0.780930
  _close(losses.temperature_dual_loss(adv, mask, log_eta, 0.1), 0.2 + 2 * log_mean)  # 1.761861
  # dL/deta = eps + log_mean - sum(psi * A / eta), psi = softmax([1, 0.5]) = [.622459, .377541];
  # d/dlog_eta = eta * dL/deta.
  psi = np.exp([1.0, 0.5]) / np.exp([1.0, 0.5]).sum()
  d_eta = 0.1 + log_mean - (psi * np.array([1.0, 0.5])).sum()  # 0.069700
  grad_eta, grad_adv = jax.grad(losses.temperature_dual_loss, argnums=(2, 0))(adv, mask, log_eta)
  _close(grad_eta, 2.0 * d_eta)
  _close(grad_adv, np.zeros(4))
  _close(losses.temperature_dual_loss(adv, np.zeros(4, bool), log_eta), 0.0)


# B=4, T=2; row 3's second token is padding.
BV_LP = np.array([[-1.0, -1.0], [-0.5, -0.5], [-2.0, -1.0], [-0.1, -3.0]], np.float32)
BV_W = np.array([[1, 1], [1, 1], [1, 1], [1, 0]], np.float32)
BV_ADV = np.array([0.5, -1.0, 2.0, 0.0], np.float32)
BV_BEHAVIOUR = np.array([-1.5, -1.0, -2.5, -0.3], np.float32)  # sequence log beta
# Sequence log pi = [-2, -1, -3, -0.1]. Top half: rows 2 (A=2) and 0 (A=0.5).
# eta = 1: psi_0 = 1 / (1 + e^1.5) = 0.182426, psi_2 = 0.817574.
PSI_0 = 1.0 / (1.0 + math.exp(1.5))
POLICY = 2 * PSI_0 + 3 * (1 - PSI_0)  # -(psi_0 * -2 + psi_2 * -3) = 2.817574
LOG_MEAN = math.log((math.exp(0.5) + math.exp(2.0)) / 2)  # log(4.518889) = 1.508266
TEMPERATURE = 0.1 + LOG_MEAN  # eta * eps + eta * log_mean = 1.608266
KL = (0.5 + 0.0 + 0.5 - 0.2) / 4  # mean(log beta - log pi) = 0.2


def _bvmpo(lp=BV_LP, adv=BV_ADV, log_eta=0.0, behaviour=BV_BEHAVIOUR, kl_weight=0.5, w=BV_W):
  return losses.bvmpo_loss(lp, w, adv, log_eta, behaviour, kl_weight, epsilon_temperature=0.1)


def test_bvmpo_by_hand():
  loss, m = _bvmpo()
  _close(m['policy_loss'], POLICY)
  _close(m['temperature_loss'], TEMPERATURE)
  _close(m['kl'], KL)
  _close(loss, POLICY + TEMPERATURE + 0.5 * KL)  # 2.817574 + 1.608266 + 0.1 = 4.525840
  _close(m['num_selected'], 2.0)
  _close(m['temperature'], 1.0)
  _close(m['selected_advantage'], PSI_0 * 0.5 + (1 - PSI_0) * 2.0)


def test_bvmpo_gradients_and_stop_gradients():
  grads, _ = jax.grad(_bvmpo, argnums=(0, 1, 2, 3, 4), has_aux=True)(
    BV_LP, BV_ADV, 0.0, BV_BEHAVIOUR, 0.5
  )
  grad_lp, grad_adv, grad_eta, grad_beh, grad_kw = grads
  # d/dlp: -psi_b on selected rows, and -kl_weight / 4 rows = -0.125 on every real token.
  expected = -np.array([[PSI_0] * 2, [0, 0], [1 - PSI_0] * 2, [0, 0]]) - 0.125 * BV_W
  _close(grad_lp, expected)
  for g in (grad_adv, grad_beh, grad_kw):
    _close(g, np.zeros_like(g))
  # Only L_eta depends on eta: eps + log_mean - sum(psi * A) (eta = 1).
  _close(grad_eta, 0.1 + LOG_MEAN - (PSI_0 * 0.5 + (1 - PSI_0) * 2.0))  # -0.118095


def test_bvmpo_masking_token_behaviour_and_padding_rows():
  # The padded token does not count, and [B, T] behaviour log-probs sum to the [B] form.
  lp = BV_LP.copy()
  lp[3, 1] = 50.0
  beh_tokens = np.array([[-1.0, -0.5], [-0.5, -0.5], [-2.0, -0.5], [-0.3, 9.0]], np.float32)
  _close(_bvmpo(lp=lp, behaviour=beh_tokens)[0], _bvmpo()[0])
  # A batch-padding row (no weights) with a huge advantage is neither selected nor in the KL.
  pad = lambda x, v: np.concatenate([x, np.full((1,) + x.shape[1:], v, np.float32)])
  loss, m = _bvmpo(
    lp=pad(BV_LP, -5.0), adv=pad(BV_ADV, 99.0), behaviour=pad(BV_BEHAVIOUR, 0.0), w=pad(BV_W, 0)
  )
  _close(loss, POLICY + TEMPERATURE + 0.5 * KL)
  _close(m['num_selected'], 2.0)


def test_kl_anneal():
  _close(losses.kl_anneal(0, 100), 1.0)
  _close(losses.kl_anneal(100, 100), 1e-5)
  _close(losses.kl_anneal(50, 100), 10**-2.5)  # sqrt(1 * 1e-5) = 0.00316228
  _close(losses.kl_anneal(25, 100), 10**-1.25)
  _close(losses.kl_anneal(500, 100), 1e-5)
  _close(losses.kl_anneal(3, 0), 1e-5)
  _close(jax.jit(losses.kl_anneal)(jnp.int32(50), 100), 10**-2.5)


# OAC, returns, advantages and the BVE value loss.


def test_oac_loss():
  adv = np.array([[1.0, -0.5, 2.0], [0.5, 1.0, 9.0]], np.float32)
  loss, metrics = losses.oac_loss(LP, W, adv)
  _close(loss, 4.125 / 5)  # (1*1 - 0.5*2 + 2*0.5 + 0.5*0.25 + 1*3) / 5; adv 9.0 is padding
  _close(metrics['advantage'], 4.0 / 5)
  _close(losses.oac_loss(_padding_changed(LP), W, adv)[0], 4.125 / 5)
  # [B] advantages apply to every token: (1 * 3.5 - 2 * 3.25) / 5 = -0.6.
  _close(losses.oac_loss(LP, W, np.array([1.0, -2.0]))[0], -0.6)
  grad_adv = jax.grad(lambda a: losses.oac_loss(LP, W, a)[0])(adv)
  _close(grad_adv, np.zeros_like(adv))
  grad_lp = jax.grad(lambda lp: losses.oac_loss(lp, W, adv)[0])(LP)
  _close(grad_lp, -adv * W / 5)


RW = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], np.float32)
REWARDS = np.array([0.8, 0.5, 0.7], np.float32)
VALUES = np.array([[0.3, 0.6, 0.7, 5.0], [0.9, 0.1, 9.0, 9.0], [1.0, 1.0, 1.0, 1.0]], np.float32)


def test_monte_carlo_returns():
  # discount 0.5: G_t = 0.5^(real tokens after t) * R.
  _close(
    losses.monte_carlo_returns(REWARDS, RW, discount=0.5),
    [[0.2, 0.4, 0.8, 0.0], [0.25, 0.5, 0.0, 0.0], [0.0] * 4],
  )
  _close(
    losses.monte_carlo_returns(REWARDS, RW),
    [[0.8, 0.8, 0.8, 0.0], [0.5, 0.5, 0.0, 0.0], [0.0] * 4],
  )


def test_advantages():
  _close(losses.sequence_advantages(REWARDS, VALUES, RW), [0.8 - 0.3, 0.5 - 0.9, 0.0])
  # Discounted: G_0 = 0.5^2 * 0.8 = 0.2 and 0.5 * 0.5 = 0.25.
  _close(losses.sequence_advantages(REWARDS, VALUES, RW, 0.5), [0.2 - 0.3, 0.25 - 0.9, 0.0])
  # The first *real* token is used when a row starts with padding.
  w = np.array([[0, 1, 1, 0]], np.float32)
  _close(losses.sequence_advantages(REWARDS[:1], VALUES[:1], w), [0.8 - 0.6])
  _close(
    losses.token_advantages(REWARDS, VALUES, RW),
    [[0.5, 0.2, 0.1, 0.0], [-0.4, 0.4, 0.0, 0.0], [0.0] * 4],
  )


def test_bve_value_loss():
  loss, metrics = losses.bve_value_loss(VALUES, RW, REWARDS)
  # Squared errors: row 0 (0.5, 0.2, 0.1)^2 = .25 + .04 + .01; row 1 (-0.4, 0.4)^2 = .16 + .16.
  _close(loss, 0.62 / 5)
  _close(metrics['return'], (3 * 0.8 + 2 * 0.5) / 5)
  returns = losses.monte_carlo_returns(REWARDS, RW)
  _close(losses.bve_value_loss(VALUES, RW, returns)[0], 0.62 / 5)
  grad_v, grad_g = jax.grad(lambda v, g: losses.bve_value_loss(v, RW, g)[0], argnums=(0, 1))(
    VALUES, returns
  )
  _close(grad_v, 2 * (VALUES - np.asarray(returns)) * RW / 5)
  _close(grad_g, np.zeros_like(VALUES))


# Registry and jit.


def test_registry_and_jit():
  assert set(losses.LOSSES) == {'bc', 'reward_weighted', 'gold', 'bvmpo', 'oac'}
  assert losses.LOSSES['bc'].batch_fields == ()
  assert 'reward' in losses.LOSSES['reward_weighted'].batch_fields
  assert 'log_temperature' in losses.LOSSES['bvmpo'].step_inputs
  seq = np.array([0.5, 1.0], np.float32)
  calls = {
    'bc': (LP, W),
    'reward_weighted': (LP, W, seq),
    'gold': (LP, W, LP),
    'bvmpo': (LP, W, seq, 0.0, seq, 1.0),
    'oac': (LP, W, seq),
  }
  for name, spec in losses.LOSSES.items():
    eager, _ = spec.fn(*calls[name])
    jitted, metrics = jax.jit(spec.fn)(*calls[name])
    _close(jitted, eager)
    assert all(jnp.ndim(v) == 0 for v in metrics.values()), name
