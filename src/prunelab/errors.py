"""User-facing errors: one clear line, printed without a traceback by the entry points."""


class PrunelabError(Exception):
    """A problem with the user's input or environment that they can fix.

    Entry points print ``str(err)`` as one line and exit with status 2, so the message must name
    the bad value and the valid choices.
    """

    exit_code = 2


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


class ResultError(PrunelabError):
    """The run did not do what was asked (a pruning step missed its target, ...).

    Not bad input as such, so entry points exit with status 3, not 2.
    """

    exit_code = 3


class DivergedError(ResultError):
    """Training produced a non-finite loss or weights, or a final loss far worse than guessing
    (exploded but finite weights; :func:`prunelab.models.system.exploded`): the run's numbers
    mean nothing.

    The run is recorded with status "diverged" (``failed.json``), naming the epoch and step.
    """

    def __init__(self, message: str, epoch: int | None = None, step: int | None = None,
                 stage: str | None = None) -> None:
        super().__init__(message)
        self.epoch, self.step, self.stage = epoch, step, stage
