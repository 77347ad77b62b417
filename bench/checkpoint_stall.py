r"""How long a `last` checkpoint save stalls training: synchronous vs async Orbax.

  python bench/checkpoint_stall.py --model=small --saves=3

JAX and Orbax only. Builds the TrainState of a `policy_speed.SIZES` model
(params and AdamW state), then for each mode saves it `--saves` times into a
fresh `checkpoints.Checkpointer`, each save followed by `--steps` donated
train-like updates of the state (what the loop does next). Prints one JSON
line: per mode the milliseconds `save` blocked (median), the milliseconds the
following updates took (median, to show a background write slowing them),
and the whole time per save cycle; plus the state's size in MB. Checks after
each async run that every saved step restores to the values it was saved with
(a donated buffer overwritten under a background write would fail it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import policy_speed  # noqa: E402

from rest_jax.core import checkpoints, models, network  # noqa: E402


def _run(mode: str, state, update, saves: int, steps: int) -> dict:
  """Save/update cycles in `mode` ('sync' | 'async'); returns the timings in ms."""
  blocked, updating, cycle, saved = [], [], [], {}
  with tempfile.TemporaryDirectory() as folder:
    ckpt = checkpoints.Checkpointer(folder, max_to_keep=None, async_save=mode == 'async')
    for i in range(saves):
      tic = time.perf_counter()
      ckpt.save(i, state)
      mid = time.perf_counter()
      saved[i] = jax.tree.map(np.array, state)  # Host copy to compare with (after timing).
      t2 = time.perf_counter()
      for _ in range(steps):
        state = update(state)
      jax.block_until_ready(state)
      end = time.perf_counter()
      blocked.append(1000 * (mid - tic))
      updating.append(1000 * (end - t2))
      cycle.append(1000 * (mid - tic + end - t2))
    ckpt.wait()
    like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    for i, want in saved.items():
      got = ckpt.restore(like, step=i)
      if not all(jax.tree.leaves(jax.tree.map(np.array_equal, got, want))):
        raise SystemExit(f'{mode}: step {i} does not restore to the saved values')
    ckpt.close()
  return {
    'save_blocked_ms': round(statistics.median(blocked), 1),
    'updates_ms': round(statistics.median(updating), 1),
    'cycle_ms': round(statistics.median(cycle), 1),
  }


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='small', choices=sorted(policy_speed.SIZES))
  parser.add_argument('--vocab', type=int, default=4000)
  parser.add_argument('--saves', type=int, default=3)
  parser.add_argument('--steps', type=int, default=10, help='updates after each save')
  args = parser.parse_args(argv)
  cfg = network.T5Config(vocab_size=args.vocab, **policy_speed.SIZES[args.model])
  params = models.EncoderDecoderModel(cfg).init_params_fn(8, 8)(jax.random.key(0))
  tx = optax.adamw(1e-3)
  state = {'params': params, 'opt': tx.init(params), 'step': jnp.zeros((), jnp.int32)}

  @jax.jit
  def _update(s):  # A stand-in for the train step: touches every buffer.
    return jax.tree.map(lambda x: x + 1 if x.dtype == jnp.int32 else x * 0.999 + 1e-3, s)

  update = jax.jit(_update, donate_argnums=0)
  mb = sum(x.nbytes for x in jax.tree.leaves(state)) / 2**20
  copy = lambda s: jax.tree.map(jnp.copy, s)  # noqa: E731
  out = {m: _run(m, copy(state), update, args.saves, args.steps) for m in ('sync', 'async')}
  print(json.dumps({'config': {**vars(args), 'state_mb': round(mb, 1)}, **out}))


if __name__ == '__main__':
  main()
