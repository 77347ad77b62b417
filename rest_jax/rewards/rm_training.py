"""Training the reward model in the shared training loop (`train_loop.run`).

The same jitted, sharded train step as the policy (`trainer.Trainer`) with the
reward model's regression or Bradley-Terry loss (`reward_model.make_loss_fn`),
from a fresh initialisation, the phase's own `last` checkpoint (resume), or an
imported checkpoint's parameters. The loop keeps Orbax checkpoints
`checkpoints/<name>/last`, writes TensorBoard summaries and a progress bar.
"""

from __future__ import annotations

import jax

from rest_jax.core import model_dir as model_dir_lib
from rest_jax.core import optimizers, train_loop, train_state, trainer
from rest_jax.rewards import reward_model


def train(
  rm_config: reward_model.RewardModelConfig,
  *,
  loss: str,
  optimizer: optimizers.OptimizerConfig,
  num_steps: int,
  log_period: int,
  mesh: jax.sharding.Mesh,
  model_dir: model_dir_lib.ModelDir,
  name: str,
  batches: train_loop.Batches,
  seed: int,
  init_checkpoint: str | None,
  progress: bool,
) -> train_state.TrainState:
  """Trains the reward model for `num_steps` steps (resuming where it stopped).

  Args:
    rm_config: the reward-model network and its input length.
    loss: 'regression' or 'bradley_terry' (`reward_model.make_loss_fn`).
    optimizer: AdamW and schedule.
    num_steps: optimizer steps; the `last` checkpoint is saved at the end only
      (and on stopping), one kept.
    log_period: steps between logged train metrics.
    mesh: the device mesh.
    model_dir: the run directory.
    name: the phase: `checkpoints/<name>/last`, `summaries/<name>`.
    batches: `batches(start)`, the batches from step `start` on
      (`rm_data.train_batches`).
    seed: the init seed (`jax.random.key(seed)`; the step rng is seed + 1).
    init_checkpoint: None, or a reward-model checkpoint (relative to
      `checkpoints/`, or absolute) whose parameters the phase starts from
      unless it resumes from its own `last`.
    progress: a progress bar.

  Returns:
    The final train state (parameters sharded over `mesh`).
  """
  tx = optimizers.make(optimizer, num_steps)

  def init_fn(r):
    return reward_model.init_params(rm_config, r)['params']

  if init_checkpoint is None or train_loop.resumable(model_dir, name):
    state, shardings = train_state.create_sharded(init_fn, tx, jax.random.key(seed), mesh)
  else:
    params, _ = reward_model.load_params(
      rm_config, model_dir.checkpoint(init_checkpoint), mesh=mesh
    )
    state, shardings = train_state.from_params(params, init_fn, tx, mesh)
  return train_loop.run(
    phase=name,
    model_dir=model_dir,
    steps=trainer.Trainer(
      loss_fn=reward_model.make_loss_fn(rm_config, loss),
      tx=tx,
      mesh=mesh,
      state_shardings=shardings,
    ),
    state=state,
    shardings=shardings,
    batches=batches,
    rng=jax.random.key(seed + 1),
    config=train_loop.LoopConfig(
      num_steps=num_steps, log_period=log_period, checkpoint_period=num_steps, keep=1
    ),
    progress=progress,
  ).state
