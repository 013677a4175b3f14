"""Help texts generated from the configs, and one argparse style for every prunelab command.

``prunelab --help`` renders ``conf/hydra/help/prunelab.yaml``, whose
``${prunelab_options:<group>}`` lines this module fills in: every option Hydra's config
repository finds for the group (a user's ``--config-dir`` and ``hydra.searchpath`` included),
each with the ``description:`` line of its YAML file — the one place that text is kept.
``${prunelab_commands:}`` lists the subcommands of :data:`prunelab.cli.commands.COMMANDS`.
"""

from __future__ import annotations

import argparse
import re
import shutil
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from prunelab.allowlist import ALLOW_ENV
from prunelab.cli.commands import COMMANDS, command_summary
from prunelab.renamed import current

RESOLVER = "prunelab_options"
COMMANDS_RESOLVER = "prunelab_commands"


def describe(repo: Any, group: str, option: str) -> str:
    """The option's one-line description: its ``description:`` key, else its first comment."""
    try:
        result = repo.load_config(f"{group}/{option}")
    except Exception:
        return ""
    if result is None:
        return ""
    cfg = result.config
    text = None
    if isinstance(cfg, DictConfig):
        text = OmegaConf.select(cfg, "description", default=None,
                                throw_on_resolution_failure=False)
        if not text:  # a `# @package _global_` file keeps it under its own section
            text = OmegaConf.select(cfg, f"{group.split('/')[0]}.description", default=None,
                                    throw_on_resolution_failure=False)
    if not text and str(result.path).startswith("file://"):  # path: the search-path root
        text = _first_comment(Path(str(result.path)[len("file://"):]) / f"{group}/{option}.yaml")
    return " ".join(str(text or "").split())


def _first_comment(path: Path) -> str:
    """The first sentence of a YAML file's leading comment (not a ``# @package`` header)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return ""
    words: list[str] = []
    for line in lines:
        line = line.strip()
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text.startswith("@"):
            continue
        if not text:
            if words:
                break
            continue
        words.append(text)
    para = " ".join(words)
    m = re.search(r"(?<=[.!?])\s", para)
    return para[: m.start()] if m else para


def options_with_descriptions(group: str, loader: Any = None, config_name: str = "config",
                              overrides: Sequence[str] = ()) -> list[tuple[str, str]]:
    """(option, description) for every option of ``group`` in the config search path (the
    earlier names of renamed options left out)."""
    from hydra.core.object_type import ObjectType

    if loader is None:
        from hydra.core.global_hydra import GlobalHydra

        loader = GlobalHydra.instance().config_loader()
    _, repo = loader._parse_overrides_and_create_caching_repo(config_name, list(overrides))
    names = current(group, repo.get_group_options(group, ObjectType.CONFIG))
    return [(n, describe(repo, group, n)) for n in names]


def format_options(group: str, items: list[tuple[str, str]], chosen: str | None = None,
                   width: int | None = None, hide_undescribed: bool = False) -> str:
    """The indented listing of one group: ``* name   description`` (wrapped)."""
    width = width or min(max(shutil.get_terminal_size((100, 20)).columns, 70), 110)
    items = [(n, d) for n, d in items if d or not hide_undescribed]
    if not items:
        return "    (no options found)"
    col = min(max(len(n) for n, _ in items) + 2, 24)
    lines = []
    for name, desc in items:
        mark = "*" if name == chosen else " "
        head = f"  {mark} {name:<{col}}"
        if len(name) >= col:
            head += " "
        # never split "fine-tune" at its hyphen: a description stays greppable at any width
        body = textwrap.wrap(desc or "(no description)", width=max(width - len(head), 30),
                             break_on_hyphens=False) or [""]
        lines.append(head + body[0])
        lines += [" " * len(head) + b for b in body[1:]]
    return "\n".join(lines)


def _options_resolver(group: str) -> str:
    """``${prunelab_options:<group>}`` in the help template (resolved while Hydra shows help)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        # Hydra also dereferences the template while it merges the config of every launch and
        # compose (before HydraConfig is set), where listing every group would slow each one.
        # The help text itself is rendered after HydraConfig is set (Hydra's app_help).
        return ""
    hc = HydraConfig.get()
    overrides = list(hc.overrides.task)
    config_name = hc.job.config_name or "config"
    chosen = hc.runtime.choices.get(group)
    items = options_with_descriptions(group, config_name=config_name, overrides=overrides)
    # Hydra's and its plugins' own options (the basic launcher ...) have no description
    text = format_options(group, items, chosen=chosen, hide_undescribed=group.startswith("hydra/"))
    return text.replace("$", "$$")  # the template goes through string.Template afterwards


def format_commands(width: int | None = None) -> str:
    """The subcommands of :data:`prunelab.cli.commands.COMMANDS`, one wrapped line each."""
    return format_options("commands", [(n, command_summary(n)) for n in COMMANDS], width=width)


def _commands_resolver() -> str:
    return format_commands().replace("$", "$$")  # string.Template comes afterwards


def register_resolvers() -> None:
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, _options_resolver, use_cache=False)
    if not OmegaConf.has_resolver(COMMANDS_RESOLVER):
        OmegaConf.register_new_resolver(COMMANDS_RESOLVER, _commands_resolver, use_cache=False)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Paragraphs and examples as written; an option's default shown when it has a real one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or not action.option_strings
                or action.default in (None, False, [], argparse.SUPPRESS)):
            return text
        return text + " (default: %(default)s)"


def make_parser(prog: str, doc: str, examples: Sequence[tuple[str, str]],
                reference: str = "docs/guide/cli.md and README.md") -> argparse.ArgumentParser:
    """An argparse parser in prunelab's style: what it does, options, examples, where to read more.

    ``prog`` is the command as typed (``prunelab report``); ``doc`` is the command's description
    (its first paragraph is used); ``examples`` are (command, what it does) pairs.
    """
    first = doc.strip().split("\n\n")[0]
    first = re.sub(r"^``[^`]+``:\s*", "", " ".join(first.split()))  # not the command's name again
    first = re.sub(r"``([^`]+)``", r"\1", first)
    first = first[:1].upper() + first[1:]
    epilog = ["examples:"]
    for cmd, what in examples:
        epilog.append(f"  {cmd}")
        epilog += [f"      {line}" for line in textwrap.wrap(what, 80)]
    epilog.append("")
    epilog.append(f"Full reference: {reference}.")
    return argparse.ArgumentParser(prog=prog, description=textwrap.fill(first, 90),
                                   epilog="\n".join(epilog), formatter_class=_Formatter)


def add_run_source_args(parser: argparse.ArgumentParser,
                        data_dir_help: str = "where the data sets are (default: the run's "
                                             "data_dir)") -> None:
    """``--data-dir`` and ``--allow-target``: the options of every command that rebuilds a
    finished run's model and data from its saved config."""
    parser.add_argument("--data-dir", help=data_dir_help)
    parser.add_argument("--allow-target", action="append", default=[], metavar="PREFIX",
                        help="also build classes starting with PREFIX that a run's saved config "
                             "or an export artifact names (trusted code of your own; also "
                             f"${ALLOW_ENV})")
