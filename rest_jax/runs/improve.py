"""`--run_mode=improve`: one Improve step of ReST (fine-tune on a filtered Grow round).

Improve step i of Grow round g [PAPER §1, Alg. 1]:

  D_g (grow/g<g>) -> the filter schedule's step i-1 (`filtering.apply_schedule`)
    -> a seqio task of the kept records (`reward > tau`, or the kept records'
       keys for per-source and top-k filters)
    -> fine-tune from `init_checkpoint` (the previous policy for ReST, the base
       policy for ReST-EM) with the configured loss, at the learning rate
       `learning_rate * lr_decay**(i-1)`
    -> validate every `eval_period` steps: greedy outputs scored by the reward;
       keep the best checkpoint by validation reward; stop when it has not
       improved for `patience` validations ("while reward improves on D_eval").

The learning rate decays within a Grow round and starts again at
`learning_rate` in the next round, whose data is new (the paper gives no
values, only that each Improve step uses a lower rate than the one before).

Losses (`losses.LOSSES`): 'bc' (the paper's best), 'reward_weighted' (ReST-EM's
M-step), 'gold' (the lagged policy is the Improve step's starting policy,
re-synced every `gold_lag_period` steps; its token probabilities are also
GOLD's token rewards, standing in for the frozen MLE model's, which they are
when the period is 0), 'bvmpo' and 'oac' (both need the
behaviour value V^beta: a `models.ValueModel` whose body starts from the
policy, trained by BVE on the whole round before the first such Improve step
of the round and shared by its later steps). BVMPO's temperature is a learned
scalar stored beside the policy's parameters under `LOG_TEMPERATURE`.

Model directory: `checkpoints/g<g>_i<i>/{last,best}`, `checkpoints/g<g>_value/last`,
`eval/g<g>_i<i>_history.jsonl` (every validation), `eval/g<g>_i<i>_validation.json`
(the best validation and the filter's statistics; its presence marks the step
finished), `summaries/g<g>_i<i>/`. A killed Improve step resumes from `last`,
replaying the data order and the early-stopping state.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from rest_jax import errors, gin_utils
from rest_jax.core import (
  checkpoints,
  files,
  filtering,
  losses,
  models,
  network,
  optimizers,
  partitioning,
  train_loop,
  trainer,
)
from rest_jax.core import model_dir as model_dir_lib
from rest_jax.core import train_state as train_state_lib
from rest_jax.data import grow_io, improve_data, tasks
from rest_jax.rewards import reward_fns
from rest_jax.runs import evaluation, policy_eval

LOG_TEMPERATURE = 'bvmpo_log_temperature'  # BVMPO's learned log eta, beside the policy params.
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
  loss_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # Loss kwargs.
  validate_start: bool = True  # Validate the starting policy (step 0) as the baseline.
  shuffle_buffer: int = 1 << 16  # Most records in the shuffle buffer (Grow writes in order).
  gold_lag_period: int = 0  # GOLD: re-sync the lagged policy every N steps (0: never).
  bvmpo_init_log_temperature: float = 0.0  # BVMPO: log eta at the start of a step.
  value: ValueConfig = ValueConfig()  # The value network of 'bvmpo' and 'oac'.

  def __post_init__(self):
    if self.loss not in losses.LOSSES:
      raise errors.UserInputError(
        f'ImproveConfig.loss={self.loss!r}: use one of {", ".join(losses.LOSSES)}.'
      )
    if self.init_from not in INIT_FROM:
      raise errors.UserInputError(
        f'ImproveConfig.init_from={self.init_from!r}: use one of {", ".join(INIT_FROM)}.'
      )
    if not 0 < self.lr_decay <= 1:
      raise errors.UserInputError(f'ImproveConfig.lr_decay={self.lr_decay} must be in (0, 1].')

  @property
  def needs_value(self) -> bool:
    """Whether the loss needs the behaviour value network."""
    return self.loss in ('bvmpo', 'oac')

  def learning_rate_at(self, improve_step: int) -> float:
    """The learning rate of Improve step `improve_step` (1-based)."""
    return self.learning_rate * self.lr_decay ** (improve_step - 1)


def phase_name(grow_round: int, improve_step: int) -> str:
  """'g<g>_i<i>': the checkpoint, summary and eval-file name of an Improve step."""
  return f'g{grow_round}_i{improve_step}'


def policy_params(params: Mapping[str, Any]) -> dict:
  """The policy's parameters without Improve's extra scalars (BVMPO's temperature)."""
  return {k: v for k, v in params.items() if k != LOG_TEMPERATURE}


def make_loss_fn(model: models.EncoderDecoderModel, config: ImproveConfig):
  """The Improve loss as `loss_fn(params, batch, rng) -> (loss, metrics)`.

  The batch carries what the loss reads (`losses.LOSSES[...]`): 'reward' [B],
  'log_prob' [B] from the Grow records, and the step inputs that `augment`
  computes with frozen networks: 'lagged_log_probs' [B, T] (GOLD), 'values'
  [B, T] (BVMPO, OAC), 'kl_weight' [B] (BVMPO, the same value in every row).
  """
  name, options = config.loss, dict(config.loss_options)
  discount = config.value.discount

  def loss_fn(params, batch, rng):
    logits = model.logits(policy_params(params), batch, rng, enable_dropout=rng is not None)
    lp = models.token_log_probs(logits, batch['decoder_target_tokens'])
    w = batch['decoder_loss_weights'].astype(jnp.float32)
    if name == 'bc':
      return losses.bc_loss(lp, w)
    if name == 'reward_weighted':
      return losses.reward_weighted_nll(lp, w, batch['reward'], **options)
    if name == 'gold':
      return losses.gold_loss(lp, w, batch['lagged_log_probs'], **options)
    if name == 'oac':
      adv = losses.token_advantages(batch['reward'], batch['values'], w, discount)
      return losses.oac_loss(lp, w, adv)
    adv = losses.sequence_advantages(batch['reward'], batch['values'], w, discount)
    return losses.bvmpo_loss(
      lp,
      w,
      adv,
      params[LOG_TEMPERATURE],
      batch['log_prob'],
      batch['kl_weight'][0],
      **options,
    )

  return loss_fn


@functools.partial(jax.jit, static_argnums=(0,))
def _lagged_log_probs(model, params, batch):
  return models.token_log_probs(model.logits(params, batch), batch['decoder_target_tokens'])


@functools.partial(jax.jit, static_argnums=(0,))
def _values(value_model, params, batch):
  return value_model.values(params, batch)


def train_value(
  *,
  model_dir: str,
  model_config: network.T5Config,
  config: ImproveConfig,
  grow_round: int,
  init_params: Any,
  mesh,
  progress: bool = True,
) -> Any:
  """Trains (or restores) the behaviour value network of round g by BVE.

  Args:
    model_dir: run directory; checkpoints go to `checkpoints/g<g>_value/last`.
    model_config: the policy's network (the value body has the same shape).
    config: Improve config (its `value`, lengths and seed).
    grow_round: g, whose whole round (samples and human data) is D^beta.
    init_params: unboxed policy params that initialize the value body.
    mesh: device mesh.
    progress: progress bar.

  Returns:
    The value network's unboxed params (sharded).
  """
  vcfg = config.value
  value_model = models.ValueModel(model_config, vcfg.discount)
  opt = optimizers.OptimizerConfig(
    learning_rate=vcfg.learning_rate,
    warmup_steps=min(20, vcfg.num_train_steps // 10),
    decay='constant',
  )
  tx = optimizers.make(opt, vcfg.num_train_steps)

  def init_fn(r):
    return value_model.init(r, config.input_length, config.target_length)['params']

  rng = jax.random.key(config.shuffle_seed)
  head_init = jax.tree.map(
    lambda x: x.value if hasattr(x, 'value') else x,
    init_fn(rng),
    is_leaf=lambda x: hasattr(x, 'value'),
  )
  params = models.value_params_from_policy(policy_params(init_params), head_init)
  state, shardings = train_state_lib.from_params(params, init_fn, tx, mesh)
  round_dir = model_dir_lib.ModelDir(model_dir).grow_round(grow_round)

  def batches(start: int):
    manifest = grow_io.verify_round(round_dir)
    task = grow_io.register_round_task(round_dir, manifest['vocab_path'])
    fields = ('reward',)
    return improve_data.stream(
      task, config, vcfg.batch_size, fields, pack=False, skip=start, size=manifest['num_records']
    )

  loop = train_loop.run(
    phase=f'g{grow_round}_value',
    model_dir=model_dir_lib.ModelDir(model_dir),
    steps=trainer.Trainer(loss_fn=value_model.loss_fn, tx=tx, mesh=mesh, state_shardings=shardings),
    state=state,
    shardings=shardings,
    batches=batches,
    rng=rng,
    config=train_loop.LoopConfig(
      num_steps=vcfg.num_train_steps, checkpoint_period=vcfg.num_train_steps, keep=1
    ),
    progress=progress,
  )
  return loop.state.params


def improve(
  *,
  model_dir: str,
  model_config: network.T5Config,
  improve_config: ImproveConfig,
  eval_config: evaluation.EvalConfig,
  reward: reward_fns.RewardFn,
  grow_round: int = 1,
  improve_step: int = 1,
  init_checkpoint: str = 'bc/best',
  baseline: dict | None = None,
  control_task: Any = None,
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
    reward: scores the greedy validation outputs (the paper keeps the
      checkpoint with the best reward-model score).
    grow_round: g.
    improve_step: i (1-based); uses the schedule's step i-1.
    init_checkpoint: policy to start from, relative to `MODEL_DIR/checkpoints`
      ('bc/best', 'g1_i1/best', ...) or absolute; its latest step is used.
    baseline: validation metrics of `init_checkpoint` under `eval_config` and
      `reward`, when the caller has them (the ReST loop's previous eval
      phase): they stand for the step-0 validation instead of recomputing it.
    control_task: train on this task's human train split instead of the
      filtered Grow round (the ReST loop's compute-matched BC control: give it
      the ReST step's step count, `patience=0` and the 'bc' loss in
      `improve_config`); no filter is applied.
    name: the step's checkpoint / eval / summary name (default 'g<g>_i<i>').
    mesh_config: device mesh.
    seed: dropout seed.
    progress: progress bars.

  Returns:
    dict, also `eval/g<g>_i<i>_validation.json`: the best validation metrics
    (`reward`, `bleu`, `chrf`, `loss`, ...), `best_step`, `steps`,
    `stopped_early`, `tau` (None for per-source filters), `filter`,
    `n_train_examples`, the kept counts, `learning_rate`, `loss_name`.

  Raises:
    filtering.FilterTooStrictError: the filter keeps too few records.
    grow_io.GrowDataError: the round is missing or corrupt.
  """
  cfg = improve_config
  phase = name or phase_name(grow_round, improve_step)
  result_path = model_dir_lib.ModelDir(model_dir).validation(phase)
  if os.path.exists(result_path):
    with open(result_path) as f:
      done = json.load(f)
    logging.info('Improve %s already finished (%s).', phase, result_path)
    return done
  policy_eval.check_vocab_size(model_config, eval_config.task)
  gin_utils.write_config(model_dir, f'config_improve_{phase}.gin')
  if control_task is None:
    round_dir = model_dir_lib.ModelDir(model_dir).grow_round(grow_round)
    manifest = grow_io.verify_round(round_dir)
    filtered, filter_stats, keys, by_tau = improve_data.filter_round(round_dir, cfg, improve_step)
    task = improve_data.register_filtered(
      round_dir, manifest['vocab_path'], filtered, keys, by_tau, phase
    )
    data_facts = {
      'tau': filtered.tau,
      'filter': filtered.description,
      'fell_back': filtered.fell_back,
      'n_train_examples': filtered.kept,
      **filter_stats,
    }
  else:  # The compute-matched control: the human data, unfiltered.
    task, size = control_task, tasks.dataset_size(control_task, 'train')
    data_facts = {
      'tau': None,
      'filter': 'the human data (compute-matched BC control)',
      'fell_back': False,
      'n_train_examples': size,
    }
  logging.info(
    '%s trains on %s (%d examples)', phase, data_facts['filter'], data_facts['n_train_examples']
  )

  mesh = partitioning.make_mesh(mesh_config)
  model = models.EncoderDecoderModel(model_config)
  lr = cfg.learning_rate_at(improve_step)
  opt = optimizers.OptimizerConfig(
    learning_rate=lr, warmup_steps=cfg.warmup_steps, decay=cfg.lr_schedule
  )
  tx = optimizers.make(opt, cfg.num_train_steps)
  init_dir = model_dir_lib.ModelDir(model_dir).checkpoint(init_checkpoint)
  init_params, init_step = checkpoints.restore_params(
    init_dir, model.init_params_fn(cfg.input_length, cfg.target_length), mesh
  )

  def init_fn(r):
    p = model.init(r, cfg.input_length, cfg.target_length)['params']
    if cfg.loss == 'bvmpo':
      p = {**p, LOG_TEMPERATURE: jnp.zeros((), jnp.float32)}
    return p

  params = dict(init_params)
  if cfg.loss == 'bvmpo':
    params[LOG_TEMPERATURE] = jnp.asarray(cfg.bvmpo_init_log_temperature, jnp.float32)
  state, shardings = train_state_lib.from_params(params, init_fn, tx, mesh)
  value_params = None
  if cfg.needs_value:
    value_params = train_value(
      model_dir=model_dir,
      model_config=model_config,
      config=cfg,
      grow_round=grow_round,
      init_params=init_params,
      mesh=mesh,
      progress=progress,
    )
  value_model = models.ValueModel(model_config, cfg.value.discount)

  spec = losses.LOSSES[cfg.loss]

  def batches(start: int):
    pack = cfg.pack and cfg.loss == 'bc'
    data = improve_data.stream(
      task,
      cfg,
      cfg.batch_size,
      spec.batch_fields,
      pack=pack,
      skip=start,
      size=data_facts['n_train_examples'],
    )
    for step, batch in enumerate(data, start + 1):
      if cfg.loss == 'bvmpo':
        kl = float(losses.kl_anneal(step - 1, cfg.num_train_steps))
        batch['kl_weight'] = np.full(len(batch['reward']), kl, np.float32)
      yield batch

  lagged = None

  def prepare(batch: dict, step: int, state) -> dict:
    """The inputs frozen networks give the loss: GOLD's lagged policy, the value network."""
    nonlocal lagged
    if cfg.loss == 'gold':
      # The lagged policy theta~: the step's starting policy, re-synced every
      # gold_lag_period steps (a copy: train steps donate the state). A resumed
      # step re-syncs at its resume step when that is not a multiple of the period.
      resync = cfg.gold_lag_period and (step - 1) % cfg.gold_lag_period == 0 and step > 1
      if lagged is None or resync:
        source = init_params if lagged is None and not cfg.gold_lag_period else state.params
        lagged = jax.tree.map(jnp.copy, policy_params(source))
      batch['lagged_log_probs'] = _lagged_log_probs(model, lagged, batch)
    if value_params is not None:
      batch['values'] = _values(value_model, value_params, batch)
    return batch

  def validate(state, step: int) -> dict:
    del step
    params = policy_params(state.params)
    return policy_eval.evaluate_policy(
      model, params, mesh, eval_config, reward=reward, progress=progress
    )

  loop = train_loop.run(
    phase=phase,
    model_dir=model_dir_lib.ModelDir(model_dir),
    steps=trainer.Trainer(
      loss_fn=make_loss_fn(model, cfg), tx=tx, mesh=mesh, state_shardings=shardings
    ),
    state=state,
    shardings=shardings,
    batches=batches,
    rng=jax.random.fold_in(jax.random.key(seed), 1),
    config=train_loop.LoopConfig(
      num_steps=cfg.num_train_steps,
      log_period=25,
      eval_period=cfg.eval_period,
      checkpoint_period=cfg.eval_period,
      best_metric='reward',
      patience=cfg.patience,
      # The baseline: "while reward improves on D_eval" [PAPER Alg. 1] compares
      # with the starting policy, which stays `best` if no step beats it.
      validate_start=cfg.validate_start,
    ),
    validate=validate,
    prepare=prepare,
    baseline=baseline,
    progress=progress,
  )
  history, best_step, step = loop.history, loop.best_step, int(loop.state.step)
  best_row = next(r for r in history if r['step'] == best_step)
  result = {
    **best_row,
    'best_step': best_step,
    'steps': step,
    'stopped_early': step < cfg.num_train_steps,
    'improved': best_step != 0,
    'phase': phase,
    'grow_round': grow_round,
    'improve_step': improve_step,
    **data_facts,
    'learning_rate': lr,
    'loss_name': cfg.loss,
    'init_checkpoint': init_dir,
    'init_step': int(init_step),
    'seqio_task': getattr(task, 'name', task),
  }
  files.write_json(result_path, result)
  return result
