"""Regenerate the records page's generated part from the record presets' run folders.

    python scripts/make_records.py --roots outputs/sweeps [more roots ...] [--out docs/results/records]

A run belongs to a record preset when its command line is ``experiment=<preset>`` plus only
settings that leave the recipe alone (seed, threads, sweep name, verbosity, ``quantize``, the
progress bar); every ``results.json`` under the roots is read, so seeds run in several checkouts or
sweeps pool. Each goal is checked on **every one of seeds 0-4** and on their mean. Writes into
``--out``:

* ``records.md``: the goals (each seed's figure, mean ± std, the verdict with what misses), every
  run (validation and test error, int8 error where quantised, weights kept or MACs, minutes of
  training, when it finished), the other presets' runs, the published points, what is missing;
* ``records.png``: every seed of every goal against its two limits (per seed and mean).

Validation error is listed for choosing between recipes; the verdicts read test error only, and
nothing here chooses on it. The prose (why a goal is missed) is written by hand in
docs/results/records/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import shlex
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from prunelab import report as R
from prunelab.io import atomic_save, atomic_write
from prunelab.report.load import flatten_config

SEEDS = (0, 1, 2, 3, 4)
CONF = Path(__file__).resolve().parents[1] / "conf"
_ABSENT = object()
# overrides that do not change what a run computes (its recipe): anything else makes it not a
# run of the preset
NEUTRAL = {"seed", "threads", "name", "verbosity", "quantize", "trainer.enable_progress_bar",
           "data_dir", "ckpt_path", "progress_refresh_rate"}


@dataclass(frozen=True)
class Goal:
    preset: str
    what: str
    per_seed: float  # test error % on every seed ("error"), or points below dense ("drop")
    mean: float
    anchor: str
    kind: str = "error"
    macs: int | None = None  # a structured goal: the compacted network within this many MACs


GOALS = [
    Goal("lenet5_99", "MNIST CNN, 99 % of the weights removed", 0.75, 0.70,
         "DNS 0.91 %, sparse momentum 0.83 % (1 % kept)"),
    Goal("lenet5_99_64", "MNIST CNN, 99.64 % removed (280×)", 0.85, 0.75,
         "Sparse Variational Dropout 0.75 % at 280× (200 epochs)"),
    Goal("lenet5_structured_160k", "MNIST CNN, ≤ 160K MACs", 0.90, 0.80,
         "Bayesian Compression (GHS) ≈ 158K FLOPs at 1.0 %", macs=160_000),
    Goal("lenet5_structured_100k", "MNIST CNN, ≤ 100K MACs", 1.10, 1.00,
         "— (beyond the published points)", macs=100_000),
    Goal("imdb_95", "IMDB, 95 % of the weights removed", 1.5, 1.0,
         "—", kind="drop"),
]
# presets shown with their runs but without a 5-seed goal here
OTHER_PRESETS = ["imdb_90", "lenet5_99_5", "lenet5_500x"]
# the dense IMDB reference: the best dense configuration within the 10-epoch budget
DENSE_IMDB = ("study_imdb", {"pruning": "none", "trainer.max_epochs": "5"})
DENSE_IMDB_COMMAND = ("python -m prunelab -m experiment=study_imdb pruning=none "
                      "trainer.max_epochs=5 seed=0,1,2,3,4")

# The published operating points on this LeNet-5 (431K parameters)
PUBLISHED = [
    ("Han et al. 2015, iterative magnitude", "8.3 %", "0.77 %", "many", "Han et al., NeurIPS 2015"),
    ("Dynamic Network Surgery", "0.9 %", "0.91 %", "many", "Guo et al., NeurIPS 2016"),
    ("Sparse Variational Dropout", "0.36 % (280×)", "0.75 %", "200", "Molchanov et al., ICML 2017"),
    ("SNIP, pruned at initialisation", "2 % / 1 %", "0.8 % / 1.1 %", "250", "Lee et al., ICLR 2019"),
    ("Sparse momentum, sparse from scratch", "2 % / 1 % / 0.5 %", "0.76 / 0.83 / 1.14 %", "100",
     "Dettmers & Zettlemoyer 2019"),
    ("structured: Bayesian Compression GHS", "units 5-10-76-16, ≈158K FLOPs", "1.0 %", "—",
     "Louizos et al., NeurIPS 2017"),
    ("structured: L0-sep", "units 9-18-65-25", "1.0 %", "—", "Louizos et al., ICLR 2018"),
]


@dataclass
class Run:
    folder: Path
    preset: str
    seed: int
    acc: float
    val_acc: float | None
    int8_acc: float | None
    kept: float | None  # fraction of the pruned layers' weights left
    macs: int | None  # the compacted network's MACs
    minutes: float | None
    finished: str

    @property
    def err(self) -> float:
        return 100 * (1 - self.acc)


def recipe(overrides: list[str]) -> tuple[str | None, dict[str, str]]:
    """(the preset, the overrides that change its recipe) of a run's command line."""
    opts = dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)
    preset = opts.pop("experiment", None)
    return preset, {k: v for k, v in opts.items() if k not in NEUTRAL}


