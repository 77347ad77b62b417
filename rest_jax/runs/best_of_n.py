"""The best-of-N run: sources, N samples each, their rewards, the best and the curve.

Sources come from a seqio split (the way Grow reads them) or a text file (one
source a line, with an optional aligned reference file). `run_best_of_n` is
`--run_mode=infer`'s pipeline (`infer.infer`): load, sample
(`reranking.sample_candidates`), score every candidate with the reward, pick.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from rest_jax import errors
from rest_jax.core import models, reranking
from rest_jax.data import grow_sources, vocabularies
from rest_jax.rewards import reward_fns
from rest_jax.runs import grow


def _file_sources(cfg: Any) -> tuple[list[np.ndarray], list[str], list[str] | None]:
  """`load_sources` from `cfg.input_file` (and `cfg.reference_file`), encoded with `vocab_path`."""
  vocab_path = cfg.vocab_path
  if vocab_path is None:
    raise errors.UserInputError('InferConfig.vocab_path is needed with input_file.')
  for path in (cfg.input_file, cfg.reference_file):
    if path is not None and not os.path.exists(path):
      raise errors.UserInputError(f'Infer: no such file {path!r}.')
  with open(cfg.input_file, encoding='utf-8') as f:
    texts = [line.rstrip('\n') for line in f][: cfg.max_sources]
  refs = None
  if cfg.reference_file is not None:
    with open(cfg.reference_file, encoding='utf-8') as f:
      refs = [line.rstrip('\n') for line in f][: len(texts)]
    if len(refs) != len(texts):
      raise errors.UserInputError(
        f'Infer: {cfg.reference_file} has {len(refs)} lines for {len(texts)} sources.'
      )
  if not texts:
    raise errors.UserInputError(f'Infer: {cfg.input_file} has no sources.')
  vocab = vocabularies.vocabulary_from_file(vocab_path)
  tokens = [np.asarray(vocab.encode(t)[: cfg.input_length - 1], np.int32) for t in texts]
  return tokens, texts, refs


def load_sources(cfg: Any) -> tuple[list[np.ndarray], list[str], list[str] | None]:
  """(token ids without EOS, texts, references or None) of the configured sources.

  Args:
    cfg: an `infer.InferConfig`: the sources come from `input_file` (with
      `reference_file`, `vocab_path`) when set, else from `task`'s `split`;
      at most `max_sources`, truncated to `input_length - 1` tokens.

  Returns:
    S token arrays [S_k] (no EOS, no padding), S source texts, and S
    references or None.

  Raises:
    errors.UserInputError: a missing vocabulary or file, misaligned references
      or no sources.
  """
  if cfg.input_file is not None:
    return _file_sources(cfg)
  src = grow_sources.load_sources(
    grow.GrowConfig(
      task=cfg.task,
      split=cfg.split,
      max_sources=cfg.max_sources,
      input_length=cfg.input_length,
      target_length=cfg.target_length,
    )
  )
  return src.tokens, src.texts, src.references


def run_best_of_n(
  model: models.EncoderDecoderModel,
  params: Any,
  mesh,
  cfg: Any,
  reward: reward_fns.RewardFn,
  *,
  vocab,
  progress: bool = True,
) -> tuple[dict, list[dict]]:
  """Samples, scores and picks; returns (the curve, one record per source).

  Args:
    model: the policy.
    params: its (sharded) parameters.
    mesh: device mesh.
    cfg: an `infer.InferConfig`: the sources, N, sampling and the curve's n
      values (those <= N; none left: N alone).
    reward: the reranker; scores the [S * N] candidates at once.
    vocab: decodes token ids (`.decode(list[int])`).
    progress: progress bar.

  Returns:
    The `reranking.curve` dict, and S records with `source`, `output` (the best
    of the N), its `reward`, `reference` (when there are references) and
    `candidate_rewards` (the N rewards, rounded to 6 places).
  """
  tokens, texts, refs = load_sources(cfg)
  cands = reranking.sample_candidates(model, params, mesh, tokens, cfg, vocab, progress=progress)
  n = cfg.num_samples
  flat = reward(
    [t for t in texts for _ in range(n)],
    [c for row in cands for c in row],
    None if refs is None else [r for r in refs for _ in range(n)],
  ).reward
  scores = flat.reshape(len(texts), n)
  ns = [k for k in cfg.curve_ns if k <= n] or [n]
  result = reranking.curve(scores, cands, refs, ns)
  pick = reranking.best_of_n(scores, n)
  records = [
    {
      'source': texts[s],
      'output': cands[s][k],
      'reward': float(scores[s, k]),
      **({} if refs is None else {'reference': refs[s]}),
      'candidate_rewards': [round(float(x), 6) for x in scores[s]],
    }
    for s, k in enumerate(pick)
  ]
  return result, records
