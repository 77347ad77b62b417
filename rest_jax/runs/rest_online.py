"""Online RL arms beside a ReST run: the paper's comparison at equal samples and equal time.

With `rest.rest(online_arms=OnlineArms(...))` the plan ends with

  online_samples       `online_rl.online_rl` from the run's starting policy, on
                       Grow's sources and reward, for as many iterations as it
                       takes to draw as many distinct samples as ReST's first
                       Grow round did (the paper's "similar amount of data as
                       ReST with one Grow step")
  eval_online_samples  its validation and test: a row like every other one
  online_time          the same, for as many iterations as fit in the wall time
                       ReST's Grow and Improve phases took, at the rate
                       `online_samples` ran its iterations (`seconds_per_iteration`)
  eval_online_time     its row

`cost` gives every row of the summary what its policy spent since the
starting policy: distinct samples, training tokens and seconds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

from rest_jax import errors
from rest_jax.core import files
from rest_jax.core import model_dir as model_dir_lib
from rest_jax.runs import online_rl, online_rl_steps, rest_state

ARMS = ('online_samples', 'online_time')


@dataclasses.dataclass(frozen=True)
class OnlineArms:
  """Which online RL arms run beside ReST, and how they train."""

  # Algorithm, sampling and update settings; num_iterations, the source range
  # and the lengths are set per arm from the ReST run.
  config: online_rl_steps.OnlineRLConfig = online_rl_steps.OnlineRLConfig()
  equal_samples: bool = True  # Arm 'online_samples': ReST's first Grow round's sample count.
  equal_time: bool = True  # Arm 'online_time': the wall time of ReST's Grow + Improve phases.
  # At most this many iterations per arm (None: no cap); a capped arm no longer
  # matches ReST's samples or time, and its summary row's cost says so.
  max_iterations: int | None = None

  def __post_init__(self):
    if self.equal_time and not self.equal_samples:
      raise errors.UserInputError(
        'OnlineArms.equal_time needs equal_samples: the equal-time arm runs at the iteration '
        'rate the equal-samples arm measured.'
      )


def plan(arms: OnlineArms | None) -> list[str]:
  """The arms' phases, in order ([] without arms)."""
  if arms is None:
    return []
  chosen = [a for a, on in zip(ARMS, (arms.equal_samples, arms.equal_time)) if on]
  return [p for arm in chosen for p in (arm, f'eval_{arm}')]


