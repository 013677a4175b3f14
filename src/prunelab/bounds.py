"""The valid range of every number a user gives, stated once, and the one-line checks.

Every count has an upper bound, checked before anything is allocated or read: a typo such as
``pruning.n_steps=1000000000`` is one line, not a process that grows until the machine swaps.
The bounds are far above any real use; each constant below says what it limits.

Each value is checked once, by the code that uses it (a data module its batch sizes, the
schedule its step counts...), with :func:`integer` and :func:`number`, so every message has
one form: ``data.batch_size=0: must be an integer in [1, 1048576]``. The keys that no prunelab
function takes before training starts (the top-level keys, the Lightning Trainer's, the torch
optimizer's and scheduler's, which torch and Lightning check late or not at all) are checked
here, by :func:`check_run_values`, from the tables below.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

from prunelab.errors import ConfigError

MAX_EPOCHS = 100_000  # trainer.max_epochs, and so the epoch of any pruning step
MAX_PLAN_STEPS = 10_000  # pruning steps in one plan (n_steps, a step_size's or rate's count)
MAX_STEPS = 10**9  # counts of optimizer steps or batches (update_every, limit_*_batches, ...)
MAX_BATCH_SIZE = 2**20  # samples in one batch (data.batch_size, compact --batch-sizes)
MAX_GRAD_BATCHES = 1_000  # training batches held or accumulated for gradient statistics
MAX_ITERATIONS = 10_000  # re-scoring rounds within one pruning step (SynFlow's iterations)
MAX_SAMPLES = 2**31 - 1  # a count of samples (data.val_size, data.test_size)
MAX_CLASSES = 100_000  # classes of a classifier
MAX_VOCAB = 10_000_000  # token vocabulary
MAX_LEN = 10_000  # tokens kept per text (each text is padded to it: [N, max_len] int32)
MAX_WIDTH = 65_536  # a layer's width (embedding size, hidden units), a unit multiple (round_to)
MAX_PARAMS = 2**31  # parameters of a network built from sizes in the config (8 GiB as float32)
MAX_COST = 10**11  # a MACs or parameter budget
MAX_THREADS = 4_096  # torch threads
MAX_DEVICES = 4_096  # Lightning devices per node, and nodes
MAX_IMAGE_SIDE = 16_384  # pixels per side of a resized image, or of an example input
MAX_SEED = 2**32 - 1  # seeds (numpy's and Lightning's limit)
MAX_DROP_PTS = 100.0  # accuracy points (--delta, --derive-amounts): accuracy spans 0-100
MAX_SEARCH_ITERS = 30  # bisection halvings (each is a training run; 30 gives 1e-9 steps)
MAX_GRID = 1_000  # amounts in a sensitivity grid, batch sizes in compact --batch-sizes
MAX_SEEDS = 1_000  # seeds of one search (each multiplies its training runs)
MAX_RUN_TIME = 3_600.0  # seconds of latency timing per model and batch size (compact)


def show(value: Any) -> str:
    """A value as the command line writes it (``0``, ``nan``, ``'abc'``)."""
    return f"{value!r}" if isinstance(value, str) else str(value)


def is_int(value: Any) -> bool:
    """An integer, or a float with an integral value (``64.0``); never a bool."""
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Integral):
        return True
    return isinstance(value, float) and math.isfinite(value) and value.is_integer()


def integer(key: str, value: Any, lo: int = 1, hi: int = MAX_STEPS, *,
            null: str | None = None, hint: str = "") -> int | None:
    """``value`` as an int in [lo, hi], else ConfigError naming ``key``, the value and the range.

    ``null``: what ``None`` means, when it is allowed (said in the message); ``hint``: a
    clause after the range (why, or what to do instead).
    """
    if value is None and null is not None:
        return None
    if is_int(value) and lo <= value <= hi:
        return int(value)
    alt = f", or null ({null})" if null is not None else ""
    raise ConfigError(f"{key}={show(value)}: must be an integer in [{lo}, {hi}]{alt}"
                      + (f"; {hint}" if hint else ""))


def number(key: str, value: Any, lo: float = 0.0, hi: float = math.inf, *,
           lo_open: bool = False, hi_open: bool = False, null: str | None = None) -> float | None:
    """``value`` as a finite float in the interval, else ConfigError (as :func:`integer`)."""
    if value is None and null is not None:
        return None
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real)
          and math.isfinite(float(value)))
    if ok:
        v = float(value)
        ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if ok:
        return float(value)
    left, right = "(" if lo_open else "[", ")" if hi_open or hi == math.inf else "]"
    upper = "inf" if hi == math.inf else f"{hi:g}"
    alt = f", or null ({null})" if null is not None else ""
    raise ConfigError(f"{key}={show(value)}: must be a finite number in {left}{lo:g}, {upper}{right}{alt}")


def count_or_fraction(key: str, value: Any, *, empty: bool = True) -> float | int:
    """A held-out size: a count of samples or a fraction of them; 0 only when ``empty``."""
    lo = 0 if empty else 1
    if is_int(value) and lo <= value <= MAX_SAMPLES:
        return int(value)
    fraction = (not isinstance(value, bool) and isinstance(value, numbers.Real)
                and math.isfinite(float(value)) and float(value) < 1)
    if fraction and (float(value) > 0 or (empty and float(value) == 0)):
        return float(value)
    raise ConfigError(f"{key}={show(value)}: must be a count of samples in [{lo}, {MAX_SAMPLES}] "
                      f"or a fraction in {'[' if empty else '('}0, 1)")


# --------------------------------------------------------------------- keys of foreign code

Check = Callable[[str, Any], Any]


def _int(lo: int, hi: int, null: str | None = None) -> Check:
    return lambda key, value: integer(key, value, lo, hi, null=null)


def _num(lo: float, hi: float = math.inf, *, lo_open: bool = False, hi_open: bool = False) -> Check:
    return lambda key, value: number(key, value, lo, hi, lo_open=lo_open, hi_open=hi_open)


def _devices(key: str, value: Any) -> Any:
    """Lightning's ``devices``: a count, ``-1`` (every device), ``"auto"`` or a list of ids."""
    if isinstance(value, str | list | tuple) or value == -1:
        return value
    return integer(key, value, 1, MAX_DEVICES)


