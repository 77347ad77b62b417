"""The MODEL_DIR lock: refused while held, stale locks taken over, removed on exit."""

import json
import os
import socket
import subprocess
import sys

import pytest

from rest_jax import errors
from rest_jax.core import run_lock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_lock(model_dir, **fields):
  os.makedirs(model_dir, exist_ok=True)
  record = {
    'host': socket.gethostname(),
    'pid': os.getpid(),
    'run_mode': 'bc',
    'started': '2024-01-01T00:00:00+00:00',
    'token': 'other',
  }
  record.update(fields)
  with open(run_lock.lock_path(model_dir), 'w') as f:
    json.dump(record, f)
  return record


def _dead_pid() -> int:
  proc = subprocess.Popen([sys.executable, '-c', 'pass'])
  proc.wait()
  return proc.pid


def test_second_acquire_is_refused_with_host_and_pid(tmp_path):
  model_dir = str(tmp_path / 'run')
  with run_lock.hold(model_dir, 'bc') as record:
    lock = json.loads(open(run_lock.lock_path(model_dir)).read())
    assert lock == record and lock['pid'] == os.getpid() and lock['run_mode'] == 'bc'
    with pytest.raises(run_lock.RunDirInUseError) as e:
      with run_lock.hold(model_dir, 'eval'):
        pass
    msg = str(e.value)
    assert isinstance(e.value, errors.UserInputError) and '\n' not in msg
    assert f'host {socket.gethostname()}, pid {os.getpid()}' in msg and 'run_mode=bc' in msg
    assert 'another MODEL_DIR' in msg
    # The refused run left the holder's lock alone.
    assert json.loads(open(run_lock.lock_path(model_dir)).read()) == record
  assert not os.path.exists(run_lock.lock_path(model_dir))


def test_lock_removed_on_exception(tmp_path):
  model_dir = str(tmp_path / 'run')
  with pytest.raises(RuntimeError, match='boom'):
    with run_lock.hold(model_dir, 'bc'):
      assert os.path.exists(run_lock.lock_path(model_dir))
      raise RuntimeError('boom')
  assert not os.path.exists(run_lock.lock_path(model_dir))
  with run_lock.hold(model_dir, 'bc'):  # Free again.
    pass


def test_created_dir_left_empty_is_removed_existing_dir_kept(tmp_path):
  model_dir = str(tmp_path / 'new')
  with run_lock.hold(model_dir, 'import_t5'):
    assert os.path.isdir(model_dir)
  assert not os.path.exists(model_dir)
  with run_lock.hold(model_dir, 'bc'):
    open(os.path.join(model_dir, 'config.gin'), 'w').close()
  assert os.listdir(model_dir) == ['config.gin']
  with run_lock.hold(model_dir, 'bc'):
    os.remove(os.path.join(model_dir, 'config.gin'))
  assert os.path.isdir(model_dir)  # It existed before this run: kept.


def test_stale_lock_on_this_host_is_taken_over_with_a_warning(tmp_path, monkeypatch):
  model_dir = str(tmp_path / 'run')
  dead = _dead_pid()
  _write_lock(model_dir, pid=dead, run_mode='rest')
  warnings = []
  monkeypatch.setattr(run_lock.logging, 'warning', lambda fmt, *args: warnings.append(fmt % args))
  with run_lock.hold(model_dir, 'rest') as record:
    assert record['pid'] == os.getpid()
    assert json.loads(open(run_lock.lock_path(model_dir)).read())['token'] == record['token']
  assert len(warnings) == 1
  assert 'stale lock' in warnings[0] and f'pid {dead}' in warnings[0]
  assert 'process is gone' in warnings[0]
  assert os.listdir(model_dir) == []  # No lock, no left-over renamed copy.


def test_lock_of_another_host_is_refused(tmp_path):
  model_dir = str(tmp_path / 'run')
  record = _write_lock(model_dir, host='other-host.invalid', pid=_dead_pid())
  with pytest.raises(run_lock.RunDirInUseError) as e:
    run_lock.acquire(model_dir, 'bc')
  msg = str(e.value)
  assert f'host other-host.invalid, pid {record["pid"]}' in msg
  assert 'cannot be checked' in msg and f'delete {run_lock.lock_path(model_dir)}' in msg
  assert json.loads(open(run_lock.lock_path(model_dir)).read()) == record


def test_unreadable_lock_is_refused(tmp_path):
  model_dir = str(tmp_path / 'run')
  os.makedirs(model_dir)
  open(run_lock.lock_path(model_dir), 'w').close()
  with pytest.raises(run_lock.RunDirInUseError, match='cannot be read'):
    run_lock.acquire(model_dir, 'bc')


