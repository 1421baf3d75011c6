"""Attacks the classifiers trained in --workdir and writes attack_results.json and a figure.

  python scripts/attack.py --config=configs/attack_fonts.py --workdir=/tmp/advgen/fonts
"""

import json

from advgen import cli
from advgen.studies import attack

_CONFIG, _WORKDIR = cli.config_and_workdir_flags(
    'scripts/attack.py', 'Attack config file.', 'A workdir of scripts/train_classifier.py.')


def main(argv):
  del argv
  results = attack.run(_CONFIG.value, _WORKDIR.value)
  summary = {name: {k: round(v, 4) for k, v in r['mean'].items()
                    if k in ('success_rate', 'success_rate_any', 'l2_median', 'linf_median')}
             for name, r in results['attacks'].items()}
  print(json.dumps(summary, indent=1))


if __name__ == '__main__':
  cli.run(main)
