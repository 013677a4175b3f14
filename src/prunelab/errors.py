"""User-facing errors: one clear line, printed without a traceback by the entry points.

Every command's exit status comes from here (the table in ``docs/guide/cli.md``): 0 everything asked
for succeeded; 1 an unexpected error (a bug: Python's or Hydra's traceback is shown); 2 bad
input, wherever it is found (:class:`PrunelabError`); 3 a run that did not produce a valid
result (:class:`ResultError`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

EXIT_OK = 0
EXIT_CRASH = 1  # an exception that is not a PrunelabError: a bug, shown with its traceback
EXIT_BAD_INPUT = 2
EXIT_NO_RESULT = 3


class PrunelabError(Exception):
    """A problem with the user's input or environment that they can fix.

    Entry points print ``str(err)`` as one line and exit with status 2, so the message must name
    the bad value and the valid choices.
    """

    exit_code = EXIT_BAD_INPUT


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


class RunFolderError(PrunelabError):
    """A run folder that holds another configuration's run, or files prunelab did not write."""


class ResultError(PrunelabError):
    """The run did not do what was asked (a pruning step missed its target, ...).

    Not bad input as such, so entry points exit with status 3, not 2.
    """

    exit_code = EXIT_NO_RESULT


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


def user_error(err: BaseException | None) -> PrunelabError | None:
    """The :class:`PrunelabError` behind ``err``: ``err`` itself, or the one a library wrapped
    (Hydra's ``instantiate`` raises ``InstantiationException`` *from* a data module's
    ConfigError). None for any other exception: a bug, to be shown with its traceback."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, PrunelabError):
            return err
        seen.add(id(err))
        err = err.__cause__
    return None


def exit_status(err: BaseException) -> int:
    """The exit status a command ends with when ``err`` stops it."""
    found = user_error(err)
    return found.exit_code if found is not None else EXIT_CRASH


def one_line(err: BaseException) -> str:
    """``err``'s message as the one line an entry point prints (its first line)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def unknown_key(key: str, owner: str, valid: Sequence[str]) -> ConfigError:
    """The one wording for a key that a component does not take: ``pruning.rate: not a key of
    agp; valid: amount, initial, n_steps, start_epoch, every`` (a long list: the 8 closest)."""
    valid = list(valid)
    if len(valid) > 8:
        listed = ", ".join(closest_first(key.rsplit(".", 1)[-1], valid)[:8]) + ", ..."
        return ConfigError(f"{key}: not a key of {owner}; valid, closest first: {listed}")
    return ConfigError(f"{key}: not a key of {owner}; valid: {', '.join(valid) or '(none)'}")


def closest_first(value: str, options: Iterable[str]) -> list[str]:
    """All ``options``, the most similar to ``value`` first (difflib's ratio; ties by name):
    the order in which a refusal lists the valid names."""
    opts = sorted(set(options))
    return sorted(opts, key=lambda o: -difflib.SequenceMatcher(None, value, o).ratio())
