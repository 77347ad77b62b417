"""`python -m rest_jax.main` in-process: BC, resume, eval, dry run, bad input."""

import json
import os

import pytest
import test_utils
from absl import flags

import gin
from rest_jax import gin_utils, main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(argv):
  """Parses `argv` like the real entry point and calls `main.main`."""
  flags.FLAGS.unparse_flags()
  gin.clear_config()
  flags.FLAGS(gin_utils.rewrite_gin_args(['rest_jax', *argv]))
  main.main(['rest_jax'])


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  """A 300-pair TSV corpus and a 100-piece vocabulary for it."""
  return test_utils.write_tiny_corpus(str(tmp_path_factory.mktemp('corpus')))


def _bindings(tsv, vocab, model_dir, steps):
  return [
    '--gin_file=runs/bc.gin',
    '--gin_file=models/tiny.gin',
    f"--gin.MODEL_DIR='{model_dir}'",
    '--gin.TASK=@tasks.ParallelCorpus()',
    "--gin.tasks.ParallelCorpus.name='main_test_corpus'",
    f"--gin.tasks.ParallelCorpus.train_path='{tsv}'",
    f"--gin.tasks.ParallelCorpus.vocab_path='{vocab}'",
    '--gin.tasks.ParallelCorpus.num_validation=16',
    '--gin.tasks.ParallelCorpus.num_test=16',
    '--gin.VOCAB_SIZE=128',
    f'--gin.TRAIN_STEPS={steps}',
    '--gin.BATCH_SIZE=8',
    '--gin.INPUT_LENGTH=16',
    '--gin.TARGET_LENGTH=16',
    '--gin.EVAL_PERIOD=3',
    '--gin.CHECKPOINT_PERIOD=3',
    '--gin.LOG_PERIOD=3',
    '--gin.EVAL_BATCH_SIZE=8',
  ]


def test_bc_resume_and_eval_in_process(corpus, tmp_path):
  tsv, vocab = corpus
  model_dir = tmp_path / 'run'
  run_main(
    [
      '--run_mode=bc',
      '--gin_bindings=bc.train.progress = False',
      *_bindings(tsv, vocab, model_dir, 6),
    ]
  )
  assert (model_dir / 'config.gin').exists()
  assert 'bc.train' in (model_dir / 'config.gin').read_text()
  first = json.loads((model_dir / 'eval' / 'bc_validation.json').read_text())
  assert first['step'] == 6 and first['num_examples'] == 16
  assert 0.0 <= first['chrf'] <= 100.0 and 'nrefs:1' in first['bleu_signature']
  assert sorted(os.listdir(model_dir / 'checkpoints' / 'bc' / 'last')) == ['3', '6']
  assert len(os.listdir(model_dir / 'checkpoints' / 'bc' / 'best')) == 1

  # Same directory, more steps: resumes at 6 instead of starting over.
  run_main(
    [
      '--run_mode=bc',
      '--gin_bindings=bc.train.progress = False',
      *_bindings(tsv, vocab, model_dir, 9),
    ]
  )
  history = [json.loads(line) for line in open(model_dir / 'eval' / 'bc_history.jsonl')]
  assert [h['step'] for h in history] == [3, 6, 9]
  assert sorted(os.listdir(model_dir / 'checkpoints' / 'bc' / 'last')) == ['6', '9']

  run_main(
    [
      '--run_mode=eval',
      '--gin_file=runs/eval.gin',
      '--gin_file=models/tiny.gin',
      f"--gin.MODEL_DIR='{model_dir}'",
      '--gin.TASK=@tasks.ParallelCorpus()',
      "--gin.tasks.ParallelCorpus.name='main_test_corpus'",
      f"--gin.tasks.ParallelCorpus.train_path='{tsv}'",
      f"--gin.tasks.ParallelCorpus.vocab_path='{vocab}'",
      '--gin.tasks.ParallelCorpus.num_validation=16',
      '--gin.tasks.ParallelCorpus.num_test=16',
      '--gin.VOCAB_SIZE=128',
      "--gin.SPLIT='test'",
      "--gin.CHECKPOINT='last'",
      '--gin.INPUT_LENGTH=16',
      '--gin.TARGET_LENGTH=16',
      '--gin.evaluation.evaluate.progress=False',
    ]
  )
  result = json.loads((model_dir / 'eval' / 'test_last.json').read_text())
  assert result['step'] == 9 and result['split'] == 'test' and result['num_examples'] == 16

  # Any checkpoint directory, with a reward.
  run_main(
    [
      '--run_mode=eval',
      '--gin_file=runs/eval.gin',
      '--gin_file=models/tiny.gin',
      f"--gin.MODEL_DIR='{model_dir}'",
      '--gin.TASK=@tasks.ParallelCorpus()',
      "--gin.tasks.ParallelCorpus.name='main_test_corpus'",
      f"--gin.tasks.ParallelCorpus.train_path='{tsv}'",
      f"--gin.tasks.ParallelCorpus.vocab_path='{vocab}'",
      '--gin.tasks.ParallelCorpus.num_validation=16',
      '--gin.tasks.ParallelCorpus.num_test=16',
      '--gin.VOCAB_SIZE=128',
      "--gin.CHECKPOINT='bc/best'",
      '--gin.REWARD=@reward_fns.SentenceChrF()',
      '--gin.INPUT_LENGTH=16',
      '--gin.TARGET_LENGTH=16',
      '--gin.evaluation.evaluate.progress=False',
    ]
  )
  result = json.loads((model_dir / 'eval' / 'validation_bc_best.json').read_text())
  assert result['reward'] == pytest.approx(result['chrf_reward'], abs=1e-6)
  assert 0 <= result['hacking_rate'] <= 1 and 'repetition' in result['hacking']


