"""The building blocks of the networks in `network.py`, in Flax with logical axis names.

RMSNorm ("T5 LayerNorm", float32, no bias), the projections and the embedding
(created with `nn.with_logical_partitioning`), T5's bucketed relative position
biases, multi-head attention with its decoding cache (no 1/sqrt(d) scaling:
folded into the query initialisation), and the (gated) MLP. The decoder-only
LM adds rotary position embeddings and causal self-attention with grouped
query heads (`CausalSelfAttention`). Each takes the frozen `network.T5Config`
or `network.DecoderConfig` as `cfg` (read, not imported: `network` imports
this module; both have the fields read here). Shapes: B batch, S/L length,
E emb_dim, H heads, G kv heads, D head_dim, M mlp_dim.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
  from rest_jax.core.network import DecoderConfig, T5Config

# MLP activations by name. 'gelu' is the tanh approximation (T5 v1.1, HF's gelu_new).
# T5Config.attention: 'einsum', or an implementation of jax.nn.dot_product_attention.
ATTENTION_IMPLEMENTATIONS = ('einsum', 'xla', 'cudnn')
ACTIVATIONS = {
  'gelu': functools.partial(nn.gelu, approximate=True),
  'gelu_exact': functools.partial(nn.gelu, approximate=False),
  'relu': nn.relu,
  'silu': nn.silu,
  'linear': lambda x: x,
}


def constraint(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  return nn.with_logical_constraint(x, tuple(names))


def dense_init(scale: float = 1.0) -> nn.initializers.Initializer:
  return nn.initializers.variance_scaling(scale, 'fan_in', 'truncated_normal')


class RMSNorm(nn.Module):
  """T5 layer norm: `x / rms(x) * scale`, no bias, no centring."""

  config: T5Config | DecoderConfig
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
  config: T5Config | DecoderConfig
  kernel_init_scale: float = 1.0
  contract_dims: int = 1
  use_bias: bool = False  # A bias over the output axes (Qwen2's q/k/v projections).

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Contracts the last `contract_dims` axes of `x` [..., *C] with the kernel; [..., *F]."""
    in_shape = x.shape[-self.contract_dims :]
    kernel_shape = (*in_shape, *self.features)

    def init(key, shape, dtype):
      # Fan-in is the contracted size, whatever the kernel's rank.
      flat = (int(np.prod(in_shape)), int(np.prod(self.features)))
      return dense_init(self.kernel_init_scale)(key, flat, dtype).reshape(shape)

    kernel = self.param(
      'kernel',
      nn.with_logical_partitioning(init, self.kernel_axes),
      kernel_shape,
      jnp.dtype(self.config.param_dtype),
    )
    dtype = self.config.activation_dtype
    # One 2-D matmul [N, prod C] @ [prod C, prod F]: XLA:CPU then lays out the
    # backward pass's transposes as plain 2-D transposes; the rank-3 layout
    # copies it made otherwise took as long as the matmuls (bench/train_profile.py).
    batch_shape = x.shape[: x.ndim - self.contract_dims]
    contracted = int(np.prod(x.shape[x.ndim - self.contract_dims :]))
    x2 = x.reshape(int(np.prod(batch_shape)), contracted).astype(dtype)
    y = jnp.dot(x2, kernel.reshape(contracted, int(np.prod(self.features))).astype(dtype))
    y = y.reshape(*batch_shape, *self.features)
    if self.use_bias:
      bias = self.param(
        'bias',
        nn.with_logical_partitioning(nn.initializers.zeros, self.kernel_axes[self.contract_dims :]),
        self.features,
        jnp.dtype(self.config.param_dtype),
      )
      y = y + bias.astype(dtype)
    return y


