r"""Kill the tiny ReST loop anywhere, run the same command again: the same result.

Usage:
  python tests/fault_injection.py --kills 20 [--sigterms 4] [--workdir DIR]

What it does:
  1. Writes a tiny corpus and runs the whole tiny ReST loop once, uninterrupted,
     as a subprocess (`python -m rest_jax.main --run_mode=rest`, BC, the reward
     model and the judge, G=2 Grow rounds, 2 Improve steps each, the BC
     control, eval, the report), logging every fault point it passes
     (`rest_jax.core.faults`): optimizer steps, Orbax saves, half-written Grow
     shards, atomic writes of rest_state.json / summary.json / the report /
     manifests, phase starts.
  2. Picks N SIGKILL points (and K SIGTERM points) spread over the phases and
     over the kinds of point, runs the same command again in a fresh
     MODEL_DIR with that plan, and after each death runs the same command
     again, until it exits 0.
  3. Compares the two MODEL_DIRs: the latest step of every checkpoint
     directory is the same step with bitwise-equal arrays; summary.json is
     equal (wall-clock fields and the MODEL_DIR path left out); every Grow
     round holds each (source, sample) record exactly once, with shards
     byte-identical (sha256) to the uninterrupted run's.

It ends by printing one JSON line:
  {"kills": N, "sigterms": K, "phases_hit": [...], "identical": true|false, "seconds": ...}
and exits 1 if anything differs. `.ci/run` runs a small N; `--kills 20` is the
full check (about 20 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'tests'))

import test_utils  # noqa: E402

SIGTERM_EXIT = 75  # rest_jax.core.preemption.EXIT_CODE
TIMING_KEYS = re.compile(r'second|wall|time|steps_per')


def bindings(model_dir: str, tsv: str, vocab: str) -> list[str]:
  """The tiny ReST loop as `python -m rest_jax.main` flags."""
  values = {
    'MODEL_DIR': f"'{model_dir}'",
    'TASK': '@tasks.ParallelCorpus()',
    'tasks.ParallelCorpus.name': "'fault_injection_corpus'",
    'tasks.ParallelCorpus.train_path': f"'{tsv}'",
    'tasks.ParallelCorpus.vocab_path': f"'{vocab}'",
    'tasks.ParallelCorpus.num_validation': 12,
    'tasks.ParallelCorpus.num_test': 12,
    'VOCAB_SIZE': 128,
    'INPUT_LENGTH': 16,
    'TARGET_LENGTH': 16,
    'BC_STEPS': 8,
    'BATCH_SIZE': 16,
    'LEARNING_RATE': 3e-3,
    'WARMUP_STEPS': 2,
    'BC_EVAL_PERIOD': 4,
    'LOG_PERIOD': 4,
    'RM_STEPS': 6,
    'RM_BATCH_SIZE': 8,
    'RM_MAX_LENGTH': 32,
    'RM_LEARNING_RATE': 3e-3,
    'RM_WARMUP_STEPS': 2,
    'USE_MQM': False,
    'RM_TRAIN_SOURCES': 16,
    'RM_EVAL_SOURCES': 8,
    'RM_POLICY_SAMPLES': 1,
    'RM_CORRUPTIONS': 1,
    'JUDGE_FIRST_SOURCE': -40,
    'rm/network.T5Config.emb_dim': 16,
    'rm/network.T5Config.num_heads': 2,
    'rm/network.T5Config.head_dim': 8,
    'rm/network.T5Config.mlp_dim': 32,
    'rm/network.T5Config.num_encoder_layers': 1,
    'MAX_SOURCES': 16,
    'SOURCES_PER_SHARD': 8,
    'GROW_BATCH_SIZE': 8,
    'NUM_SAMPLES': 2,
    'UNFINISHED': "'keep'",
    'SCHEDULE': '@filtering.GlobalPercentiles()',
    'filtering.GlobalPercentiles.percentiles': (50.0, 75.0),
    'MIN_KEPT': 2,
    'IMPROVE_STEPS': 4,
    'IMPROVE_BATCH_SIZE': 8,
    'IMPROVE_EVAL_PERIOD': 2,
    'PATIENCE': 0,
    'EVAL_EXAMPLES': None,
    'EVAL_BATCH_SIZE': 12,
    'NUM_GROW_ROUNDS': 2,
    'NUM_IMPROVE_STEPS': 2,
  }
  flags = ['--run_mode=rest', '--gin_file=runs/rest.gin', '--gin_file=models/tiny.gin']
  return flags + [f'--gin.{k}={v}' for k, v in values.items()]


def run_until_done(cmd: list[str], env: dict, log, max_attempts: int) -> list[int]:
  """Runs `cmd` until it exits 0; returns the exit codes of the attempts."""
  codes = []
  for _ in range(max_attempts):
    proc = subprocess.run(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    codes.append(proc.returncode)
    if proc.returncode == 0:
      return codes
    if proc.returncode not in (-9, SIGTERM_EXIT):
      raise SystemExit(
        f'attempt {len(codes)} failed with exit code {proc.returncode}; see {log.name}'
      )
  raise SystemExit(f'no success in {max_attempts} attempts: {codes}')


def phase_kind(phase: str, name: str) -> str:
  """'bc', 'rm', 'grow', 'improve', 'control', 'eval' or 'report' for a logged hit."""
  if 'report' in name or name.endswith('.png') or name.endswith('.html'):
    return 'report'
  for prefix, kind in (
    ('bc_more', 'control'),
    ('eval', 'eval'),
    ('grow', 'grow'),
    ('improve', 'improve'),
    ('rm', 'rm'),
    ('bc', 'bc'),
  ):
    if phase.startswith(prefix):
      return kind
  return phase or 'start'


def _point_kind(name: str) -> str:
  """'train_step', 'checkpoint', 'grow', 'phase' or 'write <ext>' for a point's name."""
  return f'write {name.rsplit(".", 1)[-1]}' if name.startswith('write') else name.split(' ')[0]


