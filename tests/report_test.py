"""The run report: a hand-made run folder renders to a self-contained page."""

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pytest

from rest_jax.runs import report, report_sections

_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
_EDGES = [k / 20 for k in range(21)]


def _stats(counts, mean):
  return {
    'count': sum(counts),
    'mean': mean,
    'std': 0.1,
    'quantiles': {'0.0': 0.0, '0.5': mean, '1.0': 1.0},
    'histogram': {'counts': counts, 'edges': _EDGES},
    'kept_above': {'0.0': sum(counts), '0.7': 3},
  }


def _row(phase, g, i, tau, n, val_reward, val_bleu, test_reward, test_bleu):
  return {
    'phase': phase,
    'g': g,
    'i': i,
    'tau': tau,
    'loss_name': 'bc',
    'n_train_examples': n,
    'val_reward': val_reward,
    'val_bleu': val_bleu,
    'val_chrf': 40.0 + g + i,
    'test_reward': test_reward,
    'test_bleu': test_bleu,
    'test_chrf': 41.0 + g + i,
    'val_length_ratio': 0.95,
    'test_length_ratio': 0.96,
    'checkpoint': f'/x/checkpoints/g{g}_i{i}/best',
    'step': 10,
  }


_ROWS = [
  _row('bc', 0, 0, None, 12345, 0.41234, 10.0, 0.4, 11.0),
  _row('improve', 1, 1, 0.3, 2949, 0.5, 12.5, 0.51, 13.0),
  _row('improve', 1, 2, 0.45678, 1680, 0.61, 13.25, 0.62, 14.0),
]

_SAMPLES = [
  {'source': 'Fish <b>&</b> chips', 'reference': 'Fisch & C', 'output': 'Fisch <i>', 'reward': 0.2},
  {'source': 'a < b', 'reference': 'a < b', 'output': '"quoted"', 'reward': 0.3},
  {'source': 'Plain', 'reference': 'Schlicht', 'output': 'Schlicht', 'reward': 0.9},
]


def _write(path, data):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    if isinstance(data, str):
      f.write(data)
    else:
      json.dump(data, f)


def _eval_file(samples, reward):
  split = {'samples': samples, 'reward': reward, 'bleu': 10.0, 'chrf': 40.0, 'length_ratio': 0.9}
  return {'val': split, 'test': {**split, 'samples': []}, 'row': {}}


@pytest.fixture
def model_dir(tmp_path):
  d = str(tmp_path / 'run')
  _write(f'{d}/config.gin', "MODEL_DIR = '/tmp/x'\n# a < b & c\n")
  _write(f'{d}/eval/summary.json', {'columns': list(_ROWS[0]), 'rows': _ROWS, 'config': {}})
  _write(
    f'{d}/grow/g1/manifest.json',
    {
      'grow_round': 1,
      'num_records': 60,
      'num_sources': 10,
      'sampled_sequences': 50,
      'reward_source': 'learned_reward',
      'reward_stats': _stats([3] * 20, 0.5),
      'reward_stats_samples': _stats([2] * 10 + [3] * 10, 0.45),
      'reward_stats_human': _stats([0] * 15 + [2] * 5, 0.85),
    },
  )
  for i, tau in ((1, 0.3), (2, 0.45678)):
    _write(
      f'{d}/eval/g1_i{i}_validation.json',
      {'tau': tau, 'filter': 'reward > global p50', 'kept': 30 - 10 * i, 'kept_human': 5},
    )
  metrics = {'kendall_tau': 0.35, 'pearson': 0.47, 'pairwise_accuracy': 0.75, 'n': 800}
  _write(
    f'{d}/eval/reward_model.json',
    {
      'sets': {
        'synthetic_validation': {
          'model': metrics,
          'baselines': {'length': {**metrics, 'kendall_tau': 0.12}},
        }
      },
      'baselines': {'chrf': {**metrics, 'kendall_tau': 0.99}},
      'probes': {'repetition': {'mean_delta': 0.1709, 'fraction_increased': 0.97}},
      'step': 200,
    },
  )
  _write(f'{d}/eval/eval_bc.json', _eval_file(_SAMPLES, 0.4))
  final = [{**s, 'output': s['output'] + ' (final)', 'reward': 0.8} for s in _SAMPLES]
  _write(f'{d}/eval/eval_g1_i2.json', _eval_file(final, 0.6))
  _write(
    f'{d}/eval/best_of_n_policy.json',
    {'label': 'policy', 'n': [1, 2, 4, 8], 'reward': [0.4, 0.5, 0.6, 0.7], 'bleu': [9, 11, 12, 13]},
  )
  return d


class _Page(HTMLParser):
  """Collects img sources, src/href attributes, the body's data attributes and table rows."""

  def __init__(self):
    super().__init__()
    self.imgs, self.links, self.body, self.rows = [], [], {}, {}
    self._table = None
    self._cells = None

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    self.links += [attrs[k] for k in ('src', 'href') if attrs.get(k)]
    if tag == 'img':
      self.imgs.append(attrs.get('src'))
    elif tag == 'body':
      self.body = attrs
    elif tag == 'table':
      self._table = attrs.get('id')
      self.rows.setdefault(self._table, [])
    elif tag == 'tr':
      self._cells = []
    elif tag in ('td', 'th') and self._cells is not None:
      self._cells.append('')

  def handle_endtag(self, tag):
    if tag == 'tr' and self._cells is not None:
      self.rows[self._table].append(self._cells)
      self._cells = None
    elif tag == 'table':
      self._table = None

  def handle_data(self, data):
    if self._cells:
      self._cells[-1] += data


def _not_available(text):
  return text.count(report_sections.NOT_AVAILABLE)


