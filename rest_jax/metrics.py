"""Text metrics (sacrebleu) and small host-side aggregation helpers."""

from __future__ import annotations

from collections.abc import Sequence

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
