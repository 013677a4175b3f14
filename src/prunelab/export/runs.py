"""Shipping a finished run's model: the library behind ``prunelab export``.

:func:`export_run` writes, for each encoding, ``<run>/export/<encoding>/model.plx`` (one
self-contained compressed file), loads it back with :func:`prunelab.export.load`, measures its
test accuracy on the run's test set and writes ``export.json`` beside it; ``model.onnx`` too
when ``onnx`` is installed. For each deployable format (:data:`prunelab.export.deploy.FORMATS`)
it writes ``<run>/export/<format>/model.onnx`` or ``model.pte``, runs it in its own runtime on
the test set, times it there against the dense fp32 file of the same network
(:mod:`prunelab.export.timing`) and writes ``export.json``. :func:`describe` checks a file and
summarises it.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import json
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunelab.errors import CheckpointError, ConfigError, PrunelabError
from prunelab.evaluate import evaluate as eval_net
from prunelab.export import (
    artifact,
    choice,
    codecs,
    container,
    deadunits,
    deploy,
    finetune,
    manifest,
    runtimes,
    timing,
)
from prunelab.io import atomic_write, write_json
from prunelab.loading import load_finished_run, run_datamodule, run_test_loader
from prunelab.messages import get_logger
from prunelab.paths import (
    COMPACT_MODEL,
    EXPORT_ARTIFACT,
    EXPORT_DIR,
    EXPORT_ONNX,
    EXPORT_PTE,
    EXPORT_REPORT,
    FINAL_MODEL,
    QUANTIZED_MODEL,
    RESULTS,
    run_config,
)

log = get_logger(__name__)

DEFAULT_ENCODINGS = (choice.AUTO,)
ARTIFACT, REPORT, ONNX = EXPORT_ARTIFACT, EXPORT_REPORT, EXPORT_ONNX  # names in each folder
#: every name ``prunelab export --format`` takes: the .plx encodings, then the deployable formats
FORMATS = (*codecs.ENCODINGS, choice.AUTO, *deploy.FORMATS)
#: each deployable format's file in its folder
DEPLOY_FILE = {f: EXPORT_ONNX if deploy.runtime_of(f) == "onnxruntime" else EXPORT_PTE
               for f in deploy.FORMATS}


def check_format(name: str) -> str:
    """``name`` if ``prunelab export`` writes it; one line with the valid names otherwise."""
    if name not in FORMATS:
        raise PrunelabError(f"unknown format {name!r}; valid: {', '.join(FORMATS)}")
    return name


def finished_run(run_dir: Path, allow: Iterable[str] = ()) -> tuple[Path, nn.Module, Any]:
    """(final_model.pt, the run's plain network, the run's config) of a run that finished;
    PrunelabError otherwise. The saved config is untrusted: only allow-listed classes are built
    (prunelab's own, and those under ``allow`` / $PRUNELAB_ALLOW_TARGETS)."""
    if not run_config(run_dir).exists():
        raise PrunelabError(f"{run_dir} is not a prunelab run directory (no .hydra/config.yaml)")
    final = run_dir / FINAL_MODEL
    if not final.exists() or not (run_dir / RESULTS).exists():
        raise PrunelabError(
            f"{run_dir} has no finished model (final_model.pt and results.json are written at the "
            "end of training): relaunch the run's command to resume and finish it")
    net, cfg, _ = load_finished_run(final, allow)
    return final, net, cfg


def network_kwargs(cfg: Any) -> dict[str, Any]:
    """The network's constructor arguments from the run's config (``model.net`` minus target)."""
    from omegaconf import OmegaConf

    kwargs = OmegaConf.to_container(cfg.model.net, resolve=True)
    kwargs.pop("_target_", None)
    return kwargs


def network_builder(cfg: Any) -> str | None:
    """The artifact's builder: the function the run's ``model.net._target_`` names, by the path
    it is defined at (``model=torchvision``: prunelab's builder); None when the target is the
    network's class, which then names itself."""
    from hydra.utils import get_object

    target = get_object(cfg.model.net.get("_target_"))
    return None if isinstance(target, type) else f"{target.__module__}.{target.__qualname__}"


def test_loader(cfg: Any, data_dir: str | None) -> Any:
    return run_test_loader(cfg, data_dir)


def example_input(cfg: Any, data_dir: str | None) -> torch.Tensor:
    """One input sample for the ONNX export, from the run's data module (without a test pass)."""
    from prunelab.data import example_input as from_data  # lazy: Lightning, for ONNX only

    return from_data(run_datamodule(cfg, data_dir))


def export_onnx(net: nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any] | None:
    """ONNX of the decoded network beside the artifact (batch dimension dynamic), checked with
    ``onnx.checker`` and, where onnxruntime is installed, run against the torch outputs.
    None (and a note) when onnx is not installed or the export fails: it is an optional extra.
    """
    try:
        import onnx
    except ImportError:
        log.info("onnx is not installed: no ONNX file written (pip install onnx)")
        return None
    try:
        with warnings.catch_warnings():  # the tracer's notes on Python-side branches
            warnings.simplefilter("ignore")
            # token ids are padded per batch: their length varies as well as the batch
            axes = {0: "batch"} if example.is_floating_point() else {0: "batch", 1: "length"}
            buffer = io.BytesIO()
            torch.onnx.export(net, (example,), buffer, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": axes},
                              dynamo=False)
        onnx.checker.check_model(buffer.getvalue())
        atomic_write(path, buffer.getvalue())
    except Exception as err:  # optional output: never lose the artifact over it
        log.warning("ONNX export failed, skipped: %s: %s", type(err).__name__,
                    str(err).splitlines()[0][:160] if str(err) else "")
        path.unlink(missing_ok=True)
        return None
    info: dict[str, Any] = {"path": str(path), "bytes": path.stat().st_size}
    try:
        import onnxruntime as ort
    except ImportError:
        return info
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = torch.cat([example] * 4)
    got = session.run(None, {"input": batch.numpy()})[0]
    with torch.no_grad():
        info["max_abs_diff_onnxruntime"] = float(abs(got - net(batch).numpy()).max())
    return info


def export_run(run_dir: Path, encodings: list[str], out: Path | None = None,
               data_dir: str | None = None, evaluate: bool = True,
               finetune_epochs: int = 0, finetune_lr: float = finetune.LR,
               allow: Iterable[str] = (), latency: bool = True, threads: int | None = None,
               latency_reps: int | None = None, biases: str = "fp32",
               dead_units: str = deadunits.DEFAULT,
               max_bytes: int | None = None) -> list[dict[str, Any]]:
    """Export a finished run in each encoding; return the export.json records.

    ``auto`` (:mod:`prunelab.export.choice`) writes the candidate encoding chosen by validation
    accuracy, into that encoding's folder; with ``max_bytes``, among the smaller codings'
    files within that size. With ``finetune_epochs`` > 0 the ``kmeans<b>``
    encodings are fine-tuned first (trained quantisation, :mod:`prunelab.export.finetune`) and
    written to ``<encoding>-ft<N>/``; ``biases`` ``int8`` stores one-dimensional tensors in 8
    bits, into ``...-b8/``. ``dead_units``: what happens to units that cannot change the
    output (:mod:`prunelab.export.deadunits`), once, before any of that. ``allow``: module
    prefixes of the user's own classes the run's config may name (as ``--allow-target``); the
    artifacts of such a network need the same to load.
    ``latency``: time each deployable file in its runtime on ``threads`` threads (default:
    torch's count), ``latency_reps`` paired rounds per batch size (:mod:`~prunelab.export.timing`).
    """
    for enc in encodings:
        check_format(enc)
    codecs.check_vectors(biases)
    deadunits.check_mode(dead_units)
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int)
                                  or max_bytes < container.HEADER_BYTES):
        raise ConfigError(f"--max-bytes must be a whole number of bytes >= "
                          f"{container.HEADER_BYTES}, got {max_bytes}")
    if max_bytes is not None and choice.AUTO not in encodings:
        raise ConfigError(f"--max-bytes chooses among encodings: give it with --encoding "
                          f"{choice.AUTO} (the default), not {', '.join(encodings)}")
    # fp32 first: the fp32 file of each runtime is the dense baseline of the others' latency
    formats = sorted((e for e in encodings if e in deploy.FORMATS), key=deploy.FORMATS.index)
    encodings = [e for e in encodings if e not in deploy.FORMATS]
    for fmt in formats:
        deploy.require(fmt)  # the extra it needs, before anything is read or written
    if latency and formats:
        threads = timing.check_threads(threads)
        latency_reps = timing.check_reps(timing.REPS if latency_reps is None else latency_reps)
    compact_file = run_dir / COMPACT_MODEL
    if any(deploy.is_compact(f) for f in formats) and not compact_file.is_file():
        raise PrunelabError(
            f"--format {','.join(f for f in formats if deploy.is_compact(f))}: {run_dir} has no "
            f"{COMPACT_MODEL} (the compacted network of a structured-pruned run); make it with: "
            f"prunelab compact {run_dir}")
    finetune.check(finetune_epochs, finetune_lr)
    allow = tuple(allow)
    final, net, cfg = finished_run(run_dir, allow)
    kwargs, builder = network_kwargs(cfg), network_builder(cfg)
    results = json.loads((run_dir / RESULTS).read_text())
    binary = cfg.model.get("task") == "binary"
    loader = test_loader(cfg, data_dir) if evaluate else None
    source_acc = eval_net(net, loader, binary)["test_acc"] if loader is not None else None
    # the ONNX file's example input: a test sample, or the data module's own without a test pass
    example = next(iter(loader))[0][:1] if loader is not None else example_input(cfg, data_dir)
    base, dead = deadunits.strip(net, example, dead_units)
    if dead.kept:
        log.warning("dead units kept as trained: %s", dead.kept)
    elif dead.params_removed:
        log.info("dead units: %d non-zero parameters zeroed (%s), outputs unchanged (largest "
                 "difference %.3g)", dead.params_removed, ", ".join(
                     f"{name}: {counts}" for name, counts in dead.layers.items()),
                 dead.max_abs_output_diff)
    state = base.state_dict()
    root = out or run_dir / EXPORT_DIR

    def metadata(tuned: dict[str, Any] | None) -> dict[str, Any]:
        # what the file is, in a few bytes (its run and folder are in export.json beside it)
        acc = results.get("test_acc")
        return {"model": cfg.model.name, "data": cfg.data.name,
                "method": results.get("method"), "amount": results.get("amount"),
                "run_test_acc": round(acc, 6) if isinstance(acc, float) else acc,
                **({"finetune": {k: tuned[k] for k in ("epochs", "lr")}} if tuned else {})}

    def prepare(enc: str) -> tuple[nn.Module, dict[str, Any] | None, Path, bytes]:
        shipped, tuned, folder = finetune.for_encoding(
            base, cfg, enc, finetune_epochs, finetune_lr, data_dir, root / enc)
        if biases != "fp32":
            folder = folder.with_name(f"{folder.name}-b8")
        data = artifact.encode(shipped, enc, kwargs, metadata(tuned), builder, biases)
        return shipped, tuned, folder, data

    records = []
    for enc in encodings:
        chosen = None
        if enc == choice.AUTO:
            enc, (_, tuned, folder, data), chosen = choose_default(
                prepare, base, cfg, data_dir, evaluate, binary, allow, max_bytes)
        else:
            _, tuned, folder, data = prepare(enc)
        path = folder / ARTIFACT
        atomic_write(path, data)
        size = len(data)
        # everything below is measured from the file (written just now: trusted to be as
        # large as the network), and a plain load of it is checked to be within its limit
        limit = 4 * artifact.dense_bytes(state) + manifest.limit_for(size)
        stored, decoded, loaded = artifact.open_artifact(path, allow, limit)
        try:
            manifest.check(stored, str(path), size, version=container.VERSION)
        except CheckpointError:
            log.warning("%s: its network takes %.0f times the file's size, more than "
                        "prunelab.export.load accepts by default; load it with "
                        "load(path, max_bytes=%d)", path, artifact.dense_bytes(state) / size, limit)
        record: dict[str, Any] = {
            "artifact": str(path),
            "run": str(run_dir.resolve()),
            "format": enc,  # as every export.json: the name given to --format / --encoding
            "encoding": enc,
            "artifact_bytes": size,
            "dense_bytes": artifact.dense_bytes(state),
            "state_dict_file_bytes": final.stat().st_size,
            "ratio": artifact.dense_bytes(state) / size,
            "params_total": sum(t.numel() for t in decoded.values()),
            "params_nonzero": sum(int((t != 0).sum()) for t in decoded.values()),
            "max_abs_weight_error": max(float((decoded[k].float() - v.float()).abs().max())
                                        for k, v in state.items() if v.numel()),
            "biases": biases,
            "dead_units": dead.record(),
            "chosen": chosen,
            "tensors": [{k: e.get(k) for k in ("name", "shape", "kind", "nnz", "positions",
                                               "values")}
                        for e in stored["tensors"]],
            "finetune": tuned,
            "source_test_acc": source_acc,
            "run_test_acc": results.get("test_acc"),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "versions": {"torch": torch.__version__},
        }
        if loader is not None:
            measured = eval_net(loaded, loader, binary)
            record.update(test_acc=measured["test_acc"], test_error=1 - measured["test_acc"],
                          test_samples=measured["test_samples"])
        record["onnx"] = export_onnx(loaded, example, folder / ONNX)
        atomic_write(folder / REPORT, json.dumps(record, indent=2) + "\n")
        acc = f", test_acc {record['test_acc']:.4f}" if "test_acc" in record else ""
        log.info("%s: %d bytes (%.1fx smaller than the dense state dict)%s", path, size,
                 record["ratio"], acc)
        records.append(record)
    if formats:
        calibration = functools.partial(train_inputs, cfg, data_dir)
        dynamic = (results.get("quantize") or {}).get("activations") == "dynamic"
        sources = {False: deploy.Source(net, example, calibration, run_dir / QUANTIZED_MODEL,
                                        dynamic)}
        if any(deploy.is_compact(f) for f in formats):  # its int8 model is made at export
            sources[True] = deploy.Source(deploy.compacted_network(compact_file), example,
                                          calibration, dynamic=dynamic)
        with tempfile.TemporaryDirectory(prefix="prunelab-dense-") as tmp:
            baselines = Baselines(sources[False], Path(tmp)) if latency else None
            for fmt in formats:
                compact = deploy.is_compact(fmt)
                records.append(export_format(
                    fmt, sources[compact], (out or run_dir / EXPORT_DIR) / fmt, loader, binary,
                    results, cfg, data_dir, artifact.dense_bytes(state), baselines, threads,
                    latency_reps, {"compacted_from": str(compact_file)} if compact else {}))
    return records


