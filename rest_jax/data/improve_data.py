"""Improve's data: the filtered view of a Grow round and its training stream (TF, seqio).

`improve.improve` calls these: `training_data` picks what a step trains on
(the filtered round, or the human data for the compute-matched control);
`filter_round` applies the filter schedule's step to a round's rewards,
`register_filtered` makes the kept records a seqio task, `stream` gives its
shuffled, repeated batches from a step on (a resumed step replays the data
order to where it stopped) and `train_batches` adds BVMPO's KL weight.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from absl import logging

from rest_jax import errors
from rest_jax.core import filter_masks, filtering, losses
from rest_jax.core import model_dir as model_dir_lib
from rest_jax.data import grow_io, tasks


def training_data(
  model_dir: str,
  config: Any,
  grow_round: int,
  improve_step: int,
  phase: str,
  control_task: Any,
  human_task: Any = None,
) -> tuple[Any, dict, tuple[Any, int] | None]:
  """What an Improve step trains on, and the facts about it that its result records.

  Args:
    model_dir: run directory holding `grow/g<g>/`.
    config: an `improve.ImproveConfig` (its schedule and `min_kept`).
    grow_round: g.
    improve_step: i (1-based); uses the schedule's step i-1.
    phase: the step's name, which tags a task of kept record keys.
    control_task: None: the filtered round g; else this task's human train
      split, unfiltered (the compute-matched BC control).
    human_task: the task whose train split `config.human_mix` mixes into a
      filtered round's batches (needed when human_mix > 0).

  Returns:
    (seqio task or its name, {'tau', 'filter', 'fell_back', 'n_train_examples',
    'human_mix', and for a filtered round the kept counts of `filter_round`},
    and (human task, its train size) to mix in, or None).
  """
  human = None
  if control_task is None:
    round_dir = model_dir_lib.ModelDir(model_dir).grow_round(grow_round)
    manifest = grow_io.verify_round(round_dir)
    filtered, filter_stats, keys, by_tau = filter_round(round_dir, config, improve_step)
    task = register_filtered(round_dir, manifest['vocab_path'], filtered, keys, by_tau, phase)
    data_facts = {
      'tau': filtered.tau,
      'filter': filtered.description,
      'fell_back': filtered.fell_back,
      'n_train_examples': filtered.kept,
      'human_mix': config.human_mix,
      **filter_stats,
    }
    if config.human_mix:
      if human_task is None:
        raise errors.UserInputError(
          f'ImproveConfig.human_mix={config.human_mix} needs the human task (human_task).'
        )
      human = (human_task, tasks.dataset_size(human_task, 'train'))
      data_facts['filter'] += f', {config.human_mix:.0%} of each batch from the human data'
      data_facts['n_human_examples'] = human[1]
  else:  # The compute-matched control: the human data, unfiltered.
    task, size = control_task, tasks.dataset_size(control_task, 'train')
    data_facts = {
      'tau': None,
      'filter': 'the human data (compute-matched BC control)',
      'fell_back': False,
      'n_train_examples': size,
      'human_mix': 0.0,
    }
  logging.info(
    '%s trains on %s (%d examples)', phase, data_facts['filter'], data_facts['n_train_examples']
  )
  return task, data_facts, human


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


def human_rows(batch_size: int, human_mix: float) -> int:
  """How many of a batch's rows come from the human data: round(B * mix), and at least
  one row from each side when 0 < mix."""
  if not human_mix:
    return 0
  return min(batch_size - 1, max(1, round(batch_size * human_mix)))


def train_batches(
  task: Any, config: Any, size: int, human: tuple[Any, int] | None = None
) -> Callable[[int], Iterator[dict]]:
  """The `batches` of `train_loop.run`: `start -> ` the batches of steps start+1, start+2, ...

  Rows are packed only for the 'bc' loss (and `config.pack`); for 'bvmpo' each
  batch also carries 'kl_weight' [B], the KL weight of its step. With `human`,
  `human_rows(B, config.human_mix)` rows of each batch come from the human
  train split (its own shuffled stream, seed + 1) and the rest from `task`.

  Args:
    task: the seqio task (or its name) of `training_data`.
    config: an `improve.ImproveConfig` (loss, batch size, lengths, seed, steps).
    size: the task's number of train records.
    human: (human task, its train size) of `training_data`, or None.

  Returns:
    `batches(start)`, a generator of dicts of [B, ...] numpy arrays: the
    features the loss reads, from the step after `start` (0 at the start).
  """
  spec = losses.LOSSES[config.loss]

  def batches(start: int):
    pack = config.pack and config.loss == 'bc'
    n_human = human_rows(config.batch_size, config.human_mix) if human else 0
    data = stream(
      task,
      config,
      config.batch_size - n_human,
      spec.batch_fields,
      pack=pack,
      skip=start,
      size=size,
    )
    if n_human:
      human_cfg = dataclasses.replace(config, shuffle_seed=config.shuffle_seed + 1)
      rows = stream(human[0], human_cfg, n_human, (), pack=pack, skip=start, size=human[1])
      data = ({k: np.concatenate([a[k], h[k]]) for k in a} for a, h in zip(data, rows))
    for step, batch in enumerate(data, start + 1):
      if config.loss == 'bvmpo':
        kl = float(losses.kl_anneal(step - 1, config.num_train_steps))
        batch['kl_weight'] = np.full(len(batch['reward']), kl, np.float32)
      yield batch

  return batches
