"""Autoregressive sampling as one compiled program; knows nothing about models.

`temperature_sample` runs a `lax.while_loop` over a static cache: each
iteration feeds one token per row to a `tokens_to_logits` callback, picks the
next token (greedy, or temperature sampling with optional top-k / top-p
filtering), and stops early when every row has emitted EOS. Rows that have
finished emit padding with log-probability 0.

Per-step randomness is `fold_in(rng, step)`, so a row's sample does not
depend on how many steps other rows take.

Shapes: B rows (sources x samples, already repeated by the caller), L the
maximum decode length, V the vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

# tokens_to_logits(token_ids [B, 1] int32, cache, position int32 scalar)
#   -> (logits [B, V] float32, new_cache)
TokensToLogitsFn = Callable[[jax.Array, Any, jax.Array], tuple[jax.Array, Any]]

NEG_INF = -1e10


def filter_logits(logits: jax.Array, topk: int = 0, topp: float = 1.0) -> jax.Array:
  """Masks logits outside the top-k and/or the top-p nucleus to NEG_INF.

  Args:
    logits: [B, V] float32.
    topk: keep the k largest logits per row; 0 (or k >= V) keeps all.
    topp: keep the smallest set of tokens whose probability mass reaches
      `topp` (the most likely token is always kept); 1.0 keeps all.

  Returns:
    [B, V] logits with the excluded entries set to NEG_INF.
  """
  if 0 < topk < logits.shape[-1]:
    kth = jax.lax.top_k(logits, topk)[0][:, -1:]  # [B, 1]
    logits = jnp.where(logits < kth, NEG_INF, logits)
  if topp < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]  # descending, [B, V]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs  # mass of strictly better tokens
    keep_sorted = mass_before < topp  # the first token always has mass_before 0
    # The threshold is the smallest kept logit of each row.
    threshold = jnp.min(jnp.where(keep_sorted, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < threshold, NEG_INF, logits)
  return logits


def first_argmax(logits: jax.Array) -> jax.Array:
  """`jnp.argmax(logits, -1)` [B] int32 for `logits` [B, V] (first index of the maximum).

  As a max-reduce and a min-reduce: XLA:CPU's argmax (a variadic reduce) is
  about 4x slower at [64, 4000].
  """
  top = logits.max(axis=-1, keepdims=True)
  index = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
  return jnp.min(jnp.where(logits == top, index, logits.shape[-1]), axis=-1)


def _sample_categorical(rng: jax.Array, logits: jax.Array, block: int = 64) -> jax.Array:
  """One draw per row of `logits` [B, V] by inverting the CDF: [B] int32.

  Needs one uniform number per row where Gumbel-max needs V of them; on CPU,
  generating B x V random bits costs more than the rest of a small model's step.
  The inversion has two levels: the CDF over blocks of `block` tokens picks a
  block, the CDF inside it picks the token; a cumulative sum over all V tokens
  (XLA:CPU's reduce-window) took a sixth of the sampler's time. Tokens with
  zero probability (filtered out) can never be drawn.
  """
  rows, vocab = logits.shape
  probs = jax.nn.softmax(logits, axis=-1)
  pad = -vocab % block
  blocks = jnp.pad(probs, ((0, 0), (0, pad))).reshape(rows, -1, block)  # [B, nb, block]
  block_mass = blocks.sum(axis=-1)  # [B, nb]
  block_cdf = jnp.cumsum(block_mass, axis=-1)
  u = jax.random.uniform(rng, (rows, 1), minval=jnp.finfo(jnp.float32).tiny)
  target = u * block_cdf[:, -1:]  # [B, 1]
  # The block: the first whose CDF reaches the target, never one without mass.
  # (A target flushed to 0, u = tiny, or rounding past the total, stays on the
  # first or last block with mass.)
  chosen = jnp.sum(block_cdf < target, axis=-1)
  index = jnp.arange(block_mass.shape[1])
  first_block = jnp.min(jnp.where(block_mass > 0, index, block_mass.shape[1] - 1), axis=-1)
  last_block = jnp.max(jnp.where(block_mass > 0, index, 0), axis=-1)
  chosen = jnp.clip(chosen, first_block, last_block)  # [B]
  inner = jnp.take_along_axis(blocks, chosen[:, None, None], axis=1)[:, 0]  # [B, block]
  before = jnp.take_along_axis(block_cdf - block_mass, chosen[:, None], axis=1)  # [B, 1]
  offset = jnp.sum(jnp.cumsum(inner, axis=-1) < target - before, axis=-1)
  # Rounding can put the target just outside the block's own CDF: stay on its
  # first or last token with mass.
  first = jnp.min(jnp.where(inner > 0, jnp.arange(block), block - 1), axis=-1)
  last = jnp.max(jnp.where(inner > 0, jnp.arange(block), 0), axis=-1)
  return (chosen * block + jnp.clip(offset, first, last)).astype(jnp.int32)


def temperature_sample(
  tokens_to_logits: TokensToLogitsFn,
  cache: Any,
  *,
  batch_size: int,
  max_decode_length: int,
  rng: jax.Array,
  eos_id: int,
  pad_id: int = 0,
  start_id: int = 0,
  temperature: float = 1.0,
  topk: int = 0,
  topp: float = 1.0,
  return_steps: bool = False,
) -> tuple[jax.Array, jax.Array] | tuple[jax.Array, jax.Array, jax.Array]:
  """Samples (or greedily decodes) B sequences of up to L tokens.

  Args:
    tokens_to_logits: callback `(token_ids [B, 1], cache, position) ->
      (logits [B, V], new_cache)`; `position` is the index of the token fed.
    cache: the callback's initial cache pytree (e.g. zeroed K/V buffers).
    batch_size: B, the number of rows (already including samples per source).
    max_decode_length: L, the number of generated positions.
    rng: PRNG key; step t uses `fold_in(rng, t)`.
    eos_id: end-of-sequence id; a row stops after emitting it.
    pad_id: id written after EOS; never chosen as a token.
    start_id: the first token fed to the decoder (T5 uses pad = 0).
    temperature: 0.0 gives greedy decoding; otherwise logits are divided by it
      before top-k / top-p filtering and sampling. A Python float (static).
    topk: top-k filter, 0 disables.
    topp: nucleus filter, 1.0 disables.
    return_steps: also return the number of decode steps the loop ran (static).

  Returns:
    tokens: [B, L] int32, the generated tokens (EOS included, then `pad_id`).
    log_probs: [B, L] float32, per-token log-probabilities of the chosen tokens
      under the model's own distribution (temperature 1, unfiltered), 0 after
      EOS. Their sum is the sequence log-likelihood that `score_batch` gives.
    steps: [] int32, only with `return_steps`: the number of iterations (calls
      of `tokens_to_logits`), L unless every row emitted EOS earlier.
  """
  greedy = temperature == 0.0

  def cond_fn(state):
    step, ended = state[0], state[1]
    return (step < max_decode_length) & ~jnp.all(ended)

  def body_fn(state):
    step, ended, cur, tokens, log_probs, cache = state
    logits, cache = tokens_to_logits(cur[:, None], cache, step)
    logits = logits.astype(jnp.float32)
    model_log_probs = jax.nn.log_softmax(logits, axis=-1)  # [B, V]
    # Padding is never an output: a sampled pad would read as end-of-sequence
    # to every consumer (scoring masks it), so it is excluded from the choice.
    choice_logits = logits.at[:, pad_id].set(NEG_INF)
    if greedy:
      nxt = first_argmax(choice_logits)
    else:
      filtered = filter_logits(choice_logits / temperature, topk, topp)
      nxt = _sample_categorical(jax.random.fold_in(rng, step), filtered)
    lp = jnp.take_along_axis(model_log_probs, nxt[:, None], axis=-1)[:, 0]
    nxt = jnp.where(ended, pad_id, nxt)
    lp = jnp.where(ended, 0.0, lp)
    tokens = jax.lax.dynamic_update_slice(tokens, nxt[:, None], (0, step))
    log_probs = jax.lax.dynamic_update_slice(log_probs, lp[:, None], (0, step))
    ended = ended | (nxt == eos_id)
    return step + 1, ended, nxt, tokens, log_probs, cache

  init = (
    jnp.array(0, jnp.int32),
    jnp.zeros((batch_size,), bool),
    jnp.full((batch_size,), start_id, jnp.int32),
    jnp.full((batch_size, max_decode_length), pad_id, jnp.int32),
    jnp.zeros((batch_size, max_decode_length), jnp.float32),
    cache,
  )
  steps, _, _, tokens, log_probs, _ = jax.lax.while_loop(cond_fn, body_fn, init)
  if return_steps:
    return tokens, log_probs, steps
  return tokens, log_probs
