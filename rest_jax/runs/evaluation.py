"""`--run_mode=eval`: a policy checkpoint's loss, greedy BLEU / chrF on a split.

`evaluate` restores a checkpoint, runs `policy_eval.evaluate_policy` (which the
BC loop also uses for periodic validation) and writes
`MODEL_DIR/eval/<name>.json`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from absl import logging

from rest_jax import gin_utils
from rest_jax.core import checkpoints, files, models, network, partitioning
from rest_jax.core import model_dir as model_dir_lib
from rest_jax.rewards import reward_fns as rewards_lib
from rest_jax.runs import policy_eval


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """What to evaluate and how."""

  task: Any  # seqio task name or `tasks.ParallelCorpus`.
  split: str = 'validation'  # Split to evaluate on.
  batch_size: int = 128  # Rows per evaluation batch.
  input_length: int = 32  # Encoder length S (longer sources are truncated).
  target_length: int = 32  # Decoder length T and the greedy decode length.
  max_examples: int | None = None  # First N examples of the split (None = all).
  num_samples_to_log: int = 5  # Example translations kept in the JSON.
  # k > 0: also sample k outputs per source for `pass_at_k` (the fraction of
  # sources with a correct sample; the mean best-of-k reward for a graded
  # reward) and, for a reward that can vote (`verifiers.FinalAnswer`),
  # `majority_at_k` (the majority answer's reward).
  pass_k: int = 0
  pass_temperature: float = 0.7  # Sampling temperature of the k samples.
  pass_topk: int = 40  # Top-k filter of the k samples (0 = off).

  def for_selection(self) -> EvalConfig:
    """This config without pass@k: the validation that selects checkpoints in training.

    Selection reads the greedy reward; the k samples are for the eval phases' reports.
    """
    return dataclasses.replace(self, pass_k=0)


def evaluate(
  *,
  model_dir: str,
  model_config: network.ModelConfig,
  eval_config: EvalConfig,
  checkpoint: str = 'best',
  reward: rewards_lib.RewardFn | None = None,
  mesh_config: partitioning.MeshConfig = partitioning.MeshConfig(),
  progress: bool = True,
) -> dict:
  """`--run_mode=eval`: evaluates any policy checkpoint on any split and writes JSON.

  Args:
    model_dir: the run directory (holds `checkpoints/`).
    model_config: the policy's network config (must match the checkpoint).
    eval_config: split, lengths and batch size.
    checkpoint: 'best', 'last' or a step as a string (of `checkpoints/bc`), or
      a checkpoint directory relative to `MODEL_DIR/checkpoints` such as
      'g2_i3/best' (its latest step), or an absolute directory.
    reward: optional reward source (the learned reward model, a metric); adds
      the mean `reward` of the outputs.
    mesh_config: device mesh.
    progress: show a progress bar.

  Returns:
    The metrics dict, also written to `model_dir/eval/<split>_<checkpoint>.json`
    (with '/' in the checkpoint name written as '_').
  """
  policy_eval.check_vocab_size(model_config, eval_config.task)
  gin_utils.write_config(model_dir, 'config_eval.gin')
  mesh = partitioning.make_mesh(mesh_config)
  model = models.make_model(model_config)
  step = None
  if checkpoint in ('best', 'last'):
    directory = model_dir_lib.ModelDir(model_dir).path('checkpoints', 'bc', checkpoint)
  elif checkpoint.isdigit():
    directory, step = model_dir_lib.ModelDir(model_dir).last('bc'), int(checkpoint)
  else:
    directory = model_dir_lib.ModelDir(model_dir).checkpoint(checkpoint)
  params, step = checkpoints.restore_params(
    directory, model.init_params_fn(eval_config.input_length, eval_config.target_length), mesh, step
  )
  result = policy_eval.evaluate_policy(
    model, params, mesh, eval_config, reward=reward, progress=progress
  )
  result.update(checkpoint=directory, step=int(step), split=eval_config.split)
  name = checkpoint.strip('/').replace('/', '_')
  path = files.write_json(
    model_dir_lib.ModelDir(model_dir).eval(f'{eval_config.split}_{name}.json'), result
  )
  logging.info('Wrote %s: BLEU %.2f chrF %.2f', path, result['bleu'], result['chrf'])
  print(
    json.dumps(
      {k: v for k, v in result.items() if k not in ('samples', 'hacking')}, indent=1, default=float
    )
  )
  return result
