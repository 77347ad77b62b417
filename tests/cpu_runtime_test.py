"""CPU runtime settings: glibc malloc at `import rest_jax`, the XLA:CPU option for scoring."""

import os
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest
import test_utils

from rest_jax.core import cpu_runtime
from rest_jax.rewards import reward_model


def test_compiler_option_only_on_cpu_and_new_jaxlib(monkeypatch):
  monkeypatch.setattr(cpu_runtime, 'jaxlib_version', lambda: (0, 10))
  assert cpu_runtime.compiler_options('cpu') == {
    'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT'
  }
  assert cpu_runtime.compiler_options('gpu') is None
  assert cpu_runtime.compiler_options('tpu') is None
  # XLA rejects an option it does not know: older jaxlib gets none.
  monkeypatch.setattr(cpu_runtime, 'jaxlib_version', lambda: (0, 7))
  assert cpu_runtime.compiler_options('cpu') is None


def test_jit_score_compiles_with_the_option_and_equals_score():
  cfg = reward_model.RewardModelConfig(encoder=test_utils.tiny_config(), max_length=12)
  params = nn.unbox(reward_model.init_params(cfg, jax.random.key(0)))['params']
  tokens = np.random.default_rng(0).integers(1, 50, (3, 12)).astype(np.int32)
  tokens[0, 6:] = 0
  fn = reward_model.jit_score(cfg)
  assert fn is reward_model.jit_score(cfg)  # One compiled function per config.
  raw, reward = fn(params, tokens)
  ref_raw, ref_reward = reward_model.score(cfg, params, tokens)
  np.testing.assert_allclose(raw, ref_raw, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(reward, ref_reward, rtol=1e-5, atol=1e-6)


def _fresh_import(env: dict) -> str:
  code = (
    'import rest_jax\nfrom rest_jax.core import cpu_runtime\nprint(repr(cpu_runtime.applied))\n'
  )
  out = subprocess.run(
    [sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120
  )
  assert out.returncode == 0, out.stderr
  return out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc mallopt is Linux-only')
def test_import_sets_malloc_and_opt_out_skips_it():
  base = {k: v for k, v in os.environ.items() if k != 'REST_JAX_CPU_DEFAULTS'}
  assert _fresh_import(base) == (
    "{'malloc': {'M_TRIM_THRESHOLD': 2147483647, 'M_MMAP_MAX': 0, 'M_ARENA_MAX': 1}}"
  )
  assert _fresh_import(dict(base, REST_JAX_CPU_DEFAULTS='0')) == '{}'
