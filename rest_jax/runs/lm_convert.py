"""Hugging Face Llama / Mistral / Qwen2 / Gemma config and weights -> `DecoderConfig`, params.

Pure numpy / JAX: `config_from_hf` maps a parsed config.json of a decoder-only
causal LM onto `network.DecoderConfig`; `convert_params` renames and reshapes
its state dict ({HF name: array}) into the parameter tree of
`network.DecoderOnlyTransformer` and checks it against the network's. Reading
the files is `hf_files.py`, writing the import `import_lm.py`.

How the Hugging Face models map onto `network.DecoderOnlyTransformer` (both
compute the same function; `tests/lm_import_test.py` checks logits against
`transformers`):

* torch `Linear` weights are [out, in]; our kernels are [in, ...out]:
  q_proj [H*D, E] -> query [E, H, D], k_proj / v_proj [G*D, E] -> key / value
  [E, G, D], o_proj [E, H*D] -> out [H, D, E], gate_proj / up_proj [M, E] ->
  wi_0 / wi_1 [E, M], down_proj [E, M] -> wo [M, E], lm_head [V, E] ->
  logits_dense [E, V]. Qwen2's q/k/v biases [H*D] -> [H, D] (`qkv_bias`).
* Grouped-query attention: HF's `repeat_kv` gives query head h the key/value
  head h // (H/G), as our `CausalSelfAttention` does. Both rotate the two
  halves of each head (`rotate_half`) and scale logits by D**-0.5.
* The MLP is `down(act(gate x) * up x)`: SwiGLU ('silu', 'linear') for Llama,
  Mistral and Qwen2; Gemma's GeGLU uses the tanh-approximated GELU
  (`gelu_pytorch_tanh`; transformers also reads Gemma's legacy
  `hidden_act="gelu"` as the tanh approximation), our ('gelu', 'linear').
* RMSNorm: Llama / Mistral / Qwen2 compute `x / rms(x) * weight`, as ours;
  Gemma computes `x / rms(x) * (1 + weight)`: the 1 is folded into our `scale`.
* Gemma multiplies the embeddings by sqrt(E) (`scale_embeddings`) and ties the
  output layer to the embedding by default; tied outputs are never rescaled.
* Token ids: `eos_id` is `eos_token_id` (the first of a list); `pad_id` is
  `pad_token_id`, or 0 when it is unset or equal to the EOS id (the data
  pipeline pads with 0; the policy masks `pad_id` in prompts and never samples
  it); `start_id`, fed between prompt and completion, is `bos_token_id`, or
  the EOS id (the document separator) when there is none.

Not supported (refused with a message naming the setting): RoPE scaling of any
kind (Llama 3.1's 'llama3', linear, dynamic, YaRN, ...), partial rotary
embeddings, sliding-window attention, biases on o_proj or the MLP
(`attention_bias` / `mlp_bias` of Llama and Gemma), Gemma's bidirectional
attention, and other architectures (Gemma 2/3, Phi, ...).

Shapes: V vocab, E hidden_size, H heads, G kv heads, D head_dim, M intermediate_size.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from rest_jax import errors
from rest_jax.core import network

# transformers' class defaults of the config.json keys that may be left out
# (None: the number of heads for num_key_value_heads, E / H for head_dim).
_FAMILY_DEFAULTS = {
  'llama': dict(
    num_key_value_heads=None,
    head_dim=None,
    hidden_act='silu',
    tie_word_embeddings=False,
    pad_token_id=None,
    bos_token_id=1,
    eos_token_id=2,
  ),
  'mistral': dict(
    num_key_value_heads=8,
    head_dim=None,
    hidden_act='silu',
    tie_word_embeddings=False,
    pad_token_id=None,
    bos_token_id=1,
    eos_token_id=2,
  ),
  'qwen2': dict(
    num_key_value_heads=32,
    head_dim=None,
    hidden_act='silu',
    tie_word_embeddings=False,
    pad_token_id=None,
    bos_token_id=None,
    eos_token_id=None,
  ),
  'gemma': dict(
    num_key_value_heads=16,
    head_dim=256,
    hidden_act='gelu_pytorch_tanh',
    tie_word_embeddings=True,
    pad_token_id=0,
    bos_token_id=2,
    eos_token_id=1,
  ),
}
MODEL_TYPES = tuple(_FAMILY_DEFAULTS)
# Required config.json keys -> DecoderConfig fields.
_REQUIRED_KEYS = {
  'vocab_size': 'vocab_size',
  'hidden_size': 'emb_dim',
  'num_attention_heads': 'num_heads',
  'intermediate_size': 'mlp_dim',
  'num_hidden_layers': 'num_layers',
}
# HF activation names (`ACT2FN`) -> ours (`layers.ACTIVATIONS`).
_HF_ACTIVATIONS = {
  'silu': 'silu',
  'swish': 'silu',
  'gelu_pytorch_tanh': 'gelu',
  'gelu_new': 'gelu',
  'gelu': 'gelu_exact',
  'relu': 'relu',
}
_ROPE_THETA = 10000.0  # transformers' default rope_theta for all four families.
_RMS_NORM_EPS = 1e-6  # Likewise rms_norm_eps.
# Tensors that carry no weights (rotary frequencies saved by old transformers).
_IGNORED = re.compile(r'(^|\.)rotary_emb\.inv_freq$')


# ------------------------------------------------------------------- config


def _rope_theta(hf: Mapping[str, Any], source: str) -> float:
  """The rotary base; refuses any RoPE variant other than the plain one.

  transformers >= 5 writes `rope_parameters` {'rope_type', 'rope_theta', ...};
  older versions `rope_theta` and `rope_scaling` (None, or {'type' | 'rope_type', ...}).
  """
  params = hf.get('rope_parameters')
  for key in ('rope_parameters', 'rope_scaling'):
    value = hf.get(key)
    if value is None:
      continue
    if not isinstance(value, Mapping) or any(isinstance(v, Mapping) for v in value.values()):
      raise errors.UserInputError(
        f'{source}: {key}={value!r} is not supported; the network computes plain RoPE, the same '
        'for every layer.'
      )
    kind = value.get('rope_type', value.get('type', 'default'))
    if kind != 'default':
      raise errors.UserInputError(
        f'{source}: {key} has rope_type={kind!r} ({dict(value)}); RoPE scaling (llama3, linear, '
        'dynamic, yarn, ...) is not supported: the network computes plain RoPE '
        '(rope_type "default").'
      )
  partial = (params or {}).get('partial_rotary_factor', hf.get('partial_rotary_factor', 1.0))
  if partial is not None and float(partial) != 1.0:
    raise errors.UserInputError(
      f'{source}: partial_rotary_factor={partial} is not supported; the network rotates every '
      'feature of a head.'
    )
  theta = (params or {}).get('rope_theta', hf.get('rope_theta'))
  return _ROPE_THETA if theta is None else float(theta)


def _check_attention_span(hf: Mapping[str, Any], model_type: str, source: str) -> None:
  """Refuses sliding-window attention (Mistral v0.1, Qwen2 with use_sliding_window)."""
  layer_types = hf.get('layer_types')
  window = hf.get('sliding_window', 4096 if model_type == 'mistral' else None)
  if layer_types:
    sliding = sorted({str(t) for t in layer_types} - {'full_attention'})
    if sliding:
      raise errors.UserInputError(
        f'{source}: layer_types has {", ".join(sliding)} layers (sliding_window={window}); '
        'sliding-window attention is not supported: the network attends to the whole context.'
      )
    return
  if model_type == 'mistral':
    enabled = window is not None
  elif model_type == 'qwen2':
    layers = int(hf['num_hidden_layers'])
    enabled = (
      bool(hf.get('use_sliding_window', False))
      and window is not None
      and int(hf.get('max_window_layers', 28)) < layers
    )
  else:
    enabled = False
  if enabled:
    raise errors.UserInputError(
      f'{source}: sliding_window={window} is not supported: the network attends to the whole '
      'context. If every sequence you will use is shorter than the window the two are the same; '
      'then set sliding_window to null (Qwen2: use_sliding_window to false) in config.json.'
    )
  if hf.get('use_bidirectional_attention'):
    raise errors.UserInputError(
      f'{source}: use_bidirectional_attention is not supported; the network is a causal LM.'
    )


def _activation(hf: Mapping[str, Any], model_type: str, source: str) -> str:
  """Our name of the gate's activation."""
  hf_act = hf.get('hidden_act') or _FAMILY_DEFAULTS[model_type]['hidden_act']
  if model_type == 'gemma':
    # transformers 4.38+ read `hidden_activation` first; every version reads
    # Gemma's legacy hidden_act="gelu" as the tanh approximation.
    hf_act = hf.get('hidden_activation') or hf_act
    if hf_act == 'gelu':
      hf_act = 'gelu_pytorch_tanh'
  if hf_act not in _HF_ACTIVATIONS:
    raise errors.UserInputError(
      f'{source}: hidden_act={hf_act!r} is not supported; use one of '
      f'{", ".join(sorted(_HF_ACTIVATIONS))}.'
    )
  return _HF_ACTIVATIONS[hf_act]


