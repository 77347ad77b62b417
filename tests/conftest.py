"""Test-suite setup: CPU only, 8 fake devices, quiet TF, a shared jit cache, repo on sys.path."""

import atexit
import os
import shutil
import sys
import tempfile

# Must happen before jax is imported anywhere.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# The suite compiles far more than it runs (tiny models, a few steps each):
# LLVM at optimization level 0 cuts XLA's CPU compile time by about a third
# (tests/improve_test.py's filtered-round tests: 27 s -> 17 s for bvmpo). It
# changes how fast the programs run and their float rounding (hence the
# tolerance of tests/online_rl_test.py's sharded step), not what they compute.
# Subprocesses the tests start inherit it; a level set by the caller wins.
_OPT = ' --xla_backend_optimization_level=0'
if 'xla_backend_optimization_level' in os.environ.get('XLA_FLAGS', ''):
  _OPT = ''
os.environ['XLA_FLAGS'] = (
  os.environ.get('XLA_FLAGS', '') + _OPT + ' --xla_force_host_platform_device_count=8'
).strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# One persistent compilation cache for the session: many tests (and every phase
# of the ReST-loop tests) compile the same programs; this only skips XLA's
# compile of an identical program, never what the program computes.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix='rest_jax_jit_cache_')
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _CACHE
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.insert(0, os.path.dirname(_HERE))
