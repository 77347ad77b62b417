"""Tests for rest_jax.judgments: TSV and MQM reading, splits, corruptions, probes, seqio."""

from __future__ import annotations

import collections
import dataclasses
import gzip
import os
import random

import numpy as np
import pytest
import sentencepiece as spm

from rest_jax import judgments, reward_model, rewards, tasks
from rest_jax.judgments import Judgment
from rest_jax.tasks import DataError

_REAL_MQM = os.path.join(judgments.DEFAULT_MQM_DIR, judgments.MQM_ENDE_FILE)
_SENTENCE = 'the quick brown fox jumps over the lazy dog'  # 9 words, 8 distinct.


def _write(path, lines: list[str], gz: bool = False) -> str:
  data = ''.join(line + '\n' for line in lines).encode('utf-8')
  with open(path, 'wb') as f:
    f.write(gzip.compress(data) if gz else data)
  return str(path)


@pytest.fixture(scope='module')
def vocab_path() -> str:
  return tasks.tatoeba_en_de().vocab_path


# ------------------------------------------------------------------------- TSV


def test_read_tsv_normalizes_scores_and_reads_references(tmp_path):
  path = _write(
    tmp_path / 'j.tsv',
    ['a b\tx y\t50\tref1', '', 'c\t\t120\tref2', 'd\tz\t-10\tref3'],
  )
  got = judgments.read_judgments_tsv(path, reference_column=3, score_min=0, score_max=100)
  assert [(j.source, j.candidate, j.reference) for j in got] == [
    ('a b', 'x y', 'ref1'),
    ('c', '', 'ref2'),
    ('d', 'z', 'ref3'),
  ]
  assert [j.score for j in got] == [0.5, 1.0, 0.0]
  assert [j.raw_score for j in got] == [50.0, 120.0, -10.0]
  assert {j.origin for j in got} == {'tsv'} and {j.doc for j in got} == {''}


def test_read_tsv_gzip_header_and_columns(tmp_path):
  path = _write(
    tmp_path / 'j.tsv.gz',
    ['score\tcandidate\tsource', '0.25\tcand one\tsrc one', '1\tcand two\tsrc two'],
    gz=True,
  )
  got = judgments.read_judgments_tsv(
    path, source_column=2, candidate_column=1, score_column=0, has_header=True
  )
  assert [(j.source, j.candidate, j.score, j.reference) for j in got] == [
    ('src one', 'cand one', 0.25, ''),
    ('src two', 'cand two', 1.0, ''),
  ]
  # Lower-is-better scales: score_max < score_min.
  columns = {'source_column': 2, 'candidate_column': 1, 'score_column': 0, 'has_header': True}
  flipped = judgments.read_judgments_tsv(path, **columns, score_min=1, score_max=0)
  assert [j.score for j in flipped] == [0.75, 0.0]


def test_read_tsv_errors_name_file_and_line(tmp_path):
  short = _write(tmp_path / 'short.tsv', ['a\tb\t0.5', 'a\tb\t0.5', 'only\ttwo'])
  with pytest.raises(DataError, match=r'short\.tsv, line 3: expected at least 3'):
    judgments.read_judgments_tsv(short)
  bad_score = _write(tmp_path / 'bad.tsv', ['a\tb\t0.5', 'a\tb\tgood'])
  with pytest.raises(DataError, match=r'bad\.tsv, line 2: the score'):
    judgments.read_judgments_tsv(bad_score)
  nan_score = _write(tmp_path / 'nan.tsv', ['a\tb\tnan'])
  with pytest.raises(DataError, match=r'nan\.tsv, line 1'):
    judgments.read_judgments_tsv(nan_score)
  no_source = _write(tmp_path / 'nosrc.tsv', [' \tb\t0.5'])
  with pytest.raises(DataError, match=r'nosrc\.tsv, line 1: the source is empty'):
    judgments.read_judgments_tsv(no_source)


