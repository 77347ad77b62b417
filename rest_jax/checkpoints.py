"""A thin Orbax wrapper: save, restore into a sharded target, latest, wait.

One `Checkpointer` per directory. The BC run keeps two: `last/` (the most
recent k, for resuming) and `best/` (the best by a validation metric).
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores a pytree state under `directory`.

  Args:
    directory: checkpoint root (created if missing).
    max_to_keep: how many checkpoints to keep.
    best_metric: if set, keep the `max_to_keep` best by this metric instead
      of the most recent (metrics must be passed to `save`).
    best_mode: 'max' or 'min' for `best_metric`.
  """

  def __init__(
    self,
    directory: str,
    *,
    max_to_keep: int = 2,
    best_metric: str | None = None,
    best_mode: str = 'max',
  ):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep,
      create=True,
      best_fn=(lambda m: float(m[best_metric])) if best_metric else None,
      best_mode=best_mode,
      enable_async_checkpointing=False,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def save(self, step: int, state: Any, metrics: dict | None = None, force: bool = True) -> bool:
    """Saves `state` as `step`; returns whether a checkpoint was written."""
    metrics = {k: float(v) for k, v in (metrics or {}).items()}
    saved = self._manager.save(
      step, args=ocp.args.PyTreeSave(state), metrics=metrics or None, force=force
    )
    self._manager.wait_until_finished()
    return saved

  def restore(self, target: Any, step: int | None = None, *, partial: bool = False) -> Any:
    """Restores `step` (default: latest) into `target`'s structure and shardings.

    Args:
      target: pytree of `jax.ShapeDtypeStruct` with shardings (or arrays).
      step: which step; None for the latest.
      partial: restore only the subtree present in `target` (e.g.
        `{'params': ...}` out of a whole TrainState).

    Raises:
      FileNotFoundError: no checkpoint in the directory.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'No checkpoint under {self.directory}.')
    args = ocp.args.PyTreeRestore(
      item=target,
      restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=partial,
    )
    return self._manager.restore(step, args=args)

  def latest_step(self) -> int | None:
    """The newest saved step, or None."""
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The best step by `best_metric` (or the latest when no metric)."""
    return self._manager.best_step()

  def all_steps(self) -> list[int]:
    """All kept steps, ascending."""
    return sorted(self._manager.all_steps())

  def wait(self) -> None:
    """Blocks until pending saves are written."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Finishes pending work and releases the manager."""
    self._manager.close()
