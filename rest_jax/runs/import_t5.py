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

The conversion of the config and the weights (pure numpy / JAX), and how
Hugging Face's T5 maps onto `network.Transformer`, is `t5_convert.py`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Mapping

import jax
import numpy as np
import sentencepiece

from rest_jax import errors, gin_utils
from rest_jax.core import checkpoints, files, models, network, partitioning
from rest_jax.rewards import reward_model
from rest_jax.runs import t5_convert

TARGETS = ('policy', 'reward_model')
_CONFIG = 'config.json'
# Weight files of a checkpoint directory, in order of preference.
_WEIGHT_FILES = (
  'model.safetensors',
  'model.safetensors.index.json',
  'pytorch_model.bin',
  'pytorch_model.bin.index.json',
)
_VOCAB_FILE = 'spiece.model'


# ------------------------------------------------------------------ reading files


def _config_path(path: str) -> str:
  """config.json of a checkpoint directory, or beside a weights file."""
  folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
  return os.path.join(folder, _CONFIG)


def read_hf_config(path: str) -> dict:
  """The parsed config.json of a Hugging Face checkpoint.

  Args:
    path: the checkpoint directory, its config.json, or a weights file beside it.

  Returns:
    The JSON object as a dict.

  Raises:
    errors.UserInputError: the file is missing or not a JSON object.
  """
  config_path = path if path.endswith('.json') and os.path.isfile(path) else _config_path(path)
  if not os.path.isfile(config_path):
    raise errors.UserInputError(
      f'HF_CHECKPOINT {path!r}: no {_CONFIG} at {config_path!r}. Point it at a Hugging Face T5 '
      'checkpoint directory (config.json + model.safetensors or pytorch_model.bin).'
    )
  try:
    with open(config_path) as f:
      hf = json.load(f)
  except (OSError, ValueError) as e:
    raise errors.UserInputError(f'{config_path}: not a readable JSON file ({e}).') from e
  if not isinstance(hf, dict):
    raise errors.UserInputError(f'{config_path}: expected a JSON object, got {type(hf).__name__}.')
  return hf


def load_hf_config(path: str) -> network.T5Config:
  """The `network.T5Config` of a Hugging Face T5 / T5 v1.1 / mT5 checkpoint.

  Args:
    path: the checkpoint directory, its config.json, or a weights file beside it.

  Returns:
    The config (see `t5_convert.config_from_hf`).

  Raises:
    errors.UserInputError: a missing or unsupported config.
  """
  return t5_convert.config_from_hf(read_hf_config(path), _config_path(path))


def _weights_path(path: str) -> str:
  """The weights file of a checkpoint directory (or `path` itself when a file)."""
  if os.path.isfile(path):
    return path
  if os.path.isdir(path):
    for name in _WEIGHT_FILES:
      candidate = os.path.join(path, name)
      if os.path.isfile(candidate):
        return candidate
  raise errors.UserInputError(
    f'HF_CHECKPOINT {path!r}: no weights found; expected a directory with one of '
    f'{", ".join(_WEIGHT_FILES)}, or one of those files.'
  )


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
  try:
    from safetensors import numpy as safetensors_numpy
  except ImportError as e:
    raise errors.UserInputError(
      f'{path}: reading .safetensors needs the safetensors package: '
      "pip install -e '.[import]' (or pip install safetensors)."
    ) from e
  try:
    return safetensors_numpy.load_file(path)
  except (TypeError, KeyError):
    return _read_safetensors_raw(path)  # A dtype numpy lacks (bfloat16): read it ourselves.
  except Exception as e:  # The Rust reader raises its own error types.
    raise errors.UserInputError(f'{path}: not a readable safetensors file ({e}).') from e


