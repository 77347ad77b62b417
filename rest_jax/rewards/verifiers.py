"""Verifiers: rewards for tasks with a checkable answer (ReST-EM's binary reward).

* `extract_answer(text)`: the final answer of a worked solution, by the
  documented rules below; `FinalAnswer` compares the candidate's to the
  reference's, exactly (after normalisation) or within a numeric tolerance.
* `ArithmeticSteps`: the shipped arithmetic task's process verifier: the
  candidate's every step must be the prompt's, evaluated left to right.
* `PythonVerifier`: a user's Python function `check(prompt, candidate,
  reference) -> float | bool` (e.g. run the candidate program against tests),
  called in a fresh subprocess per row with a wall-clock time limit and
  memory / file-size limits, in an empty temporary directory that is deleted
  afterwards, with network access, new processes and file changes outside
  that directory refused (an audit hook: a guard against accidents, not a
  security boundary; run untrusted code in a container as well).

Both are reward sources (`reward_fns.RewardFn`): `reward` in {0, 1} (or
clip(raw, 0, 1) for the Python verifier), bound by gin like the others
(`REWARD = @verifiers.FinalAnswer()`).

Answer extraction, in order (the first rule that matches wins):
  1. the contents of the last `\\boxed{...}`;
  2. what follows the last `####` or `answer:` / `answer is` / `answer is:` /
     `answer =` (any case), up to the end of that line; its leading number
     when it starts with one followed by words (`14 apples` is `14`);
  3. the last number in the text (`-12`, `3.5`, `1,234`, `2/3`; in `19-5`
     the `-` is an operator, so the number is `5`).
The result is stripped of spaces, `$`, a trailing `.`, and the thousands
commas of numbers; no match gives ''. An empty answer never matches.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import fractions
import functools
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from absl import logging

from rest_jax import errors
from rest_jax.rewards import reward_fns

_BOXED = re.compile(r'\\boxed\{([^{}]*)\}')
_MARKED = re.compile(r'(?:####|answer\s*(?:is\s*:?|:|=))\s*([^\n]*)', re.IGNORECASE)
# A number; its '-' is a sign only where no digit, letter or ')' precedes it ('19-5' is 19, 5).
_NUMBER = re.compile(r'(?:(?<![\w)])-)?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?')


def _clean(answer: str) -> str:
  answer = answer.strip().replace('$', '').strip().rstrip('.').strip()
  if re.fullmatch(r'-?\d{1,3}(?:,\d{3})+(?:\.\d+)?', answer):
    answer = answer.replace(',', '')
  return answer


def extract_answer(text: str) -> str:
  """The final answer of `text` by the module docstring's rules; '' if none."""
  boxed = _BOXED.findall(text)
  if boxed:
    return _clean(boxed[-1])
  marked = _MARKED.findall(text)
  if marked and _clean(marked[-1]):
    answer = _clean(marked[-1])
    number = re.match(r'-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?(?=\s|$)', answer)
    return _clean(number.group(0)) if number else answer  # '14 apples' is 14.
  numbers = _NUMBER.findall(text)
  return _clean(numbers[-1]) if numbers else ''


def as_number(answer: str) -> float | None:
  """`answer` as a float ('3', '-2.5', '1,234', '2/3'), or None if it is not a number."""
  text = answer.replace(',', '').strip()
  try:
    return float(fractions.Fraction(text))
  except (ValueError, ZeroDivisionError, OverflowError):
    return None


def answers_match(candidate: str, reference: str, tolerance: float | None = None) -> bool:
  """Whether two extracted answers agree.

  Numbers compare by value (`1.50` == `1.5`); with `tolerance`, within
  `tolerance * max(1, |reference|)` (absolute near 0, relative beyond 1).
  Anything else compares casefolded, with runs of whitespace collapsed.
  """
  if not candidate or not reference:
    return False
  a, b = as_number(candidate), as_number(reference)
  if a is not None and b is not None:
    if tolerance is None:
      return a == b
    return math.isfinite(a) and abs(a - b) <= tolerance * max(1.0, abs(b))
  return reward_fns.normalize_text(candidate) == reward_fns.normalize_text(reference)


