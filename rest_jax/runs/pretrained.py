r"""Policies shipped inside the package, and the command that exports one.

A shipped policy is a folder `rest_jax/pretrained/<name>/`:

  params.npz      every parameter, rounded to bfloat16 (stored as uint16 bits,
                  keyed by its '/'-joined path), compressed
  config.json     the `network.T5Config` it was trained with
  metrics.json    how it was trained (command, steps, seconds), its test
                  metrics on the whole test split and on the first
                  `slice_examples` test sentences (measured on the rounded
                  parameters, so `tests/pretrained_test.py` can reproduce them),
                  and its validation curve

A run starts from one with `INITIAL_POLICY = 'shipped:<name>'` (gin): the ReST
loop calls `install`, which writes the parameters as an Orbax `{'params': ...}`
checkpoint under `MODEL_DIR/checkpoints/shipped/<name>/` once, in float32.

Export (from the repository root, after `--run_mode=bc`):

  python -m rest_jax.runs.pretrained --model_dir=/tmp/rest_jax/bc_long \
    --gin_file=gin/models/small_cpu.gin --name=tatoeba_en_de_small_cpu

JAX only: importing this module does not import TensorFlow (export does).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from typing import Any

import jax
import ml_dtypes
import numpy as np

from rest_jax.core import checkpoints, files, network
from rest_jax.core import model_dir as model_dir_lib

PREFIX = 'shipped:'
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_DIR = os.path.join(_PACKAGE_ROOT, 'pretrained')


def is_shipped(checkpoint: str | None) -> bool:
  """Whether a checkpoint name refers to a shipped policy ('shipped:<name>')."""
  return bool(checkpoint) and checkpoint.startswith(PREFIX)


def folder(name: str) -> str:
  """`rest_jax/pretrained/<name>/`.

  Raises:
    FileNotFoundError: no shipped policy of that name (lists the ones there are).
  """
  path = os.path.join(PACKAGE_DIR, name)
  if not os.path.isfile(os.path.join(path, 'params.npz')):
    there = sorted(os.listdir(PACKAGE_DIR)) if os.path.isdir(PACKAGE_DIR) else []
    raise FileNotFoundError(f'No shipped policy {name!r} in {PACKAGE_DIR}; there are {there}.')
  return path


def read_metrics(name: str) -> dict:
  """The shipped policy's `metrics.json`."""
  with open(os.path.join(folder(name), 'metrics.json')) as f:
    return json.load(f)


def read_config(name: str) -> network.ModelConfig:
  """The network config the shipped policy was trained with (a DecoderConfig has `num_layers`)."""
  with open(os.path.join(folder(name), 'config.json')) as f:
    fields = json.load(f)
  if 'num_layers' in fields:
    return network.DecoderConfig(**fields)
  return network.T5Config(**fields)


def _flatten(tree: Any, prefix: str = '') -> dict[str, np.ndarray]:
  out = {}
  for key, value in tree.items():
    path = f'{prefix}{key}'
    if isinstance(value, dict):
      out.update(_flatten(value, path + '/'))
    else:
      out[path] = np.asarray(value)
  return out


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    *parents, leaf = path.split('/')
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def round_to_bfloat16(params: Any) -> Any:
  """`params` rounded to bfloat16 and back to float32 (what `save_params` keeps)."""
  return jax.tree.map(lambda x: np.asarray(x).astype(ml_dtypes.bfloat16).astype(np.float32), params)


def save_params(params: Any, path: str) -> None:
  """Writes a nested dict of arrays to `path` (.npz) as bfloat16 bits, compressed."""
  flat = _flatten(jax.tree.map(np.asarray, params))
  bits = {k: v.astype(ml_dtypes.bfloat16).view(np.uint16) for k, v in flat.items()}
  with files.atomic_path(path) as tmp, open(tmp, 'wb') as f:
    np.savez_compressed(f, **bits)


def load_params(name: str) -> dict:
  """The shipped policy's parameters: a nested dict of float32 numpy arrays."""
  with np.load(os.path.join(folder(name), 'params.npz')) as data:
    flat = {k: data[k].view(ml_dtypes.bfloat16).astype(np.float32) for k in data.files}
  return _unflatten(flat)


def install(name: str, model_dir: str) -> str:
  """Writes the shipped policy as a policy checkpoint of `model_dir` (once).

  Args:
    name: the shipped policy ('shipped:' prefix allowed).
    model_dir: the run directory.

  Returns:
    The absolute checkpoint directory, `MODEL_DIR/checkpoints/shipped/<name>`,
    holding one Orbax `{'params': ...}` step (the policy's training step).
  """
  name = name.removeprefix(PREFIX)
  directory = os.path.join(os.path.abspath(model_dir), 'checkpoints', 'shipped', name)
  ckpt = checkpoints.Checkpointer(directory, max_to_keep=1)
  if ckpt.latest_step() is None:
    step = int(read_metrics(name).get('step', 0))
    ckpt.save(step, {'params': load_params(name)})
  ckpt.close()
  return directory


