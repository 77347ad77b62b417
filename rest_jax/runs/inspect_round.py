"""`--run_mode=inspect`: what a Grow round holds, before Improve filters it.

`inspect` reads a finished round (`MODEL_DIR/grow/g<g>`, verified against its
manifest), prints its reward statistics (samples and human references apart), a
reward histogram, how many records survive each threshold of the filter schedule
(`reward > tau`) and how they spread over sources, and the best and worst
samples of a few sources; it writes the same summary as
`MODEL_DIR/grow/g<g>/inspect.json`. `round_summary.summarize` computes the
summary and `round_summary.format_summary` lays it out as text.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from rest_jax.core import files
from rest_jax.data import grow_io, round_summary


def inspect(
  *,
  round_dir: str,
  thresholds: Sequence[float] = grow_io.DEFAULT_THRESHOLDS,
  num_sources: int = 3,
) -> dict:
  """`--run_mode=inspect`: prints what a Grow round holds; writes `inspect.json`.

  Args:
    round_dir: a finished round (`MODEL_DIR/grow/g<g>`); verified first.
    thresholds: the filter schedule to report kept counts for (`reward > tau`).
    num_sources: how many sources to show with their best and worst candidates.

  Returns:
    The summary that was printed, as a dict (see `round_summary.summarize`).

  Raises:
    grow_io.GrowDataError: the round is missing, unfinished or corrupt.
  """
  manifest = grow_io.verify_round(round_dir)
  rec = grow_io.read_records(round_dir, verify=False)
  summary = round_summary.summarize(manifest, rec, thresholds, num_sources)
  print(round_summary.format_summary(summary))
  files.write_json(os.path.join(round_dir, 'inspect.json'), summary)
  return summary
