"""The policies (EncoderDecoderModel, DecoderOnlyModel): loss, scoring and sampling.

Each wraps a Flax module (`network.Transformer`, T5 v1.1; or
`network.DecoderOnlyTransformer`, a Llama-shaped LM reading prompt then
completion) and `decoding.temperature_sample` (the sampler) behind three pure
functions, which is all that trainers and the Grow step depend on
(`make_model` picks the class from the network config):

* `loss_fn(params, batch, rng) -> (loss, metrics)`: token-level NLL.
* `score_batch(params, batch) -> [B]`: sequence log-likelihood of targets.
* `predict_batch(params, batch, rng, ...) -> (tokens [B, N, L], log_probs)`.

Batches are dicts of int32 arrays in the t5x feature-converter layout:
`encoder_input_tokens` [B, S], `decoder_input_tokens` [B, T],
`decoder_target_tokens` [B, T], `decoder_loss_weights` [B, T].
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rest_jax.core import decoding, losses, network

Batch = Mapping[str, jax.Array]
_NEG_INF = -1e10  # Masked attention bias (as network.py).


@jax.custom_vjp
def token_log_probs(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Log-probabilities [B, T] of `targets` [B, T] under `logits` [B, T, V].

  `logits[target] - logsumexp(logits)`, with a hand-written gradient
  `g * (one_hot(target) - softmax(logits))`: one fused elementwise pass over
  [B, T, V], where autodiff of `log_softmax` + `take_along_axis` builds a
  zero [B, T, V] array, scatters into it and exponentiates twice (t5x's
  `cross_entropy_with_logits` has a custom gradient for the same reason).
  """
  return _token_log_probs_fwd(logits, targets)[0]


def _token_log_probs_fwd(logits, targets):
  logits32 = logits.astype(jnp.float32)
  lse = jax.nn.logsumexp(logits32, axis=-1)  # [B, T]
  picked = jnp.take_along_axis(logits32, targets[..., None], axis=-1)[..., 0]
  return picked - lse, (logits, lse, targets)


def _token_log_probs_bwd(residuals, g):
  raw_logits, lse, targets = residuals
  logits = raw_logits.astype(jnp.float32)
  vocab = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
  one_hot = (vocab == targets[..., None]).astype(jnp.float32)
  d_logits = g[..., None] * (one_hot - jnp.exp(logits - lse[..., None]))
  return d_logits.astype(raw_logits.dtype), np.zeros(targets.shape, jax.dtypes.float0)


token_log_probs.defvjp(_token_log_probs_fwd, _token_log_probs_bwd)


class PolicyModel:
  """What every policy shares: the BC loss and scoring on top of `logits`.

  Subclasses set `config` and `module` and define `init`, `logits` and
  `predict_batch` on the feature-converter batches of the module docstring.
  """

  config: Any
  module: Any

  # Equal configs make equal models, so jitted functions that take the model as
  # a static argument compile once per config, not once per instance.
  def __eq__(self, other) -> bool:
    return type(other) is type(self) and other.config == self.config

  def __hash__(self) -> int:
    return hash((type(self), self.config))

  def init_params_fn(self, input_length: int, target_length: int) -> Callable[[jax.Array], Any]:
    """`rng -> boxed params` for [B, S] inputs and [B, T] targets (for states and restores)."""
    return lambda rng: self.init(rng, input_length, target_length)['params']

  def init(self, rng: jax.Array, input_length: int, target_length: int) -> dict:
    """Returns boxed (logically partitioned) variables {'params': ...}."""
    raise NotImplementedError

  def logits(
    self, params, batch: Batch, rng: jax.Array | None = None, enable_dropout: bool = False
  ) -> jax.Array:
    """Teacher-forced logits [B, T, V] (float32) of the targets."""
    raise NotImplementedError

  def loss_fn(self, params, batch: Batch, rng: jax.Array | None) -> tuple[jax.Array, dict]:
    """Mean token NLL over `decoder_loss_weights` (the BC loss).

    Args:
      params: unboxed parameters.
      batch: feature-converter batch (see module docstring).
      rng: dropout key, or None for a deterministic pass.

    Returns:
      loss: scalar, sum(weights * NLL) / sum(weights).
      metrics: dict of scalars: `loss`, `accuracy`, `num_tokens`, `nll_sum`.
    """
    logits = self.logits(params, batch, rng, enable_dropout=rng is not None)
    targets = batch['decoder_target_tokens']
    weights = batch['decoder_loss_weights'].astype(jnp.float32)
    nll = -token_log_probs(logits, targets)  # [B, T]
    num_tokens = jnp.maximum(weights.sum(), 1.0)
    loss = (nll * weights).sum() / num_tokens
    # The target is the argmax iff its logit is the row's maximum (ties aside): a
    # max-reduce, where XLA:CPU's argmax over [B, T, V] cost ~8% of the step.
    target_logits = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    correct = (target_logits >= logits.max(axis=-1)).astype(jnp.float32)
    metrics = {
      'loss': loss,
      'accuracy': (correct * weights).sum() / num_tokens,
      'num_tokens': weights.sum(),
      'nll_sum': (nll * weights).sum(),
    }
    return loss, metrics

  def score_batch(self, params, batch: Batch) -> jax.Array:
    """Sequence log-likelihood [B] of `decoder_target_tokens` (weighted sum)."""
    logits = self.logits(params, batch)
    lp = token_log_probs(logits, batch['decoder_target_tokens'])
    return (lp * batch['decoder_loss_weights'].astype(jnp.float32)).sum(-1)


