"""`--run_mode=bc`: supervised (behaviour-cloning) training of the policy.

`train` (gin binds its keyword-only signature, `gin/runs/bc.gin`) builds the
mesh, the sharded state (`initial_state`) and the data stream (`bc_data`), and
runs `train_loop.run`: resume from the last checkpoint, train steps, metrics,
validation (loss and greedy BLEU / chrF), `last` and `best` checkpoints, SIGTERM.

Model directory: `config.gin`, `checkpoints/bc/{last,best}/`,
`eval/bc_history.jsonl`, `eval/bc_validation.json`, `summaries/bc/`."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
from absl import logging

from rest_jax import gin_utils
from rest_jax.core import (
  files,
  initial_state,
  models,
  network,
  optimizers,
  partitioning,
  train_loop,
  trainer,
)
from rest_jax.core import model_dir as model_dir_lib
from rest_jax.data import bc_data
from rest_jax.runs import evaluation, policy_eval


@dataclasses.dataclass(frozen=True)
class TrainDataConfig:
  """The training stream."""

  task: Any  # seqio task name or `tasks.ParallelCorpus`.
  split: str = 'train'  # Split to train on.
  batch_size: int = 64  # Global batch size (rows).
  input_length: int = 32  # Encoder length S (longer sources are truncated).
  target_length: int = 32  # Decoder length T (longer targets are truncated).
  shuffle_seed: int = 0  # Data order seed (a resumed run replays the same order).
  pack: bool = True  # Pack several short examples per row (seqio packing).


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """When and what to checkpoint."""

  period: int = 500  # Save `last` every this many steps (and at the end).
  keep: int = 2  # How many `last` checkpoints to keep.
  best_metric: str = 'chrf'  # Validation metric that selects `best` (ties keep the earlier).
  best_mode: str = 'max'  # 'max' or 'min' for `best_metric`.
  # Write `last` in the background while training goes on (Orbax async); `best`
  # is always written before the loop continues.
  async_save: bool = True


def train(
  *,
  model_dir: str,
  model_config: network.ModelConfig,
  train_data: TrainDataConfig,
  eval_config: evaluation.EvalConfig,
  optimizer: optimizers.OptimizerConfig,
  num_train_steps: int,
  log_period: int = 50,
  eval_period: int = 500,
  checkpoint: CheckpointConfig = CheckpointConfig(),
  mesh_config: partitioning.MeshConfig = partitioning.MeshConfig(),
  seed: int = 0,
  init_checkpoint: str | None = None,
  progress: bool = True,
  phase: str = 'bc',
) -> dict:
  """Trains the policy with token-level NLL and returns the final validation metrics.

  Args:
    model_dir: run directory; created if missing. A run restarted with the
      same directory resumes from `checkpoints/<phase>/last`.
    model_config: the network.
    train_data: training stream.
    eval_config: validation split and sizes (also the final evaluation).
    optimizer: AdamW and schedule.
    num_train_steps: total optimizer steps.
    log_period: steps between train-metric logs / summaries.
    eval_period: steps between validations (0 = only at the end).
    checkpoint: checkpoint cadence and best-checkpoint metric.
    mesh_config: device mesh.
    seed: parameter-init and dropout seed.
    init_checkpoint: start from this policy checkpoint's parameters instead of
      random ones (e.g. 'pretrained/best' written by --run_mode=import_t5);
      relative to `MODEL_DIR/checkpoints`, or absolute. The optimizer starts
      fresh. Ignored when the phase resumes from its own `last` checkpoint.
    progress: show progress bars (also off when stderr is not a terminal).
    phase: name of the phase (checkpoint, summary and eval file names).

  Returns:
    The validation metrics of the final parameters (BLEU, chrF, loss, ...).

  Raises:
    errors.UserInputError: the model's vocabulary is smaller than the task's.
    trainer.NonFiniteLossError: the loss became NaN/Inf (names step and phase).
  """
  policy_eval.check_vocab_size(model_config, train_data.task)
  gin_utils.write_config(model_dir)
  mesh = partitioning.make_mesh(mesh_config)
  model = models.make_model(model_config)
  tx = optimizers.make(optimizer, num_train_steps)
  lr_schedule = optimizers.schedule(optimizer, num_train_steps)
  rng = jax.random.key(seed)

  def init_params(r):
    return model.init(r, train_data.input_length, train_data.target_length)['params']

  md = model_dir_lib.ModelDir(model_dir)
  state, shardings = initial_state.create(init_params, tx, rng, mesh, md, phase, init_checkpoint)
  logging.info('Policy: %.2fM parameters, mesh %s', trainer.tree_size(state.params) / 1e6, mesh)

  def validate(state, step):
    del step
    return policy_eval.evaluate_policy(model, state.params, mesh, eval_config, progress=progress)

  loop = train_loop.run(
    phase=phase,
    model_dir=md,
    steps=trainer.Trainer(loss_fn=model.loss_fn, tx=tx, mesh=mesh, state_shardings=shardings),
    state=state,
    shardings=shardings,
    batches=lambda start: bc_data.batches(train_data, start, progress=progress),
    rng=jax.random.fold_in(rng, 1),
    config=train_loop.LoopConfig(
      num_steps=num_train_steps,
      log_period=log_period,
      eval_period=eval_period,
      checkpoint_period=checkpoint.period,
      keep=checkpoint.keep,
      best_metric=checkpoint.best_metric,
      best_mode=checkpoint.best_mode,
      async_checkpointing=checkpoint.async_save,
    ),
    validate=validate,
    lr_schedule=lr_schedule,
    progress=progress,
  )
  result = loop.last_validation
  if result is None:  # Nothing left to train: evaluate the restored state.
    result = validate(loop.state, loop.start_step)
  result = dict(result, step=int(loop.state.step), best_step=loop.best_step)
  files.write_json(md.validation(phase), result)
  return result
