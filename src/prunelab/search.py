"""``prunelab search``: the highest pruning amount whose accuracy stays within δ of dense.

A bisection over ``pruning.schedule.amount``, one method at a time, each probe a normal prunelab run
(the same Hydra config, composed with the free overrides) in its own stable folder::

    <sweep dir>/search-dense/                  the dense baseline (pruning=none, same epochs)
    <sweep dir>/search-<method>/amount=<a>/    one probe (amount=<a>,seed=<s> with --seeds)
    <sweep dir>/search.json                    the answers and every probe

where ``<sweep dir>`` is ``outputs/sweeps/<name>`` as for ``-m`` sweeps (``name=`` among the
overrides, or ``--sweep-dir``). Probes whose results.json exists are reused, so an interrupted
search continues where it stopped, and ``prunelab report <sweep dir>`` shows the probes
and the answers. Accuracy is assumed to fall as the amount grows; with noisy accuracy, probe
several seeds (``--seeds 0 1 2``: the drop of an amount is then the mean over seeds).

    python -m prunelab search --method l1_unstructured global_magnitude --delta 0.5 \\
        name=mnist_search pruning=iterative pruning.schedule.step_size=null \\
        pruning.schedule.n_steps=5 pruning.schedule.start_epoch=1 trainer.max_epochs=10
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunelab import confsource
from prunelab.bounds import MAX_DROP_PTS, MAX_SEARCH_ITERS, MAX_SEED, MAX_SEEDS
from prunelab.choices import check_overrides, make_loader
from prunelab.errors import PrunelabError
from prunelab.io import atomic_write
from prunelab.messages import get_logger, tame_lightning
from prunelab.outputs import check_name
from prunelab.paths import (
    CONF_DIR,
    FAILED,
    HYDRA_CONFIG,
    HYDRA_DIR,
    HYDRA_OVERRIDES,
    RESULTS,
    SEARCH,
    has_no_effect,
    override_key,
)
from prunelab.report import ReportError, load_baseline

log = get_logger(__name__)

DEFAULT_SCHEDULE = "pruning=one_shot"  # the probes' schedule when the command line names none
DECIMALS = 4  # probe amounts are rounded to this, so folder names stay short and reusable
# overrides that do not change a run's numbers: ignored when deciding whether a probe is reusable


class SearchError(PrunelabError):
    """Bad arguments or a probe that cannot run (printed as one line, exit status 2)."""


class _ProbeFailed(Exception):
    pass


@dataclass
class Probe:
    amount: float
    drop_pts: float | None  # mean over seeds of 100 * (dense acc - acc)
    test_acc: float | None
    sparsity: float | None
    dirs: list[str] = field(default_factory=list)
    error: str | None = None

    def passes(self, delta: float) -> bool:
        return self.error is None and self.drop_pts is not None and self.drop_pts <= delta


def bisect(probe: Callable[[float], Probe], lo: float, hi: float, delta: float,
           iters: int) -> dict[str, Any]:
    """Largest amount in [lo, hi] with drop <= delta, assuming drop grows with the amount.

    Probes ``lo`` and ``hi`` first, then halves the bracket ``iters`` times. Returns the status
    (``found``: the answer is in [lo, hi); ``hi``: even ``hi`` passes; ``none``: not even ``lo``
    passes; ``error``: a probe failed), the answer, the final bracket and every probe.
    """
    probes: list[Probe] = []

    def run(a: float) -> Probe:
        p = probe(round(a, DECIMALS))
        probes.append(p)
        if p.error is not None:
            raise _ProbeFailed(p.error)
        return p

    try:
        low = run(lo)
        if not low.passes(delta):
            return _outcome("none", None, [lo, lo], probes)
        high = run(hi)
        if high.passes(delta):
            return _outcome("hi", high, [hi, hi], probes)
        good, bad = low, high
        for _ in range(iters):
            mid = round((good.amount + bad.amount) / 2, DECIMALS)
            if mid in (good.amount, bad.amount):
                break
            p = run(mid)
            good, bad = (p, bad) if p.passes(delta) else (good, p)
        return _outcome("found", good, [good.amount, bad.amount], probes)
    except _ProbeFailed as err:
        return {**_outcome("error", None, None, probes), "error": str(err)}


def _outcome(status: str, best: Probe | None, bracket: list[float] | None,
             probes: list[Probe]) -> dict[str, Any]:
    return {
        "status": status,
        "amount": None if best is None else best.amount,
        "sparsity": None if best is None else best.sparsity,
        "test_acc": None if best is None else best.test_acc,
        "drop_pts": None if best is None else best.drop_pts,
        "bracket": bracket,
        "probes": [vars(p) for p in sorted(probes, key=lambda p: p.amount)],
    }


def message(method: str, r: dict[str, Any], delta: float, lo: float, hi: float) -> str:
    n = len(r["probes"])
    if r["status"] == "error":
        return f"probe failed: {r.get('error')}"
    if r["status"] == "none":
        p = r["probes"][0]
        return (f"even amount {lo:g} loses more than {delta:g} pts "
                f"(drop {_pts(p['drop_pts'])}); try a lower --lo")
    acc = "?" if r["test_acc"] is None else f"{100 * r['test_acc']:.2f} %"
    sp = "?" if r["sparsity"] is None else f"{100 * r['sparsity']:.1f} %"
    text = (f"highest amount within {delta:g} pts of dense: {r['amount']:g} (sparsity {sp}, "
            f"accuracy {acc}, drop {_pts(r['drop_pts'])}")
    if r["status"] == "hi":
        return text + f"; the upper end --hi {hi:g} already passes), {n} probes"
    return text + f"; {r['bracket'][1]:g} fails), {n} probes"


def _pts(x: float | None) -> str:
    return "?" if x is None else f"{x:+.2f} pts"


# --------------------------------------------------------------------------------------------
# running probes as prunelab runs
# --------------------------------------------------------------------------------------------


def _effective(overrides: Sequence[str]) -> list[str]:
    return sorted(o for o in overrides if not has_no_effect(override_key(o)))


class Runner:
    """Composes the real config for each probe and runs it in-process (prunelab.run.run)."""

    def __init__(self, overrides: Sequence[str], sweep_dir: str | None, seeds: Sequence[int],
                 baseline_dirs: Sequence[str] = ()) -> None:
        for o in overrides:
            k = override_key(o)
            if k.startswith("hydra"):
                raise SearchError(f"{o}: hydra settings do not apply to a search (it runs its "
                                  "probes one after another); use --sweep-dir for the folder")
            if k in ("pruning.schedule.amount", "pruning.amount", "pruning/method",
                     "pruning.method.name") or (
                    k == "seed" and seeds):
                raise SearchError(f"{o}: the search sets {k} itself "
                                  "(use --method, --lo/--hi, --seeds)")
        self.overrides = list(overrides)
        self.seeds = list(seeds)
        # lazy: torch and Lightning
        from prunelab.components import component_name
        from prunelab.run import upgraded

        cfg = upgraded(self.compose(self.overrides), notes=False)
        schedule = component_name(cfg.pruning.get("schedule"))
        if schedule == "none" and not any(o.startswith("pruning=") for o in overrides):
            # nothing chose a schedule: the simplest one answers "how far can I prune?"
            self.overrides = [DEFAULT_SCHEDULE, *self.overrides]
            log.info("no pruning= given: each probe prunes with %s", DEFAULT_SCHEDULE)
            cfg = upgraded(self.compose(self.overrides), notes=False)
            schedule = component_name(cfg.pruning.get("schedule"))
        if schedule == "none":
            raise SearchError("the search needs a pruning schedule among the overrides, e.g. "
                              "pruning=one_shot, or pruning=iterative pruning.schedule.step_size=null "
                              "pruning.schedule.n_steps=5 (pruning=none has no amount to search)")
        if schedule == "explicit":
            raise SearchError("pruning=explicit takes its targets from pruning.schedule.steps, "
                              "not an amount: search with another schedule, e.g. pruning=one_shot")
        self.max_epochs = int(cfg.trainer.max_epochs)
        self.sweep_dir = Path(sweep_dir) if sweep_dir else Path("outputs/sweeps") / check_name(cfg.name)
        self.default_seed = int(cfg.seed)
        self.baseline_dirs = list(baseline_dirs)
        self._dense: dict[int, float] | None = None
        self.probes_run = 0
        self.verbosity = "normal"

    def compose(self, overrides: Sequence[str]):
        from hydra import compose
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        try:
            with confsource.initialize(job_name="search"):
                return compose("config", overrides=list(overrides))
        except (HydraException, OmegaConfBaseException) as err:
            raise SearchError(f"bad overrides: {str(err).splitlines()[0]}") from None

    def _seeds(self) -> list[int]:
        return self.seeds or [self.default_seed]

    def _run(self, overrides: list[str], run_dir: Path) -> dict[str, Any] | None:
        """A normal run in ``run_dir`` (reused if finished); None and failed.json if it fails."""
        from omegaconf import OmegaConf

        from prunelab.run import run_or_record_failure  # lazy: torch and Lightning

        done = run_dir / RESULTS
        if done.is_file():
            res = json.loads(done.read_text())
            if _effective(res.get("overrides") or []) != _effective(overrides):
                raise SearchError(
                    f"{run_dir} holds a run with other overrides ({' '.join(res.get('overrides'))});"
                    " give this search another name= (or --sweep-dir), or delete that folder")
            log.info("reusing %s", run_dir)
            return res
        cfg = self.compose(overrides)
        hydra_dir = run_dir / HYDRA_DIR
        hydra_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(hydra_dir / HYDRA_CONFIG, OmegaConf.to_yaml(cfg))
        atomic_write(hydra_dir / HYDRA_OVERRIDES, OmegaConf.to_yaml(OmegaConf.create(list(overrides))))
        self.probes_run += 1
        log.info("run %d: %s", self.probes_run, run_dir)
        tame_lightning()  # Lightning is imported by now: one handler, the root's
        if self.verbosity == "quiet":
            cfg.trainer.enable_progress_bar = False
        return run_or_record_failure(cfg, run_dir, list(overrides), multirun=True)

    def dense(self) -> dict[int, float]:
        """Dense test accuracy per seed: from --baseline dirs, else dense runs of our own."""
        if self._dense is not None:
            return self._dense
        acc: dict[int, float] = {}
        cfg = self.compose(self.overrides)
        if self.baseline_dirs:
            try:
                base = load_baseline(self.baseline_dirs)
            except ReportError as err:
                raise SearchError(str(err)) from None
            for seed in self._seeds():
                a = base.of((str(cfg.model.name), str(cfg.data.name), seed))
                if a is not None:
                    acc[seed] = a
        keep = [o for o in self.overrides if not override_key(o).startswith("pruning")
                and override_key(o) != "trainer.max_epochs"]
        for seed in self._seeds():
            if seed in acc:
                continue
            ov = [*keep, "pruning=none", f"trainer.max_epochs={self.max_epochs}"]
            sub = "search-dense"
            if self.seeds:
                ov.append(f"seed={seed}")
                sub += f"/seed={seed}"
            res = self._run(ov, self.sweep_dir / sub)
            if res is None or res.get("test_acc") is None:
                raise SearchError(f"the dense baseline run in {self.sweep_dir / sub} failed; "
                                  "see its failed.json")
            acc[seed] = float(res["test_acc"])
        self._dense = acc
        return acc

    def probe(self, method: str, amount: float) -> Probe:
        dense = self.dense()
        accs, drops, sparsity, dirs = [], [], [], []
        for seed in self._seeds():
            ov = [*self.overrides, f"pruning/method={method}", f"pruning.schedule.amount={amount:g}"]
            folder = f"amount={amount:g}"
            if self.seeds:
                ov.append(f"seed={seed}")
                folder += f",seed={seed}"
            run_dir = self.sweep_dir / f"search-{method}" / folder
            dirs.append(str(run_dir))
            res = self._run(ov, run_dir)
            if res is None:
                err = json.loads((run_dir / FAILED).read_text()).get("error", "?")
                return Probe(amount, None, None, None, dirs, f"{run_dir}: {err}")
            if not isinstance(res.get("test_acc"), int | float):
                return Probe(amount, None, None, None, dirs,
                             f"{run_dir}: no test accuracy in its results.json "
                             "(trainer.limit_test_batches=0?)")
            accs.append(float(res["test_acc"]))
            drops.append(100.0 * (dense[seed] - float(res["test_acc"])))
            sparsity.append(float(res.get("sparsity_global") or 0.0))
        p = Probe(amount, statistics.fmean(drops), statistics.fmean(accs),
                  statistics.fmean(sparsity), dirs)
        log.info(f"{method} amount={amount:g}: acc {100 * p.test_acc:.2f} %, drop "
                 f"{p.drop_pts:+.2f} pts, sparsity {100 * p.sparsity:.1f} %")
        return p


def search(methods: Sequence[str], overrides: Sequence[str] = (), delta: float = 0.5,
           lo: float = 0.5, hi: float = 0.99, iters: int = 5, seeds: Sequence[int] = (),
           sweep_dir: str | None = None, baseline: Sequence[str] = (),
           verbosity: str = "normal") -> dict[str, Any]:
    """Run the bisection for each method; write and return ``<sweep dir>/search.json``."""
    if not 0.0 <= lo < hi < 1.0:
        raise SearchError(f"need 0 <= --lo < --hi < 1, got lo={lo:g} hi={hi:g}")
    if not (math.isfinite(delta) and 0 <= delta <= MAX_DROP_PTS):
        raise SearchError(f"--delta must be a finite number of accuracy points in "
                          f"[0, {MAX_DROP_PTS:g}], got {delta:g}")
    if not 0 <= iters <= MAX_SEARCH_ITERS:
        raise SearchError(f"--iters must be in [0, {MAX_SEARCH_ITERS}] (each one is a training "
                          f"run), got {iters}")
    bad = next((s for s in seeds if not 0 <= s <= MAX_SEED), None)
    if bad is not None or len(seeds) > MAX_SEEDS:
        raise SearchError(f"--seeds: give at most {MAX_SEEDS} seeds in [0, {MAX_SEED}]"
                          + (f", got {bad}" if bad is not None else f", got {len(seeds)}"))
    if not methods:
        raise SearchError("give at least one --method")
    runner = Runner(overrides, sweep_dir, seeds, baseline)
    runner.verbosity = verbosity
    loader = make_loader(CONF_DIR)
    renamed: list[str] = []
    for m in methods:  # every method name and group choice, before anything runs
        try:
            renamed += check_overrides(loader, [*runner.overrides, f"pruning/method={m}"])
        except PrunelabError as err:
            raise SearchError(f"bad overrides: {err}") from None
        runner.compose([*runner.overrides, f"pruning/method={m}"])
    for note in dict.fromkeys(renamed):  # experiment=seed_mnist ...: once each
        log.warning(f"deprecated: {note}")
    per_method = (2 + iters) * len(runner._seeds())
    log.info("searching %d method(s): at most %d probe runs each (%d seed(s)), plus the dense "
             "baseline; folders under %s", len(methods), per_method, len(runner._seeds()),
             runner.sweep_dir)
    out: dict[str, Any] = {
        "delta": delta, "lo": lo, "hi": hi, "iters": iters, "seeds": list(runner._seeds()),
        "overrides": list(overrides), "sweep_dir": str(runner.sweep_dir),
        "baseline": {"sources": list(baseline) or [str(runner.sweep_dir / "search-dense")]},
        "methods": {},
    }
    path = runner.sweep_dir / SEARCH
    for m in methods:
        r = bisect(lambda a, m=m: runner.probe(m, a), lo, hi, delta, iters)
        r["message"] = message(m, r, delta, lo, hi)
        out["methods"][m] = r
        out["baseline"]["test_acc"] = {str(k): v for k, v in runner.dense().items()}
        _write(path, out)  # the answers are printed once, by the caller (prunelab search)
    return out


def _write(path: Path, payload: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(payload, indent=2))


if __name__ == "__main__":  # ``python -m prunelab.search``, the command line of 0.1
    from prunelab.cli import old_module_form

    old_module_form("search")
