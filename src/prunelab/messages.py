"""prunelab's logging: every message once, no third-party tips, one ``verbosity`` for all commands.

All of prunelab's messages go through the ``prunelab`` logger (``prunelab.<module>``). The
console shows them as plain lines; other libraries' records get a ``[library]`` prefix. A run's
``run.log`` (Hydra's job log) keeps the INFO messages whatever the console shows.

``verbosity``:

- ``quiet``: warnings, errors and the end-of-run / end-of-sweep summary; no progress bars.
- ``normal`` (default): prunelab's progress messages too; other libraries' warnings only.
- ``debug``: prunelab's debug messages, other libraries' INFO lines and every warning that
  :data:`IGNORED_WARNINGS` hides (third-party tips and ads stay hidden).
"""

from __future__ import annotations

import logging
import logging.config
import re
import sys
import warnings
from typing import Any

from prunelab.errors import ConfigError

VERBOSITIES = ("quiet", "normal", "debug")
LOGGER = "prunelab"
SUMMARY_LOGGER = "prunelab.summary"  # shown even when quiet: it is the run's answer

# Lightning's and torch's warnings that say nothing a prunelab user can act on, each with why.
# (regex on the start of the message, reason). Only ``verbosity=debug`` shows them.
IGNORED_WARNINGS: list[tuple[str, str]] = [
    (r".*does not have many workers which may be a bottleneck",
     "prunelab's loaders serve batches from in-memory tensors; worker processes would only "
     "add start-up time"),
    (r".*Experiment logs directory .* exists and is not empty",
     "a run directory always holds .hydra/ and run.log before Lightning's CSV logger starts "
     "(on a resumed run metrics.csv restarts; TensorBoard's event files keep every epoch)"),
    (r".*isinstance\(treespec, LeafSpec\)` is deprecated",
     "an internal torch API used by Lightning's own code; nothing to change on the user side"),
    (r".*The number of training batches \(\d+\) is smaller than the logging interval",
     "trainer=fast and tiny test runs have few batches by design; epoch metrics are logged anyway"),
    (r".*Checkpoint directory .* exists and is not empty",
     "checkpoints/last.ckpt is rewritten on purpose: it is what a resumed run starts from"),
    (r".*'hydra/launcher/joblib' is validated against ConfigStore",
     "conf/hydra/launcher/joblib.yaml completes the joblib plugin's config and is complete "
     "by itself (see that file)"),
]

# Lightning's INFO lines that are advertising, hidden at every verbosity.
_ADS = re.compile(r"💡|litlogger|litmodels|lightning\.ai/|Lightning Experiments platform")

# third-party loggers whose INFO lines are hidden unless verbosity=debug
_CHATTY = ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric",
           "pytorch_lightning", "torch", "matplotlib", "PIL", "fsspec", "urllib3", "submitit")


_COMPILER = ("torch._dynamo", "torch._inductor", "torch._subclasses", "torch.fx")


def check_verbosity(value: Any) -> str:
    """``value`` if it is a known verbosity, else a ConfigError naming the choices."""
    if value not in VERBOSITIES:
        raise ConfigError(f"verbosity={value} is not one of {', '.join(VERBOSITIES)}")
    return str(value)


def get_logger(name: str) -> logging.Logger:
    """The ``prunelab.<name>`` logger (``name`` may be a module's ``__name__``)."""
    return logging.getLogger(name if name.startswith(LOGGER) else f"{LOGGER}.{name}")


def say(logger: logging.Logger, message: str) -> None:
    """An INFO record the caller asked for (``PruningCallback(verbose=True)``): through
    ``logger``'s handlers when the application set logging up, else through a plain stderr
    handler.

    Without any handler Python shows WARNING and above only, so in a plain script that set up
    no logging a verbose callback would show nothing at all.
    """
    if logger.hasHandlers():
        logger.info(message)
    else:
        record = logger.makeRecord(logger.name, logging.INFO, "(say)", 0, message, None, None)
        logging.StreamHandler(sys.stderr).handle(record)


