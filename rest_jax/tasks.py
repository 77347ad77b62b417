"""Parallel corpora as seqio tasks: reading, splitting, vocabularies and batches.

A `ParallelCorpus` names a TSV file (`source<TAB>target`) or two aligned text
files, plain or gzip. `register()` turns it into a seqio Task with the splits
'train', 'validation' and 'test'; `get_dataset()` yields numpy batches in the
t5x encoder-decoder layout. `tatoeba_en_de()` is the corpus shipped in
`rest_jax/corpora/` (CC-BY 2.0 FR, see its LICENSE.md) with its vocabulary.

Splits. When a corpus has no validation (test) file, those examples are carved
from the train file by source sentence: the distinct source sentences are ordered
by sha256(f'{split_seed}:{sentence}'), the first `num_validation` go to
validation, the next `num_test` to test, the rest to train. Validation and test
keep one pair per source sentence (the first in file order); the other
translations of those sentences are dropped, so no source sentence is in two
splits. Every carved split lists its pairs in that hashed order, so the first N
pairs of a split are a fixed pseudo-random sample.

This module (and the data-layer modules beside it) are the only ones that import
TensorFlow or seqio.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import io
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import sentencepiece as spm
import seqio
import tensorflow as tf
from absl import logging

from rest_jax import corpora, errors, files

# TF only feeds data; the accelerators belong to JAX.
try:
  tf.config.set_visible_devices([], 'GPU')
except RuntimeError:  # TF already initialized its devices: leave them.
  pass

SPLITS = ('train', 'validation', 'test')
# Pieces of the shipped Tatoeba vocabulary: small enough that a CPU model learns
# it in minutes (the output softmax is the largest layer of a small model).
TATOEBA_VOCAB_SIZE = 4000
_TEXT_FEATURES = ('inputs_pretokenized', 'targets_pretokenized')
_TASK_NAME_RE = re.compile(r'^[\w.:]+$')  # What seqio accepts as a task name.
_SPM_NUM_THREADS = 4  # Fixed, so a rebuilt vocabulary is the same file everywhere.
_TATOEBA_DIR = os.path.join(os.path.dirname(corpora.__file__), 'tatoeba_en_de')
# name -> (corpus, task) for the tasks that `ParallelCorpus.register` added.
_REGISTERED: dict[str, tuple[ParallelCorpus, seqio.Task]] = {}


class DataError(errors.UserInputError):
  """A corpus, vocabulary or data setting that cannot be used as given."""


@dataclasses.dataclass(frozen=True)
class ParallelCorpus:
  """A parallel corpus and how to split, tokenize and register it."""

  # seqio task name to register (letters, digits, '_', '.', ':').
  name: str
  # TSV `source<TAB>target[<TAB>...]`, plain or gzip; or, when
  # `train_target_path` is set, a text file of source sentences, one a line.
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

  def __post_init__(self):
    if not _TASK_NAME_RE.match(self.name):
      raise DataError(
        f'ParallelCorpus.name {self.name!r} is not a valid seqio task name: '
        'use letters, digits, "_", "." or ":".'
      )
    if min(self.source_column, self.target_column) < 0 or (
      self.source_column == self.target_column
    ):
      raise DataError(
        f'ParallelCorpus {self.name!r}: source_column={self.source_column} and '
        f'target_column={self.target_column} must be two different columns >= 0.'
      )
    if min(self.num_validation, self.num_test) < 0 or self.vocab_size <= 0:
      raise DataError(
        f'ParallelCorpus {self.name!r}: num_validation, num_test must be >= 0 and vocab_size > 0.'
      )

  def splits(self) -> dict[str, list[tuple[str, str]]]:
    """Reads and splits the corpus (cached per configuration).

    Returns:
      {'train'|'validation'|'test': [(source, target), ...]}, fresh lists.

    Raises:
      DataError: a file is missing, malformed or empty, or the train file has too
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
      DataError: the vocabulary file is missing, or the corpus is unusable for
        training a vocabulary.
    """
    if _corpus_of(self.name) == self:
      return self.name
    task = _make_task(self, seqio.SentencePieceVocabulary(_vocab_path(self)))
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


# ---------------------------------------------------------------- corpus reading


def _require_file(path: str, field: str) -> None:
  if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
    raise DataError(
      f'{field}: file {path!r} does not exist (or is a directory). Fix the path in {field}.'
    )


def _read_lines(path: str, field: str) -> list[str]:
  """Lines of a plain or gzip UTF-8 file, without line ends; `field` names it in errors."""
  _require_file(path, field)
  with tf.io.gfile.GFile(path, 'rb') as f:
    data = f.read()
  try:
    if data[:2] == b'\x1f\x8b':
      data = gzip.decompress(data)
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(
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
      raise DataError(
        f'{path}, line {lineno} ({field}): not valid UTF-8 ({e.reason}). Convert the file to UTF-8.'
      ) from e
  if text:
    text[0] = text[0].removeprefix('\ufeff')
  return text


def _read_pairs(
  path: str, target_path: str | None, field: str, source_column: int, target_column: int
) -> list[tuple[str, str]]:
  """(source, target) pairs from a TSV, or from two aligned text files."""
  pairs = []
  if target_path is None:
    need = max(source_column, target_column) + 1
    for lineno, line in enumerate(_read_lines(path, field), 1):
      if not line.strip():
        continue
      cols = line.split('\t')
      if len(cols) < need:
        raise DataError(
          f'{path}, line {lineno} ({field}): expected at least {need} tab-separated columns '
          f'(source in column {source_column}, target in column {target_column}), found '
          f'{len(cols)}: {line[:80]!r}. Fix or delete the line, or set the columns.'
        )
      source, target = cols[source_column].strip(), cols[target_column].strip()
      if not source or not target:
        side = 'source' if not source else 'target'
        raise DataError(
          f'{path}, line {lineno} ({field}): the {side} sentence is empty. Fix or delete the line.'
        )
      pairs.append((source, target))
  else:
    target_field = field.replace('_path', '_target_path')
    sources, targets = _read_lines(path, field), _read_lines(target_path, target_field)
    while sources and not sources[-1].strip():
      sources.pop()
    while targets and not targets[-1].strip():
      targets.pop()
    if len(sources) != len(targets):
      raise DataError(
        f'{path} ({field}) has {len(sources)} lines but {target_path} ({target_field}) has '
        f'{len(targets)}: the two files must be aligned line by line.'
      )
    for lineno, (source, target) in enumerate(zip(sources, targets), 1):
      source, target = source.strip(), target.strip()
      if bool(source) != bool(target):
        empty = path if not source else target_path
        raise DataError(
          f'{empty}, line {lineno}: empty line whose aligned line in the other file '
          'is not empty. Fix the alignment or delete the pair.'
        )
      if source:
        pairs.append((source, target))
  if not pairs:
    raise DataError(f'{path} ({field}) holds no sentence pairs. Give a non-empty corpus.')
  return pairs


# ----------------------------------------------------------------------- splitting


def _split_by_source(
  pairs: list[tuple[str, str]], num_validation: int, num_test: int, seed: int, path: str
) -> dict[str, list[tuple[str, str]]]:
  """Carves validation and test from `pairs` by source sentence (module docstring)."""
  targets_by_source: dict[str, list[str]] = {}
  for source, target in pairs:
    targets_by_source.setdefault(source, []).append(target)
  order = sorted(targets_by_source, key=lambda s: hashlib.sha256(f'{seed}:{s}'.encode()).digest())
  held = num_validation + num_test
  if len(order) <= held:
    raise DataError(
      f'{path}: {len(order)} distinct source sentences, but num_validation + num_test = '
      f'{held} would leave none for train. Lower them, or give validation_path/test_path.'
    )
  return {
    'train': [(s, t) for s in order[held:] for t in targets_by_source[s]],
    'validation': [(s, targets_by_source[s][0]) for s in order[:num_validation]],
    'test': [(s, targets_by_source[s][0]) for s in order[num_validation:held]],
  }


@functools.lru_cache(maxsize=8)
def _load_splits(corpus: ParallelCorpus) -> dict[str, list[tuple[str, str]]]:
  columns = (corpus.source_column, corpus.target_column)
  pairs = _read_pairs(
    corpus.train_path, corpus.train_target_path, 'ParallelCorpus.train_path', *columns
  )
  own = {}
  for split in ('validation', 'test'):
    path = getattr(corpus, f'{split}_path')
    if path is not None:
      own[split] = _read_pairs(
        path, getattr(corpus, f'{split}_target_path'), f'ParallelCorpus.{split}_path', *columns
      )
  splits = _split_by_source(
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


# -------------------------------------------------------------------- vocabularies


def train_sentencepiece(sentences: Iterable[str], model_path: str, vocab_size: int) -> str:
  """Trains a unigram SentencePiece model with T5 ids and writes it atomically.

  Ids: pad 0, eos 1, unk 2, no bos. The result depends only on the sentences and
  their order (no sampling, no shuffling, a fixed thread count).

  Args:
    sentences: training text, one sentence per item.
    model_path: where to write the model (its folder is created).
    vocab_size: the number of pieces; fewer when the text is too small for it.

  Returns:
    `model_path`.
  """
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(sentences),
    model_writer=model,
    vocab_size=vocab_size,
    model_type='unigram',
    character_coverage=1.0,
    pad_id=0,
    eos_id=1,
    unk_id=2,
    bos_id=-1,
    input_sentence_size=0,
    shuffle_input_sentence=False,
    num_threads=_SPM_NUM_THREADS,
    hard_vocab_limit=False,
    minloglevel=1,
  )
  files.write_bytes(model_path, model.getvalue(), all_processes=True)
  pieces = spm.SentencePieceProcessor(model_proto=model.getvalue()).get_piece_size()
  logging.info('Wrote a SentencePiece model of %d pieces to %s', pieces, model_path)
  return model_path


def _vocab_path(corpus: ParallelCorpus) -> str:
  """The corpus's SentencePiece model; trains and caches one if it has none."""
  if corpus.vocab_path is not None:
    _require_file(corpus.vocab_path, 'ParallelCorpus.vocab_path')
    return corpus.vocab_path
  # Key: every input of the train split (files with size and mtime) and the size.
  key = [
    f'vocab_size={corpus.vocab_size}',
    corpus.source_column,
    corpus.target_column,
    corpus.num_validation,
    corpus.num_test,
    corpus.split_seed,
  ]
  for field in (
    'train_path',
    'train_target_path',
    'validation_path',
    'validation_target_path',
    'test_path',
    'test_target_path',
  ):
    path = getattr(corpus, field)
    if path is not None:
      _require_file(path, f'ParallelCorpus.{field}')
      stat = tf.io.gfile.stat(path)
      key.append(f'{field}={os.path.abspath(path)}:{stat.length}:{stat.mtime_nsec}')
  digest = hashlib.sha256(repr(key).encode('utf-8')).hexdigest()[:16]
  cache_dir = (
    corpus.vocab_cache_dir
    or os.environ.get('REST_JAX_CACHE')
    or os.path.expanduser('~/.cache/rest_jax')
  )
  path = os.path.join(cache_dir, 'vocab', f'spm{corpus.vocab_size}-{digest}.model')
  if not tf.io.gfile.exists(path):
    logging.info('Training a vocabulary for %s (no cached %s).', corpus.name, path)
    train = corpus.splits()['train']
    train_sentencepiece((text for pair in train for text in pair), path, corpus.vocab_size)
  return path


