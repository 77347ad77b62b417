"""The phases of the ReST loop: the plan (`plan`) and what each of its phases runs.

`rest_loop.run` keeps the run state (`rest_state`) and the summary
(`rest_summary`); for each phase it calls `run_phase(context, phase,
policies)`, which calls the driver of that phase (`bc.train`,
`train_rm.train_rm`, `grow.grow`, `improve.improve`, the evaluation of a policy
on validation and test, and `infer.infer` for the best-of-N curves) with the
run's configuration.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from rest_jax.core import (
  checkpoints,
  files,
  improve_losses,
  metrics,
  models,
  network,
  partitioning,
  summaries,
)
from rest_jax.core import model_dir as model_dir_lib
from rest_jax.data import tasks
from rest_jax.rewards import corruptions, reward_fns, rm_metrics
from rest_jax.runs import (
  bc,
  evaluation,
  grow,
  improve,
  improve_steps,
  infer,
  policy_eval,
  rest_online,
  train_rm,
)

JUDGE = 'rm_judge'  # The independent judge's phase and checkpoint name.
CONTROL = 'bc_more'  # The compute-matched BC control's phase and checkpoint prefix.
# What each split is used for (written into eval/summary.json and the report).
SPLITS = {
  'val': 'validation: selects every checkpoint and stops early (selected on; not evidence)',
  'test': 'test: never selected on (the results)',
  'judge': 'judge: a reward the policy was neither trained nor selected on',
}


def plan(
  num_grow_rounds: int,
  num_improve_steps: int,
  *,
  bc: bool,
  rm: bool,
  judge: bool = False,
  control: bool = False,
) -> list[str]:
  """The phase names of a run, in order.

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

  Args:
    num_grow_rounds: G.
    num_improve_steps: I, Improve steps per Grow round.
    bc: with the BC phase (no `initial_policy`).
    rm: with the reward-model phase (no fixed reward, no `rm_checkpoint`).
    judge: with the judge's phase.
    control: with the compute-matched BC control's phases.

  Returns:
    The phase names.
  """
  phases = (['bc'] if bc else []) + (['rm'] if rm else []) + (['rm_judge'] if judge else [])
  phases.append('eval_bc')
  for g in range(1, num_grow_rounds + 1):
    phases.append(f'grow_g{g}')
    for i in range(1, num_improve_steps + 1):
      phases += [f'improve_g{g}_i{i}', f'eval_g{g}_i{i}']
      if control:
        phases.append(f'{CONTROL}_g{g}_i{i}')
    if control and num_improve_steps:
      phases.append(f'eval_{CONTROL}_g{g}_i{num_improve_steps}')
  return phases


@dataclasses.dataclass(frozen=True)
class Context:
  """What the phases of one run share (built once by `rest_setup.start`)."""

  model_dir: str
  model_config: network.ModelConfig
  task: Any  # The human data: seqio task name or `tasks.ParallelCorpus`.
  phases: list[str]  # The plan (`plan`).
  bc: Any  # rest.BCConfig
  reward_model_phase: Any  # rest.RewardModelPhase | None
  judge_phase: Any  # rest.RewardModelPhase | None
  grow_config: grow.GrowConfig
  sampling: grow.SamplingConfig
  improve_config: improve.ImproveConfig
  num_improve_steps: int
  eval_config: evaluation.EvalConfig
  test_config: evaluation.EvalConfig
  online_arms: Any  # rest_online.OnlineArms | None
  best_of_n: infer.InferConfig | None
  initial_policy: str | None
  base: str  # The checkpoint the run starts from ('bc/best', or the initial policy).
  reward: reward_fns.RewardFn
  judge: reward_fns.RewardFn | None
  mesh_config: partitioning.MeshConfig
  seed: int
  progress: bool


def run_phase(ctx: Context, phase: str, policies: dict[str, str]) -> dict:
  """Runs `phase` of the plan; returns the run-state updates it makes.

  Args:
    ctx: the run.
    phase: a name from `plan`.
    policies: the run state's Grow phase -> the policy it sampled.

  Returns:
    {'policies': {phase: checkpoint}} for Grow and Improve phases, else {}.
  """
  g, i = round_and_step(phase)
  if phase == 'bc':
    _bc(ctx)
  elif phase in ('rm', JUDGE):
    _reward_model(ctx, phase)
  elif phase.startswith('grow_'):
    policy = ctx.base if g == 1 else f'g{g - 1}_i{ctx.num_improve_steps}/best'
    if ctx.num_improve_steps == 0 and g > 1:
      policy = ctx.base
    grow.grow(
      model_dir=ctx.model_dir,
      model_config=ctx.model_config,
      grow_config=ctx.grow_config,
      sampling=ctx.sampling,
      reward=ctx.reward,
      grow_round=g,
      policy_checkpoint=policy,
      mesh_config=ctx.mesh_config,
      progress=ctx.progress,
      reward_train_sources=_reward_train_sources(ctx.model_dir),
    )
    return {'policies': {phase: policy}}
  elif phase.startswith(('improve_', f'{CONTROL}_')):
    return {'policies': {phase: _improve(ctx, phase, g, i, policies)}}
  elif phase in rest_online.ARMS:
    rest_online.run_arm(ctx, phase)
  else:  # eval_bc, eval_g<g>_i<i>, eval_bc_more_g<g>_i<i>, eval_online_<arm>
    _evaluate(ctx, phase)
  return {}


def _bc(ctx: Context) -> None:
  cfg = ctx.bc
  bc.train(
    model_dir=ctx.model_dir,
    model_config=ctx.model_config,
    train_data=cfg.train_data,
    eval_config=ctx.eval_config.for_selection(),
    optimizer=cfg.optimizer,
    num_train_steps=cfg.num_train_steps,
    log_period=cfg.log_period,
    eval_period=cfg.eval_period,
    mesh_config=ctx.mesh_config,
    seed=ctx.seed,
    init_checkpoint=cfg.init_checkpoint,
    progress=ctx.progress,
  )


def _reward_model(ctx: Context, phase: str) -> None:
  rm = ctx.reward_model_phase if phase == 'rm' else ctx.judge_phase
  judgments = rm.judgments
  if ctx.initial_policy is not None:  # No BC phase: the judgments sample the initial policy.
    judgments = dataclasses.replace(judgments, policy_checkpoint=ctx.base)
  train_rm.train_rm(
    model_dir=ctx.model_dir,
    rm_config=rm.rm_config,
    policy_config=ctx.model_config,
    judgments_config=judgments,
    optimizer=rm.optimizer,
    num_train_steps=rm.num_train_steps,
    batch_size=rm.batch_size,
    loss=rm.loss,
    mesh_config=ctx.mesh_config,
    seed=rm.judgments.seed,
    init_checkpoint=rm.init_checkpoint,
    progress=ctx.progress,
    name=phase,
  )
  if phase == 'rm':  # The probes of the reward Grow uses (guards included).
    _write_reward_probes(ctx.model_dir, ctx.reward, ctx.task, judgments.num_eval_sources)


def _improve(ctx: Context, phase: str, g: int, i: int, policies: dict[str, str]) -> str:
  """Runs an Improve step or its control; returns the checkpoint it started from."""
  cfg = ctx.improve_config
  init = _improve_init(phase, g, i, ctx.num_improve_steps, cfg.init_from, ctx.base, policies)
  config, control_task = cfg, None
  if phase.startswith(CONTROL):  # Same steps, batch, learning rate and selection as g<g>_i<i>.
    config = dataclasses.replace(
      cfg,
      loss='bc',
      num_train_steps=_improve_result(ctx.model_dir, g, i)['steps'],
      patience=0,
      shuffle_seed=cfg.shuffle_seed + 1000 * g + i,
      human_mix=0.0,
    )
    control_task = ctx.task
  improve.improve(
    model_dir=ctx.model_dir,
    model_config=ctx.model_config,
    improve_config=config,
    eval_config=ctx.eval_config.for_selection(),
    reward=ctx.reward,
    grow_round=g,
    improve_step=i,
    init_checkpoint=init,
    baseline=_baseline(ctx.model_dir, init, ctx.base),
    control_task=control_task,
    human_task=ctx.task,
    name=phase.removeprefix('improve_'),
    mesh_config=ctx.mesh_config,
    seed=ctx.seed,
    progress=ctx.progress,
  )
  return init


def _evaluate(ctx: Context, phase: str) -> None:
  """An eval phase: validation and test of one policy, and best-of-N for BC and the final one."""
  _evaluate_phase(
    ctx.model_dir,
    ctx.model_config,
    phase,
    ctx.base,
    ctx.eval_config,
    ctx.test_config,
    ctx.reward,
    ctx.judge,
    ctx.mesh_config,
    ctx.progress,
    ctx.task,
  )
  final = [p for p in ctx.phases if p.startswith('eval_g')]
  if ctx.best_of_n is not None and phase in ('eval_bc', final[-1] if final else None):
    name = 'bc' if phase == 'eval_bc' else 'final'
    checkpoint = ctx.base if phase == 'eval_bc' else f'{phase[len("eval_") :]}/best'
    infer.infer(
      model_dir=ctx.model_dir,
      model_config=ctx.model_config,
      infer_config=ctx.best_of_n,
      reward=ctx.reward,
      checkpoint=checkpoint,
      name=name,
      mesh_config=ctx.mesh_config,
      progress=ctx.progress,
    )


def _reward_train_sources(model_dir: str) -> dict:
  """{'rm': ..., 'rm_judge': ...}: the train sources of the run's reward models."""
  out = {}
  for name, file in (('rm', 'reward_model.json'), (JUDGE, f'reward_model_{JUDGE}.json')):
    path = model_dir_lib.ModelDir(model_dir).eval(file)
    if os.path.exists(path):
      with open(path) as f:
        out[name] = json.load(f).get('train_sources')
  return out


