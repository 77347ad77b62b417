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

The blocks (norm, projections, embedding, position biases, attention, MLP) are
in `layers.py`; this module holds the config and assembles the stacks.

Shapes in comments: B batch, S encoder length, T decoder length, E emb_dim,
H heads, D head_dim, M mlp_dim, V vocab.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from rest_jax.core import layers

_NEG_INF = -1e10
# T5Config.remat -> the jax.checkpoint policy (None: recompute everything but the inputs).
REMAT_POLICIES = {
  'none': None,
  'full': None,
  'dots': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
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
  # Rematerialisation of each encoder/decoder layer in the backward pass (memory
  # for compute): 'none'; 'full' keeps only each layer's input; 'dots' also keeps
  # the outputs of its matmuls without batch dimensions (the projections).
  remat: str = 'none'
  # Attention outside decoding: 'einsum' (two einsums and a float32 softmax);
  # 'xla' or 'cudnn' call `jax.nn.dot_product_attention` with that implementation
  # ('cudnn': the fused flash kernel on NVIDIA GPUs, which it requires). Decode
  # steps and attention dropout always take the einsum path.
  attention: str = 'einsum'

  def __post_init__(self):
    # A tuple even when gin passes a list: configs are hashed (jit static arguments).
    object.__setattr__(self, 'mlp_activations', tuple(self.mlp_activations))
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f'T5Config.remat={self.remat!r}: use one of {", ".join(REMAT_POLICIES)}.')
    if self.attention not in layers.ATTENTION_IMPLEMENTATIONS:
      raise ValueError(
        f'T5Config.attention={self.attention!r}: use one of '
        f'{", ".join(layers.ATTENTION_IMPLEMENTATIONS)}.'
      )
    unknown = [a for a in self.mlp_activations if a not in layers.ACTIVATIONS]
    if not self.mlp_activations or unknown:
      raise ValueError(
        f'T5Config.mlp_activations={self.mlp_activations!r}: use one or more of '
        f'{", ".join(layers.ACTIVATIONS)}.'
      )

  @property
  def activation_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)


_ACT = ('activation_batch', 'activation_length', 'activation_embed')


class EncoderLayer(nn.Module):
  """Pre-norm self-attention + MLP block."""

  config: T5Config

  @nn.compact
  def __call__(self, x, bias, enable_dropout=False):
    """`x` [B, S, E], `bias` [B|1, H, S, S]; returns [B, S, E]."""
    cfg = self.config
    h = layers.RMSNorm(cfg, name='pre_attention_layer_norm')(x)
    h = layers.MultiHeadAttention(cfg, name='attention')(h, h, bias, enable_dropout=enable_dropout)
    x = x + layers.dropout(cfg, h, enable_dropout)
    h = layers.RMSNorm(cfg, name='pre_mlp_layer_norm')(x)
    h = layers.GatedMlp(cfg, name='mlp')(h, enable_dropout)
    return layers.constraint(x + layers.dropout(cfg, h, enable_dropout), _ACT)


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
    h = layers.RMSNorm(cfg, name='pre_self_attention_layer_norm')(x)
    h = layers.MultiHeadAttention(cfg, name='self_attention')(
      h,
      h,
      self_bias,
      decode=decode,
      decode_position=decode_position,
      max_decode_length=max_decode_length,
      enable_dropout=enable_dropout,
    )
    x = x + layers.dropout(cfg, h, enable_dropout)
    h = layers.RMSNorm(cfg, name='pre_cross_attention_layer_norm')(x)
    h = layers.MultiHeadAttention(cfg, cross=True, name='encoder_decoder_attention')(
      h, encoded, cross_bias, decode=decode, enable_dropout=enable_dropout
    )
    x = x + layers.dropout(cfg, h, enable_dropout)
    h = layers.RMSNorm(cfg, name='pre_mlp_layer_norm')(x)
    h = layers.GatedMlp(cfg, name='mlp')(h, enable_dropout)
    return layers.constraint(x + layers.dropout(cfg, h, enable_dropout), _ACT)


