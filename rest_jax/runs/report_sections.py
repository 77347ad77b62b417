"""The sections of the run report, each as HTML built from what a run has written.

`SECTIONS` lists (title, build) in page order; `build(model_dir, out_dir)`
returns the section's HTML and writes its PNG plots into `out_dir`. A missing
input gives a note that it is `NOT_AVAILABLE`; `report.py` puts an error note
in place of a section whose build raises. Reading the files is `report_data`,
drawing the plots `report_figures`, the HTML elements `report_html`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from rest_jax.core import model_dir as model_dir_lib
from rest_jax.runs import report_data, report_figures, report_html

MAX_SAMPLES = 8
NOT_AVAILABLE = 'not available yet'

_RM_METRICS = ('kendall_tau', 'pearson', 'pairwise_accuracy', 'n')


# ----------------------------------------------------------------------------- 2. summary


def _method(row: dict) -> str:
  """'BC' or 'ReST (G=g, I=i)', as in the paper's Table 1."""
  phase = row.get('phase')
  if phase == 'bc':
    return 'BC'
  if phase == 'improve':
    return f'ReST (G={row.get("g", "?")}, I={row.get("i", "?")})'
  if phase == 'bc_more':
    return f'BC control (G={row.get("g", "?")}, I={row.get("i", "?")})'
  arms = {'online_samples': 'equal samples', 'online_time': 'equal time'}
  if phase in arms:
    return f'Online {str(row.get("loss_name", "")).upper()} ({arms[phase]})'
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
    ('test', 'pass_at_k', 'Test pass@k', '.4f'),
    ('test', 'majority_at_k', 'Test majority@k', '.4f'),
    ('val', 'reward', 'Val reward (selection)', '.4f'),
    ('val', 'judge_reward', 'Val judge reward', '.4f'),
    ('val', 'bleu', 'Val BLEU (selection split)', '.2f'),
    ('val', 'chrf', 'Val chrF (selection split)', '.2f'),
    ('val', 'pass_at_k', 'Val pass@k', '.4f'),
  ]
  columns = [c for c in columns if any(r.get(f'{c[0]}_{c[1]}') is not None for r in rows)]
  costs = [  # What the policy cost since the starting policy (`rest_online.cost`).
    ('samples', 'Distinct samples', ','),
    ('train_tokens', 'Training tokens', ','),
    ('seconds', 'Seconds', ',.0f'),
  ]
  costs = [c for c in costs if any(r.get(c[0]) is not None for r in rows)]
  header = ['Method', 'G', 'I', 'τ', 'Loss', 'Training examples'] + [c[2] for c in columns]
  header += [c[1] for c in costs]
  body = []
  for r in rows:
    cells = [
      _method(r),
      report_data.fmt(r.get('g'), 'd'),
      report_data.fmt(r.get('i'), 'd'),
      report_data.fmt(r.get('tau'), '.4f'),
    ]
    cells += [report_data.fmt(r.get('loss_name')), report_data.fmt(r.get('n_train_examples'), ',')]
    cells += [report_data.fmt(r.get(f'{split}_{key}'), spec) for split, key, _, spec in columns]
    cells += [report_data.fmt(r.get(key), spec) for key, _, spec in costs]
    body.append(cells)
  return report_html.table_html(header, body, table_id='summary')


def _section_summary(model_dir: str, out_dir: str) -> str:
  """Section 2: the per-phase table."""
  del out_dir
  rows = report_data.summary_rows(model_dir)
  if not rows:
    return report_html.note(f'eval/summary.json: {NOT_AVAILABLE}.')
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
    'τ: the reward threshold of the Improve step. '
    'Distinct samples, training tokens (rows x length through forward and backward passes) '
    'and seconds: what the policy cost since the starting policy (ReST: its Grow rounds and '
    'Improve steps; online RL: its whole run), for comparisons at equal cost.</p>'
    + _paired_table(model_dir)
  )