def _write_reward_probes(model_dir: str, reward, task, num_sources: int) -> None:
  """`eval/reward_probes.json`: the run reward's hacking probes on validation references.

  The reward model's own probes (`eval/reward_model.json`) test the network;
  these test the reward that Grow, Improve and evaluation use (the reward
  model with the guards and the metric mix, when they are on).
  """
  if not isinstance(task, tasks.ParallelCorpus):  # Only a corpus lists its pairs.
    return
  pairs = task.splits()['validation'][:num_sources]
  sources, references = (list(x) for x in zip(*pairs))
  probes = rm_metrics.probe_deltas(
    lambda s, c: reward(list(s), list(c), references).reward,
    sources,
    references,
    corruptions.probe,
    corruptions.PROBES,
  )
  files.write_json(
    model_dir_lib.ModelDir(model_dir).eval('reward_probes.json'),
    {'reward': getattr(reward, 'name', type(reward).__name__), 'n': len(pairs), 'probes': probes},
  )


def round_and_step(phase: str) -> tuple[int, int]:
  """(g, i) named by a phase ('grow_g2' -> (2, 0), 'eval_bc_more_g1_i3' -> (1, 3))."""
  g = i = 0
  for part in phase.split('_'):
    if part[:1] in 'gi' and part[1:].isdigit():
      if part[0] == 'g':
        g = int(part[1:])
      else:
        i = int(part[1:])
  return g, i


