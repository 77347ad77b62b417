"""Rewards: the reward sources, the reward-model network, its agreement metrics
and the corruption probes. TF-free; imports `rest_jax.core` and itself.
"""
