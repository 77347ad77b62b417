"""The parts of `--run_mode=online_rl`: its config, loss, state and rollouts.

One iteration k of online RL: the policy theta_k samples N candidates for each
of S sources (`Rollouts.generate`: the compiled sampler on the mesh, the run's
`RewardFn`), the frozen inputs of the loss are computed once (the sampling
policy's and the reference (BC) policy's token log-probabilities, PPO's values
and GAE advantages, or the group-relative advantages), and the R = S N rows
train `epochs` passes of minibatches. The iteration's rows are saved
(`rollouts_<k>.npz`, atomically) before its first update, so a run resumed
inside an iteration trains on the rows the interrupted one drew.

PPO's value network (`models.ValueModel`, its body initialised from the
policy) lives in the same TrainState: params {'policy': ..., 'value': ...},
one optimizer, one train step. GRPO and RLOO have no value network.
"""

from __future__ import annotations

import dataclasses
import glob
import io
import json
import os
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rest_jax import errors
from rest_jax.core import files, improve_losses, losses, models, partitioning, rl_losses, sampler

ALGORITHMS = ('ppo', 'grpo', 'rloo')


@dataclasses.dataclass(frozen=True)
class OnlineRLConfig:
  """What online RL samples, how it updates, and how long."""

  algorithm: str = 'ppo'  # 'ppo' (value network, GAE, KL in the reward), 'grpo' or 'rloo'.
  num_iterations: int = 20  # Sample-then-update iterations.
  sources_per_iteration: int = 16  # S sources per iteration (cycling through the source range).
  num_samples: int = 4  # N samples per source (the group of 'grpo' / 'rloo': >= 2).
  temperature: float = 1.0  # Sampling temperature (1.0: on-policy).
  epochs: int = 2  # Passes over each iteration's S * N rows.
  minibatch_size: int = 32  # Rows per update; divides S * N.
  learning_rate: float = 1e-4  # AdamW, constant after `warmup_steps`.
  warmup_steps: int = 0  # Linear warm-up of the learning rate.
  clip_eps: float = 0.2  # PPO's ratio clip range.
  value_clip: float = 0.2  # How far a value may move from the sampling-time value (PPO).
  value_coef: float = 0.5  # Weight of the value loss (PPO).
  entropy_coef: float = 0.0  # Weight of the entropy bonus.
  gamma: float = 1.0  # Discount (PPO's GAE).
  lam: float = 0.95  # GAE lambda (PPO).
  kl_coef: float = 0.05  # Initial weight of the KL to the reference (BC) policy.
  kl_target: float = 0.0  # Per-sample KL the adaptive controller holds (0: kl_coef is fixed).
  kl_horizon: float = 10000.0  # The controller's horizon in samples (Ziegler et al.).
  whiten_advantages: bool = True  # Normalise PPO's advantages over each iteration's tokens.
  input_length: int = 32  # Encoder length S (longer sources are cut).
  target_length: int = 32  # Sample length T (a sample without EOS stops there).
  split: str = 'train'  # The split whose sources are sampled.
  first_source: int = 0  # Sources [first_source, first_source + max_sources) of the split,
  max_sources: int | None = None  # as Grow reads them (None: all from first_source on).
  eval_every: int = 5  # Iterations between validations (and at the end).
  patience: int = 0  # Stop after this many validations without a better reward (0: never).
  seed: int = 0  # Sampling and minibatch-order seed.

  def __post_init__(self):
    if self.algorithm not in ALGORITHMS:
      raise errors.UserInputError(
        f'OnlineRLConfig.algorithm={self.algorithm!r}: use one of {", ".join(ALGORITHMS)}.'
      )
    if self.algorithm != 'ppo' and self.num_samples < 2:
      raise errors.UserInputError(
        f'OnlineRLConfig.num_samples={self.num_samples}: {self.algorithm} compares the samples '
        'of a source with each other; use >= 2.'
      )
    if min(self.num_iterations, self.sources_per_iteration, self.num_samples, self.epochs) < 1:
      raise errors.UserInputError('OnlineRLConfig: iterations, sources, samples, epochs >= 1.')
    if self.minibatch_size < 1 or self.rows % self.minibatch_size:
      raise errors.UserInputError(
        f'OnlineRLConfig.minibatch_size={self.minibatch_size} must divide the '
        f'{self.rows} rows of an iteration (sources_per_iteration * num_samples).'
      )
    if self.eval_every < 1:
      raise errors.UserInputError(f'OnlineRLConfig.eval_every={self.eval_every} must be >= 1.')

  @property
  def rows(self) -> int:
    """R = S * N sampled rows per iteration."""
    return self.sources_per_iteration * self.num_samples

  @property
  def steps_per_iteration(self) -> int:
    """Optimizer steps per iteration: epochs * R / minibatch_size."""
    return self.epochs * self.rows // self.minibatch_size

  @property
  def num_train_steps(self) -> int:
    """Optimizer steps of the whole run."""
    return self.num_iterations * self.steps_per_iteration


