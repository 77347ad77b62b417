"""Importing Hugging Face T5 checkpoints: our logits equal `transformers`' logits.

Tiny random T5 v1.1, original T5 (ReLU, tied) and mT5 models are built with
`transformers` (CPU, float32), written as a Hugging Face checkpoint
(safetensors, sharded safetensors or a torch .bin), converted, and compared on
a batch with padding; then the written Orbax checkpoint is restored through
`checkpoints.restore_params` / `reward_model.load_params`.
"""

import dataclasses
import functools
import io
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sentencepiece as spm
import test_utils

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')
pytest.importorskip('safetensors')

from safetensors import torch as safetensors_torch  # noqa: E402

from rest_jax import errors  # noqa: E402
from rest_jax.core import checkpoints, layers, models, network  # noqa: E402
from rest_jax.rewards import reward_model  # noqa: E402
from rest_jax.runs import (  # noqa: E402
  hf_files,  # noqa: E402
  hf_t5,
  import_t5,
  t5_convert,
)

VOCAB = 96
TOL = 1e-4
# (num_layers, num_decoder_layers) and the rest of each variant's HF config.
_SIZES = dict(
  vocab_size=VOCAB,
  d_model=32,
  d_kv=8,
  num_heads=4,
  d_ff=48,
  num_layers=2,
  relative_attention_num_buckets=8,
  relative_attention_max_distance=16,
  dropout_rate=0.0,
)
VARIANTS = {
  # T5 v1.1: gated GELU, its own lm_head (hub layout: tie_word_embeddings false).
  'v1_1': (
    transformers.T5Config,
    dict(feed_forward_proj='gated-gelu', num_decoder_layers=3, tie_word_embeddings=False),
  ),
  # Original T5: ReLU MLP, tied embeddings, decoder output rescaled by d_model**-0.5.
  't5': (transformers.T5Config, dict(feed_forward_proj='relu', tie_word_embeddings=True)),
  # mT5: gated GELU, untied, fewer decoder than encoder layers.
  'mt5': (
    transformers.MT5Config,
    dict(
      feed_forward_proj='gated-gelu', num_layers=3, num_decoder_layers=2, tie_word_embeddings=False
    ),
  ),
}
_MODEL_CLASSES = {
  'v1_1': transformers.T5ForConditionalGeneration,
  't5': transformers.T5ForConditionalGeneration,
  'mt5': transformers.MT5ForConditionalGeneration,
}


@functools.cache
def hf_model(variant: str):
  """A seeded random float32 HF model; untied variants get a distinct lm_head."""
  config_cls, overrides = VARIANTS[variant]
  config = config_cls(**{**_SIZES, **overrides})
  torch.manual_seed(0)
  model = _MODEL_CLASSES[variant](config).float().eval()
  gen = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if 'layer_norm' in name:  # Not all ones: the norms' scales must map too.
        p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
    if variant != 't5':  # transformers >= 5 ties lm_head at init: untie it, as in T5 v1.1.
      model.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, 32, generator=gen))
  return model


def _write_vocab(folder: str) -> str:
  """A SentencePiece model of < VOCAB pieces with T5's ids (pad 0, eos 1, unk 2)."""
  pairs = test_utils.synthetic_pairs(200)
  buf = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter([x for p in pairs for x in p]),
    model_writer=buf,
    vocab_size=64,
    model_type='unigram',
    pad_id=0,
    eos_id=1,
    unk_id=2,
    bos_id=-1,
    hard_vocab_limit=False,
    num_threads=1,
    minloglevel=2,
  )
  path = os.path.join(folder, 'spiece.model')
  with open(path, 'wb') as f:
    f.write(buf.getvalue())
  return path