def read_run(path: Path) -> tuple[str | None, dict[str, str], Run] | None:
    """The run of ``path``/results.json, or None for a run that did not finish."""
    try:
        r = json.loads((path / "results.json").read_text())
    except (OSError, ValueError):
        return None
    if r.get("status") != "ok" or r.get("test_acc") is None or r.get("seed") is None:
        return None
    preset, rest = recipe(list(r.get("overrides") or []))
    sp = r.get("sparsity_global")
    when = datetime.datetime.fromtimestamp((path / "results.json").stat().st_mtime, datetime.UTC)
    fit = r.get("fit_seconds")
    run = Run(path, preset or "", int(r["seed"]), float(r["test_acc"]), r.get("val_acc"),
              r.get("int8_test_acc"), None if sp is None else 1 - sp,
              r.get("macs_compact") or (r.get("budget") or {}).get("reached"),
              None if fit is None else fit / 60, when.strftime("%Y-%m-%d"))
    return preset, rest, run


@functools.cache
def preset_settings(preset: str) -> dict[str, object]:
    """The dotted keys a preset file sets itself (its recipe), with their values."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "experiment" / f"{preset}.yaml"))
    return flatten_config({k: v for k, v in cfg.items() if k != "defaults"})


def stale(preset: str, folder: Path) -> str | None:
    """Why a run was made with an earlier version of its preset (a setting differs), or None."""
    from omegaconf import OmegaConf

    try:
        run = flatten_config(OmegaConf.to_container(OmegaConf.load(folder / ".hydra" / "config.yaml")))
    except (OSError, ValueError):
        return "no .hydra/config.yaml"
    for key, want in preset_settings(preset).items():
        have = run.get(key, _ABSENT)
        if have != want:
            return f"{key}: {'not set' if have is _ABSENT else have} in the run, {want} in the preset"
    return None


def collect(roots: list[Path]) -> tuple[dict[str, dict[int, Run]], dict[int, Run], list[str]]:
    """Runs by preset and seed (the newest of duplicates), the dense IMDB runs, notes."""
    runs: dict[str, dict[int, Run]] = {}
    dense: dict[int, Run] = {}
    notes: list[str] = []
    wanted = {g.preset for g in GOALS} | set(OTHER_PRESETS)
    for root in roots:
        for res in sorted(root.rglob("results.json")):
            got = read_run(res.parent)
            if got is None:
                continue
            preset, rest, run = got
            if (preset, rest) == DENSE_IMDB:
                table = dense
            elif preset in wanted and not rest:
                if (why := stale(preset, res.parent)) is not None:
                    notes.append(f"- {preset} seed {run.seed}: `{run.folder}` left out, made with "
                                 f"an earlier version of the preset ({why})")
                    continue
                table = runs.setdefault(preset, {})
            else:
                continue
            old = table.get(run.seed)
            if old is not None:
                keep, drop = sorted((old, run), key=lambda x: x.finished)[::-1]
                notes.append(f"- {preset} seed {run.seed}: two runs, `{keep.folder}` kept (newer), "
                             f"`{drop.folder}` left out")
                run = keep
            table[run.seed] = run
    return runs, dense, notes


def _ms(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def dense_reference(dense: dict[int, Run]) -> float | None:
    """The dense IMDB accuracy (%) the drops are measured from: the mean over its seeds."""
    return 100 * statistics.mean(r.acc for r in dense.values()) if dense else None


def figures(goal: Goal, by_seed: dict[int, Run], dense_acc: float | None) -> dict[int, float]:
    """Each seed's figure for ``goal``: test error %, or points below the dense reference."""
    if goal.kind == "drop":
        if dense_acc is None:
            return {}
        return {s: dense_acc - 100 * r.acc for s, r in by_seed.items()}
    return {s: r.err for s, r in by_seed.items()}


