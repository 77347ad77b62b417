"""Parallel text files: reading them, and carving validation and test from train.

A corpus file is a TSV (`source<TAB>target[<TAB>...]`) or two text files
aligned line by line, plain or gzip, UTF-8. `read_pairs` reads one into
(source, target) pairs and names the file, the line and the setting (`field`)
in its errors; `read_lines` reads any such text file (the judgments files too).

Splits. When a corpus has no validation (test) file, those examples are carved
from the train file by source sentence (`split_by_source`): the distinct source
sentences are ordered by sha256(f'{split_seed}:{sentence}'), the first
`num_validation` go to validation, the next `num_test` to test, the rest to
train. Validation and test keep one pair per source sentence (the first in file
order); the other translations of those sentences are dropped, so no source
sentence is in two splits. Every carved split lists its pairs in that hashed
order, so the first N pairs of a split are a fixed pseudo-random sample.

Files are read with `tf.io.gfile` (local paths and GCS alike): a data-layer
module, the lowest one; importing it hides the GPUs from TensorFlow.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib

import tensorflow as tf

from rest_jax import errors

# TF only feeds data; the accelerators belong to JAX.
try:
  tf.config.set_visible_devices([], 'GPU')
except RuntimeError:  # TF already initialized its devices: leave them.
  pass


def require_file(path: str, field: str) -> None:
  """Raises errors.DataError naming `field` unless `path` is an existing file."""
  if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
    raise errors.DataError(
      f'{field}: file {path!r} does not exist (or is a directory). Fix the path in {field}.'
    )


def read_lines(path: str, field: str) -> list[str]:
  """Lines of a plain or gzip UTF-8 file, without line ends; `field` names it in errors.

  Args:
    path: the file (a leading byte-order mark is dropped).
    field: the setting or file kind that named `path`, for error messages.

  Returns:
    The lines without their '\\n' or '\\r\\n'; no empty last line.

  Raises:
    errors.DataError: the file is missing, not valid gzip, or not UTF-8.
  """
  require_file(path, field)
  with tf.io.gfile.GFile(path, 'rb') as f:
    data = f.read()
  try:
    if data[:2] == b'\x1f\x8b':
      data = gzip.decompress(data)
  except (OSError, EOFError, zlib.error) as e:
    raise errors.DataError(
      f'{path} ({field}): not a readable gzip file ({e}). '
      'Re-create it, or give the uncompressed file.'
    ) from e
  lines = data.split(b'\n')
  if lines and not lines[-1]:
    lines.pop()
  text = []
  for lineno, line in enumerate(lines, 1):
    try:
      text.append(line.decode('utf-8').rstrip('\r'))
    except UnicodeDecodeError as e:
      raise errors.DataError(
        f'{path}, line {lineno} ({field}): not valid UTF-8 ({e.reason}). Convert the file to UTF-8.'
      ) from e
  if text:
    text[0] = text[0].removeprefix('\ufeff')
  return text


def read_pairs(
  path: str, target_path: str | None, field: str, source_column: int, target_column: int
) -> list[tuple[str, str]]:
  """(source, target) pairs from a TSV, or from two aligned text files.

  Args:
    path: the TSV, or the file of source sentences when `target_path` is set.
    target_path: the file of target sentences aligned with `path`, or None.
    field: the setting that named `path` (e.g. 'ParallelCorpus.train_path'),
      for error messages.
    source_column: the TSV column of the source sentence (0-based).
    target_column: the TSV column of the target sentence (0-based).

  Returns:
    The non-empty (source, target) pairs, stripped, in file order.

  Raises:
    errors.DataError: a missing, unreadable or empty file, a short or
      half-empty line, or two files of different lengths.
  """
  pairs = []
  if target_path is None:
    need = max(source_column, target_column) + 1
    for lineno, line in enumerate(read_lines(path, field), 1):
      if not line.strip():
        continue
      cols = line.split('\t')
      if len(cols) < need:
        raise errors.DataError(
          f'{path}, line {lineno} ({field}): expected at least {need} tab-separated columns '
          f'(source in column {source_column}, target in column {target_column}), found '
          f'{len(cols)}: {line[:80]!r}. Fix or delete the line, or set the columns.'
        )
      source, target = cols[source_column].strip(), cols[target_column].strip()
      if not source or not target:
        side = 'source' if not source else 'target'
        raise errors.DataError(
          f'{path}, line {lineno} ({field}): the {side} sentence is empty. Fix or delete the line.'
        )
      pairs.append((source, target))
  else:
    target_field = field.replace('_path', '_target_path')
    sources, targets = read_lines(path, field), read_lines(target_path, target_field)
    while sources and not sources[-1].strip():
      sources.pop()
    while targets and not targets[-1].strip():
      targets.pop()
    if len(sources) != len(targets):
      raise errors.DataError(
        f'{path} ({field}) has {len(sources)} lines but {target_path} ({target_field}) has '
        f'{len(targets)}: the two files must be aligned line by line.'
      )
    for lineno, (source, target) in enumerate(zip(sources, targets), 1):
      source, target = source.strip(), target.strip()
      if bool(source) != bool(target):
        empty = path if not source else target_path
        raise errors.DataError(
          f'{empty}, line {lineno}: empty line whose aligned line in the other file '
          'is not empty. Fix the alignment or delete the pair.'
        )
      if source:
        pairs.append((source, target))
  if not pairs:
    raise errors.DataError(f'{path} ({field}) holds no sentence pairs. Give a non-empty corpus.')
  return pairs


def is_jsonl(path: str) -> bool:
  """Whether `path` names a JSON Lines file (`.jsonl`, `.jsonl.gz`)."""
  return path.endswith(('.jsonl', '.jsonl.gz'))


def read_jsonl_pairs(
  path: str, field: str, source_key: str, target_keys: tuple[str, ...]
) -> list[tuple[str, str]]:
  """(source, target) pairs from a JSON Lines file of objects (e.g. prompt/solution/answer).

  Args:
    path: the file, plain or gzip, one JSON object a line.
    field: the setting that named `path`, for error messages.
    source_key: the key of the source text (e.g. 'prompt').
    target_keys: keys of the target text by preference: the first one present
      and non-empty in a line is its target (e.g. ('solution', 'answer'): the
      worked solution where there is one, else the bare answer).

  Returns:
    The (source, target) pairs, stripped, in file order.

  Raises:
    errors.DataError: a line that is not a JSON object, or lacks the source or
      every target key.
  """
  pairs = []
  for lineno, line in enumerate(read_lines(path, field), 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      raise errors.DataError(f'{path}, line {lineno} ({field}): not valid JSON ({e.msg}).') from e
    if not isinstance(row, dict):
      raise errors.DataError(f'{path}, line {lineno} ({field}): expected a JSON object.')
    source = str(row.get(source_key, '')).strip()
    target = next((str(row[k]).strip() for k in target_keys if str(row.get(k, '')).strip()), '')
    if not source or not target:
      missing = source_key if not source else ' or '.join(target_keys)
      raise errors.DataError(
        f'{path}, line {lineno} ({field}): no non-empty {missing!r}; the line has keys '
        f'{sorted(row)}. Fix the line, or set the keys (ParallelCorpus.jsonl_keys).'
      )
    pairs.append((source, target))
  if not pairs:
    raise errors.DataError(f'{path} ({field}) has no examples.')
  return pairs


def split_by_source(
  pairs: list[tuple[str, str]], num_validation: int, num_test: int, seed: int, path: str
) -> dict[str, list[tuple[str, str]]]:
  """Carves validation and test from `pairs` by source sentence (module docstring).

  Args:
    pairs: (source, target) pairs in file order.
    num_validation: distinct source sentences for validation.
    num_test: distinct source sentences for test.
    seed: the seed of the hashed order.
    path: the file the pairs came from, for the error message.

  Returns:
    {'train'|'validation'|'test': [(source, target), ...]}.

  Raises:
    errors.DataError: too few distinct source sentences to leave any for train.
  """
  targets_by_source: dict[str, list[str]] = {}
  for source, target in pairs:
    targets_by_source.setdefault(source, []).append(target)
  order = sorted(targets_by_source, key=lambda s: hashlib.sha256(f'{seed}:{s}'.encode()).digest())
  held = num_validation + num_test
  if len(order) <= held:
    raise errors.DataError(
      f'{path}: {len(order)} distinct source sentences, but num_validation + num_test = '
      f'{held} would leave none for train. Lower them, or give validation_path/test_path.'
    )
  return {
    'train': [(s, t) for s in order[held:] for t in targets_by_source[s]],
    'validation': [(s, targets_by_source[s][0]) for s in order[:num_validation]],
    'test': [(s, targets_by_source[s][0]) for s in order[num_validation:held]],
  }