def test_read_tsv_missing_or_empty_file(tmp_path):
  missing = str(tmp_path / 'nope.tsv')
  with pytest.raises(DataError, match='nope.tsv'):
    judgments.read_judgments_tsv(missing)
  empty = _write(tmp_path / 'empty.tsv', ['header\tonly\tscore'])
  with pytest.raises(DataError, match='no judgments'):
    judgments.read_judgments_tsv(empty, has_header=True)
  with pytest.raises(DataError, match='different'):
    judgments.read_judgments_tsv(empty, score_column=0)
  with pytest.raises(DataError, match='score_min'):
    judgments.read_judgments_tsv(empty, score_min=1, score_max=1)


# ------------------------------------------------------------------------- MQM

_MQM_HEADER = 'system doc doc_id seg_id source target mqm_avg_score n_errors n_major n_minor'
_MQM_ROWS = [
  # system, doc, doc_id, seg_id, source, target, score
  ('sysA', 'talk.1', '1', '1', 'Hello world.', 'Hallo Welt.', '-0.000000'),
  ('ref', 'talk.1', '1', '1', 'Hello world.', 'Hallo, Welt.', '-0.000000'),
  ('sysB', 'talk.1', '1', '1', 'Hello world.', 'Welt Welt Welt.', '-25.000000'),
  ('sysC', 'talk.1', '1', '1', 'Hello world.', 'Hallo.', 'None'),
  ('sysA', 'talk.1', '2', '2', 'He said "hi".', 'Er sagte "hi".', '-5.000000'),
  ('ref', 'talk.1', '2', '2', 'He said "hi".', 'Er sagte „hallo".', '-1.000000'),
  ('sysB', 'talk.1', '2', '2', 'He said "hi".', 'Sagte.', '-30.000000'),
  ('sysA', 'talk.2', '1', '3', 'Thanks.', 'Danke!', '-1.000000'),
  ('ref', 'talk.2', '1', '3', 'Thanks.', 'Danke.', 'None'),
]


def _write_mqm(folder) -> str:
  lines = [_MQM_HEADER.replace(' ', '\t')]
  lines += ['\t'.join(row) + '\t0\t0\t0' for row in _MQM_ROWS]
  os.makedirs(folder, exist_ok=True)
  return _write(os.path.join(folder, judgments.MQM_ENDE_FILE), lines, gz=True)


def test_mqm_score_mapping():
  assert judgments.mqm_score(0.0) == 1.0
  assert judgments.mqm_score(-1.0) == pytest.approx(0.96)
  assert judgments.mqm_score(-5.0) == pytest.approx(0.8)
  assert judgments.mqm_score(-25.0) == 0.0
  assert judgments.mqm_score(-30.0) == 0.0


def test_load_mqm_fixture(tmp_path):
  path = _write_mqm(tmp_path / 'mqm')
  got = judgments.load_mqm_ende(path)
  # The 'None' rows (sysC seg 1, ref seg 3) are skipped.
  assert [(j.candidate, j.raw_score) for j in got] == [
    ('Hallo Welt.', 0.0),
    ('Hallo, Welt.', 0.0),
    ('Welt Welt Welt.', -25.0),
    ('Er sagte "hi".', -5.0),
    ('Er sagte „hallo".', -1.0),
    ('Sagte.', -30.0),
    ('Danke!', -1.0),
  ]
  assert [j.score for j in got] == pytest.approx([1.0, 1.0, 0.0, 0.8, 0.96, 0.0, 0.96])
  assert [j.origin for j in got] == ['mqm', 'mqm:ref', 'mqm', 'mqm', 'mqm:ref', 'mqm', 'mqm']
  assert [j.doc for j in got] == ['talk.1'] * 6 + ['talk.2']
  # References by seg_id: the unrated reference of seg 3 still serves as its reference;
  # a reference row has no other reference to be judged against.
  assert [j.reference for j in got] == [
    'Hallo, Welt.',
    '',
    'Hallo, Welt.',
    'Er sagte „hallo".',
    '',
    'Er sagte „hallo".',
    'Danke.',
  ]
  assert got[3].source == 'He said "hi".'  # No quote processing.
  # A folder works too, and so does the environment variable.
  assert judgments.load_mqm_ende(str(tmp_path / 'mqm')) == got


