"""Every number a user gives is checked before any work: one line and exit status 2, or a
documented meaning.

The config keys are found, not listed: each option of each config group under ``conf/`` is
composed, and every number in its section (and every int/float key of the schema, null ones
included) is given 0, -1, nan and a huge value. Each case runs the checks a run makes before it
reads data, in the run's order (:func:`prunelab.run.check_config`, the keys of every node
(:func:`prunelab.run.check_nodes`), then :func:`prunelab.run.make_objects`: callback, Trainer
arguments, data module, model), on the composed config with the value set as a command-line
override sets it; a value the schema's type refuses is refused at compose time. ``test_command_line_*`` runs the issue's examples
through the real command line (in-process), where the same checks give one line and exit 2.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from omegaconf.nodes import FloatNode, IntegerNode

from prunelab import components, confsource
from prunelab.config import schema_node
from prunelab.errors import ConfigError, PrunelabError

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
VALUES = ("0", "-1", "nan", "1e12", "1000000000000")

# Values that are accepted, each with the page (and a phrase of it) that says what it means.
# Anything else that is accepted fails the test: give it a check, or a documented meaning here.
RANGES = ("docs/guide/configuration.md", "Valid values")
DOCUMENTED: dict[str, dict[str, tuple[str, str]]] = {
    "seed": {"0": RANGES},
    "data.seed": {"0": RANGES},
    "data.val_size": {"0": ("docs/guide/reliability.md", "No validation data (`data.val_size=0`)")},
    "data.augment_shift": {"0": ("docs/guide/configuration.md", "0: no augmentation")},
    "model.optimizer.lr": dict.fromkeys(("1e12", "1000000000000"), (
        "docs/guide/reliability.md", "e.g. `model.optimizer.lr=1e6`")),
    "model.optimizer.weight_decay": {"0": RANGES, **dict.fromkeys(("1e12", "1000000000000"), (
        "docs/guide/configuration.md", "too large a learning rate or weight decay diverges"))},
    "pruning.schedule.amount": {"0": RANGES},
    "pruning.schedule.initial": {"0": RANGES},
    "pruning.schedule.start_epoch": {"0": RANGES},
    "pruning.rewind_epoch": {"0": ("docs/guide/configuration.md", "0 = initial weights")},
    "pruning.eval_batches": {"0": ("docs/guide/configuration.md", "(null: all, 0: none)")},
    "pruning.method.dim": {"0": ("docs/guide/configuration.md", "0: output filters/neurons"),
                           "-1": ("docs/guide/configuration.md", "negative: from the last axis")},
    "trainer.devices": {"-1": ("docs/guide/configuration.md", "`trainer.devices=-1`")},
    "trainer.num_sanity_val_steps": {"0": ("docs/guide/configuration.md", "`num_sanity_val_steps`"),
                                     "-1": ("docs/guide/configuration.md", "`num_sanity_val_steps`")},
    "trainer.limit_val_batches": {"0": ("docs/guide/reliability.md", "`limit_val_batches`")},
    "trainer.limit_test_batches": {"0": ("docs/guide/reliability.md", "`trainer.limit_test_batches=0`")},
}
# options composed with a setting that only makes the case faster (the keys stay the same)
FASTER = {("model", "torchvision"): ["model.arch=squeezenet1_1"]}

_parse = OverridesParser.create().parse_override


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_cfg(data_dir: Path, overrides: list[str]) -> DictConfig:
    with confsource.initialize():  # registers the schema, as the command line does
        return compose("config", overrides=[f"data_dir={data_dir}", "logger=csv", *overrides])


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def numeric_keys(node: DictConfig, prefix: str, schema: DictConfig | None = None) -> Iterator[str]:
    """Dotted keys of ``node`` whose value is a number or a list of numbers, or whose schema
    type is int or float (a null default)."""
    for k in node:
        key, raw = f"{prefix}{k}", node._get_node(k)
        typed = schema._get_node(k) if schema is not None and k in set(schema.keys()) else None
        try:
            value = node[k]
        except OmegaConfBaseException:  # a preset file's interpolation into another section
            continue
        if OmegaConf.is_dict(raw):
            yield from numeric_keys(value, key + ".", typed if OmegaConf.is_dict(typed) else None)
        elif OmegaConf.is_list(raw):
            items = list(value or [])
            if items and all(_is_number(v) for v in items):
                yield key
        elif _is_number(value) or isinstance(typed or raw, IntegerNode | FloatNode):
            yield key


def bases(data_dir: Path) -> list[tuple[str, DictConfig, list[str]]]:
    """(name, composed config, keys to try) for every option of every group that sets numbers.

    A model, data, trainer or logger option: every number of its composed section. A schedule
    or a method: every int or float key of its class (its node's keys); under
    ``pruning=one_shot`` also the callback's own (``pruning.rewind_epoch``, the budget...).
    """
    schema = schema_node()
    default = compose_cfg(data_dir, [])
    out = [("top-level", default, [k for k in numeric_keys(default, "", schema) if "." not in k])]
    for group in ("model", "data", "trainer", "logger"):
        for option in options(group):
            if not yaml_keys(group, option, ""):
                continue  # only another option's numbers (data=for_cnn is data=mnist)
            ov = [f"{group}={option}", *FASTER.get((group, option), [])]
            if group == "data":  # a model for its kind of input
                tokens = OmegaConf.load(CONF / "data" / f"{option}.yaml").get("input") == "tokens"
                ov.append(f"model={'text' if tokens else 'cnn'}")
            cfg = compose_cfg(data_dir, ov)
            out.append((f"{group}={option}", cfg,
                        list(numeric_keys(cfg[group], f"{group}.", schema.get(group)))))
    from prunelab.pruning import PruningCallback

    callback = {f"pruning.{k}" for k in numeric_args(PruningCallback)}
    callback |= {"pruning.budget.macs", "pruning.budget.params"}
    for option in options("pruning"):
        cfg = compose_cfg(data_dir, [f"pruning={option}"])
        keys = {f"pruning.schedule.{k}" for k in numeric_args(node_target(cfg.pruning.schedule))}
        keys |= callback if option == "one_shot" else set()
        if keys:
            out.append((f"pruning={option}", cfg, sorted(keys)))
    for option in options("pruning/method"):
        cfg = compose_cfg(data_dir, ["pruning=one_shot", f"pruning/method={option}"])
        keys = {f"pruning.method.{k}" for k in numeric_args(node_target(cfg.pruning.method))}
        if keys:
            cfg = compose_cfg(data_dir, ["pruning=one_shot", f"pruning/method={option}"])
            out.append((f"pruning/method={option}", cfg, sorted(keys)))
    return out


def node_target(node: DictConfig) -> object:
    return components.target_of(OmegaConf.to_container(node), "node")


def numeric_args(target: object) -> list[str]:
    """The keyword arguments of ``target`` annotated as int or float (null defaults included)."""
    params, _ = components.parameters(target)
    return [n for n, p in params.items() if any(t in str(p.annotation) for t in ("int", "float"))
            and n != "seed"]


def yaml_keys(group: str, option: str, section: str) -> set[str]:
    """The numeric keys (relative to ``section``) a preset file sets under ``section``."""
    node = OmegaConf.load(CONF / group / f"{option}.yaml")
    node = OmegaConf.select(node, section) if section else node
    if not OmegaConf.is_dict(node):
        return set()
    found = set(numeric_keys(node, ""))
    return {f"{section}.{k}" for k in found} if section else found


def override(cfg: DictConfig, key: str, text: str) -> tuple[str, object]:
    """The command line's override of ``key`` to ``text`` (a list gets it as its first item)."""
    value = _parse(f"k={text}").value()
    current = OmegaConf.select(cfg, key)
    if OmegaConf.is_list(current) or isinstance(current, list):
        items = [value, *list(current)[1:]]
        return f"{key}=[{','.join(map(str, items))}]", items
    return f"{key}={text}", value


def try_value(cfg: DictConfig, key: str, text: str) -> tuple[str, str]:
    """("compose" | "refused" | "accepted" | "crash", message) of ``key=text``; ``cfg`` is
    restored afterwards. A key of the open ``pruning`` node the preset leaves unset (a callback
    option at its default) is added, as the command line adds it."""
    from prunelab.run import check_config, check_nodes, make_objects

    parts = key.split(".")
    missing = next((i for i in range(1, len(parts) + 1)
                    if OmegaConf.select(cfg, ".".join(parts[:i]), default=_ABSENT) is _ABSENT), None)
    if missing is None:
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        saved = parent._get_node(leaf)._value()  # an interpolation stays one
    line, value = override(cfg, key, text)
    try:
        try:
            OmegaConf.update(cfg, key, value, force_add=missing is not None)
        except OmegaConfBaseException as err:  # the schema's type: Hydra refuses it at compose
            return "compose", str(err).splitlines()[0]
        try:
            check_config(cfg)
            check_nodes(cfg, [line])
            make_objects(cfg, [line])
        except PrunelabError as err:
            return "refused", str(err)
        except Exception as err:  # noqa: BLE001  (the point: no other error may escape)
            return "crash", f"{type(err).__name__}: {err}"
        return "accepted", ""
    finally:
        if missing is None:
            parent[leaf] = saved
        else:  # remove what the override added
            added_parent, _, added = ".".join(parts[:missing]).rpartition(".")
            node = OmegaConf.select(cfg, added_parent) if added_parent else cfg
            del node[added]


_ABSENT = object()


@pytest.fixture(scope="module")
def every_base(tiny_data: Path) -> list[tuple[str, DictConfig, list[str]]]:
    return bases(tiny_data)


def test_every_numeric_key_is_refused_in_one_line_or_documented(every_base, tiny_data):
    """0, -1, nan, 1e12 and 10**12 for each numeric key of each option of each group."""
    start, problems, tried, keys = time.perf_counter(), [], 0, set()
    for name, cfg, case_keys in every_base:
        for key in case_keys:
            keys.add(key)
            for text in VALUES:
                tried += 1
                outcome, message = try_value(cfg, key, text)
                where = f"{name}: {key}={text}"
                if outcome == "crash":
                    problems.append(f"{where}: not a one-line error: {message[:300]}")
                elif outcome == "refused":
                    leaf = key.rsplit(".", 1)[-1]
                    # a valid value can make a plan longer than trainer.max_epochs: that rule's
                    # line names trainer.max_epochs and what it needs instead
                    named = leaf in message or "but trainer.max_epochs=" in message
                    if "\n" in message or not named:
                        problems.append(f"{where}: the line must name {leaf}: {message!r}")
                elif outcome == "accepted" and text not in DOCUMENTED.get(key, {}):
                    problems.append(f"{where}: accepted with no documented meaning")
    assert not problems, "\n".join(problems)
    # the enumeration found the keys of every group, the ones among them
    for key in ("seed", "threads", "progress_refresh_rate", "trainer.max_epochs",
                "trainer.limit_train_batches", "model.optimizer.lr", "model.net.embed_dim",
                "data.batch_size", "data.val_size", "data.vocab_size", "data.max_len",
                "pruning.schedule.n_steps", "pruning.schedule.step_size", "pruning.schedule.every",
                "pruning.schedule.update_every", "pruning.budget.macs", "pruning.method.norm",
                "pruning.method.grad_batches", "pruning.method.iterations"):
        assert key in keys, key
    assert tried > 500
    assert time.perf_counter() - start < 60  # no case trains or reads data


def test_documented_meanings_are_documented():
    for key, meanings in DOCUMENTED.items():
        for value, (page, phrase) in meanings.items():
            assert phrase in (ROOT / page).read_text(), f"{key}={value}: {page} lacks {phrase!r}"


# ------------------------------------------------------------------ the command line


ONE_LINE = [
    # a count without a bound used to grow memory at ~70 MB/s
    (["pruning=iterative", "pruning.schedule.step_size=null", "pruning.schedule.n_steps=1000000000"],
     "pruning.schedule.n_steps=1000000000 must be an integer in [1, 10000]"),
    (["pruning=iterative", "pruning.schedule.step_size=0.000000001"],
     "more than the 10000 a plan may have"),
    (["pruning=geometric", "pruning.schedule.rate=0.000000001"], "more than the 10000 a plan may have"),
    # accepted and ignored
    (["pruning.amount=0.5"], "pruning.amount: not a key of none; valid: (none)"),
    (["pruning.schedule.amount=0.5"], "pruning.schedule.amount: not a key of none; valid: (none)"),
    (["pruning=iterative", "pruning.schedule.n_steps=5"],
     "pruning.schedule.n_steps=5 has no effect while step_size=0.05 is set"),
    (["pruning=one_shot", "pruning.schedule.update_every=5"],
     "pruning.schedule.update_every: not a key of one_shot; valid: amount, start_epoch"),
    (["+foo=bar"], "foo=bar: no such key; valid, closest first:"),
    (["+logger.foo=1"], "logger.foo=1: not a logger"),
    (["progress_refresh_rate=-1"], "progress_refresh_rate=-1: must be an integer in [1, "),
    (["trainer.precision=banana"], "trainer.precision='banana': not a precision Lightning knows"),
    (["pruning=one_shot", "pruning/method=ln_structured", "pruning.method.norm=nan"],
     "pruning.method.norm=nan"),
    (["pruning=one_shot", "pruning/method=taylor", "pruning.method.grad_batches=0"],
     "pruning.method.grad_batches=0: must be an integer in [1, 1000]"),
    (["model.optimizer.lr=-0.1"], "model.optimizer.lr=-0.1: must be a finite number in (0, inf)"),
    (["model.optimizer.lr=nan"], "model.optimizer.lr=nan: must be a finite number"),
    (["model.optimizer.momentum=0"], "model.optimizer: Nesterov momentum requires a momentum"),
    # a data module's ConfigError used to end in Hydra's "Error executing job"
    (["data.batch_size=0"], "data.batch_size=0: must be an integer in [1, 1048576]"),
    (["data.val_size=-1"], "data.val_size=-1: must be an integer in [0, "),
    (["model=text", "data.vocab_size=0"], "data.vocab_size=0: must be an integer in [1, "),
    (["model=text", "data.max_len=0"], "data.max_len=0: must be an integer in [1, 10000]"),
    (["model=text", "model.net.embed_dim=100000", "data.vocab_size=1000000"],
     "model.net.embed_dim=100000: must be an integer in [1, 65536]"),
    (["trainer.devices=0"], "trainer.devices=0: must be an integer in [1, "),
    (["trainer.accelerator=banana"], "trainer: You selected an invalid accelerator name"),
    # the schema's type, at compose time
    (["seed=nan"], "seed"),
    (["pruning=agp", "pruning.schedule.n_steps=1e12"], "pruning.schedule.n_steps"),
]


@pytest.mark.parametrize("args,needle", ONE_LINE, ids=[" ".join(a) for a, _ in ONE_LINE])
def test_command_line_refuses_in_one_line_before_any_work(args, needle, tiny_data, tmp_path):
    from inprocess import prunelab_in_process

    start = time.perf_counter()
    proc = prunelab_in_process("trainer=fast", "logger=csv", f"data_dir={tiny_data}", *args,
                               "hydra.run.dir=run", cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("prunelab: error:"), proc.stderr[-2000:]
    assert needle in lines[0]
    assert not (tmp_path / "run" / "metrics.csv").exists()  # nothing trained
    assert time.perf_counter() - start < 20


def test_command_line_keeps_a_presets_keys_for_another_schedule(tiny_data, tmp_path):
    """``experiment=study_mnist pruning=none``, the documented dense baseline, is no error, and
    ``... pruning=agp`` keeps the study's n_steps and start_epoch: a preset's schedule keys that
    the chosen schedule does not take are left out; a key typed on the command line never is."""
    from prunelab.run import check_nodes, make_callback

    args = ["experiment=study_mnist", "pruning=none", "pruning.compact=true"]
    cfg = compose_cfg(tiny_data, args)
    assert cfg.pruning.schedule.n_steps == 5
    check_nodes(cfg, args)
    assert make_callback(cfg, args) == (None, "none")
    typed = ["experiment=study_mnist", "pruning=none", "pruning.schedule.n_steps=3"]
    with pytest.raises(ConfigError, match="pruning.schedule.n_steps: not a key of none"):
        check_nodes(compose_cfg(tiny_data, typed), typed)
    args = ["experiment=study_mnist", "pruning=agp", "pruning.schedule.initial=0.6"]
    agp, _ = make_callback(compose_cfg(tiny_data, args), args)
    assert (agp.schedule.n_steps, agp.schedule.start_epoch, agp.schedule.initial) == (5, 2, 0.6)
    for ok in (["pruning=iterative", "pruning.schedule.step_size=null", "pruning.schedule.n_steps=3"],
               ["pruning=lottery", "pruning.schedule.rate=null", "pruning.schedule.step_size=0.1"]):
        make_callback(compose_cfg(tiny_data, ok), ok)


# ------------------------------------------------------------------ the schedules' own bounds


@pytest.mark.parametrize("kwargs", [
    {"kind": "iterative", "amount": 0.5, "n_steps": 10**9},
    {"kind": "agp", "amount": 0.5, "n_steps": 10**9},
    {"kind": "iterative", "amount": 0.9, "step_size": 1e-12},
    {"kind": "geometric", "amount": 0.9, "rate": 1e-12},
    {"kind": "lottery", "amount": 0.99, "rate": 1e-9},
    {"kind": "explicit", "steps": [[e, 0.5] for e in range(10_001)]},
    {"kind": "one_shot", "amount": 0.5, "start_epoch": 10**12},
    {"kind": "iterative", "amount": 0.5, "step_size": 0.1, "every": 10**12},
])
def test_a_plan_of_runaway_size_is_refused_before_it_is_built(kwargs):
    from prunelab.pruning.schedules import build_plan

    start = time.perf_counter()
    with pytest.raises(ConfigError):
        build_plan(**kwargs)
    assert time.perf_counter() - start < 1.0


def test_callback_and_criterion_counts_have_bounds():
    from prunelab.pruning import criteria as C
    from prunelab.pruning.callback import PruningCallback

    for make, needle in [(lambda: C.Taylor(grad_batches=10**6),
                          "grad_batches=1000000: must be an integer in [1, 1000]"),
                         (lambda: C.SynFlow(iterations=10**6), "iterations=1000000 must be an integer >= 1"),
                         (lambda: PruningCallback([(0, 0.5)], eval_batches=10**12),
                          "eval_batches=1000000000000"),
                         (lambda: PruningCallback([(0, 0.5)], rewind_epoch=-1), "rewind_epoch=-1"),
                         (lambda: C.LnStructured(norm=math.nan),
                          "norm=nan must be a norm order in [1, 10], inf or 'fro'"),
                         (lambda: C.LnStructured(norm=1e12), "norm=1000000000000.0 must be a norm order"),
                         (lambda: C.LnStructured(norm=-1), "norm=-1 must be a norm order"),
                         (lambda: C.LnStructured(dim=10**12), "dim=1000000000000"),
                         (lambda: PruningCallback([(0, 0.5)], method="ln_structured",
                                                  budget={"macs": 10**12}),
                          "budget.macs=1000000000000 must be")]:
        with pytest.raises(ConfigError) as info:
            make()
        assert needle in str(info.value)


# ------------------------------------------------------------------ files and other commands


def test_a_latin1_text_file_is_one_line_naming_file_and_line(tmp_path):
    from prunelab.data.text_files import read_records

    path = tmp_path / "train.csv"
    path.write_bytes("text,label\ngood film,1\ncaf\u00e9 cr\u00e8me,0\n".encode("latin-1"))
    with pytest.raises(PrunelabError) as info:
        read_records(path, "text", "label")
    message = str(info.value)
    assert str(path) in message and "line 3" in message and "UTF-8" in message
    assert "\n" not in message
    # a UTF-8 file with a byte-order mark (Excel's "CSV UTF-8") reads as it should
    path.write_bytes("\ufefftext,label\ncaf\u00e9,1\n".encode())
    assert read_records(path, "text", "label") == (["caf\u00e9"], ["1"])


def test_a_truncated_image_is_one_line_naming_the_file(tmp_path):
    from PIL import Image

    from prunelab.data.images import ImageFolderDataModule

    for c in ("a", "b"):
        (tmp_path / "img" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (8, 8), color=40 * i).save(tmp_path / "img" / c / f"{i}.png")
    bad = tmp_path / "img" / "b" / "1.png"
    bad.write_bytes(bad.read_bytes()[:40])
    dm = ImageFolderDataModule(str(tmp_path / "img"), num_classes=2, cache_dir=str(tmp_path / "c"))
    with pytest.raises(PrunelabError) as info:
        dm.prepare_data()
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


def _one_error_line(capsys, prog: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{prog}: error:"), err
    return err[0]


def test_report_flags_are_one_line(tmp_path, capsys):
    from prunelab.cli.report import main

    binary = tmp_path / "summary.csv"
    binary.write_bytes(bytes(range(256)) * 8)
    assert main(["--from-csv", str(binary)]) == 2
    assert "not a text file" in _one_error_line(capsys, "prunelab report")
    existing = tmp_path / "a_file"
    existing.write_text("keep me")
    assert main([str(tmp_path), "--out", str(existing)]) == 2
    assert "is a file" in _one_error_line(capsys, "prunelab report")
    assert existing.read_text() == "keep me"
    assert main([str(tmp_path), "--delta", "1e12"]) == 2
    assert "--delta must be" in _one_error_line(capsys, "prunelab report")


@pytest.mark.parametrize("args,needle", [
    (["--batch-sizes", "0,-1"], "--batch-sizes 0,-1: 0 is not in [1, "),
    (["--batch-sizes", "64,x"], "give 1 to 1000 integers"),
    (["--input-shape", "1,1,28"], "--input-shape 1,1,28 does not fit the network"),
    (["--input-shape", "1,100000,100000"], "100000 is not in [1, 16384]"),
    (["--min-run-time", "nan"], "--min-run-time nan"),
])
def test_compact_flags_are_one_line(tmp_path, capsys, args, needle):
    from test_compact import _fake_run

    from prunelab.cli.compact import main

    run_dir = _fake_run(tmp_path / "run")
    assert main([str(run_dir), *args]) == 2
    assert needle in _one_error_line(capsys, "prunelab compact")
    assert not (run_dir / "compact_model.pt2").exists()


@pytest.mark.parametrize("args,needle", [(["--iters", "1000000"], "--iters must be in [0, 30]"),
                                         (["--seeds", "-1"], "--seeds: give at most"),
                                         (["--delta", "1e12"], "--delta must be")])
def test_search_counts_have_bounds(tmp_path, capsys, args, needle):
    from prunelab.cli.search import main

    assert main(["--method", "l1_unstructured", *args, "--sweep-dir", str(tmp_path / "s"),
                 "pruning=one_shot"]) == 2
    assert needle in _one_error_line(capsys, "prunelab search")
    assert not (tmp_path / "s").exists()


def test_sensitivity_grid_has_a_bound():
    from prunelab.cli.sensitivity import parse_grid

    with pytest.raises(ConfigError, match="more than 1000"):
        parse_grid(",".join(str(i / 10**5) for i in range(1, 2000)))


def test_export_finetune_epochs_have_a_bound():
    from prunelab.export.finetune import check

    with pytest.raises(ConfigError, match="--finetune-epochs must be a whole number >= 0"):
        check(10**12, 0.01)
