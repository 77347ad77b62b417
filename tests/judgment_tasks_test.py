"""Tests for rest_jax.data.judgment_tasks: judgments as seqio tasks and mixtures, padded batches."""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
import pytest
import sentencepiece as spm

from rest_jax.data import judgment_tasks, judgments, tasks
from rest_jax.data.judgments import Judgment
from rest_jax.errors import DataError
from rest_jax.rewards import reward_model

_PAIRS = [
  ('I have a dog.', 'Ich habe einen Hund.'),
  ('The weather is nice today.', 'Das Wetter ist heute schön.'),
  ('Where is the train station?', 'Wo ist der Bahnhof?'),
  ('She reads a long book.', 'Sie liest ein langes Buch.'),
]


@pytest.fixture(scope='module')
def vocab_path() -> str:
  return tasks.tatoeba_en_de().vocab_path


def _batches(name: str, split: str, **kwargs) -> list[dict]:
  kwargs = {
    'batch_size': 3,
    'max_length': 24,
    'shuffle': False,
    'seed': 0,
    'repeat': False,
  } | kwargs
  return list(judgment_tasks.get_batches(name, split, **kwargs))


def test_task_round_trip(vocab_path):
  data = judgments.synthetic_judgments(_PAIRS, corruptions_per_pair=1)
  data = [dataclasses.replace(j, doc=f'd{i}') for i, j in enumerate(data)]
  splits = {'train': data[:5], 'validation': data[5:]}
  name = judgment_tasks.register_judgments_task('judgments_test_rt', splits, vocab_path, 24)
  assert name == 'judgments_test_rt'
  sp = spm.SentencePieceProcessor(model_file=vocab_path)
  for split, expected in splits.items():
    batches = _batches(name, split)
    assert [len(b['score']) for b in batches] == [3] * (len(expected) // 3) + (
      [len(expected) % 3] if len(expected) % 3 else []
    )
    got = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    assert got['inputs'].dtype == np.int32 and got['inputs'].shape == (len(expected), 24)
    want = reward_model.encode_pairs(
      sp, [j.source for j in expected], [j.candidate for j in expected], 24
    )
    np.testing.assert_array_equal(got['inputs'], want)
    np.testing.assert_allclose(got['score'], [j.score for j in expected], rtol=1e-6)
    np.testing.assert_allclose(got['raw_score'], [j.raw_score for j in expected], rtol=1e-6)
    assert got['score'].dtype == np.float32
    assert list(got['source_pretokenized']) == [j.source for j in expected]
    assert list(got['candidate_pretokenized']) == [j.candidate for j in expected]
    assert list(got['reference_pretokenized']) == [j.reference for j in expected]
    assert list(got['doc']) == [j.doc for j in expected]
  # Shuffled and repeated: full batches of the split's examples, in a new order.
  it = judgment_tasks.get_batches(
    name, 'train', batch_size=5, max_length=32, shuffle=True, seed=3, repeat=True
  )
  shuffled = [next(it) for _ in range(4)]
  assert all(b['inputs'].shape == (5, 32) for b in shuffled)
  seen = [c for b in shuffled for c in b['candidate_pretokenized']]
  assert set(seen) <= {j.candidate for j in splits['train']}
  assert seen[:5] != [j.candidate for j in splits['train']]
  # Re-registering replaces the task.
  judgment_tasks.register_judgments_task(name, {'train': data[:2]}, vocab_path, 24)
  assert sum(len(b['score']) for b in _batches(name, 'train')) == 2


def test_task_errors(vocab_path, tmp_path):
  data = judgments.synthetic_judgments(_PAIRS[:2], corruptions_per_pair=0)
  with pytest.raises(DataError, match='every split needs'):
    judgment_tasks.register_judgments_task('judgments_test_err', {'train': []}, vocab_path, 24)
  with pytest.raises(DataError, match='not a valid seqio name'):
    judgment_tasks.register_judgments_task('bad name', {'train': data}, vocab_path, 24)
  with pytest.raises(DataError, match='missing.model'):
    judgment_tasks.register_judgments_task(
      'judgments_test_err', {'train': data}, str(tmp_path / 'missing.model'), 24
    )
  name = judgment_tasks.register_judgments_task(
    'judgments_test_err', {'train': data}, vocab_path, 24
  )
  with pytest.raises(DataError, match='shorter than'):
    next(
      judgment_tasks.get_batches(
        name, 'train', batch_size=2, max_length=16, shuffle=False, seed=0, repeat=False
      )
    )
  with pytest.raises(DataError, match='no split'):
    _batches(name, 'test')
  with pytest.raises(DataError, match='No seqio task or mixture'):
    _batches('judgments_test_absent', 'train')


def test_mixture_yields_both_tasks(vocab_path):
  synthetic = judgments.synthetic_judgments(_PAIRS, corruptions_per_pair=1)
  human = [
    Judgment(source=s, candidate=r, score=0.8, raw_score=-5.0, doc='talk', origin='mqm')
    for s, r in _PAIRS
  ]
  a = judgment_tasks.register_judgments_task(
    'judgments_test_a', {'train': synthetic}, vocab_path, 24
  )
  b = judgment_tasks.register_judgments_task('judgments_test_b', {'train': human}, vocab_path, 24)
  name = judgment_tasks.register_judgments_mixture('judgments_test_mix', [a, b], rates=[1.0, 3.0])
  # One pass: every example of both tasks once.
  got = collections.Counter(doc for batch in _batches(name, 'train') for doc in batch['doc'])
  assert got == {'': len(synthetic), 'talk': len(human)}
  batch = next(
    judgment_tasks.get_batches(
      name, 'train', batch_size=16, max_length=24, shuffle=True, seed=0, repeat=True
    )
  )
  assert set(batch['doc']) == {'', 'talk'} and batch['inputs'].shape == (16, 24)
  assert set(batch['score'][batch['doc'] == 'talk']) == {np.float32(0.8)}
  # Re-registering replaces; bad inputs are refused.
  judgment_tasks.register_judgments_mixture(name, [a])
  assert {d for batch in _batches(name, 'train') for d in batch['doc']} == {''}
  with pytest.raises(DataError, match='not registered'):
    judgment_tasks.register_judgments_mixture('judgments_test_mix2', [a, 'judgments_test_absent'])
  with pytest.raises(DataError, match='rates'):
    judgment_tasks.register_judgments_mixture('judgments_test_mix2', [a, b], rates=[1.0])
