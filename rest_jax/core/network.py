"""T5 v1.1 encoder-decoder Transformer in Flax, with logical axis names.

The architecture follows T5 v1.1 exactly, so that pretrained T5 weights can be
imported later:

* RMSNorm ("T5 LayerNorm"): no mean subtraction, no bias, computed in float32.
* Relative position biases: one bucketed embedding per stack, computed once and
  shared by every layer of that stack (bidirectional buckets in the encoder,
  causal buckets in the decoder); cross-attention has no position bias.
* Gated-GELU MLP: `wo(gelu(wi_0 x) * wi_1 x)` (`mlp_activations`; original
  T5's non-gated ReLU MLP `wo(relu(wi x))` is `mlp_activations=('relu',)`).
* No 1/sqrt(d) scaling of attention logits: the scaling is folded into the
  initialisation of the query projection, as in Mesh TensorFlow and t5x.
* Optional tied embeddings (`logits_via_embedding`), with the T5 rescaling of
  the decoder output by `emb_dim ** -0.5` when tied.

Every parameter is created with `nn.with_logical_partitioning` and every large
activation carries `nn.with_logical_constraint`; `partitioning.py` maps the
logical names onto the mesh. Parameter names: `vocab, embed, heads, kv, mlp,
relpos_buckets`; activation names are the same prefixed with `activation_`.

Shapes in comments: B batch, S encoder length, T decoder length, E emb_dim,
H heads, D head_dim, M mlp_dim, V vocab.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_NEG_INF = -1e10
# MLP activations by name. 'gelu' is the tanh approximation (T5 v1.1, HF's gelu_new).
_ACTIVATIONS = {
  'gelu': functools.partial(nn.gelu, approximate=True),
  'gelu_exact': functools.partial(nn.gelu, approximate=False),
  'relu': nn.relu,
  'silu': nn.silu,
  'linear': lambda x: x,
}


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Hyper-parameters of the network (a plain frozen struct, as in t5x)."""

  vocab_size: int = 4000  # Size of the (shared) SentencePiece vocabulary.
  emb_dim: int = 512  # Model width E.
  num_heads: int = 8  # Attention heads H.
  head_dim: int = 64  # Per-head width D (H*D need not equal E, as in T5).
  mlp_dim: int = 1024  # Hidden width M of the gated-GELU MLP.
  # One MLP input projection per entry, their activations multiplied: `wi_0`, `wi_1`
  # for T5 v1.1's gated GELU; a single entry is a plain `wi` (original T5: ('relu',)).
  mlp_activations: tuple[str, ...] = ('gelu', 'linear')
  num_encoder_layers: int = 6  # Encoder depth.
  num_decoder_layers: int = 6  # Decoder depth.
  dropout_rate: float = 0.0  # Dropout after embeddings, sublayers, final norm.
  logits_via_embedding: bool = False  # Tie the output layer to the embedding.
  relative_attention_num_buckets: int = 32  # T5 default.
  relative_attention_max_distance: int = 128  # T5 default.
  dtype: str = 'float32'  # Activation dtype ('bfloat16' on TPU/GPU).
  param_dtype: str = 'float32'  # Parameter dtype.
  pad_id: int = 0  # Padding id; also the decoder start token (T5).
  eos_id: int = 1  # End-of-sequence id.

  def __post_init__(self):
    # A tuple even when gin passes a list: configs are hashed (jit static arguments).
    object.__setattr__(self, 'mlp_activations', tuple(self.mlp_activations))
    unknown = [a for a in self.mlp_activations if a not in _ACTIVATIONS]
    if not self.mlp_activations or unknown:
      raise ValueError(
        f'T5Config.mlp_activations={self.mlp_activations!r}: use one or more of '
        f'{", ".join(_ACTIVATIONS)}.'
      )

  @property
  def activation_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)


