"""Importing Hugging Face decoder-only LMs: our logits equal `transformers`' logits.

Tiny random Llama (grouped-query attention, untied output layer), Qwen2 (q/k/v
biases, tied) and Gemma (GeGLU, `1 + weight` norms, scaled embeddings, tied)
models are built with `transformers` (CPU, float32), written with
`save_pretrained` (safetensors), converted by `lm_convert` and compared on a
random batch; then the `import_lm` driver's checkpoint is restored through
`checkpoints.restore_params`. Unsupported variants fail with a clear error.
"""

import dataclasses
import functools
import os

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')
pytest.importorskip('safetensors')

from rest_jax import errors  # noqa: E402
from rest_jax.core import checkpoints, models, network, partitioning  # noqa: E402
from rest_jax.runs import hf_files, import_lm, lm_convert  # noqa: E402

VOCAB = 96
TOL = 1e-4
_SIZES = dict(
  vocab_size=VOCAB,
  hidden_size=32,
  intermediate_size=48,
  num_hidden_layers=2,
  num_attention_heads=4,
  num_key_value_heads=2,
  head_dim=8,
  initializer_range=0.1,  # Logits of order 1, so the tolerance means something.
)
FAMILIES = {
  # Grouped-query attention (4 heads, 2 kv heads), its own lm_head, a non-default rotary base.
  'llama': (
    transformers.LlamaConfig,
    transformers.LlamaForCausalLM,
    dict(tie_word_embeddings=False, rope_theta=500.0, rms_norm_eps=1e-5),
  ),
  # q/k/v biases, tied output layer, no pad or bos id.
  'qwen2': (
    transformers.Qwen2Config,
    transformers.Qwen2ForCausalLM,
    dict(tie_word_embeddings=True, rope_theta=1e6, eos_token_id=5),
  ),
  # GeGLU (tanh GELU), `x * (1 + weight)` norms, embeddings times sqrt(E), tied.
  'gemma': (
    transformers.GemmaConfig,
    transformers.GemmaForCausalLM,
    dict(hidden_act='gelu_pytorch_tanh'),
  ),
}


@functools.cache
def hf_model(family: str):
  """A seeded random float32 HF model, with random norms and biases."""
  config_cls, model_cls, overrides = FAMILIES[family]
  config = config_cls(**{**_SIZES, **overrides})
  torch.manual_seed(0)
  model = model_cls(config).float().eval()
  gen = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if 'norm' in name:  # Not their init (ones, or Gemma's zeros): the norms must map too.
        p.add_(0.2 * torch.randn(p.shape, generator=gen))
      elif name.endswith('.bias'):  # Initialized to zeros.
        p.copy_(0.1 * torch.randn(p.shape, generator=gen))
  return model


def write_checkpoint(family: str, folder: str) -> str:
  hf_model(family).save_pretrained(folder, safe_serialization=True)
  return folder


def tokens() -> np.ndarray:
  return np.random.default_rng(3).integers(0, VOCAB, (2, 12)).astype(np.int32)


