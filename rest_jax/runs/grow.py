"""`--run_mode=grow`: the Grow step of ReST.

Grow samples N candidates per source with the current policy, scores each
candidate (and the human reference: D_g = samples ∪ D) with a reward source,
and writes the round as TFRecord shards plus a manifest (`grow_io.py`). The
sources come from `grow_sources.py`; `grow_chunks.py` samples and scores them
chunk by chunk, one shard per chunk, resumable (its docstring gives the
sampling keys and the length cap); `grow_finish.py` closes the round.
`inspect_round.py` (`--run_mode=inspect`) prints what a finished round holds.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from absl import logging

from rest_jax import gin_utils
from rest_jax.core import model_dir as model_dir_lib
from rest_jax.core import multihost, network, partitioning
from rest_jax.data import grow_chunks, grow_finish, grow_io, grow_sources, tasks
from rest_jax.rewards import reward_fns
from rest_jax.runs import policy_eval


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How candidates are sampled (checked by `grow_chunks.check_sampling`)."""

  num_samples: int = 8  # N candidates per source.
  temperature: float = 0.8  # Sampling temperature (the paper's Grow uses 0.8).
  topk: int = 0  # Top-k filter, 0 = off.
  topp: float = 1.0  # Nucleus filter, 1.0 = off.
  # A sample that reaches target_length without EOS: 'keep' it (scored on its truncated
  # text, trained with EOS appended) or 'drop' it from the round. Counted either way.
  unfinished: str = 'keep'

  def __post_init__(self):
    grow_chunks.check_sampling(self)


@dataclasses.dataclass(frozen=True)
class GrowConfig:
  """Which sources, and how they are batched and stored."""

  task: Any  # seqio task name or `tasks.ParallelCorpus` the sources come from.
  split: str = 'train'  # Split of the task whose sources are grown.
  # Sources [first_source, first_source + max_sources) of the split, in split order
  # (max_sources None = all from first_source on). Records keep the index within the split
  # as `source_id`. The reward model's judgments use other sources (see JudgmentsConfig).
  first_source: int = 0
  max_sources: int | None = None
  sources_per_shard: int = 256  # Sources per chunk; one chunk = one shard.
  batch_size: int = 32  # Sources per sampler call (rows = batch_size * N).
  input_length: int = 32  # Longest source in tokens (longer ones are truncated).
  target_length: int = 32  # Longest candidate in tokens.
  human_fraction: float = 1.0  # Fraction of sources whose human reference joins D_g.
  seed: int = 0  # Sampling seed.


def grow(
  *,
  model_dir: str,
  model_config: network.ModelConfig,
  grow_config: GrowConfig,
  sampling: SamplingConfig = SamplingConfig(),
  reward: reward_fns.RewardFn,
  grow_round: int = 1,
  policy_checkpoint: str = 'bc/best',
  mesh_config: partitioning.MeshConfig = partitioning.MeshConfig(),
  progress: bool = True,
  out_dir: str | None = None,
  reward_train_sources: dict | None = None,
) -> dict | None:
  """Writes Grow round `grow_round` to `MODEL_DIR/grow/g<g>/` and returns its manifest.

  Args:
    model_dir: run directory.
    model_config: the policy network (must match the checkpoint).
    grow_config: sources, batching and storage.
    sampling: N, temperature, top-k, top-p.
    reward: the reward source that scores every record.
    grow_round: g, the round number.
    policy_checkpoint: checkpoint directory, relative to `MODEL_DIR/checkpoints`
      (e.g. 'bc/best', 'bc/last') or absolute; its latest step is used.
    mesh_config: device mesh; the sampler's batch is split over its data axes.
    progress: show a progress bar.
    out_dir: write the round here instead of `grow/g<grow_round>` (`ModelDir.grow_round`)
      (its operative config is `MODEL_DIR/config_grow_<basename>.gin`).
    reward_train_sources: which sources the reward models (and judges) were
      trained on, e.g. {'rm': {'split': 'train', 'first': 162784, 'count':
      2000}}; recorded in the manifest beside Grow's own sources.

  Returns:
    The round's manifest (also `round_dir/manifest.json`).
  """
  out_dir = out_dir or model_dir_lib.ModelDir(model_dir).grow_round(grow_round)
  try:
    manifest = grow_io.verify_round(out_dir)
    logging.info('Grow round %d already finished: %s', grow_round, out_dir)
    return manifest
  except grow_io.GrowDataError:
    pass
  policy_eval.check_vocab_size(model_config, grow_config.task)
  gin_utils.write_config(model_dir, f'config_grow_{os.path.basename(out_dir)}.gin')
  vocab = tasks.get_vocabulary(grow_config.task)
  sources = grow_sources.load_sources(grow_config)
  num_shards = -(-len(sources.texts) // grow_config.sources_per_shard)
  done = grow_io.finished_shards(out_dir, num_shards)
  # Every process must skip the same shards: scan before any process writes.
  multihost.barrier(f'grow g{grow_round}: finished shards scanned')
  ckpt_dir = model_dir_lib.ModelDir(model_dir).checkpoint(policy_checkpoint)
  sampler, policy_step = grow_chunks.restore_sampler(
    model_config, ckpt_dir, mesh_config, grow_config, sampling
  )
  timing = grow_chunks.write_shards(
    out_dir,
    num_shards,
    done,
    sources,
    sampler,
    vocab,
    reward,
    grow_config,
    sampling,
    grow_round=grow_round,
    policy_step=int(policy_step),
    progress=progress,
  )
  return grow_finish.finish_round(
    model_dir,
    out_dir,
    num_shards,
    done,
    grow_config,
    sampling,
    reward,
    len(sources.texts),
    grow_round=grow_round,
    vocab_path=vocab.sentencepiece_model_file,
    policy_checkpoint=ckpt_dir,
    policy_step=int(policy_step),
    reward_train_sources=reward_train_sources,
    timing=timing,
  )
