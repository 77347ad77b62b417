"""The run report's figures: matplotlib plots of a run's files, written as PNGs.

Each `plot_*` function draws one figure from values `report_data` read, writes
it to `path` atomically, and returns False (writing nothing) when there is
nothing to plot. Drawing uses matplotlib's object API (`matplotlib.figure.Figure`
renders with Agg and never touches pyplot's global state or the process's
backend).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

from rest_jax.core import files
from rest_jax.runs import report_data


def _save(fig: Figure, path: str) -> None:
  """Writes `fig` as a PNG to `path` atomically."""
  with files.atomic_path(path) as tmp:
    fig.savefig(tmp, format='png', dpi=100, bbox_inches='tight')


# ----------------------------------------------------------------------------- distributions


def _histogram(stats: Any) -> tuple[list[float], list[float]] | None:
  """(fractions, edges) of a reward-stats dict's histogram, or None if it has none."""
  hist = report_data.as_dict(report_data.as_dict(stats).get('histogram'))
  counts = [report_data.number(c) for c in report_data.as_list(hist.get('counts'))]
  edges = [report_data.number(e) for e in report_data.as_list(hist.get('edges'))]
  if not counts or len(edges) != len(counts) + 1 or None in counts or None in edges:
    return None
  total = sum(counts)
  return [c / total if total else 0.0 for c in counts], edges


def _threshold_label(i: int, val: dict) -> str:
  """'I=i: τ=…, kept N (S samples + H human)' for a validation file."""
  label = f'I={i}: τ={report_data.fmt(val.get("tau"), ".3f")}'
  if val.get('kept') is not None:
    label += f', kept {report_data.fmt(val.get("kept"), ",")}'
    if val.get('kept_samples') is not None and val.get('kept_human') is not None:
      label += (
        f' ({report_data.fmt(val.get("kept_samples"), ",")} samples'
        f' + {report_data.fmt(val.get("kept_human"), ",")} human)'
      )
  return label


