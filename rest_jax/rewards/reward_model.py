"""The learned, reference-free reward model: (source, candidate) -> score.

Like the paper's Metric X, the reward model reads the source and a candidate
translation, with no reference, and returns one number per pair. It is a T5 v1.1
encoder stack (the blocks of `network.py`, reused, with the same parameter names
as the policy's encoder) over the concatenation

    source <eos> candidate <eos> <pad> ...

followed by a mean over the non-padding positions and a 1-output linear head:

    tokens [B, L] -> embed [B, L, E] -> encoder layers -> RMSNorm
                  -> masked mean [B, E] -> head [B, 1] -> raw score [B]

`RewardModelConfig.output` says how the raw score is read: 'sigmoid' (trained
against labels in [0, 1]; the reward is `sigmoid(raw)`), or 'linear' (an
unbounded regression; the reward in [0, 1] is still `sigmoid(raw)`, its
logistic). This module provides the network, the tokenization of pairs
(`encode_pairs`), initialisation, pure scoring (`score`), the training losses
(`regression_loss`, `bradley_terry_loss`, `make_loss_fn`) and the loading of a
reward-model checkpoint (`load_params`).

Shapes: B batch, L `max_length`, E emb_dim.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import sentencepiece
from jax.sharding import Mesh

from rest_jax.core import checkpoints, cpu_runtime, layers, network, partitioning

_OUTPUTS = ('sigmoid', 'linear')
_NEG_INF = -1e10


@dataclasses.dataclass(frozen=True)
class RewardModelConfig:
  """Hyper-parameters of the reward model (a plain frozen struct)."""

  # The encoder stack. Used: vocab_size, emb_dim, num_heads, head_dim, mlp_dim,
  # num_encoder_layers, dropout_rate, relative-attention buckets, dtypes, pad_id,
  # eos_id. Ignored: num_decoder_layers, logits_via_embedding.
  encoder: network.T5Config
  # 'sigmoid': raw is a logit, reward = sigmoid(raw) in [0, 1] (labels in [0, 1]).
  # 'linear': raw is an unbounded regression output; reward = sigmoid(raw) too.
  output: str = 'sigmoid'
  # Total tokens L of `source <eos> candidate <eos>` (the source gets at most L // 2).
  max_length: int = 64

  def __post_init__(self):
    if self.output not in _OUTPUTS:
      raise ValueError(f"RewardModelConfig.output={self.output!r}: use 'sigmoid' or 'linear'.")
    if self.max_length < 2:
      raise ValueError(f'RewardModelConfig.max_length={self.max_length}: need at least 2.')


class RewardModel(nn.Module):
  """T5 v1.1 encoder + masked mean pooling + a scalar head.

  Parameter names follow `network.Transformer`'s encoder (`token_embedder`,
  `encoder_relpos`, `encoder_layer_<i>`, `encoder_norm`), plus `head`; every
  parameter carries logical axis names, so `train_state.create_sharded` and
  `partitioning.state_shardings` work with it unchanged.
  """

  config: RewardModelConfig

  def setup(self):
    cfg = self.config.encoder
    self.token_embedder = layers.Embed(cfg)
    self.encoder_relpos = layers.RelativePositionBiases(cfg, bidirectional=True)
    encoder_layer, _ = network.layer_classes(cfg)
    self.encoder_layers = [
      encoder_layer(cfg, name=f'encoder_layer_{i}') for i in range(cfg.num_encoder_layers)
    ]
    self.encoder_norm = layers.RMSNorm(cfg)
    # The output axis has no logical name: a single unit is never sharded.
    self.head = layers.DenseGeneral(features=(1,), kernel_axes=('embed', None), config=cfg)
    # As in network.py: one mask per example and feature, shared across positions.
    self.dropout = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))

  def _dropout(self, x: jax.Array, enable: bool) -> jax.Array:
    if enable and self.config.encoder.dropout_rate > 0:
      return self.dropout(x, deterministic=False)
    return x

  def __call__(self, tokens: jax.Array, enable_dropout: bool = False) -> jax.Array:
    """Raw scores of token rows.

    Args:
      tokens: [B, L] int32, `source <eos> candidate <eos>` then padding (pad_id).
      enable_dropout: training mode (needs a 'dropout' rng).

    Returns:
      [B] float32 raw scores: the logit for output='sigmoid', the regression
      value for output='linear'. A row of padding only scores 0.
    """
    cfg = self.config.encoder
    valid = tokens != cfg.pad_id  # [B, L]
    mask = valid[:, None, :, None] & valid[:, None, None, :]  # [B, 1, L, L]
    length = tokens.shape[1]
    bias = jnp.where(mask, 0.0, _NEG_INF).astype(jnp.float32)
    bias = bias + self.encoder_relpos(jnp.arange(length), length)  # [B, H, L, L]
    x = self._dropout(self.token_embedder(tokens), enable_dropout)
    x = nn.with_logical_constraint(x, ('activation_batch', 'activation_length', 'activation_embed'))
    for layer in self.encoder_layers:
      x = layer(x, bias, enable_dropout)
    x = self._dropout(self.encoder_norm(x), enable_dropout)  # [B, L, E]
    weights = valid.astype(jnp.float32)[..., None]  # [B, L, 1]
    count = jnp.maximum(weights.sum(axis=1), 1.0)  # [B, 1]
    pooled = (x.astype(jnp.float32) * weights).sum(axis=1) / count  # [B, E]
    pooled = nn.with_logical_constraint(pooled, ('activation_batch', 'activation_embed'))
    return self.head(pooled.astype(cfg.activation_dtype))[:, 0].astype(jnp.float32)


def init_params(config: RewardModelConfig, rng: jax.Array) -> dict:
  """Boxed (logically partitioned) variables {'params': ...} of a fresh model.

  Args:
    config: the reward model's config.
    rng: PRNG key.

  Returns:
    The variables dict of `RewardModel(config).init`, its leaves
    `nn.LogicallyPartitioned`; `nn.unbox` it to get plain arrays.
  """
  tokens = jnp.ones((1, config.max_length), jnp.int32)
  return RewardModel(config).init(rng, tokens, enable_dropout=False)


def score(config: RewardModelConfig, params: Any, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Raw scores and [0, 1] rewards of token rows (pure; jit it with `config` static).

  Args:
    config: the reward model's config.
    params: unboxed parameters.
    tokens: [B, L] int32 rows from `encode_pairs`.

  Returns:
    (raw, reward): both [B] float32. `raw` is the head's output; `reward` is
    `sigmoid(raw)`, for output='sigmoid' (raw is a logit) and output='linear'
    alike (the [0, 1] reward of an unbounded head is its logistic).
  """
  raw = RewardModel(config).apply({'params': params}, tokens)
  return raw, jax.nn.sigmoid(raw)


