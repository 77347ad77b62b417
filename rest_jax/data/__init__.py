"""Data: the only layer that imports TensorFlow and seqio.

seqio tasks and vocabularies, Grow rounds as TFRecord shards with a manifest,
the Improve dataset, the reward-model judgments, and the shipped corpora.
Imports `rest_jax.core`, `rest_jax.rewards` and itself.
"""
