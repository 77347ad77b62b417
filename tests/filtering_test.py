"""Filter schedules on hand-made rewards with hand-computed masks."""

import numpy as np
import pytest

import gin
from rest_jax import errors
from rest_jax.core import filter_masks, filtering

# Four sources: 0 has a tie (0.5, 0.5), 1 is all equal, 2 is spread out, 3 has one sample.
#                 |------ source 0 -----|------ source 1 -----|------ source 2 -----| 3 |
R = np.array([0.2, 0.5, 0.5, 0.6, 0.7, 0.7, 0.7, 0.7, 0.1, 0.3, 0.6, 0.8, 0.4])
S = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3])
# All 13 sorted: 0.1 0.2 0.3 0.4 0.5 0.5 0.6 0.6 0.7 0.7 0.7 0.7 0.8 (positions 0..12).


def _mask(*kept):
  """The [13] bool mask keeping the given indices."""
  m = np.zeros(len(R), bool)
  m[list(kept)] = True
  return m


def _eq(actual, expected):
  np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected))


# ---------------------------------------------------------------------------
# keep_above and global percentiles.


def test_keep_above_is_strict():
  _eq(filter_masks.keep_above(R, 0.5), _mask(3, 4, 5, 6, 7, 10, 11))
  # Ties at tau are dropped: the two 0.6s and the four 0.7s.
  _eq(filter_masks.keep_above(R, 0.6), _mask(4, 5, 6, 7, 11))
  _eq(filter_masks.keep_above(R, 0.7), _mask(11))
  _eq(filter_masks.keep_above(R, 0.8), _mask())
  _eq(filter_masks.keep_above(R, 0.0), np.ones(13, bool))
  assert filter_masks.keep_above(R, 0.5).dtype == bool


def test_keep_above_compares_in_the_rewards_dtype():
  # float32(0.8) is above the float64 0.8; in float32 it equals it, as in the TF filter.
  r32 = np.array([0.8, 0.9, 0.7], np.float32)
  assert float(r32[0]) > 0.8
  _eq(filter_masks.keep_above(r32, 0.8), [False, True, False])
  _eq(filtering.FixedThresholds((0.8,)).mask(0, r32, [0, 0, 1]), [False, True, False])
  # Lists and integer rewards work too.
  _eq(filter_masks.keep_above([0, 1, 2], 1), [False, False, True])


def test_global_percentile_threshold():
  assert filter_masks.global_percentile_threshold(R, 0) == 0.1
  assert filter_masks.global_percentile_threshold(R, 25) == 0.4  # Position 3.
  assert filter_masks.global_percentile_threshold(R, 50) == 0.6  # Position 6.
  assert filter_masks.global_percentile_threshold(R, 90) == 0.7  # Position 10.8, 0.7 both sides.
  assert filter_masks.global_percentile_threshold(R, 95) == pytest.approx(0.74)  # 11.4.
  assert filter_masks.global_percentile_threshold(R, 100) == 0.8
  assert isinstance(filter_masks.global_percentile_threshold(R, 50), float)
  # p90 keeps only what is strictly above the tied 0.7s.
  _eq(filter_masks.keep_above(R, filter_masks.global_percentile_threshold(R, 90)), _mask(11))


def test_reward_summary():
  s = filter_masks.reward_summary(R)
  assert list(s) == ['count', 'mean', 'std', 'min', 'p10', 'p50', 'p90', 'max']
  assert s['count'] == 13
  assert s['mean'] == pytest.approx(6.8 / 13)
  assert s['std'] == pytest.approx(np.sqrt(np.mean((R - 6.8 / 13) ** 2)))
  assert (s['min'], s['p50'], s['p90'], s['max']) == (0.1, 0.6, 0.7, 0.8)
  assert s['p10'] == pytest.approx(0.22)  # Position 1.2 between 0.2 and 0.3.
  empty = filter_masks.reward_summary([])
  assert empty['count'] == 0 and np.isnan(empty['mean']) and np.isnan(empty['max'])


# ---------------------------------------------------------------------------
# Per-source percentiles.


