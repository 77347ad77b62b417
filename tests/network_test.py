"""Network shapes, T5 v1.1 structure and logical axes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import test_utils

from rest_jax.core import layers


def _t5_bucket_reference(rel, bidirectional, num_buckets, max_distance):
  """Scalar Python transcription of T5's `_relative_position_bucket`."""
  ret = 0
  n = -rel
  if bidirectional:
    num_buckets //= 2
    ret += num_buckets if n < 0 else 0
    n = abs(n)
  else:
    n = max(n, 0)
  max_exact = num_buckets // 2
  if n < max_exact:
    return ret + n
  val = max_exact + int(
    np.log(n / max_exact) / np.log(max_distance / max_exact) * (num_buckets - max_exact)
  )
  return ret + min(val, num_buckets - 1)


@pytest.mark.parametrize('bidirectional', [True, False])
def test_relative_position_bucket_matches_t5(bidirectional):
  rel = np.arange(-300, 300)
  got = np.asarray(layers.relative_position_bucket(jnp.asarray(rel), bidirectional, 32, 128))
  want = np.array([_t5_bucket_reference(int(r), bidirectional, 32, 128) for r in rel])
  np.testing.assert_array_equal(got, want)


def test_output_shapes_and_param_tree():
  model = test_utils.tiny_model()
  batch = test_utils.toy_batch(batch_size=3, input_length=7, target_length=5)
  variables = model.init(jax.random.key(0), 7, 5)
  params = nn.unbox(variables)['params']
  logits = model.logits(params, batch)
  assert logits.shape == (3, 5, 32)
  assert logits.dtype == jnp.float32
  # T5 v1.1 structure: gated MLP (wi_0, wi_1), RMSNorm scales only, no biases.
  layer = params['encoder_layer_0']
  assert set(layer['mlp']) == {'wi_0', 'wi_1', 'wo'}
  assert set(layer['pre_attention_layer_norm']) == {'scale'}
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  names = ['/'.join(str(k.key) for k in path) for path, _ in flat]
  assert not any('bias' in n for n in names), names
  # One relative-position table per stack, shared by its layers.
  assert params['encoder_relpos']['rel_embedding'].shape == (4, 8)
  assert params['decoder_relpos']['rel_embedding'].shape == (4, 8)
  assert sum('rel_embedding' in n for n in names) == 2
  # Untied by default in v1.1 only when asked; tiny ties nothing here.
  assert 'logits_dense' in params


def test_tied_embeddings_drop_output_layer():
  model = test_utils.tiny_model(logits_via_embedding=True)
  params = nn.unbox(model.init(jax.random.key(0), 4, 4))['params']
  assert 'logits_dense' not in params
  logits = model.logits(params, test_utils.toy_batch(2, 4, 4))
  assert logits.shape == (2, 4, 32)


def test_every_param_has_logical_axes():
  model = test_utils.tiny_model()
  boxed = jax.eval_shape(lambda r: model.init(r, 4, 4), jax.random.key(0))['params']
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert leaves
  for leaf in leaves:
    assert isinstance(leaf, nn.LogicallyPartitioned)
    assert len(leaf.names) == len(leaf.value.shape)


def test_padding_does_not_change_real_positions():
  """Extra encoder padding must not change the logits (masking works)."""
  model = test_utils.tiny_model()
  batch = test_utils.toy_batch(batch_size=2, input_length=5, target_length=4)
  params = nn.unbox(model.init(jax.random.key(0), 5, 4))['params']
  padded = dict(batch)
  padded['encoder_input_tokens'] = np.pad(batch['encoder_input_tokens'], ((0, 0), (0, 3)))
  valid = batch['decoder_target_tokens'] > 0  # Padded queries are don't-cares.
  np.testing.assert_allclose(
    np.asarray(model.logits(params, batch))[valid],
    np.asarray(model.logits(params, padded))[valid],
    rtol=1e-5,
    atol=1e-5,
  )


def test_packed_rows_equal_separate_rows():
  """Two examples packed in one row give the logits they get alone."""
  model = test_utils.tiny_model()
  params = nn.unbox(model.init(jax.random.key(0), 8, 8))['params']
  a = test_utils.toy_batch(batch_size=2, input_length=4, target_length=4, seed=5)
  alone = np.asarray(model.logits(params, a))
  packed = {
    k: np.concatenate([a[k][0], a[k][1]])[None] for k in a
  }  # [1, 8]: example 0 then example 1 (both padded to 4, padding kept inside)
  packed['encoder_segment_ids'] = np.array([[1] * 4 + [2] * 4], np.int32)
  packed['decoder_segment_ids'] = np.array([[1] * 4 + [2] * 4], np.int32)
  logits = np.asarray(model.logits(params, packed))[0]
  for i in range(2):
    valid = a['decoder_target_tokens'][i] > 0
    np.testing.assert_allclose(logits[4 * i : 4 * i + 4][valid], alone[i][valid], atol=1e-5)


