"""Tests for rest_jax.data.tasks: corpus reading, splits, vocabularies, seqio batches."""

from __future__ import annotations

import gzip
import hashlib
import os
import unicodedata

import numpy as np
import pytest
from test_utils import synthetic_pairs as _synthetic_pairs

from rest_jax import errors
from rest_jax.data import tasks, vocabularies


def _nfkc(text: str) -> str:
  """The text as SentencePiece normalizes it (NFKC, single spaces)."""
  return ' '.join(unicodedata.normalize('NFKC', text).split())


def _write(path, lines: list[str], gz: bool = False) -> str:
  data = ''.join(line + '\n' for line in lines).encode('utf-8')
  with open(path, 'wb') as f:
    f.write(gzip.compress(data) if gz else data)
  return str(path)


def _write_tsv(path, pairs, gz: bool = False) -> str:
  return _write(path, [f'{s}\t{t}' for s, t in pairs], gz)


@pytest.fixture(scope='module')
def tiny_vocab(tmp_path_factory) -> str:
  """A 100-piece vocabulary of the synthetic grammar, trained once."""
  path = str(tmp_path_factory.mktemp('vocab') / 'tiny.model')
  pairs = _synthetic_pairs(400)
  return vocabularies.train_sentencepiece([t for pair in pairs for t in pair], path, 100)


def _texts(corpus: tasks.ParallelCorpus, split: str, **kwargs) -> list[str]:
  """The source texts of one pass over a split, in batch order."""
  kwargs = {
    'input_length': 32,
    'target_length': 32,
    'batch_size': 7,
    'shuffle': False,
    'seed': 0,
    'repeat': False,
    'with_text': True,
  } | kwargs
  batches = tasks.get_dataset(corpus, split, **kwargs)
  return [text for batch in batches for text in batch['inputs_pretokenized']]


# ----------------------------------------------------------------- Tatoeba default


def test_tatoeba_splits_are_disjoint_by_english_sentence():
  splits = tasks.tatoeba_en_de().splits()
  assert len(splits['validation']) == 2000
  assert len(splits['test']) == 2000
  assert len(splits['train']) == 164784
  sources = {split: {s for s, _ in pairs} for split, pairs in splits.items()}
  assert len(sources['validation']) == 2000 and len(sources['test']) == 2000
  assert not sources['train'] & sources['validation']
  assert not sources['train'] & sources['test']
  assert not sources['validation'] & sources['test']
  assert 'Hi.' in set().union(*sources.values())


def test_tatoeba_split_is_pinned():
  # The split depends only on sha256 of the sentences: the same on every platform.
  validation = tasks.tatoeba_en_de().splits()['validation']
  digest = hashlib.sha256('\n'.join(s for s, _ in validation).encode()).hexdigest()
  assert (digest[:16], validation[0]) == (_PINNED_DIGEST, _PINNED_FIRST)


_PINNED_DIGEST = '879288fdc972be54'
_PINNED_FIRST = ('I have some good news for you.', 'Ich habe ein paar gute Neuigkeiten für dich.')


def test_shipped_vocabulary():
  vocab = tasks.get_vocabulary(tasks.tatoeba_en_de())
  assert vocab.vocab_size == tasks.TATOEBA_VOCAB_SIZE
  assert (vocab.pad_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2)
  sentence = 'Ich möchte gerne ein großes Stück Käse, bitte!'
  ids = vocab.encode(sentence)
  assert 2 not in ids and len(ids) < len(sentence.split()) * 3
  assert vocab.decode(ids) == sentence


