"""Online RL losses (PPO and a critic-free, group-relative variant), pure JAX.

The on-policy counterpart of `losses.py`: every function works on arrays, the
caller runs the policy, the reference (BC) policy and the value network. The
conventions are `losses.py`'s: `log_probs` [B, T] are the policy's
log-probabilities of the sampled tokens, `weights` [B, T] is 1 on real target
tokens (EOS included) and 0 on padding, each row one sample whose real tokens
come first; sequence-level inputs are [B]. Losses return `(loss, metrics)`.

* Rewards with a KL penalty (`kl_penalized_rewards`), after Ziegler et al.
  (2019) as PPO for translation uses it (Donato et al. 2022):
    r_bt = -kl_coef (log_probs_bt - ref_log_probs_bt) + [t = last real] R_b.
* GAE (`gae`), Schulman et al. (2016), over the real tokens of each row, the
  state after the last real token terminal (value 0):
    delta_t = r_t + gamma V_{t+1} - V_t,   A_t = delta_t + gamma lambda A_{t+1},
    returns_t = A_t + V_t.
* The clipped PPO objective (`ppo_policy_loss`), token mean over real tokens:
    L = mean_bt max(-A_bt rho_bt, -A_bt clip(rho_bt, 1 - eps, 1 + eps)),
    rho_bt = exp(log_probs_bt - old_log_probs_bt),
  with `clip_fraction` (tokens where the clipped branch is the max and differs)
  and `approx_kl` = mean (rho - 1) - log rho (the k3 estimator, >= 0).
* The clipped value loss (`ppo_value_loss`):
    L = 0.5 mean_bt max((V - G)^2, (old_V + clip(V - old_V, -c, c) - G)^2).
* Group-relative advantages (`group_advantages`) over the N samples of each
  source (rows grouped consecutively, B = S N): 'grpo' (Shao et al. 2024)
  A_b = (R_b - mean_g R) / (std_g R + eps); 'rloo' (Ahmadian et al. 2024)
  A_b = R_b - mean of the other N - 1 rewards of the group.
* The group-relative loss (`group_relative_loss`): the clipped objective with
  A_b at every token of row b, plus kl_coef times the k3 estimate of
  KL(pi || pi_ref) per token (GRPO puts the KL in the loss, not the reward).
* The adaptive KL controller (`adaptive_kl_coef`), Ziegler et al.:
    e = clip(KL / target - 1, -0.2, 0.2),  kl_coef <- kl_coef (1 + e n / horizon),
  for n samples seen since the last update; a plain function of its state
  (the coefficient), which the caller keeps (`online_rl_steps` in its rollout
  log), so a resumed run continues it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rest_jax.core.losses import Metrics, f32, token_mean

ADVANTAGE_MODES = ('grpo', 'rloo')


def last_token_mask(weights: jax.Array) -> jax.Array:
  """[B, T] float32: 1 at each row's last real token (rows of padding only: 0)."""
  weights = f32(weights)
  nxt = jnp.concatenate([weights[:, 1:], jnp.zeros_like(weights[:, :1])], axis=1)
  return weights * (1.0 - nxt)


def kl_penalized_rewards(
  rewards: jax.Array,
  log_probs: jax.Array,
  ref_log_probs: jax.Array,
  weights: jax.Array,
  kl_coef: float | jax.Array,
) -> tuple[jax.Array, jax.Array]:
  """Per-token rewards: the sequence reward at the last token, minus a KL penalty.

  Args:
    rewards: [B] sequence rewards R_b.
    log_probs: [B, T] log-probabilities of the sampling policy.
    ref_log_probs: [B, T] those of the reference (BC) policy.
    weights: [B, T] loss mask.
    kl_coef: the KL coefficient (scalar).

  Returns:
    token_rewards: [B, T] float32, 0 on padding.
    kl: [B] float32, sum_t w_bt (log_probs - ref_log_probs): each sample's
      estimate of KL(pi || pi_ref).
  """
  weights = f32(weights)
  log_ratio = (f32(log_probs) - f32(ref_log_probs)) * weights
  token_rewards = -f32(kl_coef) * log_ratio + last_token_mask(weights) * f32(rewards)[:, None]
  return token_rewards, log_ratio.sum(-1)