def get_vocabulary(task: str | ParallelCorpus) -> seqio.Vocabulary:
  """The vocabulary of a task's 'targets' (and, here, 'inputs') feature.

  Args:
    task: a registered seqio task name, or a ParallelCorpus (registered on use).

  Returns:
    The seqio vocabulary.
  """
  return _get_task(task).output_features['targets'].vocabulary


def vocabulary_from_file(path: str) -> seqio.Vocabulary:
  """A seqio vocabulary for a SentencePiece model file.

  Raises:
    DataError: the file does not exist.
  """
  _require_file(path, 'vocab_path')
  return seqio.SentencePieceVocabulary(path)


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
    raise DataError(
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
    raise DataError(f'Task {task.name!r} has no split {split!r}; it has {list(task.splits)}.')


def dataset_size(task: str | ParallelCorpus, split: str) -> int:
  """The number of examples in a split.

  Args:
    task: a registered seqio task name, or a ParallelCorpus.
    split: 'train', 'validation' or 'test' (or another split of the task).

  Returns:
    The number of (source, target) examples, before any batching or repeating.

  Raises:
    DataError: unknown task or split, or an unusable corpus.
  """
  corpus = _corpus_of(task)
  if corpus is not None:
    if split not in SPLITS:
      raise DataError(f'Task {corpus.name!r} has no split {split!r}; it has {list(SPLITS)}.')
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
    DataError: unknown task or split, an unusable corpus, or bad sizes.
  """
  if (
    min(input_length, target_length, batch_size, num_shards) < 1
    or not (0 <= shard_index < num_shards)
    or (max_examples is not None and max_examples < 1)
  ):
    raise DataError(
      f'get_dataset: lengths, batch_size, num_shards and max_examples must be >= 1 '
      f'and 0 <= shard_index < num_shards; got {input_length=}, {target_length=}, '
      f'{batch_size=}, {shard_index=}, {num_shards=}, {max_examples=}.'
    )
  if pack and (with_text or features):
    raise DataError(
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
      raise DataError(
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
    raise DataError(f'Task {seqio_task.name!r} has no features {missing}.')
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
