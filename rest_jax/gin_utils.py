"""Gin at the edges: flag rewriting, parsing with clear errors, config.gin.

`--gin.X=Y` is rewritten to `--gin_bindings=X = Y` (t5x); the repository's
`gin/` folder is always on the search path, whatever the working directory;
errors name the file or flag that caused them.
"""

from __future__ import annotations

import copy
import inspect
import logging
import os
import re
import sys
import tokenize
from collections.abc import Sequence

import gin
from rest_jax import errors
from rest_jax.core import files
from rest_jax.core import model_dir as model_dir_lib

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The repository's gin/ (a source checkout has setup.py beside it; an installed
# package would otherwise point at site-packages/gin, gin-config's own code).
REPO_GIN_DIR = os.path.join(_REPO_ROOT, 'gin')
PACKAGE_GIN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'gin')


class _DropKnownNoise(logging.Filter):
  """Drops log records that are expected and say nothing useful here.

  * gin logs 'Path not found' at ERROR while it probes its search paths;
  * seqio warns that an in-memory (FunctionDataSource) task is uncached, and
    that packing drops the pass-through text features.
  """

  _PREFIXES = (
    'Path not found',
    'Using an uncached FunctionDataset',
    'Features not in `features_length` will be removed during packing',
  )

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(self._PREFIXES)


for _name in ('', 'absl'):
  logging.getLogger(_name).addFilter(_DropKnownNoise())


class GinConfigError(errors.UserInputError):
  """A gin file or binding given on the command line is wrong."""


# What gin raises for a file or binding it cannot parse or apply (a missing
# include is an OSError, an unclosed bracket a tokenize.TokenError).
_PARSE_ERRORS = (
  ValueError,
  KeyError,
  NameError,
  SyntaxError,
  ImportError,
  AttributeError,
  OSError,
  tokenize.TokenError,
)


def _first_line(e: BaseException) -> str:
  """gin's message in one line: its first line, and the innermost file and line it names."""
  lines = str(e).strip().splitlines() or [type(e).__name__]
  text = lines[0].strip().removesuffix('.')
  where = re.search(r'In file "([^"]+)", line (\d+)', str(e))
  if where:
    text += f' (in {where[1]}, line {where[2]})'
  return f'{text}.'


def default_search_paths() -> list[str]:
  """The repo's `gin/` (source checkout) and the installed copy, if present."""
  repo = REPO_GIN_DIR if os.path.exists(os.path.join(_REPO_ROOT, 'setup.py')) else None
  return [p for p in (repo, PACKAGE_GIN_DIR) if p and os.path.isdir(p)]


def rewrite_gin_args(args: Sequence[str]) -> list[str]:
  """Turns `--gin.NAME=VALUE` into `--gin_bindings=NAME = VALUE`."""
  out = []
  for arg in args:
    if arg.startswith('--gin.'):
      name, sep, value = arg[len('--gin.') :].partition('=')
      if not sep:
        raise GinConfigError(f'Flag {arg!r}: expected --gin.NAME=VALUE.')
      out.append(f'--gin_bindings={name} = {value}')
    else:
      out.append(arg)
  return out


def _resolve(path: str, search_paths: Sequence[str]) -> str:
  if os.path.isabs(path) or os.path.exists(path):
    return os.path.abspath(path)
  for root in search_paths:
    candidate = os.path.join(root, path)
    if os.path.exists(candidate):
      return candidate
    # Allow 'gin/bc/x.gin' as well as 'bc/x.gin'.
    if path.startswith('gin/') and os.path.exists(os.path.join(root, path[4:])):
      return os.path.join(root, path[4:])
  raise GinConfigError(
    f'--gin_file={path}: file not found in the working directory or the gin search paths '
    f'{list(search_paths)}. Check the path, or add its folder with --gin_search_paths.'
  )


def _import_lines(path: str, search_paths: Sequence[str], seen: set | None = None) -> list[str]:
  """The `from/import` lines of a gin file and of the files it includes."""
  seen = set() if seen is None else seen
  if path in seen:
    return []
  seen.add(path)
  lines = []
  with open(path) as f:
    for line in f:
      line = line.strip()
      if line.startswith(('from ', 'import ')):
        lines.append(line)
      elif line.startswith('include '):
        included = line[len('include ') :].strip().strip('\'"')
        try:
          lines += _import_lines(_resolve(included, search_paths), search_paths, seen)
        except GinConfigError:
          pass  # gin itself reported a missing include when parsing.
  return lines


def parse_gin_flags(
  gin_search_paths: Sequence[str], gin_files: Sequence[str], gin_bindings: Sequence[str]
) -> None:
  """Parses gin files (in order, later override earlier) and then bindings.

  Raises:
    GinConfigError: a file is missing or a file/binding does not parse or
      names an unknown configurable / parameter. The message names it.
  """
  gin.clear_config()
  search_paths = [os.path.abspath(p) for p in gin_search_paths] + default_search_paths()
  for path in search_paths:
    gin.add_config_file_search_path(path)
  if not gin_files:
    raise GinConfigError(
      'No --gin_file given; pass at least one (e.g. gin/bc/tatoeba_en_de_cpu.gin).'
    )
  imports = []
  for gin_file in gin_files:
    resolved = _resolve(gin_file, search_paths)
    try:
      gin.parse_config_file(resolved)
    except _PARSE_ERRORS as e:
      raise GinConfigError(
        f'--gin_file={gin_file} ({resolved}): {_first_line(e)} Fix that line of the file '
        '(or the include it names).'
      ) from e
    for line in _import_lines(resolved, search_paths):
      if line not in imports:
        imports.append(line)
  # `dynamic_registration` must come before any other import of the unit.
  dynamic = 'from __gin__ import dynamic_registration'
  if dynamic in imports:
    imports = [dynamic] + [line for line in imports if line != dynamic]
  for binding in gin_bindings:
    try:
      # With dynamic registration, module aliases (`tasks.X`) are per parse
      # unit: give each binding the imports of the files it overrides.
      gin.parse_config([*imports, binding])
    except _PARSE_ERRORS as e:
      raise GinConfigError(
        f'--gin_bindings={binding!r}: {_first_line(e)} Bind module.function.parameter or a '
        'MACRO (strings need inner quotes); --dry_run prints the operative config.'
      ) from e
  try:
    gin.finalize()
  except (ValueError, KeyError) as e:
    name = str(e).split('/')[0]
    raise GinConfigError(
      f'gin config: {e} Set it with --gin.{name}=VALUE (the header of the run file lists the '
      'REQUIRED macros).'
    ) from e


