"""A training phase's starting TrainState: fresh, or a checkpoint's parameters.

From a checkpoint, only the parameters are restored: the optimizer starts fresh.

A phase that resumes (`train_loop.resumable`: it has its own `last`
checkpoint) starts from a fresh state, which `train_loop.run` then replaces by
the restored one; `init_checkpoint` only matters for the phase's first start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax
from absl import logging
from jax.sharding import Mesh

from rest_jax.core import checkpoints, train_loop
from rest_jax.core import model_dir as model_dir_lib
from rest_jax.core import train_state as train_state_lib


def create(
  init_params: Callable[[jax.Array], Any],
  tx: optax.GradientTransformation,
  rng: jax.Array,
  mesh: Mesh,
  model_dir: model_dir_lib.ModelDir,
  phase: str,
  init_checkpoint: str | None,
) -> tuple[train_state_lib.TrainState, Any]:
  """The step-0 state of `phase`, sharded over `mesh`.

  Args:
    init_params: `rng -> boxed params` of the model.
    tx: the optimizer.
    rng: the parameter-init key (used for a fresh state).
    mesh: the device mesh.
    model_dir: the run directory.
    phase: the phase's name (its checkpoints are `checkpoints/<phase>/`).
    init_checkpoint: start from this checkpoint's parameters (relative to
      `MODEL_DIR/checkpoints`, or absolute) instead of random ones; None:
      random. Ignored when the phase resumes.

  Returns:
    (state, shardings) as `train_state.create_sharded` returns them.
  """
  if init_checkpoint is None or train_loop.resumable(model_dir, phase):
    return train_state_lib.create_sharded(init_params, tx, rng, mesh)
  params, init_step = checkpoints.restore_params(
    model_dir.checkpoint(init_checkpoint), init_params, mesh
  )
  logging.info('%s starts from %s (step %d)', phase, init_checkpoint, init_step)
  return train_state_lib.from_params(params, init_params, tx, mesh)
