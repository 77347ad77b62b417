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

How Hugging Face's T5 maps onto `network.Transformer` (both compute the same
function; `tests/t5_import_test.py` checks logits against `transformers`):

* torch `Linear` weights are [out, in]; our kernels are [in, ...out]: q/k/v
  [H*D, E] -> [E, H, D], o [E, H*D] -> [H, D, E], wi [M, E] -> [E, M],
  wo [E, M] -> [M, E], lm_head [V, E] -> [E, V].
* Relative position biases live in block 0 of each stack as [buckets, H]; ours
  are one table per stack, [H, buckets]. Bucketing is the same function, and
  neither model scales attention logits by 1/sqrt(D).
* `feed_forward_proj`: 'gated-gelu' (T5 v1.1, mT5) is HF's tanh-approximated
  `gelu_new` = our 'gelu' with `wi_0`, `wi_1`; 'relu' (original T5) is one
  `wi` (`mlp_activations=('relu',)`).
* The output layer: T5 with tied embeddings multiplies the decoder output by
  `d_model ** -0.5` before `lm_head` = `shared`: our `logits_via_embedding`.
  Untied checkpoints (T5 v1.1, mT5) have their own `lm_head` and no rescaling:
  our `logits_dense`. (transformers >= 5 writes `scale_decoder_outputs` for
  T5 and never rescales mT5; both are honoured.)
* The decoder starts from the pad id (0), as in HF.

Shapes: V vocab, E d_model, H heads, D d_kv, M d_ff.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import sentencepiece
from absl import logging

from rest_jax import (
  checkpoints,
  errors,
  files,
  gin_utils,
  models,
  network,
  partitioning,
  reward_model,
)

TARGETS = ('policy', 'reward_model')
_MODEL_TYPES = ('t5', 'mt5')
_CONFIG = 'config.json'
# Weight files of a checkpoint directory, in order of preference.
_WEIGHT_FILES = (
  'model.safetensors',
  'model.safetensors.index.json',
  'pytorch_model.bin',
  'pytorch_model.bin.index.json',
)
_VOCAB_FILE = 'spiece.model'
# HF activation names (`ACT2FN`) -> ours (`network.T5Config.mlp_activations`).
_HF_ACTIVATIONS = {
  'gelu_new': 'gelu',
  'gelu_pytorch_tanh': 'gelu',
  'gelu': 'gelu_exact',
  'relu': 'relu',
  'silu': 'silu',
  'swish': 'silu',
}
# Required config.json keys -> T5Config fields.
_REQUIRED_KEYS = {
  'vocab_size': 'vocab_size',
  'd_model': 'emb_dim',
  'num_heads': 'num_heads',
  'd_kv': 'head_dim',
  'd_ff': 'mlp_dim',
  'num_layers': 'num_encoder_layers',
}
_EPSILON = 1e-6  # network.RMSNorm's epsilon.


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


def _major_version(version: Any) -> int:
  try:
    return int(str(version).split('.')[0])
  except ValueError:
    return 0


def _scales_decoder_output(hf: Mapping[str, Any]) -> bool:
  """Whether HF multiplies the decoder output by d_model**-0.5 before `lm_head`."""
  if 'scale_decoder_outputs' in hf:  # T5 configs written by transformers >= 5.
    return bool(hf['scale_decoder_outputs'])
  if hf.get('model_type') == 'mt5' and _major_version(hf.get('transformers_version')) >= 5:
    return False  # transformers >= 5 never rescales mT5 (and forces tie_word_embeddings).
  # transformers < 5: the rescaling goes with tied embeddings (PretrainedConfig default: tied).
  return hf.get('tie_word_embeddings', True) is not False


