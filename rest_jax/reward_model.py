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
logistic). Training belongs to the reward-model issue; this module provides the
network, the tokenization of pairs (`encode_pairs`), initialisation, pure scoring
(`score`) and the loading of a reward-model checkpoint (`load_params`).

Shapes: B batch, L `max_length`, E emb_dim.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import sentencepiece
from jax.sharding import Mesh

from rest_jax import checkpoints, network, partitioning
from rest_jax import train_state as train_state_lib

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
    self.token_embedder = network.Embed(cfg)
    self.encoder_relpos = network.RelativePositionBiases(cfg, bidirectional=True)
    self.encoder_layers = [
      network.EncoderLayer(cfg, name=f'encoder_layer_{i}') for i in range(cfg.num_encoder_layers)
    ]
    self.encoder_norm = network.RMSNorm(cfg)
    # The output axis has no logical name: a single unit is never sharded.
    self.head = network.DenseGeneral(features=(1,), kernel_axes=('embed', None), config=cfg)
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
    ValueError: the checkpoint's parameters do not match `config` (a shape
      differs, or a parameter of `config` is absent from the checkpoint).
  """
  missing = FileNotFoundError(
    f'No reward-model checkpoint under {checkpoint_dir}; train one first, or point '
    'LearnedReward.checkpoint_dir at the directory that holds its step folders.'
  )
  if '://' not in checkpoint_dir and not os.path.isdir(checkpoint_dir):
    raise missing  # Checked first: Checkpointer would create the directory.
  mesh = local_mesh() if mesh is None else mesh
  ckpt = checkpoints.Checkpointer(checkpoint_dir)
  if step is None:
    step = ckpt.latest_step()
    if step is None:
      raise missing
  elif step not in ckpt.all_steps():
    raise FileNotFoundError(
      f'No step {step} in reward-model checkpoint {checkpoint_dir}; it has {ckpt.all_steps()}.'
    )
  abstract = jax.eval_shape(lambda r: init_params(config, r), jax.random.key(0))
  shardings = partitioning.state_shardings(abstract, mesh)['params']
  abstract_params = nn.unbox(abstract['params'])
  target = train_state_lib.abstract_state(abstract_params, shardings)
  mismatch = f'Reward-model checkpoint {checkpoint_dir} (step {step}) does not match {config}'
  try:
    params = ckpt.restore({'params': target}, step, partial=True)['params']
  except (ValueError, KeyError) as e:
    first_line = (str(e).strip().splitlines() or [''])[0][:300]
    raise ValueError(f'{mismatch}: {type(e).__name__}: {first_line}') from e
  # A partial restore leaves parameters absent from the checkpoint as abstract shapes.
  absent = [
    jax.tree_util.keystr(path)
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
    if not isinstance(leaf, jax.Array)
  ]
  if absent:
    raise ValueError(f'{mismatch}: the checkpoint lacks {len(absent)} params, e.g. {absent[:3]}.')
  return params, int(step)
