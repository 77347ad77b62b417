"""Improve's filter: which records of a Grow round an Improve step trains on.

The paper's filter is F(x, y; tau) = 1[R(x, y) > tau] [PAPER §1], a strict
inequality on the normalized reward. Every mask here keeps a record only when
its reward is *strictly* above a threshold, so a record whose reward equals the
threshold is dropped, whichever way the threshold was chosen:

| function / schedule                 | a record of source x is kept when its reward is above |
|-------------------------------------|-------------------------------------------------------|
| `keep_above`, `FixedThresholds`     | tau (the paper's 0.0, 0.7, 0.8, 0.9, 0.95, 0.99)      |
| `GlobalPercentiles`                 | the p-th percentile of all rewards                    |
| `per_source_percentile_mask`,       | the p-th percentile of source x's rewards [PAPER A.7] |
| `PerSourcePercentiles`              |                                                       |
| `per_source_interpolation_mask`,    | gamma * max_x + (1 - gamma) * mean_x [PAPER A.7]      |
| `PerSourceInterpolation`            |                                                       |
| `top_k_per_source_mask`,            | (no threshold) it is among the k highest of source x; |
| `TopKPerSource`                     | ReST-EM keeps at most 10 per problem [PAPER §5]       |

Consequences of the strict rule, chosen so that one rule holds everywhere:
- Per-source percentile: p = 0 keeps every record above its source's minimum,
  so each source's minimum (and anything tied with it) is dropped; a source
  whose rewards are all equal, a single-sample source included, keeps nothing
  at any p; p = 100 keeps nothing at all.
- Per-source interpolation: gamma = 0 keeps the records above their source's
  mean, gamma = 1 puts the threshold at the source's maximum and so keeps
  nothing (the paper's formula read literally). Use gammas below 1; the
  too-few policy below catches a step that keeps (almost) nothing.

Percentiles are numpy's default ('linear') and are computed in float64.
Comparisons are made in the rewards' own floating dtype, the threshold rounded
to it, as the TF filter of a Grow round's seqio task does with float32
rewards (`grow_io.filter_by_reward`), so the counts here match what Improve
reads. Statistics (percentiles, means, maxima) come from the policy's samples
when `is_human` is given: the paper's V^max(src) and V^mean(src) are values of
the policy; the human references are still filtered by the same threshold,
since D_g contains D [PAPER §1]. A source with no samples uses its own rows.

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
import math
import operator
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from rest_jax import errors

ON_TOO_FEW = ('stop', 'percentile')


class FilterTooStrictError(errors.UserInputError):
  """A filter step keeps fewer records than `MinKeptPolicy.min_examples`.

  Attributes:
    step: the 0-based schedule step.
    kept: how many records the step (or its fallback) kept.
    summary: `reward_summary` of the rewards that were filtered.
  """

  def __init__(self, message: str, step: int, kept: int, summary: dict):
    super().__init__(message)
    self.step = step
    self.kept = kept
    self.summary = summary


# ---------------------------------------------------------------------------
# Input checks.


def _as_rewards(rewards) -> np.ndarray:
  """Rewards as a 1-D floating array (its own float dtype; float64 otherwise)."""
  r = np.asarray(rewards)
  if r.ndim != 1:
    raise ValueError(f'rewards must be a 1-D array [M]; got shape {r.shape}.')
  if not np.issubdtype(r.dtype, np.floating):
    if r.size and not (np.issubdtype(r.dtype, np.integer) or r.dtype == bool):
      raise ValueError(f'rewards must be numbers; got dtype {r.dtype}.')
    r = r.astype(np.float64)
  bad = np.flatnonzero(~np.isfinite(r))
  if bad.size:
    raise ValueError(
      f'rewards has {bad.size} non-finite value(s), the first at index {int(bad[0])} '
      f'({r[bad[0]]}); every reward must be finite.'
    )
  return r


def _as_source_ids(source_ids, m: int) -> np.ndarray:
  s = np.asarray(source_ids)
  if s.ndim != 1:
    raise ValueError(f'source_ids must be a 1-D array [M]; got shape {s.shape}.')
  if len(s) != m:
    raise ValueError(f'source_ids has {len(s)} entries but rewards has {m}; they must be equal.')
  if s.size and not np.issubdtype(s.dtype, np.integer):
    raise ValueError(f'source_ids must be integers; got dtype {s.dtype}.')
  return s.astype(np.int64)


def _as_is_human(is_human, m: int) -> np.ndarray | None:
  if is_human is None:
    return None
  h = np.asarray(is_human)
  if h.ndim != 1 or len(h) != m:
    raise ValueError(f'is_human must be a 1-D array of {m} entries like rewards; got {h.shape}.')
  if h.size and not (h.dtype == bool or np.isin(h, (0, 1)).all()):
    raise ValueError('is_human must hold booleans (or 0/1).')
  return h.astype(bool)


def _check_percentile(p, name: str = 'p') -> float:
  try:
    p = float(p)
  except (TypeError, ValueError):
    raise ValueError(f'{name}={p!r} must be a number in [0, 100].') from None
  if not 0.0 <= p <= 100.0:  # Also rejects NaN.
    raise ValueError(f'{name}={p} is outside [0, 100]; percentiles are given in percent.')
  return p


def _check_gamma(gamma, name: str = 'gamma') -> float:
  try:
    gamma = float(gamma)
  except (TypeError, ValueError):
    raise ValueError(f'{name}={gamma!r} must be a number in [0, 1].') from None
  if not 0.0 <= gamma <= 1.0:
    raise ValueError(f'{name}={gamma} is outside [0, 1].')
  return gamma


def _check_int(value, name: str, minimum: int) -> int:
  if isinstance(value, bool):
    raise ValueError(f'{name}={value!r} must be an integer >= {minimum}.')
  try:
    value = operator.index(value)
  except TypeError:
    raise ValueError(f'{name}={value!r} must be an integer >= {minimum}.') from None
  if value < minimum:
    raise ValueError(f'{name}={value} must be >= {minimum}.')
  return value


def _check_finite(value, name: str) -> float:
  try:
    value = float(value)
  except (TypeError, ValueError):
    raise ValueError(f'{name}={value!r} must be a finite number.') from None
  if not math.isfinite(value):
    raise ValueError(f'{name}={value} must be a finite number.')
  return value


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


def _stat_rows(is_human: np.ndarray | None, m: int) -> np.ndarray:
  """[M] bool: rows whose rewards make the statistics (the policy's samples)."""
  if is_human is None:
    return np.ones(m, bool)
  return ~is_human


def _above(rewards: np.ndarray, tau) -> np.ndarray:
  """`rewards > tau` in the rewards' dtype (tau rounded to it, as the TF filter does)."""
  return rewards > np.asarray(tau, np.float64).astype(rewards.dtype)


# ---------------------------------------------------------------------------
# Statistics.


def reward_summary(rewards) -> dict:
  """Statistics of a reward array, for logs and error messages.

  Args:
    rewards: [M] float rewards.

  Returns:
    dict with `count` (int) and `mean`, `std` (population), `min`, `p10`, `p50`,
    `p90`, `max` (floats, linear percentiles); all NaN when M == 0.
  """
  r = _as_rewards(rewards).astype(np.float64)
  if r.size == 0:
    nan = float('nan')
    return dict(count=0, mean=nan, std=nan, min=nan, p10=nan, p50=nan, p90=nan, max=nan)
  p10, p50, p90 = np.percentile(r, (10.0, 50.0, 90.0))
  return dict(
    count=int(r.size),
    mean=float(r.mean()),
    std=float(r.std()),
    min=float(r.min()),
    p10=float(p10),
    p50=float(p50),
    p90=float(p90),
    max=float(r.max()),
  )


def format_summary(summary: dict) -> str:
  """One line of reward statistics, for error messages.

  Args:
    summary: a `reward_summary` dict.

  Returns:
    e.g. 'count=12, mean=0.51, min=0.1, p50=0.55, p90=0.9, max=0.97'.
  """
  keys = ('mean', 'min', 'p50', 'p90', 'max')
  return ', '.join([f'count={summary["count"]}', *(f'{k}={summary[k]:.4g}' for k in keys)])


def global_percentile_threshold(rewards, p: float) -> float:
  """The p-th percentile of all rewards (numpy 'linear'), a threshold for `keep_above`.

  Args:
    rewards: [M] float rewards, M >= 1.
    p: percentile in [0, 100].

  Returns:
    tau, a float; `keep_above(rewards, tau)` keeps the rewards strictly above it
    (about (100 - p)% of them, fewer when rewards tie at tau).

  Raises:
    ValueError: p outside [0, 100], or no rewards.
  """
  p = _check_percentile(p)
  r = _as_rewards(rewards)
  if r.size == 0:
    raise ValueError('global_percentile_threshold: there are no rewards to take a percentile of.')
  return float(np.percentile(r.astype(np.float64), p))


def _groups(source_ids: np.ndarray) -> tuple[np.ndarray, int]:
  """(group index [M] in 0..S-1, S) for the distinct source ids."""
  _, inverse = np.unique(source_ids, return_inverse=True)
  inverse = inverse.reshape(-1)
  return inverse, (int(inverse.max()) + 1 if inverse.size else 0)


def _stat_selection(inverse: np.ndarray, num_groups: int, stat_rows: np.ndarray) -> np.ndarray:
  """Rows used for per-source statistics: the stat rows, or all rows of a source without any."""
  has_stats = np.bincount(inverse[stat_rows], minlength=num_groups) > 0
  return stat_rows | ~has_stats[inverse]


def _per_source_percentiles(
  values: np.ndarray, inverse: np.ndarray, num_groups: int, p: float
) -> np.ndarray:
  """[S] float64: numpy's 'linear' p-th percentile of each group, vectorized.

  Reproduces `np.percentile(values[inverse == s], p)` exactly: virtual index
  (n - 1) * p / 100 and numpy's two-sided lerp.
  """
  order = np.lexsort((values, inverse))
  v, g = values[order], inverse[order]
  n = np.bincount(g, minlength=num_groups)
  start = np.cumsum(n) - n
  h = (n - 1) * (p / 100.0)
  lo = np.floor(h)
  t = h - lo
  lo = lo.astype(np.int64)
  hi = lo + 1
  top = h >= n - 1
  lo[top] = n[top] - 1
  hi[top] = n[top] - 1
  a, b = v[start + lo], v[start + hi]
  diff = b - a
  return np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


# ---------------------------------------------------------------------------
# Masks.


def keep_above(rewards, tau: float) -> np.ndarray:
  """The paper's filter F = 1[R > tau] (strict: a reward equal to tau is dropped).

  Args:
    rewards: [M] float rewards.
    tau: the threshold (finite), compared in the rewards' dtype.

  Returns:
    [M] bool keep-mask.
  """
  r = _as_rewards(rewards)
  return _above(r, _check_finite(tau, 'tau'))


def per_source_percentile_mask(rewards, source_ids, p: float, is_human=None) -> np.ndarray:
  """Keeps rewards strictly above the p-th percentile of their own source's rewards.

  Ties follow the strict rule: p = 0 drops each source's minimum (and its ties),
  a source whose rewards are all equal (a single-sample source too) keeps
  nothing at any p, and p = 100 keeps nothing.

  Args:
    rewards: [M] float rewards.
    source_ids: [M] int source of each record.
    p: percentile in [0, 100] (numpy 'linear' within each source).
    is_human: optional [M] bool; when given, each source's percentile is taken
      over its policy samples only (all its rows if it has none), and applied to
      all its rows, human references included.

  Returns:
    [M] bool keep-mask.
  """
  p = _check_percentile(p)
  r = _as_rewards(rewards)
  s = _as_source_ids(source_ids, len(r))
  human = _as_is_human(is_human, len(r))
  if r.size == 0:
    return np.zeros(0, bool)
  inverse, num_groups = _groups(s)
  sel = _stat_selection(inverse, num_groups, _stat_rows(human, len(r)))
  tau = _per_source_percentiles(r[sel].astype(np.float64), inverse[sel], num_groups, p)
  return _above(r, tau[inverse])


def per_source_interpolation_mask(rewards, source_ids, gamma: float, is_human=None) -> np.ndarray:
  """Keeps rewards above tau_x = gamma * max_x + (1 - gamma) * mean_x of their source x.

  The paper's per-source interpolation [PAPER A.7] with its filter R > tau
  read literally: gamma = 0 keeps what is above the source's mean; gamma = 1
  puts tau at the source's maximum and keeps nothing; an all-equal source keeps
  nothing at any gamma. tau_x is computed in float64, kept within
  [min_x, max_x] against rounding, and rounded to the rewards' dtype; a float64
  reward that equals mean_x only in exact arithmetic may fall either side.

  Args:
    rewards: [M] float rewards.
    source_ids: [M] int source of each record.
    gamma: interpolation weight in [0, 1].
    is_human: optional [M] bool; when given, max_x and mean_x come from the
      source's policy samples only (all its rows if it has none), and tau_x is
      applied to all its rows.

  Returns:
    [M] bool keep-mask.
  """
  gamma = _check_gamma(gamma)
  r = _as_rewards(rewards)
  s = _as_source_ids(source_ids, len(r))
  human = _as_is_human(is_human, len(r))
  if r.size == 0:
    return np.zeros(0, bool)
  inverse, num_groups = _groups(s)
  sel = _stat_selection(inverse, num_groups, _stat_rows(human, len(r)))
  v, g = r[sel].astype(np.float64), inverse[sel]
  count = np.bincount(g, minlength=num_groups)
  mean = np.bincount(g, weights=v, minlength=num_groups) / count
  hi = np.full(num_groups, -np.inf)
  lo = np.full(num_groups, np.inf)
  np.maximum.at(hi, g, v)
  np.minimum.at(lo, g, v)
  tau = np.clip(gamma * hi + (1.0 - gamma) * mean, lo, hi)
  return _above(r, tau[inverse])


def top_k_per_source_mask(
  rewards, source_ids, k: int, min_reward: float | None = None
) -> np.ndarray:
  """Keeps at most the k highest rewards of each source (ReST-EM: at most 10 per problem).

  Ties are broken by index (the earlier record wins), so the result is
  deterministic. Every record competes, human references included.

  Args:
    rewards: [M] float rewards.
    source_ids: [M] int source of each record.
    k: at most this many records per source, k >= 1.
    min_reward: optional floor; only records with reward > min_reward are
      eligible (a source with fewer eligible records keeps fewer than k).

  Returns:
    [M] bool keep-mask.
  """
  k = _check_int(k, 'k', 1)
  r = _as_rewards(rewards)
  s = _as_source_ids(source_ids, len(r))
  eligible = np.ones(len(r), bool)
  if min_reward is not None:
    eligible = _above(r, _check_finite(min_reward, 'min_reward'))
  idx = np.flatnonzero(eligible)
  mask = np.zeros(len(r), bool)
  if idx.size == 0:
    return mask
  inverse, num_groups = _groups(s[idx])
  order = np.lexsort((idx, -r[idx].astype(np.float64), inverse))
  g = inverse[order]
  n = np.bincount(g, minlength=num_groups)
  start = np.cumsum(n) - n
  rank = np.arange(len(order)) - start[g]
  mask[idx[order[rank < k]]] = True
  return mask


# ---------------------------------------------------------------------------
# Schedules.


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
  r = _as_rewards(rewards)
  human = _as_is_human(is_human, len(r))
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
      self, 'thresholds', _tuple_of(self.thresholds, _check_finite, 'FixedThresholds.thresholds')
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
    r = _as_rewards(rewards)
    _as_source_ids(source_ids, len(r))
    _as_is_human(is_human, len(r))
    return _above(r, tau)

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
      _tuple_of(self.percentiles, _check_percentile, 'GlobalPercentiles.percentiles'),
    )

  @property
  def num_steps(self) -> int:
    """How many Improve steps the schedule covers."""
    return len(self.percentiles)

  def threshold(self, step: int, rewards, is_human=None) -> float:
    """The global tau: the percentile of the rewards (of the policy samples, if is_human)."""
    p = self.percentiles[_check_step(step, self.num_steps, 'GlobalPercentiles')]
    return global_percentile_threshold(_global_rows(rewards, is_human), p)

  def mask(self, step: int, rewards, source_ids, is_human=None) -> np.ndarray:
    """[M] bool: reward > the step's global percentile."""
    r = _as_rewards(rewards)
    _as_source_ids(source_ids, len(r))
    tau = self.threshold(step, r, is_human)
    return _above(r, tau)

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
      _tuple_of(self.percentiles, _check_percentile, 'PerSourcePercentiles.percentiles'),
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
    """[M] bool: `per_source_percentile_mask` at the step's percentile."""
    p = self.percentiles[_check_step(step, self.num_steps, 'PerSourcePercentiles')]
    return per_source_percentile_mask(rewards, source_ids, p, is_human)

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
      self, 'gammas', _tuple_of(self.gammas, _check_gamma, 'PerSourceInterpolation.gammas')
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
    """[M] bool: `per_source_interpolation_mask` at the step's gamma."""
    gamma = self.gammas[_check_step(step, self.num_steps, 'PerSourceInterpolation')]
    return per_source_interpolation_mask(rewards, source_ids, gamma, is_human)

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
    _check_int(self.k, 'TopKPerSource.k', 1)
    _check_int(self.steps, 'TopKPerSource.steps', 1)
    if self.min_reward is not None:
      _check_finite(self.min_reward, 'TopKPerSource.min_reward')

  @property
  def num_steps(self) -> int:
    """How many Improve steps the schedule covers."""
    return self.steps

  def threshold(self, step: int, rewards=None, is_human=None) -> float | None:
    """min_reward: every kept record is above it (None without a floor)."""
    _check_step(step, self.num_steps, 'TopKPerSource')
    return None if self.min_reward is None else float(self.min_reward)

  def mask(self, step: int, rewards, source_ids, is_human=None) -> np.ndarray:
    """[M] bool: `top_k_per_source_mask` (the same at every step)."""
    _check_step(step, self.num_steps, 'TopKPerSource')
    r = _as_rewards(rewards)
    _as_is_human(is_human, len(r))
    return top_k_per_source_mask(r, source_ids, self.k, self.min_reward)

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
    _check_int(self.min_examples, 'MinKeptPolicy.min_examples', 0)
    if self.on_too_few not in ON_TOO_FEW:
      raise ValueError(
        f'MinKeptPolicy.on_too_few={self.on_too_few!r} must be one of {", ".join(ON_TOO_FEW)}.'
      )
    _check_percentile(self.fallback_percentile, 'MinKeptPolicy.fallback_percentile')


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
    f'{format_summary(summary)}. Pick a lower threshold or percentile from these statistics, '
    f"or set MinKeptPolicy.on_too_few='percentile' to fall back to a global percentile."
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
  r = _as_rewards(rewards)
  _as_source_ids(source_ids, len(r))
  _as_is_human(is_human, len(r))
  mask = np.asarray(schedule.mask(step, r, source_ids, is_human), bool)
  if mask.shape != r.shape:
    raise ValueError(f'{type(schedule).__name__}.mask returned shape {mask.shape}, not {r.shape}.')
  tau = schedule.threshold(step, r, is_human)
  description = schedule.describe(step)
  kept = int(mask.sum())
  if kept >= policy.min_examples:
    return FilterResult(mask, tau, kept, description, fell_back=False)
  summary = reward_summary(r)
  message = _too_few_message(step, description, kept, len(r), policy, summary)
  if policy.on_too_few == 'stop' or r.size == 0:
    raise FilterTooStrictError(message, step, kept, summary)
  p = policy.fallback_percentile
  fallback_tau = global_percentile_threshold(_global_rows(r, is_human), p)
  fallback = keep_above(r, fallback_tau)
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
