"""User-facing errors.

Anything wrong with a user's input (a file, a config key, a checkpoint) is raised as a
:class:`StemsepError` whose message is one line naming the file or key and the problem.
The CLI prints it as ``stemsep: error: <message>`` and exits with status 2, without a
traceback unless ``--debug`` is given.
"""


class StemsepError(Exception):
    """A problem with the user's input, reported as one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(_innermost(str(message)).split()))


def _innermost(message: str) -> str:
    """The original message of an error re-raised from a DataLoader worker.

    PyTorch re-raises a worker's exception as ``type(err)("Caught ... Original Traceback
    ...\n<module>.<Class>: <message>")``; keep only ``<message>``, the one line the user needs.
    """
    if "Original Traceback" not in message:
        return message
    last = [line for line in message.strip().splitlines() if line.strip()][-1]
    return last.split(": ", 1)[1] if ": " in last else last


class BadAudioError(StemsepError):
    """An audio file that cannot be used (unreadable, wrong rate, wrong shape, non-finite)."""


class BadCheckpointError(StemsepError):
    """A checkpoint that cannot be loaded safely or does not fit the model."""


class BadDataError(StemsepError):
    """A dataset, shard or manifest that is missing or inconsistent."""


class BadArgumentError(StemsepError, ValueError):
    """An option or function argument outside its range (also a ``ValueError`` for library callers)."""
