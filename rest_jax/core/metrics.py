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
