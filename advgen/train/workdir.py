"""What a run writes into its workdir: config.json, metrics.jsonl and result files.

Results are written atomically and never replaced silently, so a killed or repeated run cannot
lose finished numbers.
"""

import json
import os
import tempfile

import ml_collections
import numpy as np

from advgen.errors import UserError


def config_to_dict(config):
  return json.loads(config.to_json_best_effort(sort_keys=True))


def check_config(workdir, config):
  """Refuses a workdir that already holds a run of another config."""
  path = os.path.join(workdir, 'config.json')
  if os.path.exists(path):
    stored, wanted = read_json(path), config_to_dict(config)
    if stored != wanted:
      changed = sorted(_changed_keys(stored, wanted))
      raise UserError(
          f'{workdir} holds a run with a different config (changed: {", ".join(changed[:5])}); '
          'use a new --workdir or restore the old config')


def stored_config(workdir, kind, script, keys):
  """The config a run of `script` recorded in `workdir`, for loading what it trained; `keys`,
  fields every config of that script has, tell a workdir of another script."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise UserError(f'{workdir} holds no trained {kind} (no config.json); train one with '
                    f'{script} --workdir={workdir}')
  config = ml_collections.ConfigDict(read_json(path))
  missing = [key for key in keys if key not in config]
  if missing:
    raise UserError(f'{workdir} holds no {kind} run (its config.json has no '
                    f'{", ".join(missing)}); pass the workdir of {script}')
  return config


def check_writable(workdir):
  """Refuses a workdir path that is a file, or a directory (or the parent it would be made in)
  that this user cannot write, before any work."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f'--workdir={workdir} is a file, not a directory; pass a directory path')
  existing = workdir
  while existing and not os.path.exists(existing):
    existing = os.path.dirname(os.path.abspath(existing))
  if existing and (not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK)):
    raise UserError(f'--workdir={workdir} cannot be written ({existing} is not a writable '
                    'directory); pass a directory you can write')


def prepare(workdir, config):
  """Creates `workdir` and records the config; refuses a workdir that holds another config."""
  check_config(workdir, config)
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    write_json(path, config_to_dict(config))


def _changed_keys(a, b, prefix=''):
  for key in set(a) | set(b):
    va, vb = a.get(key), b.get(key)
    if isinstance(va, dict) and isinstance(vb, dict):
      yield from _changed_keys(va, vb, f'{prefix}{key}.')
    elif va != vb:
      yield prefix + key


def read_json(path):
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise UserError(f'{path} is not valid JSON ({e}); move it away to start afresh') from None


def read_arrays(path):
  """The arrays of an .npz file, read into memory."""
  with np.load(path) as stored:
    return dict(stored)


def write_arrays(path, **arrays):
  """Writes an .npz file atomically: a kill leaves no half-written file."""
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix='.tmp.npz')
  with os.fdopen(fd, 'wb') as f:
    np.savez(f, **arrays)
  os.replace(tmp, path)


def write_json(path, value):
  """Writes JSON atomically: a crash leaves either the old file or the new one."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, suffix='.tmp')
  with os.fdopen(fd, 'w') as f:
    json.dump(value, f, indent=2, sort_keys=True)
    f.write('\n')
  os.replace(tmp, path)


def refuse_finished(results_path):
  """Stops a run before any work when its result file exists: its workdir holds a finished run."""
  if os.path.exists(results_path):
    raise UserError(f'{results_path} already exists: this run is finished; use a new --workdir '
                    'to train again')


def write_results(path, value, overwrite=False):
  """Writes a final result file, refusing to replace an existing one unless asked to."""
  if os.path.exists(path) and not overwrite:
    raise UserError(f'{path} already exists; use a new --workdir, or move the file away to redo '
                    'it')
  write_json(path, value)


class MetricWriter:
  """Appends one JSON object per logged step to metrics.jsonl."""

  def __init__(self, workdir, filename='metrics.jsonl'):
    self.path = os.path.join(workdir, filename)

  def truncate_after(self, step):
    """Drops lines logged after `step`, and a half-written last line (what a kill during a write
    leaves): a resumed run logs them again from its checkpoint."""
    kept = [json.dumps(r, sort_keys=True) + '\n' for r in self.read() if r['step'] <= step]
    if os.path.exists(self.path):
      with open(self.path, 'w') as f:
        f.writelines(kept)

  def write(self, step, metrics):
    record = {'step': int(step), **{k: _to_json(v) for k, v in metrics.items()}}
    with open(self.path, 'a') as f:
      f.write(json.dumps(record, sort_keys=True) + '\n')

  def read(self):
    if not os.path.exists(self.path):
      return []
    records = []
    with open(self.path) as f:
      for line in f:
        try:
          records.append(json.loads(line))
        except json.JSONDecodeError:
          continue  # a line cut short by a kill; its step is logged again on resume
    return records


def _to_json(value):
  if hasattr(value, 'tolist'):
    return value.tolist()
  return value
