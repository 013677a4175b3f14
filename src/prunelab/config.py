"""The composed config's schema: a mistyped key or value fails at compose time, in one line.

The ``pruning`` section is not written out by hand: it is generated from the typed signatures of
the functions that use it, so each option has one typed definition, in the code that uses it:

* a keyword argument of :meth:`PruningCallback.__init__` is ``pruning.<arg>``, or
  ``pruning.method.<arg>`` for the names in :data:`METHOD_KEYS` (the criterion's knobs, whose
  defaults each ``conf/pruning/method/<name>.yaml`` may set);
* a keyword argument of :func:`build_plan` is ``pruning.<arg>`` (its ``kind`` is
  ``pruning.schedule``);
* an argument of :func:`find_targets` is ``pruning.targets.<arg>``.

So adding an option is: one typed keyword argument with its default (and its line in the
docstring's Args), plus, if a preset needs another value, that value in its YAML; it then
composes, is type-checked, and reaches the object (:func:`callback_kwargs`, :func:`plan_kwargs`).
The annotation decides the key's type (``int``, ``float``, ``bool``, ``str``, ``X | None``,
``Sequence[X]`` → a list, ``Mapping`` → a dict; anything else is untyped); the values are then
checked by the function itself, never here.

The signatures are read from the source files (``ast``), not imported: the command line composes
the config (for ``--help`` and for its one-line errors) before anything imports torch or
Lightning, which takes seconds. A test holds them equal to ``inspect.signature``.

Model and data sections stay free-form (each is ``_target_`` + the constructor's arguments, so a
user's own module needs no schema); so does ``trainer`` (Lightning's Trainer checks its own
arguments) except for the keys prunelab itself reads.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import inspect
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from prunelab.cli.help import register_resolvers
from prunelab.errors import ConfigError, closest_first
from prunelab.outputs import check_name

_SRC = Path(__file__).resolve().parent

# (file under src/prunelab, qualified name) of each function whose arguments are config keys
CALLBACK_SOURCE = ("pruning/callback.py", "PruningCallback.__init__")
PLAN_SOURCE = ("pruning/schedules.py", "build_plan")
TARGETS_SOURCE = ("pruning/targets.py", "find_targets")

# PruningCallback arguments configured per method, under ``pruning.method``
METHOD_KEYS: tuple[str, ...] = ("scope", "n", "dim", "grad_batches", "iterations")
# PruningCallback arguments the pipeline fills in from other keys, and Python-only ones
CALLBACK_FROM_OTHER_KEYS: tuple[str, ...] = ("plan", "method", "targets", "seed",
                                            "dynamic", "dynamic_amount")
PYTHON_ONLY: tuple[str, ...] = ("custom", "verbose")
# Mapping arguments whose keys are config keys (a test keeps them equal to budget.METRICS)
MAPPING_KEYS: dict[str, tuple[str, ...]] = {"budget": ("macs", "params")}
PLAN_KIND = "kind"  # build_plan's schedule name: pruning.schedule
# keys of the ``pruning`` section that the pipeline itself reads (no function's argument)
_PIPELINE_FIELDS: list[tuple[str, Any, Any]] = [
    ("schedule", str, field(default="none")),  # a conf/pruning/<schedule>.yaml: build_plan's kind
    ("description", str, field(default="")),  # one line for --help; never a run's identity
    # after the test: physically remove zeroed filters/neurons and measure latency
    ("compact", bool, field(default=False)),
]
PIPELINE_KEYS: tuple[str, ...] = tuple(name for name, _, _ in _PIPELINE_FIELDS)


@dataclass
class TrainerConf:
    """The Trainer keys prunelab itself reads; any other Lightning Trainer argument is free-form
    (the node is open: Lightning checks its own arguments)."""

    description: str = ""  # one line for --help; not a Trainer argument
    max_epochs: int = 3
    enable_progress_bar: bool = True


@dataclass
class LoggerConf:
    description: str = ""  # one line for --help
    csv: bool = True
    tensorboard: bool = True
    mlflow: Any = None  # {tracking_uri, experiment} (prunelab.trackers), null: none
    wandb: Any = None  # {project, offline}, null: none


# ----------------------------------------------------------------------------- signatures


@dataclass(frozen=True)
class Param:
    """One keyword argument: its name, its annotation as written, its default (or MISSING)."""

    name: str
    annotation: str
    default: Any = MISSING


@functools.cache
def source_params(source: tuple[str, str]) -> tuple[Param, ...]:
    """The parameters of ``source`` = (file under ``src/prunelab``, qualified name), from the
    file's syntax tree: nothing is imported. Defaults must be literals."""
    path, qualname = source
    node: Any = ast.parse((_SRC / path).read_text(), filename=str(_SRC / path))
    for part in qualname.split("."):
        node = next(n for n in node.body if getattr(n, "name", None) == part)
    args = node.args
    positional = [*args.posonlyargs, *args.args]
    defaults = [MISSING] * (len(positional) - len(args.defaults)) + list(args.defaults)
    kw_defaults = [MISSING if d is None else d for d in args.kw_defaults]  # None: no default
    pairs = [*zip(positional, defaults, strict=True), *zip(args.kwonlyargs, kw_defaults, strict=True)]
    out = []
    for arg, default in pairs:
        if arg.arg in ("self", "cls"):
            continue
        try:
            value = MISSING if default is MISSING else ast.literal_eval(default)
        except ValueError:
            raise TypeError(f"{qualname}({arg.arg}={ast.unparse(default)}): a config key's "
                            "default must be a literal (a number, string, None, tuple...)") from None
        out.append(Param(arg.arg, ast.unparse(arg.annotation) if arg.annotation else "Any", value))
    return tuple(out)


