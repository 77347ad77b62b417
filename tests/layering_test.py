"""The folders of rest_jax/ are its layers (DESIGN.md, LAYOUT.md), and imports only go down.

  main.py             entry: may import everything
  runs/               the drivers, one per --run_mode: data, rewards, core, gin_utils
  data/               the only layer that imports TensorFlow / seqio: rewards, core
  rewards/            reward sources, reward model, its metrics and probes: core
  core/               JAX/numpy libraries: only core
  gin_utils.py        gin parsing for the entry and the drivers: core
  errors.py           the one error type: imports nothing of rest_jax

Every layer may import `rest_jax.errors`. The rules are read from the source
(every import statement, also inside functions), so a new module is checked by
the folder it is put in.
"""

import ast
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / 'rest_jax'
LAYERS = ('core', 'rewards', 'data', 'runs')
# What each place may import, besides itself and rest_jax.errors.
ALLOWED = {
  'core': set(),
  'rewards': {'core'},
  'data': {'core', 'rewards'},
  'runs': {'core', 'rewards', 'data', 'gin_utils'},
  'gin_utils': {'core'},
  'errors': set(),
  'main': {'core', 'rewards', 'data', 'runs', 'gin_utils'},
}
TOP_LEVEL_MODULES = {'__init__', 'main', 'gin_utils', 'errors'}
TF_MODULES = ('tensorflow', 'seqio', 'tensorflow_text')


def _modules():
  """(place, dotted name, path) of every module of the package."""
  for path in sorted(PACKAGE.rglob('*.py')):
    rel = path.relative_to(PACKAGE)
    place = rel.parts[0] if len(rel.parts) > 1 else rel.stem
    yield place, 'rest_jax.' + '.'.join(rel.with_suffix('').parts), path


def _imports(path):
  """Every module name an import statement of `path` names (absolute imports)."""
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      yield from (a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      assert node.level == 0, f'{path}: use absolute imports'
      if node.module == 'rest_jax':
        yield from ('rest_jax.' + a.name for a in node.names)
      else:
        yield node.module


def _place_of(module):
  """'rest_jax.core.models' -> 'core'; 'rest_jax.errors' -> 'errors'."""
  return module.split('.')[1] if module.count('.') else None


def test_top_level_holds_only_the_entry_and_the_layer_folders():
  modules = {p.stem for p in PACKAGE.glob('*.py')}
  assert modules == TOP_LEVEL_MODULES, (
    f'put {sorted(modules - TOP_LEVEL_MODULES)} in a layer folder'
  )
  for layer in LAYERS:
    assert (PACKAGE / layer / '__init__.py').exists(), layer


@pytest.mark.parametrize('place', sorted(ALLOWED))
def test_imports_only_go_down(place):
  wrong = []
  for module_place, name, path in _modules():
    if module_place != place:
      continue
    for imported in _imports(path):
      if not imported.startswith('rest_jax.'):
        continue
      target = _place_of(imported)
      if target not in ALLOWED[place] | {place, 'errors'}:
        wrong.append(f'{name} imports {imported}')
  assert not wrong, f'{place} may import {sorted(ALLOWED[place])}: ' + '; '.join(wrong)


def test_tensorflow_and_seqio_only_in_the_data_layer():
  wrong = [
    f'{name} imports {imported}'
    for place, name, path in _modules()
    if place != 'data'
    for imported in _imports(path)
    if imported.split('.')[0] in TF_MODULES
  ]
  assert not wrong, wrong


def test_no_module_imports_another_modules_private_names():
  wrong = []
  for _, name, path in _modules():
    tree = ast.parse(path.read_text())
    local = {
      alias.asname or alias.name
      for node in ast.walk(tree)
      if isinstance(node, ast.ImportFrom) and (node.module or '').startswith('rest_jax')
      for alias in node.names
    }
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and (node.module or '').startswith('rest_jax'):
        wrong += [
          f'{name}: from {node.module} import {a.name}' for a in node.names if a.name[0] == '_'
        ]
      if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in local
        and node.attr.startswith('_')
        and not node.attr.startswith('__')
      ):
        wrong.append(f'{name}: {node.value.id}.{node.attr}')
  assert not wrong, wrong


_BLOCK_TF = r"""
import importlib, importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in ('tensorflow', 'seqio', 'tensorflow_text'):
      raise ImportError(f'blocked for this test: {name}')
sys.meta_path.insert(0, _Block())
for name in sys.argv[1:]:
  importlib.import_module(name)
assert not any(m.split('.')[0] in ('tensorflow', 'seqio') for m in sys.modules), 'TF leaked'
print('OK', len(sys.argv) - 1)
"""


def test_core_and_rewards_import_without_tensorflow():
  """What the GPU benchmark machines (JAX, no TF) need: every core and rewards module."""
  names = [name for place, name, _ in _modules() if place in ('core', 'rewards')]
  out = subprocess.run(
    [sys.executable, '-c', _BLOCK_TF, *names],
    capture_output=True,
    text=True,
    timeout=300,
    env={'JAX_PLATFORMS': 'cpu', 'PATH': os.environ.get('PATH', '/usr/bin:/bin')},
    cwd=ROOT,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip() == f'OK {len(names)}'