def test_get_dataset_shapes_and_text_alignment():
  corpus = tasks.tatoeba_en_de()
  batches = list(
    tasks.get_dataset(
      corpus,
      'validation',
      input_length=24,
      target_length=20,
      batch_size=8,
      shuffle=False,
      seed=0,
      repeat=False,
      with_text=True,
      max_examples=20,
    )
  )
  assert [len(b['encoder_input_tokens']) for b in batches] == [8, 8, 4]  # Last one kept.
  batch = batches[0]
  for key, length in [
    ('encoder_input_tokens', 24),
    ('decoder_input_tokens', 20),
    ('decoder_target_tokens', 20),
  ]:
    assert batch[key].shape == (8, length) and batch[key].dtype == np.int32, key
  assert batch['decoder_loss_weights'].dtype == np.float32
  np.testing.assert_array_equal(batch['decoder_loss_weights'], batch['decoder_target_tokens'] > 0)
  np.testing.assert_array_equal(
    batch['decoder_input_tokens'][:, 1:], batch['decoder_target_tokens'][:, :-1]
  )
  assert (batch['decoder_input_tokens'][:, 0] == 0).all()
  vocab = tasks.get_vocabulary(corpus)
  validation = corpus.splits()['validation']
  texts = [t for b in batches for t in b['inputs_pretokenized']]
  assert texts == [s for s, _ in validation[:20]]  # First N of the split, in order.
  for b in batches:
    for row in range(len(b['encoder_input_tokens'])):
      for tokens, key in [
        (b['encoder_input_tokens'][row], 'inputs_pretokenized'),
        (b['decoder_target_tokens'][row], 'targets_pretokenized'),
      ]:
        assert isinstance(b[key][row], str)
        if tokens[-1] == 0:  # Not truncated: the tokens are the (NFKC-normalized) text.
          assert vocab.decode(tokens.tolist()) == _nfkc(b[key][row])


def test_truncation_keeps_eos_and_full_text():
  corpus = tasks.tatoeba_en_de()
  batch = next(
    tasks.get_dataset(
      corpus,
      'validation',
      input_length=3,
      target_length=4,
      batch_size=16,
      shuffle=False,
      seed=0,
      repeat=False,
      with_text=True,
      max_examples=16,
    )
  )
  tokens = batch['encoder_input_tokens']
  long_rows = tokens[:, -1] != 0
  assert long_rows.any() and (tokens[long_rows, -1] == 1).all()
  assert (batch['decoder_target_tokens'][batch['decoder_target_tokens'][:, -1] != 0, -1] == 1).all()
  validation = corpus.splits()['validation']
  assert list(batch['targets_pretokenized']) == [t for _, t in validation[:16]]  # Untruncated.


def test_shuffle_repeat_and_determinism():
  corpus = tasks.tatoeba_en_de()
  kwargs = {
    'input_length': 16,
    'target_length': 16,
    'batch_size': 32,
    'shuffle': True,
    'seed': 3,
    'repeat': True,
    'with_text': True,
  }
  first = next(tasks.get_dataset(corpus, 'train', **kwargs))
  again = next(tasks.get_dataset(corpus, 'train', **kwargs))
  other = next(tasks.get_dataset(corpus, 'train', **(kwargs | {'seed': 4})))
  assert list(first['inputs_pretokenized']) == list(again['inputs_pretokenized'])
  assert list(first['inputs_pretokenized']) != list(other['inputs_pretokenized'])
  # A full shuffle: the length-sorted file does not leak into the batch.
  assert np.mean([len(s.split()) for s in first['inputs_pretokenized']]) > 4
  # repeat: more batches than one pass, all full.
  it = tasks.get_dataset(corpus, 'validation', **(kwargs | {'batch_size': 512}))
  assert all(len(next(it)['encoder_input_tokens']) == 512 for _ in range(5))


# ---------------------------------------------------------------- bring your own