def signature_params(obj: Callable[..., Any]) -> tuple[Param, ...]:
    """The same as :func:`source_params`, for any imported callable (``inspect.signature``).

    For a class, its ``__init__``'s; when that passes ``**kwargs`` on, its bases' too (a
    subclass that adds one option to :class:`PruningCallback` has all the callback's keys).
    """
    out: list[Param] = []
    inits = [c.__init__ for c in obj.__mro__ if "__init__" in vars(c)] if isinstance(obj, type) else [obj]
    for fn in inits:
        forwards = False
        for p in inspect.signature(fn).parameters.values():
            forwards |= p.kind == p.VAR_KEYWORD
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in ("self", "cls") or \
                    any(q.name == p.name for q in out):
                continue
            ann = p.annotation
            text = "Any" if ann is p.empty else ann if isinstance(ann, str) else inspect.formatannotation(ann)
            out.append(Param(p.name, text, MISSING if p.default is p.empty else p.default))
        if not forwards:
            break
    return tuple(out)


_SCALARS: dict[str, Any] = {"int": int, "float": float, "bool": bool, "str": str}
_SEQUENCES = {"Sequence", "list", "List", "tuple", "Tuple", "Iterable", "Collection"}
_MAPPINGS = {"Mapping", "dict", "Dict", "MutableMapping"}


def config_type(annotation: str) -> Any:
    """The OmegaConf type of a parameter annotation (see the module docstring); ``Any`` when
    OmegaConf cannot check it (unions of several types, classes)."""
    return _type(ast.parse(annotation, mode="eval").body)


def _type(node: ast.expr) -> Any:
    if isinstance(node, ast.Constant) and node.value is None:
        return type(None)
    if isinstance(node, ast.Name | ast.Attribute):
        name = node.id if isinstance(node, ast.Name) else node.attr
        if name in _SCALARS:
            return _SCALARS[name]
        return list[Any] if name in _SEQUENCES else dict[str, Any] if name in _MAPPINGS else Any
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _union([_type(node.left), _type(node.right)])
    if isinstance(node, ast.Subscript):
        base = node.value.id if isinstance(node.value, ast.Name) else getattr(node.value, "attr", "")
        args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if base == "Optional":
            return _union([_type(args[0]), type(None)])
        if base == "Union":
            return _union([_type(a) for a in args])
        if base in _SEQUENCES:
            homogeneous = len(args) == 1 or (len(args) == 2 and isinstance(args[1], ast.Constant)
                                             and args[1].value is Ellipsis)
            return list[_type(args[0]) if homogeneous else Any]
        if base in _MAPPINGS:
            return dict[str, _type(args[-1])]
        if base == "Literal":
            values = [a.value for a in args if isinstance(a, ast.Constant)]
            kinds = {type(v) for v in values}
            return kinds.pop() if len(kinds) == 1 else Any
    return Any


