"""`multihost` helpers: in one process, and in two (jax.distributed over gloo)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import test_utils

from rest_jax.core import multihost

_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'multihost_worker.py')


def test_single_process_helpers():
  assert multihost.is_primary()
  multihost.barrier('a no-op')
  out = multihost.map_rows(lambda idx: np.asarray([[i, -i] for i in idx]), 3, 2, 'rows')
  np.testing.assert_array_equal(out, [[0, 0], [1, -1], [2, -2]])
  ran = []
  multihost.on_primary(lambda: ran.append(1), 'write')
  assert ran == [1]

  def fail():
    raise OSError('disk full')

  with pytest.raises(OSError, match='disk full'):
    multihost.on_primary(fail, 'write')
  multihost.raise_together(None, 'nothing failed')
  with pytest.raises(ValueError, match='boom'):
    multihost.raise_together(ValueError('boom'), 'step')
  assert multihost.bar_disable(True) is None and multihost.bar_disable(False) is True


def test_two_processes():
  port = test_utils.free_port()
  env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(_WORKER)))
  procs = [
    subprocess.Popen(
      [sys.executable, _WORKER, str(port), str(i)],
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      env=env,
    )
    for i in range(2)
  ]
  try:
    outs = [p.communicate(timeout=180) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  lines = [dict(x.split(': ', 1) for x in out.splitlines() if ': ' in x) for out, _ in outs]
  assert [x['primary'] for x in lines] == ['True', 'False']
  for x in lines:
    expected = f'{[i * 2.0 for i in range(7)]} {[i + 0.5 for i in range(7)]}'
    assert x['map_rows'] == expected
    assert x['fully_addressable'] == 'False'
    assert x['host_array'] == str(list(range(16)))
  for x in lines:
    assert x['check_same'].startswith('ValueError batches: processes [1] hold other data')
  assert lines[0]['raise_together'].startswith('PeerError step: process(es) [1] failed')
  assert lines[1]['raise_together'] == 'ValueError boom'
  assert lines[0]['on_primary'] == 'OSError disk full'
  assert lines[1]['on_primary'].startswith('PeerError manifest: process(es) [0] failed')