def _parse(text):
  page = _Page()
  page.feed(text)
  return page


def _data_rows(page, table_id):
  return [r for r in page.rows[table_id] if r][1:]  # Drop the header row.


def test_report_renders_everything(model_dir):
  path = report.write_report(model_dir)
  assert path == os.path.join(model_dir, 'report', 'report.html')
  text = open(path, encoding='utf-8').read()
  page = _parse(text)

  rows = _data_rows(page, 'summary')
  assert len(rows) == 3
  assert rows[0][:6] == ['BC', '0', '0', '–', 'bc', '12,345']
  assert rows[1][:6] == ['ReST (G=1, I=1)', '1', '1', '0.3000', 'bc', '2,949']
  assert rows[2][:6] == ['ReST (G=1, I=2)', '1', '2', '0.4568', 'bc', '1,680']
  # The results first: test reward, BLEU, chrF, length ratio; then the selection
  # split's (validation) reward, BLEU, chrF, each column named by its split.
  assert rows[0][6:] == ['0.4000', '11.00', '41.00', '0.960', '0.4123', '10.00', '40.00']
  assert rows[2][11] == '13.25'
  assert 'Test reward' in text and 'Val reward (selection)' in text
  assert 'which no phase selects on' in text

  assert len(page.imgs) == 3  # Round g1, per phase, best-of-N.
  for src in page.imgs:
    assert '/' not in src
    with open(os.path.join(model_dir, 'report', src), 'rb') as f:
      assert f.read(8) == _PNG_MAGIC, src
  assert not [u for u in page.links if re.match(r'\s*(https?:)?//', u)], page.links

  # Texts are escaped: no raw tags from the samples or the config.
  assert '<b>' not in text and '<i>' not in text
  assert 'Fish &lt;b&gt;&amp;&lt;/b&gt; chips' in text
  assert 'Fisch &lt;i&gt; (final)' in text
  assert '# a &lt; b &amp; c' in text
  samples = _data_rows(page, 'samples')
  assert len(samples) == 3
  assert samples[0][0] == 'Fish <b>&</b> chips'  # Parsed back: the escaping round-trips.
  assert samples[0][2].startswith('Fisch <i>') and 'reward 0.200' in samples[0][2]
  assert samples[0][3].startswith('Fisch <i> (final)') and 'reward 0.800' in samples[0][3]

  # The reward model: set x scorer rows, the flat top-level baseline, the probe.
  assert 'synthetic_validation' in text and 'length (baseline)' in text
  assert 'chrf (baseline)' in text and '0.9900' in text
  assert 'repetition' in text and '0.1709' in text and '0.9700' in text
  assert 'reward_distribution_g1.png' in page.imgs
  assert _not_available(text) == 0


def test_nearly_empty_run_says_not_available(tmp_path):
  d = str(tmp_path / 'run')
  _write(f'{d}/config.gin', 'X = 1\n')
  os.makedirs(f'{d}/grow/g1')  # A Grow round still running: no manifest yet.
  _write(f'{d}/eval/summary.json', '{"rows": [')  # Half-written.
  path = report.write_report(d)
  text = open(path, encoding='utf-8').read()
  assert '<table id="summary">' not in text and '<img' not in text
  # Summary, round g1, per phase, best-of-N, reward model, samples.
  assert _not_available(text) >= 6
  assert '<pre id="config">X = 1' in text
  # Regenerating (after the next phase) overwrites the page.
  assert report.write_report(d) == path


def test_report_run_function(model_dir, capsys):
  path = report.report(model_dir=model_dir)
  assert capsys.readouterr().out.strip().endswith(path)


def test_report_does_not_import_tensorflow():
  code = (
    'import sys; import rest_jax.runs.report; '
    "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'seqio')]; "
    'assert not bad, bad'
  )
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=root)
  assert out.returncode == 0, out.stderr[-2000:]


# Set to 1 (as .ci/run does) to make a missing chromium a failure instead of a skip.
REQUIRE_BROWSER_ENV = 'REST_JAX_REQUIRE_BROWSER'


def test_report_loads_in_headless_chromium(model_dir):
  """The page loads in a real browser: every image decodes, the page marks itself ready.

  Needs `chromium` on PATH. Without it the test is skipped, unless the
  environment variable REST_JAX_REQUIRE_BROWSER=1 is set (.ci/run sets it, and
  installs chromium), in which case a missing chromium fails the test.
  """
  chromium = shutil.which('chromium')
  if chromium is None:
    reason = (
      'chromium is not on PATH: install it (Debian: apt-get install chromium, as .ci/run '
      'does) to check that the report loads in a browser'
    )
    if os.environ.get(REQUIRE_BROWSER_ENV) == '1':
      pytest.fail(f'{reason}; {REQUIRE_BROWSER_ENV}=1 requires this check.')
    pytest.skip(f'{reason}; set {REQUIRE_BROWSER_ENV}=1 to fail instead of skipping.')
  path = report.write_report(model_dir)
  num_images = len(_parse(open(path, encoding='utf-8').read()).imgs)
  out = subprocess.run(
    [
      chromium,
      '--headless=new',
      '--no-sandbox',
      '--disable-gpu',
      '--allow-file-access-from-files',
      '--virtual-time-budget=10000',
      '--dump-dom',
      f'file://{os.path.abspath(path)}',
    ],
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  dom = _parse(out.stdout)
  assert dom.body.get('data-ready') == '1', (dom.body, out.stderr[-3000:])
  assert dom.body.get('data-images-broken') == '0', dom.body
  assert dom.body.get('data-images-loaded') == str(num_images), dom.body
  assert num_images == 3
  assert len(_data_rows(dom, 'summary')) == 3
