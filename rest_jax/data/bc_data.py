"""BC's training stream: the human data as shuffled, repeated batches, replayable to a step.

`config` below is the driver's `bc.TrainDataConfig` (read, never imported).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import tqdm

from rest_jax.core import multihost
from rest_jax.data import tasks


def batches(config: Any, start: int, *, progress: bool) -> Iterator[dict]:
  """The batches of BC steps start+1, start+2, ... (`batches` of `train_loop.run`).

  The data order is a function of `config.shuffle_seed` alone, so a resumed
  run skips the `start` batches it has seen and trains on the same ones as an
  uninterrupted run would (exact resume).

  Args:
    config: a `bc.TrainDataConfig` (task, split, batch size, lengths, seed, packing).
    start: the step the loop resumes from (0 at the start).
    progress: show a bar while the seen batches are skipped.

  Returns:
    An iterator of dicts: 'encoder_input_tokens' [B, S], 'decoder_input_tokens',
    'decoder_target_tokens', 'decoder_loss_weights' [B, T] (`tasks.get_dataset`;
    with `config.pack`, also the segment ids and positions).
  """
  data = tasks.get_dataset(
    config.task,
    config.split,
    input_length=config.input_length,
    target_length=config.target_length,
    batch_size=config.batch_size,
    shuffle=True,
    seed=config.shuffle_seed,
    repeat=True,
    pack=config.pack,
  )
  # Exact resume: replay the data order up to where the last run stopped.
  for _ in tqdm.trange(start, desc='skip seen batches', disable=multihost.bar_disable(progress)):
    next(data)
  return data
