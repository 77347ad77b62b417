r"""rest_jax against Hugging Face `transformers` (torch) on this machine, JSON to stdout.

  python bench/cpu_vs_hf.py                      # mini, all cores
  python bench/cpu_vs_hf.py --size=small_cpu --threads=2 --seconds=20

One T5 v1.1 configuration (gated GELU, untied LM head, no dropout; the shapes of
`gin/models/<size>.gin`) in both frameworks with the same weights: a seeded
random `T5ForConditionalGeneration` is built in torch, its state dict converted
with the project's converter (`runs/t5_convert.py`), and the logits of one
padded batch (and the reward model's scores) must agree within `--tolerance`
times max(1, max |logit|) before anything is timed. Then, per side:

* train: one Improve/BC step (forward, backward, AdamW update) on the same
  batch; rest_jax: `trainer.Trainer` on `EncoderDecoderModel.loss_fn` with
  `optimizers.make` (AdamW, clipping 1.0); HF: `model(..., labels=...)`,
  `loss.backward()`, `clip_grad_norm_(1.0)`, `torch.optim.AdamW`. Reported as
  (source + target) tokens per second.
* sample: N samples per source at temperature 0.8 (no top-k / top-p), every
  row exactly `--new_tokens` long (rest_jax: `sampler.Sampler` with EOS
  disabled, `eos_id=-1`; HF: `generate(do_sample=True, temperature=0.8,
  top_k=0, num_return_sequences=N, min_new_tokens=max_new_tokens)`, which masks
  EOS). Reported as generated tokens per second.
* score: reward-model scores (rest_jax: `reward_model.score`, T5 encoder +
  masked mean pooling + scalar head; HF: `T5EncoderModel` + mean pooling +
  `Linear(E, 1)` + sigmoid, with the same encoder and head weights). Reported
  as examples per second.

Each side runs in its own child process (this script with `--_child`), so its
peak RSS (`getrusage(RUSAGE_SELF).ru_maxrss`) is its own; both are pinned to
the same `--threads` cores (see the JSON's `threads`). The first call of each
measurement (XLA compile, torch warm-up) is reported as `*_warmup_s` and not
timed; then the call repeats for `--seconds` (at least `--min_iters` times),
each call waited for (`block_until_ready`, `.item()` / host copies).

The rest_jax child runs with what `import rest_jax` sets (glibc malloc keeps
freed memory, `core/cpu_runtime.py`) and scores with `reward_model.jit_score`
(its XLA:CPU compiler option); the HF child gets the same malloc settings
unless `--hf_malloc=default`. Both sides' JSON carry `cpu_runtime`, what was
applied in that process.

`bench/gpu.py` runs the same children at T5-base and T5-large size on a GPU.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

THIS = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(THIS))
# The shapes of gin/models/*.gin (and bench/policy_speed.py's SIZES), as T5 v1.1:
# the untied LM head of the released T5 v1.1 checkpoints (the gin files of the
# two smallest sizes tie it).
SIZES = {
  'tiny': dict(d_model=32, num_heads=4, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2),
  'mini': dict(d_model=128, num_heads=4, d_kv=32, d_ff=512, num_layers=2, num_decoder_layers=2),
  'small_cpu': dict(
    d_model=256, num_heads=4, d_kv=64, d_ff=1024, num_layers=3, num_decoder_layers=3
  ),
  'base': dict(d_model=768, num_heads=12, d_kv=64, d_ff=2048, num_layers=12, num_decoder_layers=12),
  'large': dict(
    d_model=1024, num_heads=16, d_kv=64, d_ff=2816, num_layers=24, num_decoder_layers=24
  ),
}
PARTS = ('train', 'sample', 'score')
FIGURES = {
  'train': 'train_tokens_per_s',
  'sample': 'sample_tokens_per_s',
  'score': 'score_examples_per_s',
}
TEMPERATURE = 0.8
SEED = 0


def hf_config(size: str, vocab_size: int) -> dict:
  """The transformers.T5Config kwargs of a T5 v1.1 model of `size`."""
  return dict(
    SIZES[size],
    vocab_size=vocab_size,
    feed_forward_proj='gated-gelu',
    tie_word_embeddings=False,
    dropout_rate=0.0,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    layer_norm_epsilon=1e-6,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
  )


def batches(job: dict) -> dict[str, np.ndarray]:
  """The job's token arrays, the same in both children (seeded numpy).

  Returns:
    train_enc [B, S], train_dec_in, train_tgt [B, T]: no padding, each row ends
    in EOS; sample_enc [Bs, Ss]; score_tokens [Br, Lr]; check_enc [4, S],
    check_dec_in, check_tgt [4, T]: rows padded to different lengths.
  """
  rs = np.random.RandomState(SEED + 1)
  vocab = job['hf_config']['vocab_size']

  def rows(n, length):
    x = rs.randint(2, vocab, (n, length)).astype(np.int32)
    x[:, -1] = 1  # EOS.
    return x

  def shift(tgt):
    dec_in = np.zeros_like(tgt)
    dec_in[:, 1:] = tgt[:, :-1]
    return dec_in

  out = {}
  tr = job['train']
  out['train_enc'] = rows(tr['batch'], tr['source_length'])
  out['train_tgt'] = rows(tr['batch'], tr['target_length'])
  out['train_dec_in'] = shift(out['train_tgt'])
  sa = job['sample']
  out['sample_enc'] = rows(sa['sources'], sa['source_length'])
  sc = job['score']
  out['score_tokens'] = rows(sc['batch'], sc['length'])
  enc, tgt = rows(4, tr['source_length']), rows(4, tr['target_length'])
  for row in range(1, 4):  # Padding: the attention masks must agree too.
    n_in = max(1, tr['source_length'] * (4 - row) // 4)
    n_t = max(1, tr['target_length'] * (4 - row) // 4)
    enc[row, n_in - 1], enc[row, n_in:] = 1, 0
    tgt[row, n_t - 1], tgt[row, n_t:] = 1, 0
  out['check_enc'], out['check_tgt'], out['check_dec_in'] = enc, tgt, shift(tgt)
  return out


def timed(fn, seconds: float, min_iters: int) -> dict:
  """Times `fn` (which waits for its own result): warm-up call, then repeats.

  Returns:
    {'warmup_s': the first call, 'call_s': mean seconds per call after it,
    'iters': calls timed}.
  """
  start = time.perf_counter()
  fn()
  warmup = time.perf_counter() - start
  iters, start = 0, time.perf_counter()
  while iters < min_iters or time.perf_counter() - start < seconds:
    fn()
    iters += 1
  return {
    'warmup_s': round(warmup, 3),
    'call_s': (time.perf_counter() - start) / iters,
    'iters': iters,
  }


def rss_mb() -> float:
  """This process's peak resident set size so far, in MiB (Linux: ru_maxrss is KiB)."""
  return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# ------------------------------------------------------------------ children


