r"""Where the train step's time goes: forward, backward and optimizer, and XLA ops by kind.

JAX only (no TensorFlow). For the model of `policy_speed.py`'s SIZES, random
tokens of the given shape, one device:

  python bench/train_profile.py --model=mini --batch=32 --length=32

Prints one JSON line: milliseconds per call of the forward loss, of
`value_and_grad` and of the whole AdamW step (with its page faults and user
and system CPU time per step); and, from a `jax.profiler`
trace of the gradient (its Perfetto JSON), the executed XLA ops summed by kind
(the op name without its number: `ynn_fusion` = YNNPACK dot fusions,
`copy_bitcast_fusion` = layout copies, `dot` = dots left to XLA, ...) and the
ten slowest single ops. Op times overlap: XLA:CPU runs independent ops
concurrently, so their sum can exceed the step's wall time.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import resource
import sys
import tempfile
import time

import jax
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import policy_speed  # noqa: E402

from rest_jax.core import cpu_runtime, models, network  # noqa: E402

_WRAPPERS = ('ThunkExecutor', '$', 'SlinkyThreadPool', 'PjitFunction')


def _ms_per_call(fn, *args, repeats: int, usage: dict | None = None) -> float:
  """Milliseconds per call of `fn(*args)` after one compiling call.

  With `usage`, also stores the process's page faults (`minor_faults`) and its
  user and system CPU milliseconds (`user_ms`, `sys_ms`) per call there.
  """
  jax.block_until_ready(fn(*args))
  before = resource.getrusage(resource.RUSAGE_SELF)
  tic = time.perf_counter()
  for _ in range(repeats):
    out = fn(*args)
  jax.block_until_ready(out)
  elapsed = time.perf_counter() - tic
  after = resource.getrusage(resource.RUSAGE_SELF)
  if usage is not None:
    usage['minor_faults'] = round((after.ru_minflt - before.ru_minflt) / repeats, 1)
    usage['user_ms'] = round(1000 * (after.ru_utime - before.ru_utime) / repeats, 2)
    usage['sys_ms'] = round(1000 * (after.ru_stime - before.ru_stime) / repeats, 2)
  return 1000 * elapsed / repeats


def _op_times(fn, *args, repeats: int) -> dict[str, float]:
  """XLA op name -> milliseconds per call, from a profiler trace of `repeats` calls."""
  jax.block_until_ready(fn(*args))
  with tempfile.TemporaryDirectory() as folder:
    with jax.profiler.trace(folder, create_perfetto_trace=True):
      for _ in range(repeats):
        jax.block_until_ready(fn(*args))
    path = glob.glob(os.path.join(folder, '**', 'perfetto_trace.json.gz'), recursive=True)[0]
    with gzip.open(path) as f:
      trace = json.load(f)
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  totals = collections.Counter()
  for e in events:
    if e.get('ph') == 'X' and 'dur' in e and not e.get('name', '$').startswith(_WRAPPERS):
      totals[e['name']] += e['dur'] / 1000 / repeats
  return dict(totals)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='mini', choices=sorted(policy_speed.SIZES))
  parser.add_argument('--vocab', type=int, default=4000)
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--length', type=int, default=32, help='source and target length')
  parser.add_argument('--repeats', type=int, default=20)
  parser.add_argument(
    '--attention', default='einsum', choices=('einsum', 'xla', 'cudnn'), help='T5Config.attention'
  )
  parser.add_argument('--remat', default='none', choices=('none', 'full', 'dots'))
  args = parser.parse_args()

  size = {**policy_speed.SIZES[args.model], 'logits_via_embedding': False}
  cfg = network.T5Config(
    vocab_size=args.vocab, dropout_rate=0.0, attention=args.attention, remat=args.remat, **size
  )
  model = models.EncoderDecoderModel(cfg)
  rng = np.random.default_rng(0)
  shape = (args.batch, args.length)
  batch = {
    key: jax.numpy.asarray(rng.integers(2, args.vocab, shape), jax.numpy.int32)
    for key in ('encoder_input_tokens', 'decoder_input_tokens', 'decoder_target_tokens')
  }
  batch['decoder_loss_weights'] = jax.numpy.ones(shape, jax.numpy.float32)
  params = model.init_params_fn(args.length, args.length)(jax.random.key(0))
  tx = optax.adamw(1e-3)

  def loss(p, b):
    return model.loss_fn(p, b, None)[0]

  @jax.jit
  def step(p, o, b):
    value, grads = jax.value_and_grad(loss)(p, b)
    updates, o = tx.update(grads, o, p)
    return optax.apply_updates(p, updates), o, value

  grad = jax.jit(jax.value_and_grad(loss))
  usage = {}
  times = {
    'forward_ms': _ms_per_call(jax.jit(loss), params, batch, repeats=args.repeats),
    'value_and_grad_ms': _ms_per_call(grad, params, batch, repeats=args.repeats),
    'adamw_step_ms': _ms_per_call(
      step, params, tx.init(params), batch, repeats=args.repeats, usage=usage
    ),
  }
  ops = _op_times(grad, params, batch, repeats=min(args.repeats, 5))
  kinds, counts = collections.Counter(), collections.Counter()
  for name, ms in ops.items():
    kinds[name.rsplit('.', 1)[0]] += ms
    counts[name.rsplit('.', 1)[0]] += 1
  print(
    json.dumps(
      {
        'config': {**vars(args), 'threads': len(os.sched_getaffinity(0)), 'jax': jax.__version__},
        **{k: round(v, 2) for k, v in times.items()},
        # Per AdamW step: page faults and CPU time (system time = faulting memory in).
        'adamw_step_usage': usage,
        'cpu_runtime': cpu_runtime.applied,
        'grad_ops_ms_total': round(sum(ops.values()), 2),
        'grad_ops_by_kind': {k: [round(v, 2), counts[k]] for k, v in kinds.most_common(10)},
        'grad_slowest_ops': {k: round(v, 2) for k, v in collections.Counter(ops).most_common(10)},
      }
    )
  )


if __name__ == '__main__':
  main()