def test_dry_run_prints_config_and_writes_nothing(corpus, tmp_path, capsys):
  tsv, vocab = corpus
  run_main(['--run_mode=bc', '--dry_run', *_bindings(tsv, vocab, tmp_path / 'dry', 5)])
  out = capsys.readouterr().out
  assert 'bc.train' in out and 'TRAIN_STEPS = 5' in out
  assert not (tmp_path / 'dry').exists()


def _error(argv) -> str:
  with pytest.raises(SystemExit) as e:
    run_main(argv)
  return str(e.value.code)


def test_missing_gin_file_names_it(tmp_path):
  msg = _error(['--run_mode=bc', '--gin_file=gin/bc/no_such_experiment.gin'])
  assert msg.startswith('error: --gin_file=gin/bc/no_such_experiment.gin: file not found')


def test_unknown_binding_names_it(corpus, tmp_path):
  tsv, vocab = corpus
  msg = _error(
    [
      '--run_mode=bc',
      *_bindings(tsv, vocab, tmp_path / 'x', 2),
      '--gin.bc.train.num_train_stepz=3',
    ]
  )
  assert msg.startswith("error: --gin_bindings='bc.train.num_train_stepz = 3'")
  msg = _error(
    ['--run_mode=bc', *_bindings(tsv, vocab, tmp_path / 'x', 2), '--gin.nosuchmodule.Thing.x=3']
  )
  assert 'nosuchmodule.Thing.x = 3' in msg


def test_missing_required_macro_names_it(tmp_path):
  msg = _error(['--run_mode=bc', '--gin_file=runs/bc.gin', '--gin_file=models/tiny.gin'])
  assert msg.startswith('error: gin config: MODEL_DIR') and 'REQUIRED' in msg
  assert '--gin.MODEL_DIR=' in msg


@pytest.mark.parametrize(
  'content, expected',
  [
    (None, r'ParallelCorpus.train_path.*nowhere\.tsv'),
    ('One.\tEins.\nno tab here\n', r'bad\.tsv, line 2'),
    ('\n\n', r'bad\.tsv.*no sentence pairs'),
  ],
  ids=['missing_corpus', 'malformed_line', 'empty_corpus'],
)
def test_bad_corpus_gives_one_clear_error(corpus, tmp_path, content, expected):
  _, vocab = corpus
  path = tmp_path / ('nowhere.tsv' if content is None else 'bad.tsv')
  if content is not None:
    path.write_text(content)
  argv = _bindings(str(path), vocab, tmp_path / 'run', 2)
  argv = [a.replace('main_test_corpus', f'bad_{tmp_path.name}') for a in argv]
  msg = _error(['--run_mode=bc', *argv])
  assert msg.startswith('error: ')
  assert '\n' not in msg
  import re

  assert re.search(expected, msg), msg