def _union(members: Iterable[Any]) -> Any:
    flat: list[Any] = []
    for m in members:
        flat += list(get_args(m)) if get_origin(m) in (Union, UnionType) else [m]
    optional = type(None) in flat
    rest = [m for m in flat if m is not type(None)]
    core = rest[0] if len(rest) == 1 else Any
    return core | None if optional and core is not Any else core


def _field(p: Param) -> tuple[str, Any, Any]:
    default = list(p.default) if isinstance(p.default, tuple) else p.default
    if default is None and p.name in MAPPING_KEYS:  # off by default, yet `pruning.budget.macs=N`
        default = dict.fromkeys(MAPPING_KEYS[p.name])  # sets a key that exists (all null: off)
    if isinstance(default, list | dict):
        return p.name, config_type(p.annotation), field(default_factory=lambda d=default: type(d)(d))
    return p.name, config_type(p.annotation), field(default=default)


def _node(name: str, head: Iterable[tuple[str, Any, Any]], params: Iterable[Param],
          tail: Iterable[tuple[str, Any, Any]] = ()) -> type:
    """A dataclass: ``head`` fields, one per parameter, ``tail`` fields; a key twice is an error."""
    fields = [*head, *(_field(p) for p in params), *tail]
    names = [f[0] for f in fields]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise TypeError(f"config keys {twice} of {name} are defined twice (two functions take them)")
    return dataclasses.make_dataclass(name, fields)


def pruning_schema(callback: Sequence[Param] | None = None, plan: Sequence[Param] | None = None,
                   targets: Sequence[Param] | None = None) -> type:
    """The ``pruning`` section's dataclass, from the three signatures (read from the source
    files unless given: a test passes a subclass's)."""
    callback = source_params(CALLBACK_SOURCE) if callback is None else callback
    plan = source_params(PLAN_SOURCE) if plan is None else plan
    targets = source_params(TARGETS_SOURCE) if targets is None else targets
    skip = {*CALLBACK_FROM_OTHER_KEYS, *PYTHON_ONLY}
    method_default = next((p.default for p in callback if p.name == "method"), MISSING)
    method = _node("MethodConf", [
        ("name", str, field(default=method_default)),  # a registered criterion
        ("description", str, field(default="")),  # one line for --help; never a run's identity
    ], [p for p in callback if p.name in METHOD_KEYS])
    targets_node = _node("TargetsConf", [], [p for p in targets if p.name != "model"])
    return _node(
        "PruningConf",
        _PIPELINE_FIELDS,
        [*(p for p in plan if p.name != PLAN_KIND),
         *(p for p in callback if p.name not in skip and p.name not in METHOD_KEYS)],
        [("method", method, field(default_factory=method)),
         ("targets", targets_node, field(default_factory=targets_node))],
    )


def schema(pruning: type | None = None) -> type:
    """The whole config's dataclass (``pruning``: :func:`pruning_schema`'s, by default)."""
    pruning = pruning_schema() if pruning is None else pruning
    return dataclasses.make_dataclass("Config", [
        ("model", Any, field(default=MISSING)),
        ("data", Any, field(default=MISSING)),
        ("trainer", TrainerConf, field(default_factory=TrainerConf)),
        ("logger", LoggerConf, field(default_factory=LoggerConf)),
        ("pruning", pruning, field(default_factory=pruning)),
        ("seed", int, field(default=0)),
        ("data_dir", str, field(default="data")),
        ("ckpt_path", str | None, field(default="last")),
        ("name", str, field(default="default")),
        ("threads", int | None, field(default=None)),
        ("progress_refresh_rate", int, field(default=20)),
        ("verbosity", str, field(default="normal")),  # quiet | normal | debug (prunelab.logs)
        ("description", str, field(default="")),  # an experiment preset's one line for --help
        ("imports", list[str], field(default_factory=list)),  # modules to import first
    ])


