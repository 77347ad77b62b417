"""The steps of an Improve step around the training loop, named for `improve.improve`.

`phase_name` (what its files are called), `finished_result` (a finished step
is read back, not rerun), `set_up` (the mesh, the restored starting policy,
the step's optimizer, step-0 state and train step), `value_network` (BVE for
'bvmpo' and 'oac', `value_training`), `validator` (greedy validation outputs
scored by the reward), `loop_config` (cadence and early stopping) and
`write_result` (`eval/<phase>_validation.json`, whose presence marks the step
finished).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

from absl import logging
from jax.sharding import Mesh

from rest_jax.core import (
  checkpoints,
  files,
  improve_losses,
  models,
  network,
  optimizers,
  partitioning,
  train_loop,
  trainer,
)
from rest_jax.core import train_state as train_state_lib
from rest_jax.rewards import reward_fns
from rest_jax.runs import evaluation, policy_eval, value_training


def phase_name(grow_round: int, improve_step: int) -> str:
  """'g<g>_i<i>': the checkpoint, summary and eval-file name of an Improve step."""
  return f'g{grow_round}_i{improve_step}'


def finished_result(result_path: str, phase: str) -> dict | None:
  """The result of a finished Improve step (its `result_path` exists), else None."""
  if os.path.exists(result_path):
    with open(result_path) as f:
      done = json.load(f)
    logging.info('Improve %s already finished (%s).', phase, result_path)
    return done
  return None


@dataclasses.dataclass(frozen=True)
class Setup:
  """What an Improve step trains.

  Attributes:
    mesh: the device mesh.
    model: the policy.
    init_dir: the restored checkpoint directory.
    init_params: the starting policy's unboxed params (sharded).
    init_step: the restored checkpoint's step.
    learning_rate: the step's learning rate (`ImproveConfig.learning_rate_at`).
    steps: the jitted train step of the Improve loss (`improve_losses.make_loss_fn`).
    state: the step-0 TrainState (`improve_losses.initial_state`).
    shardings: `state`'s shardings.
  """

  mesh: Mesh
  model: models.EncoderDecoderModel
  init_dir: str
  init_params: Any
  init_step: int
  learning_rate: float
  steps: trainer.Trainer
  state: train_state_lib.TrainState
  shardings: Any


def set_up(
  model_config: network.ModelConfig,
  config: Any,
  improve_step: int,
  init_dir: str,
  mesh_config: partitioning.MeshConfig,
) -> Setup:
  """Builds the mesh and the policy, restores the starting policy, makes the step's optimizer.

  Args:
    model_config: the policy network (must match the checkpoint).
    config: the `improve.ImproveConfig`.
    improve_step: i (1-based), which sets the learning rate.
    init_dir: the checkpoint directory to start from (its latest step).
    mesh_config: the device mesh.

  Returns:
    The `Setup`.
  """
  mesh = partitioning.make_mesh(mesh_config)
  model = models.make_model(model_config)
  lr = config.learning_rate_at(improve_step)
  opt = optimizers.OptimizerConfig(
    learning_rate=lr, warmup_steps=config.warmup_steps, decay=config.lr_schedule
  )
  tx = optimizers.make(opt, config.num_train_steps)
  init_params, init_step = checkpoints.restore_params(
    init_dir, model.init_params_fn(config.input_length, config.target_length), mesh
  )
  state, shardings = improve_losses.initial_state(model, config, init_params, tx, mesh)
  steps = trainer.Trainer(
    loss_fn=improve_losses.make_loss_fn(model, config),
    tx=tx,
    mesh=mesh,
    state_shardings=shardings,
  )
  return Setup(mesh, model, init_dir, init_params, init_step, lr, steps, state, shardings)


def value_network(
  model_dir: str, config: Any, grow_round: int, setup: Setup, progress: bool
) -> Any | None:
  """The behaviour value network's unboxed params if the loss needs one, else None.

  Args:
    model_dir: the run directory.
    config: the `improve.ImproveConfig` (its loss: `improve_losses.VALUE_LOSSES`).
    grow_round: g, whose round the value network learns (once per round).
    setup: the step's `Setup` (the value body starts from its policy).
    progress: progress bar.

  Returns:
    The params `value_training.train_value` trains or restores, or None.
  """
  if config.loss not in improve_losses.VALUE_LOSSES:
    return None
  return value_training.train_value(
    model_dir=model_dir,
    model_config=setup.model.config,
    config=config,
    grow_round=grow_round,
    init_params=setup.init_params,
    mesh=setup.mesh,
    progress=progress,
  )


def validator(
  model: models.EncoderDecoderModel,
  mesh: Mesh,
  eval_config: evaluation.EvalConfig,
  reward: reward_fns.RewardFn,
  progress: bool,
) -> Callable[[train_state_lib.TrainState, int], dict]:
  """The `validate` of `train_loop.run`: the policy's greedy validation, scored by `reward`."""

  def validate(state, step: int) -> dict:
    del step
    params = improve_losses.policy_params(state.params)
    return policy_eval.evaluate_policy(
      model, params, mesh, eval_config, reward=reward, progress=progress
    )

  return validate


