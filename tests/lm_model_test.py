"""The decoder-only policy: prefill + cached sampling, per-row positions, prompt masking, packing.

`models.DecoderOnlyModel` reads encoder-decoder batches as prompt then
completion (`models.prompt_completion_layout`); these tests hold it to the raw
LM (`network.DecoderOnlyTransformer` on the unpadded concatenation).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import test_utils

from rest_jax.core import models, network

CONFIG = network.DecoderConfig(
  vocab_size=40, emb_dim=32, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=48, num_layers=2
)
S, T = 7, 6


@pytest.fixture(scope='module')
def model_and_params():
  model = models.DecoderOnlyModel(CONFIG)
  return model, nn.unbox(model.init(jax.random.key(0), S, T)['params'])


def _batch(seed=0):
  return test_utils.toy_batch(3, S, T, vocab=CONFIG.vocab_size, seed=seed)


def _raw_log_probs(model, params, prompt, target):
  """log p(target_t | prompt, start, target_<t) from the raw LM on the unpadded sequence."""
  prompt = [int(t) for t in prompt if t != CONFIG.pad_id]
  target = [int(t) for t in target if t != CONFIG.pad_id]
  seq = jnp.array([prompt + [CONFIG.start_id] + target[:-1]], jnp.int32)
  logits = jax.jit(model.module.apply)({'params': params}, seq)[0, len(prompt) :]
  return np.asarray(models.token_log_probs(logits[None], jnp.array([target]))[0])


def test_layout_equals_the_raw_lm_and_masks_the_prompt(model_and_params):
  model, params = model_and_params
  batch = _batch()
  lp = np.asarray(
    models.token_log_probs(model.logits(params, batch), batch['decoder_target_tokens'])
  )
  weights = batch['decoder_loss_weights']
  for b in range(3):
    n = int(weights[b].sum())
    ref = _raw_log_probs(
      model, params, batch['encoder_input_tokens'][b], batch['decoder_target_tokens'][b]
    )
    np.testing.assert_allclose(lp[b, :n], ref, rtol=1e-5, atol=1e-5)
  # The loss is the mean NLL of the completion tokens only: the prompt is never a target.
  loss_fn = jax.jit(lambda p, b: model.loss_fn(p, b, None))
  loss, metrics = loss_fn(params, batch)
  assert float(metrics['num_tokens']) == weights.sum()
  np.testing.assert_allclose(float(loss), -(lp * weights).sum() / weights.sum(), rtol=1e-6)
  # Gradients reach no prompt embedding through a loss term of its own: changing
  # only the completion's targets changes the loss.
  other = dict(batch, decoder_target_tokens=np.where(weights > 0, 5, 0).astype(np.int32))
  assert float(loss_fn(params, other)[0]) != pytest.approx(float(loss))


def test_rows_of_any_prompt_length_equal_single_rows(model_and_params):
  """Per-row positions: a row's scores and greedy output do not depend on its batch-mates.

  Each row alone (in the batch's shape, and the shortest one with no padding at
  all) scores and decodes as it does among rows of other prompt lengths.
  """
  model, params = model_and_params
  batch = _batch(seed=1)
  score = jax.jit(model.score_batch)
  greedy = jax.jit(lambda p, b: model.predict_batch(p, b, jax.random.key(0), temperature=0.0)[0])
  scores, outputs = np.asarray(score(params, batch)), np.asarray(greedy(params, batch))
  lengths = (batch['encoder_input_tokens'] > 0).sum(axis=1)
  rows = [{k: v[b : b + 1] for k, v in batch.items()} for b in range(3)]
  shortest = int(lengths.argmin())
  unpadded = dict(rows[shortest])
  unpadded['encoder_input_tokens'] = unpadded['encoder_input_tokens'][:, : lengths[shortest]]
  for b, row in [*enumerate(rows), (shortest, unpadded)]:
    np.testing.assert_allclose(score(params, row)[0], scores[b], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(greedy(params, row)[0], outputs[b])
  assert len(set(lengths.tolist())) > 1  # The batch mixes prompt lengths.


def test_prefill_and_cached_sampling_equal_decoding_without_cache(model_and_params):
  model, params = model_and_params
  batch = _batch(seed=2)
  tokens, log_probs = model.predict_batch(params, batch, jax.random.key(0), temperature=0.0)
  tokens, log_probs = np.asarray(tokens[:, 0]), np.asarray(log_probs[:, 0])
  # Step by step, no cache: the whole sequence so far through the model, argmax of the last.
  out = np.zeros((3, T), np.int32)
  for t in range(T):
    dec_in = np.concatenate([np.zeros((3, 1), np.int32), out[:, :-1]], axis=1)
    step = dict(batch, decoder_input_tokens=dec_in, decoder_target_tokens=np.ones((3, T), np.int32))
    logits = np.array(model.logits(params, step))[:, t]
    logits[:, CONFIG.pad_id] = -np.inf  # The sampler never emits padding.
    out[:, t] = logits.argmax(-1)
  ended = np.cumsum(out == CONFIG.eos_id, axis=1) - (out == CONFIG.eos_id) > 0
  np.testing.assert_array_equal(tokens, np.where(ended, 0, out))
  # The sampler's log-probabilities are the model's scores of its own outputs.
  scored = test_utils.seq2seq_batch(batch['encoder_input_tokens'], tokens)
  np.testing.assert_allclose(
    log_probs.sum(-1), model.score_batch(params, scored), rtol=1e-5, atol=1e-4
  )


def test_packed_rows_equal_unpacked_rows(model_and_params):
  model, params = model_and_params
  batch = _batch(seed=4)
  ref = np.asarray(
    models.token_log_probs(model.logits(params, batch), batch['decoder_target_tokens'])
  )
  # Pack examples 0 and 1 into one row (seqio's layout: segment ids and positions).
  n_in = [int((batch['encoder_input_tokens'][b] > 0).sum()) for b in range(2)]
  n_t = [int((batch['decoder_target_tokens'][b] > 0).sum()) for b in range(2)]
  packed = {
    k: np.zeros((1, 2 * (S if k == 'encoder_input_tokens' else T)), np.int32) for k in batch
  }
  for key in (
    'encoder_segment_ids',
    'encoder_positions',
    'decoder_segment_ids',
    'decoder_positions',
  ):
    packed[key] = np.zeros((1, 2 * (S if key.startswith('encoder') else T)), np.int32)
  at_in = at_t = 0
  for b in range(2):
    for key, n, at in (('encoder', n_in[b], at_in), ('decoder', n_t[b], at_t)):
      names = (
        ['encoder_input_tokens']
        if key == 'encoder'
        else ['decoder_input_tokens', 'decoder_target_tokens', 'decoder_loss_weights']
      )
      for name in names:
        packed[name][0, at : at + n] = batch[name][b, :n]
      packed[f'{key}_segment_ids'][0, at : at + n] = b + 1
      packed[f'{key}_positions'][0, at : at + n] = np.arange(n)
    at_in, at_t = at_in + n_in[b], at_t + n_t[b]
  lp = np.asarray(
    models.token_log_probs(model.logits(params, packed), packed['decoder_target_tokens'])
  )
  np.testing.assert_allclose(lp[0, : n_t[0]], ref[0, : n_t[0]], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
    lp[0, n_t[0] : n_t[0] + n_t[1]], ref[1, : n_t[1]], rtol=1e-5, atol=1e-5
  )


def test_grouped_query_attention_equals_repeated_heads():
  """G key/value heads shared by H/G queries each == multi-head attention with repeated K/V."""
  gqa = network.DecoderConfig(**{**vars(CONFIG), 'num_kv_heads': 2})
  mha = network.DecoderConfig(**{**vars(CONFIG), 'num_kv_heads': 4})
  tokens = jnp.array(np.random.RandomState(0).randint(2, 40, (2, 9)), jnp.int32)
  params = nn.unbox(network.DecoderOnlyTransformer(gqa).init(jax.random.key(1), tokens)['params'])
  repeated = jax.tree.map(lambda x: x, params)
  for i in range(CONFIG.num_layers):
    attn = repeated[f'layer_{i}']['attention']
    for name in ('key', 'value'):  # [E, G, D] -> [E, H, D]: head h uses group h // (H/G).
      attn[name] = {'kernel': jnp.repeat(attn[name]['kernel'], 2, axis=1)}
  a = network.DecoderOnlyTransformer(gqa).apply({'params': params}, tokens)
  b = network.DecoderOnlyTransformer(mha).apply({'params': repeated}, tokens)
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_make_model_and_config_errors():
  assert isinstance(models.make_model(CONFIG), models.DecoderOnlyModel)
  assert isinstance(models.make_model(test_utils.tiny_config()), models.EncoderDecoderModel)
  with pytest.raises(ValueError, match='num_kv_heads'):
    network.DecoderConfig(num_heads=4, num_kv_heads=3)
  with pytest.raises(ValueError, match='encoder-decoder'):
    models.ValueModel(CONFIG)