def test_load_mqm_default_dir_and_missing_file(tmp_path, monkeypatch):
  _write_mqm(tmp_path / 'elsewhere')
  monkeypatch.setenv('REST_JAX_MQM_DIR', str(tmp_path / 'elsewhere'))
  assert len(judgments.load_mqm_ende()) == 7
  monkeypatch.setenv('REST_JAX_MQM_DIR', str(tmp_path / 'absent'))
  with pytest.raises(DataError, match=r'absent.*REST_JAX_MQM_DIR'):
    judgments.load_mqm_ende()


def test_load_mqm_malformed_line(tmp_path):
  path = _write_mqm(tmp_path)
  with gzip.open(path, 'rt', encoding='utf-8') as f:
    lines = f.read().splitlines()
  lines[3] = lines[3].rsplit('\t', 2)[0]  # Two columns short.
  _write(path, lines, gz=True)
  with pytest.raises(DataError, match=rf'{judgments.MQM_ENDE_FILE}, line 4: expected 10'):
    judgments.load_mqm_ende(path)
  _write(path, ['system\tsource\ttarget'], gz=True)
  with pytest.raises(DataError, match=r'line 1: the header lacks'):
    judgments.load_mqm_ende(path)


@pytest.mark.skipif(
  not os.path.exists(_REAL_MQM),
  reason=(
    f'{_REAL_MQM} is not on this machine (WMT MQM is research-use data, read from '
    '../shared/data and never committed); the fixture-file tests above cover its parser'
  ),
)
def test_load_real_mqm_ende():
  with gzip.open(_REAL_MQM, 'rt', encoding='utf-8') as f:
    rows = [line.split('\t') for line in f.read().splitlines()[1:]]
  assert len(rows) == 7406
  unrated = sum(row[6].strip() in ('None', '') for row in rows)
  got = judgments.load_mqm_ende(_REAL_MQM)
  assert len(got) == 7406 - unrated
  assert len({row[3] for row in rows}) == 529  # Source segments (seg_id).
  assert collections.Counter(j.origin for j in got)['mqm:ref'] == 529 - sum(
    row[0] == 'ref' and row[6].strip() in ('None', '') for row in rows
  )
  assert all(j.reference for j in got if j.origin == 'mqm')
  scores = np.array([j.score for j in got])
  assert scores.min() >= 0.0 and scores.max() == 1.0
  train, held = judgments.split_by_document(got)
  assert not {j.doc for j in train} & {j.doc for j in held}


# ------------------------------------------------------------------- splitting


def _doc_judgments(num_docs: int = 10, per_doc: int = 3) -> list[Judgment]:
  return [
    Judgment(source=f's{d}.{i}', candidate='c', score=0.5, raw_score=0.5, doc=f'doc{d}')
    for d in range(num_docs)
    for i in range(per_doc)
  ]


def test_split_by_document_is_disjoint_and_deterministic():
  data = _doc_judgments()
  train, held = judgments.split_by_document(data)
  assert len({j.doc for j in held}) == 2  # 20% of 10 documents.
  assert not {j.doc for j in train} & {j.doc for j in held}
  assert sorted(train + held, key=data.index) == data
  assert train == [j for j in data if j in train]  # Input order kept.
  assert judgments.split_by_document(data) == (train, held)
  seeds = {
    tuple(sorted({j.doc for j in judgments.split_by_document(data, seed=s)[1]})) for s in range(5)
  }
  assert len(seeds) > 1
  _, four = judgments.split_by_document(data, num_eval_docs=4, seed=3)
  assert len({j.doc for j in four}) == 4 and len(four) == 12


