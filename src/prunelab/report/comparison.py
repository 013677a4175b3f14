"""Comparing jobs: the dense baseline, what sets a job apart from the others of its kind (its
series label), configurations grouped over seeds into points, drops and the best point."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from prunelab.paths import has_no_effect, override_key
from prunelab.report.records import Baseline, Job, Point, _num

# overrides that name a job's model/data/method/amount/seed (shown in their own columns) or
# do not change its numbers; whatever else differs between jobs labels their series
_OWN_COLUMNS = {"model", "data", "seed", "pruning", "pruning/method", "pruning.method.name",
                "pruning.schedule.amount", "pruning.amount", "pruning.schedule"}
# the same, as keys of a job's saved config (.hydra/config.yaml), which labels series when every
# job has one: jobs launched with different overrides but the same config join one series
_OWN_CONFIG_KEYS = ("model.name", "data.name", "data.seed", "seed", "pruning.seed",
                    "pruning.schedule._target_", "pruning.schedule.amount",
                    "pruning.method._target_", "pruning.method.criterion", "pruning.budget",
                    "experiment")


def dense_baseline(jobs: Iterable[Job], source: str) -> Baseline:
    """The dense baseline that finished dense jobs give, per model/data/seed key.

    Where dense runs of several configurations exist for one model and data (e.g. 5 and 10
    epochs), only the configuration with the highest mean test accuracy is the baseline: a
    pruned run is compared with the strongest dense one, not with an average of budgets."""
    configs: dict[tuple, dict[str, list[Job]]] = defaultdict(lambda: defaultdict(list))
    for j in jobs:
        if j.dense and j.status == "ok" and j.test_acc is not None:
            configs[j.key[:2]][j.extra].append(j)
    base = Baseline()
    for by_extra in configs.values():
        best = max(by_extra.values(), key=lambda js: statistics.fmean(j.test_acc for j in js))
        for j in best:
            base.acc.setdefault(j.key, []).append(j.test_acc)
        if len(by_extra) > 1:
            base.sources.append(f"{source} (strongest of {len(by_extra)} dense configurations: "
                                f"{best[0].extra or 'default'})")
    if base.acc and not any(src.startswith(source) for src in base.sources):
        base.sources.append(source)
    return base


def _label_extras(jobs: list[Job]) -> None:
    """Give each job what distinguishes it from the others of its kind: the config values that
    differ between them when every job saved its config (so the same configuration launched
    with different overrides, e.g. ``experiment=X`` and X's values spelled out, is one series),
    else the overrides that differ."""
    for dense in (True, False):
        group = [j for j in jobs if j.dense is dense]
        if group and all(j.config for j in group):
            _label_from_configs(group, dense)
            continue
        others = [{o for o in j.overrides if override_key(o) not in _OWN_COLUMNS
                   and not has_no_effect(override_key(o)) and not o.startswith("hydra")}
                  for j in group]
        common = set.intersection(*others) if others else set()
        for j, o in zip(group, others, strict=True):
            j.extra = " ".join(sorted(o - common))


def _own_config_key(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in _OWN_CONFIG_KEYS) \
        or has_no_effect(key) or key.startswith("hydra.")


def _label_from_configs(group: list[Job], dense: bool) -> None:
    """``extra`` from the config keys whose values differ between jobs of the same schedule
    and method (those of different methods are told apart by the series name already, and
    their defaults differ by design); keys some configs lack (older runs) are left out."""
    def scope(j: Job, key: str) -> tuple:
        return (j.schedule, j.method)

    configs = [{k: v for k, v in (j.config or {}).items() if not _own_config_key(k)
                and not (dense and k.startswith("pruning."))} for j in group]
    keys = set.intersection(*(set(c) for c in configs))
    values: dict[tuple, set] = defaultdict(set)
    for j, c in zip(group, configs, strict=True):
        for k in keys:
            values[(k, *scope(j, k))].add(repr(c[k]))
    varying = sorted({k for k in keys for j in group if len(values[(k, *scope(j, k))]) > 1})
    # "n_steps=20" rather than "pruning.n_steps=20" where the last part names one key only
    tails = defaultdict(int)
    for k in varying:
        tails[k.rsplit(".", 1)[-1]] += 1
    for j, c in zip(group, configs, strict=True):
        parts = []
        for k in varying:
            if len(values[(k, *scope(j, k))]) > 1:
                tail = k.rsplit(".", 1)[-1]
                parts.append(f"{tail if tails[tail] == 1 else k}={_plain(c[k])}")
        j.extra = " ".join(parts)


def _plain(v: Any) -> str:
    if isinstance(v, tuple):
        return "[" + ",".join(str(x).strip("'") for x in v) + "]"
    return str(v)


def _series_name(j: Job, multi: dict[str, bool]) -> str:
    parts = [str(j.method)]
    if multi["schedule"] and not j.dense:
        parts.append(f"({j.schedule})")
    if multi["model"] or multi["data"]:
        parts.append(f"[{j.model}/{j.data}]")
    if j.budget and not j.dense:
        parts.append(f"{j.budget.partition('=')[0]} budget")
    if j.extra:
        parts.append(j.extra)
    return " ".join(parts)


def build_points(jobs: list[Job]) -> list[Point]:
    ok = [j for j in jobs if j.status == "ok"]
    multi = {k: len({getattr(j, k) for j in ok if not (k == "schedule" and j.dense)}) > 1
             for k in ("schedule", "model", "data")}
    groups: dict[tuple, list[Job]] = defaultdict(list)
    for j in ok:  # a budget run is one configuration per budget, whatever its amount
        amount = None if j.budget else j.amount
        groups[(j.model, j.data, j.schedule, j.method, amount, j.budget, j.extra)].append(j)
    points = [Point(_series_name(js[0], multi), m, d, s, meth, a, e, sorted(js, key=_seed_key),
                    budget=b)
              for (m, d, s, meth, a, b, e), js in groups.items()]
    return sorted(points, key=lambda p: (p.method != "dense", p.series, p.amount or 0.0,
                                         -_budget_limit(p.budget)))


def _budget_limit(budget: str | None) -> float:
    return float(_num(budget.partition("=")[2]) or 0) if budget else 0.0


def _seed_key(j: Job) -> tuple:
    return (j.seed is None, j.seed or 0, j.folder)


def compare(jobs: list[Job], baseline: Baseline) -> None:
    for j in jobs:
        dense = baseline.of(j.key)
        if j.status == "ok" and j.test_acc is not None and dense is not None:
            j.drop_pts = 100.0 * (dense - j.test_acc)


def best_within(points: list[Point], delta: float) -> dict[str, dict[str, Any]]:
    """Per series: the point with the highest sparsity reached whose mean drop is <= delta."""
    out: dict[str, dict[str, Any]] = {}
    for series in dict.fromkeys(p.series for p in points if p.method != "dense" and not p.budget):
        pts = [p for p in points if p.series == series]
        known = [p for p in pts if p.mean("drop_pts") is not None]
        if not known:
            out[series] = {"answer": None, "reason": "no dense baseline for these seeds"}
            continue
        ok = [p for p in known if p.mean("drop_pts") <= delta]
        if not ok:
            least = min(known, key=lambda p: p.mean("drop_pts"))
            out[series] = {"answer": None, "reason": (
                f"no amount tried is within {delta:g} pts (smallest drop "
                f"{least.mean('drop_pts'):.2f} pts at amount {least.amount:g})")}
            continue
        best = max(ok, key=lambda p: (p.mean("sparsity_global") or p.amount or 0.0))
        out[series] = {"answer": best.amount, "sparsity": best.mean("sparsity_global"),
                       "test_acc": best.mean("test_acc"), "test_acc_std": best.std("test_acc"),
                       "drop_pts": best.mean("drop_pts"), "n": best.n}
    return out


def notes(jobs: list[Job], points: list[Point]) -> list[str]:
    """Warnings about comparisons that are not like for like."""
    out = []
    for model, data in sorted({(p.model, p.data) for p in points}, key=str):
        dense = [p for p in points if p.method == "dense" and (p.model, p.data) == (model, data)]
        if len(dense) > 1:
            out.append(f"{model}/{data}: {len(dense)} different dense configurations ("
                       + "; ".join(p.extra or "defaults" for p in dense) + "); the baseline "
                       "averages them: keep one per sweep, or pass --baseline")
        ok = [j for j in jobs if j.status == "ok" and (j.model, j.data) == (model, data)]
        d_ep = sorted({j.epochs for j in ok if j.dense and j.epochs is not None})
        p_ep = sorted({j.epochs for j in ok if not j.dense and j.epochs is not None})
        subset = [j for j in ok if j.test_subset]
        if subset:
            shown = "; ".join(f"{j.folder}: {j.test_subset}" for j in subset[:3])
            out.append(f"{model}/{data}: {len(subset)} job(s) tested on part of the test set "
                       f"({shown}{'; ...' if len(subset) > 3 else ''} test samples; "
                       "trainer.limit_test_batches, trainer=fast): their test accuracy is an "
                       "estimate, not comparable with a full test")
        if d_ep and p_ep and d_ep != p_ep:
            out.append(f"{model}/{data}: dense runs trained {'/'.join(map(str, d_ep))} epochs, "
                       f"pruned runs {'/'.join(map(str, p_ep))}: not like for like (pruning "
                       "schedules set trainer.max_epochs; pass the same trainer.max_epochs=N "
                       "to the dense and the pruned sweeps)")
    return out


def _job_order(j: Job) -> tuple:
    return (str(j.model), str(j.data), not j.dense, str(j.method), j.extra, str(j.budget),
            j.amount if j.amount is not None else -1.0, _seed_key(j))