def hf_logits(model, ids: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(input_ids=torch.from_numpy(ids.astype(np.int64))).logits.numpy()


def our_logits(cfg: network.DecoderConfig, params, ids: np.ndarray) -> np.ndarray:
  out = network.DecoderOnlyTransformer(cfg).apply({'params': params}, jnp.asarray(ids))
  return np.asarray(out)


def load(folder: str) -> tuple[network.DecoderConfig, dict]:
  hf = hf_files.read_hf_config(folder)
  cfg = lm_convert.config_from_hf(hf, hf_files.config_path(folder))
  params = lm_convert.convert_params(hf_files.load_state_dict(folder), cfg, hf['model_type'])
  return cfg, params


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_logits_match_transformers(tmp_path, family):
  folder = write_checkpoint(family, str(tmp_path / family))
  cfg, params = load(folder)
  assert (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (4, 2, 8)
  assert cfg.logits_via_embedding == (family != 'llama')
  assert ('logits_dense' in params) == (family == 'llama')
  assert cfg.qkv_bias == (family == 'qwen2')
  assert cfg.scale_embeddings == (family == 'gemma')
  ids = tokens()
  theirs = hf_logits(hf_model(family), ids)
  ours = our_logits(cfg, params, ids)
  assert ours.shape == theirs.shape == (2, 12, VOCAB)
  assert np.abs(theirs).max() > 0.5  # Not a trivially small comparison.
  diff = float(np.abs(ours - theirs).max())
  print(f'{family}: max |logit diff| = {diff:.2e} (max |logit| {np.abs(theirs).max():.2f})')
  assert diff < TOL


def test_config_mapping():
  llama = {**_SIZES, 'model_type': 'llama', 'num_key_value_heads': None, 'head_dim': None}
  llama.update(rope_theta=500000.0, rope_scaling=None, eos_token_id=[128001, 128009])
  llama.update(bos_token_id=128000, vocab_size=128256)
  cfg = lm_convert.config_from_hf(llama)  # An older (transformers 4) layout.
  assert (cfg.num_kv_heads, cfg.head_dim, cfg.rope_theta) == (4, 8, 500000.0)
  assert (cfg.pad_id, cfg.eos_id, cfg.start_id) == (0, 128001, 128000)
  assert cfg.mlp_activations == ('silu', 'linear') and not cfg.logits_via_embedding
  # Gemma's legacy hidden_act 'gelu' is the tanh approximation; it ties by default.
  gemma = {**_SIZES, 'model_type': 'gemma', 'hidden_act': 'gelu', 'pad_token_id': 0}
  cfg = lm_convert.config_from_hf(gemma)
  assert cfg.mlp_activations == ('gelu', 'linear') and cfg.logits_via_embedding
  assert (cfg.pad_id, cfg.eos_id, cfg.start_id) == (0, 1, 2)
  # A pad id equal to EOS would mask every target EOS: padding is 0 instead.
  qwen = {**_SIZES, 'model_type': 'qwen2', 'pad_token_id': 7, 'eos_token_id': 7}
  cfg = lm_convert.config_from_hf(qwen)
  assert (cfg.pad_id, cfg.eos_id, cfg.start_id, cfg.qkv_bias) == (0, 7, 7, True)


@pytest.mark.parametrize(
  'change, message',
  [
    (dict(rope_scaling={'rope_type': 'llama3', 'factor': 8.0}), "rope_type='llama3'"),
    (dict(rope_parameters={'rope_type': 'yarn', 'rope_theta': 1e4}), "rope_type='yarn'"),
    (dict(model_type='mistral', sliding_window=4096), 'sliding_window=4096'),
    (dict(model_type='qwen2', layer_types=['full_attention', 'sliding_attention']), 'sliding'),
    (dict(attention_bias=True), 'attention_bias=true'),
    (dict(model_type='gemma2'), "model_type='gemma2'"),
    (dict(hidden_act='tanh'), "hidden_act='tanh'"),
    (dict(num_key_value_heads=3), 'must divide num_heads'),
  ],
)
def test_unsupported_configs_are_refused(change, message):
  hf = {**_SIZES, 'model_type': 'llama', **change}
  with pytest.raises(errors.UserInputError, match=message.replace('[', r'\[')):
    lm_convert.config_from_hf(hf, 'x/config.json')


def test_bad_weights_are_refused(tmp_path):
  folder = write_checkpoint('qwen2', str(tmp_path / 'qwen2'))
  hf = hf_files.read_hf_config(folder)
  cfg = lm_convert.config_from_hf(hf)
  state = hf_files.load_state_dict(folder)
  missing = dict(state)
  del missing['model.layers.1.self_attn.k_proj.bias']
  with pytest.raises(errors.UserInputError, match=r"lacks 'model\.layers\.1\.self_attn\.k_proj"):
    lm_convert.convert_params(missing, cfg, 'qwen2')
  extra = {**state, 'model.layers.0.self_attn.o_proj.bias': np.zeros(32, np.float32)}
  with pytest.raises(errors.UserInputError, match=r'no place for.*o_proj\.bias'):
    lm_convert.convert_params(extra, cfg, 'qwen2')
  untied = {**state, 'lm_head.weight': np.ones((VOCAB, 32), np.float32)}
  with pytest.raises(errors.UserInputError, match='ties them'):
    lm_convert.convert_params(untied, cfg, 'qwen2')
  with pytest.raises(errors.UserInputError, match='lacks'):  # A missing lm_head, untied.
    lm_convert.convert_params(state, dataclasses.replace(cfg, logits_via_embedding=False), 'qwen2')


def test_import_run_writes_a_restorable_policy(tmp_path):
  folder = write_checkpoint('llama', str(tmp_path / 'hf'))
  model_dir = str(tmp_path / 'run')
  one_device = partitioning.MeshConfig(num_devices=1)
  result = import_lm.import_lm(hf_checkpoint=folder, model_dir=model_dir, mesh_config=one_device)
  ckpt_dir = os.path.join(model_dir, 'checkpoints', 'pretrained', 'best')
  assert result['checkpoint_dir'] == ckpt_dir and result['vocab_path'] is None
  cfg, _ = load(folder)
  model = models.make_model(cfg)
  mesh = partitioning.make_mesh(one_device)
  params, step = checkpoints.restore_params(ckpt_dir, model.init_params_fn(5, 7), mesh)
  assert step == 0
  ids = tokens()
  diff = np.abs(our_logits(cfg, params, ids) - hf_logits(hf_model('llama'), ids)).max()
  assert diff < TOL
  # The written gin gives the same network.
  import gin

  try:
    gin.clear_config()
    gin.parse_config_file(result['gin_file'])
    assert gin.get_configurable(network.DecoderConfig)() == cfg
    assert gin.query_parameter('%IMPORTED_POLICY') == ckpt_dir
    assert gin.query_parameter('%VOCAB_PATH') is None
  finally:
    gin.clear_config()
  with pytest.raises(errors.UserInputError, match='already holds a checkpoint'):
    import_lm.import_lm(hf_checkpoint=folder, model_dir=model_dir, mesh_config=one_device)
