"""The core libraries import without TensorFlow / seqio (DESIGN.md layering)."""

import os
import subprocess
import sys

_BLOCK_TF = r"""
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in ('tensorflow', 'seqio', 'tensorflow_text'):
      raise ImportError(f'blocked for this test: {name}')
sys.meta_path.insert(0, _Block())
import rest_jax.models, rest_jax.decoding, rest_jax.trainer
import rest_jax.network, rest_jax.partitioning, rest_jax.checkpoints, rest_jax.train_state
import rest_jax.optimizers, rest_jax.metrics, rest_jax.rewards, rest_jax.reward_model
import rest_jax.losses, rest_jax.filtering, rest_jax.rm_metrics, rest_jax.sampler
import rest_jax.corruptions, rest_jax.train_loop, rest_jax.files, rest_jax.faults
import rest_jax.preemption, rest_jax.model_dir, rest_jax.run_lock
assert not any(m.split('.')[0] in ('tensorflow', 'seqio') for m in sys.modules), 'TF leaked'
try:
  import tensorflow
except ImportError:
  print('OK')
"""


def test_core_imports_without_tensorflow():
  out = subprocess.run(
    [sys.executable, '-c', _BLOCK_TF],
    capture_output=True,
    text=True,
    timeout=300,
    env={'JAX_PLATFORMS': 'cpu', 'PATH': '/usr/bin:/bin'},
    cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip().endswith('OK')
