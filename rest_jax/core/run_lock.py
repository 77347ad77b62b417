"""One run at a time per MODEL_DIR: the lock file `MODEL_DIR/.lock`.

Two runs writing the same run directory overwrite each other's checkpoints,
JSON files and Grow rounds. `python -m rest_jax.main` therefore holds this lock
around the run function (`hold`), and a second run on the same MODEL_DIR stops
at once with one line that names the holder.

The lock file is created atomically (`O_CREAT | O_EXCL`) and holds JSON:
`{"host", "pid", "run_mode", "started", "token"}`. It is removed when the run
ends, also on an exception; a killed process (SIGKILL, a lost machine) leaves
it behind. Such a stale lock is taken over with a warning when its holder ran
on this host and its pid is gone. A lock of another host cannot be checked
from here: the run is refused, and the message says to delete the file if that
run is gone.

No JAX or TensorFlow here: the check comes before anything slow.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import socket
import uuid
from collections.abc import Iterator

from absl import logging

from rest_jax import errors
from rest_jax.core import files
from rest_jax.core import model_dir as model_dir_lib

_HELD: set[str] = set()  # Tokens of the locks this process holds.


class RunDirInUseError(errors.UserInputError):
  """Another run holds the lock of this MODEL_DIR."""


class ModelDirNotWritableError(errors.UserInputError):
  """MODEL_DIR cannot be created or written (permissions, a file in the way, read-only disk)."""


def lock_path(model_dir: str) -> str:
  """The lock file of `model_dir`."""
  return model_dir_lib.ModelDir(model_dir).lock


def _pid_alive(pid: int) -> bool:
  """Whether process `pid` exists on this host (another user's process counts)."""
  if pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _read(path: str) -> dict | None:
  """The lock's JSON; None when it is unreadable (being written, or corrupt)."""
  try:
    with open(path) as f:
      holder = json.load(f)
  except (OSError, ValueError):
    return None
  if not isinstance(holder, dict) or not isinstance(holder.get('pid'), int):
    return None
  return holder


def _describe(holder: dict) -> str:
  return (
    f'run_mode={holder.get("run_mode")} on host {holder.get("host")}, pid {holder.get("pid")} '
    f'(started {holder.get("started")})'
  )


def _create(path: str, record: dict) -> bool:
  """Creates the lock file with `record`; False when it already exists."""
  try:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    return False
  try:
    with os.fdopen(fd, 'w') as f:
      json.dump(record, f)
      f.write('\n')
      f.flush()
      os.fsync(f.fileno())
  except BaseException:
    os.remove(path)  # No half-written lock (a full disk) that would block the next run.
    raise
  return True


def _take_over(path: str, stale: dict) -> bool:
  """Moves the stale lock `stale` out of the way; False if it changed meanwhile.

  The file is renamed (atomic) to a name of its own and read back: if it is no
  longer the stale lock (another run took it over and created a new one in
  between), it is put back and the caller refuses.
  """
  aside = f'{path}.stale.{os.getpid()}.{uuid.uuid4().hex[:8]}'
  try:
    os.rename(path, aside)
  except FileNotFoundError:
    return True  # Gone already: just try to create it again.
  if _read(aside) == stale:
    os.remove(aside)
    return True
  # Put it back, unless a new lock exists by now (link, unlike rename, never replaces).
  with contextlib.suppress(OSError):
    os.link(aside, path)
    os.remove(aside)
  return False


def acquire(model_dir: str, run_mode: str) -> dict:
  """Takes the lock of `model_dir` (created if missing) and returns its record.

  Args:
    model_dir: the run directory.
    run_mode: the run mode taking it (written into the lock, for the message
      of a run that is refused).

  Returns:
    The record written to the lock file; pass it to `release`.

  Raises:
    RunDirInUseError: another run holds the lock (still running on this host,
      or on another host, where it cannot be checked), or the lock file cannot
      be read.
    ModelDirNotWritableError: `model_dir` cannot be created or written.
  """
  path = lock_path(model_dir)
  host = socket.gethostname()
  record = {
    'host': host,
    'pid': os.getpid(),
    'run_mode': run_mode,
    'started': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
    'token': uuid.uuid4().hex,
  }
  for _ in range(3):
    try:
      os.makedirs(model_dir, exist_ok=True)
      created = _create(path, record)
    except OSError as e:
      raise ModelDirNotWritableError(
        f'MODEL_DIR {model_dir} cannot be written ({e.strerror}: {e.filename}). Give a MODEL_DIR '
        'this user can create and write (check the path, its permissions and free space).'
      ) from e
    if created:
      _HELD.add(record['token'])
      return record
    holder = _read(path)
    if holder is None:
      if not os.path.exists(path):
        continue  # Released in between.
      raise RunDirInUseError(
        f'MODEL_DIR {model_dir} is locked by {path}, which cannot be read (a run starting this '
        'very moment, or a damaged file). If no run uses this MODEL_DIR, delete that file and '
        'run again.'
      )
    if holder.get('host') != host:
      raise RunDirInUseError(
        f'MODEL_DIR {model_dir} is in use by {_describe(holder)}; that host cannot be checked '
        f'from here. Wait for that run to end or use another MODEL_DIR; if that run is gone, '
        f'delete {path} and run again.'
      )
    # Our own pid on a lock we did not take: a previous run of a restarted
    # container (which often gets the same pid and hostname) left it.
    ours_stale = holder['pid'] == os.getpid() and holder.get('token') not in _HELD
    if not ours_stale and _pid_alive(holder['pid']):
      raise RunDirInUseError(
        f'MODEL_DIR {model_dir} is in use by {_describe(holder)}. Wait for that run to end or '
        f'use another MODEL_DIR; if pid {holder["pid"]} is not a rest_jax run, delete {path}.'
      )
    if _take_over(path, holder):
      logging.warning(
        'Taking over the stale lock %s of %s: that process is gone (killed or crashed); '
        'this run continues its MODEL_DIR.',
        path,
        _describe(holder),
      )
  raise RunDirInUseError(
    f'MODEL_DIR {model_dir}: could not take the lock {path} (other runs are starting on this '
    'directory at the same time). Run one at a time.'
  )


def release(model_dir: str, record: dict) -> None:
  """Removes the lock of `model_dir` if it is still the one `record` took."""
  path = lock_path(model_dir)
  _HELD.discard(record.get('token'))
  holder = _read(path)
  if holder is None or holder.get('token') != record.get('token'):
    logging.warning("The lock %s is no longer this run's; left as it is.", path)
    return
  try:
    os.remove(path)
  except OSError as e:
    if e.errno != errno.ENOENT:
      logging.warning('Could not remove the lock %s: %s', path, e)


@contextlib.contextmanager
def hold(model_dir: str, run_mode: str) -> Iterator[dict]:
  """Holds the lock of `model_dir` for the `with` block; removed on any exit.

  The temporary files of writers that died (`files.remove_stale_tmp`) are
  removed once the lock is held. A `model_dir` that this creates and the run leaves
  empty is removed again.

  Args:
    model_dir: the run directory (created if missing).
    run_mode: the run mode, recorded in the lock file.

  Yields:
    The lock record (host, pid, run_mode, started, token).

  Raises:
    RunDirInUseError: another run holds the lock (see `acquire`).
  """
  created = not os.path.isdir(model_dir)
  record = acquire(model_dir, run_mode)
  try:
    removed = files.remove_stale_tmp(model_dir, is_live=_pid_alive)
    if removed:
      logging.warning(
        'Removed %d temporary file(s) that killed writers left in %s.', len(removed), model_dir
      )
    yield record
  finally:
    release(model_dir, record)
    if created:
      # A run that failed before writing anything leaves no empty MODEL_DIR.
      with contextlib.suppress(OSError):
        os.rmdir(model_dir)