def _read_safetensors_raw(path: str) -> dict[str, np.ndarray]:
  """Reads a safetensors file with numpy and ml_dtypes (for bfloat16 weights).

  The format: an 8-byte little-endian header size, a JSON header
  {name: {dtype, shape, data_offsets}}, then the raw little-endian data.
  """
  import ml_dtypes  # A JAX dependency.

  dtypes = {
    'BF16': ml_dtypes.bfloat16,
    'F16': np.float16,
    'F32': np.float32,
    'F64': np.float64,
    'I64': np.int64,
    'I32': np.int32,
    'I16': np.int16,
    'I8': np.int8,
    'U8': np.uint8,
    'BOOL': np.bool_,
  }
  with open(path, 'rb') as f:
    size = int.from_bytes(f.read(8), 'little')
    header = json.loads(f.read(size))
  data = np.memmap(path, dtype=np.uint8, mode='r', offset=8 + size)
  out = {}
  for name, info in header.items():
    if name == '__metadata__':
      continue
    if info['dtype'] not in dtypes:
      raise errors.UserInputError(f'{path}: tensor {name!r} has unsupported dtype {info["dtype"]}.')
    begin, end = info['data_offsets']
    out[name] = data[begin:end].view(dtypes[info['dtype']]).reshape(info['shape'])
  return out


def _read_torch(path: str) -> dict[str, np.ndarray]:
  try:
    import torch
  except ImportError as e:
    raise errors.UserInputError(
      f'{path}: reading a PyTorch checkpoint needs torch (pip install torch; the CPU build is '
      'enough), or save the model as model.safetensors.'
    ) from e
  try:
    state = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # torch raises many types for a bad file.
    raise errors.UserInputError(f'{path}: not a readable torch checkpoint ({e}).') from e
  if not isinstance(state, Mapping):
    raise errors.UserInputError(f'{path}: expected a state dict, got {type(state).__name__}.')
  return {
    k: (v.detach().float() if v.is_floating_point() else v.detach()).numpy()
    for k, v in state.items()
    if isinstance(v, torch.Tensor)
  }


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads the weights of a Hugging Face checkpoint as numpy arrays, by HF name.

  Args:
    path: a checkpoint directory (model.safetensors, sharded safetensors with
      model.safetensors.index.json, pytorch_model.bin, or its sharded index),
      or one such file.

  Returns:
    {name: array}, e.g. 'encoder.block.0.layer.0.SelfAttention.q.weight' [H*D, E].

  Raises:
    errors.UserInputError: no weights, an unreadable file, or a missing reader
      (safetensors, or torch for .bin files).
  """
  weights = _weights_path(path)
  if weights.endswith('.index.json'):
    try:
      with open(weights) as f:
        shards = sorted(set(json.load(f)['weight_map'].values()))
    except (OSError, ValueError, KeyError, AttributeError) as e:
      raise errors.UserInputError(f'{weights}: not a valid weights index ({e}).') from e
    state = {}
    for shard in shards:
      state.update(load_state_dict(os.path.join(os.path.dirname(weights), shard)))
    return state
  if not os.path.isfile(weights):
    raise errors.UserInputError(f'{weights}: weights file does not exist.')
  if weights.endswith('.safetensors'):
    return _read_safetensors(weights)
  return _read_torch(weights)


# ------------------------------------------------------------------ run function


def _check_vocabulary(path: str, cfg: network.T5Config) -> None:
  """The SentencePiece model parses, fits the embedding table and has T5's ids."""
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


def _find_vocabulary(hf_checkpoint: str, vocabulary: str | None) -> str:
  if vocabulary is not None:
    if not os.path.isfile(vocabulary):
      raise errors.UserInputError(f'VOCABULARY {vocabulary!r}: file does not exist.')
    return vocabulary
  folder = hf_checkpoint if os.path.isdir(hf_checkpoint) else os.path.dirname(hf_checkpoint)
  path = os.path.join(folder, _VOCAB_FILE)
  if not os.path.isfile(path):
    raise errors.UserInputError(
      f'HF_CHECKPOINT {hf_checkpoint!r} has no {_VOCAB_FILE}; pass the SentencePiece model of '
      'the checkpoint with --gin.VOCABULARY="\'/path/to/spiece.model\'".'
    )
  return path