class EncoderDecoderModel(PolicyModel):
  """A T5 v1.1 encoder-decoder policy (no gin, no state)."""

  def __init__(self, config: network.T5Config):
    self.config = config
    self.module = network.Transformer(config)

  def init(self, rng: jax.Array, input_length: int, target_length: int) -> dict:
    """Returns boxed (logically partitioned) variables {'params': ...}."""
    enc = jnp.ones((1, input_length), jnp.int32)
    dec = jnp.ones((1, target_length), jnp.int32)
    return self.module.init(rng, enc, dec, dec, enable_dropout=False)

  def logits(
    self, params, batch: Batch, rng: jax.Array | None = None, enable_dropout: bool = False
  ) -> jax.Array:
    """Teacher-forced logits [B, T, V] (float32); packed batches need segment ids."""
    rngs = {'dropout': rng} if enable_dropout and rng is not None else None
    return self.module.apply(
      {'params': params},
      batch['encoder_input_tokens'],
      batch['decoder_input_tokens'],
      batch['decoder_target_tokens'],
      enable_dropout=enable_dropout,
      encoder_segment_ids=batch.get('encoder_segment_ids'),
      decoder_segment_ids=batch.get('decoder_segment_ids'),
      rngs=rngs,
    )

  def _init_cache(self, params, encoded, encoder_input_tokens, max_decode_length):
    """The decode cache for B rows: zeroed self-attention K/V buffers [B, H, L, D]
    and the cross-attention K/V [B, H, S, D], projected once from `encoded`."""
    start = jnp.full((encoded.shape[0], 1), self.config.pad_id, jnp.int32)
    _, variables = self.module.apply(
      {'params': params},
      encoded,
      encoder_input_tokens,
      start,
      decode=True,
      decode_position=jnp.array(0, jnp.int32),
      max_decode_length=max_decode_length,
      mutable=['cache'],
      method=network.Transformer.decode,
    )
    return variables['cache']

  def predict_batch(
    self,
    params,
    batch: Batch,
    rng: jax.Array,
    *,
    num_decodes: int = 1,
    max_decode_length: int | None = None,
    temperature: float = 0.0,
    topk: int = 0,
    topp: float = 1.0,
  ) -> tuple[jax.Array, jax.Array]:
    """Samples `num_decodes` outputs per source.

    The encoder runs once per source; its output is repeated N times and the
    decoder runs as one `lax.while_loop` over a static KV cache.

    Args:
      params: unboxed parameters.
      batch: needs `encoder_input_tokens` [B, S]; `decoder_target_tokens`
        [B, T] gives the default decode length T.
      rng: PRNG key for sampling.
      num_decodes: N, samples per source.
      max_decode_length: L; defaults to T.
      temperature: 0.0 is greedy; see `decoding.temperature_sample`.
      topk: top-k filter (0 = off).
      topp: nucleus filter (1.0 = off).

    Returns:
      tokens: [B, N, L] int32 (EOS then padding).
      log_probs: [B, N, L] float32 per-token model log-probabilities.
    """
    enc_tokens = batch['encoder_input_tokens']
    if max_decode_length is None:
      max_decode_length = batch['decoder_target_tokens'].shape[1]
    encoded = self.module.apply({'params': params}, enc_tokens, method=network.Transformer.encode)
    batch_size = enc_tokens.shape[0]
    rows = batch_size * num_decodes
    # [B, ...] -> [B * N, ...]; rows of one source are adjacent.
    encoded = jnp.repeat(encoded, num_decodes, axis=0)
    enc_tokens = jnp.repeat(enc_tokens, num_decodes, axis=0)
    cache = self._init_cache(params, encoded, enc_tokens, max_decode_length)

    def tokens_to_logits(token_ids, cache, position):
      logits, variables = self.module.apply(
        {'params': params, 'cache': cache},
        encoded,
        enc_tokens,
        token_ids,
        decode=True,
        decode_position=position,
        max_decode_length=max_decode_length,
        mutable=['cache'],
        method=network.Transformer.decode,
      )
      return logits[:, 0, :], variables['cache']

    tokens, log_probs = decoding.temperature_sample(
      tokens_to_logits,
      cache,
      batch_size=rows,
      max_decode_length=max_decode_length,
      rng=rng,
      eos_id=self.config.eos_id,
      pad_id=self.config.pad_id,
      start_id=self.config.pad_id,
      temperature=temperature,
      topk=topk,
      topp=topp,
    )
    shape = (batch_size, num_decodes, max_decode_length)
    return tokens.reshape(shape), log_probs.reshape(shape)


