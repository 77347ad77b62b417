"""Verifiers: answer extraction, FinalAnswer, and the sandboxed Python verifier."""

import os
import textwrap

import numpy as np
import pytest

from rest_jax import errors
from rest_jax.rewards import verifiers


@pytest.mark.parametrize(
  'text, answer',
  [
    ('3 + 4 = 7. 7 * 2 = 14. Answer: 14', '14'),
    ('so the total is \\boxed{-3.5} dollars, or 12 cents', '-3.5'),
    ('We get 1,234 apples.\n#### 1,234', '1234'),
    ('the answer is $42.', '42'),
    ('2 + 2 = 4, then 4 - 9 = -5', '-5'),
    ('half of it: 2/3', '2/3'),
    ('The answer is Paris.', 'Paris'),
    ('The answer is: 42', '42'),
    ('Answer: 14 apples', '14'),
    ('7+12=19, 19-5=14, 14+3=17, 17-8', '8'),  # '-' after a digit is an operator.
    ('no digits here', ''),
  ],
)
def test_extract_answer(text, answer):
  assert verifiers.extract_answer(text) == answer


def test_answers_match_by_value_and_tolerance():
  assert verifiers.answers_match('1.50', '1.5')
  assert verifiers.answers_match('0.6667', '2/3', tolerance=1e-3)
  assert not verifiers.answers_match('0.6667', '2/3')
  assert verifiers.answers_match('1001', '1000', tolerance=1e-3)
  assert not verifiers.answers_match('1002', '1000', tolerance=1e-3)
  assert verifiers.answers_match('paris', 'Paris')
  assert not verifiers.answers_match('', '')
  assert not verifiers.answers_match('1e400', '5')  # Overflows to no number, not an error.
  assert verifiers.FinalAnswer().vote(['Answer: 1e999', 'Answer: 3', 'so 3', 'Answer: 4']) == 1


def test_final_answer_reward():
  fn = verifiers.FinalAnswer()
  out = fn(
    ['p'] * 4,
    ['2 + 3 = 5. Answer: 5', 'Answer: 6', 'it is 5', 'Answer:'],
    ['2 + 3 = 5. Answer: 5', '5', '5', '5'],
  )
  np.testing.assert_array_equal(out.reward, [1, 0, 1, 0])
  with pytest.raises(ValueError, match='references'):
    fn(['p'], ['5'])


def test_arithmetic_steps_checks_every_step_not_just_the_answer():
  fn = verifiers.ArithmeticSteps()
  prompt = '9+12-16='
  out = fn(
    [prompt] * 5,
    [
      '9+12=21, 21-16=5. Answer: 5',  # Right.
      '9+12=20, 20-16=5. Answer: 5',  # Right answer, wrong steps (FinalAnswer says 1).
      '9+12=21, 21-16=5. Answer: 4',  # Right steps, wrong answer.
      '9+12=21. Answer: 5',  # A step missing.
      '9+12=21, 21-16=5, 5+1=6. Answer: 5',  # A step too many.
    ],
  )
  np.testing.assert_array_equal(out.reward, [1, 0, 0, 0, 0])
  assert verifiers.FinalAnswer()([prompt], ['9+12=20, 20-16=5. Answer: 5'], ['5']).reward[0] == 1
  assert verifiers.arithmetic_steps('2-19-4=') == [(2, '-', 19, -17), (-17, '-', 4, -21)]


_CHECKS = textwrap.dedent("""
  import socket, time

  def exact(prompt, candidate, reference):
    return candidate.strip() == reference.strip()

  def run_program(prompt, candidate, reference):
    scope = {}
    exec(candidate, scope)
    return scope['f'](3) == int(reference)

  def sleepy(prompt, candidate, reference):
    time.sleep(30)
    return 1.0

  def network(prompt, candidate, reference):
    socket.create_connection(('127.0.0.1', 9))
    return 1.0

  def write_outside(prompt, candidate, reference):
    open(candidate, 'w').write('x')
    return 1.0

  def exit_after_printing(prompt, candidate, reference):
    print(1.0)
    raise SystemExit(0)

  def hard_exit(prompt, candidate, reference):
    import os
    print(1.0)
    os._exit(0)

  def spawn(prompt, candidate, reference):
    import subprocess
    subprocess.run(['true'])
    return 1.0

  def move_out(prompt, candidate, reference):
    import os
    open('inside.txt', 'w').write('x')
    os.rename('inside.txt', candidate)
    return 1.0

  def write_inside(prompt, candidate, reference):
    with open('scratch.txt', 'w') as f:
      f.write('ok')
    return open('scratch.txt').read() == 'ok'
""")


@pytest.fixture
def checks(tmp_path):
  path = tmp_path / 'checks.py'
  path.write_text(_CHECKS)
  return str(path)


def test_python_verifier_runs_the_function(checks):
  fn = verifiers.PythonVerifier(f'{checks}:run_program', needs_references=True)
  out = fn(['p'] * 3, ['def f(x):\n  return x * 2', 'def f(x):\n  return x', 'oops('], ['6'] * 3)
  np.testing.assert_array_equal(out.reward, [1, 0, 0])  # The syntax error scores 0.


def test_python_verifier_time_limit(checks):
  fn = verifiers.PythonVerifier(f'{checks}:sleepy', timeout_s=1.0)
  value, why = fn.check_one('p', 'c', None)
  assert value == 0.0 and 'timed out' in why


def test_python_verifier_refuses_network_and_outside_writes(checks, tmp_path):
  outside = str(tmp_path / 'written_by_verifier.txt')
  value, why = verifiers.PythonVerifier(f'{checks}:network').check_one('p', 'c', None)
  assert value == 0.0 and 'network' in why
  value, why = verifiers.PythonVerifier(f'{checks}:write_outside').check_one('p', outside, None)
  assert value == 0.0 and 'outside' in why and not os.path.exists(outside)
  value, why = verifiers.PythonVerifier(f'{checks}:write_inside').check_one('p', 'c', None)
  assert (value, why) == (1.0, '')
  value, why = verifiers.PythonVerifier(f'{checks}:spawn').check_one('p', 'c', None)
  assert value == 0.0 and 'processes' in why
  value, why = verifiers.PythonVerifier(f'{checks}:move_out').check_one('p', outside, None)
  assert value == 0.0 and 'os.rename' in why and not os.path.exists(outside)


def test_python_verifier_reads_its_result_from_the_function_not_stdout(checks):
  for name in ('exit_after_printing', 'hard_exit'):
    value, why = verifiers.PythonVerifier(f'{checks}:{name}').check_one('p', 'c', None)
    assert value == 0.0 and why, name


def test_python_verifier_imports_a_module_on_the_callers_path(checks, tmp_path, monkeypatch):
  package = tmp_path / 'my_checks_pkg'
  package.mkdir()
  (package / '__init__.py').write_text('')
  (package / 'rules.py').write_text('def is_six(p, c, r):\n  return c.strip() == "6"\n')
  monkeypatch.syspath_prepend(str(tmp_path))
  fn = verifiers.PythonVerifier('my_checks_pkg.rules:is_six')
  np.testing.assert_array_equal(fn(['p', 'p'], ['6', '7']).reward, [1, 0])


def test_python_verifier_bad_spec():
  with pytest.raises(errors.UserInputError, match='function'):
    verifiers.PythonVerifier('no_colon')
  with pytest.raises(errors.UserInputError, match='no file'):
    verifiers.PythonVerifier('/nonexistent/checks.py:f')