@pytest.mark.parametrize(
  'p, kept',
  [
    # Source 0 [0.2 0.5 0.5 0.6]: p0 -> 0.2, p25 -> 0.425, p50 -> 0.5, p75 -> 0.525.
    # Source 2 [0.1 0.3 0.6 0.8]: p0 -> 0.1, p25 -> 0.25, p50 -> 0.45, p75 -> 0.65.
    # Source 1 (all 0.7) and source 3 (one sample) keep nothing at any p.
    (0, (1, 2, 3, 9, 10, 11)),  # p = 0 drops each source's minimum.
    (25, (1, 2, 3, 9, 10, 11)),
    (50, (3, 10, 11)),  # The tied 0.5s equal source 0's median and are dropped.
    (75, (3, 11)),
    (100, ()),
  ],
)
def test_per_source_percentile_mask(p, kept):
  _eq(filter_masks.per_source_percentile_mask(R, S, p), _mask(*kept))


def test_per_source_percentile_all_equal_and_single_sample_sources_keep_nothing():
  for p in (0, 10, 50, 99.9):
    m = filter_masks.per_source_percentile_mask(R, S, p)
    assert not m[4:8].any()  # Source 1: all 0.7.
    assert not m[12]  # Source 3: a single sample.
  _eq(filter_masks.per_source_percentile_mask([0.3], [5], 0), [False])


def test_per_source_masks_do_not_depend_on_order_or_id_values():
  perm = np.random.RandomState(0).permutation(len(R))
  ids = np.array([70, -3, 12, 5])[S]  # Arbitrary, non-contiguous ids.
  for p in (0, 50, 75):
    _eq(
      filter_masks.per_source_percentile_mask(R[perm], ids[perm], p),
      filter_masks.per_source_percentile_mask(R, S, p)[perm],
    )
  for gamma in (0, 0.5):
    _eq(
      filter_masks.per_source_interpolation_mask(R[perm], ids[perm], gamma),
      filter_masks.per_source_interpolation_mask(R, S, gamma)[perm],
    )


def test_per_source_percentile_matches_numpy_per_source():
  rs = np.random.RandomState(1)
  s = rs.randint(0, 40, size=600)
  r = np.round(rs.rand(600), 2)  # Rounded so that ties are common.
  for dtype in (np.float64, np.float32):
    rd = r.astype(dtype)
    for p in (0, 10, 33.3, 50, 87.5, 90, 99, 100):
      expected = np.zeros(len(r), bool)
      for x in np.unique(s):
        rows = s == x
        tau = np.percentile(rd[rows].astype(np.float64), p)
        expected[rows] = rd[rows] > np.asarray(tau).astype(dtype)
      _eq(filter_masks.per_source_percentile_mask(rd, s, p), expected)


# ---------------------------------------------------------------------------
# Per-source interpolation tau = gamma * max + (1 - gamma) * mean.


@pytest.mark.parametrize(
  'gamma, kept',
  [
    # Source 0: mean 0.45, max 0.6; source 2: mean 0.45, max 0.8.
    (0.0, (1, 2, 3, 10, 11)),  # Above the mean: 0.5 0.5 0.6 | 0.6 0.8.
    (0.5, (3, 11)),  # 0.525 and 0.625.
    (1.0, ()),  # tau = max: the paper's R > tau keeps nothing.
  ],
)
def test_per_source_interpolation_mask(gamma, kept):
  _eq(filter_masks.per_source_interpolation_mask(R, S, gamma), _mask(*kept))


def test_per_source_interpolation_all_equal_sources_keep_nothing():
  # Three 0.1s: their float mean is not exactly 0.1; tau is kept within [min, max].
  r = np.array([0.1, 0.1, 0.1, 0.7, 0.7, 0.7], np.float64)
  s = np.array([0, 0, 0, 1, 1, 1])
  assert np.mean(r[:3]) != 0.1
  for gamma in (0.0, 0.3, 1.0):
    _eq(filter_masks.per_source_interpolation_mask(r, s, gamma), np.zeros(6, bool))


