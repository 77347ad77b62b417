"""The exception types for bad user input (files, flags, data)."""


class UserInputError(ValueError):
  """A file, flag or data record given by the user is wrong.

  The message names the file or flag, says what was wrong and what to do;
  `python -m rest_jax.main` prints it as one line instead of a traceback.
  """


class DataError(UserInputError):
  """A corpus, vocabulary or data setting that cannot be used as given."""