def gae(
  token_rewards: jax.Array,
  values: jax.Array,
  weights: jax.Array,
  gamma: float = 1.0,
  lam: float = 0.95,
) -> tuple[jax.Array, jax.Array]:
  """Generalised advantage estimates and returns over each row's real tokens.

  Args:
    token_rewards: [B, T] r_bt (`kl_penalized_rewards`).
    values: [B, T] V(s_bt), the value before emitting token t.
    weights: [B, T] loss mask; the state after the last real token is terminal.
    gamma: discount.
    lam: the GAE lambda.

  Returns:
    (advantages, returns): [B, T] float32 each, 0 on padding.
  """
  weights, rewards, values = f32(weights), f32(token_rewards), f32(values) * f32(weights)
  next_values = jnp.concatenate([values[:, 1:], jnp.zeros_like(values[:, :1])], axis=1)
  deltas = (rewards + gamma * next_values - values) * weights

  def back(carry, x):  # carry: A_{t+1} [B]; x: (delta_t, w_t) [B] each.
    delta, w = x
    adv = (delta + gamma * lam * carry) * w
    return adv, adv

  _, adv = jax.lax.scan(
    back, jnp.zeros(rewards.shape[0], jnp.float32), (deltas.T, weights.T), reverse=True
  )
  advantages = adv.T
  return advantages, (advantages + values) * weights


def whiten(x: jax.Array, weights: jax.Array, eps: float = 1e-8) -> jax.Array:
  """(x - mean) / std over the real tokens; 0 on padding. x, weights: [B, T]."""
  x, weights = f32(x), f32(weights)
  mean = token_mean(x, weights)
  var = token_mean(jnp.square(x - mean), weights)
  return (x - mean) * jax.lax.rsqrt(var + eps) * weights


def _clipped_objective(
  log_probs: jax.Array,
  old_log_probs: jax.Array,
  advantages: jax.Array,
  weights: jax.Array,
  clip_eps: float,
) -> tuple[jax.Array, Metrics]:
  """The clipped surrogate (see the module docstring) and its diagnostics."""
  weights = f32(weights)
  log_ratio = (f32(log_probs) - jax.lax.stop_gradient(f32(old_log_probs))) * weights
  ratio = jnp.exp(log_ratio)
  adv = jax.lax.stop_gradient(f32(advantages))
  unclipped = -adv * ratio
  clipped = -adv * jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
  loss = token_mean(jnp.maximum(unclipped, clipped), weights)
  metrics = {
    'policy_loss': loss,
    'clip_fraction': token_mean((clipped > unclipped).astype(jnp.float32), weights),
    'approx_kl': token_mean(jax.lax.stop_gradient(ratio - 1.0 - log_ratio), weights),
    'ratio': token_mean(jax.lax.stop_gradient(ratio), weights),
    'num_tokens': weights.sum(),
  }
  return loss, metrics


def ppo_policy_loss(
  log_probs: jax.Array,
  weights: jax.Array,
  old_log_probs: jax.Array,
  advantages: jax.Array,
  clip_eps: float = 0.2,
) -> tuple[jax.Array, Metrics]:
  """The clipped PPO policy loss.

  Args:
    log_probs: [B, T] the policy being trained.
    weights: [B, T] loss mask.
    old_log_probs: [B, T] the sampling policy (no gradient).
    advantages: [B, T] (`gae`, usually whitened; no gradient).
    clip_eps: the ratio's clip range.

  Returns:
    loss: scalar; metrics: `loss`, `policy_loss`, `clip_fraction`,
    `approx_kl`, `ratio`, `num_tokens`.
  """
  loss, metrics = _clipped_objective(log_probs, old_log_probs, advantages, weights, clip_eps)
  return loss, {'loss': loss, **metrics}


def ppo_value_loss(
  values: jax.Array,
  weights: jax.Array,
  old_values: jax.Array,
  returns: jax.Array,
  clip: float = 0.2,
) -> tuple[jax.Array, Metrics]:
  """The clipped value loss, 0.5 times the larger squared error (token mean).

  Args:
    values: [B, T] the value head being trained.
    weights: [B, T] loss mask.
    old_values: [B, T] the value head at sampling time (no gradient).
    returns: [B, T] GAE returns (no gradient).
    clip: how far the value may move from `old_values` before it stops
      counting (<= 0: no clipping).

  Returns:
    loss: scalar; metrics: `value_loss`, `value`, `return`,
    `value_clip_fraction`.
  """
  values, weights = f32(values), f32(weights)
  old = jax.lax.stop_gradient(f32(old_values))
  target = jax.lax.stop_gradient(f32(returns))
  plain = jnp.square(values - target)
  if clip > 0:
    clipped = jnp.square(old + jnp.clip(values - old, -clip, clip) - target)
    worst = jnp.maximum(plain, clipped)
    clip_fraction = token_mean((clipped > plain).astype(jnp.float32), weights)
  else:
    worst, clip_fraction = plain, jnp.float32(0.0)
  loss = 0.5 * token_mean(worst, weights)
  return loss, {
    'value_loss': loss,
    'value': token_mean(values, weights),
    'return': token_mean(target, weights),
    'value_clip_fraction': clip_fraction,
  }


