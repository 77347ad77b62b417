"""bench/cpu_vs_hf.py, bench/gpu.py and bench/checkpoint_stall.py at tiny size on CPU.

Each runs as the user runs it (a subprocess each, started together so that
their XLA compiles overlap); the timings are not checked, only that every
figure is there and measured, the ratios are the quotients of the two sides,
and the converted model computes what `transformers` computes.
"""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip('torch')
pytest.importorskip('transformers')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURES = {
  'train': 'train_tokens_per_s',
  'sample': 'sample_tokens_per_s',
  'score': 'score_examples_per_s',
}
CPU_VS_HF = [
  '--size=tiny',
  '--vocab_size=128',
  '--train_batch=4',
  '--source_length=8',
  '--target_length=8',
  '--sample_sources=2',
  '--sample_source_length=8',
  '--num_samples=2',
  '--new_tokens=8',
  '--score_batch=4',
  '--score_length=16',
  '--seconds=0.05',
  '--min_iters=1',
]
GPU = ['--tiny', '--seconds=0.05', '--min_iters=1']
STALL = ['--model=tiny', '--saves=2', '--steps=2']


@pytest.fixture(scope='module')
def outputs():
  """{'cpu_vs_hf': its JSON, 'gpu': its JSON, 'checkpoint_stall': its JSON}."""
  runs = {
    name: subprocess.Popen(
      [sys.executable, os.path.join(ROOT, 'bench', f'{name}.py'), *args],
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      cwd=ROOT,
    )
    for name, args in (('cpu_vs_hf', CPU_VS_HF), ('gpu', GPU), ('checkpoint_stall', STALL))
  }
  out = {}
  for name, proc in runs.items():
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, f'{name}: {stderr[-3000:]}'
    lines = stdout.strip().splitlines()
    assert len(lines) == 1, stdout
    out[name] = json.loads(lines[0])
  return out


def _check_sides(result, parts):
  for side in ('rest_jax', 'hf'):
    figures = result[side]
    assert figures['skipped'] == [], figures['skipped']
    assert figures['peak_rss_mb'] > 0
    for part in parts:
      key = FIGURES[part]
      assert figures[key] > 0, (side, key)
      assert figures[f'{part}_iters'] >= 1 and figures[f'{part}_warmup_s'] > 0
  for part, key in FIGURES.items():
    if part in parts:
      quotient = result['rest_jax'][key] / result['hf'][key]
      assert result[f'ratio_{part}'] == pytest.approx(quotient, rel=1e-12)
    else:
      assert result[f'ratio_{part}'] is None


def _check_agreement(result, tolerance):
  figures = result['rest_jax']
  assert result['max_logit_diff'] == figures['max_logit_diff']
  assert 0 <= result['max_logit_diff'] <= tolerance * max(1.0, figures['max_abs_logit'])
  assert 0 <= result['max_score_diff'] <= tolerance


def test_checkpoint_stall(outputs):
  # The bench itself exits non-zero if an async save restores other values.
  result = outputs['checkpoint_stall']
  assert result['config']['state_mb'] > 0
  for mode in ('sync', 'async'):
    assert set(result[mode]) == {'save_blocked_ms', 'updates_ms', 'cycle_ms'}
    assert all(v > 0 for v in result[mode].values()), result[mode]


def test_cpu_vs_hf(outputs):
  result = outputs['cpu_vs_hf']
  _check_sides(result, FIGURES)
  _check_agreement(result, 1e-4)
  assert result['config']['model']['d_model'] == 32
  assert result['config']['model']['feed_forward_proj'] == 'gated-gelu'
  assert result['config']['sample']['num_samples'] == 2
  assert result['threads']['n'] >= 1 and 'sched_setaffinity' in result['threads']['rest_jax']
  assert 'set_num_threads' in result['threads']['hf']
  assert result['notes'] == []


def test_gpu_tiny(outputs):
  result = outputs['gpu']
  assert result['device'] == 'cpu'
  _check_sides(result, FIGURES)
  _check_agreement(result, 1e-3)
  _check_sides(result['large'], ('train',))
  for part in (result, result['large']):
    for side in ('rest_jax', 'hf'):
      assert all(v > 0 for v in part['mfu'][side].values()), part['mfu']
    assert all(v > 0 for v in part['model_tflop_per_call'].values())
  assert set(result['mfu']['rest_jax']) == set(FIGURES)
  assert result['peak_tflops'] == 989.0 and 'decoder(S,T,K)' in result['mfu_formula']
  assert result['notes'] == []


def test_model_flops_of_t5_base():
  """The train-step FLOPs of T5-base against 6 x matmul params x tokens plus attention."""
  sys.path.insert(0, os.path.join(ROOT, 'bench'))
  import gpu

  job = gpu.jobs(tiny=False, vocab_size=32128)[0]
  c = job['hf_config']
  e, a, m, v = 768, 768, 2048, 32128
  assert (c['d_model'], c['num_heads'] * c['d_kv'], c['d_ff'], c['vocab_size']) == (e, a, m, v)
  enc_params = 12 * (4 * e * a + 3 * e * m)
  dec_params = 12 * (8 * e * a + 3 * e * m) + e * v
  b, s, t = 64, 128, 128
  # Cross-attention k, v run on the S source tokens; the rest of the decoder on T.
  dense = 6 * b * (s * enc_params + t * dec_params + 12 * s * 2 * e * a - 12 * t * 2 * e * a)
  attention = 3 * b * 4 * a * 12 * (s * s + t * t + t * s)
  assert gpu.model_flops(job)['train'] == pytest.approx(dense + attention, rel=1e-12)
