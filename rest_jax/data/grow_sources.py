"""The sources Grow samples from: a range of a split, read in split order.

`load_sources` reads sources [first_source, first_source + max_sources) of a
task's split unshuffled, as token ids, texts and human references. Grow
(`runs/grow.py`) and best-of-N (`best_of_n.load_sources`) read sources this way.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from rest_jax import errors
from rest_jax.data import tasks


@dataclasses.dataclass
class Sources:
  """The sources of a split, index k for its k-th source."""

  tokens: list[np.ndarray]  # [S_k] token ids each, without EOS or padding.
  texts: list[str]  # The source texts.
  references: list[str]  # Their human reference translations.


def load_sources(cfg: Any) -> Sources:
  """Sources [first_source, first_source + max_sources) of the split, in split order.

  The split is read unshuffled, so the first `first_source` examples are skipped
  deterministically (they are still tokenized: `tasks.get_dataset` has no offset).
  Index k of the result is example `cfg.first_source + k` of the split. Grow
  and best-of-N (`best_of_n.load_sources`) read sources this way.

  Args:
    cfg: a `runs.grow.GrowConfig`: the task, split, source range and
      input_length (target_length only bounds the tokenized references, which
      are not returned).

  Returns:
    The sources: tokens [S_k] each (no EOS, no padding), texts and references.

  Raises:
    errors.DataError: a bad source range, or no sources from first_source on.
  """
  if cfg.first_source < 0 or (cfg.max_sources is not None and cfg.max_sources < 1):
    raise errors.DataError(
      f'GrowConfig: first_source={cfg.first_source} must be >= 0 and max_sources='
      f'{cfg.max_sources} None or >= 1.'
    )
  data = tasks.get_dataset(
    cfg.task,
    cfg.split,
    input_length=cfg.input_length,
    target_length=cfg.target_length,
    batch_size=256,
    shuffle=False,
    seed=0,
    repeat=False,
    with_text=True,
    max_examples=None if cfg.max_sources is None else cfg.first_source + cfg.max_sources,
  )
  out, seen = Sources([], [], []), 0
  for batch in data:
    for row, src, ref in zip(
      batch['encoder_input_tokens'], batch['inputs_pretokenized'], batch['targets_pretokenized']
    ):
      seen += 1
      if seen <= cfg.first_source:
        continue
      row = row[row > 0]
      out.tokens.append(row[:-1] if len(row) and row[-1] == 1 else row)  # Drop EOS.
      out.texts.append(str(src))
      out.references.append(str(ref))
  if not out.texts:
    raise errors.DataError(
      f'Grow: split {cfg.split!r} of {cfg.task} has no sources from first_source='
      f'{cfg.first_source} on ({seen} in the split).'
    )
  return out
