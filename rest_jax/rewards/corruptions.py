"""Text corruptions, reward-hacking probes and rule labels: what bad translations look like.

`corrupt` makes a damaged copy of a reference translation, of one of the kinds
in CORRUPTIONS (dropped, swapped or repeated words, a truncation, the copied
source, an empty output, another sentence, the reference repeated, the reference
babbling on); `judgments.synthetic_judgments` labels such copies to teach the
reward model what bad translations look like. `probe` makes the reward-hacking
probes of PROBES (repetition, permutation, truncation, copying the source, an
empty output, an over-long output): a reward that resists them scores each
below the text it was made from (`rm_metrics.probe_deltas`; the patterns that
policy outputs show are flagged by `metrics.hacking_flags`).

Rule labels. Sentence chrF barely penalises repetition and rewards length (a
reference repeated 3 times keeps chrF2 ~ 70: recall stays 1), so a reward model
trained on chrF labels of corrupted references learns to like repeated and
over-long outputs, the hacks a policy finds. `rule_label` labels a corruption
by what it is: the reference 1.0; a corruption of kind k gets
`chrF / 100 * RULE_PENALTIES[k]` (a damaged but partly right translation keeps
some credit, capped well below the reference's); the copied source, an empty
output and another sentence get 0. `guard_policy_label` applies the same idea
to policy samples: a sample with a repeated word 3-gram (`is_hack`), or more
than `POLICY_MAX_LENGTH_RATIO` times the reference's words, has its chrF label
multiplied by `POLICY_HACK_PENALTY`.

Pure Python: importable without TensorFlow or JAX (DESIGN.md layering).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

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
# `guard_policy_label`: a policy sample with a repeated word 3-gram, or more than this many
# times the reference's words, has its chrF label multiplied by POLICY_HACK_PENALTY.
POLICY_MAX_LENGTH_RATIO = 1.5
POLICY_HACK_PENALTY = 0.3


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
