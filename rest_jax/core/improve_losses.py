"""Improve's policy loss: the loss function, BVMPO's temperature and the frozen step inputs.

Losses (`losses.LOSSES`): 'bc' (the paper's best), 'reward_weighted' (ReST-EM's
M-step), 'gold' (the lagged policy is the Improve step's starting policy,
re-synced every `gold_lag_period` steps; its token probabilities are also
GOLD's token rewards, standing in for the frozen MLE model's, which they are
when the period is 0), 'bvmpo' and 'oac' (both need the
behaviour value V^beta: a `models.ValueModel` whose body starts from the
policy, trained by BVE on the whole round before the first such Improve step
of the round and shared by its later steps). BVMPO's temperature is a learned
scalar stored beside the policy's parameters under `LOG_TEMPERATURE`.

`config` below is the driver's `improve.ImproveConfig` (read, never imported).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from rest_jax import errors
from rest_jax.core import checkpoints, losses, models
from rest_jax.core import model_dir as model_dir_lib
from rest_jax.core import train_state as train_state_lib

LOG_TEMPERATURE = 'bvmpo_log_temperature'  # BVMPO's learned log eta, beside the policy params.
VALUE_LOSSES = ('bvmpo', 'oac')  # The losses that need the behaviour value network.


def policy_params(params: Mapping[str, Any]) -> dict:
  """The policy's parameters without Improve's extra scalars (BVMPO's temperature)."""
  return {k: v for k, v in params.items() if k != LOG_TEMPERATURE}


def make_loss_fn(model: models.EncoderDecoderModel, config: Any):
  """The Improve loss as `loss_fn(params, batch, rng) -> (loss, metrics)`.

  The batch carries what the loss reads (`losses.LOSSES[...]`): 'reward' [B],
  'log_prob' [B] from the Grow records, and the step inputs that `step_inputs`
  computes with frozen networks: 'lagged_log_probs' [B, T] (GOLD), 'values'
  [B, T] (BVMPO, OAC), 'kl_weight' [B] (BVMPO, the same value in every row).

  Args:
    model: the policy.
    config: an `improve.ImproveConfig` (its `loss`, `loss_options`, `value.discount`).

  Returns:
    The loss function of `trainer.Trainer`.
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


def initial_state(
  model: models.EncoderDecoderModel,
  config: Any,
  init_params: Any,
  tx: optax.GradientTransformation,
  mesh: Mesh,
) -> tuple[train_state_lib.TrainState, Any]:
  """The step-0 TrainState of an Improve step: the policy, plus BVMPO's log temperature.

  Args:
    model: the policy.
    config: an `improve.ImproveConfig` (its lengths, `loss`, `bvmpo_init_log_temperature`).
    init_params: the starting policy's unboxed params (sharded).
    tx: the optimizer.
    mesh: the device mesh.

  Returns:
    (state, shardings) as `train_state.from_params` returns them.
  """

  def init_fn(r):
    p = model.init(r, config.input_length, config.target_length)['params']
    if config.loss == 'bvmpo':
      p = {**p, LOG_TEMPERATURE: jnp.zeros((), jnp.float32)}
    return p

  params = dict(init_params)
  if config.loss == 'bvmpo':
    params[LOG_TEMPERATURE] = jnp.asarray(config.bvmpo_init_log_temperature, jnp.float32)
  return train_state_lib.from_params(params, init_fn, tx, mesh)


@functools.partial(jax.jit, static_argnums=(0,))
def lagged_log_probs(model: models.EncoderDecoderModel, params: Any, batch: dict) -> jax.Array:
  """[B, T] log-probabilities of `batch['decoder_target_tokens']` under the policy `params`."""
  return models.token_log_probs(model.logits(params, batch), batch['decoder_target_tokens'])


@functools.partial(jax.jit, static_argnums=(0,))
def values(value_model: models.ValueModel, params: Any, batch: dict) -> jax.Array:
  """[B, T] token values of the batch's targets under the value network `params`."""
  return value_model.values(params, batch)


def step_inputs(
  model: models.EncoderDecoderModel,
  config: Any,
  init_params: Any,
  value_params: Any,
  paths: model_dir_lib.ModelDir,
  phase: str,
) -> Callable[[dict, int, Any], dict]:
  """The `prepare` of `train_loop.run`: the inputs frozen networks give the loss.

  GOLD's 'lagged_log_probs' [B, T] (the lagged policy: the step's starting
  policy, re-synced every `gold_lag_period` steps) and the value network's
  'values' [B, T] (when `value_params` is not None).

  With a lag period, the lagged policy of each re-sync is saved under
  `paths.lagged(phase)`, so that a run resumed between two re-syncs restores
  the one it had instead of starting from the resumed step's params (older
  ones than the oldest `last` can resume from are deleted; the driver deletes
  the folder when the loop is done).

  Args:
    model: the policy.
    config: an `improve.ImproveConfig` (its `loss`, `gold_lag_period`, `value.discount`).
    init_params: the starting policy's unboxed params.
    value_params: the value network's unboxed params, or None.
    paths: the run directory.
    phase: the Improve step's phase name (its checkpoints folder).

  Returns:
    `prepare(batch, step, state) -> batch`, which keeps the lagged policy between calls.
  """
  cfg = config
  value_model = (
    None if value_params is None else models.ValueModel(model.config, cfg.value.discount)
  )
  period = cfg.gold_lag_period if cfg.loss == 'gold' else 0
  store = checkpoints.Checkpointer(paths.lagged(phase), max_to_keep=None) if period else None
  lagged = None

  def sync(step: int, params: Any) -> Any:
    """theta~ = `params` (those after `step`), saved for a resume before the next re-sync."""
    copy = jax.tree.map(jnp.copy, policy_params(params))  # Train steps donate the state.
    if step and step not in store.all_steps():
      last = checkpoints.Checkpointer(paths.last(phase), max_to_keep=None)  # Read only.
      oldest_last = min(last.all_steps() or [step])
      last.close()
      for old in store.all_steps():
        if old < period * (oldest_last // period):  # No resume can need it any more.
          store.delete(old)
      store.save(step, copy)
    return copy

  def restore(step: int, like: Any) -> Any:
    """The lagged policy saved at re-sync `step`."""
    if step not in store.all_steps():
      raise errors.UserInputError(
        f'{paths.lagged(phase)}: the lagged policy of step {step} that this resumed GOLD step '
        f'needs is missing (written by an older rest_jax, or deleted); delete '
        f'{paths.checkpoints(phase)} to run the Improve step again from its start.'
      )
    target = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), policy_params(like)
    )
    return store.restore(target, step)

  def prepare(batch: dict, step: int, state) -> dict:
    """The inputs frozen networks give the loss: GOLD's lagged policy, the value network."""
    nonlocal lagged
    if cfg.loss == 'gold':
      # The lagged policy theta~: the step's starting policy, re-synced before
      # the steps 1 + k * gold_lag_period to the params after step k * period.
      if period and lagged is None:  # The first step of this attempt: forget later re-syncs.
        for later in [s for s in store.all_steps() if s > step - 1]:
          store.delete(later)
      if not period:
        if lagged is None:
          lagged = jax.tree.map(jnp.copy, policy_params(init_params))
      elif (step - 1) % period == 0:
        lagged = sync(step - 1, state.params)
      elif lagged is None:  # Resumed between two re-syncs.
        synced = period * ((step - 1) // period)
        lagged = init_params if synced == 0 else restore(synced, state.params)
        lagged = jax.tree.map(jnp.copy, policy_params(lagged))
      batch['lagged_log_probs'] = lagged_log_probs(model, lagged, batch)
    if value_params is not None:
      batch['values'] = values(value_model, value_params, batch)
    return batch

  return prepare
