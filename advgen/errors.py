"""The one exception type that scripts turn into a one-line message and a non-zero exit."""


class UserError(Exception):
  """Something the user can fix (a config value, a path, a workdir); the message says how."""
