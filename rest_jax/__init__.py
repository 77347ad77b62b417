"""rest_jax: Reinforced Self-Training (ReST) of sequence models in JAX."""