def schema_node(pruning: type | None = None) -> DictConfig:
    """:func:`schema` as the node Hydra composes onto: ``trainer`` open to any Trainer argument."""
    node = OmegaConf.structured(schema(pruning))
    OmegaConf.set_struct(node.trainer, False)
    return node


# ----------------------------------------------------------------------------- translation


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def plan_kwargs(pruning: DictConfig) -> dict[str, Any]:
    """``build_plan``'s arguments from the ``pruning`` section: ``kind`` = ``schedule``."""
    names = [p.name for p in source_params(PLAN_SOURCE)]
    kwargs = {n: _plain(pruning[n]) for n in names if n != PLAN_KIND and n in pruning}
    return {PLAN_KIND: pruning.schedule, **kwargs}


def callback_kwargs(cfg: DictConfig, plan: Any) -> dict[str, Any]:
    """The callback's arguments: every key of ``pruning`` and ``pruning.method`` that is not the
    plan's or the pipeline's, plus ``plan``, ``method``, ``targets`` and ``seed``. No list of
    fields: what the schema (generated from the signature) holds is passed on."""
    p = cfg.pruning
    not_callback = {*(n.name for n in source_params(PLAN_SOURCE)), *PIPELINE_KEYS,
                    "method", "targets"}
    kwargs = {k: _plain(v) for k, v in p.items() if k not in not_callback}
    kwargs.update({k: _plain(v) for k, v in p.method.items() if k not in ("name", "description")})
    from prunelab.pruning.schedules import DYNAMIC_KINDS  # lazy: the package imports torch

    if p.schedule in DYNAMIC_KINDS:  # pruning=set / rigl: sparse from the start at amount
        kwargs.update(dynamic=p.schedule, dynamic_amount=float(p.amount))
    return {"plan": plan, "method": p.method.name, "targets": _plain(p.targets),
            "seed": int(cfg.seed), **kwargs}


# ----------------------------------------------------------------------------- messages

# an argument whose config key is not ``pruning.<arg>`` (the rest, see :func:`config_key`)
_ARG_KEYS = {"method": "pruning/method", "dynamic": "pruning", "dynamic_amount": "pruning.amount", "seed": "seed",
             PLAN_KIND: "pruning.schedule"}


def config_key(arg: str) -> str:
    """The command line's key for an argument of the callback, ``build_plan`` or ``find_targets``
    (``targets``: the ``pruning.targets`` node)."""
    if arg in _ARG_KEYS:
        return _ARG_KEYS[arg]
    return f"pruning.method.{arg}" if arg in METHOD_KEYS else f"pruning.{arg}"


@functools.cache
def _arg_pattern() -> re.Pattern[str]:
    names = {p.name for src in (CALLBACK_SOURCE, PLAN_SOURCE) for p in source_params(src)}
    names -= {*PYTHON_ONLY, "plan"}
    alternatives = "|".join(sorted((re.escape(n) for n in names), key=len, reverse=True))
    # ``arg=value`` or ``arg.key`` (targets.include, budget.macs), not already part of a key
    return re.compile(rf"(?<![\w./=-])({alternatives})(?==|\.[a-z])")


def command_line_message(message: str) -> str:
    """A library message, which names Python arguments (``round_to=3``, ``targets.include``),
    with the command line's keys instead (``pruning.round_to=3``, ``pruning.targets.include``).
    The library speaks to Python callers; the Hydra layer only translates."""
    out = _arg_pattern().sub(lambda m: config_key(m.group(1)), message)
    # a group choice is written unquoted on the command line: pruning/method=taylor
    return re.sub(r"(?<![\w./=-])(pruning/method|pruning)='([\w.-]+)'", r"\1=\2", out)


# ----------------------------------------------------------------------------- unread keys

# PruningCallback arguments that only dynamic sparse training (pruning=set / rigl) reads
DYNAMIC_KEYS: tuple[str, ...] = ("update_every", "alpha", "stop_fraction", "distribution")
_OVERRIDE = re.compile(r"^(\+\+|\+)?([A-Za-z_][\w.]*)=(.*)$")


