"""`--run_mode=grow`: the Grow step of ReST.

Grow samples N candidates per source with the current policy, scores each
candidate (and the human reference: D_g = samples ∪ D) with a reward source,
and writes the round as TFRecord shards plus a manifest (`grow_io.py`):

  sources of a split -> chunks of `sources_per_shard` -> per chunk:
    batches of similar length -> `sampler.Sampler` (one compiled program,
    sharded over the mesh's batch axes) -> texts -> rewards -> part-<i>-of-<K>.tfrecord

Each chunk is one shard, written under a temporary name and renamed, so a
killed Grow restarts from its finished shards with no record lost or
duplicated. Chunk i of round g samples with
`chunk_key = fold_in(fold_in(key(seed), g), i)` and batch b of it with
`fold_in(chunk_key, b)`: a round is the same for a given seed whatever the
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

`inspect_round.py` (`--run_mode=inspect`) prints what a finished round holds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import tqdm
from absl import logging

from rest_jax import errors, gin_utils
from rest_jax.core import (
  checkpoints,
  models,
  multihost,
  network,
  partitioning,
  preemption,
  summaries,
)
from rest_jax.core import model_dir as model_dir_lib
from rest_jax.core import sampler as sampler_lib
from rest_jax.data import grow_io, tasks
from rest_jax.rewards import reward_fns
from rest_jax.runs import policy_eval

UNFINISHED = ('keep', 'drop')  # SamplingConfig.unfinished.


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How candidates are sampled."""

  num_samples: int = 8  # N candidates per source.
  temperature: float = 0.8  # Sampling temperature (the paper's Grow uses 0.8).
  topk: int = 0  # Top-k filter, 0 = off.
  topp: float = 1.0  # Nucleus filter, 1.0 = off.
  # A sample that reaches target_length without EOS: 'keep' it (scored on its truncated
  # text, trained with EOS appended) or 'drop' it from the round. Counted either way.
  unfinished: str = 'keep'

  def __post_init__(self):
    if self.unfinished not in UNFINISHED:
      raise errors.UserInputError(
        f'SamplingConfig.unfinished={self.unfinished!r}: use one of {", ".join(UNFINISHED)}.'
      )
    if not (isinstance(self.num_samples, int) and self.num_samples >= 1):
      raise errors.UserInputError(
        f'SamplingConfig.num_samples={self.num_samples!r}: Grow needs at least 1 sample per '
        'source (the paper uses 8); set --gin.NUM_SAMPLES or SamplingConfig.num_samples.'
      )
    if not (math.isfinite(self.temperature) and self.temperature >= 0):
      raise errors.UserInputError(
        f'SamplingConfig.temperature={self.temperature}: set --gin.TEMPERATURE to a finite '
        'value >= 0 (0 is greedy; the paper samples at 0.8).'
      )
    if self.topk < 0 or not 0 < self.topp <= 1:
      raise errors.UserInputError(
        f'SamplingConfig: topk={self.topk} must be >= 0 (0 = off) and topp={self.topp} in '
        '(0, 1] (1 = off).'
      )


@dataclasses.dataclass(frozen=True)
class GrowConfig:
  """Which sources, and how they are batched and stored."""

  task: Any  # seqio task name or `tasks.ParallelCorpus` the sources come from.
  split: str = 'train'  # Split of the task whose sources are grown.
  # Sources [first_source, first_source + max_sources) of the split, in split order
  # (max_sources None = all from first_source on). Records keep the index within the split
  # as `source_id`. The reward model's judgments use other sources (see JudgmentsConfig).
  first_source: int = 0
  max_sources: int | None = None
  sources_per_shard: int = 256  # Sources per chunk; one chunk = one shard.
  batch_size: int = 32  # Sources per sampler call (rows = batch_size * N).
  input_length: int = 32  # Longest source in tokens (longer ones are truncated).
  target_length: int = 32  # Longest candidate in tokens.
  human_fraction: float = 1.0  # Fraction of sources whose human reference joins D_g.
  seed: int = 0  # Sampling seed.


