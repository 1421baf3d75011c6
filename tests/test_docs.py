"""The README stays a newcomer's first screen, and what it and docs/*.md name is real: every
link resolves, every path in the layout exists, and every command names an existing script, a
config of that script (built with its argument) and fields that config has."""

import glob
import os
import re
import shlex

import pytest

from advgen import cli
from conftest import ROOT

DOCS = ['README.md'] + sorted(os.path.relpath(p, ROOT)
                              for p in glob.glob(os.path.join(ROOT, 'docs', '*.md')))


def text(name):
  return open(os.path.join(ROOT, name)).read()


def commands(markdown):
  """Every `python ...` command of the bash blocks (continuation lines joined) and of the
  inline code spans."""
  found = []
  for block in re.findall(r'```bash\n(.*?)```', markdown, re.S):
    found += [line.strip() for line in block.replace('\\\n', ' ').splitlines()
              if line.strip().startswith('python ')]
  prose = re.sub(r'```.*?```', '', markdown, flags=re.S)
  found += [' '.join(span.split()) for span in re.findall(r'`([^`]+)`', prose)
            if span.startswith('python ')]
  return found


def field_names(config, prefix=''):
  for key, value in config.items():
    yield prefix + key
    if hasattr(value, 'items'):
      yield from field_names(value, f'{prefix}{key}.')


def test_the_readme_is_one_first_screen_and_a_map():
  readme = text('README.md')
  # the first screen (what, install, the main job, tests, studies, AutoAttack, certified), layout, map
  assert len(readme.splitlines()) <= 175
  for heading in ('## Install', '## Train the default classifier', '## Run the tests',
                  '## Studies', '## Layout', '## Documentation map'):
    assert heading in readme, heading
  linked = set(re.findall(r'\]\((docs/[\w.]+\.md)\)', readme))
  assert set(DOCS[1:]) <= linked  # every page of docs/ is on the map


@pytest.mark.parametrize('name', DOCS)
def test_every_link_and_named_file_exists(name):
  markdown = text(name)
  base = os.path.dirname(os.path.join(ROOT, name))
  links = [l for l in re.findall(r'\]\(([^)#]+)[^)]*\)', markdown) if '://' not in l]
  missing = [l for l in links if not os.path.exists(os.path.join(base, l))]
  named = set(re.findall(r'\b((?:configs|scripts|benchmarks|advgen)/[a-z0-9_/]+\.py)\b', markdown))
  missing += sorted(p for p in named if not os.path.isfile(os.path.join(ROOT, p)))
  assert missing == []


def test_every_path_of_the_readme_layout_exists():
  layout = text('README.md').split('## Layout')[1].split('```')[1]
  folder, missing = None, []
  for line in layout.splitlines():
    entry = line.split()[0] if line[:4].strip() else None  # a new entry starts before column 4
    if entry is not None:
      inside = line.startswith('  ')  # advgen's entries; the top-level line lists folders
      if inside and not os.path.exists(os.path.join(ROOT, 'advgen', entry)):
        missing.append(entry)
      folder = entry if inside and entry.endswith('/') else None
    for module in re.findall(r'\b(\w+\.py)\b', line):
      if folder and not os.path.isfile(os.path.join(ROOT, 'advgen', folder, module)):
        missing.append(folder + module)
  assert missing == []


@pytest.mark.parametrize('name', DOCS)
def test_every_command_runs_a_config_of_its_script_with_real_fields(name):
  checked = 0
  for command in commands(text(name)):
    args = shlex.split(command, comments=True)[1:]
    if args[0] == '-m':  # a module (pytest), not a file of the repository
      continue
    script = args[0]
    assert os.path.isfile(os.path.join(ROOT, script)), command
    config_arg = next((a.split('=', 1)[1] for a in args if a.startswith('--config=')), None)
    if config_arg is None:
      continue
    path, *config_args = config_arg.split(':')
    config = cli.load_config(os.path.join(ROOT, path), *config_args)
    assert all(field in config for field in cli.SCRIPT_FIELDS[script]), command
    fields = set(field_names(config))
    overrides = [a[len('--config.'):].split('=')[0] for a in args if a.startswith('--config.')]
    assert [o for o in overrides if o not in fields] == [], command
    checked += 1
  assert checked or name not in ('README.md', 'docs/studies.md', 'docs/training.md')