def _batches(key: str, value: Any) -> Any:
    """Lightning's ``limit_*_batches``: a count, or a fraction in [0, 1]; null: all."""
    if value is None or is_int(value) and 0 <= value <= MAX_STEPS:
        return value
    if isinstance(value, float) and 0.0 <= value <= 1.0:
        return value
    raise ConfigError(f"{key}={show(value)}: must be a count of batches in [0, {MAX_STEPS}], a "
                      "fraction in [0.0, 1.0], or null (all)")


def _train_batches(key: str, value: Any) -> Any:
    """``limit_train_batches`` as :func:`_batches`, but not 0: a run trains."""
    if value == 0:
        raise ConfigError(f"{key}=0: a run trains; give a count of batches in [1, {MAX_STEPS}], "
                          "a fraction in (0.0, 1.0], or null (all)")
    return _batches(key, value)


def _precision(key: str, value: Any) -> Any:
    """Lightning's precision names (its own list), e.g. ``32-true``, ``bf16-mixed``."""
    from typing import get_args

    from lightning.fabric import connector as c

    valid = [*get_args(c._PRECISION_INPUT_STR), *get_args(c._PRECISION_INPUT_INT),
             *get_args(c._PRECISION_INPUT_STR_ALIAS)]
    if value in valid:
        return value
    raise ConfigError(f"{key}={show(value)}: not a precision Lightning knows; valid: "
                      f"{', '.join(dict.fromkeys(map(str, valid)))}")