@functools.cache
def jit_score(config: RewardModelConfig) -> Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]]:
  """`score` for `config`, jitted (one per config): `(params, tokens [B, L]) -> (raw, reward)`.

  Compiled with `cpu_runtime.compiler_options()`: on CPU, XLA's default
  YNNPACK fusion ran this encoder 2.5x slower.
  """
  return jax.jit(functools.partial(score, config), compiler_options=cpu_runtime.compiler_options())


# Training losses. Both follow the trainer's convention
# `loss_fn(params, batch, rng) -> (loss, metrics)`, with `rng` None for a
# deterministic pass, and ignore rows of padding only (what
# `trainer.zeros_like_batch` appends to fill a batch).

_LOSS_KINDS = ('regression', 'bradley_terry')


def _raw_scores(
  config: RewardModelConfig, params: Any, tokens: jax.Array, rng: jax.Array | None
) -> jax.Array:
  """[B] raw scores of [B, L] rows; dropout on when `rng` is given."""
  return RewardModel(config).apply(
    {'params': params},
    tokens,
    enable_dropout=rng is not None,
    rngs=None if rng is None else {'dropout': rng},
  )


def _row_weight(config: RewardModelConfig, batch: Any, *keys: str) -> jax.Array:
  """[B] float32: `batch['weight']` (default 1), zero where any of `keys` is padding only."""
  pad_id = config.encoder.pad_id
  weight = jnp.ones(batch[keys[0]].shape[0], jnp.float32)
  for key in keys:
    weight = weight * jnp.any(batch[key] != pad_id, axis=-1).astype(jnp.float32)
  if 'weight' in batch:
    weight = weight * batch['weight'].astype(jnp.float32)
  return weight


def _weighted_mean(values: jax.Array, weight: jax.Array) -> jax.Array:
  """sum(weight * values) / sum(weight); 0 when the weights sum to 0."""
  total = weight.sum()
  return (weight * values).sum() / jnp.where(total > 0, total, 1.0)


def _mse(pred: jax.Array, target: jax.Array, weight: jax.Array | None = None) -> jax.Array:
  """Weighted mean squared error.

  Args:
    pred: [B] predictions.
    target: [B] targets.
    weight: [B] non-negative row weights; None for all ones.

  Returns:
    Scalar sum(w * (pred - target)^2) / sum(w); 0 when the weights sum to 0.
  """
  pred = jnp.asarray(pred, jnp.float32)
  weight = jnp.ones_like(pred) if weight is None else jnp.asarray(weight, jnp.float32)
  return _weighted_mean(jnp.square(pred - jnp.asarray(target, jnp.float32)), weight)


