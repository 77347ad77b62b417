"""rest_jax: Reinforced Self-Training (ReST) of sequence models in JAX."""

from rest_jax.core import cpu_runtime as _cpu_runtime

# glibc malloc keeps freed memory (XLA:CPU's per-step temporaries); see core/cpu_runtime.py.
_cpu_runtime.apply_defaults()