def test_split_by_document_groups_docless_judgments_by_source():
  data = [
    Judgment(source=f's{i % 5}', candidate=f'c{i}', score=0.5, raw_score=0.5) for i in range(20)
  ]
  train, held = judgments.split_by_document(data, num_eval_docs=2)
  assert len({j.source for j in held}) == 2 and len(held) == 8
  assert not {j.source for j in train} & {j.source for j in held}


def test_split_by_document_errors():
  with pytest.raises(DataError, match='no judgments'):
    judgments.split_by_document([])
  with pytest.raises(DataError, match='cannot hold out 3'):
    judgments.split_by_document(_doc_judgments(num_docs=3), num_eval_docs=3)
  with pytest.raises(DataError, match='eval_fraction'):
    judgments.split_by_document(_doc_judgments(), eval_fraction=1.0)


# ----------------------------------------------------------------- corruptions


def _corrupt(kind: str, seed: int = 0, text: str = _SENTENCE) -> str:
  return judgments.corrupt(text, 'der Quelltext', 'another sentence', kind, random.Random(seed))


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
  lone = judgments.corrupt('eins', 'one', '', 'append_other', random.Random(0)).split()
  assert len(lone) >= 3 and set(lone) == {'eins'}


def test_corruptions_are_deterministic_and_edge_cases():
  for kind in judgments.CORRUPTIONS:
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
  assert judgments.probe(text, source, 'repetition') == (
    'Ich habe einen Hund . Ich habe einen Hund . Ich habe einen Hund .'
  )
  assert judgments.probe(text, source, 'permutation') == '. Hund einen habe Ich'
  assert judgments.probe(text, source, 'truncation') == 'Ich habe'
  assert judgments.probe('a b c d', source, 'truncation') == 'a b'
  assert judgments.probe('allein', source, 'truncation') == 'allein'
  assert judgments.probe(text, source, 'copy_source') == source
  assert judgments.probe(text, source, 'empty') == ''
  assert judgments.probe(text, source, 'over_length') == (
    'Ich habe einen Hund . . Hund einen habe Ich'
  )
  assert judgments.probe('  a   b ', source, 'over_length') == 'a b b a'
  assert judgments.probe('', source, 'over_length') == ''
  assert set(judgments.PROBES) == {
    'repetition',
    'permutation',
    'truncation',
    'copy_source',
    'empty',
    'over_length',
  }
  with pytest.raises(ValueError, match='unknown kind'):
    judgments.probe(text, source, 'shout')


_PAIRS = [
  ('I have a dog.', 'Ich habe einen Hund.'),
  ('The weather is nice today.', 'Das Wetter ist heute schön.'),
  ('Where is the train station?', 'Wo ist der Bahnhof?'),
  ('She reads a long book.', 'Sie liest ein langes Buch.'),
]


def test_synthetic_judgments_count_labels_and_kinds():
  got = judgments.synthetic_judgments(_PAIRS, corruptions_per_pair=3, seed=1)
  assert len(got) == len(_PAIRS) * (1 + 3)
  refs = [j for j in got if j.origin == 'synthetic:reference']
  assert [(j.source, j.candidate) for j in refs] == _PAIRS
  assert all(j.score == 1.0 and j.raw_score == pytest.approx(100.0) for j in refs)
  kinds = [j.origin.removeprefix('synthetic:') for j in got if j not in refs]
  n = len(judgments.CORRUPTIONS)
  assert kinds == [judgments.CORRUPTIONS[i % n] for i in range(12)]  # Cycled.
  empty = [j for j in got if j.origin == 'synthetic:empty']
  assert empty and all(j.candidate == '' and j.score == 0.0 for j in empty)
  other = next(j for j in got if j.origin == 'synthetic:other_sentence')
  assert other.candidate in {r for _, r in _PAIRS} - {other.reference}
  assert all(j.reference == dict(_PAIRS)[j.source] for j in got)
  assert all(0.0 <= j.score <= 1.0 for j in got)
  assert judgments.synthetic_judgments(_PAIRS, corruptions_per_pair=3, seed=1) == got
  assert len(judgments.synthetic_judgments(_PAIRS, corruptions_per_pair=0)) == len(_PAIRS)


