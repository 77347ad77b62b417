"""Every gin file under gin/ parses with its REQUIRED macros filled."""

import glob
import os

import pytest

import gin
from rest_jax import gin_utils

GIN_DIR = gin_utils.REPO_GIN_DIR
ALL = sorted(
  os.path.relpath(p, GIN_DIR)
  for p in glob.glob(os.path.join(GIN_DIR, '**', '*.gin'), recursive=True)
)
# What each kind of file needs besides itself.
_MODEL = 'models/tiny.gin'
_REQUIRED = {
  'runs/bc.gin': ["MODEL_DIR = '/tmp/unused'", 'TASK = @tasks.tatoeba_en_de()', 'TRAIN_STEPS = 1'],
  'runs/eval.gin': ["MODEL_DIR = '/tmp/unused'", 'TASK = @tasks.tatoeba_en_de()'],
  'runs/grow.gin': [
    "MODEL_DIR = '/tmp/unused'",
    'TASK = @tasks.tatoeba_en_de()',
    'REWARD = @rewards.SentenceChrF()',
  ],
  'runs/inspect.gin': ["ROUND_DIR = '/tmp/unused/grow/g1'"],
  'runs/train_rm.gin': [
    "MODEL_DIR = '/tmp/unused'",
    'TASK = @tasks.tatoeba_en_de()',
    'RM_STEPS = 1',
  ],
}


def _parse(files, bindings):
  gin.clear_config()
  gin_utils.parse_gin_flags([], files, bindings)


@pytest.mark.parametrize('name', ALL)
def test_gin_file_parses(name):
  if name.startswith('models/'):
    _parse([name], [])
    config = gin.query_parameter('%MODEL_CONFIG')
    assert config is not None
  elif name.startswith('runs/'):
    needs_model = name != 'runs/inspect.gin'
    _parse([name, _MODEL] if needs_model else [name], _REQUIRED[name])
  else:  # Experiments: only MODEL_DIR is left to the user.
    _parse([name], ["MODEL_DIR = '/tmp/unused'"])
  # Nothing REQUIRED is left unset.
  assert 'gin.REQUIRED' not in gin.config_str()


def test_experiment_headers_list_command_and_required():
  for name in ALL:
    text = open(os.path.join(GIN_DIR, name)).read()
    assert text.startswith('#'), f'{name} needs a header comment'
    if not name.startswith('models/'):
      assert 'REQUIRED' in text, f'{name}: header must list the REQUIRED macros'
    if name.startswith(('bc/', 'grow/', 'rm/')):
      assert 'python -m rest_jax.main' in text, f'{name}: header must show the command'


def test_there_are_configs():
  assert {
    'models/tiny.gin',
    'models/small.gin',
    'models/base.gin',
    'models/iwslt_paper.gin',
    'runs/bc.gin',
    'bc/tatoeba_en_de_cpu.gin',
    'bc/tatoeba_en_de_gpu.gin',
  } <= set(ALL)
