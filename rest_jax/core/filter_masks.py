"""The thresholding primitives of Improve's filter: keep-masks of a Grow round's rewards.

The paper's filter is F(x, y; tau) = 1[R(x, y) > tau] [PAPER §1], a strict
inequality on the normalized reward. Every mask here keeps a record only when
its reward is *strictly* above a threshold, so a record whose reward equals the
threshold is dropped, whichever way the threshold was chosen:

| function                        | a record of source x is kept when its reward is above     |
|---------------------------------|-----------------------------------------------------------|
| `keep_above`                    | tau (a fixed threshold, or `global_percentile_threshold`) |
| `per_source_percentile_mask`    | the p-th percentile of source x's rewards [PAPER A.7]     |
| `per_source_interpolation_mask` | gamma * max_x + (1 - gamma) * mean_x [PAPER A.7]          |
| `top_k_per_source_mask`         | (no threshold) it is among the k highest of source x;     |
|                                 | ReST-EM keeps at most 10 per problem [PAPER §5]           |

Consequences of the strict rule, chosen so that one rule holds everywhere:
- Per-source percentile: p = 0 keeps every record above its source's minimum,
  so each source's minimum (and anything tied with it) is dropped; a source
  whose rewards are all equal, a single-sample source included, keeps nothing
  at any p; p = 100 keeps nothing at all.
- Per-source interpolation: gamma = 0 keeps the records above their source's
  mean, gamma = 1 puts the threshold at the source's maximum and so keeps
  nothing (the paper's formula read literally). Use gammas below 1; the
  too-few policy (`filtering.MinKeptPolicy`) catches a step that keeps
  (almost) nothing.

Percentiles are numpy's default ('linear') and are computed in float64.
Comparisons are made in the rewards' own floating dtype, the threshold rounded
to it, as the TF filter of a Grow round's seqio task does with float32
rewards (`grow_io.filter_by_reward`), so the counts here match what Improve
reads. Statistics (percentiles, means, maxima) come from the policy's samples
when `is_human` is given: the paper's V^max(src) and V^mean(src) are values of
the policy; the human references are still filtered by the same threshold,
since D_g contains D [PAPER §1]. A source with no samples uses its own rows.

The input checks (`as_rewards`, `check_percentile`, ...) raise ValueError with
a message that names the argument; `filtering.py`'s schedules use them too.
The schedules that pick a threshold per Improve step are `filtering.py`.

Pure numpy; no TensorFlow, no JAX.
"""

from __future__ import annotations

import math
import operator

import numpy as np

# ---------------------------------------------------------------------------
# Input checks.


def as_rewards(rewards) -> np.ndarray:
  """Rewards as a 1-D floating array (its own float dtype; float64 otherwise).

  Args:
    rewards: [M] numbers (floats, ints or bools), all finite.

  Returns:
    [M] floating array.

  Raises:
    ValueError: not 1-D, not numbers, or a non-finite value.
  """
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


def as_source_ids(source_ids, m: int) -> np.ndarray:
  """Source ids as a 1-D int64 array of the rewards' length.

  Args:
    source_ids: [M] integer source of each record.
    m: M, the number of rewards.

  Returns:
    [M] int64 array.

  Raises:
    ValueError: not 1-D, not M entries, or not integers.
  """
  s = np.asarray(source_ids)
  if s.ndim != 1:
    raise ValueError(f'source_ids must be a 1-D array [M]; got shape {s.shape}.')
  if len(s) != m:
    raise ValueError(f'source_ids has {len(s)} entries but rewards has {m}; they must be equal.')
  if s.size and not np.issubdtype(s.dtype, np.integer):
    raise ValueError(f'source_ids must be integers; got dtype {s.dtype}.')
  return s.astype(np.int64)


