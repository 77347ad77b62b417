"""Every gin file under gin/ parses with its REQUIRED macros filled."""

import glob
import itertools
import os
import re

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
    'REWARD = @reward_fns.SentenceChrF()',
  ],
  'runs/inspect.gin': ["ROUND_DIR = '/tmp/unused/grow/g1'"],
  'runs/import_t5.gin': ["HF_CHECKPOINT = '/tmp/unused'", "MODEL_DIR = '/tmp/unused'"],
  'runs/import_lm.gin': ["HF_CHECKPOINT = '/tmp/unused'", "MODEL_DIR = '/tmp/unused'"],
  'runs/improve.gin': [
    "MODEL_DIR = '/tmp/unused'",
    'TASK = @tasks.tatoeba_en_de()',
    'REWARD = @reward_fns.SentenceChrF()',
  ],
  'runs/online_rl.gin': [
    "MODEL_DIR = '/tmp/unused'",
    'TASK = @tasks.tatoeba_en_de()',
    'REWARD = @reward_fns.SentenceChrF()',
  ],
  'runs/infer.gin': ["MODEL_DIR = '/tmp/unused'", 'REWARD = @reward_fns.SentenceChrF()'],
  'runs/rest.gin': ["MODEL_DIR = '/tmp/unused'", 'TASK = @tasks.tatoeba_en_de()'],
  'runs/report.gin': ["MODEL_DIR = '/tmp/unused'"],
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
    needs_model = name not in ('runs/inspect.gin', 'runs/report.gin')
    _parse([name, _MODEL] if needs_model else [name], _REQUIRED[name])
  else:  # Experiments: only MODEL_DIR (and TASK where the header says so) is left to the user.
    bindings = ["MODEL_DIR = '/tmp/unused'"]
    if 'REQUIRED: MODEL_DIR, TASK' in open(os.path.join(GIN_DIR, name)).read():
      bindings.append('TASK = @tasks.tatoeba_en_de()')
    _parse([name], bindings)
  # Nothing REQUIRED is left unset.
  assert 'gin.REQUIRED' not in gin.config_str()


def test_experiment_headers_list_command_and_required():
  for name in ALL:
    text = open(os.path.join(GIN_DIR, name)).read()
    assert text.startswith('#'), f'{name} needs a header comment'
    if not name.startswith('models/'):
      assert 'REQUIRED' in text, f'{name}: header must list the REQUIRED macros'
    if name.startswith(('bc/', 'grow/', 'rm/', 'rest/')):
      assert 'python -m rest_jax.main' in text, f'{name}: header must show the command'


def _header(name: str) -> str:
  """The file's leading comment block."""
  lines = open(os.path.join(GIN_DIR, name)).read().splitlines()
  return '\n'.join(itertools.takewhile(lambda line: line.startswith('#'), lines))


def _header_required(name: str) -> set[str]:
  """The macros a file's header says the user must set.

  Experiment files say it on one line (`# REQUIRED: MODEL_DIR, TASK (...)`); run
  files in a block, one `#   NAME   description` line per macro (two or more
  spaces after the name; other lines of the block continue a description).
  """
  header = _header(name)
  inline = re.search(r'^# REQUIRED: ([A-Z][A-Z0-9_]*(?:, [A-Z][A-Z0-9_]*)*)', header, re.M)
  if inline:
    return set(inline.group(1).split(', '))
  block = re.search(r'^# REQUIRED(?::| \(.*\):)\n((?:#  .*\n?)*)', header, re.M)
  if block:
    return set(re.findall(r'^#   ([A-Z][A-Z0-9_]*)  +\S', block.group(1), re.M))
  return set()


def _required_left(files: list[str]) -> set[str]:
  """The macros still `%gin.REQUIRED` after parsing `files` (with their includes).

  Asks `gin.finalize` for one missing macro at a time and binds it to None.
  """
  missing = []
  for _ in range(20):
    try:
      _parse(files, [f'{m} = None' for m in missing])
      return set(missing)
    except gin_utils.GinConfigError as e:
      match = re.search(r'([A-Z][A-Z0-9_]*)/macro\.value set to `%gin\.REQUIRED`', str(e))
      assert match, f'{files}: a REQUIRED value that is not a macro, or an unbound one: {e}'
      missing.append(match.group(1))
  raise AssertionError(f'{files}: too many REQUIRED macros: {missing}')


_NO_MODEL = ('runs/inspect.gin', 'runs/report.gin', 'runs/import_t5.gin', 'runs/import_lm.gin')


