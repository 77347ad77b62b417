"""Atomic file writes: the one home of "write a temporary file, then rename".

A reader (or a run resumed after a kill at any instant) sees either the old
file or the whole new one, never a prefix: the bytes go to `<path>.tmp-<pid>`
in the same directory, are flushed and fsynced, and `os.replace` renames them
over `path` (atomic on POSIX). If writing fails (an exception, a full disk),
the temporary file is removed and the old `path` is untouched.

Every writer of the project goes through `atomic_path` (directly for writers
that need a file name, such as a TFRecord writer or `savefig`) or one of
`write_bytes` / `write_text` / `write_json`. In a multi-process run the
`write_*` helpers write on process 0 only unless `all_processes=True`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

from rest_jax import errors
from rest_jax.core import faults

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(errors.UserInputError):
  """The disk (or quota) filled up while a file was written; the old file is kept."""


def _is_primary() -> bool:
  from rest_jax.core import multihost

  return multihost.is_primary()


def tmp_path(path: str) -> str:
  """The temporary name `path` is written under before the rename."""
  return f'{path}.tmp-{os.getpid()}'


def remove_stale_tmp(
  root: str, is_live: Callable[[int], bool], skip: tuple[str, ...] = ('checkpoints',)
) -> list[str]:
  """Removes the temporary files (`*.tmp-<pid>`) that killed writers left under `root`.

  A kill between writing and renaming (`atomic_path`) leaves such a file; the
  rerun writes a new one and never reads the old. `run_lock.hold` calls this
  once it holds the MODEL_DIR lock. A file whose pid `is_live` says is running
  is kept (a writer that takes no lock, such as --run_mode=inspect), and so is
  one that cannot be removed.

  Args:
    root: the folder to clean (walked recursively).
    is_live: whether a process id runs on this host.
    skip: top-level folders of `root` not walked (Orbax cleans its checkpoints).

  Returns:
    The removed paths, sorted.
  """
  removed = []
  for folder, dirs, names in os.walk(root):
    if folder == root:
      dirs[:] = [d for d in dirs if d not in skip]
    for name in names:
      stem, sep, pid = name.rpartition('.tmp-')
      if sep and stem and pid.isdigit() and not is_live(int(pid)):
        path = os.path.join(folder, name)
        with contextlib.suppress(OSError):
          os.remove(path)
          removed.append(path)
  return sorted(removed)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields a temporary path to write; on success renames it over `path`.

  The parent folder is created. On an exception inside the block the
  temporary file is removed, `path` is left as it was, and the exception
  propagates; a full disk or quota (ENOSPC, EDQUOT) becomes `DiskFullError`,
  one line that names `path`.

  Example:
    with files.atomic_path(shard) as tmp:
      with tf.io.TFRecordWriter(tmp) as w: ...
  """
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  tmp = tmp_path(path)
  try:
    yield tmp
    faults.point(f'write {os.path.basename(path)}')  # Written, not yet renamed.
    fd = os.open(tmp, os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)
    os.replace(tmp, path)
  except BaseException as e:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    if isinstance(e, OSError) and e.errno in _DISK_FULL:
      raise DiskFullError(
        f'{path}: no space left on the device ({e.strerror}); the file was not written and its '
        'previous version, if any, is kept. Free some space (or use a MODEL_DIR on a larger '
        'disk) and run the same command again.'
      ) from e
    raise


def write_bytes(path: str, data: bytes, *, all_processes: bool = False) -> str:
  """Writes `data` to `path` atomically; returns `path` (process 0 only by default)."""
  if not all_processes and not _is_primary():
    return path
  with atomic_path(path) as tmp, open(tmp, 'wb') as f:
    f.write(data)
  return path


def write_text(path: str, text: str, *, all_processes: bool = False) -> str:
  """Writes `text` (UTF-8) to `path` atomically; returns `path` (process 0 only by default)."""
  return write_bytes(path, text.encode('utf-8'), all_processes=all_processes)


def write_json(path: str, obj: Any, *, all_processes: bool = False) -> str:
  """Writes `obj` as indented, key-sorted JSON to `path` atomically; returns `path`.

  Numpy scalars are written as floats. Process 0 only by default.
  """
  text = json.dumps(obj, indent=2, sort_keys=True, default=float)
  return write_text(path, text, all_processes=all_processes)


def write_jsonl(path: str, rows: list[dict], *, all_processes: bool = False) -> str:
  """Writes `rows` as JSON lines (one object per line) to `path` atomically (process 0 only)."""
  text = ''.join(json.dumps(r, sort_keys=True, default=float) + '\n' for r in rows)
  return write_text(path, text, all_processes=all_processes)


def read_jsonl(path: str) -> list[dict]:
  """The rows of a JSON-lines file ([] if it does not exist)."""
  if not os.path.exists(path):
    return []
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]
