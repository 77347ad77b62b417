"""A Hugging Face decoder-only LM (Llama / Mistral / Qwen2 / Gemma 1) as a rest_jax policy.

Reads a Hugging Face checkpoint directory (`config.json` with `model.safetensors`,
sharded `model-*.safetensors` with their index, or a torch `pytorch_model.bin`)
without `transformers`, maps its config onto `network.DecoderConfig`, renames
and reshapes its weights into the parameter tree of
`network.DecoderOnlyTransformer`, and writes

    MODEL_DIR/checkpoints/<name>/best/0/   Orbax checkpoint {'params': ...}, step 0
    MODEL_DIR/import/spiece.model          the SentencePiece tokenizer, when there is one
    MODEL_DIR/import/model.gin             MODEL_CONFIG, VOCAB_SIZE, VOCAB_PATH, IMPORTED_POLICY
    MODEL_DIR/config_import.gin            the operative config of the import

The checkpoint restores with `checkpoints.restore_params` (what eval, Grow,
Improve and the ReST loop's `initial_policy` use) for `models.DecoderOnlyModel`.

The project's data pipeline tokenizes with SentencePiece: Llama 1/2, Mistral
and Gemma ship one (`tokenizer.model`), which is copied; Qwen2 and Llama 3
ship only a BPE `tokenizer.json`, so their model.gin has VOCAB_PATH = None.

Reading the files is `hf_files.py`; the conversion of the config and the
weights, and how the Hugging Face models map onto our network, is
`lm_convert.py`; writing the checkpoint is `imported_files.py`.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
from absl import logging

from rest_jax import errors, gin_utils
from rest_jax.core import files, models, network, partitioning
from rest_jax.runs import hf_files, imported_files, lm_convert

TOKENIZER_FILE = 'tokenizer.model'  # The SentencePiece model of Llama 1/2, Mistral, Gemma.


def find_tokenizer(hf_checkpoint: str, vocabulary: str | None) -> str | None:
  """The SentencePiece model to import: `vocabulary`, the checkpoint's, or None.

  Args:
    hf_checkpoint: the checkpoint directory, or a weights file in it.
    vocabulary: an explicit SentencePiece model file, or None for the
      checkpoint's `tokenizer.model` (when it has one).

  Returns:
    The path of an existing file, or None when `vocabulary` is None and the
    checkpoint has no `tokenizer.model` (a BPE tokenizer: Qwen2, Llama 3).

  Raises:
    errors.UserInputError: `vocabulary` does not exist.
  """
  if vocabulary is not None:
    if not os.path.isfile(vocabulary):
      raise errors.UserInputError(f'VOCABULARY {vocabulary!r}: file does not exist.')
    return vocabulary
  folder = hf_checkpoint if os.path.isdir(hf_checkpoint) else os.path.dirname(hf_checkpoint)
  path = os.path.join(folder, TOKENIZER_FILE)
  return path if os.path.isfile(path) else None


def check_tokenizer(path: str, cfg: network.DecoderConfig) -> None:
  """Checks that a SentencePiece model parses, fits the embedding and has the config's EOS id.

  Args:
    path: the SentencePiece model file.
    cfg: the network config it is for.

  Raises:
    errors.UserInputError: not a SentencePiece model, more pieces than
      `cfg.vocab_size`, or an EOS id other than the config's.
  """
  import sentencepiece  # A project dependency; only this check needs it here.

  try:
    sp = sentencepiece.SentencePieceProcessor(model_file=path)
  except (OSError, RuntimeError) as e:
    raise errors.UserInputError(f'{path}: not a SentencePiece model ({e}).') from e
  if sp.get_piece_size() > cfg.vocab_size:
    raise errors.UserInputError(
      f'{path} has {sp.get_piece_size()} pieces but the checkpoint embeds only '
      f"{cfg.vocab_size}; is it the checkpoint's tokenizer?"
    )
  if sp.eos_id() != cfg.eos_id:
    raise errors.UserInputError(
      f"{path}: EOS id {sp.eos_id()} differs from the checkpoint's eos_token_id {cfg.eos_id}."
    )


def model_gin(
  cfg: network.DecoderConfig, *, vocab_path: str | None, checkpoint_dir: str, source: str
) -> str:
  """The gin text of an imported decoder-only policy, in the style of gin/models/*.gin.

  Args:
    cfg: the network config.
    vocab_path: the copied SentencePiece model (VOCAB_PATH), or None.
    checkpoint_dir: the written checkpoint (IMPORTED_POLICY).
    source: the Hugging Face checkpoint, for the header.

  Returns:
    The file's text: VOCAB_SIZE, VOCAB_PATH, IMPORTED_POLICY, MODEL_CONFIG and
    every `network.DecoderConfig` field.
  """
  lines = [
    f'# The network of {source}, imported by --run_mode=import_lm.',
    '# Include it *after* gin/runs/*.gin, like a gin/models/*.gin file. The task must',
    '# tokenize with VOCAB_PATH, e.g. tasks.ParallelCorpus.vocab_path = %VOCAB_PATH.',
  ]
  if vocab_path is None:
    lines.append('# The checkpoint has no SentencePiece tokenizer.model: set VOCAB_PATH.')
  lines += [
    'from __gin__ import dynamic_registration',
    'from rest_jax.core import network',
    '',
    f'VOCAB_SIZE = {cfg.vocab_size}',
    f'VOCAB_PATH = {vocab_path!r}',
    '# The policy checkpoint: INITIAL_POLICY = %IMPORTED_POLICY (ReST),',
    '# INIT_CHECKPOINT = %IMPORTED_POLICY (Improve), CHECKPOINT = %IMPORTED_POLICY (eval).',
    f'IMPORTED_POLICY = {checkpoint_dir!r}',
    '',
    'MODEL_CONFIG = @network.DecoderConfig()',
    'network.DecoderConfig:',
  ]
  for field in network.DecoderConfig.__dataclass_fields__:
    value = getattr(cfg, field)
    lines.append(f'  {field} = {"%VOCAB_SIZE" if field == "vocab_size" else repr(value)}')
  return '\n'.join(lines) + '\n'


def import_lm(
  *,
  hf_checkpoint: str,
  model_dir: str,
  vocabulary: str | None = None,
  checkpoint_name: str = 'pretrained',
  dropout_rate: float | None = None,
  dtype: str | None = None,
  overwrite: bool = False,
  mesh_config: partitioning.MeshConfig = partitioning.MeshConfig(),
) -> dict | None:
  """Imports a Hugging Face Llama / Mistral / Qwen2 / Gemma causal LM into `model_dir`.

  Everything is read and converted before anything is written, so a bad input
  leaves `model_dir` untouched. The parameters are written in float32.

  Args:
    hf_checkpoint: a Hugging Face checkpoint directory (config.json and
      model.safetensors, sharded safetensors, or pytorch_model.bin), or one
      weights file with config.json beside it.
    model_dir: run directory to write into (created if missing).
    vocabulary: a SentencePiece model; None: the checkpoint's
      `tokenizer.model`, if any (otherwise VOCAB_PATH = None in the gin).
    checkpoint_name: folder under `model_dir/checkpoints`; the checkpoint is
      written to `<name>/best`, step 0.
    dropout_rate: the network's dropout in the written gin (None: 0).
    dtype: the network's activation dtype in the written gin (e.g.
      'bfloat16' on an accelerator; None: float32).
    overwrite: replace an existing checkpoint of that name (otherwise an error).
    mesh_config: device mesh the parameters are placed on before saving.

  Returns:
    dict: `checkpoint_dir`, `gin_file`, `vocab_path` (None without a
    SentencePiece tokenizer), `num_params`, `model_type`, `config` (the
    network config's repr).

  Raises:
    errors.UserInputError: a missing or unreadable file, an unsupported
      architecture or variant, a tokenizer that does not fit, or an existing
      checkpoint.
  """
  if jax.process_count() > 1:
    raise errors.UserInputError(
      'import_lm is a one-off conversion: run it in one process (without --multiprocess); '
      'every process of a later run restores the checkpoint it writes.'
    )
  hf = hf_files.read_hf_config(hf_checkpoint)
  cfg = lm_convert.config_from_hf(hf, hf_files.config_path(hf_checkpoint))
  if dropout_rate is not None:
    cfg = dataclasses.replace(cfg, dropout_rate=float(dropout_rate))
  if dtype is not None:
    cfg = dataclasses.replace(cfg, dtype=str(dtype))
  vocab_source = find_tokenizer(hf_checkpoint, vocabulary)
  if vocab_source is not None:
    check_tokenizer(vocab_source, cfg)
  else:
    logging.warning(
      'import_lm: %s has no SentencePiece tokenizer (%s); the written gin has VOCAB_PATH = None.',
      hf_checkpoint,
      TOKENIZER_FILE,
    )
  ckpt_dir = os.path.join(os.path.abspath(model_dir), 'checkpoints', checkpoint_name, 'best')
  if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir) and not overwrite:
    raise errors.UserInputError(
      f'{ckpt_dir} already holds a checkpoint; choose another MODEL_DIR or CHECKPOINT_NAME, '
      'or set import_lm.overwrite = True.'
    )
  state_dict = hf_files.load_state_dict(hf_checkpoint)
  params = lm_convert.convert_params(state_dict, cfg, hf['model_type'])
  del state_dict
  model = models.make_model(cfg)
  abstract = jax.eval_shape(lambda r: model.init(r, 1, 1), jax.random.key(0))
  mesh = partitioning.make_mesh(mesh_config)
  params = jax.device_put(params, partitioning.state_shardings(abstract, mesh)['params'])

  # Write: tokenizer, checkpoint, gin (each atomic), then the operative config.
  import_dir = os.path.join(os.path.abspath(model_dir), 'import')
  vocab_path = None
  if vocab_source is not None:
    vocab_path = imported_files.write_vocabulary(vocab_source, import_dir)
  imported_files.write_checkpoint(ckpt_dir, params)
  gin_path = os.path.join(import_dir, 'model.gin')
  files.write_text(
    gin_path,
    model_gin(
      cfg,
      vocab_path=vocab_path,
      checkpoint_dir=ckpt_dir,
      source=os.path.abspath(hf_checkpoint),
    ),
  )
  gin_utils.write_config(model_dir, 'config_import.gin')
  num_params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
  print(
    f'[import_lm] {hf["model_type"]}: {num_params / 1e6:.1f}M params -> {ckpt_dir}\n'
    f'[import_lm] network: {gin_path}; vocabulary: {vocab_path}',
    flush=True,
  )
  return {
    'model_type': hf['model_type'],
    'checkpoint_dir': ckpt_dir,
    'gin_file': gin_path,
    'vocab_path': vocab_path,
    'num_params': num_params,
    'config': repr(cfg),
  }