def as_is_human(is_human, m: int) -> np.ndarray | None:
  """The optional human-reference flags as a 1-D bool array of the rewards' length.

  Args:
    is_human: None, or [M] booleans (or 0/1): True for a human reference.
    m: M, the number of rewards.

  Returns:
    None when `is_human` is None, else [M] bool.

  Raises:
    ValueError: not 1-D with M entries, or values other than booleans or 0/1.
  """
  if is_human is None:
    return None
  h = np.asarray(is_human)
  if h.ndim != 1 or len(h) != m:
    raise ValueError(f'is_human must be a 1-D array of {m} entries like rewards; got {h.shape}.')
  if h.size and not (h.dtype == bool or np.isin(h, (0, 1)).all()):
    raise ValueError('is_human must hold booleans (or 0/1).')
  return h.astype(bool)


def check_percentile(p, name: str = 'p') -> float:
  """`p` as a float in [0, 100]; ValueError naming `name` otherwise."""
  try:
    p = float(p)
  except (TypeError, ValueError):
    raise ValueError(f'{name}={p!r} must be a number in [0, 100].') from None
  if not 0.0 <= p <= 100.0:  # Also rejects NaN.
    raise ValueError(f'{name}={p} is outside [0, 100]; percentiles are given in percent.')
  return p


def check_gamma(gamma, name: str = 'gamma') -> float:
  """`gamma` as a float in [0, 1]; ValueError naming `name` otherwise."""
  try:
    gamma = float(gamma)
  except (TypeError, ValueError):
    raise ValueError(f'{name}={gamma!r} must be a number in [0, 1].') from None
  if not 0.0 <= gamma <= 1.0:
    raise ValueError(f'{name}={gamma} is outside [0, 1].')
  return gamma


def check_int(value, name: str, minimum: int) -> int:
  """`value` as an int >= `minimum` (bools refused); ValueError naming `name` otherwise."""
  if isinstance(value, bool):
    raise ValueError(f'{name}={value!r} must be an integer >= {minimum}.')
  try:
    value = operator.index(value)
  except TypeError:
    raise ValueError(f'{name}={value!r} must be an integer >= {minimum}.') from None
  if value < minimum:
    raise ValueError(f'{name}={value} must be >= {minimum}.')
  return value


def check_finite(value, name: str) -> float:
  """`value` as a finite float; ValueError naming `name` otherwise."""
  try:
    value = float(value)
  except (TypeError, ValueError):
    raise ValueError(f'{name}={value!r} must be a finite number.') from None
  if not math.isfinite(value):
    raise ValueError(f'{name}={value} must be a finite number.')
  return value


def _stat_rows(is_human: np.ndarray | None, m: int) -> np.ndarray:
  """[M] bool: rows whose rewards make the statistics (the policy's samples)."""
  if is_human is None:
    return np.ones(m, bool)
  return ~is_human


def strictly_above(rewards: np.ndarray, tau) -> np.ndarray:
  """`rewards > tau` in the rewards' dtype (tau rounded to it, as the TF filter does).

  Args:
    rewards: [M] floating rewards, already checked (`as_rewards`).
    tau: a threshold, or [M] thresholds (one per record).

  Returns:
    [M] bool keep-mask.
  """
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
  r = as_rewards(rewards).astype(np.float64)
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
  p = check_percentile(p)
  r = as_rewards(rewards)
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
  r = as_rewards(rewards)
  return strictly_above(r, check_finite(tau, 'tau'))


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
  p = check_percentile(p)
  r = as_rewards(rewards)
  s = as_source_ids(source_ids, len(r))
  human = as_is_human(is_human, len(r))
  if r.size == 0:
    return np.zeros(0, bool)
  inverse, num_groups = _groups(s)
  sel = _stat_selection(inverse, num_groups, _stat_rows(human, len(r)))
  tau = _per_source_percentiles(r[sel].astype(np.float64), inverse[sel], num_groups, p)
  return strictly_above(r, tau[inverse])


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
  gamma = check_gamma(gamma)
  r = as_rewards(rewards)
  s = as_source_ids(source_ids, len(r))
  human = as_is_human(is_human, len(r))
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
  return strictly_above(r, tau[inverse])


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
  k = check_int(k, 'k', 1)
  r = as_rewards(rewards)
  s = as_source_ids(source_ids, len(r))
  eligible = np.ones(len(r), bool)
  if min_reward is not None:
    eligible = strictly_above(r, check_finite(min_reward, 'min_reward'))
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
