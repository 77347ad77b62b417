"""What a Grow round holds, as a summary: reward statistics, kept counts, examples.

`summarize` computes the summary of a round's records (`grow_io.read_records`)
and `format_summary` lays it out as text; `--run_mode=inspect`
(`runs/inspect_round.py`) prints it and writes it as `inspect.json`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from rest_jax.data import grow_io


def summarize(manifest: dict, rec: dict, thresholds: Sequence[float], num_sources: int) -> dict:
  """Reward statistics, kept counts per threshold and examples of a round.

  Args:
    manifest: the round's manifest (`grow_io.read_manifest`).
    rec: the round's records, column-wise (`grow_io.read_records`): R records,
      'reward' [R] float, 'is_human' [R] int, 'source_id' [R] int, and
      'targets_pretokenized', 'inputs_pretokenized', 'reference' [R] str.
    thresholds: the filter schedule: one row of kept counts per tau (`reward > tau`).
    num_sources: how many sources (the first by id) to show with their best and
      worst samples.

  Returns:
    A JSON-able dict: the manifest's round, policy step, reward source and
    sampling; record, source and human counts; distinct samples per source;
    'length_cap' (`grow_io.describe_length_cap`, None when nothing hit it);
    reward statistics of samples and of human references; 'thresholds' (one
    row per tau: kept records, kept fraction, kept human references, sources
    with any record kept, mean and max kept per source) and 'examples'.
  """
  reward, human = rec['reward'], rec['is_human'].astype(bool)
  sid = rec['source_id']
  num_src = len(np.unique(sid))
  rows = []
  for tau in thresholds:
    keep = reward > tau
    per_source = np.bincount(sid[keep], minlength=sid.max() + 1)[np.unique(sid)]
    rows.append(
      {
        'tau': float(tau),
        'kept': int(keep.sum()),
        'kept_fraction': float(keep.mean()),
        'kept_human': int((keep & human).sum()),
        'sources_with_any': int((per_source > 0).sum()),
        'per_source_mean': float(per_source.mean()),
        'per_source_max': int(per_source.max()),
      }
    )
  distinct = [len(set(rec['targets_pretokenized'][(sid == s) & ~human])) for s in np.unique(sid)]
  examples = []
  for s in np.unique(sid)[:num_sources]:
    idx = np.flatnonzero((sid == s) & ~human)
    best, worst = idx[np.argmax(reward[idx])], idx[np.argmin(reward[idx])]
    examples.append(
      {
        'source_id': int(s),
        'source': rec['inputs_pretokenized'][best],
        'reference': rec['reference'][best],
        'best': {'text': rec['targets_pretokenized'][best], 'reward': float(reward[best])},
        'worst': {'text': rec['targets_pretokenized'][worst], 'reward': float(reward[worst])},
      }
    )
  return {
    'round_dir': manifest.get('round_dir', ''),
    'grow_round': manifest.get('grow_round'),
    'policy_step': manifest.get('policy_step'),
    'reward_source': manifest.get('reward_source'),
    'sampling': manifest.get('sampling'),
    'num_records': int(reward.size),
    'num_sources': num_src,
    'num_human': int(human.sum()),
    'length_cap': grow_io.describe_length_cap(manifest),
    'distinct_samples_per_source': float(np.mean(distinct)) if distinct else 0.0,
    'reward_samples': grow_io.reward_statistics(reward[~human], thresholds),
    'reward_human': grow_io.reward_statistics(reward[human], thresholds),
    'thresholds': rows,
    'examples': examples,
  }


def format_summary(s: dict) -> str:
  """The inspect report as text: header, reward statistics, histogram, kept counts, examples.

  Args:
    s: a summary from `summarize`.

  Returns:
    The report, lines joined by newlines (no trailing newline).
  """
  lines = [
    f'Grow round g{s["grow_round"]}: {s["num_records"]} records, {s["num_sources"]} sources, '
    f'{s["num_human"]} human references; policy step {s["policy_step"]}; '
    f'reward {s["reward_source"]}; sampling {json.dumps(s["sampling"])}',
    f'distinct samples per source: {s["distinct_samples_per_source"]:.2f}',
    *([s['length_cap']] if s.get('length_cap') else []),
    '',
    f'{"":8}{"mean":>7}{"std":>7}{"p10":>7}{"p50":>7}{"p90":>7}{"max":>7}',
  ]
  for label, st in (('samples', s['reward_samples']), ('human', s['reward_human'])):
    if st.get('count'):
      q = st['quantiles']
      lines.append(
        f'{label:8}{st["mean"]:7.3f}{st["std"]:7.3f}{q["0.1"]:7.3f}{q["0.5"]:7.3f}'
        f'{q["0.9"]:7.3f}{q["1.0"]:7.3f}'
      )
  hist = s['reward_samples'].get('histogram')
  if hist:
    lines += ['', 'reward histogram (samples)']
    top = max(hist['counts']) or 1
    for lo, c in zip(hist['edges'][:-1], hist['counts']):
      lines.append(f'  {lo:4.2f}-{lo + 0.05:4.2f} {c:7d} ' + '#' * round(40 * c / top))
  lines += [
    '',
    f'{"tau":>6}{"kept":>9}{"kept%":>8}{"human":>8}{"sources":>9}{"per-src":>9}{"max":>5}',
  ]
  for r in s['thresholds']:
    lines.append(
      f'{r["tau"]:6.2f}{r["kept"]:9d}{100 * r["kept_fraction"]:7.1f}%{r["kept_human"]:8d}'
      f'{r["sources_with_any"]:9d}{r["per_source_mean"]:9.2f}{r["per_source_max"]:5d}'
    )
  for ex in s['examples']:
    lines += [
      '',
      f'source {ex["source_id"]}: {ex["source"]}',
      f'  reference:          {ex["reference"]}',
      f'  best  ({ex["best"]["reward"]:.3f}): {ex["best"]["text"]}',
      f'  worst ({ex["worst"]["reward"]:.3f}): {ex["worst"]["text"]}',
    ]
  return '\n'.join(lines)
