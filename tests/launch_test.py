"""The launch scripts in launch/: the commands they print with --print-only, how they forward and
quote arguments, and runs against stand-ins for python3, gcloud and srun (no network, no cluster,
no training)."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL = os.path.join(REPO, 'launch', 'local_cpu.sh')
TPU = os.path.join(REPO, 'launch', 'tpu_pod.sh')
SLURM = os.path.join(REPO, 'launch', 'gpu_slurm.sbatch')

# Environment variables the scripts read: cleared so that the tests see the defaults (conftest.py
# sets JAX_PLATFORMS and XLA_FLAGS for the test session).
SCRIPT_ENV = (
  'RUN_MODE GIN_FILE MODEL_DIR PORT DEVICES_PER_PROCESS PYTHON JAX_PLATFORMS XLA_FLAGS TPU_NAME '
  'ZONE PROJECT ACCELERATOR_TYPE RUNTIME_VERSION MOUNT_ROOT REMOTE_DIR REST_JAX_DIR SRUN_ARGS '
  'SLURM_JOB_ID '
  'SLURM_SUBMIT_DIR'
).split()

# rest_jax.main flags as a user types them (one list element = one shell word); each must reach
# rest_jax.main unchanged, whatever the quotes, spaces and shell metacharacters.
FORWARDED = [
  '--gin.TRAIN_STEPS=5',
  "--gin.NAME='a b'",
  "--gin.TEXT='it''s \"quoted\" $HOME `x` \\ ! * ; && |'",
  '--gin_bindings',
  'bc.train.seed = 3',
  '--gin_bindings=NUM_SAMPLES = 4',
  '--gin_search_paths=/tmp/x,/tmp/y',
  '--dry_run',
  '-v',
  '0',
]
# After `--` anything goes through, `--` itself excepted.
AFTER_DASHES = ['--', '--future_flag=a b', '']


def clean_env(**overrides):
  env = {k: v for k, v in os.environ.items() if k not in SCRIPT_ENV}
  env.update(overrides)
  return env


def run(script, *args, env=None, cwd=None, check=True):
  """Runs `bash script args...`; returns the CompletedProcess (text)."""
  proc = subprocess.run(
    ['bash', script, *args],
    env=clean_env() if env is None else env,
    cwd=cwd or REPO,
    capture_output=True,
    text=True,
    timeout=60,
  )
  if check:
    assert proc.returncode == 0, proc.stderr
  return proc


def printed(script, *args, **kwargs):
  """The commands `script --print-only args...` prints, each split into words by shlex."""
  out = run(script, '--print-only', *args, **kwargs).stdout
  return [shlex.split(line) for line in out.splitlines()]


def split_env(words):
  """['env', 'A=1', 'B=2', 'cmd', ...] -> ({'A': '1', 'B': '2'}, ['cmd', ...])."""
  assert words[0] == 'env'
  assignments = {}
  i = 1
  while re.fullmatch(r'[A-Z_]+=.*', words[i]):
    name, value = words[i].split('=', 1)
    assignments[name] = value
    i += 1
  return assignments, words[i:]


def remote_command(gcloud_words):
  """The --command of a printed gcloud ssh command."""
  (command,) = [w[len('--command=') :] for w in gcloud_words if w.startswith('--command=')]
  return command


def remote_words(gcloud_words):
  """The words of an ssh --command as the worker's shell parses it: a second shell pass."""
  return shlex.split(remote_command(gcloud_words))


def write_executable(path, text):
  with open(path, 'w') as f:
    f.write(text)
  os.chmod(path, 0o755)


# A stand-in for python3: records its arguments and environment as JSON in $RECORD_DIR (one file
# per call), optionally fails (exit 3 for --process_id=$FAIL_ID, once $STARTED calls have recorded)
# or sleeps ($SLEEP seconds).
RECORDER = textwrap.dedent(
  f"""\
  #!{sys.executable}
  import json, os, sys, time
  argv = sys.argv[1:]
  pid = next((a.split('=', 1)[1] for a in argv if a.startswith('--process_id=')), 'x')
  record = {{
    'argv': argv,
    'cwd': os.getcwd(),
    'pid': os.getpid(),
    'env': {{k: os.environ.get(k) for k in ('JAX_PLATFORMS', 'XLA_FLAGS')}},
  }}
  name = 'pip' if argv[:2] == ['-m', 'pip'] else 'main_' + pid
  with open(os.path.join(os.environ['RECORD_DIR'], name + '.json'), 'w') as f:
    json.dump(record, f)
  if os.environ.get('FAIL_ID') == pid:  # fail once the other processes have started
    deadline = time.time() + 20
    while len(os.listdir(os.environ['RECORD_DIR'])) < int(os.environ['STARTED']):
      if time.time() > deadline:
        break
      time.sleep(0.05)
    sys.exit(3)
  time.sleep(float(os.environ.get('SLEEP', '0')))
  """
)