def prompt_completion_layout(batch: Batch, config: network.DecoderConfig) -> dict[str, jax.Array]:
  """One decoder-only sequence per row from an encoder-decoder batch.

  Row b is `prompt_b` (the S slots of `encoder_input_tokens`, padding
  included) followed by the T slots of `decoder_input_tokens` (`start_id`
  first, then the completion shifted right). Padding stays where it is and is
  masked; rotary positions count real tokens per row, so a prompt of n tokens
  puts the completion at positions n, n+1, ...: per-row positions, not left
  padding. Packed batches (segment ids and positions of seqio's feature
  converter) give each segment its own prompt and completion.

  Returns:
    tokens [B, S+T] int32, positions [B, S+T] int32, bias [B, 1, S+T, S+T].
  """
  prompt = batch['encoder_input_tokens']
  targets = batch['decoder_target_tokens']
  prompt_valid = prompt != config.pad_id  # [B, S]
  valid = jnp.concatenate([prompt_valid, targets != config.pad_id], axis=1)
  prompt_segments = batch.get('encoder_segment_ids')
  if prompt_segments is None:
    completion_start = jnp.zeros(targets.shape, bool).at[:, 0].set(True)
    prompt_positions = jnp.maximum(jnp.cumsum(prompt_valid, axis=1) - 1, 0)
    offset = jnp.broadcast_to(jnp.arange(targets.shape[1]), targets.shape)
    prompt_length = prompt_valid.sum(axis=1, keepdims=True)  # [B, 1]
    segments = None
  else:
    completion_segments = batch['decoder_segment_ids']
    offset = batch['decoder_positions']
    completion_start = offset == 0
    prompt_positions = batch['encoder_positions']
    same = completion_segments[:, :, None] == prompt_segments[:, None, :]  # [B, T, S]
    prompt_length = (same & prompt_valid[:, None, :]).sum(axis=-1)  # [B, T]
    segments = jnp.concatenate([prompt_segments, completion_segments], axis=1)
  completion = jnp.where(completion_start, config.start_id, batch['decoder_input_tokens'])
  return {
    'tokens': jnp.concatenate([prompt, completion], axis=1).astype(jnp.int32),
    'positions': jnp.concatenate([prompt_positions, prompt_length + offset], axis=1),
    'bias': network.causal_bias(valid, segments),
  }


