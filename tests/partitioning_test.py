"""Data, FSDP and tensor parallelism: every mesh computes what one device does.

On 8 fake CPU devices, meshes (data, fsdp, model) = (8,1,1), (2,2,2) and
(1,1,8) must give the policy's loss and gradients (encoder-decoder and
decoder-only), the value model's and the reward model's, and the sampler's
tokens of a single device, within float tolerance (summation order differs
across shards).
"""

import flax.linen as nn
import jax
import numpy as np
import pytest
import test_utils
from jax.sharding import PartitionSpec as P

from rest_jax.core import models, multihost, network, optimizers, partitioning
from rest_jax.core import sampler as sampler_lib
from rest_jax.core import train_state as train_state_lib
from rest_jax.rewards import reward_model

MESHES = [(8, 1, 1), (2, 2, 2), (1, 1, 8)]
L = 8
# Heads, MLP width and vocabulary divisible by 8, so model=8 splits them all.
CONFIG = test_utils.tiny_config(num_heads=8, head_dim=2, mlp_dim=32, vocab_size=64)
# The decoder-only LM with grouped-query attention: 16 query heads on 8 key/value heads.
LM_CONFIG = network.DecoderConfig(
  vocab_size=64, emb_dim=16, num_heads=16, num_kv_heads=8, head_dim=2, mlp_dim=32, num_layers=2
)


def _mesh(shape):
  if shape is None:
    return partitioning.make_mesh(partitioning.MeshConfig(), jax.devices()[:1])
  data, fsdp, model = shape
  return partitioning.make_mesh(partitioning.MeshConfig(data=data, fsdp=fsdp, model=model))


def _place(init_fn, mesh):
  """Initial params (same values for every mesh) placed by the rules table."""
  boxed = init_fn(jax.random.key(0))
  shardings = partitioning.state_shardings(jax.eval_shape(init_fn, jax.random.key(0)), mesh)
  return jax.device_put(nn.unbox(boxed), shardings)


def _loss_and_grads(loss_fn, init_fn, batch, mesh):
  params = _place(init_fn, mesh)
  with partitioning.axis_rules(mesh):
    fn = jax.jit(jax.value_and_grad(lambda p, b: loss_fn(p, b, None)[0]))
    loss, grads = fn(params, partitioning.shard_batch(batch, mesh))
  return float(loss), jax.tree.map(np.asarray, grads), params


def _policy_batch():
  batch = test_utils.toy_batch(8, L, L, vocab=64, seed=3)
  batch['reward'] = np.linspace(0.1, 0.9, 8).astype(np.float32)
  return batch


def _rm_batch():
  rs = np.random.RandomState(4)
  inputs = rs.randint(2, 64, size=(8, 12)).astype(np.int32)
  inputs[:, -3:] = 0
  return {'inputs': inputs, 'score': rs.rand(8).astype(np.float32)}


def _models():
  policy = models.EncoderDecoderModel(CONFIG)
  lm = models.DecoderOnlyModel(LM_CONFIG)
  value = models.ValueModel(CONFIG)
  rm_config = reward_model.RewardModelConfig(encoder=CONFIG, max_length=12)
  return {
    'policy': (policy.loss_fn, lambda r: policy.init(r, L, L)['params'], _policy_batch),
    'lm_policy': (lm.loss_fn, lambda r: lm.init(r, L, L)['params'], _policy_batch),
    'value': (value.loss_fn, lambda r: value.init(r, L, L)['params'], _policy_batch),
    'reward_model': (
      reward_model.make_loss_fn(rm_config),
      lambda r: reward_model.init_params(rm_config, r)['params'],
      _rm_batch,
    ),
  }


@pytest.fixture(scope='module')
def references():
  """Loss and gradients of every model on one device."""
  out = {}
  for name, (loss_fn, init_fn, batch_fn) in _models().items():
    loss, grads, _ = _loss_and_grads(loss_fn, init_fn, batch_fn(), _mesh(None))
    out[name] = (loss, grads)
  return out


@pytest.mark.parametrize('shape', MESHES, ids=lambda s: 'x'.join(map(str, s)))
@pytest.mark.parametrize('name', ['policy', 'lm_policy', 'value', 'reward_model'])
def test_loss_and_grads_match_one_device(name, shape, references):
  loss_fn, init_fn, batch_fn = _models()[name]
  mesh = _mesh(shape)
  loss, grads, params = _loss_and_grads(loss_fn, init_fn, batch_fn(), mesh)
  ref_loss, ref_grads = references[name]
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  flat, ref_flat = jax.tree.leaves_with_path(grads), jax.tree.leaves(ref_grads)
  assert len(flat) == len(ref_flat)
  for (path, g), ref in zip(flat, ref_flat):
    np.testing.assert_allclose(g, ref, rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))
  # Each parameter is laid out as the rules say on this mesh.
  specs = [leaf.sharding.spec for leaf in jax.tree.leaves(params)]
  data, fsdp, model = shape
  if model > 1:
    assert any('model' in str(s) for s in specs)
  if fsdp > 1:
    assert any('fsdp' in str(s) for s in specs)
  if (fsdp, model) == (1, 1):  # Pure data parallelism: every parameter replicated.
    assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(params))
  # The scalar heads are annotated too: [E, 1] kernels split over 'fsdp' (the
  # output unit is never split).
  head = {'value': 'value_head', 'reward_model': 'head'}.get(name)
  if head:
    assert params[head]['kernel'].sharding.spec == P('fsdp', None)