def read_record(record_dir, name):
  with open(os.path.join(record_dir, name + '.json')) as f:
    return json.load(f)


@pytest.fixture
def recorder(tmp_path):
  """(path of the python3 stand-in, folder of its records)."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  write_executable(bin_dir / 'python3', RECORDER)
  records = tmp_path / 'records'
  records.mkdir()
  return str(bin_dir / 'python3'), str(records)


# --- quoting ------------------------------------------------------------------------------------

NASTY = [
  '',
  'plain',
  'a b',
  "it's",
  '"double"',
  "--gin.X='a b'",
  '$HOME `id` $(id) \\ ! * ? ~ ; & | < > # %',
  'mixed \' and " and $',
  'new\nline\ttab',
  'ünïcödé',
]


def test_quote_round_trips_through_shlex_and_bash():
  line = subprocess.run(
    ['bash', '-c', 'source launch/common.sh && quote "$@"', 'quote', *NASTY],
    cwd=REPO,
    capture_output=True,
    text=True,
    check=True,
  ).stdout
  assert shlex.split(line) == NASTY
  parsed = subprocess.run(
    ['bash', '-c', 'printf "%s\\0" ' + line], capture_output=True, text=True, check=True
  ).stdout
  assert parsed.split('\0')[:-1] == NASTY


def test_quote_prints_readme_style_gin_strings():
  line = subprocess.run(
    ['bash', '-c', 'source launch/common.sh && quote "$@"', 'quote', "--gin.MODEL_DIR='/tmp/a b'"],
    cwd=REPO,
    capture_output=True,
    text=True,
    check=True,
  ).stdout
  assert line == '"--gin.MODEL_DIR=\'/tmp/a b\'"\n'


# --- all scripts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
  'script, documented',
  [
    (LOCAL, ['--run_mode', '--gin_file', '--model_dir', '--num_processes', '--port',
             '--devices_per_process', '--print-only', 'RUN_MODE', 'GIN_FILE', 'MODEL_DIR', 'PORT',
             'DEVICES_PER_PROCESS', 'PYTHON', 'JAX_PLATFORMS', 'XLA_FLAGS']),
    (TPU, ['--tpu', '--zone', '--project', '--accelerator-type', '--runtime-version', '--create',
           '--skip-setup', '--run_mode', '--gin_file', '--model_dir', '--mount-root',
           '--remote-dir', '--python', '--print-only', 'TPU_NAME', 'ZONE', 'PROJECT',
           'ACCELERATOR_TYPE', 'RUNTIME_VERSION', 'MOUNT_ROOT', 'REMOTE_DIR', 'gs://', 'gcsfuse',
           '~/gcs']),
    (SLURM, ['--run_mode', '--gin_file', '--model_dir', '--print-only', 'RUN_MODE', 'GIN_FILE',
             'MODEL_DIR', 'PYTHON', 'REST_JAX_DIR', 'SRUN_ARGS', 'sbatch']),
  ],
)  # fmt: skip
def test_help_documents_every_option(script, documented):
  for flag in ('--help', '-h'):
    proc = run(script, flag, '--gin.X=1')
    assert proc.stdout.startswith('Runs rest_jax')
    for word in [*documented, '--gin.NAME=VALUE', '--']:
      assert word in proc.stdout, (script, word)
    assert not any(line.startswith(('#SBATCH', 'set -')) for line in proc.stdout.splitlines())


@pytest.mark.parametrize('script', [LOCAL, TPU, SLURM])
@pytest.mark.parametrize(
  'args, message',
  [
    (['--foo'], 'unknown option: --foo'),
    (['--gin_file'], '--gin_file needs a value'),
    (['--print-only=yes'], '--print-only takes no value'),
    (['positional'], 'unexpected argument: positional'),
    (["--model_dir=/tmp/it's"], 'MODEL_DIR must be'),
  ],
)
def test_bad_arguments_fail_with_one_clear_line(script, args, message):
  required = ['--tpu=t', '--model_dir=gs://b/r', '--skip-setup'] if script == TPU else []
  proc = run(script, '--print-only', *required, *args, check=False)
  assert proc.returncode == 2
  assert proc.stdout == ''
  assert proc.stderr.startswith('error: ' + message), proc.stderr


# --- launch/local_cpu.sh ------------------------------------------------------------------------


def test_local_default_is_the_readme_main_job():
  (words,) = printed(LOCAL)
  env, cmd = split_env(words)
  assert env == {'JAX_PLATFORMS': 'cpu'}
  assert cmd[:-1] == [
    'python3',
    '-m',
    'rest_jax.main',
    '--run_mode=rest',
    '--gin_file=gin/rest/demo_cpu.gin',
  ]
  assert re.fullmatch(r"--gin.MODEL_DIR='/tmp/rest_jax/\d{4}_\d{4}'", cmd[-1])
  assert '--multiprocess' not in cmd


def test_local_env_vars_and_options():
  env = clean_env(RUN_MODE='bc', GIN_FILE='gin/bc/tatoeba_en_de_cpu.gin', MODEL_DIR='/tmp/a b')
  (words,) = printed(LOCAL, env=env)
  assert split_env(words)[1][3:] == [
    '--run_mode=bc',
    '--gin_file=gin/bc/tatoeba_en_de_cpu.gin',
    "--gin.MODEL_DIR='/tmp/a b'",
  ]
  # Options beat env vars; --gin_file given twice replaces the default with both, in order.
  (words,) = printed(
    LOCAL,
    '--run-mode',
    'eval',
    '--gin_file=a.gin',
    '--gin_file',
    'b.gin',
    '--model_dir=/x',
    env=env,
  )
  assert split_env(words)[1][3:] == [
    '--run_mode=eval',
    '--gin_file=a.gin',
    '--gin_file=b.gin',
    "--gin.MODEL_DIR='/x'",
  ]


def test_local_forwards_arguments_verbatim():
  (words,) = printed(LOCAL, '--model_dir=/tmp/m', *FORWARDED, *AFTER_DASHES)
  cmd = split_env(words)[1]
  assert cmd[3:6] == [
    '--run_mode=rest',
    '--gin_file=gin/rest/demo_cpu.gin',
    "--gin.MODEL_DIR='/tmp/m'",
  ]
  assert cmd[6:] == FORWARDED + AFTER_DASHES[1:]
  # A forwarded MODEL_DIR replaces the script's own.
  (words,) = printed(LOCAL, "--gin.MODEL_DIR='/tmp/a b'")
  cmd = split_env(words)[1]
  assert [w for w in cmd if 'MODEL_DIR' in w] == ["--gin.MODEL_DIR='/tmp/a b'"]


def test_local_two_processes_share_a_coordinator():
  lines = printed(LOCAL, '--num_processes=2', '--model_dir=/tmp/m', "--gin.NAME='a b'")
  assert len(lines) == 2
  coordinators = set()
  for process_id, words in enumerate(lines):
    env, cmd = split_env(words)
    assert env == {'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': '--xla_force_host_platform_device_count=1'}
    assert cmd[3:7] == ['--multiprocess', cmd[4], '--num_processes=2', f'--process_id={process_id}']
    assert re.fullmatch(r'--coordinator_address=localhost:\d+', cmd[4])
    coordinators.add(cmd[4])
    assert cmd[7:] == [
      '--run_mode=rest',
      '--gin_file=gin/rest/demo_cpu.gin',
      "--gin.MODEL_DIR='/tmp/m'",
      "--gin.NAME='a b'",
    ]
  assert len(coordinators) == 1
  env = clean_env(DEVICES_PER_PROCESS='4', PORT='4321', XLA_FLAGS='--xla_dump_to=/tmp/d')
  for words in printed(LOCAL, '--num_processes', '3', env=env):
    env_vars, cmd = split_env(words)
    assert env_vars['XLA_FLAGS'] == '--xla_dump_to=/tmp/d --xla_force_host_platform_device_count=4'
    assert '--coordinator_address=localhost:4321' in cmd


def test_local_rejects_what_it_sets_itself():
  for args in (['--num_processes=0'], ['--num_processes=2', '--process_id=1']):
    proc = run(LOCAL, '--print-only', *args, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith('error: '), proc.stderr


@pytest.mark.parametrize('num_processes', [1, 2])
def test_local_runs_what_it_prints(recorder, num_processes):
  python, records = recorder
  env = clean_env(PYTHON=python, RECORD_DIR=records, PORT='23456', MODEL_DIR='/tmp/a b')
  args = [f'--num_processes={num_processes}', *FORWARDED, *AFTER_DASHES]
  lines = printed(LOCAL, *args, env=env)
  run(LOCAL, *args, env=env)
  for process_id, words in enumerate(lines):
    env_vars, cmd = split_env(words)
    record = read_record(records, 'main_' + (str(process_id) if num_processes > 1 else 'x'))
    assert cmd[0] == python
    assert record['argv'] == cmd[1:]
    assert record['cwd'] == REPO
    assert record['env'] == {k: env_vars.get(k) for k in ('JAX_PLATFORMS', 'XLA_FLAGS')}


def test_local_failure_stops_the_other_processes(recorder):
  python, records = recorder
  env = clean_env(
    PYTHON=python, RECORD_DIR=records, FAIL_ID='1', STARTED='2', SLEEP='60', MODEL_DIR='/tmp/m'
  )
  start = time.monotonic()
  proc = run(LOCAL, '--num_processes=2', env=env, check=False)
  assert proc.returncode == 3
  assert time.monotonic() - start < 30
  assert 'process 1 exited with status 3' in proc.stderr
  survivor = read_record(records, 'main_0')['pid']
  with pytest.raises(ProcessLookupError):
    os.kill(survivor, 0)


# --- launch/tpu_pod.sh --------------------------------------------------------------------------

TPU_ARGS = ['--tpu=rest-v4', '--zone=us-central2-b', '--project=my-proj', '--model_dir=gs://b/r']
WHERE = ['--zone=us-central2-b', '--project=my-proj']
TPU_VM = ['gcloud', 'compute', 'tpus', 'tpu-vm']
# The setup step's gcsfuse install and the run's mount of bucket b, for a gs://b/... model dir: both
# skipped where already done.
INSTALL_GCSFUSE = (
  '{ command -v gcsfuse >/dev/null || { echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc]'
  ' https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -c -s) main"'
  ' | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null'
  ' && curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg'
  ' | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null'
  ' && sudo apt-get update -q && sudo apt-get install -y -q gcsfuse; }; } && '
)
MOUNT_B = (
  'GCS_MOUNT=$HOME/gcs/b && { mountpoint -q "$GCS_MOUNT" ||'
  ' { mkdir -p "$GCS_MOUNT" && gcsfuse --implicit-dirs b "$GCS_MOUNT"; }; } && '
)


@pytest.fixture
def tpu_repo(tmp_path):
  """A git checkout holding launch/ and a tiny package: one committed file with an uncommitted
  change (copied), one untracked file (not copied)."""
  repo = tmp_path / 'repo'
  shutil.copytree(os.path.join(REPO, 'launch'), repo / 'launch')
  (repo / 'rest_jax').mkdir()
  (repo / 'rest_jax' / '__init__.py').write_text('committed\n')
  git = ['git', '-c', 'user.name=t', '-c', 'user.email=t@t', '-c', 'commit.gpgsign=false']
  subprocess.run([*git, 'init', '-q'], cwd=repo, check=True)
  subprocess.run([*git, 'add', '.'], cwd=repo, check=True)
  subprocess.run([*git, 'commit', '-q', '-m', 'init'], cwd=repo, check=True)
  (repo / 'rest_jax' / '__init__.py').write_text('uncommitted change\n')
  (repo / 'untracked.txt').write_text('not copied\n')
  return str(repo / 'launch' / 'tpu_pod.sh')


def test_tpu_print_only_lists_every_step(tpu_repo):
  lines = printed(tpu_repo, *TPU_ARGS, '--create', '--accelerator-type=v4-8', *FORWARDED)
  describe_or_create, archive, scp, install, launch = lines
  bar = describe_or_create.index('||')
  assert describe_or_create[:bar] == [*TPU_VM, 'describe', 'rest-v4', *WHERE, '>/dev/null', '2>&1']
  assert describe_or_create[bar + 1 :] == [
    *TPU_VM,
    'create',
    'rest-v4',
    *WHERE,
    '--accelerator-type=v4-8',
    '--version=tpu-ubuntu2204-base',
  ]
  assert archive[:5] == ['git', 'archive', '--format=tar.gz', '-o', archive[4]]
  assert scp == [*TPU_VM, 'scp', archive[4], 'rest-v4:rest_jax.tar.gz', '--worker=all', *WHERE]
  assert install[:-1] == [*TPU_VM, 'ssh', 'rest-v4', '--worker=all', *WHERE]
  assert remote_command(install) == INSTALL_GCSFUSE + (
    'mkdir -p rest_jax && tar -xzf rest_jax.tar.gz -C rest_jax && rm rest_jax.tar.gz'
    ' && cd rest_jax && python3 -m pip install -q -e ".[tpu]"'
  )
  for words in (scp, install, launch):
    assert '--worker=all' in words and all(w in words for w in WHERE)
  # The run mounts the bucket (unless mounted) and gets the mount path as its MODEL_DIR.
  assert remote_command(launch).startswith(MOUNT_B + 'cd rest_jax && python3 -m rest_jax.main ')
  words = remote_words(launch)
  assert words[words.index('cd') :] == [
    'cd',
    'rest_jax',
    '&&',
    'python3',
    '-m',
    'rest_jax.main',
    '--multiprocess',
    '--run_mode=rest',
    '--gin_file=gin/rest/tatoeba_en_de_gpu.gin',
    "--gin.MODEL_DIR='$GCS_MOUNT/r'",
    *FORWARDED,
  ]


def test_tpu_mount_root_and_bucket_paths(tpu_repo):
  def launch(*args, **kwargs):
    return remote_command(printed(tpu_repo, '--tpu=t', '--skip-setup', *args, **kwargs)[-1])

  assert launch('--model_dir=gs://b') == (
    MOUNT_B + 'cd rest_jax && python3 -m rest_jax.main --multiprocess --run_mode=rest'
    ' --gin_file=gin/rest/tatoeba_en_de_gpu.gin "--gin.MODEL_DIR=\'$GCS_MOUNT\'"'
  )
  for root, mount_point in [
    ('~', '$HOME/my-b.1'),
    ('~/m/', '$HOME/m/my-b.1'),
    ('/mnt/gcs', '/mnt/gcs/my-b.1'),
    ('mnt', '$HOME/mnt/my-b.1'),
  ]:
    command = launch('--model_dir=gs://my-b.1/x/y', f'--mount-root={root}')
    assert command.startswith(f'GCS_MOUNT={mount_point} && ')
    assert '"--gin.MODEL_DIR=\'$GCS_MOUNT/x/y\'"' in command
  command = launch(env=clean_env(MOUNT_ROOT='/m', MODEL_DIR='gs://b/r'))
  assert command.startswith('GCS_MOUNT=/m/b && ')
  for args, message in [
    (['--model_dir=gs://My_Bucket/r'], '--model_dir=gs://My_Bucket/r: not a gs://BUCKET/DIR'),
    (['--model_dir=gs:///r'], '--model_dir=gs:///r: not a gs://BUCKET/DIR'),
    (['--model_dir=s3://b/r'], '--model_dir=s3://b/r: give gs://BUCKET/DIR'),
    (['--model_dir=gs://b/r', '--mount-root=/a b'], '--mount-root may hold only'),
    (['--model_dir=gs://b/r', '--mount-root=a/~'], '--mount-root may hold only'),
    (["--gin.MODEL_DIR='gs://b/r'"], 'rest_jax needs a file-system path'),
  ]:
    proc = run(tpu_repo, '--print-only', '--tpu=t', '--skip-setup', *args, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith('error: ' + message), proc.stderr


def test_tpu_creates_only_with_create_and_skips_setup(tpu_repo):
  lines = printed(tpu_repo, *TPU_ARGS)
  assert len(lines) == 4
  assert not any('create' in words or 'describe' in words for words in lines)
  (launch,) = printed(tpu_repo, *TPU_ARGS, '--skip-setup')
  assert launch[:7] == [*TPU_VM, 'ssh', 'rest-v4', '--worker=all']
  lines = printed(tpu_repo, *TPU_ARGS, '--skip-setup', '--create')
  assert len(lines) == 2 and 'create' in lines[0]


def test_tpu_options_env_and_quoting_through_two_shells(tpu_repo):
  env = clean_env(
    TPU_NAME='from-env', ZONE='europe-west4-a', RUN_MODE='bc', GIN_FILE='gin/bc/x.gin', PYTHON='py3'
  )
  (launch,) = printed(
    tpu_repo,
    '--skip-setup',
    '--remote-dir=/opt/code',
    "--gin.MODEL_DIR='/nfs/a b'",
    *FORWARDED,
    *AFTER_DASHES,
    env=env,
  )
  assert launch[:8] == [*TPU_VM, 'ssh', 'from-env', '--worker=all', '--zone=europe-west4-a']
  assert '--project' not in ' '.join(launch[:-1])
  assert remote_words(launch) == [
    'cd',
    '/opt/code',
    '&&',
    'py3',
    '-m',
    'rest_jax.main',
    '--multiprocess',
    '--run_mode=bc',
    '--gin_file=gin/bc/x.gin',
    "--gin.MODEL_DIR='/nfs/a b'",
    *FORWARDED,
    *AFTER_DASHES[1:],
  ]


@pytest.mark.parametrize(
  'accelerator, version',
  [('v4-32', 'tpu-ubuntu2204-base'), ('v5litepod-16', 'v2-alpha-tpuv5-lite'),
   ('v5p-8', 'v2-alpha-tpuv5'), ('v6e-8', 'v2-alpha-tpuv6e')],
)  # fmt: skip
def test_tpu_runtime_version_follows_the_accelerator(tpu_repo, accelerator, version):
  lines = printed(
    tpu_repo, *TPU_ARGS, '--skip-setup', '--create', f'--accelerator-type={accelerator}'
  )
  assert f'--version={version}' in lines[0]


def test_tpu_requires_a_name_and_a_model_dir(tpu_repo):
  proc = run(tpu_repo, '--print-only', '--model_dir=gs://b/r', check=False)
  assert proc.returncode == 2 and proc.stderr.startswith('error: --tpu=NAME')
  proc = run(tpu_repo, '--print-only', '--tpu=t', check=False)
  assert proc.returncode == 2 and proc.stderr.startswith('error: --model_dir=gs://')
  proc = run(tpu_repo, '--print-only', '--tpu=t', '--skip-setup', '--model_dir=/local')
  assert proc.stderr.startswith(
    'warning: MODEL_DIR=/local is not a gs:// path: it must be a shared file system'
  )
  (launch,) = printed(tpu_repo, '--tpu=t', '--skip-setup', '--model_dir=/nfs/a b')
  assert remote_command(launch).startswith('cd rest_jax && ')
  assert remote_words(launch)[-1] == "--gin.MODEL_DIR='/nfs/a b'"
  assert 'gcsfuse' not in ' '.join(printed(tpu_repo, '--tpu=t', '--model_dir=/nfs/x')[-2])


# A stand-in for gcloud: logs each call as a JSON line; `describe` fails unless $TPU_EXISTS;
# `scp` copies into $WORKER_HOME; `ssh` runs --command with bash there, as HOME, with $WORKER_PATH
# first on PATH (the worker's python3, sudo, gcsfuse, ...).
FAKE_GCLOUD = textwrap.dedent(
  f"""\
  #!{sys.executable}
  import json, os, shutil, subprocess, sys
  argv = sys.argv[1:]
  with open(os.environ['GCLOUD_LOG'], 'a') as f:
    f.write(json.dumps(argv) + '\\n')
  verb = argv[3]
  if verb == 'describe':
    sys.exit(0 if os.environ.get('TPU_EXISTS') else 1)
  if verb == 'scp':
    shutil.copy(argv[4], os.path.join(os.environ['WORKER_HOME'], argv[5].split(':', 1)[1]))
  if verb == 'ssh':
    (command,) = [a[len('--command='):] for a in argv if a.startswith('--command=')]
    env = dict(
      os.environ,
      HOME=os.environ['WORKER_HOME'],
      PATH=os.environ['WORKER_PATH'] + ':' + os.environ['PATH'],
    )
    proc = subprocess.run(['bash', '-c', command], cwd=os.environ['WORKER_HOME'], env=env)
    sys.exit(proc.returncode)
  """
)


# The worker's tools, logging each call as a JSON line to $WORKER_LOG: sudo (runs nothing; its
# `apt-get install ... gcsfuse` puts the gcsfuse stand-in in $WORKER_BIN), lsb_release, curl;
# gcsfuse marks its mount point mounted, which `mountpoint -q` then reports.
FAKE_TOOL = textwrap.dedent(
  f"""\
  #!{sys.executable}
  import json, os, shutil, sys
  tool, argv = os.path.basename(sys.argv[0]), sys.argv[1:]
  stdin = sys.stdin.read() if tool == 'sudo' and argv[0] == 'tee' else None
  if tool != 'mountpoint':
    with open(os.environ['WORKER_LOG'], 'a') as f:
      f.write(json.dumps([tool, *argv, *([stdin] if stdin else [])]) + '\\n')
  if tool == 'sudo' and argv[:1] == ['apt-get'] and 'install' in argv and 'gcsfuse' in argv:
    shutil.copy(sys.argv[0], os.path.join(os.environ['WORKER_BIN'], 'gcsfuse'))
  if tool == 'lsb_release':
    print('jammy')
  if tool == 'curl':
    print('KEY')
  if tool == 'gcsfuse':
    open(os.path.join(argv[-1], '.mounted'), 'w').close()
  if tool == 'mountpoint':
    sys.exit(0 if os.path.exists(os.path.join(argv[-1], '.mounted')) else 1)
  """
)


@pytest.mark.parametrize(
  'exists, model_dir',
  [(False, '/r'), (True, '/run 1/$x "q" `id` ! * ;'), (False, '')],
)
def test_tpu_runs_what_it_prints_on_a_fake_worker(tpu_repo, recorder, tmp_path, exists, model_dir):
  python, records = recorder
  bin_dir = tmp_path / 'gcloud_bin'
  bin_dir.mkdir()
  write_executable(bin_dir / 'gcloud', FAKE_GCLOUD)
  worker_bin = tmp_path / 'worker_bin'
  worker_bin.mkdir()
  for tool in ('sudo', 'lsb_release', 'curl', 'mountpoint'):
    write_executable(worker_bin / tool, FAKE_TOOL)
  home = tmp_path / 'worker_home'
  home.mkdir()
  log = tmp_path / 'gcloud.jsonl'
  worker_log = tmp_path / 'worker.jsonl'
  env = clean_env(
    PATH=f'{bin_dir}:{os.environ["PATH"]}',
    GCLOUD_LOG=str(log),
    WORKER_HOME=str(home),
    WORKER_PATH=f'{worker_bin}:{os.path.dirname(python)}',
    WORKER_BIN=str(worker_bin),
    WORKER_LOG=str(worker_log),
    RECORD_DIR=records,
    TMPDIR=str(tmp_path),
  )
  if exists:
    env['TPU_EXISTS'] = '1'
  args = [*TPU_ARGS[:-1], f'--model_dir=gs://b{model_dir}', '--create', *FORWARDED, *AFTER_DASHES]
  lines = printed(tpu_repo, *args, env=env)
  run(tpu_repo, *args, env=env)

  calls = [json.loads(line) for line in log.read_text().splitlines()]
  gcloud_lines = [words for words in lines if words[0] == 'gcloud']
  bar = gcloud_lines[0].index('||')
  describe, create = gcloud_lines[0][1 : bar - 2], gcloud_lines[0][bar + 2 :]
  expected = [describe] + ([] if exists else [create]) + [w[1:] for w in gcloud_lines[1:]]
  assert calls == expected
  # The worker got the working tree's tracked files, uncommitted changes included.
  assert (home / 'rest_jax' / 'rest_jax' / '__init__.py').read_text() == 'uncommitted change\n'
  assert not (home / 'rest_jax' / 'untracked.txt').exists()
  assert not (home / 'rest_jax.tar.gz').exists()
  pip = read_record(records, 'pip')
  assert pip['argv'] == ['-m', 'pip', 'install', '-q', '-e', '.[tpu]']
  assert pip['cwd'] == str(home / 'rest_jax')
  # gcsfuse was installed, then the bucket mounted in the worker's home and given as MODEL_DIR.
  mount_point = home / 'gcs' / 'b'
  keyring = '/usr/share/keyrings/cloud.google.asc'
  assert [json.loads(line) for line in worker_log.read_text().splitlines()] == [
    ['lsb_release', '-c', '-s'],
    [
      'sudo',
      'tee',
      '/etc/apt/sources.list.d/gcsfuse.list',
      f'deb [signed-by={keyring}] https://packages.cloud.google.com/apt gcsfuse-jammy main\n',
    ],
    ['curl', '-fsSL', 'https://packages.cloud.google.com/apt/doc/apt-key.gpg'],
    ['sudo', 'tee', keyring, 'KEY\n'],
    ['sudo', 'apt-get', 'update', '-q'],
    ['sudo', 'apt-get', 'install', '-y', '-q', 'gcsfuse'],
    ['gcsfuse', '--implicit-dirs', 'b', str(mount_point)],
  ]
  main = read_record(records, 'main_x')
  assert main['cwd'] == str(home / 'rest_jax')
  assert main['argv'] == [
    '-m',
    'rest_jax.main',
    '--multiprocess',
    '--run_mode=rest',
    '--gin_file=gin/rest/tatoeba_en_de_gpu.gin',
    f"--gin.MODEL_DIR='{mount_point}{model_dir}'",
    *FORWARDED,
    *AFTER_DASHES[1:],
  ]
  # Again, with --skip-setup: neither installed nor mounted twice, the same MODEL_DIR.
  os.remove(os.path.join(records, 'main_x.json'))
  worker_calls = worker_log.read_text()
  run(tpu_repo, '--skip-setup', *args, env=env)
  assert worker_log.read_text() == worker_calls
  assert read_record(records, 'main_x')['argv'] == main['argv']


# --- launch/gpu_slurm.sbatch --------------------------------------------------------------------


def test_slurm_directives():
  with open(SLURM) as f:
    lines = f.read().splitlines()
  directives = dict(
    line[len('#SBATCH ') :].split('=', 1) for line in lines if line.startswith('#SBATCH')
  )
  assert set(directives) >= {
    '--nodes',
    '--ntasks-per-node',
    '--gres',
    '--cpus-per-task',
    '--time',
    '--output',
  }
  # One process per GPU, and each sees all of its node's GPUs (jax picks GPU SLURM_LOCALID).
  assert directives['--gres'] == 'gpu:' + directives['--ntasks-per-node']
  assert '--gpus-per-task' not in directives
  # sbatch reads directives only up to the first command.
  first_command = next(i for i, line in enumerate(lines) if line and not line.startswith('#'))
  assert max(i for i, line in enumerate(lines) if line.startswith('#SBATCH')) < first_command


def test_slurm_print_only_prints_sbatch_and_srun():
  args = ['--model_dir=/shared/a b', *FORWARDED, *AFTER_DASHES]
  sbatch, srun = printed(SLURM, *args)
  assert sbatch == ['sbatch', 'launch/gpu_slurm.sbatch', *args]
  assert srun == [
    'srun',
    '--kill-on-bad-exit=1',
    'python3',
    '-m',
    'rest_jax.main',
    '--multiprocess',
    '--run_mode=rest',
    '--gin_file=gin/rest/tatoeba_en_de_gpu.gin',
    "--gin.MODEL_DIR='/shared/a b'",
    *FORWARDED,
    *AFTER_DASHES[1:],
  ]
  env = clean_env(RUN_MODE='bc', GIN_FILE='gin/bc/x.gin', SRUN_ARGS='--mpi=none --export=ALL')
  _, srun = printed(SLURM, '--gin_file=a.gin', '--gin.MODEL_DIR="/m"', env=env)
  assert srun[:3] == ['srun', '--kill-on-bad-exit=1', '--mpi=none']
  assert srun[srun.index('rest_jax.main') + 1 :] == [
    '--multiprocess',
    '--run_mode=bc',
    '--gin_file=a.gin',
    '--gin.MODEL_DIR="/m"',
  ]


# A stand-in for srun: records its own options, then runs the command that follows them.
FAKE_SRUN = textwrap.dedent(
  f"""\
  #!{sys.executable}
  import json, os, subprocess, sys
  argv = sys.argv[1:]
  i = next(i for i, a in enumerate(argv) if not a.startswith('-'))
  with open(os.path.join(os.environ['RECORD_DIR'], 'srun.json'), 'w') as f:
    json.dump(argv[:i], f)
  sys.exit(subprocess.run(argv[i:]).returncode)
  """
)


def test_slurm_job_runs_what_it_prints(recorder, tmp_path):
  """As sbatch runs it: a copy in a spool folder, started in the submit folder."""
  python, records = recorder
  bin_dir = os.path.dirname(python)
  write_executable(os.path.join(bin_dir, 'srun'), FAKE_SRUN)
  spool = tmp_path / 'spool'
  spool.mkdir()
  shutil.copy(SLURM, spool / 'slurm_script')
  env = clean_env(
    PATH=f'{bin_dir}:{os.environ["PATH"]}',
    RECORD_DIR=records,
    HOME=str(tmp_path),
    SLURM_JOB_ID='1234',
    SLURM_SUBMIT_DIR=REPO,
  )
  args = [*FORWARDED, *AFTER_DASHES]
  _, srun = printed(str(spool / 'slurm_script'), *args, env=env)
  proc = run(str(spool / 'slurm_script'), *args, env=env, cwd=str(tmp_path))
  assert 'not inside a SLURM job' not in proc.stderr
  assert f"--gin.MODEL_DIR='{tmp_path}/rest_jax_runs/1234'" in srun
  with open(os.path.join(records, 'srun.json')) as f:
    assert json.load(f) == ['--kill-on-bad-exit=1']
  main = read_record(records, 'main_x')
  assert main['argv'] == srun[3:]
  assert main['cwd'] == REPO