def _first_id(value: Any) -> int | None:
  """A token id, or the first of a list of them (e.g. several EOS ids); None if unset."""
  if isinstance(value, (list, tuple)):
    value = value[0] if value else None
  return None if value is None else int(value)


def _token_ids(hf: Mapping[str, Any], model_type: str, source: str) -> dict[str, int]:
  """pad_id, eos_id and start_id (see the module docstring)."""
  defaults = _FAMILY_DEFAULTS[model_type]
  eos = hf.get('eos_token_id', defaults['eos_token_id'])
  eos_id = _first_id(eos)
  if eos_id is None:
    raise errors.UserInputError(
      f'{source}: eos_token_id is not set; the policy needs an end-of-sequence id. Add the '
      "tokenizer's EOS id to config.json as eos_token_id."
    )
  pad = _first_id(hf.get('pad_token_id', defaults['pad_token_id']))
  if pad not in (None, 0):
    logging.warning(
      'import_lm: %s has pad_token_id=%d; the policy pads with 0 instead, as the data pipeline '
      '(seqio) does: token 0 is masked in prompts and never sampled.',
      source,
      pad,
    )
  pad_id = 0  # What seqio's feature converter pads with, whatever the tokenizer calls padding.
  if pad_id == eos_id:
    raise errors.UserInputError(
      f'{source}: the EOS id {eos_id} is also the padding id 0; the policy needs a padding id '
      'that is not its EOS: set pad_token_id to an unused token in config.json.'
    )
  bos = _first_id(hf.get('bos_token_id', defaults['bos_token_id']))
  return {'pad_id': pad_id, 'eos_id': eos_id, 'start_id': eos_id if bos is None else bos}


