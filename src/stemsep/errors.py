"""User-facing errors.

Anything wrong with a user's input (a file, a config key, a checkpoint) is raised as a
:class:`StemsepError` whose message is one line naming the file or key and the problem.
The CLI prints it as ``stemsep: error: <message>`` and exits with status 2, without a
traceback unless ``--debug`` is given.
"""


class StemsepError(Exception):
    """A problem with the user's input, reported as one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class BadAudioError(StemsepError):
    """An audio file that cannot be used (unreadable, wrong rate, wrong shape, non-finite)."""


class BadCheckpointError(StemsepError):
    """A checkpoint that cannot be loaded safely or does not fit the model."""


class BadDataError(StemsepError):
    """A dataset, shard or manifest that is missing or inconsistent."""