class Embed(nn.Module):
  """Token embedding table [V, E]; `attend` gives logits for tied outputs."""

  config: T5Config | DecoderConfig
  stddev: float = 1.0  # Of the normal initialisation (T5: 1.0).

  def setup(self):
    self.embedding = self.param(
      'embedding',
      nn.with_logical_partitioning(nn.initializers.normal(stddev=self.stddev), ('vocab', 'embed')),
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
  cache [B, H, T, D] at `decode_position`, so each step costs O(T); those of
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
      return constraint(k, names), constraint(v, names)

    q = constraint(q, names)
    # Keys and values are kept heads-major, [B, H, K, D], the layout the
    # attention products read: a decode cache in [B, K, H, D] was transposed
    # whole at every step (a third of the sampler's time on CPU).
    if decode and self.cross:
      # Project the encoder output once (cache creation); steps reuse it.
      if self.has_variable('cache', 'cross_key'):
        k = self.get_variable('cache', 'cross_key')
        v = self.get_variable('cache', 'cross_value')
      else:
        k, v = (jnp.swapaxes(t, 1, 2) for t in project_kv())
        self.put_variable('cache', 'cross_key', k)
        self.put_variable('cache', 'cross_value', v)
    elif decode:
      # [B, H, 1, D]: the token at decode_position, written into [B, H, T, D].
      k, v = (jnp.swapaxes(t, 1, 2) for t in project_kv())
      shape = (k.shape[0], k.shape[1], max_decode_length, k.shape[3])
      cached_key = self.variable('cache', 'cached_key', jnp.zeros, shape, k.dtype)
      cached_value = self.variable('cache', 'cached_value', jnp.zeros, shape, v.dtype)
      start = (0, 0, decode_position, 0)
      cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, k, start)
      cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, v, start)
      k, v = cached_key.value, cached_value.value
    elif cfg.attention != 'einsum' and not (enable_dropout and cfg.dropout_rate > 0):
      k, v = project_kv()  # [B, K, H, D], the layout dot_product_attention takes.
      out = jax.nn.dot_product_attention(
        q,
        k,
        v,
        bias=None if bias is None else bias.astype(q.dtype),  # [B|1, H, Q, K]
        scale=1.0,
        implementation=cfg.attention,
      )
      return self._output(constraint(out, names))
    else:
      k, v = (jnp.swapaxes(t, 1, 2) for t in project_kv())

    logits = jnp.einsum('bqhd,bhkd->bhqk', q, k).astype(jnp.float32)
    if bias is not None:
      logits = logits + bias.astype(jnp.float32)
    weights = jax.nn.softmax(logits, axis=-1).astype(cfg.activation_dtype)
    if enable_dropout and cfg.dropout_rate > 0:
      weights = nn.Dropout(cfg.dropout_rate)(weights, deterministic=False)
    out = jnp.einsum('bhqk,bhkd->bqhd', weights, v)
    return self._output(constraint(out, names))

  def _output(self, out: jax.Array) -> jax.Array:
    """Projects the heads' outputs [B, Q, H, D] back to [B, Q, E]."""
    return DenseGeneral(
      features=(self.config.emb_dim,),
      kernel_axes=('heads', 'kv', 'embed'),
      config=self.config,
      contract_dims=2,
      name='out',
    )(out)


class GatedMlp(nn.Module):
  """T5 v1.1 feed-forward: `wo(gelu(wi_0 x) * wi_1 x)`.

  In general `wo(prod_i act_i(wi_i x))` over `config.mlp_activations`; with a
  single activation the projection is named `wi` (original T5: `wo(relu(wi x))`).
  """

  config: T5Config | DecoderConfig

  @nn.compact
  def __call__(self, x: jax.Array, enable_dropout: bool = False) -> jax.Array:
    """Maps `x` [B, L, E] to [B, L, E] through a hidden layer of width M."""
    cfg = self.config
    dense = functools.partial(DenseGeneral, features=(cfg.mlp_dim,), config=cfg)
    acts = cfg.mlp_activations
    h = None
    for i, act in enumerate(acts):
      name = f'wi_{i}' if len(acts) > 1 else 'wi'
      hi = ACTIVATIONS[act](dense(kernel_axes=('embed', 'mlp'), name=name)(x))  # [B, L, M]
      h = hi if h is None else h * hi
    h = constraint(h, ('activation_batch', 'activation_length', 'activation_mlp'))
    if enable_dropout and cfg.dropout_rate > 0:
      h = nn.Dropout(cfg.dropout_rate)(h, deterministic=False)
    return DenseGeneral(
      features=(cfg.emb_dim,), kernel_axes=('mlp', 'embed'), config=cfg, name='wo'
    )(h)


def dropout(cfg: T5Config | DecoderConfig, x: jax.Array, enable: bool) -> jax.Array:
  # One mask per example and feature, shared across positions (t5x's broadcast_dims).
  if enable and cfg.dropout_rate > 0:
    return nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic=False)
  return x


def rotary_embedding(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
  """Rotary position embedding (RoPE) of `x` [B, L, N, D] at `positions` [B, L].

  The two halves of each head's features form the rotated pairs (feature i
  with i + D/2), at frequencies theta^(-2i/D): the layout of Llama, Qwen2 and
  Gemma checkpoints (`rotate_half`). Computed in float32.

  Returns:
    [B, L, N, D] in `x`'s dtype.
  """
  half = x.shape[-1] // 2
  inv_freq = 1.0 / (theta ** (jnp.arange(half, dtype=jnp.float32) * 2.0 / x.shape[-1]))
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, L, D/2]
  cos, sin = jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]
  x32 = x.astype(jnp.float32)
  x1, x2 = x32[..., :half], x32[..., half:]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


