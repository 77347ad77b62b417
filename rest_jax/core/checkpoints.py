"""A thin Orbax wrapper: save, restore into a sharded target, latest, wait.

One `Checkpointer` per directory. The BC run keeps two: `last/` (the most
recent k, for resuming) and `best/` (the best by a validation metric).

Ties: a later checkpoint beats a kept one only if its metric is strictly
better (`is_better`: higher for 'max', lower for 'min'); on a tie the earlier
step stays. This is the one tie rule of the project: BC's `best/` (chrF),
Improve's `best/` (validation reward) and Improve's early stopping (which
counts a tie as no gain) all use it. (Orbax's own `best_fn` ranking keeps the
later of two tied steps, so the `best/` Checkpointer ranks and deletes itself.)
NaN ranks below every number.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import orbax.checkpoint as ocp

from rest_jax import errors
from rest_jax.core import faults, partitioning
from rest_jax.core import train_state as train_state_lib

BEST_MODES = ('max', 'min')


def is_better(value: float, than: float, mode: str = 'max') -> bool:
  """Whether metric `value` strictly beats `than` ('max': higher, 'min': lower).

  A tie is not better; NaN is never better, and any number beats NaN.
  """
  if mode not in BEST_MODES:
    raise ValueError(f'best_mode={mode!r}: use one of {", ".join(BEST_MODES)}.')
  value, than = float(value), float(than)
  if math.isnan(value):
    return False
  if math.isnan(than):
    return True
  return value > than if mode == 'max' else value < than


class Checkpointer:
  """Saves and restores a pytree state under `directory`.

  Args:
    directory: checkpoint root (created if missing).
    max_to_keep: how many checkpoints to keep (None: all).
    best_metric: if set, keep the `max_to_keep` best by this metric instead
      of the most recent (metrics must be passed to `save`). A step enters
      only if it ranks among them: with `max_to_keep=1`, only if its metric is
      strictly better than the kept one's (ties keep the earlier step).
    best_mode: 'max' or 'min' for `best_metric`.
    async_save: `save` returns once the arrays are copied to host memory and
      writes them in a background thread (Orbax's async checkpointing), so
      training goes on meanwhile; the next `save`, `wait` and `close` wait for
      it. Only without `best_metric` (whose ranking reads what was saved).
  """

  def __init__(
    self,
    directory: str,
    *,
    max_to_keep: int | None = 2,
    best_metric: str | None = None,
    best_mode: str = 'max',
    async_save: bool = False,
  ):
    if best_mode not in BEST_MODES:
      raise ValueError(f'best_mode={best_mode!r}: use one of {", ".join(BEST_MODES)}.')
    if async_save and best_metric is not None:
      raise ValueError('async_save needs best_metric=None: ranking reads the saved metrics.')
    self._async = async_save
    self.directory = os.path.abspath(directory)
    self._max_to_keep = max_to_keep
    self._best_metric, self._best_mode = best_metric, best_mode
    options = ocp.CheckpointManagerOptions(
      # With a metric, Orbax keeps everything and writes the metrics; the
      # ranking (and its tie rule) and the deletions are `_rank` / `save`'s.
      max_to_keep=None if best_metric else max_to_keep,
      create=True,
      best_fn=(lambda m: float(m[best_metric])) if best_metric else None,
      best_mode=best_mode,
      enable_async_checkpointing=async_save,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def _value(self, metrics: dict | None) -> float:
    """The ranking metric of a step's metrics (NaN when missing)."""
    if not metrics or self._best_metric not in metrics:
      return math.nan
    return float(metrics[self._best_metric])

  def _rank(self) -> list[int]:
    """Kept steps, best first: by `best_metric` (`is_better`), ties by the earlier step."""
    entries = [(s, self._value(self._manager.metrics(s))) for s in self.all_steps()]
    ranked: list[tuple[int, float]] = []
    for step, value in entries:  # Ascending steps: a later step passes only strictly better ones.
      at = next(
        (i for i, (_, v) in enumerate(ranked) if is_better(value, v, self._best_mode)), len(ranked)
      )
      ranked.insert(at, (step, value))
    return [s for s, _ in ranked]

  def save(self, step: int, state: Any, metrics: dict | None = None, force: bool = True) -> bool:
    """Saves `state` as `step`; returns whether a checkpoint was written.

    With `best_metric`, a step that would not rank among the `max_to_keep`
    best (its metric is not strictly better than the worst kept one's, when
    that many are kept) is not written; when one is written, the kept steps
    beyond `max_to_keep` by rank are deleted.

    Raises:
      ValueError: `best_metric` is set and missing from `metrics`.
    """
    metrics = {k: float(v) for k, v in (metrics or {}).items()}
    if self._best_metric is not None:
      if self._best_metric not in metrics:
        raise ValueError(f'{self.directory}: save needs the metric {self._best_metric!r}.')
      ranked = self._rank()
      full = self._max_to_keep is not None and len(ranked) >= self._max_to_keep
      if full and not (
        ranked
        and is_better(
          metrics[self._best_metric],
          self._value(self._manager.metrics(ranked[-1])),
          self._best_mode,
        )
      ):
        return False
    faults.point(f'checkpoint save {os.path.basename(self.directory)}', during=True)
    saved = self._manager.save(
      step, args=ocp.args.PyTreeSave(state), metrics=metrics or None, force=force
    )
    if not self._async:
      self._manager.wait_until_finished()
    if saved and self._best_metric is not None and self._max_to_keep is not None:
      for old in self._rank()[self._max_to_keep :]:
        self._manager.delete(old)
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
    self._settle()
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
    self._settle()
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The best step by `best_metric`, the earliest of tied ones (the latest when no metric)."""
    if self._best_metric is None:
      return self._manager.latest_step()
    ranked = self._rank()
    return ranked[0] if ranked else None

  def item_metadata(self, step: int) -> Any:
    """The saved tree of `step` as nested dicts of Orbax array metadata (`.shape`, `.dtype`)."""
    # A manager opened on an existing directory has no handler for the item
    # until it restores; read the saved PyTree's metadata directly.
    meta = ocp.PyTreeCheckpointer().metadata(os.path.join(self.directory, str(step), 'default'))
    meta = getattr(meta, 'item_metadata', meta)
    return getattr(meta, 'tree', meta)

  def all_steps(self) -> list[int]:
    """All kept steps, ascending."""
    self._settle()
    return sorted(self._manager.all_steps())

  def delete(self, step: int) -> None:
    """Deletes the checkpoint of `step`."""
    self._settle()
    self._manager.delete(step)

  def _settle(self) -> None:
    """With `async_save`: lets a pending save finish before the directory is read."""
    if self._async:
      self._manager.wait_until_finished()

  def wait(self) -> None:
    """Blocks until pending saves are written."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Finishes pending work and releases the manager."""
    self._manager.close()


class CheckpointMismatchError(errors.UserInputError):
  """A checkpoint's parameters do not fit the configured model (names what differs)."""


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """'a/b/kernel' -> shape for every leaf of a nested dict (arrays or Orbax metadata)."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    key = '/'.join(str(getattr(k, 'key', k)) for k in path)
    out[key] = tuple(getattr(leaf, 'shape', ()))
  return out


def describe_mismatch(saved: Any, expected: Any) -> str | None:
  """What differs between two parameter trees, in one line; None if they fit.

  Args:
    saved: the checkpoint's parameter tree (Orbax metadata or arrays).
    expected: the model's parameter tree (ShapeDtypeStructs or arrays).

  Returns:
    e.g. "shape of encoder/layers_0/mlp/wi/kernel: checkpoint (64, 128), model
    (32, 128); the model lacks 3 checkpoint params, e.g. ['decoder/layers_3/...']",
    or None when every parameter has the same shape in both. Checkpoint
    entries under top-level names the model has nothing like (not even with
    another layer number) are allowed: a policy restored out of a state that
    also holds other parameters.
  """
  have, want = _shapes(saved), _shapes(expected)
  parts = []
  shape = [k for k in want if k in have and have[k] != want[k]]
  if shape:
    parts.append(
      f'shape of {shape[0]}: checkpoint {have[shape[0]]}, model {want[shape[0]]}'
      + (f' (and {len(shape) - 1} more)' if len(shape) > 1 else '')
    )
  embedding = [k for k in shape if k.endswith('token_embedder/embedding')]
  saved_vocab, model_vocab = (have[embedding[0]][0], want[embedding[0]][0]) if embedding else (0, 0)
  if saved_vocab != model_vocab:  # [vocab, embed]: another VOCAB_SIZE, likely another vocabulary.
    parts.append(
      f'the vocabulary sizes differ (checkpoint {saved_vocab}, model {model_vocab}): set '
      f'VOCAB_SIZE={saved_vocab} and the vocabulary the checkpoint was trained with'
    )
  absent = sorted(k for k in want if k not in have)
  if absent:
    parts.append(f'the checkpoint lacks {len(absent)} model params, e.g. {absent[:2]}')

  # Entries beside the model's own (top-level names the model has nothing like,
  # such as Improve's BVMPO temperature) may ride along; more layers may not.
  def family(key: str) -> str:
    return re.sub(r'\d+$', '', key.split('/')[0])

  families = {family(k) for k in want}
  extra = sorted(k for k in have if k not in want and family(k) in families)
  if extra:
    parts.append(f'the model lacks {len(extra)} checkpoint params, e.g. {extra[:2]}')
  return '; '.join(parts) or None


def restore_params(
  checkpoint_dir: str,
  init_params_fn: Callable[[jax.Array], Any],
  mesh: Any,
  step: int | None = None,
  *,
  what: str = 'policy',
) -> tuple[Any, int]:
  """Restores only the parameters of a saved TrainState onto `mesh`.

  The one restore helper of the project (policies, reward models, value
  networks): the checkpoint's parameter tree is compared with the model's
  before anything is read, so another architecture (more layers, another
  width, another vocabulary size) fails with one line that says what differs.

  Args:
    checkpoint_dir: a `Checkpointer` directory (holds step folders).
    init_params_fn: `rng -> boxed params` of the configured model; only its
      shapes and logical axes are used (`jax.eval_shape`).
    mesh: where to place the params (sharded by their logical axes).
    step: which step; None for the latest.
    what: what the checkpoint holds, for messages ('policy', 'reward model').

  Returns:
    (params, step): the unboxed params on `mesh`, and the step restored.

  Raises:
    FileNotFoundError: no checkpoint (or no such step) under `checkpoint_dir`.
    CheckpointMismatchError: the checkpoint's params do not fit the model.
  """
  if not os.path.isdir(checkpoint_dir):  # Checked first: Checkpointer would create it.
    raise FileNotFoundError(
      f'No {what} checkpoint under {checkpoint_dir}: train one first, or give the '
      'directory that holds its step folders.'
    )
  ckpt = Checkpointer(checkpoint_dir, max_to_keep=None)  # Reading: never deletes.
  steps = ckpt.all_steps()
  if step is None:
    step = steps[-1] if steps else None
  if step is None or step not in steps:
    raise FileNotFoundError(
      f'No {what} checkpoint'
      + (f' step {step}' if step is not None else '')
      + f' under {checkpoint_dir} (it has steps {steps}).'
    )
  abstract = jax.eval_shape(init_params_fn, jax.random.key(0))
  shardings = partitioning.state_shardings({'params': abstract}, mesh)['params']
  abstract_params = nn.unbox(abstract)
  saved = ckpt.item_metadata(step)
  saved_params = saved.get('params') if isinstance(saved, dict) else None
  if saved_params is None:
    problem = 'it holds no params'
  else:
    problem = describe_mismatch(saved_params, abstract_params)
  if problem:
    raise CheckpointMismatchError(
      f'{what.capitalize()} checkpoint {checkpoint_dir} (step {step}) is of another architecture '
      f'than the configured model: {problem}. Use the model config it was trained with.'
    )
  target = train_state_lib.abstract_state(abstract_params, shardings)
  restored = ckpt.restore({'params': target}, step, partial=True)
  return restored['params'], int(step)
