"""The files of a Hugging Face checkpoint directory, read without `transformers`.

A checkpoint directory holds `config.json`, its weights (`model.safetensors`,
sharded `model-*.safetensors` with their index, or a torch `pytorch_model.bin`)
and, for T5, the SentencePiece model `spiece.model`. `read_hf_config` parses
the config, `load_state_dict` reads the weights as numpy arrays by Hugging Face
name, and `find_vocabulary` locates the SentencePiece model. Reading
safetensors needs the `safetensors` package (bfloat16 files are read with
`ml_dtypes`), reading .bin files needs torch; both are imported on first use.
What the config and weights mean for our network is `runs/t5_convert.py`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import numpy as np

from rest_jax import errors

CONFIG_FILE = 'config.json'
VOCAB_FILE = 'spiece.model'
# Weight files of a checkpoint directory, in order of preference.
_WEIGHT_FILES = (
  'model.safetensors',
  'model.safetensors.index.json',
  'pytorch_model.bin',
  'pytorch_model.bin.index.json',
)


def config_path(path: str) -> str:
  """config.json of a checkpoint directory, or beside a weights file.

  Args:
    path: the checkpoint directory or a file in it.

  Returns:
    The path of its config.json (which may not exist).
  """
  folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
  return os.path.join(folder, CONFIG_FILE)


def read_hf_config(path: str) -> dict:
  """The parsed config.json of a Hugging Face checkpoint.

  Args:
    path: the checkpoint directory, its config.json, or a weights file beside it.

  Returns:
    The JSON object as a dict.

  Raises:
    errors.UserInputError: the file is missing or not a JSON object.
  """
  json_path = path if path.endswith('.json') and os.path.isfile(path) else config_path(path)
  if not os.path.isfile(json_path):
    raise errors.UserInputError(
      f'HF_CHECKPOINT {path!r}: no {CONFIG_FILE} at {json_path!r}. Point it at a Hugging Face T5 '
      'checkpoint directory (config.json + model.safetensors or pytorch_model.bin).'
    )
  try:
    with open(json_path) as f:
      hf = json.load(f)
  except (OSError, ValueError) as e:
    raise errors.UserInputError(f'{json_path}: not a readable JSON file ({e}).') from e
  if not isinstance(hf, dict):
    raise errors.UserInputError(f'{json_path}: expected a JSON object, got {type(hf).__name__}.')
  return hf


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


def find_vocabulary(hf_checkpoint: str, vocabulary: str | None) -> str:
  """The SentencePiece model to import: `vocabulary`, or the checkpoint's own.

  Args:
    hf_checkpoint: the checkpoint directory, or a weights file in it.
    vocabulary: an explicit SentencePiece model file, or None for the
      checkpoint's `spiece.model`.

  Returns:
    The path of an existing file.

  Raises:
    errors.UserInputError: `vocabulary` does not exist, or it is None and the
      checkpoint has no `spiece.model`.
  """
  if vocabulary is not None:
    if not os.path.isfile(vocabulary):
      raise errors.UserInputError(f'VOCABULARY {vocabulary!r}: file does not exist.')
    return vocabulary
  folder = hf_checkpoint if os.path.isdir(hf_checkpoint) else os.path.dirname(hf_checkpoint)
  path = os.path.join(folder, VOCAB_FILE)
  if not os.path.isfile(path):
    raise errors.UserInputError(
      f'HF_CHECKPOINT {hf_checkpoint!r} has no {VOCAB_FILE}; pass the SentencePiece model of '
      'the checkpoint with --gin.VOCABULARY="\'/path/to/spiece.model\'".'
    )
  return path