def test_rule_label():
  assert judgments.rule_label('reference', 0.3) == 1.0
  for kind in ('copy_source', 'empty', 'other_sentence'):
    assert judgments.rule_label(kind, 0.9) == 0.0
  assert judgments.rule_label('repeat_sentence', 0.7) == pytest.approx(0.7 * 0.2)
  assert judgments.rule_label('truncate', 0.6) == pytest.approx(0.3)
  assert set(judgments.RULE_PENALTIES) == set(judgments.CORRUPTIONS)
  assert all(0.0 <= v < 1.0 for v in judgments.RULE_PENALTIES.values())
  with pytest.raises(ValueError, match='unknown kind'):
    judgments.rule_label('shout', 0.5)


def test_rule_labels_rank_hacks_below_the_reference():
  pairs = _PAIRS * 5  # 20 pairs x 9 corruptions: every kind at least 6 times.
  by_kind = collections.defaultdict(list)
  chrf_by_kind = collections.defaultdict(list)
  ruled = judgments.synthetic_judgments(pairs, corruptions_per_pair=9, seed=3)
  plain = judgments.synthetic_judgments(pairs, corruptions_per_pair=9, seed=3, labels='chrf')
  assert [j.candidate for j in ruled] == [j.candidate for j in plain]  # Same candidates.
  for r, c in zip(ruled, plain):
    kind = r.origin.removeprefix('synthetic:')
    by_kind[kind].append(r.score)
    chrf_by_kind[kind].append(c.score)
    assert r.raw_score == c.raw_score  # raw_score stays chrF.
  assert set(by_kind) == {'reference', *judgments.CORRUPTIONS}
  assert by_kind['reference'] == [1.0] * len(pairs)
  for kind in ('copy_source', 'empty', 'other_sentence'):
    assert by_kind[kind] and set(by_kind[kind]) == {0.0}
  # chrF alone rates a repeated sentence highly; the rules rate it far below the reference.
  assert min(chrf_by_kind['repeat_sentence']) > 0.5
  assert max(by_kind['repeat_sentence']) < 0.25
  assert max(by_kind['append_other']) < 0.35
  for kind in judgments.CORRUPTIONS:
    assert max(by_kind[kind]) < 1.0
  with pytest.raises(ValueError, match='labels'):
    judgments.synthetic_judgments(pairs, labels='bleu')


def test_guard_policy_label():
  ref = 'Ich habe einen Hund .'  # 5 words: more than 7.5 is too long.
  assert not judgments.is_hack('Ich habe einen Hund .', ref)
  assert not judgments.is_hack('ich habe habe einen großen Hund .', ref)  # 7 words, no 3-gram.
  assert judgments.is_hack('Ich habe einen Hund , ich habe einen', ref)  # 'ich habe einen' twice.
  assert judgments.is_hack('a b c d e f g h', ref)  # 8 > 1.5 * 5.
  assert judgments.guard_policy_label('Ich habe einen Hund .', ref, 0.8) == 0.8
  assert judgments.guard_policy_label('a b c d e f g h', ref, 0.5) == pytest.approx(
    0.5 * judgments.POLICY_HACK_PENALTY
  )
  assert judgments.POLICY_HACK_PENALTY < 1.0


def test_synthetic_judgments_custom_label_fn_and_single_pair():
  def length_ratio(sources, candidates, references):
    raw = [len(c) / max(len(r), 1) for c, r in zip(candidates, references)]
    return rewards.Rewards(reward=np.clip(raw, 0, 1), raw=np.array(raw))

  got = judgments.synthetic_judgments(
    _PAIRS[:1], corruptions_per_pair=7, seed=0, label_fn=length_ratio
  )
  assert 'synthetic:other_sentence' not in {j.origin for j in got}  # No other pair.
  assert got[0].score == 1.0 and got[0].raw_score == 1.0
  with pytest.raises(ValueError, match='corruptions_per_pair'):
    judgments.synthetic_judgments(_PAIRS, corruptions_per_pair=-1)


