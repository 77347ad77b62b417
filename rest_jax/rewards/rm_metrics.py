"""Reward-model evaluation: segment-level agreement with judgments, baselines, probes.

Segment-level metrics as in the WMT metrics task, all host-side numpy / scipy:

| metric              | what it measures                                                  |
|---------------------|-------------------------------------------------------------------|
| `kendall_tau`       | Kendall tau-b of predicted vs gold scores over all segments       |
|                     | ("no grouping"), ties in either side handled by tau-b             |
| `pearson`           | Pearson correlation of predicted vs gold scores                   |
| `pairwise_accuracy` | among pairs of the same group (e.g. candidates of one source)     |
|                     | whose gold scores differ, the share the prediction orders alike   |
|                     | (a predicted tie counts 0.5)                                      |

Degenerate inputs do not raise: a constant side has no defined correlation, so
`kendall_tau` and `pearson` return 0.0 there (no agreement shown); a set with no
pair of differing gold scores has no pairwise accuracy, which is NaN.

Baselines measured beside the model: `length_baseline` (candidate length in
characters) and `chrf_baseline` (sentence chrF against the reference).
`probe_deltas` measures how a scorer reacts to transformed references (the
reward-hacking "unit tests": repetition, truncation, copying the source, ...);
the transformations themselves are passed in as a function.

Shapes: N examples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence

import numpy as np
import scipy.stats

from rest_jax.rewards import reward_fns

# Rows of a group compared at once in `pairwise_accuracy` (bounds memory at
# about _PAIR_BLOCK * k booleans per comparison for a group of k).
_PAIR_BLOCK = 1 << 20


def _as_scores(pred, gold) -> tuple[np.ndarray, np.ndarray]:
  """Validated [N] float64 copies of `pred` and `gold`."""
  pred = np.asarray(pred, np.float64)
  gold = np.asarray(gold, np.float64)
  if pred.ndim != 1 or pred.shape != gold.shape:
    raise ValueError(
      f'Predicted scores {pred.shape} and gold scores {gold.shape} must both be [N] and equal.'
    )
  for name, values in (('predicted', pred), ('gold', gold)):
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
      i = int(bad[0])
      raise ValueError(
        f'The {name} scores have a non-finite value ({values[i]}) at index {i} '
        f'({bad.size} such rows).'
      )
  return pred, gold


def kendall_tau(pred: Sequence[float], gold: Sequence[float]) -> float:
  """Kendall tau-b between predicted and gold scores (scipy.stats.kendalltau).

  Args:
    pred: [N] predicted scores.
    gold: [N] gold scores (e.g. human judgments).

  Returns:
    tau-b in [-1, 1]. 0.0 when it is undefined (scipy's NaN): fewer than two
    examples, or either side constant.

  Raises:
    ValueError: shapes differ or are not [N], or a value is not finite.
  """
  pred, gold = _as_scores(pred, gold)
  if pred.size < 2 or np.ptp(pred) == 0 or np.ptp(gold) == 0:
    return 0.0
  tau = scipy.stats.kendalltau(pred, gold, variant='b').statistic
  return 0.0 if math.isnan(tau) else float(tau)


def pearson(pred: Sequence[float], gold: Sequence[float]) -> float:
  """Pearson correlation between predicted and gold scores.

  Args:
    pred: [N] predicted scores.
    gold: [N] gold scores.

  Returns:
    r in [-1, 1]. 0.0 when it is undefined: fewer than two examples, or either
    side constant.

  Raises:
    ValueError: shapes differ or are not [N], or a value is not finite.
  """
  pred, gold = _as_scores(pred, gold)
  if pred.size < 2:
    return 0.0
  x, y = pred - pred.mean(), gold - gold.mean()
  denom = math.sqrt(float(x @ x) * float(y @ y))
  if denom == 0:
    return 0.0
  return float(np.clip(float(x @ y) / denom, -1.0, 1.0))


def _group_pairs(pred: np.ndarray, gold: np.ndarray) -> tuple[float, int]:
  """(credit, pairs) over pairs i < j of one group with gold_i != gold_j."""
  k = pred.size
  credit, pairs = 0.0, 0
  block = max(1, _PAIR_BLOCK // max(k, 1))
  cols = np.arange(k)
  for start in range(0, k, block):
    rows = np.arange(start, min(start + block, k))
    upper = cols[None, :] > rows[:, None]  # [b, k]: pairs i < j.
    gold_sign = np.sign(gold[rows, None] - gold[None, :])
    pred_sign = np.sign(pred[rows, None] - pred[None, :])
    counted = upper & (gold_sign != 0)
    pairs += int(counted.sum())
    credit += float((counted & (pred_sign == gold_sign)).sum())
    credit += 0.5 * float((counted & (pred_sign == 0)).sum())
  return credit, pairs


def pairwise_accuracy(
  pred: Sequence[float], gold: Sequence[float], groups: Sequence[Hashable] | None = None
) -> float:
  """Share of same-group pairs with different gold scores that the prediction orders alike.

  Over all pairs i < j with groups[i] == groups[j] and gold_i != gold_j, a pair
  scores 1 when sign(pred_i - pred_j) == sign(gold_i - gold_j), 0.5 when
  pred_i == pred_j, and 0 otherwise. Computed per group with vectorized
  O(k^2) comparisons (groups, e.g. the candidates of one source, are small).

  Args:
    pred: [N] predicted scores.
    gold: [N] gold scores.
    groups: [N] group labels (e.g. the source text); None puts all rows in one group.

  Returns:
    The accuracy in [0, 1]; NaN when there is no such pair (fewer than two rows
    in every group, or equal gold scores within each group).

  Raises:
    ValueError: shapes differ or are not [N], or a value is not finite.
  """
  pred, gold = _as_scores(pred, gold)
  if groups is None:
    credit, pairs = _group_pairs(pred, gold)
  else:
    labels = np.asarray(groups)
    if labels.shape != pred.shape:
      raise ValueError(f'groups {labels.shape} must be aligned with the scores {pred.shape}.')
    _, inverse = np.unique(labels, return_inverse=True)
    order = np.argsort(inverse.reshape(-1), kind='stable')
    bounds = np.flatnonzero(np.diff(inverse.reshape(-1)[order])) + 1
    credit, pairs = 0.0, 0
    for idx in np.split(order, bounds):
      if idx.size > 1:
        c, p = _group_pairs(pred[idx], gold[idx])
        credit, pairs = credit + c, pairs + p
  return credit / pairs if pairs else float('nan')


def summarize(
  pred: Sequence[float], gold: Sequence[float], groups: Sequence[Hashable] | None = None
) -> dict:
  """The segment-level figures of one scorer on one set of judgments.

  Args:
    pred: [N] predicted scores.
    gold: [N] gold scores.
    groups: [N] group labels for `pairwise_accuracy`; None for one group.

  Returns:
    dict with `kendall_tau`, `pearson`, `pairwise_accuracy` (floats, see the
    functions of those names) and `n` (int, N).

  Raises:
    ValueError: shapes differ or are not [N], or a value is not finite.
  """
  pred, gold = _as_scores(pred, gold)
  return {
    'kendall_tau': kendall_tau(pred, gold),
    'pearson': pearson(pred, gold),
    'pairwise_accuracy': pairwise_accuracy(pred, gold, groups),
    'n': int(pred.size),
  }


def _scores_of(score_fn: Callable, sources: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
  scores = np.asarray(score_fn(sources, candidates), np.float64)
  if scores.shape != (len(candidates),):
    raise ValueError(
      f'probe_deltas: score_fn returned shape {scores.shape} for {len(candidates)} candidates; '
      f'it must return [{len(candidates)}].'
    )
  return scores


def probe_deltas(
  score_fn: Callable[[Sequence[str], Sequence[str]], np.ndarray],
  sources: Sequence[str],
  references: Sequence[str],
  probe_fn: Callable[[str, str, str], str],
  kinds: Sequence[str],
) -> dict[str, dict[str, float]]:
  """How a scorer's scores move when good translations are damaged (reward-hacking probes).

  Each reference is scored as the candidate of its source, then transformed by
  `probe_fn(reference, source, kind)` and scored again. A probe that damages
  the translation should lower the score; a high `fraction_increased` (e.g.
  under repetition) is a sign the scorer can be hacked, and a scorer that
  resists a probe has `fraction_decreased` near 1 (ties count in neither).

  Args:
    score_fn: `(sources [N], candidates [N]) -> [N]` scores (e.g. a reward model).
    sources: N source texts.
    references: N good translations, aligned with `sources`.
    probe_fn: `(text, source, kind) -> str`, the transformation named `kind`.
    kinds: the probe kinds to run, e.g. ('repeat', 'truncate', 'copy_source', 'empty').

  Returns:
    {kind: {'mean_delta': mean(probed - reference score), 'fraction_increased':
    share of examples whose probed score > reference score, 'fraction_decreased':
    share whose probed score < reference score, 'mean_score_reference',
    'mean_score_probed'}}, floats, in the order of `kinds`.

  Raises:
    ValueError: no examples, `sources` and `references` differ in length, or
      `score_fn` returns the wrong shape.
  """
  if len(sources) != len(references):
    raise ValueError(f'probe_deltas: {len(sources)} sources but {len(references)} references.')
  if not len(references):
    raise ValueError('probe_deltas: no examples to probe; pass at least one reference.')
  sources, references = [str(s) for s in sources], [str(r) for r in references]
  base = _scores_of(score_fn, sources, references)
  out = {}
  for kind in kinds:
    probed = [probe_fn(r, s, kind) for r, s in zip(references, sources)]
    scores = _scores_of(score_fn, sources, probed)
    delta = scores - base
    out[kind] = {
      'mean_delta': float(delta.mean()),
      'fraction_increased': float((delta > 0).mean()),
      'fraction_decreased': float((delta < 0).mean()),
      'mean_score_reference': float(base.mean()),
      'mean_score_probed': float(scores.mean()),
    }
  return out


def length_baseline(candidates: Sequence[str]) -> np.ndarray:
  """The 'candidate length' baseline: each candidate's length in characters.

  Args:
    candidates: N candidate texts.

  Returns:
    [N] float64 lengths, used as scores.
  """
  return np.array([len(str(c)) for c in candidates], np.float64)


def chrf_baseline(candidates: Sequence[str], references: Sequence[str]) -> np.ndarray:
  """The reference-based baseline: sentence chrF of each candidate against its reference.

  Args:
    candidates: N candidate texts.
    references: N references, aligned with `candidates`.

  Returns:
    [N] float64 in [0, 1], `reward_fns.SentenceChrF().reward` (chrF2 / 100).

  Raises:
    ValueError: the lists differ in length.
  """
  sources = [''] * len(candidates)  # SentenceChrF checks sources but does not read them.
  return reward_fns.SentenceChrF()(sources, candidates, references).reward.astype(np.float64)
