"""Text metrics (sacrebleu) and small host-side aggregation helpers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import sacrebleu


def corpus_bleu_chrf(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
  """Corpus BLEU and chrF with sacrebleu's default settings.

  Args:
    hypotheses: N system outputs (detokenized text).
    references: N references, aligned with `hypotheses`.

  Returns:
    dict with `bleu`, `chrf` (0-100) and their sacrebleu signature strings.

  Raises:
    ValueError: the two lists differ in length or are empty.
  """
  if len(hypotheses) != len(references):
    raise ValueError(f'{len(hypotheses)} hypotheses but {len(references)} references.')
  if not hypotheses:
    raise ValueError('No hypotheses to score.')
  bleu = sacrebleu.metrics.BLEU()
  chrf = sacrebleu.metrics.CHRF()
  refs = [list(references)]
  b = bleu.corpus_score(list(hypotheses), refs)
  c = chrf.corpus_score(list(hypotheses), refs)
  return {
    'bleu': float(b.score),
    'chrf': float(c.score),
    'bleu_signature': str(bleu.get_signature()),
    'chrf_signature': str(chrf.get_signature()),
  }


def paired_bootstrap(
  hypotheses_a: Sequence[str],
  hypotheses_b: Sequence[str],
  references: Sequence[str],
  *,
  num_resamples: int = 1000,
  seed: int = 0,
) -> dict:
  """Paired bootstrap of corpus BLEU and chrF differences, system A minus system B.

  Each resample draws N sentence indices with replacement (the same indices
  for both systems) and recomputes both corpus scores from sacrebleu's
  per-sentence sufficient statistics, which equals `corpus_bleu_chrf` on the
  resampled lists (Koehn 2004).

  Args:
    hypotheses_a: N outputs of system A.
    hypotheses_b: N outputs of system B, aligned with A's.
    references: N references.
    num_resamples: bootstrap resamples.
    seed: numpy seed of the resampled indices.

  Returns:
    dict: for 'bleu' and 'chrf', `diff` (A - B on the whole set), `ci95` (the
    2.5th and 97.5th percentiles of the resampled differences) and `a_wins`
    (the fraction of resamples where A scores higher); plus `num_sentences`,
    `identical` (sentences where A and B output the same text),
    `num_resamples` and `seed`.

  Raises:
    ValueError: the three lists differ in length or are empty.
  """
  n = len(references)
  if not n or len(hypotheses_a) != n or len(hypotheses_b) != n:
    raise ValueError(
      f'paired_bootstrap needs aligned, non-empty lists: {len(hypotheses_a)} and '
      f'{len(hypotheses_b)} hypotheses, {n} references.'
    )
  idx = np.random.default_rng(seed).integers(0, n, size=(num_resamples, n))
  refs = [list(references)]
  out = {
    'num_sentences': n,
    'identical': int(sum(a == b for a, b in zip(hypotheses_a, hypotheses_b))),
    'num_resamples': num_resamples,
    'seed': seed,
  }
  for name, metric in (('bleu', sacrebleu.metrics.BLEU()), ('chrf', sacrebleu.metrics.CHRF())):
    # [N, K] sufficient statistics; a corpus score is a function of their column sums.
    stats = [
      np.asarray(metric._extract_corpus_statistics(list(h), refs), dtype=np.int64)
      for h in (hypotheses_a, hypotheses_b)
    ]

    def score(st, rows=None):
      total = st.sum(axis=0) if rows is None else st[rows].sum(axis=0)
      return metric._compute_score_from_stats(total.tolist()).score  # noqa: B023

    diffs = np.array([score(stats[0], r) - score(stats[1], r) for r in idx])
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    out[name] = {
      'diff': float(score(stats[0]) - score(stats[1])),
      'ci95': [float(lo), float(hi)],
      'a_wins': float((diffs > 0).mean()),
    }
  return out


def format_paired(result: dict) -> str:
  """'BLEU +0.30 [-0.05, +0.62], chrF +0.27 [+0.02, +0.51]' from `paired_bootstrap`."""
  return ', '.join(
    f'{label} {result[k]["diff"]:+.2f} [{result[k]["ci95"][0]:+.2f}, {result[k]["ci95"][1]:+.2f}]'
    for k, label in (('bleu', 'BLEU'), ('chrf', 'chrF'))
  )


def _words(text: str) -> list[str]:
  return text.lower().split()


def has_repeated_ngram(text: str, n: int = 3) -> bool:
  """Whether some word n-gram occurs twice in `text` (a repetition loop)."""
  words = _words(text)
  grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
  return len(grams) != len(set(grams))


def hacking_flags(
  sources: Sequence[str], outputs: Sequence[str], references: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
  """Per-output flags of the reward-hacking probes' patterns, [N] bool each.

  The reward model's probes (`corruptions.PROBES`) ask whether these edits
  raise its score; these flags count how many of a policy's outputs show them:

  * `empty`: no words.
  * `copy_source`: the output is the source (case and spacing ignored).
  * `repetition`: some word 3-gram occurs twice.
  * `too_long`: more than twice the reference's words (needs references).
  * `any`: any of the above.

  Args:
    sources: N source sentences.
    outputs: N policy outputs.
    references: N references, or None (then `too_long` is all False).

  Returns:
    dict of [N] bool arrays.
  """
  if len(sources) != len(outputs) or (references is not None and len(references) != len(outputs)):
    raise ValueError('hacking_flags: sources, outputs and references must have equal lengths.')
  flags = {
    'empty': np.array([not _words(o) for o in outputs], bool),
    'copy_source': np.array([_words(o) == _words(s) for s, o in zip(sources, outputs)], bool),
    'repetition': np.array([has_repeated_ngram(o) for o in outputs], bool),
    'too_long': np.zeros(len(outputs), bool)
    if references is None
    else np.array(
      [len(_words(o)) > 2 * max(len(_words(r)), 1) for o, r in zip(outputs, references)]
    ),
  }
  flags['any'] = (
    np.logical_or.reduce([flags[k] for k in list(flags)]) if outputs else flags['empty']
  )
  return flags
