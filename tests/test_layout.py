"""The package's shape: imports run one way (data, models -> attacks, bounds -> train -> studies
-> scripts), the report package needs no JAX, and only studies and training runs touch workdirs."""

import ast
import glob
import os

import pytest

from conftest import ROOT

PACKAGE = os.path.join(ROOT, 'advgen')
JAX = ('jax', 'flax', 'optax', 'orbax')
# Module path prefix (relative to advgen/) -> import prefixes it must never use.
FORBIDDEN = {
    'data/': ('advgen.models', 'advgen.attacks', 'advgen.bounds', 'advgen.train',
              'advgen.studies', 'advgen.cli'),
    'models/': ('advgen.attacks', 'advgen.bounds', 'advgen.train', 'advgen.studies',
                'advgen.cli'),
    'attacks/': ('advgen.bounds', 'advgen.train', 'advgen.studies', 'advgen.cli'),
    'bounds/': ('advgen.train', 'advgen.studies', 'advgen.cli'),
    'transforms.py': ('advgen.train', 'advgen.studies', 'advgen.cli'),
    'manifold.py': ('advgen.train', 'advgen.studies', 'advgen.cli'),
    'evaluate.py': ('advgen.train', 'advgen.studies', 'advgen.cli'),
    'results.py': ('advgen.',) + JAX,
    'progress.py': ('advgen.',) + JAX,
    'report/': ('advgen.data', 'advgen.models', 'advgen.attacks', 'advgen.bounds',
                'advgen.train', 'advgen.studies', 'advgen.cli') + JAX,
    'train/': ('advgen.studies', 'advgen.cli'),
    'studies/': ('advgen.cli',),
}


def imported_modules(path):
  """Every module an advgen file imports (absolute names; relative ones resolved)."""
  tree = ast.parse(open(path).read(), path)
  package = os.path.relpath(os.path.dirname(path), ROOT).replace(os.sep, '.')
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        parts = package.split('.')
        base = '.'.join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
      yield base
      yield from (f'{base}.{alias.name}' for alias in node.names)


def upward_imports(root=PACKAGE):
  found = []
  for path in sorted(glob.glob(os.path.join(root, '**', '*.py'), recursive=True)):
    relative = os.path.relpath(path, root).replace(os.sep, '/')
    for prefix, banned in FORBIDDEN.items():
      if relative.startswith(prefix):
        found += [f'{relative} imports {name}' for name in imported_modules(path)
                  if any(name == b.rstrip('.') or name.startswith(b if b.endswith('.') else b + '.')
                         or name == b for b in banned)]
  return found


def test_imports_run_one_way():
  assert upward_imports() == []


def test_nothing_in_the_package_imports_studies_but_studies():
  for path in glob.glob(os.path.join(PACKAGE, '**', '*.py'), recursive=True):
    if os.sep + 'studies' + os.sep in path:
      continue
    assert not [n for n in imported_modules(path) if n.startswith('advgen.studies')], path


def test_the_check_catches_an_upward_import(tmp_path):
  """An attack module that imports the trainer is reported (the check is not vacuous)."""
  (tmp_path / 'attacks').mkdir()
  (tmp_path / 'attacks' / 'bad.py').write_text('from advgen.train import trainer\n')
  (tmp_path / 'report').mkdir()
  (tmp_path / 'report' / 'heavy.py').write_text('import jax.numpy as jnp\n')
  assert sorted(upward_imports(str(tmp_path))) == [
      'attacks/bad.py imports advgen.train', 'attacks/bad.py imports advgen.train.trainer',
      'report/heavy.py imports jax.numpy']


@pytest.mark.parametrize('path', sorted(glob.glob(os.path.join(PACKAGE, '**', '*.py'),
                                                  recursive=True)))
def test_no_module_is_over_about_400_lines(path):
  assert sum(1 for _ in open(path)) <= 420, path
