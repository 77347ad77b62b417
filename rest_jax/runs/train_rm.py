"""`--run_mode=train_rm`: train and evaluate the learned, reference-free reward model.

Read top to bottom:

1. Judgments. The default is synthetic, built from a slice of the task's train
   split (`JudgmentsConfig.first_train_source`; by default its LAST
   `num_train_sources` sources, so disjoint from the first `MAX_SOURCES`
   sources Grow samples):
   - policy samples from the BC checkpoint, as a Grow round `grow/g0`, each
     labelled with sentence chrF against the reference (with
     labels='rules', a sample that repeats a word 3-gram or is over 1.5x the
     reference's length has it multiplied by a penalty:
     `corruptions.guard_policy_label`);
   - the references themselves (label 1);
   - corrupted references (dropped, swapped or repeated words, truncation,
     the copied source, empty output, another sentence, the whole reference
     repeated, the reference followed by other words), labelled by rule
     (`corruptions.rule_label`: chrF times a penalty per kind, 0 for the copied
     source, empty output and another sentence) or, with labels='chrf', by
     chrF alone.

   Human MQM judgments for English-German (WMT TED, read from
   `../shared/data/wmt-mqm/`) can be mixed in. Their documents are split so
   that held-out documents are never trained on.
2. Training. The same jitted, sharded train step as the policy
   (`trainer.Trainer`), with a regression or Bradley-Terry loss. It keeps Orbax
   checkpoints `checkpoints/rm/{last,best}`, resumes, and writes TensorBoard
   summaries and a progress bar.
3. Evaluation. Segment-level Kendall tau and Pearson, and pairwise accuracy
   within a source, on held-out synthetic judgments and held-out MQM documents.
   Two baselines are measured beside them in the same run: candidate length,
   and sentence chrF against the reference. The reward-hacking probes give the
   score change under repetition, permutation, truncation, the copied source,
   empty output and over-length output. Everything goes to
   `MODEL_DIR/eval/reward_model.json`.

Several reward models can share a run directory: `train_rm(name=...)` keeps
each one's files apart (a judge model trained with another seed and another
`first_train_source` slice, e.g.). Name 'rm' (the default, the one ReST uses)
writes `checkpoints/rm/last`, `eval/reward_model.json`, `summaries/rm`,
`config_rm.gin` and `grow/g0`; another name N writes `checkpoints/N/last`,
`eval/reward_model_N.json`, `summaries/N`, `config_N.gin` and `grow/N_g0`.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import re
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import sentencepiece as spm
from absl import logging

from rest_jax import errors, gin_utils
from rest_jax.core import (
  files,
  multihost,
  network,
  optimizers,
  partitioning,
  summaries,
  train_loop,
  trainer,
)
from rest_jax.core import model_dir as model_dir_lib
from rest_jax.core import train_state as train_state_lib
from rest_jax.data import grow_io, judgment_tasks, judgments, tasks
from rest_jax.rewards import corruptions, reward_fns, reward_model, rm_metrics
from rest_jax.runs import grow


@dataclasses.dataclass(frozen=True)
class JudgmentsConfig:
  """Where the reward model's training and evaluation judgments come from."""

  task: Any  # Corpus (seqio task name or ParallelCorpus) of (source, reference) pairs.
  num_train_sources: int = 2000  # Train-split sources used for synthetic judgments.
  # The train sources are [first_train_source, first_train_source + num_train_sources) of
  # the train split; None: its LAST num_train_sources sources (disjoint from Grow's first
  # MAX_SOURCES); negative: counted from the end of the split (-4000: size - 4000). The
  # policy-sample round (grow/g0) samples the same slice.
  first_train_source: int | None = None
  num_eval_sources: int = 300  # Validation-split sources for held-out synthetic judgments.
  policy_samples_per_source: int = 2  # BC samples per source (0 = none), labelled with chrF.
  corruptions_per_pair: int = 3  # Corrupted references per (source, reference) pair.
  # 'rules': corruptions labelled by corruptions.rule_label, hacked policy samples penalised
  # (corruptions.guard_policy_label); 'chrf': sentence chrF / 100 for everything.
  labels: str = 'rules'
  input_length: int = 32  # The policy's source length in tokens (the run's INPUT_LENGTH).
  target_length: int = 32  # The policy's sample length in tokens (the run's TARGET_LENGTH).
  policy_checkpoint: str = 'bc/best'  # Under MODEL_DIR/checkpoints, or absolute.
  use_mqm: bool = True  # Mix in WMT MQM en-de judgments (if the data is present).
  mqm_path: str | None = None  # Default: judgments.load_mqm_ende's default location.
  mqm_eval_fraction: float = 0.3  # Share of MQM documents held out for evaluation.
  mqm_rate_multiplier: float = 1.0  # MQM's mixing rate relative to its size.
  seed: int = 0  # Corruption and split seed.