# ----------------------------------------------------------------------- seqio


def _batches(name: str, split: str, **kwargs) -> list[dict]:
  kwargs = {
    'batch_size': 3,
    'max_length': 24,
    'shuffle': False,
    'seed': 0,
    'repeat': False,
  } | kwargs
  return list(judgments.get_batches(name, split, **kwargs))


def test_task_round_trip(vocab_path):
  data = judgments.synthetic_judgments(_PAIRS, corruptions_per_pair=1)
  data = [dataclasses.replace(j, doc=f'd{i}') for i, j in enumerate(data)]
  splits = {'train': data[:5], 'validation': data[5:]}
  name = judgments.register_judgments_task('judgments_test_rt', splits, vocab_path, 24)
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
  it = judgments.get_batches(
    name, 'train', batch_size=5, max_length=32, shuffle=True, seed=3, repeat=True
  )
  shuffled = [next(it) for _ in range(4)]
  assert all(b['inputs'].shape == (5, 32) for b in shuffled)
  seen = [c for b in shuffled for c in b['candidate_pretokenized']]
  assert set(seen) <= {j.candidate for j in splits['train']}
  assert seen[:5] != [j.candidate for j in splits['train']]
  # Re-registering replaces the task.
  judgments.register_judgments_task(name, {'train': data[:2]}, vocab_path, 24)
  assert sum(len(b['score']) for b in _batches(name, 'train')) == 2


def test_task_errors(vocab_path, tmp_path):
  data = judgments.synthetic_judgments(_PAIRS[:2], corruptions_per_pair=0)
  with pytest.raises(DataError, match='every split needs'):
    judgments.register_judgments_task('judgments_test_err', {'train': []}, vocab_path, 24)
  with pytest.raises(DataError, match='not a valid seqio name'):
    judgments.register_judgments_task('bad name', {'train': data}, vocab_path, 24)
  with pytest.raises(DataError, match='missing.model'):
    judgments.register_judgments_task(
      'judgments_test_err', {'train': data}, str(tmp_path / 'missing.model'), 24
    )
  name = judgments.register_judgments_task('judgments_test_err', {'train': data}, vocab_path, 24)
  with pytest.raises(DataError, match='shorter than'):
    next(
      judgments.get_batches(
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
  a = judgments.register_judgments_task('judgments_test_a', {'train': synthetic}, vocab_path, 24)
  b = judgments.register_judgments_task('judgments_test_b', {'train': human}, vocab_path, 24)
  name = judgments.register_judgments_mixture('judgments_test_mix', [a, b], rates=[1.0, 3.0])
  # One pass: every example of both tasks once.
  got = collections.Counter(doc for batch in _batches(name, 'train') for doc in batch['doc'])
  assert got == {'': len(synthetic), 'talk': len(human)}
  batch = next(
    judgments.get_batches(
      name, 'train', batch_size=16, max_length=24, shuffle=True, seed=0, repeat=True
    )
  )
  assert set(batch['doc']) == {'', 'talk'} and batch['inputs'].shape == (16, 24)
  assert set(batch['score'][batch['doc'] == 'talk']) == {np.float32(0.8)}
  # Re-registering replaces; bad inputs are refused.
  judgments.register_judgments_mixture(name, [a])
  assert {d for batch in _batches(name, 'train') for d in batch['doc']} == {''}
  with pytest.raises(DataError, match='not registered'):
    judgments.register_judgments_mixture('judgments_test_mix2', [a, 'judgments_test_absent'])
  with pytest.raises(DataError, match='rates'):
    judgments.register_judgments_mixture('judgments_test_mix2', [a, b], rates=[1.0])
