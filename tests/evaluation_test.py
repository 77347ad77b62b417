"""evaluate_policy on a tiny corpus: its metrics, outputs and sizes; check_vocab_size."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sacrebleu
import test_utils

from rest_jax import errors
from rest_jax.core import models, partitioning
from rest_jax.data import tasks
from rest_jax.rewards import reward_fns
from rest_jax.runs import evaluation, policy_eval

L = 40  # Input and target length: longer than any tiny-corpus sentence.
HELD_OUT = 7  # Validation (and test) examples.


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  task, _ = test_utils.tiny_task(
    str(tmp_path_factory.mktemp('eval')), 'evaluation_test_corpus', held_out=HELD_OUT
  )
  model = test_utils.tiny_model(vocab_size=128, num_encoder_layers=1, num_decoder_layers=1)
  params = nn.unbox(model.init(jax.random.key(0), L, L))['params']
  # A data axis of 2: batches are padded to a multiple of it, the padding dropped.
  mesh = partitioning.make_mesh(partitioning.MeshConfig(num_devices=2))
  return task, model, params, mesh


def _config(task, **overrides):
  kwargs = dict(task=task, batch_size=3, input_length=L, target_length=L, num_samples_to_log=100)
  return evaluation.EvalConfig(**(kwargs | overrides))


class _Oracle(models.EncoderDecoderModel):
  """Greedy 'decoding' returns the batch's targets: the outputs are the references."""

  def predict_batch(self, params, batch, rng, *, num_decodes=1, max_decode_length=None, **kw):
    tokens = batch['decoder_target_tokens'][:, None, :max_decode_length]
    return tokens, jnp.zeros(tokens.shape, jnp.float32)


@functools.partial(jax.jit, static_argnums=0)
def _reference(model, params, batch):
  """Greedy decodes [B, L] and the mean NLL of the targets, computed directly."""
  tokens, _ = model.predict_batch(params, batch, jax.random.key(0), temperature=0.0)
  log_probs = models.token_log_probs(model.logits(params, batch), batch['decoder_target_tokens'])
  weights = batch['decoder_loss_weights']
  return tokens[:, 0], -(log_probs * weights).sum() / weights.sum()


def test_metrics_of_the_greedy_outputs(setup):
  task, model, params, mesh = setup
  config = _config(task)
  got = policy_eval.evaluate_policy(model, params, mesh, config, progress=False)
  for key in ('loss', 'accuracy', 'bleu', 'chrf', 'bleu_signature', 'chrf_signature'):
    assert key in got, key
  for key in ('chrf_reward', 'repetition_rate', 'hacking_rate', 'hacking', 'length_ratio'):
    assert key in got, key
  assert 'reward' not in got and 'judge_reward' not in got
  assert got['num_examples'] == HELD_OUT == len(got['samples'])

  # The outputs are the model's greedy decodes of the split's sources, in order.
  (batch,) = tasks.get_dataset(
    task,
    'validation',
    input_length=L,
    target_length=L,
    batch_size=HELD_OUT,
    shuffle=False,
    seed=0,
    repeat=False,
    with_text=True,
  )
  tokens, loss = _reference(model, params, {k: v for k, v in batch.items() if v.dtype != object})
  vocab = tasks.get_vocabulary(task)
  outputs = [vocab.decode([int(t) for t in row]) for row in np.asarray(tokens)]
  refs = [str(t) for t in batch['targets_pretokenized']]
  assert [s['output'] for s in got['samples']] == outputs
  assert [s['reference'] for s in got['samples']] == refs
  assert [s['source'] for s in got['samples']] == [str(t) for t in batch['inputs_pretokenized']]
  # BLEU and chrF are sacrebleu's on those texts.
  assert got['bleu'] == pytest.approx(sacrebleu.corpus_bleu(outputs, [refs]).score)
  assert got['chrf'] == pytest.approx(sacrebleu.corpus_chrf(outputs, [refs]).score)
  # The loss is the token-weighted mean NLL of the references (teacher forcing).
  assert got['loss'] == pytest.approx(float(loss), rel=1e-4)
  assert 0.0 <= got['accuracy'] <= 1.0


def test_outputs_equal_to_the_references_score_100(setup):
  task, model, params, mesh = setup
  oracle = _Oracle(model.config)
  reward = reward_fns.SentenceChrF()
  got = policy_eval.evaluate_policy(
    oracle,
    params,
    mesh,
    _config(task, num_samples_to_log=2),
    reward=reward,
    judge=reward,
    progress=False,
  )
  assert got['bleu'] == pytest.approx(100.0)
  assert got['chrf'] == pytest.approx(100.0)
  assert got['length_ratio'] == pytest.approx(1.0)
  assert got['chrf_reward'] == pytest.approx(1.0)
  assert got['reward'] == got['judge_reward'] == pytest.approx(1.0)
  assert got['reward_std'] == pytest.approx(0.0)
  assert got['reward_source'] == got['judge_source']
  assert len(got['samples']) == 2
  for sample in got['samples']:
    assert sample['output'] == sample['reference'] and sample['reward'] == pytest.approx(1.0)


@pytest.mark.parametrize('max_examples', [1, 4, None])
def test_num_examples_follows_the_config(setup, max_examples):
  task, _, params, mesh = setup
  oracle = _Oracle(setup[1].config)
  config = _config(task, max_examples=max_examples, num_samples_to_log=3)
  got = policy_eval.evaluate_policy(oracle, params, mesh, config, progress=False)
  assert got['num_examples'] == (HELD_OUT if max_examples is None else max_examples)
  assert len(got['samples']) == min(3, got['num_examples'])


def test_check_vocab_size(setup):
  task = setup[0]
  size = tasks.get_vocabulary(task).vocab_size
  policy_eval.check_vocab_size(test_utils.tiny_config(vocab_size=size), task)
  policy_eval.check_vocab_size(test_utils.tiny_config(vocab_size=size + 28), task)
  with pytest.raises(errors.UserInputError) as e:
    policy_eval.check_vocab_size(test_utils.tiny_config(vocab_size=size - 1), task)
  message = str(e.value)
  assert f'vocab_size={size - 1}' in message
  assert 'evaluation_test_corpus' in message
  assert f'--gin.VOCAB_SIZE={size}' in message