def _constraint(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  return nn.with_logical_constraint(x, tuple(names))


def _dense_init(scale: float = 1.0) -> nn.initializers.Initializer:
  return nn.initializers.variance_scaling(scale, 'fan_in', 'truncated_normal')


class RMSNorm(nn.Module):
  """T5 layer norm: `x / rms(x) * scale`, no bias, no centring."""

  config: T5Config
  epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Normalises `x` [..., E] over its last axis; returns [..., E]."""
    scale = self.param(
      'scale',
      nn.with_logical_partitioning(nn.initializers.ones, ('embed',)),
      (x.shape[-1],),
      jnp.dtype(self.config.param_dtype),
    )
    x32 = x.astype(jnp.float32)
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    y = x32 * jax.lax.rsqrt(var + self.epsilon)
    return (y * scale.astype(jnp.float32)).astype(self.config.activation_dtype)


class DenseGeneral(nn.Module):
  """`x @ kernel` over the last axis, with named kernel axes; no bias (T5)."""

  features: tuple[int, ...]
  kernel_axes: tuple[str, ...]
  config: T5Config
  kernel_init_scale: float = 1.0
  contract_dims: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Contracts the last `contract_dims` axes of `x` with the kernel."""
    in_shape = x.shape[-self.contract_dims :]
    kernel_shape = (*in_shape, *self.features)

    def init(key, shape, dtype):
      # Fan-in is the contracted size, whatever the kernel's rank.
      flat = (int(np.prod(in_shape)), int(np.prod(self.features)))
      return _dense_init(self.kernel_init_scale)(key, flat, dtype).reshape(shape)

    kernel = self.param(
      'kernel',
      nn.with_logical_partitioning(init, self.kernel_axes),
      kernel_shape,
      jnp.dtype(self.config.param_dtype),
    )
    dtype = self.config.activation_dtype
    contract = tuple(range(x.ndim - self.contract_dims, x.ndim))
    return jax.lax.dot_general(
      x.astype(dtype),
      kernel.astype(dtype),
      ((contract, tuple(range(self.contract_dims))), ((), ())),
    )


class Embed(nn.Module):
  """Token embedding table [V, E]; `attend` gives logits for tied outputs."""

  config: T5Config

  def setup(self):
    self.embedding = self.param(
      'embedding',
      nn.with_logical_partitioning(nn.initializers.normal(stddev=1.0), ('vocab', 'embed')),
      (self.config.vocab_size, self.config.emb_dim),
      jnp.dtype(self.config.param_dtype),
    )

  def __call__(self, ids: jax.Array) -> jax.Array:
    """Looks up `ids` [B, L] int32; returns [B, L, E]."""
    out = jnp.take(self.embedding, ids, axis=0)
    return out.astype(self.config.activation_dtype)

  def attend(self, x: jax.Array) -> jax.Array:
    """Logits `x @ embedding.T` for `x` [B, L, E]; returns [B, L, V]."""
    dtype = self.config.activation_dtype
    return jnp.einsum('ble,ve->blv', x.astype(dtype), self.embedding.astype(dtype))


def relative_position_bucket(
  relative_position: jax.Array, bidirectional: bool, num_buckets: int, max_distance: int
) -> jax.Array:
  """T5's bucketing of `memory_position - query_position`.

  Args:
    relative_position: int32 array of key position minus query position.
    bidirectional: whether positive offsets get their own buckets (encoder).
    num_buckets: total number of buckets.
    max_distance: offsets at or beyond this share the last bucket.

  Returns:
    int32 array of bucket ids, same shape as `relative_position`.
  """
  ret = jnp.zeros_like(relative_position)
  n = -relative_position
  if bidirectional:
    num_buckets //= 2
    ret += (n < 0).astype(jnp.int32) * num_buckets
    n = jnp.abs(n)
  else:
    n = jnp.maximum(n, 0)
  max_exact = num_buckets // 2
  is_small = n < max_exact
  n_safe = jnp.maximum(n, 1).astype(jnp.float32)
  val_if_large = max_exact + (
    jnp.log(n_safe / max_exact) / np.log(max_distance / max_exact) * (num_buckets - max_exact)
  ).astype(jnp.int32)
  val_if_large = jnp.minimum(val_if_large, num_buckets - 1)
  return ret + jnp.where(is_small, n, val_if_large)


class RelativePositionBiases(nn.Module):
  """Bucketed relative position bias, [1, H, Q, K], shared across a stack."""

  config: T5Config
  bidirectional: bool

  @nn.compact
  def __call__(self, query_positions: jax.Array, key_length: int) -> jax.Array:
    """Bias for queries at `query_positions` [Q] against keys 0..key_length-1."""
    cfg = self.config
    table = self.param(
      'rel_embedding',
      nn.with_logical_partitioning(
        nn.initializers.variance_scaling(1.0, 'fan_avg', 'uniform'), ('heads', 'relpos_buckets')
      ),
      (cfg.num_heads, cfg.relative_attention_num_buckets),
      jnp.dtype(cfg.param_dtype),
    )
    key_positions = jnp.arange(key_length, dtype=jnp.int32)
    relative = key_positions[None, :] - query_positions[:, None]  # [Q, K]
    buckets = relative_position_bucket(
      relative,
      self.bidirectional,
      cfg.relative_attention_num_buckets,
      cfg.relative_attention_max_distance,
    )
    bias = jnp.take(table, buckets, axis=1)  # [H, Q, K]
    return bias[None].astype(cfg.activation_dtype)


class MultiHeadAttention(nn.Module):
  """Multi-head dot-product attention without logit scaling (T5).

  In decode mode the keys/values of self-attention are written into a static
  cache [B, T, H, D] at `decode_position`, so each step costs O(T); those of
  cross-attention (`cross=True`) are projected from the encoder output once,
  when the cache is created, and reused by every step.
  """

  config: T5Config
  cross: bool = False  # Keys/values come from the encoder output.

  @nn.compact
  def __call__(
    self,
    inputs_q: jax.Array,
    inputs_kv: jax.Array,
    bias: jax.Array | None,
    *,
    decode: bool = False,
    decode_position: jax.Array | None = None,
    max_decode_length: int | None = None,
    enable_dropout: bool = False,
  ) -> jax.Array:
    """Attends `inputs_q` [B, Q, E] to `inputs_kv` [B, K, E].

    Args:
      inputs_q: queries' inputs [B, Q, E].
      inputs_kv: keys'/values' inputs [B, K, E].
      bias: additive bias broadcastable to [B, H, Q, K] (mask and positions).
      decode: use (and update) the cache; Q must be 1. The first decode call
        (with no cache yet) creates it.
      decode_position: int32 scalar, position of the query in decode mode.
      max_decode_length: length T of the self-attention cache (decode mode).
      enable_dropout: apply dropout to attention weights.

    Returns:
      [B, Q, E].
    """
    cfg = self.config
    heads = (cfg.num_heads, cfg.head_dim)
    proj = functools.partial(DenseGeneral, features=heads, config=cfg)
    # Folding 1/sqrt(D) into the query init replaces the usual logit scaling.
    q = proj(
      kernel_axes=('embed', 'heads', 'kv'), kernel_init_scale=1.0 / cfg.head_dim, name='query'
    )(inputs_q)  # [B, Q, H, D]
    names = ('activation_batch', 'activation_length', 'activation_heads', 'activation_kv')

    def project_kv():
      k = proj(kernel_axes=('embed', 'heads', 'kv'), name='key')(inputs_kv)
      v = proj(kernel_axes=('embed', 'heads', 'kv'), name='value')(inputs_kv)
      return _constraint(k, names), _constraint(v, names)

    q = _constraint(q, names)
    if decode and self.cross:
      # Project the encoder output once (cache creation); steps reuse it.
      if self.has_variable('cache', 'cross_key'):
        k = self.get_variable('cache', 'cross_key')
        v = self.get_variable('cache', 'cross_value')
      else:
        k, v = project_kv()
        self.put_variable('cache', 'cross_key', k)
        self.put_variable('cache', 'cross_value', v)
    elif decode:
      k, v = project_kv()  # [B, 1, H, D]: the token at decode_position.
      shape = (k.shape[0], max_decode_length, *k.shape[2:])
      cached_key = self.variable('cache', 'cached_key', jnp.zeros, shape, k.dtype)
      cached_value = self.variable('cache', 'cached_value', jnp.zeros, shape, v.dtype)
      start = (0, decode_position, 0, 0)
      cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, k, start)
      cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, v, start)
      k, v = cached_key.value, cached_value.value
    else:
      k, v = project_kv()

    logits = jnp.einsum('bqhd,bkhd->bhqk', q, k).astype(jnp.float32)
    if bias is not None:
      logits = logits + bias.astype(jnp.float32)
    weights = jax.nn.softmax(logits, axis=-1).astype(cfg.activation_dtype)
    if enable_dropout and cfg.dropout_rate > 0:
      weights = nn.Dropout(cfg.dropout_rate)(weights, deterministic=False)
    out = jnp.einsum('bhqk,bkhd->bqhd', weights, v)
    out = _constraint(out, names)
    return DenseGeneral(
      features=(cfg.emb_dim,),
      kernel_axes=('heads', 'kv', 'embed'),
      config=cfg,
      contract_dims=2,
      name='out',
    )(out)