class DecoderOnlyModel(PolicyModel):
  """A decoder-only LM (`network.DecoderOnlyTransformer`) as a prompt -> completion policy.

  It takes the same batches as `EncoderDecoderModel` (`encoder_input_tokens`
  are the prompts, `decoder_*` the completions), so every driver, loss and
  data pipeline serves both; the layout is `prompt_completion_layout`. The
  loss and scores cover completion tokens only (the prompt is never a target).
  """

  def __init__(self, config: network.DecoderConfig):
    self.config = config
    self.module = network.DecoderOnlyTransformer(config)

  def init(self, rng: jax.Array, input_length: int, target_length: int) -> dict:
    """Returns boxed (logically partitioned) variables {'params': ...}."""
    return self.module.init(rng, jnp.ones((1, input_length + target_length), jnp.int32))

  def logits(
    self, params, batch: Batch, rng: jax.Array | None = None, enable_dropout: bool = False
  ) -> jax.Array:
    """Teacher-forced logits [B, T, V] (float32) of the completion positions."""
    rngs = {'dropout': rng} if enable_dropout and rng is not None else None
    layout = prompt_completion_layout(batch, self.config)
    return self.module.apply(
      {'params': params},
      layout['tokens'],
      layout['positions'],
      layout['bias'],
      enable_dropout,
      logits_from=batch['encoder_input_tokens'].shape[1],
      rngs=rngs,
    )

  def predict_batch(
    self,
    params,
    batch: Batch,
    rng: jax.Array,
    *,
    num_decodes: int = 1,
    max_decode_length: int | None = None,
    temperature: float = 0.0,
    topk: int = 0,
    topp: float = 1.0,
  ) -> tuple[jax.Array, jax.Array]:
    """Samples `num_decodes` completions per prompt; the arguments of `EncoderDecoderModel`'s.

    The prompts [B, S] are prefilled into a KV cache of S + L slots in one
    pass (once per prompt; the cache is then repeated N times), and the same
    compiled `decoding.temperature_sample` loop writes slot S + t at step t,
    at rotary position n_b + t for a prompt of n_b tokens (per-row positions:
    prompts of any length share a batch, their padding masked).

    Returns:
      tokens: [B, N, L] int32 (EOS then padding).
      log_probs: [B, N, L] float32 per-token model log-probabilities.
    """
    cfg = self.config
    prompt = batch['encoder_input_tokens']
    if max_decode_length is None:
      max_decode_length = batch['decoder_target_tokens'].shape[1]
    batch_size, prompt_slots = prompt.shape
    cache_length = prompt_slots + max_decode_length
    prompt_valid = prompt != cfg.pad_id
    positions = jnp.maximum(jnp.cumsum(prompt_valid, axis=1) - 1, 0)
    prefill_bias = network.causal_bias(prompt_valid)  # [B, 1, S, S]
    prefill_bias = jnp.pad(
      prefill_bias, ((0, 0), (0, 0), (0, 0), (0, max_decode_length)), constant_values=_NEG_INF
    )
    _, variables = self.module.apply(
      {'params': params},
      prompt,
      positions,
      prefill_bias,
      decode=True,
      cache_index=jnp.array(0, jnp.int32),
      cache_length=cache_length,
      logits_from=prompt_slots - 1,
      mutable=['cache'],
    )
    # [B, ...] -> [B * N, ...]; rows of one prompt are adjacent.
    cache = jax.tree.map(lambda c: jnp.repeat(c, num_decodes, axis=0), variables['cache'])
    prompt_valid = jnp.repeat(prompt_valid, num_decodes, axis=0)  # [BN, S]
    prompt_length = prompt_valid.sum(axis=1, keepdims=True)  # [BN, 1]
    steps = jnp.arange(max_decode_length)

    def tokens_to_logits(token_ids, cache, step):
      key_valid = jnp.concatenate(
        [prompt_valid, jnp.broadcast_to(steps <= step, (prompt_valid.shape[0], steps.size))], 1
      )
      bias = jnp.where(key_valid, 0.0, _NEG_INF)[:, None, None, :]  # [BN, 1, 1, S+L]
      logits, variables = self.module.apply(
        {'params': params, 'cache': cache},
        token_ids,
        prompt_length + step,
        bias,
        decode=True,
        cache_index=prompt_slots + step,
        cache_length=cache_length,
        mutable=['cache'],
      )
      return logits[:, 0, :], variables['cache']

    tokens, log_probs = decoding.temperature_sample(
      tokens_to_logits,
      cache,
      batch_size=batch_size * num_decodes,
      max_decode_length=max_decode_length,
      rng=rng,
      eos_id=cfg.eos_id,
      pad_id=cfg.pad_id,
      start_id=cfg.start_id,
      temperature=temperature,
      topk=topk,
      topp=topp,
    )
    shape = (batch_size, num_decodes, max_decode_length)
    return tokens.reshape(shape), log_probs.reshape(shape)