def test_fsdp_shards_optimizer_state_like_params():
  model = models.EncoderDecoderModel(CONFIG)
  mesh = _mesh((2, 2, 2))
  tx = optimizers.make(optimizers.OptimizerConfig(), 10)
  state, shardings = train_state_lib.create_sharded(
    lambda r: model.init(r, L, L)['params'], tx, jax.random.key(0), mesh
  )
  kernel = state.params['encoder_layer_0']['attention']['query']['kernel']  # [E, H, D]
  assert kernel.sharding.spec == P('fsdp', 'model', None)
  # Adam's moments of that kernel carry the same sharding (ZeRO-3: no replicas).
  moments = [
    leaf
    for path, leaf in jax.tree.leaves_with_path(state.opt_state)
    if 'encoder_layer_0' in jax.tree_util.keystr(path) and 'query' in jax.tree_util.keystr(path)
  ]
  assert moments and all(m.sharding.spec == P('fsdp', 'model', None) for m in moments)
  # Each device holds 1/4 of the kernel (fsdp=2 x model=2).
  shard = kernel.addressable_shards[0].data
  assert shard.size * 4 == kernel.size


def test_activation_constraints_are_in_the_program():
  """The network's `with_logical_constraint`s reach XLA as sharding annotations."""
  model = models.EncoderDecoderModel(CONFIG)
  mesh = _mesh((2, 2, 2))
  params = _place(lambda r: model.init(r, L, L)['params'], mesh)
  batch = partitioning.shard_batch(_policy_batch(), mesh)
  with partitioning.axis_rules(mesh):
    text = jax.jit(lambda p, b: model.loss_fn(p, b, None)[0]).lower(params, batch).as_text()
  assert text.count('sharding_constraint') + text.count('@Sharding') >= 4


_POLICIES = {
  'policy': lambda: models.EncoderDecoderModel(CONFIG),
  'lm_policy': lambda: models.DecoderOnlyModel(LM_CONFIG),
}


@pytest.fixture(scope='module')
def reference_samples():
  return {name: _sample(None, name) for name in _POLICIES}


def _sample(shape, name):
  model = _POLICIES[name]()
  mesh = _mesh(shape)
  params = _place(lambda r: model.init(r, L, L)['params'], mesh)
  sampler = sampler_lib.Sampler(model, params, mesh, num_samples=3, max_length=L, temperature=1.0)
  enc = test_utils.toy_batch(8, L, L, vocab=64, seed=5)['encoder_input_tokens']
  return sampler.sample(enc, jax.random.key(7))


# The LM samples on the mesh that splits all three ways (its loss and gradients
# are checked on every mesh above).
@pytest.mark.parametrize(
  'shape, name',
  [(shape, 'policy') for shape in MESHES] + [((2, 2, 2), 'lm_policy')],
  ids=lambda x: 'x'.join(map(str, x)) if isinstance(x, tuple) else x,
)
def test_sampler_tokens_match_one_device(shape, name, reference_samples):
  tokens, log_probs = _sample(shape, name)
  ref_tokens, ref_log_probs = reference_samples[name]
  assert tokens.shape == (8, 3, L)
  np.testing.assert_array_equal(tokens, ref_tokens)
  np.testing.assert_allclose(log_probs, ref_log_probs, rtol=1e-4, atol=1e-4)


def test_minus_one_fills_the_mesh():
  assert partitioning.MeshConfig(data=-1, fsdp=2, model=2).shape(8) == (2, 2, 2)
  assert partitioning.MeshConfig(data=1, fsdp=-1, model=2).shape(8) == (1, 4, 2)
  assert partitioning.MeshConfig(data=1, fsdp=1, model=-1).shape(8) == (1, 1, 8)
  mesh = partitioning.make_mesh(partitioning.MeshConfig(data=2, fsdp=-1, model=1))
  assert dict(mesh.shape) == {'data': 2, 'fsdp': 4, 'model': 1}
  with pytest.raises(ValueError, match='at most one axis'):
    partitioning.MeshConfig(data=-1, fsdp=-1).shape(8)
  with pytest.raises(ValueError, match='not divisible'):
    partitioning.MeshConfig(data=-1, fsdp=3).shape(8)


def test_host_array_single_process():
  mesh = _mesh((2, 2, 2))
  x = partitioning.shard_batch({'x': np.arange(16).reshape(8, 2)}, mesh)['x']
  np.testing.assert_array_equal(multihost.host_array(x), np.arange(16).reshape(8, 2))
  assert multihost.is_primary()
  multihost.barrier('single process: a no-op')