class GatedMlp(nn.Module):
  """T5 v1.1 feed-forward: `wo(gelu(wi_0 x) * wi_1 x)`.

  In general `wo(prod_i act_i(wi_i x))` over `config.mlp_activations`; with a
  single activation the projection is named `wi` (original T5: `wo(relu(wi x))`).
  """

  config: T5Config

  @nn.compact
  def __call__(self, x: jax.Array, enable_dropout: bool = False) -> jax.Array:
    """Maps `x` [B, L, E] to [B, L, E] through a hidden layer of width M."""
    cfg = self.config
    dense = functools.partial(DenseGeneral, features=(cfg.mlp_dim,), config=cfg)
    acts = cfg.mlp_activations
    h = None
    for i, act in enumerate(acts):
      name = f'wi_{i}' if len(acts) > 1 else 'wi'
      hi = _ACTIVATIONS[act](dense(kernel_axes=('embed', 'mlp'), name=name)(x))  # [B, L, M]
      h = hi if h is None else h * hi
    h = _constraint(h, ('activation_batch', 'activation_length', 'activation_mlp'))
    if enable_dropout and cfg.dropout_rate > 0:
      h = nn.Dropout(cfg.dropout_rate)(h, deterministic=False)
    return DenseGeneral(
      features=(cfg.emb_dim,), kernel_axes=('mlp', 'embed'), config=cfg, name='wo'
    )(h)


