"""The end of a Grow round, once every process has written its shards.

`finish_round` (`runs/grow.py`): process 0 gathers the shards' sidecars and
rewards into `manifest.json` (`grow_io.write_manifest`) and logs the round's
reward mean and quantiles under `MODEL_DIR/summaries/grow`; then every process
registers the round as a seqio task, verifies it and logs what it holds.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
from absl import logging

from rest_jax.core import model_dir as model_dir_lib
from rest_jax.core import multihost, summaries
from rest_jax.data import grow_io


def finish_round(
  model_dir: str,
  out_dir: str,
  num_shards: int,
  resumed: dict,
  grow_config: Any,
  sampling: Any,
  reward: Any,
  num_sources: int,
  *,
  grow_round: int,
  vocab_path: str,
  **meta: Any,
) -> dict:
  """Every process, after writing its shards: manifest, scalars, seqio task, checks.

  Args:
    model_dir: the run directory.
    out_dir: the round directory.
    num_shards: K, the number of shards of the round.
    resumed: {index: info} of the shards finished before this run started.
    grow_config: the `runs.grow.GrowConfig`.
    sampling: the `runs.grow.SamplingConfig`.
    reward: the reward source that scored the records.
    num_sources: how many sources the round grew.
    grow_round: g, the round number.
    vocab_path: the task's SentencePiece model (the round's seqio task uses it).
    **meta: further JSON metadata stored in the manifest (policy checkpoint and
      step, reward_train_sources, timing).

  Returns:
    The round's manifest, verified against its shards.
  """
  multihost.barrier(f'grow g{grow_round}: shards written')
  multihost.on_primary(
    lambda: _write_round_manifest(
      out_dir,
      num_shards,
      resumed,
      grow_config,
      sampling,
      reward,
      num_sources,
      grow_round=grow_round,
      **meta,
      num_processes=jax.process_count(),
      vocab_path=vocab_path,
    ),
    f'grow g{grow_round}: manifest',
  )  # Returns on every process once process 0 wrote it.
  if multihost.is_primary():
    _write_round_summaries(model_dir, out_dir, grow_round)
  # D_g as a seqio task (unfiltered; Improve registers `reward > tau` views).
  grow_io.register_round_task(out_dir, vocab_path)
  manifest = grow_io.verify_round(out_dir)
  logging.info('Grow round %d: %d records in %s', grow_round, manifest['num_records'], out_dir)
  length_cap = grow_io.describe_length_cap(manifest)
  if length_cap and multihost.is_primary():
    logging.warning('Grow round %d: %s', grow_round, length_cap)
  return manifest


def _write_round_manifest(
  out_dir: str,
  num_shards: int,
  resumed: dict,
  grow_config: Any,
  sampling: Any,
  reward: Any,
  num_sources: int,
  **meta: Any,
) -> None:
  """Process 0, after every process wrote its shards: the round's manifest.

  Args:
    out_dir: the round directory.
    num_shards: K, the number of shards of the round.
    resumed: {index: info} of the shards finished before this run started.
    grow_config: the `runs.grow.GrowConfig` (task, split, source range; stored
      without the task).
    sampling: the `runs.grow.SamplingConfig`, stored whole.
    reward: the reward source (its `name`, else its type, is stored).
    num_sources: how many sources the round grew.
    **meta: further JSON metadata stored in the manifest (`timing` gains the
      record count).

  Raises:
    grow_io.GrowDataError: a shard is missing or does not match its sidecar.
  """
  meta = dict(
    meta,
    task=str(getattr(grow_config.task, 'name', grow_config.task)),
    split=grow_config.split,
    num_sources=num_sources,
    sampling=dataclasses.asdict(sampling),
    grow_config={k: v for k, v in dataclasses.asdict(grow_config).items() if k != 'task'},
    reward_source=getattr(reward, 'name', type(reward).__name__),
    sources={'split': grow_config.split, 'first': grow_config.first_source, 'count': num_sources},
    seqio_task=grow_io.round_task_name(out_dir),
  )
  shards = grow_io.finished_shards(out_dir, num_shards)
  missing = sorted(set(range(num_shards)) - set(shards))
  if missing:
    raise grow_io.GrowDataError(
      f'{out_dir}: shards {missing} are missing or corrupt after every process finished Grow.'
    )
  infos = [shards[i] for i in range(num_shards)]
  cols = grow_io.read_records_from(
    [os.path.join(out_dir, s['file']) for s in infos], ('reward', 'is_human', 'targets')
  )
  is_human = cols['is_human'].astype(bool)
  new = sum(s['count'] for i, s in shards.items() if i not in resumed)
  meta['timing']['records_this_run'] = new
  grow_io.write_manifest(
    out_dir,
    infos,
    reward_stats=grow_io.reward_statistics(cols['reward']),
    reward_stats_samples=grow_io.reward_statistics(cols['reward'][~is_human]),
    reward_stats_human=grow_io.reward_statistics(cols['reward'][is_human]),
    sampled_sequences=int((~is_human).sum()),
    sampled_tokens=int(sum(len(t) + 1 for t in cols['targets'][~is_human])),
    **grow_io.truncation_totals(infos),
    **meta,
  )


def _write_round_summaries(model_dir: str, out_dir: str, grow_round: int) -> None:
  """TensorBoard: the round's reward mean and quantiles (all records; samples only).

  Args:
    model_dir: the run directory (scalars go to its `summaries/grow`).
    out_dir: the round directory; its manifest is read.
    grow_round: g, the step of the scalars.
  """
  writer = summaries.Writer(model_dir_lib.ModelDir(model_dir).summaries('grow'))
  manifest = grow_io.read_manifest(out_dir)
  for name, stats in (('all', 'reward_stats'), ('samples', 'reward_stats_samples')):
    st = manifest[stats]
    if st.get('count'):
      quantiles = {f'reward_q{float(q):g}': v for q, v in st['quantiles'].items()}
      writer.scalars(name, grow_round, {'reward_mean': st['mean'], **quantiles})
  writer.close()
