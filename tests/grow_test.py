"""Grow: shards and manifest, the filter task, corruption checks, resume, sharding, inspect."""

import json
import os

import jax
import numpy as np
import pytest
import seqio
import test_utils

from rest_jax.core import model_dir as model_dir_lib
from rest_jax.core import partitioning
from rest_jax.data import grow_chunks, grow_io, tasks
from rest_jax.rewards import reward_fns
from rest_jax.runs import grow, inspect_round

N = 3  # Samples per source.


def _fake_records(num_sources=6, seed=0):
  rs = np.random.RandomState(seed)
  out = []
  for s in range(num_sources):
    for n in [-1, *range(N)]:
      out.append(
        {
          'inputs': rs.randint(2, 50, size=rs.randint(1, 6)).astype(np.int32),
          'targets': rs.randint(2, 50, size=rs.randint(1, 6)).astype(np.int32),
          'inputs_pretokenized': f'source {s}',
          'targets_pretokenized': f'candidate {s}/{n} ü',
          'reference': f'reference {s}',
          'reward': float(rs.rand()),
          'raw_reward': float(rs.rand() * 100),
          'log_prob': float(-rs.rand() * 10),
          'source_id': s,
          'sample_index': n,
          'is_human': int(n == -1),
          'grow_round': 1,
          'policy_step': 7,
        }
      )
  return out


