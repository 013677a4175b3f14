"""Which parameters a pruning run touches, found from module types and name patterns.

The callback never knows a concrete model: it asks for ``(module, parameter)`` pairs here. A
LightningModule may also declare them itself with a ``prunable_parameters()`` method returning
``[(module, "weight"), ...]`` (as OpenLTH models do).
"""

from __future__ import annotations

import fnmatch
import inspect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from prunelab.errors import ConfigError

PRUNABLE_TYPES: dict[str, type[nn.Module]] = {
    "Conv1d": nn.Conv1d,
    "Conv2d": nn.Conv2d,
    "Conv3d": nn.Conv3d,
    "Linear": nn.Linear,
    "Embedding": nn.Embedding,
}


@dataclass(frozen=True)
class Target:
    """One prunable tensor: ``module.<parameter>``, known to users as ``name`` (``net.fc1.weight``)."""

    name: str
    module: nn.Module
    parameter: str


def _matches(name: str, pattern: str) -> bool:
    if pattern.startswith("re:"):
        return re.search(pattern[3:], name) is not None
    return fnmatch.fnmatchcase(name, pattern)


def validate_patterns(include: Sequence[str] = (), exclude: Sequence[str] = ()) -> None:
    """Every ``re:`` pattern must compile; a broken regex is bad input, not a traceback."""
    for key, patterns in (("include", include), ("exclude", exclude)):
        for pattern in patterns:
            if str(pattern).startswith("re:"):
                try:
                    re.compile(pattern[3:])
                except re.error as err:
                    raise ConfigError(
                        f"{key} pattern {pattern!r} is not a valid regular "
                        f"expression ({err}); fix it or use a glob without the re: prefix"
                    ) from None


def check_types(types: Sequence[str]) -> None:
    """Every name is one of :data:`PRUNABLE_TYPES`."""
    unknown = [t for t in types if t not in PRUNABLE_TYPES]
    if unknown:
        raise ConfigError(f"types has unknown module type(s) {unknown}; valid: {sorted(PRUNABLE_TYPES)}")


def find_targets(
    model: nn.Module,
    types: Sequence[str] = ("Conv2d", "Linear"),
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    skip_last: bool = True,
    parameter: str = "weight",
) -> list[Target]:
    """The tensors to prune, in module order.

    ``skip_last`` leaves the final Conv/Linear layer (the classifier) dense, as pruning it costs
    accuracy for few weights. ``include``/``exclude`` are globs (or ``re:`` regexes) on the full
    parameter name; an ``include`` pattern that matches nothing is an error, not a silent no-op.
    Each keyword argument is also a field of :class:`Targets` (``pruning.targets.<name>``).
    """
    return Targets(types=types, include=include, exclude=exclude, skip_last=skip_last,
                   parameter=parameter).find(model)


def _select(model: nn.Module, types: Sequence[str], include: Sequence[str],
            exclude: Sequence[str], skip_last: bool, parameter: str) -> list[Target]:
    """:func:`find_targets` of arguments already checked (:class:`Targets`)."""
    classes = tuple(PRUNABLE_TYPES[t] for t in types)
    found = []
    for mod_name, module in model.named_modules():
        if isinstance(module, classes) and _has_param(module, parameter):
            found.append(Target(f"{mod_name}.{parameter}" if mod_name else parameter, module, parameter))
    if skip_last and found and not include:
        layers = [t for t in found if not isinstance(t.module, nn.Embedding)]
        if layers:
            found.remove(layers[-1])
    for pattern in include:
        if not any(_matches(t.name, pattern) for t in found):
            raise ConfigError(
                f"targets.include pattern {pattern!r} matches no parameter; "
                f"candidates: {[t.name for t in found]}"
            )
    if include:
        found = [t for t in found if any(_matches(t.name, p) for p in include)]
    for pattern in exclude:
        if not any(_matches(t.name, pattern) for t in found):
            raise ConfigError(
                f"targets.exclude pattern {pattern!r} matches no parameter; "
                f"candidates: {[t.name for t in found]}"
            )
        found = [t for t in found if not _matches(t.name, pattern)]
    if not found:
        raise ConfigError(
            f"no parameter to prune: types={list(types)}, include={list(include)}, "
            f"exclude={list(exclude)} select nothing in {type(model).__name__}"
        )
    return found


def _has_param(module: nn.Module, parameter: str) -> bool:
    # a module already pruned by torch keeps its tensor as <parameter>_orig
    return isinstance(getattr(module, parameter, None), nn.Parameter) or hasattr(
        module, parameter + "_orig"
    )


@dataclass(frozen=True, kw_only=True)
class Targets:
    """Which tensors a run prunes: :func:`find_targets`'s arguments, checked once here.

    The ``pruning.targets`` node (``_target_: prunelab.pruning.targets.Targets``); a module
    that declares ``prunable_parameters()`` is not searched.
    """

    types: Sequence[str] = ("Conv2d", "Linear")
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    skip_last: bool = True
    parameter: str = "weight"

    def __post_init__(self) -> None:
        for key in ("types", "include", "exclude"):
            value = getattr(self, key)
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise ConfigError(f"{key}={value!r} must be a list of names")
            object.__setattr__(self, key, tuple(str(v) for v in value))
        check_types(self.types)
        validate_patterns(self.include, self.exclude)

    @classmethod
    def of(cls, targets: Targets | Mapping[str, Any] | None) -> Targets:
        """``targets`` as given, or from a dict of its fields (a misspelt one is one line)."""
        if isinstance(targets, Targets):
            return targets
        given = dict(targets or {})
        valid = [k for k in inspect.signature(find_targets).parameters if k != "model"]
        unknown = sorted(set(given) - set(valid))
        if unknown:
            raise ConfigError(f"targets has unknown key(s) {unknown}; valid keys: {', '.join(valid)}")
        return cls(**given)

    def find(self, model: nn.Module) -> list[Target]:
        """The tensors of ``model`` these settings select (see :func:`find_targets`)."""
        return _select(model, self.types, self.include, self.exclude, self.skip_last, self.parameter)