def model_gin(
  cfg: network.T5Config,
  *,
  scope: str = '',
  vocab_path: str,
  checkpoint_dir: str,
  target: str,
  source: str,
) -> str:
  """The gin text of an imported network, in the style of gin/models/*.gin.

  Args:
    cfg: the network config.
    scope: '' for the policy (`network.T5Config`, MODEL_CONFIG), 'rm' for the
      reward model's encoder (`rm/network.T5Config`).
    vocab_path: the copied SentencePiece model (VOCAB_PATH).
    checkpoint_dir: the written checkpoint (IMPORTED_POLICY or IMPORTED_RM).
    target: 'policy' or 'reward_model'.
    source: the Hugging Face checkpoint, for the header.

  Returns:
    The file's text.
  """
  name = 'rm/network.T5Config' if scope == 'rm' else 'network.T5Config'
  lines = [
    f'# The network of {source}, imported by --run_mode=import_t5.',
    '# Include it *after* gin/runs/*.gin, like a gin/models/*.gin file. The task must',
    '# tokenize with VOCAB_PATH, e.g. tasks.ParallelCorpus.vocab_path = %VOCAB_PATH.',
    'from __gin__ import dynamic_registration',
    'from rest_jax.core import network',
    '',
    f'VOCAB_SIZE = {cfg.vocab_size}',
    f'VOCAB_PATH = {vocab_path!r}',
  ]
  if target == 'policy':
    lines += [
      '# The policy checkpoint: INITIAL_POLICY = %IMPORTED_POLICY (ReST),',
      '# INIT_CHECKPOINT = %IMPORTED_POLICY (Improve), CHECKPOINT = %IMPORTED_POLICY (eval).',
      f'IMPORTED_POLICY = {checkpoint_dir!r}',
      '',
      'MODEL_CONFIG = @network.T5Config()',
    ]
  else:
    lines += [
      '# The reward model: the imported encoder and an untrained head.',
      f'IMPORTED_RM = {checkpoint_dir!r}',
      '',
    ]
  lines.append(f'{name}:')
  for field in network.T5Config.__dataclass_fields__:
    value = getattr(cfg, field)
    lines.append(f'  {field} = {"%VOCAB_SIZE" if field == "vocab_size" else repr(value)}')
  return '\n'.join(lines) + '\n'


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
  cfg = load_hf_config(hf_checkpoint)
  if dropout_rate is not None:
    cfg = dataclasses.replace(cfg, dropout_rate=float(dropout_rate))
  vocab_source = _find_vocabulary(hf_checkpoint, vocabulary)
  _check_vocabulary(vocab_source, cfg)
  name = checkpoint_name or ('pretrained' if target == 'policy' else 'pretrained_rm')
  ckpt_dir = os.path.join(os.path.abspath(model_dir), 'checkpoints', name, 'best')
  if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
    if not overwrite:
      raise errors.UserInputError(
        f'{ckpt_dir} already holds a checkpoint; choose another MODEL_DIR or CHECKPOINT_NAME, '
        'or set import_t5.overwrite = True.'
      )
  state_dict = load_state_dict(hf_checkpoint)
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
  params = jax.device_put(params, shardings)

  # Write: vocabulary, checkpoint, gin (each atomic), then the operative config.
  import_dir = os.path.join(os.path.abspath(model_dir), 'import')
  vocab_path = os.path.join(import_dir, _VOCAB_FILE)
  os.makedirs(import_dir, exist_ok=True)
  if os.path.abspath(vocab_source) != vocab_path:
    with open(vocab_source, 'rb') as f:
      files.write_bytes(vocab_path, f.read())
  if os.path.isdir(ckpt_dir):
    shutil.rmtree(ckpt_dir)
  ckpt = checkpoints.Checkpointer(ckpt_dir, max_to_keep=1)
  ckpt.save(0, {'params': params})
  ckpt.close()
  gin_name = 'model.gin' if target == 'policy' else 'reward_model.gin'
  gin_path = os.path.join(import_dir, gin_name)
  text = model_gin(
    cfg,
    scope='' if target == 'policy' else 'rm',
    vocab_path=vocab_path,
    checkpoint_dir=ckpt_dir,
    target=target,
    source=os.path.abspath(hf_checkpoint),
  )
  files.write_text(gin_path, text)
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
