"""Two processes (jax.distributed, gloo collectives) run the ReST loop as one does.

The same tiny ReST loop (BC, Grow, Improve, evaluation; a metric reward: the
reward model trains in the same training loop as BC, in one process in
tests/rest_test.py) runs
through `python -m rest_jax.main --run_mode=rest` twice, at the same time:

* once in one process with 4 CPU devices;
* once in two processes with 2 CPU devices each (`--multiprocess
  --coordinator_address=localhost:<port> --num_processes=2 --process_id=i`),
  which form the same global (data=1, fsdp=4, model=1) mesh: parameters and
  optimizer state are sharded across both processes.

Both must write the same results; the two-process run's Grow manifest lists
shards written by both processes, and its checkpoints (each process wrote its
own part) restore in this single test process.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import test_utils

from rest_jax.core import checkpoints, models, partitioning
from rest_jax.data import grow_io

L = 16
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TIMEOUT_S = 600

_GIN = """
from __gin__ import dynamic_registration
from rest_jax.core import filtering
from rest_jax.core import network
from rest_jax.data import tasks
from rest_jax.rewards import reward_fns

include 'runs/rest.gin'
include 'models/tiny.gin'

TASK = @tasks.ParallelCorpus()
tasks.ParallelCorpus:
  name = 'multiprocess_test_corpus'
  train_path = '{tsv}'
  vocab_path = '{vocab}'
  num_validation = 12
  num_test = 12
VOCAB_SIZE = 128
INPUT_LENGTH = 16
TARGET_LENGTH = 16
NUM_GROW_ROUNDS = 1
NUM_IMPROVE_STEPS = 1
BC_STEPS = 8
BATCH_SIZE = 16
LEARNING_RATE = 3e-3
WARMUP_STEPS = 2
BC_EVAL_PERIOD = 8
LOG_PERIOD = 4
REWARD = @reward_fns.SentenceChrF()
USE_MQM = False
MAX_SOURCES = 16
NUM_SAMPLES = 2
SOURCES_PER_SHARD = 4
GROW_BATCH_SIZE = 8
SCHEDULE = @filtering.GlobalPercentiles()
filtering.GlobalPercentiles.percentiles = (50.0,)
IMPROVE_STEPS = 4
IMPROVE_BATCH_SIZE = 8
IMPROVE_EVAL_PERIOD = 2
PATIENCE = 0
MIN_KEPT = 4
EVAL_EXAMPLES = 12
TEST_EXAMPLES = 12
EVAL_BATCH_SIZE = 12
MESH_DATA = 1
MESH_FSDP = -1
# The 8-step policy rarely ends a sample: keep the unfinished ones. The control
# and the judge are covered by tests/rest_test.py.
UNFINISHED = 'keep'
CONTROL = False
JUDGE_PHASE = None
"""


def _start(root, name, model_dir, gin_file, devices, extra=()):
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3')
  # The session's flags (tests/conftest.py), with this process's device count last (it wins).
  env['XLA_FLAGS'] = f'{env.get("XLA_FLAGS", "")} --xla_force_host_platform_device_count={devices}'
  cmd = [
    sys.executable,
    '-m',
    'rest_jax.main',
    '--run_mode=rest',
    f'--gin_file={gin_file}',
    f"--gin.MODEL_DIR='{model_dir}'",
    *extra,
  ]
  out = open(os.path.join(root, f'{name}.out'), 'w')  # noqa: SIM115
  err = open(os.path.join(root, f'{name}.err'), 'w')  # noqa: SIM115
  return subprocess.Popen(cmd, cwd=_REPO, env=env, stdout=out, stderr=err), name


def _wait_all(procs, root):
  deadline = time.time() + _TIMEOUT_S
  try:
    for proc, name in procs:
      rc = proc.wait(timeout=max(1.0, deadline - time.time()))
      if rc != 0:
        tail = open(os.path.join(root, f'{name}.err')).read()[-4000:]
        raise AssertionError(f'{name} exited with {rc}:\n{tail}')
  finally:
    for proc, _ in procs:
      if proc.poll() is None:
        proc.kill()


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('multiprocess'))
  tsv, vocab = test_utils.write_tiny_corpus(root)
  gin_file = os.path.join(root, 'tiny_rest.gin')
  with open(gin_file, 'w') as f:
    f.write(_GIN.format(tsv=tsv, vocab=vocab))
  one, two = os.path.join(root, 'one_process'), os.path.join(root, 'two_processes')
  procs = [_start(root, 'one', one, gin_file, devices=4)]
  procs += _start_two(root, 'process', two, gin_file)
  _wait_all(procs, root)
  return root, one, two


def _start_two(root, name, model_dir, gin_file, extra=()):
  port = test_utils.free_port()
  return [
    _start(
      root,
      f'{name}{i}',
      model_dir,
      gin_file,
      devices=2,
      extra=(
        '--multiprocess',
        f'--coordinator_address=localhost:{port}',
        '--num_processes=2',
        f'--process_id={i}',
        *extra,
      ),
    )
    for i in range(2)
  ]


def _summary(model_dir):
  with open(os.path.join(model_dir, 'eval', 'summary.json')) as f:
    return json.load(f)['rows']


def test_two_processes_give_the_one_process_results(runs):
  _, one, two = runs
  rows_one, rows_two = _summary(one), _summary(two)
  assert [r['phase'] for r in rows_two] == ['bc', 'improve']
  assert len(rows_one) == len(rows_two)
  for a, b in zip(rows_one, rows_two):
    assert a.keys() == b.keys()
    for key in a:
      if key == 'seconds':  # Wall time differs between runs.
        continue
      if isinstance(a[key], float):
        np.testing.assert_allclose(b[key], a[key], rtol=1e-4, atol=1e-5, err_msg=key)
      elif key != 'checkpoint':
        assert a[key] == b[key], key


def test_grow_round_has_both_processes_shards_and_equal_records(runs):
  _, one, two = runs
  manifest = grow_io.verify_round(os.path.join(two, 'grow', 'g1'))
  assert manifest['num_processes'] == 2
  assert [s['process'] for s in manifest['shards']] == [0, 1, 0, 1]
  assert (
    manifest['num_records'] == grow_io.read_manifest(os.path.join(one, 'grow', 'g1'))['num_records']
  )
  a = grow_io.read_records(os.path.join(one, 'grow', 'g1'))
  b = grow_io.read_records(os.path.join(two, 'grow', 'g1'))
  # The same samples (sampling is exact across meshes), the same rewards up to float noise.
  for key in ('source_id', 'sample_index', 'is_human'):
    np.testing.assert_array_equal(a[key], b[key])
  assert list(a['targets_pretokenized']) == list(b['targets_pretokenized'])
  np.testing.assert_allclose(b['reward'], a['reward'], atol=1e-5)
  np.testing.assert_allclose(b['log_prob'], a['log_prob'], atol=1e-3)


@pytest.mark.parametrize('checkpoint', ['bc/best', 'g1_i1/best'])
def test_checkpoint_of_two_processes_restores_in_one(runs, checkpoint):
  _, one, two = runs
  model = models.EncoderDecoderModel(_tiny_gin_model())
  mesh = partitioning.make_mesh(partitioning.MeshConfig(num_devices=1))
  restored = {}
  for name, model_dir in (('one', one), ('two', two)):
    params, step = checkpoints.restore_params(
      os.path.join(model_dir, 'checkpoints', checkpoint), model.init_params_fn(L, L), mesh
    )
    restored[name] = (jax.tree.map(np.asarray, params), step)
  # Both processes wrote parts of it (their own shards under ocdbt.process_<i>).
  data = os.path.join(two, 'checkpoints', checkpoint, str(restored['two'][1]), 'default')
  assert all(_folder_bytes(os.path.join(data, f'ocdbt.process_{p}')) > 0 for p in (0, 1))
  (p1, s1), (p2, s2) = restored['one'], restored['two']
  assert s1 == s2
  assert jax.tree.structure(p1) == jax.tree.structure(p2)
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def _folder_bytes(folder):
  return sum(
    os.path.getsize(os.path.join(root, name))
    for root, _, names in os.walk(folder)
    for name in names
  )


def _tiny_gin_model():
  """The policy of gin/models/tiny.gin with the test's vocabulary."""
  return test_utils.tiny_config(
    vocab_size=128,
    emb_dim=32,
    num_heads=4,
    head_dim=8,
    mlp_dim=64,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    logits_via_embedding=True,
  )


