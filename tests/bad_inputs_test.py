"""Bad inputs: a catalogue, one test per case (issue 13, item 5).

Every case checks the one line the user sees (`python -m rest_jax.main` prints
an `errors.UserInputError` as `error: <first line>`): it names what is wrong
and what to do. Cases that write check that nothing half-written is left: no
`*.tmp-*` file, no partial shard, lock, checkpoint or JSON, and the previous
version of a file intact. The tests call the library directly (tiny corpora,
fake Grow rounds, a 2+2-layer model, `rest_jax.main` in-process for the
command-line cases), so the whole file runs in well under a minute.

`CATALOGUE` lists each case with the test(s) that check it; WORKSPACE.md
("Bad inputs: the catalogue") lists the messages. A few expensive paths are
also covered by the tests named there from other files.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import re

import flax.linen
import jax
import numpy as np
import pytest
import test_utils
from absl import flags

import gin
from rest_jax import errors, gin_utils, main
from rest_jax.core import checkpoints, files, filtering, partitioning, run_lock
from rest_jax.data import grow_io, tasks
from rest_jax.rewards import reward_fns
from rest_jax.runs import grow, inspect_round, policy_eval, rest_phases, rest_state

# case -> the tests that check it (this module unless a file is named).
CATALOGUE = {
  'missing gin file': ['test_missing_gin_file'],
  'malformed gin file': ['test_malformed_gin_file'],
  'gin include not found': ['test_missing_gin_include'],
  'unknown binding': ['test_unknown_binding'],
  'unknown run mode': ['test_unknown_run_mode'],
  'missing REQUIRED macro': ['test_missing_required_macro'],
  'missing corpus': ['test_missing_corpus'],
  'malformed TSV': ['test_malformed_tsv'],
  'empty TSV': ['test_empty_tsv'],
  'non-UTF-8 TSV': ['test_non_utf8_tsv'],
  'missing vocabulary file': ['test_missing_vocabulary_file'],
  'vocabulary larger than the model': ['test_vocabulary_larger_than_the_model'],
  'vocabulary that does not match the checkpoint': [
    'test_checkpoint_with_another_vocabulary_size',
    'tests/checkpoints_test.py::test_restore_params_names_what_differs',
  ],
  'checkpoint of another architecture': [
    'test_checkpoint_of_another_architecture',
    'tests/checkpoints_test.py::test_restore_params_names_what_differs',
    'tests/rewards_test.py::test_load_params_mismatch_and_missing_step',
  ],
  'missing checkpoint': ['test_missing_checkpoint'],
  'corrupted TFRecord (CRC)': ['test_corrupted_tfrecord_crc'],
  'manifest mismatch': [
    'test_manifest_mismatch',
    'tests/grow_test.py::test_corrupted_shard_and_changed_count_are_detected',
  ],
  'malformed manifest': ['test_malformed_manifest'],
  'unwritable MODEL_DIR': ['test_unwritable_model_dir', 'test_read_only_model_dir'],
  'full disk during a write': [
    'test_full_disk_keeps_the_old_file',
    'test_full_disk_during_a_shard_write',
    'test_full_disk_while_taking_the_lock',
  ],
  'non-finite rewards': ['test_non_finite_rewards'],
  'threshold that keeps nothing': [
    'test_threshold_that_keeps_nothing',
    'tests/filtering_test.py::test_apply_schedule_fallback_that_keeps_too_few_raises',
  ],
  'zero samples per source': ['test_zero_samples_per_source'],
  'negative temperature': ['test_negative_temperature'],
  'over-length sequences (counted and reported)': [
    'test_over_length_sequences_are_counted_and_reported',
    'tests/grow_test.py::test_length_cap_counts_and_dropping_unfinished_samples',
  ],
  'config changed between restarts': [
    'test_config_changed_between_restarts',
    'tests/rest_test.py::test_restart_with_another_config_is_a_clear_error',
  ],
  'two runs on the same MODEL_DIR': [
    'test_two_runs_on_the_same_model_dir',
    'tests/run_lock_test.py::test_main_refuses_a_held_model_dir_in_one_line',
  ],
}


def test_catalogue_is_complete():
  assert len(CATALOGUE) >= 20
  for case, tests in CATALOGUE.items():
    own = [t for t in tests if '::' not in t]
    assert own, f'{case}: no test in this module'
    for name in own:
      assert callable(globals().get(name)), f'{case}: {name} is not defined here'


# ------------------------------------------------------------------ helpers


def _one_line(e: BaseException | str) -> str:
  """What `rest_jax.main` prints for an exception (or its exit message): one line."""
  text = str(e.value if isinstance(e, pytest.ExceptionInfo) else e)
  first = text.split('\n')[0]
  assert first.strip(), text
  return first


def _leftovers(root) -> list[str]:
  """Temporary or stale files under `root` that a failed write must not leave."""
  root = str(root)
  patterns = ('**/*.tmp-*', '**/*.tmp', '**/.lock.stale.*')
  return sorted(p for pat in patterns for p in glob.glob(os.path.join(root, pat), recursive=True))


def run_main(argv) -> str:
  """Runs `rest_jax.main` in-process like the entry point; returns its `error: ...` exit line."""
  flags.FLAGS.unparse_flags()
  gin.clear_config()
  with pytest.raises(SystemExit) as e:
    flags.FLAGS(gin_utils.rewrite_gin_args(['rest_jax', *argv]))
    main.main(['rest_jax'])
  msg = str(e.value.code)
  assert msg.startswith('error: ') and '\n' not in msg, msg
  return msg


def _report_argv(model_dir) -> list[str]:
  return ['--run_mode=report', '--gin_file=runs/report.gin', f"--gin.MODEL_DIR='{model_dir}'"]


def _corpus(path, **kwargs) -> tasks.ParallelCorpus:
  name = 'bad_inputs_' + re.sub(r'\W', '_', os.path.basename(os.path.dirname(str(path))))
  return tasks.ParallelCorpus(
    name=name, train_path=str(path), num_validation=1, num_test=1, **kwargs
  )


def _record(source_id: int, sample_index: int, reward: float = 0.5) -> dict:
  return {
    'inputs': np.array([5, 6, 7], np.int32),
    'targets': np.array([8, 9], np.int32),
    'inputs_pretokenized': f'source {source_id}',
    'targets_pretokenized': f'candidate {sample_index}',
    'reference': f'reference {source_id}',
    'reward': reward,
    'raw_reward': 100 * reward,
    'log_prob': -1.0,
    'source_id': source_id,
    'sample_index': sample_index,
    'is_human': int(sample_index == -1),
    'grow_round': 1,
    'policy_step': 3,
  }


def _round(round_dir, num_shards: int = 2, stats=None, **extra) -> list[dict]:
  """A finished fake Grow round: `num_shards` shards of 3 records, and its manifest."""
  shards = [
    grow_io.write_shard(
      str(round_dir), i, num_shards, [_record(i, n) for n in (-1, 0, 1)], stats=stats
    )
    for i in range(num_shards)
  ]
  grow_io.write_manifest(str(round_dir), shards, grow_round=1, **extra)
  return shards


def _snapshot(root) -> dict[str, bytes]:
  """Every file under `root` and its bytes."""
  out = {}
  for dirpath, _, names in os.walk(str(root)):
    for name in names:
      path = os.path.join(dirpath, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, str(root))] = f.read()
  return out


def _disk_full(*args, **kwargs):
  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# ------------------------------------------------------ command line and gin


def test_missing_gin_file(tmp_path):
  msg = run_main(['--run_mode=bc', '--gin_file=gin/bc/no_such_experiment.gin'])
  assert msg.startswith('error: --gin_file=gin/bc/no_such_experiment.gin: file not found')
  assert '--gin_search_paths' in msg


def test_malformed_gin_file(tmp_path):
  path = tmp_path / 'bad.gin'
  path.write_text('MODEL_DIR = = 3\n')
  msg = run_main(['--run_mode=report', f'--gin_file={path}'])
  assert re.match(rf'error: --gin_file={path} .*Unable to parse value.*line 1.*Fix that line', msg)
  assert not _leftovers(tmp_path)


def test_missing_gin_include(tmp_path):
  path = tmp_path / 'inc.gin'
  path.write_text("include 'nowhere/none.gin'\n")
  msg = run_main(['--run_mode=report', f'--gin_file={path}'])
  assert re.match(rf'error: --gin_file={path} .*Unable to open file: nowhere/none\.gin', msg)
  assert f'(in {path}, line 1). Fix that line' in msg


@pytest.mark.parametrize(
  'binding, problem',
  [
    ('report.report.nosuch=3', r"Configurable 'report.report' doesn't have a parameter named"),
    ('nosuchmodule.Thing.x=3', r"'nosuchmodule' was not provided by an import statement"),
    ('report.report.model_dir=[', r'EOF in multi-line statement'),
  ],
  ids=['unknown_parameter', 'unknown_configurable', 'unclosed_bracket'],
)
def test_unknown_binding(tmp_path, binding, problem):
  msg = run_main([*_report_argv(tmp_path / 'run'), f'--gin.{binding}'])
  name = binding.replace('=', ' = ', 1)
  assert msg.startswith(f'error: --gin_bindings={name!r}: '), msg
  assert re.search(problem, msg) and 'Bind module.function.parameter or a MACRO' in msg
  assert not (tmp_path / 'run').exists()


def test_unknown_run_mode():
  flags.FLAGS.unparse_flags()
  with pytest.raises(SystemExit) as e:
    main._parse_flags(['rest_jax', '--run_mode=nope', '--gin_file=runs/report.gin'])
  msg = str(e.value.code)
  assert re.fullmatch(
    r'error: flag --run_mode=nope: value should be one of <bc\|eval\|.*>; pass --help for usage\.',
    msg,
  ), msg
  flags.FLAGS.unparse_flags()


def test_missing_required_macro(tmp_path):
  msg = run_main(['--run_mode=report', '--gin_file=runs/report.gin'])
  assert msg.startswith('error: gin config: MODEL_DIR') and '--gin.MODEL_DIR=VALUE' in msg


# ------------------------------------------------------------ corpora and vocabularies


def test_missing_corpus(tmp_path):
  with pytest.raises(errors.UserInputError) as e:  # A DataError.
    _corpus(tmp_path / 'nowhere.tsv').splits()
  assert re.fullmatch(
    r"ParallelCorpus\.train_path: file '.*nowhere\.tsv' does not exist \(or is a directory\)\. "
    r'Fix the path in ParallelCorpus\.train_path\.',
    _one_line(e),
  )


def test_malformed_tsv(tmp_path):
  path = tmp_path / 'bad.tsv'
  path.write_text('One.\tEins.\nno tab here\nTwo.\tZwei.\n')
  with pytest.raises(errors.UserInputError) as e:  # A DataError.
    _corpus(path).splits()
  assert re.fullmatch(
    r'.*bad\.tsv, line 2 \(ParallelCorpus\.train_path\): expected at least 2 tab-separated '
    r"columns .*found 1: 'no tab here'\. Fix or delete the line, or set the columns\.",
    _one_line(e),
  )


@pytest.mark.parametrize('content', ['', '\n\n  \n'], ids=['empty', 'blank_lines'])
def test_empty_tsv(tmp_path, content):
  path = tmp_path / 'empty.tsv'
  path.write_text(content)
  with pytest.raises(errors.UserInputError) as e:  # A DataError.
    _corpus(path).splits()
  assert re.fullmatch(
    r'.*empty\.tsv \(ParallelCorpus\.train_path\) holds no sentence pairs\. '
    r'Give a non-empty corpus\.',
    _one_line(e),
  )


def test_non_utf8_tsv(tmp_path):
  path = tmp_path / 'latin1.tsv'
  path.write_bytes('One.\tEins.\nGreen.\tGrün.\n'.encode('latin-1'))
  with pytest.raises(errors.UserInputError) as e:  # A DataError.
    _corpus(path).splits()
  assert re.fullmatch(
    r'.*latin1\.tsv, line 2 \(ParallelCorpus\.train_path\): not valid UTF-8 \(.*\)\. '
    r'Convert the file to UTF-8\.',
    _one_line(e),
  )


def test_missing_vocabulary_file(tmp_path):
  tsv = tmp_path / 'ok.tsv'
  tsv.write_text('One.\tEins.\n')
  with pytest.raises(errors.UserInputError) as e:  # A DataError.
    _corpus(tsv, vocab_path=str(tmp_path / 'no.model')).register()
  assert re.fullmatch(
    r"ParallelCorpus\.vocab_path: file '.*no\.model' does not exist.*Fix the path in "
    r'ParallelCorpus\.vocab_path\.',
    _one_line(e),
  )


def test_vocabulary_larger_than_the_model(tmp_path):
  tsv = tmp_path / 'ok.tsv'
  tsv.write_text('One.\tEins.\nTwo.\tZwei.\nThree.\tDrei.\n')
  corpus = _corpus(tsv, vocab_path=tasks.tatoeba_en_de().vocab_path)  # 4000 pieces.
  with pytest.raises(errors.UserInputError) as e:
    policy_eval.check_vocab_size(test_utils.tiny_config(vocab_size=32), corpus)
  assert re.fullmatch(
    r"The model has vocab_size=32 but the vocabulary of task '.*' has 4000 pieces: "
    r'set --gin\.VOCAB_SIZE=4000\.',
    _one_line(e),
  )


# ----------------------------------------------------------------- checkpoints


@pytest.fixture(scope='module')
def policy_dir(tmp_path_factory):
  """A saved tiny policy (vocab 32): `<dir>/checkpoints/bc/best`, step 3."""
  ckpt_dir = os.path.join(str(tmp_path_factory.mktemp('policy')), 'checkpoints', 'bc', 'best')
  shapes = jax.eval_shape(test_utils.tiny_model().init_params_fn(4, 4), jax.random.key(0))
  params = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), flax.linen.unbox(shapes))
  checkpoints.Checkpointer(ckpt_dir).save(3, {'params': params})  # No jit: zeros suffice.
  return ckpt_dir


def _restore(ckpt_dir: str, **overrides):
  mesh = partitioning.make_mesh(partitioning.MeshConfig(), jax.devices()[:1])
  model = test_utils.tiny_model(**overrides)
  return checkpoints.restore_params(ckpt_dir, model.init_params_fn(4, 4), mesh)


def test_checkpoint_with_another_vocabulary_size(policy_dir):
  before = _snapshot(policy_dir)
  with pytest.raises(checkpoints.CheckpointMismatchError) as e:
    _restore(policy_dir, vocab_size=64)
  assert re.fullmatch(
    rf'Policy checkpoint {policy_dir} \(step 3\) is of another architecture than the configured '
    r'model: shape of .*checkpoint \(.*\), model \(.*\) \(and 1 more\); the vocabulary sizes '
    r'differ \(checkpoint 32, model 64\): set VOCAB_SIZE=32 and the vocabulary the checkpoint was '
    r'trained with\. Use the model config it was trained with\.',
    _one_line(e),
  )
  assert _snapshot(policy_dir) == before  # A refused restore writes nothing.


def test_checkpoint_of_another_architecture(policy_dir):
  for overrides, problem in [
    (
      {'num_decoder_layers': 3},
      r'the checkpoint lacks \d+ model params, e\.g\. \[.decoder_layer_2',
    ),
    (
      {'num_encoder_layers': 1},
      r'the model lacks \d+ checkpoint params, e\.g\. \[.encoder_layer_1',
    ),
    ({'emb_dim': 32}, r'shape of .*: checkpoint \(.*16.*\), model \(.*32.*\)'),
  ]:
    with pytest.raises(checkpoints.CheckpointMismatchError) as e:
      _restore(policy_dir, **overrides)
    msg = _one_line(e)
    assert msg.startswith(f'Policy checkpoint {policy_dir} (step 3) is of another architecture')
    assert re.search(problem, msg) and msg.endswith('Use the model config it was trained with.')
    assert 'vocabulary' not in msg  # Same vocabulary size: no hint about it.


def test_missing_checkpoint(tmp_path):
  missing = str(tmp_path / 'checkpoints' / 'bc' / 'best')
  with pytest.raises(FileNotFoundError, match=r'No policy checkpoint under .* train one first'):
    _restore(missing)
  assert not os.path.exists(missing)  # Not created by the attempt.


# ------------------------------------------------------------------- Grow rounds


def test_corrupted_tfrecord_crc(tmp_path):
  """A shard whose bytes changed before its checksum was taken: the record CRC catches it."""
  _round(tmp_path)
  shard = tmp_path / grow_io.shard_name(1, 2)
  data = bytearray(shard.read_bytes())
  data[20] ^= 0xFF  # Inside the first record's payload.
  shard.write_bytes(bytes(data))
  manifest = json.loads((tmp_path / grow_io.MANIFEST).read_text())
  manifest['shards'][1]['sha256'] = grow_io._sha256(str(shard))
  (tmp_path / grow_io.MANIFEST).write_text(json.dumps(manifest))
  with pytest.raises(grow_io.GrowDataError) as e:
    grow_io.verify_round(str(tmp_path))
  assert re.fullmatch(
    rf'{shard}: not a readable TFRecord file \(.*corrupted record.*\): the shard is corrupted\. '
    r'Delete it and rerun Grow for this round \(it rewrites the missing shard\)\.',
    _one_line(e),
  )


@pytest.mark.parametrize('change', ['bytes', 'count', 'missing'])
def test_manifest_mismatch(tmp_path, change):
  _round(tmp_path)
  shard = tmp_path / grow_io.shard_name(0, 2)
  manifest_path = tmp_path / grow_io.MANIFEST
  if change == 'bytes':
    shard.write_bytes(shard.read_bytes()[:-5])  # A cut shard.
    want = rf'{shard}: sha256 \w+\.\.\. does not match the manifest \(\w+\.\.\.\): the shard is '
    want += r'corrupted or was changed; rerun Grow\.'
  elif change == 'count':
    manifest = json.loads(manifest_path.read_text())
    manifest['shards'][0]['count'] = 4
    manifest_path.write_text(json.dumps(manifest))
    want = rf'{shard}: 3 records but the manifest says 4; rerun Grow\.'
  else:
    shard.unlink()
    want = rf'{shard}: shard listed in manifest\.json is missing\.'
  with pytest.raises(grow_io.GrowDataError) as e:
    grow_io.verify_round(str(tmp_path))
  assert re.fullmatch(want, _one_line(e)), _one_line(e)


@pytest.mark.parametrize('content', ['{"shards": [', '[1, 2]', ''], ids=['cut', 'list', 'empty'])
def test_malformed_manifest(tmp_path, content):
  _round(tmp_path)
  (tmp_path / grow_io.MANIFEST).write_text(content)
  with pytest.raises(grow_io.GrowDataError) as e:
    grow_io.verify_round(str(tmp_path))
  assert re.fullmatch(
    rf'{tmp_path / grow_io.MANIFEST}: not a Grow manifest \(.+\)\. Delete it and rerun Grow for '
    r'this round \(its finished shards are kept\)\.',
    _one_line(e),
  )
  (tmp_path / grow_io.MANIFEST).unlink()
  with pytest.raises(grow_io.GrowDataError, match='no Grow manifest.*run --run_mode=grow'):
    grow_io.verify_round(str(tmp_path))


def test_over_length_sequences_are_counted_and_reported(tmp_path, capsys):
  stats = {'num_truncated_samples': 2, 'num_dropped_samples': 1, 'num_truncated_references': 1}
  _round(
    tmp_path,
    stats=stats,
    grow_config={'target_length': 12},
    sampled_sequences=4,
    **grow_io.truncation_totals([stats, stats]),
  )
  manifest = grow_io.verify_round(str(tmp_path))
  assert [manifest[k] for k in grow_io.TRUNCATION_COUNTS] == [4, 2, 2]  # Sums of the sidecars.
  line = (
    'length cap: 4 of 6 samples reached target_length=12 without EOS (2 of them dropped) and 2 '
    'human references were stored truncated; raise --gin.TARGET_LENGTH to keep them whole.'
  )
  assert grow_io.describe_length_cap(manifest) == line
  summary = inspect_round.inspect(round_dir=str(tmp_path))
  assert summary['length_cap'] == line and line in capsys.readouterr().out.splitlines()
  # A round where nothing hit the cap reports nothing.
  assert grow_io.describe_length_cap({k: 0 for k in grow_io.TRUNCATION_COUNTS}) is None


# ------------------------------------------------- MODEL_DIR: permissions, disk, lock


def test_unwritable_model_dir(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a folder')
  model_dir = blocker / 'run'
  msg = run_main(_report_argv(model_dir))
  assert re.fullmatch(
    rf'error: MODEL_DIR {model_dir} cannot be written \(Not a directory: .*\)\. Give a MODEL_DIR '
    r'this user can create and write \(check the path, its permissions and free space\)\.',
    msg,
  )
  assert os.listdir(tmp_path) == ['a_file'] and blocker.read_text() == 'not a folder'


def test_read_only_model_dir(tmp_path, monkeypatch):
  # A read-only parent, simulated (root, as in CI, writes through permission bits).
  parent = tmp_path / 'ro'
  parent.mkdir()
  makedirs = os.makedirs

  def denied(path, *args, **kwargs):
    if str(path).startswith(str(parent)):
      raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
    return makedirs(path, *args, **kwargs)

  monkeypatch.setattr(os, 'makedirs', denied)
  msg = run_main(_report_argv(parent / 'run'))
  monkeypatch.undo()
  assert msg.startswith(f'error: MODEL_DIR {parent / "run"} cannot be written (Permission denied')
  assert os.listdir(parent) == []


@pytest.mark.parametrize('where', ['fsync', 'replace'])
def test_full_disk_keeps_the_old_file(tmp_path, monkeypatch, where):
  path = str(tmp_path / 'eval' / 'result.json')
  files.write_json(path, {'step': 1})
  monkeypatch.setattr(os, where, _disk_full)
  with pytest.raises(files.DiskFullError) as e:
    files.write_json(path, {'step': 2, 'big': list(range(1000))})
  monkeypatch.undo()
  assert re.fullmatch(
    rf'{path}: no space left on the device \(No space left on device\); the file was not written '
    r'and its previous version, if any, is kept\. Free some space \(or use a MODEL_DIR on a '
    r'larger disk\) and run the same command again\.',
    _one_line(e),
  )
  assert isinstance(e.value, errors.UserInputError) and e.value.__cause__.errno == errno.ENOSPC
  assert json.loads(open(path).read()) == {'step': 1}
  assert not _leftovers(tmp_path) and os.listdir(tmp_path / 'eval') == ['result.json']


def test_full_disk_during_a_shard_write(tmp_path, monkeypatch):
  _round(tmp_path)
  before = _snapshot(tmp_path)
  monkeypatch.setattr(os, 'fsync', _disk_full)
  with pytest.raises(files.DiskFullError, match=r'part-00001-of-00002\.tfrecord: no space left'):
    grow_io.write_shard(str(tmp_path), 1, 2, [_record(9, n) for n in range(5)])
  monkeypatch.undo()
  assert _snapshot(tmp_path) == before  # Old shard and sidecar intact, nothing new.
  grow_io.verify_round(str(tmp_path))


def test_full_disk_while_taking_the_lock(tmp_path, monkeypatch):
  model_dir = tmp_path / 'run'
  model_dir.mkdir()
  monkeypatch.setattr(os, 'fsync', _disk_full)
  with pytest.raises(run_lock.ModelDirNotWritableError) as e:
    run_lock.acquire(str(model_dir), 'rest')
  monkeypatch.undo()
  assert _one_line(e).startswith(
    f'MODEL_DIR {model_dir} cannot be written (No space left on device'
  )
  assert os.listdir(model_dir) == []  # No half-written lock to block the next run.
  run_lock.release(str(model_dir), run_lock.acquire(str(model_dir), 'rest'))


def test_two_runs_on_the_same_model_dir(tmp_path):
  model_dir = tmp_path / 'run'
  with run_lock.hold(str(model_dir), 'rest') as held:
    before = _snapshot(model_dir)
    msg = run_main(_report_argv(model_dir))
    assert _snapshot(model_dir) == before  # The second run wrote nothing.
  assert re.fullmatch(
    rf'error: MODEL_DIR {model_dir} is in use by run_mode=rest on host .*, pid {os.getpid()} '
    r'\(started .*\)\. Wait for that run to end or use another MODEL_DIR; if pid \d+ is not a '
    rf'rest_jax run, delete {model_dir / ".lock"}\.',
    msg,
  )
  assert held['pid'] == os.getpid() and not model_dir.exists()  # Released, and left no folder.


def test_config_changed_between_restarts(tmp_path):
  model_dir = str(tmp_path)
  config = {'num_grow_rounds': 1, 'loss': 'bc'}
  run = rest_state.RunState(model_dir, rest_phases.plan(1, 2, bc=True, rm=False), config)
  run.start('bc')
  run.finish('bc', 1.0)
  before = _snapshot(tmp_path)
  with pytest.raises(errors.UserInputError) as e:
    rest_state.RunState(
      model_dir, rest_phases.plan(1, 2, bc=True, rm=False), {**config, 'loss': 'gold'}
    )
  assert re.fullmatch(
    rf"{tmp_path / rest_state.STATE_FILE} was written by a run with config .*'loss': 'bc'.* "
    r"and phases \['bc'\] done, which this config \(.*'loss': 'gold'.*\) does not continue \(only "
    r'NUM_GROW_ROUNDS may change between restarts\)\. Use a new MODEL_DIR\.',
    _one_line(e),
  )
  assert _snapshot(tmp_path) == before  # rest_state.json untouched.


# ------------------------------------------------------------- rewards and sampling


def test_non_finite_rewards():
  verifier = reward_fns.Verifier(fn=lambda s, c, r: float('nan') if c == 'b' else 1.0, name='parse')
  with pytest.raises(errors.UserInputError) as e:
    verifier(['x', 'y', 'z'], ['a', 'b', 'b'])
  assert re.fullmatch(
    r"Reward 'parse' returned a non-finite value \(nan\) for source index 1 \(2 such rows\)\. "
    r'Make it return finite numbers \(a verifier: map failures to 0; a learned reward: check or '
    r'retrain its checkpoint\)\.',
    _one_line(e),
  )
  with pytest.raises(errors.UserInputError) as e:
    reward_fns.Rewards(reward=np.array([0.5, np.inf]), raw=np.array([0.5, 1.0]))
  assert re.fullmatch(
    r'Rewards: row 1 has reward=inf raw=1\.0; rewards must be finite and in \[0, 1\] \(1 bad '
    r'rows\)\. Fix the reward source that returned them\.',
    _one_line(e),
  )


def test_threshold_that_keeps_nothing():
  rewards_ = np.array([0.2, 0.5, 0.7, 0.4])
  with pytest.raises(filtering.FilterTooStrictError) as e:
    filtering.apply_schedule(filtering.FixedThresholds((0.9,)), 0, rewards_, [0, 0, 1, 1])
  assert re.fullmatch(
    r'Filter step 0 \(reward > 0\.9\) kept 0 of 4 records, fewer than '
    r'MinKeptPolicy\.min_examples=1\. Reward statistics: .*\. Pick a lower threshold or '
    r"percentile from these statistics, or set MinKeptPolicy\.on_too_few='percentile' to fall "
    r'back to a global percentile\.',
    _one_line(e),
  )
  assert e.value.kept == 0 and e.value.step == 0


@pytest.mark.parametrize('num_samples', [0, -2])
def test_zero_samples_per_source(num_samples):
  with pytest.raises(errors.UserInputError) as e:
    grow.SamplingConfig(num_samples=num_samples)
  assert _one_line(e) == (
    f'SamplingConfig.num_samples={num_samples}: Grow needs at least 1 sample per source (the '
    'paper uses 8); set --gin.NUM_SAMPLES or SamplingConfig.num_samples.'
  )


@pytest.mark.parametrize('temperature', [-0.5, float('nan')])
def test_negative_temperature(temperature):
  with pytest.raises(errors.UserInputError) as e:
    grow.SamplingConfig(temperature=temperature)
  assert _one_line(e) == (
    f'SamplingConfig.temperature={temperature}: set --gin.TEMPERATURE to a finite value >= 0 '
    '(0 is greedy; the paper samples at 0.8).'
  )
  grow.SamplingConfig(temperature=0.0)  # Greedy is fine.