@dataclasses.dataclass
class Sources:
  """The sources of a split, index k for its k-th source."""

  tokens: list[np.ndarray]  # [S_k] token ids each, without EOS or padding.
  texts: list[str]  # The source texts.
  references: list[str]  # Their human reference translations.


def load_sources(cfg: GrowConfig) -> Sources:
  """Sources [first_source, first_source + max_sources) of the split, in split order.

  The split is read unshuffled, so the first `first_source` examples are skipped
  deterministically (they are still tokenized: `tasks.get_dataset` has no offset).
  Index k of the result is example `cfg.first_source + k` of the split. Grow
  and best-of-N (`infer.load_sources`) read sources this way.

  Args:
    cfg: the task, split, source range and input_length (target_length only
      bounds the tokenized references, which are not returned).

  Returns:
    The sources: tokens [S_k] each (no EOS, no padding), texts and references.

  Raises:
    errors.DataError: a bad source range, or no sources from first_source on.
  """
  if cfg.first_source < 0 or (cfg.max_sources is not None and cfg.max_sources < 1):
    raise errors.DataError(
      f'GrowConfig: first_source={cfg.first_source} must be >= 0 and max_sources='
      f'{cfg.max_sources} None or >= 1.'
    )
  data = tasks.get_dataset(
    cfg.task,
    cfg.split,
    input_length=cfg.input_length,
    target_length=cfg.target_length,
    batch_size=256,
    shuffle=False,
    seed=0,
    repeat=False,
    with_text=True,
    max_examples=None if cfg.max_sources is None else cfg.first_source + cfg.max_sources,
  )
  out, seen = Sources([], [], []), 0
  for batch in data:
    for row, src, ref in zip(
      batch['encoder_input_tokens'], batch['inputs_pretokenized'], batch['targets_pretokenized']
    ):
      seen += 1
      if seen <= cfg.first_source:
        continue
      row = row[row > 0]
      out.tokens.append(row[:-1] if len(row) and row[-1] == 1 else row)  # Drop EOS.
      out.texts.append(str(src))
      out.references.append(str(ref))
  if not out.texts:
    raise errors.DataError(
      f'Grow: split {cfg.split!r} of {cfg.task} has no sources from first_source='
      f'{cfg.first_source} on ({seen} in the split).'
    )
  return out


def _keeps_human(seed: int, source_id: int, fraction: float) -> bool:
  """Deterministic per-source coin for `human_fraction`."""
  if fraction >= 1.0:
    return True
  digest = hashlib.sha256(f'{seed}:{source_id}'.encode()).digest()
  return int.from_bytes(digest[:8], 'little') / 2**64 < fraction


def chunk_key(seed: int, grow_round: int, chunk: int) -> jax.Array:
  """The sampling key of chunk `chunk` of round `grow_round`: fold_in(fold_in(key(seed), g), i).

  Batch b of the chunk samples with `fold_in(chunk_key, b)`.
  """
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), grow_round), chunk)


