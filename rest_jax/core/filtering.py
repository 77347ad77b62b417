"""Improve's filter: which records of a Grow round an Improve step trains on.

A filter schedule picks, for each Improve step, how the round's records are
filtered; the masks themselves, with the paper's strict rule F = 1[R > tau]
[PAPER §1], are `filter_masks.py`:

| schedule                 | step i keeps a record of source x when its reward is above |
|--------------------------|------------------------------------------------------------|
| `FixedThresholds`        | thresholds[i] (the paper's 0.0, 0.7, 0.8, 0.9, 0.95, 0.99) |
| `GlobalPercentiles`      | the percentiles[i]-th percentile of all rewards            |
| `PerSourcePercentiles`   | the percentiles[i]-th percentile of source x's rewards     |
|                          | [PAPER A.7]                                                |
| `PerSourceInterpolation` | gammas[i] * max_x + (1 - gammas[i]) * mean_x [PAPER A.7]   |
| `TopKPerSource`          | (no threshold) it is among the k highest of source x;      |
|                          | ReST-EM keeps at most 10 per problem [PAPER §5]            |

Statistics come from the policy's samples when `is_human` is given (see
`filter_masks.py`).

A schedule is a frozen dataclass (bound by gin) with `num_steps`,
`mask(step, rewards, source_ids, is_human=None)`, `threshold(...)` (the global
tau, or None) and `describe(step)`; `step` is a 0-based index into it.
`apply_schedule` runs one step and applies `MinKeptPolicy` when a step keeps
too few records: stop with the reward statistics, or fall back to a global
percentile (of the policy samples too, when `is_human` is given).

Pure numpy; no TensorFlow, no JAX.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from rest_jax import errors
from rest_jax.core import filter_masks

ON_TOO_FEW = ('stop', 'percentile')


class FilterTooStrictError(errors.UserInputError):
  """A filter step keeps fewer records than `MinKeptPolicy.min_examples`.

  Attributes:
    step: the 0-based schedule step.
    kept: how many records the step (or its fallback) kept.
    summary: `filter_masks.reward_summary` of the rewards that were filtered.
  """

  def __init__(self, message: str, step: int, kept: int, summary: dict):
    super().__init__(message)
    self.step = step
    self.kept = kept
    self.summary = summary


# ---------------------------------------------------------------------------
# Schedules.


def _check_step(step, num_steps: int, owner: str) -> int:
  if isinstance(step, bool):
    raise ValueError(f'step={step!r} must be an integer.')
  try:
    step = operator.index(step)
  except TypeError:
    raise ValueError(f'step={step!r} must be an integer.') from None
  if not 0 <= step < num_steps:
    raise ValueError(
      f'step={step} is out of range for {owner}, which has {num_steps} step(s) '
      f'(0..{num_steps - 1}); give it more values or run fewer Improve steps.'
    )
  return step


class FilterSchedule(Protocol):
  """What `apply_schedule` needs from a schedule; step is a 0-based index."""

  @property
  def num_steps(self) -> int: ...

  def mask(self, step: int, rewards, source_ids, is_human=None) -> np.ndarray: ...

  def threshold(self, step: int, rewards, is_human=None) -> float | None: ...

  def describe(self, step: int) -> str: ...


def _tuple_of(values, check, name: str) -> tuple[float, ...]:
  if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
    raise ValueError(f'{name}={values!r} must be a sequence of numbers.')
  if not values:
    raise ValueError(f'{name} is empty; give at least one value.')
  return tuple(check(v, f'{name}[{i}]') for i, v in enumerate(values))


def _global_rows(rewards, is_human) -> np.ndarray:
  """The rewards the global statistics come from (policy samples when is_human is given)."""
  r = filter_masks.as_rewards(rewards)
  human = filter_masks.as_is_human(is_human, len(r))
  if human is None or human.all():
    return r
  return r[~human]


def _fmt(x: float) -> str:
  return f'{x:g}'


@dataclasses.dataclass(frozen=True)
class FixedThresholds:
  """A fixed list of thresholds on the normalized reward; step i keeps reward > thresholds[i].

  The default is the paper's list [PAPER §1]: 0.0 means the full data set
  (G=1, I=0); the paper ran 5 Improve steps on IWSLT and 4 on WMT.
  """

  thresholds: Sequence[float] = (0.0, 0.7, 0.8, 0.9, 0.95, 0.99)  # tau per step (0-based).

  def __post_init__(self):
    object.__setattr__(
      self,
      'thresholds',
      _tuple_of(self.thresholds, filter_masks.check_finite, 'FixedThresholds.thresholds'),
    )

  @property
  def num_steps(self) -> int:
    """How many Improve steps the schedule covers."""
    return len(self.thresholds)

  def threshold(self, step: int, rewards=None, is_human=None) -> float:
    """tau of this step (rewards are not needed)."""
    del rewards, is_human
    return self.thresholds[_check_step(step, self.num_steps, 'FixedThresholds')]

  def mask(self, step: int, rewards, source_ids, is_human=None) -> np.ndarray:
    """[M] bool: reward > thresholds[step]."""
    tau = self.threshold(step)
    r = filter_masks.as_rewards(rewards)
    filter_masks.as_source_ids(source_ids, len(r))
    filter_masks.as_is_human(is_human, len(r))
    return filter_masks.strictly_above(r, tau)

  def describe(self, step: int) -> str:
    """The step's filter in words, for logs and errors."""
    return f'reward > {_fmt(self.threshold(step))}'