def verdict(goal: Goal, by_seed: dict[int, Run], values: dict[int, float]) -> str:
    """"met", or every reason it is not: seeds over the limit or the budget, the mean, missing."""
    unit = " pts" if goal.kind == "drop" else " %"
    # compared at the precision shown (0.01 point: one test image in 10,000), so that float32
    # accuracies do not miss a limit by 1e-7
    why = [f"seed {s}: {values[s]:.2f}{unit} > {goal.per_seed:.2f}" for s in SEEDS
           if s in values and round(values[s], 2) > goal.per_seed]
    if goal.macs is not None:
        why += [f"seed {s}: {r.macs} MACs > {goal.macs}" for s, r in sorted(by_seed.items())
                if s in SEEDS and (r.macs is None or r.macs > goal.macs)]
    have = [values[s] for s in SEEDS if s in values]
    missing = [str(s) for s in SEEDS if s not in values]
    if have and round(m := statistics.mean(have), 2) > goal.mean:
        why.append(f"mean {m:.2f}{unit} > {goal.mean:.2f}")
    if missing:
        why.append("seed(s) " + ", ".join(missing) + " not run")
    if goal.kind == "drop" and not values and by_seed:
        why.append("no dense reference runs (`" + DENSE_IMDB_COMMAND + "`)")
    return "met" if not why else "not met: " + "; ".join(why)


def _run_row(r: Run) -> list[str]:
    return [r.preset, str(r.seed), f"{r.err:.2f} %",
            "—" if r.val_acc is None else f"{100 * (1 - r.val_acc):.2f} %",
            "—" if r.int8_acc is None else f"{100 * (1 - r.int8_acc):.2f} %",
            "—" if r.kept is None else f"{100 * r.kept:.2f} %",
            "—" if r.macs is None else f"{r.macs:,}",
            "—" if r.minutes is None else f"{r.minutes:.0f}", r.finished]


RUN_HEADER = ["preset", "seed", "test error", "validation error", "int8 test error",
              "weights kept", "MACs (compacted)", "training minutes", "finished"]


