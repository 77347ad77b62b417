"""rest_jax: Reinforced Self-Training (ReST) of sequence models in JAX."""

from rest_jax.core import cpu_runtime as _cpu_runtime

# XLA:CPU flags and glibc malloc settings, before JAX starts its backend.
_cpu_runtime.apply_defaults()