def plot_round(g: int, manifest: dict, validations: Sequence[tuple[int, dict]], path: str) -> bool:
  """Plots round g's reward histograms and its Improve thresholds.

  Args:
    g: the Grow round.
    manifest: the round's `grow/g<g>/manifest.json`.
    validations: (improve step, its `eval/g<g>_i<i>_validation.json`) of the
      round's Improve steps; each threshold `tau` is drawn as a vertical line.
    path: where the PNG goes.

  Returns:
    Whether a figure was written (False: the manifest has no histogram).
  """
  series = []
  for key, label in (('reward_stats_samples', 'policy samples'), ('reward_stats_human', 'human')):
    hist = _histogram(manifest.get(key))
    if hist:
      count = report_data.as_dict(manifest.get(key)).get('count')
      series.append((hist, f'{label} (n={report_data.fmt(count, ",")})'))
  if not series:  # Older manifests: only the pooled statistics.
    hist = _histogram(manifest.get('reward_stats'))
    if hist:
      series.append((hist, 'all records'))
  if not series:
    return False
  fig = Figure(figsize=(8, 3.6))
  ax = fig.add_subplot()
  for (fractions, edges), label in series:
    ax.stairs(fractions, edges, fill=False, linewidth=1.8, label=label)
  top = max(max(f) for (f, _), _ in series) or 1.0
  colors = ('tab:red', 'tab:purple', 'tab:brown', 'tab:olive', 'tab:cyan', 'tab:pink')
  for k, (i, val) in enumerate(validations):
    tau = report_data.number(val.get('tau'))
    if tau is None:
      continue
    color = colors[k % len(colors)]
    ax.axvline(tau, color=color, linestyle='--', linewidth=1.2, label=_threshold_label(i, val))
    ax.text(tau, top * (0.95 - 0.1 * k), f' I={i}', color=color, fontsize=8, va='top')
  title = f'Grow round g{g}'
  if g == 0:
    title = 'g0 (BC samples for the reward model)'
  source = manifest.get('reward_source')
  ax.set_title(title + (f' — reward: {source}' if source else ''))
  ax.set_xlabel('reward')
  ax.set_ylabel('fraction of records')
  ax.legend(fontsize=8, loc='upper center', bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
  ax.grid(alpha=0.3)
  _save(fig, path)
  return True


# ----------------------------------------------------------------------------- per phase


def _short_label(row: dict) -> str:
  """'BC' or 'g<g>i<i>' for a plot's x axis."""
  if row.get('phase') == 'bc':
    return 'BC'
  if str(row.get('phase')).startswith('online_'):
    return {'online_samples': 'on=S', 'online_time': 'on=T'}.get(row['phase'], row['phase'])
  prefix = 'ctl ' if row.get('phase') == 'bc_more' else ''
  return f'{prefix}g{row.get("g", "?")}i{row.get("i", "?")}'


def plot_reward_per_phase(rows: Sequence[dict], path: str) -> bool:
  """Two panels, reward and BLEU over the summary rows (val and test).

  Args:
    rows: the rows of `eval/summary.json`, one x position each.
    path: where the PNG goes.

  Returns:
    Whether a figure was written (False: no rows).
  """
  if not rows:
    return False
  labels = [_short_label(r) for r in rows]
  x = list(range(len(rows)))
  fig = Figure(figsize=(10, 3.6))
  axes = fig.subplots(1, 2)
  for ax, key, title in ((axes[0], 'reward', 'reward'), (axes[1], 'bleu', 'BLEU')):
    for split, marker in (('val', 'o'), ('test', 's')):
      ys = [report_data.number(r.get(f'{split}_{key}')) for r in rows]
      ys = [math.nan if y is None else y for y in ys]
      label = 'val (selection)' if split == 'val' else 'test'
      ax.plot(x, ys, marker=marker, label=label)
    ax.set_xticks(x, labels, rotation=45 if len(x) > 8 else 0, fontsize=8)
    ax.set_title(f'{title} per phase')
    ax.set_xlabel('phase')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  _save(fig, path)
  return True


def plot_reward_per_cost(rows: Sequence[dict], path: str) -> bool:
  """Test reward against distinct samples and against seconds, one line per method.

  ReST: BC, then its rows in order; the BC control: BC, then its rows; each
  online arm: BC and its row. x is what the policy cost since the starting
  policy (`rest_online.cost`).

  Args:
    rows: the rows of `eval/summary.json` (with `samples` and `seconds`).
    path: where the PNG goes.

  Returns:
    Whether a figure was written (False: no row has a cost).
  """
  if not any(r.get('seconds') for r in rows):
    return False
  bc = [r for r in rows if r.get('phase') == 'bc']
  series = {
    'ReST': bc + [r for r in rows if r.get('phase') == 'improve'],
    'BC control': bc + [r for r in rows if r.get('phase') == 'bc_more'],
  }
  for r in rows:
    if str(r.get('phase')).startswith('online_'):
      series[f'{r.get("loss_name")} ({_short_label(r)})'] = bc + [r]
  fig = Figure(figsize=(10, 3.6))
  axes = fig.subplots(1, 2)
  for ax, key, title in ((axes[0], 'samples', 'distinct samples'), (axes[1], 'seconds', 'seconds')):
    for label, points in series.items():
      pairs = [
        (report_data.number(p.get(key)), report_data.number(p.get('test_reward'))) for p in points
      ]
      pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
      if len(pairs) > 1:
        ax.plot(*zip(*pairs), marker='o', label=label)
    ax.set_xlabel(f'{title} since the starting policy')
    ax.set_ylabel('test reward')
    ax.set_title(f'test reward per {title}')
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=8)
  _save(fig, path)
  return True


# ----------------------------------------------------------------------------- best of N


def plot_best_of_n(curves: Sequence[dict], path: str) -> bool:
  """Reward and BLEU against N (log2 axis), one line per curve.

  Args:
    curves: the `eval/best_of_n_*.json` dicts (`n`, `reward`, `bleu` lists and
      a `label`), as `report_data.best_of_n_curves` reads them.
    path: where the PNG goes.

  Returns:
    Whether a figure was written (False: no curves).
  """
  if not curves:
    return False
  fig = Figure(figsize=(10, 3.6))
  axes = fig.subplots(1, 2)
  for ax, key, title in ((axes[0], 'reward', 'reward'), (axes[1], 'bleu', 'BLEU')):
    for curve in curves:
      pairs = [
        (report_data.number(n), report_data.number(y))
        for n, y in zip(report_data.as_list(curve.get('n')), report_data.as_list(curve.get(key)))
      ]
      pairs = [(n, y) for n, y in pairs if n is not None and n > 0 and y is not None]
      if pairs:
        ax.plot(*zip(*pairs), marker='o', label=curve['label'])
    ax.set_xscale('log', base=2)
    ax.set_xlabel('N (samples per source)')
    ax.set_title(f'best-of-N {title}')
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=8)
  _save(fig, path)
  return True