def config_from_hf(hf: Mapping[str, Any], source: str = 'config.json') -> network.T5Config:
  """Maps a Hugging Face T5 / mT5 config dict onto `network.T5Config`.

  Args:
    hf: the parsed config.json.
    source: where it came from, for error messages.

  Returns:
    The equivalent `network.T5Config` (float32, the checkpoint's dropout rate).

  Raises:
    errors.UserInputError: not a T5 or mT5 config, a missing size, or a
      variant our network does not compute (an unknown activation, a layer-norm
      epsilon other than 1e-6, a decoder start token other than the pad id).
  """
  model_type = hf.get('model_type')
  if model_type not in _MODEL_TYPES:
    archs = ', '.join(hf.get('architectures') or []) or 'unknown architecture'
    raise errors.UserInputError(
      f'{source}: model_type={model_type!r} ({archs}) is not supported; import_t5 reads '
      'T5, T5 v1.1, FLAN-T5 and mT5 checkpoints (model_type "t5" or "mt5").'
    )
  missing = [k for k in _REQUIRED_KEYS if k not in hf]
  if missing:
    raise errors.UserInputError(f'{source}: missing {", ".join(missing)}; is it a T5 config?')
  proj = str(hf.get('feed_forward_proj', 'gated-gelu' if model_type == 'mt5' else 'relu'))
  parts = proj.split('-')
  gated = len(parts) == 2 and parts[0] == 'gated'
  hf_act = 'gelu_new' if proj == 'gated-gelu' else parts[-1]  # As transformers does.
  if (len(parts) == 2 and not gated) or len(parts) > 2 or hf_act not in _HF_ACTIVATIONS:
    raise errors.UserInputError(
      f'{source}: feed_forward_proj={proj!r} is not supported; use one of relu, gated-gelu, '
      'gated-relu, gated-silu, gelu, silu.'
    )
  act = _HF_ACTIVATIONS[hf_act]
  epsilon = float(hf.get('layer_norm_epsilon', _EPSILON))
  if abs(epsilon - _EPSILON) > 1e-12:
    raise errors.UserInputError(
      f'{source}: layer_norm_epsilon={epsilon} is not supported (the network uses {_EPSILON}).'
    )
  pad = hf.get('pad_token_id')
  pad_id = 0 if pad is None else int(pad)
  eos = hf.get('eos_token_id', 1)
  eos_id = int(eos[0] if isinstance(eos, (list, tuple)) else (1 if eos is None else eos))
  start = hf.get('decoder_start_token_id')
  if start is not None and int(start) != pad_id:
    raise errors.UserInputError(
      f'{source}: decoder_start_token_id={start} differs from pad_token_id={pad_id}; the '
      'network starts decoding from the pad id, as T5 does.'
    )
  fields = {ours: int(hf[key]) for key, ours in _REQUIRED_KEYS.items()}
  num_decoder_layers = hf.get('num_decoder_layers')
  return network.T5Config(
    **fields,
    num_decoder_layers=int(
      fields['num_encoder_layers'] if num_decoder_layers is None else num_decoder_layers
    ),
    mlp_activations=(act, 'linear') if gated else (act,),
    dropout_rate=float(hf.get('dropout_rate', 0.1)),
    logits_via_embedding=_scales_decoder_output(hf),
    relative_attention_num_buckets=int(hf.get('relative_attention_num_buckets', 32)),
    relative_attention_max_distance=int(hf.get('relative_attention_max_distance', 128)),
    pad_id=pad_id,
    eos_id=eos_id,
  )


def load_hf_config(path: str) -> network.T5Config:
  """The `network.T5Config` of a Hugging Face T5 / T5 v1.1 / mT5 checkpoint.

  Args:
    path: the checkpoint directory, its config.json, or a weights file beside it.

  Returns:
    The config (see `config_from_hf`).

  Raises:
    errors.UserInputError: a missing or unsupported config.
  """
  return config_from_hf(read_hf_config(path), _config_path(path))


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


# ------------------------------------------------------------------- conversion


