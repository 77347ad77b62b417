"""`--run_mode=bc`: supervised (behaviour-cloning) training of the policy.

Read top to bottom: build the mesh and the sharded state, resume from the last
checkpoint if there is one, then loop: train step, log, validate (loss and
greedy BLEU / chrF), save `last` and `best` checkpoints. Everything the loop
needs comes in through the keyword-only signature of `train`, which gin binds
(`gin/runs/bc.gin`).

Model directory: `config.gin`, `checkpoints/bc/{last,best}/`,
`eval/bc_history.jsonl`, `eval/bc_validation.json`, `summaries/bc/`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import jax
import tqdm
from absl import logging

from rest_jax import (
  checkpoints,
  evaluation,
  gin_utils,
  models,
  multihost,
  network,
  optimizers,
  partitioning,
  summaries,
  tasks,
  trainer,
)
from rest_jax import train_state as train_state_lib


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


def train(
  *,
  model_dir: str,
  model_config: network.T5Config,
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
  evaluation.check_vocab_size(model_config, train_data.task)
  gin_utils.write_config(model_dir)
  mesh = partitioning.make_mesh(mesh_config)
  model = models.EncoderDecoderModel(model_config)
  tx = optimizers.make(optimizer, num_train_steps)
  lr_schedule = optimizers.schedule(optimizer, num_train_steps)
  rng = jax.random.key(seed)

  def init_params(r):
    return model.init(r, train_data.input_length, train_data.target_length)['params']

  ckpt_root = os.path.join(model_dir, 'checkpoints', phase)
  last = checkpoints.Checkpointer(os.path.join(ckpt_root, 'last'), max_to_keep=checkpoint.keep)
  if init_checkpoint is None or last.latest_step() is not None:
    state, shardings = train_state_lib.create_sharded(init_params, tx, rng, mesh)
  else:
    params, init_step = evaluation.restore_params(
      model,
      mesh,
      os.path.join(model_dir, 'checkpoints', init_checkpoint),
      None,
      train_data.input_length,
      train_data.target_length,
    )
    logging.info('%s starts from %s (step %d)', phase, init_checkpoint, init_step)
    state, shardings = train_state_lib.from_params(params, init_params, tx, mesh)
  logging.info('Policy: %.2fM parameters, mesh %s', trainer.tree_size(state.params) / 1e6, mesh)
  best = checkpoints.Checkpointer(
    os.path.join(ckpt_root, 'best'),
    max_to_keep=1,
    best_metric=checkpoint.best_metric,
    best_mode=checkpoint.best_mode,
  )
  if last.latest_step() is not None:
    state = last.restore(train_state_lib.abstract_state(state, shardings))
    logging.info('Resumed %s from step %d', phase, int(state.step))
  start_step = int(state.step)

  steps = trainer.Trainer(loss_fn=model.loss_fn, tx=tx, mesh=mesh, state_shardings=shardings)
  data = tasks.get_dataset(
    train_data.task,
    train_data.split,
    input_length=train_data.input_length,
    target_length=train_data.target_length,
    batch_size=train_data.batch_size,
    shuffle=True,
    seed=train_data.shuffle_seed,
    repeat=True,
    pack=train_data.pack,
  )
  # Exact resume: replay the data order up to where the last run stopped.
  for _ in tqdm.trange(
    start_step, desc='skip seen batches', disable=multihost.bar_disable(progress)
  ):
    next(data)
  writer = summaries.Writer(os.path.join(model_dir, 'summaries', phase))
  history_path = os.path.join(model_dir, 'eval', f'{phase}_history.jsonl')
  dropout_rng = jax.random.fold_in(rng, 1)
  window, tic, result = [], time.time(), None
  bar = tqdm.tqdm(
    total=num_train_steps, initial=start_step, desc=phase, disable=multihost.bar_disable(progress)
  )
  for step in range(start_step + 1, num_train_steps + 1):
    batch = partitioning.shard_batch(next(data), mesh)
    state, m = steps.train_step(state, batch, dropout_rng)
    window.append(m)
    bar.update(1)
    if step % log_period == 0 or step == num_train_steps:
      means = trainer.mean_metrics(trainer.to_host(window))
      trainer.check_finite(means, step=step, phase=phase)
      means.update(learning_rate=trainer.lr_at(lr_schedule, step - 1))
      means['steps_per_second'] = len(window) / max(time.time() - tic, 1e-9)
      writer.scalars('train', step, means)
      bar.set_postfix(loss=f'{means["loss"]:.3f}')
      if bar.disable:  # No terminal: a plain log line instead of the bar.
        print(
          f'[{phase}] step {step}/{num_train_steps} loss {means["loss"]:.3f} '
          f'{means["steps_per_second"]:.2f} steps/s',
          flush=True,
        )
      window, tic = [], time.time()
    is_last = step == num_train_steps
    if (eval_period and step % eval_period == 0) or is_last:
      result = evaluation.evaluate_policy(model, state.params, mesh, eval_config, progress=progress)
      _log_eval(writer, history_path, step, result)
      bar.write(
        f'[{phase}] step {step}: val loss {result["loss"]:.3f} '
        f'BLEU {result["bleu"]:.2f} chrF {result["chrf"]:.2f}'
      )
      best.save(step, state, {checkpoint.best_metric: result[checkpoint.best_metric]}, force=False)
    if step % checkpoint.period == 0 or is_last:
      # Never checkpoint a diverged state: it would be resumed from.
      trainer.check_finite(trainer.to_host(m), step=step, phase=phase)
      last.save(step, state)
  bar.close()
  writer.close()
  if result is None:  # Nothing left to train: evaluate the restored state.
    result = evaluation.evaluate_policy(model, state.params, mesh, eval_config, progress=progress)
  result.update(step=int(state.step), best_step=best.best_step())
  evaluation.write_json(os.path.join(model_dir, 'eval', f'{phase}_validation.json'), result)
  return result


def _log_eval(writer, history_path: str, step: int, result: dict) -> None:
  """Validation metrics to TensorBoard and to a JSON-lines history."""
  scalars = {k: v for k, v in result.items() if isinstance(v, (int, float))}
  writer.scalars('validation', step, scalars)
  if multihost.is_primary():
    os.makedirs(os.path.dirname(history_path), exist_ok=True)
    with open(history_path, 'a') as f:
      f.write(json.dumps({'step': step, **scalars}) + '\n')
  logging.info('step %d validation %s', step, {k: round(float(v), 4) for k, v in scalars.items()})
