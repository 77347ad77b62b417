"""Improve's data: the filtered view of a Grow round and its training stream (TF, seqio).

`improve.improve` calls these: `filter_round` applies the filter schedule's
step to a round's rewards, `register_filtered` makes the kept records a seqio
task, and `stream` gives its shuffled, repeated batches from a step on (a
resumed step replays the data order to where it stopped).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rest_jax import errors
from rest_jax.core import filter_masks, filtering
from rest_jax.data import grow_io, tasks


def filter_round(round_dir: str, config: Any, improve_step: int) -> tuple:
  """Applies the schedule's step `improve_step - 1` to the round (`config`: an ImproveConfig).

  Returns:
    (FilterResult, kept-count statistics, [K] kept record keys, and whether
    `reward > result.tau` alone selects the kept records).
  """
  cols = grow_io.read_records_from(
    grow_io.shard_paths(round_dir, grow_io.verify_round(round_dir)),
    ('reward', 'source_id', 'sample_index', 'is_human'),
  )
  if improve_step > config.schedule.num_steps:
    raise errors.UserInputError(
      f'Improve step {improve_step} needs step {improve_step - 1} of the filter schedule '
      f'{type(config.schedule).__name__}, which has only {config.schedule.num_steps} steps: '
      'give it more thresholds or run fewer Improve steps.'
    )
  is_human = cols['is_human'].astype(bool)
  result = filtering.apply_schedule(
    config.schedule,
    improve_step - 1,
    cols['reward'],
    cols['source_id'],
    config.min_kept,
    is_human=is_human,
  )
  keys = grow_io.record_keys(cols['source_id'], cols['sample_index'])[result.mask]
  stats = {
    'kept': result.kept,
    'kept_human': int((result.mask & is_human).sum()),
    'kept_samples': int((result.mask & ~is_human).sum()),
    'total': len(result.mask),
    'kept_mean_reward': float(cols['reward'][result.mask].mean()),
  }
  by_tau = result.tau is not None and np.array_equal(
    filter_masks.keep_above(cols['reward'], result.tau), result.mask
  )
  return result, stats, keys, by_tau


def register_filtered(round_dir: str, vocab_path: str, result, keys, by_tau: bool, tag: str):
  """The seqio task of the kept records: the round's `reward > tau` view when one
  tau is the filter (the paper's F), else the kept records by key."""
  if by_tau:
    return grow_io.register_round_task(round_dir, vocab_path, tau=result.tau)
  return grow_io.register_round_task(round_dir, vocab_path, keep_keys=keys, tag=tag)


def stream(task: str, cfg: Any, batch_size: int, features, *, pack: bool, skip: int, size: int):
  """The shuffled, repeated batches of a round's task (`size` records), past the first `skip`.

  The shuffle buffer holds at most one epoch: seqio shuffles after repeating,
  so a buffer larger than the data would first read it many times over.
  """
  data = tasks.get_dataset(
    task,
    'train',
    input_length=cfg.input_length,
    target_length=cfg.target_length,
    batch_size=batch_size,
    shuffle=True,
    seed=cfg.shuffle_seed,
    repeat=True,
    pack=pack,
    features=tuple(features),
    shuffle_buffer_size=max(1, min(cfg.shuffle_buffer, size)),
  )
  for _ in range(skip):
    next(data)
  return data
