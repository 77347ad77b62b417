"""Tests of rest_jax.core.metrics.paired_bootstrap."""

import numpy as np
import pytest
import sacrebleu

from rest_jax.core import metrics

REFS = [
  'das Haus ist groß',
  'die Katze schläft auf dem Sofa',
  'ich habe heute keine Zeit',
  'er liest ein Buch über Geschichte',
  'wir gehen morgen ins Kino',
  'sie trinkt gern schwarzen Kaffee',
  'der Zug kommt um acht Uhr an',
  'mein Bruder wohnt in Berlin',
] * 5
BAD = [' '.join(r.split()[1:]) for r in REFS]  # Every output loses its first word.


def test_identical_systems_differ_by_nothing():
  out = metrics.paired_bootstrap(BAD, list(BAD), REFS, num_resamples=200)
  assert out['identical'] == len(REFS) and out['num_sentences'] == len(REFS)
  for name in ('bleu', 'chrf'):
    assert out[name]['diff'] == 0.0 and out[name]['ci95'] == [0.0, 0.0]
    assert out[name]['a_wins'] == 0.0


def test_diff_is_the_corpus_score_difference_and_a_better_system_wins_every_resample():
  half = [r if i % 2 else b for i, (r, b) in enumerate(zip(REFS, BAD))]
  out = metrics.paired_bootstrap(half, BAD, REFS, num_resamples=300, seed=3)
  a, b = metrics.corpus_bleu_chrf(half, REFS), metrics.corpus_bleu_chrf(BAD, REFS)
  for name in ('bleu', 'chrf'):
    assert out[name]['diff'] == pytest.approx(a[name] - b[name], abs=1e-9)
    lo, hi = out[name]['ci95']
    assert 0 < lo <= out[name]['diff'] <= hi
    assert out[name]['a_wins'] == 1.0
  # Swapping the systems negates everything.
  back = metrics.paired_bootstrap(BAD, half, REFS, num_resamples=300, seed=3)
  assert back['bleu']['diff'] == pytest.approx(-out['bleu']['diff'])
  assert back['bleu']['ci95'] == pytest.approx([-out['bleu']['ci95'][1], -out['bleu']['ci95'][0]])
  assert back['bleu']['a_wins'] == 0.0
  assert metrics.format_paired(out).startswith('BLEU +')


def test_resampled_scores_equal_sacrebleu_on_the_resampled_lists():
  # The bootstrap sums per-sentence statistics; check that against sacrebleu
  # scoring the resampled lists directly, for the resample a seed draws.
  half = [r if i % 3 else b for i, (r, b) in enumerate(zip(REFS, BAD))]
  out = metrics.paired_bootstrap(half, BAD, REFS, num_resamples=1, seed=7)
  rows = np.random.default_rng(7).integers(0, len(REFS), size=(1, len(REFS)))[0]
  pick = lambda xs: [xs[j] for j in rows]  # noqa: E731
  for name, metric in (('bleu', sacrebleu.metrics.BLEU()), ('chrf', sacrebleu.metrics.CHRF())):
    direct = (
      metric.corpus_score(pick(half), [pick(REFS)]).score
      - metric.corpus_score(pick(BAD), [pick(REFS)]).score
    )
    assert out[name]['ci95'][0] == pytest.approx(direct, abs=1e-9)


def test_misaligned_lists_are_refused():
  with pytest.raises(ValueError, match='aligned'):
    metrics.paired_bootstrap(BAD[:-1], BAD, REFS)
  with pytest.raises(ValueError, match='aligned'):
    metrics.paired_bootstrap([], [], [])
