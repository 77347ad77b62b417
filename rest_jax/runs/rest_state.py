"""`MODEL_DIR/rest_state.json`: the ReST loop's finished phases (a killed run resumes there).

The file (written atomically after every phase) lists the plan, the finished
phases, the phase in progress, the policy each Grow and Improve started from
and the seconds each phase took. A restarted run skips finished phases and
re-enters the phase it was in; every phase resumes from its own checkpoints
(BC and Improve from `last`, Grow from its finished shards). Every phase is a
deterministic function of its config, seed and the phases before it (data
order and dropout keys come from fixed seeds and the step), so a resumed run
ends with the same parameters and the same `eval/summary.json` as an
uninterrupted one. Only NUM_GROW_ROUNDS may change between restarts (more
rounds continue a finished run).
"""

from __future__ import annotations

import json
import os
from typing import Any

from rest_jax import errors
from rest_jax.core import files, multihost
from rest_jax.core import model_dir as model_dir_lib

STATE_FILE = 'rest_state.json'


def read_state(model_dir: str) -> dict | None:
  """`MODEL_DIR/rest_state.json`, or None before the first phase finished."""
  path = model_dir_lib.ModelDir(model_dir).rest_state
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


class RunState:
  """The state of one run: which phases are done, written after each.

  Attributes:
    model_dir: the run directory.
    path: `MODEL_DIR/rest_state.json`.
    state: {'plan', 'config', 'finished', 'current', 'policies', 'seconds'},
      what the file holds.
  """

  def __init__(self, model_dir: str, phases: list[str], config: dict):
    """Reads the state a previous run left, if any, and checks that this run continues it.

    Args:
      model_dir: the run directory.
      phases: the plan (`rest_phases.plan`).
      config: what identifies the run's configuration (compared on restart,
        except 'num_grow_rounds').

    Raises:
      errors.UserInputError: the file was written by a run this one does not
        continue (another config, or finished phases off this plan).
    """
    self.model_dir = model_dir
    self.path = model_dir_lib.ModelDir(model_dir).rest_state
    state = read_state(model_dir)
    if state is not None and state['finished']:
      same = {k: v for k, v in state['config'].items() if k != 'num_grow_rounds'} == {
        k: v for k, v in config.items() if k != 'num_grow_rounds'
      }
      if not same or state['finished'] != phases[: len(state['finished'])]:
        raise errors.UserInputError(
          f'{self.path} was written by a run with config {state["config"]} and phases '
          f'{state["finished"]} done, which this config ({config}) does not continue (only '
          'NUM_GROW_ROUNDS may change between restarts). Use a new MODEL_DIR.'
        )
    self.state = state or {'finished': [], 'current': None, 'policies': {}, 'seconds': {}}
    self.state.update(plan=phases, config=config)
    multihost.barrier('rest: state read')  # Before process 0 writes it again.

  def done(self, phase: str) -> bool:
    """Whether `phase` has finished (in this run or an earlier one)."""
    return phase in self.state['finished']

  def start(self, phase: str) -> None:
    """Marks `phase` as the one in progress and writes the file."""
    self.state['current'] = phase
    self._write()

  def finish(self, phase: str, seconds: float, **updates: Any) -> None:
    """Marks `phase` finished after `seconds`, merges `updates` (key -> dict) and writes."""
    self.state['finished'].append(phase)
    self.state['current'] = None
    self.state['seconds'][phase] = round(seconds, 2)
    for key, value in updates.items():
      self.state[key].update(value)
    self._write()

  def _write(self) -> None:
    # Process 0 writes; every process returns once it has (or raises if it
    # failed), so no process reads a phase's files before the phase finished.
    multihost.on_primary(lambda: files.write_json(self.path, self.state), self.path)
