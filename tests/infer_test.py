"""Best-of-N inference, its curve, the hacking flags, and BLEU against sacrebleu's CLI."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import test_utils

from rest_jax.core import checkpoints, metrics, models, partitioning, reranking, sampler
from rest_jax.data import tasks
from rest_jax.rewards import reward_fns
from rest_jax.runs import best_of_n, infer

L = 16
MESH = partitioning.MeshConfig(num_devices=1)


def test_best_of_n_picks_the_first_maximum_among_the_first_n():
  scores = np.array([[0.1, 0.5, 0.5, 0.9], [0.7, 0.2, 0.7, 0.1]])
  np.testing.assert_array_equal(reranking.best_of_n(scores, 1), [0, 0])
  np.testing.assert_array_equal(reranking.best_of_n(scores, 3), [1, 0])  # Ties: the first.
  np.testing.assert_array_equal(reranking.best_of_n(scores, 4), [3, 0])
  with pytest.raises(ValueError, match='n=5'):
    reranking.best_of_n(scores, 5)


def test_curve_is_non_decreasing_and_scores_the_chosen_outputs():
  rs = np.random.RandomState(0)
  scores = rs.rand(20, 8)
  cands = [[f'sentence {s} has candidate number {k} in it' for k in range(8)] for s in range(20)]
  refs = [cands[s][int(np.argmax(scores[s]))] for s in range(20)]
  c = reranking.curve(scores, cands, refs, [1, 2, 4, 8])
  assert c['n'] == [1, 2, 4, 8]
  assert all(a <= b for a, b in zip(c['reward'], c['reward'][1:]))
  assert c['reward'][0] == pytest.approx(scores[:, 0].mean())
  assert c['reward'][-1] == pytest.approx(scores.max(1).mean())
  assert c['bleu'][-1] == pytest.approx(100.0)  # Best-of-8 picks the reference itself.
  assert reranking.curve(scores, cands, None, [1])['bleu'] == []


def test_hacking_flags():
  srcs = ['I see a dog.', 'Hello there.', 'Good.', 'Yes.']
  outs = ['', 'hello THERE.', 'gut gut gut gut gut', 'Ja ja ja.']
  refs = ['Ich sehe einen Hund.', 'Hallo', 'Gut.', 'Ja ja.']
  f = metrics.hacking_flags(srcs, outs, refs)
  np.testing.assert_array_equal(f['empty'], [True, False, False, False])
  np.testing.assert_array_equal(f['copy_source'], [False, True, False, False])
  np.testing.assert_array_equal(f['repetition'], [False, False, True, False])
  np.testing.assert_array_equal(f['too_long'], [False, False, True, False])
  np.testing.assert_array_equal(f['any'], [True, True, True, False])
  assert not metrics.hacking_flags(srcs, outs)['too_long'].any()


def test_bleu_and_chrf_equal_sacrebleus_cli(tmp_path):
  hyps = ['Der Hund sieht die Katze.', 'Ich habe ein Buch.', 'Das Haus ist alt und rot.']
  refs = ['Der Hund sieht eine Katze.', 'Ich habe das Buch.', 'Das alte Haus ist rot.']
  (tmp_path / 'hyp.txt').write_text('\n'.join(hyps) + '\n')
  (tmp_path / 'ref.txt').write_text('\n'.join(refs) + '\n')
  ours = metrics.corpus_bleu_chrf(hyps, refs)
  out = subprocess.run(
    [
      sys.executable,
      '-m',
      'sacrebleu',
      str(tmp_path / 'ref.txt'),
      '-i',
      str(tmp_path / 'hyp.txt'),
      '-m',
      'bleu',
      'chrf',
      '-b',
      '-w',
      '6',
    ],
    capture_output=True,
    text=True,
    check=True,
  ).stdout
  assert json.loads(out) == pytest.approx([ours['bleu'], ours['chrf']], abs=1e-5)


@pytest.fixture(scope='module')
def policy(tmp_path_factory):
  root = tmp_path_factory.mktemp('infer')
  task, vocab = test_utils.tiny_task(str(root), 'infer_test_corpus', held_out=10)
  cfg = test_utils.tiny_config(vocab_size=128)
  model_dir = str(root / 'run')
  test_utils.save_random_policy(model_dir, cfg, step=2)
  return task, cfg, model_dir, vocab


def test_best_of_one_equals_plain_sampling(policy):
  task, cfg, model_dir, _ = policy
  model = models.EncoderDecoderModel(cfg)
  mesh = partitioning.make_mesh(MESH)
  params, _ = checkpoints.restore_params(
    os.path.join(model_dir, 'checkpoints', 'bc', 'best'), model.init_params_fn(L, L), mesh
  )
  icfg = infer.InferConfig(
    task=task, num_samples=1, batch_size=16, input_length=L, target_length=L, seed=3
  )
  tokens, texts, refs = best_of_n.load_sources(icfg)
  vocab = tasks.get_vocabulary(task)
  got = reranking.sample_candidates(model, params, mesh, tokens, icfg, vocab, progress=False)
  # Plain sampling: one decode per source with the first batch's key.
  enc = sampler.pad_rows(tokens, 16, L, eos=True)
  plain, _ = model.predict_batch(
    params,
    {'encoder_input_tokens': enc},
    jax.random.fold_in(jax.random.key(3), 0),
    num_decodes=1,
    max_decode_length=L,
    temperature=0.8,
  )
  want = [vocab.decode([int(t) for t in sampler.strip(np.asarray(r[0]), 1)]) for r in plain]
  assert [c[0] for c in got] == want[: len(texts)]
  assert len(texts) == 10 and len(refs) == 10


def test_infer_writes_outputs_and_curve(policy, tmp_path):
  task, cfg, model_dir, vocab = policy
  src = tmp_path / 'src.txt'
  src.write_text(
    'The big dog sees the cat 1.\nThe red car has the book 2.\nThe old tree finds 3.\n'
  )
  ref = tmp_path / 'ref.txt'
  ref.write_text('Die große Hund sieht den Katze 1.\nDie rote Auto hat den Buch 2.\nDer alte 3.\n')
  result = infer.infer(
    model_dir=model_dir,
    model_config=cfg,
    infer_config=infer.InferConfig(
      input_file=str(src),
      reference_file=str(ref),
      vocab_path=vocab,
      num_samples=4,
      curve_ns=(1, 2, 4, 8),
      batch_size=8,
      input_length=L,
      target_length=L,
    ),
    reward=reward_fns.SentenceChrF(),
    name='tiny',
    mesh_config=MESH,
    progress=False,
  )
  assert result['n'] == [1, 2, 4] and len(result['bleu']) == 3
  on_disk = json.load(open(os.path.join(model_dir, 'eval', 'best_of_n_tiny.json')))
  assert on_disk['reward'] == result['reward'] and on_disk['num_sources'] == 3
  lines = open(os.path.join(model_dir, 'infer', 'tiny.tsv')).read().splitlines()
  assert lines[0] == 'source\toutput\treward' and len(lines) == 4
  records = [json.loads(x) for x in open(os.path.join(model_dir, 'infer', 'tiny.jsonl'))]
  for r in records:
    assert r['reward'] == pytest.approx(max(r['candidate_rewards']), abs=1e-6)
  # The chosen output's reward is the curve's last point, averaged.
  assert np.mean([r['reward'] for r in records]) == pytest.approx(result['reward'][-1], abs=1e-6)
  with pytest.raises(ValueError, match='exactly one'):
    infer.InferConfig()
