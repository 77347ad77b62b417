"""`--run_mode=rest`: the ReST loop, as a resumable list of phases.

  bc            behaviour cloning on the human data (or an `initial_policy`)
  rm            train the reward model (or load `rm_checkpoint`, or use `reward`)
  eval_bc       validation and test of the BC policy: row (bc, g=0, i=0)
  for g in 1..G:
    grow_g<g>        sample with the latest policy, score, write grow/g<g>
    for i in 1..I:
      improve_g<g>_i<i>  filter D_g with the schedule's step i-1, fine-tune from
                         the previous policy (ReST) or the base policy (ReST-EM)
      eval_g<g>_i<i>     validation and test of its best checkpoint: row (improve, g, i)

`MODEL_DIR/rest_state.json` (written atomically after every phase) lists the
plan, the finished phases and the policy each Grow samples from. A restarted
run skips finished phases and re-enters the phase it was in; every phase
resumes from its own checkpoints (BC and Improve from `last`, Grow from its
finished shards). Every phase is a deterministic function of its config, seed
and the phases before it (data order and dropout keys come from fixed seeds
and the step), so a resumed run ends with the same parameters and the same
`eval/summary.json` as an uninterrupted one. Only NUM_GROW_ROUNDS may change
between restarts (more rounds continue a finished run).

`eval/summary.json` has one row per evaluated policy: phase, g, i, tau,
loss_name, n_train_examples, val_reward, val_bleu, val_chrf, test_reward,
test_bleu, test_chrf (plus, per split, `length_ratio` (output words over
reference words), `repetition_rate` and `hacking_rate` (`metrics.hacking_flags`),
which show a policy exploiting its reward model; the checkpoint and its step).
It is rewritten after every eval phase. With `best_of_n`, the BC and the final
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

from rest_jax import (
  errors,
  evaluation,
  gin_utils,
  grow,
  improve,
  infer,
  models,
  multihost,
  network,
  optimizers,
  partitioning,
  report,
  reward_model,
  reward_training,
  rewards,
  summaries,
  tasks,
  train,
)

STATE_FILE = 'rest_state.json'
SUMMARY_COLUMNS = (
  'phase',
  'g',
  'i',
  'tau',
  'loss_name',
  'n_train_examples',
  'val_reward',
  'val_bleu',
  'val_chrf',
  'test_reward',
  'test_bleu',
  'test_chrf',
)


@dataclasses.dataclass(frozen=True)
class BCConfig:
  """The BC phase (`train.train` with these arguments)."""

  train_data: train.TrainDataConfig  # The human data stream.
  optimizer: optimizers.OptimizerConfig = optimizers.OptimizerConfig()
  num_train_steps: int = 500  # Optimizer steps.
  eval_period: int = 250  # Steps between validations (the best checkpoint is by chrF).
  log_period: int = 50  # Steps between logged train metrics.
  # Start from this policy checkpoint (e.g. 'pretrained/best' of --run_mode=import_t5).
  init_checkpoint: str | None = None


@dataclasses.dataclass(frozen=True)
class RewardModelPhase:
  """The reward-model phase (`reward_training.train_rm` with these arguments)."""

  rm_config: reward_model.RewardModelConfig  # The reward model's network and input length.
  judgments: reward_training.JudgmentsConfig  # Its training and evaluation judgments.
  optimizer: optimizers.OptimizerConfig = optimizers.OptimizerConfig()
  num_train_steps: int = 800  # Optimizer steps.
  batch_size: int = 64  # Judgments per step.
  loss: str = 'regression'  # 'regression' or 'bradley_terry'.
  # Start from this reward-model checkpoint (e.g. 'pretrained_rm/best' of --run_mode=import_t5).
  init_checkpoint: str | None = None


def plan(num_grow_rounds: int, num_improve_steps: int, *, bc: bool, rm: bool) -> list[str]:
  """The phase names of a run, in order (see the module docstring)."""
  phases = (['bc'] if bc else []) + (['rm'] if rm else []) + ['eval_bc']
  for g in range(1, num_grow_rounds + 1):
    phases.append(f'grow_g{g}')
    for i in range(1, num_improve_steps + 1):
      phases += [f'improve_g{g}_i{i}', f'eval_g{g}_i{i}']
  return phases


def read_state(model_dir: str) -> dict | None:
  """`MODEL_DIR/rest_state.json`, or None before the first phase finished."""
  path = os.path.join(model_dir, STATE_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def read_summary(model_dir: str) -> list[dict]:
  """The rows of `MODEL_DIR/eval/summary.json` ([] if none yet)."""
  path = os.path.join(model_dir, 'eval', 'summary.json')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return json.load(f)['rows']


def format_summary(rows: list[dict]) -> str:
  """The summary rows as a fixed-width table (the paper's Table 1 shape)."""
  head = f'{"phase":<8}{"g":>3}{"i":>3}{"tau":>8}{"loss":>8}{"n_train":>9}'
  head += ''.join(f'{c:>12}' for c in SUMMARY_COLUMNS[6:])
  lines = [head]
  for r in rows:
    tau = '-' if r['tau'] is None else f'{r["tau"]:.3g}'
    line = f'{r["phase"]:<8}{r["g"]:>3}{r["i"]:>3}{tau:>8}{r["loss_name"]:>8}'
    line += f'{r["n_train_examples"]:>9}'
    line += ''.join(
      f'{r[c]:>12.4f}' if 'reward' in c else f'{r[c]:>12.2f}' for c in SUMMARY_COLUMNS[6:]
    )
    lines.append(line)
  return '\n'.join(lines)


class _Run:
  """The state of one run: which phases are done, written after each."""

  def __init__(self, model_dir: str, phases: list[str], config: dict):
    self.model_dir = model_dir
    self.path = os.path.join(model_dir, STATE_FILE)
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
    multihost.on_primary(lambda: evaluation.write_json(self.path, self.state), self.path)


def rest(
  *,
  model_dir: str,
  model_config: network.T5Config,
  task: Any,
  bc: BCConfig,
  reward_model_phase: RewardModelPhase | None = None,
  reward: rewards.RewardFn | None = None,
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
  dry_run: bool = False,
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
      (absolute, or relative to `MODEL_DIR/checkpoints`).
    rm_checkpoint: a trained reward-model checkpoint directory to load
      (with `reward_model_phase.rm_config`) instead of training one.
    mesh_config: device mesh.
    seed: parameter-init and dropout seed.
    max_phases: run at most this many phases, then return (None: all); a
      later call continues.
    progress: progress bars.
    dry_run: print the operative config and return None.

  Returns:
    The summary rows, one per evaluated policy, in plan order.
  """
  if dry_run:
    gin_utils.print_operative_config()
    return None
  if reward is None and reward_model_phase is None:
    raise errors.UserInputError(
      'rest: give a reward source (REWARD) or a reward model (the reward_model_phase binding).'
    )
  gin_utils.write_config(model_dir, 'config.gin')
  train_rm = reward is None and rm_checkpoint is None
  phases = plan(num_grow_rounds, num_improve_steps, bc=initial_policy is None, rm=train_rm)
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
    },
  )
  base = initial_policy or 'bc/best'
  if reward is None:
    reward = rewards.LearnedReward(
      checkpoint_dir=rm_checkpoint or os.path.join(model_dir, 'checkpoints', 'rm', 'last'),
      config=reward_model_phase.rm_config,
      vocab_path=tasks.get_vocabulary(task).sentencepiece_model_file,
    )
  test_config = dataclasses.replace(eval_config, split='test', max_examples=test_examples)
  ran = 0
  for phase in phases:
    if run.done(phase):
      continue
    if max_phases is not None and ran >= max_phases:
      logging.info('Stopping before %s (max_phases=%d).', phase, max_phases)
      break
    print(f'[rest] phase {phase} ({phases.index(phase) + 1}/{len(phases)})', flush=True)
    run.start(phase)
    tic = time.time()
    updates = {}
    kind, *numbers = phase.split('_')
    if phase == 'bc':
      train.train(
        model_dir=model_dir,
        model_config=model_config,
        train_data=bc.train_data,
        eval_config=eval_config,
        optimizer=bc.optimizer,
        num_train_steps=bc.num_train_steps,
        log_period=bc.log_period,
        eval_period=bc.eval_period,
        mesh_config=mesh_config,
        seed=seed,
        init_checkpoint=bc.init_checkpoint,
        progress=progress,
      )
    elif phase == 'rm':
      rm = reward_model_phase
      reward_training.train_rm(
        model_dir=model_dir,
        rm_config=rm.rm_config,
        policy_config=model_config,
        judgments_config=rm.judgments,
        optimizer=rm.optimizer,
        num_train_steps=rm.num_train_steps,
        batch_size=rm.batch_size,
        loss=rm.loss,
        mesh_config=mesh_config,
        seed=seed,
        init_checkpoint=rm.init_checkpoint,
        progress=progress,
      )
    elif kind == 'grow':
      g = int(numbers[0][1:])
      policy = base if g == 1 else f'g{g - 1}_i{num_improve_steps}/best'
      if num_improve_steps == 0 and g > 1:
        policy = base
      grow.grow(
        model_dir=model_dir,
        model_config=model_config,
        grow_config=grow_config,
        sampling=sampling,
        reward=reward,
        grow_round=g,
        policy_checkpoint=policy,
        mesh_config=mesh_config,
        progress=progress,
      )
      updates = {'policies': {phase: policy}}
    elif kind == 'improve':
      g, i = int(numbers[0][1:]), int(numbers[1][1:])
      if improve_config.init_from == 'base':
        init = base
      elif i > 1:
        init = f'g{g}_i{i - 1}/best'
      else:
        init = run.state['policies'][f'grow_g{g}']  # The policy that sampled D_g.
      improve.improve(
        model_dir=model_dir,
        model_config=model_config,
        improve_config=improve_config,
        eval_config=eval_config,
        reward=reward,
        grow_round=g,
        improve_step=i,
        init_checkpoint=init,
        baseline=_baseline(model_dir, init, base),
        mesh_config=mesh_config,
        seed=seed,
        progress=progress,
      )
      updates = {'policies': {phase: init}}
    else:  # eval_bc, eval_g<g>_i<i>
      _evaluate_phase(
        model_dir,
        model_config,
        phase,
        base,
        improve_config,
        eval_config,
        test_config,
        reward,
        mesh_config,
        progress,
        task,
      )
      _write_summary(model_dir, phases, run)
      if best_of_n is not None and phase in ('eval_bc', phases[-1]):
        name = 'bc' if phase == 'eval_bc' else 'final'
        checkpoint = base if phase == 'eval_bc' else f'{phase[len("eval_") :]}/best'
        infer.infer(
          model_dir=model_dir,
          model_config=model_config,
          infer_config=best_of_n,
          reward=reward,
          checkpoint=checkpoint,
          name=name,
          mesh_config=mesh_config,
          progress=progress,
        )
    run.finish(phase, time.time() - tic, **updates)
    ran += 1
    multihost.on_primary(lambda: report.write_report(model_dir), 'the run report')
  rows = read_summary(model_dir)
  if rows:
    print(format_summary(rows), flush=True)
  return rows


def _evaluate_phase(
  model_dir,
  model_config,
  phase,
  base,
  improve_config,
  eval_config,
  test_config,
  reward,
  mesh_config,
  progress,
  task,
) -> dict:
  """Evaluates one policy on validation and test; writes `eval/<phase>.json`."""
  mesh = partitioning.make_mesh(mesh_config)
  model = models.EncoderDecoderModel(model_config)
  if phase == 'eval_bc':
    checkpoint, g, i = base, 0, 0
    row = {
      'phase': 'bc',
      'tau': None,
      'loss_name': 'bc',
      'n_train_examples': tasks.dataset_size(task, 'train'),
    }
  else:
    g, i = (int(x[1:]) for x in phase.split('_')[1:])
    name = improve.phase_name(g, i)
    checkpoint = f'{name}/best'
    with open(os.path.join(model_dir, 'eval', f'{name}_validation.json')) as f:
      done = json.load(f)
    row = {
      'phase': 'improve',
      'tau': done['tau'],
      'loss_name': done['loss_name'],
      'n_train_examples': done['n_train_examples'],
    }
  directory = os.path.join(model_dir, 'checkpoints', checkpoint)
  params, step = evaluation.restore_params(
    model, mesh, directory, None, eval_config.input_length, eval_config.target_length
  )
  params = improve.policy_params(params)
  result = {'checkpoint': directory, 'step': int(step)}
  for split, cfg in (('val', eval_config), ('test', test_config)):
    m = evaluation.evaluate_policy(model, params, mesh, cfg, reward=reward, progress=progress)
    result[split] = m
    keys = ('reward', 'bleu', 'chrf', 'length_ratio', 'repetition_rate', 'hacking_rate')
    row.update({f'{split}_{k}': m[k] for k in keys})
  row.update(g=g, i=i, checkpoint=directory, step=int(step))
  result['row'] = row
  # TensorBoard: one point per evaluated policy, x = its place in the run
  # (0 = BC, then g * 100 + i), for each split's scalar metrics.
  writer = summaries.Writer(os.path.join(model_dir, 'summaries', 'rest'))
  for split in ('val', 'test'):
    scalars = {k: v for k, v in result[split].items() if isinstance(v, (int, float))}
    writer.scalars(split, g * 100 + i, scalars)
  writer.close()
  evaluation.write_json(os.path.join(model_dir, 'eval', f'{phase}.json'), result)
  print(
    f'[rest] {phase}: val reward {row["val_reward"]:.4f} BLEU {row["val_bleu"]:.2f} '
    f'chrF {row["val_chrf"]:.2f} | test reward {row["test_reward"]:.4f}',
    flush=True,
  )
  return result


def _baseline(model_dir: str, checkpoint: str, base: str) -> dict | None:
  """The validation metrics an eval phase already has for `checkpoint`, or None."""
  phase = 'eval_bc' if checkpoint == base else f'eval_{checkpoint.removesuffix("/best")}'
  path = os.path.join(model_dir, 'eval', f'{phase}.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)['val']


def _write_summary(model_dir: str, phases: list[str], run: _Run) -> None:
  """Rewrites `eval/summary.json` from the eval phases' files, in plan order."""
  rows = []
  for phase in phases:
    path = os.path.join(model_dir, 'eval', f'{phase}.json')
    if phase.startswith('eval') and os.path.exists(path):
      with open(path) as f:
        rows.append(json.load(f)['row'])
  evaluation.write_json(
    os.path.join(model_dir, 'eval', 'summary.json'),
    {'columns': list(SUMMARY_COLUMNS), 'rows': rows, 'config': run.state['config']},
  )
