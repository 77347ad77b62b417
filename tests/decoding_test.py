"""The sampler against a cache-free reference decode, and its filters."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import test_utils

from rest_jax.core import decoding

L = 6


@pytest.fixture(scope='module')
def setup():
  model = test_utils.tiny_model()
  batch = test_utils.toy_batch(batch_size=4, input_length=7, target_length=L, seed=3)
  params = nn.unbox(model.init(jax.random.key(1), 7, L))['params']
  # A few steps of scaling so that EOS is likely and outputs are not uniform.
  params = jax.tree.map(lambda p: p * 1.5, params)
  return model, params, batch


def _reference_greedy(model, params, batch):
  """Greedy decode by re-running the full decoder on the prefix, no cache."""
  enc = batch['encoder_input_tokens']
  b = enc.shape[0]
  tokens = np.zeros((b, L), np.int32)
  log_probs = np.zeros((b, L), np.float32)
  ended = np.zeros(b, bool)
  for t in range(L):
    dec_in = np.zeros((b, L), np.int32)
    dec_in[:, 1 : t + 1] = tokens[:, :t]
    step_batch = {
      'encoder_input_tokens': enc,
      'decoder_input_tokens': dec_in,
      'decoder_target_tokens': np.ones((b, L), np.int32),
    }
    logits = np.asarray(model.logits(params, step_batch))[:, t]
    lp = np.asarray(jax.nn.log_softmax(logits))
    nxt = logits[:, 1:].argmax(-1) + 1  # Padding (0) is never an output.
    tokens[:, t] = np.where(ended, 0, nxt)
    log_probs[:, t] = np.where(ended, 0.0, lp[np.arange(b), nxt])
    ended |= nxt == 1
  return tokens, log_probs


def test_greedy_equals_reference_decode(setup):
  model, params, batch = setup
  tokens, log_probs = model.predict_batch(params, batch, jax.random.key(0), temperature=0.0)
  ref_tokens, ref_lp = _reference_greedy(model, params, batch)
  np.testing.assert_array_equal(np.asarray(tokens[:, 0]), ref_tokens)
  np.testing.assert_allclose(np.asarray(log_probs[:, 0]), ref_lp, rtol=1e-4, atol=1e-4)


def test_near_zero_temperature_equals_greedy(setup):
  model, params, batch = setup
  greedy, _ = model.predict_batch(params, batch, jax.random.key(0), temperature=0.0)
  cold, _ = model.predict_batch(params, batch, jax.random.key(5), num_decodes=3, temperature=1e-4)
  for n in range(3):
    np.testing.assert_array_equal(np.asarray(cold[:, n]), np.asarray(greedy[:, 0]))


def test_score_batch_equals_sum_of_sampled_log_probs(setup):
  model, params, batch = setup
  tokens, log_probs = model.predict_batch(
    params, batch, jax.random.key(7), num_decodes=2, temperature=1.0
  )
  tokens = np.asarray(tokens).reshape(8, L)
  enc = np.repeat(batch['encoder_input_tokens'], 2, axis=0)
  dec_in = np.zeros_like(tokens)
  dec_in[:, 1:] = tokens[:, :-1]
  scored = model.score_batch(
    params,
    {
      'encoder_input_tokens': enc,
      'decoder_input_tokens': dec_in,
      'decoder_target_tokens': tokens,
      'decoder_loss_weights': (tokens > 0).astype(np.float32),
    },
  )
  np.testing.assert_allclose(
    np.asarray(scored), np.asarray(log_probs).reshape(8, L).sum(-1), rtol=1e-4, atol=1e-4
  )


def test_samples_shapes_eos_and_determinism(setup):
  model, params, batch = setup
  fn = jax.jit(lambda p, b, r: model.predict_batch(p, b, r, num_decodes=5, temperature=1.0, topk=8))
  a_tok, a_lp = fn(params, batch, jax.random.key(3))
  b_tok, _ = fn(params, batch, jax.random.key(3))
  c_tok, _ = fn(params, batch, jax.random.key(4))
  assert a_tok.shape == (4, 5, L) and a_lp.shape == (4, 5, L)
  np.testing.assert_array_equal(np.asarray(a_tok), np.asarray(b_tok))
  assert not np.array_equal(np.asarray(a_tok), np.asarray(c_tok))
  tok, lp = np.asarray(a_tok).reshape(-1, L), np.asarray(a_lp).reshape(-1, L)
  for row, row_lp in zip(tok, lp):
    eos = np.flatnonzero(row == 1)
    if eos.size:
      assert (row[eos[0] + 1 :] == 0).all() and (row_lp[eos[0] + 1 :] == 0).all()
    assert (row_lp[: (eos[0] + 1 if eos.size else L)] < 0).all()


def _steps_until(end_at, max_decode_length=9):
  """Greedy decode where row b emits token 3 until step end_at[b], then EOS (1)."""
  end_at = jnp.asarray(end_at)

  def tokens_to_logits(ids, cache, position):
    logits = jnp.full((ids.shape[0], 5), -5.0).at[:, 3].set(5.0)
    logits = logits.at[:, 1].set(jnp.where(position >= end_at, 10.0, -5.0))
    return logits, cache

  tokens, _, steps = decoding.temperature_sample(
    tokens_to_logits,
    jnp.zeros(()),
    batch_size=end_at.shape[0],
    max_decode_length=max_decode_length,
    rng=jax.random.key(0),
    eos_id=1,
    temperature=0.0,
    return_steps=True,
  )
  return np.asarray(tokens), int(steps)


def test_early_exit_when_all_rows_end():
  # The loop stops after the step in which the last row emits EOS.
  tokens, steps = _steps_until([0, 2, 4])
  assert steps == 5
  np.testing.assert_array_equal(
    tokens,
    [
      [1, 0, 0, 0, 0, 0, 0, 0, 0],
      [3, 3, 1, 0, 0, 0, 0, 0, 0],
      [3, 3, 3, 3, 1, 0, 0, 0, 0],
    ],
  )
  tokens, steps = _steps_until([0, 0, 0])
  assert steps == 1
  np.testing.assert_array_equal(tokens[:, 0], [1, 1, 1])
  assert (tokens[:, 1:] == 0).all()


def test_no_early_exit_while_a_row_is_running():
  tokens, steps = _steps_until([99, 99, 99])
  assert steps == 9
  assert (tokens == 3).all()
  tokens, steps = _steps_until([0, 99, 2])  # One row never ends: the full length.
  assert steps == 9
  np.testing.assert_array_equal(tokens[1], [3] * 9)


def test_return_steps_defaults_off():
  out = decoding.temperature_sample(
    lambda ids, cache, position: (jnp.zeros((2, 5)), cache),
    jnp.zeros(()),
    batch_size=2,
    max_decode_length=3,
    rng=jax.random.key(0),
    eos_id=1,
    temperature=0.0,
  )
  assert len(out) == 2


def test_topk_mask():
  logits = jnp.array([[1.0, 4.0, 3.0, 2.0, 0.0], [5.0, 1.0, 2.0, 4.0, 3.0]])
  out = np.asarray(decoding.filter_logits(logits, topk=2))
  keep = out > decoding.NEG_INF / 2
  np.testing.assert_array_equal(keep, [[0, 1, 1, 0, 0], [1, 0, 0, 1, 0]])
  np.testing.assert_array_equal(out[keep], np.asarray(logits)[keep])
  # k at or above the vocabulary size keeps everything (top-k 40 on a 27-piece vocabulary).
  np.testing.assert_array_equal(decoding.filter_logits(logits, topk=40), logits)


def test_topp_mask():
  probs = np.array([[0.5, 0.3, 0.15, 0.05], [0.05, 0.9, 0.03, 0.02]])
  logits = jnp.log(jnp.asarray(probs))
  keep = lambda p: np.asarray(decoding.filter_logits(logits, topp=p)) > decoding.NEG_INF / 2  # noqa: E731
  # 0.5 reaches 0.5: the first token alone; 0.7 needs 0.5 + 0.3.
  np.testing.assert_array_equal(keep(0.5), [[1, 0, 0, 0], [0, 1, 0, 0]])
  np.testing.assert_array_equal(keep(0.7), [[1, 1, 0, 0], [0, 1, 0, 0]])
  np.testing.assert_array_equal(keep(0.92), [[1, 1, 1, 0], [1, 1, 0, 0]])
  np.testing.assert_array_equal(keep(1.0), np.ones((2, 4), bool))


def test_topk_sampling_never_leaves_the_top_k():
  logits = jnp.log(jnp.array([[0.1, 0.2, 0.3, 0.4]] * 64))

  def tokens_to_logits(ids, cache, position):
    return logits, cache

  tokens, _ = decoding.temperature_sample(
    tokens_to_logits,
    jnp.zeros(()),
    batch_size=64,
    max_decode_length=4,
    rng=jax.random.key(0),
    eos_id=99,
    temperature=1.0,
    topk=2,
  )
  assert set(np.unique(np.asarray(tokens)).tolist()) <= {2, 3}


def test_inverse_cdf_sampling_matches_the_distribution():
  probs = np.array([0.5, 0.0, 0.3, 0.15, 0.05], np.float32)
  logits = jnp.log(jnp.tile(jnp.asarray(probs), (20000, 1)))
  draws = np.asarray(decoding._sample_categorical(jax.random.key(0), logits))
  freq = np.bincount(draws, minlength=5) / draws.size
  assert freq[1] == 0.0  # zero-probability tokens are never drawn
  np.testing.assert_allclose(freq, probs, atol=0.015)


def test_two_level_sampling_across_blocks_and_padding():
  # 300 tokens = 4 full blocks of 64 and a padded one; every fourth token and
  # the whole second block have zero probability.
  rng = np.random.default_rng(0)
  probs = rng.random(300).astype(np.float64)
  probs[::4] = 0.0
  probs[64:128] = 0.0
  probs[299] = 0.05  # The last token, in the padded block, is drawable.
  probs /= probs.sum()
  logits = jnp.log(jnp.tile(jnp.asarray(probs, jnp.float32), (40000, 1)))
  draws = np.asarray(decoding._sample_categorical(jax.random.key(1), logits))
  assert draws.min() >= 0 and draws.max() < 300
  freq = np.bincount(draws, minlength=300) / draws.size
  assert freq[probs == 0].sum() == 0.0
  np.testing.assert_allclose(freq, probs, atol=0.004)


def test_sampling_never_draws_masked_tokens_at_the_edges_of_u():
  # A whole first block filtered out (as pad and top-k can do): neither the
  # smallest u (target flushed to 0) nor the largest may land in it.
  logits = np.full((2, 200), decoding.NEG_INF, np.float32)
  logits[:, 70] = 0.0
  logits[:, 150] = 0.0
  probs_ok = {70, 150}
  for key in range(20):
    draws = np.asarray(decoding._sample_categorical(jax.random.key(key), jnp.asarray(logits)))
    assert set(draws.tolist()) <= probs_ok