def _dropout(cfg: T5Config, x: jax.Array, enable: bool) -> jax.Array:
  # One mask per example and feature, shared across positions (t5x's broadcast_dims).
  if enable and cfg.dropout_rate > 0:
    return nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic=False)
  return x


_ACT = ('activation_batch', 'activation_length', 'activation_embed')


class EncoderLayer(nn.Module):
  """Pre-norm self-attention + MLP block."""

  config: T5Config

  @nn.compact
  def __call__(self, x, bias, enable_dropout=False):
    """`x` [B, S, E], `bias` [B|1, H, S, S]; returns [B, S, E]."""
    cfg = self.config
    h = RMSNorm(cfg, name='pre_attention_layer_norm')(x)
    h = MultiHeadAttention(cfg, name='attention')(h, h, bias, enable_dropout=enable_dropout)
    x = x + _dropout(cfg, h, enable_dropout)
    h = RMSNorm(cfg, name='pre_mlp_layer_norm')(x)
    h = GatedMlp(cfg, name='mlp')(h, enable_dropout)
    return _constraint(x + _dropout(cfg, h, enable_dropout), _ACT)


class DecoderLayer(nn.Module):
  """Pre-norm causal self-attention + cross-attention + MLP block."""

  config: T5Config

  @nn.compact
  def __call__(
    self,
    x,
    encoded,
    self_bias,
    cross_bias,
    enable_dropout=False,
    decode=False,
    decode_position=None,
    max_decode_length=None,
  ):
    """`x` [B, T, E], `encoded` [B, S, E]; returns [B, T, E]."""
    cfg = self.config
    h = RMSNorm(cfg, name='pre_self_attention_layer_norm')(x)
    h = MultiHeadAttention(cfg, name='self_attention')(
      h,
      h,
      self_bias,
      decode=decode,
      decode_position=decode_position,
      max_decode_length=max_decode_length,
      enable_dropout=enable_dropout,
    )
    x = x + _dropout(cfg, h, enable_dropout)
    h = RMSNorm(cfg, name='pre_cross_attention_layer_norm')(x)
    h = MultiHeadAttention(cfg, cross=True, name='encoder_decoder_attention')(
      h, encoded, cross_bias, decode=decode, enable_dropout=enable_dropout
    )
    x = x + _dropout(cfg, h, enable_dropout)
    h = RMSNorm(cfg, name='pre_mlp_layer_norm')(x)
    h = GatedMlp(cfg, name='mlp')(h, enable_dropout)
    return _constraint(x + _dropout(cfg, h, enable_dropout), _ACT)


def _same_segment(query_segments: jax.Array, key_segments: jax.Array) -> jax.Array:
  """[B, Q] and [B, K] segment ids to a [B, 1, Q, K] same-segment mask."""
  return query_segments[:, None, :, None] == key_segments[:, None, None, :]


