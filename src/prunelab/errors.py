"""User-facing errors: one clear line, printed without a traceback by the entry points."""


class PrunelabError(Exception):
    """A problem with the user's input or environment that they can fix.

    Entry points print ``str(err)`` as one line and exit with status 2, so the message must name
    the bad value and the valid choices.
    """


class ConfigError(PrunelabError, ValueError):
    """An invalid or incompatible configuration value."""


class DataMissingError(PrunelabError, FileNotFoundError):
    """A data set is absent and cannot be downloaded."""


class CheckpointError(PrunelabError):
    """A checkpoint that is corrupt or does not match the run."""


class UnsafeInputError(PrunelabError):
    """A file from a run folder or a user that would run code when loaded: refused, never run."""


class OutputError(PrunelabError):
    """An output that cannot be written (read-only folder, full disk, a path outside outputs/)."""


class RunInProgressError(PrunelabError):
    """Another live process is working in the same run directory."""
