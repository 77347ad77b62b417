"""Verifiers: rewards for tasks with a checkable answer (ReST-EM's binary reward).

* `extract_answer(text)`: the final answer of a worked solution, by the
  documented rules below; `FinalAnswer` compares the candidate's to the
  reference's, exactly (after normalisation) or within a numeric tolerance.
* `PythonVerifier`: a user's Python function `check(prompt, candidate,
  reference) -> float | bool` (e.g. run the candidate program against tests),
  called in a fresh subprocess per row with a wall-clock time limit, in an
  empty temporary directory that is deleted afterwards, with network and file
  writes outside that directory refused (a guard against accidents, not a
  security sandbox: run untrusted code in a container as well).

Both are reward sources (`reward_fns.RewardFn`): `reward` in {0, 1} (or
clip(raw, 0, 1) for the Python verifier), bound by gin like the others
(`REWARD = @verifiers.FinalAnswer()`).

Answer extraction, in order (the first rule that matches wins):
  1. the contents of the last `\\boxed{...}`;
  2. what follows the last `####` or `answer:` / `answer is` / `answer =`
     (any case), up to the end of that line;
  3. the last number in the text (`-12`, `3.5`, `1,234`, `2/3`).
The result is stripped of spaces, `$`, a trailing `.`, and the thousands
commas of numbers; no match gives ''. An empty answer never matches.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import fractions
import json
import math
import os
import re
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
_MARKED = re.compile(r'(?:####|answer\s*(?:is|:|=))\s*([^\n]*)', re.IGNORECASE)
_NUMBER = re.compile(r'-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?')


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
    return _clean(marked[-1])
  numbers = _NUMBER.findall(text)
  return _clean(numbers[-1]) if numbers else ''


def as_number(answer: str) -> float | None:
  """`answer` as a float ('3', '-2.5', '1,234', '2/3'), or None if it is not a number."""
  text = answer.replace(',', '').strip()
  try:
    return float(fractions.Fraction(text))
  except (ValueError, ZeroDivisionError):
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


# The child process: guards, then loads the user's function and calls it on one
# row read from stdin, printing the float result as JSON on the last line.
_CHILD = r"""
import builtins, importlib, importlib.util, json, os, sys
root = os.path.realpath(os.getcwd())

def _guard(event, args):
  if event.startswith('socket.') and event not in ('socket.gethostname',):
    raise PermissionError('verifier: network access is refused')
  if event == 'open' and args[0] is not None and not isinstance(args[0], int):
    mode, flags = args[1] or '', args[2] or 0
    writes = any(c in mode for c in 'wax+') or (flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
    path = os.path.realpath(os.fsdecode(args[0]))
    if writes and not (path == root or path.startswith(root + os.sep)):
      raise PermissionError(f'verifier: writing {path} (outside its temporary dir) is refused')
  if event in ('os.remove', 'os.rename', 'os.rmdir', 'shutil.rmtree', 'os.mkdir'):
    path = os.path.realpath(os.fsdecode(args[0]))
    if not (path == root or path.startswith(root + os.sep)):
      raise PermissionError(f'verifier: {event} on {path} is refused')

spec, row = sys.argv[1], json.loads(sys.stdin.read())
target, _, name = spec.rpartition(':')
if target.endswith('.py'):
  module_spec = importlib.util.spec_from_file_location('verifier_module', target)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
else:
  module = importlib.import_module(target)
fn = getattr(module, name)
sys.addaudithook(_guard)
value = float(fn(row['prompt'], row['candidate'], row['reference']))
print(json.dumps(value))
"""


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
    row = json.dumps({'prompt': prompt, 'candidate': candidate, 'reference': reference})
    env = {'PATH': os.environ.get('PATH', ''), 'PYTHONPATH': os.pathsep.join(sys.path)}
    with tempfile.TemporaryDirectory(prefix='rest_jax_verifier_') as tmp:
      env['HOME'] = env['TMPDIR'] = tmp
      try:
        proc = subprocess.run(
          [sys.executable, '-I', '-c', _CHILD, function],
          input=row,
          capture_output=True,
          text=True,
          cwd=tmp,
          env=env,
          timeout=self.timeout_s,
        )
      except subprocess.TimeoutExpired:
        return 0.0, f'timed out after {self.timeout_s} s'
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
      return 0.0, (proc.stderr.strip().splitlines() or ['no output'])[-1]
    try:
      value = float(json.loads(lines[-1]))
    except (ValueError, TypeError):
      return 0.0, f'returned {lines[-1][:80]!r}, not a number'
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