def _mask_to_bias(mask: jax.Array) -> jax.Array:
  """Boolean mask [B, 1, Q, K] to an additive bias (0 or -1e10)."""
  return jnp.where(mask, 0.0, _NEG_INF).astype(jnp.float32)


class Transformer(nn.Module):
  """T5 v1.1 encoder-decoder. Methods: `__call__`, `encode`, `decode`."""

  config: T5Config

  def setup(self):
    cfg = self.config
    self.token_embedder = Embed(cfg)
    self.encoder_relpos = RelativePositionBiases(cfg, bidirectional=True)
    self.decoder_relpos = RelativePositionBiases(cfg, bidirectional=False)
    self.encoder_layers = [
      EncoderLayer(cfg, name=f'encoder_layer_{i}') for i in range(cfg.num_encoder_layers)
    ]
    self.encoder_norm = RMSNorm(cfg)
    self.decoder_layers = [
      DecoderLayer(cfg, name=f'decoder_layer_{i}') for i in range(cfg.num_decoder_layers)
    ]
    self.decoder_norm = RMSNorm(cfg)
    if not cfg.logits_via_embedding:
      self.logits_dense = DenseGeneral(
        features=(cfg.vocab_size,), kernel_axes=('embed', 'vocab'), config=cfg
      )

  def encode(
    self,
    encoder_input_tokens: jax.Array,
    enable_dropout: bool = False,
    encoder_segment_ids: jax.Array | None = None,
  ) -> jax.Array:
    """Encodes `encoder_input_tokens` [B, S] int32 (0 = padding) to [B, S, E].

    `encoder_segment_ids` [B, S] (packed examples) restricts attention to
    tokens of the same segment. Relative positions need no per-segment
    offsets: they are differences, and other segments are masked anyway.
    """
    cfg = self.config
    valid = encoder_input_tokens != cfg.pad_id  # [B, S]
    mask = valid[:, None, :, None] & valid[:, None, None, :]
    if encoder_segment_ids is not None:
      mask &= _same_segment(encoder_segment_ids, encoder_segment_ids)
    length = encoder_input_tokens.shape[1]
    bias = _mask_to_bias(mask) + self.encoder_relpos(jnp.arange(length), length)
    x = _dropout(cfg, self.token_embedder(encoder_input_tokens), enable_dropout)
    x = _constraint(x, _ACT)
    for layer in self.encoder_layers:
      x = layer(x, bias, enable_dropout)
    x = self.encoder_norm(x)
    return _dropout(cfg, x, enable_dropout)

  def decode(
    self,
    encoded: jax.Array,
    encoder_input_tokens: jax.Array,
    decoder_input_tokens: jax.Array,
    decoder_target_tokens: jax.Array | None = None,
    enable_dropout: bool = False,
    decode: bool = False,
    decode_position: jax.Array | None = None,
    max_decode_length: int | None = None,
    encoder_segment_ids: jax.Array | None = None,
    decoder_segment_ids: jax.Array | None = None,
    return_hidden: bool = False,
  ) -> jax.Array:
    """Decoder logits [B, T, V] (float32), or its final hidden states [B, T, E].

    Args:
      encoded: encoder output [B, S, E].
      encoder_input_tokens: [B, S] int32, for the cross-attention mask.
      decoder_input_tokens: [B, T] int32, targets shifted right (start = pad).
        In decode mode T = 1: the token at `decode_position`.
      decoder_target_tokens: [B, T] int32; its padding (0) masks queries
        during training. Ignored in decode mode.
      enable_dropout: training mode.
      decode: single-step decoding against the self-attention cache.
      decode_position: int32 scalar position of the step in decode mode.
      max_decode_length: cache length (key length) in decode mode.
      encoder_segment_ids: [B, S] segment ids of packed inputs (training).
      decoder_segment_ids: [B, T] segment ids of packed targets (training).
      return_hidden: return the normalized hidden states [B, T, E] (the input
        of the output layer) instead of the logits, e.g. for a value head.

    Returns:
      Logits [B, T, V] in float32 (hidden states [B, T, E] with `return_hidden`).
    """
    cfg = self.config
    enc_valid = encoder_input_tokens != cfg.pad_id  # [B, S]
    if decode:
      key_length = max_decode_length
      positions = jnp.reshape(decode_position, (1,)).astype(jnp.int32)
      causal = jnp.arange(key_length)[None, :] <= positions[:, None]  # [1, K]
      self_bias = _mask_to_bias(causal[None, None])
      cross_mask = enc_valid[:, None, None, :]
    else:
      key_length = decoder_input_tokens.shape[1]
      positions = jnp.arange(key_length)
      causal = positions[None, :] <= positions[:, None]  # [T, T]
      if decoder_target_tokens is None:
        dec_valid = jnp.ones(decoder_input_tokens.shape, bool)
      else:
        dec_valid = decoder_target_tokens != cfg.pad_id
      self_mask = causal[None, None] & dec_valid[:, None, :, None] & dec_valid[:, None, None, :]
      cross_mask = dec_valid[:, None, :, None] & enc_valid[:, None, None, :]
      if decoder_segment_ids is not None:
        self_mask &= _same_segment(decoder_segment_ids, decoder_segment_ids)
        cross_mask &= _same_segment(decoder_segment_ids, encoder_segment_ids)
      self_bias = _mask_to_bias(self_mask)
    self_bias = self_bias + self.decoder_relpos(positions, key_length)
    cross_bias = _mask_to_bias(cross_mask)

    x = _dropout(cfg, self.token_embedder(decoder_input_tokens), enable_dropout)
    x = _constraint(x, _ACT)
    for layer in self.decoder_layers:
      x = layer(
        x,
        encoded,
        self_bias,
        cross_bias,
        enable_dropout,
        decode,
        decode_position,
        max_decode_length,
      )
    x = self.decoder_norm(x)
    x = _dropout(cfg, x, enable_dropout)
    if return_hidden:
      return x
    if cfg.logits_via_embedding:
      logits = self.token_embedder.attend(x) / jnp.sqrt(cfg.emb_dim).astype(x.dtype)
    else:
      logits = self.logits_dense(x)
    logits = _constraint(logits, ('activation_batch', 'activation_length', 'activation_vocab'))
    return logits.astype(jnp.float32)

  def __call__(
    self,
    encoder_input_tokens: jax.Array,
    decoder_input_tokens: jax.Array,
    decoder_target_tokens: jax.Array | None = None,
    enable_dropout: bool = False,
    encoder_segment_ids: jax.Array | None = None,
    decoder_segment_ids: jax.Array | None = None,
  ) -> jax.Array:
    """Teacher-forced logits [B, T, V] for inputs [B, S] and targets [B, T].

    Segment ids ([B, S] and [B, T]) are given for packed batches: several
    examples per row, attending only within their own segment.
    """
    encoded = self.encode(encoder_input_tokens, enable_dropout, encoder_segment_ids)
    return self.decode(
      encoded,
      encoder_input_tokens,
      decoder_input_tokens,
      decoder_target_tokens,
      enable_dropout,
      encoder_segment_ids=encoder_segment_ids,
      decoder_segment_ids=decoder_segment_ids,
    )


