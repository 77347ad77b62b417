"""`--run_mode=import_t5`: a Hugging Face T5 / T5 v1.1 / mT5 checkpoint as a rest_jax model.

Reads a Hugging Face checkpoint directory (`config.json` with `model.safetensors`,
sharded `model-*.safetensors` with their index, or a torch `pytorch_model.bin`)
without `transformers`, maps its config onto `network.T5Config`, renames and
reshapes its weights into our parameter tree, and writes

    MODEL_DIR/checkpoints/<name>/best/0/   Orbax checkpoint {'params': ...}, step 0
    MODEL_DIR/import/spiece.model          the SentencePiece vocabulary
    MODEL_DIR/import/model.gin             MODEL_CONFIG, VOCAB_SIZE, VOCAB_PATH, IMPORTED_*
    MODEL_DIR/config_import.gin            the operative config of the import

The policy checkpoint restores with `checkpoints.restore_params` (what eval,
Grow, Improve and the ReST loop's `initial_policy` use); a reward-model encoder
(`target='reward_model'`, a fresh head) restores with `reward_model.load_params`.

Reading the checkpoint's files is `hf_files.py`; the conversion of the
config and the weights (pure numpy / JAX), and how Hugging Face's T5 maps onto
`network.Transformer`, is `t5_convert.py`, applied by `hf_t5.py`; writing the
files is `imported_files.py`.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from rest_jax import errors, gin_utils
from rest_jax.core import partitioning
from rest_jax.runs import hf_files, hf_t5, imported_files

TARGETS = ('policy', 'reward_model')


def import_t5(
  *,
  hf_checkpoint: str,
  model_dir: str,
  vocabulary: str | None = None,
  target: str = 'policy',
  checkpoint_name: str | None = None,
  dropout_rate: float | None = None,
  overwrite: bool = False,
  mesh_config: partitioning.MeshConfig = partitioning.MeshConfig(),
  seed: int = 0,
) -> dict | None:
  """Imports a Hugging Face T5 / T5 v1.1 / mT5 checkpoint into `model_dir`.

  Everything is read and converted before anything is written, so a bad input
  leaves `model_dir` untouched.

  Args:
    hf_checkpoint: a Hugging Face checkpoint directory (config.json and
      model.safetensors, sharded safetensors, or pytorch_model.bin), or one
      weights file with config.json beside it.
    model_dir: run directory to write into (created if missing).
    vocabulary: the SentencePiece model; None: `spiece.model` of the checkpoint.
    target: 'policy' (the whole encoder-decoder) or 'reward_model' (its
      encoder under a freshly initialized reward-model head).
    checkpoint_name: folder under `model_dir/checkpoints`; None: 'pretrained'
      for the policy, 'pretrained_rm' for the reward model. The checkpoint
      is written to `<name>/best`, step 0.
    dropout_rate: the network's dropout in the written gin; None keeps
      config.json's `dropout_rate`.
    overwrite: replace an existing checkpoint of that name (otherwise an error).
    mesh_config: device mesh the parameters are placed on before saving.
    seed: initialisation seed of the reward model's head.

  Returns:
    dict: `checkpoint_dir`, `gin_file`, `vocab_path`, `num_params`, `target`,
    `config` (the network config's repr).

  Raises:
    errors.UserInputError: a missing or unreadable file, an unsupported
      architecture, a vocabulary that does not fit, or an existing checkpoint.
  """
  if target not in TARGETS:
    raise errors.UserInputError(f'import_t5: target={target!r}; use one of {", ".join(TARGETS)}.')
  if jax.process_count() > 1:
    raise errors.UserInputError(
      'import_t5 is a one-off conversion: run it in one process (without --multiprocess); '
      'every process of a later run restores the checkpoint it writes.'
    )
  cfg = hf_t5.load_hf_config(hf_checkpoint)
  if dropout_rate is not None:
    cfg = dataclasses.replace(cfg, dropout_rate=float(dropout_rate))
  vocab_source = hf_files.find_vocabulary(hf_checkpoint, vocabulary)
  hf_t5.check_vocabulary(vocab_source, cfg)
  name = checkpoint_name or ('pretrained' if target == 'policy' else 'pretrained_rm')
  ckpt_dir = os.path.join(os.path.abspath(model_dir), 'checkpoints', name, 'best')
  if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
    if not overwrite:
      raise errors.UserInputError(
        f'{ckpt_dir} already holds a checkpoint; choose another MODEL_DIR or CHECKPOINT_NAME, '
        'or set import_t5.overwrite = True.'
      )
  params = hf_t5.load_params(hf_checkpoint, cfg, target, mesh_config, seed)

  # Write: vocabulary, checkpoint, gin (each atomic), then the operative config.
  import_dir = os.path.join(os.path.abspath(model_dir), 'import')
  vocab_path = imported_files.write_vocabulary(vocab_source, import_dir)
  imported_files.write_checkpoint(ckpt_dir, params)
  gin_path = imported_files.write_model_gin(
    import_dir,
    cfg,
    vocab_path=vocab_path,
    checkpoint_dir=ckpt_dir,
    target=target,
    source=os.path.abspath(hf_checkpoint),
  )
  gin_utils.write_config(model_dir, 'config_import.gin')
  num_params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
  result = {
    'target': target,
    'checkpoint_dir': ckpt_dir,
    'gin_file': gin_path,
    'vocab_path': vocab_path,
    'num_params': num_params,
    'config': repr(cfg),
  }
  print(
    f'[import_t5] {num_params / 1e6:.1f}M params -> {ckpt_dir}\n'
    f'[import_t5] network: {gin_path}; vocabulary: {vocab_path}',
    flush=True,
  )
  return result
