"""The reward sources of a ReST run: the run's reward, its judge, and their train sources.

Without a fixed `reward`, the run's reward is the learned reward model
(`reward_fns.LearnedReward`), optionally mixed with sentence chrF against the
reference (`metric_weight`) and wrapped in reference-free guards (`guard`).
The independent judge, when trained, is a second reward model. Neither may be
trained on the sources Grow samples, nor the judge on the reward model's
(`check_disjoint_sources`).
"""

from __future__ import annotations

from typing import Any

from rest_jax import errors
from rest_jax.core import model_dir as model_dir_lib
from rest_jax.data import rm_data, tasks
from rest_jax.rewards import reward_fns, reward_model
from rest_jax.runs import grow, rest_phases


def check_disjoint_sources(
  task: Any, grow_config: grow.GrowConfig, rm_phase: Any, judge_phase: Any
) -> None:
  """Refuses reward models trained on the sources Grow samples (or on each other's).

  A reward model that saw a source's reference labelled 1.0 scores that
  source's samples by memory, not by judgment; the judge must not share the
  reward model's sources either.

  Args:
    task: the human data (seqio task name or `tasks.ParallelCorpus`).
    grow_config: Grow's sources (`split`, `first_source`, `max_sources`).
    rm_phase: the `rest.RewardModelPhase` the run trains, or None.
    judge_phase: the judge's `rest.RewardModelPhase` the run trains, or None.

  Raises:
    errors.UserInputError: two of the ranges overlap.
  """
  phases = [(n, p) for n, p in (('reward model', rm_phase), ('judge', judge_phase)) if p]
  if not phases or grow_config.split != 'train':
    return
  size = tasks.dataset_size(task, 'train')
  first = grow_config.first_source
  count = size - first if grow_config.max_sources is None else grow_config.max_sources
  ranges = {'Grow': range(first, min(first + count, size))}
  for name, p in phases:
    first, count = rm_data.train_source_slice(p.judgments)
    ranges[name] = range(first, first + count)
  names = list(ranges)
  for x, a in enumerate(names):
    for b in names[x + 1 :]:
      ra, rb = ranges[a], ranges[b]
      if ra and rb and max(ra.start, rb.start) < min(ra.stop, rb.stop):
        raise errors.UserInputError(
          f'rest: the {b} trains on train sources [{rb.start}, {rb.stop}), which overlap the '
          f'{a} sources [{ra.start}, {ra.stop}). Give them disjoint ranges (GrowConfig.'
          'first_source / max_sources, JudgmentsConfig.first_train_source / num_train_sources).'
        )


def learned_reward(
  model_dir: str,
  rm_checkpoint: str | None,
  rm_config: reward_model.RewardModelConfig,
  vocab_path: str,
  *,
  metric_weight: float,
  guard: bool,
) -> reward_fns.RewardFn:
  """The run's reward when it has no fixed one: the reward model, mixed and guarded.

  Args:
    model_dir: the run directory.
    rm_checkpoint: a trained reward-model checkpoint directory, or None for
      the run's own ('rm' phase, `checkpoints/rm/last`).
    rm_config: the reward model's network and input length.
    vocab_path: the policy's SentencePiece model file.
    metric_weight: w > 0 makes the reward `reward_fns.Weighted` of the reward
      model (1 - w) and sentence chrF against the reference (w), a guard
      against the reward model's blind spots on sources that have references
      (Grow's train sources, validation, test). chrF is then part of the
      training reward: BLEU and the judge stay independent.
    guard: wrap the reward in `reward_fns.Guarded` (reference-free penalties
      for empty, copied, looping, too long and too short outputs).

  Returns:
    The reward source Grow, Improve and evaluation use.
  """
  reward = reward_fns.LearnedReward(
    checkpoint_dir=rm_checkpoint or model_dir_lib.ModelDir(model_dir).last('rm'),
    config=rm_config,
    vocab_path=vocab_path,
  )
  if metric_weight > 0:
    reward = reward_fns.Weighted(
      components=(reward, reward_fns.SentenceChrF()),
      weights=(1.0 - metric_weight, metric_weight),
      name=f'learned_reward+{metric_weight:g}chrf',
    )
  if guard:
    reward = reward_fns.Guarded(reward, name=f'guarded_{reward.name}')
  return reward


def learned_judge(
  model_dir: str, rm_config: reward_model.RewardModelConfig, vocab_path: str
) -> reward_fns.RewardFn:
  """The independent judge the run trains (`rest_phases.JUDGE`'s last checkpoint).

  Args:
    model_dir: the run directory.
    rm_config: the judge's network and input length.
    vocab_path: the policy's SentencePiece model file.

  Returns:
    The judge: it scores every evaluated policy, never filters or selects.
  """
  return reward_fns.LearnedReward(
    checkpoint_dir=model_dir_lib.ModelDir(model_dir).last(rest_phases.JUDGE),
    config=rm_config,
    vocab_path=vocab_path,
  )
