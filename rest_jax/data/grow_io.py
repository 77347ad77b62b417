"""Grow rounds on disk: sharded TFRecords, a manifest, and a seqio task per round.

A round directory `MODEL_DIR/grow/g<g>/` holds

  part-00000-of-00004.tfrecord       tf.train.Examples (schema below)
  part-00000-of-00004.tfrecord.json  sidecar: count and sha256 of that shard, and
                                     its length-cap counts (TRUNCATION_COUNTS)
  ...
  manifest.json                      shards (count, sha256, length-cap counts),
                                     reward statistics, the length-cap totals,
                                     sampling config, policy step

Every file is written under a temporary name and renamed into place, so a
killed Grow leaves only whole shards; their sidecars let a restart skip them.
Readers (`verify_round`, `register_round_task`) check every shard against the
manifest and fail with the shard's name on a mismatch.

Record schema (one candidate, or the human reference, for one source):

| feature | type | meaning |
|---|---|---|
| inputs, targets | int64 list | source / candidate token ids, without EOS (seqio appends it) |
| inputs_pretokenized, targets_pretokenized | bytes | source / candidate text |
| reference | bytes | the human reference of the source ('' if none) |
| reward, raw_reward | float | normalized reward in [0, 1], and the reward source's raw value |
| log_prob | float | the policy's sequence log-likelihood of the candidate |
| source_id, sample_index | int64 | source index in the split; sample number (-1: human) |
| is_human | int64 | 1 for the human reference (D is part of D_g) |
| grow_round, policy_step | int64 | the round g and the sampling policy's checkpoint step |

This is a data-layer module: it imports TensorFlow and seqio.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import seqio
import tensorflow as tf

from rest_jax import errors
from rest_jax.core import faults, files

MANIFEST = 'manifest.json'
FORMAT_VERSION = 1
INT_LIST_FEATURES = ('inputs', 'targets')
TEXT_FEATURES = ('inputs_pretokenized', 'targets_pretokenized', 'reference')
FLOAT_FEATURES = ('reward', 'raw_reward', 'log_prob')
INT_FEATURES = ('source_id', 'sample_index', 'is_human', 'grow_round', 'policy_step')
# Length-cap counts of a shard (sidecar) and of a round (manifest), see grow_chunks.py:
# samples that reached target_length without EOS, those of them left out of the round
# (SamplingConfig.unfinished='drop'), and human references stored truncated.
TRUNCATION_COUNTS = ('num_truncated_samples', 'num_dropped_samples', 'num_truncated_references')
QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
DEFAULT_THRESHOLDS = (0.0, 0.7, 0.8, 0.9, 0.95, 0.99)


class GrowDataError(errors.UserInputError):
  """A Grow round on disk is missing, incomplete or does not match its manifest."""


def shard_name(index: int, num_shards: int) -> str:
  """`part-00003-of-00010.tfrecord`."""
  return f'part-{index:05d}-of-{num_shards:05d}.tfrecord'


def _feature(values, kind: str) -> tf.train.Feature:
  if kind == 'int':
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))
  if kind == 'float':
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode('utf-8') for v in values]))


def encode_record(record: Mapping[str, Any]) -> bytes:
  """Serializes one record (a dict with every schema key) as a tf.train.Example."""
  feats = {k: _feature(record[k], 'int') for k in INT_LIST_FEATURES}
  feats.update({k: _feature([record[k]], 'bytes') for k in TEXT_FEATURES})
  feats.update({k: _feature([record[k]], 'float') for k in FLOAT_FEATURES})
  feats.update({k: _feature([record[k]], 'int') for k in INT_FEATURES})
  # deterministic=True sorts the feature map: the same record gives the same
  # bytes in any process (the map's order otherwise follows the hash seed).
  example = tf.train.Example(features=tf.train.Features(feature=feats))
  return example.SerializeToString(deterministic=True)


def feature_description() -> dict[str, Any]:
  """tf.io parsing spec of the record schema."""
  spec = {k: tf.io.VarLenFeature(tf.int64) for k in INT_LIST_FEATURES}
  spec.update({k: tf.io.FixedLenFeature([], tf.string) for k in TEXT_FEATURES})
  spec.update({k: tf.io.FixedLenFeature([], tf.float32) for k in FLOAT_FEATURES})
  spec.update({k: tf.io.FixedLenFeature([], tf.int64) for k in INT_FEATURES})
  return spec


def _parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
  ex = tf.io.parse_single_example(serialized, feature_description())
  for k in INT_LIST_FEATURES:
    ex[k] = tf.cast(tf.sparse.to_dense(ex[k]), tf.int32)
  return ex


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with tf.io.gfile.GFile(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def write_shard(
  round_dir: str,
  index: int,
  num_shards: int,
  records: Iterable[Mapping[str, Any]],
  process: int = 0,
  stats: Mapping[str, int] | None = None,
) -> dict:
  """Writes one shard (temp name, then rename) and its sidecar.

  Args:
    round_dir: the round directory (created if missing).
    index: shard index in [0, num_shards).
    num_shards: total number of shards of the round.
    records: the records (dicts with every schema key).
    process: index of the process that wrote it (recorded in the sidecar).
    stats: integer counts about the shard kept in its sidecar (Grow's
      `TRUNCATION_COUNTS`: what was dropped cannot be recounted from the records).

  Returns:
    {'file': name, 'count': records written, 'sha256': hex digest, 'process': process,
    **stats}.
  """
  tf.io.gfile.makedirs(round_dir)
  name = shard_name(index, num_shards)
  path = os.path.join(round_dir, name)
  count = 0
  with files.atomic_path(path) as tmp, tf.io.TFRecordWriter(tmp) as writer:
    for record in records:
      writer.write(encode_record(record))
      count += 1
      if count == 2:
        faults.point('grow shard write (half-written)')
  info = {
    **{k: int(v) for k, v in (stats or {}).items()},
    'file': name,
    'count': count,
    'sha256': _sha256(path),
    'process': process,
  }
  files.write_json(path + '.json', info, all_processes=True)
  return info


def finished_shards(round_dir: str, num_shards: int) -> dict[int, dict]:
  """Shards of a (possibly interrupted) round that were written completely.

  A shard counts as finished when its file and sidecar exist and the file's
  sha256 matches the sidecar; anything else is rewritten on restart.
  """
  done = {}
  for index in range(num_shards):
    path = os.path.join(round_dir, shard_name(index, num_shards))
    if not (tf.io.gfile.exists(path) and tf.io.gfile.exists(path + '.json')):
      continue
    with tf.io.gfile.GFile(path + '.json') as f:
      info = json.load(f)
    if info.get('sha256') == _sha256(path):
      done[index] = info
  return done


def reward_statistics(rewards: np.ndarray, thresholds: Sequence[float] = DEFAULT_THRESHOLDS):
  """Mean, std, quantiles, a 20-bin histogram on [0, 1] and kept counts per threshold."""
  rewards = np.asarray(rewards, np.float64)
  if rewards.size == 0:
    return {'count': 0}
  hist, edges = np.histogram(np.clip(rewards, 0.0, 1.0), bins=20, range=(0.0, 1.0))
  return {
    'count': int(rewards.size),
    'mean': float(rewards.mean()),
    'std': float(rewards.std()),
    'quantiles': {str(q): float(np.quantile(rewards, q)) for q in QUANTILES},
    'histogram': {'edges': [float(e) for e in edges], 'counts': [int(c) for c in hist]},
    'kept_above': {str(t): int((rewards > t).sum()) for t in thresholds},
  }


def truncation_totals(shards: Sequence[Mapping[str, Any]]) -> dict[str, int | None]:
  """The round's `TRUNCATION_COUNTS`: sums over the shard infos (sidecars).

  A count is None when a shard lacks it (written before the counts existed).
  """
  return {
    k: (int(sum(s[k] for s in shards)) if all(k in s for s in shards) else None)
    for k in TRUNCATION_COUNTS
  }


def describe_length_cap(manifest: Mapping[str, Any]) -> str | None:
  """A round's length-cap counts (`TRUNCATION_COUNTS`) in one line; None if none hit the cap.

  Grow logs it as a warning and `--run_mode=inspect` prints it.
  """
  counts = {k: int(manifest.get(k) or 0) for k in TRUNCATION_COUNTS}
  if not any(counts.values()):
    return None
  cap = (manifest.get('grow_config') or {}).get('target_length', '?')
  sampled = manifest.get('sampled_sequences')
  drawn = '' if sampled is None else f' of {int(sampled) + counts["num_dropped_samples"]}'
  return (
    f'length cap: {counts["num_truncated_samples"]}{drawn} samples reached '
    f'target_length={cap} without EOS ({counts["num_dropped_samples"]} of them dropped) and '
    f'{counts["num_truncated_references"]} human references were stored truncated; raise '
    '--gin.TARGET_LENGTH to keep them whole.'
  )


def write_manifest(round_dir: str, shards: Sequence[dict], **extra: Any) -> str:
  """Writes `manifest.json` (atomically) from the shard infos and round metadata.

  Args:
    round_dir: the round directory.
    shards: per-shard {'file', 'count', 'sha256'}, in shard order.
    **extra: JSON-serializable metadata (sampling config, policy step, reward
      statistics, ...), stored at the top level.

  Returns:
    The manifest's path.
  """
  manifest = {
    'format_version': FORMAT_VERSION,
    'created': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
    'num_shards': len(shards),
    'num_records': int(sum(s['count'] for s in shards)),
    'shards': list(shards),
    **extra,
  }
  path = os.path.join(round_dir, MANIFEST)
  files.write_json(path, manifest)
  return path


def read_manifest(round_dir: str) -> dict:
  """Loads `round_dir/manifest.json`.

  Raises:
    GrowDataError: no manifest (the round is missing or unfinished), or not a
      manifest (not JSON, no list of shards).
  """
  path = os.path.join(round_dir, MANIFEST)
  if not tf.io.gfile.exists(path):
    raise GrowDataError(
      f'{path}: no Grow manifest. The round is missing or did not finish; '
      'run --run_mode=grow for it (a restart continues from its finished shards).'
    )
  with tf.io.gfile.GFile(path) as f:
    text = f.read()
  fix = 'Delete it and rerun Grow for this round (its finished shards are kept).'
  try:
    manifest = json.loads(text)
  except ValueError as e:
    raise GrowDataError(f'{path}: not a Grow manifest ({e}). {fix}') from e
  if not isinstance(manifest, dict) or not isinstance(manifest.get('shards'), list):
    raise GrowDataError(f'{path}: not a Grow manifest (it has no list of shards). {fix}')
  return manifest


def _count_records(path: str) -> int:
  return int(tf.data.TFRecordDataset(path).reduce(np.int64(0), lambda n, _: n + 1))


def verify_round(round_dir: str) -> dict:
  """Checks every shard against the manifest: present, sha256, record count.

  Returns:
    The manifest.

  Raises:
    GrowDataError: names the shard and what does not match.
  """
  manifest = read_manifest(round_dir)
  for shard in manifest['shards']:
    path = os.path.join(round_dir, shard['file'])
    if not tf.io.gfile.exists(path):
      raise GrowDataError(f'{path}: shard listed in {MANIFEST} is missing.')
    digest = _sha256(path)
    if digest != shard['sha256']:
      raise GrowDataError(
        f'{path}: sha256 {digest[:12]}... does not match the manifest '
        f'({shard["sha256"][:12]}...): the shard is corrupted or was changed; rerun Grow.'
      )
    try:
      count = _count_records(path)
    except tf.errors.OpError as e:  # A bad CRC or a cut record: DataLossError.
      raise GrowDataError(
        f'{path}: not a readable TFRecord file ({e.message.splitlines()[0]}): the shard is '
        'corrupted. Delete it and rerun Grow for this round (it rewrites the missing shard).'
      ) from e
    if count != shard['count']:
      raise GrowDataError(
        f'{path}: {count} records but the manifest says {shard["count"]}; rerun Grow.'
      )
  return manifest


def shard_paths(round_dir: str, manifest: Mapping[str, Any] | None = None) -> list[str]:
  """Absolute paths of the round's shards, in order."""
  manifest = read_manifest(round_dir) if manifest is None else manifest
  return [os.path.join(round_dir, s['file']) for s in manifest['shards']]