def _paired_table(model_dir: str) -> str:
  """The final policy's paired bootstrap on test against BC and the control ('' if none)."""
  tests = report_data.paired_tests(model_dir)
  if not tests:
    return ''
  body = []
  for label, t in tests:
    cells = [label]
    for key in ('bleu', 'chrf'):
      d = report_data.as_dict(t.get(key))
      lo, hi = (report_data.as_list(d.get('ci95')) + [None, None])[:2]
      cells += [
        report_data.fmt(d.get('diff'), '+.2f'),
        f'[{report_data.fmt(lo, "+.2f")}, {report_data.fmt(hi, "+.2f")}]',
        report_data.fmt(d.get('a_wins'), '.3f'),
      ]
    cells.append(
      f'{report_data.fmt(t.get("identical"), ",")} / {report_data.fmt(t.get("num_sentences"), ",")}'
    )
    body.append(cells)
  header = [
    'Test, paired bootstrap',
    'BLEU diff',
    'BLEU 95% interval',
    'BLEU: first wins',
    'chrF diff',
    'chrF 95% interval',
    'chrF: first wins',
    'Identical outputs',
  ]
  return report_html.table_html(header, body, table_id='paired') + (
    '<p class="meta">Resamples of the test sentences, drawn with replacement and the same for '
    'both policies (metrics.paired_bootstrap). An interval that holds 0 is a difference the '
    'test split cannot tell from noise.</p>'
  )


# ----------------------------------------------------------------------------- 3. distributions


def _round_facts(manifest: dict) -> str:
  """A one-line table of a round's sizes and reward means."""
  header = ['sources', 'sampled sequences', 'records', 'reward source']
  row = [
    report_data.fmt(manifest.get('num_sources'), ','),
    report_data.fmt(manifest.get('sampled_sequences'), ','),
    report_data.fmt(manifest.get('num_records'), ','),
    report_data.fmt(manifest.get('reward_source')),
  ]
  for key, label in (('reward_stats_samples', 'samples'), ('reward_stats_human', 'human')):
    stats = report_data.as_dict(manifest.get(key))
    if report_data.number(stats.get('mean')) is not None:
      header.append(f'{label} mean ± std')
      row.append(f'{report_data.fmt(stats.get("mean"))} ± {report_data.fmt(stats.get("std"))}')
  return report_html.table_html(header, [row])


def _section_distributions(model_dir: str, out_dir: str) -> str:
  """Section 3: one histogram PNG per Grow round, with its Improve thresholds."""
  # g0 (the reward model's BC samples, scored with the training reward) is
  # included, labelled as such: it shows what the reward model learned from.
  validations = report_data.validations(model_dir)
  parts = []
  for g, folder in report_data.grow_rounds(model_dir):
    manifest = report_data.read_json(os.path.join(folder, 'manifest.json'))
    label = 'g0 (BC samples for the reward model)' if g == 0 else f'Grow round g{g}'
    parts.append(f'<h3>{report_html.escape(label)}</h3>')
    if not isinstance(manifest, dict):
      parts.append(
        report_html.note(f'grow/g{g}/manifest.json: {NOT_AVAILABLE} (round unfinished).')
      )
      continue
    parts.append(_round_facts(manifest))
    name = f'reward_distribution_g{g}.png'
    if report_figures.plot_round(g, manifest, validations.get(g, []), os.path.join(out_dir, name)):
      parts.append(report_html.img(name, f'reward distribution of round g{g}'))
    else:
      parts.append(report_html.note('No reward histogram in the manifest.'))
    if g > 0 and not validations.get(g):
      parts.append(report_html.note(f'Improve thresholds of round g{g}: {NOT_AVAILABLE}.'))
  if not parts:
    return report_html.note(f'grow/g*/manifest.json: {NOT_AVAILABLE}.')
  return '\n'.join(parts)


# ----------------------------------------------------------------------------- 4. per phase


def _section_per_phase(model_dir: str, out_dir: str) -> str:
  """Section 4: reward and BLEU per phase."""
  rows = report_data.summary_rows(model_dir)
  name = 'reward_per_phase.png'
  if not report_figures.plot_reward_per_phase(rows, os.path.join(out_dir, name)):
    return report_html.note(f'eval/summary.json: {NOT_AVAILABLE}.')
  html = report_html.img(name, 'reward and BLEU per phase')
  if report_figures.plot_reward_per_cost(rows, os.path.join(out_dir, 'reward_per_cost.png')):
    html += report_html.img('reward_per_cost.png', 'test reward per distinct samples and seconds')
  return html


# ----------------------------------------------------------------------------- 5. best of N


def _section_best_of_n(model_dir: str, out_dir: str) -> str:
  """Section 5: best-of-N curves."""
  curves = report_data.best_of_n_curves(model_dir)
  name = 'best_of_n.png'
  if not report_figures.plot_best_of_n(curves, os.path.join(out_dir, name)):
    return report_html.note(f'eval/best_of_n_*.json: {NOT_AVAILABLE}.')
  return report_html.img(name, 'best-of-N reward and BLEU')


