"""`--run_mode=rest`: the ReST loop, as a resumable list of phases.

`rest_setup.start` plans the phases (`rest_phases.plan`), reads the run state
(`rest_state`) and builds the reward and judge (`rest_rewards`); `rest_loop.run`
runs the unfinished phases (`rest_phases.run_phase`) and prints `eval/summary.json`."""

from __future__ import annotations

import dataclasses
from typing import Any

from rest_jax import errors, gin_utils
from rest_jax.core import network, optimizers, partitioning
from rest_jax.rewards import reward_fns, reward_model
from rest_jax.runs import (
  bc,
  evaluation,
  grow,
  improve,
  infer,
  rest_loop,
  rest_online,
  rest_setup,
  train_rm,
)


@dataclasses.dataclass(frozen=True)
class BCConfig:
  """The BC phase (`bc.train` with these arguments)."""

  train_data: bc.TrainDataConfig  # The human data stream.
  optimizer: optimizers.OptimizerConfig = optimizers.OptimizerConfig()
  num_train_steps: int = 500  # Optimizer steps.
  eval_period: int = 250  # Steps between validations (the best checkpoint is by chrF).
  log_period: int = 50  # Steps between logged train metrics.
  # Start from this policy checkpoint (e.g. 'pretrained/best' of --run_mode=import_t5).
  init_checkpoint: str | None = None


@dataclasses.dataclass(frozen=True)
class RewardModelPhase:
  """The reward-model phase (`train_rm.train_rm` with these arguments)."""

  rm_config: reward_model.RewardModelConfig  # The reward model's network and input length.
  judgments: train_rm.JudgmentsConfig  # Its training and evaluation judgments.
  optimizer: optimizers.OptimizerConfig = optimizers.OptimizerConfig()
  num_train_steps: int = 800  # Optimizer steps.
  batch_size: int = 64  # Judgments per step.
  loss: str = 'regression'  # 'regression' or 'bradley_terry'.
  # Start from this reward-model checkpoint (e.g. 'pretrained_rm/best' of --run_mode=import_t5).
  init_checkpoint: str | None = None


def rest(
  *,
  model_dir: str,
  model_config: network.ModelConfig,
  task: Any,
  bc: BCConfig,
  reward_model_phase: RewardModelPhase | None = None,
  reward: reward_fns.RewardFn | None = None,
  judge_phase: RewardModelPhase | None = None,
  judge: reward_fns.RewardFn | None = None,
  control: bool = False,
  online_arms: rest_online.OnlineArms | None = None,
  metric_weight: float = 0.0,
  guard: bool = False,
  grow_config: grow.GrowConfig,
  sampling: grow.SamplingConfig = grow.SamplingConfig(),
  improve_config: improve.ImproveConfig = improve.ImproveConfig(),
  eval_config: evaluation.EvalConfig,
  test_examples: int | None = None,
  best_of_n: infer.InferConfig | None = None,
  num_grow_rounds: int = 2,
  num_improve_steps: int = 3,
  initial_policy: str | None = None,
  rm_checkpoint: str | None = None,
  mesh_config: partitioning.MeshConfig = partitioning.MeshConfig(),
  seed: int = 0,
  max_phases: int | None = None,
  progress: bool = True,
) -> list[dict] | None:
  """Runs (or resumes) the ReST loop and returns the rows of `eval/summary.json`.

  Args:
    model_dir: run directory (`rest_state`, `rest_summary`, WORKSPACE.md).
    model_config: the policy network.
    task: the human data (seqio task name or `tasks.ParallelCorpus`); BC trains
      on its train split, evaluation uses its validation and test splits.
    bc: the BC phase; skipped with `initial_policy`.
    reward_model_phase: the reward-model phase; used when neither `reward`
      nor `rm_checkpoint` is given (the learned reward of the paper).
    reward: a fixed reward source (a metric, a verifier, ...) for Grow and
      evaluation instead of the learned reward model.
    judge_phase: an independent judge: a second reward model ('rm_judge' phase, on
      other sources, another seed); it scores every evaluated policy beside the
      reward, never filters or selects. Ignored when `judge` is given.
    judge: a fixed judge reward source instead (e.g. a metric the run does not
      train on); None and no `judge_phase`: no judge columns.
    control: add the compute-matched BC control phases (`bc_more_g<g>_i<i>`).
    online_arms: add online RL arms from the starting policy after the ReST
      phases, at ReST's first-round sample count and at its wall time
      (`rest_online`); None: none.
    metric_weight: w > 0 mixes sentence chrF (w) into the learned reward (1 - w)
      (`rest_rewards.learned_reward`); chrF is then part of the training reward.
    guard: wrap the learned reward in `reward_fns.Guarded`; the reward's probes
      are written to `eval/reward_probes.json`.
    grow_config: sources, batching and storage of each Grow round.
    sampling: N samples per source, temperature, top-k, top-p.
    improve_config: filter schedule, loss, steps and learning rate of Improve;
      its `init_from` chooses ReST ('previous') or ReST-EM ('base').
    eval_config: validation split and sizes (also the test evaluation).
    test_examples: first N test examples (None: the whole split).
    best_of_n: sources and N of the best-of-N curves of the BC and the final
      policy (reranked by the run's reward); None skips them.
    num_grow_rounds: G.
    num_improve_steps: I, Improve steps per Grow round.
    initial_policy: a policy checkpoint to start from instead of BC (relative to
      `MODEL_DIR/checkpoints`, or absolute), or 'shipped:<name>' (`pretrained.py`).
    rm_checkpoint: a trained reward-model checkpoint directory to load
      (with `reward_model_phase.rm_config`) instead of training one.
    mesh_config: device mesh.
    seed: parameter-init and dropout seed.
    max_phases: run at most this many phases, then return (None: all); a later call continues.
    progress: progress bars.

  Returns:
    The summary rows, one per evaluated policy, in plan order.
  """
  if reward is None and reward_model_phase is None:
    raise errors.UserInputError(
      'rest: give a reward source (REWARD) or a reward model (the reward_model_phase binding).'
    )
  gin_utils.write_config(model_dir, 'config.gin')
  ctx, run_state = rest_setup.start(
    model_dir=model_dir,
    model_config=model_config,
    task=task,
    bc=bc,
    reward_model_phase=reward_model_phase,
    reward=reward,
    judge_phase=judge_phase,
    judge=judge,
    control=control,
    online_arms=online_arms,
    metric_weight=metric_weight,
    guard=guard,
    grow_config=grow_config,
    sampling=sampling,
    improve_config=improve_config,
    eval_config=eval_config,
    test_examples=test_examples,
    best_of_n=best_of_n,
    num_grow_rounds=num_grow_rounds,
    num_improve_steps=num_improve_steps,
    initial_policy=initial_policy,
    rm_checkpoint=rm_checkpoint,
    mesh_config=mesh_config,
    seed=seed,
    progress=progress,
  )
  return rest_loop.run(ctx, run_state, max_phases)