def read_records(round_dir: str, verify: bool = True) -> dict[str, np.ndarray]:
  """All records of a round, column-wise (host memory; for inspection and tests).

  Returns:
    {feature: array [M]} for scalar features (texts as object arrays of str)
    and {feature: object array [M] of int32 arrays} for token lists.
  """
  manifest = verify_round(round_dir) if verify else read_manifest(round_dir)
  return read_records_from(shard_paths(round_dir, manifest))


def read_records_from(paths: Sequence[str], keys: Sequence[str] | None = None) -> dict:
  """Columns `keys` (default: all) of the records in `paths`, in file order."""
  keys = keys or (*INT_LIST_FEATURES, *TEXT_FEATURES, *FLOAT_FEATURES, *INT_FEATURES)
  columns: dict[str, list] = {k: [] for k in keys}
  ds = tf.data.TFRecordDataset(list(paths)).map(_parse)
  for ex in ds.as_numpy_iterator():
    for k in columns:
      v = ex[k]
      columns[k].append(v.decode('utf-8') if isinstance(v, bytes) else v)
  out = {}
  for k, values in columns.items():
    if k in INT_LIST_FEATURES or k in TEXT_FEATURES:
      arr = np.empty(len(values), dtype=object)
      arr[:] = values
      out[k] = arr
    else:
      out[k] = np.asarray(values, np.float32 if k in FLOAT_FEATURES else np.int64)
  return out


