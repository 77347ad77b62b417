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

import os
import sys

import jax
import numpy as np
from absl import logging


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


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier `name` (no-op in one process).

  Args:
    name: a label, the same on every process (it shows in timeouts).
  """
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # Lazy: only multi-process runs need it.

    multihost_utils.sync_global_devices(name)


def host_array(x: jax.Array) -> np.ndarray:
  """The whole of a global array `x` [...] as numpy [...] on every host.

  A fully addressable array (any single-process array) is copied directly; a
  sharded array spread over processes is all-gathered first.
  """
  if getattr(x, 'is_fully_addressable', True) or x.is_fully_replicated:
    return np.asarray(x)
  from jax.experimental import multihost_utils

  return np.asarray(multihost_utils.process_allgather(x, tiled=True))
