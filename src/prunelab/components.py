"""Config nodes → objects: the one place a ``_target_`` node is checked and built.

A node names its class (or function) with ``_target_``; its other keys are that target's
arguments, a node among them built first and passed as the object (``pruning.schedule``,
``pruning.method`` inside the ``pruning`` callback node). So the target's signature is the
node's schema: :func:`check` refuses a key the target does not take, or a required one that is
missing, in one line that names the key and the valid ones, before anything is built; the
values are then checked by the object itself (its ``__post_init__`` or constructor), and a
:class:`~prunelab.errors.PrunelabError` it raises gets the node's path (``amount=1.5 must ...``
becomes ``pruning.schedule.amount=1.5 must ...``). ``description`` is help text in any node,
never an argument. :func:`canonical` completes nodes with their targets' defaults, so two
spellings of one configuration compare equal (a resume's identity check).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any

from hydra.utils import get_object, instantiate

from prunelab.errors import ConfigError, PrunelabError, unknown_key

TARGET = "_target_"
#: keys of any node that are help text, never an argument
DECLARATIONS = ("description",)


def is_node(value: Any) -> bool:
    """Whether ``value`` is a (plain) ``_target_`` node."""
    return isinstance(value, Mapping) and TARGET in value


def target_of(node: Mapping[str, Any], path: str) -> Any:
    """The class or function a node names; one line when it cannot be imported."""
    name = node[TARGET]
    try:
        return get_object(str(name))
    except Exception as err:
        cause = err.__cause__ or err
        raise ConfigError(f"{path}._target_={name!r} cannot be imported ({type(cause).__name__}: "
                          f"{str(cause).splitlines()[0][:120] if str(cause) else ''}); check the "
                          "name, or add its package to PYTHONPATH") from None


def owner(target: Any, node: Mapping[str, Any]) -> str:
    """How messages name a node's target: a schedule's or criterion's registered name (``agp``,
    ``taylor``), else its ``_target_``."""
    for attr in ("name", "criterion"):
        value = getattr(target, attr, None)
        if isinstance(value, str) and value:
            return value
    return str(node.get("criterion") or node[TARGET])


def component_name(node: Any) -> str | None:
    """The name a saved node's target goes by (``agp``, ``taylor``), or None if it cannot tell."""
    if not is_node(node):
        return None
    try:
        return owner(get_object(str(node[TARGET])), node)
    except Exception:
        return None


def parameters(target: Any) -> tuple[dict[str, inspect.Parameter], bool]:
    """The target's keyword parameters by name, and whether it takes any other (``**kwargs``).

    A class whose ``__init__`` passes ``**kwargs`` on to its base has its base's parameters
    too (a subclass of :class:`~prunelab.pruning.PruningCallback` that adds one option takes
    all the callback's keys, and no others)."""
    inits = ([c.__init__ for c in target.__mro__ if "__init__" in vars(c) and c is not object]
             if isinstance(target, type) else [target])
    named: dict[str, inspect.Parameter] = {}
    for fn in inits or [target]:
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return named, True
        for n, p in sig.parameters.items():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in ("self", "cls"):
                named.setdefault(n, p)
        if not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            return named, False
    return named, True


def arguments(node: Mapping[str, Any]) -> dict[str, Any]:
    """A node's arguments: without ``_target_`` and the declarations."""
    return {k: v for k, v in node.items() if k != TARGET and k not in DECLARATIONS}


def check(node: Mapping[str, Any], path: str, given: tuple[str, ...] = ()) -> None:
    """Every key of ``node`` (and of the nodes in it) is an argument of its target, every
    required argument is there; ``given`` are the arguments the caller passes itself."""
    target = target_of(node, path)
    params, open_ = parameters(target)
    valid = [n for n in params if n not in given]
    args = arguments(node)
    for key, value in args.items():
        if key in given or (key not in params and not open_):
            raise unknown_key(f"{path}.{key}", owner(target, node), valid)
        if is_node(value):
            check(value, f"{path}.{key}")
    missing = [n for n, p in params.items() if p.default is p.empty and n not in args
               and n not in given]
    if missing:
        raise ConfigError(f"{path}: {owner(target, node)} needs {', '.join(missing)} "
                          f"(e.g. {path}.{missing[0]}=...)")


def build(node: Mapping[str, Any], path: str, **given: Any) -> Any:
    """The object a plain node describes, its nested nodes built first; ``given`` are passed
    as they are (objects the pipeline makes: callbacks, the run folder...)."""
    check(node, path, tuple(given))
    return _build(node, path, given)


def _build(node: Mapping[str, Any], path: str, given: Mapping[str, Any]) -> Any:
    args = arguments(node)
    built = {k: _build(v, f"{path}.{k}", {}) for k, v in args.items() if is_node(v)}
    plain = {k: v for k, v in args.items() if k not in built}
    # Hydra resolves the target and binds the plain arguments; the call is ours, so an error
    # the object raises comes through as itself
    make = instantiate({TARGET: node[TARGET], "_partial_": True, "_convert_": "all", **plain})
    try:
        return make(**built, **given)
    except PrunelabError as err:
        raise located(err, path, tuple(args)) from None


def located(err: PrunelabError, path: str, keys: tuple[str, ...]) -> PrunelabError:
    """``err`` with its message placed at ``path``: ``amount=1.5 ...`` → ``<path>.amount=1.5 ...``
    when it starts with one of the node's ``keys``, else ``<path>: ...``."""
    message = str(err)
    if any(message.startswith((f"{k}=", f"{k}:", f"{k} ", f"{k}.")) for k in keys):
        new = f"{path}.{message}"
    elif message.startswith((f"{path}.", f"{path}:", f"{path}=")):  # placed there already
        new = message
    else:
        new = f"{path}: {message}"
    err.args = (new, *err.args[1:])
    return err


def canonical(node: Any) -> Any:
    """``node`` with every ``_target_`` node completed with its target's defaults (recursively);
    tuples as lists. Two configs that build the same objects compare equal."""
    if isinstance(node, Mapping):
        out = {k: canonical(v) for k, v in node.items()}
        if TARGET in node:
            try:
                params, _ = parameters(get_object(str(node[TARGET])))
            except Exception:
                return out
            for name, p in params.items():
                if name not in out and p.default is not p.empty and _plain(p.default):
                    out[name] = canonical(_as_config(p.default))
        return out
    if isinstance(node, list | tuple):
        return [canonical(v) for v in node]
    return node


def _as_config(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {TARGET: f"{type(value).__module__}.{type(value).__qualname__}",
                **{f.name: _as_config(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    return list(value) if isinstance(value, tuple) else value


def _plain(value: Any) -> bool:
    """Whether a default can stand in a config (a number, text, None, a list of those...)."""
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    return dataclasses.is_dataclass(value) and not isinstance(value, type)