@dataclasses.dataclass(frozen=True)
class GlobalPercentiles:
  """Step i keeps reward > the percentiles[i]-th percentile of the round's rewards.

  The default (rising 70 -> 95) is a choice of this project; the paper gives none.
  """

  percentiles: Sequence[float] = (70.0, 80.0, 90.0, 95.0)  # p in [0, 100] per step (0-based).

  def __post_init__(self):
    object.__setattr__(
      self,
      'percentiles',
      _tuple_of(self.percentiles, filter_masks.check_percentile, 'GlobalPercentiles.percentiles'),
    )

  @property
  def num_steps(self) -> int:
    """How many Improve steps the schedule covers."""
    return len(self.percentiles)

  def threshold(self, step: int, rewards, is_human=None) -> float:
    """The global tau: the percentile of the rewards (of the policy samples, if is_human)."""
    p = self.percentiles[_check_step(step, self.num_steps, 'GlobalPercentiles')]
    return filter_masks.global_percentile_threshold(_global_rows(rewards, is_human), p)

  def mask(self, step: int, rewards, source_ids, is_human=None) -> np.ndarray:
    """[M] bool: reward > the step's global percentile."""
    r = filter_masks.as_rewards(rewards)
    filter_masks.as_source_ids(source_ids, len(r))
    tau = self.threshold(step, r, is_human)
    return filter_masks.strictly_above(r, tau)

  def describe(self, step: int) -> str:
    """The step's filter in words, for logs and errors."""
    p = self.percentiles[_check_step(step, self.num_steps, 'GlobalPercentiles')]
    return f'reward > global p{_fmt(p)}'


@dataclasses.dataclass(frozen=True)
class PerSourcePercentiles:
  """Step i keeps rewards above the percentiles[i]-th percentile of their own source.

  The paper found gains saturate after p = 90, "generally similar" to a global
  threshold [PAPER A.7]. The default (rising 70 -> 95, like trlx's RFT) is a
  choice of this project.
  """

  percentiles: Sequence[float] = (70.0, 80.0, 90.0, 95.0)  # p in [0, 100] per step (0-based).

  def __post_init__(self):
    object.__setattr__(
      self,
      'percentiles',
      _tuple_of(
        self.percentiles, filter_masks.check_percentile, 'PerSourcePercentiles.percentiles'
      ),
    )

  @property
  def num_steps(self) -> int:
    """How many Improve steps the schedule covers."""
    return len(self.percentiles)

  def threshold(self, step: int, rewards=None, is_human=None) -> None:
    """None: the threshold differs per source."""
    _check_step(step, self.num_steps, 'PerSourcePercentiles')
    return None

  def mask(self, step: int, rewards, source_ids, is_human=None) -> np.ndarray:
    """[M] bool: `filter_masks.per_source_percentile_mask` at the step's percentile."""
    p = self.percentiles[_check_step(step, self.num_steps, 'PerSourcePercentiles')]
    return filter_masks.per_source_percentile_mask(rewards, source_ids, p, is_human)

  def describe(self, step: int) -> str:
    """The step's filter in words, for logs and errors."""
    p = self.percentiles[_check_step(step, self.num_steps, 'PerSourcePercentiles')]
    return f'reward > per-source p{_fmt(p)}'


