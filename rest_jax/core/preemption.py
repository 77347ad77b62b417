"""SIGTERM as a preemption notice: finish the unit of work, save, exit, resume later.

Schedulers (TPU pods, spot GPUs, SLURM, Kubernetes) send SIGTERM some seconds
before they kill a job. `install()` (called by `python -m rest_jax.main`)
turns it into a flag instead of an instant death; the phase that is running
looks at the flag at its safe points:

  - the training loop (`train_loop.run`) after each optimizer step: it saves
    `last` at that step and stops;
  - Grow after each shard it wrote;
  - the ReST loop between phases.

Each then raises `Preempted`, which `main` turns into one line on stderr and
exit code `EXIT_CODE` (75, EX_TEMPFAIL: "try again"). Running the same
command again resumes from what was saved. The first SIGTERM also restores
the default action, so a second one kills the process at once.

In a multi-process run every process must stop at the same safe point, or
the others would wait forever at the next collective: `requested()` agrees
across processes (any process's notice counts) when `sync=True`.
"""

from __future__ import annotations

import signal
import threading

EXIT_CODE = 75  # EX_TEMPFAIL (sysexits.h): a temporary failure; the same command resumes.

_notice = threading.Event()


class Preempted(Exception):  # noqa: N818  (a notice, not an error)
  """The run stopped at a safe point after SIGTERM; the same command resumes it."""

  def __init__(self, where: str):
    super().__init__(
      f'preempted (SIGTERM): stopped cleanly {where}; run the same command again to resume.'
    )
    self.where = where


def _handler(signum, frame) -> None:
  del frame
  _notice.set()
  # A second SIGTERM is not waited for: the default action (terminate).
  signal.signal(signum, signal.SIG_DFL)


def install() -> None:
  """Makes SIGTERM set the preemption flag (main thread only; a no-op elsewhere)."""
  if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, _handler)


def notify() -> None:
  """Sets the flag as SIGTERM would (tests, or an embedding program's own signal)."""
  _notice.set()


def reset() -> None:
  """Clears the flag and restores SIGTERM's handler (after a handled notice, or in tests)."""
  _notice.clear()
  install()


def requested(sync: bool = True) -> bool:
  """Whether a preemption notice arrived (on any process when `sync`).

  With several processes and `sync`, this is a collective: call it at the
  same points on every process.
  """
  local = _notice.is_set()
  if not sync:
    return local
  import jax  # Lazy: this module is imported by `main` before JAX is needed.

  if jax.process_count() == 1:
    return local
  import numpy as np
  from jax.experimental import multihost_utils

  flags = multihost_utils.process_allgather(np.asarray([local]))
  return bool(np.asarray(flags).any())


def check(where: str, sync: bool = True) -> None:
  """Raises `Preempted(where)` if a notice arrived (see `requested`)."""
  if requested(sync):
    raise Preempted(where)