def _improve_init(
  phase: str, g: int, i: int, num_improve_steps: int, init_from: str, base: str, policies: dict
) -> str:
  """The checkpoint an Improve step (or its control) starts from.

  ReST: the previous step's best (step 1: the policy that sampled D_g); the
  control mirrors it on its own chain (step 1 of round g: the control's last
  step of round g-1, BC for g=1). ReST-EM ('base'): the base policy, both.
  """
  if init_from == 'base':
    return base
  if phase.startswith(CONTROL):
    if i > 1:
      return f'{CONTROL}_g{g}_i{i - 1}/best'
    return base if g == 1 else f'{CONTROL}_g{g - 1}_i{num_improve_steps}/best'
  if i > 1:
    return f'g{g}_i{i - 1}/best'
  return policies[f'grow_g{g}']  # The policy that sampled D_g.


def _improve_result(model_dir: str, g: int, i: int) -> dict:
  """`eval/g<g>_i<i>_validation.json`: what Improve step (g, i) did."""
  name = improve_steps.phase_name(g, i)
  with open(model_dir_lib.ModelDir(model_dir).validation(name)) as f:
    return json.load(f)


def _evaluate_phase(
  model_dir,
  model_config,
  phase,
  base,
  eval_config,
  test_config,
  reward,
  judge,
  mesh_config,
  progress,
  task,
) -> dict:
  """Evaluates one policy on validation and test; writes `eval/<phase>.json`."""
  mesh = partitioning.make_mesh(mesh_config)
  model = models.make_model(model_config)
  g, i = round_and_step(phase)
  if phase == 'eval_bc':
    checkpoint = base
    row = {
      'phase': 'bc',
      'tau': None,
      'loss_name': 'bc',
      'n_train_examples': tasks.dataset_size(task, 'train'),
    }
  else:
    name = phase.removeprefix('eval_')
    with open(model_dir_lib.ModelDir(model_dir).validation(name)) as f:
      done = json.load(f)
    if name in rest_online.ARMS:  # The best policy alone: its state also holds PPO's critic.
      checkpoint = done['policy_checkpoint']
      row = {
        'phase': name,
        'tau': None,
        'loss_name': done['algorithm'],
        'n_train_examples': done['distinct_samples'],
      }
    else:
      checkpoint = f'{name}/best'
      row = {
        'phase': CONTROL if name.startswith(CONTROL) else 'improve',
        'tau': done['tau'],
        'loss_name': done['loss_name'],
        'n_train_examples': done['n_train_examples'],
      }
  directory = model_dir_lib.ModelDir(model_dir).checkpoint(checkpoint)
  params, step = checkpoints.restore_params(
    directory, model.init_params_fn(eval_config.input_length, eval_config.target_length), mesh
  )
  params = improve_losses.policy_params(params)
  result = {'checkpoint': directory, 'step': int(step), 'splits': SPLITS}
  for split, cfg in (('val', eval_config), ('test', test_config)):
    m = policy_eval.evaluate_policy(
      model,
      params,
      mesh,
      cfg,
      reward=reward,
      judge=judge,
      progress=progress,
      return_outputs=split == 'test',
    )
    if split == 'test':
      m.update(_paired_tests(model_dir, phase, m.pop('outputs'), m.pop('references')))
    result[split] = m
    keys = ('reward', 'judge_reward', 'bleu', 'chrf', 'length_ratio', 'repetition_rate')
    row.update({f'{split}_{k}': m.get(k) for k in (*keys, 'hacking_rate')})
    row.update({f'{split}_{k}': m.get(k) for k in ('pass_at_k', 'majority_at_k')})
  row.update(g=g, i=i, checkpoint=directory, step=int(step))
  result['row'] = row
  # TensorBoard: one point per evaluated policy, x = its place in the run
  # (0 = BC, then g * 100 + i), for each split's scalar metrics; the control
  # under its own tag.
  writer = summaries.Writer(model_dir_lib.ModelDir(model_dir).summaries('rest'))
  for split in ('val', 'test'):
    scalars = {k: v for k, v in result[split].items() if isinstance(v, (int, float))}
    tag = f'{CONTROL}_{split}' if row['phase'] == CONTROL else split
    writer.scalars(tag, g * 100 + i, scalars)
  writer.close()
  files.write_json(model_dir_lib.ModelDir(model_dir).eval(f'{phase}.json'), result)
  judged = '' if judge is None else f' judge {row["test_judge_reward"]:.4f}'
  print(
    f'[rest] {phase}: test reward {row["test_reward"]:.4f}{judged} BLEU {row["test_bleu"]:.2f} '
    f'chrF {row["test_chrf"]:.2f} | val (selection) reward {row["val_reward"]:.4f}',
    flush=True,
  )
  return result