@dataclasses.dataclass(frozen=True)
class PerSourceInterpolation:
  """Step i keeps rewards above gammas[i] * max_x + (1 - gammas[i]) * mean_x of their source.

  The paper raises gamma at each Improve step but gives no values [PAPER A.7];
  the default is a choice of this project. gamma = 1 keeps nothing (see module).
  """

  gammas: Sequence[float] = (0.0, 0.25, 0.5, 0.75)  # gamma in [0, 1] per step (0-based), rising.

  def __post_init__(self):
    object.__setattr__(
      self,
      'gammas',
      _tuple_of(self.gammas, filter_masks.check_gamma, 'PerSourceInterpolation.gammas'),
    )

  @property
  def num_steps(self) -> int:
    """How many Improve steps the schedule covers."""
    return len(self.gammas)

  def threshold(self, step: int, rewards=None, is_human=None) -> None:
    """None: the threshold differs per source."""
    _check_step(step, self.num_steps, 'PerSourceInterpolation')
    return None

  def mask(self, step: int, rewards, source_ids, is_human=None) -> np.ndarray:
    """[M] bool: `filter_masks.per_source_interpolation_mask` at the step's gamma."""
    gamma = self.gammas[_check_step(step, self.num_steps, 'PerSourceInterpolation')]
    return filter_masks.per_source_interpolation_mask(rewards, source_ids, gamma, is_human)

  def describe(self, step: int) -> str:
    """The step's filter in words, for logs and errors."""
    g = self.gammas[_check_step(step, self.num_steps, 'PerSourceInterpolation')]
    return f'reward > per-source {_fmt(g)}*max + {_fmt(1.0 - g)}*mean'


@dataclasses.dataclass(frozen=True)
class TopKPerSource:
  """Every step keeps at most the k highest rewards per source (ReST-EM [PAPER §5]).

  With a binary reward, min_reward = 0.5 (or any value in (0, 1)) keeps only
  correct samples, at most k per problem.
  """

  k: int = 10  # At most this many records per source (ReST-EM: 10).
  min_reward: float | None = None  # Only rewards > min_reward are eligible; None: all.
  steps: int = 1  # How many Improve steps use this filter.

  def __post_init__(self):
    filter_masks.check_int(self.k, 'TopKPerSource.k', 1)
    filter_masks.check_int(self.steps, 'TopKPerSource.steps', 1)
    if self.min_reward is not None:
      filter_masks.check_finite(self.min_reward, 'TopKPerSource.min_reward')

  @property
  def num_steps(self) -> int:
    """How many Improve steps the schedule covers."""
    return self.steps

  def threshold(self, step: int, rewards=None, is_human=None) -> float | None:
    """min_reward: every kept record is above it (None without a floor)."""
    _check_step(step, self.num_steps, 'TopKPerSource')
    return None if self.min_reward is None else float(self.min_reward)

  def mask(self, step: int, rewards, source_ids, is_human=None) -> np.ndarray:
    """[M] bool: `filter_masks.top_k_per_source_mask` (the same at every step)."""
    _check_step(step, self.num_steps, 'TopKPerSource')
    r = filter_masks.as_rewards(rewards)
    filter_masks.as_is_human(is_human, len(r))
    return filter_masks.top_k_per_source_mask(r, source_ids, self.k, self.min_reward)

  def describe(self, step: int) -> str:
    """The step's filter in words, for logs and errors."""
    _check_step(step, self.num_steps, 'TopKPerSource')
    floor = '' if self.min_reward is None else f', reward > {_fmt(self.min_reward)}'
    return f'top-{self.k} per source{floor}'


# ---------------------------------------------------------------------------
# One filter step with the too-few policy.