def test_per_source_interpolation_tie_at_the_mean_is_dropped():
  # Exact in binary: the mean of source 0 is exactly 0.5, of source 1 exactly 0.25.
  r = np.array([0.25, 0.5, 0.75, 0.0, 0.25, 0.5])
  s = np.array([0, 0, 0, 1, 1, 1])
  _eq(filter_masks.per_source_interpolation_mask(r, s, 0.0), [0, 0, 1, 0, 0, 1])
  _eq(filter_masks.per_source_interpolation_mask(r, s, 0.5), [0, 0, 1, 0, 0, 1])  # 0.625, 0.375.


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_per_source_interpolation_matches_a_loop(dtype):
  rs = np.random.RandomState(2)
  s = rs.randint(0, 30, size=400)
  # float32: tenths, compared in float32; float64: sixteenths, so every sum is exact.
  r = np.round(rs.rand(400), 1) if dtype == np.float32 else rs.randint(0, 17, 400) / 16
  r = r.astype(dtype)
  for gamma in (0.0, 0.2, 0.5, 0.9, 1.0):
    expected = np.zeros(len(r), bool)
    for x in np.unique(s):
      v = r[s == x]
      v64 = v.astype(np.float64)
      tau = np.clip(gamma * v64.max() + (1 - gamma) * v64.mean(), v64.min(), v64.max())
      expected[s == x] = v > np.asarray(tau).astype(dtype)
    _eq(filter_masks.per_source_interpolation_mask(r, s, gamma), expected)


# ---------------------------------------------------------------------------
# Statistics from the policy samples when is_human is given.

# Source 0: human 0.9 and samples 0.2 0.4 0.6; source 1: a human reference only;
# source 2: samples 0.3 0.3 and a human 0.3.
RH = np.array([0.9, 0.2, 0.4, 0.6, 0.5, 0.3, 0.3, 0.3])
SH = np.array([0, 0, 0, 0, 1, 2, 2, 2])
H = np.array([1, 0, 0, 0, 1, 0, 0, 1])  # int64 0/1, as grow_io reads it.


def test_is_human_statistics_come_from_samples():
  # Samples of source 0: p75 = 0.5 (all rows: 0.675); source 1 uses its own row (0.5).
  _eq(filter_masks.per_source_percentile_mask(RH, SH, 75, is_human=H), [1, 0, 0, 1, 0, 0, 0, 0])
  _eq(filter_masks.per_source_percentile_mask(RH, SH, 75), [1, 0, 0, 0, 0, 0, 0, 0])
  # Samples of source 0: 0.5 * 0.6 + 0.5 * 0.4 = 0.5 (all rows: 0.7125).
  _eq(filter_masks.per_source_interpolation_mask(RH, SH, 0.5, is_human=H), [1, 0, 0, 1, 0, 0, 0, 0])
  _eq(filter_masks.per_source_interpolation_mask(RH, SH, 0.5), [1, 0, 0, 0, 0, 0, 0, 0])
  # gamma = 1: a human reference better than every sample is still kept.
  _eq(filter_masks.per_source_interpolation_mask(RH, SH, 1.0, is_human=H), [1, 0, 0, 0, 0, 0, 0, 0])
  # Global p80 of the samples [0.2 0.3 0.3 0.4 0.6] is 0.44 (all rows: 0.56).
  sched = filtering.GlobalPercentiles((80,))
  assert sched.threshold(0, RH, H) == pytest.approx(0.44)
  _eq(sched.mask(0, RH, SH, H), [1, 0, 0, 1, 1, 0, 0, 0])
  _eq(sched.mask(0, RH, SH), [1, 0, 0, 1, 0, 0, 0, 0])
  # Every row human: all rows make the statistics.
  _eq(
    filter_masks.per_source_percentile_mask(RH, SH, 75, is_human=np.ones(8, bool)),
    filter_masks.per_source_percentile_mask(RH, SH, 75),
  )


# ---------------------------------------------------------------------------
# Top-k per source.


@pytest.mark.parametrize(
  'k, min_reward, kept',
  [
    (1, None, (3, 4, 11, 12)),
    (2, None, (1, 3, 4, 5, 10, 11, 12)),  # 0.5 at 1 beats the tied 0.5 at 2.
    (2, 0.5, (3, 4, 5, 10, 11)),  # Floor is strict: the 0.5s and source 3's 0.4 go.
    (4, 0.6, (4, 5, 6, 7, 11)),
    (10, None, tuple(range(13))),
  ],
)
def test_top_k_per_source_mask(k, min_reward, kept):
  _eq(filter_masks.top_k_per_source_mask(R, S, k, min_reward), _mask(*kept))


def test_top_k_ties_break_by_index_with_interleaved_sources():
  r = np.array([0.5, 0.5, 0.9, 0.5, 0.5, 0.5])
  s = np.array([7, -1, 7, 7, -1, 7])
  _eq(filter_masks.top_k_per_source_mask(r, s, 1), [0, 1, 1, 0, 0, 0])
  _eq(filter_masks.top_k_per_source_mask(r, s, 2), [1, 1, 1, 0, 1, 0])
  _eq(filter_masks.top_k_per_source_mask(r, s, 3), [1, 1, 1, 1, 1, 0])
  _eq(filter_masks.top_k_per_source_mask(r, s, 2, min_reward=0.9), np.zeros(6, bool))