def choose(points: list[dict], kills: int, sigterms: int) -> list[dict]:
  """The plan's targets: N SIGKILL and K SIGTERM points spread over phases and kinds.

  Each target is a point of the uninterrupted run, as (phase, name, nth): it
  fires when the interrupted run passes that point for the nth time in that
  phase, so it lands in the phase it was aimed at although resumed attempts
  repeat some work. The phase kinds are visited in the order the run meets
  them, each once before any twice (evenly spaced when there are fewer kills
  than kinds); within a phase kind the kinds of point take turns, and within
  those the hits are spread by a golden-ratio stride. SIGTERMs go to optimizer
  steps and phase starts (where a notice is acted on).
  """
  groups: dict[str, dict[str, list[dict]]] = {}
  for p in points:
    by_kind = groups.setdefault(phase_kind(p['phase'], p['name']), {})
    by_kind.setdefault(_point_kind(p['name']), []).append(p)
  kinds = list(groups)  # Insertion order: as the run meets them.
  taken: set[int] = set()

  def picks(count: int, allowed) -> list[dict]:
    out, rounds = [], 0
    while len(out) < count and rounds < len(points):
      order = kinds
      if count - len(out) < len(kinds):  # Fewer left than kinds: evenly spaced kinds.
        left = count - len(out)
        order = [kinds[(2 * j + 1) * len(kinds) // (2 * left)] for j in range(left)]
      for kind in order:
        names = [n for n in sorted(groups[kind]) if allowed(n)]
        if not names:
          continue
        hits = groups[kind][names[rounds % len(names)]]
        turn = rounds // len(names)
        hit = hits[int(len(hits) * ((0.5 + 0.618034 * turn) % 1.0))]
        if hit['index'] not in taken:
          taken.add(hit['index'])
          out.append(hit)
        if len(out) == count:
          break
      rounds += 1
    return out

  def target(hit: dict, signal: str) -> dict:
    return {'phase': hit['phase'], 'name': hit['name'], 'nth': hit['nth'], 'signal': signal}

  terms = [target(h, 'TERM') for h in picks(sigterms, lambda n: n in ('train_step', 'phase'))]
  return terms + [target(h, 'KILL') for h in picks(kills, lambda n: True)]


def checkpoint_arrays(model_dir: str) -> dict[str, tuple[int, dict]]:
  """'<phase>/<last|best>' -> (latest step, {leaf path: sha256 of its bytes})."""
  import jax
  import numpy as np
  import orbax.checkpoint as ocp

  out = {}
  for directory in sorted(glob.glob(os.path.join(model_dir, 'checkpoints', '*', '*'))):
    steps = [int(n) for n in os.listdir(directory) if n.isdigit()]
    if not steps:
      continue
    step = max(steps)
    tree = ocp.PyTreeCheckpointer().restore(os.path.join(directory, str(step), 'default'))
    leaves = {
      jax.tree_util.keystr(path): hashlib.sha256(np.asarray(leaf).tobytes()).hexdigest()
      for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }
    out[os.path.relpath(directory, os.path.join(model_dir, 'checkpoints'))] = (step, leaves)
  return out


def normalized_summary(model_dir: str) -> dict:
  with open(os.path.join(model_dir, 'eval', 'summary.json')) as f:
    text = f.read().replace(model_dir, '<MODEL_DIR>')

  def strip(node):
    if isinstance(node, dict):
      return {k: strip(v) for k, v in node.items() if not TIMING_KEYS.search(k)}
    if isinstance(node, list):
      return [strip(v) for v in node]
    return node

  return strip(json.loads(text))


def grow_rounds(model_dir: str) -> dict[str, dict]:
  """Round name -> {'shards': [sha256...], 'records': n, 'distinct': n}."""
  from rest_jax.data import grow_io

  out = {}
  for round_dir in sorted(glob.glob(os.path.join(model_dir, 'grow', '*'))):
    manifest = grow_io.read_manifest(round_dir)
    cols = grow_io.read_records_from(
      grow_io.shard_paths(round_dir, manifest), ('source_id', 'sample_index')
    )
    keys = list(zip(cols['source_id'].tolist(), cols['sample_index'].tolist()))
    out[os.path.basename(round_dir)] = {
      'shards': [s['sha256'] for s in manifest['shards']],
      'records': len(keys),
      'distinct': len(set(keys)),
      'keys': hashlib.sha256(repr(sorted(keys)).encode()).hexdigest(),
    }
  return out


def compare(reference: str, candidate: str) -> list[str]:
  """Differences between two finished runs (empty: identical)."""
  problems = []
  ref_ckpt, cand_ckpt = checkpoint_arrays(reference), checkpoint_arrays(candidate)
  if sorted(ref_ckpt) != sorted(cand_ckpt):
    problems.append(f'checkpoint dirs differ: {sorted(set(ref_ckpt) ^ set(cand_ckpt))}')
  for name in sorted(set(ref_ckpt) & set(cand_ckpt)):
    (rs, rl), (cs, cl) = ref_ckpt[name], cand_ckpt[name]
    if rs != cs:
      problems.append(f'{name}: latest step {cs}, uninterrupted {rs}')
    elif rl != cl:
      bad = [k for k in rl if rl[k] != cl.get(k)]
      problems.append(f'{name} step {rs}: {len(bad)} arrays differ, e.g. {bad[:2]}')
  if normalized_summary(reference) != normalized_summary(candidate):
    problems.append('summary.json differs')
  ref_rounds, cand_rounds = grow_rounds(reference), grow_rounds(candidate)
  for name, cand in cand_rounds.items():
    if cand['records'] != cand['distinct']:
      problems.append(f'grow/{name}: {cand["records"] - cand["distinct"]} duplicated records')
  if ref_rounds != cand_rounds:
    problems.append(f'grow rounds differ: {ref_rounds} vs {cand_rounds}')
  return problems


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--kills', type=int, default=20, help='SIGKILL points.')
  parser.add_argument(
    '--sigterms', type=int, default=None, help='SIGTERM points (default kills//5).'
  )
  parser.add_argument('--workdir', default=None, help='Where runs go (default: a temp dir).')
  args = parser.parse_args()
  sigterms = args.kills // 5 if args.sigterms is None else args.sigterms
  tic = time.time()
  work = args.workdir or tempfile.mkdtemp(prefix='rest_jax_faults_')
  os.makedirs(work, exist_ok=True)
  os.makedirs(os.path.join(work, 'corpus'), exist_ok=True)
  tsv, vocab = test_utils.write_tiny_corpus(os.path.join(work, 'corpus'))
  env = dict(os.environ, JAX_PLATFORMS='cpu', REST_JAX_CACHE=os.path.join(work, 'cache'))
  cmd_for = lambda d: [sys.executable, '-m', 'rest_jax.main', *bindings(d, tsv, vocab)]  # noqa: E731

  def plan_env(name: str, targets: list) -> dict:
    plan = {
      'state': os.path.join(work, f'{name}_state.json'),
      'log': os.path.join(work, f'{name}_points.jsonl'),
      'targets': targets,
    }
    for key in ('state', 'log'):
      if os.path.exists(plan[key]):
        os.remove(plan[key])
    path = os.path.join(work, f'{name}_plan.json')
    with open(path, 'w') as f:
      json.dump(plan, f)
    return dict(env, REST_JAX_FAULT_PLAN=path)

  reference = os.path.join(work, 'uninterrupted')
  with open(os.path.join(work, 'uninterrupted.log'), 'w') as log:
    run_until_done(cmd_for(reference), plan_env('uninterrupted', []), log, 1)
  with open(os.path.join(work, 'uninterrupted_points.jsonl')) as f:
    points = [json.loads(line) for line in f]
  targets = choose(points, args.kills, sigterms)
  interrupted = os.path.join(work, 'interrupted')
  with open(os.path.join(work, 'interrupted.log'), 'w') as log:
    codes = run_until_done(
      cmd_for(interrupted), plan_env('interrupted', targets), log, len(targets) + 2
    )
  with open(os.path.join(work, 'interrupted_points.jsonl')) as f:
    acted = [json.loads(line) for line in f if '"action"' in line]
  problems = compare(reference, interrupted)
  fired_terms = sum(p['action'] == 'TERM' for p in acted)
  if len(acted) != len(targets):
    problems.append(f'{len(acted)} of {len(targets)} planned targets fired')
  if sum(c == SIGTERM_EXIT for c in codes) != fired_terms:
    problems.append(f'{fired_terms} SIGTERMs sent, {codes.count(SIGTERM_EXIT)} exits with code 75')
  leftovers = glob.glob(os.path.join(interrupted, '**', '*.tmp-*'), recursive=True)
  if leftovers:  # The last run removes what killed writers left (run_lock.hold).
    problems.append(f'{len(leftovers)} temporary files left, e.g. {leftovers[0]}')
  result = {
    'kills': sum(c == -9 for c in codes),
    'sigterms': sum(c == SIGTERM_EXIT for c in codes),
    'planned': {'kills': args.kills, 'sigterms': sigterms, 'points_in_run': len(points)},
    'targets_fired': len(acted),
    'phases_hit': sorted({phase_kind(p['phase'], p['name']) for p in acted}),
    'points_hit': sorted({p['name'] for p in acted}),
    'attempts': len(codes),
    'leftover_tmp_files': len(leftovers),
    'identical': not problems,
    'problems': problems,
    'seconds': round(time.time() - tic, 1),
    'workdir': work,
  }
  print(json.dumps(result))
  return 0 if not problems else 1


if __name__ == '__main__':
  sys.exit(main())
