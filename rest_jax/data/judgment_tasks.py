"""Judgments as seqio tasks: registration, mixtures and padded numpy batches.

`register_judgments_task` makes a seqio Task of in-memory judgments
(`judgments.Judgment`), tokenized in Python with `reward_model.encode_pairs`
(`source <eos> candidate <eos>`); `register_judgments_mixture` mixes such
tasks; `get_batches` yields padded numpy batches of a task or mixture, as the
reward model trains and evaluates on them.

This is a data-layer module: it imports TensorFlow and seqio.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import sentencepiece as spm
import seqio
import tensorflow as tf
from absl import logging

from rest_jax.data import tasks
from rest_jax.data.corpora import corpus_files
from rest_jax.data.judgments import Judgment
from rest_jax.errors import DataError
from rest_jax.rewards import reward_model

# The per-example text features of a judgments task, besides 'inputs' and the scores.
TEXT_FEATURES = ('source_pretokenized', 'candidate_pretokenized', 'reference_pretokenized', 'doc')
_SCORE_FEATURES = ('score', 'raw_score')
# Task name -> the max_length it was registered with (for get_batches' check).
_TASK_MAX_LENGTH: dict[str, int] = {}


def _check_name(name: str, what: str) -> None:
  if not tasks.TASK_NAME_RE.match(name):
    raise DataError(
      f'{what} name {name!r} is not a valid seqio name: use letters, digits, "_", "." or ":".'
    )


def _load_vocab(vocab_path: str) -> spm.SentencePieceProcessor:
  corpus_files.require_file(vocab_path, 'register_judgments_task(vocab_path)')
  sp = spm.SentencePieceProcessor(model_file=vocab_path)
  if sp.pad_id() != 0 or sp.eos_id() != 1:
    raise DataError(
      f'{vocab_path}: the vocabulary has pad id {sp.pad_id()} and EOS id {sp.eos_id()}; the '
      'reward model needs T5 ids (pad 0, EOS 1). Train it with vocabularies.train_sentencepiece.'
    )
  return sp


def _columns(
  judgments: Sequence[Judgment], sp: spm.SentencePieceProcessor, max_length: int
) -> dict[str, np.ndarray]:
  """The tensors of a split: padded token rows, their lengths, scores and texts."""
  tokens = reward_model.encode_pairs(
    sp, [j.source for j in judgments], [j.candidate for j in judgments], max_length
  )
  texts = {
    'source_pretokenized': [j.source for j in judgments],
    'candidate_pretokenized': [j.candidate for j in judgments],
    'reference_pretokenized': [j.reference for j in judgments],
    'doc': [j.doc for j in judgments],
  }
  return {
    'inputs': tokens,
    'length': (tokens != 0).sum(axis=1).astype(np.int32),
    'score': np.array([j.score for j in judgments], np.float32),
    'raw_score': np.array([j.raw_score for j in judgments], np.float32),
    **{k: np.array(v, dtype=object) for k, v in texts.items()},
  }


def _unpad(ex: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  ex = dict(ex)
  ex['inputs'] = ex['inputs'][: ex.pop('length')]
  return ex


def register_judgments_task(
  name: str,
  judgments_by_split: Mapping[str, Sequence[Judgment]],
  vocab_path: str,
  max_length: int,
) -> str:
  """Registers in-memory judgments as a seqio Task (replacing a task of that name).

  Every split is tokenized now, in Python, by `reward_model.encode_pairs`
  (`source <eos> candidate <eos>`, truncated to `max_length`), so the task has
  no tokenize preprocessor. Its examples are {'inputs': int32 [n] ids (no
  padding, EOS included), 'score', 'raw_score': float32 scalars,
  'source_pretokenized', 'candidate_pretokenized', 'reference_pretokenized',
  'doc': string scalars}; its one output feature is 'inputs' (add_eos=False).
  With shuffle, a split is fully shuffled, anew every epoch.

  Args:
    name: the seqio task name (letters, digits, '_', '.', ':').
    judgments_by_split: split name -> its judgments (each split non-empty).
    vocab_path: the SentencePiece model (T5 ids: pad 0, EOS 1), shared with the policy.
    max_length: L, tokens per `source <eos> candidate <eos>` row (>= 2).

  Returns:
    `name`.

  Raises:
    DataError: a bad name, no splits or an empty split, max_length < 2, or a
      missing or non-T5 vocabulary.
  """
  _check_name(name, 'register_judgments_task: the task')
  if not judgments_by_split or any(not js for js in judgments_by_split.values()):
    sizes = {split: len(js) for split, js in judgments_by_split.items()}
    raise DataError(f'register_judgments_task({name!r}): every split needs judgments; got {sizes}.')
  if max_length < 2:
    raise DataError(f'register_judgments_task({name!r}): max_length={max_length}, need >= 2.')
  sp = _load_vocab(vocab_path)
  data = {split: _columns(js, sp, max_length) for split, js in judgments_by_split.items()}

  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
    columns = data[split]
    n = len(columns['score'])
    ds = tf.data.Dataset.from_tensor_slices(
      {
        k: tf.constant(list(v), tf.string, shape=[n]) if v.dtype == object else v
        for k, v in columns.items()
      }
    )
    # A full shuffle, new each epoch (seqio's own shuffle buffer is local).
    ds = ds.shuffle(n, seed=seed) if shuffle_files else ds
    return ds.map(_unpad, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

  vocab = seqio.SentencePieceVocabulary(vocab_path)
  task = seqio.Task(
    name,
    seqio.FunctionDataSource(dataset_fn, splits=tuple(data)),
    output_features={'inputs': seqio.Feature(vocab, add_eos=False)},
    preprocessors=[],
  )
  if name in seqio.TaskRegistry.names():
    logging.info('Replacing the seqio task %r.', name)
    seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add_provider(name, task)
  _TASK_MAX_LENGTH[name] = max_length
  logging.info(
    'Registered judgments task %r: %s.', name, {s: len(js) for s, js in judgments_by_split.items()}
  )
  return name


def register_judgments_mixture(
  name: str, task_names: Sequence[str], rates: Sequence[float] | None = None
) -> str:
  """Registers a seqio Mixture of judgments tasks (replacing a mixture of that name).

  Examples are drawn from the tasks in proportion to `rates`. A task that runs
  out is dropped from the draw and the others continue, so one pass
  (repeat=False) yields every example of every task once.

  Args:
    name: the mixture name (letters, digits, '_', '.', ':').
    task_names: registered tasks (or mixtures) with the same vocabulary.
    rates: one rate >= 0 per task, with a positive sum; None for equal rates.

  Returns:
    `name`.

  Raises:
    DataError: a bad name, no tasks, an unregistered task, or bad rates.
  """
  _check_name(name, 'register_judgments_mixture: the mixture')
  task_names = list(task_names)
  if not task_names:
    raise DataError(f'register_judgments_mixture({name!r}): no tasks to mix.')
  known = set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names())
  unknown = [t for t in task_names if t not in known]
  if unknown:
    raise DataError(
      f'register_judgments_mixture({name!r}): {unknown} are not registered seqio tasks; '
      'register them first (register_judgments_task).'
    )
  rates = [1.0] * len(task_names) if rates is None else [float(r) for r in rates]
  if (
    len(rates) != len(task_names)
    or any(not math.isfinite(r) or r < 0 for r in rates)
    or sum(rates) <= 0
  ):
    raise DataError(
      f'register_judgments_mixture({name!r}): rates {rates} must be one finite rate >= 0 per '
      f'task ({len(task_names)}), with a positive sum.'
    )
  if name in seqio.MixtureRegistry.names():
    logging.info('Replacing the seqio mixture %r.', name)
    seqio.MixtureRegistry.remove(name)
  seqio.MixtureRegistry.add(
    name,
    list(zip(task_names, rates)),
    sample_fn=functools.partial(tf.data.Dataset.sample_from_datasets, stop_on_empty_dataset=False),
  )
  return name


def get_batches(
  task_or_mixture: str,
  split: str,
  *,
  batch_size: int,
  max_length: int,
  shuffle: bool,
  seed: int,
  repeat: bool,
) -> Iterator[dict[str, np.ndarray]]:
  """Padded numpy batches of a judgments task or mixture.

  Args:
    task_or_mixture: a task from `register_judgments_task`, or a mixture of them.
    split: the split to read.
    batch_size: B, rows per batch.
    max_length: L, the padded row length; at least the max_length every task
      was registered with (so no row loses its final EOS).
    shuffle: shuffle the examples (a full shuffle, new every epoch).
    seed: the shuffling (and mixing) seed.
    repeat: repeat forever, every batch full; else one pass, whose last batch
      may be smaller.

  Returns:
    An iterator of dicts: 'inputs' [B, L] int32 (padded with 0), 'score' and
    'raw_score' [B] float32, and 'source_pretokenized',
    'candidate_pretokenized', 'reference_pretokenized', 'doc' [B] object
    arrays of str.

  Raises:
    DataError: an unknown task, mixture or split, bad sizes, or a task
      registered with a longer max_length or without the judgment features.
  """
  if batch_size < 1 or max_length < 2:
    raise DataError(
      f'get_batches({task_or_mixture!r}): batch_size={batch_size} must be >= 1 and '
      f'max_length={max_length} >= 2.'
    )
  names = set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names())
  if task_or_mixture not in names:
    raise DataError(
      f'No seqio task or mixture named {task_or_mixture!r} is registered. Register it first '
      '(register_judgments_task / register_judgments_mixture).'
    )
  provider = seqio.get_mixture_or_task(task_or_mixture)
  is_mixture = isinstance(provider, seqio.Mixture)
  if split not in provider.splits:
    raise DataError(
      f'{task_or_mixture!r} has no split {split!r}; it has {sorted(provider.splits)}.'
    )
  for task in provider.tasks if is_mixture else [provider]:
    longest = _TASK_MAX_LENGTH.get(task.name)
    if longest is not None and longest > max_length:
      raise DataError(
        f'get_batches({task_or_mixture!r}): max_length={max_length} is shorter than the '
        f'max_length={longest} task {task.name!r} was registered with; rows would lose their '
        'final EOS. Pass at least that.'
      )
  kwargs = {'passthrough_features': list(_SCORE_FEATURES + TEXT_FEATURES)} if is_mixture else {}
  ds = provider.get_dataset(
    {'inputs': max_length},
    split=split,
    shuffle=shuffle,
    seed=seed,
    num_epochs=None if repeat else 1,
    **kwargs,
  )
  keys = ('inputs',) + _SCORE_FEATURES + TEXT_FEATURES
  missing = [k for k in keys if k not in ds.element_spec]
  if missing:
    raise DataError(
      f'{task_or_mixture!r} has no {missing} features: register it with register_judgments_task.'
    )
  ds = ds.map(lambda ex: {k: ex[k] for k in keys})
  padded_shapes = {k: [] for k in keys} | {'inputs': [max_length]}
  ds = ds.padded_batch(batch_size, padded_shapes=padded_shapes, drop_remainder=repeat)
  return _numpy_batches(ds.prefetch(tf.data.AUTOTUNE))


def _numpy_batches(ds: tf.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
  for batch in ds.as_numpy_iterator():
    for k in TEXT_FEATURES:
      batch[k] = np.array([text.decode('utf-8') for text in batch[k]], dtype=object)
    yield batch