def records_md(runs: dict[str, dict[int, Run]], dense: dict[int, Run], notes: list[str],
               roots: list[Path], command: str) -> str:
    day = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}"
    dense_acc = dense_reference(dense)
    lines = ["# Records: generated tables", "",
             f"Generated {day} on {machine} by `{command}` from the run folders under "
             + ", ".join(f"`{r}`" for r in roots) + ". Test error = 100 − test accuracy; "
             "mean ± std over seeds (sample std); weights kept = the pruned layers' non-zero "
             "weights; IMDB figures are points below the dense reference (mean of its seeds).", "",
             "## Goals: every one of seeds 0–4, and their mean", ""]
    rows = []
    for g in GOALS:
        by_seed = runs.get(g.preset, {})
        values = figures(g, by_seed, dense_acc)
        unit = " pts" if g.kind == "drop" else " %"
        seeds = ", ".join(f"{values[s]:.2f}" if s in values else "—" for s in SEEDS)
        have = [values[s] for s in SEEDS if s in values]
        if have:
            m, sd = _ms(have)
            mean = f"{m:.2f} ± {sd:.2f}{unit}"
        else:
            mean = "—"
        limit = "below dense" if g.kind == "drop" else "error"
        rows.append([f"`experiment={g.preset}`", g.what, f"≤ {g.per_seed:.2f}{unit} {limit}",
                     f"≤ {g.mean:.2f}{unit}", seeds, mean, verdict(g, by_seed, values)])
    lines += R._table(["preset", "operating point", "goal, every seed", "goal, mean",
                     "seeds 0, 1, 2, 3, 4", "mean ± std", "verdict"], rows)
    if dense_acc is not None:
        accs = [100 * r.acc for _, r in sorted(dense.items())]
        lines += ["", f"Dense IMDB reference (`{DENSE_IMDB_COMMAND}`): {dense_acc:.2f} % "
                  f"(seeds {', '.join(map(str, sorted(dense)))}: "
                  + ", ".join(f"{a:.2f}" for a in accs) + ")."]
    lines += ["", "![every seed of every goal](records.png)", "", "## Every run of the goals", ""]
    lines += R._table(RUN_HEADER, [_run_row(r) for g in GOALS
                                 for _, r in sorted(runs.get(g.preset, {}).items())])
    lines += ["", "## Other presets", ""]
    rows = []
    for p in OTHER_PRESETS:
        rows += [_run_row(r) for _, r in sorted(runs.get(p, {}).items())]
    lines += R._table(RUN_HEADER, rows) if rows else ["No runs found."]
    lines += ["", "## Published operating points (LeNet-5, 431K parameters)", ""]
    lines += R._table(["method", "weights kept", "test error", "epochs", "source"],
                    [list(p) for p in PUBLISHED])
    lines += ["", "## Notes", ""]
    lines += notes or ["No duplicate or outdated runs."]
    return "\n".join(lines) + "\n"


def plot(runs: dict[str, dict[int, Run]], dense: dict[int, Run], path: Path) -> None:
    """Every seed of every goal as a point, the mean as a bar, both limits as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dense_acc = dense_reference(dense)
    fig, axes = plt.subplots(1, len(GOALS), figsize=(3.2 * len(GOALS), 3.6), squeeze=False)
    for ax, g in zip(axes[0], GOALS, strict=True):
        values = figures(g, runs.get(g.preset, {}), dense_acc)
        xs = [s for s in SEEDS if s in values]
        ax.scatter(xs, [values[s] for s in xs], color="tab:blue", zorder=3, label="seed")
        if xs:
            m = statistics.mean(values[s] for s in xs)
            ax.axhline(m, color="tab:blue", lw=1, label=f"mean {m:.2f}")
        ax.axhline(g.per_seed, color="tab:red", ls="--", lw=1, label=f"every seed ≤ {g.per_seed:.2f}")
        ax.axhline(g.mean, color="tab:orange", ls=":", lw=1.5, label=f"mean ≤ {g.mean:.2f}")
        ax.set_xticks(list(SEEDS))
        ax.set_xlabel("seed")
        ax.set_ylabel("points below dense" if g.kind == "drop" else "test error (%)")
        ax.set_title(g.preset, fontsize=9)
        ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    atomic_save(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--roots", nargs="+", required=True, metavar="DIR",
                        help="folders searched for run folders (e.g. outputs/sweeps)")
    parser.add_argument("--out", default="docs/results/records", metavar="DIR")
    args = parser.parse_args(argv)
    command = "python scripts/make_records.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    roots = []
    for r in map(Path, args.roots):
        if r.is_dir():
            roots.append(r)
        else:
            print(f"note: root {r} does not exist; left out", file=sys.stderr)
    runs, dense, notes = collect(roots)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "records.md", records_md(runs, dense, notes, [Path(a) for a in args.roots],
                                                command))
    plot(runs, dense, out / "records.png")
    for g in GOALS:
        print(f"{g.preset}: {len(runs.get(g.preset, {}))} seed(s)")
    print(f"wrote {out / 'records.md'} and {out / 'records.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
