r"""Policy speed: train-step and sampler throughput, JSON to stdout.

JAX only (no TensorFlow), so it runs on an accelerator machine as it is:

  python bench/policy_speed.py --model=mini --batch=64 --length=24
  python bench/policy_speed.py --model=small --batch=128 --length=48 --dtype=bfloat16

Reports, for random tokens of the given shape on all local devices (a `data`
mesh): train steps/s and target tokens/s, and for the sampler (N samples per
source, fixed length: EOS is masked out so every row runs to the end) sampled
sequences/s and tokens/s.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import jax
import numpy as np

from rest_jax.core import models, network, optimizers, partitioning, trainer
from rest_jax.core import train_state as train_state_lib

SIZES = {  # Same shapes as gin/models/*.gin.
  'tiny': dict(
    emb_dim=32,
    num_heads=4,
    head_dim=8,
    mlp_dim=64,
    num_encoder_layers=2,
    num_decoder_layers=2,
    logits_via_embedding=True,
  ),
  'mini': dict(
    emb_dim=128,
    num_heads=4,
    head_dim=32,
    mlp_dim=512,
    num_encoder_layers=2,
    num_decoder_layers=2,
    logits_via_embedding=True,
  ),
  'small': dict(
    emb_dim=512, num_heads=6, head_dim=64, mlp_dim=1024, num_encoder_layers=8, num_decoder_layers=8
  ),
  'base': dict(
    emb_dim=768,
    num_heads=12,
    head_dim=64,
    mlp_dim=2048,
    num_encoder_layers=12,
    num_decoder_layers=12,
  ),
}


def _batch(rows: int, length: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
  rs = np.random.RandomState(seed)
  tokens = rs.randint(2, vocab, size=(rows, length)).astype(np.int32)
  dec_in = np.concatenate([np.zeros((rows, 1), np.int32), tokens[:, :-1]], axis=1)
  return {
    'encoder_input_tokens': tokens,
    'decoder_input_tokens': dec_in,
    'decoder_target_tokens': tokens,
    'decoder_loss_weights': np.ones((rows, length), np.float32),
  }


def _timed(fn, repeats: int) -> float:
  jax.block_until_ready(fn())  # Compile and warm up.
  start = time.perf_counter()
  for _ in range(repeats):
    out = fn()
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / repeats


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='mini', choices=sorted(SIZES))
  parser.add_argument('--vocab', type=int, default=4000)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--length', type=int, default=24)
  parser.add_argument('--samples', type=int, default=8, help='samples per source')
  parser.add_argument('--sources', type=int, default=32, help='sources per sampler call')
  parser.add_argument('--dtype', default='float32')
  parser.add_argument('--repeats', type=int, default=10)
  args = parser.parse_args()

  cfg = dataclasses.replace(
    network.T5Config(vocab_size=args.vocab, dtype=args.dtype), **SIZES[args.model]
  )
  model = models.EncoderDecoderModel(cfg)
  mesh = partitioning.make_mesh(partitioning.MeshConfig())
  tx = optimizers.make(optimizers.OptimizerConfig(), 1000)
  state, shardings = train_state_lib.create_sharded(
    lambda r: model.init(r, args.length, args.length)['params'], tx, jax.random.key(0), mesh
  )
  steps = trainer.Trainer(loss_fn=model.loss_fn, tx=tx, mesh=mesh, state_shardings=shardings)
  batch = partitioning.shard_batch(_batch(args.batch, args.length, args.vocab), mesh)
  rng = jax.random.key(1)
  box = {'state': state}

  def train_once():
    box['state'], m = steps.train_step(box['state'], batch, rng)
    return m['loss']

  train_s = _timed(train_once, args.repeats)

  # Sampling with EOS disabled so every row decodes the full length.
  no_eos = dataclasses.replace(cfg, eos_id=-1)
  sampler_model = models.EncoderDecoderModel(no_eos)
  src = partitioning.shard_batch(_batch(args.sources, args.length, args.vocab, 1), mesh)
  sample = jax.jit(
    lambda p, b, r: sampler_model.predict_batch(p, b, r, num_decodes=args.samples, temperature=0.8)[
      0
    ]
  )
  params = box['state'].params
  with partitioning.axis_rules(mesh):
    sample_s = _timed(lambda: sample(params, src, rng), max(args.repeats // 2, 1))
  rows = args.sources * args.samples
  print(
    json.dumps(
      {
        'model': args.model,
        'params_millions': round(trainer.tree_size(params) / 1e6, 2),
        'devices': f'{jax.device_count()} x {jax.devices()[0].device_kind}',
        'dtype': args.dtype,
        'train_batch': args.batch,
        'length': args.length,
        'train_steps_per_s': round(1.0 / train_s, 3),
        'train_target_tokens_per_s': round(args.batch * args.length / train_s, 1),
        'sampler_sources': args.sources,
        'samples_per_source': args.samples,
        'sampled_sequences_per_s': round(rows / sample_s, 1),
        'sampled_tokens_per_s': round(rows * args.length / sample_s, 1),
      }
    )
  )


if __name__ == '__main__':
  main()
