"""Core: the JAX/numpy libraries (no TensorFlow, no seqio, no gin).

The model and its sampler, the pure train step and the one training loop,
partitioning, checkpoints, losses, filtering, and the run-directory machinery
(atomic writes, `ModelDir`, the lock, preemption, fault points). Imports only
`rest_jax.errors` and itself.
"""
