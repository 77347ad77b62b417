"""`--run_mode=improve`: one Improve step of ReST (fine-tune on a filtered Grow round).

Step i of round g [PAPER Alg. 1]: filter `grow/g<g>` by the schedule's step i-1
(`improve_data`), fine-tune `init_checkpoint` with the loss (`improve_losses`) at
`learning_rate * lr_decay**(i-1)`, keep the best validation reward, stop after
`patience` validations without a better one; resumable (`improve_steps`).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Mapping
from typing import Any

import jax

from rest_jax import errors, gin_utils
from rest_jax.core import filtering, improve_losses, losses, network, partitioning, train_loop
from rest_jax.core import model_dir as model_dir_lib
from rest_jax.data import improve_data
from rest_jax.rewards import reward_fns
from rest_jax.runs import evaluation, improve_steps, policy_eval

INIT_FROM = ('previous', 'base')


@dataclasses.dataclass(frozen=True)
class ValueConfig:
  """BVE training of the behaviour value network (for 'bvmpo' and 'oac')."""

  num_train_steps: int = 200  # Optimizer steps on the whole Grow round.
  learning_rate: float = 1e-3  # Constant after a short warm-up.
  batch_size: int = 64  # Sequences per step.
  discount: float = 1.0  # Discount of the Monte-Carlo returns (1: every token gets R).


@dataclasses.dataclass(frozen=True)
class ImproveConfig:
  """What an Improve step trains on and how."""

  loss: str = 'bc'  # One of losses.LOSSES: bc, reward_weighted, gold, bvmpo, oac.
  schedule: Any = filtering.FixedThresholds()  # Improve step i uses the schedule's step i-1.
  min_kept: filtering.MinKeptPolicy = filtering.MinKeptPolicy(min_examples=64)
  init_from: str = 'previous'  # 'previous' (ReST) or 'base' (ReST-EM); read by the ReST loop.
  num_train_steps: int = 500  # Most optimizer steps per Improve step (early stopping may end it).
  batch_size: int = 64  # Rows per step.
  input_length: int = 32  # Encoder length S.
  target_length: int = 32  # Decoder length T.
  learning_rate: float = 1e-3  # Learning rate of Improve step 1.
  lr_decay: float = 0.5  # Step i of each round uses learning_rate * lr_decay**(i-1).
  lr_schedule: str = 'constant'  # optimizers.OptimizerConfig.decay within a step.
  warmup_steps: int = 0  # Linear warm-up of each Improve step.
  eval_period: int = 100  # Steps between validations (and early-stopping checks).
  patience: int = 2  # Stop after this many validations without a better reward (0: never).
  pack: bool = True  # Pack rows for 'bc' (the other losses need one sequence per row).
  shuffle_seed: int = 0  # Data order seed.
  # Share of each batch's rows drawn from the human train split D, unfiltered, beside the
  # filtered round: the paper's D_g = samples ∪ D over all of D (a round holds the
  # references of its own sources only). 0: the filtered round alone. Loss 'bc' only.
  human_mix: float = 0.0
  loss_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # Loss kwargs.
  validate_start: bool = True  # Validate the starting policy (step 0) as the baseline.
  shuffle_buffer: int = 1 << 16  # Most records in the shuffle buffer (Grow writes in order).
  gold_lag_period: int = 0  # GOLD: re-sync the lagged policy every N steps (0: never).
  bvmpo_init_log_temperature: float = 0.0  # BVMPO: log eta at the start of a step.
  value: ValueConfig = ValueConfig()  # The value network of 'bvmpo' and 'oac'.

  def __post_init__(self):
    for field, allowed in (('loss', losses.LOSSES), ('init_from', INIT_FROM)):
      if (value := getattr(self, field)) not in allowed:
        raise errors.UserInputError(
          f'ImproveConfig.{field}={value!r}: use one of {", ".join(allowed)}.'
        )
    if not 0 < self.lr_decay <= 1:
      raise errors.UserInputError(f'ImproveConfig.lr_decay={self.lr_decay} must be in (0, 1].')
    if not 0 <= self.human_mix < 1:
      raise errors.UserInputError(f'ImproveConfig.human_mix={self.human_mix} must be in [0, 1).')
    if self.human_mix and self.loss != 'bc':
      raise errors.UserInputError(
        f"ImproveConfig.human_mix={self.human_mix} needs loss 'bc' (human rows have no "
        f'reward for {self.loss!r}).'
      )

  def learning_rate_at(self, improve_step: int) -> float:
    """The learning rate of Improve step `improve_step` (1-based)."""
    return self.learning_rate * self.lr_decay ** (improve_step - 1)


def improve(
  *,
  model_dir: str,
  model_config: network.ModelConfig,
  improve_config: ImproveConfig,
  eval_config: evaluation.EvalConfig,
  reward: reward_fns.RewardFn,
  grow_round: int = 1,
  improve_step: int = 1,
  init_checkpoint: str = 'bc/best',
  baseline: dict | None = None,
  control_task: Any = None,
  human_task: Any = None,
  name: str | None = None,
  mesh_config: partitioning.MeshConfig = partitioning.MeshConfig(),
  seed: int = 0,
  progress: bool = True,
) -> dict | None:
  """Runs Improve step `improve_step` on Grow round `grow_round`; returns its result.

  Args:
    model_dir: run directory holding `grow/g<g>/` and the policy checkpoints.
    model_config: the policy network (must match the checkpoints).
    improve_config: filter schedule, loss, steps, learning rate, early stopping.
    eval_config: the validation split and sizes.
    reward: scores the greedy validation outputs (the best score picks `best`).
    grow_round: g.
    improve_step: i (1-based); uses the schedule's step i-1.
    init_checkpoint: the policy to start from (its latest step), relative to
      `MODEL_DIR/checkpoints` ('bc/best', 'g1_i1/best', ...) or absolute.
    baseline: its validation under `eval_config` and `reward` when the caller has it.
    control_task: train on its human train split, unfiltered (the compute-matched BC control).
    human_task: the task whose train split `improve_config.human_mix` mixes in.
    name: the step's checkpoint / eval / summary name (default 'g<g>_i<i>').
    mesh_config: device mesh.
    seed: dropout seed.
    progress: progress bars.

  Returns:
    dict, also `eval/<name>_validation.json`: see `improve_steps.write_result`.

  Raises:
    filtering.FilterTooStrictError: the filter keeps too few records.
    grow_io.GrowDataError: the round is missing or corrupt.
  """
  cfg = improve_config
  phase = name or improve_steps.phase_name(grow_round, improve_step)
  paths = model_dir_lib.ModelDir(model_dir)
  if (done := improve_steps.finished_result(paths.validation(phase), phase)) is not None:
    return done
  policy_eval.check_vocab_size(model_config, eval_config.task)
  gin_utils.write_config(model_dir, f'config_improve_{phase}.gin')
  task, facts, human = improve_data.training_data(
    model_dir, cfg, grow_round, improve_step, phase, control_task, human_task
  )
  setup = improve_steps.set_up(
    model_config, cfg, improve_step, paths.checkpoint(init_checkpoint), mesh_config
  )
  value_params = improve_steps.value_network(model_dir, cfg, grow_round, setup, progress)
  loop = train_loop.run(
    phase=phase,
    model_dir=paths,
    steps=setup.steps,
    state=setup.state,
    shardings=setup.shardings,
    batches=improve_data.train_batches(task, cfg, facts['n_train_examples'], human),
    rng=jax.random.fold_in(jax.random.key(seed), 1),
    config=improve_steps.loop_config(cfg),
    validate=improve_steps.validator(setup.model, setup.mesh, eval_config, reward, progress),
    prepare=improve_losses.step_inputs(
      setup.model, cfg, setup.init_params, value_params, paths, phase
    ),
    baseline=baseline,
    progress=progress,
  )
  shutil.rmtree(paths.lagged(phase), ignore_errors=True)  # Only a resumed loop reads it.
  step = dict(phase=phase, grow_round=grow_round, improve_step=improve_step, task=task)
  return improve_steps.write_result(paths.validation(phase), loop, cfg, setup, facts, **step)