def test_rest_dry_run_builds_the_whole_loop(tmp_path, capsys):
  run_main(
    [
      '--run_mode=rest',
      '--dry_run',
      '--gin_file=rest/demo_cpu.gin',
      f"--gin.MODEL_DIR='{tmp_path / 'demo'}'",
    ]
  )
  out = capsys.readouterr().out
  assert 'rest.rest' in out and 'NUM_GROW_ROUNDS = 2' in out and 'NUM_IMPROVE_STEPS = 2' in out
  assert 'CONTROL = True' in out and "INITIAL_POLICY = 'shipped:tatoeba_en_de_small_cpu'" in out
  assert not (tmp_path / 'demo').exists()


def test_model_dir_url_is_refused_with_a_clear_error():
  from rest_jax import errors, gin_utils

  with pytest.raises(errors.UserInputError, match='gcsfuse'):
    gin_utils.check_model_dir('gs://bucket/run')
  gin_utils.check_model_dir('/mnt/gcs/bucket/run')  # A mounted path is fine.


def test_dry_run_builds_the_arguments_but_does_not_run(tmp_path, capsys, monkeypatch):
  from rest_jax.runs import report

  def fail(*args, **kwargs):
    raise AssertionError('the run function body ran in a dry run')

  monkeypatch.setattr(report, 'write_report', fail)
  model_dir = tmp_path / 'run'
  run_main(
    [
      '--run_mode=report',
      '--dry_run',
      '--gin_file=runs/report.gin',
      f"--gin.MODEL_DIR='{model_dir}'",
    ]
  )
  out = capsys.readouterr().out
  assert 'report.report.model_dir = %MODEL_DIR' in out and str(model_dir) in out
  assert not model_dir.exists()  # No lock either: a dry run writes nothing.


@pytest.mark.parametrize('dry_run', [True, False])
def test_missing_argument_names_it(tmp_path, dry_run):
  gin_file = tmp_path / 'infer_partial.gin'
  gin_file.write_text(
    'from __gin__ import dynamic_registration\n'
    'from rest_jax.runs import infer\n'
    "infer.infer.name = 'x'\n"
  )
  msg = _error(['--run_mode=infer', f'--gin_file={gin_file}', *(['--dry_run'] if dry_run else [])])
  assert msg.startswith('error: --run_mode=infer: ') and 'model_dir' in msg, msg
  assert '--gin.NAME=VALUE' in msg and '\n' not in msg


def test_unconfigured_run_function_names_the_run_file():
  def never_registered(*, model_dir):
    raise AssertionError('not configured, never called')

  with pytest.raises(gin_utils.GinConfigError) as e:
    gin_utils.call_configured(never_registered, 'infer')
  assert str(e.value).startswith('--run_mode=infer: the gin files do not configure ')
  assert 'never_registered' in str(e.value) and 'gin/runs/infer.gin' in str(e.value)


def test_run_holds_the_model_dir_lock(tmp_path, capsys, monkeypatch):
  from rest_jax.core import run_lock
  from rest_jax.runs import report

  model_dir = tmp_path / 'run'
  model_dir.mkdir()
  seen = []
  monkeypatch.setattr(
    report, 'write_report', lambda d: seen.append(os.listdir(d)) or os.path.join(d, 'r.html')
  )
  argv = ['--run_mode=report', '--gin_file=runs/report.gin', f"--gin.MODEL_DIR='{model_dir}'"]
  run_main(argv)
  assert seen == [['.lock']] and os.listdir(model_dir) == []  # Held during the run only.
  with run_lock.hold(str(model_dir), 'rest'):
    msg = _error(argv)
  assert msg.startswith(f'error: MODEL_DIR {model_dir} is in use by run_mode=rest on host ')
  assert f'pid {os.getpid()}' in msg and '\n' not in msg
  run_main(argv)  # Released again.
  assert len(seen) == 2
