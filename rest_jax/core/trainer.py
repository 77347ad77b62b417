"""Pure train / eval steps and their jit-with-shardings wrappers.

`train_step(state, batch, rng, *, loss_fn, tx)` is a pure function; `Trainer`
jits it once with `in_shardings` / `out_shardings` (the modern pjit) and
donates the old state. The same code trains the policy (any loss) and the
reward model: only `loss_fn` differs.

A `loss_fn(params, batch, rng) -> (loss, metrics)` returns a scalar loss and a
dict of scalar metrics; `rng` is None for deterministic evaluation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from rest_jax.core import multihost, partitioning
from rest_jax.core import train_state as train_state_lib

LossFn = Callable[[Any, Mapping[str, jax.Array], jax.Array | None], tuple[jax.Array, dict]]


class NonFiniteLossError(FloatingPointError):
  """Raised when a train step produces a NaN/Inf loss."""


def train_step(
  state: train_state_lib.TrainState,
  batch: Mapping[str, jax.Array],
  rng: jax.Array,
  *,
  loss_fn: LossFn,
  tx: optax.GradientTransformation,
) -> tuple[train_state_lib.TrainState, dict]:
  """One optimizer update.

  Args:
    state: current TrainState.
    batch: dict of [B, ...] arrays.
    rng: base PRNG key; the step's key is `fold_in(rng, state.step)`.
    loss_fn: `(params, batch, rng) -> (loss, metrics)`.
    tx: the optax optimizer.

  Returns:
    (new_state, metrics): metrics are scalars, plus `grad_norm`.
  """
  step_rng = jax.random.fold_in(rng, state.step)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  (loss, metrics), grads = grad_fn(state.params, batch, step_rng)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics, loss=loss, grad_norm=optax.global_norm(grads))
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  return new_state, metrics


def eval_step(params: Any, batch: Mapping[str, jax.Array], *, loss_fn: LossFn) -> dict:
  """Deterministic loss metrics on one batch (no dropout)."""
  _, metrics = loss_fn(params, batch, None)
  return metrics


class Trainer:
  """Holds the jitted, sharded train and eval steps for one loss."""

  def __init__(
    self,
    *,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    state_shardings: Any,
  ):
    self.mesh = mesh
    self.state_shardings = state_shardings
    data = partitioning.batch_sharding(mesh)
    repl = partitioning.replicated(mesh)
    self._train = jax.jit(
      functools.partial(train_step, loss_fn=loss_fn, tx=tx),
      in_shardings=(state_shardings, data, repl),
      out_shardings=(state_shardings, repl),
      donate_argnums=(0,),
    )
    self._eval = jax.jit(
      functools.partial(eval_step, loss_fn=loss_fn),
      in_shardings=(state_shardings.params, data),
      out_shardings=repl,
    )

  def train_step(self, state, batch, rng):
    """Runs the jitted step on a sharded batch; returns (state, metrics)."""
    with partitioning.axis_rules(self.mesh):
      return self._train(state, batch, rng)

  def eval_step(self, params, batch) -> dict:
    """Runs the jitted eval step; returns device scalars."""
    with partitioning.axis_rules(self.mesh):
      return self._eval(params, batch)


def check_finite(metrics: Mapping[str, Any], *, step: int, phase: str) -> None:
  """Raises NonFiniteLossError naming `phase` and `step` if the loss is not finite."""
  loss = float(np.asarray(metrics['loss']))
  if not np.isfinite(loss):
    raise NonFiniteLossError(
      f'{phase}: non-finite loss {loss} at step {step}; lower the learning rate or check the data.'
    )


def mean_metrics(history: list[Mapping[str, Any]]) -> dict[str, float]:
  """Averages a list of scalar metric dicts (host side)."""
  if not history:
    return {}
  keys = history[0].keys()
  return {k: float(np.mean([np.asarray(h[k]) for h in history])) for k in keys}


def zeros_like_batch(batch: Mapping[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
  """Pads a host batch with zero rows up to `rows` (avoids a recompile)."""
  out = {}
  for k, v in batch.items():
    v = np.asarray(v)
    pad = rows - v.shape[0]
    if pad > 0:
      filler = (
        np.zeros((pad, *v.shape[1:]), v.dtype)
        if v.dtype.kind in 'biuf'
        else np.array([''] * pad, dtype=object)
      )
      v = np.concatenate([v, filler], axis=0)
    out[k] = v
  return out


def tree_size(tree: Any) -> int:
  """Number of scalars in a pytree of arrays."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def to_host(tree: Any) -> Any:
  """Fetches a pytree of device arrays as numpy."""
  return jax.tree.map(multihost.host_array, tree)


def lr_at(schedule: optax.Schedule, step: int) -> float:
  """The learning rate at `step` as a float (for summaries)."""
  return float(jnp.asarray(schedule(step)))
