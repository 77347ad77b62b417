"""Reward sources on hand-made cases; the reward model network and its checkpoint."""

import dataclasses
import math
import os

import flax.linen as nn
import jax
import numpy as np
import pytest
import sacrebleu
import sentencepiece
import test_utils

from rest_jax.core import checkpoints, optimizers, partitioning
from rest_jax.core import train_state as train_state_lib
from rest_jax.rewards import reward_fns, reward_model

_SPM = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  'rest_jax',
  'data',
  'corpora',
  'tatoeba_en_de',
  'spm.model',
)


def _rm_config(**overrides) -> reward_model.RewardModelConfig:
  base = reward_model.RewardModelConfig(
    encoder=test_utils.tiny_config(vocab_size=4000), max_length=16
  )
  return dataclasses.replace(base, **overrides)


# Metric rewards.


def test_chrf_identical_and_disjoint():
  chrf = reward_fns.SentenceChrF()
  out = chrf(['x', 'y'], ['Der Hund schläft.', 'abc'], ['Der Hund schläft.', 'xyz'])
  np.testing.assert_allclose(out.raw, [100.0, 0.0], atol=1e-4)
  np.testing.assert_allclose(out.reward, [1.0, 0.0], atol=1e-6)
  assert out.reward.dtype == np.float32 and out.raw.dtype == np.float32
  assert len(out) == 2


def test_bleu_identical_and_disjoint():
  bleu = reward_fns.SentenceBleu()
  out = bleu(
    ['x', 'y'], ['Die Katze sieht den Hund .', 'abc def'], ['Die Katze sieht den Hund .', 'uvw xyz']
  )
  np.testing.assert_allclose(out.raw, [100.0, 0.0], atol=1e-4)
  np.testing.assert_allclose(out.reward, [1.0, 0.0], atol=1e-6)


def test_partial_matches_equal_sacrebleu():
  cands = ['Die große Katze sieht den Hund.', 'Ein Hund']
  refs = ['Die kleine Katze sieht den Hund.', 'Der Hund schläft.']
  srcs = ['s1', 's2']
  chrf = reward_fns.SentenceChrF()(srcs, cands, refs)
  bleu = reward_fns.SentenceBleu()(srcs, cands, refs)
  for i, (c, r) in enumerate(zip(cands, refs)):
    want_chrf = sacrebleu.sentence_chrf(c, [r]).score
    want_bleu = sacrebleu.sentence_bleu(c, [r]).score
    assert 0 < want_chrf < 100 and 0 < want_bleu < 100
    np.testing.assert_allclose(chrf.raw[i], want_chrf, rtol=1e-6)
    np.testing.assert_allclose(chrf.reward[i], want_chrf / 100, rtol=1e-6)
    np.testing.assert_allclose(bleu.raw[i], want_bleu, rtol=1e-6)
    np.testing.assert_allclose(bleu.reward[i], want_bleu / 100, rtol=1e-6)


def test_exact_match_with_and_without_normalization():
  cands = ['  Der  Hund\tschläft. ', 'der hund schläft.', 'Der Hund schläft!', 'Der Hund schläft.']
  refs = ['Der Hund schläft.'] * 4
  srcs = [''] * 4
  norm = reward_fns.ExactMatch()(srcs, cands, refs)
  np.testing.assert_array_equal(norm.reward, [1.0, 1.0, 0.0, 1.0])
  np.testing.assert_array_equal(norm.raw, norm.reward)
  exact = reward_fns.ExactMatch(normalize=False)(srcs, cands, refs)
  np.testing.assert_array_equal(exact.reward, [0.0, 0.0, 0.0, 1.0])


# Verifier and Weighted.


def test_verifier_clips_and_keeps_raw():
  values = {'a': 2.5, 'b': -1.0, 'c': 0.25, 'd': True}
  seen = []

  def fn(source, candidate, reference):
    seen.append((source, candidate, reference))
    return values[candidate]

  out = reward_fns.Verifier(fn)(['s'] * 4, list('abcd'))
  np.testing.assert_allclose(out.raw, [2.5, -1.0, 0.25, 1.0])
  np.testing.assert_allclose(out.reward, [1.0, 0.0, 0.25, 1.0])
  assert seen[0] == ('s', 'a', None)
  reward_fns.Verifier(fn)(['s'], ['a'], ['r'])
  assert seen[-1] == ('s', 'a', 'r')


def test_verifier_non_finite_names_index():
  verifier = reward_fns.Verifier(lambda s, c, r: float(c), name='parse')
  with pytest.raises(ValueError, match=r"'parse'.*index 2"):
    verifier(['s'] * 3, ['1', '0.5', 'nan'])
  with pytest.raises(ValueError, match='index 0'):
    verifier(['s'], ['inf'])


