"""Multi-process (multi-host) runs: start-up, barriers, who writes, host copies.

JAX's multi-controller runtime is the distributed engine, as in t5x and
MaxText: every process runs the same program on its own devices, and jitted
steps over the global mesh are collective. This module holds the few things
that differ from a single process:

* `initialize` calls `jax.distributed.initialize` (Cloud TPU and SLURM are
  detected; other clusters pass the coordinator explicitly). On CPU the
  collectives go through gloo, so two local processes can form one mesh.
* `is_primary` / `barrier`: files that other phases read (JSON, the gin config,
  the Grow manifest, the report) are written by process 0 only, and a barrier
  orders the write before any other process reads it. Orbax checkpoints are
  written by all processes together (each writes its own shards).
* `host_array` copies a (possibly not fully addressable) global array to every
  host, for decoded tokens and scores.

Every function is a no-op, or plain numpy, in a single process.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import sys
from collections.abc import Callable, Sequence

import jax
import numpy as np
from absl import logging
from jax._src import distributed as jax_distributed  # pylint: disable=protected-access
from jax.experimental import multihost_utils


def initialize(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> None:
  """Joins this process to the run's other processes (`jax.distributed`).

  Must be called before any JAX computation. With no arguments the cluster is
  detected (Cloud TPU VMs, SLURM, ...); otherwise give all three.

  Args:
    coordinator_address: 'host:port' of process 0's coordinator service.
    num_processes: how many processes take part.
    process_id: this process's index in [0, num_processes).

  Raises:
    ValueError: only some of the three arguments are given.
  """
  given = [coordinator_address is not None, num_processes is not None, process_id is not None]
  if any(given) and not all(given):
    raise ValueError(
      '--coordinator_address, --num_processes and --process_id go together: give all three, '
      'or none to detect the cluster (Cloud TPU, SLURM).'
    )
  # CPU processes need a cross-process collectives backend; GPUs and TPUs ignore it.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(
    coordinator_address=coordinator_address,
    num_processes=num_processes,
    process_id=process_id,
  )
  logging.info(
    'Process %d of %d: %d local devices, %d in all.',
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )


def quiet_unless_primary() -> None:
  """On processes other than 0: no progress bars, no stdout (errors still show)."""
  if is_primary():
    return
  os.environ['TQDM_DISABLE'] = '1'
  sys.stdout.flush()
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, sys.stdout.fileno())  # Also C++ prints (gloo) on file descriptor 1.
  os.close(devnull)
  logging.set_verbosity(logging.ERROR)


def is_primary() -> bool:
  """Whether this is process 0, the one that writes shared files and logs."""
  return jax.process_index() == 0


def bar_disable(progress: bool) -> bool | None:
  """tqdm's `disable` for a progress bar: off unless `progress` and process 0.

  Args:
    progress: the run function's `progress` argument.

  Returns:
    None (tqdm decides: shown on a terminal only) on process 0 with `progress`,
    else True.
  """
  return None if progress and is_primary() else True


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier `name` (no-op in one process).

  Args:
    name: a label, the same on every process (it shows in timeouts).
  """
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def host_array(x: jax.Array) -> np.ndarray:
  """The whole of a global array on every host.

  Args:
    x: a jax.Array [...] (any sharding), or a numpy array.

  Returns:
    numpy [...]: copied directly when this process holds all of `x` (always in
    a single process), all-gathered from every process otherwise.
  """
  if getattr(x, 'is_fully_addressable', True) or x.is_fully_replicated:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def check_same(data: bytes, what: str) -> None:
  """Raises on every process unless `data` is the same bytes on all of them.

  Args:
    data: what must agree (e.g. a host batch's bytes); only a digest is sent.
    what: a label for the error.

  Raises:
    ValueError: the processes disagree (names which differ from process 0).
  """
  if jax.process_count() == 1:
    return
  digest = np.frombuffer(hashlib.sha256(data).digest()[:8], np.int32)  # [2]
  every = np.asarray(multihost_utils.process_allgather(digest)).reshape(jax.process_count(), 2)
  differ = [int(p) for p in np.flatnonzero((every != every[0]).any(axis=1))]
  if differ:
    raise ValueError(
      f'{what}: processes {differ} hold other data than process 0. Every process must read '
      'the same global batch (same task, split, seed and config on every host).'
    )


class PeerError(RuntimeError):
  """Another process failed in a step that every process takes part in."""