def _bt_loss(
  raw_a: jax.Array, raw_b: jax.Array, pref: jax.Array, weight: jax.Array | None = None
) -> jax.Array:
  """Bradley-Terry loss: weighted mean cross-entropy of sigmoid(raw_a - raw_b) against pref.

  Args:
    raw_a: [B] raw scores of the first candidates.
    raw_b: [B] raw scores of the second candidates.
    pref: [B] in [0, 1], the probability that `a` is preferred (1: a, 0: b).
    weight: [B] non-negative row weights; None for all ones.

  Returns:
    Scalar mean of -(pref * log s(d) + (1 - pref) * log s(-d)), d = raw_a - raw_b,
    computed with `log_sigmoid` (finite for any finite d).
  """
  diff = jnp.asarray(raw_a, jnp.float32) - jnp.asarray(raw_b, jnp.float32)
  pref = jnp.asarray(pref, jnp.float32)
  weight = jnp.ones_like(diff) if weight is None else jnp.asarray(weight, jnp.float32)
  nll = -(pref * jax.nn.log_sigmoid(diff) + (1.0 - pref) * jax.nn.log_sigmoid(-diff))
  return _weighted_mean(nll, weight)


def _pair_accuracy(
  raw_a: jax.Array, raw_b: jax.Array, pref: jax.Array, weight: jax.Array | None = None
) -> jax.Array:
  """Share of decisive pairs (pref != 0.5) whose higher raw score is the preferred side.

  Args:
    raw_a: [B] raw scores of the first candidates.
    raw_b: [B] raw scores of the second candidates.
    pref: [B] in [0, 1]; > 0.5 prefers a, < 0.5 prefers b, 0.5 is a tie (ignored).
    weight: [B] non-negative row weights; None for all ones.

  Returns:
    Scalar weighted accuracy; a pair the model scores equal counts 0.5. 0 when
    the batch holds no decisive pair.
  """
  diff = jnp.asarray(raw_a, jnp.float32) - jnp.asarray(raw_b, jnp.float32)
  side = jnp.sign(jnp.asarray(pref, jnp.float32) - 0.5)
  weight = jnp.ones_like(diff) if weight is None else jnp.asarray(weight, jnp.float32)
  correct = jnp.where(jnp.sign(diff) == side, 1.0, jnp.where(diff == 0, 0.5, 0.0))
  return _weighted_mean(correct, weight * (side != 0))


def regression_loss(
  config: RewardModelConfig, params: Any, batch: Any, rng: jax.Array | None
) -> tuple[jax.Array, dict]:
  """Regression of the reward model's prediction to a normalized score (MSE).

  The prediction is `sigmoid(raw)` for output='sigmoid' and `raw` itself for
  output='linear'. Rows of padding only get weight 0.

  Args:
    config: the reward model's config.
    params: unboxed parameters.
    batch: 'inputs' [B, L] int32 rows from `encode_pairs`; 'score' [B] float32
      targets in [0, 1]; optional 'weight' [B] float32 row weights.
    rng: dropout key, or None for a deterministic pass.

  Returns:
    loss: scalar weighted MSE.
    metrics: scalars `loss`, `mse` (equal to loss) and `mean_prediction`
      (weighted mean of the prediction).
  """
  raw = _raw_scores(config, params, batch['inputs'], rng)  # [B]
  pred = jax.nn.sigmoid(raw) if config.output == 'sigmoid' else raw
  weight = _row_weight(config, batch, 'inputs')
  loss = _mse(pred, batch['score'], weight)
  metrics = {'loss': loss, 'mse': loss, 'mean_prediction': _weighted_mean(pred, weight)}
  return loss, metrics


def bradley_terry_loss(
  config: RewardModelConfig, params: Any, batch: Any, rng: jax.Array | None
) -> tuple[jax.Array, dict]:
  """Pairwise Bradley-Terry loss on preference pairs.

  P(a preferred over b) = sigmoid(raw_a - raw_b); the loss is its binary
  cross-entropy against 'preference'. Both sides run through the model in one
  [2B, L] pass (independent dropout masks per row). Rows where either side is
  padding only get weight 0.

  Args:
    config: the reward model's config.
    params: unboxed parameters.
    batch: 'inputs_a', 'inputs_b' [B, L] int32 rows from `encode_pairs` (the
      same source with two candidates); 'preference' [B] float32 in [0, 1]
      (1: a preferred, 0: b preferred, 0.5: a tie); optional 'weight' [B].
    rng: dropout key, or None for a deterministic pass.

  Returns:
    loss: scalar weighted mean cross-entropy.
    metrics: scalars `loss` and `pairwise_accuracy` (share of pairs with
      preference != 0.5 where the higher raw score is on the preferred side;
      equal raw scores count 0.5; 0 if the batch has no such pair).
  """
  inputs_a, inputs_b = batch['inputs_a'], batch['inputs_b']
  raw = _raw_scores(config, params, jnp.concatenate([inputs_a, inputs_b], axis=0), rng)
  raw_a, raw_b = raw[: inputs_a.shape[0]], raw[inputs_a.shape[0] :]
  weight = _row_weight(config, batch, 'inputs_a', 'inputs_b')
  pref = batch['preference']
  loss = _bt_loss(raw_a, raw_b, pref, weight)
  metrics = {'loss': loss, 'pairwise_accuracy': _pair_accuracy(raw_a, raw_b, pref, weight)}
  return loss, metrics