def config_from_hf(hf: Mapping[str, Any], source: str = 'config.json') -> network.DecoderConfig:
  """Maps a Hugging Face Llama / Mistral / Qwen2 / Gemma config dict onto `network.DecoderConfig`.

  Keys config.json leaves out take transformers' class defaults for the
  model type (e.g. Gemma: 16 kv heads of width 256, tied output layer).

  Args:
    hf: the parsed config.json (`hf_files.read_hf_config`).
    source: where it came from, for error messages.

  Returns:
    The equivalent `network.DecoderConfig` (float32 activations and params,
    no dropout): sizes, `mlp_activations`, `logits_via_embedding`
    (tie_word_embeddings), `scale_embeddings` (Gemma), `rope_theta`,
    `norm_epsilon` (rms_norm_eps), `qkv_bias` (Qwen2), and the token ids.

  Raises:
    errors.UserInputError: an unknown model_type, a missing size, or a
      variant the network does not compute (RoPE scaling, sliding windows,
      o_proj / MLP biases, an unknown activation; see the module docstring).
  """
  model_type = hf.get('model_type')
  if model_type not in _FAMILY_DEFAULTS:
    archs = ', '.join(hf.get('architectures') or []) or 'unknown architecture'
    raise errors.UserInputError(
      f'{source}: model_type={model_type!r} ({archs}) is not supported; import_lm reads '
      f'decoder-only {", ".join(MODEL_TYPES)} checkpoints (Llama 1-3, Mistral, Qwen2 / '
      'Qwen2.5, Gemma 1).'
    )
  missing = [k for k in _REQUIRED_KEYS if hf.get(k) is None]
  if missing:
    raise errors.UserInputError(
      f'{source}: missing {", ".join(missing)}; is it the config of a {model_type} causal LM?'
    )
  defaults = _FAMILY_DEFAULTS[model_type]
  fields = {ours: int(hf[key]) for key, ours in _REQUIRED_KEYS.items()}
  if model_type != 'qwen2':  # Qwen2 has q/k/v biases (only), whatever attention_bias says.
    for key, where in (('attention_bias', 'q/k/v/o projections'), ('mlp_bias', 'MLP')):
      if hf.get(key):
        raise errors.UserInputError(
          f'{source}: {key}=true (biases on the {where}) is not supported; the network has '
          'bias-free projections (Qwen2-style q/k/v biases only).'
        )
  _check_attention_span(hf, model_type, source)
  heads = fields['num_heads']
  kv_heads = hf.get('num_key_value_heads', defaults['num_key_value_heads'])
  head_dim = hf.get('head_dim', defaults['head_dim'])
  tied = hf.get('tie_word_embeddings', defaults['tie_word_embeddings'])
  try:
    return network.DecoderConfig(
      **fields,
      num_kv_heads=heads if kv_heads is None else int(kv_heads),
      head_dim=fields['emb_dim'] // heads if head_dim is None else int(head_dim),
      mlp_activations=(_activation(hf, model_type, source), 'linear'),
      dropout_rate=0.0,
      logits_via_embedding=bool(True if tied is None else tied),
      scale_embeddings=model_type == 'gemma',
      rope_theta=_rope_theta(hf, source),
      norm_epsilon=float(hf.get('rms_norm_eps') or _RMS_NORM_EPS),
      qkv_bias=model_type == 'qwen2',
      **_token_ids(hf, model_type, source),
    )
  except ValueError as e:
    if isinstance(e, errors.UserInputError):
      raise
    raise errors.UserInputError(f'{source}: {e}') from e