def _read(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


def _rest_seconds(seconds: dict[str, float]) -> float:
  """Wall time of the ReST phases proper: every Grow and Improve step."""
  return sum(s for p, s in seconds.items() if p.startswith(('grow_g', 'improve_g')))


def iterations(model_dir: str, arm: str, config: online_rl_steps.OnlineRLConfig) -> int:
  """How many iterations `arm` runs (see the module docstring)."""
  paths = model_dir_lib.ModelDir(model_dir)
  samples = _read(os.path.join(paths.grow_round(1), 'manifest.json'))['sampled_sequences']
  by_samples = max(1, math.ceil(samples / config.rows))
  if arm == 'online_samples':
    return by_samples
  state = rest_state.read_state(model_dir) or {}
  return max(1, int(_rest_seconds(state.get('seconds', {})) / seconds_per_iteration(paths)))


def seconds_per_iteration(paths: model_dir_lib.ModelDir) -> float:
  """The wall time of one `online_samples` iteration: sampling, updates, its share of validation.

  The mean time from one iteration's sampling to the next's, without the first
  (compilation) and without gaps over a resume; the whole run's seconds per
  iteration when fewer than three iterations ran.
  """
  starts = [r['started'] for r in files.read_jsonl(paths.rollout_log('online_samples'))]
  gaps = [b - a for a, b in zip(starts, starts[1:])][1:]
  if gaps:  # A resume leaves one long gap (or a negative one): drop it.
    median = sorted(gaps)[len(gaps) // 2]
    gaps = [g for g in gaps if 0 < g < 10 * median]
  if gaps:
    return sum(gaps) / len(gaps)
  done = _read(paths.validation('online_samples'))
  return done['seconds'] / max(done['iterations'], 1)


def run_arm(ctx, arm: str) -> dict:
  """Runs online arm `arm` of the ReST run `ctx` (a `rest_phases.Context`); returns its result."""
  arms = ctx.online_arms
  config = dataclasses.replace(
    arms.config,
    first_source=ctx.grow_config.first_source,
    max_sources=ctx.grow_config.max_sources,
    split=ctx.grow_config.split,
    input_length=ctx.grow_config.input_length,
    target_length=ctx.grow_config.target_length,
    seed=ctx.seed,
  )
  num_iterations = iterations(ctx.model_dir, arm, config)
  if arms.max_iterations is not None:
    num_iterations = min(num_iterations, arms.max_iterations)
  config = dataclasses.replace(config, num_iterations=num_iterations)
  return online_rl.online_rl(
    model_dir=ctx.model_dir,
    model_config=ctx.model_config,
    config=config,
    task=ctx.task,
    eval_config=ctx.eval_config.for_selection(),
    reward=ctx.reward,
    init_checkpoint=ctx.base,
    name=arm,
    mesh_config=ctx.mesh_config,
    progress=ctx.progress,
  )


def cost(model_dir: str, eval_phase: str, seconds: dict[str, float]) -> dict:
  """What the policy of `eval_phase` spent since the starting policy.

  ReST (G=g, I=i): the Grow rounds 1..g and the Improve steps up to (g, i); the
  BC control: its steps up to (g, i); an online arm: its run. The starting
  policy (BC, the reward models) is shared by all and not counted.

  Args:
    model_dir: the run directory.
    eval_phase: 'eval_bc', 'eval_g<g>_i<i>', 'eval_bc_more_g<g>_i<i>' or 'eval_<arm>'.
    seconds: the run state's seconds per finished phase.

  Returns:
    {'samples': distinct samples generated, 'train_tokens': rows x length
    through forward and backward passes, 'seconds': wall time of those phases}.
  """
  paths = model_dir_lib.ModelDir(model_dir)
  name = eval_phase.removeprefix('eval_')
  if name == 'bc':
    return {'samples': 0, 'train_tokens': 0, 'seconds': 0.0}
  if name in ARMS:
    done = _read(paths.validation(name))
    return {
      'samples': done['distinct_samples'],
      'train_tokens': done['train_tokens'],
      'seconds': round(seconds.get(name, done['seconds']), 2),
    }
  control = name.startswith('bc_more_')
  g, i = (int(x[1:]) for x in name.removeprefix('bc_more_').split('_'))
  steps = [p for p in _improve_phases(paths, 'bc_more_' if control else '') if p[1:] <= (g, i)]
  phases = [f'{"bc_more_" if control else "improve_"}g{a}_i{b}' for _, a, b in steps]
  samples = 0
  if not control:
    rounds = range(1, g + 1)
    phases += [f'grow_g{r}' for r in rounds]
    samples = sum(
      _read(os.path.join(paths.grow_round(r), 'manifest.json'))['sampled_sequences'] for r in rounds
    )
  tokens = sum(_read(path).get('train_tokens') or 0 for path, _, _ in steps)
  return {
    'samples': samples,
    'train_tokens': tokens,
    'seconds': round(sum(seconds.get(p, 0.0) for p in phases), 2),
  }


def _improve_phases(paths: model_dir_lib.ModelDir, prefix: str) -> list[tuple[str, int, int]]:
  """(result path, g, i) of every finished Improve step (or control step, `prefix`)."""
  out = []
  folder = paths.path('eval')
  for file in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
    stem = file.removesuffix('_validation.json')
    if file.endswith('_validation.json') and stem.startswith(f'{prefix}g'):
      parts = stem.removeprefix(prefix).split('_')
      if len(parts) == 2 and parts[0][1:].isdigit() and parts[1][1:].isdigit():
        out.append((os.path.join(folder, file), int(parts[0][1:]), int(parts[1][1:])))
  return out
