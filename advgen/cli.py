"""Runs an absl `main` so that a UserError ends the process with one line and exit status 2."""

import sys

from absl import app

from advgen.errors import UserError


def run(main):
  def guarded(argv):
    try:
      return main(argv)
    except UserError as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(2)

  app.run(guarded)