def test_top_k_matches_a_loop():
  rs = np.random.RandomState(3)
  s = rs.randint(0, 25, size=300)
  r = np.round(rs.rand(300), 1)
  for k, floor in ((1, None), (3, None), (5, 0.45)):
    expected = np.zeros(len(r), bool)
    for x in np.unique(s):
      rows = [i for i in np.flatnonzero(s == x) if floor is None or r[i] > floor]
      expected[sorted(rows, key=lambda i: (-r[i], i))[:k]] = True
    _eq(filter_masks.top_k_per_source_mask(r, s, k, floor), expected)


# ---------------------------------------------------------------------------
# Schedules.


def test_fixed_thresholds_is_the_papers_list():
  sched = filtering.FixedThresholds()
  assert sched.thresholds == (0.0, 0.7, 0.8, 0.9, 0.95, 0.99)
  assert sched.num_steps == 6
  _eq(sched.mask(0, R, S), np.ones(13, bool))
  _eq(sched.mask(1, R, S), _mask(11))
  _eq(sched.mask(2, R, S), _mask())  # 0.8 is not > 0.8.
  assert sched.threshold(3) == 0.9
  assert sched.describe(0) == 'reward > 0'
  assert sched.describe(4) == 'reward > 0.95'
  # Gin passes lists; the schedule stores a tuple and stays hashable.
  assert filtering.FixedThresholds([0.1, 0.2]).thresholds == (0.1, 0.2)
  hash(filtering.FixedThresholds([0.1, 0.2]))


def test_global_percentiles_schedule():
  sched = filtering.GlobalPercentiles((50, 90))
  assert sched.num_steps == 2
  assert sched.threshold(0, R) == 0.6
  _eq(sched.mask(0, R, S), _mask(4, 5, 6, 7, 11))
  _eq(sched.mask(1, R, S), _mask(11))
  assert sched.describe(1) == 'reward > global p90'
  assert filtering.GlobalPercentiles().num_steps == 4


def test_per_source_percentiles_schedule():
  sched = filtering.PerSourcePercentiles((0, 50))
  _eq(sched.mask(0, R, S), _mask(1, 2, 3, 9, 10, 11))
  _eq(sched.mask(1, R, S), _mask(3, 10, 11))
  assert sched.threshold(1, R) is None
  assert sched.describe(1) == 'reward > per-source p50'


def test_per_source_interpolation_schedule():
  sched = filtering.PerSourceInterpolation((0.0, 0.5, 1.0))
  assert sched.num_steps == 3
  _eq(sched.mask(0, R, S), _mask(1, 2, 3, 10, 11))
  _eq(sched.mask(1, R, S), _mask(3, 11))
  _eq(sched.mask(2, R, S), _mask())
  assert sched.threshold(0, R) is None
  assert sched.describe(1) == 'reward > per-source 0.5*max + 0.5*mean'
  assert filtering.PerSourceInterpolation().gammas == (0.0, 0.25, 0.5, 0.75)


def test_top_k_per_source_schedule():
  sched = filtering.TopKPerSource(k=2, min_reward=0.5, steps=3)
  assert sched.num_steps == 3
  for step in range(3):
    _eq(sched.mask(step, R, S), _mask(3, 4, 5, 10, 11))
  assert sched.threshold(0) == 0.5
  assert sched.describe(0) == 'top-2 per source, reward > 0.5'
  default = filtering.TopKPerSource()
  assert (default.k, default.min_reward, default.num_steps) == (10, None, 1)
  assert default.threshold(0) is None
  assert default.describe(0) == 'top-10 per source'


def test_schedules_bind_with_gin():
  config = """
    from __gin__ import dynamic_registration
    from rest_jax.core import filtering
    filtering.PerSourceInterpolation.gammas = [0.0, 0.5]
    filtering.MinKeptPolicy.on_too_few = 'percentile'
  """
  with gin.unlock_config():
    gin.parse_config(config)
  try:
    sched = gin.get_configurable(filtering.PerSourceInterpolation)()
    policy = gin.get_configurable(filtering.MinKeptPolicy)()
  finally:
    gin.clear_config()
  assert sched.gammas == (0.0, 0.5)
  assert policy.on_too_few == 'percentile'


