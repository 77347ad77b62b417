"""Parallel corpora as seqio tasks: reading, splitting, vocabularies and batches.

A `ParallelCorpus` names a TSV file (`source<TAB>target`) or two aligned text
files, plain or gzip. `register()` turns it into a seqio Task with the splits
'train', 'validation' and 'test'; `get_dataset()` yields numpy batches in the
t5x encoder-decoder layout. `tatoeba_en_de()` is the corpus shipped in
`rest_jax/data/corpora/` (CC-BY 2.0 FR, see its LICENSE.md) with its vocabulary.

Reading the files and carving validation and test from train (by source
sentence, in a hashed order: no source sentence is in two splits) is
`corpora/corpus_files.py`; the vocabulary, trained on first use and cached, is
`vocabularies.py`.

This module (and the data-layer modules beside it) are the only ones that import
TensorFlow or seqio.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Iterator, Sequence

import numpy as np
import seqio
import tensorflow as tf
from absl import logging

from rest_jax import errors
from rest_jax.data import corpora, vocabularies
from rest_jax.data.corpora import corpus_files

SPLITS = ('train', 'validation', 'test')
# Pieces of the shipped Tatoeba vocabulary: small enough that a CPU model learns
# it in minutes (the output softmax is the largest layer of a small model).
TATOEBA_VOCAB_SIZE = 4000
_TEXT_FEATURES = ('inputs_pretokenized', 'targets_pretokenized')
TASK_NAME_RE = re.compile(r'^[\w.:]+$')  # What seqio accepts as a task name.
_TATOEBA_DIR = os.path.join(os.path.dirname(corpora.__file__), 'tatoeba_en_de')
# name -> (corpus, task) for the tasks that `ParallelCorpus.register` added.
_REGISTERED: dict[str, tuple[ParallelCorpus, seqio.Task]] = {}


@dataclasses.dataclass(frozen=True)
class ParallelCorpus:
  """A parallel corpus and how to split, tokenize and register it."""

  # seqio task name to register (letters, digits, '_', '.', ':').
  name: str
  # TSV `source<TAB>target[<TAB>...]`, plain or gzip; JSON Lines (`.jsonl`,
  # `.jsonl.gz`: see `jsonl_keys`); or, when `train_target_path` is set, a text
  # file of source sentences, one a line.
  train_path: str
  # Text file of target sentences aligned line by line with `train_path`.
  train_target_path: str | None = None
  # Own validation file (same format as the train file); None: carve from train.
  validation_path: str | None = None
  # Target side of `validation_path` when it holds source sentences only.
  validation_target_path: str | None = None
  # Own test file (same format as the train file); None: carve from train.
  test_path: str | None = None
  # Target side of `test_path` when it holds source sentences only.
  test_target_path: str | None = None
  # 0-based TSV column of the source sentence.
  source_column: int = 0
  # 0-based TSV column of the target sentence.
  target_column: int = 1
  # Examples (distinct source sentences) carved from train for validation.
  num_validation: int = 2000
  # Examples (distinct source sentences) carved from train for test.
  num_test: int = 2000
  # SentencePiece model; None: train one on the train split on first use.
  vocab_path: str | None = None
  # Pieces in a vocabulary trained on first use (at most; fewer on tiny corpora).
  vocab_size: int = 8000
  # Where trained vocabularies are cached; None: $REST_JAX_CACHE or ~/.cache/rest_jax.
  vocab_cache_dir: str | None = None
  # Language of the source side (metadata for reports and metrics).
  source_language: str = 'en'
  # Language of the target side.
  target_language: str = 'de'
  # Seed of the hashed order that carves validation and test from train.
  split_seed: int = 0
  # JSON Lines files: the source's key, then the target's keys by preference
  # (the first present and non-empty one: a worked solution, else the answer).
  jsonl_keys: tuple[str, ...] = ('prompt', 'solution', 'answer')

  def __post_init__(self):
    object.__setattr__(self, 'jsonl_keys', tuple(self.jsonl_keys))  # Hashable from gin lists.
    if len(self.jsonl_keys) < 2:
      raise errors.DataError(
        f'ParallelCorpus {self.name!r}: jsonl_keys={self.jsonl_keys!r} needs a source key and '
        'at least one target key.'
      )
    if not TASK_NAME_RE.match(self.name):
      raise errors.DataError(
        f'ParallelCorpus.name {self.name!r} is not a valid seqio task name: '
        'use letters, digits, "_", "." or ":".'
      )
    if min(self.source_column, self.target_column) < 0 or (
      self.source_column == self.target_column
    ):
      raise errors.DataError(
        f'ParallelCorpus {self.name!r}: source_column={self.source_column} and '
        f'target_column={self.target_column} must be two different columns >= 0.'
      )
    if min(self.num_validation, self.num_test) < 0 or self.vocab_size <= 0:
      raise errors.DataError(
        f'ParallelCorpus {self.name!r}: num_validation, num_test must be >= 0 and vocab_size > 0.'
      )

  def splits(self) -> dict[str, list[tuple[str, str]]]:
    """Reads and splits the corpus (cached per configuration).

    Returns:
      {'train'|'validation'|'test': [(source, target), ...]}, fresh lists.

    Raises:
      errors.DataError: a file is missing, malformed or empty, or the train file has too
        few distinct source sentences for `num_validation + num_test`.
    """
    return {split: list(pairs) for split, pairs in _load_splits(self).items()}

  def register(self) -> str:
    """Registers this corpus as a seqio Task (idempotent) and returns its name.

    A task of the same name registered with an equal config is reused; any other
    task of that name is replaced. Trains the vocabulary if it is not cached.

    Returns:
      The task name, `self.name`.

    Raises:
      errors.DataError: the vocabulary file is missing, or the corpus is unusable for
        training a vocabulary.
    """
    if _corpus_of(self.name) == self:
      return self.name
    task = _make_task(self, seqio.SentencePieceVocabulary(vocabularies.corpus_vocab_path(self)))
    if self.name in seqio.TaskRegistry.names():
      logging.info('Replacing the seqio task %r with a new configuration.', self.name)
      seqio.TaskRegistry.remove(self.name)
    seqio.TaskRegistry.add_provider(self.name, task)
    _REGISTERED[self.name] = (self, task)
    return self.name


def tatoeba_en_de() -> ParallelCorpus:
  """The embedded default: Tatoeba English->German, shipped with its vocabulary.

  Returns:
    A ParallelCorpus named 'tatoeba_en_de' (2000 validation, 2000 test pairs).
  """
  return ParallelCorpus(
    name='tatoeba_en_de',
    train_path=os.path.join(_TATOEBA_DIR, 'deu.txt.gz'),
    vocab_path=os.path.join(_TATOEBA_DIR, 'spm.model'),
    vocab_size=TATOEBA_VOCAB_SIZE,
  )


def prompt_completion(
  name: str,
  train_path: str,
  validation_path: str | None = None,
  test_path: str | None = None,
  *,
  prompt_key: str = 'prompt',
  target_keys: tuple[str, ...] = ('solution', 'answer'),
  vocab_path: str | None = None,
  vocab_size: int = 8000,
  num_validation: int = 500,
  num_test: int = 1000,
) -> ParallelCorpus:
  """A prompt -> completion task (a verifiable task's problems) from JSONL or TSV files.

  JSON Lines files hold one object a line with the prompt under `prompt_key`
  and the target under the first of `target_keys` that the line has (a
  worked solution where there is one, else the bare answer); the verifier
  (`verifiers.FinalAnswer`) extracts the final answer from the target. TSV
  files hold `prompt<TAB>answer[<TAB>solution]`, one layout for all of the
  task's files, read from the train file's first line: when it has a
  solution column (and `target_keys[0]` is 'solution') the target is the
  solution column of every file, else the answer column.

  Args:
    name: the seqio task name.
    train_path: JSONL (`.jsonl`, `.jsonl.gz`) or TSV of training problems.
    validation_path: held-out problems for checkpoint selection (None: carve
      `num_validation` from train).
    test_path: held-out problems for the results (None: carve `num_test`).
    prompt_key: JSONL key of the prompt.
    target_keys: JSONL keys of the target, by preference.
    vocab_path: SentencePiece model; None trains one on the train split.
    vocab_size: pieces of a trained vocabulary (at most).
    num_validation: problems carved from train when `validation_path` is None.
    num_test: problems carved from train when `test_path` is None.

  Returns:
    The `ParallelCorpus` (prompts as sources, targets as targets).
  """
  target_column = 1
  if not corpus_files.is_jsonl(train_path):
    first = next(iter(corpus_files.read_lines(train_path, 'prompt_completion.train_path')), '')
    target_column = 2 if len(first.split('\t')) > 2 and target_keys[0] == 'solution' else 1
  return ParallelCorpus(
    name=name,
    train_path=train_path,
    validation_path=validation_path,
    test_path=test_path,
    target_column=target_column,
    num_validation=num_validation,
    num_test=num_test,
    vocab_path=vocab_path,
    vocab_size=vocab_size,
    source_language='prompt',
    target_language='completion',
    jsonl_keys=(prompt_key, *target_keys),
  )


def arithmetic() -> ParallelCorpus:
  """The shipped verifiable task: multi-step arithmetic (`corpora/arithmetic.py`).

  Returns:
    A prompt -> worked-solution task named 'arithmetic': 20,000 train
    problems of 1-3 operations, 500 validation and 1,000 test problems of 3
    (held out: their prompts are not in train).
  """
  folder = os.path.join(os.path.dirname(corpora.__file__), 'arithmetic')
  return prompt_completion(
    'arithmetic',
    os.path.join(folder, 'train.jsonl.gz'),
    os.path.join(folder, 'validation.jsonl.gz'),
    os.path.join(folder, 'test.jsonl.gz'),
    vocab_path=os.path.join(folder, 'spm.model'),
  )


# ----------------------------------------------------------------------- splits


def _read_pairs(corpus: ParallelCorpus, split: str) -> list[tuple[str, str]]:
  path, field = getattr(corpus, f'{split}_path'), f'ParallelCorpus.{split}_path'
  if corpus_files.is_jsonl(path):
    return corpus_files.read_jsonl_pairs(path, field, corpus.jsonl_keys[0], corpus.jsonl_keys[1:])
  target_path = getattr(corpus, f'{split}_target_path')
  return corpus_files.read_pairs(
    path, target_path, field, corpus.source_column, corpus.target_column
  )


@functools.lru_cache(maxsize=8)
def _load_splits(corpus: ParallelCorpus) -> dict[str, list[tuple[str, str]]]:
  pairs = _read_pairs(corpus, 'train')
  own = {}
  for split in ('validation', 'test'):
    if getattr(corpus, f'{split}_path') is not None:
      own[split] = _read_pairs(corpus, split)
  splits = corpus_files.split_by_source(
    pairs,
    0 if 'validation' in own else corpus.num_validation,
    0 if 'test' in own else corpus.num_test,
    corpus.split_seed,
    corpus.train_path,
  )
  if own:
    held = {source for split_pairs in own.values() for source, _ in split_pairs}
    train = [pair for pair in splits['train'] if pair[0] not in held]
    if len(train) < len(splits['train']):
      logging.info(
        '%s: dropped %d train pairs whose source is in the validation/test files.',
        corpus.name,
        len(splits['train']) - len(train),
      )
    splits.update(own, train=train)
  logging.info('%s: %s pairs.', corpus.name, {k: len(v) for k, v in splits.items()})
  return splits


# -------------------------------------------------------------- seqio registration


def _make_task(corpus: ParallelCorpus, vocab: seqio.Vocabulary) -> seqio.Task:
  """A seqio Task reading `corpus.splits()` from memory."""

  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
    pairs = _load_splits(corpus)[split]
    ds = tf.data.Dataset.from_tensor_slices(
      {
        'inputs': tf.constant([s for s, _ in pairs], tf.string, shape=[len(pairs)]),
        'targets': tf.constant([t for _, t in pairs], tf.string, shape=[len(pairs)]),
      }
    )
    # A full shuffle, new each epoch: seqio's own shuffle buffer is local.
    return ds.shuffle(max(len(pairs), 1), seed=seed) if shuffle_files else ds

  # No num_input_examples: seqio would then cache small splits in memory *after*
  # this shuffle, freezing the first epoch's order for all later epochs.
  source = seqio.FunctionDataSource(dataset_fn, splits=SPLITS)
  feature = seqio.Feature(vocab, add_eos=True)
  return seqio.Task(
    corpus.name,
    source,
    output_features={'inputs': feature, 'targets': feature},
    preprocessors=[
      seqio.preprocessors.tokenize,
      seqio.CacheDatasetPlaceholder(),
      seqio.preprocessors.append_eos_after_trim,
    ],
  )


def _get_task(task: str | ParallelCorpus) -> seqio.Task:
  name = task.register() if isinstance(task, ParallelCorpus) else task
  if name not in seqio.TaskRegistry.names():
    raise errors.DataError(
      f'No seqio task named {name!r} is registered. Register it first (e.g. '
      'ParallelCorpus(...).register()), or pass the ParallelCorpus itself.'
    )
  return seqio.TaskRegistry.get(name)


def _corpus_of(task: str | ParallelCorpus) -> ParallelCorpus | None:
  """The corpus behind `task`, if `register` added the task now registered under that name."""
  if isinstance(task, ParallelCorpus):
    return task
  corpus, registered = _REGISTERED.get(task, (None, None))
  names = seqio.TaskRegistry.names()
  return corpus if task in names and seqio.TaskRegistry.get(task) is registered else None


def _check_split(task: seqio.Task, split: str) -> None:
  if split not in task.splits:
    raise errors.DataError(
      f'Task {task.name!r} has no split {split!r}; it has {list(task.splits)}.'
    )


def get_vocabulary(task: str | ParallelCorpus) -> seqio.Vocabulary:
  """The vocabulary of a task's 'targets' (and, here, 'inputs') feature.

  Args:
    task: a registered seqio task name, or a ParallelCorpus (registered on use).

  Returns:
    The seqio vocabulary.
  """
  return _get_task(task).output_features['targets'].vocabulary


def dataset_size(task: str | ParallelCorpus, split: str) -> int:
  """The number of examples in a split.

  Args:
    task: a registered seqio task name, or a ParallelCorpus.
    split: 'train', 'validation' or 'test' (or another split of the task).

  Returns:
    The number of (source, target) examples, before any batching or repeating.

  Raises:
    errors.DataError: unknown task or split, or an unusable corpus.
  """
  corpus = _corpus_of(task)
  if corpus is not None:
    if split not in SPLITS:
      raise errors.DataError(f'Task {corpus.name!r} has no split {split!r}; it has {list(SPLITS)}.')
    return len(_load_splits(corpus)[split])
  seqio_task = _get_task(task)
  _check_split(seqio_task, split)
  size = seqio_task.num_input_examples(split)
  if size is None:
    ds = seqio_task.source.get_dataset(split=split, shuffle=False)
    size = int(ds.reduce(np.int64(0), lambda count, _: count + 1))
  return size


# ------------------------------------------------------------------------ batching


def get_dataset(
  task: str | ParallelCorpus,
  split: str,
  *,
  input_length: int,
  target_length: int,
  batch_size: int,
  shuffle: bool,
  seed: int,
  repeat: bool,
  with_text: bool = False,
  shard_index: int = 0,
  num_shards: int = 1,
  max_examples: int | None = None,
  pack: bool = False,
  features: Sequence[str] = (),
  shuffle_buffer_size: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
  """Batches of a task's split in the t5x encoder-decoder layout.

  Each sequence is tokenized, truncated to its length with EOS kept as its last
  token, and padded with 0. Every host passes the same `seed` and its own
  `shard_index`; the shards are disjoint.

  Args:
    task: a registered seqio task name (features 'inputs', 'targets'), or a
      ParallelCorpus (registered on use).
    split: 'train', 'validation' or 'test'.
    input_length: S, tokens per source (encoder) row.
    target_length: T, tokens per target (decoder) row.
    batch_size: B, rows per batch (per shard).
    shuffle: shuffle the examples (a full shuffle, new every epoch).
    seed: the shuffling seed.
    repeat: repeat forever, all batches full; else one pass, whose last batch may
      be smaller.
    with_text: also return the untruncated source and target texts of each row.
    shard_index: this shard, in [0, num_shards).
    num_shards: the number of shards (e.g. hosts) the examples are dealt to.
    max_examples: use only the first N examples of the split (N before sharding
      and shuffling), e.g. for a cheap evaluation.
    pack: pack several examples per row (seqio's packing); adds
      'encoder_segment_ids', 'encoder_positions', 'decoder_segment_ids' and
      'decoder_positions'. For training only: not with `with_text`.
    features: scalar features of the task's examples to keep, one value per
      row (e.g. a Grow round's 'reward' and 'log_prob'); not with `pack`.
    shuffle_buffer_size: examples in the shuffle buffer (None: seqio's
      default, 1,000); data stored in order (a Grow round) needs a large one.

  Returns:
    An iterator of dicts: 'encoder_input_tokens' [B, S] int32,
    'decoder_input_tokens' [B, T] int32 (targets shifted right, 0 first),
    'decoder_target_tokens' [B, T] int32, 'decoder_loss_weights' [B, T] float32
    (1 on non-padding tokens); with `with_text`, also 'inputs_pretokenized' and
    'targets_pretokenized' [B] object arrays of str; each of `features` as a
    [B] array of its own dtype.

  Raises:
    errors.DataError: unknown task or split, an unusable corpus, or bad sizes.
  """
  if (
    min(input_length, target_length, batch_size, num_shards) < 1
    or not (0 <= shard_index < num_shards)
    or (max_examples is not None and max_examples < 1)
  ):
    raise errors.DataError(
      f'get_dataset: lengths, batch_size, num_shards and max_examples must be >= 1 '
      f'and 0 <= shard_index < num_shards; got {input_length=}, {target_length=}, '
      f'{batch_size=}, {shard_index=}, {num_shards=}, {max_examples=}.'
    )
  if pack and (with_text or features):
    raise errors.DataError(
      'get_dataset: pack=True cannot keep per-example texts or features (with_text, features).'
    )
  seqio_task = _get_task(task)
  _check_split(seqio_task, split)
  lengths = {'inputs': input_length, 'targets': target_length}
  if max_examples is None:
    shard_info = seqio.ShardInfo(shard_index, num_shards) if num_shards > 1 else None
    ds = seqio_task.get_dataset(
      lengths,
      split=split,
      shuffle=shuffle,
      seed=seed,
      shard_info=shard_info,
      num_epochs=None if repeat else 1,
      **({} if shuffle_buffer_size is None else {'shuffle_buffer_size': shuffle_buffer_size}),
    )
  else:
    ds = seqio_task.get_dataset(lengths, split=split, shuffle=False, num_epochs=1)
    ds = ds.take(max_examples).shard(num_shards, shard_index)
    ds = ds.shuffle(max_examples, seed=seed) if shuffle else ds
    ds = ds.repeat() if repeat else ds

  passthrough = {}
  if with_text:
    missing = [k for k in _TEXT_FEATURES if k not in ds.element_spec]
    if missing:
      raise errors.DataError(
        f'Task {seqio_task.name!r} has no {missing} features: tokenize it with '
        'seqio.preprocessors.tokenize(copy_pretokenized=True) to use with_text.'
      )
    # The converter passes features through only with a length: carry each text
    # as a [1] vector through it, so it stays in the same row as its tokens.
    ds = ds.map(lambda ex: {**ex, **{k: tf.reshape(ex[k], [1]) for k in _TEXT_FEATURES}})
    passthrough = {k: seqio.FeatureConverter.FeatureSpec(dtype=tf.string) for k in _TEXT_FEATURES}
    lengths.update({k: 1 for k in _TEXT_FEATURES})
  missing = [k for k in features if k not in ds.element_spec]
  if missing:
    raise errors.DataError(f'Task {seqio_task.name!r} has no features {missing}.')
  if features:
    specs = {k: ds.element_spec[k].dtype for k in features}
    ds = ds.map(lambda ex: {**ex, **{k: tf.reshape(ex[k], [1]) for k in features}})
    passthrough.update({k: seqio.FeatureConverter.FeatureSpec(dtype=d) for k, d in specs.items()})
    lengths.update({k: 1 for k in features})
  converter = seqio.EncDecFeatureConverter(pack=pack, passthrough_features=passthrough or None)
  ds = converter(ds, task_feature_lengths=lengths)
  ds = ds.batch(batch_size, drop_remainder=repeat).prefetch(tf.data.AUTOTUNE)
  return _numpy_batches(ds, with_text, tuple(features))


def _numpy_batches(
  ds: tf.data.Dataset, with_text: bool, features: tuple[str, ...] = ()
) -> Iterator[dict[str, np.ndarray]]:
  for batch in ds.as_numpy_iterator():
    batch['decoder_loss_weights'] = batch['decoder_loss_weights'].astype(np.float32)
    for k in features:
      batch[k] = batch[k][:, 0]
    if with_text:
      for k in _TEXT_FEATURES:
        batch[k] = np.array([text.decode('utf-8') for text in batch[k][:, 0]], dtype=object)
    yield batch
