"""TrainState: step, params and optimizer state, created sharded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from rest_jax.core import partitioning


@flax.struct.dataclass
class TrainState:
  """The whole mutable state of training; a pytree (no optimizer object)."""

  step: jax.Array  # int32 scalar, number of applied updates.
  params: Any  # Unboxed parameter tree.
  opt_state: Any  # optax state for `params`.

  @classmethod
  def create(cls, params: Any, tx: optax.GradientTransformation) -> TrainState:
    """A fresh state at step 0 for `params` (boxed or not)."""
    return cls(step=jnp.array(0, jnp.int32), params=params, opt_state=tx.init(params))


def create_sharded(
  init_params_fn: Callable[[jax.Array], Any],
  tx: optax.GradientTransformation,
  rng: jax.Array,
  mesh: Mesh,
) -> tuple[TrainState, Any]:
  """Initialises a TrainState directly in its sharded layout.

  Args:
    init_params_fn: `rng -> boxed params` (created with logical partitioning).
    tx: the optimizer; its state inherits the params' logical axes.
    rng: PRNG key for the initialisation.
    mesh: the device mesh.

  Returns:
    (state, shardings): the unboxed TrainState on the mesh, and the matching
    tree of NamedShardings (to reuse for jit, checkpoints and restore).
  """

  def init(rng):
    return TrainState.create(init_params_fn(rng), tx)

  abstract = jax.eval_shape(init, rng)
  shardings = partitioning.state_shardings(abstract, mesh)
  with partitioning.axis_rules(mesh):
    state = jax.jit(lambda r: nn.unbox(init(r)), out_shardings=shardings)(rng)
  return state, shardings


def abstract_state(state_or_shapes: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying `shardings`, a restore target for Orbax."""
  return jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state_or_shapes, shardings
  )


def from_params(
  params: Any,
  init_params_fn: Callable[[jax.Array], Any],
  tx: optax.GradientTransformation,
  mesh: Mesh,
) -> tuple[TrainState, Any]:
  """A step-0 TrainState around given (e.g. restored) params, in its sharded layout.

  Args:
    params: unboxed parameters, the structure `init_params_fn` makes.
    init_params_fn: `rng -> boxed params`; only its shapes and logical axes
      are used (through `jax.eval_shape`), to find the shardings.
    tx: the optimizer; its state starts fresh.
    mesh: the device mesh.

  Returns:
    (state, shardings) as `create_sharded` returns them.
  """
  abstract = jax.eval_shape(lambda r: TrainState.create(init_params_fn(r), tx), jax.random.key(0))
  shardings = partitioning.state_shardings(abstract, mesh)
  with partitioning.axis_rules(mesh):
    state = jax.jit(lambda p: TrainState.create(p, tx), out_shardings=shardings)(params)
  return state, shardings
