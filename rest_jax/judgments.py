"""Quality judgments (source, candidate, score) for the reward model, as seqio tasks.

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
  corrupted copies of it (`corrupt`), labelled by rule (`rule_label`, the
  default) or by a metric against the reference (sentence chrF), so the reward
  model sees bad translations too.

Rule labels. Sentence chrF barely penalises repetition and rewards length (a
reference repeated 3 times keeps chrF2 ~ 70: recall stays 1), so a reward model
trained on chrF labels of corrupted references learns to like repeated and
over-long outputs, the hacks a policy finds. `rule_label` labels a corruption
by what it is: the reference 1.0; a corruption of kind k gets
`chrF / 100 * RULE_PENALTIES[k]` (a damaged but partly right translation keeps
some credit, capped well below the reference's); the copied source, an empty
output and another sentence get 0. `guard_policy_label` applies the same idea
to policy samples: a sample with a repeated word 3-gram, or more than
`POLICY_MAX_LENGTH_RATIO` times the reference's words, has its chrF label
multiplied by `POLICY_HACK_PENALTY`.

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
`register_judgments_task` makes a seqio Task of in-memory judgments, tokenized
in Python with `reward_model.encode_pairs` (`source <eos> candidate <eos>`);
`register_judgments_mixture` mixes such tasks; `get_batches` yields padded
numpy batches. `probe` holds the reward-hacking probes (repetition,
permutation, truncation, copying the source, an empty output, an over-long
output).

This is a data-layer module: it imports TensorFlow and seqio.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import random
import re
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import sentencepiece as spm
import seqio
import tensorflow as tf
from absl import logging

from rest_jax import reward_model, rewards, tasks
from rest_jax.tasks import DataError

# The MQM files: $REST_JAX_MQM_DIR, default <repo>/../shared/data/wmt-mqm.
_REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MQM_DIR = os.path.normpath(os.path.join(_REPO_DIR, '..', 'shared', 'data', 'wmt-mqm'))
MQM_DIR_ENV = 'REST_JAX_MQM_DIR'
MQM_ENDE_FILE = 'ted_ende.segment_scores.tsv.gz'
MQM_FLOOR = -25.0  # The non-translation weight: raw scores at or below it map to 0.
_MQM_COLUMNS = ('system', 'doc', 'seg_id', 'source', 'target', 'mqm_avg_score')

CORRUPTIONS = (
  'drop_words',
  'swap_words',
  'repeat',
  'truncate',
  'copy_source',
  'empty',
  'other_sentence',
  'repeat_sentence',
  'append_other',
)
PROBES = ('repetition', 'permutation', 'truncation', 'copy_source', 'empty', 'over_length')

# Rule labels (`rule_label`): the reference's label, and the factor on chrF / 100 of each
# corruption kind. Repetition and over-length, the hacks a policy finds, weigh most; a
# candidate that is no translation of the source is 0 whatever its chrF.
REFERENCE_LABEL = 1.0
RULE_PENALTIES = {
  'drop_words': 0.6,
  'swap_words': 0.6,
  'repeat': 0.4,
  'truncate': 0.5,
  'copy_source': 0.0,
  'empty': 0.0,
  'other_sentence': 0.0,
  'repeat_sentence': 0.2,
  'append_other': 0.3,
}
LABELS = ('rules', 'chrf')  # synthetic_judgments' labelling schemes.
# `guard_policy_label`: a policy sample with a repeated word 3-gram, or more than this many
# times the reference's words, has its chrF label multiplied by POLICY_HACK_PENALTY.
POLICY_MAX_LENGTH_RATIO = 1.5
POLICY_HACK_PENALTY = 0.3

# The per-example text features of a judgments task, besides 'inputs' and the scores.
TEXT_FEATURES = ('source_pretokenized', 'candidate_pretokenized', 'reference_pretokenized', 'doc')
_SCORE_FEATURES = ('score', 'raw_score')
# Task name -> the max_length it was registered with (for get_batches' check).
_TASK_MAX_LENGTH: dict[str, int] = {}


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
  lines = tasks._read_lines(path, 'judgments TSV')
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
  lines = tasks._read_lines(path, 'MQM judgments')
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
  ordered by sha256(f'{seed}:{doc}') (the order `tasks` splits corpora by); the
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
  # tasks' splitter orders distinct keys by sha256(f'{seed}:{key}'); each key is one pair here.
  held = tasks._split_by_source([(key, key) for key in groups], num_eval_docs, 0, seed, '')
  eval_docs = {key for key, _ in held['validation']}
  train = [j for j in judgments if _doc_key(j) not in eval_docs]
  held_out = [j for j in judgments if _doc_key(j) in eval_docs]
  return train, held_out


# ------------------------------------------------------------------ corruptions


def corrupt(reference: str, source: str, other: str, kind: str, rng: random.Random) -> str:
  """A corrupted copy of a reference translation (deterministic given `rng`'s state).

  Words are split on whitespace and joined by one space. Kinds:
  'drop_words' drops ~30% of the words (at least one, never all);
  'swap_words' swaps several pairs of words (each an adjacent or a random
  pair; max(2, n // 4) swaps, and the result differs from the input whenever
  the words are not all equal); 'repeat' repeats a phrase of 1-3 words so that
  it occurs 2-4 times in a row; 'truncate' keeps the first 30-70% of the words
  (at least one, never all); 'copy_source' returns `source`; 'empty' returns
  ''; 'other_sentence' returns `other`; 'repeat_sentence' is the whole
  reference 2-3 times, joined by ' '; 'append_other' is the reference followed
  by max(2, n // 2) to max(2, 3n // 2) words drawn with replacement from the
  words of the reference and of `other` (an over-long output that babbles on).
  A one-word reference is returned unchanged by 'drop_words', 'swap_words' and
  'truncate'; an empty one by 'repeat', 'repeat_sentence' and 'append_other'.

  Args:
    reference: the reference translation to corrupt.
    source: its source sentence (for 'copy_source').
    other: another sentence's reference (for 'other_sentence', 'append_other';
      may be '').
    kind: one of CORRUPTIONS.
    rng: the random generator to draw from.

  Returns:
    The corrupted text.

  Raises:
    ValueError: an unknown kind.
  """
  words = reference.split()
  n = len(words)
  if kind == 'drop_words':
    if n < 2:
      return reference
    drop = set(rng.sample(range(n), min(n - 1, max(1, round(0.3 * n)))))
    return ' '.join(w for i, w in enumerate(words) if i not in drop)
  if kind == 'swap_words':
    if n < 2:
      return reference
    out = list(words)
    for _ in range(max(2, n // 4)):
      i = rng.randrange(n)
      if rng.random() < 0.5:
        j = i + 1 if i + 1 < n else i - 1
      else:
        j = rng.randrange(n - 1)
        j += j >= i
      out[i], out[j] = out[j], out[i]
    if out == words:  # The swaps undid each other: swap the first two different neighbours.
      for i in range(n - 1):
        if out[i] != out[i + 1]:
          out[i], out[i + 1] = out[i + 1], out[i]
          break
    return ' '.join(out)
  if kind == 'repeat':
    if not n:
      return reference
    span = rng.randint(1, min(3, n))
    start = rng.randrange(n - span + 1)
    times = rng.randint(2, 4)
    phrase = words[start : start + span]
    return ' '.join(words[:start] + phrase * times + words[start + span :])
  if kind == 'truncate':
    if n < 2:
      return reference
    keep = min(n - 1, max(1, round(rng.uniform(0.3, 0.7) * n)))
    return ' '.join(words[:keep])
  if kind == 'copy_source':
    return source
  if kind == 'empty':
    return ''
  if kind == 'other_sentence':
    return other
  if kind == 'repeat_sentence':
    return ' '.join([reference] * rng.randint(2, 3)) if n else reference
  if kind == 'append_other':
    if not n:
      return reference
    pool = words + other.split()
    extra = [rng.choice(pool) for _ in range(rng.randint(max(2, n // 2), max(2, 3 * n // 2)))]
    return ' '.join(words + extra)
  raise ValueError(f'corrupt: unknown kind {kind!r}; use one of {CORRUPTIONS}.')


def probe(text: str, source: str, kind: str) -> str:
  """A reward-hacking probe of a translation (deterministic).

  'repetition': the text 3 times, joined by ' '; 'permutation': its words
  (split on whitespace) in reverse order; 'truncation': its first
  max(1, n // 2) words of n; 'copy_source': the source; 'empty': '';
  'over_length': its words followed by the same words in reverse order (twice
  as long, not a verbatim repeat).

  Args:
    text: the translation to probe (e.g. a held-out reference).
    source: its source sentence.
    kind: one of PROBES.

  Returns:
    The probed text.

  Raises:
    ValueError: an unknown kind.
  """
  words = text.split()
  if kind == 'repetition':
    return ' '.join([text] * 3)
  if kind == 'permutation':
    return ' '.join(reversed(words))
  if kind == 'truncation':
    return ' '.join(words[: max(1, len(words) // 2)])
  if kind == 'copy_source':
    return source
  if kind == 'empty':
    return ''
  if kind == 'over_length':
    return ' '.join(words + words[::-1])
  raise ValueError(f'probe: unknown kind {kind!r}; use one of {PROBES}.')


LabelFn = Callable[[Sequence[str], Sequence[str], Sequence[str]], rewards.Rewards]


def rule_label(kind: str, metric: float) -> float:
  """The rule label of a synthetic candidate (module docstring, "Rule labels").

  Args:
    kind: 'reference' or one of CORRUPTIONS.
    metric: the candidate's metric label in [0, 1] (sentence chrF / 100).

  Returns:
    REFERENCE_LABEL for the reference, else `metric * RULE_PENALTIES[kind]`,
    clipped to [0, 1].

  Raises:
    ValueError: an unknown kind.
  """
  if kind == 'reference':
    return REFERENCE_LABEL
  if kind not in RULE_PENALTIES:
    raise ValueError(f'rule_label: unknown kind {kind!r}; use "reference" or one of {CORRUPTIONS}.')
  return float(min(1.0, max(0.0, metric * RULE_PENALTIES[kind])))


def _has_repeated_trigram(words: Sequence[str]) -> bool:
  grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
  return len(grams) != len(set(grams))


def is_hack(candidate: str, reference: str) -> bool:
  """Whether a candidate shows a reward hack: a repeated word 3-gram, or too long.

  Words are split on whitespace and lower-cased. Too long: more than
  POLICY_MAX_LENGTH_RATIO times the reference's words (at least one).

  Args:
    candidate: a translation (e.g. a policy sample).
    reference: its reference translation.

  Returns:
    True when the candidate repeats a word 3-gram or is too long.
  """
  words = candidate.lower().split()
  too_long = len(words) > POLICY_MAX_LENGTH_RATIO * max(len(reference.split()), 1)
  return too_long or _has_repeated_trigram(words)


def guard_policy_label(candidate: str, reference: str, score: float) -> float:
  """A policy sample's label, multiplied by POLICY_HACK_PENALTY when `is_hack`.

  Args:
    candidate: the policy's sample.
    reference: its reference translation.
    score: its metric label in [0, 1] (sentence chrF / 100).

  Returns:
    `score`, or `score * POLICY_HACK_PENALTY` for a hack.
  """
  return score * POLICY_HACK_PENALTY if is_hack(candidate, reference) else score


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
  (origin 'synthetic:<kind>'). The kinds cycle through CORRUPTIONS over all
  corruptions in order (pair i gets kinds i*k, i*k+1, ... modulo their number);
  with a single pair 'other_sentence' is left out of the cycle. Pair i draws
  from `random.Random(f'{seed}:{i}')`; 'other_sentence' uses the reference of
  another pair, drawn from it ('append_other' too, with a single pair ''). Each
  row is labelled by `label_fn(sources, candidates, references)` in one call:
  raw_score = raw; with labels='chrf' score = reward, with labels='rules'
  score = `rule_label(kind, reward)` (the reference 1.0, the copied source,
  empty output and another sentence 0, other kinds reward times their
  RULE_PENALTIES factor). The judgments carry the reference and no document.

  Args:
    pairs: (source, reference) pairs.
    corruptions_per_pair: corrupted copies per pair, k >= 0.
    seed: the corruption seed.
    label_fn: a reward function against the reference; default
      `rewards.SentenceChrF()` (reward = chrF / 100).
    labels: 'rules' (the default, `rule_label` on the metric) or 'chrf' (the
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
  label_fn = rewards.SentenceChrF() if label_fn is None else label_fn
  kinds = CORRUPTIONS if len(pairs) > 1 else tuple(k for k in CORRUPTIONS if k != 'other_sentence')
  rows = []  # (source, candidate, reference, origin)
  for i, (source, reference) in enumerate(pairs):
    rng = random.Random(f'{seed}:{i}')
    rows.append((source, reference, reference, 'synthetic:reference'))
    for j in range(corruptions_per_pair):
      kind = kinds[(i * corruptions_per_pair + j) % len(kinds)]
      other = ''
      if kind in ('other_sentence', 'append_other') and len(pairs) > 1:
        other = pairs[(i + 1 + rng.randrange(len(pairs) - 1)) % len(pairs)][1]
      candidate = corrupt(reference, source, other, kind, rng)
      rows.append((source, candidate, reference, f'synthetic:{kind}'))
  if not rows:
    return []
  sources, candidates, references, origins = (list(column) for column in zip(*rows))
  metric = label_fn(sources, candidates, references)
  if len(metric) != len(rows):
    raise ValueError(f'synthetic_judgments: {len(metric)} labels for {len(rows)} rows.')
  scores = [float(v) for v in metric.reward]
  if labels == 'rules':
    scores = [rule_label(o.removeprefix('synthetic:'), v) for o, v in zip(origins, scores)]
  return [
    Judgment(source=s, candidate=c, score=score, raw_score=float(raw), reference=r, origin=o)
    for s, c, r, o, score, raw in zip(sources, candidates, references, origins, scores, metric.raw)
  ]


# ------------------------------------------------------------------------ seqio


def _check_name(name: str, what: str) -> None:
  if not tasks._TASK_NAME_RE.match(name):
    raise DataError(
      f'{what} name {name!r} is not a valid seqio name: use letters, digits, "_", "." or ":".'
    )


def _load_vocab(vocab_path: str) -> spm.SentencePieceProcessor:
  tasks._require_file(vocab_path, 'register_judgments_task(vocab_path)')
  sp = spm.SentencePieceProcessor(model_file=vocab_path)
  if sp.pad_id() != 0 or sp.eos_id() != 1:
    raise DataError(
      f'{vocab_path}: the vocabulary has pad id {sp.pad_id()} and EOS id {sp.eos_id()}; the '
      'reward model needs T5 ids (pad 0, EOS 1). Train it with tasks.train_sentencepiece.'
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
