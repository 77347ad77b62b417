"""`--run_mode=train_rm`: train and evaluate the learned, reference-free reward model.

Read top to bottom:

1. Judgments (`rm_judgments.build`). The default is synthetic, built from a
   slice of the task's train split (`JudgmentsConfig.first_train_source`; by
   default its LAST `num_train_sources` sources, so disjoint from the first
   `MAX_SOURCES` sources Grow samples): policy samples from the BC checkpoint
   (a Grow round `grow/g0`) labelled with chrF, the references (label 1), and
   corrupted references labelled by rule or by chrF. Human MQM judgments for
   English-German (WMT TED) can be mixed in, held-out documents never trained on.
2. Training (`rm_training.train`). The same jitted, sharded train step as the
   policy in the shared loop (`train_loop.run`), with a regression or
   Bradley-Terry loss (`rm_data.train_batches`): Orbax checkpoints
   `checkpoints/rm/last`, resume, TensorBoard summaries and a progress bar.
3. Evaluation (`rm_evaluation`). Segment-level Kendall tau and Pearson, and
   pairwise accuracy within a source, on held-out synthetic judgments and
   held-out MQM documents, beside the length and chrF baselines; the
   reward-hacking probes. Everything goes to `MODEL_DIR/eval/reward_model.json`.

Several reward models can share a run directory: `train_rm(name=...)` keeps
each one's files apart (a judge model trained with another seed and another
`first_train_source` slice, e.g.). Name 'rm' (the default, the one ReST uses)
writes `checkpoints/rm/last`, `eval/reward_model.json`, `summaries/rm`,
`config_rm.gin` and `grow/g0`; another name N writes `checkpoints/N/last`,
`eval/reward_model_N.json`, `summaries/N`, `config_N.gin` and `grow/N_g0`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from rest_jax import errors, gin_utils
from rest_jax.core import model_dir as model_dir_lib
from rest_jax.core import network, optimizers, partitioning
from rest_jax.data import rm_data
from rest_jax.rewards import reward_model, rm_evaluation, rm_training
from rest_jax.runs import rm_judgments


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
      `model_dir`: it names the files it writes (module docstring).
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
  data = rm_judgments.build(model_dir, policy_config, cfg, rm_config, name)
  mesh = partitioning.make_mesh(mesh_config)
  md = model_dir_lib.ModelDir(model_dir)
  batches = rm_data.train_batches(
    loss, data.train, data.mixture, data.sp, rm_config.max_length, batch_size, seed
  )
  state = rm_training.train(
    rm_config,
    loss=loss,
    optimizer=optimizer,
    num_steps=num_train_steps,
    log_period=log_period,
    mesh=mesh,
    model_dir=md,
    name=name,
    batches=batches,
    seed=seed,
    init_checkpoint=init_checkpoint,
    progress=progress,
  )
  probe_pairs = rm_data.source_pairs(cfg.task, 'validation', cfg.num_eval_sources)
  result = rm_evaluation.evaluate(
    rm_config, state.params, mesh, data.sp, data.eval_sets, probe_pairs, eval_batch_size
  )
  result.update(name=name, step=int(state.step), loss=loss, labels=cfg.labels)
  result.update(**data.record(cfg.policy_samples_per_source), checkpoint=md.last(name))
  eval_file = 'reward_model.json' if name == 'rm' else f'reward_model_{name}.json'
  return rm_evaluation.write(result, md.summaries(name), int(state.step), md.eval(eval_file))
