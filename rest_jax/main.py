r"""The rest_jax command line, t5x style.

Usage:
  python -m rest_jax.main --run_mode=bc \
    --gin_file=gin/bc/tatoeba_en_de_cpu.gin \
    --gin.MODEL_DIR="'/tmp/bc'"

Flags:
  --run_mode          which run function to call (see RUN_MODES).
  --gin_file          gin file(s) to parse, in order; repeatable. Relative paths
                      are looked up in the working directory, then in
                      --gin_search_paths, then in the repository's gin/.
  --gin_bindings      extra bindings, parsed after the files; repeatable.
  --gin.NAME=VALUE    shorthand for --gin_bindings='NAME = VALUE'. Strings need
                      inner quotes: --gin.MODEL_DIR="'/tmp/run'".
  --gin_search_paths  comma-separated extra folders to resolve --gin_file and
                      gin `include`s.
  --dry_run           build the run's arguments from the config, print the
                      operative config and exit without running.
  --multiprocess      join a multi-process run (jax.distributed.initialize)
                      before anything else: every process runs this same
                      command. With no other flag the cluster is detected
                      (Cloud TPU VMs, SLURM); elsewhere give the next three.
  --coordinator_address  host:port of process 0 (with --multiprocess).
  --num_processes     number of processes (with --multiprocess).
  --process_id        this process's index, 0..num_processes-1.

A run holds the lock MODEL_DIR/.lock (rest_jax/core/run_lock.py) while it runs: a
second run on the same MODEL_DIR stops at once and names the first.

SIGTERM is a preemption notice (rest_jax/core/preemption.py): the running phase
saves at its next safe point (the next optimizer step, Grow shard or phase
boundary) and the process exits with code 75 and one line on stderr; the same
command resumes.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys

# TensorFlow only feeds data here: silence its C++ start-up chatter (CUDA probes).
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags, logging

from rest_jax import errors, gin_utils
from rest_jax.core import preemption, run_lock

# run_mode -> (module, function). Imported lazily so that --help is fast.
RUN_MODES = {
  'bc': ('rest_jax.runs.bc', 'train'),
  'eval': ('rest_jax.runs.evaluation', 'evaluate'),
  'grow': ('rest_jax.runs.grow', 'grow'),
  'inspect': ('rest_jax.runs.inspect_round', 'inspect'),
  'train_rm': ('rest_jax.runs.train_rm', 'train_rm'),
  'improve': ('rest_jax.runs.improve', 'improve'),
  'online_rl': ('rest_jax.runs.online_rl', 'online_rl'),
  'rest': ('rest_jax.runs.rest', 'rest'),
  'report': ('rest_jax.runs.report', 'report'),
  'infer': ('rest_jax.runs.infer', 'infer'),
  'import_t5': ('rest_jax.runs.import_t5', 'import_t5'),
  'import_lm': ('rest_jax.runs.import_lm', 'import_lm'),
}

_RUN_MODE = flags.DEFINE_enum('run_mode', None, sorted(RUN_MODES), 'Which run function to call.')
_GIN_FILE = flags.DEFINE_multi_string('gin_file', [], 'Gin file(s), parsed in order.')
_GIN_BINDINGS = flags.DEFINE_multi_string('gin_bindings', [], 'Extra gin bindings.')
_GIN_SEARCH_PATHS = flags.DEFINE_list('gin_search_paths', [], 'Extra gin search folders.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'Print the operative config and exit.')
_MULTIPROCESS = flags.DEFINE_bool(
  'multiprocess', False, 'Call jax.distributed.initialize first (every process runs this command).'
)
_COORDINATOR = flags.DEFINE_string(
  'coordinator_address', None, 'host:port of process 0 (--multiprocess; default: detected).'
)
_NUM_PROCESSES = flags.DEFINE_integer(
  'num_processes', None, 'Number of processes (--multiprocess; default: detected).'
)
_PROCESS_ID = flags.DEFINE_integer(
  'process_id', None, "This process's index (--multiprocess; default: detected)."
)


def run_fn(run_mode: str):
  """The run function registered for `run_mode`."""
  module_name, fn_name = RUN_MODES[run_mode]
  return getattr(importlib.import_module(module_name), fn_name)


def _run_dir_lock(run_mode: str):
  """The lock of the run's MODEL_DIR (`run_lock.hold`), or a no-op context.

  Every run mode that binds the `MODEL_DIR` macro writes into it (eval and
  report too), so all of them hold it; a dry run writes nothing and does not.
  In a multi-process run only process 0 takes it (`_lock_on_primary`).
  """
  model_dir = None if _DRY_RUN.value else gin_utils.model_dir_macro()
  if model_dir is None:
    return contextlib.nullcontext()
  if _MULTIPROCESS.value:
    return _lock_on_primary(model_dir, run_mode)
  gin_utils.check_model_dir(model_dir)
  return run_lock.hold(model_dir, run_mode)


@contextlib.contextmanager
def _lock_on_primary(model_dir: str, run_mode: str):
  """Process 0 takes the lock; every process goes on, or stops, together.

  Without the collective check a refused lock (or any error of process 0 while
  it checks MODEL_DIR) would stop process 0 while the others wait for it at
  their first collective, forever.
  """
  from rest_jax.core import multihost  # Lazy, as the run modes.

  with contextlib.ExitStack() as held:
    error = None
    if multihost.is_primary():
      try:
        gin_utils.check_model_dir(model_dir)
        held.enter_context(run_lock.hold(model_dir, run_mode))
      except Exception as e:  # noqa: BLE001  (raised below, after the others know)
        error = e
    try:
      multihost.raise_together(error, 'taking the MODEL_DIR lock')
    except multihost.PeerError:
      raise errors.UserInputError(
        f'MODEL_DIR {model_dir}: process 0 could not check it or take its lock (its error '
        'says why); stopping with it.'
      ) from None
    yield


def main(argv) -> None:
  """Parses gin flags and calls the run function of --run_mode."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if _RUN_MODE.value is None:
    raise app.UsageError(f'--run_mode is required: one of {sorted(RUN_MODES)}.')
  if not flags.FLAGS['verbosity'].present:
    # Library INFO logs (Orbax, seqio) drown the progress bars; -v 0 brings them back.
    logging.set_verbosity(logging.WARNING)
  explicit = [_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value]
  if not _MULTIPROCESS.value and any(v is not None for v in explicit):
    raise app.UsageError(
      '--coordinator_address / --num_processes / --process_id need --multiprocess.'
    )
  if _MULTIPROCESS.value:
    from rest_jax.core import multihost

    try:
      multihost.initialize(*explicit)
    except ValueError as e:
      raise app.UsageError(str(e)) from None
    multihost.quiet_unless_primary()
  fn = run_fn(_RUN_MODE.value)
  preemption.install()  # SIGTERM: save at the next safe point, then exit EXIT_CODE.
  try:
    gin_utils.parse_gin_flags(_GIN_SEARCH_PATHS.value, _GIN_FILE.value, _GIN_BINDINGS.value)
    logging.info('run_mode=%s dry_run=%s', _RUN_MODE.value, _DRY_RUN.value)
    with _run_dir_lock(_RUN_MODE.value):
      gin_utils.call_configured(fn, _RUN_MODE.value, dry_run=_DRY_RUN.value)
  except errors.UserInputError as e:
    # One clear line, no traceback: the message names the file or flag. gin
    # appends "In call to configurable ..." lines, which add nothing here.
    sys.exit(f'error: {str(e).split(chr(10))[0]}')
  except preemption.Preempted as e:
    print(str(e).split(chr(10))[0], file=sys.stderr, flush=True)
    sys.exit(preemption.EXIT_CODE)


def run(argv=None) -> None:
  """Entry point of `python -m rest_jax.main` and the `rest-jax` script."""
  argv = sys.argv if argv is None else argv
  try:
    argv = gin_utils.rewrite_gin_args(argv)
  except gin_utils.GinConfigError as e:
    sys.exit(f'error: {e}')
  app.run(main, argv=argv, flags_parser=_parse_flags)


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f'error: {e}; pass --help for usage.')


if __name__ == '__main__':
  run()