KEY_STRIDE = 1 << 20  # Record key = source_id * KEY_STRIDE + sample_index + 1 (human: + 0).


def record_keys(source_ids, sample_indices) -> np.ndarray:
  """Unique int64 key of each record of a round, [M] from [M] and [M].

  A round holds at most one record per (source_id, sample_index), the human
  reference having sample_index -1, so the key names a record whatever the
  shard order. It lets a filter computed in numpy (any `filtering` schedule)
  select the same records in the seqio task.
  """
  sample_indices = np.asarray(sample_indices, np.int64)
  if sample_indices.size and (sample_indices.min() < -1 or sample_indices.max() >= KEY_STRIDE - 1):
    raise ValueError(f'sample_index must be in [-1, {KEY_STRIDE - 1}).')
  return np.asarray(source_ids, np.int64) * KEY_STRIDE + sample_indices + 1


def filter_by_reward(dataset: tf.data.Dataset, tau: float) -> tf.data.Dataset:
  """seqio preprocessor: keeps records with `reward > tau` (the paper's F)."""
  return dataset.filter(lambda ex: ex['reward'] > tau)


def filter_by_keys(dataset: tf.data.Dataset, keys: np.ndarray) -> tf.data.Dataset:
  """seqio preprocessor: keeps the records whose `record_keys` are in `keys`."""
  table = tf.lookup.StaticHashTable(
    tf.lookup.KeyValueTensorInitializer(
      tf.constant(np.asarray(keys, np.int64)), tf.ones(len(keys), tf.int64)
    ),
    default_value=0,
  )

  def keep(ex):
    key = ex['source_id'] * KEY_STRIDE + ex['sample_index'] + 1
    return table.lookup(key) > 0

  return dataset.filter(keep)