def loop_config(config: Any) -> train_loop.LoopConfig:
  """The loop's cadence: validate and checkpoint every `eval_period`, best by reward."""
  return train_loop.LoopConfig(
    num_steps=config.num_train_steps,
    log_period=25,
    eval_period=config.eval_period,
    checkpoint_period=config.eval_period,
    best_metric='reward',
    patience=config.patience,
    # The baseline: "while reward improves on D_eval" [PAPER Alg. 1] compares
    # with the starting policy, which stays `best` if no step beats it.
    validate_start=config.validate_start,
  )


def write_result(
  result_path: str,
  loop: train_loop.LoopResult,
  config: Any,
  setup: Setup,
  data_facts: dict,
  *,
  phase: str,
  grow_round: int,
  improve_step: int,
  task: Any,
) -> dict:
  """Writes the step's result (its best validation and what it trained on) and returns it.

  Args:
    result_path: `eval/<phase>_validation.json`.
    loop: what `train_loop.run` returned.
    config: the `improve.ImproveConfig`.
    setup: what the step trained (its starting checkpoint, learning rate).
    data_facts: `improve_data.training_data`'s facts (tau, filter, counts).
    phase: the step's name.
    grow_round: g.
    improve_step: i.
    task: the seqio task (or its name) trained on.

  Returns:
    The dict written: the best validation's metrics (`reward`, `bleu`, `chrf`,
    `loss`, ...), `best_step`, `steps`, `stopped_early`, `train_tokens`, `improved`, `phase`,
    `grow_round`, `improve_step`, the data facts (`tau`: None for per-source
    filters, `filter`, `n_train_examples`, the kept counts), `learning_rate`,
    `loss_name`, `init_checkpoint`, `init_step`, `seqio_task`.
  """
  history, best_step, step = loop.history, loop.best_step, int(loop.state.step)
  best_row = next(r for r in history if r['step'] == best_step)
  result = {
    **best_row,
    'best_step': best_step,
    'steps': step,
    'stopped_early': step < config.num_train_steps,
    # Rows x target length through the policy's forward and backward passes
    # (padding included: the compute; online RL counts it the same way).
    'train_tokens': step * config.batch_size * config.target_length,
    'improved': best_step != 0,
    'phase': phase,
    'grow_round': grow_round,
    'improve_step': improve_step,
    **data_facts,
    'learning_rate': setup.learning_rate,
    'loss_name': config.loss,
    'init_checkpoint': setup.init_dir,
    'init_step': int(setup.init_step),
    'seqio_task': getattr(task, 'name', task),
  }
  files.write_json(result_path, result)
  return result
