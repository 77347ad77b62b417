"""The one training loop: BC, Improve, the value network and the reward model run it.

`run` owns everything the drivers used to hand-write, the same way for each:

  resume    restore `checkpoints/<phase>/last` (step, params, optimizer) if it
            exists; the driver's `batches(start)` replays the data order to
            that step; the dropout key is `fold_in(rng, step)` (trainer), so
            a resumed run draws what an uninterrupted one would.
  history   `eval/<phase>_history.jsonl` is truncated to the resumed step
            (rows a killed attempt wrote past it are dropped) and rewritten
            atomically after every validation; `best/` steps past it go too.
  metrics   a window of train metrics averaged every `log_period` steps and
            at validations: finite check (`trainer.check_finite`), learning
            rate, steps/s, TensorBoard, the progress bar (or a plain line when
            stderr is not a terminal).
  validate  every `eval_period` steps and at the end (and at step 0 with
            `validate_start`): the driver's `validate(state, step)` gives the
            metrics; `best/` keeps the best by `best_metric` (ties keep the
            earlier step: `checkpoints.is_better`), and `patience`
            validations without a strictly better one stop the loop.
  last      saved every `checkpoint_period` steps, at the end, when stopping
            early and on a preemption notice; never a non-finite state. With
            `async_checkpointing` it is written in the background while
            training goes on; `run` returns once it is on disk.
  SIGTERM   after any step (with several processes: after a log step, where
            they agree on it) and before every validation (which may outlast
            the grace period), a preemption notice (`preemption`) saves `last`
            and raises `preemption.Preempted`; the same command resumes, and
            first runs a validation the notice cut off.

What stays in a driver is its own: the model and loss, the data stream, how to
validate, the batch inputs computed from frozen networks (`prepare`), and what
to write when the loop returns.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np
import optax
import tqdm
from absl import logging

from rest_jax.core import (
  checkpoints,
  faults,
  files,
  multihost,
  partitioning,
  preemption,
  summaries,
  trainer,
)
from rest_jax.core import model_dir as model_dir_lib
from rest_jax.core import train_state as train_state_lib

Batches = Callable[[int], Iterator[Mapping[str, Any]]]


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  """The cadence of a training loop: how long, and when to log, validate and save."""

  num_steps: int  # Total optimizer steps of the phase.
  log_period: int = 50  # Steps between averaged train metrics.
  eval_period: int = 0  # Steps between validations (0: only at the end); needs `validate`.
  checkpoint_period: int = 500  # Steps between `last` saves (also at the end and on stopping).
  keep: int = 2  # How many `last` checkpoints to keep.
  best_metric: str | None = None  # Validation metric that selects `best/` (None: no `best/`).
  best_mode: str = 'max'  # 'max' or 'min' for `best_metric`.
  patience: int = 0  # Stop after this many validations without a better `best_metric` (0: never).
  validate_start: bool = False  # Validate the starting state as step 0 (the baseline).
  # Write `last` in a background thread (`Checkpointer(async_save=True)`): the
  # step goes on once the state is copied to host memory, not once it is on disk.
  async_checkpointing: bool = False


@dataclasses.dataclass
class LoopResult:
  """What `run` ends with."""

  state: train_state_lib.TrainState  # The final state (the last step trained).
  start_step: int  # The step the loop resumed from (0 for a fresh phase).
  history: list[dict]  # Every validation row of the phase, oldest first.
  best_step: int | None  # The step `best/` holds (None without `best_metric`).
  stopped_early: bool  # Whether `patience` ended the loop before `num_steps`.
  last_validation: dict | None  # The metrics of the latest validation of this call.


def resumable(model_dir: model_dir_lib.ModelDir, phase: str) -> bool:
  """Whether `phase` has a `last` checkpoint to resume from (creates nothing)."""
  directory = model_dir.last(phase)
  return os.path.isdir(directory) and any(n.isdigit() for n in os.listdir(directory))


def _validates_at(step: int, config: LoopConfig) -> bool:
  """Whether the loop validates after `step` (every `eval_period` steps and at the end)."""
  return step == config.num_steps or bool(config.eval_period and step % config.eval_period == 0)


def should_stop(history: list[Mapping[str, Any]], config: LoopConfig) -> bool:
  """Whether `patience` validations passed without a strictly better `best_metric`.

  A tie is no gain (the tie rule of `best/`, `checkpoints.is_better`).
  """
  if not config.patience or config.best_metric is None:
    return False
  best, since = float('nan'), 0
  for row in history:
    if checkpoints.is_better(row[config.best_metric], best, config.best_mode):
      best, since = row[config.best_metric], 0
    else:
      since += 1
  return since >= config.patience


def _drop_steps_after(directory: str, step: int, phase: str) -> None:
  """Deletes checkpoint steps past `step` (a killed attempt's `best/` beyond the resume)."""
  if multihost.is_primary() and os.path.isdir(directory):
    for name in os.listdir(directory):
      if name.isdigit() and int(name) > step:
        shutil.rmtree(os.path.join(directory, name))
  multihost.barrier(f'{phase}: checkpoints past step {step} dropped')


def _numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
  """The numeric metrics as Python numbers (numpy scalars included; booleans not)."""
  return {
    k: float(v) if isinstance(v, np.floating) else int(v) if isinstance(v, np.integer) else v
    for k, v in metrics.items()
    if isinstance(v, int | float | np.number) and not isinstance(v, bool | np.bool_)
  }


def _describe(metrics: Mapping[str, Any]) -> str:
  """'val reward 0.4123 BLEU 12.30 chrF 40.10' from whichever of these are present."""
  parts = (
    [f'val loss {metrics["loss"]:.3f}'] if 'reward' not in metrics and 'loss' in metrics else []
  )
  if 'reward' in metrics:
    parts.append(f'val reward {metrics["reward"]:.4f}')
  parts += [
    f'{n} {metrics[k]:.2f}' for k, n in (('bleu', 'BLEU'), ('chrf', 'chrF')) if k in metrics
  ]
  return ' '.join(parts)


def run(
  *,
  phase: str,
  model_dir: model_dir_lib.ModelDir,
  steps: trainer.Trainer,
  state: train_state_lib.TrainState,
  shardings: Any,
  batches: Batches,
  rng: jax.Array,
  config: LoopConfig,
  validate: Callable[[train_state_lib.TrainState, int], dict] | None = None,
  prepare: Callable[[dict, int, train_state_lib.TrainState], dict] | None = None,
  baseline: dict | None = None,
  lr_schedule: optax.Schedule | None = None,
  progress: bool = True,
) -> LoopResult:
  """Trains `state` to `config.num_steps` (or early stopping), resuming if it can.

  Args:
    phase: the phase's name: `checkpoints/<phase>/`, `summaries/<phase>/`,
      `eval/<phase>_history.jsonl`, and the label of messages.
    model_dir: the run directory.
    steps: the jitted train step of the phase's loss.
    state: the starting state (step 0) on the mesh; replaced by `last` when
      the phase resumes.
    shardings: `state`'s shardings (the restore target's).
    batches: `start -> iterator` of host batches (dicts of [B, ...] arrays)
      for steps start+1, start+2, ...: a resumed run passes the step it
      resumed from, and the driver replays its data order to there. Called
      only when there is a step to train.
    rng: the base key of the train step (dropout: `fold_in(rng, step)`).
    config: the cadence.
    validate: `(state, step) -> metrics` (numbers, and `best_metric`); None:
      no validation and no `best/`.
    prepare: `(sharded batch, step, state) -> batch`, run under the mesh's
      axis rules before each step: inputs computed by frozen networks.
    baseline: the metrics of the starting policy, when the caller has them,
      standing for the step-0 validation (`validate_start`).
    lr_schedule: logged as `learning_rate` when given.
    progress: show a progress bar (also off when stderr is not a terminal).

  Returns:
    A `LoopResult`.

  Raises:
    trainer.NonFiniteLossError: the loss became NaN/Inf (names phase and step).
    preemption.Preempted: SIGTERM arrived; `last` holds the step reached.
  """
  mesh = steps.mesh
  last = checkpoints.Checkpointer(
    model_dir.last(phase), max_to_keep=config.keep, async_save=config.async_checkpointing
  )
  if last.latest_step() is not None:
    state = last.restore(train_state_lib.abstract_state(state, shardings))
    logging.info('Resumed %s from step %d', phase, int(state.step))
  start = int(state.step)
  best = None
  if validate is not None and config.best_metric is not None:
    _drop_steps_after(model_dir.best(phase), start, phase)
    best = checkpoints.Checkpointer(
      model_dir.best(phase),
      max_to_keep=1,
      best_metric=config.best_metric,
      best_mode=config.best_mode,
    )
  history_path = model_dir.history(phase)
  history = [r for r in files.read_jsonl(history_path) if r['step'] <= start]
  if history or os.path.exists(history_path):
    files.write_jsonl(history_path, history)
  stop = should_stop(history, config)
  writer = summaries.Writer(model_dir.summaries(phase))
  bar = tqdm.tqdm(
    total=config.num_steps, initial=start, desc=phase, disable=multihost.bar_disable(progress)
  )

  def say(message: str) -> None:
    bar.write(message) if not bar.disable else print(message, flush=True)

  last_validation = None

  def validation(step: int, metrics: dict | None = None) -> bool:
    """Validates at `step`: history, summaries, `best/`; returns whether to stop."""
    nonlocal last_validation
    metrics = validate(state, step) if metrics is None else metrics
    last_validation = metrics
    # `best/` first, the history row second: a row marks the validation done,
    # so a kill between the two repeats the validation instead of losing the
    # step's place in `best/` (which a resumed run would never revisit).
    if best is not None and step not in best.all_steps():
      best.save(step, state, {config.best_metric: metrics[config.best_metric]}, force=False)
    row = {'step': step, **_numbers(metrics)}
    history.append(row)
    files.write_jsonl(history_path, history)
    writer.scalars('validation', step, row)
    stopping = should_stop(history, config)
    say(
      f'[{phase}] step {step}: {_describe(metrics)}' + (' (stopping: no gain)' if stopping else '')
    )
    logging.info('%s step %d validation %s', phase, step, row)
    return stopping

  def preempt(step: int, check: bool) -> None:
    """On a preemption notice: save `last` at `step` and raise `Preempted`."""
    if check and preemption.requested():
      trainer.check_finite(trainer.to_host(m), step=step, phase=phase)  # Never save a NaN state.
      if last.latest_step() != step:
        last.save(step, state)
      last.wait()  # On disk before the process may be killed.
      raise preemption.Preempted(f'in {phase} at step {step} (checkpoints/{phase}/last)')

  try:
    if validate is not None and config.validate_start and not any(r['step'] == 0 for r in history):
      stop = validation(0, baseline)
    if (
      validate is not None
      and start
      and _validates_at(start, config)
      and not any(r['step'] == start for r in history)
    ):
      stop = validation(start)  # A preemption notice stopped the run before this validation.
    data, window, tic, step = None, [], time.time(), start
    while not stop and step < config.num_steps:
      data = batches(start) if data is None else data
      step += 1
      batch = partitioning.shard_batch(next(data), mesh)
      if prepare is not None:
        with partitioning.axis_rules(mesh):
          batch = prepare(batch, step, state)
      state, m = steps.train_step(state, batch, rng)
      faults.point('train_step')
      window.append(m)
      bar.update(1)
      is_last = step == config.num_steps
      validate_now = validate is not None and _validates_at(step, config)
      if step % config.log_period == 0 or is_last or validate_now:
        means = trainer.mean_metrics(trainer.to_host(window))
        trainer.check_finite(means, step=step, phase=phase)
        if lr_schedule is not None:
          means['learning_rate'] = trainer.lr_at(lr_schedule, step - 1)
        means['steps_per_second'] = len(window) / max(time.time() - tic, 1e-9)
        writer.scalars('train', step, means)
        bar.set_postfix(loss=f'{means["loss"]:.4f}')
        if bar.disable:
          print(
            f'[{phase}] step {step}/{config.num_steps} loss {means["loss"]:.4f} '
            f'{means["steps_per_second"]:.2f} steps/s',
            flush=True,
          )
        window, tic = [], time.time()
      # One process: after every step. Several: only where they sync anyway (the
      # log steps and validations), since the notice is a collective that
      # would stall each step.
      check = jax.process_count() == 1 or step % config.log_period == 0 or is_last
      if validate_now:
        # Obey a notice before a validation, which can outlast the grace period;
        # the resumed run validates this step first (above).
        preempt(step, check=True)
        stop = validation(step)
      if step % config.checkpoint_period == 0 or is_last or stop:
        # Never save a diverged state: it would be resumed from.
        trainer.check_finite(trainer.to_host(m), step=step, phase=phase)
        last.save(step, state)
      preempt(step, check)
  finally:  # Also on a non-finite loss or a preemption: flush what was logged.
    last.close()  # Waits for a pending background save.
    bar.close()
    writer.close()
  return LoopResult(
    state=state,
    start_step=start,
    history=history,
    best_step=best.best_step() if best is not None else None,
    stopped_early=stop and step < config.num_steps,
    last_validation=last_validation,
  )
