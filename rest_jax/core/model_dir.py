"""`ModelDir`: every path of a run directory, named once.

A run directory (`MODEL_DIR`) holds everything a run writes; a restarted run
finds its state there. The layout (DESIGN.md, "Model directory"):

  MODEL_DIR/
    .lock                          run_lock: the process that holds the directory
    config.gin, config_<x>.gin     the operative gin config of each run function
    rest_state.json                the ReST loop's phase list
    checkpoints/<phase>/{last,best}/<step>/   Orbax checkpoints
    eval/<phase>_history.jsonl     every validation of a training phase
    eval/<phase>_validation.json   a phase's result (its presence marks it finished)
    eval/<name>.json               other results (summary.json, reward_model.json, ...)
    grow/g<g>/                     Grow round g: TFRecord shards + manifest.json
    summaries/<phase>/             TensorBoard event files
    report/                        the HTML report and its figures

Phases are 'bc', 'rm', 'g1_i2', 'g1_value', 'bc_more_g1_i3', ... Modules ask
`ModelDir` for paths instead of joining strings, so the layout lives here.
"""

from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass(frozen=True)
class ModelDir:
  """The paths of one run directory (nothing is created until written)."""

  root: str

  def __post_init__(self):
    object.__setattr__(self, 'root', os.fspath(self.root))

  def path(self, *parts: str) -> str:
    """`root/part/...` for a file without a named accessor."""
    return os.path.join(self.root, *parts)

  # Configuration and run state.
  def config(self, name: str = 'config.gin') -> str:
    """The operative gin config a run function wrote."""
    return self.path(name)

  @property
  def lock(self) -> str:
    """The lock file of the process that holds the directory (`run_lock`)."""
    return self.path('.lock')

  @property
  def rest_state(self) -> str:
    """The ReST loop's phase list (`rest_state.py`)."""
    return self.path('rest_state.json')

  @property
  def summary(self) -> str:
    """The ReST loop's table, one row per evaluated policy (`rest_summary.py`)."""
    return self.path('eval', 'summary.json')

  # Checkpoints.
  def checkpoints(self, phase: str = '') -> str:
    """`checkpoints/<phase>` (the folder of all checkpoints when `phase` is empty)."""
    return self.path('checkpoints', phase) if phase else self.path('checkpoints')

  def checkpoint(self, ref: str) -> str:
    """A checkpoint reference: 'bc/best' -> `checkpoints/bc/best`; absolute paths stay."""
    return ref if os.path.isabs(ref) else self.path('checkpoints', ref)

  def last(self, phase: str) -> str:
    """The recent checkpoints of `phase`, to resume from."""
    return self.path('checkpoints', phase, 'last')

  def best(self, phase: str) -> str:
    """The best checkpoint of `phase` by its validation metric."""
    return self.path('checkpoints', phase, 'best')

  def lagged(self, phase: str) -> str:
    """GOLD's lagged policy of `phase` at its re-sync steps, to resume it exactly."""
    return self.path('checkpoints', phase, 'lagged')

  def policy(self, phase: str) -> str:
    """The policy alone of an online RL `phase`'s best state (`<phase>/policy`, a policy ref)."""
    return self.path('checkpoints', phase, 'policy')

  def rollouts(self, phase: str) -> str:
    """An online RL `phase`'s current samples (`rollouts_<iteration>.npz`), to resume it exactly."""
    return self.path('online', phase)

  def rollout_log(self, phase: str) -> str:
    """One JSON object a line per online RL iteration: reward, KL, samples, tokens, seconds."""
    return self.path('eval', f'{phase}_rollouts.jsonl')

  # Evaluation files.
  def eval(self, name: str) -> str:
    """`eval/<name>`: a result file such as 'reward_model.json'."""
    return self.path('eval', name)

  def history(self, phase: str) -> str:
    """Every validation of `phase`, one JSON object a line."""
    return self.path('eval', f'{phase}_history.jsonl')

  def validation(self, phase: str) -> str:
    """The result of `phase` (its presence marks the phase finished)."""
    return self.path('eval', f'{phase}_validation.json')

  def summaries(self, phase: str) -> str:
    """TensorBoard event files of `phase`."""
    return self.path('summaries', phase)

  # Grow data and the report.
  def grow(self, name: str) -> str:
    """`grow/<name>`: a round such as 'g1', or a reward model's samples 'g0' / '<rm>_g0'."""
    return self.path('grow', name)

  def grow_round(self, grow_round: int) -> str:
    """Grow round g's shards and manifest."""
    return self.grow(f'g{grow_round}')

  @property
  def report(self) -> str:
    """The report folder (`report.html` and its figures)."""
    return self.path('report')
