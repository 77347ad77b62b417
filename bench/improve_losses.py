r"""Compares the Improve losses on one real Grow round (prints JSON).

Runs Improve step 1 (filter: reward above the median of the sampled rewards)
of round g1 of a finished ReST run once per loss, each from that run's BC
policy, with the run's learned reward model for validation, and prints one
JSON line per loss: validation reward / BLEU / chrF of the best checkpoint,
the baseline (step 0), steps and wall time. CPU-sized by default.

  python bench/improve_losses.py --model_dir=/tmp/rest_jax/demo \
    --out_dir=/tmp/rest_jax/losses --steps=50
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags
from policy_speed import SIZES  # bench/ is on sys.path when this script runs.

from rest_jax.core import filtering, losses, network, partitioning
from rest_jax.data import tasks
from rest_jax.rewards import reward_fns, reward_model
from rest_jax.runs import evaluation, improve

_MODEL_DIR = flags.DEFINE_string('model_dir', '/tmp/rest_jax/demo', 'A finished demo_cpu run.')
_OUT_DIR = flags.DEFINE_string('out_dir', '/tmp/rest_jax/losses', 'Where each loss runs.')
_STEPS = flags.DEFINE_integer('steps', 50, 'Improve steps per loss.')
_LOSSES = flags.DEFINE_list('losses', sorted(losses.LOSSES), 'Losses to compare.')
_EVAL_EXAMPLES = flags.DEFINE_integer('eval_examples', 250, 'Validation sentences.')

# The shapes of gin/rest/demo_cpu.gin (models/mini.gin, the rest.gin reward model).
POLICY = network.T5Config(vocab_size=4000, **SIZES['mini'])
RM = reward_model.RewardModelConfig(
  encoder=network.T5Config(
    vocab_size=4000,
    emb_dim=128,
    num_heads=4,
    head_dim=32,
    mlp_dim=512,
    num_encoder_layers=2,
    num_decoder_layers=0,
  ),
  output='sigmoid',
  max_length=48,
)


def _link_run(src: str, dst: str) -> None:
  for sub in ('grow/g1', 'checkpoints/bc'):
    os.makedirs(os.path.dirname(os.path.join(dst, sub)), exist_ok=True)
    if not os.path.exists(os.path.join(dst, sub)):
      os.symlink(os.path.join(src, sub), os.path.join(dst, sub))


def main(argv):
  del argv
  task = tasks.tatoeba_en_de()
  reward = reward_fns.LearnedReward(
    checkpoint_dir=os.path.join(_MODEL_DIR.value, 'checkpoints', 'rm', 'last'),
    config=RM,
    vocab_path=tasks.get_vocabulary(task).sentencepiece_model_file,
  )
  eval_config = evaluation.EvalConfig(
    task=task, batch_size=125, input_length=24, target_length=24, max_examples=_EVAL_EXAMPLES.value
  )
  for loss in _LOSSES.value:
    model_dir = os.path.join(_OUT_DIR.value, loss)
    _link_run(_MODEL_DIR.value, model_dir)
    config = improve.ImproveConfig(
      loss=loss,
      schedule=filtering.GlobalPercentiles((50.0,)),
      min_kept=filtering.MinKeptPolicy(min_examples=128),
      num_train_steps=_STEPS.value,
      batch_size=64,
      input_length=24,
      target_length=24,
      learning_rate=1e-3,
      eval_period=max(_STEPS.value // 2, 1),
      patience=0,
      value=improve.ValueConfig(num_train_steps=100, batch_size=64),
    )
    tic = time.time()
    result = improve.improve(
      model_dir=model_dir,
      model_config=POLICY,
      improve_config=config,
      eval_config=eval_config,
      reward=reward,
      mesh_config=partitioning.MeshConfig(),
      progress=False,
    )
    history = [json.loads(x) for x in open(os.path.join(model_dir, 'eval', 'g1_i1_history.jsonl'))]
    print(
      json.dumps(
        {
          'loss': loss,
          'n_train_examples': result['n_train_examples'],
          'baseline_reward': history[0]['reward'],
          'best_step': result['best_step'],
          'val_reward': result['reward'],
          'val_bleu': result['bleu'],
          'val_chrf': result['chrf'],
          'val_length_ratio': result['length_ratio'],
          'last_reward': history[-1]['reward'],
          'seconds': round(time.time() - tic, 1),
        }
      ),
      flush=True,
    )


if __name__ == '__main__':
  app.run(main)