@dataclasses.dataclass(frozen=True)
class FinalAnswer:
  """1.0 if the candidate's final answer equals the reference's, else 0.0.

  The reference may be the bare answer or a worked solution: both sides go
  through `extract_answer`. raw == reward, in {0.0, 1.0}.
  """

  # Numeric answers within tolerance * max(1, |reference|) count as equal; None: exact.
  tolerance: float | None = None
  name: str = 'final_answer'  # Name in logs and manifests.
  needs_references: ClassVar[bool] = True

  def __call__(
    self,
    sources: Sequence[str],
    candidates: Sequence[str],
    references: Sequence[str] | None = None,
  ) -> reward_fns.Rewards:
    """See `reward_fns.RewardFn.__call__`; `sources` are checked but not read."""
    reward_fns.check_inputs(self, sources, candidates, references)
    raw = np.array(
      [
        float(answers_match(extract_answer(c), extract_answer(r), self.tolerance))
        for c, r in zip(candidates, references)
      ],
      np.float32,
    )
    return reward_fns.Rewards(reward=raw, raw=raw)

  def vote(self, candidates: Sequence[str]) -> int:
    """Index of a candidate whose answer is the most common among `candidates`.

    Majority voting (self-consistency): empty answers never win unless all are
    empty; ties go to the answer seen first. Numbers vote by value.
    """
    keys = []
    for c in candidates:
      answer = extract_answer(c)
      number = as_number(answer) if answer else None
      keys.append(number if number is not None else reward_fns.normalize_text(answer))
    counts: dict = {}
    for key in keys:
      if key != '':
        counts[key] = counts.get(key, 0) + 1
    if not counts:
      return 0
    best = max(counts.values())
    return next(j for j, key in enumerate(keys) if counts.get(key) == best)


_STEP = re.compile(r'(-?\d+)([+-])(\d+)=(-?\d+)')


def arithmetic_steps(prompt: str) -> list[tuple[int, str, int, int]]:
  """The left-to-right steps (a, op, b, a op b) of a '7+12-5=' chain."""
  numbers = [int(n) for n in re.findall(r'\d+', prompt)]
  ops = re.findall(r'(?<=\d)[+-]', prompt)
  steps, value = [], numbers[0] if numbers else 0
  for op, operand in zip(ops, numbers[1:]):
    result = value + operand if op == '+' else value - operand
    steps.append((value, op, operand, result))
    value = result
  return steps


@dataclasses.dataclass(frozen=True)
class ArithmeticSteps:
  """The process verifier of the shipped arithmetic task: every step, not just the answer.

  1.0 iff the candidate's equations `a+b=c` / `a-b=c` are exactly the prompt's
  steps evaluated left to right (each true, each starting from the previous
  result, none missing or extra) and its final answer (`extract_answer`) is
  the last result. A final-answer check alone accepts solutions whose steps
  are wrong but whose answer is right; ReST-EM then trains on them.
  raw == reward, in {0.0, 1.0}. Needs no reference: the prompt is the problem.
  """

  name: str = 'arithmetic_steps'  # Name in logs and manifests.
  needs_references: ClassVar[bool] = False

  def __call__(
    self,
    sources: Sequence[str],
    candidates: Sequence[str],
    references: Sequence[str] | None = None,
  ) -> reward_fns.Rewards:
    """See `reward_fns.RewardFn.__call__`; `references` are not read."""
    reward_fns.check_inputs(self, sources, candidates, references)
    raw = np.zeros(len(candidates), np.float32)
    for j, (prompt, candidate) in enumerate(zip(sources, candidates)):
      want = arithmetic_steps(prompt)
      got = [(int(a), op, int(b), int(c)) for a, op, b, c in _STEP.findall(candidate)]
      final = as_number(extract_answer(candidate))
      raw[j] = float(bool(want) and got == want and final == want[-1][3])
    return reward_fns.Rewards(reward=raw, raw=raw)

  def vote(self, candidates: Sequence[str]) -> int:
    """Majority vote over final answers (as `FinalAnswer.vote`)."""
    return FinalAnswer().vote(candidates)


