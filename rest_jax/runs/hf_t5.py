"""A Hugging Face T5 / T5 v1.1 / mT5 checkpoint read as a rest_jax model.

`load_hf_config` maps the checkpoint's config.json onto `network.T5Config`,
`load_params` reads its weights and converts them into the parameter tree of
the policy or of a reward model (placed on a device mesh), and
`check_vocabulary` checks that a SentencePiece model fits the network. The
files are read by `hf_files.py`, the config and weights converted by
`t5_convert.py`; `import_t5.py` (`--run_mode=import_t5`) writes the result.
"""

from __future__ import annotations

import jax
import sentencepiece

from rest_jax import errors
from rest_jax.core import models, network, partitioning
from rest_jax.rewards import reward_model
from rest_jax.runs import hf_files, t5_convert


def load_hf_config(path: str) -> network.T5Config:
  """The `network.T5Config` of a Hugging Face T5 / T5 v1.1 / mT5 checkpoint.

  Args:
    path: the checkpoint directory, its config.json, or a weights file beside it.

  Returns:
    The config (see `t5_convert.config_from_hf`).

  Raises:
    errors.UserInputError: a missing or unsupported config.
  """
  return t5_convert.config_from_hf(hf_files.read_hf_config(path), hf_files.config_path(path))


def load_params(
  hf_checkpoint: str,
  cfg: network.T5Config,
  target: str,
  mesh_config: partitioning.MeshConfig,
  seed: int,
) -> dict:
  """The checkpoint's weights as our parameters, placed on the device mesh.

  Args:
    hf_checkpoint: the checkpoint directory or weights file (`hf_files.load_state_dict`).
    cfg: its network config (`load_hf_config`).
    target: 'policy' (the `EncoderDecoderModel` params) or 'reward_model'
      (the encoder under a freshly initialized reward-model head).
    mesh_config: the device mesh the parameters are placed on.
    seed: initialisation seed of the reward model's head.

  Returns:
    The params tree (without the 'params' key), sharded as
    `partitioning.state_shardings` places it: e.g. token_embedder/embedding [V, E].

  Raises:
    errors.UserInputError: unreadable weights, or weights that do not fit `cfg`.
  """
  state_dict = hf_files.load_state_dict(hf_checkpoint)
  mesh = partitioning.make_mesh(mesh_config)
  if target == 'policy':
    params = t5_convert.convert_policy_params(state_dict, cfg)
    model = models.EncoderDecoderModel(cfg)
    abstract = jax.eval_shape(lambda r: model.init(r, 1, 1), jax.random.key(0))
  else:
    rm_config = reward_model.RewardModelConfig(encoder=cfg)
    params = t5_convert.reward_model_params(state_dict, rm_config, jax.random.key(seed))
    abstract = jax.eval_shape(lambda r: reward_model.init_params(rm_config, r), jax.random.key(0))
  del state_dict
  shardings = partitioning.state_shardings(abstract, mesh)['params']
  return jax.device_put(params, shardings)


def check_vocabulary(path: str, cfg: network.T5Config) -> None:
  """Checks that the SentencePiece model parses, fits the embedding table and has T5's ids.

  Args:
    path: the SentencePiece model file.
    cfg: the network config it is for.

  Raises:
    errors.UserInputError: not a SentencePiece model, more pieces than
      `cfg.vocab_size`, or pad / eos ids other than the config's.
  """
  try:
    sp = sentencepiece.SentencePieceProcessor(model_file=path)
  except (OSError, RuntimeError) as e:
    raise errors.UserInputError(f'{path}: not a SentencePiece model ({e}).') from e
  if sp.get_piece_size() > cfg.vocab_size:
    raise errors.UserInputError(
      f'{path} has {sp.get_piece_size()} pieces but the checkpoint embeds only '
      f"{cfg.vocab_size}; is it the checkpoint's vocabulary?"
    )
  if (sp.pad_id(), sp.eos_id()) != (cfg.pad_id, cfg.eos_id):
    raise errors.UserInputError(
      f"{path}: pad/eos ids ({sp.pad_id()}, {sp.eos_id()}) differ from the checkpoint's "
      f'({cfg.pad_id}, {cfg.eos_id}).'
    )