def write_checkpoint(variant: str, folder: str, fmt: str) -> str:
  """Writes `hf_model(variant)` as a HF checkpoint directory (with spiece.model).

  fmt: 'pretrained' (`save_pretrained`, as the installed transformers writes it;
  only for the tied variant, whose weights it round-trips), 'sharded' (the same
  in several safetensors files), 'safetensors' (the hub layout: config.json
  with tie_word_embeddings as trained, every tensor in model.safetensors), or
  'bin' (a torch state dict, pytorch_model.bin).
  """
  model = hf_model(variant)
  os.makedirs(folder, exist_ok=True)
  if fmt in ('pretrained', 'sharded'):
    model.save_pretrained(folder, max_shard_size='40KB' if fmt == 'sharded' else '5GB')
  else:
    config = model.config.to_dict()
    config['tie_word_embeddings'] = variant == 't5'
    config.pop('scale_decoder_outputs', None)
    with open(os.path.join(folder, 'config.json'), 'w') as f:
      json.dump(config, f)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if fmt == 'safetensors':
      safetensors_torch.save_file(state, os.path.join(folder, 'model.safetensors'))
    else:
      torch.save(state, os.path.join(folder, 'pytorch_model.bin'))
  _write_vocab(folder)
  return folder


def batch(seed: int = 0):
  """Inputs [4, 9] with padding; targets [4, 7] (padded rows), inputs shifted from 0."""
  rs = np.random.RandomState(seed)
  enc = rs.randint(2, VOCAB, (4, 9)).astype(np.int32)
  tgt = rs.randint(2, VOCAB, (4, 7)).astype(np.int32)
  for row, (n_in, n_t) in enumerate([(9, 7), (5, 7), (3, 4), (7, 2)]):
    enc[row, n_in - 1], enc[row, n_in:] = 1, 0
    tgt[row, n_t - 1], tgt[row, n_t:] = 1, 0
  return test_utils.seq2seq_batch(enc, tgt)


def hf_outputs(model, b):
  """HF logits [B, T, V] and encoder hidden states [B, S, E] (teacher forcing)."""
  enc = torch.tensor(b['encoder_input_tokens'], dtype=torch.long)
  with torch.no_grad():
    out = model(
      input_ids=enc,
      attention_mask=(enc != 0).long(),
      decoder_input_ids=torch.tensor(b['decoder_input_tokens'], dtype=torch.long),
    )
  return out.logits.numpy(), out.encoder_last_hidden_state.numpy()


@functools.partial(jax.jit, static_argnums=0)
def our_logits(model, params, b):
  return model.logits(params, b)


def max_diff(ours, theirs, valid):
  """Max abs difference over the positions where `valid` [B, L] is true."""
  return float(np.abs(np.asarray(ours) - theirs)[valid].max())


@pytest.mark.parametrize(
  'variant, fmt',
  [
    ('v1_1', 'safetensors'),
    ('v1_1', 'bin'),
    ('t5', 'pretrained'),
    ('t5', 'sharded'),
    ('t5', 'bin'),
    ('mt5', 'safetensors'),
  ],
)
def test_logits_match_transformers(tmp_path, variant, fmt):
  folder = write_checkpoint(variant, str(tmp_path / 'hf'), fmt)
  if fmt == 'sharded':
    assert os.path.exists(os.path.join(folder, 'model.safetensors.index.json'))
  elif fmt == 'bin':
    folder = os.path.join(folder, 'pytorch_model.bin')  # A single file, config.json beside it.
  cfg = hf_t5.load_hf_config(folder)
  gated = variant != 't5'
  assert cfg.mlp_activations == (('gelu', 'linear') if gated else ('relu',))
  assert cfg.logits_via_embedding == (variant == 't5')
  assert (cfg.num_encoder_layers, cfg.num_decoder_layers) == {
    'v1_1': (2, 3),
    't5': (2, 2),
    'mt5': (3, 2),
  }[variant]
  params = t5_convert.convert_policy_params(hf_files.load_state_dict(folder), cfg)
  b = batch()
  theirs, _ = hf_outputs(hf_model(variant), b)
  ours = our_logits(models.EncoderDecoderModel(cfg), params, b)
  diff = max_diff(ours, theirs, b['decoder_target_tokens'] > 0)
  print(f'{variant}/{fmt}: max |logit diff| = {diff:.2e}')
  assert diff < TOL


