"""`--run_mode=online_rl`: on-policy RL from the BC policy (PPO, GRPO, RLOO).

The paper's online baseline: iterations of sample -> score -> update
(`online_rl_steps`) on the shared training loop, from `init_checkpoint`, with
the same sampler, `RewardFn` and trainer as ReST. Validation every
`eval_every` iterations keeps `best/` by validation reward (the starting
policy is the step-0 baseline); a run resumes at any step, on the rows its
iteration drew. Writes `eval/<phase>_validation.json` (the best validation,
and what the run spent: distinct samples, tokens, seconds),
`eval/<phase>_rollouts.jsonl` (per iteration: reward, KL, length, ...) and
`checkpoints/<phase>/policy`, the best policy alone (a policy checkpoint for
`eval`, `infer`, `grow`).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from typing import Any

import jax

from rest_jax import errors, gin_utils
from rest_jax.core import (
  checkpoints,
  files,
  models,
  network,
  optimizers,
  partitioning,
  train_loop,
  trainer,
)
from rest_jax.core import model_dir as model_dir_lib
from rest_jax.core import train_state as train_state_lib
from rest_jax.data import grow_sources, tasks
from rest_jax.rewards import reward_fns
from rest_jax.runs import evaluation, grow, online_rl_steps, policy_eval, pretrained


def online_rl(
  *,
  model_dir: str,
  model_config: network.T5Config,
  config: online_rl_steps.OnlineRLConfig,
  task: Any,
  eval_config: evaluation.EvalConfig,
  reward: reward_fns.RewardFn,
  init_checkpoint: str = 'bc/best',
  name: str = 'online_rl',
  mesh_config: partitioning.MeshConfig = partitioning.MeshConfig(),
  progress: bool = True,
) -> dict:
  """Trains the policy online from `init_checkpoint`; returns the result.

  Args:
    model_dir: run directory (holds the starting checkpoint).
    model_config: the policy network (must match the checkpoint).
    config: algorithm, sampling, updates, length of the run.
    task: the task whose `config.split` sources are sampled.
    eval_config: the validation split (selects `best/`).
    reward: scores every sample and the greedy validation outputs.
    init_checkpoint: the starting and reference (KL) policy, relative to
      `MODEL_DIR/checkpoints` or absolute, or 'shipped:<name>' (`pretrained.py`).
    name: the phase name (checkpoints, eval files, summaries).
    mesh_config: device mesh.
    progress: progress bars.

  Returns:
    dict, also `eval/<name>_validation.json`: the best step's validation
    metrics, `best_step`, `policy_checkpoint`, `steps`, `seconds` and
    `online_rl_steps.accounting`.
  """
  paths = model_dir_lib.ModelDir(model_dir)
  if os.path.exists(paths.validation(name)):  # Finished: its result stands.
    with open(paths.validation(name)) as f:
      return json.load(f)
  policy_eval.check_vocab_size(model_config, task)
  gin_utils.write_config(model_dir, f'config_online_rl_{name}.gin')
  tic = time.time()
  mesh = partitioning.make_mesh(mesh_config)
  shards = partitioning.num_batch_shards(mesh)
  if config.minibatch_size % shards or config.sources_per_iteration % shards:
    raise errors.UserInputError(
      f'OnlineRLConfig.minibatch_size={config.minibatch_size} and sources_per_iteration='
      f"{config.sources_per_iteration} must be multiples of the mesh's {shards} batch shards."
    )
  model = models.make_model(model_config)
  if pretrained.is_shipped(init_checkpoint):  # A policy shipped in the package.
    init_checkpoint = pretrained.install(init_checkpoint, model_dir)
  ref_params, _ = checkpoints.restore_params(
    paths.checkpoint(init_checkpoint),
    model.init_params_fn(config.input_length, config.target_length),
    mesh,
  )
  opt = optimizers.OptimizerConfig(
    learning_rate=config.learning_rate, warmup_steps=config.warmup_steps, decay='constant'
  )
  tx = optimizers.make(opt, config.num_train_steps)
  params, init_fn = online_rl_steps.state_params(model, config, ref_params)
  state, shardings = train_state_lib.from_params(params, init_fn, tx, mesh)
  source_range = grow.GrowConfig(
    task=task,
    split=config.split,
    first_source=config.first_source,
    max_sources=config.max_sources,
    input_length=config.input_length,
    target_length=config.target_length,
  )
  rollouts = online_rl_steps.Rollouts(
    config,
    model,
    ref_params,
    grow_sources.load_sources(source_range),
    tasks.get_vocabulary(task),
    reward,
    mesh,
    paths,
    name,
  )
  spi = config.steps_per_iteration
  attempt_start = []

  def prepare(batch: dict, step: int, state) -> dict:
    del batch  # The loop's batches are empty: the rows come from the rollouts.
    if not attempt_start:
      attempt_start.append(step)
      rollouts.start((step - 1) // spi)
    return partitioning.shard_batch(rollouts.batch(step, state.params), mesh)

  def validate(state, step: int) -> dict:
    del step
    return policy_eval.evaluate_policy(
      model, state.params['policy'], mesh, eval_config, reward=reward, progress=progress
    )

  loop = train_loop.run(
    phase=name,
    model_dir=paths,
    steps=trainer.Trainer(
      loss_fn=online_rl_steps.make_loss_fn(model, config),
      tx=tx,
      mesh=mesh,
      state_shardings=shardings,
    ),
    state=state,
    shardings=shardings,
    batches=lambda start: itertools.repeat({}),
    rng=jax.random.fold_in(jax.random.key(config.seed), 1),
    config=train_loop.LoopConfig(
      num_steps=config.num_train_steps,
      log_period=spi,
      eval_period=config.eval_every * spi,
      checkpoint_period=spi,  # A resume never reaches back before its iteration's rows.
      keep=1,
      best_metric='reward',
      patience=config.patience,
      validate_start=True,
    ),
    validate=validate,
    prepare=prepare,
    progress=progress,
  )
  best_params, best_step = checkpoints.restore_params(paths.best(name), init_fn, mesh)
  saver = checkpoints.Checkpointer(paths.policy(name), max_to_keep=1)
  if best_step not in saver.all_steps():  # A rerun after a kill here may find it written.
    saver.save(best_step, {'params': best_params['policy']})
  saver.close()
  best = next(r for r in loop.history if r['step'] == best_step)
  steps = int(loop.state.step)
  result = {
    **best,
    'phase': name,
    'algorithm': config.algorithm,
    'best_step': best_step,
    'best_iteration': best_step // spi,
    'policy_checkpoint': f'{name}/policy',
    'steps': steps,
    'stopped_early': loop.stopped_early,
    **online_rl_steps.accounting(config, rollouts.log, steps),
    'seconds': round(time.time() - tic, 2),
  }
  files.write_json(paths.validation(name), result)
  return result
