"""Shared helpers for the CPU test suite: tiny configs and toy batches."""

from __future__ import annotations

import dataclasses
import os
import random

import numpy as np

from rest_jax.core import models, network


def tiny_config(**overrides) -> network.T5Config:
  """A 2+2-layer T5 with width 16: compiles in seconds on CPU."""
  base = network.T5Config(
    vocab_size=32,
    emb_dim=16,
    num_heads=4,
    head_dim=4,
    mlp_dim=32,
    num_encoder_layers=2,
    num_decoder_layers=2,
    dropout_rate=0.0,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=16,
  )
  return dataclasses.replace(base, **overrides)


def tiny_model(**overrides) -> models.EncoderDecoderModel:
  return models.EncoderDecoderModel(tiny_config(**overrides))


def toy_batch(
  batch_size: int = 4, input_length: int = 7, target_length: int = 6, vocab: int = 32, seed: int = 0
) -> dict[str, np.ndarray]:
  """Random token batch with EOS (1) and padding (0), t5x feature layout."""
  rs = np.random.RandomState(seed)
  enc = np.zeros((batch_size, input_length), np.int32)
  tgt = np.zeros((batch_size, target_length), np.int32)
  for b in range(batch_size):
    n_in = rs.randint(2, input_length + 1)
    enc[b, : n_in - 1] = rs.randint(2, vocab, n_in - 1)
    enc[b, n_in - 1] = 1
    n_t = rs.randint(2, target_length + 1)
    tgt[b, : n_t - 1] = rs.randint(2, vocab, n_t - 1)
    tgt[b, n_t - 1] = 1
  return seq2seq_batch(enc, tgt)


def seq2seq_batch(enc: np.ndarray, tgt: np.ndarray) -> dict[str, np.ndarray]:
  """The t5x features of sources `enc` [B, S] and targets `tgt` [B, T] (teacher forcing)."""
  dec_in = np.zeros_like(tgt)
  dec_in[:, 1:] = tgt[:, :-1]
  return {
    'encoder_input_tokens': enc,
    'decoder_input_tokens': dec_in,
    'decoder_target_tokens': tgt,
    'decoder_loss_weights': (tgt > 0).astype(np.float32),
  }


def free_port() -> int:
  """A TCP port on localhost that is free now (for a jax.distributed coordinator)."""
  import socket

  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


_NOUNS = [
  ('dog', 'Hund'),
  ('cat', 'Katze'),
  ('house', 'Haus'),
  ('car', 'Auto'),
  ('book', 'Buch'),
  ('tree', 'Baum'),
  ('bird', 'Vogel'),
  ('apple', 'Apfel'),
]
_ADJS = [
  ('big', 'große'),
  ('small', 'kleine'),
  ('red', 'rote'),
  ('old', 'alte'),
  ('new', 'neue'),
  ('green', 'grüne'),
]
_VERBS = [('sees', 'sieht'), ('likes', 'mag'), ('finds', 'findet'), ('has', 'hat')]


def synthetic_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
  """n distinct English/German sentence pairs from a tiny grammar."""
  rng = random.Random(seed)
  pairs = {}
  while len(pairs) < n:
    (n1, d1), (a, da), (v, dv), (n2, d2) = (
      rng.choice(_NOUNS),
      rng.choice(_ADJS),
      rng.choice(_VERBS),
      rng.choice(_NOUNS),
    )
    pairs[f'The {a} {n1} {v} the {n2} {len(pairs)}.'] = f'Die {da} {d1} {dv} den {d2} {len(pairs)}.'
  return list(pairs.items())


def write_tiny_corpus(root: str, num_pairs: int = 300) -> tuple[str, str]:
  """A synthetic TSV corpus and a ~100-piece vocabulary for it, under `root`."""
  from rest_jax.data import vocabularies

  pairs = synthetic_pairs(num_pairs)
  tsv = os.path.join(root, 'pairs.tsv')
  with open(tsv, 'w') as f:
    f.write(''.join(f'{s}\t{t}\n' for s, t in pairs))
  vocab = vocabularies.train_sentencepiece(
    [x for p in pairs for x in p], os.path.join(root, 'v.model'), 100
  )
  return tsv, vocab


def tiny_task(root: str, name: str, held_out: int):
  """`write_tiny_corpus` under `root` as a ParallelCorpus task; returns (task, vocab path).

  `held_out` sentences each are carved out for validation and test.
  """
  from rest_jax.data import tasks

  tsv, vocab = write_tiny_corpus(root)
  task = tasks.ParallelCorpus(
    name=name, train_path=tsv, vocab_path=vocab, num_validation=held_out, num_test=held_out
  )
  return task, vocab


def save_random_policy(model_dir: str, config: network.ModelConfig, step: int) -> None:
  """Saves a randomly initialised policy TrainState as `model_dir/checkpoints/bc/best`."""
  import jax

  from rest_jax.core import checkpoints, optimizers, partitioning
  from rest_jax.core import train_state as train_state_lib

  model = models.make_model(config)
  tx = optimizers.make(optimizers.OptimizerConfig(), 10)
  mesh = partitioning.make_mesh(partitioning.MeshConfig(num_devices=1))
  state, _ = train_state_lib.create_sharded(
    lambda r: model.init(r, 16, 16)['params'], tx, jax.random.key(0), mesh
  )
  checkpoints.Checkpointer(os.path.join(model_dir, 'checkpoints', 'bc', 'best')).save(step, state)