# The child process: reads its row (and the parent's sys.path) from stdin,
# imports the user's function, installs the guards, calls it, and writes the
# float (or the error) as JSON to the pipe the parent passed as argv[2]: a
# candidate program that prints a number and exits does not reach that line.
_CHILD = r"""
import importlib, importlib.util, json, os, sys
sys.dont_write_bytecode = True  # No __pycache__ writes (outside the temporary dir).
root = os.path.realpath(os.getcwd())
spec, result_fd = sys.argv[1], int(sys.argv[2])
message = json.loads(sys.stdin.read())
sys.path[:0] = message['sys_path']
row = message['row']

def _inside(path):
  path = os.path.realpath(os.fsdecode(path))
  return path == root or path.startswith(root + os.sep)

_SPAWN = ('subprocess.Popen', 'os.system', 'os.exec', 'os.posix_spawn', 'os.spawn', 'os.fork',
          'os.forkpty', 'pty.spawn')
_PATHS = ('os.remove', 'os.rmdir', 'os.mkdir', 'os.rename', 'os.link', 'os.symlink',
          'os.truncate', 'os.chmod', 'os.chown', 'os.utime', 'shutil.rmtree', 'shutil.copyfile')

def _guard(event, args):
  if event.startswith('socket.') and event != 'socket.gethostname':
    raise PermissionError('verifier: network access is refused')
  if event in _SPAWN:
    raise PermissionError(f'verifier: starting processes ({event}) is refused')
  if event == 'open' and args[0] is not None and not isinstance(args[0], int):
    mode, flags = args[1] or '', args[2] or 0
    writes = any(c in mode for c in 'wax+') or (
      flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))
    if writes and not _inside(args[0]):
      raise PermissionError(f'verifier: writing {args[0]} (outside its temporary dir) is refused')
  if event in _PATHS:
    for path in args[:2]:
      if isinstance(path, (str, bytes, os.PathLike)) and not _inside(path):
        raise PermissionError(f'verifier: {event} on {path} is refused')

def _report(payload):
  os.write(result_fd, json.dumps(payload).encode())
  os.close(result_fd)

try:
  target, _, name = spec.rpartition(':')
  if target.endswith('.py'):
    sys.path.insert(0, os.path.dirname(target))
    module_spec = importlib.util.spec_from_file_location('verifier_module', target)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
  else:
    module = importlib.import_module(target)
  fn = getattr(module, name)
except BaseException as e:
  _report({'error': f'loading {spec}: {type(e).__name__}: {e}'})
  raise SystemExit(0)
sys.addaudithook(_guard)
try:
  payload = {'value': float(fn(row['prompt'], row['candidate'], row['reference']))}
except BaseException as e:  # SystemExit too: a candidate that exits scores nothing.
  payload = {'error': f'{type(e).__name__}: {e}'}
_report(payload)
"""


def _limit_resources(memory_mb: int) -> None:
  """The verifier child's limits (run between fork and exec): address space, file size."""
  import resource  # POSIX only.

  limit = memory_mb * 2**20
  resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
  resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 2**20, 64 * 2**20))


