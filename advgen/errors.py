"""The one exception type that scripts turn into a one-line message and a non-zero exit."""


class UserError(ValueError):
  """Something the user can fix (a config value, a path, a workdir); the message says how.

  A ValueError, so that callers who catch bad values also catch the library's."""