# ------------------------------------------------------------------- weights


class _Weights:
  """HF state dict access by name, with shape checks and a record of what was read."""

  def __init__(self, state_dict: Mapping[str, Any], prefix: str):
    self.state = state_dict
    self.prefix = prefix
    self.used: set[str] = set()

  def __contains__(self, key: str) -> bool:
    return key in self.state

  def get(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
    """The float32 array `key`, which must have `shape` (HF layout)."""
    if key not in self.state:
      raise errors.UserInputError(
        f'The checkpoint lacks {key!r} (it has {len(self.state)} tensors, e.g. '
        f'{sorted(self.state)[:3]}); does it match its config.json?'
      )
    value = np.asarray(self.state[key], dtype=np.float32)
    if value.shape != tuple(shape):
      raise errors.UserInputError(
        f'Checkpoint tensor {key!r} has shape {value.shape}, but config.json implies {shape}.'
      )
    self.used.add(key)
    return value


def _prefix(state_dict: Mapping[str, Any]) -> str:
  """'model.' for a *ForCausalLM state dict, '' for a bare *Model one."""
  if 'model.embed_tokens.weight' in state_dict or 'embed_tokens.weight' not in state_dict:
    return 'model.'
  return ''


def _attention(w: _Weights, prefix: str, cfg: network.DecoderConfig) -> dict:
  """q [H*D, E] -> [E, H, D]; k, v [G*D, E] -> [E, G, D]; o [E, H*D] -> [H, D, E]."""
  e, d = cfg.emb_dim, cfg.head_dim
  out = {}
  for hf_name, ours, n in (
    ('q_proj', 'query', cfg.num_heads),
    ('k_proj', 'key', cfg.num_kv_heads),
    ('v_proj', 'value', cfg.num_kv_heads),
  ):
    out[ours] = {'kernel': w.get(f'{prefix}.{hf_name}.weight', (n * d, e)).T.reshape(e, n, d)}
    if cfg.qkv_bias:
      out[ours]['bias'] = w.get(f'{prefix}.{hf_name}.bias', (n * d,)).reshape(n, d)
  h = cfg.num_heads
  out['out'] = {'kernel': w.get(f'{prefix}.o_proj.weight', (e, h * d)).T.reshape(h, d, e)}
  return out


def _mlp(w: _Weights, prefix: str, cfg: network.DecoderConfig) -> dict:
  """gate, up [M, E] -> wi_0, wi_1 [E, M]; down [E, M] -> wo [M, E]."""
  e, m = cfg.emb_dim, cfg.mlp_dim
  return {
    'wi_0': {'kernel': w.get(f'{prefix}.gate_proj.weight', (m, e)).T},
    'wi_1': {'kernel': w.get(f'{prefix}.up_proj.weight', (m, e)).T},
    'wo': {'kernel': w.get(f'{prefix}.down_proj.weight', (e, m)).T},
  }


def _norm(w: _Weights, key: str, cfg: network.DecoderConfig, offset: float) -> dict:
  """An RMSNorm weight [E] as our `scale` (Gemma's `1 + weight`: offset 1)."""
  return {'scale': w.get(key, (cfg.emb_dim,)) + np.float32(offset)}


def _check_tree(params: Any, cfg: network.DecoderConfig) -> None:
  """Same tree paths and shapes as `DecoderOnlyTransformer(cfg)`'s params, or ValueError."""
  module = network.DecoderOnlyTransformer(cfg)
  expected = jax.eval_shape(
    lambda r: nn.unbox(module.init(r, jnp.ones((1, 2), jnp.int32)))['params'], jax.random.key(0)
  )
  leaves = jax.tree_util.tree_leaves_with_path
  got = {jax.tree_util.keystr(p): tuple(np.shape(x)) for p, x in leaves(params)}
  want = {jax.tree_util.keystr(p): tuple(x.shape) for p, x in leaves(expected)}
  if got != want:
    diff = sorted(set(got.items()) ^ set(want.items()))[:4]
    raise ValueError(f'import_lm: converted params do not match the network: {diff}')


def convert_params(
  state_dict: Mapping[str, Any], cfg: network.DecoderConfig, model_type: str
) -> dict:
  """Converts a HF LlamaForCausalLM / Qwen2ForCausalLM / ... state dict to our params.

  Args:
    state_dict: {HF name: array} (`hf_files.load_state_dict`); float32,
      float16 or bfloat16. A bare base-model state dict (without the 'model.'
      prefix and lm_head) is read too.
    cfg: the network config (`config_from_hf` of the same checkpoint).
    model_type: config.json's model_type ('llama', 'mistral', 'qwen2',
      'gemma'): Gemma's norms scale by `1 + weight`.

  Returns:
    Unboxed float32 numpy params, the tree of `DecoderOnlyTransformer(cfg).init`:
    token_embedder/embedding [V, E]; layer_<i> with pre_attention_norm/scale [E],
    attention/{query,key,value}/kernel [E, H|G, D] (and bias [H|G, D] with
    `cfg.qkv_bias`), attention/out/kernel [H, D, E], pre_mlp_norm/scale [E],
    mlp/{wi_0,wi_1}/kernel [E, M], mlp/wo/kernel [M, E]; final_norm/scale [E];
    and logits_dense/kernel [E, V] unless `cfg.logits_via_embedding`.

  Raises:
    errors.UserInputError: an unknown model_type, a tensor missing or of the
      wrong shape, an lm_head that differs from a tied embedding, or tensors
      the network has no place for (listed: e.g. o_proj or MLP biases).
  """
  if model_type not in _FAMILY_DEFAULTS:
    raise errors.UserInputError(
      f'import_lm: model_type={model_type!r}; use one of {", ".join(MODEL_TYPES)}.'
    )
  offset = 1.0 if model_type == 'gemma' else 0.0
  prefix = _prefix(state_dict)
  w = _Weights(state_dict, prefix)
  shape = (cfg.vocab_size, cfg.emb_dim)
  embedding = w.get(f'{prefix}embed_tokens.weight', shape)
  params = {
    'token_embedder': {'embedding': embedding},
    'final_norm': _norm(w, f'{prefix}norm.weight', cfg, offset),
  }
  for i in range(cfg.num_layers):
    layer = f'{prefix}layers.{i}'
    params[f'layer_{i}'] = {
      'pre_attention_norm': _norm(w, f'{layer}.input_layernorm.weight', cfg, offset),
      'attention': _attention(w, f'{layer}.self_attn', cfg),
      'pre_mlp_norm': _norm(w, f'{layer}.post_attention_layernorm.weight', cfg, offset),
      'mlp': _mlp(w, f'{layer}.mlp', cfg),
    }
  if cfg.logits_via_embedding:
    if 'lm_head.weight' in w and not np.array_equal(w.get('lm_head.weight', shape), embedding):
      raise errors.UserInputError(
        'The checkpoint has an lm_head.weight different from its embed_tokens.weight, but '
        'config.json ties them (tie_word_embeddings); set tie_word_embeddings to false in '
        'config.json if the model was trained untied.'
      )
  elif 'lm_head.weight' in w or prefix:
    params['logits_dense'] = {'kernel': np.ascontiguousarray(w.get('lm_head.weight', shape).T)}
  else:
    raise errors.UserInputError(
      'The checkpoint is a bare base model (no lm_head.weight) but config.json does not tie '
      'the output layer to the embedding (tie_word_embeddings is false): it has no output layer.'
    )
  unused = sorted(k for k in set(w.state) - w.used if not _IGNORED.search(k))
  if unused:
    raise errors.UserInputError(
      f'The checkpoint has {len(unused)} tensors the network has no place for, e.g. '
      f'{unused[:8]}; it is a {model_type} variant the network does not compute (biases on '
      'o_proj or the MLP, extra heads or layers?).'
    )
  _check_tree(params, cfg)
  return params