def _history(model_dir: str) -> list[dict]:
  path = model_dir_lib.ModelDir(model_dir).eval('bc_history.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def export(
  *,
  model_dir: str,
  model_config: network.ModelConfig,
  name: str,
  checkpoint: str = 'bc/best',
  slice_examples: int = 200,
  input_length: int = 24,
  target_length: int = 24,
  out_root: str = PACKAGE_DIR,
  command: str = '',
) -> dict:
  """Exports a BC checkpoint of the Tatoeba task as the shipped policy `name`.

  Args:
    model_dir: the BC run directory.
    model_config: its network.
    name: the shipped policy's name.
    checkpoint: the checkpoint under `MODEL_DIR/checkpoints`.
    slice_examples: test sentences of the recorded slice metrics.
    input_length: evaluation source length.
    target_length: evaluation output length.
    out_root: where the folder is written.
    command: the training command, recorded in metrics.json.

  Returns:
    The metrics written to `metrics.json`.
  """
  from rest_jax.core import models, partitioning
  from rest_jax.data import tasks
  from rest_jax.runs import evaluation, policy_eval

  mesh = partitioning.make_mesh(partitioning.MeshConfig())
  model = models.make_model(model_config)
  params, step = checkpoints.restore_params(
    model_dir_lib.ModelDir(model_dir).checkpoint(checkpoint),
    model.init_params_fn(input_length, 2),
    mesh,
  )
  rounded = round_to_bfloat16(jax.device_get(params))
  out = os.path.join(out_root, name)
  save_params(rounded, os.path.join(out, 'params.npz'))
  files.write_json(os.path.join(out, 'config.json'), dataclasses.asdict(model_config))
  task = tasks.tatoeba_en_de()
  results = {}
  for key, limit in (('test', None), ('test_slice', slice_examples), ('validation', None)):
    split = 'validation' if key == 'validation' else 'test'
    cfg = evaluation.EvalConfig(
      task=task,
      split=split,
      batch_size=250,
      input_length=input_length,
      target_length=target_length,
      max_examples=limit,
    )
    m = policy_eval.evaluate_policy(model, rounded, mesh, cfg, progress=False)
    results[key] = {
      k: m[k] for k in ('bleu', 'chrf', 'loss', 'length_ratio', 'hacking_rate', 'num_examples')
    }
  state_path = model_dir_lib.ModelDir(model_dir).eval('bc_validation.json')
  trained = {}
  if os.path.exists(state_path):
    with open(state_path) as f:
      trained = {k: v for k, v in json.load(f).items() if isinstance(v, int | float | str)}
  metrics = {
    'name': name,
    'task': 'tatoeba_en_de',
    'step': int(step),
    'checkpoint': checkpoint,
    'command': command,
    'input_length': input_length,
    'target_length': target_length,
    'slice_examples': slice_examples,
    'params_millions': round(sum(x.size for x in jax.tree.leaves(rounded)) / 1e6, 3),
    'dtype_stored': 'bfloat16',
    'exported_at': time.strftime('%Y-%m-%d %H:%M:%S'),
    'final_validation': trained,
    'history': _history(model_dir),
    **results,
  }
  files.write_json(os.path.join(out, 'metrics.json'), metrics)
  return metrics


def main() -> None:
  """`python -m rest_jax.runs.pretrained`: export a BC run's checkpoint (see the module doc)."""
  import gin

  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model_dir', required=True, help='The BC run directory.')
  parser.add_argument('--gin_file', required=True, help='Its gin/models/*.gin.')
  parser.add_argument('--name', required=True, help='The shipped policy name.')
  parser.add_argument('--checkpoint', default='bc/best', help='Under MODEL_DIR/checkpoints.')
  parser.add_argument('--slice_examples', type=int, default=200, help='Recorded test slice.')
  parser.add_argument('--command', default='', help='The training command, to record.')
  args = parser.parse_args()
  gin.parse_config_files_and_bindings([args.gin_file], [])
  config = gin.query_parameter('%MODEL_CONFIG').scoped_configurable_fn()
  metrics = export(
    model_dir=args.model_dir,
    model_config=config,
    name=args.name,
    checkpoint=args.checkpoint,
    slice_examples=args.slice_examples,
    command=args.command,
  )
  print(json.dumps({k: metrics[k] for k in ('name', 'step', 'test', 'test_slice')}))


if __name__ == '__main__':
  main()