class ConsoleFormatter(logging.Formatter):
    """prunelab's records as plain lines, warnings flagged, others prefixed with their library."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info and record.levelno >= logging.ERROR:
            msg += "\n" + self.formatException(record.exc_info)
        if record.name == LOGGER or record.name.startswith(LOGGER + "."):
            if record.levelno >= logging.WARNING:
                return f"{record.levelname.lower()}: {msg}"
            return msg
        if record.name == "py.warnings":
            return "warning: " + _short_warning(msg)
        lib = record.name.split(".")[0].replace("hydra_plugins", "hydra")
        if record.levelno >= logging.WARNING:
            return f"[{lib}] {record.levelname.lower()}: {msg}"
        return f"[{lib}] {msg}"


def _short_warning(text: str) -> str:
    """``path:line: Category: message`` (warnings' format) → ``message (Category, file:line)``."""
    first = text.strip().splitlines()[0] if text.strip() else text
    m = re.match(r"(?P<path>.*?):(?P<line>\d+): (?:(?P<cat>\w+): )?(?P<msg>.*)", first)
    if not m:
        return first
    where = m["path"].rsplit("/", 1)[-1]
    cat = f"{m['cat']}, " if m["cat"] else ""
    return f"{m['msg']} ({cat}{where}:{m['line']})"


class DropAds(logging.Filter):
    """Third-party tips and advertisements never reach the console or the log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _ADS.search(record.getMessage())


#: loggers of the launching process of a sweep: its progress and its study's lines
SWEEP_LOGGERS = ("prunelab.sweep", "prunelab.study")


class JobOnly(logging.Filter):
    """A job's run.log holds the job's own lines, not the sweep's: with the basic launcher
    the jobs run in the launching process, whose progress thread logs through the running
    job's handlers; a progress line written before the job claimed its folder made the folder
    look like someone else's (a run.log, no .hydra/) and the job was refused."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(SWEEP_LOGGERS)


class ConsoleLevel(logging.Filter):
    """The console's share of the records under a verbosity (the log file gets more)."""

    def __init__(self, verbosity: str = "normal") -> None:
        super().__init__()
        self.verbosity = verbosity

    def filter(self, record: logging.LogRecord) -> bool:
        if self.verbosity != "quiet" or record.levelno >= logging.WARNING:
            return True
        return record.name == SUMMARY_LOGGER or record.name.startswith(SUMMARY_LOGGER + ".")


def dict_config(verbosity: str = "normal", logfile: str | None = None) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` of prunelab's console (stderr) and optional log file."""
    handlers: dict[str, Any] = {
        "console": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                    "formatter": "console", "filters": ["ads", "console_level"]},
    }
    if logfile:
        handlers["file"] = {"class": "logging.FileHandler", "filename": logfile,
                            "formatter": "file", "filters": ["ads"], "delay": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "console": {"()": "prunelab.messages.ConsoleFormatter"},
            "file": {"format": "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"},
        },
        "filters": {
            "ads": {"()": "prunelab.messages.DropAds"},
            "console_level": {"()": "prunelab.messages.ConsoleLevel", "verbosity": verbosity},
        },
        "handlers": handlers,
        "root": {"level": "INFO", "handlers": list(handlers)},
    }


def setup(verbosity: str = "normal", logfile: str | None = None) -> None:
    """Configure logging for a command outside Hydra (report, evaluate, compact, search)."""
    logging.config.dictConfig(dict_config(check_verbosity(verbosity), logfile))
    apply(verbosity)


def apply(verbosity: str = "normal") -> None:
    """Set levels, filters and warning capture for ``verbosity`` on the handlers in place.

    Called after Hydra configured logging (its job_logging is prunelab's own, see
    ``conf/hydra/job_logging/prunelab.yaml``) and again after Lightning is imported: Lightning
    adds its own console handler to the ``lightning`` logger *and* propagates to the root, which
    printed every Lightning line twice.
    """
    verbosity = check_verbosity(verbosity)
    root = logging.getLogger()
    for h in root.handlers:
        for f in h.filters:
            if isinstance(f, ConsoleLevel):
                f.verbosity = verbosity
    tame_lightning()
    logging.getLogger(LOGGER).setLevel(logging.DEBUG if verbosity == "debug" else logging.INFO)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.INFO if verbosity == "debug" else logging.WARNING)
    for name in _COMPILER:  # compiler internals: statistics at exit, even for a run without it
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    if verbosity != "debug":
        for pattern, _reason in IGNORED_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)


def tame_lightning() -> None:
    """Drop the console handlers Lightning attached to its loggers; the root's handler prints."""
    if "lightning" not in sys.modules and "lightning_fabric" not in sys.modules \
            and "pytorch_lightning" not in sys.modules:
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric",
                 "pytorch_lightning"):
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if type(h) is logging.StreamHandler:
                lg.removeHandler(h)
        lg.propagate = True


def add_verbosity_args(parser: Any) -> None:
    """``--verbosity {quiet,normal,debug}`` and its ``-q`` / ``-v`` shortcuts on an argparse parser."""
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--verbosity", choices=VERBOSITIES, default="normal",
                   help="how much to print: quiet (warnings, errors, the result), normal "
                        "(default: progress too) or debug (also other libraries' messages)")
    g.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const="quiet",
                   help="same as --verbosity quiet")
    g.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const="debug",
                   help="same as --verbosity debug")
