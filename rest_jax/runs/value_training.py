"""BVE training of the behaviour value network V^beta that 'bvmpo' and 'oac' need.

The value network (`models.ValueModel`) starts its body from the policy and
learns the Monte-Carlo returns of the whole Grow round (samples and human
data, D^beta) through the shared training loop. It is trained before the first
such Improve step of a round and restored by its later steps:
`checkpoints/g<g>_value/last`, `summaries/g<g>_value/`.
"""

from __future__ import annotations

from typing import Any

import jax

from rest_jax.core import improve_losses, models, network, optimizers, train_loop, trainer
from rest_jax.core import model_dir as model_dir_lib
from rest_jax.core import train_state as train_state_lib
from rest_jax.data import grow_io, improve_data


def train_value(
  *,
  model_dir: str,
  model_config: network.T5Config,
  config: Any,
  grow_round: int,
  init_params: Any,
  mesh,
  progress: bool = True,
) -> Any:
  """Trains (or restores) the behaviour value network of round g by BVE.

  Args:
    model_dir: run directory; checkpoints go to `checkpoints/g<g>_value/last`.
    model_config: the policy's network (the value body has the same shape).
    config: an `improve.ImproveConfig` (its `value`, lengths and seed).
    grow_round: g, whose whole round (samples and human data) is D^beta.
    init_params: unboxed policy params that initialize the value body.
    mesh: device mesh.
    progress: progress bar.

  Returns:
    The value network's unboxed params (sharded).
  """
  vcfg = config.value
  value_model = models.ValueModel(model_config, vcfg.discount)
  opt = optimizers.OptimizerConfig(
    learning_rate=vcfg.learning_rate,
    warmup_steps=min(20, vcfg.num_train_steps // 10),
    decay='constant',
  )
  tx = optimizers.make(opt, vcfg.num_train_steps)

  def init_fn(r):
    return value_model.init(r, config.input_length, config.target_length)['params']

  rng = jax.random.key(config.shuffle_seed)
  head_init = jax.tree.map(
    lambda x: x.value if hasattr(x, 'value') else x,
    init_fn(rng),
    is_leaf=lambda x: hasattr(x, 'value'),
  )
  params = models.value_params_from_policy(improve_losses.policy_params(init_params), head_init)
  state, shardings = train_state_lib.from_params(params, init_fn, tx, mesh)
  round_dir = model_dir_lib.ModelDir(model_dir).grow_round(grow_round)

  def batches(start: int):
    manifest = grow_io.verify_round(round_dir)
    task = grow_io.register_round_task(round_dir, manifest['vocab_path'])
    fields = ('reward',)
    return improve_data.stream(
      task, config, vcfg.batch_size, fields, pack=False, skip=start, size=manifest['num_records']
    )

  loop = train_loop.run(
    phase=f'g{grow_round}_value',
    model_dir=model_dir_lib.ModelDir(model_dir),
    steps=trainer.Trainer(loss_fn=value_model.loss_fn, tx=tx, mesh=mesh, state_shardings=shardings),
    state=state,
    shardings=shardings,
    batches=batches,
    rng=rng,
    config=train_loop.LoopConfig(
      num_steps=vcfg.num_train_steps, checkpoint_period=vcfg.num_train_steps, keep=1
    ),
    progress=progress,
  )
  return loop.state.params
