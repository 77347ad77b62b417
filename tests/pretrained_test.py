"""Shipped policies: bfloat16 storage, installation, and the shipped BC policy's metrics."""

import json
import os

import jax
import numpy as np
import pytest
import test_utils

from rest_jax.core import checkpoints, models, partitioning
from rest_jax.data import tasks
from rest_jax.runs import evaluation, policy_eval, pretrained

SHIPPED = 'tatoeba_en_de_small_cpu'  # The BC policy the ReST configs start from.


def _random_params(config):
  model = models.EncoderDecoderModel(config)
  boxed = model.init(jax.random.key(0), 8, 8)['params']
  return jax.tree.map(
    lambda x: np.asarray(x.value if hasattr(x, 'value') else x),
    boxed,
    is_leaf=lambda x: hasattr(x, 'value'),
  )


def test_save_and_load_round_trip_bfloat16(tmp_path, monkeypatch):
  params = _random_params(test_utils.tiny_config(vocab_size=64))
  monkeypatch.setattr(pretrained, 'PACKAGE_DIR', str(tmp_path))
  pretrained.save_params(params, str(tmp_path / 'p' / 'params.npz'))
  (tmp_path / 'p' / 'metrics.json').write_text(json.dumps({'step': 7}))
  loaded = pretrained.load_params('p')
  expected = pretrained.round_to_bfloat16(params)
  assert jax.tree.structure(loaded) == jax.tree.structure(expected)
  for a, b, raw in zip(jax.tree.leaves(loaded), jax.tree.leaves(expected), jax.tree.leaves(params)):
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    # bfloat16 keeps 8 bits of mantissa: within 2**-8 relative of the float32 value.
    np.testing.assert_allclose(a, raw, rtol=2**-8, atol=1e-30)
  with pytest.raises(FileNotFoundError, match="No shipped policy 'nope'"):
    pretrained.load_params('nope')


def test_install_writes_a_restorable_policy_checkpoint(tmp_path, monkeypatch):
  config = test_utils.tiny_config(vocab_size=64)
  params = _random_params(config)
  monkeypatch.setattr(pretrained, 'PACKAGE_DIR', str(tmp_path / 'pkg'))
  pretrained.save_params(params, str(tmp_path / 'pkg' / 'p' / 'params.npz'))
  (tmp_path / 'pkg' / 'p' / 'metrics.json').write_text(json.dumps({'step': 7}))
  model_dir = str(tmp_path / 'run')
  directory = pretrained.install('shipped:p', model_dir)
  assert directory == os.path.join(model_dir, 'checkpoints', 'shipped', 'p')
  restored, step = checkpoints.restore_params(
    directory,
    models.EncoderDecoderModel(config).init_params_fn(8, 8),
    partitioning.make_mesh(partitioning.MeshConfig(num_devices=1)),
  )
  assert step == 7
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(pretrained.load_params('p'))):
    np.testing.assert_array_equal(np.asarray(a), b)
  assert pretrained.install('p', model_dir) == directory  # Idempotent.
  assert pretrained.is_shipped('shipped:p') and not pretrained.is_shipped('bc/best')


def test_shipped_policy_reproduces_its_recorded_test_metrics():
  """The shipped BC policy decodes the recorded test slice to the recorded BLEU / chrF."""
  metrics = pretrained.read_metrics(SHIPPED)
  config = pretrained.read_config(SHIPPED)
  assert os.path.getsize(os.path.join(pretrained.folder(SHIPPED), 'params.npz')) < 25e6
  model = models.EncoderDecoderModel(config)
  mesh = partitioning.make_mesh(partitioning.MeshConfig())
  params = pretrained.load_params(SHIPPED)
  cfg = evaluation.EvalConfig(
    task=tasks.tatoeba_en_de(),
    split='test',
    batch_size=200,
    input_length=metrics['input_length'],
    target_length=metrics['target_length'],
    max_examples=metrics['slice_examples'],
  )
  got = policy_eval.evaluate_policy(model, params, mesh, cfg, progress=False)
  want = metrics['test_slice']
  assert got['num_examples'] == want['num_examples']
  assert got['bleu'] == pytest.approx(want['bleu'], abs=0.3)
  assert got['chrf'] == pytest.approx(want['chrf'], abs=0.3)
  assert got['loss'] == pytest.approx(want['loss'], rel=1e-3)