def check_keys(cfg: DictConfig, overrides: Sequence[str] = ()) -> None:
    """Refuse, in one line, a key the run would not read.

    * a top-level or ``logger`` key that the schema lacks, added with ``+foo=bar`` (the model,
      data and trainer sections are open: their classes check their own arguments);
    * a ``pruning.*`` key given on the command line (``overrides``) that the chosen schedule
      does not read: ``pruning=none pruning.amount=0.5``, ``pruning=iterative
      pruning.n_steps=5`` while ``pruning.step_size`` is set. A preset's values for other
      schedules stay allowed (``experiment=study_mnist pruning=none``), as does ``key=null``.
    """
    # lazy: the prunelab.pruning package imports Lightning; composing a config must not
    from prunelab.pruning.schedules import DYNAMIC_KINDS, plan_keys

    top = [f.name for f in dataclasses.fields(schema(dataclasses.make_dataclass("P", [])))]
    for prefix, have, valid in (("", cfg, top),
                                ("logger.", cfg.get("logger"), [f.name for f in dataclasses.fields(LoggerConf)])):
        extra = [k for k in (have or {}) if k not in valid]
        if extra:
            key = f"{prefix}{extra[0]}"
            raise ConfigError(f"{key}={OmegaConf.select(cfg, key)}: no such key; valid, closest "
                              f"first: {', '.join(prefix + k for k in closest_first(extra[0], valid))}")
    p = cfg.pruning
    kind = p.schedule
    used = set(plan_keys(kind, step_size=p.get("step_size"), rate=p.get("rate")))
    plan = {q.name for q in source_params(PLAN_SOURCE)}
    for o in overrides:
        m = _OVERRIDE.match(o)
        if not m or not m.group(2).startswith("pruning.") or m.group(3) in ("null", "~"):
            continue
        key, value = m.group(2), m.group(3)
        arg = key.split(".")[1]
        if kind == "none" and arg not in (*PIPELINE_KEYS, "schedule"):
            raise ConfigError(f"{key}={value}: pruning=none trains dense and reads no pruning "
                              "key; choose a schedule (e.g. pruning=one_shot) or drop it")
        if (arg in plan and arg not in used) or (arg in DYNAMIC_KEYS and kind not in DYNAMIC_KINDS):
            why = ""
            if arg == "n_steps" and "step_size" in used:
                why = f" while pruning.step_size={p.step_size} is set (pruning.step_size=null: n_steps steps)"
            elif arg in ("step_size", "n_steps", "initial") and "rate" in used:
                why = f" while pruning.rate={p.rate} is set (pruning.rate=null: the iterative targets)"
            reads = ", ".join(f"pruning.{k}" for k in sorted(used)) or "no plan key"
            raise ConfigError(f"{key}={value}: pruning={kind} does not use it{why}; it reads "
                              f"{reads}")


# ----------------------------------------------------------------------------- resolvers


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


_stored: dict[str, Any] = {}  # the pruning section the ConfigStore's schema holds


def register(pruning: type | None = None) -> None:
    """Make the schema and the ``prunelab_dirname`` / ``prunelab_name`` resolvers known to Hydra
    (idempotent and cheap after the first call; ``pruning`` replaces the generated pruning
    section, for tests). ``prunelab_name`` guards the sweep folder: a ``name`` that would lead
    out of ``outputs/sweeps/`` fails when Hydra builds any job's folder from it."""
    if "pruning" not in _stored or _stored["pruning"] is not pruning:
        ConfigStore.instance().store(name="schema", node=schema_node(pruning))
        _stored["pruning"] = pruning
    if not OmegaConf.has_resolver("prunelab_dirname"):
        OmegaConf.register_new_resolver("prunelab_dirname", _dirname)
    if not OmegaConf.has_resolver("prunelab_name"):
        OmegaConf.register_new_resolver("prunelab_name", check_name)
    if not OmegaConf.has_resolver("prunelab_last_target"):
        OmegaConf.register_new_resolver("prunelab_last_target", _last_target)
    register_resolvers()  # ${prunelab_options:<group>} and ${prunelab_commands:} of --help


def ensure_registered() -> None:
    """:func:`register` for code that composes outside the Hydra app: the generated schema if
    none is registered yet, else the one registered (a test's own pruning section stays)."""
    register(_stored.get("pruning"))
