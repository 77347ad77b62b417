r"""Grow throughput on the CPU BC checkpoint: sampled sequences/s and tokens/s.

  python bench/grow_cpu.py --model_dir=/tmp/rest_jax/bc [--max_sources=2000 --num_samples=8]

Runs `grow.grow` twice with the config of gin/grow/tatoeba_en_de_cpu.gin (mini
model, 24 tokens, temperature 0.8, sentence-chrF reward) into a temporary
directory: a short warm-up round that compiles the sampler, then the measured
round. Prints JSON: sampled sequences and tokens (EOS included) per second of
sampling, the reward (chrF) scoring rate, and the whole round's wall time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time

import jax
from policy_speed import SIZES  # bench/ is on sys.path when this script runs.

from rest_jax.core import network, partitioning
from rest_jax.data import tasks
from rest_jax.rewards import reward_fns
from rest_jax.runs import grow

# The mini model of gin/models/mini.gin (shapes shared with policy_speed.py).
MINI = dataclasses.replace(network.T5Config(vocab_size=tasks.TATOEBA_VOCAB_SIZE), **SIZES['mini'])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model_dir', default='/tmp/rest_jax/bc', help='a finished CPU BC run')
  parser.add_argument('--max_sources', type=int, default=2000)
  parser.add_argument('--num_samples', type=int, default=8)
  parser.add_argument('--batch_size', type=int, default=32, help='sources per sampler call')
  args = parser.parse_args()

  checkpoint = os.path.join(os.path.abspath(args.model_dir), 'checkpoints', 'bc', 'best')
  sampling = grow.SamplingConfig(num_samples=args.num_samples, temperature=0.8)
  with tempfile.TemporaryDirectory() as tmp:

    def run(max_sources: int, grow_round: int) -> tuple[dict, float]:
      cfg = grow.GrowConfig(
        task=tasks.tatoeba_en_de(),
        max_sources=max_sources,
        sources_per_shard=250,
        batch_size=args.batch_size,
        input_length=24,
        target_length=24,
      )
      start = time.perf_counter()
      manifest = grow.grow(
        model_dir=tmp,
        model_config=MINI,
        grow_config=cfg,
        sampling=sampling,
        reward=reward_fns.SentenceChrF(),
        grow_round=grow_round,
        policy_checkpoint=checkpoint,
        mesh_config=partitioning.MeshConfig(),
        progress=False,
      )
      return manifest, time.perf_counter() - start

    run(64, grow_round=0)  # Warm-up: compiles every length bucket's sampler.
    manifest, wall = run(args.max_sources, grow_round=1)
  timing = manifest['timing']
  print(
    json.dumps(
      {
        'bench': 'grow_cpu',
        'devices': f'{jax.device_count()} x {jax.devices()[0].device_kind}',
        'sources': manifest['num_sources'],
        'samples_per_source': args.num_samples,
        'records': manifest['num_records'],
        'sampled_sequences': manifest['sampled_sequences'],
        'sampled_tokens': manifest['sampled_tokens'],
        'sample_seconds': round(timing['sample_seconds'], 2),
        'sampled_sequences_per_s': round(
          manifest['sampled_sequences'] / timing['sample_seconds'], 1
        ),
        'sampled_tokens_per_s': round(manifest['sampled_tokens'] / timing['sample_seconds'], 1),
        'reward_seconds': round(timing['reward_seconds'], 2),
        'rewards_per_s': round(manifest['num_records'] / timing['reward_seconds'], 1),
        'round_wall_seconds': round(wall, 2),
        'mean_reward_samples': round(manifest['reward_stats_samples']['mean'], 4),
        'mean_reward_human': round(manifest['reward_stats_human']['mean'], 4),
      }
    )
  )


if __name__ == '__main__':
  main()