def layer_classes(cfg: T5Config) -> tuple[type[nn.Module], type[nn.Module]]:
  """(EncoderLayer, DecoderLayer), wrapped in `nn.remat` as `cfg.remat` says.

  The parameter tree is the same either way. Layers must be called with their
  Python flags positional (static: enable_dropout; decode, max_decode_length).
  """
  if cfg.remat == 'none':
    return EncoderLayer, DecoderLayer
  policy = REMAT_POLICIES[cfg.remat]
  # Argument indices count `self` as 0.
  return (
    nn.remat(EncoderLayer, policy=policy, static_argnums=(3,)),
    nn.remat(DecoderLayer, policy=policy, static_argnums=(5, 6, 8)),
  )


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
    self.token_embedder = layers.Embed(cfg)
    self.encoder_relpos = layers.RelativePositionBiases(cfg, bidirectional=True)
    self.decoder_relpos = layers.RelativePositionBiases(cfg, bidirectional=False)
    encoder_layer, decoder_layer = layer_classes(cfg)
    self.encoder_layers = [
      encoder_layer(cfg, name=f'encoder_layer_{i}') for i in range(cfg.num_encoder_layers)
    ]
    self.encoder_norm = layers.RMSNorm(cfg)
    self.decoder_layers = [
      decoder_layer(cfg, name=f'decoder_layer_{i}') for i in range(cfg.num_decoder_layers)
    ]
    self.decoder_norm = layers.RMSNorm(cfg)
    # Created here: this module is not @compact, so `layers.dropout` (which
    # creates its Dropout inline) cannot be used in its methods.
    self.dropout = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))
    if not cfg.logits_via_embedding:
      self.logits_dense = layers.DenseGeneral(
        features=(cfg.vocab_size,), kernel_axes=('embed', 'vocab'), config=cfg
      )

  def _dropout(self, x: jax.Array, enable: bool) -> jax.Array:
    # One mask per example and feature, shared across positions (as layers.dropout).
    if enable and self.config.dropout_rate > 0:
      return self.dropout(x, deterministic=False)
    return x

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
    x = self._dropout(self.token_embedder(encoder_input_tokens), enable_dropout)
    x = layers.constraint(x, _ACT)
    for layer in self.encoder_layers:
      x = layer(x, bias, enable_dropout)
    x = self.encoder_norm(x)
    return self._dropout(x, enable_dropout)

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

    x = self._dropout(self.token_embedder(decoder_input_tokens), enable_dropout)
    x = layers.constraint(x, _ACT)
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
    x = self._dropout(x, enable_dropout)
    if return_hidden:
      return x
    if cfg.logits_via_embedding:
      logits = self.token_embedder.attend(x) / jnp.sqrt(cfg.emb_dim).astype(x.dtype)
    else:
      logits = self.logits_dense(x)
    logits = layers.constraint(
      logits, ('activation_batch', 'activation_length', 'activation_vocab')
    )
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
    self.value_head = layers.DenseGeneral(
      features=(1,), kernel_axes=('embed', None), config=self.config
    )

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


