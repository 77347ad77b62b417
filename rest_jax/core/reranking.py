"""Best-of-N reranking: N sampled candidates per source, the best by reward, the curve.

`sample_candidates` draws the N candidates of every source with
`sampler.Sampler` (batch b with `fold_in(key(seed), b)`); `best_of_n` picks the
best of the first n by reward and `curve` is the mean reward (and BLEU / chrF)
of best-of-n for several n, from the same N samples. `write_records` writes the
chosen outputs as TSV and JSONL. `--run_mode=infer` (`infer.infer`, which the
ReST phases also run) uses them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import tqdm

from rest_jax.core import files, metrics, models, multihost, partitioning
from rest_jax.core import sampler as sampler_lib


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


def sample_candidates(
  model: models.EncoderDecoderModel,
  params: Any,
  mesh,
  tokens: Sequence[np.ndarray],
  cfg: Any,
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
    cfg: sampling settings, an `infer.InferConfig` (num_samples, target_length,
      temperature, topk, topp, batch_size, input_length, seed); batch b uses
      `fold_in(key(cfg.seed), b)`.
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
    enc = sampler_lib.pad_rows(chunk, rows, cfg.input_length, eos=True, eos_id=model.config.eos_id)
    sampled, _ = sampler.sample(enc, jax.random.fold_in(key, b))
    for row in sampled[: len(chunk)]:
      out.append(
        [vocab.decode([int(t) for t in sampler_lib.strip(c, model.config.eos_id)]) for c in row]
      )
  return out


def _write_lines(path: str, lines: Sequence[str]) -> None:
  files.write_text(path, ''.join(lines))  # Atomic, process 0 only.


def write_records(stem: str, records: Sequence[dict]) -> None:
  """Writes the chosen outputs to `<stem>.tsv` (source, output, reward) and `<stem>.jsonl`.

  Args:
    stem: output path without extension.
    records: one dict per source with `source`, `output`, `reward` (and the
      JSONL keeps every key, e.g. `reference`, `candidate_rewards`).
  """
  _write_lines(
    stem + '.tsv',
    ['source\toutput\treward\n']
    + [
      f'{r["source"].replace(chr(9), " ")}\t{r["output"].replace(chr(9), " ")}\t{r["reward"]:.6f}\n'
      for r in records
    ],
  )
  _write_lines(stem + '.jsonl', [json.dumps(r, ensure_ascii=False) + '\n' for r in records])
