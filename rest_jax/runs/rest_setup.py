"""The start of a ReST run: from `rest.rest`'s arguments to its plan, run state and phase context.

`start` checks that the reward models do not train on Grow's sources, plans
the phases (`rest_phases.plan`), reads `MODEL_DIR/rest_state.json`
(`rest_state.RunState`: a restarted run must continue the same config),
installs a shipped initial policy, and builds the run's reward and judge
(`rest_rewards`), in that order.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rest_jax import errors
from rest_jax.core import network, partitioning
from rest_jax.data import tasks
from rest_jax.rewards import reward_fns
from rest_jax.runs import (
  evaluation,
  grow,
  improve,
  infer,
  pretrained,
  rest_online,
  rest_phases,
  rest_rewards,
  rest_state,
)


def _check_value_networks(model_config, improve_config, online_arms) -> None:
  """Fails before any phase runs when a loss needs a value network the policy cannot have."""
  if not isinstance(model_config, network.DecoderConfig):
    return
  needs = []
  if improve_config.loss in ('bvmpo', 'oac'):
    needs.append(f'IMPROVE_LOSS={improve_config.loss!r}')
  if online_arms is not None and online_arms.config.algorithm == 'ppo':
    needs.append("ONLINE_ALGORITHM='ppo'")
  if needs:
    raise errors.UserInputError(
      f'{" and ".join(needs)} need a value network, which only the encoder-decoder policy has; '
      "MODEL_CONFIG is a decoder-only network.DecoderConfig. Use IMPROVE_LOSS 'bc', "
      "'reward_weighted' or 'gold', and ONLINE_ALGORITHM 'grpo' or 'rloo'."
    )


def start(
  *,
  model_dir: str,
  model_config: network.ModelConfig,
  task: Any,
  bc: Any,
  reward_model_phase: Any,
  reward: reward_fns.RewardFn | None,
  judge_phase: Any,
  judge: reward_fns.RewardFn | None,
  control: bool,
  online_arms: Any,
  metric_weight: float,
  guard: bool,
  grow_config: grow.GrowConfig,
  sampling: grow.SamplingConfig,
  improve_config: improve.ImproveConfig,
  eval_config: evaluation.EvalConfig,
  test_examples: int | None,
  best_of_n: infer.InferConfig | None,
  num_grow_rounds: int,
  num_improve_steps: int,
  initial_policy: str | None,
  rm_checkpoint: str | None,
  mesh_config: partitioning.MeshConfig,
  seed: int,
  progress: bool,
) -> tuple[rest_phases.Context, rest_state.RunState]:
  """The phases' context and the run state of a run (started or resumed).

  Args are those of `rest.rest` (documented there; `bc` is a `rest.BCConfig`,
  `reward_model_phase` and `judge_phase` are `rest.RewardModelPhase`s,
  `online_arms` a `rest_online.OnlineArms` or None).

  Returns:
    (the context every phase gets, the run state: which phases are done).

  Raises:
    errors.UserInputError: the reward models' train sources overlap Grow's
      (or each other's), or `rest_state.json` holds a run this config does not
      continue.
  """
  _check_value_networks(model_config, improve_config, online_arms)
  train_rm = reward is None and rm_checkpoint is None
  train_judge = judge is None and judge_phase is not None
  rest_rewards.check_disjoint_sources(
    task,
    grow_config,
    reward_model_phase if train_rm else None,
    judge_phase if train_judge else None,
  )
  phases = rest_phases.plan(
    num_grow_rounds,
    num_improve_steps,
    bc=initial_policy is None,
    rm=train_rm,
    judge=train_judge,
    control=control,
  ) + rest_online.plan(online_arms)
  run = rest_state.RunState(
    model_dir,
    phases,
    {
      'num_grow_rounds': num_grow_rounds,
      'num_improve_steps': num_improve_steps,
      'loss': improve_config.loss,
      'init_from': improve_config.init_from,
      'schedule': repr(improve_config.schedule),
      'improve_config': repr(improve_config),
      'reward': repr(reward) if reward is not None else rm_checkpoint or 'reward_model_phase',
      'judge': repr(judge) if judge is not None else 'judge_phase' if train_judge else None,
      'control': control,
      # Only when set: runs started before online arms existed still resume.
      **({'online_arms': repr(online_arms)} if online_arms is not None else {}),
      'metric_weight': metric_weight,
      'guard': guard,
    },
  )
  base = initial_policy or 'bc/best'
  if pretrained.is_shipped(initial_policy):  # A policy shipped in the package.
    base = pretrained.install(initial_policy, model_dir)
  vocab_path = tasks.get_vocabulary(task).sentencepiece_model_file
  if reward is None:
    reward = rest_rewards.learned_reward(
      model_dir,
      rm_checkpoint,
      reward_model_phase.rm_config,
      vocab_path,
      metric_weight=metric_weight,
      guard=guard,
    )
  if train_judge:
    judge = rest_rewards.learned_judge(model_dir, judge_phase.rm_config, vocab_path)
  ctx = rest_phases.Context(
    model_dir=model_dir,
    model_config=model_config,
    task=task,
    phases=phases,
    bc=bc,
    reward_model_phase=reward_model_phase,
    judge_phase=judge_phase,
    grow_config=grow_config,
    sampling=sampling,
    improve_config=improve_config,
    num_improve_steps=num_improve_steps,
    eval_config=eval_config,
    test_config=dataclasses.replace(eval_config, split='test', max_examples=test_examples),
    online_arms=online_arms,
    best_of_n=best_of_n,
    initial_policy=initial_policy,
    base=base,
    reward=reward,
    judge=judge,
    mesh_config=mesh_config,
    seed=seed,
    progress=progress,
  )
  return ctx, run
