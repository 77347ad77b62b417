"""Fault-injection points: where `tests/fault_injection.py` may kill a run.

The code calls `point(name)` at the places a real job can die and must
resume from: after an optimizer step, inside an Orbax save, half-way through a
Grow shard, just before an atomic rename (`files.atomic_path`: run state,
summary, report, manifests, sidecars), at the start of a ReST phase. With no
plan in the environment, `point` returns at once (one dict lookup).

For one process at a time: the state file is read and rewritten without a
lock (the harness runs single-process runs). A plan is a JSON file named by
the environment variable REST_JAX_FAULT_PLAN:

  {"state": "/path/state.json",      # counts over every attempt of the run
   "log": "/path/points.jsonl",      # optional: one line per hit
   "targets": [{"phase": "grow_g1", "name": "train_step", "nth": 3, "signal": "KILL"}, ...]}

A target fires once, the first time its point `name` has been passed `nth`
times in `phase` (counted over all the attempts of the run: the state file
persists, and the harness reruns the same command after each kill), so a kill
lands in the phase it was aimed at even though a resumed attempt repeats some
work. 'KILL' is SIGKILL (no cleanup); 'TERM' is SIGTERM (the preemption notice:
`preemption`), always sent at once. A 'KILL' at a point marked `during=True`
(an Orbax save) arms a timer that kills the process a few milliseconds later,
while the save is being written, instead of at once.
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


def _load_state(path: str) -> dict:
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return {'index': 0, 'counts': {}, 'fired': []}


def _save_state(path: str, state: dict) -> None:
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    json.dump(state, f)
  os.replace(tmp, path)


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
  state = _load_state(plan['state'])
  key = f'{_phase}|{name}'
  count = state['counts'][key] = state['counts'].get(key, 0) + 1
  index, state['index'] = state['index'], state['index'] + 1
  action = None
  for n, target in enumerate(plan.get('targets', [])):
    if n in state['fired'] or (target['phase'], target['name']) != (_phase, name):
      continue
    if count >= target['nth']:
      action = target['signal']
      state['fired'].append(n)
      break
  _save_state(plan['state'], state)  # Before acting: a fired target never fires again.
  if plan.get('log'):
    row = {'index': index, 'name': name, 'phase': _phase, 'nth': count, 'pid': os.getpid()}
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