class _Weights:
  """HF state dict access by name, with shape checks and a record of what was read."""

  def __init__(self, state_dict: Mapping[str, Any]):
    self.state = state_dict
    self.used: set[str] = set()

  def __contains__(self, key: str) -> bool:
    return key in self.state

  def get(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
    """The float32 array `key`, which must have `shape` (HF layout)."""
    if key not in self.state:
      raise errors.UserInputError(
        f'The checkpoint lacks {key!r} (it has {len(self.state)} tensors, e.g. '
        f'{sorted(self.state)[:3]}); is it a T5 checkpoint matching its config.json?'
      )
    value = np.asarray(self.state[key], dtype=np.float32)
    if value.shape != tuple(shape):
      raise errors.UserInputError(
        f'Checkpoint tensor {key!r} has shape {value.shape}, but config.json implies {shape}.'
      )
    self.used.add(key)
    return value


def _attention(w: _Weights, prefix: str, cfg: network.T5Config) -> dict:
  """q/k/v [H*D, E] -> [E, H, D] kernels; o [E, H*D] -> [H, D, E]."""
  e, h, d = cfg.emb_dim, cfg.num_heads, cfg.head_dim
  out = {}
  for hf_name, ours in (('q', 'query'), ('k', 'key'), ('v', 'value')):
    out[ours] = {'kernel': w.get(f'{prefix}.{hf_name}.weight', (h * d, e)).T.reshape(e, h, d)}
  out['out'] = {'kernel': w.get(f'{prefix}.o.weight', (e, h * d)).T.reshape(h, d, e)}
  return out


def _mlp(w: _Weights, prefix: str, cfg: network.T5Config) -> dict:
  """wi [M, E] -> [E, M] (one per activation: wi_0, wi_1, or wi); wo [E, M] -> [M, E]."""
  e, m = cfg.emb_dim, cfg.mlp_dim
  n = len(cfg.mlp_activations)
  names = [f'wi_{i}' for i in range(n)] if n > 1 else ['wi']
  out = {name: {'kernel': w.get(f'{prefix}.{name}.weight', (m, e)).T} for name in names}
  out['wo'] = {'kernel': w.get(f'{prefix}.wo.weight', (e, m)).T}
  return out


def _norm(w: _Weights, key: str, cfg: network.T5Config) -> dict:
  return {'scale': w.get(key, (cfg.emb_dim,))}


def _relpos(w: _Weights, stack: str, cfg: network.T5Config) -> dict:
  """[buckets, H] of block 0 -> our per-stack table [H, buckets]."""
  key = f'{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight'
  return {'rel_embedding': w.get(key, (cfg.relative_attention_num_buckets, cfg.num_heads)).T}


def _embedding(w: _Weights, cfg: network.T5Config, stacks: tuple[str, ...]) -> np.ndarray:
  """The shared token embedding [V, E]; the stacks' `embed_tokens` must equal it."""
  shape = (cfg.vocab_size, cfg.emb_dim)
  key = 'shared.weight' if 'shared.weight' in w else f'{stacks[0]}.embed_tokens.weight'
  table = w.get(key, shape)
  for stack in stacks:
    alias = f'{stack}.embed_tokens.weight'
    if alias in w and alias != key:
      if not np.array_equal(w.get(alias, shape), table):
        raise errors.UserInputError(
          f'The checkpoint has a {alias!r} different from {key!r}; the network shares one '
          'embedding between encoder and decoder (as T5 does).'
        )
  return table


def _encoder(w: _Weights, cfg: network.T5Config) -> dict:
  """token_embedder, encoder_relpos, encoder_layer_<i>, encoder_norm."""
  params = {
    'token_embedder': {'embedding': _embedding(w, cfg, ('encoder', 'decoder'))},
    'encoder_relpos': _relpos(w, 'encoder', cfg),
    'encoder_norm': _norm(w, 'encoder.final_layer_norm.weight', cfg),
  }
  for i in range(cfg.num_encoder_layers):
    block = f'encoder.block.{i}.layer'
    params[f'encoder_layer_{i}'] = {
      'pre_attention_layer_norm': _norm(w, f'{block}.0.layer_norm.weight', cfg),
      'attention': _attention(w, f'{block}.0.SelfAttention', cfg),
      'pre_mlp_layer_norm': _norm(w, f'{block}.1.layer_norm.weight', cfg),
      'mlp': _mlp(w, f'{block}.1.DenseReluDense', cfg),
    }
  return params


def _check_unused(w: _Weights, ignore_prefixes: tuple[str, ...] = ()) -> None:
  """Fails on per-layer position biases (UMT5-like); logs other tensors left unread."""
  aliases = ('shared.weight', 'encoder.embed_tokens.weight', 'decoder.embed_tokens.weight')
  unused = sorted(
    k
    for k in set(w.state) - w.used
    if k not in aliases and k != 'lm_head.weight' and not k.startswith(ignore_prefixes)
  )
  per_layer = [k for k in unused if 'relative_attention_bias' in k]
  if per_layer:
    raise errors.UserInputError(
      f'The checkpoint has relative position biases in more than the first block '
      f'({per_layer[0]!r}): a per-layer-bias variant (such as UMT5) that the network does not '
      'compute; it shares one bias table per stack (T5, T5 v1.1, mT5).'
    )
  if unused:
    logging.warning(
      'import_t5: %d checkpoint tensors left unused, e.g. %s', len(unused), unused[:5]
    )


def _check_tree(params: Any, expected: Any, what: str) -> None:
  """Same tree paths and shapes as `expected` (ShapeDtypeStructs), or ValueError."""
  leaves = jax.tree_util.tree_leaves_with_path
  got = {jax.tree_util.keystr(p): tuple(np.shape(x)) for p, x in leaves(params)}
  want = {jax.tree_util.keystr(p): tuple(x.shape) for p, x in leaves(expected)}
  if got != want:
    diff = sorted(set(got.items()) ^ set(want.items()))[:4]
    raise ValueError(f'import_t5: converted {what} params do not match the network: {diff}')


def convert_policy_params(state_dict: Mapping[str, Any], cfg: network.T5Config) -> dict:
  """Converts a HF T5ForConditionalGeneration state dict to `EncoderDecoderModel` params.

  Args:
    state_dict: {HF name: array} (`load_state_dict`); float32, float16 or bfloat16.
    cfg: the network config (`load_hf_config` of the same checkpoint).

  Returns:
    Unboxed float32 numpy params, the tree of `EncoderDecoderModel(cfg).init`:
    token_embedder/embedding [V, E], encoder_relpos and decoder_relpos
    rel_embedding [H, buckets], encoder_layer_<i>, encoder_norm,
    decoder_layer_<i>, decoder_norm, and logits_dense/kernel [E, V] unless
    `cfg.logits_via_embedding`.

  Raises:
    errors.UserInputError: a tensor is missing or its shape does not match
      `cfg`, or the checkpoint is a variant the network does not compute.
  """
  w = _Weights(state_dict)
  params = _encoder(w, cfg)
  params['decoder_relpos'] = _relpos(w, 'decoder', cfg)
  params['decoder_norm'] = _norm(w, 'decoder.final_layer_norm.weight', cfg)
  for i in range(cfg.num_decoder_layers):
    block = f'decoder.block.{i}.layer'
    params[f'decoder_layer_{i}'] = {
      'pre_self_attention_layer_norm': _norm(w, f'{block}.0.layer_norm.weight', cfg),
      'self_attention': _attention(w, f'{block}.0.SelfAttention', cfg),
      'pre_cross_attention_layer_norm': _norm(w, f'{block}.1.layer_norm.weight', cfg),
      'encoder_decoder_attention': _attention(w, f'{block}.1.EncDecAttention', cfg),
      'pre_mlp_layer_norm': _norm(w, f'{block}.2.layer_norm.weight', cfg),
      'mlp': _mlp(w, f'{block}.2.DenseReluDense', cfg),
    }
  shape = (cfg.vocab_size, cfg.emb_dim)
  embedding = params['token_embedder']['embedding']
  if 'lm_head.weight' in w:
    lm_head = w.get('lm_head.weight', shape)
  else:
    lm_head = embedding  # Tied: the checkpoint stores `shared` only.
  if cfg.logits_via_embedding:
    if lm_head is not embedding and not np.array_equal(lm_head, embedding):
      raise errors.UserInputError(
        'The checkpoint has an lm_head different from its shared embedding, but config.json '
        'ties them (tie_word_embeddings); set tie_word_embeddings to false in config.json if '
        'the model was trained untied.'
      )
  else:
    params['logits_dense'] = {'kernel': np.ascontiguousarray(lm_head.T)}
  _check_unused(w)
  model = models.EncoderDecoderModel(cfg)
  expected = jax.eval_shape(lambda r: nn.unbox(model.init(r, 1, 1))['params'], jax.random.key(0))
  _check_tree(params, expected, 'policy')
  return params


def convert_encoder_params(state_dict: Mapping[str, Any], cfg: network.T5Config) -> dict:
  """Converts the encoder of a HF T5 checkpoint to the encoder part of `RewardModel`.

  Reads T5ForConditionalGeneration and T5EncoderModel state dicts alike; the
  decoder and lm_head, if any, are ignored.

  Args:
    state_dict: {HF name: array} (`load_state_dict`).
    cfg: the encoder's network config (`load_hf_config`).

  Returns:
    Unboxed float32 numpy params: token_embedder, encoder_relpos,
    encoder_layer_<i>, encoder_norm (the reward model's `head` is not included).

  Raises:
    errors.UserInputError: a tensor is missing or has the wrong shape.
  """
  w = _Weights(state_dict)
  params = _encoder(w, cfg)
  _check_unused(w, ignore_prefixes=('decoder.',))
  return params


def reward_model_params(
  state_dict: Mapping[str, Any], config: reward_model.RewardModelConfig, rng: jax.Array
) -> dict:
  """Reward-model params: the imported encoder and a freshly initialized `head`.

  Args:
    state_dict: {HF name: array} (`load_state_dict`).
    config: the reward model's config; `config.encoder` is the checkpoint's
      network config.
    rng: PRNG key of the head's initialisation.

  Returns:
    Unboxed params, the tree of `reward_model.init_params(config, rng)`:
    the encoder as `convert_encoder_params` gives it, `head` as
    `init_params(config, rng)` initializes it.
  """
  params = convert_encoder_params(state_dict, config.encoder)
  # jit drops the unused encoder initialisation: only the head is computed.
  head = jax.jit(lambda r: nn.unbox(reward_model.init_params(config, r))['params']['head'])(rng)
  params['head'] = jax.tree.map(np.asarray, head)
  expected = jax.eval_shape(
    lambda r: nn.unbox(reward_model.init_params(config, r))['params'], jax.random.key(0)
  )
  _check_tree(params, expected, 'reward-model')
  return params


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
    'from rest_jax import network',
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
    params = convert_policy_params(state_dict, cfg)
    model = models.EncoderDecoderModel(cfg)
    abstract = jax.eval_shape(lambda r: model.init(r, 1, 1), jax.random.key(0))
  else:
    rm_config = reward_model.RewardModelConfig(encoder=cfg)
    params = reward_model_params(state_dict, rm_config, jax.random.key(seed))
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
