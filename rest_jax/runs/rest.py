"""`--run_mode=rest`: the ReST loop, as a resumable list of phases.

  bc            behaviour cloning on the human data (or an `initial_policy`)
  rm            train the reward model (or load `rm_checkpoint`, or use `reward`)
  rm_judge      train the independent judge: a second reward model on other
                train sources and another seed (with `judge_phase`)
  eval_bc       validation and test of the BC policy: row (bc, g=0, i=0)
  for g in 1..G:
    grow_g<g>        sample with the latest policy, score, write grow/g<g>
    for i in 1..I:
      improve_g<g>_i<i>  filter D_g with the schedule's step i-1, fine-tune from
                         the previous policy (ReST) or the base policy (ReST-EM)
      eval_g<g>_i<i>     validation and test of its best checkpoint: row (improve, g, i)
      bc_more_g<g>_i<i>  (with `control`) the compute-matched BC control: the
                         control's previous policy trained on the human data
                         alone for as many optimizer steps as improve_g<g>_i<i>
                         took, with its batch size, learning rate and selection
    eval_bc_more_g<g>_i<I>  (with `control`) row (bc_more, g, I)

Selection and reporting are separate. Every checkpoint choice (BC's best,
each Improve step's best, early stopping) is made on the validation split, so
a `val_*` column cannot be read as evidence: the selected validation reward
cannot fall. The test split is never selected on: the `test_*` columns are
the results. The independent judge (`judge_*` columns) is a reward the policy
was neither trained nor selected on.

`MODEL_DIR/rest_state.json` (written atomically after every phase) lists the
plan, the finished phases and the policy each Grow samples from. A restarted
run skips finished phases and re-enters the phase it was in; every phase
resumes from its own checkpoints (BC and Improve from `last`, Grow from its
finished shards). Every phase is a deterministic function of its config, seed
and the phases before it (data order and dropout keys come from fixed seeds
and the step), so a resumed run ends with the same parameters and the same
`eval/summary.json` as an uninterrupted one. Only NUM_GROW_ROUNDS may change
between restarts (more rounds continue a finished run).

`eval/summary.json` has one row per evaluated policy (`SUMMARY_COLUMNS`):
phase, g, i, tau, loss_name, n_train_examples, the test split's reward, judge
reward, BLEU, chrF, length ratio and hacking rate, then the validation split's
(selection) reward, judge reward, BLEU and chrF; plus, per split,
`repetition_rate` and `hacking_rate` (`metrics.hacking_flags`), the checkpoint
and its step. `splits` in the file says what each split was used for. It is
rewritten after every eval phase. With `best_of_n`, the BC and the final
policy's eval phases also write the reward-against-N curves
`eval/best_of_n_{bc,final}.json`. `report/report.html` is regenerated after
every phase (`report.write_report`, about 1.5 s).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

from absl import logging

from rest_jax import errors, gin_utils
from rest_jax.core import faults, files, multihost, network, optimizers, partitioning, preemption
from rest_jax.core import model_dir as model_dir_lib
from rest_jax.data import rm_data, tasks
from rest_jax.rewards import reward_fns, reward_model
from rest_jax.runs import (
  bc,
  evaluation,
  grow,
  improve,
  infer,
  pretrained,
  report,
  rest_phases,
  train_rm,
)

STATE_FILE = 'rest_state.json'
SUMMARY_COLUMNS = (
  'phase',
  'g',
  'i',
  'tau',
  'loss_name',
  'n_train_examples',
  'test_reward',
  'test_judge_reward',
  'test_bleu',
  'test_chrf',
  'test_length_ratio',
  'test_hacking_rate',
  'val_reward',
  'val_judge_reward',
  'val_bleu',
  'val_chrf',
)
_FORMATS = {'reward': '.4f', 'ratio': '.3f', 'rate': '.3f'}


@dataclasses.dataclass(frozen=True)
class BCConfig:
  """The BC phase (`bc.train` with these arguments)."""

  train_data: bc.TrainDataConfig  # The human data stream.
  optimizer: optimizers.OptimizerConfig = optimizers.OptimizerConfig()
  num_train_steps: int = 500  # Optimizer steps.
  eval_period: int = 250  # Steps between validations (the best checkpoint is by chrF).
  log_period: int = 50  # Steps between logged train metrics.
  # Start from this policy checkpoint (e.g. 'pretrained/best' of --run_mode=import_t5).
  init_checkpoint: str | None = None


@dataclasses.dataclass(frozen=True)
class RewardModelPhase:
  """The reward-model phase (`train_rm.train_rm` with these arguments)."""

  rm_config: reward_model.RewardModelConfig  # The reward model's network and input length.
  judgments: train_rm.JudgmentsConfig  # Its training and evaluation judgments.
  optimizer: optimizers.OptimizerConfig = optimizers.OptimizerConfig()
  num_train_steps: int = 800  # Optimizer steps.
  batch_size: int = 64  # Judgments per step.
  loss: str = 'regression'  # 'regression' or 'bradley_terry'.
  # Start from this reward-model checkpoint (e.g. 'pretrained_rm/best' of --run_mode=import_t5).
  init_checkpoint: str | None = None


def plan(
  num_grow_rounds: int,
  num_improve_steps: int,
  *,
  bc: bool,
  rm: bool,
  judge: bool = False,
  control: bool = False,
) -> list[str]:
  """The phase names of a run, in order (see the module docstring)."""
  phases = (['bc'] if bc else []) + (['rm'] if rm else []) + (['rm_judge'] if judge else [])
  phases.append('eval_bc')
  for g in range(1, num_grow_rounds + 1):
    phases.append(f'grow_g{g}')
    for i in range(1, num_improve_steps + 1):
      phases += [f'improve_g{g}_i{i}', f'eval_g{g}_i{i}']
      if control:
        phases.append(f'{rest_phases.CONTROL}_g{g}_i{i}')
    if control and num_improve_steps:
      phases.append(f'eval_{rest_phases.CONTROL}_g{g}_i{num_improve_steps}')
  return phases


def read_state(model_dir: str) -> dict | None:
  """`MODEL_DIR/rest_state.json`, or None before the first phase finished."""
  path = model_dir_lib.ModelDir(model_dir).rest_state
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def read_summary(model_dir: str) -> list[dict]:
  """The rows of `MODEL_DIR/eval/summary.json` ([] if none yet)."""
  path = model_dir_lib.ModelDir(model_dir).summary
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return json.load(f)['rows']


def format_summary(rows: list[dict]) -> str:
  """The summary rows as a fixed-width table (the paper's Table 1 shape).

  The `test_*` columns come first: they are the results. The `val_*` columns
  are what selected the checkpoints.
  """
  metrics = SUMMARY_COLUMNS[6:]
  head = f'{"phase":<8}{"g":>3}{"i":>3}{"tau":>8}{"loss":>8}{"n_train":>9}'
  names = [c.replace('_reward', '_rwd').replace('_length', '_len') for c in metrics]
  widths = [max(len(n) + 2, 9) for n in names]
  head += ''.join(f'{n:>{w}}' for n, w in zip(names, widths))
  lines = [
    'test_*: never selected on (the results); val_*: selected on (checkpoints, early stopping)',
    head,
  ]
  for r in rows:
    tau = '-' if r.get('tau') is None else f'{r["tau"]:.3g}'
    line = f'{r["phase"]:<8}{r["g"]:>3}{r["i"]:>3}{tau:>8}{r["loss_name"]:>8}'
    line += f'{r["n_train_examples"]:>9}'
    for c, w in zip(metrics, widths):
      value = r.get(c)
      spec = next((f for k, f in _FORMATS.items() if c.endswith(k)), '.2f')
      line += f'{"-":>{w}}' if value is None else f'{value:>{w}{spec}}'
    lines.append(line)
  return '\n'.join(lines)


class _Run:
  """The state of one run: which phases are done, written after each."""

  def __init__(self, model_dir: str, phases: list[str], config: dict):
    self.model_dir = model_dir
    self.path = model_dir_lib.ModelDir(model_dir).rest_state
    state = read_state(model_dir)
    if state is not None and state['finished']:
      same = {k: v for k, v in state['config'].items() if k != 'num_grow_rounds'} == {
        k: v for k, v in config.items() if k != 'num_grow_rounds'
      }
      if not same or state['finished'] != phases[: len(state['finished'])]:
        raise errors.UserInputError(
          f'{self.path} was written by a run with config {state["config"]} and phases '
          f'{state["finished"]} done, which this config ({config}) does not continue (only '
          'NUM_GROW_ROUNDS may change between restarts). Use a new MODEL_DIR.'
        )
    self.state = state or {'finished': [], 'current': None, 'policies': {}, 'seconds': {}}
    self.state.update(plan=phases, config=config)
    multihost.barrier('rest: state read')  # Before process 0 writes it again.

  def done(self, phase: str) -> bool:
    return phase in self.state['finished']

  def start(self, phase: str) -> None:
    self.state['current'] = phase
    self._write()

  def finish(self, phase: str, seconds: float, **updates: Any) -> None:
    self.state['finished'].append(phase)
    self.state['current'] = None
    self.state['seconds'][phase] = round(seconds, 2)
    for key, value in updates.items():
      self.state[key].update(value)
    self._write()

  def _write(self) -> None:
    # Process 0 writes; every process returns once it has (or raises if it
    # failed), so no process reads a phase's files before the phase finished.
    multihost.on_primary(lambda: files.write_json(self.path, self.state), self.path)


def rest(
  *,
  model_dir: str,
  model_config: network.T5Config,
  task: Any,
  bc: BCConfig,
  reward_model_phase: RewardModelPhase | None = None,
  reward: reward_fns.RewardFn | None = None,
  judge_phase: RewardModelPhase | None = None,
  judge: reward_fns.RewardFn | None = None,
  control: bool = False,
  metric_weight: float = 0.0,
  guard: bool = False,
  grow_config: grow.GrowConfig,
  sampling: grow.SamplingConfig = grow.SamplingConfig(),
  improve_config: improve.ImproveConfig = improve.ImproveConfig(),
  eval_config: evaluation.EvalConfig,
  test_examples: int | None = None,
  best_of_n: infer.InferConfig | None = None,
  num_grow_rounds: int = 2,
  num_improve_steps: int = 3,
  initial_policy: str | None = None,
  rm_checkpoint: str | None = None,
  mesh_config: partitioning.MeshConfig = partitioning.MeshConfig(),
  seed: int = 0,
  max_phases: int | None = None,
  progress: bool = True,
) -> list[dict] | None:
  """Runs (or resumes) the ReST loop and returns the rows of `eval/summary.json`.

  Args:
    model_dir: run directory (see the module docstring and WORKSPACE.md).
    model_config: the policy network.
    task: the human data (seqio task name or `tasks.ParallelCorpus`); BC trains
      on its train split, evaluation uses its validation and test splits.
    bc: the BC phase; skipped with `initial_policy`.
    reward_model_phase: the reward-model phase; used when neither `reward`
      nor `rm_checkpoint` is given (the learned reward of the paper).
    reward: a fixed reward source (a metric, a verifier, ...) for Grow and
      evaluation instead of the learned reward model.
    judge_phase: an independent judge: a second reward model, trained in the
      'rm_judge' phase (its judgments should use other sources and another
      seed); it scores every evaluated policy beside the reward and is never
      used for filtering or selection. Ignored when `judge` is given.
    judge: a fixed judge reward source instead (e.g. a metric the run does not
      train on); None and no `judge_phase`: no judge columns.
    control: add the compute-matched BC control phases (`bc_more_g<g>_i<i>`).
    metric_weight: w > 0 makes the run's reward `reward_fns.Weighted` of the
      learned reward model (1 - w) and sentence chrF against the reference (w),
      a guard against the reward model's blind spots on sources that have
      references (Grow's train sources, validation, test). chrF is then part
      of the training reward: BLEU and the judge stay independent.
    guard: wrap the learned reward in `reward_fns.Guarded` (reference-free
      penalties for empty, copied, looping, too long and too short outputs).
      The reward's probes are written to `eval/reward_probes.json`.
    grow_config: sources, batching and storage of each Grow round.
    sampling: N samples per source, temperature, top-k, top-p.
    improve_config: filter schedule, loss, steps and learning rate of Improve;
      its `init_from` chooses ReST ('previous') or ReST-EM ('base').
    eval_config: validation split and sizes (also the test evaluation).
    test_examples: first N test examples (None: the whole split).
    best_of_n: sources and N of the best-of-N curves of the BC and the final
      policy (reranked by the run's reward); None skips them.
    num_grow_rounds: G.
    num_improve_steps: I, Improve steps per Grow round.
    initial_policy: a policy checkpoint directory to start from instead of BC
      (absolute, or relative to `MODEL_DIR/checkpoints`), or a policy shipped
      in the package, 'shipped:<name>' (`pretrained.py`).
    rm_checkpoint: a trained reward-model checkpoint directory to load
      (with `reward_model_phase.rm_config`) instead of training one.
    mesh_config: device mesh.
    seed: parameter-init and dropout seed.
    max_phases: run at most this many phases, then return (None: all); a
      later call continues.
    progress: progress bars.

  Returns:
    The summary rows, one per evaluated policy, in plan order.
  """
  if reward is None and reward_model_phase is None:
    raise errors.UserInputError(
      'rest: give a reward source (REWARD) or a reward model (the reward_model_phase binding).'
    )
  gin_utils.write_config(model_dir, 'config.gin')
  train_rm = reward is None and rm_checkpoint is None
  train_judge = judge is None and judge_phase is not None
  _check_disjoint_sources(
    task,
    grow_config,
    reward_model_phase if train_rm else None,
    judge_phase if train_judge else None,
  )
  phases = plan(
    num_grow_rounds,
    num_improve_steps,
    bc=initial_policy is None,
    rm=train_rm,
    judge=train_judge,
    control=control,
  )
  run = _Run(
    model_dir,
    phases,
    {
      'num_grow_rounds': num_grow_rounds,
      'num_improve_steps': num_improve_steps,
      'loss': improve_config.loss,
      'init_from': improve_config.init_from,
      'schedule': repr(improve_config.schedule),
      'improve_config': repr(improve_config),
      'reward': repr(reward) if reward is not None else rm_checkpoint or 'reward_model_phase',
      'judge': repr(judge) if judge is not None else 'judge_phase' if train_judge else None,
      'control': control,
      'metric_weight': metric_weight,
      'guard': guard,
    },
  )
  base = initial_policy or 'bc/best'
  if pretrained.is_shipped(initial_policy):  # A policy shipped in the package.
    base = pretrained.install(initial_policy, model_dir)
  vocab_path = tasks.get_vocabulary(task).sentencepiece_model_file
  if reward is None:
    reward = reward_fns.LearnedReward(
      checkpoint_dir=rm_checkpoint or model_dir_lib.ModelDir(model_dir).last('rm'),
      config=reward_model_phase.rm_config,
      vocab_path=vocab_path,
    )
    if metric_weight > 0:
      reward = reward_fns.Weighted(
        components=(reward, reward_fns.SentenceChrF()),
        weights=(1.0 - metric_weight, metric_weight),
        name=f'learned_reward+{metric_weight:g}chrf',
      )
    if guard:
      reward = reward_fns.Guarded(reward, name=f'guarded_{reward.name}')
  if train_judge:
    judge = reward_fns.LearnedReward(
      checkpoint_dir=model_dir_lib.ModelDir(model_dir).last(rest_phases.JUDGE),
      config=judge_phase.rm_config,
      vocab_path=vocab_path,
    )
  ctx = rest_phases.Context(
    model_dir=model_dir,
    model_config=model_config,
    task=task,
    phases=phases,
    bc=bc,
    reward_model_phase=reward_model_phase,
    judge_phase=judge_phase,
    grow_config=grow_config,
    sampling=sampling,
    improve_config=improve_config,
    num_improve_steps=num_improve_steps,
    eval_config=eval_config,
    test_config=dataclasses.replace(eval_config, split='test', max_examples=test_examples),
    best_of_n=best_of_n,
    initial_policy=initial_policy,
    base=base,
    reward=reward,
    judge=judge,
    mesh_config=mesh_config,
    seed=seed,
    progress=progress,
  )
  ran = 0
  for phase in phases:
    if run.done(phase):
      continue
    faults.set_phase(phase)
    faults.point('phase start')
    preemption.check(f'before phase {phase} (the phases before it are done)')
    if max_phases is not None and ran >= max_phases:
      logging.info('Stopping before %s (max_phases=%d).', phase, max_phases)
      break
    print(f'[rest] phase {phase} ({phases.index(phase) + 1}/{len(phases)})', flush=True)
    run.start(phase)
    tic = time.time()
    updates = rest_phases.run_phase(ctx, phase, run.state['policies'])
    if phase.startswith('eval'):
      _write_summary(model_dir, phases, run)
    run.finish(phase, time.time() - tic, **updates)
    ran += 1
    multihost.on_primary(lambda: report.write_report(model_dir), 'the run report')
  rows = read_summary(model_dir)
  if rows:
    print(format_summary(rows), flush=True)
  return rows


def _check_disjoint_sources(task, grow_config, rm_phase, judge_phase) -> None:
  """Refuses reward models trained on the sources Grow samples (or on each other's).

  A reward model that saw a source's reference labelled 1.0 scores that
  source's samples by memory, not by judgment; the judge must not share the
  reward model's sources either.

  Raises:
    errors.UserInputError: two of the ranges overlap.
  """
  phases = [(n, p) for n, p in (('reward model', rm_phase), ('judge', judge_phase)) if p]
  if not phases or grow_config.split != 'train':
    return
  size = tasks.dataset_size(task, 'train')
  first = grow_config.first_source
  count = size - first if grow_config.max_sources is None else grow_config.max_sources
  ranges = {'Grow': range(first, min(first + count, size))}
  for name, p in phases:
    first, count = rm_data.train_source_slice(p.judgments)
    ranges[name] = range(first, first + count)
  names = list(ranges)
  for x, a in enumerate(names):
    for b in names[x + 1 :]:
      ra, rb = ranges[a], ranges[b]
      if ra and rb and max(ra.start, rb.start) < min(ra.stop, rb.stop):
        raise errors.UserInputError(
          f'rest: the {b} trains on train sources [{rb.start}, {rb.stop}), which overlap the '
          f'{a} sources [{ra.start}, {ra.stop}). Give them disjoint ranges (GrowConfig.'
          'first_source / max_sources, JudgmentsConfig.first_train_source / num_train_sources).'
        )


def _write_summary(model_dir: str, phases: list[str], run: _Run) -> None:
  """Rewrites `eval/summary.json` from the eval phases' files, in plan order."""
  rows = []
  for phase in phases:
    path = model_dir_lib.ModelDir(model_dir).eval(f'{phase}.json')
    if phase.startswith('eval') and os.path.exists(path):
      with open(path) as f:
        rows.append(json.load(f)['row'])
  files.write_json(
    model_dir_lib.ModelDir(model_dir).summary,
    {
      'columns': list(SUMMARY_COLUMNS),
      'splits': rest_phases.SPLITS,
      'rows': rows,
      'config': run.state['config'],
    },
  )