class _Results:
  """A child's results, rewritten after every part (a killed child keeps what it had)."""

  def __init__(self, path: str):
    self.path, self.data = path, {'skipped': []}

  def set(self, job: str, **values):
    self.data.setdefault(job, {}).update(values)
    self.data['peak_rss_mb'] = rss_mb()
    with open(self.path + '.tmp', 'w') as f:
      json.dump(self.data, f)
    os.replace(self.path + '.tmp', self.path)


def _should_run(spec: dict, results: _Results, job: str, part: str) -> bool:
  """False (and a note) when the part would start past the child's deadline."""
  deadline = spec.get('deadline')
  if deadline is None or time.time() + spec.get('min_part_s', 0) < deadline:
    return True
  results.data['skipped'].append(f'{job}/{part}: time limit')
  results.set(job)
  return False


class _Torch:
  """The torch side's settings and helpers (torch and transformers imported here)."""

  def __init__(self, spec: dict):
    import torch

    torch.set_num_threads(spec['threads'])
    torch.set_num_interop_threads(spec['threads'])
    import transformers

    self.torch, self.transformers = torch, transformers
    self.device = torch.device(spec['device'])
    self.bf16 = spec['dtype'] == 'bfloat16'

  def sync(self) -> None:
    if self.device.type == 'cuda':
      self.torch.cuda.synchronize()

  def autocast(self):
    return self.torch.autocast(self.device.type, dtype=self.torch.bfloat16, enabled=self.bf16)

  def tensor(self, x: np.ndarray):
    return self.torch.tensor(x, dtype=self.torch.long, device=self.device)

  def build(self, job: dict):
    """(config, seeded T5ForConditionalGeneration, reward head Linear(E, 1)) on the device."""
    torch = self.torch
    config = self.transformers.T5Config(**job['hf_config'])
    torch.manual_seed(SEED)
    with torch.device('cpu' if job['export'] else self.device):
      model = self.transformers.T5ForConditionalGeneration(config)
      head = torch.nn.Linear(config.d_model, 1, bias=False)
    gen = torch.Generator().manual_seed(SEED + 2)
    with torch.no_grad():
      if model.lm_head.weight is model.shared.weight:  # transformers >= 5 ties at init.
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
      if job['export']:  # Norm scales not all ones, so that the check covers them.
        for name, p in model.named_parameters():
          if 'layer_norm' in name:
            p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
    return config, model.to(self.device), head.to(self.device)

  def encoder_model(self, config, model):
    """A T5EncoderModel holding `model`'s embedding and encoder."""
    # A copy: T5EncoderModel changes the config it is given (is_encoder_decoder).
    encoder = self.transformers.T5EncoderModel(copy.deepcopy(config))
    state = {k: v for k, v in model.state_dict().items() if k.startswith(('shared.', 'encoder.'))}
    encoder.load_state_dict(state, strict=True)
    return encoder.to(self.device).eval()

  def rm_raw(self, encoder, head, tokens):
    """[B] raw reward-model scores: encoder, mean over the real tokens, head."""
    mask = (tokens != 0).to(self.torch.float32)
    hidden = encoder(input_ids=tokens, attention_mask=mask.long()).last_hidden_state
    pooled = (hidden.float() * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    return head(pooled.to(hidden.dtype))[:, 0].float()


def _hf_export(t: _Torch, spec: dict, job: dict):
  """Writes the job's weights, config and float32 reference outputs; returns the model."""
  config, model, head = built = t.build(job)
  b = batches(job)
  prefix = os.path.join(spec['workdir'], job['name'])
  state = {k: v.detach().cpu().float().numpy() for k, v in model.state_dict().items()}
  np.savez(f'{prefix}_weights.npz', **state)
  with open(f'{prefix}_config.json', 'w') as f:
    json.dump(config.to_dict(), f)
  enc, dec_in = t.tensor(b['check_enc']), t.tensor(b['check_dec_in'])
  encoder = t.encoder_model(config, model)
  with t.torch.no_grad():
    logits = model(input_ids=enc, attention_mask=(enc != 0).long(), decoder_input_ids=dec_in)
    raw = t.rm_raw(encoder, head, enc)
  np.savez(
    f'{prefix}_reference.npz',
    logits=logits.logits.float().cpu().numpy(),
    rm_raw=raw.cpu().numpy(),
    rm_head=head.weight.detach().cpu().float().numpy(),
  )
  return built


def _hf_job(t: _Torch, spec: dict, job: dict, built, results: _Results) -> None:
  """Times the job's parts in torch."""
  torch, name, b = t.torch, job['name'], batches(job)
  config, model, head = built or t.build(job)
  results.set(name, params_millions=round(sum(p.numel() for p in model.parameters()) / 1e6, 2))
  if 'sample' in job['parts'] and _should_run(spec, results, name, 'sample'):
    model.eval()
    sa = job['sample']
    enc = t.tensor(b['sample_enc'])
    rows = enc.shape[0] * sa['num_samples']

    def sample():
      with torch.no_grad(), t.autocast():
        out = model.generate(
          input_ids=enc,
          attention_mask=torch.ones_like(enc),
          do_sample=True,
          temperature=TEMPERATURE,
          top_k=0,
          top_p=1.0,
          num_beams=1,
          num_return_sequences=sa['num_samples'],
          max_new_tokens=sa['new_tokens'],
          min_new_tokens=sa['new_tokens'],
          decoder_start_token_id=0,
          pad_token_id=0,
          eos_token_id=1,
        )
      t.sync()
      assert tuple(out.shape) == (rows, sa['new_tokens'] + 1), out.shape  # Start token + new.

    tm = timed(sample, spec['seconds'], spec['min_iters'])
    results.set(name, **_figures('sample', rows * sa['new_tokens'], tm))
  if 'score' in job['parts'] and _should_run(spec, results, name, 'score'):
    encoder = t.encoder_model(config, model)
    tokens = t.tensor(b['score_tokens'])

    def score():
      with torch.no_grad(), t.autocast():
        torch.sigmoid(t.rm_raw(encoder, head, tokens)).cpu()

    tm = timed(score, spec['seconds'], spec['min_iters'])
    results.set(name, **_figures('score', tokens.shape[0], tm))
    del encoder
  if 'train' in job['parts'] and _should_run(spec, results, name, 'train'):
    model.train()
    opt = torch.optim.AdamW(
      model.parameters(),
      lr=1e-4,
      betas=(0.9, 0.98),
      eps=1e-9,
      weight_decay=0.01,
      fused=t.device.type == 'cuda',
    )
    enc, dec_in = t.tensor(b['train_enc']), t.tensor(b['train_dec_in'])
    tgt = t.tensor(b['train_tgt'])

    def step():
      opt.zero_grad(set_to_none=True)
      with t.autocast():
        loss = model(
          input_ids=enc, attention_mask=torch.ones_like(enc), decoder_input_ids=dec_in, labels=tgt
        ).loss
      loss.backward()
      torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
      opt.step()
      assert np.isfinite(loss.item())

    tm = timed(step, spec['seconds'], spec['min_iters'])
    results.set(name, **_figures('train', enc.numel() + tgt.numel(), tm))
    del opt
  if t.device.type == 'cuda':
    results.set(name, peak_device_mb=round(torch.cuda.max_memory_allocated() / 2**20, 1))
    torch.cuda.reset_peak_memory_stats()


def _hf_child(spec: dict) -> None:
  """The torch side: export and check outputs, print 'ready', wait for 'go', time the jobs."""
  # The same glibc malloc settings as the rest_jax side (core/cpu_runtime.py).
  from rest_jax.core import cpu_runtime

  t = _Torch(spec)
  results = _Results(os.path.join(spec['workdir'], 'hf.json'))
  results.set('meta', torch=t.torch.__version__, transformers=t.transformers.__version__)
  results.set('meta', cpu_runtime=cpu_runtime.applied)
  results.data['import_rss_mb'] = rss_mb()
  built = {job['name']: _hf_export(t, spec, job) for job in spec['jobs'] if job['export']}
  print('ready', flush=True)
  os.dup2(2, 1)  # Nothing reads stdout from here on: anything printed goes to stderr.
  if sys.stdin.readline().strip() != 'go':
    return
  for job in spec['jobs']:
    _hf_job(t, spec, job, built.pop(job['name'], None), results)
    if t.device.type == 'cuda':
      t.torch.cuda.empty_cache()


def _figures(part: str, units: int, tm: dict) -> dict:
  """The part's throughput (units per second) and timing details."""
  figure = FIGURES[part]
  per_call = {'train': 'train_step_s', 'sample': 'sample_call_s', 'score': 'score_call_s'}[part]
  return {
    figure: units / tm['call_s'],
    per_call: tm['call_s'],
    f'{part}_iters': tm['iters'],
    f'{part}_warmup_s': tm['warmup_s'],
  }


def _jax_check(spec: dict, job: dict, results: _Results):
  """Converts the exported weights and checks them against HF's outputs (float32).

  Returns:
    (config, policy params, reward-model params) as numpy trees.

  Raises:
    SystemExit: the logits or the reward-model scores disagree beyond the tolerance.
  """
  import jax

  from rest_jax.core import models
  from rest_jax.rewards import reward_model
  from rest_jax.runs import t5_convert

  name, b = job['name'], batches(job)
  prefix = os.path.join(spec['workdir'], name)
  with open(f'{prefix}_config.json') as f:
    cfg = t5_convert.config_from_hf(json.load(f))
  state = dict(np.load(f'{prefix}_weights.npz'))
  ref = np.load(f'{prefix}_reference.npz')
  params = t5_convert.convert_policy_params(state, cfg)
  rm_params = t5_convert.convert_encoder_params(state, cfg)
  rm_params['head'] = {'kernel': np.ascontiguousarray(ref['rm_head'].T)}
  check = {
    'encoder_input_tokens': b['check_enc'],
    'decoder_input_tokens': b['check_dec_in'],
    'decoder_target_tokens': b['check_tgt'],
  }
  rm_config = reward_model.RewardModelConfig(encoder=cfg, max_length=b['check_enc'].shape[1])
  score = jax.jit(reward_model.score, static_argnums=0)
  with jax.default_matmul_precision('highest'):
    logits = np.asarray(jax.jit(models.EncoderDecoderModel(cfg).logits)(params, check))
    raw = np.asarray(score(rm_config, rm_params, b['check_enc'])[0])
  valid = b['check_tgt'] > 0
  diff = float(np.abs(logits - ref['logits'])[valid].max())
  scale = float(np.abs(ref['logits'][valid]).max())
  rm_diff = float(np.abs(raw - ref['rm_raw']).max())
  rm_scale = float(np.abs(ref['rm_raw']).max())
  results.set(name, max_logit_diff=diff, max_abs_logit=scale, max_score_diff=rm_diff)
  tol = spec['tolerance']
  if diff > tol * max(1.0, scale) or rm_diff > tol * max(1.0, rm_scale):
    raise SystemExit(
      f'{name}: rest_jax and transformers disagree: max |logit diff| {diff:.3g} '
      f'(max |logit| {scale:.3g}), max |score diff| {rm_diff:.3g} (max |score| '
      f'{rm_scale:.3g}); tolerance {tol} x max(1, max).'
    )
  return cfg, params, rm_params


def _jax_job(spec: dict, job: dict, results: _Results) -> None:
  """Checks (exported jobs) and times the job's parts in rest_jax."""
  import dataclasses

  import flax.linen as nn
  import jax

  from rest_jax.core import models, optimizers, partitioning, sampler, trainer
  from rest_jax.core import train_state as train_state_lib
  from rest_jax.rewards import reward_model
  from rest_jax.runs import t5_convert

  name, b = job['name'], batches(job)
  tr, sa, sc = job['train'], job['sample'], job['score']
  if job['export']:
    cfg, params, rm_params = _jax_check(spec, job, results)  # Before anything is timed.
  else:
    cfg = t5_convert.config_from_hf(dict(job['hf_config'], model_type='t5'))
    params = rm_params = None
  run_cfg = dataclasses.replace(cfg, dtype=spec['dtype'])
  model = models.EncoderDecoderModel(run_cfg)
  init_fn = model.init_params_fn(tr['source_length'], tr['target_length'])
  key = jax.random.key(SEED)
  shapes = params if params is not None else jax.eval_shape(init_fn, key)
  results.set(name, params_millions=round(trainer.tree_size(shapes) / 1e6, 2))
  mesh = partitioning.make_mesh(partitioning.MeshConfig(num_devices=1))

  if 'sample' in job['parts'] and _should_run(spec, results, name, 'sample'):
    no_eos = models.EncoderDecoderModel(dataclasses.replace(run_cfg, eos_id=-1))
    p = params if params is not None else nn.unbox(jax.jit(init_fn)(key))
    policy = sampler.Sampler(
      no_eos,
      jax.device_put(p),
      mesh,
      num_samples=sa['num_samples'],
      max_length=sa['new_tokens'],
      temperature=TEMPERATURE,
    )
    rngs = iter(jax.random.split(jax.random.key(SEED + 3), 100_000))
    shape = (sa['sources'], sa['num_samples'], sa['new_tokens'])

    def sample():
      tokens, _ = policy.sample(b['sample_enc'], next(rngs))
      assert tokens.shape == shape, tokens.shape

    tm = timed(sample, spec['seconds'], spec['min_iters'])
    results.set(name, **_figures('sample', int(np.prod(shape)), tm))
    del policy, p
  if 'score' in job['parts'] and _should_run(spec, results, name, 'score'):
    rm_config = reward_model.RewardModelConfig(encoder=run_cfg, max_length=sc['length'])
    if rm_params is None:
      rm_params = nn.unbox(jax.jit(lambda r: reward_model.init_params(rm_config, r))(key))
      rm_params = rm_params['params']
    on_device = jax.device_put(rm_params)
    jitted = reward_model.jit_score(rm_config)
    score_fn = lambda p, t: jitted(p, t)[1]  # noqa: E731
    tokens = jax.device_put(b['score_tokens'])

    def score():
      np.asarray(score_fn(on_device, tokens))

    tm = timed(score, spec['seconds'], spec['min_iters'])
    results.set(name, **_figures('score', sc['batch'], tm))
    del on_device
  if 'train' in job['parts'] and _should_run(spec, results, name, 'train'):
    tx = optimizers.make(optimizers.OptimizerConfig(), 1000)
    if params is None:
      state, shardings = train_state_lib.create_sharded(init_fn, tx, key, mesh)
    else:
      state, shardings = train_state_lib.from_params(params, init_fn, tx, mesh)
    steps = trainer.Trainer(loss_fn=model.loss_fn, tx=tx, mesh=mesh, state_shardings=shardings)
    batch = partitioning.shard_batch(
      {
        'encoder_input_tokens': b['train_enc'],
        'decoder_input_tokens': b['train_dec_in'],
        'decoder_target_tokens': b['train_tgt'],
        'decoder_loss_weights': np.ones(b['train_tgt'].shape, np.float32),
      },
      mesh,
    )
    box = {'state': state}
    del state

    def step():
      box['state'], metrics = steps.train_step(box['state'], batch, key)
      assert np.isfinite(float(metrics['loss']))

    tm = timed(step, spec['seconds'], spec['min_iters'])
    results.set(name, **_figures('train', b['train_enc'].size + b['train_tgt'].size, tm))
    del box, steps
  stats = jax.devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    results.set(name, peak_device_mb=round(stats['peak_bytes_in_use'] / 2**20, 1))


def _jax_child(spec: dict) -> None:
  """The rest_jax side: convert and check, then time the jobs."""
  import jax

  # `import rest_jax` sets glibc malloc (core/cpu_runtime.py) before JAX allocates anything.
  from rest_jax.core import cpu_runtime

  results = _Results(os.path.join(spec['workdir'], 'rest_jax.json'))
  results.set('meta', jax=jax.__version__, device=str(jax.devices()[0].device_kind))
  results.set('meta', cpu_runtime=cpu_runtime.applied)
  results.data['import_rss_mb'] = rss_mb()
  for job in spec['jobs']:
    _jax_job(spec, job, results)


# -------------------------------------------------------------------- parent


def child_env(
  side: str, threads: int, device: str, hf_malloc: str = 'same'
) -> tuple[dict, list[int], str]:
  """The environment, cores and a description of how a child is limited to `threads`.

  `hf_malloc='same'` gives the HF child rest_jax's glibc malloc settings
  (`core/cpu_runtime.py`); 'default' leaves it glibc's defaults.
  """
  cores = sorted(os.sched_getaffinity(0))[:threads]
  env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
  if side == 'hf' and hf_malloc == 'default':
    env['REST_JAX_CPU_DEFAULTS'] = '0'
  env['PYTHONPATH'] = os.pathsep.join(p for p in (ROOT, env.get('PYTHONPATH')) if p)
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  if side == 'rest_jax':
    env['XLA_FLAGS'] = '--xla_cpu_multi_thread_eigen=true --xla_force_host_platform_device_count=1'
    env['XLA_PYTHON_CLIENT_PREALLOCATE'] = 'false'
    if device == 'cpu':
      env['JAX_PLATFORMS'] = 'cpu'
    how = (
      f'os.sched_setaffinity(0, {cores}) in the child before jax is imported (XLA sizes its '
      f'CPU thread pools by the schedulable cores); XLA_FLAGS="{env["XLA_FLAGS"]}"; '
      f'OMP_NUM_THREADS=MKL_NUM_THREADS={threads}'
    )
  else:
    how = (
      f'os.sched_setaffinity(0, {cores}) in the child; torch.set_num_threads({threads}), '
      f'torch.set_num_interop_threads({threads}); OMP_NUM_THREADS=MKL_NUM_THREADS={threads}; '
      f'glibc malloc: {"as rest_jax" if hf_malloc == "same" else "glibc defaults"}'
    )
  return env, cores, how


def run_children(spec: dict, *, kill_at: dict | None = None) -> tuple[dict, dict, list]:
  """Runs the HF child (export, then waits), the rest_jax child, then lets HF time.

  Args:
    spec: jobs and settings (see `_hf_child`, `_jax_child`); its `deadline` is
      the rest_jax child's and `hf_deadline` the HF child's.
    kill_at: {'rest_jax' / 'hf': when to kill that child if it still runs (epoch seconds)}.

  Returns:
    (rest_jax results, HF results, notes).
  """
  workdir = spec['workdir']
  notes = []
  kill_at = kill_at or {}

  def cmd(side, deadline):
    path = os.path.join(workdir, f'{side}_spec.json')
    with open(path, 'w') as f:
      json.dump(dict(spec, deadline=deadline), f)
    return [sys.executable, THIS, '--_child', side, '--_spec', path]

  def remaining(deadline):
    return None if deadline is None else max(deadline - time.time(), 1.0)

  env, _, _ = child_env('hf', spec['threads'], spec['device'], spec.get('hf_malloc', 'same'))
  hf = subprocess.Popen(
    cmd('hf', spec.get('hf_deadline')),
    env=env,
    stdin=subprocess.PIPE,
    stdout=subprocess.PIPE,
    text=True,
  )
  try:
    for line in hf.stdout:  # Until the export is written; other lines go to stderr.
      if line.strip() == 'ready':
        break
      sys.stderr.write(line)
    else:
      raise SystemExit(f'the transformers child failed before its export (exit {hf.wait()}).')
    env, _, _ = child_env('rest_jax', spec['threads'], spec['device'])
    try:
      jax_run = subprocess.run(
        cmd('rest_jax', spec.get('deadline')), env=env, timeout=remaining(kill_at.get('rest_jax'))
      )
      if jax_run.returncode != 0:
        raise SystemExit(f'the rest_jax child failed (exit {jax_run.returncode}).')
    except subprocess.TimeoutExpired:
      notes.append('rest_jax child killed at the time limit; its finished parts are kept')
    hf.stdin.write('go\n')
    hf.stdin.flush()
    try:
      if hf.wait(timeout=remaining(kill_at.get('hf'))) != 0:
        raise SystemExit(f'the transformers child failed (exit {hf.returncode}).')
    except subprocess.TimeoutExpired:
      notes.append('transformers child killed at the time limit; its finished parts are kept')
  finally:
    if hf.poll() is None:
      hf.kill()
      hf.wait()

  def read(side):
    path = os.path.join(workdir, f'{side}.json')
    if not os.path.exists(path):
      return {'skipped': ['all: no results']}
    with open(path) as f:
      return json.load(f)

  return read('rest_jax'), read('hf'), notes


def _child_main(side: str, spec_path: str) -> None:
  with open(spec_path) as f:
    spec = json.load(f)
  cores = sorted(os.sched_getaffinity(0))[: spec['threads']]
  os.sched_setaffinity(0, cores)
  (_hf_child if side == 'hf' else _jax_child)(spec)


def side_summary(results: dict, job: str) -> dict:
  """One side's figures of `job` plus its process-wide peak RSS and notes."""
  out = dict(results.get(job, {}))
  for key in ('peak_rss_mb', 'import_rss_mb'):
    out[key] = results.get(key)
  out.update(results.get('meta', {}))
  out['skipped'] = [s for s in results.get('skipped', []) if s.startswith(f'{job}/')]
  return {k: float(f'{v:.4g}') if isinstance(v, float) else v for k, v in out.items()}


def ratios(ours: dict, theirs: dict) -> dict:
  """rest_jax / HF for each figure both sides measured (None if either skipped it)."""
  out = {}
  for part, key in FIGURES.items():
    a, b = ours.get(key), theirs.get(key)
    out[f'ratio_{part}'] = a / b if a and b else None
  return out


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--size', default='mini', choices=('tiny', 'mini', 'small_cpu'))
  parser.add_argument('--vocab_size', type=int, default=4000)
  parser.add_argument('--train_batch', type=int, default=32)
  parser.add_argument('--source_length', type=int, default=32, help='train source tokens')
  parser.add_argument('--target_length', type=int, default=32, help='train target tokens')
  parser.add_argument('--sample_sources', type=int, default=8)
  parser.add_argument('--sample_source_length', type=int, default=32)
  parser.add_argument('--num_samples', type=int, default=8, help='N samples per source')
  parser.add_argument('--new_tokens', type=int, default=32, help='generated tokens per sample')
  parser.add_argument('--score_batch', type=int, default=64)
  parser.add_argument('--score_length', type=int, default=64)
  parser.add_argument('--seconds', type=float, default=10.0, help='timed seconds per measurement')
  parser.add_argument('--min_iters', type=int, default=2)
  parser.add_argument('--threads', type=int, default=len(os.sched_getaffinity(0)))
  parser.add_argument('--tolerance', type=float, default=1e-4, help='x max(1, max |logit|)')
  parser.add_argument(
    '--hf_malloc',
    choices=('same', 'default'),
    default='same',
    help="the HF child's glibc malloc: 'same' settings as rest_jax (core/cpu_runtime.py, "
    "the fair comparison), or glibc's 'default' (what a plain torch process gets)",
  )
  parser.add_argument('--_child', choices=('hf', 'rest_jax'), help=argparse.SUPPRESS)
  parser.add_argument('--_spec', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args._child:
    _child_main(args._child, args._spec)
    return {}
  threads = min(args.threads, len(os.sched_getaffinity(0)))
  job = {
    'name': args.size,
    'export': True,
    'parts': list(PARTS),
    'hf_config': hf_config(args.size, args.vocab_size),
    'train': dict(
      batch=args.train_batch, source_length=args.source_length, target_length=args.target_length
    ),
    'sample': dict(
      sources=args.sample_sources,
      source_length=args.sample_source_length,
      num_samples=args.num_samples,
      new_tokens=args.new_tokens,
    ),
    'score': dict(batch=args.score_batch, length=args.score_length),
  }
  start = time.time()
  with tempfile.TemporaryDirectory(prefix='cpu_vs_hf_') as workdir:
    spec = dict(
      jobs=[job],
      workdir=workdir,
      threads=threads,
      device='cpu',
      dtype='float32',
      seconds=args.seconds,
      min_iters=args.min_iters,
      tolerance=args.tolerance,
      hf_malloc=args.hf_malloc,
    )
    ours, theirs, notes = run_children(spec)
  rest_jax, hf = side_summary(ours, args.size), side_summary(theirs, args.size)
  _, cores, how_jax = child_env('rest_jax', threads, 'cpu')
  _, _, how_hf = child_env('hf', threads, 'cpu', args.hf_malloc)
  result = {
    'rest_jax': rest_jax,
    'hf': hf,
    **ratios(rest_jax, hf),
    'max_logit_diff': rest_jax.get('max_logit_diff'),
    'max_score_diff': rest_jax.get('max_score_diff'),
    'config': {
      'size': args.size,
      'model': {**job['hf_config']},
      'train': job['train'],
      'sample': {**job['sample'], 'temperature': TEMPERATURE, 'fixed_length': True},
      'score': job['score'],
      'dtype': 'float32',
      'seconds_per_measurement': args.seconds,
      'min_iters': args.min_iters,
      'tolerance': f'{args.tolerance} x max(1, max |logit|)',
    },
    'threads': {'n': threads, 'cores': cores, 'rest_jax': how_jax, 'hf': how_hf},
    'notes': notes,
    'elapsed_s': round(time.time() - start, 1),
  }
  print(json.dumps(result))
  return result


if __name__ == '__main__':
  main()
