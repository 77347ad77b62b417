"""The reward model's data from a corpus and WMT MQM, and its training stream (TF, seqio).

`train_rm.train_rm` (through `rm_judgments.build`) calls these, with its
`train_rm.JudgmentsConfig` as `cfg`:

- `train_source_slice`: the train-split sources the judgments use. By default
  the LAST `num_train_sources` sources, so disjoint from the first
  `MAX_SOURCES` sources Grow samples.
- `synthetic`: the references themselves (label 1) and corrupted references
  (dropped, swapped or repeated words, truncation, the copied source, empty
  output, another sentence, the whole reference repeated, the reference
  followed by other words), labelled by rule (`corruptions.rule_label`: chrF
  times a penalty per kind, 0 for the copied source, empty output and another
  sentence) or, with labels='chrf', by chrF alone.
- `mqm`: human MQM judgments for English-German (WMT TED, read from
  `../shared/data/wmt-mqm/`), their documents split so that held-out documents
  are never trained on.
- `register`: the judgments as seqio tasks and their mixture.
- `train_batches`: the batches the reward model trains on from a step on, for
  either loss (the seqio mixture for regression, preference pairs built in
  memory for Bradley-Terry).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from absl import logging

from rest_jax import errors
from rest_jax.data import judgment_tasks, judgments, tasks
from rest_jax.rewards import rm_batches


def _corpus(task: Any) -> tasks.ParallelCorpus:
  if not isinstance(task, tasks.ParallelCorpus):
    raise errors.DataError('JudgmentsConfig.task must be a tasks.ParallelCorpus (e.g. Tatoeba).')
  return task


def source_pairs(task: Any, split: str, limit: int, first: int = 0) -> list[tuple[str, str]]:
  """(source, reference) pairs [first, first + limit) of a split of a corpus.

  Args:
    task: a `tasks.ParallelCorpus`.
    split: 'train', 'validation' or 'test'.
    limit: how many pairs at most.
    first: the index of the first pair.

  Returns:
    The pairs, in the split's order.

  Raises:
    DataError: `task` is not a ParallelCorpus.
  """
  return _corpus(task).splits()[split][first : first + limit]


def train_source_slice(cfg: Any) -> tuple[int, int]:
  """The train-split sources the judgments use: (first, count).

  Args:
    cfg: a `train_rm.JudgmentsConfig` (`task`, `first_train_source`,
      `num_train_sources`).

  Returns:
    (first, count): sources [first, first + count) of the train split,
    count = min(num_train_sources, size - first). first_train_source None: the
    last min(num_train_sources, size) sources; negative: size + first_train_source.

  Raises:
    DataError: the task is not a ParallelCorpus, num_train_sources < 1, or the
      slice starts outside the train split.
  """
  size = len(_corpus(cfg.task).splits()['train'])
  if cfg.num_train_sources < 1:
    raise errors.DataError(
      f'JudgmentsConfig.num_train_sources={cfg.num_train_sources} must be >= 1.'
    )
  if cfg.first_train_source is None:
    first = max(0, size - cfg.num_train_sources)
  else:
    first = cfg.first_train_source + (size if cfg.first_train_source < 0 else 0)
    if not 0 <= first < size:
      raise errors.DataError(
        f'JudgmentsConfig.first_train_source={cfg.first_train_source} is outside the train '
        f'split of {size} sources; use -{size} to {size - 1}, or None for the last '
        'num_train_sources.'
      )
  return first, min(cfg.num_train_sources, size - first)


def synthetic(cfg: Any, split: str, limit: int, first: int = 0) -> list[judgments.Judgment]:
  """References and corrupted references of a split, labelled by `cfg.labels`.

  Args:
    cfg: a `train_rm.JudgmentsConfig` (`task`, `corruptions_per_pair`, `seed`,
      `labels`).
    split: the split of `cfg.task` the pairs come from.
    limit: how many (source, reference) pairs at most.
    first: the index of the first pair.

  Returns:
    `judgments.synthetic_judgments` of the pairs, each with `doc` set to
    '<split>:<source>' where it had none, so pairwise accuracy compares the
    candidates of one source.
  """
  js = judgments.synthetic_judgments(
    source_pairs(cfg.task, split, limit, first),
    corruptions_per_pair=cfg.corruptions_per_pair,
    seed=cfg.seed,
    labels=cfg.labels,
  )
  # Group by source so pairwise accuracy compares candidates of one source.
  return [dataclasses.replace(j, doc=j.doc or f'{split}:{j.source}') for j in js]


def mqm(cfg: Any) -> tuple[list[judgments.Judgment], list[judgments.Judgment]]:
  """WMT MQM en-de judgments split by document: (train, held out).

  Args:
    cfg: a `train_rm.JudgmentsConfig` (`use_mqm`, `mqm_path`,
      `mqm_eval_fraction`, `seed`).

  Returns:
    ([], []) with use_mqm off or without the data (logged as a warning); else
    `judgments.split_by_document` of `judgments.load_mqm_ende(cfg.mqm_path)`.
  """
  if not cfg.use_mqm:
    return [], []
  try:
    mqm_js = judgments.load_mqm_ende(cfg.mqm_path)
  except errors.DataError as e:
    logging.warning('No MQM judgments: %s', e)
    return [], []
  return judgments.split_by_document(mqm_js, eval_fraction=cfg.mqm_eval_fraction, seed=cfg.seed)


def register(
  cfg: Any,
  vocab_path: str,
  max_length: int,
  synth_train: Sequence[judgments.Judgment],
  mqm_train: Sequence[judgments.Judgment],
  eval_sets: dict[str, list[judgments.Judgment]],
  prefix: str = 'rm',
) -> str:
  """The judgments as seqio tasks and their mixture (rates proportional to size).

  Args:
    cfg: a `train_rm.JudgmentsConfig` (`mqm_rate_multiplier`).
    vocab_path: the SentencePiece model the tasks encode with.
    max_length: L, the reward model's input length.
    synth_train: the synthetic (and policy-sample) train judgments.
    mqm_train: the MQM train judgments ([]: no MQM task).
    eval_sets: 'synthetic_validation' and 'mqm_ende_heldout_docs', the
      validation splits of the two tasks.
    prefix: the tasks are '<prefix>_synthetic' and '<prefix>_mqm_ende'.

  Returns:
    The mixture's name, '<prefix>_judgments'.
  """
  names = [
    judgment_tasks.register_judgments_task(
      f'{prefix}_synthetic',
      {'train': synth_train, 'validation': eval_sets['synthetic_validation']},
      vocab_path,
      max_length,
    )
  ]
  rates = [float(len(synth_train))]
  if mqm_train:
    names.append(
      judgment_tasks.register_judgments_task(
        f'{prefix}_mqm_ende',
        {'train': mqm_train, 'validation': eval_sets['mqm_ende_heldout_docs']},
        vocab_path,
        max_length,
      )
    )
    rates.append(len(mqm_train) * cfg.mqm_rate_multiplier)
  return judgment_tasks.register_judgments_mixture(f'{prefix}_judgments', names, rates)


def train_batches(
  loss: str,
  train_js: Sequence[judgments.Judgment],
  mixture: str,
  sp: Any,
  max_length: int,
  batch_size: int,
  seed: int,
) -> Callable[[int], Iterator[dict[str, np.ndarray]]]:
  """The reward model's training batches from a step on (for `train_loop.run`).

  Args:
    loss: 'bradley_terry': preference pairs within a source, built in memory
      from `train_js` (`rm_batches.bt_pairs`, `rm_batches.batch_at`); else the
      seqio mixture `mixture`, shuffled and repeated.
    train_js: the train judgments.
    mixture: the judgments mixture (`register`).
    sp: the `sentencepiece.SentencePieceProcessor` of the judgments' vocabulary.
    max_length: L, the reward model's input length.
    batch_size: B, rows (or pairs) per batch.
    seed: the data-order seed.

  Returns:
    `batches(start)`: an iterator of the batches of steps start, start + 1, ...:
    'inputs_a', 'inputs_b' [B, L] int32 and 'preference' [B] float32 for
    Bradley-Terry; 'inputs' [B, L] int32 and 'score' [B] float32 for
    regression (a resumed start replays the data order to it).
  """

  def batches(start: int):
    if loss == 'bradley_terry':  # Preference pairs within a source, built in memory.
      pairs = rm_batches.bt_pairs(
        rm_batches.encode(sp, train_js, max_length),
        [j.doc or j.source for j in train_js],
        np.random.RandomState(seed),
      )
      return (rm_batches.batch_at(pairs, s, batch_size, seed) for s in itertools.count(start))
    stream = judgment_tasks.get_batches(  # Regression: the seqio mixture of the judgment tasks.
      mixture,
      'train',
      batch_size=batch_size,
      max_length=max_length,
      shuffle=True,
      seed=seed,
      repeat=True,
    )
    for _ in range(start):  # Exact resume: replay the data order.
      next(stream)
    return ({'inputs': b['inputs'], 'score': b['score']} for b in stream)

  return batches
