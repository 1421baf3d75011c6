"""Study throughput: cells per hour of Stutz et al.'s study on this machine, and where a cell's
time goes (training its K seeds, attacking them, summarizing).

  python benchmarks/study_throughput.py [--config=configs/studies/stutz_fonts.py:tiny]

Runs the study's cells one by one in a temporary workdir (the generators first, when the study
needs them) and prints the seconds of each phase per cell and the cells per hour, so a full grid's
cost can be estimated: cells x (seconds per cell) / devices.
"""

import tempfile
import time

from absl import app, flags

from advgen.cli import load_config
from advgen.studies import attack as attack_study, runs, stutz

_CONFIG = flags.DEFINE_string('config', 'configs/studies/stutz_fonts.py:tiny',
                              'Study config (FILE[:ARG]).')


def main(argv):
  del argv
  path, _, arg = _CONFIG.value.partition(':')
  config = load_config(path, *([arg] if arg else []))
  with tempfile.TemporaryDirectory() as workdir:
    stutz.prepare(config, workdir)
    start = time.perf_counter()
    stutz.train_generator(config, workdir)
    generator = time.perf_counter() - start
    rows = []
    for variant, n in stutz.cells(config):
      cell = stutz.cell_dir(workdir, variant, n)
      t0 = time.perf_counter()
      runs.train_or_load('classifier', stutz.cell_config(config, workdir, variant, n), cell)
      t1 = time.perf_counter()
      attack_study.run(stutz.attack_config(config, workdir), cell)
      t2 = time.perf_counter()
      stutz.run_cell(config, workdir, variant, n)  # summarizes from the stored runs
      rows.append((f'{variant}-n{n}', t1 - t0, t2 - t1, time.perf_counter() - t2))
  print(f'generators: {generator:.1f} s (once per study)')
  print(f'{"cell":32s} {"train s":>8s} {"attack s":>9s} {"summary s":>10s}')
  for name, *seconds in rows:
    print(f'{name:32s} {seconds[0]:8.1f} {seconds[1]:9.1f} {seconds[2]:10.1f}')
  per_cell = sum(sum(r[1:]) for r in rows) / len(rows)
  print(f'{len(rows)} cells, {config.num_models} seeds each: {per_cell:.1f} s per cell, '
        f'{3600 / per_cell:.1f} cells per hour (the first cells include compilation)')


if __name__ == '__main__':
  app.run(main)