def _write_round(round_dir, records, num_shards=2):
  per = -(-len(records) // num_shards)
  shards = [
    grow_io.write_shard(round_dir, i, num_shards, records[i * per : (i + 1) * per])
    for i in range(num_shards)
  ]
  grow_io.write_manifest(round_dir, shards, grow_round=1)
  return shards


@pytest.fixture(scope='module')
def vocab_path():
  return tasks.tatoeba_en_de().vocab_path


def test_write_read_round_trip_through_seqio(tmp_path, vocab_path):
  records = _fake_records()
  _write_round(str(tmp_path), records)
  manifest = grow_io.read_manifest(str(tmp_path))
  assert manifest['num_records'] == len(records)
  assert [s['file'] for s in manifest['shards']] == [
    'part-00000-of-00002.tfrecord',
    'part-00001-of-00002.tfrecord',
  ]
  cols = grow_io.read_records(str(tmp_path))
  for i, r in enumerate(records):
    np.testing.assert_array_equal(cols['targets'][i], r['targets'])
    assert cols['targets_pretokenized'][i] == r['targets_pretokenized']
    assert cols['reward'][i] == pytest.approx(r['reward'], abs=1e-6)
    assert cols['sample_index'][i] == r['sample_index']
  name = grow_io.register_round_task(str(tmp_path), vocab_path)
  ds = seqio.get_mixture_or_task(name).get_dataset(None, split='train', shuffle=False)
  got = list(ds.as_numpy_iterator())
  assert len(got) == len(records)
  for ex, r in zip(got, records):
    np.testing.assert_array_equal(ex['targets'], [*r['targets'], 1])  # seqio appends EOS.
    np.testing.assert_array_equal(ex['inputs'], [*r['inputs'], 1])
    assert ex['targets_pretokenized'].decode() == r['targets_pretokenized']
    assert ex['is_human'] == r['is_human'] and ex['log_prob'] == pytest.approx(r['log_prob'])


@pytest.mark.parametrize('tau', [0.0, 0.3, 0.7, 0.95])
def test_filter_task_keeps_exactly_reward_above_tau(tmp_path, vocab_path, tau):
  records = _fake_records(num_sources=20, seed=1)
  _write_round(str(tmp_path), records, num_shards=3)
  name = grow_io.register_round_task(str(tmp_path), vocab_path, tau=tau)
  ds = seqio.get_mixture_or_task(name).get_dataset(None, split='train', shuffle=False)
  kept = {(int(ex['source_id']), int(ex['sample_index'])) for ex in ds.as_numpy_iterator()}
  cols = grow_io.read_records(str(tmp_path))
  mask = cols['reward'] > np.float32(tau)
  want = set(zip(cols['source_id'][mask].tolist(), cols['sample_index'][mask].tolist()))
  assert kept == want and len(kept) == int(mask.sum())


def test_corrupted_shard_and_changed_count_are_detected(tmp_path, vocab_path):
  round_dir = str(tmp_path)
  _write_round(round_dir, _fake_records())
  grow_io.verify_round(round_dir)
  manifest_path = os.path.join(round_dir, 'manifest.json')
  manifest = json.loads(open(manifest_path).read())
  manifest['shards'][1]['count'] += 1
  open(manifest_path, 'w').write(json.dumps(manifest))
  with pytest.raises(grow_io.GrowDataError, match=r'part-00001-of-00002.*records but the manifest'):
    grow_io.verify_round(round_dir)
  manifest['shards'][1]['count'] -= 1
  open(manifest_path, 'w').write(json.dumps(manifest))
  shard = os.path.join(round_dir, 'part-00000-of-00002.tfrecord')
  data = bytearray(open(shard, 'rb').read())
  data[len(data) // 2] ^= 0xFF
  open(shard, 'wb').write(bytes(data))
  with pytest.raises(grow_io.GrowDataError, match=r'part-00000-of-00002.*sha256'):
    grow_io.register_round_task(round_dir, vocab_path)
  os.remove(manifest_path)
  with pytest.raises(grow_io.GrowDataError, match='no Grow manifest'):
    grow_io.read_records(round_dir)


# ------------------------------------------------------------ grow end to end


@pytest.fixture(scope='module')
def policy(tmp_path_factory):
  """A tiny corpus, vocabulary and a (random) tiny policy saved as bc/best."""
  root = tmp_path_factory.mktemp('grow')
  tsv, vocab = test_utils.write_tiny_corpus(str(root))
  corpus = tasks.ParallelCorpus(
    name='grow_test_corpus', train_path=tsv, vocab_path=vocab, num_validation=10, num_test=10
  )
  cfg = test_utils.tiny_config(vocab_size=128)
  source_dir = str(root / 'policy')
  test_utils.save_random_policy(source_dir, cfg, step=3)
  return corpus, cfg, source_dir


def _run_grow(corpus, cfg, model_dir, mesh=None, unfinished='keep', **overrides):
  grow_cfg = grow.GrowConfig(
    task=corpus,
    max_sources=13,
    sources_per_shard=5,
    batch_size=8,
    input_length=16,
    target_length=12,
    human_fraction=0.5,
    seed=3,
  )
  return grow.grow(
    model_dir=model_dir,
    model_config=cfg,
    grow_config=grow_cfg,
    sampling=grow.SamplingConfig(num_samples=N, temperature=1.0, unfinished=unfinished),
    reward=reward_fns.SentenceChrF(),
    policy_checkpoint=overrides.pop('policy_checkpoint'),
    mesh_config=mesh or partitioning.MeshConfig(num_devices=1),
    progress=False,
    **overrides,
  )


def _key(cols):
  return list(zip(cols['source_id'].tolist(), cols['sample_index'].tolist()))


def test_grow_kill_and_resume_equals_uninterrupted(policy, tmp_path, monkeypatch):
  corpus, cfg, source_dir = policy
  ckpt = os.path.join(source_dir, 'checkpoints', 'bc', 'best')
  full = _run_grow(corpus, cfg, str(tmp_path / 'full'), policy_checkpoint=ckpt)
  assert full['num_shards'] == 3 and full['num_sources'] == 13 and full['policy_step'] == 3
  assert full['seqio_task'] in seqio.TaskRegistry.names()
  ref = grow_io.read_records(model_dir_lib.ModelDir(str(tmp_path / 'full')).grow_round(1))
  keys = _key(ref)
  assert len(keys) == len(set(keys)), 'duplicates'
  assert {k[0] for k in keys} == set(range(13))
  assert sum(1 for k in keys if k[1] >= 0) == 13 * N
  human = ref['is_human'].astype(bool)
  assert 0 < human.sum() < 13  # human_fraction=0.5
  assert (ref['reward'] >= 0).all() and (ref['reward'] <= 1).all()
  assert (ref['log_prob'] < 0).all()

  # Kill after the second shard: the third never gets written.
  real_write, calls = grow_io.write_shard, []

  def dying_write(*args, **kwargs):
    if len(calls) == 2:
      raise KeyboardInterrupt('killed')
    calls.append(args[1])
    return real_write(*args, **kwargs)

  monkeypatch.setattr(grow_io, 'write_shard', dying_write)
  model_dir = str(tmp_path / 'killed')
  with pytest.raises(KeyboardInterrupt):
    _run_grow(corpus, cfg, model_dir, policy_checkpoint=ckpt)
  monkeypatch.setattr(grow_io, 'write_shard', real_write)
  resumed = _run_grow(corpus, cfg, model_dir, policy_checkpoint=ckpt)
  assert resumed['timing']['resumed_shards'] == 2
  got = grow_io.read_records(model_dir_lib.ModelDir(model_dir).grow_round(1))
  assert _key(got) == keys
  np.testing.assert_array_equal(got['reward'], ref['reward'])
  assert list(got['targets_pretokenized']) == list(ref['targets_pretokenized'])
  assert [s['sha256'] for s in resumed['shards']] == [s['sha256'] for s in full['shards']]
  # The length-cap counts of the shards finished before the kill come from their sidecars.
  for name in grow_io.TRUNCATION_COUNTS:
    assert resumed[name] == full[name] is not None, name


def test_eight_devices_give_the_same_records(policy, tmp_path):
  corpus, cfg, source_dir = policy
  ckpt = os.path.join(source_dir, 'checkpoints', 'bc', 'best')
  one = _run_grow(corpus, cfg, str(tmp_path / 'one'), policy_checkpoint=ckpt)
  eight = _run_grow(
    corpus,
    cfg,
    str(tmp_path / 'eight'),
    policy_checkpoint=ckpt,
    mesh=partitioning.MeshConfig(data=4, fsdp=2, model=1),
  )
  a = grow_io.read_records(model_dir_lib.ModelDir(str(tmp_path / 'one')).grow_round(1))
  b = grow_io.read_records(model_dir_lib.ModelDir(str(tmp_path / 'eight')).grow_round(1))
  assert list(a['targets_pretokenized']) == list(b['targets_pretokenized'])
  np.testing.assert_allclose(a['log_prob'], b['log_prob'], rtol=1e-4, atol=1e-4)
  assert one['num_records'] == eight['num_records']


def test_inspect_reports_kept_counts(policy, tmp_path, capsys):
  corpus, cfg, source_dir = policy
  ckpt = os.path.join(source_dir, 'checkpoints', 'bc', 'best')
  _run_grow(corpus, cfg, str(tmp_path), policy_checkpoint=ckpt)
  rd = model_dir_lib.ModelDir(str(tmp_path)).grow_round(1)
  summary = inspect_round.inspect(round_dir=rd, thresholds=(0.0, 0.5), num_sources=2)
  out = capsys.readouterr().out
  cols = grow_io.read_records(rd)
  assert summary['thresholds'][1]['kept'] == int((cols['reward'] > 0.5).sum())
  assert summary['num_sources'] == 13 and len(summary['examples']) == 2
  assert 'tau' in out and 'best' in out and 'worst' in out
  assert os.path.exists(os.path.join(rd, 'inspect.json'))


def test_rounds_from_the_same_policy_draw_different_samples(policy, tmp_path):
  corpus, cfg, source_dir = policy
  ckpt = os.path.join(source_dir, 'checkpoints', 'bc', 'best')
  model_dir = str(tmp_path)
  g1 = _run_grow(corpus, cfg, model_dir, policy_checkpoint=ckpt, grow_round=1)
  g2 = _run_grow(corpus, cfg, model_dir, policy_checkpoint=ckpt, grow_round=2)
  assert g1['policy_step'] == g2['policy_step'] == 3  # The same policy both times.
  a = grow_io.read_records(model_dir_lib.ModelDir(model_dir).grow_round(1))
  b = grow_io.read_records(model_dir_lib.ModelDir(model_dir).grow_round(2))
  assert _key(a) == _key(b)  # Same sources, samples and human references...
  samples = ~a['is_human'].astype(bool)
  texts_a = list(a['targets_pretokenized'][samples])
  texts_b = list(b['targets_pretokenized'][samples])
  differ = sum(x != y for x, y in zip(texts_a, texts_b))
  assert differ > len(texts_a) // 2, (differ, len(texts_a))  # ... but other draws.
  assert not np.allclose(a['log_prob'][samples], b['log_prob'][samples])
  # The human references do not depend on the draws.
  human = a['is_human'].astype(bool)
  assert list(a['targets_pretokenized'][human]) == list(b['targets_pretokenized'][human])
  assert not np.array_equal(
    jax.random.key_data(grow_chunks.chunk_key(3, 1, 0)),
    jax.random.key_data(grow_chunks.chunk_key(3, 2, 0)),
  )


def test_length_cap_counts_and_dropping_unfinished_samples(policy, tmp_path):
  # A random policy rarely emits EOS within target_length=12 tokens: most samples hit the cap.
  corpus, cfg, source_dir = policy
  ckpt = os.path.join(source_dir, 'checkpoints', 'bc', 'best')
  t = 12
  keep = _run_grow(corpus, cfg, str(tmp_path / 'keep'), policy_checkpoint=ckpt)
  drop = _run_grow(corpus, cfg, str(tmp_path / 'drop'), policy_checkpoint=ckpt, unfinished='drop')
  assert keep['sampling']['unfinished'] == 'keep' and drop['sampling']['unfinished'] == 'drop'
  k = grow_io.read_records(model_dir_lib.ModelDir(str(tmp_path / 'keep')).grow_round(1))
  d = grow_io.read_records(model_dir_lib.ModelDir(str(tmp_path / 'drop')).grow_round(1))
  k_samples = ~k['is_human'].astype(bool)
  d_samples = ~d['is_human'].astype(bool)
  truncated = keep['num_truncated_samples']
  assert 0 < truncated <= 13 * N
  assert drop['num_truncated_samples'] == drop['num_dropped_samples'] == truncated
  assert keep['num_dropped_samples'] == 0 and int(k_samples.sum()) == 13 * N
  assert int(d_samples.sum()) == 13 * N - truncated
  for m in (keep, drop):  # Per shard (sidecars) and overall.
    for name in grow_io.TRUNCATION_COUNTS:
      assert sum(s[name] for s in m['shards']) == m[name], name
  # 'drop' writes exactly the samples that ended with EOS: a subset of the same draws,
  # none of them at the cap (a finished sample has at most t - 1 tokens before its EOS).
  k_text = dict(zip(_key(k), k['targets_pretokenized']))
  d_keys = [key for key, s in zip(_key(d), d_samples) if s]
  assert all(d['targets_pretokenized'][_key(d).index(key)] == k_text[key] for key in d_keys)
  assert all(len(x) < t for x in d['targets'][d_samples])
  assert any(len(x) == t for x in k['targets'][k_samples])  # 'keep' writes capped ones.
  # References longer than t - 1 tokens: counted, stored truncated, scored as stored.
  vocab = tasks.get_vocabulary(corpus)
  human = np.flatnonzero(k['is_human'].astype(bool))
  full = [vocab.encode(str(k['reference'][i])) for i in human]
  long = [len(f) > t - 1 for f in full]
  assert keep['num_truncated_references'] == sum(long) == drop['num_truncated_references'] > 0
  for i, f, cut in zip(human, full, long):
    np.testing.assert_array_equal(k['targets'][i], f[: t - 1])
    if cut:
      assert k['targets_pretokenized'][i] == vocab.decode(list(f[: t - 1]))
      assert k['targets_pretokenized'][i] != k['reference'][i]
      want = reward_fns.SentenceChrF()(['.'], [k['targets_pretokenized'][i]], [k['reference'][i]])
      assert k['reward'][i] == pytest.approx(float(want.reward[0]), abs=1e-6) and k['reward'][i] < 1
    else:
      assert k['targets_pretokenized'][i] == k['reference'][i]


def test_sampling_config_rejects_unknown_unfinished():
  with pytest.raises(ValueError, match='unfinished'):
    grow.SamplingConfig(unfinished='truncate')
