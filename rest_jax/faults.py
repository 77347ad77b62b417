"""Fault-injection points: where `tests/fault_injection.py` may kill a run.

The code calls `point(name)` at the places a real job can die and must
resume from: after an optimizer step, inside an Orbax save, half-way through a
Grow shard, just before an atomic rename (`files.atomic_path`: run state,
summary, report, manifests, sidecars), at the start of a ReST phase. With no
plan in the environment, `point` returns at once (one dict lookup).

A plan is a JSON file named by the environment variable REST_JAX_FAULT_PLAN:

  {"counter": "/path/counter.txt",   # hits so far, over every attempt of the run
   "log": "/path/points.jsonl",      # optional: one line per hit (index, name, phase)
   "kills": {"17": "KILL", "40": "TERM"}}   # hit index -> signal to send itself

Hits are numbered 0, 1, 2, ... across the attempts of one run (the counter
file persists), so one plan spreads its kills over the whole run: the harness
reruns the same command after each kill. 'KILL' is SIGKILL (no cleanup);
'TERM' is SIGTERM (the preemption notice: `preemption`). A point marked
`during=True` (an Orbax save) arms a timer that kills the process a few
milliseconds later, while the save is being written, instead of at once.
"""

from __future__ import annotations

import json
import os
import signal
import threading

ENV = 'REST_JAX_FAULT_PLAN'
DURING_DELAY_S = 0.005  # How long after entering a `during` point its kill lands.

_plan: dict | None = None
_loaded = False
_phase = ''


def _load() -> dict | None:
  global _plan, _loaded
  if not _loaded:
    path = os.environ.get(ENV)
    if path:
      with open(path) as f:
        _plan = json.load(f)
    _loaded = True
  return _plan


def active() -> bool:
  """Whether a fault plan is in the environment."""
  return _load() is not None


def set_phase(phase: str) -> None:
  """Names the phase that later hits belong to (the ReST loop calls it per phase)."""
  global _phase
  _phase = phase


def _next_index(counter: str) -> int:
  index = 0
  if os.path.exists(counter):
    with open(counter) as f:
      index = int(f.read().strip() or 0)
  with open(counter, 'w') as f:
    f.write(str(index + 1))
  return index


def point(name: str, during: bool = False) -> None:
  """A place where a fault plan may kill the process (see the module docstring).

  Args:
    name: what is happening here, e.g. 'train_step', 'write rest_state.json'.
    during: kill a few milliseconds after this call (inside the work that
      follows it) instead of at once.
  """
  plan = _load()
  if plan is None:
    return
  index = _next_index(plan['counter'])
  action = plan.get('kills', {}).get(str(index))
  if plan.get('log'):
    row = {'index': index, 'name': name, 'phase': _phase, 'pid': os.getpid()}
    if action:
      row['action'] = action
    with open(plan['log'], 'a') as f:
      f.write(json.dumps(row) + '\n')
  if action is None:
    return
  sig = signal.SIGKILL if action == 'KILL' else signal.SIGTERM
  if during and action == 'KILL':
    threading.Timer(DURING_DELAY_S, os.kill, (os.getpid(), sig)).start()
  else:
    os.kill(os.getpid(), sig)
