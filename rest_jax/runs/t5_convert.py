"""Hugging Face T5 / T5 v1.1 / mT5 config and weights -> `network.T5Config` and params.

Pure numpy / JAX: `config_from_hf` maps a parsed config.json onto
`network.T5Config`; `convert_policy_params`, `convert_encoder_params` and
`reward_model_params` rename and reshape a state dict ({HF name: array}) into
our parameter trees and check them against the network's. Reading the files
is `hf_files.py` and `hf_t5.py`, writing the checkpoint
`imported_files.py`, for `import_t5.py` (`--run_mode=import_t5`).

How Hugging Face's T5 maps onto `network.Transformer` (both compute the same
function; `tests/import_t5_test.py` checks logits against `transformers`):

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

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from absl import logging

from rest_jax import errors
from rest_jax.core import models, network
from rest_jax.rewards import reward_model

_MODEL_TYPES = ('t5', 'mt5')
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
_EPSILON = 1e-6  # layers.RMSNorm's epsilon.


# ------------------------------------------------------------------- config


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


# ------------------------------------------------------------------- weights


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
    state_dict: {HF name: array} (`hf_files.load_state_dict`); float32, float16 or bfloat16.
    cfg: the network config (`hf_t5.load_hf_config` of the same checkpoint).

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
    state_dict: {HF name: array} (`hf_files.load_state_dict`).
    cfg: the encoder's network config (`hf_t5.load_hf_config`).

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
    state_dict: {HF name: array} (`hf_files.load_state_dict`).
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
