"""`--run_mode=report`: one self-contained HTML page about a ReST run.

`write_report(model_dir)` reads whatever a run has written so far and writes
`MODEL_DIR/report/report.html` with its plots (PNG files beside it, referenced
by relative `src`). The page has no network references (inline CSS and
script), so it opens from a copied folder. Sections, in order:

  1. title: the model dir and the generation time;
  2. the per-phase table in the shape of the paper's Table 1 (`eval/summary.json`);
  3. the reward distributions of each Grow round (`grow/g<g>/manifest.json`)
     with the thresholds of the round's Improve steps (`eval/g<g>_i<i>_validation.json`);
  4. reward and BLEU per phase (the summary rows);
  5. best-of-N curves (`eval/best_of_n_*.json`);
  6. the reward model's evaluation and probes (`eval/reward_model.json`);
  7. a few sources with BC's and the final policy's outputs (`eval/eval_*.json`);
  8. the operative config (`config.gin`).

The report is regenerated after every phase of a run, so any input may be
missing (its section says "not available yet") or malformed (its section says
what failed); writing the report never raises because of its inputs.

This is a driver-layer module without TensorFlow / seqio: it reads JSON and
draws with matplotlib's object API (`matplotlib.figure.Figure` renders with
Agg and never touches pyplot's global state or the process's backend).
"""

from __future__ import annotations

import glob
import html
import json
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from absl import logging
from matplotlib.figure import Figure

from rest_jax import files

REPORT_DIR = 'report'
REPORT_FILE = 'report.html'
MAX_SAMPLES = 8
NOT_AVAILABLE = 'not available yet'

