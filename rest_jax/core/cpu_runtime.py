"""CPU runtime settings rest_jax applies when it is imported: XLA:CPU flags and glibc malloc.

Both must be in place before JAX starts its CPU backend (the first
computation or `jax.devices()`), so `rest_jax/__init__.py` calls
`apply_defaults()`; import `rest_jax` before touching `jax.devices()`.
Measured at the `mini` shape on 2 cores (`bench/cpu_vs_hf.py`,
`bench/train_profile.py`):

* XLA flag `--xla_cpu_experimental_ynn_fusion_type=individual_dot`: hand only
  single dots to YNNPACK. XLA's default also fuses the elementwise ops and
  reductions around them into large YNNPACK subgraphs, which run them slowly
  and feed them constants materialised as full arrays: the reward model scored
  a 64 x 64 batch in 81 ms with the default, 31-35 ms with the flag. A flag
  already in the user's `XLA_FLAGS` wins (XLA's own choice:
  `--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce`). Skipped on
  jaxlib older than 0.10, which may not know it (XLA aborts on unknown flags).
* glibc malloc keeps freed memory (`mallopt`: no mmap for large blocks, no
  trimming, one arena). XLA allocates each step's temporaries afresh; with
  glibc's defaults the blocks above its mmap threshold went back to the kernel
  and were faulted in again every step: 27,000 page faults and ~55 ms of
  system time per train step, 125 -> 85 ms per step with the settings. Only on
  glibc (Linux); the process's peak memory is unchanged, but memory it frees
  is kept for reuse rather than returned to the system.

`REST_JAX_CPU_DEFAULTS=0` in the environment skips both.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import os

XLA_CPU_FLAGS = {'xla_cpu_experimental_ynn_fusion_type': 'individual_dot'}
_MIN_JAXLIB = (0, 10)
# mallopt(3) parameters and the values set: M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX.
MALLOC_OPTIONS = {
  'M_TRIM_THRESHOLD': (-1, 2**31 - 1),
  'M_MMAP_MAX': (-4, 0),
  'M_ARENA_MAX': (-8, 1),
}
OPT_OUT = 'REST_JAX_CPU_DEFAULTS'
# What `apply_defaults` applied in this process (benchmarks report it).
applied: dict = {}


def jaxlib_version() -> tuple[int, ...]:
  """The installed jaxlib's (major, minor), without importing it; () if absent."""
  try:
    text = importlib.metadata.version('jaxlib')
  except importlib.metadata.PackageNotFoundError:
    return ()
  return tuple(int(p) for p in text.split('.')[:2] if p.isdigit())


def apply_xla_flags(environ: dict[str, str] | None = None) -> str:
  """Appends the `XLA_CPU_FLAGS` the user has not set to `XLA_FLAGS`; returns its value.

  Args:
    environ: the environment to edit (default `os.environ`).
  """
  environ = os.environ if environ is None else environ
  flags = environ.get('XLA_FLAGS', '')
  if jaxlib_version() < _MIN_JAXLIB:
    return flags
  added = [f'--{k}={v}' for k, v in XLA_CPU_FLAGS.items() if f'--{k}=' not in flags]
  if added:
    environ['XLA_FLAGS'] = ' '.join([flags, *added]).strip()
  return environ.get('XLA_FLAGS', '')


def keep_freed_memory() -> dict[str, int]:
  """Sets `MALLOC_OPTIONS` with glibc's `mallopt`; returns those it set ({} off glibc)."""
  path = ctypes.util.find_library('c')
  if path is None:
    return {}
  libc = ctypes.CDLL(path)
  if not hasattr(libc, 'gnu_get_libc_version') or not hasattr(libc, 'mallopt'):
    return {}
  return {
    name: value for name, (param, value) in MALLOC_OPTIONS.items() if libc.mallopt(param, value)
  }


def apply_defaults() -> dict:
  """Both settings, unless `REST_JAX_CPU_DEFAULTS=0`; returns what was applied."""
  if os.environ.get(OPT_OUT, '1') == '0':
    return {}
  applied.update(XLA_FLAGS=apply_xla_flags(), malloc=keep_freed_memory())
  return dict(applied)
