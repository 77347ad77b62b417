"""The judgments a reward model trains and is evaluated on (`train_rm.JudgmentsConfig`).

`build` checks the settings and the vocabulary, then gathers, from a slice of
the task's train split (`rm_data.train_source_slice`):

- policy samples from the BC checkpoint, as a Grow round `grow/g0`, each
  labelled with sentence chrF against the reference (with labels='rules', a
  sample that repeats a word 3-gram or is over 1.5x the reference's length has
  it multiplied by a penalty: `corruptions.guard_policy_label`);
- the references and corrupted references (`rm_data.synthetic`);
- WMT MQM en-de judgments, split by document (`rm_data.mqm`);

and registers them as seqio tasks and their mixture (`rm_data.register`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import sentencepiece as spm
from absl import logging

from rest_jax import errors
from rest_jax.core import model_dir as model_dir_lib
from rest_jax.core import network
from rest_jax.data import grow_io, judgments, rm_data, tasks
from rest_jax.rewards import corruptions, reward_fns, reward_model
from rest_jax.runs import grow

# The settings of a policy-sample round that must match the reward model's.
_G0_KEYS = ('first_source', 'max_sources', 'input_length', 'target_length')


@dataclasses.dataclass(frozen=True)
class RMJudgments:
  """A reward model's judgments, their vocabulary and where they came from."""

  sp: spm.SentencePieceProcessor  # The task's vocabulary.
  first: int  # The train sources are [first, first + count) of the train split.
  count: int
  g0_dir: str  # The policy-sample round.
  train: list[judgments.Judgment]  # Synthetic, policy samples, then MQM.
  mqm_train: list[judgments.Judgment]
  eval_sets: dict[str, list[judgments.Judgment]]  # Held-out sets by name.
  mixture: str  # The seqio mixture of the train judgments.

  def record(self, policy_samples_per_source: int) -> dict[str, Any]:
    """What the eval JSON records about the judgments.

    Args:
      policy_samples_per_source: `JudgmentsConfig.policy_samples_per_source`
        (0: no policy-sample round).

    Returns:
      'train_sources', 'policy_samples_dir', 'num_train_judgments',
      'num_mqm_train' and 'num_eval' (per held-out set).
    """
    return dict(
      train_sources={'split': 'train', 'first': self.first, 'count': self.count},
      policy_samples_dir=self.g0_dir if policy_samples_per_source > 0 else None,
      num_train_judgments=len(self.train),
      num_mqm_train=len(self.mqm_train),
      num_eval={k: len(v) for k, v in self.eval_sets.items()},
    )


def build(
  model_dir: str,
  policy_config: network.T5Config,
  cfg: Any,
  rm_config: reward_model.RewardModelConfig,
  name: str,
) -> RMJudgments:
  """Checks the settings, then builds and registers the judgments.

  Args:
    model_dir: run directory (holds the BC checkpoint the policy samples use).
    policy_config: the BC policy's network.
    cfg: a `train_rm.JudgmentsConfig`.
    rm_config: the reward model (its vocabulary size and input length).
    name: the reward model's name: the samples go to `grow/g0` for 'rm',
      `grow/<name>_g0` otherwise; its seqio tasks are prefixed with it.

  Returns:
    The judgments: train = synthetic train + policy samples + MQM train;
    eval_sets 'synthetic_validation' (`num_eval_sources` validation sources)
    and 'mqm_ende_heldout_docs' (held-out MQM MT outputs).

  Raises:
    DataError: unusable labels, train slice or vocabulary size.
  """
  if cfg.labels not in judgments.LABELS:
    raise errors.DataError(f'JudgmentsConfig.labels={cfg.labels!r}; use one of {judgments.LABELS}.')
  first, count = rm_data.train_source_slice(cfg)
  g0_dir = model_dir_lib.ModelDir(model_dir).grow('g0' if name == 'rm' else f'{name}_g0')
  vocab_path = tasks.get_vocabulary(cfg.task).sentencepiece_model_file
  sp = spm.SentencePieceProcessor(model_file=vocab_path)
  if rm_config.encoder.vocab_size < sp.vocab_size():
    raise errors.DataError(
      f'Reward model vocab_size={rm_config.encoder.vocab_size} < {sp.vocab_size()} pieces of '
      f'{vocab_path}; set --gin.VOCAB_SIZE={sp.vocab_size()}.'
    )
  tic = time.time()
  synth_train = rm_data.synthetic(cfg, 'train', count, first)
  synth_train += policy_judgments(model_dir, policy_config, cfg, g0_dir)
  mqm_train, mqm_eval = rm_data.mqm(cfg)
  eval_sets = {
    'synthetic_validation': rm_data.synthetic(cfg, 'validation', cfg.num_eval_sources),
    # MT outputs only, as in the WMT metrics task (reference rows have no reference).
    'mqm_ende_heldout_docs': [j for j in mqm_eval if j.reference],
  }
  train_js = synth_train + mqm_train
  mixture = rm_data.register(
    cfg, vocab_path, rm_config.max_length, synth_train, mqm_train, eval_sets, prefix=name
  )
  logging.info('RM data: %d train judgments in %.1fs', len(train_js), time.time() - tic)
  return RMJudgments(sp, first, count, g0_dir, train_js, mqm_train, eval_sets, mixture)


