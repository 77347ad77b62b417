"""The ReST phase loop: every unfinished phase of the plan, in order, then the summary table.

Before each phase: the fault point 'phase start' and a SIGTERM check (the
phases before it are done, so a preempted run loses nothing). After each
phase: `rest_state.json` (and, after an eval phase, `eval/summary.json` just
before it), then `report/report.html` (`report.write_report`, about 1.5 s).
"""

from __future__ import annotations

import time

from absl import logging

from rest_jax.core import faults, multihost, preemption
from rest_jax.runs import report, rest_phases, rest_state, rest_summary


def run(
  ctx: rest_phases.Context, run_state: rest_state.RunState, max_phases: int | None
) -> list[dict]:
  """Runs the phases `run_state` has not finished; prints and returns the summary rows.

  Args:
    ctx: the run (`rest_setup.start`).
    run_state: its run state; updated and written after every phase.
    max_phases: run at most this many phases, then return (None: all).

  Returns:
    The rows of `eval/summary.json`, one per evaluated policy, in plan order.
  """
  model_dir, phases = ctx.model_dir, ctx.phases
  ran = 0
  for phase in phases:
    if run_state.done(phase):
      continue
    faults.set_phase(phase)
    faults.point('phase start')
    preemption.check(f'before phase {phase} (the phases before it are done)')
    if max_phases is not None and ran >= max_phases:
      logging.info('Stopping before %s (max_phases=%d).', phase, max_phases)
      break
    print(f'[rest] phase {phase} ({phases.index(phase) + 1}/{len(phases)})', flush=True)
    run_state.start(phase)
    tic = time.time()
    updates = rest_phases.run_phase(ctx, phase, run_state.state['policies'])
    if phase.startswith('eval'):
      rest_summary.write_summary(
        model_dir, phases, run_state.state['config'], run_state.state['seconds']
      )
    run_state.finish(phase, time.time() - tic, **updates)
    ran += 1
    multihost.on_primary(lambda: report.write_report(model_dir), 'the run report')
  rows = rest_summary.read_summary(model_dir)
  if rows:
    print(rest_summary.format_summary(rows), flush=True)
  return rows
