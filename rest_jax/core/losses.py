"""Offline policy losses for the Improve step, and the BVE value loss (pure JAX).

Every function here works on arrays, never on a model: the caller (the Improve
step) runs the policy, the lagged policy or the value network and passes their
per-token outputs in. That keeps each loss checkable by hand.

Conventions. `log_probs` [B, T] is the policy's log-probability of each target
token, log pi(y_t | s_t), with s_t = [x, y_{<t}] (see `models.token_log_probs`);
`weights` [B, T] is `decoder_loss_weights` (1 on real target tokens, EOS
included, 0 on padding). Per-sequence inputs are [B]. Each loss returns
`(loss, metrics)`: a float32 scalar and a dict of float32 scalars, `loss`
among them. Below, NLL_bt = -log_probs[b, t], sum_t runs over tokens with
w_bt = 1, and sg() is stop-gradient. References are to `shared/PAPER.md`.

* BC (`bc_loss`) [PAPER.md §1 "Policy and BC loss", §2 "BC"]: the token mean
  of the NLL on the (filtered) data, the paper's best loss:
    L = sum_bt w_bt NLL_bt / sum_bt w_bt.
* Reward-weighted NLL (`reward_weighted_nll`) [PAPER.md §5, ReST-EM M-step
  J = E[r log p(y|x)]]: each sequence's NLL weighted by its reward r_b:
    L = sum_b r_b sum_t w_bt NLL_bt / Z,
  with Z = sum_bt r_b w_bt ('sum', the default: a reward-weighted token mean,
  which equals BC on the kept samples when r is binary), Z = sum_bt w_bt
  ('mean': the token mean of r * NLL), or Z = the number of non-empty
  sequences (None: the sequence-level Monte-Carlo estimate of -E[r log p]).
* GOLD (`gold_loss`) [PAPER.md §2 "GOLD", from the official GOLD code]:
    L = sum_bt w_bt sg(iw_bt Q_bt) NLL_bt / sum_bt w_bt,
    iw_bt = clip(exp(lagged_log_probs_bt), clip_min, clip_max)  (the lagged
           policy's probability of the token, not a ratio),
    Q_bt  = sum_{j=0..k} discount^j max(reward_min, r_{b,t+j})  (k = 5),
  where r are MLE token rewards (by default r = exp(lagged_log_probs), GOLD's
  'sump' reward with the lagged policy standing in for p_MLE) and positions
  past the end of a sequence get `end_reward` (GOLD's code gives them p = 1).
* BVMPO (`bvmpo_loss`) [PAPER.md §2 "BVMPO"]: V-MPO on sequence advantages A_b
  (the sequence is one bandit action, PAPER.md §1 "MDP framing") plus a KL to
  the behaviour policy:
    L = L_pi + L_eta + kl_weight * KL,
    L_pi  = -sum_{b in H} psi_b sum_t w_bt log_probs_bt,
            psi = softmax_{b in H}(sg(A_b) / sg(eta)),
    L_eta = eta * eps_eta + eta * log mean_{b in H} exp(sg(A_b) / eta),
    KL    = mean_b [log beta(y_b|x_b) - sum_t w_bt log_probs_bt],
  with H the top half of the batch's sequences by advantage, eta =
  exp(log_temperature) the learned temperature, and kl_weight annealed
  log-linearly from 1 to 1e-5 (`kl_anneal`).
* OAC (`oac_loss`) [PAPER.md §2 "OAC", INFERRED objective]: the vanilla
  advantage actor-critic policy loss, no V-trace:
    L = sum_bt w_bt sg(A_bt) NLL_bt / sum_bt w_bt,  A_bt = G_bt - V^beta(s_bt).
* BVE (`bve_value_loss`) [PAPER.md §2 "Value nets"]: token-level regression of
  a value head on Monte-Carlo returns, G_bt = discount^(n_bt) R_b with n_bt the
  number of real tokens after t (the reward comes only after EOS, PAPER.md §1):
    L = sum_bt w_bt (V_bt - sg(G_bt))^2 / sum_bt w_bt.

`LOSSES` names the policy losses and what each needs beyond
`decoder_target_tokens` and `decoder_loss_weights`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

Metrics = dict[str, jax.Array]

# Stands in for -inf in masked softmax / logsumexp: finite, so masked entries
# never turn a gradient into NaN.
_MASKED = -1e30


def f32(x) -> jax.Array:
  """`x` as a float32 array (same shape)."""
  return jnp.asarray(x, jnp.float32)


def safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
  """num / den, and 0 where den == 0 (with finite gradients there too)."""
  ok = den > 0
  return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def token_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
  """sum(weights * values) / sum(weights); 0 for an all-padding batch."""
  return safe_div((values * weights).sum(), weights.sum())


def _per_token(x: jax.Array, weights: jax.Array) -> jax.Array:
  """Broadcasts a per-sequence [B] array to [B, T]; a [B, T] array passes."""
  x = f32(x)
  return jnp.broadcast_to(x[:, None], weights.shape) if x.ndim == 1 else x


def bc_loss(log_probs: jax.Array, weights: jax.Array) -> tuple[jax.Array, Metrics]:
  """Behaviour cloning: token-mean NLL over the (filtered) data.

  Args:
    log_probs: [B, T] policy log-probabilities of the target tokens.
    weights: [B, T] loss mask (1 on real tokens).

  Returns:
    loss: scalar, sum(w * -log_probs) / sum(w).
    metrics: `loss`, `nll` (the same value), `num_tokens`.
  """
  log_probs, weights = f32(log_probs), f32(weights)
  loss = token_mean(-log_probs, weights)
  return loss, {'loss': loss, 'nll': loss, 'num_tokens': weights.sum()}


def reward_weighted_nll(
  log_probs: jax.Array,
  weights: jax.Array,
  rewards: jax.Array,
  normalize: str | None = 'sum',
) -> tuple[jax.Array, Metrics]:
  """ReST-EM's M-step: each sequence's NLL weighted by its reward.

  Args:
    log_probs: [B, T] policy log-probabilities of the target tokens.
    weights: [B, T] loss mask.
    rewards: [B] non-negative rewards (normalized to [0, 1]); no gradient.
    normalize: the denominator Z of sum_b r_b * seq_NLL_b:
      'sum': sum_bt r_b w_bt, a reward-weighted token mean (binary rewards give
        exactly BC on the kept samples; all-zero rewards give 0).
      'mean': sum_bt w_bt, the token mean of r * NLL (scales with the rewards).
      None: the number of non-empty sequences, the sequence-level estimate of
        -E[r log p(y|x)] (no length normalization).

  Returns:
    loss: scalar.
    metrics: `loss`, `nll` (unweighted token mean), `mean_reward`,
      `reward_weighted_tokens` (sum of r_b w_bt), `num_tokens`.

  Raises:
    ValueError: unknown `normalize`.
  """
  log_probs, weights = f32(log_probs), f32(weights)
  rewards = jax.lax.stop_gradient(f32(rewards))
  token_weights = rewards[:, None] * weights  # [B, T]
  total = (token_weights * -log_probs).sum()
  if normalize == 'sum':
    denom = token_weights.sum()
  elif normalize == 'mean':
    denom = weights.sum()
  elif normalize is None:
    denom = (weights.sum(-1) > 0).sum().astype(jnp.float32)
  else:
    raise ValueError(f"normalize must be 'sum', 'mean' or None, got {normalize!r}")
  loss = safe_div(total, denom)
  metrics = {
    'loss': loss,
    'nll': token_mean(-log_probs, weights),
    'mean_reward': rewards.mean(),
    'reward_weighted_tokens': token_weights.sum(),
    'num_tokens': weights.sum(),
  }
  return loss, metrics


def k_step_returns(
  token_rewards: jax.Array,
  weights: jax.Array,
  *,
  k: int = 5,
  discount: float = 1.0,
  reward_min: float | None = None,
  end_reward: float = 1.0,
) -> jax.Array:
  """GOLD's truncated return: Q_t = sum_{j=0..k} discount^j r~_{t+j}.

  r~ is the token reward, set to `end_reward` at positions past the end of the
  sequence (w = 0, or t + j >= T), then floored at `reward_min`. The sum has
  k + 1 terms: the token itself and k future tokens, as in GOLD's code
  (`suffix_num = 5` sums shifts 0..5). It is one banded matrix product,
  Q = r~_padded @ M with M[s, t] = discount^(s - t) for 0 <= s - t <= k.

  Args:
    token_rewards: [B, T] per-token rewards r_t.
    weights: [B, T] loss mask; positions with w = 0 count as past the end.
    k: number of future tokens in the return.
    discount: per-step discount gamma.
    reward_min: floor on every reward (GOLD's `trunc_min`); None for none.
    end_reward: reward of positions past the end of the sequence.

  Returns:
    [B, T] float32 returns (also computed at padded positions).
  """
  token_rewards, weights = f32(token_rewards), f32(weights)
  length = token_rewards.shape[1]
  rewards = jnp.where(weights > 0, token_rewards, end_reward)
  rewards = jnp.pad(rewards, ((0, 0), (0, k)), constant_values=end_reward)  # [B, T + k]
  if reward_min is not None:
    rewards = jnp.maximum(rewards, reward_min)
  lag = jnp.arange(length + k)[:, None] - jnp.arange(length)[None, :]  # [T + k, T]: s - t
  band = jnp.where((lag >= 0) & (lag <= k), discount ** jnp.clip(lag, 0, k).astype(jnp.float32), 0)
  return rewards @ band


def gold_token_rewards(
  mle_log_probs: jax.Array, *, reward_type: str = 'sump', baseline: float = -60.0
) -> jax.Array:
  """GOLD's MLE token rewards from the MLE model's token log-probabilities.

  Args:
    mle_log_probs: [B, T] log p_MLE(y_t | s_t).
    reward_type: 'sump': r = p_MLE (GOLD-s); 'logp': r = log p_MLE - baseline
      (GOLD-p). With 'logp', pass `end_reward=-baseline` to `gold_loss`.
    baseline: the 'logp' baseline (GOLD's `q_baseline`; its scripts use -60).

  Returns:
    [B, T] float32 token rewards.

  Raises:
    ValueError: unknown `reward_type`.
  """
  mle_log_probs = f32(mle_log_probs)
  if reward_type == 'sump':
    return jnp.exp(mle_log_probs)
  if reward_type == 'logp':
    return mle_log_probs - baseline
  raise ValueError(f"reward_type must be 'sump' or 'logp', got {reward_type!r}")


def gold_loss(
  log_probs: jax.Array,
  weights: jax.Array,
  lagged_log_probs: jax.Array,
  token_rewards: jax.Array | None = None,
  *,
  k: int = 5,
  discount: float = 1.0,
  clip_min: float = 0.2,
  clip_max: float = 1.0,
  reward_min: float = 0.1,
  end_reward: float = 1.0,
) -> tuple[jax.Array, Metrics]:
  """GOLD (Pang & He 2021): NLL weighted by sg(importance weight * k-step return).

  Defaults are those of GOLD's IWSLT14 scripts (`--iw-min 0.20 --trunc-min 0.1
  --reward-type sump`, gamma 1) and the paper's k = 5.

  Args:
    log_probs: [B, T] policy log-probabilities of the target tokens.
    weights: [B, T] loss mask.
    lagged_log_probs: [B, T] token log-probabilities under the lagged policy
      theta~ (a periodically synced copy); iw = clip(exp(.), clip_min, clip_max).
    token_rewards: [B, T] MLE token rewards (`gold_token_rewards` of the frozen
      BC/MLE policy); None uses exp(lagged_log_probs).
    k: future tokens in the return (k + 1 terms, see `k_step_returns`).
    discount: per-step discount of the return.
    clip_min: lower clip of the importance weight (GOLD's `iw_min`).
    clip_max: upper clip of the importance weight.
    reward_min: floor on each token reward (GOLD's `trunc_min`).
    end_reward: reward of positions past the end (1.0 = p of a certain token).

  Returns:
    loss: scalar, sum(w * sg(iw * Q) * NLL) / sum(w).
    metrics: `loss`, `nll` (unweighted token mean), `importance_weight` and
      `return` (token means), `num_tokens`.
  """
  log_probs, weights = f32(log_probs), f32(weights)
  lagged_log_probs = f32(lagged_log_probs)
  if token_rewards is None:
    token_rewards = jnp.exp(lagged_log_probs)
  iw = jnp.clip(jnp.exp(lagged_log_probs), clip_min, clip_max)  # [B, T]
  returns = k_step_returns(
    token_rewards, weights, k=k, discount=discount, reward_min=reward_min, end_reward=end_reward
  )
  token_weight = jax.lax.stop_gradient(iw * returns)  # [B, T]
  loss = token_mean(token_weight * -log_probs, weights)
  metrics = {
    'loss': loss,
    'nll': token_mean(-log_probs, weights),
    'importance_weight': token_mean(jax.lax.stop_gradient(iw), weights),
    'return': token_mean(jax.lax.stop_gradient(returns), weights),
    'num_tokens': weights.sum(),
  }
  return loss, metrics


def kl_anneal(step, total_steps, start: float = 1.0, end: float = 1e-5) -> jax.Array:
  """Log-linear schedule of BVMPO's KL weight: `start` at step 0, `end` from `total_steps`.

  weight = exp(log(start) + min(step / total_steps, 1) * (log(end) - log(start))),
  so the midpoint is sqrt(start * end) (1e-2.5 for the paper's 1 -> 1e-5).

  Args:
    step: scalar (int or traced) current step.
    total_steps: scalar, steps over which to anneal; <= 0 gives `end` at once.
    start: weight at step 0 (> 0).
    end: weight at and after `total_steps` (> 0).

  Returns:
    float32 scalar weight.
  """
  step, total_steps = f32(step), f32(total_steps)
  frac = jnp.where(total_steps > 0, jnp.clip(safe_div(step, total_steps), 0.0, 1.0), 1.0)
  return jnp.exp(math.log(start) + frac * (math.log(end) - math.log(start)))


def top_half_mask(advantages: jax.Array, valid: jax.Array) -> jax.Array:
  """V-MPO's selection: the ceil(n/2) valid sequences with the highest advantage.

  Ties are broken by row index (the earlier row wins), so exactly ceil(n/2)
  rows are selected, n the number of valid rows; a batch of one keeps it.

  Args:
    advantages: [B] sequence advantages.
    valid: [B] bool, rows that hold a sequence (not batch padding).

  Returns:
    [B] bool mask of the selected rows.
  """
  advantages, valid = f32(advantages), jnp.asarray(valid, bool)
  order = jnp.argsort(jnp.where(valid, -advantages, jnp.inf), stable=True)  # best first
  rank = jnp.zeros(advantages.shape, jnp.int32).at[order].set(jnp.arange(advantages.shape[0]))
  n_top = (valid.sum() + 1) // 2
  return valid & (rank < n_top)


def temperature_dual_loss(
  advantages: jax.Array,
  mask: jax.Array,
  log_temperature: jax.Array,
  epsilon_temperature: float = 0.1,
) -> jax.Array:
  """V-MPO's temperature loss on the selected advantages (gradient to eta only).

  L_eta = eta * eps + eta * (logsumexp_{b in mask}(A_b / eta) - log |mask|),
  eta = exp(log_temperature); 0 when the mask is empty.

  Args:
    advantages: [B] advantages (stop-gradient applied here).
    mask: [B] bool, the selected rows.
    log_temperature: scalar, the learned log eta.
    epsilon_temperature: eps_eta, the KL bound of the non-parametric E-step.

  Returns:
    float32 scalar.
  """
  advantages = jax.lax.stop_gradient(f32(advantages))
  mask = jnp.asarray(mask, bool)
  eta = jnp.exp(f32(log_temperature))
  count = mask.sum().astype(jnp.float32)
  scaled = jnp.where(mask, advantages / eta, _MASKED)
  log_mean_exp = jax.nn.logsumexp(scaled) - jnp.log(jnp.maximum(count, 1.0))
  return jnp.where(count > 0, eta * epsilon_temperature + eta * log_mean_exp, 0.0)


def bvmpo_loss(
  log_probs: jax.Array,
  weights: jax.Array,
  advantages: jax.Array,
  log_temperature: jax.Array,
  behaviour_log_probs: jax.Array,
  kl_weight,
  *,
  epsilon_temperature: float = 0.1,
) -> tuple[jax.Array, Metrics]:
  """BVMPO: V-MPO on the top half of sequence advantages + kl_weight * KL(beta || pi).

  Details PAPER.md leaves open, and the choice made here:
  * One action per sequence (the contextual-bandit view): advantages are per
    sequence and log pi(y|x) = sum_t w_t log_probs_t (no length normalization).
  * The top half is ceil(n/2) of the n non-empty rows (`top_half_mask`).
  * eta = exp(log_temperature); psi uses sg(eta), L_eta sees sg(A).
  * The KL is the sample estimate over all non-empty rows of the batch (they
    are behaviour samples, or human data in ReST's D_g), so its gradient is
    the sequence-level BC gradient. It needs only the behaviour policy's
    log-probability of each sequence, not full distributions.
  * V-MPO's own trust region (KL to the online target policy, multiplier
    alpha) is left out: the annealed KL to the behaviour policy is the
    regularizer the paper names.

  Args:
    log_probs: [B, T] policy log-probabilities of the target tokens.
    weights: [B, T] loss mask; rows with no weight are batch padding.
    advantages: [B] sequence advantages (`sequence_advantages`); no gradient.
    log_temperature: scalar learned log eta; receives gradient from L_eta only.
    behaviour_log_probs: [B, T] token or [B] sequence log-probabilities under
      the behaviour policy (Grow's `log_prob` feature is the [B] form).
    kl_weight: scalar lambda (`kl_anneal`); no gradient.
    epsilon_temperature: eps_eta of the temperature dual.

  Returns:
    loss: scalar L_pi + L_eta + kl_weight * KL.
    metrics: `loss`, `policy_loss`, `temperature_loss`, `kl`, `kl_weight`,
      `temperature`, `num_selected`, `selected_advantage` (psi-weighted mean),
      `nll` (unweighted token mean), `num_tokens`.
  """
  log_probs, weights = f32(log_probs), f32(weights)
  advantages = jax.lax.stop_gradient(f32(advantages))
  kl_weight = jax.lax.stop_gradient(f32(kl_weight))
  valid = weights.sum(-1) > 0  # [B]
  seq_log_probs = (log_probs * weights).sum(-1)  # [B]
  selected = top_half_mask(advantages, valid)  # [B]

  eta = jnp.exp(f32(log_temperature))
  scaled = jnp.where(selected, advantages / jax.lax.stop_gradient(eta), _MASKED)
  psi = jax.nn.softmax(scaled) * selected  # [B], sums to 1 over the selection
  policy_loss = -(psi * seq_log_probs).sum()
  temperature_loss = temperature_dual_loss(
    advantages, selected, log_temperature, epsilon_temperature
  )

  behaviour_log_probs = jax.lax.stop_gradient(f32(behaviour_log_probs))
  if behaviour_log_probs.ndim == 2:
    behaviour_log_probs = (behaviour_log_probs * weights).sum(-1)
  kl = safe_div(((behaviour_log_probs - seq_log_probs) * valid).sum(), valid.sum())

  loss = policy_loss + temperature_loss + kl_weight * kl
  metrics = {
    'loss': loss,
    'policy_loss': policy_loss,
    'temperature_loss': temperature_loss,
    'kl': kl,
    'kl_weight': kl_weight,
    'temperature': eta,
    'num_selected': selected.sum().astype(jnp.float32),
    'selected_advantage': (jax.lax.stop_gradient(psi) * advantages).sum(),
    'nll': token_mean(-log_probs, weights),
    'num_tokens': weights.sum(),
  }
  return loss, metrics


def oac_loss(
  log_probs: jax.Array, weights: jax.Array, advantages: jax.Array
) -> tuple[jax.Array, Metrics]:
  """Offline actor-critic: advantage-weighted token NLL, no V-trace.

  Args:
    log_probs: [B, T] policy log-probabilities of the target tokens.
    weights: [B, T] loss mask.
    advantages: [B, T] token advantages G_t - V^beta(s_t) (`token_advantages`)
      or [B] sequence advantages, broadcast to every token; no gradient.

  Returns:
    loss: scalar, sum(w * sg(A) * -log_probs) / sum(w).
    metrics: `loss`, `nll` (unweighted token mean), `advantage` (token mean),
      `num_tokens`.
  """
  log_probs, weights = f32(log_probs), f32(weights)
  advantages = jax.lax.stop_gradient(_per_token(advantages, weights))
  loss = token_mean(advantages * -log_probs, weights)
  metrics = {
    'loss': loss,
    'nll': token_mean(-log_probs, weights),
    'advantage': token_mean(advantages, weights),
    'num_tokens': weights.sum(),
  }
  return loss, metrics


def monte_carlo_returns(rewards: jax.Array, weights: jax.Array, discount: float = 1.0) -> jax.Array:
  """Per-token Monte-Carlo returns of a reward paid once, after the last token.

  G_bt = discount^(n_bt) * R_b on real tokens, with n_bt the number of real
  tokens after t (so the last token gets R_b); 0 on padding. With discount 1
  every real token gets R_b.

  Args:
    rewards: [B] sequence rewards.
    weights: [B, T] loss mask (one sequence per row, no packing).
    discount: per-token discount.

  Returns:
    [B, T] float32 returns.
  """
  rewards, weights = f32(rewards), f32(weights)
  tokens_after = jnp.cumsum(weights[:, ::-1], axis=-1)[:, ::-1] - weights  # [B, T]
  return rewards[:, None] * jnp.power(jnp.float32(discount), tokens_after) * weights


def token_advantages(
  rewards: jax.Array, values: jax.Array, weights: jax.Array, discount: float = 1.0
) -> jax.Array:
  """A_bt = G_bt - V(s_bt) on real tokens, 0 on padding (OAC's advantages).

  Args:
    rewards: [B] sequence rewards.
    values: [B, T] value head outputs, V(s_t) at the position of target t.
    weights: [B, T] loss mask.
    discount: discount of the returns (that of the value's training).

  Returns:
    [B, T] float32 advantages.
  """
  weights = f32(weights)
  returns = monte_carlo_returns(rewards, weights, discount)
  return (returns - f32(values)) * weights


def sequence_advantages(
  rewards: jax.Array, values: jax.Array, weights: jax.Array, discount: float = 1.0
) -> jax.Array:
  """A_b = G_b0 - V(s_b0): the return minus the value at the first real token.

  V(s_0) is the value of the source alone (position 0 sees x and the start
  token), the baseline of the bandit action y. With discount 1, A_b = R_b - V_b0.

  Args:
    rewards: [B] sequence rewards.
    values: [B, T] value head outputs.
    weights: [B, T] loss mask; an empty row gets advantage 0.
    discount: discount of the returns.

  Returns:
    [B] float32 advantages.
  """
  weights = f32(weights)
  adv = token_advantages(rewards, values, weights, discount)  # [B, T]
  first = jnp.argmax(weights > 0, axis=-1)  # [B]
  return jnp.take_along_axis(adv, first[:, None], axis=-1)[:, 0]


def bve_value_loss(
  values: jax.Array, weights: jax.Array, returns: jax.Array
) -> tuple[jax.Array, Metrics]:
  """Behaviour value estimation: token-mean squared error to Monte-Carlo returns.

  Args:
    values: [B, T] value head outputs V(s_t).
    weights: [B, T] loss mask.
    returns: [B, T] returns (`monte_carlo_returns`), or [B] sequence rewards
      used at every token (the undiscounted return); no gradient.

  Returns:
    loss: scalar, sum(w * (V - sg(G))^2) / sum(w).
    metrics: `loss`, `value` and `return` (token means), `num_tokens`.
  """
  values, weights = f32(values), f32(weights)
  returns = jax.lax.stop_gradient(_per_token(returns, weights))
  loss = token_mean(jnp.square(values - returns), weights)
  metrics = {
    'loss': loss,
    'value': token_mean(values, weights),
    'return': token_mean(returns, weights),
    'num_tokens': weights.sum(),
  }
  return loss, metrics


@dataclasses.dataclass(frozen=True)
class LossSpec:
  """A policy loss and what its caller must supply.

  Attributes:
    fn: the loss function; its first two arguments are `log_probs` and
      `weights` from the policy and `decoder_loss_weights`.
    batch_fields: batch features it reads beyond `decoder_target_tokens` and
      `decoder_loss_weights` (names of the Grow record schema where one fits).
    step_inputs: inputs the caller computes at each step with other networks
      or state (lagged policy, value network, learned temperature, schedule).
  """

  fn: Callable[..., tuple[jax.Array, Metrics]]
  batch_fields: tuple[str, ...] = ()
  step_inputs: tuple[str, ...] = ()


LOSSES: dict[str, LossSpec] = {
  # Token-mean NLL; the reward enters only through the filter.
  'bc': LossSpec(bc_loss),
  # rewards <- batch['reward'] (normalized, [B]).
  'reward_weighted': LossSpec(reward_weighted_nll, batch_fields=('reward',)),
  # lagged_log_probs <- the lagged policy on the batch; token_rewards (optional)
  # <- gold_token_rewards of the frozen MLE (BC) policy.
  'gold': LossSpec(gold_loss, step_inputs=('lagged_log_probs', 'token_rewards')),
  # advantages <- sequence_advantages(batch['reward'], V^beta values, weights);
  # behaviour_log_probs <- batch['log_prob'] (sequence) or the behaviour policy;
  # log_temperature is a learned scalar; kl_weight <- kl_anneal(step, ...).
  'bvmpo': LossSpec(
    bvmpo_loss,
    batch_fields=('reward', 'log_prob'),
    step_inputs=('advantages', 'log_temperature', 'kl_weight'),
  ),
  # advantages <- token_advantages(batch['reward'], V^beta values, weights).
  'oac': LossSpec(oac_loss, batch_fields=('reward',), step_inputs=('advantages',)),
}