_QUERY_NAMES = ('activation_batch', 'activation_length', 'activation_heads', 'activation_kv')


class CausalSelfAttention(nn.Module):
  """Self-attention of a decoder-only LM: rotary positions, grouped query heads.

  H query heads share G = `num_kv_heads` key/value heads (H/G queries per
  group; G = H is multi-head attention, G = 1 multi-query). Logits are scaled
  by D^-0.5. The mask (causal, padding, segments) arrives as an additive bias.
  In decode mode the Q new tokens' keys/values (Q = the prompt when
  prefilling, 1 per sampling step) are written into a static cache
  [B, G, cache_length, D] at `cache_index`, and the queries attend to the
  whole cache (the bias masks the slots not written yet).
  """

  config: DecoderConfig

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    positions: jax.Array,
    bias: jax.Array,
    *,
    decode: bool = False,
    cache_index: jax.Array | None = None,
    cache_length: int | None = None,
    enable_dropout: bool = False,
  ) -> jax.Array:
    """Attends `x` [B, Q, E] to itself (or to the cache); returns [B, Q, E].

    Args:
      x: the layer's normalised input [B, Q, E].
      positions: rotary positions [B, Q] int32 (per row: prompts of any length).
      bias: additive mask [B|1, 1, Q, K]; K = Q, or `cache_length` when decoding.
      decode: write into (and read) the cache.
      cache_index: int32 scalar, the cache slot of the first of the Q tokens.
      cache_length: K, the cache's length (static).
      enable_dropout: dropout on the attention weights.
    """
    cfg = self.config
    heads, groups, dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    proj = functools.partial(DenseGeneral, config=cfg, use_bias=cfg.qkv_bias)
    q = proj(features=(heads, dim), kernel_axes=('embed', 'heads', 'kv'), name='query')(x)
    k = proj(features=(groups, dim), kernel_axes=('embed', 'kv_heads', 'kv'), name='key')(x)
    v = proj(features=(groups, dim), kernel_axes=('embed', 'kv_heads', 'kv'), name='value')(x)
    q = rotary_embedding(q, positions, cfg.rope_theta) * jnp.asarray(dim**-0.5, q.dtype)
    k = rotary_embedding(k, positions, cfg.rope_theta)
    q = constraint(
      q, ('activation_batch', 'activation_length', 'activation_heads', 'activation_kv')
    )
    kv_names = ('activation_batch', 'activation_length', 'activation_kv_heads', 'activation_kv')
    k, v = constraint(k, kv_names), constraint(v, kv_names)
    if decode:
      k, v = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)  # [B, G, Q, D]
      shape = (k.shape[0], groups, cache_length, dim)
      cached_key = self.variable('cache', 'cached_key', jnp.zeros, shape, k.dtype)
      cached_value = self.variable('cache', 'cached_value', jnp.zeros, shape, v.dtype)
      start = (0, 0, cache_index, 0)
      cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, k, start)
      cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, v, start)
      k, v = cached_key.value, cached_value.value
    elif cfg.attention != 'einsum' and not (enable_dropout and cfg.dropout_rate > 0):
      out = jax.nn.dot_product_attention(
        q, k, v, bias=bias.astype(q.dtype), scale=1.0, implementation=cfg.attention
      )  # Grouped heads natively: k, v [B, K, G, D].
      return self._output(out)
    else:
      k, v = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)
    batch, length = q.shape[:2]
    q = q.reshape(batch, length, groups, heads // groups, dim)  # [B, Q, G, H/G, D]
    logits = jnp.einsum('bqgnd,bgkd->bgnqk', q, k).astype(jnp.float32)
    logits = logits + bias.astype(jnp.float32)[:, :, None]  # [B, G, H/G, Q, K]
    weights = jax.nn.softmax(logits, axis=-1).astype(cfg.activation_dtype)
    if enable_dropout and cfg.dropout_rate > 0:
      weights = nn.Dropout(cfg.dropout_rate)(weights, deterministic=False)
    out = jnp.einsum('bgnqk,bgkd->bqgnd', weights, v).reshape(batch, length, heads, dim)
    return self._output(out)

  def _output(self, out: jax.Array) -> jax.Array:
    """Projects the heads' outputs [B, Q, H, D] back to [B, Q, E]."""
    out = constraint(
      out, ('activation_batch', 'activation_length', 'activation_heads', 'activation_kv')
    )
    return DenseGeneral(
      features=(self.config.emb_dim,),
      kernel_axes=('heads', 'kv', 'embed'),
      config=self.config,
      contract_dims=2,
      name='out',
    )(out)