def _grow_chunk(
  chunk: int,
  ids: Sequence[int],
  sources: Sources,
  sampler: sampler_lib.Sampler,
  vocab,
  reward_fn: reward_fns.RewardFn,
  cfg: GrowConfig,
  sampling: SamplingConfig,
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
  """
  counts = {} if counts is None else counts
  for name in grow_io.TRUNCATION_COUNTS:
    counts.setdefault(name, 0)
  key = chunk_key(cfg.seed, grow_round, chunk)
  order = sorted(ids, key=lambda i: (len(sources.tokens[i]), i))  # Similar lengths together.
  records = []
  for b, start in enumerate(range(0, len(order), cfg.batch_size)):
    batch_ids = order[start : start + cfg.batch_size]
    length = sampler_lib.bucket(
      max(len(sources.tokens[i]) for i in batch_ids) + 1, cfg.input_length
    )
    enc = sampler_lib.pad_rows(
      [sources.tokens[i] for i in batch_ids], cfg.batch_size, length, eos=True
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
      targets = sampler_lib.pad_rows(rows, cfg.batch_size, cfg.target_length, eos=True)
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
        if not (tokens[row, n] == 1).any():  # Reached target_length without EOS.
          counts['num_truncated_samples'] += 1
          if sampling.unfinished == 'drop':
            counts['num_dropped_samples'] += 1
            continue
        cand = sampler_lib.strip(tokens[row, n], eos_id=1)
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


def grow(
  *,
  model_dir: str,
  model_config: network.T5Config,
  grow_config: GrowConfig,
  sampling: SamplingConfig = SamplingConfig(),
  reward: reward_fns.RewardFn,
  grow_round: int = 1,
  policy_checkpoint: str = 'bc/best',
  mesh_config: partitioning.MeshConfig = partitioning.MeshConfig(),
  progress: bool = True,
  out_dir: str | None = None,
  reward_train_sources: dict | None = None,
) -> dict | None:
  """Writes Grow round `grow_round` to `MODEL_DIR/grow/g<g>/` and returns its manifest.

  Args:
    model_dir: run directory.
    model_config: the policy network (must match the checkpoint).
    grow_config: sources, batching and storage.
    sampling: N, temperature, top-k, top-p.
    reward: the reward source that scores every record.
    grow_round: g, the round number.
    policy_checkpoint: checkpoint directory, relative to `MODEL_DIR/checkpoints`
      (e.g. 'bc/best', 'bc/last') or absolute; its latest step is used.
    mesh_config: device mesh; the sampler's batch is split over its data axes.
    progress: show a progress bar.
    out_dir: write the round here instead of `grow/g<grow_round>` (`ModelDir.grow_round`)
      (its operative config is `MODEL_DIR/config_grow_<basename>.gin`).
    reward_train_sources: which sources the reward models (and judges) were
      trained on, e.g. {'rm': {'split': 'train', 'first': 162784, 'count':
      2000}}; recorded in the manifest beside Grow's own sources.

  Returns:
    The round's manifest (also `round_dir/manifest.json`).
  """
  out_dir = out_dir or model_dir_lib.ModelDir(model_dir).grow_round(grow_round)
  try:
    manifest = grow_io.verify_round(out_dir)
    logging.info('Grow round %d already finished: %s', grow_round, out_dir)
    return manifest
  except grow_io.GrowDataError:
    pass
  policy_eval.check_vocab_size(model_config, grow_config.task)
  gin_utils.write_config(model_dir, f'config_grow_{os.path.basename(out_dir)}.gin')
  vocab = tasks.get_vocabulary(grow_config.task)
  sources = load_sources(grow_config)
  num_sources = len(sources.texts)
  num_shards = -(-num_sources // grow_config.sources_per_shard)
  done = grow_io.finished_shards(out_dir, num_shards)
  # Every process must skip the same shards: scan before any process writes.
  multihost.barrier(f'grow g{grow_round}: finished shards scanned')

  mesh = partitioning.make_mesh(mesh_config)
  if grow_config.batch_size % partitioning.num_batch_shards(mesh):
    raise ValueError(
      f'GrowConfig.batch_size={grow_config.batch_size} must be divisible by the mesh batch '
      f'shards ({partitioning.num_batch_shards(mesh)}).'
    )
  model = models.EncoderDecoderModel(model_config)
  ckpt_dir = model_dir_lib.ModelDir(model_dir).checkpoint(policy_checkpoint)
  params, policy_step = checkpoints.restore_params(
    ckpt_dir, model.init_params_fn(grow_config.input_length, grow_config.target_length), mesh
  )
  sampler = sampler_lib.Sampler(
    model,
    params,
    mesh,
    num_samples=sampling.num_samples,
    max_length=grow_config.target_length,
    temperature=sampling.temperature,
    topk=sampling.topk,
    topp=sampling.topp,
  )
  process, num_processes = jax.process_index(), jax.process_count()
  if num_processes > 1:
    # Load a learned reward now, on every process together (restoring a
    # checkpoint may be collective), whatever rows each process scores first.
    reward(['.'], ['.'], ['.'])
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
      chunk * grow_config.sources_per_shard,
      min((chunk + 1) * grow_config.sources_per_shard, num_sources),
    )
    counts: dict[str, int] = {}  # The chunk's length-cap counts, for its sidecar.
    records = _grow_chunk(
      chunk,
      ids,
      sources,
      sampler,
      vocab,
      reward,
      grow_config,
      sampling,
      grow_round,
      int(policy_step),
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
  multihost.barrier(f'grow g{grow_round}: shards written')
  multihost.on_primary(
    lambda: _write_round_manifest(
      out_dir,
      num_shards,
      done,
      grow_round=grow_round,
      policy_checkpoint=ckpt_dir,
      policy_step=int(policy_step),
      task=str(getattr(grow_config.task, 'name', grow_config.task)),
      split=grow_config.split,
      num_sources=num_sources,
      sampling=dataclasses.asdict(sampling),
      grow_config={k: v for k, v in dataclasses.asdict(grow_config).items() if k != 'task'},
      reward_source=getattr(reward, 'name', type(reward).__name__),
      sources={
        'split': grow_config.split,
        'first': grow_config.first_source,
        'count': num_sources,
      },
      reward_train_sources=reward_train_sources,
      timing={'seconds_this_run': seconds, **timing, 'resumed_shards': len(done)},
      num_processes=num_processes,
      vocab_path=vocab.sentencepiece_model_file,
      seqio_task=grow_io.round_task_name(out_dir),
    ),
    f'grow g{grow_round}: manifest',
  )  # Returns on every process once process 0 wrote it.
  if multihost.is_primary():
    _write_round_summaries(model_dir, out_dir, grow_round)
  # D_g as a seqio task (unfiltered; Improve registers `reward > tau` views).
  grow_io.register_round_task(out_dir, vocab.sentencepiece_model_file)
  manifest = grow_io.verify_round(out_dir)
  logging.info('Grow round %d: %d records in %s', grow_round, manifest['num_records'], out_dir)
  length_cap = grow_io.describe_length_cap(manifest)
  if length_cap and multihost.is_primary():
    logging.warning('Grow round %d: %s', grow_round, length_cap)
  return manifest


def _write_round_manifest(out_dir: str, num_shards: int, resumed: dict, **meta) -> None:
  """Process 0, after every process wrote its shards: the round's manifest.

  Args:
    out_dir: the round directory.
    num_shards: K, the number of shards of the round.
    resumed: {index: info} of the shards finished before this run started.
    **meta: JSON metadata stored in the manifest (`timing` gains the record count).

  Raises:
    grow_io.GrowDataError: a shard is missing or does not match its sidecar.
  """
  shards = grow_io.finished_shards(out_dir, num_shards)
  missing = sorted(set(range(num_shards)) - set(shards))
  if missing:
    raise grow_io.GrowDataError(
      f'{out_dir}: shards {missing} are missing or corrupt after every process finished Grow.'
    )
  infos = [shards[i] for i in range(num_shards)]
  cols = grow_io.read_records_from(
    [os.path.join(out_dir, s['file']) for s in infos], ('reward', 'is_human', 'targets')
  )
  is_human = cols['is_human'].astype(bool)
  new = sum(s['count'] for i, s in shards.items() if i not in resumed)
  meta['timing']['records_this_run'] = new
  grow_io.write_manifest(
    out_dir,
    infos,
    reward_stats=grow_io.reward_statistics(cols['reward']),
    reward_stats_samples=grow_io.reward_statistics(cols['reward'][~is_human]),
    reward_stats_human=grow_io.reward_statistics(cols['reward'][is_human]),
    sampled_sequences=int((~is_human).sum()),
    sampled_tokens=int(sum(len(t) + 1 for t in cols['targets'][~is_human])),
    **grow_io.truncation_totals(infos),
    **meta,
  )


def _write_round_summaries(model_dir: str, out_dir: str, grow_round: int) -> None:
  """TensorBoard: the round's reward mean and quantiles (all records; samples only)."""
  writer = summaries.Writer(model_dir_lib.ModelDir(model_dir).summaries('grow'))
  manifest = grow_io.read_manifest(out_dir)
  for name, stats in (('all', 'reward_stats'), ('samples', 'reward_stats_samples')):
    st = manifest[stats]
    if st.get('count'):
      quantiles = {f'reward_q{float(q):g}': v for q, v in st['quantiles'].items()}
      writer.scalars(name, grow_round, {'reward_mean': st['mean'], **quantiles})
  writer.close()