def _corpus(task: Any) -> tasks.ParallelCorpus:
  if not isinstance(task, tasks.ParallelCorpus):
    raise errors.DataError('JudgmentsConfig.task must be a tasks.ParallelCorpus (e.g. Tatoeba).')
  return task


def _pairs(task: Any, split: str, limit: int, first: int = 0) -> list[tuple[str, str]]:
  return _corpus(task).splits()[split][first : first + limit]


def train_source_slice(cfg: JudgmentsConfig) -> tuple[int, int]:
  """The train-split sources the judgments use: (first, count).

  Args:
    cfg: the judgments config (`first_train_source`, `num_train_sources`).

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


def _policy_judgments(
  model_dir: str, policy_config: network.T5Config, cfg: JudgmentsConfig, out_dir: str
) -> list[judgments.Judgment]:
  """BC samples of the train slice as a Grow round in `out_dir`, labelled with chrF.

  With labels='rules' a hacked sample's label is penalised (`corruptions.guard_policy_label`).
  """
  if cfg.policy_samples_per_source <= 0:
    return []
  first, count = train_source_slice(cfg)
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


# The settings of a policy-sample round that must match the reward model's.
_G0_KEYS = ('first_source', 'max_sources', 'input_length', 'target_length')


def _synthetic(
  cfg: JudgmentsConfig, split: str, limit: int, first: int = 0
) -> list[judgments.Judgment]:
  """References and corrupted references of a split, labelled by `cfg.labels`."""
  js = judgments.synthetic_judgments(
    _pairs(cfg.task, split, limit, first),
    corruptions_per_pair=cfg.corruptions_per_pair,
    seed=cfg.seed,
    labels=cfg.labels,
  )
  # Group by source so pairwise accuracy compares candidates of one source.
  return [dataclasses.replace(j, doc=j.doc or f'{split}:{j.source}') for j in js]


def _mqm(cfg: JudgmentsConfig) -> tuple[list[judgments.Judgment], list[judgments.Judgment]]:
  if not cfg.use_mqm:
    return [], []
  try:
    mqm = judgments.load_mqm_ende(cfg.mqm_path)
  except errors.DataError as e:
    logging.warning('No MQM judgments: %s', e)
    return [], []
  return judgments.split_by_document(mqm, eval_fraction=cfg.mqm_eval_fraction, seed=cfg.seed)


def _encode(sp, js: Sequence[judgments.Judgment], max_length: int) -> dict[str, np.ndarray]:
  return {
    'inputs': reward_model.encode_pairs(
      sp, [j.source for j in js], [j.candidate for j in js], max_length
    ),
    'score': np.asarray([j.score for j in js], np.float32),
  }


def _bt_pairs(data: dict[str, np.ndarray], groups: Sequence[str], rng: np.random.RandomState):
  """Preference pairs within each group (source) whose scores differ."""
  by_group: dict[str, list[int]] = {}
  for i, g in enumerate(groups):
    by_group.setdefault(g, []).append(i)
  a, b = [], []
  for idx in by_group.values():
    for i in idx:
      for j in idx:
        if i < j and data['score'][i] != data['score'][j]:
          a.append(i)
          b.append(j)
  if not a:
    raise ValueError(
      'Bradley-Terry loss: no pairs of judgments of one source with different scores.'
    )
  a, b = np.asarray(a), np.asarray(b)
  perm = rng.permutation(len(a))
  a, b = a[perm], b[perm]
  return {
    'inputs_a': data['inputs'][a],
    'inputs_b': data['inputs'][b],
    'preference': (data['score'][a] > data['score'][b]).astype(np.float32),
  }


def _batch_at(data: dict[str, np.ndarray], step: int, batch_size: int, seed: int) -> dict:
  """The batch of `step`: epoch-wise permutations seeded by (seed, epoch): resumable."""
  n = len(next(iter(data.values())))
  per_epoch = max(n // batch_size, 1)
  epoch, offset = divmod(step, per_epoch)
  perm = np.random.RandomState([seed, epoch]).permutation(n)
  idx = perm[offset * batch_size : (offset + 1) * batch_size]
  if len(idx) < batch_size:  # Tiny data: wrap around.
    idx = np.resize(perm, batch_size)
  return {k: v[idx] for k, v in data.items()}


@functools.partial(jax.jit, static_argnums=(0,))
def _predict(config, params, tokens):
  return reward_model.score(config, params, tokens)[1]


def predict(config, params, inputs: np.ndarray, mesh, batch_size: int) -> np.ndarray:
  """Rewards in [0, 1] for encoded pairs `inputs` [N, L] (padded batches)."""
  out = []
  with partitioning.axis_rules(mesh):
    for start in range(0, len(inputs), batch_size):
      chunk = inputs[start : start + batch_size]
      padded = trainer.zeros_like_batch({'inputs': chunk}, batch_size)
      batch = partitioning.shard_batch(padded, mesh)
      out.append(multihost.host_array(_predict(config, params, batch['inputs']))[: len(chunk)])
  return np.concatenate(out) if out else np.zeros((0,), np.float32)


def _evaluate(config, params, mesh, sp, eval_sets, probe_pairs, batch_size) -> dict:
  """Metrics of the model and of the two baselines on each held-out set, and probes."""
  result: dict[str, Any] = {'sets': {}}
  for name, js in eval_sets.items():
    if not js:
      continue
    data = _encode(sp, js, config.max_length)
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


def train_rm(
  *,
  model_dir: str,
  rm_config: reward_model.RewardModelConfig,
  policy_config: network.T5Config,
  judgments_config: JudgmentsConfig,
  optimizer: optimizers.OptimizerConfig,
  num_train_steps: int,
  batch_size: int = 64,
  loss: str = 'regression',
  log_period: int = 50,
  eval_batch_size: int = 256,
  mesh_config: partitioning.MeshConfig = partitioning.MeshConfig(),
  seed: int = 0,
  init_checkpoint: str | None = None,
  name: str = 'rm',
  progress: bool = True,
) -> dict | None:
  """Trains the reward model and writes `MODEL_DIR/eval/reward_model.json`.

  Args:
    model_dir: run directory (holds the BC checkpoint the synthetic samples use).
    rm_config: the reward-model network and its input length.
    policy_config: the BC policy's network (to sample synthetic candidates).
    judgments_config: which judgments to train and evaluate on.
    optimizer: AdamW and schedule.
    num_train_steps: optimizer steps.
    batch_size: judgments (or preference pairs) per step.
    loss: 'regression' (to the normalized score) or 'bradley_terry' (pairs).
    log_period: steps between logged train metrics.
    eval_batch_size: rows per scoring batch in evaluation.
    mesh_config: device mesh.
    seed: init and data-order seed.
    init_checkpoint: start from this reward-model checkpoint's parameters (e.g.
      'pretrained_rm/best', a T5 encoder written by `--run_mode=import_t5
      --gin.TARGET="'reward_model'"`); relative to `MODEL_DIR/checkpoints`, or
      absolute. Ignored when the phase resumes from its own checkpoint.
    name: the reward model's name (letters, digits, '_'), so several can share
      `model_dir` (module docstring): 'rm' (ReST's) writes
      `checkpoints/rm/last`, `eval/reward_model.json`, `summaries/rm`,
      `config_rm.gin`, `grow/g0`; another name N `checkpoints/N/last`,
      `eval/reward_model_N.json`, `summaries/N`, `config_N.gin`, `grow/N_g0`.
    progress: progress bars.

  Returns:
    The evaluation dict written to the eval JSON (see `name`).

  Raises:
    UserInputError: a bad name; DataError: unusable judgments settings.
  """
  if not re.fullmatch(r'[A-Za-z0-9_]+', name):
    raise errors.UserInputError(
      f'train_rm: name={name!r}; use letters, digits and "_" (it names files and folders).'
    )
  gin_utils.write_config(model_dir, f'config_{name}.gin')
  cfg = judgments_config
  if cfg.labels not in judgments.LABELS:
    raise errors.DataError(f'JudgmentsConfig.labels={cfg.labels!r}; use one of {judgments.LABELS}.')
  first, count = train_source_slice(cfg)
  g0_dir = model_dir_lib.ModelDir(model_dir).grow('g0' if name == 'rm' else f'{name}_g0')
  vocab_path = tasks.get_vocabulary(cfg.task).sentencepiece_model_file
  sp = spm.SentencePieceProcessor(model_file=vocab_path)
  if rm_config.encoder.vocab_size < sp.vocab_size():
    raise errors.DataError(
      f'Reward model vocab_size={rm_config.encoder.vocab_size} < {sp.vocab_size()} pieces of '
      f'{vocab_path}; set --gin.VOCAB_SIZE={sp.vocab_size()}.'
    )
  tic = time.time()
  synth_train = _synthetic(cfg, 'train', count, first)
  synth_train += _policy_judgments(model_dir, policy_config, cfg, g0_dir)
  mqm_train, mqm_eval = _mqm(cfg)
  eval_sets = {
    'synthetic_validation': _synthetic(cfg, 'validation', cfg.num_eval_sources),
    # MT outputs only, as in the WMT metrics task (reference rows have no reference).
    'mqm_ende_heldout_docs': [j for j in mqm_eval if j.reference],
  }
  train_js = synth_train + mqm_train
  mixture = _register_judgments(
    cfg, vocab_path, rm_config.max_length, synth_train, mqm_train, eval_sets, prefix=name
  )
  logging.info('RM data: %d train judgments in %.1fs', len(train_js), time.time() - tic)

  mesh = partitioning.make_mesh(mesh_config)
  tx = optimizers.make(optimizer, num_train_steps)
  md = model_dir_lib.ModelDir(model_dir)

  def init_fn(r):
    return reward_model.init_params(rm_config, r)['params']

  if init_checkpoint is None or train_loop.resumable(md, name):
    state, shardings = train_state_lib.create_sharded(init_fn, tx, jax.random.key(seed), mesh)
  else:
    params, _ = reward_model.load_params(rm_config, md.checkpoint(init_checkpoint), mesh=mesh)
    state, shardings = train_state_lib.from_params(params, init_fn, tx, mesh)

  def batches(start: int):
    if loss == 'bradley_terry':  # Preference pairs within a source, built in memory.
      pairs = _bt_pairs(
        _encode(sp, train_js, rm_config.max_length),
        [j.doc or j.source for j in train_js],
        np.random.RandomState(seed),
      )
      return (_batch_at(pairs, s, batch_size, seed) for s in itertools.count(start))
    stream = judgment_tasks.get_batches(  # Regression: the seqio mixture of the judgment tasks.
      mixture,
      'train',
      batch_size=batch_size,
      max_length=rm_config.max_length,
      shuffle=True,
      seed=seed,
      repeat=True,
    )
    for _ in range(start):  # Exact resume: replay the data order.
      next(stream)
    return ({'inputs': b['inputs'], 'score': b['score']} for b in stream)

  loop = train_loop.run(
    phase=name,
    model_dir=md,
    steps=trainer.Trainer(
      loss_fn=reward_model.make_loss_fn(rm_config, loss),
      tx=tx,
      mesh=mesh,
      state_shardings=shardings,
    ),
    state=state,
    shardings=shardings,
    batches=batches,
    rng=jax.random.key(seed + 1),
    config=train_loop.LoopConfig(
      num_steps=num_train_steps, log_period=log_period, checkpoint_period=num_train_steps, keep=1
    ),
    progress=progress,
  )
  state = loop.state
  writer = summaries.Writer(md.summaries(name))
  result = _evaluate(
    rm_config,
    state.params,
    mesh,
    sp,
    eval_sets,
    _pairs(cfg.task, 'validation', cfg.num_eval_sources),
    eval_batch_size,
  )
  result.update(
    name=name,
    step=int(state.step),
    loss=loss,
    labels=cfg.labels,
    train_sources={'split': 'train', 'first': first, 'count': count},
    policy_samples_dir=g0_dir if cfg.policy_samples_per_source > 0 else None,
    num_train_judgments=len(train_js),
    num_mqm_train=len(mqm_train),
    num_eval={k: len(v) for k, v in eval_sets.items()},
    checkpoint=md.last(name),
  )
  for set_name, s in result['sets'].items():
    writer.scalars(
      f'eval_{set_name}', int(state.step), {k: v for k, v in s['model'].items() if np.isfinite(v)}
    )
  writer.close()
  result = _no_nan(result)
  eval_file = 'reward_model.json' if name == 'rm' else f'reward_model_{name}.json'
  files.write_json(model_dir_lib.ModelDir(model_dir).eval(eval_file), result)
  _print_table(result)
  return result


def _register_judgments(
  cfg, vocab_path, max_length, synth_train, mqm_train, eval_sets, prefix='rm'
) -> str:
  """The judgments as seqio tasks and their mixture (rates proportional to size)."""
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
