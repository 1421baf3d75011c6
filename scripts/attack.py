"""Attacks the classifiers trained in --workdir; writes WORKDIR/attacks/NAME/results.json,
examples.npz and examples.png (NAME = --config.name).

  python scripts/attack.py --config=configs/attack_fonts.py --workdir=/tmp/advgen/fonts
"""

import json

from advgen import cli
from advgen.studies import attack

_CONFIG, _WORKDIR = cli.config_and_workdir_flags(
    'scripts/attack.py', 'Attack config file.', 'A workdir of scripts/train_classifier.py.')
_SHOWN = ('success_rate', 'success_rate_any', 'l2_median', 'linf_median', 'validity')


def main(argv):
  del argv
  results = attack.run(_CONFIG.value, _WORKDIR.value)
  summary = {name: {k: round(v, 4) for k, v in r['mean'].items()
                    if k in _SHOWN or k.endswith('ratio_median')}
             for name, r in results['attacks'].items()}
  print(json.dumps(summary, indent=1))
  print(f'wrote {attack.paths(_WORKDIR.value, results["name"])["dir"]}')


if __name__ == '__main__':
  cli.run(main)
