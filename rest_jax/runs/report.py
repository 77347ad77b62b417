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

This is a driver-layer module without TensorFlow / seqio: `report_data` reads
the run's files, `report_figures` draws the plots (matplotlib),
`report_sections` builds each section, `report_html` holds the HTML elements,
and this module assembles the page.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from absl import logging

from rest_jax.core import files
from rest_jax.core import model_dir as model_dir_lib
from rest_jax.runs import report_html, report_sections

REPORT_DIR = 'report'
REPORT_FILE = 'report.html'


def _safe_section(build: Callable[[str, str], str], model_dir: str, out_dir: str) -> str:
  """`build(model_dir, out_dir)`, or an error note if it raises (a half-written input)."""
  try:
    return build(model_dir, out_dir)
  except Exception as e:  # noqa: BLE001 - a report must not kill the run that writes it.
    logging.exception('report: section %s failed', build.__name__)
    return report_html.note(f'This section could not be rendered: {type(e).__name__}: {e}', 'error')


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
    f'<h1>ReST run report: {report_html.escape(model_dir)}</h1>',
    f'<p class="meta">Generated {report_html.escape(generated)}.</p>',
  ]
  for title, build in report_sections.SECTIONS:
    body.append(f'<h2>{report_html.escape(title)}</h2>')
    body.append(_safe_section(build, model_dir, out_dir))
  return report_html.page(f'ReST report: {model_dir}', body)


def write_report(model_dir: str) -> str:
  """Writes `MODEL_DIR/report/report.html` and its plots from what the run has so far.

  Missing inputs leave a "not available yet" note in their section, so this
  can run after every phase of a run.

  Args:
    model_dir: the run's folder.

  Returns:
    The path of the HTML file.
  """
  out_dir = model_dir_lib.ModelDir(model_dir).report
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