@pytest.mark.parametrize('gz', [False, True])
def test_tsv_corpus_with_deterministic_split(tmp_path, tiny_vocab, gz):
  pairs = _synthetic_pairs(120)
  pairs += [(pairs[0][0], 'Eine andere Übersetzung.'), (pairs[5][0], 'Noch eine.')]
  path = _write_tsv(tmp_path / ('c.tsv.gz' if gz else 'c.tsv'), pairs, gz=gz)
  corpus = tasks.ParallelCorpus(
    name=f'tiny_tsv_{gz}', train_path=path, num_validation=10, num_test=7, vocab_path=tiny_vocab
  )
  splits = corpus.splits()
  assert (len(splits['validation']), len(splits['test']), len(splits['train'])) == (10, 7, 105)
  sources = [{s for s, _ in splits[k]} for k in tasks.SPLITS]
  assert sum(map(len, sources)) == len(set().union(*sources)) == 120
  assert (
    splits
    == tasks.ParallelCorpus(
      name='again', train_path=path, num_validation=10, num_test=7, vocab_path=tiny_vocab
    ).splits()
  )
  assert (
    splits
    != tasks.ParallelCorpus(
      name='seed1', train_path=path, num_validation=10, num_test=7, split_seed=1
    ).splits()
  )
  assert corpus.register() == f'tiny_tsv_{gz}' and corpus.register() == f'tiny_tsv_{gz}'
  assert tasks.dataset_size(corpus.name, 'test') == 7
  assert _texts(corpus.name, 'test') == [s for s, _ in splits['test']]


def test_aligned_files_with_own_validation_and_test(tmp_path, tiny_vocab):
  pairs = _synthetic_pairs(90)
  files = {}
  for split, part in [
    ('train', pairs[:60]),
    ('validation', pairs[60:75] + pairs[:2]),
    ('test', pairs[75:]),
  ]:
    files[f'{split}_path'] = _write(tmp_path / f'{split}.en', [s for s, _ in part])
    files[f'{split}_target_path'] = _write(
      tmp_path / f'{split}.de.gz', [t for _, t in part], gz=True
    )
  corpus = tasks.ParallelCorpus(name='tiny_aligned', vocab_path=tiny_vocab, **files)
  splits = corpus.splits()
  assert splits['validation'] == pairs[60:75] + pairs[:2]  # As given, in file order.
  assert splits['test'] == pairs[75:]
  assert sorted(splits['train']) == sorted(pairs[2:60])  # Minus the validation sources.
  assert sorted(_texts(corpus, 'train')) == sorted(s for s, _ in pairs[2:60])


def test_sharding_deals_disjoint_examples(tmp_path, tiny_vocab):
  path = _write_tsv(tmp_path / 'c.tsv', _synthetic_pairs(50))
  corpus = tasks.ParallelCorpus(
    name='tiny_shards', train_path=path, num_validation=5, num_test=5, vocab_path=tiny_vocab
  )
  train = [s for s, _ in corpus.splits()['train']]
  for kwargs in [{}, {'max_examples': 30}, {'shuffle': True}]:
    shards = [_texts(corpus, 'train', shard_index=i, num_shards=3, **kwargs) for i in range(3)]
    expected = train[: kwargs.get('max_examples', len(train))]
    assert sorted(text for shard in shards for text in shard) == sorted(expected), kwargs


def test_vocabulary_trained_on_first_use_and_cached(tmp_path):
  path = _write_tsv(tmp_path / 'c.tsv', _synthetic_pairs(300))
  corpus = tasks.ParallelCorpus(
    name='tiny_trained',
    train_path=path,
    num_validation=20,
    num_test=20,
    vocab_size=100,
    vocab_cache_dir=str(tmp_path / 'c'),
  )
  vocab = tasks.get_vocabulary(corpus)
  (model,) = (tmp_path / 'c' / 'vocab').glob('*.model')
  assert [p.name for p in model.parent.iterdir()] == [model.name]  # No temporary left.
  assert 50 < vocab.vocab_size <= 100 and (vocab.pad_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2)
  assert vocab.decode(vocab.encode('The red dog sees the cat 7.')) == 'The red dog sees the cat 7.'
  mtime = os.stat(model).st_mtime_ns
  renamed = tasks.ParallelCorpus(
    name='tiny_trained_2',
    train_path=path,
    num_validation=20,
    num_test=20,
    vocab_size=100,
    vocab_cache_dir=str(tmp_path / 'c'),
  )
  assert tasks.get_vocabulary(renamed).vocab_size == vocab.vocab_size
  assert os.stat(model).st_mtime_ns == mtime  # Reused, not retrained.
  with open(model, 'rb') as f:
    first = f.read()
  retrained = vocabularies.train_sentencepiece(
    [t for pair in corpus.splits()['train'] for t in pair], str(tmp_path / 'again.model'), 100
  )
  with open(retrained, 'rb') as f:
    assert f.read() == first  # Deterministic.