def test_saved_by_installed_transformers_untied_config(tmp_path):
  """A v1.1 config saved as-is by `save_pretrained` (no hand-untied lm_head)."""
  config = transformers.T5Config(
    **{**_SIZES, 'feed_forward_proj': 'gated-gelu', 'tie_word_embeddings': False}
  )
  torch.manual_seed(3)
  model = transformers.T5ForConditionalGeneration(config).float().eval()
  folder = str(tmp_path / 'hf')
  model.save_pretrained(folder)
  cfg = hf_t5.load_hf_config(folder)
  assert not cfg.logits_via_embedding  # T5 v1.1 never rescales the decoder output.
  params = t5_convert.convert_policy_params(hf_files.load_state_dict(folder), cfg)
  b = batch(1)
  theirs, _ = hf_outputs(model, b)
  ours = our_logits(models.EncoderDecoderModel(cfg), params, b)
  assert max_diff(ours, theirs, b['decoder_target_tokens'] > 0) < TOL


@pytest.mark.parametrize('bidirectional', [True, False])
@pytest.mark.parametrize('buckets, max_distance', [(32, 128), (8, 16), (16, 64)])
def test_relative_position_buckets_match_transformers(bidirectional, buckets, max_distance):
  relative = np.arange(-600, 601)
  theirs = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket(
    torch.tensor(relative), bidirectional, buckets, max_distance
  ).numpy()
  ours = layers.relative_position_bucket(
    jnp.asarray(relative, jnp.int32), bidirectional, buckets, max_distance
  )
  np.testing.assert_array_equal(np.asarray(ours), theirs)


def test_reward_model_encoder_matches_transformers(tmp_path):
  folder = write_checkpoint('v1_1', str(tmp_path / 'hf'), 'safetensors')
  cfg = hf_t5.load_hf_config(folder)
  state = hf_files.load_state_dict(folder)
  # A T5EncoderModel checkpoint holds only these.
  encoder_only = {k: v for k, v in state.items() if k.startswith(('shared.', 'encoder.'))}
  rm_config = reward_model.RewardModelConfig(encoder=cfg, max_length=9)
  params = t5_convert.reward_model_params(encoder_only, rm_config, jax.random.key(0))
  b = batch()
  tokens = b['encoder_input_tokens']
  raw, state_vars = reward_model.RewardModel(rm_config).apply(
    {'params': params},
    tokens,
    capture_intermediates=lambda module, name: module.name == 'encoder_norm',
  )
  hidden = np.asarray(state_vars['intermediates']['encoder_norm']['__call__'][0])  # [B, L, E]
  _, theirs = hf_outputs(hf_model('v1_1'), b)
  valid = tokens > 0
  diff = max_diff(hidden, theirs, valid)
  print(f'reward-model encoder: max |hidden diff| = {diff:.2e}')
  assert diff < TOL
  # The head on the mean of HF's hidden states over the real tokens.
  w = valid[..., None].astype(np.float32)
  pooled = (theirs * w).sum(1) / w.sum(1)
  expected = pooled @ np.asarray(params['head']['kernel'])[:, 0]
  np.testing.assert_allclose(np.asarray(raw), expected, atol=TOL)


def test_import_run_writes_a_restorable_policy(tmp_path):
  from rest_jax.core import partitioning

  folder = write_checkpoint('v1_1', str(tmp_path / 'hf'), 'safetensors')
  model_dir = str(tmp_path / 'run')
  one_device = partitioning.MeshConfig(num_devices=1)
  result = import_t5.import_t5(
    hf_checkpoint=folder, model_dir=model_dir, dropout_rate=0.1, mesh_config=one_device
  )
  ckpt_dir = os.path.join(model_dir, 'checkpoints', 'pretrained', 'best')
  assert result['checkpoint_dir'] == ckpt_dir
  assert open(result['vocab_path'], 'rb').read() == open(f'{folder}/spiece.model', 'rb').read()
  cfg = hf_t5.load_hf_config(folder)
  model = models.EncoderDecoderModel(cfg)
  mesh = partitioning.make_mesh(one_device)
  params, step = checkpoints.restore_params(ckpt_dir, model.init_params_fn(9, 7), mesh)
  assert step == 0
  b = batch()
  theirs, _ = hf_outputs(hf_model('v1_1'), b)
  assert max_diff(our_logits(model, params, b), theirs, b['decoder_target_tokens'] > 0) < TOL
  # The written gin gives the same network (with the requested dropout).
  import gin

  try:
    gin.clear_config()
    gin.parse_config_file(result['gin_file'])
    written = gin.get_configurable(network.T5Config)()
    assert written == dataclasses.replace(cfg, dropout_rate=0.1)
    assert gin.query_parameter('%IMPORTED_POLICY') == ckpt_dir
    assert gin.query_parameter('%VOCAB_PATH') == result['vocab_path']
  finally:
    gin.clear_config()
  # A second import into the same place is refused, unless asked to overwrite.
  with pytest.raises(errors.UserInputError, match='already holds a checkpoint'):
    import_t5.import_t5(hf_checkpoint=folder, model_dir=model_dir)
  import_t5.import_t5(
    hf_checkpoint=folder, model_dir=model_dir, overwrite=True, mesh_config=one_device
  )
  assert os.listdir(ckpt_dir) == ['0']


