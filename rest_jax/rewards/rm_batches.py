"""The reward model's numpy arrays: encoded judgments, preference pairs, resumable batches.

`encode` turns judgments into the reward model's inputs and targets,
`bt_pairs` makes Bradley-Terry preference pairs of them within a source, and
`batch_at` picks the batch of a step from epoch-wise permutations, so a resumed
run sees the same data order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rest_jax.rewards import reward_model


def encode(sp: Any, js: Sequence[Any], max_length: int) -> dict[str, np.ndarray]:
  """Judgments as reward-model inputs and scores.

  Args:
    sp: a `sentencepiece.SentencePieceProcessor`.
    js: N judgments (`judgments.Judgment`: `source`, `candidate`, `score`).
    max_length: L, the reward model's input length.

  Returns:
    'inputs' [N, L] int32 (`reward_model.encode_pairs`) and 'score' [N] float32.
  """
  return {
    'inputs': reward_model.encode_pairs(
      sp, [j.source for j in js], [j.candidate for j in js], max_length
    ),
    'score': np.asarray([j.score for j in js], np.float32),
  }


def bt_pairs(
  data: dict[str, np.ndarray], groups: Sequence[str], rng: np.random.RandomState
) -> dict[str, np.ndarray]:
  """Preference pairs within each group (source) whose scores differ.

  Args:
    data: 'inputs' [N, L] and 'score' [N] (`encode`).
    groups: N group keys; only rows of one group are paired.
    rng: shuffles the pairs.

  Returns:
    P pairs (a, b), a < b within a group, in `rng`'s order: 'inputs_a',
    'inputs_b' [P, L] and 'preference' [P] float32 (1 where a scored higher).

  Raises:
    ValueError: no group has two rows with different scores.
  """
  by_group: dict[str, list[int]] = {}
  for i, g in enumerate(groups):
    by_group.setdefault(g, []).append(i)
  a, b = [], []
  for idx in by_group.values():
    for i in idx:
      for j in idx:
        if i < j and data['score'][i] != data['score'][j]:
          a.append(i)
          b.append(j)
  if not a:
    raise ValueError(
      'Bradley-Terry loss: no pairs of judgments of one source with different scores.'
    )
  a, b = np.asarray(a), np.asarray(b)
  perm = rng.permutation(len(a))
  a, b = a[perm], b[perm]
  return {
    'inputs_a': data['inputs'][a],
    'inputs_b': data['inputs'][b],
    'preference': (data['score'][a] > data['score'][b]).astype(np.float32),
  }


def batch_at(data: dict[str, np.ndarray], step: int, batch_size: int, seed: int) -> dict:
  """The batch of `step`: epoch-wise permutations seeded by (seed, epoch): resumable.

  Args:
    data: arrays of N rows each (e.g. `bt_pairs`).
    step: the training step (0-based).
    batch_size: B.
    seed: the data-order seed.

  Returns:
    The same keys, B rows each: rows offset*B..(offset+1)*B of the permutation
    of epoch step // (N // B) (with fewer than B rows, the permutation repeated).
  """
  n = len(next(iter(data.values())))
  per_epoch = max(n // batch_size, 1)
  epoch, offset = divmod(step, per_epoch)
  perm = np.random.RandomState([seed, epoch]).permutation(n)
  idx = perm[offset * batch_size : (offset + 1) * batch_size]
  if len(idx) < batch_size:  # Tiny data: wrap around.
    idx = np.resize(perm, batch_size)
  return {k: v[idx] for k, v in data.items()}
