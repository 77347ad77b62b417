"""Online RL losses on hand-computed cases (rest_jax/core/rl_losses.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rest_jax.core import rl_losses

W = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], np.float32)  # Lengths 3, 2, 0.


def _gae_reference(rewards, values, weights, gamma, lam):
  """Textbook GAE, one row and one token at a time."""
  adv = np.zeros_like(rewards)
  for b in range(rewards.shape[0]):
    n = int(weights[b].sum())
    last = 0.0
    for t in reversed(range(n)):
      next_value = values[b, t + 1] if t + 1 < n else 0.0
      delta = rewards[b, t] + gamma * next_value - values[b, t]
      last = delta + gamma * lam * last
      adv[b, t] = last
  return adv, (adv + values) * weights


def test_kl_penalized_rewards_pay_the_reward_at_the_last_token():
  logp = np.log(np.array([[0.5, 0.5, 0.5, 0.9], [0.2, 0.4, 0.9, 0.9], [0.9] * 4], np.float32))
  ref = np.log(np.array([[0.25, 0.5, 1.0, 0.1], [0.4, 0.4, 0.1, 0.1], [0.1] * 4], np.float32))
  token_rewards, kl = rl_losses.kl_penalized_rewards(
    np.array([1.0, 2.0, 3.0], np.float32), logp, ref, W, kl_coef=0.1
  )
  log_ratio = (logp - ref) * W
  want = -0.1 * log_ratio
  want[0, 2] += 1.0
  want[1, 1] += 2.0  # Row 2 has no real token: no reward, no penalty.
  np.testing.assert_allclose(token_rewards, want, atol=1e-6)
  np.testing.assert_allclose(kl, log_ratio.sum(-1), atol=1e-6)
  np.testing.assert_array_equal(
    rl_losses.last_token_mask(W), [[0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
  )


@pytest.mark.parametrize('gamma,lam', [(1.0, 0.95), (0.9, 0.5), (1.0, 1.0)])
def test_gae_matches_a_numpy_reference(gamma, lam):
  rng = np.random.default_rng(0)
  rewards = rng.normal(size=W.shape).astype(np.float32) * W
  values = rng.normal(size=W.shape).astype(np.float32)  # Garbage on padding: ignored.
  adv, ret = rl_losses.gae(rewards, values, W, gamma, lam)
  want_adv, want_ret = _gae_reference(rewards, values * W, W, gamma, lam)
  np.testing.assert_allclose(adv, want_adv, atol=1e-5)
  np.testing.assert_allclose(ret, want_ret, atol=1e-5)
  if lam == 1.0 and gamma == 1.0:  # Returns are then the reward-to-go.
    np.testing.assert_allclose(ret, np.cumsum(rewards[:, ::-1], 1)[:, ::-1] * W, atol=1e-5)


def test_ppo_policy_loss_clips_on_both_sides():
  # Four tokens: ratio 1.5 with A > 0 (clipped at 1.2), ratio 0.5 with A < 0
  # (clipped at 0.8), ratio 1.5 with A < 0 and ratio 0.5 with A > 0 (unclipped:
  # the pessimistic branch is the raw ratio).
  ratio = np.array([[1.5, 0.5, 1.5, 0.5]], np.float32)
  adv = np.array([[2.0, -1.0, -1.0, 3.0]], np.float32)
  old = np.zeros((1, 4), np.float32)
  w = np.ones((1, 4), np.float32)
  loss, m = rl_losses.ppo_policy_loss(np.log(ratio), w, old, adv, clip_eps=0.2)
  per_token = [-2.0 * 1.2, 1.0 * 0.8, 1.0 * 1.5, -3.0 * 0.5]
  assert float(loss) == pytest.approx(np.mean(per_token), abs=1e-6)
  assert float(m['clip_fraction']) == pytest.approx(0.5)
  k3 = ratio - 1 - np.log(ratio)
  assert float(m['approx_kl']) == pytest.approx(k3.mean(), abs=1e-6)
  # Gradient: zero through the clipped tokens, -A * ratio through the others.
  grad = jax.grad(lambda lp: rl_losses.ppo_policy_loss(lp, w, old, adv, 0.2)[0])(jnp.log(ratio))
  np.testing.assert_allclose(grad, [[0, 0, 1.5 / 4, -1.5 / 4]], atol=1e-6)


def test_ppo_value_loss_clips_the_move_from_the_old_value():
  w = np.array([[1, 1, 0]], np.float32)
  old = np.array([[0.0, 0.0, 0.0]], np.float32)
  values = np.array([[1.0, 0.1, 9.0]], np.float32)
  returns = np.array([[2.0, 1.0, 0.0]], np.float32)
  loss, m = rl_losses.ppo_value_loss(values, w, old, returns, clip=0.5)
  # Token 0: plain (1-2)^2 = 1, clipped (0.5-2)^2 = 2.25 -> 2.25; token 1:
  # plain 0.81, clipped (0.1-1)^2 = 0.81 -> 0.81; token 2 is padding.
  assert float(loss) == pytest.approx(0.5 * (2.25 + 0.81) / 2, abs=1e-6)
  assert float(m['value_clip_fraction']) == pytest.approx(0.5)
  plain, _ = rl_losses.ppo_value_loss(values, w, old, returns, clip=0.0)
  assert float(plain) == pytest.approx(0.5 * (1.0 + 0.81) / 2, abs=1e-6)


def test_group_advantages_grpo_and_rloo():
  r = np.array([1.0, 0.0, 0.0, 1.0, 0.5, 0.5], np.float32)  # S=2 sources x N=3.
  grpo = rl_losses.group_advantages(r, 3, 'grpo')
  g = r[:3]
  np.testing.assert_allclose(grpo[:3], (g - g.mean()) / (g.std() + 1e-6), atol=1e-5)
  # Group [1, .5, .5]: mean 2/3, std sqrt(1/18); z-scores sqrt(2), -sqrt(2)/2, -sqrt(2)/2.
  np.testing.assert_allclose(grpo[3:], [2**0.5, -(2**0.5) / 2, -(2**0.5) / 2], atol=1e-4)
  rloo = rl_losses.group_advantages(r, 3, 'rloo')
  np.testing.assert_allclose(rloo, [1.0, -0.5, -0.5, 0.5, -0.25, -0.25], atol=1e-6)
  same = rl_losses.group_advantages(np.ones(4, np.float32), 2, 'grpo')
  np.testing.assert_array_equal(same, 0.0)
  with pytest.raises(ValueError, match='group_size'):
    rl_losses.group_advantages(r, 4)
  with pytest.raises(ValueError, match='advantage mode'):
    rl_losses.group_advantages(r, 3, 'ppo')


def test_group_relative_loss_adds_the_k3_kl_to_the_reference():
  w = np.array([[1, 1], [1, 0]], np.float32)
  logp = np.log(np.array([[0.5, 0.25], [0.8, 0.1]], np.float32))
  ref = np.log(np.array([[0.25, 0.25], [0.4, 0.9]], np.float32))
  adv = np.array([1.0, -2.0], np.float32)
  loss, m = rl_losses.group_relative_loss(logp, w, logp, ref, adv, clip_eps=0.2, kl_coef=0.5)
  # Ratio 1 everywhere: the policy term is -mean_t A_b = -(1 + 1 - 2) / 3.
  d = (ref - logp)[w > 0]
  kl = np.mean(np.exp(d) - d - 1)
  assert float(m['kl_ref']) == pytest.approx(kl, abs=1e-6)
  assert float(loss) == pytest.approx(0.0 + 0.5 * kl, abs=1e-6)
  assert float(m['clip_fraction']) == 0.0


def test_adaptive_kl_coef_moves_towards_the_target_and_caps_the_error():
  up = rl_losses.adaptive_kl_coef(0.1, observed_kl=12.0, target=6.0, horizon=1000, num_samples=100)
  assert up == pytest.approx(0.1 * (1 + 0.2 * 100 / 1000))  # Error capped at +0.2.
  down = rl_losses.adaptive_kl_coef(0.1, observed_kl=5.4, target=6.0, horizon=1000, num_samples=100)
  assert down == pytest.approx(0.1 * (1 - 0.1 * 100 / 1000))
  assert rl_losses.adaptive_kl_coef(0.1, 50.0, target=0.0, horizon=1000, num_samples=100) == 0.1


def test_whiten_uses_real_tokens_only():
  x = np.array([[1.0, 3.0, 100.0]], np.float32)
  w = np.array([[1.0, 1.0, 0.0]], np.float32)
  np.testing.assert_allclose(rl_losses.whiten(x, w), [[-1.0, 1.0, 0.0]], atol=1e-4)
