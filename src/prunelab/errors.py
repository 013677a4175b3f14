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