def _paired_tests(model_dir: str, phase: str, outputs: list[str], references: list[str]) -> dict:
  """Writes `eval/<phase>_test_outputs.json`; paired bootstraps against earlier phases' outputs.

  Args:
    model_dir: run directory.
    phase: the eval phase ('eval_bc', 'eval_g<g>_i<i>', 'eval_bc_more_g<g>_i<i>', ...).
    outputs: its N greedy test outputs.
    references: the N test references.

  Returns:
    {'vs_bc': this policy - BC} (every phase but BC's), and for a control phase
    {'rest_vs_control': ReST (g, i) - this control}: `metrics.paired_bootstrap`
    results, for which the outputs compared must exist and share the references.
  """
  paths = model_dir_lib.ModelDir(model_dir)
  files.write_json(
    paths.eval(f'{phase}_test_outputs.json'), {'outputs': outputs, 'references': references}
  )

  def load(other):
    path = paths.eval(f'{other}_test_outputs.json')
    if not os.path.exists(path):
      return None
    with open(path) as f:
      saved = json.load(f)
    return saved['outputs'] if saved['references'] == references else None

  tests, notes = {}, []
  if phase != 'eval_bc' and (bc := load('eval_bc')) is not None:
    tests['vs_bc'] = metrics.paired_bootstrap(outputs, bc, references)
    notes.append(f'this - BC: {metrics.format_paired(tests["vs_bc"])}')
  if phase.startswith(f'eval_{CONTROL}_'):
    rest_phase = 'eval_' + phase.removeprefix(f'eval_{CONTROL}_')
    if (rest_out := load(rest_phase)) is not None:
      tests['rest_vs_control'] = metrics.paired_bootstrap(rest_out, outputs, references)
      notes.append(f'ReST - this: {metrics.format_paired(tests["rest_vs_control"])}')
  if notes:
    print(f'[rest] {phase}: test, paired bootstrap 95%: ' + '; '.join(notes), flush=True)
  return tests


def _baseline(model_dir: str, checkpoint: str, base: str) -> dict | None:
  """The validation metrics an eval phase already has for `checkpoint`, or None."""
  phase = 'eval_bc' if checkpoint == base else f'eval_{checkpoint.removesuffix("/best")}'
  path = model_dir_lib.ModelDir(model_dir).eval(f'{phase}.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)['val']
