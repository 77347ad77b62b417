"""Grow's sampling: a round's sources in chunks, sampled, scored and written as shards.

  sources of a split -> chunks of `sources_per_shard` -> per chunk:
    batches of similar length -> `sampler.Sampler` (one compiled program,
    sharded over the mesh's batch axes) -> texts -> rewards -> part-<i>-of-<K>.tfrecord

`restore_sampler` loads the policy into a `Sampler`, `grow_chunk` samples and
scores one chunk into records, and `write_shards` writes every chunk not yet
finished as one shard (`grow_io.write_shard`), so a killed Grow restarts from
its finished shards with no record lost or duplicated. Chunk i of round g
samples with `chunk_key = fold_in(fold_in(key(seed), g), i)` and batch b of it
with `fold_in(chunk_key, b)`: a round is the same for a given seed whatever the
number of devices, and whichever chunks a restart still had to do; and two
rounds draw independent random numbers, even from the same policy (with only
the chunk folded in, round g+1 repeated round g's draws wherever the policy had
barely changed). `--run_mode=infer` samples with `fold_in(key(seed), b)`: a
different derivation (one fold, not three), so it shares no key with Grow.

The length cap. A candidate is at most `GrowConfig.target_length` tokens. A
sample that reaches the cap without EOS is not a complete translation;
`SamplingConfig.unfinished` says what happens to it: 'keep' (the default, the
behaviour before the option existed) writes it like any other sample, scored
on its truncated text and trained with EOS appended (seqio keeps its first
T - 1 tokens, T being Improve's target_length, then EOS); 'drop' leaves it out
of the round. A human
reference longer than target_length - 1 tokens is stored truncated to that
many (the tokens the policy is trained on, with EOS), and its
`targets_pretokenized` and reward are those of the decoded truncated tokens,
not of the full text: the reward then describes what Improve trains on (the
full reference would score 1.0 against itself and pass any filter, teaching the
policy to stop mid-sentence). The record's `reference` (what samples are
scored against) stays the full text. Each shard's sidecar and the manifest
count `num_truncated_samples` (samples that reached the cap without EOS, kept
or dropped), `num_dropped_samples` (those left out by 'drop') and
`num_truncated_references` (human records whose reference was truncated).

The configs are `runs.grow.GrowConfig` and `runs.grow.SamplingConfig`.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import tqdm

from rest_jax import errors
from rest_jax.core import checkpoints, models, multihost, network, partitioning, preemption
from rest_jax.core import sampler as sampler_lib
from rest_jax.data import grow_io, grow_sources
from rest_jax.rewards import reward_fns

UNFINISHED = ('keep', 'drop')  # SamplingConfig.unfinished.


def check_sampling(sampling: Any) -> None:
  """Checks a `SamplingConfig` (N, temperature, top-k, top-p, `unfinished`).

  Args:
    sampling: the `runs.grow.SamplingConfig` to check.

  Raises:
    errors.UserInputError: a value out of range, naming the setting.
  """
  if sampling.unfinished not in UNFINISHED:
    raise errors.UserInputError(
      f'SamplingConfig.unfinished={sampling.unfinished!r}: use one of {", ".join(UNFINISHED)}.'
    )
  if not (isinstance(sampling.num_samples, int) and sampling.num_samples >= 1):
    raise errors.UserInputError(
      f'SamplingConfig.num_samples={sampling.num_samples!r}: Grow needs at least 1 sample per '
      'source (the paper uses 8); set --gin.NUM_SAMPLES or SamplingConfig.num_samples.'
    )
  if not (math.isfinite(sampling.temperature) and sampling.temperature >= 0):
    raise errors.UserInputError(
      f'SamplingConfig.temperature={sampling.temperature}: set --gin.TEMPERATURE to a finite '
      'value >= 0 (0 is greedy; the paper samples at 0.8).'
    )
  if sampling.topk < 0 or not 0 < sampling.topp <= 1:
    raise errors.UserInputError(
      f'SamplingConfig: topk={sampling.topk} must be >= 0 (0 = off) and topp={sampling.topp} in '
      '(0, 1] (1 = off).'
    )


def chunk_key(seed: int, grow_round: int, chunk: int) -> jax.Array:
  """The sampling key of chunk `chunk` of round `grow_round`: fold_in(fold_in(key(seed), g), i).

  Batch b of the chunk samples with `fold_in(chunk_key, b)`.
  """
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), grow_round), chunk)


def _keeps_human(seed: int, source_id: int, fraction: float) -> bool:
  """Deterministic per-source coin for `human_fraction`."""
  if fraction >= 1.0:
    return True
  digest = hashlib.sha256(f'{seed}:{source_id}'.encode()).digest()
  return int.from_bytes(digest[:8], 'little') / 2**64 < fraction


def restore_sampler(
  model_config: network.ModelConfig,
  ckpt_dir: str,
  mesh_config: partitioning.MeshConfig,
  cfg: Any,
  sampling: Any,
) -> tuple[sampler_lib.Sampler, Any]:
  """The policy of `ckpt_dir` (its latest step) as a `Sampler` on a new mesh.

  Args:
    model_config: the policy network (must match the checkpoint).
    ckpt_dir: the policy's checkpoint directory.
    mesh_config: device mesh; the sampler's batch is split over its data axes.
    cfg: the `GrowConfig` (batch_size, input_length, target_length).
    sampling: the `SamplingConfig` (N, temperature, top-k, top-p).

  Returns:
    (the sampler, the checkpoint's step).

  Raises:
    ValueError: `cfg.batch_size` is not divisible by the mesh's batch shards.
  """
  mesh = partitioning.make_mesh(mesh_config)
  if cfg.batch_size % partitioning.num_batch_shards(mesh):
    raise ValueError(
      f'GrowConfig.batch_size={cfg.batch_size} must be divisible by the mesh batch '
      f'shards ({partitioning.num_batch_shards(mesh)}).'
    )
  model = models.make_model(model_config)
  params, policy_step = checkpoints.restore_params(
    ckpt_dir, model.init_params_fn(cfg.input_length, cfg.target_length), mesh
  )
  sampler = sampler_lib.Sampler(
    model,
    params,
    mesh,
    num_samples=sampling.num_samples,
    max_length=cfg.target_length,
    temperature=sampling.temperature,
    topk=sampling.topk,
    topp=sampling.topp,
  )
  return sampler, policy_step


def grow_chunk(
  chunk: int,
  ids: Sequence[int],
  sources: grow_sources.Sources,
  sampler: sampler_lib.Sampler,
  vocab,
  reward_fn: reward_fns.RewardFn,
  cfg: Any,
  sampling: Any,
  grow_round: int,
  policy_step: int,
  timing: dict[str, float],
  owner: bool = True,
  counts: dict[str, int] | None = None,
) -> list[dict]:
  """Samples, scores and builds the records of one chunk of sources.

  Adds the seconds spent sampling (policy and human-reference scoring) and
  computing rewards to `timing['sample_seconds']` / `timing['reward_seconds']`,
  and the chunk's length-cap counts (`grow_io.TRUNCATION_COUNTS`, see the module
  docstring) to `counts`. Samples without EOS are dropped when
  `sampling.unfinished == 'drop'`.
  In a multi-process run every process takes part in sampling (on the global
  mesh) and computes the rewards of an interleaved share of the records
  (`multihost.map_rows`); only the chunk's `owner` returns the records (the
  others return []) and writes them.

  Args:
    chunk: i, the chunk's index (its shard's index).
    ids: the chunk's sources, indices into `sources`.
    sources: the round's sources (`grow_sources.load_sources`).
    sampler: the policy's sampler (`restore_sampler`).
    vocab: the task's vocabulary (encodes references, decodes candidates).
    reward_fn: scores every record.
    cfg: the `GrowConfig` (seed, batch_size, lengths, first_source, human_fraction).
    sampling: the `SamplingConfig` (N, `unfinished`).
    grow_round: g, the round number.
    policy_step: the sampling policy's checkpoint step, stored in every record.
    timing: seconds accumulated per phase, updated in place.
    owner: whether this process writes the chunk's shard.
    counts: the chunk's length-cap counts, updated in place.

  Returns:
    The owner: the chunk's records (`grow_io` schema; 'inputs' and 'targets'
    [T] token ids without EOS), sorted by (source_id, sample_index); other
    processes: [].

  Raises:
    FloatingPointError: a non-finite reward.
  """
  counts = {} if counts is None else counts
  for name in grow_io.TRUNCATION_COUNTS:
    counts.setdefault(name, 0)
  key = chunk_key(cfg.seed, grow_round, chunk)
  eos_id = sampler.model.config.eos_id  # Of the policy's vocabulary (Llama's is 2).
  order = sorted(ids, key=lambda i: (len(sources.tokens[i]), i))  # Similar lengths together.
  records = []
  for b, start in enumerate(range(0, len(order), cfg.batch_size)):
    batch_ids = order[start : start + cfg.batch_size]
    length = sampler_lib.bucket(
      max(len(sources.tokens[i]) for i in batch_ids) + 1, cfg.input_length
    )
    enc = sampler_lib.pad_rows(
      [sources.tokens[i] for i in batch_ids], cfg.batch_size, length, eos=True, eos_id=eos_id
    )
    tic = time.perf_counter()
    tokens, log_probs = sampler.sample(enc, jax.random.fold_in(key, b))
    # The human reference of a source joins D_g (scored by the policy too).
    # Stored as the tokens it is trained on (at most target_length - 1, then EOS); a
    # truncated one gets the text (and so the reward) of those tokens.
    refs, ref_texts = {}, {}
    for i in batch_ids:
      if _keeps_human(cfg.seed, i, cfg.human_fraction):
        full = np.asarray(vocab.encode(sources.references[i]), np.int32)
        refs[i] = full[: cfg.target_length - 1]
        cut = len(refs[i]) < len(full)
        ref_texts[i] = vocab.decode(refs[i].tolist()) if cut else sources.references[i]
        counts['num_truncated_references'] += int(cut)
    human_lp = {}
    if refs:
      rows = [refs.get(i, []) for i in batch_ids]
      targets = sampler_lib.pad_rows(
        rows, cfg.batch_size, cfg.target_length, eos=True, eos_id=eos_id
      )
      scored = sampler.score(enc, targets)
      human_lp = {i: float(scored[row]) for row, i in enumerate(batch_ids) if i in refs}
    timing['sample_seconds'] += time.perf_counter() - tic
    for row, i in enumerate(batch_ids):
      base = {
        'inputs': sources.tokens[i],
        'inputs_pretokenized': sources.texts[i],
        'reference': sources.references[i],
        'source_id': cfg.first_source + i,  # The index within the split.
        'grow_round': grow_round,
        'policy_step': policy_step,
      }
      for n in range(sampling.num_samples):
        if not (tokens[row, n] == eos_id).any():  # Reached target_length without EOS.
          counts['num_truncated_samples'] += 1
          if sampling.unfinished == 'drop':
            counts['num_dropped_samples'] += 1
            continue
        cand = sampler_lib.strip(tokens[row, n], eos_id=eos_id)
        records.append(
          dict(
            base,
            targets=cand,
            targets_pretokenized=vocab.decode(cand.tolist()),
            log_prob=float(log_probs[row, n]),
            sample_index=n,
            is_human=0,
          )
        )
      if i in refs:
        records.append(
          dict(
            base,
            targets=refs[i],
            targets_pretokenized=ref_texts[i],
            log_prob=human_lp[i],
            sample_index=-1,
            is_human=1,
          )
        )
  tic = time.perf_counter()

  def score(indices):
    chosen = [records[j] for j in indices]
    scores = reward_fn(
      [r['inputs_pretokenized'] for r in chosen],
      [r['targets_pretokenized'] for r in chosen],
      [r['reference'] for r in chosen],
    )
    return np.stack([scores.reward, scores.raw], axis=1)

  if records:  # Every process holds the same records: all skip an empty chunk together.
    scores = multihost.map_rows(score, len(records), 2, f'grow g{grow_round} rewards')
  else:  # Every sample was dropped ('drop') and no human reference joins.
    scores = np.zeros((0, 2), np.float32)
  timing['reward_seconds'] += time.perf_counter() - tic
  if not np.all(np.isfinite(scores[:, 0])):
    raise FloatingPointError(f'grow g{grow_round}: non-finite reward in chunk {chunk}.')
  if not owner:
    return []
  for r, (value, raw) in zip(records, scores):
    r['reward'], r['raw_reward'] = float(value), float(raw)
  records.sort(key=lambda r: (r['source_id'], r['sample_index']))
  return records


def write_shards(
  out_dir: str,
  num_shards: int,
  done: dict,
  sources: grow_sources.Sources,
  sampler: sampler_lib.Sampler,
  vocab,
  reward_fn: reward_fns.RewardFn,
  cfg: Any,
  sampling: Any,
  *,
  grow_round: int,
  policy_step: int,
  progress: bool,
) -> dict[str, float]:
  """Samples, scores and writes every chunk of the round not in `done`, one shard each.

  Shard `chunk` belongs to process chunk % P (P processes); every process
  samples every chunk (and first loads a learned reward, all together). After
  each shard but the last, a SIGTERM received (`preemption.requested`) stops
  Grow with the finished shards kept.

  Args:
    out_dir: the round directory.
    num_shards: K, the number of shards (chunks of `cfg.sources_per_shard` sources).
    done: {index: info} of the shards finished before this run (skipped).
    sources: the round's sources (`grow_sources.load_sources`).
    sampler: the policy's sampler (`restore_sampler`).
    vocab: the task's vocabulary.
    reward_fn: scores every record.
    cfg: the `GrowConfig`.
    sampling: the `SamplingConfig`.
    grow_round: g, the round number.
    policy_step: the sampling policy's checkpoint step.
    progress: show a progress bar.

  Returns:
    The run's timing for the manifest: 'seconds_this_run', 'sample_seconds',
    'reward_seconds', 'resumed_shards'.

  Raises:
    preemption.Preempted: SIGTERM after a shard that was not the last.
  """
  process, num_processes = jax.process_index(), jax.process_count()
  if num_processes > 1:
    # Load a learned reward now, on every process together (restoring a
    # checkpoint may be collective), whatever rows each process scores first.
    reward_fn(['.'], ['.'], ['.'])
  num_sources = len(sources.texts)
  start = time.time()
  timing = {'sample_seconds': 0.0, 'reward_seconds': 0.0}
  bar = tqdm.tqdm(
    total=num_shards,
    initial=len(done),
    desc=f'grow g{grow_round}',
    unit='shard',
    disable=multihost.bar_disable(progress),
  )
  for chunk in range(num_shards):
    if chunk in done:
      continue
    ids = range(
      chunk * cfg.sources_per_shard,
      min((chunk + 1) * cfg.sources_per_shard, num_sources),
    )
    counts: dict[str, int] = {}  # The chunk's length-cap counts, for its sidecar.
    records = grow_chunk(
      chunk,
      ids,
      sources,
      sampler,
      vocab,
      reward_fn,
      cfg,
      sampling,
      grow_round,
      policy_step,
      timing,
      owner=chunk % num_processes == process,
      counts=counts,
    )
    error = None
    if chunk % num_processes == process:  # Shard `chunk` belongs to process chunk % P.
      try:
        grow_io.write_shard(out_dir, chunk, num_shards, records, process=process, stats=counts)
      except Exception as e:  # noqa: BLE001  (raised on every process just below)
        error = e
    multihost.raise_together(error, f'grow g{grow_round}: writing shard {chunk}')
    bar.update(1)
    if chunk + 1 < num_shards and preemption.requested():
      bar.close()
      raise preemption.Preempted(f'in grow g{grow_round} after shard {chunk} (kept)')
  bar.close()
  seconds = time.time() - start
  return {'seconds_this_run': seconds, **timing, 'resumed_shards': len(done)}