# ---------------------------------------------------------------------------
# apply_schedule and the too-few policy.


def test_apply_schedule_keeps_enough():
  res = filtering.apply_schedule(filtering.FixedThresholds(), 1, R, S)
  _eq(res.mask, _mask(11))
  assert (res.tau, res.kept, res.description, res.fell_back) == (0.7, 1, 'reward > 0.7', False)
  res = filtering.apply_schedule(filtering.PerSourcePercentiles((50,)), 0, R, S)
  assert (res.tau, res.kept, res.fell_back) == (None, 3, False)
  res = filtering.apply_schedule(filtering.GlobalPercentiles((50,)), 0, R, S)
  assert (res.tau, res.kept) == (0.6, 5)
  # min_examples=0: an empty step is allowed.
  res = filtering.apply_schedule(filtering.FixedThresholds(), 2, R, S, filtering.MinKeptPolicy(0))
  assert res.kept == 0 and not res.fell_back


def test_apply_schedule_stop_reports_statistics():
  with pytest.raises(filtering.FilterTooStrictError) as info:
    filtering.apply_schedule(filtering.FixedThresholds(), 2, R, S)
  err = info.value
  assert isinstance(err, ValueError) and isinstance(err, errors.UserInputError)
  msg = str(err)
  for part in (
    'step 2',
    'reward > 0.8',
    'kept 0 of 13',
    'min_examples=1',
    'count=13',
    'mean=0.5231',
    'min=0.1',
    'p50=0.6',
    'p90=0.7',
    'max=0.8',
    "on_too_few='percentile'",
  ):
    assert part in msg, (part, msg)
  assert (err.step, err.kept, err.summary['count']) == (2, 0, 13)


def test_apply_schedule_falls_back_to_a_percentile():
  policy = filtering.MinKeptPolicy(min_examples=3, on_too_few='percentile', fallback_percentile=50)
  res = filtering.apply_schedule(filtering.FixedThresholds(), 1, R, S, policy)  # Keeps 1 < 3.
  assert res.fell_back
  assert res.tau == 0.6
  _eq(res.mask, _mask(4, 5, 6, 7, 11))
  assert res.kept == 5
  assert 'reward > 0.7' in res.description and 'global p50' in res.description
  # A per-source step that keeps nothing falls back the same way.
  policy = filtering.MinKeptPolicy(1, 'percentile', 25)
  res = filtering.apply_schedule(filtering.PerSourceInterpolation((1.0,)), 0, R, S, policy)
  assert res.fell_back and res.tau == 0.4
  _eq(res.mask, _mask(1, 2, 3, 4, 5, 6, 7, 10, 11))


def test_apply_schedule_fallback_that_keeps_too_few_raises():
  policy = filtering.MinKeptPolicy(min_examples=6, on_too_few='percentile', fallback_percentile=50)
  with pytest.raises(filtering.FilterTooStrictError, match='fallback') as info:
    filtering.apply_schedule(filtering.FixedThresholds(), 1, R, S, policy)
  assert 'kept 5 as well' in str(info.value)
  assert 'p90=0.7' in str(info.value)
  assert info.value.kept == 5
  with pytest.raises(filtering.FilterTooStrictError, match='kept 0 of 0'):
    filtering.apply_schedule(filtering.FixedThresholds(), 0, [], [], policy)


# ---------------------------------------------------------------------------
# Bad inputs and configs.


