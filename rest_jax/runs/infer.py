"""`--run_mode=infer`: best-of-N translation, and the reward-against-N curve.

For each source, the policy samples N candidates (one compiled call per batch of
`sampler.Sampler`, the sampler Grow uses); a reward source (the learned reward
model, or a metric) scores them, and the best one is the output [PAPER §4
"Best-of-N"]. Sources
come from a seqio split (`task`, `split`) or a text file (`input_file`, one
source a line, with an optional aligned `reference_file`).

Outputs, under `MODEL_DIR/infer/<name>.{tsv,jsonl}`: the chosen output and its
reward per source (the JSONL adds every candidate's reward). The curve, mean
reward (and corpus BLEU / chrF when there are references) of best-of-n for n in
`curve_ns`, comes from the same N samples: best-of-n takes the first n of them,
so the curve is one draw, non-decreasing in reward; it is written to
`MODEL_DIR/eval/best_of_n_<name>.json`, which the run report plots.

Batch b samples with `fold_in(key(seed), b)`, so best-of-1 is exactly what plain
sampling with that key gives.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import tqdm
from absl import logging

from rest_jax import errors
from rest_jax.core import checkpoints, files, metrics, models, multihost, network, partitioning
from rest_jax.core import model_dir as model_dir_lib
from rest_jax.core import sampler as sampler_lib
from rest_jax.data import tasks, vocabularies
from rest_jax.rewards import reward_fns
from rest_jax.runs import grow

DEFAULT_NS = (1, 2, 4, 8, 16, 32, 64)


@dataclasses.dataclass(frozen=True)
class InferConfig:
  """Where the sources come from and how to sample them."""

  task: Any = None  # seqio task / ParallelCorpus giving the sources (and references).
  split: str = 'validation'  # Split of `task`.
  input_file: str | None = None  # Or: a text file of sources, one a line.
  reference_file: str | None = None  # Optional references aligned with `input_file`.
  vocab_path: str | None = None  # SentencePiece model for `input_file` (default: task's).
  max_sources: int | None = None  # First N sources (None: all).
  num_samples: int = 64  # N candidates per source (the largest n of the curve).
  temperature: float = 0.8  # Sampling temperature.
  topk: int = 0  # Top-k filter, 0 = off.
  topp: float = 1.0  # Nucleus filter, 1.0 = off.
  batch_size: int = 32  # Sources per sampler call.
  input_length: int = 32  # Encoder length S.
  target_length: int = 32  # Decode length T.
  curve_ns: Sequence[int] = DEFAULT_NS  # n values of the curve (those <= num_samples are used).
  seed: int = 0  # Sampling seed.

  def __post_init__(self):
    if (self.task is None) == (self.input_file is None):
      raise errors.UserInputError('InferConfig: give exactly one of task or input_file.')
    if self.num_samples < 1 or self.batch_size < 1:
      raise errors.UserInputError('InferConfig: num_samples and batch_size must be >= 1.')


def best_of_n(scores: np.ndarray, n: int) -> np.ndarray:
  """Index [S] of the best of the first `n` candidates of each source (ties: the first).

  Args:
    scores: [S, N] rewards.
    n: 1 <= n <= N.
  """
  scores = np.asarray(scores)
  if not 1 <= n <= scores.shape[1]:
    raise ValueError(f'best_of_n: n={n} must be in [1, {scores.shape[1]}].')
  return np.argmax(scores[:, :n], axis=1)


def curve(
  scores: np.ndarray,
  candidates: Sequence[Sequence[str]],
  references: Sequence[str] | None,
  ns: Sequence[int],
) -> dict:
  """Mean reward (and BLEU / chrF) of best-of-n for each n.

  Args:
    scores: [S, N] rewards of the candidates.
    candidates: S lists of N candidate texts.
    references: S references, or None.
    ns: the n values (each in [1, N]).

  Returns:
    {'n': [...], 'reward': [...], 'bleu': [...], 'chrf': [...]} (BLEU / chrF
    lists are empty without references).
  """
  out = {'n': [], 'reward': [], 'bleu': [], 'chrf': []}
  for n in ns:
    pick = best_of_n(scores, n)
    out['n'].append(int(n))
    out['reward'].append(float(scores[np.arange(len(pick)), pick].mean()))
    if references is not None:
      chosen = [candidates[s][k] for s, k in enumerate(pick)]
      m = metrics.corpus_bleu_chrf(chosen, references)
      out['bleu'].append(m['bleu'])
      out['chrf'].append(m['chrf'])
  return out


def _file_sources(cfg: InferConfig) -> tuple[list[np.ndarray], list[str], list[str] | None]:
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


def load_sources(cfg: InferConfig) -> tuple[list[np.ndarray], list[str], list[str] | None]:
  """(token ids without EOS, texts, references or None) of the configured sources."""
  if cfg.input_file is not None:
    return _file_sources(cfg)
  src = grow.load_sources(
    grow.GrowConfig(
      task=cfg.task,
      split=cfg.split,
      max_sources=cfg.max_sources,
      input_length=cfg.input_length,
      target_length=cfg.target_length,
    )
  )
  return src.tokens, src.texts, src.references


def sample_candidates(
  model: models.EncoderDecoderModel,
  params: Any,
  mesh,
  tokens: Sequence[np.ndarray],
  cfg: InferConfig,
  vocab,
  *,
  progress: bool = True,
) -> list[list[str]]:
  """N sampled candidate texts for each source.

  Args:
    model: the policy.
    params: its (sharded) parameters.
    mesh: device mesh.
    tokens: S source token arrays (no EOS).
    cfg: sampling settings; batch b uses `fold_in(key(cfg.seed), b)`.
    vocab: decodes token ids (`.decode(list[int])`).
    progress: progress bar.

  Returns:
    S lists of N texts.
  """
  sampler = sampler_lib.Sampler(
    model,
    params,
    mesh,
    num_samples=cfg.num_samples,
    max_length=cfg.target_length,
    temperature=cfg.temperature,
    topk=cfg.topk,
    topp=cfg.topp,
  )
  rows = -(-cfg.batch_size // partitioning.num_batch_shards(mesh)) * partitioning.num_batch_shards(
    mesh
  )
  key = jax.random.key(cfg.seed)
  out: list[list[str]] = []
  starts = range(0, len(tokens), rows)
  for b, start in enumerate(
    tqdm.tqdm(starts, desc='infer', disable=multihost.bar_disable(progress))
  ):
    chunk = tokens[start : start + rows]
    enc = sampler_lib.pad_rows(chunk, rows, cfg.input_length, eos=True)
    sampled, _ = sampler.sample(enc, jax.random.fold_in(key, b))
    for row in sampled[: len(chunk)]:
      out.append(
        [vocab.decode([int(t) for t in sampler_lib.strip(c, model.config.eos_id)]) for c in row]
      )
  return out


def _write_lines(path: str, lines: Sequence[str]) -> None:
  files.write_text(path, ''.join(lines))  # Atomic, process 0 only.


def run_best_of_n(
  model: models.EncoderDecoderModel,
  params: Any,
  mesh,
  cfg: InferConfig,
  reward: reward_fns.RewardFn,
  *,
  vocab,
  progress: bool = True,
) -> tuple[dict, list[dict]]:
  """Samples, scores and picks; returns (the curve, one record per source)."""
  tokens, texts, refs = load_sources(cfg)
  cands = sample_candidates(model, params, mesh, tokens, cfg, vocab, progress=progress)
  n = cfg.num_samples
  flat = reward(
    [t for t in texts for _ in range(n)],
    [c for row in cands for c in row],
    None if refs is None else [r for r in refs for _ in range(n)],
  ).reward
  scores = flat.reshape(len(texts), n)
  ns = [k for k in cfg.curve_ns if k <= n] or [n]
  result = curve(scores, cands, refs, ns)
  pick = best_of_n(scores, n)
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


def infer(
  *,
  model_dir: str,
  model_config: network.T5Config,
  infer_config: InferConfig,
  reward: reward_fns.RewardFn,
  checkpoint: str = 'bc/best',
  name: str = 'infer',
  mesh_config: partitioning.MeshConfig = partitioning.MeshConfig(),
  progress: bool = True,
) -> dict | None:
  """Best-of-N outputs of a policy checkpoint, and the reward-against-N curve.

  Args:
    model_dir: run directory (outputs go to `infer/` and `eval/`).
    model_config: the policy network (must match the checkpoint).
    infer_config: sources, N, sampling and the curve's n values.
    reward: the reranker (e.g. the learned reward model, or a metric when
      there are references).
    checkpoint: policy checkpoint directory, relative to `MODEL_DIR/checkpoints`
      ('bc/best', 'g2_i3/best', ...) or absolute.
    name: output file stem (`infer/<name>.tsv`, `eval/best_of_n_<name>.json`).
    mesh_config: device mesh.
    progress: progress bar.

  Returns:
    The curve dict written to `eval/best_of_n_<name>.json`.
  """
  cfg = infer_config
  mesh = partitioning.make_mesh(mesh_config)
  model = models.EncoderDecoderModel(model_config)
  directory = model_dir_lib.ModelDir(model_dir).checkpoint(checkpoint)
  params, step = checkpoints.restore_params(
    directory, model.init_params_fn(cfg.input_length, cfg.target_length), mesh
  )
  if cfg.task is not None:
    vocab = tasks.get_vocabulary(cfg.task)
  else:
    vocab = vocabularies.vocabulary_from_file(cfg.vocab_path)
  result, records = run_best_of_n(model, params, mesh, cfg, reward, vocab=vocab, progress=progress)
  result.update(
    label=name,
    checkpoint=directory,
    step=int(step),
    num_sources=len(records),
    num_samples=cfg.num_samples,
    reward_source=getattr(reward, 'name', type(reward).__name__),
  )
  out = model_dir_lib.ModelDir(model_dir).path('infer', name)
  _write_lines(
    out + '.tsv',
    ['source\toutput\treward\n']
    + [
      f'{r["source"].replace(chr(9), " ")}\t{r["output"].replace(chr(9), " ")}\t{r["reward"]:.6f}\n'
      for r in records
    ],
  )
  _write_lines(out + '.jsonl', [json.dumps(r, ensure_ascii=False) + '\n' for r in records])
  files.write_json(model_dir_lib.ModelDir(model_dir).eval(f'best_of_n_{name}.json'), result)
  logging.info('best-of-N %s: %s', name, result)
  print(
    'best-of-n  ' + '  '.join(f'n={n}: {r:.4f}' for n, r in zip(result['n'], result['reward'])),
    flush=True,
  )
  return result
