"""CPU runtime settings: an XLA:CPU compiler option for encoder scoring, and glibc malloc.

Measured at the `mini` shape on 2 cores (`bench/cpu_vs_hf.py`,
`bench/train_profile.py`):

* `compiler_options()`, for `jax.jit(..., compiler_options=...)`: XLA:CPU's
  YNNPACK gets single dots only (`xla_cpu_experimental_ynn_fusion_type`
  INDIVIDUAL_DOT). By default XLA also fuses the elementwise ops and
  reductions around the dots into large YNNPACK subgraphs, which run them
  slowly and feed them constants broadcast to full arrays: the reward model
  scored a 64 x 64 batch in 77-81 ms with the default, 31 ms with the option.
  Per jit, not global: the sampler's decode loop ran ~10% slower with it and
  the train step was unchanged, so only reward-model scoring uses it
  (`reward_model.jit_score`). None off CPU and on jaxlib older than 0.10.
* `keep_freed_memory()`: glibc malloc keeps freed memory (`mallopt`: no mmap
  for large blocks, no trimming, one arena). XLA allocates each step's
  temporaries afresh; with glibc's defaults the blocks above its mmap
  threshold went back to the kernel and were faulted in again every step:
  27,000 page faults and ~55 ms of system time per train step, 110-125 -> 84-90
  ms per step with the settings (all three needed). Only on glibc (Linux).
  Memory the process frees is kept for reuse rather than returned to the
  system, so its resident size does not shrink after a peak (peak memory
  with and without was not compared). `import rest_jax` applies it
  (`apply_defaults`); `REST_JAX_CPU_DEFAULTS=0` in the environment skips it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import os

_YNN_OPTION = {'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT'}
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


def compiler_options(backend: str | None = None) -> dict[str, str] | None:
  """`jax.jit` compiler options for encoder-only scoring on CPU; None elsewhere.

  Args:
    backend: the platform compiled for (default `jax.default_backend()`).
  """
  import jax  # Here, so that `import rest_jax` (which imports this module) stays light.

  backend = backend or jax.default_backend()
  if backend != 'cpu' or jaxlib_version() < _MIN_JAXLIB:
    return None
  return dict(_YNN_OPTION)


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
  """`keep_freed_memory()` unless `REST_JAX_CPU_DEFAULTS=0`; returns what was applied."""
  if os.environ.get(OPT_OUT, '1') == '0':
    return {}
  applied.update(malloc=keep_freed_memory())
  return dict(applied)