def choose_default(prepare: Any, base: nn.Module, cfg: Any, data_dir: str | None,
                   evaluate: bool, binary: bool, allow: Iterable[str],
                   max_bytes: int | None = None) -> tuple[str, Any, dict[str, Any]]:
    """(the encoding ``auto`` chose, what ``prepare`` made of it, the choice's record): each
    candidate encoded, decoded and measured on the run's validation split (without
    ``evaluate``: nothing measured, the first candidate); with ``max_bytes`` the smaller
    codings compete, within that size."""
    val = val_loader(cfg, data_dir) if evaluate else None
    reference = samples = None
    if val is not None:
        measured = eval_net(base, val, binary)
        reference, samples = measured["test_acc"], measured["test_samples"]
    candidates = []
    for enc in choice.CANDIDATES if max_bytes is None else choice.BUDGET_CANDIDATES:
        prepared = prepare(enc)
        acc = None
        if val is not None:
            limit = 4 * artifact.dense_bytes(base.state_dict()) + manifest.limit_for(0)
            _, _, decoded = artifact.from_bytes(prepared[3], enc, allow, limit)
            acc = eval_net(decoded, val, binary)["test_acc"]
        candidates.append(choice.Candidate(enc, len(prepared[3]), acc, prepared))
    chosen, reason = choice.choose(candidates, reference, max_bytes)
    (log.warning if max_bytes is not None and chosen.bytes > max_bytes else log.info)(
        "default encoding: %s, %s", chosen.encoding, reason)
    return chosen.encoding, chosen.payload, choice.record(chosen, reason, candidates, reference,
                                                          samples, max_bytes)