def test_token_log_probs_gradient_matches_autodiff_of_log_softmax():
  # models.token_log_probs has a hand-written gradient (softmax - one-hot); it
  # must equal autodiff of the plain formula, values and gradients, also in bf16.
  from rest_jax.core import models

  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(3, 5, 11)) * 4, jnp.float32)
  targets = jnp.asarray(rng.integers(0, 11, (3, 5)), jnp.int32)
  weights = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)

  def reference(x):
    lp = jax.nn.log_softmax(x.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(lp, targets[..., None], axis=-1)[..., 0]

  assert models.token_log_probs(logits, targets).shape == (3, 5)
  np.testing.assert_allclose(
    models.token_log_probs(logits, targets), reference(logits), rtol=1e-6, atol=1e-6
  )
  grad = jax.grad(lambda x: (models.token_log_probs(x, targets) * weights).sum())(logits)
  expected = jax.grad(lambda x: (reference(x) * weights).sum())(logits)
  np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)
  half = logits.astype(jnp.bfloat16)
  grad16 = jax.grad(lambda x: models.token_log_probs(x, targets).sum())(half)
  assert grad16.dtype == jnp.bfloat16
  np.testing.assert_allclose(
    grad16.astype(jnp.float32),
    jax.grad(lambda x: reference(x).sum())(half.astype(jnp.float32)),
    atol=2e-2,
  )


def test_first_argmax_equals_argmax_with_ties():
  from rest_jax.core import decoding

  rng = np.random.default_rng(1)
  x = rng.integers(0, 4, (64, 50)).astype(np.float32)  # Many ties per row.
  np.testing.assert_array_equal(decoding.first_argmax(jnp.asarray(x)), np.argmax(x, axis=-1))


def test_dense_general_is_the_kernel_contraction():
  # DenseGeneral flattens to one 2-D matmul; it must still contract the last
  # `contract_dims` axes (the attention output projection contracts two).
  cfg = test_utils.tiny_config()
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 3, 4, 5)), jnp.float32)
  layer = layers.DenseGeneral(
    features=(6,), kernel_axes=('heads', 'kv', 'embed'), config=cfg, contract_dims=2
  )
  params = nn.unbox(layer.init(jax.random.key(0), x))
  kernel = params['params']['kernel']
  assert kernel.shape == (4, 5, 6)
  np.testing.assert_allclose(
    layer.apply(params, x), np.einsum('bthd,hde->bte', x, kernel), rtol=1e-5, atol=1e-5
  )


@pytest.mark.parametrize(
  'option',
  # 'full' is slow: the same nn.remat wrapping as 'dots', with another policy.
  [
    pytest.param({'remat': 'full'}, marks=pytest.mark.slow),
    {'remat': 'dots'},
    {'attention': 'xla'},
  ],
  ids=str,
)
def test_remat_and_attention_keep_params_loss_gradients_and_decoding(option):
  plain = test_utils.tiny_model()
  rematted = test_utils.tiny_model(**option)
  params = plain.init_params_fn(8, 6)(jax.random.key(0))
  assert jax.tree.structure(params) == jax.tree.structure(
    jax.eval_shape(rematted.init_params_fn(8, 6), jax.random.key(0))
  )
  batch = test_utils.toy_batch()
  grad = jax.jit(jax.grad(lambda p, m: m.loss_fn(p, batch, None)[0]), static_argnums=1)
  for a, b in zip(jax.tree.leaves(grad(params, plain)), jax.tree.leaves(grad(params, rematted))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  if option == {'remat': 'full'}:
    return  # The dropout flag and the decode cache go through remat as with 'dots' (below).
  # Dropout (a static flag through remat) and the decode cache still work.
  dropped = test_utils.tiny_model(**option, dropout_rate=0.3)
  loss, _ = jax.jit(dropped.loss_fn)(params, batch, jax.random.key(1))  # Eager remat: ~15 s.
  assert np.isfinite(loss)
  greedy = [
    m.predict_batch(params, batch, jax.random.key(2), max_decode_length=5)[0]
    for m in (plain, rematted)
  ]
  np.testing.assert_array_equal(greedy[0], greedy[1])


def test_unknown_remat_or_attention_is_a_clear_error():
  with pytest.raises(ValueError, match='remat'):
    test_utils.tiny_config(remat='some')
  with pytest.raises(ValueError, match="attention='flash'"):
    test_utils.tiny_config(attention='flash')


def test_dropout_runs_and_changes_the_loss():
  # Transformer is a setup() module: its embedding/final dropout is created in
  # setup (creating it inline raised AssignSubModuleError for any rate > 0).
  model = test_utils.tiny_model(dropout_rate=0.3)
  params = model.init_params_fn(8, 6)(jax.random.key(0))
  batch = test_utils.toy_batch()
  plain = float(model.loss_fn(params, batch, None)[0])
  dropped = [float(model.loss_fn(params, batch, jax.random.key(k))[0]) for k in (1, 2)]
  assert all(np.isfinite(dropped)) and dropped[0] != dropped[1] and plain not in dropped