#: top-level keys
TOP: dict[str, Check] = {
    "seed": _int(0, MAX_SEED),
    "threads": _int(1, MAX_THREADS, null="torch's default"),
    "progress_refresh_rate": _int(1, MAX_STEPS),
}
#: Trainer arguments (Lightning accepts nan, negative and huge values for most of them)
TRAINER: dict[str, Check] = {
    "max_epochs": lambda k, v: integer(k, v, 1, MAX_EPOCHS, hint=(
        "a run trains, then tests what it trained (to measure a finished model use "
        "python -m prunelab evaluate)")),
    "min_epochs": _int(0, MAX_EPOCHS, null="no minimum"),
    "max_steps": lambda k, v: v if v == -1 else integer(k, v, 1, MAX_STEPS),
    "min_steps": _int(0, MAX_STEPS, null="no minimum"),
    "devices": _devices,
    "num_nodes": _int(1, MAX_DEVICES),
    "precision": _precision,
    "log_every_n_steps": _int(1, MAX_STEPS),
    "num_sanity_val_steps": lambda k, v: v if v == -1 else integer(k, v, 0, MAX_STEPS),
    "limit_train_batches": _train_batches,
    "limit_val_batches": _batches,
    "limit_test_batches": _batches,
    "limit_predict_batches": _batches,
    "check_val_every_n_epoch": _int(1, MAX_EPOCHS, null="validate by val_check_interval"),
    "accumulate_grad_batches": _int(1, MAX_GRAD_BATCHES),
    "gradient_clip_val": lambda k, v: number(k, v, 0.0, null="no clipping"),
}
#: keyword arguments of torch optimizers and LR schedulers (torch lets nan through)
OPTIMIZER: dict[str, Check] = {
    "lr": _num(0.0, lo_open=True),  # no upper bound: too large a rate diverges (exit status 3)
    "momentum": _num(0.0, 1.0),
    "dampening": _num(0.0, 1.0),
    "weight_decay": _num(0.0),
    "eps": _num(0.0, 1.0, lo_open=True),
    "alpha": _num(0.0, 1.0),
    "betas": _num(0.0, 1.0, hi_open=True),  # each of the two
}
SCHEDULER: dict[str, Check] = {
    "max_lr": _num(0.0, lo_open=True),
    "pct_start": _num(0.0, 1.0, lo_open=True, hi_open=True),
    "div_factor": _num(0.0, lo_open=True),
    "final_div_factor": _num(0.0, lo_open=True),
    "total_steps": _int(1, MAX_STEPS),
    "gamma": _num(0.0, 1.0, lo_open=True),
    "step_size": _int(1, MAX_STEPS),
    "T_max": _int(1, MAX_STEPS),
    "eta_min": _num(0.0),
}


def check_section(prefix: str, node: Mapping[str, Any] | None, rules: Mapping[str, Check]) -> None:
    """Apply ``rules`` to the keys of ``node`` that have one; list values entry by entry."""
    for key, check in rules.items():
        if node is None or key not in node:
            continue
        value = node[key]
        if isinstance(value, list | tuple) and key != "devices":
            for i, v in enumerate(value):
                check(f"{prefix}{key}.{i}", v)
        else:
            check(f"{prefix}{key}", value)


def _plain(node: Any) -> Any:
    """A config node as plain containers, interpolations resolved."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def check_run_values(cfg: Mapping[str, Any]) -> None:
    """The top-level, ``trainer``, ``model.optimizer`` and ``model.scheduler`` numbers of a
    run's config.

    Also any float key of the optimizer and scheduler without a rule must be finite: torch
    takes nan without complaint and trains to nan.
    """
    check_section("", {k: cfg.get(k) for k in TOP if k in cfg}, TOP)
    check_section("trainer.", _plain(cfg.get("trainer")), TRAINER)
    model = cfg.get("model") or {}
    for name, rules in (("optimizer", OPTIMIZER), ("scheduler", SCHEDULER)):
        node = _plain(model.get(name))
        if not isinstance(node, Mapping):
            continue
        check_section(f"model.{name}.", node, rules)
        for key, value in node.items():
            values = value if isinstance(value, list | tuple) else [value]
            for v in values:
                if isinstance(v, float) and not math.isfinite(v):
                    raise ConfigError(f"model.{name}.{key}={show(value)}: must be finite")