_ROUND_RE = re.compile(r'^g(\d+)$')
_VALIDATION_RE = re.compile(r'^g(\d+)_i(\d+)_validation\.json$')
_EVAL_RE = re.compile(r'^eval_g(\d+)_i(\d+)\.json$')
_RM_METRICS = ('kendall_tau', 'pearson', 'pairwise_accuracy', 'n')

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1400px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; vertical-align: top; }
th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #777; font-style: italic; } .error { color: #b00; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.85em; }
.meta { color: #555; }
"""

# Counts the images once everything has loaded; the headless-browser test reads these.
_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (im) { return im.complete && im.naturalWidth > 0; }).length;
  document.body.dataset.imagesLoaded = String(ok);
  document.body.dataset.imagesBroken = String(imgs.length - ok);
  document.body.dataset.ready = '1';
});
"""


# ----------------------------------------------------------------------------- inputs


def _read_json(path: str) -> Any:
  """The parsed JSON file at `path`, or None when it is missing or malformed."""
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    logging.warning('report: cannot read %s: %s', path, e)
    return None


def _read_text(path: str) -> str | None:
  """The text of `path`, or None when it cannot be read."""
  try:
    with open(path, errors='replace') as f:
      return f.read()
  except OSError:
    return None


def _dict(x: Any) -> dict:
  """`x` if it is a dict, else an empty dict (for defensive reading)."""
  return x if isinstance(x, dict) else {}


def _list(x: Any) -> list:
  """`x` if it is a list, else an empty list (for defensive reading)."""
  return x if isinstance(x, list) else []


def _number(x: Any) -> float | None:
  """`x` as a finite float, or None when it is not a number."""
  if isinstance(x, bool) or not isinstance(x, int | float):
    return None
  return float(x) if math.isfinite(x) else None


def _numbered(folder: str, pattern: re.Pattern, dirs: bool = False) -> list[tuple[tuple, str]]:
  """`((numbers...), path)` of the entries of `folder` matching `pattern`, sorted by number."""
  try:
    names = os.listdir(folder)
  except OSError:
    return []
  out = []
  for name in names:
    m = pattern.match(name)
    path = os.path.join(folder, name)
    if m and os.path.isdir(path) == dirs:
      out.append((tuple(int(x) for x in m.groups()), path))
  return sorted(out)


def _summary_rows(model_dir: str) -> list[dict]:
  """The rows of `eval/summary.json` (dicts only), or [] when it is not there."""
  summary = _dict(_read_json(os.path.join(model_dir, 'eval', 'summary.json')))
  return [r for r in _list(summary.get('rows')) if isinstance(r, dict)]


def _validations(model_dir: str) -> dict[int, list[tuple[int, dict]]]:
  """grow round -> [(improve step, its `eval/g<g>_i<i>_validation.json`)], by step."""
  out: dict[int, list[tuple[int, dict]]] = {}
  for (g, i), path in _numbered(os.path.join(model_dir, 'eval'), _VALIDATION_RE):
    data = _read_json(path)
    if isinstance(data, dict):
      out.setdefault(g, []).append((i, data))
  return out


# ----------------------------------------------------------------------------- html helpers


def _e(x: Any) -> str:
  """HTML-escaped `str(x)`."""
  return html.escape(str(x), quote=True)


def _fmt(x: Any, spec: str = '.3f') -> str:
  """A number formatted with `spec` ('d' and ',' for counts), '–' for None, else text."""
  if x is None:
    return '–'
  n = _number(x)
  if n is None:
    return str(x)
  if spec in ('d', ','):
    return format(int(n), spec) if n == int(n) else format(n, '.4g')
  return format(n, spec)


def _table_html(header: Sequence[str], rows: Sequence[Sequence[Any]], table_id: str = '') -> str:
  """An HTML table; cells are escaped, numeric-looking cells right-aligned.

  Args:
    header: column titles.
    rows: one sequence of already formatted cell texts per row.
    table_id: the table's `id` attribute, if any.

  Returns:
    The `<table>` element as text.
  """
  id_attr = f' id="{_e(table_id)}"' if table_id else ''
  head = ''.join(f'<th>{_e(h)}</th>' for h in header)
  body = []
  for row in rows:
    cells = []
    for cell in row:
      text = str(cell)
      numeric = re.fullmatch(r'[-+]?[\d,]*\.?\d+(e[-+]?\d+)?|–', text) is not None
      cells.append(f'<td class="num">{_e(text)}</td>' if numeric else f'<td>{_e(text)}</td>')
    body.append(f'<tr>{"".join(cells)}</tr>')
  return (
    f'<table{id_attr}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
    + '\n'.join(body)
    + ('\n</tbody>\n</table>')
  )


def _note(text: str, cls: str = 'note') -> str:
  """A short escaped note paragraph."""
  return f'<p class="{cls}">{_e(text)}</p>'


def _img(name: str, alt: str) -> str:
  """An `<img>` of a PNG beside the report."""
  return f'<img src="{_e(name)}" alt="{_e(alt)}">'


def _save(fig: Figure, path: str) -> None:
  """Writes `fig` as a PNG to `path` atomically."""
  with files.atomic_path(path) as tmp:
    fig.savefig(tmp, format='png', dpi=100, bbox_inches='tight')


def _method(row: dict) -> str:
  """'BC' or 'ReST (G=g, I=i)', as in the paper's Table 1."""
  phase = row.get('phase')
  if phase == 'bc':
    return 'BC'
  if phase == 'improve':
    return f'ReST (G={row.get("g", "?")}, I={row.get("i", "?")})'
  if phase == 'bc_more':
    return f'BC control (G={row.get("g", "?")}, I={row.get("i", "?")})'
  return str(phase)


def _summary_table(rows: Sequence[dict]) -> str:
  """The per-phase table, `<table id="summary">`, one `<tr>` per summary row.

  The test split's columns come first (the results: nothing selects on it),
  then the validation split's, marked as the selection split.
  """
  columns = [  # (split, key, title, format)
    ('test', 'reward', 'Test reward', '.4f'),
    ('test', 'judge_reward', 'Test judge reward', '.4f'),
    ('test', 'bleu', 'Test BLEU', '.2f'),
    ('test', 'chrf', 'Test chrF', '.2f'),
    ('test', 'length_ratio', 'Test length ratio', '.3f'),
    ('test', 'hacking_rate', 'Test hacking rate', '.3f'),
    ('val', 'reward', 'Val reward (selection)', '.4f'),
    ('val', 'judge_reward', 'Val judge reward', '.4f'),
    ('val', 'bleu', 'Val BLEU (selection split)', '.2f'),
    ('val', 'chrf', 'Val chrF (selection split)', '.2f'),
  ]
  columns = [c for c in columns if any(r.get(f'{c[0]}_{c[1]}') is not None for r in rows)]
  header = ['Method', 'G', 'I', 'τ', 'Loss', 'Training examples'] + [c[2] for c in columns]
  body = []
  for r in rows:
    cells = [_method(r), _fmt(r.get('g'), 'd'), _fmt(r.get('i'), 'd'), _fmt(r.get('tau'), '.4f')]
    cells += [_fmt(r.get('loss_name')), _fmt(r.get('n_train_examples'), ',')]
    cells += [_fmt(r.get(f'{split}_{key}'), spec) for split, key, _, spec in columns]
    body.append(cells)
  return _table_html(header, body, table_id='summary')


def _section_summary(model_dir: str, out_dir: str) -> str:
  """Section 2: the per-phase table."""
  del out_dir
  rows = _summary_rows(model_dir)
  if not rows:
    return _note(f'eval/summary.json: {NOT_AVAILABLE}.')
  return (
    _summary_table(rows)
    + '<p class="meta">Test columns: the test split, which no phase selects on: the results. '
    'Val columns: the validation split, which selects every checkpoint and stops every '
    'Improve step early, so its reward cannot fall from row to row by construction. '
    'Judge: a reward the policy was neither trained nor selected on (a second reward model '
    'on other sources). BC control: the BC policy trained on the human data alone for as '
    'many steps as the ReST rows, selected the same way. '
    'Training examples: what the phase trained on (BC and its control: the human data; '
    'Improve: the filtered Grow data, distinct samples plus kept human references). '
    'τ: the reward threshold of the Improve step.</p>'
  )


# ----------------------------------------------------------------------------- 3. distributions


def _histogram(stats: Any) -> tuple[list[float], list[float]] | None:
  """(fractions, edges) of a reward-stats dict's histogram, or None if it has none."""
  hist = _dict(_dict(stats).get('histogram'))
  counts = [_number(c) for c in _list(hist.get('counts'))]
  edges = [_number(e) for e in _list(hist.get('edges'))]
  if not counts or len(edges) != len(counts) + 1 or None in counts or None in edges:
    return None
  total = sum(counts)
  return [c / total if total else 0.0 for c in counts], edges


def _threshold_label(i: int, val: dict) -> str:
  """'I=i: τ=…, kept N (S samples + H human)' for a validation file."""
  label = f'I={i}: τ={_fmt(val.get("tau"), ".3f")}'
  if val.get('kept') is not None:
    label += f', kept {_fmt(val.get("kept"), ",")}'
    if val.get('kept_samples') is not None and val.get('kept_human') is not None:
      label += (
        f' ({_fmt(val.get("kept_samples"), ",")} samples'
        f' + {_fmt(val.get("kept_human"), ",")} human)'
      )
  return label


def _plot_round(g: int, manifest: dict, validations: Sequence[tuple[int, dict]], path: str) -> bool:
  """Plots round g's reward histograms and its Improve thresholds; False if nothing to plot."""
  series = []
  for key, label in (('reward_stats_samples', 'policy samples'), ('reward_stats_human', 'human')):
    hist = _histogram(manifest.get(key))
    if hist:
      count = _dict(manifest.get(key)).get('count')
      series.append((hist, f'{label} (n={_fmt(count, ",")})'))
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
    tau = _number(val.get('tau'))
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


def _round_facts(manifest: dict) -> str:
  """A one-line table of a round's sizes and reward means."""
  header = ['sources', 'sampled sequences', 'records', 'reward source']
  row = [
    _fmt(manifest.get('num_sources'), ','),
    _fmt(manifest.get('sampled_sequences'), ','),
    _fmt(manifest.get('num_records'), ','),
    _fmt(manifest.get('reward_source')),
  ]
  for key, label in (('reward_stats_samples', 'samples'), ('reward_stats_human', 'human')):
    stats = _dict(manifest.get(key))
    if _number(stats.get('mean')) is not None:
      header.append(f'{label} mean ± std')
      row.append(f'{_fmt(stats.get("mean"))} ± {_fmt(stats.get("std"))}')
  return _table_html(header, [row])


def _section_distributions(model_dir: str, out_dir: str) -> str:
  """Section 3: one histogram PNG per Grow round, with its Improve thresholds."""
  # g0 (the reward model's BC samples, scored with the training reward) is
  # included, labelled as such: it shows what the reward model learned from.
  rounds = _numbered(os.path.join(model_dir, 'grow'), _ROUND_RE, dirs=True)
  validations = _validations(model_dir)
  parts = []
  for (g,), folder in rounds:
    manifest = _read_json(os.path.join(folder, 'manifest.json'))
    label = 'g0 (BC samples for the reward model)' if g == 0 else f'Grow round g{g}'
    parts.append(f'<h3>{_e(label)}</h3>')
    if not isinstance(manifest, dict):
      parts.append(_note(f'grow/g{g}/manifest.json: {NOT_AVAILABLE} (round unfinished).'))
      continue
    parts.append(_round_facts(manifest))
    name = f'reward_distribution_g{g}.png'
    if _plot_round(g, manifest, validations.get(g, []), os.path.join(out_dir, name)):
      parts.append(_img(name, f'reward distribution of round g{g}'))
    else:
      parts.append(_note('No reward histogram in the manifest.'))
    if g > 0 and not validations.get(g):
      parts.append(_note(f'Improve thresholds of round g{g}: {NOT_AVAILABLE}.'))
  if not parts:
    return _note(f'grow/g*/manifest.json: {NOT_AVAILABLE}.')
  return '\n'.join(parts)


# ----------------------------------------------------------------------------- 4. per phase


def _short_label(row: dict) -> str:
  """'BC' or 'g<g>i<i>' for a plot's x axis."""
  if row.get('phase') == 'bc':
    return 'BC'
  prefix = 'ctl ' if row.get('phase') == 'bc_more' else ''
  return f'{prefix}g{row.get("g", "?")}i{row.get("i", "?")}'


def _plot_reward_per_phase(rows: Sequence[dict], path: str) -> bool:
  """Two panels, reward and BLEU over the summary rows (val and test); False if empty."""
  if not rows:
    return False
  labels = [_short_label(r) for r in rows]
  x = list(range(len(rows)))
  fig = Figure(figsize=(10, 3.6))
  axes = fig.subplots(1, 2)
  for ax, key, title in ((axes[0], 'reward', 'reward'), (axes[1], 'bleu', 'BLEU')):
    for split, marker in (('val', 'o'), ('test', 's')):
      ys = [_number(r.get(f'{split}_{key}')) for r in rows]
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


def _section_per_phase(model_dir: str, out_dir: str) -> str:
  """Section 4: reward and BLEU per phase."""
  rows = _summary_rows(model_dir)
  name = 'reward_per_phase.png'
  if not _plot_reward_per_phase(rows, os.path.join(out_dir, name)):
    return _note(f'eval/summary.json: {NOT_AVAILABLE}.')
  return _img(name, 'reward and BLEU per phase')


# ----------------------------------------------------------------------------- 5. best of N


def _best_of_n_curves(model_dir: str) -> list[dict]:
  """The readable `eval/best_of_n_*.json` files, sorted by name."""
  curves = []
  for path in sorted(glob.glob(os.path.join(model_dir, 'eval', 'best_of_n_*.json'))):
    data = _read_json(path)
    if isinstance(data, dict) and _list(data.get('n')):
      name = os.path.basename(path)[len('best_of_n_') : -len('.json')]
      curves.append({**data, 'label': str(data.get('label') or name)})
  return curves


def _plot_best_of_n(curves: Sequence[dict], path: str) -> bool:
  """Reward and BLEU against N (log2 axis), one line per curve; False if empty."""
  if not curves:
    return False
  fig = Figure(figsize=(10, 3.6))
  axes = fig.subplots(1, 2)
  for ax, key, title in ((axes[0], 'reward', 'reward'), (axes[1], 'bleu', 'BLEU')):
    for curve in curves:
      pairs = [
        (_number(n), _number(y)) for n, y in zip(_list(curve.get('n')), _list(curve.get(key)))
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


def _section_best_of_n(model_dir: str, out_dir: str) -> str:
  """Section 5: best-of-N curves."""
  curves = _best_of_n_curves(model_dir)
  name = 'best_of_n.png'
  if not _plot_best_of_n(curves, os.path.join(out_dir, name)):
    return _note(f'eval/best_of_n_*.json: {NOT_AVAILABLE}.')
  return _img(name, 'best-of-N reward and BLEU')


# ----------------------------------------------------------------------------- 6. reward model


def _is_metrics(x: Any) -> bool:
  """Whether `x` is a flat dict of metrics (some numeric value, no nested dicts)."""
  return (
    isinstance(x, dict)
    and any(_number(v) is not None for v in x.values())
    and not any(isinstance(v, dict) for v in x.values())
  )


def _rm_rows(rm: dict) -> list[tuple[str, str, dict]]:
  """(set, scorer, metrics) of the reward model and its baselines on each eval set.

  Reads both layouts: baselines inside each set (`sets[s]['baselines'][b]`) and
  top-level baselines per set (`baselines[b][s]`); a top-level flat baseline
  (no set) is shown as set '(all)' when no per-set value of it exists.
  """
  rows = []
  for set_name, entry in _dict(rm.get('sets')).items():
    for scorer, metrics in _dict(entry).items():
      if scorer != 'baselines' and _is_metrics(metrics):
        rows.append((str(set_name), str(scorer), metrics))
    for scorer, metrics in _dict(_dict(entry).get('baselines')).items():
      if _is_metrics(metrics):
        rows.append((str(set_name), f'{scorer} (baseline)', metrics))
  seen = {scorer for _, scorer, _ in rows}
  for scorer, value in _dict(rm.get('baselines')).items():
    label = f'{scorer} (baseline)'
    if _is_metrics(value):
      if label not in seen:
        rows.append(('(all)', label, value))
      continue
    for set_name, metrics in _dict(value).items():
      if _is_metrics(metrics) and (str(set_name), label) not in {(s, c) for s, c, _ in rows}:
        rows.append((str(set_name), label, metrics))
  return rows


def _metrics_table(
  first: Sequence[str], rows: Sequence[tuple[Sequence[str], dict]], known: Sequence[str]
) -> str:
  """A table of metric dicts: `known` columns first, then any other numeric keys."""
  extra = sorted({k for _, m in rows for k, v in m.items() if _number(v) is not None} - set(known))
  keys = list(known) + extra
  body = [
    list(lead) + [_fmt(m.get(k), ',' if k == 'n' else '.4f') for k in keys] for lead, m in rows
  ]
  return _table_html(list(first) + keys, body)


def _reward_model_html(rm: dict) -> str:
  """One reward model's facts, agreement with judgments, and probes."""
  parts = []
  facts = [(k, v) for k, v in sorted(rm.items()) if _number(v) is not None or isinstance(v, str)]
  if facts:
    parts.append(_table_html([k for k, _ in facts], [[_fmt(v, '.4g') for _, v in facts]]))
  rows = _rm_rows(rm)
  parts.append('<h3>Agreement with judgments</h3>')
  if rows:
    parts.append(_metrics_table(['set', 'scorer'], [((s, c), m) for s, c, m in rows], _RM_METRICS))
  else:
    parts.append(_note(f'Per-set metrics: {NOT_AVAILABLE}.'))
  parts.append('<h3>Probes</h3>')
  probes = [(str(k), v) for k, v in _dict(rm.get('probes')).items() if _is_metrics(v)]
  if probes:
    known = ('mean_delta', 'fraction_increased', 'fraction_decreased')
    parts.append(_metrics_table(['probe'], [((p,), m) for p, m in probes], known))
    parts.append(
      '<p class="meta">mean delta: mean score of the probed output minus that of the '
      'reference; fraction increased / decreased: how often the probe raised / lowered '
      'the score.</p>'
    )
  else:
    parts.append(_note(f'Probes: {NOT_AVAILABLE}.'))
  return '\n'.join(parts)


def _section_reward_model(model_dir: str, out_dir: str) -> str:
  """Section 6: the reward model's (and the judge's) agreement with judgments and probes."""
  del out_dir
  rm = _read_json(os.path.join(model_dir, 'eval', 'reward_model.json'))
  if not isinstance(rm, dict):
    parts = [_note(f'eval/reward_model.json: {NOT_AVAILABLE} (or the run uses a fixed reward).')]
  else:
    parts = [_reward_model_html(rm)]
  run_reward = _read_json(os.path.join(model_dir, 'eval', 'reward_probes.json'))
  if isinstance(run_reward, dict):
    probes = [(str(k), v) for k, v in _dict(run_reward.get('probes')).items() if _is_metrics(v)]
    parts.append(
      f"<h3>Probes of the run's reward ({_e(run_reward.get('reward'))})</h3>"
      '<p class="meta">The reward Grow, Improve and evaluation use: the reward model above '
      'with the guards (and the metric mix) when they are on.</p>'
    )
    known = ('mean_delta', 'fraction_increased', 'fraction_decreased')
    parts.append(_metrics_table(['probe'], [((p,), m) for p, m in probes], known))
  judge = _read_json(os.path.join(model_dir, 'eval', 'reward_model_rm_judge.json'))
  if isinstance(judge, dict):
    parts.append(
      '<h3>The independent judge</h3><p class="meta">A second reward model, trained on '
      'other train sources with another seed; it scores every evaluated policy (the judge '
      'columns) and never filters or selects.</p>'
    )
    parts.append(_reward_model_html(judge))
  return '\n'.join(parts)


# ----------------------------------------------------------------------------- 7. samples


def _samples(evaluation: Any) -> list[dict]:
  """The validation samples of an eval file (test samples if it has none)."""
  for split in ('val', 'test'):
    samples = [s for s in _list(_dict(_dict(evaluation).get(split)).get('samples')) if _dict(s)]
    if samples:
      return samples
  return []


def _final_eval(model_dir: str) -> tuple[str, dict] | None:
  """(name, data) of the last `eval/eval_g<g>_i<i>.json`, or None."""
  for (g, i), path in reversed(_numbered(os.path.join(model_dir, 'eval'), _EVAL_RE)):
    data = _read_json(path)
    if isinstance(data, dict):
      return f'ReST (G={g}, I={i})', data
  return None


def _output_cell(sample: dict | None) -> str:
  """An output with its reward, escaped, for the samples table."""
  if not sample:
    return '<td class="note">–</td>'
  reward = _number(sample.get('reward'))
  tail = '' if reward is None else f'<br><span class="meta">reward {reward:.3f}</span>'
  return f'<td>{_e(sample.get("output", ""))}{tail}</td>'


def _samples_html(bc: Sequence[dict], final: Sequence[dict], final_name: str) -> str:
  """Up to MAX_SAMPLES sources with BC's and the final policy's outputs side by side."""
  by_source = {str(s.get('source')): s for s in final}
  rows = []
  for sample in bc[:MAX_SAMPLES]:
    other = by_source.get(str(sample.get('source')))
    cells = [
      f'<td>{_e(sample.get("source", ""))}</td>',
      f'<td>{_e(sample.get("reference", ""))}</td>',
      _output_cell(sample),
      _output_cell(other),
    ]
    rows.append(f'<tr>{"".join(cells)}</tr>')
  head = ''.join(
    f'<th>{_e(h)}</th>' for h in ('source', 'reference', 'BC output', f'{final_name} output')
  )
  return (
    f'<table id="samples">\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
    + '\n'.join(rows)
    + '\n</tbody>\n</table>'
  )


def _section_samples(model_dir: str, out_dir: str) -> str:
  """Section 7: BC's and the final policy's outputs on a few validation sources."""
  del out_dir
  bc = _samples(_read_json(os.path.join(model_dir, 'eval', 'eval_bc.json')))
  final = _final_eval(model_dir)
  if not bc:
    return _note(f'eval/eval_bc.json: {NOT_AVAILABLE}.')
  if final is None:
    return _samples_html(bc, [], 'final policy') + _note(
      f'eval/eval_g*_i*.json (the final policy): {NOT_AVAILABLE}.'
    )
  return _samples_html(bc, _samples(final[1]), final[0])


# ----------------------------------------------------------------------------- 8. config


def _section_config(model_dir: str, out_dir: str) -> str:
  """Section 8: the operative config."""
  del out_dir
  text = _read_text(os.path.join(model_dir, 'config.gin'))
  if text is None:
    return _note(f'config.gin: {NOT_AVAILABLE}.')
  return f'<pre id="config">{_e(text)}</pre>'


# ----------------------------------------------------------------------------- page

_SECTIONS: tuple[tuple[str, Callable[[str, str], str]], ...] = (
  ('Results per phase (Table 1)', _section_summary),
  ('Reward distributions of the Grow rounds', _section_distributions),
  ('Reward and BLEU per phase', _section_per_phase),
  ('Best-of-N', _section_best_of_n),
  ('Reward model', _section_reward_model),
  ('Samples: BC and the final policy', _section_samples),
  ('Operative config', _section_config),
)


def _safe_section(build: Callable[[str, str], str], model_dir: str, out_dir: str) -> str:
  """`build(model_dir, out_dir)`, or an error note if it raises (a half-written input)."""
  try:
    return build(model_dir, out_dir)
  except Exception as e:  # noqa: BLE001 - a report must not kill the run that writes it.
    logging.exception('report: section %s failed', build.__name__)
    return _note(f'This section could not be rendered: {type(e).__name__}: {e}', 'error')


def render_html(model_dir: str, out_dir: str) -> str:
  """The report page for `model_dir`; writes its PNG plots into `out_dir`.

  Args:
    model_dir: the run's folder.
    out_dir: where the plots go (the page references them by file name).

  Returns:
    The page's HTML text.
  """
  generated = time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())
  body = [
    f'<h1>ReST run report: {_e(model_dir)}</h1>',
    f'<p class="meta">Generated {_e(generated)}.</p>',
  ]
  for title, build in _SECTIONS:
    body.append(f'<h2>{_e(title)}</h2>')
    body.append(_safe_section(build, model_dir, out_dir))
  return (
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    f'<title>ReST report: {_e(model_dir)}</title>\n<style>{_STYLE}</style>\n'
    f'<script>{_SCRIPT}</script>\n</head>\n<body>\n' + '\n'.join(body) + '\n</body>\n</html>\n'
  )


def write_report(model_dir: str) -> str:
  """Writes `MODEL_DIR/report/report.html` and its plots from what the run has so far.

  Missing inputs leave a "not available yet" note in their section, so this
  can run after every phase of a run.

  Args:
    model_dir: the run's folder.

  Returns:
    The path of the HTML file.
  """
  out_dir = os.path.join(model_dir, REPORT_DIR)
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, REPORT_FILE)
  files.write_text(path, render_html(model_dir, out_dir))
  return path


def report(*, model_dir: str) -> str:
  """`--run_mode=report`: writes the run report of `model_dir` and prints its path.

  Args:
    model_dir: the run's folder (MODEL_DIR of the run).

  Returns:
    The path of `report.html`.
  """
  path = write_report(model_dir)
  print(path)
  return path
