"""The sampler Grow and best-of-N share: padding, bucketing, EOS stripping, N samples per source."""

import flax.linen as nn
import jax
import numpy as np
import pytest
import test_utils

from rest_jax.core import models, partitioning, sampler

L = 12  # Source and decode length of the tiny model.


@pytest.mark.parametrize(
  'length, limit, want',
  [(1, 32, 8), (8, 32, 8), (9, 32, 16), (17, 32, 24), (31, 32, 32), (40, 32, 32), (5, 4, 4)],
)
def test_bucket_rounds_up_to_a_multiple_of_8_within_the_limit(length, limit, want):
  assert sampler.bucket(length, limit) == want


def test_bucket_other_multiple():
  assert sampler.bucket(5, 100, multiple=4) == 8
  assert sampler.bucket(1, 100, multiple=4) == 4


def test_pad_rows_appends_eos_and_pads_missing_rows():
  rows = [np.array([5, 6, 7]), np.array([9]), np.array([], np.int32)]
  got = sampler.pad_rows(rows, 4, 5, eos=True)
  want = [[5, 6, 7, 1, 0], [9, 1, 0, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
  assert got.dtype == np.int32
  np.testing.assert_array_equal(got, want)


def test_pad_rows_cuts_long_rows_before_eos():
  got = sampler.pad_rows([np.arange(2, 10)], 1, 4, eos=True)
  np.testing.assert_array_equal(got, [[2, 3, 4, 1]])  # length - 1 tokens, then EOS.
  got = sampler.pad_rows([np.arange(2, 10)], 2, 4, eos=False)
  np.testing.assert_array_equal(got, [[2, 3, 4, 5], [0, 0, 0, 0]])


def test_pad_rows_other_eos_id():
  got = sampler.pad_rows([[4, 5]], 1, 4, eos=True, eos_id=2)
  np.testing.assert_array_equal(got, [[4, 5, 2, 0]])


@pytest.mark.parametrize(
  'row, want',
  [
    ([5, 6, 1, 0, 0], [5, 6]),  # Up to the first EOS.
    ([5, 1, 7, 1, 0], [5]),  # Only the first EOS counts.
    ([1, 0, 0], []),  # An empty sample.
    ([5, 6, 7, 8], [5, 6, 7, 8]),  # No EOS: the whole row (a capped sample).
    ([5, 0, 6, 0], [5, 6]),  # Padding is dropped.
  ],
)
def test_strip(row, want):
  got = sampler.strip(np.array(row, np.int32))
  assert got.dtype == np.int32
  np.testing.assert_array_equal(got, want)


def test_strip_other_eos_id():
  np.testing.assert_array_equal(sampler.strip(np.array([5, 2, 6]), eos_id=2), [5])


@pytest.fixture(scope='module')
def policy():
  model = models.EncoderDecoderModel(test_utils.tiny_config())
  mesh = partitioning.make_mesh(partitioning.MeshConfig(num_devices=1))
  params = nn.unbox(model.init(jax.random.key(0), L, L)['params'])
  return model, params, mesh


def _enc():
  return sampler.pad_rows([np.array([5, 6, 7]), np.array([9, 10]), np.array([3])], 4, 8, eos=True)


def test_sample_gives_n_samples_per_source(policy):
  model, params, mesh = policy
  s = sampler.Sampler(model, params, mesh, num_samples=3, max_length=L, temperature=1.0)
  tokens, log_probs = s.sample(_enc(), jax.random.key(1))
  assert isinstance(tokens, np.ndarray) and isinstance(log_probs, np.ndarray)
  assert tokens.shape == (4, 3, L) and tokens.dtype == np.int32
  assert log_probs.shape == (4, 3) and np.all(np.isfinite(log_probs)) and np.all(log_probs <= 0)
  again, _ = s.sample(_enc(), jax.random.key(1))
  np.testing.assert_array_equal(tokens, again)  # The key decides the draw.


def test_score_of_a_sample_is_its_log_prob(policy):
  """`score` and `sample` agree: a sample's log-likelihood is the log-prob it was drawn with."""
  model, params, mesh = policy
  s = sampler.Sampler(model, params, mesh, num_samples=2, max_length=L, temperature=1.0)
  enc = _enc()
  tokens, log_probs = s.sample(enc, jax.random.key(2))
  for n in range(2):
    scored = s.score(enc, tokens[:, n])
    assert scored.shape == (4,)
    np.testing.assert_allclose(scored, log_probs[:, n], rtol=1e-4, atol=1e-4)


def test_greedy_is_the_same_for_every_sample(policy):
  model, params, mesh = policy
  s = sampler.Sampler(model, params, mesh, num_samples=2, max_length=L, temperature=0.0)
  tokens, _ = s.sample(_enc(), jax.random.key(3))
  np.testing.assert_array_equal(tokens[:, 0], tokens[:, 1])