def test_weighted_arithmetic():
  a = reward_fns.Verifier(lambda s, c, r: {'x': 1.0, 'y': 0.5}[c], name='a')
  b = reward_fns.Verifier(lambda s, c, r: {'x': 0.2, 'y': 3.0}[c], name='b')  # 3.0 clips to 1.
  out = reward_fns.Weighted([a, b], [3.0, 1.0])(['s', 's'], ['x', 'y'])
  want = np.array([(3 * 1.0 + 1 * 0.2) / 4, (3 * 0.5 + 1 * 1.0) / 4])
  np.testing.assert_allclose(out.reward, want, rtol=1e-6)
  np.testing.assert_allclose(out.raw, want, rtol=1e-6)
  # A zero weight drops its component (which would fail here if called).
  boom = reward_fns.Verifier(lambda s, c, r: math.nan, name='boom', needs_references=True)
  only_a = reward_fns.Weighted([a, boom], [2.0, 0.0])
  assert not only_a.needs_references
  np.testing.assert_allclose(only_a(['s', 's'], ['x', 'y']).reward, [1.0, 0.5])


def test_weighted_needs_references_and_bad_weights():
  chrf = reward_fns.SentenceChrF()
  v = reward_fns.Verifier(lambda s, c, r: 1.0)
  mixed = reward_fns.Weighted([chrf, v], [1.0, 1.0])
  assert mixed.needs_references
  out = mixed(['s'], ['Der Hund.'], ['Der Hund.'])
  np.testing.assert_allclose(out.reward, [1.0], atol=1e-6)
  with pytest.raises(ValueError, match=r"'weighted' needs references"):
    mixed(['s'], ['Der Hund.'])
  for weights in ([1.0, -1.0], [0.0, 0.0], [1.0], [math.inf, 1.0]):
    with pytest.raises(ValueError, match='weights'):
      reward_fns.Weighted([chrf, v], weights)


# Input validation.


@pytest.mark.parametrize(
  'fn',
  [
    reward_fns.SentenceChrF(),
    reward_fns.SentenceBleu(),
    reward_fns.ExactMatch(),
    reward_fns.Verifier(lambda s, c, r: 1.0),
  ],
  ids=lambda f: f.name,
)
def test_length_mismatch_names_lengths(fn):
  with pytest.raises(ValueError, match='2 sources but 3 candidates'):
    fn(['a', 'b'], ['a', 'b', 'c'], ['a', 'b', 'c'])
  with pytest.raises(ValueError, match='2 candidates but 1 references'):
    fn(['a', 'b'], ['a', 'b'], ['a'])


@pytest.mark.parametrize(
  'fn', [reward_fns.SentenceChrF(), reward_fns.SentenceBleu(), reward_fns.ExactMatch()], ids=str
)
def test_missing_references_names_reward(fn):
  assert fn.needs_references
  with pytest.raises(ValueError, match=f"Reward '{fn.name}' needs references"):
    fn(['a'], ['a'])


def test_rewards_container_checks_range():
  with pytest.raises(ValueError, match='row 1'):
    reward_fns.Rewards(reward=np.array([0.5, 1.5]), raw=np.array([0.5, 1.5]))
  with pytest.raises(ValueError, match='equal'):
    reward_fns.Rewards(reward=np.zeros(2), raw=np.zeros(3))
  empty = reward_fns.SentenceChrF()([], [], [])
  assert empty.reward.shape == (0,)


# The reward model network.


def test_reward_model_shapes_and_logical_axes():
  cfg = _rm_config(encoder=test_utils.tiny_config())
  boxed = jax.eval_shape(lambda r: reward_model.init_params(cfg, r), jax.random.key(0))['params']
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert leaves
  for leaf in leaves:
    assert isinstance(leaf, nn.LogicallyPartitioned)
    assert len(leaf.names) == len(leaf.value.shape)
  assert set(boxed) == {
    'token_embedder',
    'encoder_relpos',
    'encoder_layer_0',
    'encoder_layer_1',
    'encoder_norm',
    'head',
  }
  params = nn.unbox(reward_model.init_params(cfg, jax.random.key(0)))['params']
  tokens = test_utils.toy_batch(batch_size=3, input_length=9)['encoder_input_tokens']
  raw, reward = reward_model.score(cfg, params, tokens)
  assert raw.shape == (3,) and raw.dtype == np.float32
  np.testing.assert_allclose(reward, jax.nn.sigmoid(raw), rtol=1e-6)
  # Extra padding changes nothing (mask and mean pooling ignore it).
  raw_padded, _ = reward_model.score(cfg, params, np.pad(tokens, ((0, 0), (0, 4))))
  np.testing.assert_allclose(raw_padded, raw, rtol=1e-4, atol=1e-5)
  # 'linear' reads the same head; its reward is the logistic of raw.
  lin = dataclasses.replace(cfg, output='linear')
  raw_lin, reward_lin = reward_model.score(lin, params, tokens)
  np.testing.assert_allclose(raw_lin, raw, rtol=1e-6)
  np.testing.assert_allclose(reward_lin, jax.nn.sigmoid(raw), rtol=1e-6)
  with pytest.raises(ValueError, match='output'):
    _rm_config(output='tanh')