def test_release_leaves_a_lock_that_is_not_ours(tmp_path):
  model_dir = str(tmp_path / 'run')
  record = run_lock.acquire(model_dir, 'bc')
  other = _write_lock(model_dir)  # Someone replaced it (deleted by hand, another run).
  run_lock.release(model_dir, record)
  assert json.loads(open(run_lock.lock_path(model_dir)).read()) == other


def test_module_imports_no_jax():
  code = (
    'import sys; import rest_jax.core.run_lock; '
    "bad = [m for m in sys.modules if m.split('.')[0] in ('jax', 'tensorflow')]; "
    'assert not bad, bad'
  )
  subprocess.run([sys.executable, '-c', code], check=True, cwd=REPO)


def test_main_refuses_a_held_model_dir_in_one_line(tmp_path):
  """End to end: the lock of a live process (this test's) stops `rest_jax.main` at once."""
  model_dir = str(tmp_path / 'run')
  _write_lock(model_dir, run_mode='rest')
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'rest_jax.main',
      '--run_mode=report',
      '--gin_file=runs/report.gin',
      f"--gin.MODEL_DIR='{model_dir}'",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode != 0
  lines = proc.stderr.strip().splitlines()
  assert lines[-1].startswith(f'error: MODEL_DIR {model_dir} is in use by run_mode=rest'), (
    proc.stderr
  )
  assert f'pid {os.getpid()}' in lines[-1] and 'Traceback' not in proc.stderr
  assert os.listdir(model_dir) == ['.lock']  # Nothing written, the holder's lock kept.


def test_a_lock_with_our_pid_that_we_did_not_take_is_stale(tmp_path):
  # A restarted container often gets the same pid and hostname as the run that died.
  model_dir = str(tmp_path / 'run')
  os.makedirs(model_dir)
  stale = {'host': socket.gethostname(), 'pid': os.getpid(), 'run_mode': 'bc', 'token': 'old'}
  with open(run_lock.lock_path(model_dir), 'w') as f:
    json.dump(stale, f)
  with run_lock.hold(model_dir, 'rest') as record:
    assert record['token'] != 'old'
    with pytest.raises(run_lock.RunDirInUseError, match=f'pid {os.getpid()}'):
      run_lock.acquire(model_dir, 'eval')  # Our own live lock is still refused.


def test_multiprocess_run_on_a_held_model_dir_stops_every_process(tmp_path):
  """Process 0 is refused the lock; process 1 must stop too, not wait at a collective."""
  model_dir = str(tmp_path / 'run')
  _write_lock(model_dir, run_mode='rest')
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3')
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        '-m',
        'rest_jax.main',
        '--run_mode=report',
        '--gin_file=runs/report.gin',
        f"--gin.MODEL_DIR='{model_dir}'",
        '--multiprocess',
        f'--coordinator_address=localhost:{port}',
        '--num_processes=2',
        f'--process_id={i}',
      ],
      cwd=REPO,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  try:
    errs = [proc.communicate(timeout=180)[1] for proc in procs]
  finally:
    for proc in procs:
      proc.kill()
  assert [proc.returncode for proc in procs] == [1, 1], errs
  last = [err.strip().splitlines()[-1] for err in errs]
  assert last[0].startswith(f'error: MODEL_DIR {model_dir} is in use by run_mode=rest'), errs[0]
  assert last[1] == (
    f'error: MODEL_DIR {model_dir}: process 0 could not check it or take its lock (its error '
    'says why); stopping with it.'
  ), errs[1]
  assert not any('Traceback' in err for err in errs), errs
  assert os.listdir(model_dir) == ['.lock']


def test_holding_the_lock_removes_temporary_files_of_killed_writers(tmp_path):
  model_dir = tmp_path / 'run'
  (model_dir / 'grow' / 'g1').mkdir(parents=True)
  dead = _dead_pid()
  stale = [model_dir / f'rest_state.json.tmp-{dead}', model_dir / 'grow' / 'g1' / f'p.tmp-{dead}']
  kept = [
    model_dir / 'eval' / 'notes.tmp-x',
    model_dir / 'rest_state.json',
    model_dir / 'grow' / 'g1' / f'inspect.json.tmp-{os.getpid()}',  # A live writer's.
    model_dir / 'checkpoints' / 'bc' / f'x.tmp-{dead}',  # Orbax's folder: not walked.
  ]
  for path in stale + kept:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('x')
  with run_lock.hold(str(model_dir), 'rest'):
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)