def print_operative_config() -> None:
  """Prints the operative config (what a run function was called with)."""
  print(gin.operative_config_str())


def check_model_dir(model_dir: str) -> None:
  """Refuses a URL as MODEL_DIR: run directories are file-system paths.

  The run files (JSON, histories, rest_state.json, the report) are written with
  POSIX calls, so a `gs://` bucket must be mounted (e.g. with gcsfuse, which
  `launch/tpu_pod.sh` does) and given by its mount path.

  Raises:
    errors.UserInputError: `model_dir` has a scheme such as `gs://`.
  """
  if '://' in str(model_dir):
    raise errors.UserInputError(
      f'MODEL_DIR={model_dir!r}: give a file-system path that every process sees. Mount a '
      'Cloud Storage bucket with gcsfuse (launch/tpu_pod.sh does for --model_dir=gs://...) '
      'and use the mount path.'
    )


def model_dir_macro() -> str | None:
  """The value of the parsed config's `MODEL_DIR` macro; None when it has none.

  A macro that refers to another one (`MODEL_DIR = %BASE`) is resolved.

  Raises:
    GinConfigError: `MODEL_DIR` is bound to something that is not a string.
  """
  try:
    value = gin.query_parameter('MODEL_DIR/macro.value')
  except ValueError:
    return None
  if isinstance(value, gin.config.ConfigurableReference):
    value = copy.deepcopy(value)  # Evaluates the reference, as gin does for a call.
  if value is None:
    return None
  if not isinstance(value, (str, os.PathLike)):
    raise GinConfigError(
      f'MODEL_DIR = {value!r}: give a path string, e.g. --gin.MODEL_DIR="\'/tmp/run\'".'
    )
  return os.fspath(value)


def write_config(model_dir: str, filename: str = 'config.gin') -> str:
  """Writes the operative gin config to `model_dir/filename` atomically (process 0 only).

  Every run function calls this first, so it also checks `model_dir`.

  Raises:
    errors.UserInputError: `model_dir` is a URL (`check_model_dir`).
  """
  check_model_dir(model_dir)
  path = model_dir_lib.ModelDir(model_dir).config(filename)
  from rest_jax.core import multihost

  if not multihost.is_primary():
    return path
  text = gin.operative_config_str() or gin.config_str()
  with files.atomic_path(path) as tmp, open(tmp, 'w') as f:  # Creates model_dir.
    f.write('# Operative gin config, written by rest_jax; `python -m rest_jax.main` with\n')
    f.write(f'# argv: {" ".join(sys.argv)}\n\n')
    f.write(text)
  return path


def _without_body(fn):
  """A gin wrapper like `fn`'s whose function body only checks the arguments.

  Calling it does all that gin does before a run function's body: it resolves
  the bindings (building every object they reference: networks, tasks,
  rewards), records the operative config and raises on missing REQUIRED
  values. The run function itself is not entered. gin has no public way to
  build a wrapper, hence its private `_inverse_lookup` / `_make_gin_wrapper`
  (tests/main_test.py covers dry runs, so a gin that changes them shows there).
  """
  info = gin.config._inverse_lookup(fn, allow_decorators=True)  # noqa: SLF001
  if info is None:
    raise TypeError(f'{fn!r} is not a gin configurable.')
  signature = inspect.signature(info.wrapped)

  def check_arguments(*args, **kwargs):
    signature.bind(*args, **kwargs)  # A missing argument raises TypeError, as a real call.

  return gin.config._make_gin_wrapper(  # noqa: SLF001
    check_arguments, info.wrapped, info.name, info.selector, info.allowlist, info.denylist
  )


def call_configured(fn, run_mode: str, dry_run: bool = False):
  """Calls the gin-configured `fn`; missing REQUIRED values become GinConfigError.

  With `dry_run`, gin builds `fn`'s arguments (so the operative config is
  complete and a missing value is reported) but `fn`'s body is not run; the
  operative config is printed and None returned. Run functions therefore have
  no `dry_run` parameter of their own.
  """
  try:
    configured = gin.get_configurable(fn)
  except ValueError as e:
    raise GinConfigError(
      f'--run_mode={run_mode}: the gin files do not configure {fn.__module__}.{fn.__name__}; '
      f'include gin/runs/{run_mode}.gin (or a file that includes it).'
    ) from e
  try:
    if dry_run:
      _without_body(fn)()
      print_operative_config()
      return None
    return configured()
  except (ValueError, TypeError, RuntimeError) as e:
    text = str(e)
    if (
      'Required bindings' in text
      or 'gin.REQUIRED' in text
      or 'missing a required argument' in text
      or 'missing' in text
      and ('keyword-only argument' in text or 'required positional' in text)
    ):
      raise GinConfigError(
        f'--run_mode={run_mode}: {text.splitlines()[0]} Set it with --gin.NAME=VALUE '
        '(the header of the gin/runs/*.gin file lists the REQUIRED macros).'
      ) from e
    raise
