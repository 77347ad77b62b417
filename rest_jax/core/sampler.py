"""Sampling and scoring a policy on a device mesh: the one sampler of Grow and best-of-N.

`Sampler` holds a policy's (sharded) parameters and two jitted programs:

- `Sampler.sample`: N candidates per source in one compiled call
  (`models.EncoderDecoderModel.predict_batch`, i.e. `decoding.temperature_sample`:
  the encoder runs once per source, its output is repeated N times, and the
  decoder is one `lax.while_loop` over a static KV cache), with their sequence
  log-probabilities;
- `Sampler.score`: the sequence log-likelihood of given targets
  (`models.EncoderDecoderModel.score_batch`).

Both take a global host batch, place it on the mesh split over the batch axes
(`partitioning.shard_batch`), and return host numpy arrays (gathered from every
process, `multihost.host_array`). Each is compiled once per model, sampling
settings and batch shape.

Host-side helpers: `bucket` rounds a length up to a multiple of 8 so few shapes
compile, `pad_rows` packs token rows into one padded array (EOS appended), and
`strip` cuts a sampled row at its first EOS.

Shapes: B sources per batch, N samples per source, S source (encoder) length,
T target (decode) length.

JAX and numpy only: no TensorFlow (DESIGN.md layering).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from rest_jax.core import models, multihost, partitioning

EOS_ID = 1  # The T5 EOS id that `pad_rows` appends.


def bucket(length: int, limit: int, multiple: int = 8) -> int:
  """Rounds a length up to a multiple of `multiple`, within [multiple, limit].

  Batches padded to bucketed lengths share compiled programs: few shapes compile.

  Args:
    length: the length needed (e.g. the longest row of a batch, EOS included).
    limit: the largest length allowed (e.g. the configured input length).
    multiple: the bucket size.

  Returns:
    min(max(multiple, ceil(length / multiple) * multiple), limit).
  """
  return min(max(multiple, -(-length // multiple) * multiple), limit)


def pad_rows(
  rows: Sequence[np.ndarray], num_rows: int, length: int, *, eos: bool, eos_id: int = EOS_ID
) -> np.ndarray:
  """Token rows -> one padded array, EOS appended to each row when `eos`.

  A row is cut to `length` tokens (to `length - 1` before its EOS); rows past
  `len(rows)` are all padding (0).

  Args:
    rows: at most `num_rows` 1-D token id arrays (no EOS, no padding).
    num_rows: B, the rows of the result.
    length: L, the columns of the result.
    eos: append `eos_id` to every given row.
    eos_id: the EOS id.

  Returns:
    [B, L] int32, zero-padded.
  """
  out = np.zeros((num_rows, length), np.int32)
  for i, row in enumerate(rows):
    row = list(row[: length - 1 if eos else length]) + ([eos_id] if eos else [])
    out[i, : len(row)] = row
  return out


def strip(tokens: np.ndarray, eos_id: int = EOS_ID) -> np.ndarray:
  """A sampled row's token ids up to (not including) its first EOS, without padding.

  Args:
    tokens: [T] token ids (a sample: tokens, EOS, then padding 0).
    eos_id: the EOS id.

  Returns:
    [T'] int32, T' <= T: the tokens before the first EOS (all of them when there
    is none), padding (ids <= 0) removed.
  """
  stop = np.flatnonzero(tokens == eos_id)
  tokens = tokens[: stop[0]] if stop.size else tokens
  return tokens[tokens > 0].astype(np.int32)


@functools.partial(
  jax.jit, static_argnames=('model', 'num_samples', 'max_length', 'temperature', 'topk', 'topp')
)
def sample_batch(
  model: models.EncoderDecoderModel,
  params: Any,
  batch: dict[str, jax.Array],
  rng: jax.Array,
  *,
  num_samples: int,
  max_length: int,
  temperature: float,
  topk: int,
  topp: float,
) -> tuple[jax.Array, jax.Array]:
  """N samples per source and their sequence log-probabilities (jitted; settings static).

  Args:
    model: the policy.
    params: its parameters.
    batch: {'encoder_input_tokens': [B, S] int32}.
    rng: the sampling key.
    num_samples: N, samples per source.
    max_length: T, the decode length (a sample without EOS stops there).
    temperature: the sampling temperature (0.0 is greedy).
    topk: top-k filter, 0 = off.
    topp: nucleus filter, 1.0 = off.

  Returns:
    tokens: [B, N, T] int32 (EOS then padding 0).
    log_probs: [B, N] float32, each sample's sum of token log-probabilities.
  """
  tokens, log_probs = model.predict_batch(
    params,
    batch,
    rng,
    num_decodes=num_samples,
    max_decode_length=max_length,
    temperature=temperature,
    topk=topk,
    topp=topp,
  )
  return tokens, log_probs.sum(-1)


@functools.partial(jax.jit, static_argnames=('model',))
def score_batch(
  model: models.EncoderDecoderModel, params: Any, batch: dict[str, jax.Array]
) -> jax.Array:
  """Sequence log-likelihood of the batch's targets (jitted).

  Args:
    model: the policy.
    params: its parameters.
    batch: 'encoder_input_tokens' [B, S], 'decoder_input_tokens',
      'decoder_target_tokens' [B, T] int32 and 'decoder_loss_weights' [B, T] float32.

  Returns:
    [B] float32, the weighted sum of the targets' token log-probabilities.
  """
  return model.score_batch(params, batch)


class Sampler:
  """Jitted sampling and scoring of a policy on a mesh (compiled once per settings and shape).

  Attributes:
    model: the policy.
    params: its parameters, placed on `mesh`.
    mesh: the device mesh; batches are split over its batch axes, so B must be
      divisible by `partitioning.num_batch_shards(mesh)`.
    num_samples: N, samples per source.
    max_length: T, the decode length.
    temperature: the sampling temperature.
    topk: top-k filter, 0 = off.
    topp: nucleus filter, 1.0 = off.
  """

  def __init__(
    self,
    model: models.EncoderDecoderModel,
    params: Any,
    mesh: jax.sharding.Mesh,
    *,
    num_samples: int,
    max_length: int,
    temperature: float,
    topk: int = 0,
    topp: float = 1.0,
  ):
    self.model, self.params, self.mesh = model, params, mesh
    self.num_samples, self.max_length = num_samples, max_length
    self.temperature, self.topk, self.topp = temperature, topk, topp

  def sample(self, enc: np.ndarray, rng: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """N samples per source.

    Args:
      enc: [B, S] int32 source token ids (EOS, then padding 0; see `pad_rows`).
      rng: the sampling key of this batch.

    Returns:
      tokens: [B, N, T] int32 (EOS then padding 0; no EOS when a sample reached T).
      log_probs: [B, N] float32 sequence log-probabilities.
    """
    batch = partitioning.shard_batch({'encoder_input_tokens': enc}, self.mesh)
    with partitioning.axis_rules(self.mesh):
      tokens, log_probs = sample_batch(
        self.model,
        self.params,
        batch,
        rng,
        num_samples=self.num_samples,
        max_length=self.max_length,
        temperature=self.temperature,
        topk=self.topk,
        topp=self.topp,
      )
    return multihost.host_array(tokens), multihost.host_array(log_probs)

  def score(self, enc: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Sequence log-likelihood of `targets` given `enc` (teacher-forced).

    Args:
      enc: [B, S] int32 source token ids.
      targets: [B, T] int32 target token ids, EOS included, padded with 0
        (padding is not scored).

    Returns:
      [B] float32 log-likelihoods.
    """
    dec_in = np.zeros_like(targets)
    dec_in[:, 1:] = targets[:, :-1]
    batch = partitioning.shard_batch(
      {
        'encoder_input_tokens': enc,
        'decoder_input_tokens': dec_in,
        'decoder_target_tokens': targets,
        'decoder_loss_weights': (targets > 0).astype(np.float32),
      },
      self.mesh,
    )
    with partitioning.axis_rules(self.mesh):
      return multihost.host_array(score_batch(self.model, self.params, batch))
