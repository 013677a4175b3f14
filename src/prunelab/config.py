"""The composed config's schema for what prunelab itself reads, and its resolvers.

The components are ``_target_`` nodes whose class is their schema: ``pruning`` (the
:class:`~prunelab.pruning.PruningCallback`, with ``pruning.schedule``, ``pruning.method`` and
``pruning.targets`` nodes of their own), ``trainer`` (``lightning.Trainer``), each logger under
``logger``, and ``model`` and ``data``. Those nodes are open here: a key goes in as typed and is
checked, once, when :mod:`prunelab.components` builds the node (a key the target does not take
is one line naming it and the valid ones) and by the object itself (its values). This schema
types the top-level keys and the Trainer keys prunelab reads, at compose time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from prunelab.cli.help import register_resolvers
from prunelab.outputs import check_name


@dataclass
class TrainerConf:
    """The Trainer keys prunelab itself reads; any other Lightning Trainer argument is
    accepted here and checked against ``lightning.Trainer``'s signature when it is built."""

    _target_: str = "lightning.Trainer"
    description: str = ""  # one line for --help; not a Trainer argument
    max_epochs: int = 3
    enable_progress_bar: bool = True


@dataclass
class Config:
    model: Any = MISSING
    data: Any = MISSING
    trainer: TrainerConf = field(default_factory=TrainerConf)
    logger: Any = field(default_factory=dict)  # a node per logger (prunelab.curves)
    pruning: Any = field(default_factory=dict)  # the PruningCallback's node
    quantize: Any = field(default_factory=dict)  # the quantize stage's node (prunelab.quantize)
    seed: int = 0
    data_dir: str = "data"
    ckpt_path: str | None = "last"
    name: str = "default"
    threads: int | None = None
    progress_refresh_rate: int = 20
    verbosity: str = "normal"  # quiet | normal | debug (prunelab.messages)
    description: str = ""  # an experiment preset's one line for --help
    imports: list[str] = field(default_factory=list)  # modules to import first
    # what a sweeper optimises (prunelab.objectives): numeric keys of results.json, :max or :min
    objectives: list[str] = field(default_factory=lambda: ["val_acc:max"])


#: the nodes whose keys their targets check (open at compose time)
OPEN_NODES = ("trainer", "logger", "pruning", "quantize")


def schema_node() -> DictConfig:
    """:class:`Config` as the node Hydra composes onto, with :data:`OPEN_NODES` open."""
    node = OmegaConf.structured(Config)
    for key in OPEN_NODES:
        OmegaConf.set_struct(node[key], False)
    return node


def schema_keys() -> tuple[str, ...]:
    """The top-level keys (for the command line's closest-key hints)."""
    return tuple(f.name for f in dataclasses.fields(Config))


# ----------------------------------------------------------------------------- resolvers


def _dirname(overrides: Any, exclude: Any = ()) -> str:
    """A job's folder name from its overrides (Hydra's ``override_dirname``, built here): stable,
    one level deep, never empty. A schedule key is written ``pruning.<key>``, as before it had a
    node of its own, so ``pruning.schedule.amount=0.5`` and the older ``pruning.amount=0.5``
    name one folder (and sweeps launched by earlier releases find their jobs)."""
    if isinstance(overrides, str):  # an override_dirname already joined
        joined = overrides
    else:
        # an override's key as Hydra's key_or_group: ``+trainer.x=1`` → ``trainer.x``
        lines = sorted(re.sub(r"^([+~]*)pruning\.schedule\.", r"\1pruning.", str(o))
                       for o in overrides
                       if str(o).split("=", 1)[0].lstrip("+~") not in set(exclude or ()))
        joined = ",".join(lines)
    name = re.sub(r"[/\\]", ".", joined) or "defaults"
    if len(name) > 200:  # keep file-system limits without letting two jobs share a folder
        name = name[:180] + "~" + hashlib.sha1(name.encode()).hexdigest()[:12]
    return name


_stored: dict[str, Any] = {}


def register() -> None:
    """Make the schema and the ``prunelab_dirname`` / ``prunelab_name`` resolvers known to Hydra
    (idempotent and cheap after the first call). ``prunelab_name`` guards the sweep folder: a
    ``name`` that would lead out of ``outputs/sweeps/`` fails when Hydra builds any job's folder."""
    if "schema" not in _stored:
        ConfigStore.instance().store(name="schema", node=schema_node())
        _stored["schema"] = True
    if not OmegaConf.has_resolver("prunelab_dirname"):
        OmegaConf.register_new_resolver("prunelab_dirname", _dirname)
    if not OmegaConf.has_resolver("prunelab_name"):
        OmegaConf.register_new_resolver("prunelab_name", check_name)
    register_resolvers()  # ${prunelab_options:<group>} and ${prunelab_commands:} of --help


def ensure_registered() -> None:
    """:func:`register` for code that composes outside the Hydra app (idempotent)."""
    register()
