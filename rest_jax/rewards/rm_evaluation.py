"""Evaluating a trained reward model: held-out sets, baselines, probes; its JSON and table.

`evaluate` measures segment-level Kendall tau and Pearson, and pairwise
accuracy within a source, on each held-out set of judgments, for the model and
for two baselines measured beside it (candidate length, and sentence chrF
against the reference), and the reward-hacking probes: the score change under
repetition, permutation, truncation, the copied source, empty output and
over-length output. `write` records the result (TensorBoard scalars, the eval
JSON with NaN as null) and prints it as a table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from rest_jax.core import files, multihost, partitioning, summaries, trainer
from rest_jax.rewards import corruptions, reward_model, rm_batches, rm_metrics


def predict(
  config: reward_model.RewardModelConfig,
  params: Any,
  inputs: np.ndarray,
  mesh: jax.sharding.Mesh,
  batch_size: int,
) -> np.ndarray:
  """Rewards in [0, 1] for encoded pairs `inputs` [N, L] (padded batches).

  Args:
    config: the reward model.
    params: its parameters (sharded over `mesh`).
    inputs: [N, L] int32 encoded (source, candidate) pairs.
    mesh: the device mesh.
    batch_size: rows per scoring batch (the last one padded).

  Returns:
    [N] float32 rewards.
  """
  out = []
  with partitioning.axis_rules(mesh):
    for start in range(0, len(inputs), batch_size):
      chunk = inputs[start : start + batch_size]
      padded = trainer.zeros_like_batch({'inputs': chunk}, batch_size)
      batch = partitioning.shard_batch(padded, mesh)
      rewards = reward_model.jit_score(config)(params, batch['inputs'])[1]
      out.append(multihost.host_array(rewards)[: len(chunk)])
  return np.concatenate(out) if out else np.zeros((0,), np.float32)


def evaluate(
  config: reward_model.RewardModelConfig,
  params: Any,
  mesh: jax.sharding.Mesh,
  sp: Any,
  eval_sets: dict[str, Sequence[Any]],
  probe_pairs: Sequence[tuple[str, str]],
  batch_size: int,
) -> dict:
  """Metrics of the model and of the two baselines on each held-out set, and probes.

  Args:
    config: the reward model.
    params: its parameters (sharded over `mesh`).
    mesh: the device mesh.
    sp: a `sentencepiece.SentencePieceProcessor` of the judgments' vocabulary.
    eval_sets: name -> judgments (`judgments.Judgment`); empty sets are skipped.
      The first non-empty one gives the headline figures.
    probe_pairs: (source, reference) pairs the probes corrupt.
    batch_size: rows per scoring batch.

  Returns:
    {'sets': {name: {'model': summary, 'baselines': {'length': summary,
    'chrf': summary}}}, 'probes': `rm_metrics.probe_deltas`, and the first
    set's 'kendall_tau', 'pearson', 'pairwise_accuracy', 'baselines'}, a
    summary being `rm_metrics.summarize`'s.
  """
  result: dict[str, Any] = {'sets': {}}
  for name, js in eval_sets.items():
    if not js:
      continue
    data = rm_batches.encode(sp, js, config.max_length)
    gold, groups = data['score'], [j.doc for j in js]
    pred = predict(config, params, data['inputs'], mesh, batch_size)
    cands, refs = [j.candidate for j in js], [j.reference for j in js]
    result['sets'][name] = {
      'model': rm_metrics.summarize(pred, gold, groups),
      'baselines': {
        'length': rm_metrics.summarize(rm_metrics.length_baseline(cands), gold, groups),
        'chrf': rm_metrics.summarize(rm_metrics.chrf_baseline(cands, refs), gold, groups),
      },
    }
  sources, references = zip(*probe_pairs) if probe_pairs else ((), ())

  def score_fn(srcs, cands):
    inputs = reward_model.encode_pairs(sp, list(srcs), list(cands), config.max_length)
    return predict(config, params, inputs, mesh, batch_size)

  result['probes'] = rm_metrics.probe_deltas(
    score_fn, list(sources), list(references), corruptions.probe, corruptions.PROBES
  )
  # Headline figures (first set) in the keys the report reads.
  first = next(iter(result['sets'].values()))
  result.update(
    kendall_tau=first['model']['kendall_tau'],
    pearson=first['model']['pearson'],
    pairwise_accuracy=first['model']['pairwise_accuracy'],
    baselines=first['baselines'],
  )
  return result


def write(result: dict, summaries_dir: str, step: int, path: str) -> dict:
  """Records an `evaluate` result: scalars, the eval JSON, the printed table.

  Args:
    result: `evaluate`'s dict (with whatever the caller added).
    summaries_dir: TensorBoard directory; each set's finite model metrics go
      under the tag 'eval_<set>'.
    step: the step the scalars are written at.
    path: the eval JSON file.

  Returns:
    `result` with NaN (e.g. pairwise accuracy with no pairs) as None, as written.
  """
  writer = summaries.Writer(summaries_dir)
  for set_name, s in result['sets'].items():
    writer.scalars(
      f'eval_{set_name}', step, {k: v for k, v in s['model'].items() if np.isfinite(v)}
    )
  writer.close()
  result = _no_nan(result)
  files.write_json(path, result)
  _print_table(result)
  return result


def _no_nan(obj: Any) -> Any:
  """NaN (e.g. pairwise accuracy with no pairs) becomes None, so the JSON is strict."""
  if isinstance(obj, dict):
    return {k: _no_nan(v) for k, v in obj.items()}
  if isinstance(obj, list | tuple):
    return [_no_nan(v) for v in obj]
  if isinstance(obj, float) and not np.isfinite(obj):
    return None
  return obj


def _print_table(result: dict) -> None:
  print(f'{"set":26}{"scorer":8}{"tau":>8}{"pearson":>9}{"pairwise":>10}{"n":>7}')
  for name, s in result['sets'].items():
    for scorer, m in [('model', s['model']), *s['baselines'].items()]:
      print(
        f'{name:26}{scorer:8}{m["kendall_tau"]:8.3f}{m["pearson"]:9.3f}'
        f'{m["pairwise_accuracy"]:10.3f}{m["n"]:7d}'
      )
  for kind, p in result['probes'].items():
    print(
      f'probe {kind:12} mean delta {p["mean_delta"]:+.3f}  increased '
      f'{p["fraction_increased"]:.2f}  decreased {p["fraction_decreased"]:.2f}'
    )
