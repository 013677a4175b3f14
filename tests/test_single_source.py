"""One definition per fact: run-folder file names live in ``prunelab.paths`` only."""

from __future__ import annotations

import ast

from prunelab import paths

from conftest import ROOT

SRC = ROOT / "src" / "prunelab"
RUN_FOLDER_NAMES = {paths.RESULTS, paths.FAILED, paths.SEARCH, paths.FINAL_MODEL,
                    paths.COMPACT_MODEL, paths.CHECKPOINT_DIR, paths.LAST_CHECKPOINT,
                    paths.HYDRA_DIR, paths.HYDRA_OVERRIDES, paths.EXPORT_ARTIFACT,
                    paths.EXPORT_REPORT, paths.EXPORT_ONNX, paths.OPTUNA_DB, paths.OPTUNA_RESULTS}
# report.py's owner switches it to prunelab.paths; remove this entry when that lands
KNOWN: dict[str, set[str]] = {}


def _path_literals(tree: ast.AST) -> set[str]:
    """String constants that spell a run-folder name (alone or as a path's last part); prose
    and messages that mention a name (they hold spaces) are not definitions."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            v = node.value
            if not any(c.isspace() for c in v) and any(
                    v == n or v.endswith("/" + n) for n in RUN_FOLDER_NAMES):
                out.add(v)
    return out


def test_run_folder_names_are_spelled_only_in_paths():
    found = {}
    for f in sorted(SRC.rglob("*.py")):
        if f == SRC / "paths.py":
            continue
        hits = _path_literals(ast.parse(f.read_text())) - KNOWN.get(f.name, set())
        if hits:
            found[str(f.relative_to(SRC))] = sorted(hits)
    assert found == {}, f"use the names in prunelab.paths instead: {found}"


def test_the_scan_sees_a_spelled_out_name():
    tree = ast.parse('p = run_dir / "final_model.pt"\nq = "a/b/export.json"\nm = f"see {x} results.json"')
    assert _path_literals(tree) == {"final_model.pt", "a/b/export.json"}


def test_no_effect_keys_change_neither_a_runs_identity_nor_a_search_probe(make_cfg):
    """The keys of paths.NO_EFFECT_KEYS may differ between launches of one run (resume) and
    between a search and its finished probes (reuse)."""
    from prunelab.run import result_config
    from prunelab.search import _effective

    no_effect = ["progress_refresh_rate=5", "threads=1", "verbosity=quiet", "name=other",
                 "logger=none", "trainer.enable_progress_bar=true", "trainer.enable_model_summary=true"]
    assert result_config(make_cfg("pruning=one_shot", *no_effect)) == \
        result_config(make_cfg("pruning=one_shot"))
    assert result_config(make_cfg("pruning=one_shot", "pruning.schedule.amount=0.6")) != \
        result_config(make_cfg("pruning=one_shot"))
    assert _effective(["pruning.amount=0.5", *no_effect, "hydra/launcher=joblib"]) == \
        ["pruning.amount=0.5"]