@pytest.mark.parametrize('name', ALL)
def test_header_lists_exactly_the_required_macros(name):
  # What a user reads in the header is what finalize asks for, no more, no less.
  header = _header_required(name)
  if name.startswith('runs/') and name not in _NO_MODEL:
    # A run file's macros (VOCAB_SIZE, ...) come from the model file included after it,
    # which also sets MODEL_CONFIG.
    text = open(os.path.join(GIN_DIR, name)).read()
    assert re.search(r'^MODEL_CONFIG = %gin\.REQUIRED', text, re.M), name
    left = _required_left([name, _MODEL]) | {'MODEL_CONFIG'}
  else:
    left = _required_left([name])
  assert header == left, f'{name}: the header lists {header}, %gin.REQUIRED leaves {left}'
  if name.startswith('models/'):
    assert not left, f'{name}: a model file sets everything'
  elif name.startswith('runs/'):
    assert left & {'MODEL_DIR', 'ROUND_DIR'}, name
    # The parse test above fills exactly these (MODEL_CONFIG by including a model file).
    given = {b.split(' = ')[0] for b in _REQUIRED[name]}
    assert given | (left & {'MODEL_CONFIG'}) == left, name
  else:  # An experiment leaves at most the run directory and the data to the user.
    assert 'MODEL_DIR' in left and left <= {'MODEL_DIR', 'TASK'}, (name, left)


def test_every_kind_of_config_is_there():
  kinds = {name.split('/')[0] for name in ALL}
  assert {'models', 'runs', 'bc', 'grow', 'rm', 'rest'} <= kinds, kinds
  run_modes = {'bc', 'eval', 'grow', 'improve', 'infer', 'inspect', 'report', 'rest', 'train_rm'}
  assert {f'runs/{m}.gin' for m in run_modes} <= set(ALL)


def _language_pair(name: str, text: str) -> tuple[str, str]:
  """The (source, target) languages of a gin/rest file's task.

  The shipped Tatoeba task is English->German; a paper config leaves TASK to the
  user and names its corpus in the header's command (`ParallelCorpus.name`,
  e.g. 'iwslt14_de_en').
  """
  if 'TASK = @tasks.tatoeba_en_de()' in text or "include 'rest/" in text:
    return ('en', 'de')
  if 'TASK = @tasks.arithmetic()' in text:  # Not a language pair.
    return ('prompt', 'completion')
  match = re.search(r"ParallelCorpus\.name=\"'[a-z0-9]+_([a-z]{2})_([a-z]{2})'\"", text)
  assert match, f'{name}: the header must name its corpus (ParallelCorpus.name=...)'
  return match.group(1), match.group(2)


@pytest.mark.parametrize('name', [n for n in ALL if n.startswith('rest/')])
def test_rest_configs_use_mqm_only_for_english_german(name):
  # The WMT MQM judgments are English->German: mixing them into the reward model of
  # another language pair teaches it to score the wrong languages.
  text = open(os.path.join(GIN_DIR, name)).read()
  bindings = ["MODEL_DIR = '/tmp/unused'"]
  if 'REQUIRED: MODEL_DIR, TASK' in text:
    bindings.append('TASK = @tasks.tatoeba_en_de()')
  _parse([name], bindings)
  pair = _language_pair(name, text)
  assert {'rest/iwslt_paper.gin': ('de', 'en'), 'rest/wmt_paper.gin': ('zh', 'en')}.get(
    name, pair
  ) == pair
  assert str(gin.query_parameter('train_rm.JudgmentsConfig.use_mqm')) == '%USE_MQM'
  if pair != ('en', 'de'):
    assert gin.query_parameter('%USE_MQM') is False, f'{name} is {pair}: set USE_MQM = False'


@pytest.mark.parametrize(
  'name,lengths',
  [('rest/demo_cpu.gin', 24), ('rest/iwslt_paper.gin', 128), ('rm/tatoeba_en_de_cpu.gin', 24)],
)
def test_reward_model_samples_the_runs_lengths(name, lengths):
  bindings = ["MODEL_DIR = '/tmp/unused'"]
  if 'REQUIRED: MODEL_DIR, TASK' in open(os.path.join(GIN_DIR, name)).read():
    bindings.append('TASK = @tasks.tatoeba_en_de()')
  _parse([name], bindings)
  # The policy samples of the reward model's judgments use the run's lengths.
  assert gin.query_parameter('%INPUT_LENGTH') == gin.query_parameter('%TARGET_LENGTH') == lengths
  for key, macro in (('input_length', '%INPUT_LENGTH'), ('target_length', '%TARGET_LENGTH')):
    assert str(gin.query_parameter(f'train_rm.JudgmentsConfig.{key}')) == macro
