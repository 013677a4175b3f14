"""Dataclass schemas for the composed config: a mistyped key or value fails at compose time.

Model and data sections stay free-form (each is ``_target_`` + the constructor's arguments, so a
user's own module needs no schema); everything prunelab itself reads is typed here.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


@dataclass
class TrainerConf:
    description: str = ""  # one line for --help; not a Trainer argument
    max_epochs: int = 3
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    precision: str = "32-true"
    deterministic: bool = False
    log_every_n_steps: int = 50
    num_sanity_val_steps: int = 0
    enable_progress_bar: bool = True
    enable_model_summary: bool = False
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    fast_dev_run: Any = False


@dataclass
class LoggerConf:
    description: str = ""  # one line for --help
    csv: bool = True
    tensorboard: bool = True
    mlflow: Any = None  # {tracking_uri, experiment} (prunelab.trackers), null: none
    wandb: Any = None  # {project, offline}, null: none


@dataclass
class MethodConf:
    name: str = "l1_unstructured"
    description: str = ""  # one line for --help; never part of a run's identity
    scope: str | None = None  # "layer" | "global"; null: the method's own default
    n: float = 2.0  # norm order of ln_structured
    dim: int = 0  # 0: output filters (Conv2d) / output neurons (Linear)
    grad_batches: int = 32  # batches of gradient statistics for taylor / fisher


@dataclass
class TargetsConf:
    types: list[str] = field(default_factory=lambda: ["Conv2d", "Linear"])
    include: list[str] = field(default_factory=list)  # glob, or "re:<regex>", on parameter names
    exclude: list[str] = field(default_factory=list)
    skip_last: bool = True  # leave the final classifier dense
    parameter: str = "weight"


@dataclass
class PruningConf:
    schedule: str = "none"
    description: str = ""  # one line for --help; never part of a run's identity
    amount: float = 0.0  # final target fraction of zeros
    initial: float | None = None
    step_size: float | None = None
    n_steps: int | None = None
    rate: float | None = None
    start_epoch: int = 0
    every: int = 1
    steps: list[Any] | None = None  # explicit: [[epoch, target], ...]
    rewind: bool = False  # lottery ticket: reset survivors to their rewind-point values
    rewind_epoch: int = 0  # 0: initial weights; k: weights after epoch k-1 ends
    make_permanent: bool = True
    # validation batches behind each step's val_acc_after (null: all, 0: none)
    eval_batches: int | None = 1
    compact: bool = False  # after the test: physically remove zeroed filters, measure latency
    round_to: int | None = None  # structured methods: keep a multiple of k filters/neurons
    method: MethodConf = field(default_factory=MethodConf)
    targets: TargetsConf = field(default_factory=TargetsConf)


@dataclass
class Config:
    model: Any = MISSING
    data: Any = MISSING
    trainer: TrainerConf = field(default_factory=TrainerConf)
    logger: LoggerConf = field(default_factory=LoggerConf)
    pruning: PruningConf = field(default_factory=PruningConf)
    seed: int = 0
    data_dir: str = "data"
    ckpt_path: str | None = "last"
    name: str = "default"
    threads: int | None = None
    progress_refresh_rate: int = 20
    verbosity: str = "normal"  # quiet | normal | debug (prunelab.logs)
    description: str = ""  # an experiment preset's one line for --help
    imports: list[str] = field(default_factory=list)  # modules to import first (own criteria)


def _dirname(override_dirname: str) -> str:
    """A job's folder name from its overrides: stable, one level deep, never empty."""
    name = re.sub(r"[/\\]", ".", override_dirname) or "defaults"
    if len(name) > 200:  # keep file-system limits without letting two jobs share a folder
        name = name[:180] + "~" + hashlib.sha1(name.encode()).hexdigest()[:12]
    return name


def _last_target(steps: Any) -> float:
    """``pruning=explicit``'s amount: the last step's target (malformed steps are reported by
    the plan's own validation, so they give 0.0 here rather than an error from a resolver)."""
    try:
        return float(steps[-1][1])
    except (TypeError, IndexError, KeyError, ValueError):
        return 0.0


def register() -> None:
    """Make the schema and the ``prunelab_dirname`` / ``prunelab_name`` resolvers known to Hydra
    (idempotent). ``prunelab_name`` guards the sweep folder: a ``name`` that would lead out of
    ``outputs/sweeps/`` fails when Hydra builds any job's folder from it."""
    from prunelab.outputs import check_name

    ConfigStore.instance().store(name="schema", node=Config)
    if not OmegaConf.has_resolver("prunelab_dirname"):
        OmegaConf.register_new_resolver("prunelab_dirname", _dirname)
    if not OmegaConf.has_resolver("prunelab_name"):
        OmegaConf.register_new_resolver("prunelab_name", check_name)
    if not OmegaConf.has_resolver("prunelab_last_target"):
        OmegaConf.register_new_resolver("prunelab_last_target", _last_target)
    from prunelab.cli_help import register_resolvers

    register_resolvers()  # ${prunelab_options:<group>} of the --help template