def raise_together(error: BaseException | None, what: str) -> None:
  """A collective error check: every process raises if any process had an error.

  Call it on every process, after a step that only some processes may fail
  (one process writing a file, say); without it the others would wait forever
  at the next collective.

  Args:
    error: this process's exception, or None.
    what: a label for the error the other processes raise.

  Raises:
    The exception `error` on the process that had it; `PeerError` on the others.
  """
  _all_ok(error is None, what, error)


# How long `_all_ok` waits for a slow process. A process that exits or crashes
# is not covered by it: the coordination service aborts every process after its
# shutdown timeout (300 s) or heartbeat timeout (100 s).
_ALL_OK_TIMEOUT_MS = 24 * 60 * 60 * 1000
_all_ok_calls = itertools.count()


def _all_ok(ok: bool, what: str, error: BaseException | None) -> None:
  """Every process learns whether all were ok; raises `error`, or PeerError, if not.

  Every process must call it the same number of times in the same order (it is
  a collective). The flags go through the coordination service's key-value
  store, not a device collective: a collective would open gloo connections that
  a process exiting right after (a refused MODEL_DIR lock) leaves half-made, and
  its teardown then waits for gloo's connect timeout (measured: ~150 s). Each
  call leaves one small key per process in the store.
  """
  if jax.process_count() == 1:
    if error is not None:
      raise error
    return
  client = jax_distributed.global_state.client  # No public accessor; Orbax reads it so.
  try:
    if client is None:  # Processes joined some other way: a device all-gather.
      flags = np.asarray(multihost_utils.process_allgather(np.asarray([ok]))).reshape(-1)
    else:
      # The n-th call has the same key on every process (same calls, same order).
      n = next(_all_ok_calls)
      key = f'rest_jax/all_ok/{n}'
      client.key_value_set(f'{key}/{jax.process_index()}', '1' if ok else '0')
      client.wait_at_barrier(f'{key}/barrier', _ALL_OK_TIMEOUT_MS)
      by_process = {int(k.rsplit('/', 1)[-1]): v for k, v in client.key_value_dir_get(key)}
      flags = np.asarray([by_process[p] == '1' for p in range(jax.process_count())])
  except Exception as e:
    if error is not None:  # This process's own error says more than the exchange's.
      raise error from e
    raise PeerError(f'{what}: the processes could not exchange their status: {e}') from e
  if error is not None:
    raise error
  if not flags.all():
    failed = [int(p) for p in np.flatnonzero(~flags)]
    raise PeerError(f'{what}: process(es) {failed} failed; see their logs.')


def on_primary(fn: Callable[[], None], what: str) -> None:
  """Runs `fn` on process 0 only; every process returns, or raises, together.

  Replaces "process 0 writes, then a barrier": if `fn` fails on process 0,
  the others raise `PeerError` instead of waiting at the barrier forever.

  Args:
    fn: the work of process 0 (e.g. writing a manifest).
    what: a label for errors.
  """
  error = None
  if is_primary():
    try:
      fn()
    except Exception as e:  # noqa: BLE001  (re-raised below, after the others know)
      error = e
  _all_ok(error is None, what, error)


def map_rows(
  fn: Callable[[Sequence[int]], np.ndarray], n: int, width: int, what: str
) -> np.ndarray:
  """Computes `fn` on rows 0..n-1 split over the processes; returns all n on every one.

  Process p computes the rows p, p + P, p + 2P, ... (interleaved, so sorted
  inputs spread evenly); the results are all-gathered. In a single process this
  is `fn(range(n))`. A failure on any process raises on every process.

  Args:
    fn: `indices -> values [len(indices), width]` (called with at least one index).
    n: number of rows.
    width: number of values per row.
    what: a label for errors.

  Returns:
    numpy float32 [n, width]; row i is `fn([i])[0]`.
  """
  count = jax.process_count()
  if count == 1:
    return np.asarray(fn(list(range(n))), np.float32).reshape(n, width)
  rows = list(range(jax.process_index(), n, count))
  error, local = None, np.zeros((0, width), np.float32)
  try:
    if rows:
      local = np.asarray(fn(rows), np.float32).reshape(len(rows), width)
  except Exception as e:  # noqa: BLE001  (re-raised below, after the others know)
    error = e
  _all_ok(error is None, what, error)
  padded = np.zeros((-(-n // count), width), np.float32)
  padded[: len(rows)] = local
  gathered = np.asarray(multihost_utils.process_allgather(padded))  # [P, ceil(n / P), width]
  out = np.zeros((n, width), np.float32)
  for p in range(count):
    out[p::count] = gathered[p, : len(range(p, n, count))]
  return out