def test_reregistering_a_changed_config_replaces_the_task(tmp_path, tiny_vocab):
  path = _write_tsv(tmp_path / 'c.tsv', _synthetic_pairs(40))
  small = tasks.ParallelCorpus(
    name='tiny_replace', train_path=path, num_validation=3, num_test=3, vocab_path=tiny_vocab
  )
  small.register()
  assert tasks.dataset_size('tiny_replace', 'validation') == 3
  tasks.ParallelCorpus(
    name='tiny_replace', train_path=path, num_validation=4, num_test=3, vocab_path=tiny_vocab
  ).register()
  assert tasks.dataset_size('tiny_replace', 'validation') == 4
  assert len(_texts('tiny_replace', 'validation')) == 4


# ---------------------------------------------------------------------- errors


def test_missing_file_names_path_and_field(tmp_path):
  missing = str(tmp_path / 'nope.tsv')
  with pytest.raises(errors.DataError, match=r'ParallelCorpus\.train_path.*nope\.tsv'):
    tasks.ParallelCorpus(name='missing', train_path=missing).splits()
  path = _write_tsv(tmp_path / 'c.tsv', _synthetic_pairs(20))
  with pytest.raises(errors.DataError, match=r'ParallelCorpus\.vocab_path.*no\.model'):
    tasks.ParallelCorpus(
      name='missing_vocab', train_path=path, vocab_path=str(tmp_path / 'no.model')
    ).register()


@pytest.mark.parametrize(
  'bad_line, problem',
  [
    ('only one column', 'expected at least 2 tab-separated columns'),
    ('\tDas Ziel.', 'source sentence is empty'),
    ('The source.\t  ', 'target sentence is empty'),
  ],
)
def test_malformed_line_names_file_and_line(tmp_path, bad_line, problem):
  lines = [f'{s}\t{t}' for s, t in _synthetic_pairs(5)]
  path = _write(tmp_path / 'bad.tsv', lines[:3] + ['', bad_line] + lines[3:])
  with pytest.raises(errors.DataError, match=rf'bad\.tsv, line 5 .*{problem}'):
    tasks.ParallelCorpus(name='bad', train_path=path).splits()


def test_empty_corpus(tmp_path):
  path = _write(tmp_path / 'empty.tsv.gz', ['', '   '], gz=True)
  with pytest.raises(errors.DataError, match=r'empty\.tsv\.gz.*no sentence pairs'):
    tasks.ParallelCorpus(name='empty', train_path=path).splits()


def test_mismatched_line_counts(tmp_path):
  source = _write(tmp_path / 'a.en', ['One.', 'Two.', 'Three.'])
  target = _write(tmp_path / 'a.de', ['Eins.', 'Zwei.'])
  with pytest.raises(errors.DataError, match=r'a\.en.*3 lines.*a\.de.*2'):
    tasks.ParallelCorpus(name='mismatch', train_path=source, train_target_path=target).splits()


def test_too_few_sentences_for_the_split(tmp_path):
  path = _write_tsv(tmp_path / 'c.tsv', _synthetic_pairs(10))
  with pytest.raises(errors.DataError, match=r'c\.tsv: 10 distinct source sentences'):
    tasks.ParallelCorpus(name='small', train_path=path).splits()


def test_unknown_task_and_split(tmp_path, tiny_vocab):
  with pytest.raises(errors.DataError, match='No seqio task named'):
    tasks.dataset_size('no_such_task_anywhere', 'train')
  path = _write_tsv(tmp_path / 'c.tsv', _synthetic_pairs(20))
  corpus = tasks.ParallelCorpus(
    name='tiny_split', train_path=path, num_validation=2, num_test=2, vocab_path=tiny_vocab
  )
  with pytest.raises(errors.DataError, match="no split 'dev'"):
    tasks.get_dataset(
      corpus,
      'dev',
      input_length=8,
      target_length=8,
      batch_size=2,
      shuffle=False,
      seed=0,
      repeat=False,
    )