def test_import_run_writes_a_reward_model_encoder(tmp_path):
  folder = write_checkpoint('t5', str(tmp_path / 'hf'), 'pretrained')
  model_dir = str(tmp_path / 'run')
  result = import_t5.import_t5(hf_checkpoint=folder, model_dir=model_dir, target='reward_model')
  assert result['checkpoint_dir'].endswith(os.path.join('pretrained_rm', 'best'))
  assert result['gin_file'].endswith('reward_model.gin')
  cfg = hf_t5.load_hf_config(folder)
  rm_config = reward_model.RewardModelConfig(encoder=cfg, max_length=12)
  params, step = reward_model.load_params(rm_config, result['checkpoint_dir'])
  expected = t5_convert.convert_encoder_params(hf_files.load_state_dict(folder), cfg)
  assert step == 0 and set(params) == {*expected, 'head'}
  encoder = {k: v for k, v in params.items() if k != 'head'}
  for got, want in zip(jax.tree.leaves(encoder), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(np.asarray(got), want)
  assert params['head']['kernel'].shape == (cfg.emb_dim, 1)


def test_bfloat16_safetensors(tmp_path):
  model = hf_model('t5')
  path = str(tmp_path / 'model.safetensors')
  state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
  state.pop('encoder.embed_tokens.weight'), state.pop('decoder.embed_tokens.weight')
  state.pop('lm_head.weight')
  safetensors_torch.save_file(state, path)
  loaded = hf_files.load_state_dict(path)
  assert set(loaded) == set(state)
  for name, tensor in state.items():
    np.testing.assert_array_equal(np.asarray(loaded[name], np.float32), tensor.float().numpy())


def test_config_mapping_follows_transformers_versions():
  base = {
    'model_type': 't5',
    'vocab_size': 32128,
    'd_model': 512,
    'num_heads': 6,
    'd_kv': 64,
    'd_ff': 1024,
    'num_layers': 8,
  }
  cfg = t5_convert.config_from_hf(base)  # Original T5 defaults: ReLU, tied, rescaled.
  assert cfg.mlp_activations == ('relu',) and cfg.logits_via_embedding
  assert cfg.num_decoder_layers == 8 and cfg.relative_attention_max_distance == 128
  # t5-v1_1 / flan-t5 on the hub.
  hub = {**base, 'feed_forward_proj': 'gated-gelu', 'tie_word_embeddings': False}
  assert not t5_convert.config_from_hf(hub).logits_via_embedding
  # transformers >= 5 writes tie_word_embeddings: true and scale_decoder_outputs.
  v5 = {**hub, 'tie_word_embeddings': True, 'scale_decoder_outputs': False}
  assert not t5_convert.config_from_hf(v5).logits_via_embedding
  mt5 = {**base, 'model_type': 'mt5', 'tie_word_embeddings': True}
  assert t5_convert.config_from_hf({**mt5, 'transformers_version': '4.46.0'}).logits_via_embedding
  v5_mt5 = t5_convert.config_from_hf({**mt5, 'transformers_version': '5.0.0'})
  assert not v5_mt5.logits_via_embedding and v5_mt5.mlp_activations == ('gelu', 'linear')
  silu = t5_convert.config_from_hf({**base, 'feed_forward_proj': 'gated-silu'})
  assert silu.mlp_activations == ('silu', 'linear')
  for bad in (
    {**base, 'feed_forward_proj': 'gated-tanh'},
    {**base, 'layer_norm_epsilon': 1e-5},
    {**base, 'decoder_start_token_id': 5},
  ):
    with pytest.raises(errors.UserInputError):
      t5_convert.config_from_hf(bad)


def test_clear_errors(tmp_path):
  model_dir = str(tmp_path / 'run')
  with pytest.raises(errors.UserInputError, match='no config.json'):
    import_t5.import_t5(hf_checkpoint=str(tmp_path / 'missing'), model_dir=model_dir)
  bart = tmp_path / 'bart'
  bart.mkdir()
  (bart / 'config.json').write_text(json.dumps(transformers.BartConfig().to_dict()))
  with pytest.raises(errors.UserInputError, match="model_type='bart'"):
    import_t5.import_t5(hf_checkpoint=str(bart), model_dir=model_dir)
  # A config but no weights; then weights without a vocabulary; then one too big.
  folder = str(tmp_path / 'hf')
  write_checkpoint('t5', folder, 'pretrained')
  os.remove(os.path.join(folder, 'spiece.model'))
  with pytest.raises(errors.UserInputError, match='spiece.model'):
    import_t5.import_t5(hf_checkpoint=folder, model_dir=model_dir)
  big = os.path.join(_repo_root(), 'rest_jax', 'data', 'corpora', 'tatoeba_en_de', 'spm.model')
  with pytest.raises(errors.UserInputError, match='pieces'):
    import_t5.import_t5(hf_checkpoint=folder, model_dir=model_dir, vocabulary=big)
  os.remove(os.path.join(folder, 'model.safetensors'))
  _write_vocab(folder)
  with pytest.raises(errors.UserInputError, match='no weights'):
    import_t5.import_t5(hf_checkpoint=folder, model_dir=model_dir)
  assert not os.path.exists(model_dir)  # Nothing half-written.
  # Missing tensors and per-layer position biases (UMT5) are named.
  cfg = hf_t5.load_hf_config(folder)
  state = {
    k: v.detach().numpy() for k, v in hf_model('t5').state_dict().items() if 'block.1.' not in k
  }
  with pytest.raises(errors.UserInputError, match=r'lacks .*block\.1\.'):
    t5_convert.convert_policy_params(state, cfg)
  state = {k: v.detach().numpy() for k, v in hf_model('t5').state_dict().items()}
  state['encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight'] = np.zeros((8, 4))
  with pytest.raises(errors.UserInputError, match='UMT5'):
    t5_convert.convert_policy_params(state, cfg)


def test_clear_error_for_shapes_that_do_not_match_the_config(tmp_path):
  folder = write_checkpoint('t5', str(tmp_path / 'hf'), 'pretrained')
  cfg = hf_t5.load_hf_config(folder)
  wrong = dataclasses.replace(cfg, head_dim=4)
  with pytest.raises(errors.UserInputError, match='shape'):
    t5_convert.convert_policy_params(hf_files.load_state_dict(folder), wrong)


def test_module_imports_without_tensorflow_torch_or_transformers():
  code = (
    'import importlib.abc, sys\n'
    'class _Block(importlib.abc.MetaPathFinder):\n'
    '  def find_spec(self, name, path=None, target=None):\n'
    "    if name.split('.')[0] in ('tensorflow', 'seqio', 'torch', 'transformers',"
    " 'safetensors'):\n"
    "      raise ImportError(f'blocked: {name}')\n"
    'sys.meta_path.insert(0, _Block())\n'
    'import rest_jax.runs.import_t5\n'
    "print('OK')\n"
  )
  out = subprocess.run(
    [sys.executable, '-c', code],
    capture_output=True,
    text=True,
    timeout=300,
    env={'JAX_PLATFORMS': 'cpu', 'PATH': '/usr/bin:/bin'},
    cwd=_repo_root(),
  )
  assert out.returncode == 0 and out.stdout.strip() == 'OK', out.stderr[-3000:]


def _repo_root() -> str:
  """The repository root."""
  return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _import_with_corpus(tmp_path, target: str):
  """Imports the T5 v1.1 model as `target` and a synthetic corpus in its vocabulary.

  Returns:
    (HF folder, model_dir, import_t5's result, the corpus task).
  """
  from rest_jax.core import partitioning
  from rest_jax.data import tasks

  folder = write_checkpoint('v1_1', str(tmp_path / 'hf'), 'safetensors')
  model_dir = str(tmp_path / 'run')
  result = import_t5.import_t5(
    hf_checkpoint=folder,
    model_dir=model_dir,
    target=target,
    mesh_config=partitioning.MeshConfig(num_devices=1),
  )
  tsv = str(tmp_path / 'pairs.tsv')
  with open(tsv, 'w') as f:
    f.write(''.join(f'{s}\t{t}\n' for s, t in test_utils.synthetic_pairs(120)))
  task = tasks.ParallelCorpus(
    name=f't5_import_{target}_corpus',
    train_path=tsv,
    vocab_path=result['vocab_path'],
    num_validation=8,
    num_test=8,
  )
  return folder, model_dir, result, task


def test_bc_starts_from_the_imported_policy(tmp_path):
  """`bc.train(init_checkpoint=...)`: with a zero learning rate BC keeps the import."""
  from rest_jax.core import optimizers, partitioning
  from rest_jax.runs import bc, evaluation

  folder, model_dir, result, task = _import_with_corpus(tmp_path, 'policy')
  one_device = partitioning.MeshConfig(num_devices=1)
  cfg = hf_t5.load_hf_config(folder)
  bc.train(
    model_dir=model_dir,
    model_config=cfg,
    train_data=bc.TrainDataConfig(task=task, batch_size=8, input_length=16, target_length=16),
    eval_config=evaluation.EvalConfig(task=task, batch_size=8, input_length=16, target_length=16),
    optimizer=optimizers.OptimizerConfig(learning_rate=0.0, warmup_steps=0, weight_decay=0.0),
    num_train_steps=1,
    mesh_config=one_device,
    init_checkpoint='pretrained/best',
    progress=False,
  )
  model = models.EncoderDecoderModel(cfg)
  mesh = partitioning.make_mesh(one_device)
  ckpt = os.path.join(model_dir, 'checkpoints')
  init_fn = model.init_params_fn(16, 16)
  imported, _ = checkpoints.restore_params(f'{ckpt}/pretrained/best', init_fn, mesh)
  trained, step = checkpoints.restore_params(f'{ckpt}/bc/last', init_fn, mesh)
  assert step == 1
  for a, b in zip(jax.tree.leaves(imported), jax.tree.leaves(trained)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_reward_model_training_starts_from_the_imported_encoder(tmp_path):
  """`train_rm(init_checkpoint=...)`: with a zero learning rate the encoder stays the import."""
  from rest_jax.core import optimizers, partitioning
  from rest_jax.runs import train_rm

  folder, model_dir, result, task = _import_with_corpus(tmp_path, 'reward_model')
  one_device = partitioning.MeshConfig(num_devices=1)
  cfg = hf_t5.load_hf_config(folder)
  rm_config = reward_model.RewardModelConfig(encoder=cfg, max_length=24)
  train_rm.train_rm(
    model_dir=model_dir,
    rm_config=rm_config,
    policy_config=cfg,
    judgments_config=train_rm.JudgmentsConfig(
      task=task,
      num_train_sources=16,
      num_eval_sources=8,
      policy_samples_per_source=0,
      corruptions_per_pair=1,
      use_mqm=False,
    ),
    optimizer=optimizers.OptimizerConfig(learning_rate=0.0, warmup_steps=0, weight_decay=0.0),
    num_train_steps=1,
    batch_size=8,
    eval_batch_size=8,
    mesh_config=one_device,
    init_checkpoint='pretrained_rm/best',
    progress=False,
  )
  imported, _ = reward_model.load_params(rm_config, result['checkpoint_dir'])
  trained, step = reward_model.load_params(
    rm_config, os.path.join(model_dir, 'checkpoints', 'rm', 'last')
  )
  assert step == 1
  for a, b in zip(jax.tree.leaves(imported), jax.tree.leaves(trained)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