# ------------------------------------------------------------- decoder-only LM


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """Hyper-parameters of a decoder-only LM (Llama / Qwen2 / Gemma shape).

  Pre-norm RMSNorm, rotary positions, a gated MLP (SwiGLU by default),
  grouped-query attention when `num_kv_heads < num_heads`, tied or untied
  output layer. As a policy (`models.DecoderOnlyModel`) it reads a prompt and
  writes a completion: the prompt, then `start_id`, then the completion.
  """

  vocab_size: int = 4000  # Vocabulary V.
  emb_dim: int = 512  # Model width E.
  num_heads: int = 8  # Query heads H.
  num_kv_heads: int = 8  # Key/value heads G (divides H; G < H: grouped-query attention).
  head_dim: int = 64  # Per-head width D (even: rotary pairs).
  mlp_dim: int = 1408  # Hidden width M of the gated MLP.
  # Gated MLP activations, multiplied: ('silu', 'linear') is SwiGLU (Llama, Qwen2);
  # ('gelu', 'linear') is Gemma's GeGLU.
  mlp_activations: tuple[str, ...] = ('silu', 'linear')
  num_layers: int = 8  # Depth L.
  dropout_rate: float = 0.0  # Dropout after embeddings, sublayers, final norm.
  logits_via_embedding: bool = True  # Tie the output layer to the embedding (no rescaling).
  embedding_stddev: float = 0.02  # Of the embedding's normal initialisation.
  scale_embeddings: bool = False  # Multiply embeddings by sqrt(E) (Gemma).
  rope_theta: float = 10000.0  # Rotary base.
  norm_epsilon: float = 1e-6  # RMSNorm epsilon.
  qkv_bias: bool = False  # Biases on the query/key/value projections (Qwen2).
  dtype: str = 'float32'  # Activation dtype ('bfloat16' on TPU/GPU).
  param_dtype: str = 'float32'  # Parameter dtype.
  pad_id: int = 0  # Padding id.
  eos_id: int = 1  # End-of-sequence id: ends a completion.
  start_id: int = 0  # Fed between prompt and completion (the first decoder input).
  remat: str = 'none'  # As T5Config.remat, per layer.
  attention: str = 'einsum'  # As T5Config.attention (outside decoding).

  def __post_init__(self):
    object.__setattr__(self, 'mlp_activations', tuple(self.mlp_activations))
    problems = []
    if self.remat not in REMAT_POLICIES:
      problems.append(f'remat={self.remat!r} (use one of {", ".join(REMAT_POLICIES)})')
    if self.attention not in layers.ATTENTION_IMPLEMENTATIONS:
      problems.append(
        f'attention={self.attention!r} (use one of {", ".join(layers.ATTENTION_IMPLEMENTATIONS)})'
      )
    if not self.mlp_activations or any(a not in layers.ACTIVATIONS for a in self.mlp_activations):
      problems.append(f'mlp_activations={self.mlp_activations!r}')
    if self.num_kv_heads < 1 or self.num_heads % self.num_kv_heads:
      problems.append(f'num_kv_heads={self.num_kv_heads} must divide num_heads={self.num_heads}')
    if self.head_dim % 2:
      problems.append(f'head_dim={self.head_dim} must be even (rotary pairs)')
    if problems:
      raise ValueError('DecoderConfig: ' + '; '.join(problems) + '.')

  @property
  def activation_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)


class LMDecoderLayer(nn.Module):
  """Pre-norm causal self-attention (rotary, grouped heads) + gated MLP."""

  config: DecoderConfig

  @nn.compact
  def __call__(
    self,
    x,
    positions,
    bias,
    enable_dropout=False,
    decode=False,
    cache_index=None,
    cache_length=None,
  ):
    """`x` [B, L, E], `positions` [B, L], `bias` [B|1, 1, L, K]; returns [B, L, E]."""
    cfg = self.config
    h = layers.RMSNorm(cfg, cfg.norm_epsilon, name='pre_attention_norm')(x)
    h = layers.CausalSelfAttention(cfg, name='attention')(
      h,
      positions,
      bias,
      decode=decode,
      cache_index=cache_index,
      cache_length=cache_length,
      enable_dropout=enable_dropout,
    )
    x = x + layers.dropout(cfg, h, enable_dropout)
    h = layers.RMSNorm(cfg, cfg.norm_epsilon, name='pre_mlp_norm')(x)
    h = layers.GatedMlp(cfg, name='mlp')(h, enable_dropout)
    return layers.constraint(x + layers.dropout(cfg, h, enable_dropout), _ACT)