def policy_judgments(
  model_dir: str, policy_config: network.T5Config, cfg: Any, out_dir: str
) -> list[judgments.Judgment]:
  """BC samples of the train slice as a Grow round in `out_dir`, labelled with chrF.

  With labels='rules' a hacked sample's label is penalised (`corruptions.guard_policy_label`).

  Args:
    model_dir: run directory (holds `cfg.policy_checkpoint`).
    policy_config: the BC policy's network.
    cfg: a `train_rm.JudgmentsConfig`.
    out_dir: the round's directory; a finished round there is reused.

  Returns:
    One judgment per sample (origin 'synthetic:policy', doc 'src<source id>');
    [] with `policy_samples_per_source` <= 0.

  Raises:
    DataError: `out_dir` holds a round of another slice or other lengths.
  """
  if cfg.policy_samples_per_source <= 0:
    return []
  first, count = rm_data.train_source_slice(cfg)
  grow_cfg = grow.GrowConfig(
    task=cfg.task,
    first_source=first,
    max_sources=count,
    sources_per_shard=500,
    batch_size=32,
    input_length=cfg.input_length,
    target_length=cfg.target_length,
    human_fraction=0.0,
    seed=cfg.seed,
  )
  manifest = grow.grow(
    model_dir=model_dir,
    model_config=policy_config,
    grow_config=grow_cfg,
    sampling=grow.SamplingConfig(num_samples=cfg.policy_samples_per_source, temperature=1.0),
    reward=reward_fns.SentenceChrF(),
    grow_round=0,
    policy_checkpoint=cfg.policy_checkpoint,
    out_dir=out_dir,
  )
  recorded = manifest.get('grow_config', {})
  wanted = {k: getattr(grow_cfg, k) for k in _G0_KEYS}
  got = {k: recorded.get(k, 0 if k == 'first_source' else None) for k in _G0_KEYS}
  if got != wanted:  # A finished round of another configuration is reused by grow.grow.
    raise errors.DataError(
      f'{out_dir} holds policy samples of {got}, but this reward model needs {wanted}. '
      'Delete that directory (it is re-sampled), or set first_train_source / '
      'num_train_sources / the lengths to match it.'
    )
  rec = grow_io.read_records(out_dir)
  guard = cfg.labels == 'rules'
  return [
    judgments.Judgment(
      source=s,
      candidate=c,
      score=corruptions.guard_policy_label(c, ref, float(r)) if guard else float(r),
      raw_score=float(raw),
      reference=ref,
      doc=f'src{sid}',
      origin='synthetic:policy',
    )
    for s, c, r, raw, ref, sid in zip(
      rec['inputs_pretokenized'],
      rec['targets_pretokenized'],
      rec['reward'],
      rec['raw_reward'],
      rec['reference'],
      rec['source_id'],
    )
  ]