# ----------------------------------------------------------------------------- 6. reward model


def _is_metrics(x: Any) -> bool:
  """Whether `x` is a flat dict of metrics (some numeric value, no nested dicts)."""
  return (
    isinstance(x, dict)
    and any(report_data.number(v) is not None for v in x.values())
    and not any(isinstance(v, dict) for v in x.values())
  )


def _rm_rows(rm: dict) -> list[tuple[str, str, dict]]:
  """(set, scorer, metrics) of the reward model and its baselines on each eval set.

  Reads both layouts: baselines inside each set (`sets[s]['baselines'][b]`) and
  top-level baselines per set (`baselines[b][s]`); a top-level flat baseline
  (no set) is shown as set '(all)' when no per-set value of it exists.
  """
  rows = []
  for set_name, entry in report_data.as_dict(rm.get('sets')).items():
    for scorer, metrics in report_data.as_dict(entry).items():
      if scorer != 'baselines' and _is_metrics(metrics):
        rows.append((str(set_name), str(scorer), metrics))
    for scorer, metrics in report_data.as_dict(report_data.as_dict(entry).get('baselines')).items():
      if _is_metrics(metrics):
        rows.append((str(set_name), f'{scorer} (baseline)', metrics))
  seen = {scorer for _, scorer, _ in rows}
  for scorer, value in report_data.as_dict(rm.get('baselines')).items():
    label = f'{scorer} (baseline)'
    if _is_metrics(value):
      if label not in seen:
        rows.append(('(all)', label, value))
      continue
    for set_name, metrics in report_data.as_dict(value).items():
      if _is_metrics(metrics) and (str(set_name), label) not in {(s, c) for s, c, _ in rows}:
        rows.append((str(set_name), label, metrics))
  return rows


def _metrics_table(
  first: Sequence[str], rows: Sequence[tuple[Sequence[str], dict]], known: Sequence[str]
) -> str:
  """A table of metric dicts: `known` columns first, then any other numeric keys."""
  extra = sorted(
    {k for _, m in rows for k, v in m.items() if report_data.number(v) is not None} - set(known)
  )
  keys = list(known) + extra
  body = [
    list(lead) + [report_data.fmt(m.get(k), ',' if k == 'n' else '.4f') for k in keys]
    for lead, m in rows
  ]
  return report_html.table_html(list(first) + keys, body)


def _reward_model_html(rm: dict) -> str:
  """One reward model's facts, agreement with judgments, and probes."""
  parts = []
  facts = [
    (k, v) for k, v in sorted(rm.items()) if report_data.number(v) is not None or isinstance(v, str)
  ]
  if facts:
    parts.append(
      report_html.table_html([k for k, _ in facts], [[report_data.fmt(v, '.4g') for _, v in facts]])
    )
  rows = _rm_rows(rm)
  parts.append('<h3>Agreement with judgments</h3>')
  if rows:
    parts.append(_metrics_table(['set', 'scorer'], [((s, c), m) for s, c, m in rows], _RM_METRICS))
  else:
    parts.append(report_html.note(f'Per-set metrics: {NOT_AVAILABLE}.'))
  parts.append('<h3>Probes</h3>')
  probes = [(str(k), v) for k, v in report_data.as_dict(rm.get('probes')).items() if _is_metrics(v)]
  if probes:
    known = ('mean_delta', 'fraction_increased', 'fraction_decreased')
    parts.append(_metrics_table(['probe'], [((p,), m) for p, m in probes], known))
    parts.append(
      '<p class="meta">mean delta: mean score of the probed output minus that of the '
      'reference; fraction increased / decreased: how often the probe raised / lowered '
      'the score.</p>'
    )
  else:
    parts.append(report_html.note(f'Probes: {NOT_AVAILABLE}.'))
  return '\n'.join(parts)