def test_reward_model_shards_with_create_sharded():
  cfg = _rm_config()
  mesh = partitioning.make_mesh(partitioning.MeshConfig(data=2, fsdp=2, model=2))
  tx = optimizers.make(optimizers.OptimizerConfig(), 10)
  state, shardings = train_state_lib.create_sharded(
    lambda r: reward_model.init_params(cfg, r)['params'], tx, jax.random.key(0), mesh
  )
  emb = state.params['token_embedder']['embedding']
  assert emb.shape == (4000, 16)
  assert len(emb.sharding.device_set) == 8
  assert state.params['head']['kernel'].shape == (16, 1)


def test_encode_pairs_layout():
  sp = sentencepiece.SentencePieceProcessor(model_file=_SPM)
  assert (sp.pad_id(), sp.eos_id()) == (0, 1)
  src, cand = 'The dog sleeps.', 'Der Hund schläft.'
  s_ids, c_ids = sp.encode(src), sp.encode(cand)
  rows = reward_model.encode_pairs(sp, [src], [cand], 32)
  assert rows.shape == (1, 32) and rows.dtype == np.int32
  want = s_ids + [1] + c_ids + [1]
  np.testing.assert_array_equal(rows[0, : len(want)], want)
  assert not rows[0, len(want) :].any()
  # Truncation: the source keeps at most L // 2 - 1 ids; the candidate fills the rest.
  long_src = ' '.join(['The big red dog sees the small green cat.'] * 5)
  long_cand = ' '.join(['Der große rote Hund sieht die kleine grüne Katze.'] * 5)
  rows = reward_model.encode_pairs(sp, [long_src, 'Hi.'], [long_cand, long_cand], 10)
  ls, lc = sp.encode(long_src), sp.encode(long_cand)
  np.testing.assert_array_equal(rows[0], ls[:4] + [1] + lc[:4] + [1])
  hi = sp.encode('Hi.')
  np.testing.assert_array_equal(rows[1], hi + [1] + lc[: 8 - len(hi)] + [1])
  # Deterministic; empty input is fine; misaligned input is not.
  again = reward_model.encode_pairs(sp, [long_src, 'Hi.'], [long_cand, long_cand], 10)
  np.testing.assert_array_equal(rows, again)
  assert reward_model.encode_pairs(sp, [], [], 8).shape == (0, 8)
  with pytest.raises(ValueError, match='1 sources but 2 candidates'):
    reward_model.encode_pairs(sp, ['a'], ['a', 'b'], 8)


# LearnedReward: checkpoint round trip.


def _save_reward_model(directory: str, cfg: reward_model.RewardModelConfig, step: int = 7):
  """Saves a fresh reward-model TrainState as the RM training will; returns its state."""
  mesh = partitioning.make_mesh(partitioning.MeshConfig(), jax.devices()[:1])
  tx = optimizers.make(optimizers.OptimizerConfig(), 10)
  state, _ = train_state_lib.create_sharded(
    lambda r: reward_model.init_params(cfg, r)['params'], tx, jax.random.key(3), mesh
  )
  ckpt = checkpoints.Checkpointer(directory)
  ckpt.save(step, state)
  ckpt.close()
  return state