def test_two_process_grow_resumes_the_missing_shard(runs):
  """A Grow round interrupted after 3 of its 4 shards: the restart writes only the 4th."""
  root, _, two = runs
  resumed = os.path.join(root, 'resumed')
  shutil.copytree(two, resumed)
  round_dir = os.path.join(resumed, 'grow', 'g1')
  before = grow_io.read_manifest(round_dir)
  lost = before['shards'][1]  # Written by process 1.
  for path in (lost['file'], lost['file'] + '.json', 'manifest.json'):
    os.remove(os.path.join(round_dir, path))
  state_path = os.path.join(resumed, 'rest_state.json')
  with open(state_path) as f:
    state = json.load(f)
  state['finished'] = state['finished'][: state['plan'].index('grow_g1')]
  with open(state_path, 'w') as f:
    json.dump(state, f)
  gin_file = os.path.join(root, 'tiny_rest.gin')
  _wait_all(_start_two(root, 'resume', resumed, gin_file, extra=('--gin.MAX_PHASES=1',)), root)
  after = grow_io.verify_round(round_dir)
  assert after['timing']['resumed_shards'] == 3
  assert after['timing']['records_this_run'] == lost['count']
  # The rewritten shard is byte-identical: same samples, same rewards, same writer.
  assert after['shards'] == before['shards']
  with open(state_path) as f:
    assert json.load(f)['finished'][-1] == 'grow_g1'


def test_only_process_zero_logs_and_writes_the_report(runs):
  root, _, two = runs
  with open(os.path.join(root, 'process0.out')) as f:
    out0 = f.read()
  with open(os.path.join(root, 'process1.out')) as f:
    out1 = f.read()
  assert '[rest] phase grow_g1' in out0
  assert out1 == ''
  assert os.path.exists(os.path.join(two, 'report', 'report.html'))
  state = json.load(open(os.path.join(two, 'rest_state.json')))
  assert state['finished'] == state['plan']


def test_coordinator_flags_need_multiprocess():
  proc = subprocess.run(
    [sys.executable, '-m', 'rest_jax.main', '--run_mode=rest', '--num_processes=2'],
    cwd=_REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode != 0
  assert 'need --multiprocess' in proc.stderr
