"""The batch runner of `hamverify verify`: joblib (loky) worker processes, one record per input
appended as results arrive, resume from an existing results file."""
from __future__ import annotations

import os
import pathlib
import sys
import time
import warnings

import numpy as np

from . import HamverifyError
from .records import (ResultsWriter, VerificationRecord, check_compatible, dedupe_latest, read_records,
                      rewrite_records)
from .verify import Verifier, VerifySettings

_WORKER_CACHE: dict = {}


def load_verifier(model_path: str, settings: VerifySettings, dataset: str | None = None) -> Verifier:
    """The process's Verifier for this model file (path and content) and settings, built once
    (model load + IR); a checkpoint rewritten at the same path is loaded afresh.  An ONNX model
    (``.onnx``) needs ``dataset`` for its input shape."""
    from .models import file_sha256
    from .onnx_io import load_any_model
    sha = file_sha256(model_path)
    key = (str(model_path), sha, settings, dataset)
    if key not in _WORKER_CACHE:
        import torch
        torch.set_num_threads(1)
        model, input_shape, _, _ = load_any_model(model_path, dataset)
        _WORKER_CACHE.clear()
        _WORKER_CACHE[key] = Verifier(model, input_shape, settings, sha)
    return _WORKER_CACHE[key]


def verify_task(model_path: str, settings: VerifySettings, index: int, x_uint8: np.ndarray, label: int,
                dataset: str | None = None):
    """One input, in a worker process; x is uint8 HWC as stored in the dataset."""
    verifier = load_verifier(model_path, settings, dataset)
    x = np.transpose(np.asarray(x_uint8, dtype=np.float64) / 255.0, (2, 0, 1))
    return verifier.verify(x, label, index)


def default_results_path(model_path, dataset: str, split: str, eps: float) -> pathlib.Path:
    stem = pathlib.Path(model_path).stem if pathlib.Path(model_path).stem != "model" else pathlib.Path(model_path).parent.name
    return pathlib.Path("results") / f"{stem}_{dataset}_{split}_eps{eps:.5f}.jsonl"


def prepare_resume(results_path, model_sha256: str, eps: float, log) -> dict[int, VerificationRecord]:
    records, note = read_records(results_path)
    if note:
        log(note)
        rewrite_records(results_path, records)
    check_compatible(results_path, records, model_sha256, eps)
    return dedupe_latest(records)


def _progress(total, enabled):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="verify", dynamic_ncols=True, file=sys.stderr)


def save_counterexample(results_path, index: int, point: np.ndarray, input_shape) -> str:
    folder = pathlib.Path(str(results_path) + ".cex")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{index}.npy"
    np.save(path, np.asarray(point, dtype=np.float64).reshape(input_shape))
    return str(path)


def run_verification(model_path, settings: VerifySettings, x: np.ndarray, y: np.ndarray, indices: list[int],
                     results_path, workers: int = 1, progress: bool = True, log=print,
                     dataset: str | None = None) -> list[VerificationRecord]:
    """Verify x[indices]; returns the records of exactly those indices (old and new).  ``dataset``
    is needed for an ONNX model (its input shape), ignored for a checkpoint."""
    from joblib import Parallel, delayed
    verifier = load_verifier(model_path, settings, dataset)  # fail fast in the driver (model, IR, solver)
    sha, input_shape = verifier.model_sha256, verifier.input_shape
    done = prepare_resume(results_path, sha, settings.eps, log)
    todo = [i for i in indices if i not in done]
    if len(todo) < len(indices):
        log(f"resuming: {len(indices) - len(todo)} of {len(indices)} inputs already in {results_path}")
    cores = os.cpu_count() or 1
    if workers > cores:
        warnings.warn(f"{workers} workers on {cores} cores: inputs will compete for CPU time and may time out")
    writer = ResultsWriter(results_path)
    bar = _progress(len(todo), progress)
    counts = {"verified": 0, "falsified": 0, "timeout": 0}
    try:
        tasks = (delayed(verify_task)(str(model_path), settings, i, x[i], int(y[i]), dataset) for i in todo)
        runner = Parallel(n_jobs=workers, backend="loky", return_as="generator_unordered") if workers > 1 else None
        results = runner(tasks) if runner else (verify_task(str(model_path), settings, i, x[i], int(y[i]), dataset)
                                                for i in todo)
        for rec, cex in results:
            if cex is not None:
                rec.counterexample = save_counterexample(results_path, rec.index, cex, input_shape)
            writer.write(rec)
            done[rec.index] = rec
            if rec.status in counts:
                counts[rec.status] += 1
            if bar is not None:
                bar.set_postfix(counts)
                bar.update(1)
    finally:
        writer.close()
        if bar is not None:
            bar.close()
    return [done[i] for i in indices if i in done]
