"""The CPU settings `import rest_jax` applies: XLA flags and glibc malloc."""

import os
import subprocess
import sys

import pytest

from rest_jax.core import cpu_runtime


def test_xla_flag_appended_and_user_flags_kept(monkeypatch):
  monkeypatch.setattr(cpu_runtime, 'jaxlib_version', lambda: (0, 10))
  env = {'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  value = cpu_runtime.apply_xla_flags(env)
  assert value == env['XLA_FLAGS']
  assert value.split() == [
    '--xla_force_host_platform_device_count=8',
    '--xla_cpu_experimental_ynn_fusion_type=individual_dot',
  ]
  # Applying twice adds nothing.
  assert cpu_runtime.apply_xla_flags(env) == value


def test_a_flag_the_user_set_wins(monkeypatch):
  monkeypatch.setattr(cpu_runtime, 'jaxlib_version', lambda: (0, 10))
  env = {'XLA_FLAGS': '--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce'}
  assert cpu_runtime.apply_xla_flags(env) == (
    '--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce'
  )
  empty = {}
  cpu_runtime.apply_xla_flags(empty)
  assert empty == {'XLA_FLAGS': '--xla_cpu_experimental_ynn_fusion_type=individual_dot'}


def test_old_jaxlib_gets_no_flag(monkeypatch):
  # XLA aborts on a flag it does not know: older jaxlib gets nothing.
  monkeypatch.setattr(cpu_runtime, 'jaxlib_version', lambda: (0, 7))
  env = {}
  assert cpu_runtime.apply_xla_flags(env) == ''
  assert env == {}


def _fresh_import(env: dict) -> str:
  code = (
    'import os, rest_jax\n'
    'from rest_jax.core import cpu_runtime\n'
    'import jax\n'
    'jax.numpy.ones(3).block_until_ready()\n'
    'print(repr(cpu_runtime.applied), "|", os.environ.get("XLA_FLAGS", ""))\n'
  )
  out = subprocess.run(
    [sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120
  )
  assert out.returncode == 0, out.stderr
  return out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc mallopt is Linux-only')
def test_import_applies_both_and_opt_out_skips_both():
  base = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'REST_JAX_CPU_DEFAULTS')}
  applied = _fresh_import(base)
  assert "'M_MMAP_MAX': 0" in applied and "'M_ARENA_MAX': 1" in applied
  if cpu_runtime.jaxlib_version() >= (0, 10):
    assert applied.endswith('--xla_cpu_experimental_ynn_fusion_type=individual_dot')
  assert _fresh_import(dict(base, REST_JAX_CPU_DEFAULTS='0')) == '{} |'
