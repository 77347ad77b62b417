"""SentencePiece vocabularies: training one with T5 ids, a corpus's vocabulary, loading one.

`train_sentencepiece` trains a unigram model deterministically (pad 0, eos 1,
unk 2, no bos). `corpus_vocab_path` is a `tasks.ParallelCorpus`'s vocabulary:
its own `vocab_path`, or one trained on its train split on first use and cached
under a key of the corpus's files and settings ($REST_JAX_CACHE or
~/.cache/rest_jax by default). `vocabulary_from_file` loads a model file as a
seqio vocabulary.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

import sentencepiece as spm
import seqio
import tensorflow as tf
from absl import logging

from rest_jax.core import files
from rest_jax.data.corpora import corpus_files

if TYPE_CHECKING:
  from rest_jax.data import tasks

_SPM_NUM_THREADS = 4  # Fixed, so a rebuilt vocabulary is the same file everywhere.


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


def corpus_vocab_path(corpus: tasks.ParallelCorpus) -> str:
  """The corpus's SentencePiece model; trains and caches one if it has none.

  Args:
    corpus: the corpus; its train split (`corpus.splits()['train']`, both
      sides) is the training text of a vocabulary it has none of.

  Returns:
    The path of the model file.

  Raises:
    errors.DataError: `vocab_path` or one of the corpus's files is missing.
  """
  if corpus.vocab_path is not None:
    corpus_files.require_file(corpus.vocab_path, 'ParallelCorpus.vocab_path')
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
      corpus_files.require_file(path, f'ParallelCorpus.{field}')
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


def vocabulary_from_file(path: str) -> seqio.Vocabulary:
  """A seqio vocabulary for a SentencePiece model file.

  Raises:
    errors.DataError: the file does not exist.
  """
  corpus_files.require_file(path, 'vocab_path')
  return seqio.SentencePieceVocabulary(path)