def causal_bias(valid: jax.Array, segment_ids: jax.Array | None = None) -> jax.Array:
  """The additive self-attention bias [B, 1, L, L] of a decoder-only LM.

  Token q sees token k iff k <= q (by index), both are real (`valid` [B, L]
  bool), and, for packed rows, both are in the same segment (`segment_ids`
  [B, L]). Positions are separate (rotary), so padding may sit anywhere.
  """
  index = jnp.arange(valid.shape[1])
  mask = (index[None, :] <= index[:, None])[None, None]
  mask = mask & valid[:, None, :, None] & valid[:, None, None, :]
  if segment_ids is not None:
    mask = mask & _same_segment(segment_ids, segment_ids)
  return _mask_to_bias(mask)


class DecoderOnlyTransformer(nn.Module):
  """A decoder-only LM: `__call__(tokens, positions, bias, ...) -> logits`."""

  config: DecoderConfig

  def setup(self):
    cfg = self.config
    self.token_embedder = layers.Embed(cfg, stddev=cfg.embedding_stddev)
    layer = LMDecoderLayer
    if cfg.remat != 'none':  # Argument indices count `self` as 0.
      layer = nn.remat(layer, policy=REMAT_POLICIES[cfg.remat], static_argnums=(4, 5, 7))
    self.layers = [layer(cfg, name=f'layer_{i}') for i in range(cfg.num_layers)]
    self.final_norm = layers.RMSNorm(cfg, cfg.norm_epsilon)
    self.dropout = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))
    if not cfg.logits_via_embedding:
      self.logits_dense = layers.DenseGeneral(
        features=(cfg.vocab_size,), kernel_axes=('embed', 'vocab'), config=cfg
      )

  def _dropout(self, x: jax.Array, enable: bool) -> jax.Array:
    if enable and self.config.dropout_rate > 0:
      return self.dropout(x, deterministic=False)
    return x

  def __call__(
    self,
    tokens: jax.Array,
    positions: jax.Array | None = None,
    bias: jax.Array | None = None,
    enable_dropout: bool = False,
    decode: bool = False,
    cache_index: jax.Array | None = None,
    cache_length: int | None = None,
    logits_from: int = 0,
    return_hidden: bool = False,
  ) -> jax.Array:
    """Next-token logits [B, L - logits_from, V] (float32) for `tokens` [B, L].

    Args:
      tokens: [B, L] int32.
      positions: rotary positions [B, L]; default 0..L-1 in every row.
      bias: additive mask [B|1, 1, L, K]; default causal over L (`causal_bias`
        with every token real). Required in decode mode (K = cache_length).
      enable_dropout: training mode.
      decode: write the L tokens into the KV cache at `cache_index` and attend
        to the cache (prefill: L = the prompt; a sampling step: L = 1).
      cache_index: int32 scalar, cache slot of the first token (decode mode).
      cache_length: K, the cache length (decode mode; static).
      logits_from: compute logits only from this position on (a prompt's
        logits are not needed).
      return_hidden: return the final hidden states [B, L - logits_from, E]
        (the output layer's input) instead.
    """
    cfg = self.config
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    if bias is None:
      bias = causal_bias(jnp.ones(tokens.shape, bool))
    x = self.token_embedder(tokens)
    if cfg.scale_embeddings:
      x = x * jnp.asarray(cfg.emb_dim**0.5, x.dtype)
    x = layers.constraint(self._dropout(x, enable_dropout), _ACT)
    for layer in self.layers:
      x = layer(x, positions, bias, enable_dropout, decode, cache_index, cache_length)
    x = self._dropout(self.final_norm(x[:, logits_from:]), enable_dropout)
    if return_hidden:
      return x
    if cfg.logits_via_embedding:
      logits = self.token_embedder.attend(x)
    else:
      logits = self.logits_dense(x)
    logits = layers.constraint(
      logits, ('activation_batch', 'activation_length', 'activation_vocab')
    )
    return logits.astype(jnp.float32)


# The policy's network config: `models.make_model` builds the matching model.
ModelConfig = T5Config | DecoderConfig
