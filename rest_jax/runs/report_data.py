"""What a run has written, read defensively for the run report (`report.py`).

Every reader returns None, [] or {} for a missing or malformed input (and logs
the malformed ones) instead of raising: the report is regenerated after every
phase of a run, while later phases have not written their files yet. `fmt`
formats the values read for the report's tables and plot labels.

Inputs under MODEL_DIR: `eval/summary.json` (`summary_rows`),
`eval/g<g>_i<i>_validation.json` (`validations`), `grow/g<g>/` (`grow_rounds`),
`eval/best_of_n_*.json` (`best_of_n_curves`), `eval/eval_g<g>_i<i>.json`
(`final_eval`), and any JSON or text file (`read_json`, `read_text`).
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
from typing import Any

from absl import logging

from rest_jax.core import model_dir as model_dir_lib

_ROUND_RE = re.compile(r'^g(\d+)$')
_VALIDATION_RE = re.compile(r'^g(\d+)_i(\d+)_validation\.json$')
_EVAL_RE = re.compile(r'^eval_g(\d+)_i(\d+)\.json$')


def read_json(path: str) -> Any:
  """The parsed JSON file at `path`, or None when it is missing or malformed."""
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    logging.warning('report: cannot read %s: %s', path, e)
    return None


def read_text(path: str) -> str | None:
  """The text of `path`, or None when it cannot be read."""
  try:
    with open(path, errors='replace') as f:
      return f.read()
  except OSError:
    return None


def as_dict(x: Any) -> dict:
  """`x` if it is a dict, else an empty dict (for defensive reading)."""
  return x if isinstance(x, dict) else {}


def as_list(x: Any) -> list:
  """`x` if it is a list, else an empty list (for defensive reading)."""
  return x if isinstance(x, list) else []


def number(x: Any) -> float | None:
  """`x` as a finite float, or None when it is not a number."""
  if isinstance(x, bool) or not isinstance(x, int | float):
    return None
  return float(x) if math.isfinite(x) else None


def fmt(x: Any, spec: str = '.3f') -> str:
  """A number formatted with `spec` ('d' and ',' for counts), '–' for None, else text."""
  if x is None:
    return '–'
  n = number(x)
  if n is None:
    return str(x)
  if spec in ('d', ','):
    return format(int(n), spec) if n == int(n) else format(n, '.4g')
  return format(n, spec)


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


def summary_rows(model_dir: str) -> list[dict]:
  """The rows of `eval/summary.json` (dicts only), or [] when it is not there."""
  summary = as_dict(read_json(model_dir_lib.ModelDir(model_dir).summary))
  return [r for r in as_list(summary.get('rows')) if isinstance(r, dict)]


def validations(model_dir: str) -> dict[int, list[tuple[int, dict]]]:
  """grow round -> [(improve step, its `eval/g<g>_i<i>_validation.json`)], by step."""
  out: dict[int, list[tuple[int, dict]]] = {}
  for (g, i), path in _numbered(model_dir_lib.ModelDir(model_dir).path('eval'), _VALIDATION_RE):
    data = read_json(path)
    if isinstance(data, dict):
      out.setdefault(g, []).append((i, data))
  return out


def grow_rounds(model_dir: str) -> list[tuple[int, str]]:
  """`(g, folder)` of the Grow rounds' folders `grow/g<g>`, sorted by g."""
  rounds = _numbered(model_dir_lib.ModelDir(model_dir).path('grow'), _ROUND_RE, dirs=True)
  return [(g, folder) for (g,), folder in rounds]


def best_of_n_curves(model_dir: str) -> list[dict]:
  """The readable `eval/best_of_n_*.json` files, sorted by name."""
  curves = []
  for path in sorted(glob.glob(model_dir_lib.ModelDir(model_dir).eval('best_of_n_*.json'))):
    data = read_json(path)
    if isinstance(data, dict) and as_list(data.get('n')):
      name = os.path.basename(path)[len('best_of_n_') : -len('.json')]
      curves.append({**data, 'label': str(data.get('label') or name)})
  return curves


def final_eval(model_dir: str) -> tuple[str, dict] | None:
  """(name, data) of the last `eval/eval_g<g>_i<i>.json`, or None."""
  for (g, i), path in reversed(_numbered(model_dir_lib.ModelDir(model_dir).path('eval'), _EVAL_RE)):
    data = read_json(path)
    if isinstance(data, dict):
      return f'ReST (G={g}, I={i})', data
  return None


def paired_tests(model_dir: str) -> list[tuple[str, dict]]:
  """(label, `metrics.paired_bootstrap` result) of the final ReST policy's test outputs.

  Against BC (`vs_bc` of the last `eval/eval_g<g>_i<i>.json`) and against the
  BC control of the same (g, i) (`rest_vs_control` of
  `eval/eval_bc_more_g<g>_i<i>.json`), where the run has them.
  """
  folder = model_dir_lib.ModelDir(model_dir).path('eval')
  found = _numbered(folder, _EVAL_RE)
  if not found:
    return []
  (g, i), path = found[-1]
  out = []
  final = as_dict(as_dict(read_json(path)).get('test'))
  if isinstance(final.get('vs_bc'), dict):
    out.append((f'ReST (G={g}, I={i}) - BC', final['vs_bc']))
  control = as_dict(read_json(os.path.join(folder, f'eval_bc_more_g{g}_i{i}.json')))
  paired = as_dict(control.get('test')).get('rest_vs_control')
  if isinstance(paired, dict):
    out.append((f'ReST (G={g}, I={i}) - BC control (G={g}, I={i})', paired))
  return out


def eval_samples(evaluation: Any) -> list[dict]:
  """The validation samples of an eval file (test samples if it has none)."""
  for split in ('val', 'test'):
    samples = [
      s for s in as_list(as_dict(as_dict(evaluation).get(split)).get('samples')) if as_dict(s)
    ]
    if samples:
      return samples
  return []