def val_loader(cfg: Any, data_dir: str | None) -> Any:
    """The validation loader of a run's config (the split the run chose on, never the test)."""
    datamodule = run_datamodule(cfg, data_dir)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule.val_dataloader()


class Baselines:
    """The dense fp32 file of the run's network in each runtime, the baseline of every latency
    measured there: the ``onnx`` / ``executorch`` file written in this export, or one written
    into ``tmp`` when that format is not asked for."""

    def __init__(self, source: deploy.Source, tmp: Path) -> None:
        self.source, self.tmp = source, tmp
        self.files: dict[str, tuple[Path, str]] = {}

    def written(self, fmt: str, path: Path) -> None:
        if fmt == deploy.FP32[deploy.runtime_of(fmt)]:
            self.files[deploy.runtime_of(fmt)] = (path, str(path))

    def of(self, fmt: str) -> tuple[Path, str]:
        """The baseline file of ``fmt``'s runtime, and what export.json calls it."""
        runtime = deploy.runtime_of(fmt)
        if runtime not in self.files:
            base = deploy.FP32[runtime]
            path = self.tmp / DEPLOY_FILE[base]
            log.info("writing the dense fp32 %s file of the run's network: the latency baseline",
                     base)
            deploy.write(base, self.source, path)
            self.files[runtime] = (path, f"the run's network as --format {base} (written for "
                                         "the timing, not kept)")
        return self.files[runtime]


