"""Policy evaluation on a split: validation loss, greedy decoding, BLEU / chrF.

`evaluate_policy` is shared by the BC loop (periodic validation), Improve,
Grow, the ReST phases, the shipped policies and `--run_mode=eval`
(`evaluation.evaluate`). `check_vocab_size` is the drivers' check that a model
can embed its task's vocabulary.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import jax
import numpy as np
import tqdm

from rest_jax import errors
from rest_jax.core import metrics, models, multihost, network, partitioning, trainer
from rest_jax.data import tasks
from rest_jax.rewards import reward_fns as rewards_lib


def _decode_texts(vocab, tokens: np.ndarray) -> list[str]:
  """Detokenizes [N, L] token rows (stops at EOS)."""
  return [vocab.decode([int(t) for t in row]) for row in tokens]


def evaluate_policy(
  model: models.EncoderDecoderModel,
  params: Any,
  mesh,
  config: Any,
  *,
  reward: rewards_lib.RewardFn | None = None,
  judge: rewards_lib.RewardFn | None = None,
  progress: bool = True,
  return_outputs: bool = False,
) -> dict:
  """Loss, token accuracy, greedy BLEU / chrF (and reward) of `params` on a split.

  Args:
    model: the policy.
    params: unboxed (sharded) parameters.
    mesh: device mesh.
    config: the split and sizes, an `evaluation.EvalConfig` (hashable: its
      batches are cached per config).
    reward: optional reward source; scores every greedy output.
    judge: optional second reward source the policy was not trained or
      selected on (an independent judge); scores the same outputs.
    progress: show a progress bar.
    return_outputs: also return the N greedy outputs and references
      (`outputs`, `references`: lists of N strings, in split order).

  Returns:
    dict: `loss`, `accuracy`, `bleu`, `chrf`, sacrebleu signatures,
    `num_examples`, `length_ratio`, `seconds`, a few `samples`, the metric
    reward `chrf_reward` (mean sentence chrF / 100), `repetition_rate` and
    `hacking_rate` (the fraction of outputs that show any reward-hacking
    probe's pattern, `metrics.hacking_flags`; each pattern's rate in
    `hacking`); with a reward, also `reward` (mean normalized reward of the
    outputs, [0, 1]), `reward_std` and `reward_source`; with a judge, the same
    as `judge_reward`, `judge_reward_std`, `judge_source`; with a reward and
    `config.pass_k` = k > 0, `pass_at_k` and `pass_k` (and `majority_at_k` when
    the reward has a `vote` method), see `_pass_at_k`.
  """
  start = time.time()
  vocab = tasks.get_vocabulary(config.task)
  loss_fn = functools.partial(_eval_metrics, model)
  predict = _greedy_fn(model, config.target_length)
  sample = None
  if config.pass_k > 0 and reward is not None:
    sample = _sample_fn(
      model, config.target_length, config.pass_k, config.pass_temperature, config.pass_topk
    )
  data = _eval_batches(config)
  sums = {'nll_sum': 0.0, 'correct': 0.0, 'num_tokens': 0.0}
  hyps, refs, srcs, drawn = [], [], [], []
  # Pad every batch to a multiple of the mesh's batch shards (padding rows are
  # masked out of the loss and dropped from the outputs).
  shards = partitioning.num_batch_shards(mesh)
  rows = -(-config.batch_size // shards) * shards
  with partitioning.axis_rules(mesh):
    bar = tqdm.tqdm(
      data, desc=f'eval {config.split}', disable=multihost.bar_disable(progress), leave=False
    )
    for batch in bar:
      n = len(batch['decoder_target_tokens'])
      padded = trainer.zeros_like_batch(batch, rows)
      device_batch = partitioning.shard_batch(padded, mesh)
      m = trainer.to_host(loss_fn(params, device_batch))
      for k in sums:
        sums[k] += float(m[k])
      tokens = multihost.host_array(predict(params, device_batch))[:n]
      hyps += _decode_texts(vocab, tokens)
      if sample is not None:  # [n, k, T]; the key depends on the batch's place only.
        rng = jax.random.fold_in(jax.random.key(config.pass_k), len(drawn))
        rows_k = multihost.host_array(sample(params, device_batch, rng))[:n]
        drawn += [_decode_texts(vocab, row) for row in rows_k]
      refs += [str(t) for t in batch['targets_pretokenized'][:n]]
      srcs += [str(t) for t in batch['inputs_pretokenized'][:n]]
  if not hyps:
    raise ValueError(f'Split {config.split!r} of {config.task} is empty.')
  result = metrics.corpus_bleu_chrf(hyps, refs)
  scores = None
  if reward is not None:
    scores = reward(srcs, hyps, refs).reward
    result.update(
      reward=float(np.mean(scores)),
      reward_std=float(np.std(scores)),
      reward_source=getattr(reward, 'name', type(reward).__name__),
    )
  if drawn:
    result.update(_pass_at_k(reward, srcs, refs, drawn))
  if judge is not None:
    judged = judge(srcs, hyps, refs).reward
    result.update(
      judge_reward=float(np.mean(judged)),
      judge_reward_std=float(np.std(judged)),
      judge_source=getattr(judge, 'name', type(judge).__name__),
    )
  flags = metrics.hacking_flags(srcs, hyps, refs)
  result.update(
    chrf_reward=float(np.mean(rewards_lib.SentenceChrF()(srcs, hyps, refs).reward)),
    repetition_rate=float(flags['repetition'].mean()),
    hacking_rate=float(flags['any'].mean()),
    hacking={k: float(v.mean()) for k, v in flags.items() if k != 'any'},
  )
  ntok = max(sums['num_tokens'], 1.0)
  ref_len = sum(len(r.split()) for r in refs)
  result.update(
    loss=sums['nll_sum'] / ntok,
    accuracy=sums['correct'] / ntok,
    num_examples=len(hyps),
    length_ratio=sum(len(h.split()) for h in hyps) / max(ref_len, 1),
    seconds=time.time() - start,
    samples=[
      {'source': s, 'reference': r, 'output': h}
      | ({} if scores is None else {'reward': float(scores[j])})
      for j, (s, r, h) in enumerate(list(zip(srcs, refs, hyps))[: config.num_samples_to_log])
    ],
  )
  if return_outputs:
    result.update(outputs=hyps, references=refs)
  return result


def _pass_at_k(
  reward: rewards_lib.RewardFn, srcs: list[str], refs: list[str], drawn: list[list[str]]
) -> dict:
  """pass@k (and majority@k) of k samples per source.

  `pass_at_k`: the mean over sources of the best of the k samples' rewards;
  with a binary reward, the fraction of sources with a correct sample (the
  plain estimate from exactly k samples). `majority_at_k`, when the reward has
  `vote(candidates) -> index` (`verifiers.FinalAnswer`): the mean reward of
  the sample whose answer most of the k share (self-consistency).
  """
  k = len(drawn[0])
  flat = [c for row in drawn for c in row]
  scores = reward([s for s in srcs for _ in range(k)], flat, [r for r in refs for _ in range(k)])
  scores = scores.reward.reshape(len(srcs), k)
  out = {'pass_k': k, 'pass_at_k': float(scores.max(axis=1).mean())}
  if hasattr(reward, 'vote'):
    votes = [reward.vote(row) for row in drawn]
    out['majority_at_k'] = float(np.mean([scores[j, v] for j, v in enumerate(votes)]))
  return out


@functools.lru_cache(maxsize=8)
def _eval_batches(config: Any) -> tuple[dict[str, np.ndarray], ...]:
  """The host batches of an evaluation split, read once per process.

  Validation runs many times per run (every `eval_period` steps, every phase);
  building the seqio pipeline each time costs more than the small split
  itself, so its batches are kept (a 2,000-sentence split is about 1 MB).
  """
  return tuple(
    tasks.get_dataset(
      config.task,
      config.split,
      input_length=config.input_length,
      target_length=config.target_length,
      batch_size=config.batch_size,
      shuffle=False,
      seed=0,
      repeat=False,
      with_text=True,
      max_examples=config.max_examples,
    )
  )


@functools.partial(jax.jit, static_argnums=(0,))
def _eval_metrics(model, params, batch):
  """Summed token NLL, correct argmax tokens and target tokens of one [B, T] batch."""
  logits = model.logits(params, batch)
  targets = batch['decoder_target_tokens']
  weights = batch['decoder_loss_weights'].astype(np.float32)
  nll = -models.token_log_probs(logits, targets)
  correct = (logits.argmax(-1) == targets).astype(np.float32)
  return {
    'nll_sum': (nll * weights).sum(),
    'correct': (correct * weights).sum(),
    'num_tokens': weights.sum(),
  }


@functools.cache
def _greedy_fn(model, length):
  """A jitted greedy decoder: (params, batch) -> [B, length] tokens (one per model, length)."""

  def fn(params, batch):
    tokens, _ = model.predict_batch(
      params, batch, jax.random.key(0), num_decodes=1, max_decode_length=length, temperature=0.0
    )
    return tokens[:, 0]

  return jax.jit(fn)


@functools.cache
def _sample_fn(model, length, k, temperature, topk):
  """A jitted sampler: (params, batch, rng) -> [B, k, length] tokens."""

  def fn(params, batch, rng):
    tokens, _ = model.predict_batch(
      params,
      batch,
      rng,
      num_decodes=k,
      max_decode_length=length,
      temperature=temperature,
      topk=topk,
    )
    return tokens

  return jax.jit(fn)


def check_vocab_size(model_config: network.ModelConfig, task: Any) -> None:
  """Fails clearly when the model has fewer embeddings than the task's vocabulary.

  Args:
    model_config: the policy's network config.
    task: a seqio task name or `tasks.ParallelCorpus`.

  Raises:
    errors.UserInputError: names the sizes and the flag that fixes it.
  """
  size = tasks.get_vocabulary(task).vocab_size
  if model_config.vocab_size < size:
    raise errors.UserInputError(
      f'The model has vocab_size={model_config.vocab_size} but the vocabulary of task '
      f'{getattr(task, "name", task)!r} has '
      f'{size} pieces: set --gin.VOCAB_SIZE={size}.'
    )
