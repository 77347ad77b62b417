"""`MODEL_DIR/eval/summary.json`: the ReST loop's table, one row per evaluated policy.

A row (`SUMMARY_COLUMNS`) has phase, g, i, tau, loss_name, n_train_examples,
the test split's reward, judge reward, BLEU, chrF, length ratio and hacking
rate (and pass@k / majority@k with `EvalConfig.pass_k`), then the validation
split's (selection) reward, judge reward, BLEU, chrF and pass@k, then what
the policy cost since the starting policy (`rest_online.cost`: distinct
samples generated, training tokens, seconds); plus, per split,
`repetition_rate` and `hacking_rate` (`metrics.hacking_flags`), the
checkpoint and its step. `splits` in the file says what each split was used
for. It is rewritten after every eval phase from the eval phases' files
(`eval/<phase>.json`, `rest_phases.run_phase`).

Selection and reporting are separate. Every checkpoint choice (BC's best,
each Improve step's best, early stopping) is made on the validation split, so
a `val_*` column cannot be read as evidence: the selected validation reward
cannot fall. The test split is never selected on: the `test_*` columns are
the results. The independent judge (`judge_*` columns) is a reward the policy
was neither trained nor selected on.
"""

from __future__ import annotations

import json
import os

from rest_jax.core import files
from rest_jax.core import model_dir as model_dir_lib
from rest_jax.runs import rest_online, rest_phases

SUMMARY_COLUMNS = (
  'phase',
  'g',
  'i',
  'tau',
  'loss_name',
  'n_train_examples',
  'test_reward',
  'test_judge_reward',
  'test_bleu',
  'test_chrf',
  'test_length_ratio',
  'test_hacking_rate',
  'test_pass_at_k',
  'test_majority_at_k',
  'val_reward',
  'val_judge_reward',
  'val_bleu',
  'val_chrf',
  'val_pass_at_k',
  'samples',
  'train_tokens',
  'seconds',
)
_FORMATS = {
  'reward': '.4f',
  'at_k': '.4f',
  'ratio': '.3f',
  'rate': '.3f',
  'samples': '.0f',
  'tokens': '.0f',
  'seconds': '.0f',
}


def read_summary(model_dir: str) -> list[dict]:
  """The rows of `MODEL_DIR/eval/summary.json` ([] if none yet)."""
  path = model_dir_lib.ModelDir(model_dir).summary
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return json.load(f)['rows']


def format_summary(rows: list[dict]) -> str:
  """The summary rows as a fixed-width table (the paper's Table 1 shape).

  The `test_*` columns come first: they are the results. The `val_*` columns
  are what selected the checkpoints. Columns empty in every row (pass@k of a
  run without `pass_k`) are left out.
  """
  metrics = [c for c in SUMMARY_COLUMNS[6:] if any(r.get(c) is not None for r in rows)]
  loss_width = max([8] + [len(str(r['loss_name'])) + 1 for r in rows])
  head = f'{"phase":<15}{"g":>3}{"i":>3}{"tau":>8}{"loss":>{loss_width}}{"n_train":>9}'
  names = [c.replace('_reward', '_rwd').replace('_length', '_len') for c in metrics]
  widths = [max(len(n) + 2, 9) for n in names]
  head += ''.join(f'{n:>{w}}' for n, w in zip(names, widths))
  lines = [
    'test_*: never selected on (the results); val_*: selected on (checkpoints, early stopping)',
    head,
  ]
  for r in rows:
    tau = '-' if r.get('tau') is None else f'{r["tau"]:.3g}'
    line = f'{r["phase"]:<15}{r["g"]:>3}{r["i"]:>3}{tau:>8}{r["loss_name"]:>{loss_width}}'
    line += f'{r["n_train_examples"]:>9}'
    for c, w in zip(metrics, widths):
      value = r.get(c)
      spec = next((f for k, f in _FORMATS.items() if c.endswith(k)), '.2f')
      line += f'{"-":>{w}}' if value is None else f'{value:>{w}{spec}}'
    lines.append(line)
  return '\n'.join(lines)


def write_summary(
  model_dir: str, phases: list[str], config: dict, seconds: dict[str, float]
) -> None:
  """Rewrites `eval/summary.json` from the eval phases' files, in plan order.

  Args:
    model_dir: the run directory.
    phases: the plan (`rest_phases.plan`); its eval phases that have written
      `eval/<phase>.json` give the rows.
    config: the run's config as the run state holds it (written beside the rows).
    seconds: the run state's seconds per finished phase (for the cost columns).
  """
  rows = []
  for phase in phases:
    path = model_dir_lib.ModelDir(model_dir).eval(f'{phase}.json')
    if phase.startswith('eval') and os.path.exists(path):
      with open(path) as f:
        rows.append({**json.load(f)['row'], **rest_online.cost(model_dir, phase, seconds)})
  files.write_json(
    model_dir_lib.ModelDir(model_dir).summary,
    {
      'columns': list(SUMMARY_COLUMNS),
      'splits': rest_phases.SPLITS,
      'rows': rows,
      'config': config,
    },
  )