@pytest.mark.parametrize(
  'call, match',
  [
    (lambda: filter_masks.global_percentile_threshold(R, 101), r'p=101.0 is outside \[0, 100\]'),
    (lambda: filter_masks.global_percentile_threshold(R, -1), r'p=-1.0'),
    (lambda: filter_masks.global_percentile_threshold(R, float('nan')), r'p=nan'),
    (lambda: filter_masks.global_percentile_threshold([], 50), 'no rewards'),
    (lambda: filter_masks.per_source_percentile_mask(R, S, 150), r'p=150.0'),
    (
      lambda: filter_masks.per_source_interpolation_mask(R, S, 1.5),
      r'gamma=1.5 is outside \[0, 1\]',
    ),
    (lambda: filter_masks.per_source_interpolation_mask(R, S, -0.1), r'gamma=-0.1'),
    (lambda: filter_masks.top_k_per_source_mask(R, S, 0), r'k=0 must be >= 1'),
    (lambda: filter_masks.top_k_per_source_mask(R, S, 1.5), r'k=1.5 must be an integer'),
    (lambda: filter_masks.top_k_per_source_mask(R, S, 2, float('inf')), 'min_reward=inf'),
    (lambda: filter_masks.keep_above(R, float('nan')), 'tau=nan'),
    (
      lambda: filter_masks.per_source_percentile_mask(R, S[:-1], 50),
      'source_ids has 12 entries but rewards has 13',
    ),
    (lambda: filter_masks.top_k_per_source_mask(R, S[:-1], 2), 'source_ids has 12 entries'),
    (lambda: filtering.FixedThresholds().mask(0, R, S[:5]), 'source_ids has 5 entries'),
    (lambda: filter_masks.per_source_percentile_mask(R, S.astype(float), 50), 'must be integers'),
    (
      lambda: filter_masks.keep_above(R.reshape(1, -1), 0.5),
      r'1-D array \[M\]; got shape \(1, 13\)',
    ),
    (lambda: filter_masks.keep_above([0.1, float('nan')], 0.5), 'non-finite value.*index 1'),
    (lambda: filter_masks.per_source_percentile_mask(R, S, 50, is_human=[1, 0]), 'is_human'),
    (lambda: filter_masks.per_source_percentile_mask(R, S, 50, is_human=S), 'is_human'),
    (lambda: filtering.FixedThresholds(()), 'FixedThresholds.thresholds is empty'),
    (lambda: filtering.FixedThresholds((0.5, float('inf'))), r'thresholds\[1\]=inf'),
    (lambda: filtering.FixedThresholds(0.5), 'must be a sequence'),
    (lambda: filtering.GlobalPercentiles((50, 120)), r'GlobalPercentiles.percentiles\[1\]=120'),
    (lambda: filtering.PerSourcePercentiles((-5,)), r'PerSourcePercentiles.percentiles\[0\]=-5'),
    (lambda: filtering.PerSourceInterpolation((0.5, 2.0)), r'gammas\[1\]=2.0'),
    (lambda: filtering.TopKPerSource(k=0), 'TopKPerSource.k=0'),
    (lambda: filtering.TopKPerSource(steps=0), 'TopKPerSource.steps=0'),
    (lambda: filtering.TopKPerSource(min_reward=float('nan')), 'TopKPerSource.min_reward=nan'),
    (lambda: filtering.FixedThresholds().mask(6, R, S), r'step=6 is out of range.*6 step'),
    (lambda: filtering.FixedThresholds().describe(-1), 'step=-1 is out of range'),
    (lambda: filtering.GlobalPercentiles((50,)).mask(1, R, S), 'step=1 is out of range'),
    (lambda: filtering.PerSourcePercentiles((50,)).mask(1, R, S), 'step=1'),
    (lambda: filtering.PerSourceInterpolation((0.5,)).describe(3), 'step=3'),
    (lambda: filtering.TopKPerSource().mask(1, R, S), 'step=1'),
    (lambda: filtering.FixedThresholds().mask(1.0, R, S), r'step=1.0 must be an integer'),
    (lambda: filtering.apply_schedule(filtering.FixedThresholds(), 6, R, S), 'step=6'),
    (lambda: filtering.MinKeptPolicy(on_too_few='lower'), "on_too_few='lower'"),
    (lambda: filtering.MinKeptPolicy(min_examples=-1), 'min_examples=-1'),
    (lambda: filtering.MinKeptPolicy(fallback_percentile=101), 'fallback_percentile=101'),
  ],
)
def test_bad_config_raises_value_error(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_empty_rounds():
  empty = np.zeros(0)
  ids = np.zeros(0, int)
  _eq(filter_masks.keep_above(empty, 0.5), np.zeros(0, bool))
  _eq(filter_masks.per_source_percentile_mask(empty, ids, 50), np.zeros(0, bool))
  _eq(filter_masks.per_source_interpolation_mask(empty, ids, 0.5), np.zeros(0, bool))
  _eq(filter_masks.top_k_per_source_mask(empty, ids, 3), np.zeros(0, bool))
  with pytest.raises(filtering.FilterTooStrictError, match='kept 0 of 0'):
    filtering.apply_schedule(filtering.FixedThresholds(), 0, empty, ids)