@dataclasses.dataclass(frozen=True)
class MinKeptPolicy:
  """What to do when a filter step keeps fewer than `min_examples` records."""

  min_examples: int = 1  # A step must keep at least this many records (0: never too few).
  on_too_few: str = 'stop'  # 'stop': raise FilterTooStrictError; 'percentile': fall back.
  fallback_percentile: float = 90.0  # 'percentile': keep reward > this global percentile.

  def __post_init__(self):
    filter_masks.check_int(self.min_examples, 'MinKeptPolicy.min_examples', 0)
    if self.on_too_few not in ON_TOO_FEW:
      raise ValueError(
        f'MinKeptPolicy.on_too_few={self.on_too_few!r} must be one of {", ".join(ON_TOO_FEW)}.'
      )
    filter_masks.check_percentile(self.fallback_percentile, 'MinKeptPolicy.fallback_percentile')


@dataclasses.dataclass(frozen=True, eq=False)
class FilterResult:
  """The outcome of one filter step.

  Attributes:
    mask: [M] bool, the records to train on.
    tau: the global threshold used (every kept reward is > tau), or None when
      the threshold differs per source or there is none.
    kept: number of kept records, mask.sum().
    description: the filter in words, e.g. 'reward > 0.8'.
    fell_back: True when the step kept too few and the fallback percentile was used.
  """

  mask: np.ndarray
  tau: float | None
  kept: int
  description: str
  fell_back: bool


def _too_few_message(step, description, kept, total, policy, summary) -> str:
  return (
    f'Filter step {step} ({description}) kept {kept} of {total} records, fewer than '
    f'MinKeptPolicy.min_examples={policy.min_examples}. Reward statistics: '
    f'{filter_masks.format_summary(summary)}. Pick a lower threshold or percentile from these '
    "statistics, or set MinKeptPolicy.on_too_few='percentile' to fall back to a global "
    'percentile.'
  )


def apply_schedule(
  schedule: FilterSchedule,
  step: int,
  rewards,
  source_ids,
  policy: MinKeptPolicy = MinKeptPolicy(),
  is_human=None,
) -> FilterResult:
  """Runs step `step` of a filter schedule, applying the too-few policy.

  Args:
    schedule: a schedule (FixedThresholds, GlobalPercentiles, ...).
    step: 0-based step index, in [0, schedule.num_steps).
    rewards: [M] float rewards of the Grow round.
    source_ids: [M] int source of each record.
    policy: what to do when fewer than policy.min_examples records are kept.
    is_human: optional [M] bool, for the schedules' statistics (module docstring).

  Returns:
    FilterResult with the [M] bool mask.

  Raises:
    FilterTooStrictError: too few kept and on_too_few == 'stop', or the fallback
      percentile keeps too few as well; the message has the step, the filter,
      the kept count and the reward statistics.
    ValueError: bad inputs or step.
  """
  r = filter_masks.as_rewards(rewards)
  filter_masks.as_source_ids(source_ids, len(r))
  filter_masks.as_is_human(is_human, len(r))
  mask = np.asarray(schedule.mask(step, r, source_ids, is_human), bool)
  if mask.shape != r.shape:
    raise ValueError(f'{type(schedule).__name__}.mask returned shape {mask.shape}, not {r.shape}.')
  tau = schedule.threshold(step, r, is_human)
  description = schedule.describe(step)
  kept = int(mask.sum())
  if kept >= policy.min_examples:
    return FilterResult(mask, tau, kept, description, fell_back=False)
  summary = filter_masks.reward_summary(r)
  message = _too_few_message(step, description, kept, len(r), policy, summary)
  if policy.on_too_few == 'stop' or r.size == 0:
    raise FilterTooStrictError(message, step, kept, summary)
  p = policy.fallback_percentile
  fallback_tau = filter_masks.global_percentile_threshold(_global_rows(r, is_human), p)
  fallback = filter_masks.keep_above(r, fallback_tau)
  fallback_kept = int(fallback.sum())
  fallback_description = (
    f'{description}: kept {kept} < {policy.min_examples}; fell back to reward > global '
    f'p{_fmt(p)} = {fallback_tau:.4g}'
  )
  if fallback_kept < policy.min_examples:
    raise FilterTooStrictError(
      f'{message} The fallback (reward > global p{_fmt(p)} = {fallback_tau:.4g}) kept '
      f'{fallback_kept} as well; lower MinKeptPolicy.fallback_percentile or min_examples.',
      step,
      fallback_kept,
      summary,
    )
  return FilterResult(fallback, fallback_tau, fallback_kept, fallback_description, fell_back=True)