class ValueNetwork(nn.Module):
  """A token-level value function V(s_t): the T5 body and a scalar head.

  The body is a `Transformer` (its output layer is never called, so it has no
  parameters); the head maps the decoder's final hidden state at position t,
  which has seen the source and y_{<t}, to V(s_t). The paper's value nets are
  separate encoder-decoders [PAPER §2 "Value nets"]; Improve initializes the
  body from the policy. Parameters: {'body': Transformer params without
  'logits_dense', 'value_head': {'kernel': [E, 1]}}.
  """

  config: T5Config

  def setup(self):
    self.body = Transformer(self.config)
    self.value_head = DenseGeneral(features=(1,), kernel_axes=('embed', None), config=self.config)

  def __call__(
    self,
    encoder_input_tokens: jax.Array,
    decoder_input_tokens: jax.Array,
    decoder_target_tokens: jax.Array | None = None,
    enable_dropout: bool = False,
  ) -> jax.Array:
    """Values [B, T] float32 for inputs [B, S] and teacher-forced targets [B, T]."""
    encoded = self.body.encode(encoder_input_tokens, enable_dropout)
    hidden = self.body.decode(
      encoded,
      encoder_input_tokens,
      decoder_input_tokens,
      decoder_target_tokens,
      enable_dropout,
      return_hidden=True,
    )
    return self.value_head(hidden)[..., 0].astype(jnp.float32)
