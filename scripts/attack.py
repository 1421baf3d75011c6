"""Attacks the classifiers trained in --workdir and writes attack_results.json and a figure.

  python scripts/attack.py --config=configs/attack_fonts.py --workdir=/tmp/advgen/fonts
"""

import json

from absl import flags
from ml_collections import config_flags

from advgen import cli, robustness

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Attack config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'A workdir of scripts/train_classifier.py.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  results = robustness.run(_CONFIG.value, _WORKDIR.value)
  summary = {name: {k: round(v, 4) for k, v in r['mean'].items()
                    if k in ('success_rate', 'success_rate_any', 'l2_median', 'linf_median')}
             for name, r in results.items() if isinstance(r, dict)}
  print(json.dumps(summary, indent=1))


if __name__ == '__main__':
  cli.run(main)
