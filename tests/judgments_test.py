"""Tests for rest_jax.data.judgments: TSV and MQM reading, document splits, synthetic judgments."""

from __future__ import annotations

import collections
import gzip
import os

import numpy as np
import pytest

from rest_jax.data import judgments
from rest_jax.data.judgments import Judgment
from rest_jax.errors import DataError
from rest_jax.rewards import corruptions, reward_fns

_REAL_MQM = os.path.join(judgments.DEFAULT_MQM_DIR, judgments.MQM_ENDE_FILE)


def _write(path, lines: list[str], gz: bool = False) -> str:
  data = ''.join(line + '\n' for line in lines).encode('utf-8')
  with open(path, 'wb') as f:
    f.write(gzip.compress(data) if gz else data)
  return str(path)


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


# ------------------------------------------------------------------ synthetic


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
  n = len(corruptions.CORRUPTIONS)
  assert kinds == [corruptions.CORRUPTIONS[i % n] for i in range(12)]  # Cycled.
  empty = [j for j in got if j.origin == 'synthetic:empty']
  assert empty and all(j.candidate == '' and j.score == 0.0 for j in empty)
  other = next(j for j in got if j.origin == 'synthetic:other_sentence')
  assert other.candidate in {r for _, r in _PAIRS} - {other.reference}
  assert all(j.reference == dict(_PAIRS)[j.source] for j in got)
  assert all(0.0 <= j.score <= 1.0 for j in got)
  assert judgments.synthetic_judgments(_PAIRS, corruptions_per_pair=3, seed=1) == got
  assert len(judgments.synthetic_judgments(_PAIRS, corruptions_per_pair=0)) == len(_PAIRS)


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
  assert set(by_kind) == {'reference', *corruptions.CORRUPTIONS}
  assert by_kind['reference'] == [1.0] * len(pairs)
  for kind in ('copy_source', 'empty', 'other_sentence'):
    assert by_kind[kind] and set(by_kind[kind]) == {0.0}
  # chrF alone rates a repeated sentence highly; the rules rate it far below the reference.
  assert min(chrf_by_kind['repeat_sentence']) > 0.5
  assert max(by_kind['repeat_sentence']) < 0.25
  assert max(by_kind['append_other']) < 0.35
  for kind in corruptions.CORRUPTIONS:
    assert max(by_kind[kind]) < 1.0
  with pytest.raises(ValueError, match='labels'):
    judgments.synthetic_judgments(pairs, labels='bleu')


def test_synthetic_judgments_custom_label_fn_and_single_pair():
  def length_ratio(sources, candidates, references):
    raw = [len(c) / max(len(r), 1) for c, r in zip(candidates, references)]
    return reward_fns.Rewards(reward=np.clip(raw, 0, 1), raw=np.array(raw))

  got = judgments.synthetic_judgments(
    _PAIRS[:1], corruptions_per_pair=7, seed=0, label_fn=length_ratio
  )
  assert 'synthetic:other_sentence' not in {j.origin for j in got}  # No other pair.
  assert got[0].score == 1.0 and got[0].raw_score == 1.0
  with pytest.raises(ValueError, match='corruptions_per_pair'):
    judgments.synthetic_judgments(_PAIRS, corruptions_per_pair=-1)
