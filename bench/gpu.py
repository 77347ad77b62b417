r"""rest_jax against Hugging Face `transformers` on one GPU (H100 / H200), JSON to stdout.

  python bench/gpu.py                      # T5-base figures + a T5-large train step, <= 8 min
  python bench/gpu.py --peak_tflops=989 --time_limit_s=480 --seconds=5
  python bench/gpu.py --tiny               # the same code path at tiny size on CPU (seconds)

Needs JAX (CUDA), torch (CUDA) and transformers; no TensorFlow, seqio or gin:
the children import only `rest_jax.core`, `rest_jax.rewards` and
`rest_jax.runs.t5_convert` (which imports core and rewards only; the runs
package's `__init__` imports nothing). The machinery is `bench/cpu_vs_hf.py`'s:
each side in its own child process (the rest_jax one with
`XLA_PYTHON_CLIENT_PREALLOCATE=false`), the same seeded T5 v1.1 weights
converted with `runs/t5_convert.py`, the logits and reward-model scores
checked in float32 (full matmul precision) before anything is timed.

Measured, with bfloat16 compute (float32 parameters and optimizer state; torch
under `torch.autocast(bfloat16)`, fused AdamW):

* T5-base (emb 768, 12 heads x 64, MLP 2048, 12 + 12 layers, vocab 32128):
  train step, batch 64 x (128 source + 128 target) tokens: tokens/s;
  sampling, 32 sources x 8 samples = 256 rows, 64 source tokens, exactly 64
  new tokens at temperature 0.8: generated tokens/s;
  reward-model scoring, batch 256 x 128 tokens: examples/s.
* T5-large (emb 1024, 16 heads x 64, MLP 2816, 24 + 24 layers): the train step.

Model-FLOPs utilisation = model FLOPs per call / seconds per call / peak
(`--peak_tflops`, the chip's dense bf16 peak; 989 for an H100 SXM). Model
FLOPs count every matmul as 2 m n k, with E = d_model, A = heads x d_kv,
M = d_ff, V = vocab, S / T the source / target lengths, Le / Ld the layers:

  encoder(S)  = Le [S (4 * 2EA + 3 * 2EM) + 2 * 2 S^2 A]
                (q, k, v, o projections; gated MLP wi_0, wi_1, wo; scores QK^T and values)
  decoder(S, T, K) = Ld [T (4 * 2EA + 2 * 2EA + 3 * 2EM) + S * 2 * 2EA + 2 * 2 K A + 2 * 2 T S A]
                + 2 T E V
                (self-attention projections, cross-attention q and o per target token,
                cross-attention k and v per source token, self-attention scores and
                values over K query-key pairs, cross-attention scores and values, LM head)
  train step  = 3 B [encoder(S) + decoder(S, T, T^2)]   (forward x 3: forward + backward)
  sampling    = B encoder(S) + B N decoder(S, T, T (T + 1) / 2)
                (each new token attends to its prefix)
  scoring     = B [encoder(L) + 2E]                     (+ the scalar head)

Causal self-attention in training counts the full T^2 matrix (both frameworks
compute it masked), as in the PaLM paper's MFU. Embedding lookups, norms,
softmax and the optimizer are not counted.

`--time_limit_s` (default 480) bounds the whole command: the rest_jax child may
start parts until 60% of it, the HF child until the end less a margin; a part
that would start later is skipped and named in `notes` / `skipped`, and a child
still running at the limit is killed (its finished parts are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cpu_vs_hf  # noqa: E402

MFU_FORMULA = (
  'matmul FLOPs (2mnk): encoder(S) = Le[S(4*2EA + 3*2EM) + 2*2*S^2*A]; '
  'decoder(S,T,K) = Ld[T(4*2EA + 2*2EA + 3*2EM) + S*2*2EA + 2*2*K*A + 2*2*T*S*A] + 2TEV; '
  'train = 3B[encoder(S) + decoder(S,T,T^2)]; sample = B*encoder(S) + B*N*decoder(S,T,T(T+1)/2); '
  'score = B[encoder(L) + 2E]; E=d_model, A=heads*d_kv, M=d_ff, V=vocab; '
  'MFU = FLOPs per call / seconds per call / peak_tflops'
)


def _encoder_flops(c: dict, s: int) -> float:
  e, a, m = c['d_model'], c['num_heads'] * c['d_kv'], c['d_ff']
  return c['num_layers'] * (s * (4 * 2 * e * a + 3 * 2 * e * m) + 2 * 2 * s * s * a)


def _decoder_flops(c: dict, s: int, t: int, pairs: float) -> float:
  e, a, m, v = c['d_model'], c['num_heads'] * c['d_kv'], c['d_ff'], c['vocab_size']
  per_layer = (
    t * (4 * 2 * e * a + 2 * 2 * e * a + 3 * 2 * e * m)
    + s * 2 * 2 * e * a
    + 2 * 2 * pairs * a
    + 2 * 2 * t * s * a
  )
  return c['num_decoder_layers'] * per_layer + 2 * t * e * v


def model_flops(job: dict) -> dict:
  """Model FLOPs of one call of each part of `job` (the module docstring's formula)."""
  c, tr, sa, sc = job['hf_config'], job['train'], job['sample'], job['score']
  s, t = tr['source_length'], tr['target_length']
  train = 3 * tr['batch'] * (_encoder_flops(c, s) + _decoder_flops(c, s, t, t * t))
  n, new = sa['num_samples'], sa['new_tokens']
  sample = sa['sources'] * _encoder_flops(c, sa['source_length']) + sa['sources'] * n * (
    _decoder_flops(c, sa['source_length'], new, new * (new + 1) / 2)
  )
  score = sc['batch'] * (_encoder_flops(c, sc['length']) + 2 * c['d_model'])
  return {'train': train, 'sample': sample, 'score': score}


_PER_CALL = {'train': 'train_step_s', 'sample': 'sample_call_s', 'score': 'score_call_s'}


def mfu(job: dict, side: dict, peak_tflops: float) -> dict:
  """{part: model-FLOPs utilisation} for the parts `side` measured."""
  flops = model_flops(job)
  return {
    part: float(f'{flops[part] / side[key] / (peak_tflops * 1e12):.4g}')
    for part, key in _PER_CALL.items()
    if part in job['parts'] and side.get(key)
  }


def jobs(tiny: bool, vocab_size: int) -> list[dict]:
  """The base job (checked, every part) and the large job (train step only)."""
  base, large = ('tiny', 'tiny') if tiny else ('base', 'large')
  scale = 8 if tiny else 1  # --tiny: batches and lengths / 8.
  train = dict(batch=64 // scale, source_length=128 // scale, target_length=128 // scale)
  sample = dict(
    sources=32 // scale,
    source_length=64 // scale,
    num_samples=2 if tiny else 8,
    new_tokens=64 // scale,
  )
  score = dict(batch=256 // scale, length=128 // scale)
  common = dict(train=train, sample=sample, score=score)
  return [
    dict(
      name='base',
      export=True,
      parts=list(cpu_vs_hf.PARTS),
      hf_config=cpu_vs_hf.hf_config(base, vocab_size),
      **common,
    ),
    dict(
      name='large',
      export=False,
      parts=['train'],
      hf_config=cpu_vs_hf.hf_config(large, vocab_size),
      **common,
    ),
  ]


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--tiny', action='store_true', help='tiny shapes on CPU (a CI check)')
  parser.add_argument(
    '--peak_tflops', type=float, default=989.0, help='dense bf16 peak of the chip'
  )
  parser.add_argument('--time_limit_s', type=float, default=480.0)
  parser.add_argument('--seconds', type=float, default=5.0, help='timed seconds per measurement')
  parser.add_argument('--min_iters', type=int, default=3)
  parser.add_argument('--threads', type=int, default=len(os.sched_getaffinity(0)))
  parser.add_argument('--tolerance', type=float, default=1e-3, help='x max(1, max |logit|)')
  args = parser.parse_args(argv)
  start = time.time()
  limit = args.time_limit_s
  vocab_size = 128 if args.tiny else 32128
  todo = jobs(args.tiny, vocab_size)
  device = 'cpu' if args.tiny else 'cuda'
  threads = min(args.threads, len(os.sched_getaffinity(0)))
  with tempfile.TemporaryDirectory(prefix='gpu_bench_') as workdir:
    spec = dict(
      jobs=todo,
      workdir=workdir,
      threads=threads,
      device=device,
      dtype='bfloat16',
      seconds=args.seconds,
      min_iters=args.min_iters,
      tolerance=args.tolerance,
      min_part_s=0 if args.tiny else 30,
      deadline=start + 0.6 * limit,
      hf_deadline=start + limit - 20,
    )
    ours, theirs, notes = cpu_vs_hf.run_children(
      spec, kill_at={'rest_jax': start + 0.6 * limit + 60, 'hf': start + limit - 5}
    )
  result = {'device': ours.get('meta', {}).get('device')}
  for job in todo:
    name = job['name']
    rest_jax = cpu_vs_hf.side_summary(ours, name)
    hf = cpu_vs_hf.side_summary(theirs, name)
    part = {'rest_jax': rest_jax, 'hf': hf, **cpu_vs_hf.ratios(rest_jax, hf)}
    part['mfu'] = {
      'rest_jax': mfu(job, rest_jax, args.peak_tflops),
      'hf': mfu(job, hf, args.peak_tflops),
    }
    part['model_tflop_per_call'] = {
      k: float(f'{v / 1e12:.4g}') for k, v in model_flops(job).items() if k in job['parts']
    }
    notes += rest_jax['skipped'] + hf['skipped']
    if name == 'base':
      result.update(part)
      result['max_logit_diff'] = rest_jax.get('max_logit_diff')
      result['max_score_diff'] = rest_jax.get('max_score_diff')
    else:
      result[name] = part
  result.update(
    peak_tflops=args.peak_tflops,
    mfu_formula=MFU_FORMULA,
    config={
      job['name']: {
        'model': job['hf_config'],
        'parts': job['parts'],
        'train': job['train'],
        'sample': {**job['sample'], 'temperature': cpu_vs_hf.TEMPERATURE, 'fixed_length': True},
        'score': job['score'],
      }
      for job in todo
    },
    dtype='bfloat16 compute, float32 params (torch: autocast bfloat16, fused AdamW)',
    threads=threads,
    time_limit_s=limit,
    seconds_per_measurement=args.seconds,
    notes=notes,
    elapsed_s=round(time.time() - start, 1),
  )
  print(json.dumps(result))
  return result


if __name__ == '__main__':
  main()
