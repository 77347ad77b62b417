"""One process of `multihost_test.py`: `python multihost_worker.py PORT PROCESS_ID`.

Prints one `name: result` line per check; the test compares both processes' lines.
"""

import os
import sys

os.environ['JAX_PLATFORMS'] = 'cpu'
os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'

import numpy as np  # noqa: E402

from rest_jax.core import multihost, partitioning


def main(port: int, process_id: int) -> None:
  multihost.initialize(f'localhost:{port}', 2, process_id)
  print(f'primary: {multihost.is_primary()}', flush=True)

  # map_rows: each process computes its interleaved rows; all get every row.
  def fn(indices):
    return np.asarray([[i * 2.0, i + 0.5] for i in indices])

  out = multihost.map_rows(fn, 7, 2, 'squares')
  print(f'map_rows: {out[:, 0].tolist()} {out[:, 1].tolist()}', flush=True)

  # host_array: a batch sharded over both processes' devices comes back whole.
  mesh = partitioning.make_mesh(partitioning.MeshConfig(data=-1))
  x = partitioning.shard_batch({'x': np.arange(16).reshape(8, 2)}, mesh)['x']
  print(f'fully_addressable: {x.is_fully_addressable}', flush=True)
  print(f'host_array: {multihost.host_array(x).reshape(-1).tolist()}', flush=True)

  # check_same: equal data passes; different data raises on both processes.
  multihost.check_same(b'the same batch', 'equal')
  try:
    multihost.check_same(b'batch %d' % process_id, 'batches')
    print('check_same: no error', flush=True)
  except ValueError as e:
    print(f'check_same: ValueError {e}', flush=True)

  # raise_together: process 1 fails; both raise instead of one waiting forever.
  try:
    multihost.raise_together(ValueError('boom') if process_id == 1 else None, 'step')
    print('raise_together: no error', flush=True)
  except multihost.PeerError as e:
    print(f'raise_together: PeerError {e}', flush=True)
  except ValueError as e:
    print(f'raise_together: ValueError {e}', flush=True)

  # on_primary: process 0's failure reaches process 1.
  def fail():
    raise OSError('disk full')

  try:
    multihost.on_primary(fail, 'manifest')
  except multihost.PeerError as e:
    print(f'on_primary: PeerError {e}', flush=True)
  except OSError as e:
    print(f'on_primary: OSError {e}', flush=True)
  multihost.barrier('done')


if __name__ == '__main__':
  main(int(sys.argv[1]), int(sys.argv[2]))