def make_model(config: network.T5Config | network.DecoderConfig) -> PolicyModel:
  """The policy model of a network config: T5Config -> encoder-decoder, DecoderConfig -> LM."""
  if isinstance(config, network.DecoderConfig):
    return DecoderOnlyModel(config)
  if isinstance(config, network.T5Config):
    return EncoderDecoderModel(config)
  raise TypeError(
    'MODEL_CONFIG must be a network.T5Config or network.DecoderConfig, got '
    f'{type(config).__name__}.'
  )


class ValueModel:
  """A token-level value network V(s_t) (`network.ValueNetwork`), for BVMPO and OAC.

  Trained by BVE (`losses.bve_value_loss`) on Monte-Carlo returns of the
  sequence reward `batch['reward']` [B]; one sequence per row (no packing).
  """

  def __init__(self, config: network.T5Config, discount: float = 1.0):
    if not isinstance(config, network.T5Config):
      raise ValueError(
        'Value networks (the bvmpo and oac Improve losses, online PPO) need an encoder-decoder '
        f'policy (network.T5Config); MODEL_CONFIG is a {type(config).__name__}. Use the bc, '
        'reward_weighted or gold loss, or GRPO / RLOO, with a decoder-only policy.'
      )
    self.config = config
    self.discount = discount
    self.module = network.ValueNetwork(config)

  def __eq__(self, other) -> bool:
    return (
      type(other) is type(self) and other.config == self.config and other.discount == self.discount
    )

  def __hash__(self) -> int:
    return hash((type(self), self.config, self.discount))

  def init(self, rng: jax.Array, input_length: int, target_length: int) -> dict:
    """Returns boxed variables {'params': {'body': ..., 'value_head': ...}}."""
    enc = jnp.ones((1, input_length), jnp.int32)
    dec = jnp.ones((1, target_length), jnp.int32)
    return self.module.init(rng, enc, dec, dec, enable_dropout=False)

  def values(self, params, batch: Batch, rng: jax.Array | None = None) -> jax.Array:
    """V(s_t) [B, T] float32 at each target position (dropout when `rng` is given)."""
    rngs = {'dropout': rng} if rng is not None else None
    return self.module.apply(
      {'params': params},
      batch['encoder_input_tokens'],
      batch['decoder_input_tokens'],
      batch['decoder_target_tokens'],
      enable_dropout=rng is not None,
      rngs=rngs,
    )

  def loss_fn(self, params, batch: Batch, rng: jax.Array | None) -> tuple[jax.Array, dict]:
    """BVE: token-mean squared error of V(s_t) to the discounted return of `reward`."""
    weights = batch['decoder_loss_weights'].astype(jnp.float32)
    values = self.values(params, batch, rng)
    returns = losses.monte_carlo_returns(batch['reward'], weights, self.discount)
    return losses.bve_value_loss(values, weights, returns)


def value_params_from_policy(policy_params: Mapping, value_params: Mapping) -> dict:
  """Value-network params whose body is the policy's (its output layer dropped).

  Args:
    policy_params: unboxed `network.Transformer` params.
    value_params: unboxed `network.ValueNetwork` params (supplies the head).

  Returns:
    {'body': policy params without 'logits_dense', 'value_head': value_params' head}.
  """
  body = {k: v for k, v in policy_params.items() if k in value_params['body']}
  return {'body': body, 'value_head': value_params['value_head']}