def test_learned_reward_round_trip(tmp_path):
  cfg = _rm_config()
  ckpt_dir = str(tmp_path / 'rm')
  state = _save_reward_model(ckpt_dir, cfg)

  sources = ['The dog sleeps.', 'I like cats.', 'Where is the car?', 'Tom is here.', 'Go!']
  cands = ['Der Hund schläft.', 'Ich mag Katzen.', 'Wo ist das Auto?', 'Katze', '']
  fn = reward_fns.LearnedReward(ckpt_dir, cfg, _SPM, batch_size=4)
  assert not fn.needs_references
  out = fn(sources, cands)
  assert fn.checkpoint_step == 7
  sp = sentencepiece.SentencePieceProcessor(model_file=_SPM)
  tokens = reward_model.encode_pairs(sp, sources, cands, cfg.max_length)
  raw, reward = reward_model.score(cfg, state.params, tokens)
  np.testing.assert_allclose(out.raw, raw, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out.reward, reward, rtol=1e-5, atol=1e-6)
  assert out.reward.shape == (5,) and ((out.reward >= 0) & (out.reward <= 1)).all()
  # Several compiled batches (and references, which it ignores) give the same rows.
  many = fn(sources * 4, cands * 4, cands * 4)
  np.testing.assert_allclose(many.raw, np.tile(out.raw, 4), rtol=1e-5, atol=1e-5)


def test_load_params_mismatch_and_missing_step(tmp_path):
  ckpt_dir = str(tmp_path / 'rm')
  _save_reward_model(ckpt_dir, _rm_config())
  wider = _rm_config(encoder=test_utils.tiny_config(vocab_size=4000, emb_dim=32))
  with pytest.raises(checkpoints.CheckpointMismatchError, match='another architecture.*shape of'):
    reward_model.load_params(wider, ckpt_dir)
  deeper = _rm_config(encoder=test_utils.tiny_config(vocab_size=4000, num_encoder_layers=3))
  with pytest.raises(checkpoints.CheckpointMismatchError, match='lacks .*encoder_layer_2'):
    reward_model.load_params(deeper, ckpt_dir)
  shallower = _rm_config(encoder=test_utils.tiny_config(vocab_size=4000, num_encoder_layers=1))
  with pytest.raises(checkpoints.CheckpointMismatchError, match='model lacks .*encoder_layer_1'):
    reward_model.load_params(shallower, ckpt_dir)
  with pytest.raises(FileNotFoundError, match=r'step 8 .* \[7\]'):
    reward_model.load_params(_rm_config(), ckpt_dir, step=8)


def test_learned_reward_missing_checkpoint(tmp_path):
  missing = str(tmp_path / 'no_such_rm')
  fn = reward_fns.LearnedReward(missing, _rm_config(), _SPM)
  with pytest.raises(FileNotFoundError, match=missing):
    fn(['a'], ['b'])
  assert not os.path.exists(missing)
  empty = tmp_path / 'empty_rm'
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match=str(empty)):
    reward_model.load_params(_rm_config(), str(empty))


def test_reward_model_dropout_only_when_enabled():
  cfg = _rm_config(encoder=test_utils.tiny_config(dropout_rate=0.3))
  params = nn.unbox(reward_model.init_params(cfg, jax.random.key(0)))['params']
  tokens = test_utils.toy_batch(batch_size=3, input_length=8)['encoder_input_tokens']
  module = reward_model.RewardModel(cfg)
  eval_raw = module.apply({'params': params}, tokens)
  np.testing.assert_allclose(eval_raw, reward_model.score(cfg, params, tokens)[0], rtol=1e-6)
  train_raw = module.apply(
    {'params': params}, tokens, enable_dropout=True, rngs={'dropout': jax.random.key(1)}
  )
  assert train_raw.shape == (3,)
  assert not np.allclose(train_raw, eval_raw)


def test_guarded_penalizes_the_probe_patterns_without_references():
  inner = reward_fns.Verifier(lambda s, c, r: 0.8, needs_references=False)
  guarded = reward_fns.Guarded(inner, penalty=0.5)
  src = 'the cat sat on the mat'
  ref = 'die Katze sass auf der Matte'
  cases = {
    ref: 0.8,  # A translation of the source's length: untouched.
    '': 0.0,  # Empty.
    'The  cat sat on the MAT': 0.0,  # The source, copied.
    f'{ref} {ref}': 0.8 * 0.5 * 0.5,  # A loop, and too long (12 > 1.6 * 6 + 2 words).
    'die Katze': 0.8 * 0.5,  # Too short (2 < floor(0.6 * 6) words).
    'die Katze sass auf der Matte und schlief dann ganz lange': 0.8,  # 11 <= 11.6 words.
    'die Katze sass auf der Matte und schlief dann ganz lange ein': 0.8 * 0.5,  # 12 words.
  }
  out = guarded([src] * len(cases), list(cases), None)
  np.testing.assert_allclose(out.reward, list(cases.values()), rtol=1e-6)
  np.testing.assert_allclose(out.raw, 0.8)
  assert not guarded.needs_references
  with pytest.raises(ValueError, match='penalty'):
    reward_fns.Guarded(inner, penalty=1.5)