def make_loss_fn(
  config: RewardModelConfig, kind: str = 'regression'
) -> Callable[[Any, Any, jax.Array | None], tuple[jax.Array, dict]]:
  """The reward model's `loss_fn(params, batch, rng) -> (loss, metrics)` for `trainer.Trainer`.

  Args:
    config: the reward model's config.
    kind: 'regression' (`regression_loss`, batches of 'inputs' and 'score') or
      'bradley_terry' (`bradley_terry_loss`, batches of 'inputs_a', 'inputs_b'
      and 'preference').

  Returns:
    A closure over `config`; params are unboxed, `rng` None means no dropout.

  Raises:
    ValueError: unknown `kind` (names the choices).
  """
  if kind == 'regression':
    loss = regression_loss
  elif kind == 'bradley_terry':
    loss = bradley_terry_loss
  else:
    raise ValueError(f'Reward-model loss kind={kind!r}: use one of {", ".join(_LOSS_KINDS)}.')

  def loss_fn(params: Any, batch: Any, rng: jax.Array | None) -> tuple[jax.Array, dict]:
    return loss(config, params, batch, rng)

  return loss_fn


def encode_pairs(
  sp: sentencepiece.SentencePieceProcessor,
  sources: Sequence[str],
  candidates: Sequence[str],
  max_length: int,
  eos_id: int = 1,
  pad_id: int = 0,
) -> np.ndarray:
  """Tokenizes (source, candidate) pairs into reward-model rows.

  Each row is `source_ids <eos> candidate_ids <eos>` followed by `pad_id`.
  Truncation (deterministic): the source keeps its first `max_length // 2 - 1`
  ids, so it takes at most half of the row with its EOS; the candidate keeps as
  many of its first ids as fit in the rest, before the final EOS. A short source
  leaves the candidate more room.

  Args:
    sp: the SentencePiece model shared with the policy.
    sources: N source texts.
    candidates: N candidate texts, aligned with `sources`.
    max_length: L, the row length (at least 2).
    eos_id: end-of-sequence id (1 in T5 vocabularies).
    pad_id: padding id (0 in T5 vocabularies).

  Returns:
    [N, L] int32.

  Raises:
    ValueError: the lists differ in length, or max_length < 2.
  """
  if len(sources) != len(candidates):
    raise ValueError(f'encode_pairs: {len(sources)} sources but {len(candidates)} candidates.')
  if max_length < 2:
    raise ValueError(f'encode_pairs: max_length={max_length}, need at least 2.')
  rows = np.full((len(sources), max_length), pad_id, np.int32)
  if not len(sources):
    return rows
  src_ids = sp.encode([str(s) for s in sources])
  cand_ids = sp.encode([str(c) for c in candidates])
  max_source = max_length // 2 - 1
  for i, (src, cand) in enumerate(zip(src_ids, cand_ids)):
    src = list(src[:max_source]) + [eos_id]
    room = max_length - len(src) - 1
    row = src + list(cand[:room]) + [eos_id]
    rows[i, : len(row)] = row
  return rows


def local_mesh() -> Mesh:
  """A data-parallel mesh over this process's devices (scoring is host-local)."""
  return partitioning.make_mesh(partitioning.MeshConfig(), jax.local_devices())


def load_params(
  config: RewardModelConfig,
  checkpoint_dir: str,
  step: int | None = None,
  mesh: Mesh | None = None,
) -> tuple[Any, int]:
  """Restores the params of a reward-model checkpoint onto `mesh`.

  The checkpoint is a `train_state.TrainState` saved by `checkpoints.Checkpointer`;
  only `{'params': ...}` is read (the optimizer state is not needed to score).

  Args:
    config: the config the checkpoint was trained with.
    checkpoint_dir: the Checkpointer's directory.
    step: which step; None for the latest.
    mesh: where to place the params; default `local_mesh()`.

  Returns:
    (params, step): unboxed params sharded by their logical axes, and the step.

  Raises:
    FileNotFoundError: no checkpoint in `checkpoint_dir`, or no such `step`
      (names the path).
    checkpoints.CheckpointMismatchError: the checkpoint's parameters do not
      match `config` (a shape differs, a parameter is absent or extra).
  """
  mesh = local_mesh() if mesh is None else mesh
  return checkpoints.restore_params(
    checkpoint_dir, lambda r: init_params(config, r)['params'], mesh, step, what='reward model'
  )