def make_loss_fn(model: models.PolicyModel, config: OnlineRLConfig):
  """The online RL loss as `loss_fn(params, batch, rng) -> (loss, metrics)`.

  The batch holds the seq2seq features and the frozen inputs of `Rollouts`:
  'old_log_probs', 'ref_log_probs' [B, T], 'advantages' ([B, T] for PPO, [B]
  otherwise), PPO's 'old_values' and 'returns' [B, T], 'kl_coef' [B] (the
  iteration's coefficient in every row), and the samples' 'reward' and
  'sample_kl' [B] (logged, with their length, as `sample_*` metrics).

  Args:
    model: the policy.
    config: the run's `OnlineRLConfig`.

  Returns:
    The loss function of `trainer.Trainer`: PPO's clipped policy loss plus
    `value_coef` times its value loss, or the group-relative loss with its KL;
    minus `entropy_coef` times the token-mean entropy.
  """
  value_model = models.ValueModel(model.config) if config.algorithm == 'ppo' else None

  def loss_fn(params, batch, rng):
    del rng  # No dropout: the ratio to the sampling policy must be 1 before any update.
    logits = model.logits(params['policy'], batch)
    weights = batch['decoder_loss_weights'].astype(jnp.float32)
    log_probs = models.token_log_probs(logits, batch['decoder_target_tokens'])
    if config.algorithm == 'ppo':
      loss, metrics = rl_losses.ppo_policy_loss(
        log_probs, weights, batch['old_log_probs'], batch['advantages'], config.clip_eps
      )
      values = value_model.values(params['value'], batch)
      value_loss, value_metrics = rl_losses.ppo_value_loss(
        values, weights, batch['old_values'], batch['returns'], config.value_clip
      )
      loss, metrics = loss + config.value_coef * value_loss, {**metrics, **value_metrics}
    else:
      loss, metrics = rl_losses.group_relative_loss(
        log_probs,
        weights,
        batch['old_log_probs'],
        batch['ref_log_probs'],
        batch['advantages'],
        config.clip_eps,
        jnp.mean(batch['kl_coef']),
      )
    entropy = losses.token_mean(rl_losses.token_entropy(logits), weights)
    loss = loss - config.entropy_coef * entropy
    # The samples' own figures: averaged over an iteration's steps (the loop logs
    # once per iteration), each is the iteration's mean, as every row is seen
    # `epochs` times.
    rollout = {
      'sample_reward': jnp.mean(batch['reward']),
      'sample_kl': jnp.mean(batch['sample_kl']),
      'sample_length': jnp.mean(weights.sum(-1)),
    }
    return loss, {**metrics, **rollout, 'loss': loss, 'entropy': entropy}

  return loss_fn


def state_params(model: models.PolicyModel, config: OnlineRLConfig, policy: Any):
  """(params, init_fn): the TrainState's params around the starting `policy`, and their init.

  PPO: {'policy': policy, 'value': a value network whose body is a copy of the
  policy's and whose head is freshly initialised}; otherwise {'policy': policy}.
  `init_fn(rng)` gives boxed params of the same tree (for the shardings).
  """
  value_model = models.ValueModel(model.config) if config.algorithm == 'ppo' else None
  s, t = config.input_length, config.target_length

  def init_fn(rng):
    tree = {'policy': model.init(rng, s, t)['params']}
    if config.algorithm == 'ppo':
      tree['value'] = value_model.init(rng, s, t)['params']
    return tree

  params = {'policy': policy}
  if config.algorithm == 'ppo':
    head = nn.unbox(value_model.init(jax.random.key(config.seed), s, t))['params']
    body = jax.tree.map(jnp.copy, policy)  # Its own buffers: the train step donates the state.
    params['value'] = models.value_params_from_policy(body, head)
  return params, init_fn


def source_indices(config: OnlineRLConfig, iteration: int, num_sources: int) -> np.ndarray:
  """[S] indices into the source range for `iteration`: epochs of seeded permutations."""
  s = config.sources_per_iteration
  start = iteration * s
  out = []
  while len(out) < s:
    epoch, offset = divmod(start + len(out), num_sources)
    perm = np.random.default_rng([config.seed, epoch]).permutation(num_sources)
    out.extend(perm[offset : offset + s - len(out)].tolist())
  return np.asarray(out, np.int64)


