"""Config-group choices that name nothing are errors, before Hydra starts any job.

Hydra skips an ``optional`` default whose file does not exist, so ``experiment=study_mnsit`` (a
typo) used to run the plain default config and report "ok". Every group choice on the command
line, and every group value of a preset's sweep (``hydra.sweeper.params``), is checked against
the options Hydra's own config repository lists — so a user's ``--config-dir`` or
``hydra.searchpath`` options count — and the first unknown one stops the command with one line,
the valid names closest first.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Sequence
from typing import Any

from prunelab.config import ensure_registered, schema_node
from prunelab.errors import ConfigError, closest_first
from prunelab.messages import check_verbosity
from prunelab.objectives import parse as parse_objectives
from prunelab.renamed import current, option_note

CONFIG_NAME = "config"


def unknown_choice(group: str, value: str, options: Iterable[str]) -> ConfigError:
    opts = closest_first(value, current(group, list(options)))
    hint = f" (did you mean {opts[0]}?)" if opts and difflib.get_close_matches(value, opts, 1) else ""
    listed = ", ".join(opts) if opts else "(none)"
    return ConfigError(f"{group}={value}: no such option in group '{group}'{hint}; "
                       f"valid, closest first: {listed}")


def make_loader(conf_dir: str, config_dir: str | None = None) -> Any:
    """Hydra's config loader over prunelab's search path, as ``hydra.main`` builds it.

    ``conf_dir`` is a folder or a search-path entry (``pkg://prunelab.conf`` in a wheel).
    The configs extend the stored schema, so it is registered first, as for any composition
    outside the Hydra app (:func:`prunelab.confsource.initialize`).
    """
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path


    ensure_registered()

    source = conf_dir if "://" in conf_dir else f"file://{conf_dir}"
    search_path = create_config_search_path(source)
    if config_dir is not None:
        search_path.prepend(provider="command-line",
                            path=f"file://{os.path.abspath(config_dir)}")
    return ConfigLoaderImpl(config_search_path=search_path)


def _values(override: Any, options: Sequence[str]) -> list[str]:
    """The option names an override selects: one, a list, or each value of a sweep."""
    from hydra.core.override_parser.types import Glob

    if override.is_sweep_override():
        value = override.value()
        if isinstance(value, Glob):
            matched = value.filter(list(options))
            return matched or [f"glob({','.join(value.include)})"]
        return [str(v) for v in override.sweep_string_iterator()]
    value = override.value()
    if isinstance(value, list):
        return [str(v) for v in value]
    return [override.get_value_element_as_str()]


def check_overrides(loader: Any, overrides: Sequence[str], config_name: str = CONFIG_NAME
                    ) -> list[str]:
    """Raise ConfigError for the first group override whose value is no option of its group;
    return a deprecation line for each value that is the earlier name of a renamed option."""
    from hydra.core.object_type import ObjectType
    from hydra.errors import HydraException

    try:
        parsed, repo = loader._parse_overrides_and_create_caching_repo(config_name, list(overrides))
    except HydraException as err:  # a malformed override: Hydra words it itself
        raise ConfigError(str(err).strip().splitlines()[0]) from None
    notes: list[str] = []
    for o in parsed:
        if o.is_delete():
            continue
        group = o.key_or_group
        if not repo.group_exists(group):
            continue  # a config key such as seed=1, checked by the schema
        options = repo.get_group_options(group, ObjectType.CONFIG)
        for value in _values(o, options):
            if value not in options and value != "null":
                raise unknown_choice(group, value, options)
            note = option_note(group, value)
            if note is not None and note not in notes:
                notes.append(note)
    return notes


def check_model_has_data(loader: Any, overrides: Sequence[str],
                         config_name: str = CONFIG_NAME) -> None:
    """``model=X`` without ``data=...`` needs X's own data set (``data/for_X.yaml``), else one
    line asking for ``data=...`` (Hydra's own message is a multi-line search-path dump)."""
    from hydra.core.object_type import ObjectType
    from hydra.errors import HydraException

    try:
        parsed, repo = loader._parse_overrides_and_create_caching_repo(config_name, list(overrides))
    except HydraException:
        return
    groups = {o.key_or_group: o for o in parsed if not o.is_delete()}
    model = groups.get("model")
    if model is None or "data" in groups or model.is_sweep_override():
        return
    name = model.get_value_element_as_str()
    options = repo.get_group_options("data", ObjectType.CONFIG)
    if f"for_{name}" not in options:
        listed = ", ".join(o for o in options if not o.startswith("for_"))
        raise ConfigError(f"model={name} has no data set of its own (data/for_{name}.yaml): "
                          f"choose one with data=..., e.g. {listed}")


def check_sweeper_params(loader: Any, overrides: Sequence[str], multirun: bool,
                         config_name: str = CONFIG_NAME, nodes: bool = False) -> None:
    """The group values of a preset's ``hydra.sweeper.params`` (e.g. a method list) exist and
    the ``objectives`` are numeric keys of results.json;
    with ``nodes``, also every key of the first job's ``_target_`` nodes
    (:func:`prunelab.run.check_nodes`), so a misspelt key stops a sweep before its first job."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Glob, IntervalSweep
    from hydra.errors import HydraException
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    parser = OverridesParser.create()
    first = []  # one job's overrides: the first value of each sweep
    for o in parser.parse_overrides(list(overrides)):
        if o.is_sweep_override():
            if isinstance(o.value(), Glob):
                continue  # its matches exist by definition
            if isinstance(o.value(), IntervalSweep):  # an Optuna search space: its lower end
                first.append(f"{o.get_key_element()}={o.value().start}")
                continue
            vals = list(o.sweep_string_iterator())
            if vals:
                first.append(f"{o.get_key_element()}={vals[0]}")
        else:
            first.append(o.input_line)
    try:
        cfg = loader.load_configuration(config_name, first,
                                        RunMode.MULTIRUN if multirun else RunMode.RUN)
    except HydraException as err:
        raise composition_error(err) from None
    objectives = OmegaConf.select(cfg, "objectives", default=None)
    if objectives is not None:  # what a sweeper optimises: one line before any job
        parse_objectives(objectives)
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    lines = [f"{k}={v}" for k, v in params.items()]
    if lines:
        check_overrides(loader, lines, config_name)
    if nodes:
        from prunelab.run import check_nodes  # lazy: torch and Lightning (the nodes' targets)

        check_nodes(cfg, first)  # first: the keys typed on the command line


def composition_error(err: Exception) -> ConfigError:
    """Hydra's composition error (a value of the wrong type, a key that does not exist) as one
    line: the override, what is wrong, and for a misspelt key the valid keys, closest first."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    cause = err.__cause__
    key = getattr(cause, "full_key", None)
    if isinstance(cause, ConfigAttributeError | ConfigKeyError) and key:
        parent, _, leaf = str(key).rpartition(".")
        node = OmegaConf.select(schema_node(), parent) if parent else schema_node()
        if OmegaConf.is_dict(node) and len(node):
            keys = closest_first(leaf, [str(k) for k in node])
            prefix = f"{parent}." if parent else ""
            return ConfigError(f"{key}: no such key; valid, closest first: "
                               f"{', '.join(prefix + k for k in keys)}")
        return ConfigError(f"{key}: no such key in the config (to add one: +{key}=...)")
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    detail = str(getattr(cause, "msg", "") or cause or "").strip().splitlines()
    return ConfigError(f"{first}: {detail[0]}" if detail else first)


def hydra_args(argv: Sequence[str]) -> Any:
    """Hydra's own parse of the command line (the flags ``hydra.main`` understands)."""
    from hydra._internal.utils import get_args_parser

    args, _ = get_args_parser().parse_known_args(list(argv))
    return args


def check_one_mode(args: Any) -> None:
    """Hydra runs one mode at a time; it says so with a traceback, here it is one line."""
    given = [flag for flag, on in (("--run", args.run), ("-m/--multirun", args.multirun),
                                   ("--cfg", args.cfg), ("--info", args.info),
                                   ("--shell-completion", args.shell_completion)) if on]
    if len(given) > 1:
        raise ConfigError(f"{' and '.join(given)} given together; use one of --run, "
                          "-m/--multirun, --cfg, --info, --shell-completion at a time")


def check_command_line(conf_dir: str, argv: Sequence[str]) -> list[str]:
    """The pre-flight check of ``python -m prunelab ...``: raise ConfigError on a bad choice;
    return the deprecation lines of renamed options (:data:`prunelab.renamed.OPTIONS`)."""
    args = hydra_args(argv)
    check_one_mode(args)
    if args.shell_completion or args.info:
        return []
    if args.config_dir is not None and not os.path.isdir(args.config_dir):
        return []  # Hydra's own message names the missing folder
    loader = make_loader(conf_dir, args.config_dir)
    name = args.config_name or CONFIG_NAME
    for o in args.overrides:  # also before any folder is made: verbosity=... is a choice too
        if o.startswith("verbosity=") and "," not in o:
            check_verbosity(o.partition("=")[2])
    notes = check_overrides(loader, args.overrides, name)
    check_model_has_data(loader, args.overrides, name)
    # the nodes' keys too, unless only help or the config is asked for
    check_sweeper_params(loader, args.overrides, bool(args.multirun), name,
                         nodes=not (args.help or args.hydra_help or args.cfg))
    return notes