def round_task_name(round_dir: str, tau: float | None = None, tag: str | None = None) -> str:
  """A stable seqio task name for a round (and threshold, or a named filter)."""
  digest = hashlib.sha1(os.path.abspath(round_dir).encode()).hexdigest()[:8]
  base = os.path.basename(os.path.normpath(round_dir))
  name = f'rest_grow_{digest}_{base}'
  if tau is not None:
    name += f'_tau{tau:g}'
  return name if tag is None else f'{name}_{tag}'


def register_round_task(
  round_dir: str,
  vocab_path: str,
  tau: float | None = None,
  keep_keys: np.ndarray | None = None,
  tag: str | None = None,
) -> str:
  """Registers (or re-registers) a verified round as a seqio task.

  The task has one split, 'train', reading every shard; its preprocessors keep
  `reward > tau` (when tau is given) and the records named by `keep_keys`
  (when given), then append EOS to the token ids. Every schema feature passes
  through, so `reward`, `log_prob`, `source_id`, ... reach the Improve step.

  Args:
    round_dir: a finished round (its manifest is verified first).
    vocab_path: the SentencePiece model the tokens come from.
    tau: filter threshold on the normalized reward; None keeps everything.
    keep_keys: optional [K] int64 `record_keys` of the records to keep (a
      per-source or top-k filter, which no single tau expresses).
    tag: optional suffix of the task name (e.g. 'i2'); required with
      `keep_keys`, so two filters of one round get two tasks.

  Returns:
    The task name (`round_task_name(round_dir, tau, tag)`).

  Raises:
    GrowDataError: the round is missing or does not match its manifest.
    ValueError: `keep_keys` without a `tag`.
  """
  if keep_keys is not None and tag is None:
    raise ValueError('register_round_task: keep_keys needs a tag to name the task.')
  manifest = verify_round(round_dir)
  name = round_task_name(round_dir, tau, tag)
  vocab = seqio.SentencePieceVocabulary(vocab_path)
  preprocessors = [_parse_source_features]
  if tau is not None:
    preprocessors.append(functools.partial(filter_by_reward, tau=float(tau)))
  if keep_keys is not None:
    preprocessors.append(functools.partial(filter_by_keys, keys=np.asarray(keep_keys, np.int64)))
  preprocessors.append(seqio.preprocessors.append_eos_after_trim)
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
    name,
    seqio.TFExampleDataSource(
      {'train': shard_paths(round_dir, manifest)},
      feature_description=feature_description(),
      num_input_examples={'train': manifest['num_records']},
    ),
    preprocessors=preprocessors,
    output_features={
      'inputs': seqio.Feature(vocab, add_eos=True),
      'targets': seqio.Feature(vocab, add_eos=True),
    },
  )
  return name


def _parse_source_features(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """Dense int32 token ids from the VarLen features of the data source."""

  def fix(ex):
    ex = dict(ex)
    for k in INT_LIST_FEATURES:
      v = ex[k]
      ex[k] = tf.cast(tf.sparse.to_dense(v) if isinstance(v, tf.SparseTensor) else v, tf.int32)
    return ex

  return dataset.map(fix, num_parallel_calls=tf.data.AUTOTUNE)