def _section_reward_model(model_dir: str, out_dir: str) -> str:
  """Section 6: the reward model's (and the judge's) agreement with judgments and probes."""
  del out_dir
  rm = report_data.read_json(model_dir_lib.ModelDir(model_dir).eval('reward_model.json'))
  if not isinstance(rm, dict):
    parts = [
      report_html.note(f'eval/reward_model.json: {NOT_AVAILABLE} (or the run uses a fixed reward).')
    ]
  else:
    parts = [_reward_model_html(rm)]
  run_reward = report_data.read_json(model_dir_lib.ModelDir(model_dir).eval('reward_probes.json'))
  if isinstance(run_reward, dict):
    probes = [
      (str(k), v)
      for k, v in report_data.as_dict(run_reward.get('probes')).items()
      if _is_metrics(v)
    ]
    parts.append(
      f"<h3>Probes of the run's reward ({report_html.escape(run_reward.get('reward'))})</h3>"
      '<p class="meta">The reward Grow, Improve and evaluation use: the reward model above '
      'with the guards (and the metric mix) when they are on.</p>'
    )
    known = ('mean_delta', 'fraction_increased', 'fraction_decreased')
    parts.append(_metrics_table(['probe'], [((p,), m) for p, m in probes], known))
  md = model_dir_lib.ModelDir(model_dir)
  judge = report_data.read_json(md.eval('reward_model_rm_judge.json'))
  if isinstance(judge, dict):
    parts.append(
      '<h3>The independent judge</h3><p class="meta">A second reward model, trained on '
      'other train sources with another seed; it scores every evaluated policy (the judge '
      'columns) and never filters or selects.</p>'
    )
    parts.append(_reward_model_html(judge))
  return '\n'.join(parts)


# ----------------------------------------------------------------------------- 7. samples


def _output_cell(sample: dict | None) -> str:
  """An output with its reward, escaped, for the samples table."""
  if not sample:
    return '<td class="note">–</td>'
  reward = report_data.number(sample.get('reward'))
  tail = '' if reward is None else f'<br><span class="meta">reward {reward:.3f}</span>'
  return f'<td>{report_html.escape(sample.get("output", ""))}{tail}</td>'


def _samples_html(bc: Sequence[dict], final: Sequence[dict], final_name: str) -> str:
  """Up to MAX_SAMPLES sources with BC's and the final policy's outputs side by side."""
  by_source = {str(s.get('source')): s for s in final}
  rows = []
  for sample in bc[:MAX_SAMPLES]:
    other = by_source.get(str(sample.get('source')))
    cells = [
      f'<td>{report_html.escape(sample.get("source", ""))}</td>',
      f'<td>{report_html.escape(sample.get("reference", ""))}</td>',
      _output_cell(sample),
      _output_cell(other),
    ]
    rows.append(f'<tr>{"".join(cells)}</tr>')
  head = ''.join(
    f'<th>{report_html.escape(h)}</th>'
    for h in ('source', 'reference', 'BC output', f'{final_name} output')
  )
  return (
    f'<table id="samples">\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
    + '\n'.join(rows)
    + '\n</tbody>\n</table>'
  )


def _section_samples(model_dir: str, out_dir: str) -> str:
  """Section 7: BC's and the final policy's outputs on a few validation sources."""
  del out_dir
  bc = report_data.eval_samples(
    report_data.read_json(model_dir_lib.ModelDir(model_dir).eval('eval_bc.json'))
  )
  final = report_data.final_eval(model_dir)
  if not bc:
    return report_html.note(f'eval/eval_bc.json: {NOT_AVAILABLE}.')
  if final is None:
    return _samples_html(bc, [], 'final policy') + report_html.note(
      f'eval/eval_g*_i*.json (the final policy): {NOT_AVAILABLE}.'
    )
  return _samples_html(bc, report_data.eval_samples(final[1]), final[0])


# ----------------------------------------------------------------------------- 8. config


def _section_config(model_dir: str, out_dir: str) -> str:
  """Section 8: the operative config."""
  del out_dir
  text = report_data.read_text(model_dir_lib.ModelDir(model_dir).config())
  if text is None:
    return report_html.note(f'config.gin: {NOT_AVAILABLE}.')
  return f'<pre id="config">{report_html.escape(text)}</pre>'


# ----------------------------------------------------------------------------- the page

SECTIONS: tuple[tuple[str, Callable[[str, str], str]], ...] = (
  ('Results per phase (Table 1)', _section_summary),
  ('Reward distributions of the Grow rounds', _section_distributions),
  ('Reward and BLEU per phase', _section_per_phase),
  ('Best-of-N', _section_best_of_n),
  ('Reward model', _section_reward_model),
  ('Samples: BC and the final policy', _section_samples),
  ('Operative config', _section_config),
)
