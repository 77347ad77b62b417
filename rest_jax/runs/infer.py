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
sampling with that key gives. The steps live in `best_of_n` (sources, scoring,
picking) and `core.reranking` (sampling, best-of-n, the curve, the files).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from absl import logging

from rest_jax import errors
from rest_jax.core import checkpoints, files, models, network, partitioning, reranking
from rest_jax.core import model_dir as model_dir_lib
from rest_jax.data import tasks, vocabularies
from rest_jax.rewards import reward_fns
from rest_jax.runs import best_of_n

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


def infer(
  *,
  model_dir: str,
  model_config: network.ModelConfig,
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
  model = models.make_model(model_config)
  directory = model_dir_lib.ModelDir(model_dir).checkpoint(checkpoint)
  params, step = checkpoints.restore_params(
    directory, model.init_params_fn(cfg.input_length, cfg.target_length), mesh
  )
  if cfg.task is not None:
    vocab = tasks.get_vocabulary(cfg.task)
  else:
    vocab = vocabularies.vocabulary_from_file(cfg.vocab_path)
  result, records = best_of_n.run_best_of_n(
    model, params, mesh, cfg, reward, vocab=vocab, progress=progress
  )
  result.update(
    label=name,
    checkpoint=directory,
    step=int(step),
    num_sources=len(records),
    num_samples=cfg.num_samples,
    reward_source=getattr(reward, 'name', type(reward).__name__),
  )
  out = model_dir_lib.ModelDir(model_dir).path('infer', name)
  reranking.write_records(out, records)
  files.write_json(model_dir_lib.ModelDir(model_dir).eval(f'best_of_n_{name}.json'), result)
  logging.info('best-of-N %s: %s', name, result)
  print(
    'best-of-n  ' + '  '.join(f'n={n}: {r:.4f}' for n, r in zip(result['n'], result['reward'])),
    flush=True,
  )
  return result
