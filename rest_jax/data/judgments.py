"""Quality judgments (source, candidate, score) for the reward model: where they come from.

A `Judgment` is one translation `candidate` of a `source`, with a quality `score`
normalized to [0, 1] (1 = perfect), its `raw_score` on the scale it came from,
and optionally the human `reference`, the `doc` it belongs to and its `origin`.
Three sources of judgments:

- `read_judgments_tsv`: any TSV of `source, candidate, score[, reference]`, plain
  or gzip, with the score range given so it can be normalized linearly.
- `load_mqm_ende`: the Google expert MQM judgments of the WMT21 TED talks,
  English->German (research use only: read at run time from
  `$REST_JAX_MQM_DIR`, default `<repo>/../shared/data/wmt-mqm/`, never copied
  into the project).
- `synthetic_judgments`: each (source, reference) pair's reference and
  corrupted copies of it (`corruptions.corrupt`), labelled by rule
  (`corruptions.rule_label`, the default) or by a metric against the reference
  (sentence chrF), so the reward model sees bad translations too.

The MQM mapping to [0, 1]. An MQM score is minus the sum of error weights
(Freitag et al. 2021): a minor error weighs 1 (0.1 for minor punctuation), a
major error 5, a non-translation 25, and at most 5 errors count. So a raw score
is <= 0, 0 means no error, and -25 (one non-translation, the worst single
judgment a segment can get) is the floor of the scale: a candidate that is no
translation at all. We map it linearly and clip:

    score = clip(1 + raw / 25, 0, 1)

Linear, so that differences keep their MQM meaning: one major error (-5) gives
0.8, one minor error (-1) 0.96, two major errors 0.6; anything at or below -25
(five major errors, or a non-translation) is 0. The raw score is kept in
`raw_score`.

`split_by_document` holds out whole documents (no document in two splits).
The corruptions, probes and rule labels are in `corruptions.py` (no
TensorFlow); judgments become seqio tasks in `judgment_tasks.py`.

This is a data-layer module: it reads files with TensorFlow's gfile.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import re
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from rest_jax.data.corpora import corpus_files
from rest_jax.errors import DataError
from rest_jax.rewards import corruptions, reward_fns

# The MQM files: $REST_JAX_MQM_DIR, default <repo>/../shared/data/wmt-mqm.
_REPO_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_MQM_DIR = os.path.normpath(os.path.join(_REPO_DIR, '..', 'shared', 'data', 'wmt-mqm'))
MQM_DIR_ENV = 'REST_JAX_MQM_DIR'
MQM_ENDE_FILE = 'ted_ende.segment_scores.tsv.gz'
MQM_FLOOR = -25.0  # The non-translation weight: raw scores at or below it map to 0.
_MQM_COLUMNS = ('system', 'doc', 'seg_id', 'source', 'target', 'mqm_avg_score')

LABELS = ('rules', 'chrf')  # synthetic_judgments' labelling schemes.


@dataclasses.dataclass(frozen=True)
class Judgment:
  """One judged translation."""

  source: str  # The source sentence.
  candidate: str  # The judged translation (may be empty).
  score: float  # Quality normalized to [0, 1]; 1 is best.
  raw_score: float  # The score on its own scale (MQM, chrF 0-100, the TSV's).
  reference: str = ''  # A human reference translation, '' if none.
  doc: str = ''  # The document it belongs to, '' if unknown (see split_by_document).
  origin: str = ''  # Where it came from: 'mqm', 'mqm:ref', 'synthetic:<kind>', 'tsv'.


# -------------------------------------------------------------------------- TSV


def _require_judgments_file(path: str, hint: str) -> None:
  if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
    raise DataError(f'Judgments file {path!r} does not exist (or is a directory). {hint}')


def read_judgments_tsv(
  path: str,
  *,
  source_column: int = 0,
  candidate_column: int = 1,
  score_column: int = 2,
  reference_column: int | None = None,
  has_header: bool = False,
  score_min: float = 0.0,
  score_max: float = 1.0,
) -> list[Judgment]:
  """Reads judgments from a TSV (plain or gzip, UTF-8), one judgment a line.

  The score is normalized as `clip((s - score_min) / (score_max - score_min), 0, 1)`;
  `raw_score` keeps `s`. Blank lines are skipped; the candidate may be empty, the
  source may not. Each judgment has origin 'tsv' and no document.

  Args:
    path: the TSV file.
    source_column: 0-based column of the source sentence.
    candidate_column: 0-based column of the candidate translation.
    score_column: 0-based column of the score (a finite number).
    reference_column: 0-based column of a reference translation, or None.
    has_header: the first line is a header (skipped).
    score_min: the score that maps to 0 (the worst).
    score_max: the score that maps to 1 (the best); may be below `score_min`
      when lower scores are better.

  Returns:
    The judgments, in file order.

  Raises:
    DataError: the file is missing or not UTF-8 text, a line has too few
      columns, an empty source or a score that is not a finite number (the
      error names the file and line), the file holds no judgments, or the
      columns or score range are unusable.
  """
  columns = [source_column, candidate_column, score_column]
  if reference_column is not None:
    columns.append(reference_column)
  if min(columns) < 0 or len(set(columns)) != len(columns):
    raise DataError(
      f'read_judgments_tsv({path!r}): the columns {columns} (source, candidate, score'
      '[, reference]) must be different and >= 0.'
    )
  if not (math.isfinite(score_min) and math.isfinite(score_max)) or score_min == score_max:
    raise DataError(
      f'read_judgments_tsv({path!r}): score_min={score_min} and score_max={score_max} must be '
      'finite and different.'
    )
  _require_judgments_file(path, 'Fix the path given to read_judgments_tsv.')
  need = max(columns) + 1
  judgments = []
  lines = corpus_files.read_lines(path, 'judgments TSV')
  for lineno, line in enumerate(lines, 1):
    if (has_header and lineno == 1) or not line.strip():
      continue
    cols = line.split('\t')
    if len(cols) < need:
      raise DataError(
        f'{path}, line {lineno}: expected at least {need} tab-separated columns (source '
        f'{source_column}, candidate {candidate_column}, score {score_column}'
        + ('' if reference_column is None else f', reference {reference_column}')
        + f'), found {len(cols)}: {line[:80]!r}. Fix or delete the line, or set the columns.'
      )
    source = cols[source_column].strip()
    if not source:
      raise DataError(f'{path}, line {lineno}: the source is empty. Fix or delete the line.')
    raw = _parse_score(cols[score_column], path, lineno)
    if raw is None:
      raise DataError(
        f'{path}, line {lineno}: the score {cols[score_column]!r} (column {score_column}) '
        'is not a number. Fix or delete the line.'
      )
    score = (raw - score_min) / (score_max - score_min)
    judgments.append(
      Judgment(
        source=source,
        candidate=cols[candidate_column].strip(),
        score=float(np.clip(score, 0.0, 1.0)),
        raw_score=raw,
        reference='' if reference_column is None else cols[reference_column].strip(),
        origin='tsv',
      )
    )
  if not judgments:
    raise DataError(f'{path} holds no judgments. Give a TSV with at least one judgment line.')
  return judgments


def _parse_score(text: str, path: str, lineno: int) -> float | None:
  """A finite float; None for 'None'/'' (unrated); DataError for anything else."""
  text = text.strip()
  if text in ('', 'None'):
    return None
  try:
    value = float(text)
  except ValueError:
    value = math.nan
  if not math.isfinite(value):
    raise DataError(
      f'{path}, line {lineno}: the score {text!r} is not a finite number. Fix or delete the line.'
    )
  return value + 0.0  # -0.0 -> 0.0


# -------------------------------------------------------------------------- MQM


def mqm_dir() -> str:
  """The folder of the MQM files: $REST_JAX_MQM_DIR, default <repo>/../shared/data/wmt-mqm.

  Returns:
    The folder path (not checked).
  """
  return os.environ.get(MQM_DIR_ENV, DEFAULT_MQM_DIR)


def mqm_score(raw: float) -> float:
  """Maps an MQM score (<= 0, 0 = no error) to [0, 1]: clip(1 + raw / 25, 0, 1).

  Args:
    raw: the MQM score, minus the sum of the error weights.

  Returns:
    The normalized score; see the module docstring for the rationale.
  """
  return float(min(1.0, max(0.0, 1.0 - raw / MQM_FLOOR)))


def _is_reference_system(system: str) -> bool:
  """The human reference translations: 'ref', 'refA', 'ref-B', ..."""
  return re.fullmatch(r'ref(-?[A-Za-z])?', system) is not None


def load_mqm_ende(path: str | None = None) -> list[Judgment]:
  """Loads the WMT21 TED English->German MQM segment judgments.

  Reads `ted_ende.segment_scores.tsv.gz` (tab-separated, no quoting; header
  `system doc doc_id seg_id source target mqm_avg_score n_errors n_major
  n_minor`). Rows whose score is 'None' or empty (not rated) are skipped. The
  score is mapped by `mqm_score` (module docstring).

  The human reference systems ('ref', 'ref-A', 'refB', ...) give each other
  row of the same `seg_id` its `reference` (the first reference system by
  name); their own rows are kept as candidates too, with origin 'mqm:ref' and,
  as reference, another reference system's translation if there is one, else ''
  (a reference is not judged against itself). The other rows have origin 'mqm'.
  `doc` is the file's `doc` column.

  Args:
    path: the file, or a folder holding it; None for `mqm_dir()`.

  Returns:
    The judgments, in file order.

  Raises:
    DataError: the file is missing (set REST_JAX_MQM_DIR), its header lacks a
      needed column, or a line has the wrong number of columns or a score that
      is not a number (names the file and line).
  """
  path = mqm_dir() if path is None else path
  if tf.io.gfile.isdir(path):
    path = os.path.join(path, MQM_ENDE_FILE)
  _require_judgments_file(
    path,
    f'The MQM judgments are read from ${MQM_DIR_ENV} (default {DEFAULT_MQM_DIR}); set '
    f'{MQM_DIR_ENV} to the folder that holds {MQM_ENDE_FILE}.',
  )
  lines = corpus_files.read_lines(path, 'MQM judgments')
  header = lines[0].split('\t') if lines else []
  missing = [name for name in _MQM_COLUMNS if name not in header]
  if missing:
    raise DataError(
      f'{path}, line 1: the header lacks the columns {missing}; expected the tab-separated '
      f'header {" ".join(_MQM_COLUMNS)} (plus doc_id n_errors n_major n_minor).'
    )
  col = {name: header.index(name) for name in _MQM_COLUMNS}
  rows = []  # (lineno, system, doc, seg_id, source, target, raw or None)
  for lineno, line in enumerate(lines[1:], 2):
    if not line.strip():
      continue
    cols = line.split('\t')
    if len(cols) != len(header):
      raise DataError(
        f'{path}, line {lineno}: expected {len(header)} tab-separated columns like the header, '
        f'found {len(cols)}: {line[:80]!r}. Fix or delete the line.'
      )
    raw = _parse_score(cols[col['mqm_avg_score']], path, lineno)
    rows.append(
      (cols[col['system']].strip(), cols[col['doc']].strip(), cols[col['seg_id']].strip())
      + (cols[col['source']].strip(), cols[col['target']].strip(), raw)
    )
  # seg_id -> [(system, translation)] of the reference systems, by system name.
  references: dict[str, list[tuple[str, str]]] = {}
  for system, _, seg_id, _, target, _ in rows:
    if _is_reference_system(system):
      references.setdefault(seg_id, []).append((system, target))
  for refs in references.values():
    refs.sort()
  judgments, unrated = [], 0
  for system, doc, seg_id, source, target, raw in rows:
    if raw is None:
      unrated += 1
      continue
    refs = references.get(seg_id, [])
    if _is_reference_system(system):
      others = [text for name, text in refs if name != system]
      reference, origin = (others[0] if others else ''), 'mqm:ref'
    else:
      reference, origin = (refs[0][1] if refs else ''), 'mqm'
    judgments.append(
      Judgment(
        source=source,
        candidate=target,
        score=mqm_score(raw),
        raw_score=raw,
        reference=reference,
        doc=doc,
        origin=origin,
      )
    )
  if not judgments:
    raise DataError(f'{path} holds no rated MQM judgments.')
  logging.info(
    '%s: %d MQM judgments (%d unrated rows skipped), %d documents.',
    path,
    len(judgments),
    unrated,
    len({j.doc for j in judgments}),
  )
  return judgments


# -------------------------------------------------------------------- splitting


def _doc_key(judgment: Judgment) -> str:
  return judgment.doc or judgment.source


def split_by_document(
  judgments: Sequence[Judgment],
  *,
  num_eval_docs: int | None = None,
  eval_fraction: float = 0.2,
  seed: int = 0,
) -> tuple[list[Judgment], list[Judgment]]:
  """Holds out whole documents for evaluation: no document is in both parts.

  A judgment's document is its `doc`, or, when that is empty, its source
  sentence (so all candidates of a source stay together). The documents are
  ordered by sha256(f'{seed}:{doc}') (the order `corpus_files` splits corpora by); the
  first `num_eval_docs` are held out. Both parts keep the input order.

  Args:
    judgments: the judgments to split.
    num_eval_docs: documents to hold out; None for `eval_fraction` of them
      (rounded, at least 1 when eval_fraction > 0).
    eval_fraction: the fraction of documents to hold out when num_eval_docs is None.
    seed: the seed of the hashed order.

  Returns:
    (train, eval) lists of judgments.

  Raises:
    DataError: no judgments, a bad fraction or count, or too few documents to
      leave one for training.
  """
  if not judgments:
    raise DataError('split_by_document: no judgments to split.')
  groups: dict[str, None] = dict.fromkeys(_doc_key(j) for j in judgments)
  if num_eval_docs is None:
    if not 0.0 <= eval_fraction < 1.0:
      raise DataError(f'split_by_document: eval_fraction={eval_fraction} must be in [0, 1).')
    num_eval_docs = max(1, round(eval_fraction * len(groups))) if eval_fraction > 0 else 0
  if not 0 <= num_eval_docs < len(groups):
    raise DataError(
      f'split_by_document: {len(groups)} documents, cannot hold out {num_eval_docs} and keep '
      'at least one for training. Hold out fewer, or give more documents.'
    )
  # corpus_files.split_by_source orders distinct keys by sha256(f'{seed}:{key}'); each key is
  # one pair here.
  held = corpus_files.split_by_source([(key, key) for key in groups], num_eval_docs, 0, seed, '')
  eval_docs = {key for key, _ in held['validation']}
  train = [j for j in judgments if _doc_key(j) not in eval_docs]
  held_out = [j for j in judgments if _doc_key(j) in eval_docs]
  return train, held_out


# -------------------------------------------------------------------- synthetic


LabelFn = Callable[[Sequence[str], Sequence[str], Sequence[str]], reward_fns.Rewards]


def synthetic_judgments(
  pairs: Sequence[tuple[str, str]],
  *,
  corruptions_per_pair: int = 2,
  seed: int = 0,
  label_fn: LabelFn | None = None,
  labels: str = 'rules',
) -> list[Judgment]:
  """Judgments of references and corrupted references, labelled by rule or by a metric.

  For each (source, reference) pair: the reference itself (origin
  'synthetic:reference'), then `corruptions_per_pair` corrupted copies
  (origin 'synthetic:<kind>', made by `corruptions.corrupt`). The kinds cycle
  through `corruptions.CORRUPTIONS` over all
  corruptions in order (pair i gets kinds i*k, i*k+1, ... modulo their number);
  with a single pair 'other_sentence' is left out of the cycle. Pair i draws
  from `random.Random(f'{seed}:{i}')`; 'other_sentence' uses the reference of
  another pair, drawn from it ('append_other' too, with a single pair ''). Each
  row is labelled by `label_fn(sources, candidates, references)` in one call:
  raw_score = raw; with labels='chrf' score = reward, with labels='rules'
  score = `corruptions.rule_label(kind, reward)` (the reference 1.0, the copied
  source, empty output and another sentence 0, other kinds reward times their
  `corruptions.RULE_PENALTIES` factor). The judgments carry the reference and no document.

  Args:
    pairs: (source, reference) pairs.
    corruptions_per_pair: corrupted copies per pair, k >= 0.
    seed: the corruption seed.
    label_fn: a reward function against the reference; default
      `reward_fns.SentenceChrF()` (reward = chrF / 100).
    labels: 'rules' (the default, `corruptions.rule_label` on the metric) or 'chrf' (the
      metric itself, whatever `label_fn` is).

  Returns:
    len(pairs) * (1 + k) judgments, pair by pair.

  Raises:
    ValueError: corruptions_per_pair < 0, an unknown `labels`, or the labels
      are not one per row.
  """
  if corruptions_per_pair < 0:
    raise ValueError(f'synthetic_judgments: corruptions_per_pair={corruptions_per_pair} < 0.')
  if labels not in LABELS:
    raise ValueError(f'synthetic_judgments: labels={labels!r}; use one of {LABELS}.')
  label_fn = reward_fns.SentenceChrF() if label_fn is None else label_fn
  kinds = corruptions.CORRUPTIONS
  if len(pairs) == 1:
    kinds = tuple(k for k in kinds if k != 'other_sentence')
  rows = []  # (source, candidate, reference, origin)
  for i, (source, reference) in enumerate(pairs):
    rng = random.Random(f'{seed}:{i}')
    rows.append((source, reference, reference, 'synthetic:reference'))
    for j in range(corruptions_per_pair):
      kind = kinds[(i * corruptions_per_pair + j) % len(kinds)]
      other = ''
      if kind in ('other_sentence', 'append_other') and len(pairs) > 1:
        other = pairs[(i + 1 + rng.randrange(len(pairs) - 1)) % len(pairs)][1]
      candidate = corruptions.corrupt(reference, source, other, kind, rng)
      rows.append((source, candidate, reference, f'synthetic:{kind}'))
  if not rows:
    return []
  sources, candidates, references, origins = (list(column) for column in zip(*rows))
  metric = label_fn(sources, candidates, references)
  if len(metric) != len(rows):
    raise ValueError(f'synthetic_judgments: {len(metric)} labels for {len(rows)} rows.')
  scores = [float(v) for v in metric.reward]
  if labels == 'rules':
    scores = [
      corruptions.rule_label(o.removeprefix('synthetic:'), v) for o, v in zip(origins, scores)
    ]
  return [
    Judgment(source=s, candidate=c, score=score, raw_score=float(raw), reference=r, origin=o)
    for s, c, r, o, score, raw in zip(sources, candidates, references, origins, scores, metric.raw)
  ]