class Rollouts:
  """Samples, scores and stores the rows of each iteration; serves its minibatches.

  Args:
    config: the run's `OnlineRLConfig`.
    model: the policy.
    ref_params: the reference (BC) policy's params (frozen).
    sources: `grow_sources.Sources` of the source range.
    vocab: the task's vocabulary (`decode`).
    reward: the `RewardFn` that scores every sample.
    mesh: the device mesh.
    paths: the run directory.
    phase: the phase name (folders and files).
  """

  def __init__(self, config, model, ref_params, sources, vocab, reward, mesh, paths, phase):
    self.cfg, self.model, self.ref_params = config, model, ref_params
    self.sources, self.vocab, self.reward, self.mesh = sources, vocab, reward, mesh
    self.folder, self.log_path = paths.rollouts(phase), paths.rollout_log(phase)
    # PPO only: group-relative methods need no value network (and run any policy).
    self.value_model = models.ValueModel(model.config) if config.algorithm == 'ppo' else None
    # The iterations run so far (`start` drops those a resumed attempt redoes);
    # read here too, so that a resume with no step left still accounts for them.
    self.log: list[dict] = files.read_jsonl(self.log_path)
    self._data: dict[str, np.ndarray] | None = None
    self._iteration = -1

  def _path(self, iteration: int) -> str:
    return os.path.join(self.folder, f'rollouts_{iteration}.npz')

  def start(self, iteration: int) -> None:
    """Before the first step of an attempt at `iteration`: drop later rows and log lines."""
    self.log = [r for r in files.read_jsonl(self.log_path) if r['iteration'] < iteration]
    for path in glob.glob(os.path.join(self.folder, 'rollouts_*.npz')):
      if int(path.rsplit('_', 1)[1].split('.')[0]) > iteration:
        os.remove(path)

  def batch(self, step: int, params: Any) -> dict[str, np.ndarray]:
    """The host minibatch of optimizer step `step` (1-based); `params` are the state's before it."""
    iteration, j = divmod(step - 1, self.cfg.steps_per_iteration)
    if iteration != self._iteration:
      self._data = self._load(iteration) or self._generate(iteration, params)
      self._iteration = iteration
    per_epoch = self.cfg.rows // self.cfg.minibatch_size
    epoch, i = divmod(j, per_epoch)
    order = np.random.default_rng([self.cfg.seed, iteration, epoch, 1]).permutation(self.cfg.rows)
    rows = order[i * self.cfg.minibatch_size : (i + 1) * self.cfg.minibatch_size]
    return {k: v[rows] for k, v in self._data.items()}

  def _load(self, iteration: int) -> dict[str, np.ndarray] | None:
    """The saved rows of `iteration` (and its log line), or None."""
    if not os.path.exists(self._path(iteration)):
      return None
    with np.load(self._path(iteration)) as f:
      data = {k: f[k] for k in f.files}
    row = json.loads(str(data.pop('log_row')))
    shape = (self.cfg.rows, self.cfg.target_length)
    if data['decoder_target_tokens'].shape != shape or row.get('algorithm') != self.cfg.algorithm:
      raise errors.UserInputError(
        f'{self._path(iteration)} holds {data["decoder_target_tokens"].shape} rows of '
        f'{row.get("algorithm")}, not the {shape} of {self.cfg.algorithm} this config draws: '
        f"it is left from another run. Delete {self.folder} and the phase's checkpoints."
      )
    if not any(r['iteration'] == iteration for r in self.log):
      self.log.append(row)
      files.write_jsonl(self.log_path, self.log)
    return data

  def _kl_coef(self, iteration: int) -> float:
    """The KL coefficient of `iteration`: the controller's output after the previous one."""
    prev = [r for r in self.log if r['iteration'] == iteration - 1]
    return prev[0]['next_kl_coef'] if prev else self.cfg.kl_coef

  def _generate(self, iteration: int, params: Any) -> dict[str, np.ndarray]:
    """Samples and scores `iteration`'s rows with the policy `params['policy']`; saves them."""
    cfg, tic = self.cfg, time.time()
    idx = source_indices(cfg, iteration, len(self.sources.texts))
    n, t = cfg.num_samples, cfg.target_length
    eos_id = self.model.config.eos_id
    enc = sampler.pad_rows(
      [self.sources.tokens[i] for i in idx], len(idx), cfg.input_length, eos=True, eos_id=eos_id
    )
    draw = sampler.Sampler(
      self.model,
      params['policy'],
      self.mesh,
      num_samples=n,
      max_length=t,
      temperature=cfg.temperature,
    )
    key = jax.random.fold_in(jax.random.key(cfg.seed), iteration)
    tokens = draw.sample(enc, key)[0].reshape(-1, t)  # [R, T]
    enc = np.repeat(enc, n, axis=0)
    candidates = [self.vocab.decode(sampler.strip(row, eos_id).tolist()) for row in tokens]
    texts = [self.sources.texts[i] for i in idx for _ in range(n)]
    refs = [self.sources.references[i] for i in idx for _ in range(n)]
    reward = self.reward(texts, candidates, refs if self.reward.needs_references else None).reward
    sampled = time.time() - tic
    dec_in = np.zeros_like(tokens)
    dec_in[:, 1:] = tokens[:, :-1]
    weights = (tokens > 0).astype(np.float32)
    data = {
      'encoder_input_tokens': enc,
      'decoder_input_tokens': dec_in,
      'decoder_target_tokens': tokens,
      'decoder_loss_weights': weights,
      'reward': reward,
    }
    kl_coef = self._kl_coef(iteration)
    data.update(self._frozen(data, params, kl_coef))
    kl = float(np.mean(data['sample_kl']))
    finished = (tokens == eos_id).any(-1)
    row = {
      'iteration': iteration,
      'algorithm': cfg.algorithm,
      'started': tic,  # Wall clock: the time between iterations (`rest_online.iterations`).
      'reward': float(reward.mean()),
      'reward_std': float(reward.std()),
      'kl': kl,
      'kl_coef': kl_coef,
      'next_kl_coef': rl_losses.adaptive_kl_coef(
        kl_coef, kl, cfg.kl_target, cfg.kl_horizon, cfg.rows
      ),
      'length': float(weights.sum(-1).mean()),
      'unfinished': float(1.0 - finished.mean()),
      'samples': cfg.rows,
      'sampled_tokens': int(weights.sum()),
      'sample_seconds': round(sampled, 3),
      'rollout_seconds': round(time.time() - tic, 3),
    }
    buffer = io.BytesIO()
    np.savez(buffer, **data, log_row=np.asarray(json.dumps(row)))
    files.write_bytes(self._path(iteration), buffer.getvalue())
    for old in range(iteration):  # A resume never goes back past this iteration's start.
      if os.path.exists(self._path(old)):
        os.remove(self._path(old))
    self.log.append(row)
    files.write_jsonl(self.log_path, self.log)
    return data

  def _frozen(self, data: dict, params: Any, kl_coef: float) -> dict[str, np.ndarray]:
    """The loss's frozen inputs of the rows (`make_loss_fn`), and each row's 'sample_kl' [R]."""
    cfg = self.cfg
    batch = partitioning.shard_batch(data, self.mesh)
    with partitioning.axis_rules(self.mesh):
      # The jitted teacher-forced passes Improve uses for its frozen networks.
      old = improve_losses.lagged_log_probs(self.model, params['policy'], batch)
      ref = improve_losses.lagged_log_probs(self.model, self.ref_params, batch)
      values = None
      if 'value' in params:
        values = improve_losses.values(self.value_model, params['value'], batch)
    old, ref = np.asarray(jax.device_get(old)), np.asarray(jax.device_get(ref))
    weights, reward = data['decoder_loss_weights'], data['reward']
    out = {
      'old_log_probs': old,
      'ref_log_probs': ref,
      'kl_coef': np.full(cfg.rows, kl_coef, np.float32),
    }
    if cfg.algorithm == 'ppo':
      values = np.asarray(jax.device_get(values))
      token_rewards, kl = rl_losses.kl_penalized_rewards(reward, old, ref, weights, kl_coef)
      adv, returns = rl_losses.gae(token_rewards, values, weights, cfg.gamma, cfg.lam)
      if cfg.whiten_advantages:
        adv = rl_losses.whiten(adv, weights)
      out.update(old_values=values * weights, returns=np.asarray(returns))
    else:
      kl = ((old - ref) * weights).sum(-1)
      adv = rl_losses.group_advantages(reward, cfg.num_samples, cfg.algorithm)
    out['advantages'] = np.asarray(adv, np.float32)
    out['sample_kl'] = np.asarray(kl, np.float32)
    return out


def accounting(config: OnlineRLConfig, log: list[dict], steps: int) -> dict:
  """What the run spent, for comparisons at equal samples or compute.

  Args:
    config: the run's config.
    log: the rollout log rows of the iterations run.
    steps: optimizer steps taken.

  Returns:
    `iterations`, `distinct_samples` (rows sampled), `sampled_tokens` (their
    real tokens), `train_tokens` (rows x target length through the policy's
    forward and backward passes, padding included: the compute, counted as
    Improve counts it) and `rollout_seconds` (sampling, scoring, frozen inputs).
  """
  return {
    'iterations': len(log),
    'distinct_samples': int(sum(r['samples'] for r in log)),
    'sampled_tokens': int(sum(r['sampled_tokens'] for r in log)),
    'train_tokens': int(steps * config.minibatch_size * config.target_length),
    'rollout_seconds': round(sum(r['rollout_seconds'] for r in log), 2),
  }
