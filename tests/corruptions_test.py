"""Tests for rest_jax.rewards.corruptions: text corruptions, reward-hacking probes, rule labels."""

from __future__ import annotations

import random

import pytest

from rest_jax.rewards import corruptions

_SENTENCE = 'the quick brown fox jumps over the lazy dog'  # 9 words, 8 distinct.


def _corrupt(kind: str, seed: int = 0, text: str = _SENTENCE) -> str:
  return corruptions.corrupt(text, 'der Quelltext', 'another sentence', kind, random.Random(seed))


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_corruptions_change_the_text_as_specified(seed):
  words = _SENTENCE.split()
  dropped = _corrupt('drop_words', seed).split()
  assert len(dropped) == 9 - 3  # round(0.3 * 9) words dropped.
  it = iter(words)
  assert all(w in it for w in dropped)  # A subsequence: the order is kept.

  swapped = _corrupt('swap_words', seed).split()
  assert swapped != words and sorted(swapped) == sorted(words)

  repeated = _corrupt('repeat', seed).split()
  extra = len(repeated) - len(words)
  assert extra >= 1
  # Some phrase of 1-3 words occurs 2-4 times in a row, and removing the extra copies restores it.
  found = False
  for span in (1, 2, 3):
    for start in range(len(words) - span + 1):
      phrase = words[start : start + span]
      for times in (2, 3, 4):
        if (times - 1) * span == extra and (
          words[:start] + phrase * times + words[start + span :] == repeated
        ):
          found = True
  assert found, repeated

  truncated = _corrupt('truncate', seed).split()
  assert 3 <= len(truncated) <= 6 and truncated == words[: len(truncated)]

  assert _corrupt('copy_source', seed) == 'der Quelltext'
  assert _corrupt('empty', seed) == ''
  assert _corrupt('other_sentence', seed) == 'another sentence'

  # The whole reference 2-3 times.
  assert _corrupt('repeat_sentence', seed) in (' '.join([_SENTENCE] * t) for t in (2, 3))

  # The reference, then 4 to 13 (n // 2 to 3n // 2) words of it or of the other sentence.
  appended = _corrupt('append_other', seed).split()
  assert appended[:9] == words and 4 <= len(appended) - 9 <= 13
  assert set(appended[9:]) <= set(words) | {'another', 'sentence'}


def test_new_corruptions_edge_cases_and_variety():
  assert {_corrupt('repeat_sentence', s).count('fox') for s in range(20)} == {2, 3}
  others = [_corrupt('append_other', s).split()[9:] for s in range(20)]
  assert any({'another', 'sentence'} & set(extra) for extra in others)  # Draws from `other`.
  assert len({tuple(extra) for extra in others}) > 10
  for kind in ('repeat_sentence', 'append_other'):
    assert _corrupt(kind, text='') == ''
  assert _corrupt('append_other', text='eins').split()[0] == 'eins'
  # One word, no other sentence: at least 2 extra words, all that word.
  lone = corruptions.corrupt('eins', 'one', '', 'append_other', random.Random(0)).split()
  assert len(lone) >= 3 and set(lone) == {'eins'}


def test_corruptions_are_deterministic_and_edge_cases():
  for kind in corruptions.CORRUPTIONS:
    assert _corrupt(kind, 7) == _corrupt(kind, 7)
  assert len({_corrupt('swap_words', s) for s in range(10)}) > 1
  assert _corrupt('drop_words', text='two words').split() in (['two'], ['words'])
  assert _corrupt('swap_words', text='two words') == 'words two'
  assert _corrupt('truncate', text='two words') == 'two'
  for kind in ('drop_words', 'swap_words', 'truncate'):
    assert _corrupt(kind, text='one') == 'one'
  with pytest.raises(ValueError, match='unknown kind'):
    _corrupt('shout')


def test_probes_exact_outputs():
  text, source = 'Ich habe einen Hund .', 'I have a dog .'
  assert corruptions.probe(text, source, 'repetition') == (
    'Ich habe einen Hund . Ich habe einen Hund . Ich habe einen Hund .'
  )
  assert corruptions.probe(text, source, 'permutation') == '. Hund einen habe Ich'
  assert corruptions.probe(text, source, 'truncation') == 'Ich habe'
  assert corruptions.probe('a b c d', source, 'truncation') == 'a b'
  assert corruptions.probe('allein', source, 'truncation') == 'allein'
  assert corruptions.probe(text, source, 'copy_source') == source
  assert corruptions.probe(text, source, 'empty') == ''
  assert corruptions.probe(text, source, 'over_length') == (
    'Ich habe einen Hund . . Hund einen habe Ich'
  )
  assert corruptions.probe('  a   b ', source, 'over_length') == 'a b b a'
  assert corruptions.probe('', source, 'over_length') == ''
  assert set(corruptions.PROBES) == {
    'repetition',
    'permutation',
    'truncation',
    'copy_source',
    'empty',
    'over_length',
  }
  with pytest.raises(ValueError, match='unknown kind'):
    corruptions.probe(text, source, 'shout')


def test_rule_label():
  assert corruptions.rule_label('reference', 0.3) == 1.0
  for kind in ('copy_source', 'empty', 'other_sentence'):
    assert corruptions.rule_label(kind, 0.9) == 0.0
  assert corruptions.rule_label('repeat_sentence', 0.7) == pytest.approx(0.7 * 0.2)
  assert corruptions.rule_label('truncate', 0.6) == pytest.approx(0.3)
  assert set(corruptions.RULE_PENALTIES) == set(corruptions.CORRUPTIONS)
  assert all(0.0 <= v < 1.0 for v in corruptions.RULE_PENALTIES.values())
  with pytest.raises(ValueError, match='unknown kind'):
    corruptions.rule_label('shout', 0.5)


def test_guard_policy_label():
  ref = 'Ich habe einen Hund .'  # 5 words: more than 7.5 is too long.
  assert not corruptions.is_hack('Ich habe einen Hund .', ref)
  assert not corruptions.is_hack('ich habe habe einen großen Hund .', ref)  # 7 words, no 3-gram.
  assert corruptions.is_hack('Ich habe einen Hund , ich habe einen', ref)  # 'ich habe einen' twice.
  assert corruptions.is_hack('a b c d e f g h', ref)  # 8 > 1.5 * 5.
  assert corruptions.guard_policy_label('Ich habe einen Hund .', ref, 0.8) == 0.8
  assert corruptions.guard_policy_label('a b c d e f g h', ref, 0.5) == pytest.approx(
    0.5 * corruptions.POLICY_HACK_PENALTY
  )
  assert corruptions.POLICY_HACK_PENALTY < 1.0
