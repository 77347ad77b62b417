"""TensorBoard summaries (tensorboardX: no TensorFlow needed)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax


class Writer:
  """Scalar summaries under `logdir/<tag>/` (one event stream per tag).

  Only process 0 writes; on other processes every call is a no-op.
  """

  def __init__(self, logdir: str):
    self.logdir = logdir
    self._writers = {}
    self._enabled = jax.process_index() == 0

  def _writer(self, tag: str):
    if tag not in self._writers:
      from tensorboardX import SummaryWriter  # Lazy: heavy import.

      self._writers[tag] = SummaryWriter(os.path.join(self.logdir, tag))
    return self._writers[tag]

  def scalars(self, tag: str, step: int, values: Mapping[str, float]) -> None:
    """Writes each scalar of `values` at `step` under `tag`."""
    if not self._enabled:
      return
    w = self._writer(tag)
    for k, v in values.items():
      w.add_scalar(k, float(v), global_step=step)
    w.flush()

  def close(self) -> None:
    """Flushes and closes all streams."""
    for w in self._writers.values():
      w.close()
    self._writers = {}