@dataclasses.dataclass(frozen=True)
class PythonVerifier:
  """A Python function `check(prompt, candidate, reference) -> float | bool`, sandboxed.

  Each row runs in its own `python -I` subprocess, in a fresh empty temporary
  directory (its working directory, deleted afterwards), with a wall-clock
  limit; the child refuses sockets and file writes outside that directory
  through an audit hook (`sys.addaudithook`), installed after the function's
  module is imported. A row that times out, raises, or returns a non-number
  gets reward 0 (raw 0) and is counted in the log; rewards are clip(raw, 0, 1).
  """

  # 'package.module:function' (importable) or '/path/to/file.py:function'.
  function: str
  timeout_s: float = 5.0  # Wall-clock limit per row.
  memory_mb: int = 2048  # Address-space limit of each row's process.
  workers: int = 2  # Rows checked at once.
  name: str = 'python_verifier'  # Name in logs and manifests.
  needs_references: bool = False  # Whether the function reads the reference.

  def __post_init__(self):
    target, _, fn = self.function.rpartition(':')
    if not target or not fn:
      raise errors.UserInputError(
        f"PythonVerifier.function={self.function!r}: use 'package.module:function' or "
        "'/path/to/file.py:function'."
      )
    if target.endswith('.py') and not os.path.isfile(target):
      raise errors.UserInputError(f'PythonVerifier.function: no file {target!r}.')
    if self.timeout_s <= 0 or self.workers < 1:
      raise errors.UserInputError('PythonVerifier: timeout_s must be > 0 and workers >= 1.')

  def check_one(self, prompt: str, candidate: str, reference: str | None) -> tuple[float, str]:
    """Runs the function on one row; returns (raw value, '' or why it failed)."""
    function = self.function
    target = function.rpartition(':')[0]
    if target.endswith('.py'):
      function = f'{os.path.abspath(target)}:{function.rpartition(":")[2]}'
    message = json.dumps(
      {
        'sys_path': [p for p in sys.path if p],
        'row': {'prompt': prompt, 'candidate': candidate, 'reference': reference},
      }
    )
    read_fd, write_fd = os.pipe()
    with tempfile.TemporaryDirectory(prefix='rest_jax_verifier_') as tmp:
      env = {'PATH': os.environ.get('PATH', ''), 'HOME': tmp, 'TMPDIR': tmp}
      proc = subprocess.Popen(
        [sys.executable, '-I', '-c', _CHILD, function, str(write_fd)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp,
        env=env,
        pass_fds=(write_fd,),
        start_new_session=True,  # Its own process group: a timeout kills every process of it.
        preexec_fn=functools.partial(_limit_resources, self.memory_mb),
      )
      os.close(write_fd)
      try:
        _, stderr = proc.communicate(message, timeout=self.timeout_s)
      except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        os.close(read_fd)
        return 0.0, f'timed out after {self.timeout_s} s'
      with os.fdopen(read_fd, 'rb') as f:
        result = f.read()
    try:
      payload = json.loads(result)
    except ValueError:
      tail = (stderr or '').strip().splitlines()
      return 0.0, f'no result (exit code {proc.returncode}){": " + tail[-1] if tail else ""}'
    if 'error' in payload:
      return 0.0, payload['error']
    value = payload['value']
    return (value, '') if math.isfinite(value) else (0.0, f'returned {value}')

  def __call__(
    self,
    sources: Sequence[str],
    candidates: Sequence[str],
    references: Sequence[str] | None = None,
  ) -> reward_fns.Rewards:
    """See `reward_fns.RewardFn.__call__`; the function gets None as reference if none."""
    reward_fns.check_inputs(self, sources, candidates, references)
    refs = [None] * len(candidates) if references is None else list(references)
    with concurrent.futures.ThreadPoolExecutor(self.workers) as pool:
      results = list(pool.map(self.check_one, sources, candidates, refs))
    failures = [why for _, why in results if why]
    if failures:
      logging.warning(
        '%s: %d of %d rows failed (reward 0); first: %s',
        self.name,
        len(failures),
        len(results),
        failures[0],
      )
    raw = np.array([value for value, _ in results], np.float64)
    return reward_fns.Rewards(reward=np.clip(raw, 0.0, 1.0), raw=raw)