def token_entropy(logits: jax.Array) -> jax.Array:
  """[B, T] entropy of each position's next-token distribution, from logits [B, T, V]."""
  logp = jax.nn.log_softmax(f32(logits), axis=-1)
  return -(jnp.exp(logp) * logp).sum(-1)


def group_advantages(
  rewards: jax.Array, group_size: int, mode: str = 'grpo', eps: float = 1e-6
) -> jax.Array:
  """Critic-free advantages relative to the other samples of the same source.

  Args:
    rewards: [B] rewards, the N = `group_size` samples of each source in
      consecutive rows (B = S N).
    group_size: N (>= 2).
    mode: 'grpo' (group z-score) or 'rloo' (minus the leave-one-out mean).
    eps: added to GRPO's standard deviation (a group of equal rewards gets 0).

  Returns:
    [B] float32 advantages.
  """
  if mode not in ADVANTAGE_MODES:
    raise ValueError(f'advantage mode {mode!r}: use one of {", ".join(ADVANTAGE_MODES)}.')
  if group_size < 2 or rewards.shape[0] % group_size:
    raise ValueError(
      f'group_size={group_size}: need >= 2 samples per source and rows a multiple of it '
      f'(got {rewards.shape[0]} rows).'
    )
  r = f32(rewards).reshape(-1, group_size)  # [S, N]
  if mode == 'grpo':
    adv = (r - r.mean(-1, keepdims=True)) / (r.std(-1, keepdims=True) + eps)
  else:
    adv = r - (r.sum(-1, keepdims=True) - r) / (group_size - 1)
  return adv.reshape(-1)


def group_relative_loss(
  log_probs: jax.Array,
  weights: jax.Array,
  old_log_probs: jax.Array,
  ref_log_probs: jax.Array,
  advantages: jax.Array,
  clip_eps: float = 0.2,
  kl_coef: float | jax.Array = 0.05,
) -> tuple[jax.Array, Metrics]:
  """The group-relative (GRPO / RLOO) policy loss with an in-loss KL to the reference.

  Args:
    log_probs: [B, T] the policy being trained.
    weights: [B, T] loss mask.
    old_log_probs: [B, T] the sampling policy (no gradient).
    ref_log_probs: [B, T] the reference (BC) policy (no gradient).
    advantages: [B] `group_advantages` (no gradient).
    clip_eps: the ratio's clip range.
    kl_coef: weight of the KL term.

  Returns:
    loss: scalar; metrics: those of `ppo_policy_loss` plus `kl_ref` (the
    token-mean k3 estimate of KL(pi || pi_ref)).
  """
  weights = f32(weights)
  adv = jnp.broadcast_to(f32(advantages)[:, None], weights.shape)
  policy_loss, metrics = _clipped_objective(log_probs, old_log_probs, adv, weights, clip_eps)
  d = (jax.lax.stop_gradient(f32(ref_log_probs)) - f32(log_probs)) * weights
  kl = token_mean(jnp.exp(d) - d - 1.0, weights)
  loss = policy_loss + f32(kl_coef) * kl
  return loss, {'loss': loss, **metrics, 'kl_ref': kl}


def adaptive_kl_coef(
  kl_coef: float, observed_kl: float, target: float, horizon: float, num_samples: int
) -> float:
  """Ziegler et al.'s proportional controller of the KL coefficient.

  Args:
    kl_coef: the current coefficient.
    observed_kl: the mean per-sample KL(pi || pi_ref) of the last batch.
    target: the KL to hold (<= 0: a fixed coefficient).
    horizon: how many samples an error of 20% takes to change the coefficient
      by a factor of e, roughly.
    num_samples: samples in the last batch.

  Returns:
    The next coefficient (a Python float: it lives in the run's state).
  """
  if target <= 0:
    return float(kl_coef)
  error = min(max(float(observed_kl) / target - 1.0, -0.2), 0.2)
  return float(kl_coef) * (1.0 + error * num_samples / horizon)