def train_inputs(cfg: Any, data_dir: str | None) -> Iterable[torch.Tensor]:
    """The run's training inputs, in the run's (seeded) order: what int8 files calibrate on."""
    datamodule = run_datamodule(cfg, data_dir)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return (x for x, _ in datamodule.train_dataloader())


def export_format(fmt: str, source: deploy.Source, folder: Path, loader: Any, binary: bool,
                  results: dict[str, Any], cfg: Any, data_dir: str | None = None,
                  dense: int | None = None, baselines: Baselines | None = None,
                  threads: int | None = None, reps: int | None = None,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write one deployable file, load it in its runtime, measure it on the test set (or check
    it on one batch without ``loader``) against the PyTorch model it came from, time it against
    its runtime's dense baseline (with ``baselines``); export.json. ``dense``: the dense fp32
    state dict's bytes (default: the source network's); ``extra``: more keys for the record."""
    path = folder / DEPLOY_FILE[fmt]
    written = deploy.write(fmt, source, path)
    runner = runtimes.open_file(path)
    state = source.net.state_dict()
    dense = dense or artifact.dense_bytes(state)
    size = path.stat().st_size
    record: dict[str, Any] = {
        "format": fmt, "artifact": str(path), "artifact_bytes": size, "dense_bytes": dense,
        "ratio": dense / size,
        "params_total": sum(t.numel() for t in state.values()),
        "params_nonzero": sum(int((t != 0).sum()) for t in state.values()),
        **written.record, **(extra or {}),
        "input": input_record(cfg, source.example, data_dir),
        "run_test_acc": results.get("test_acc"),
        "run_int8_test_acc": results.get("int8_test_acc"),
    }
    batches = loader if loader is not None else [(torch.cat([source.example] * 2),
                                                  torch.zeros(2))]
    measured = runtimes.compare(runner, written.reference, batches, binary)
    if loader is None:  # one batch of a sample: only the agreement means something
        measured = {k: measured[k] for k in ("agreement", "max_abs_diff")}
    record.update(measured)
    if baselines is not None:
        baselines.written(fmt, path)
        log.info("%s: timing it in its runtime against the dense fp32 file", path)
        baseline, label = baselines.of(fmt)
        record.update(timing.measure(path, baseline, source.example, threads, reps,
                                     baseline_label=label))
    record.update(runtime=runtimes.runtime_versions(path),
                  date=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                  versions={"torch": torch.__version__})
    write_json(folder / REPORT, record)
    acc = f", test_acc {record['test_acc']:.4f}" if "test_acc" in record else ""
    speed = "".join(f", {r:.2f}x the dense latency at batch {k[2:]}"
                    for k, r in record.get("latency_ratio", {}).items())
    log.info("%s: %d bytes (%.1fx smaller than the dense state dict)%s, agrees with PyTorch on "
             "%.2f %% of the samples%s", path, size, record["ratio"], acc,
             100 * record["agreement"], speed)
    return record


def input_record(cfg: Any, example: torch.Tensor, data_dir: str | None = None) -> dict[str, Any]:
    """What a device feeds the file: the input's shape and type, and how the run's data module
    prepared it (read from the module, which is built but reads no data)."""
    tokens = not example.is_floating_point()
    out: dict[str, Any] = {
        "shape": ["batch", "length"] if tokens else ["batch", *example.shape[1:]],
        "dtype": "int64" if tokens else "float32"}
    data = run_datamodule(cfg, data_dir)
    if tokens:
        out["preprocessing"] = (f"token ids of the run's tokenizer ({cfg.data.get('name')}, "
                                f"vocab_size {getattr(data, 'vocab_size', '?')}), 0 = padding, "
                                f"at most max_len={getattr(data, 'max_len', '?')} ids per text")
    elif getattr(data, "normalize_mean", None) is not None:
        out["preprocessing"] = (f"pixels / 255, minus {data.normalize_mean}, divided by "
                                f"{data.normalize_std}")
    return out


def describe(path: Path, allow: Iterable[str] = ()) -> dict[str, Any]:
    """A checked file's summary: a ``.onnx`` or ``.pte`` loads and runs in its runtime; a
    ``.plx`` artifact loads (decodes, builds and fits the network); and what it holds."""
    if path.suffix in runtimes.SUFFIXES:
        return runtimes.describe_file(path)
    record, state, _ = artifact.open_artifact(path, allow)
    return {"artifact": str(path), "bytes": path.stat().st_size,
            "encoding": record.get("encoding"), "architecture": record["architecture"],
            "params_total": sum(t.numel() for t in state.values()),
            "params_nonzero": sum(int((t != 0).sum()) for t in state.values()),
            "metadata": record.get("metadata")}
