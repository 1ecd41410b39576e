"""Per-input verification records and the append-only results file (JSON lines).

A record is written whole (one line, flushed) or not at all; a summary is always recomputed from
the records.  Resuming reads the file back, drops a truncated last line (reporting it), and
refuses a file written for another model, eps, data (dataset, split, source, the pixels of an
input) or verdict-changing setting (RESUME_SETTINGS): one results file holds one experiment.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from dataclasses import dataclass, field

import numpy as np

from . import HamverifyError

STATUSES = ("verified", "falsified", "misclassified", "timeout", "unknown", "error")

# VerifySettings fields that can change a verdict: stored in every record, and a resume with any
# other value is refused (a summary must describe one run, not a mix).
RESUME_SETTINGS = ("tol", "tightening", "backend", "pulp_solver", "timeout", "pgd_steps", "pgd_restarts",
                   "lp_time_per_neuron", "seed", "stages", "attack_steps", "attack_restarts", "alpha_steps",
                   "lp_share", "bab_share", "bab_stall", "bab_branching", "bab_intermediate", "bab_batch")
# Where the inputs came from: a record of another dataset, split or source is another experiment.
RESUME_DATA = ("dataset", "split", "source")


@dataclass
class VerificationRecord:
    index: int
    label: int
    predicted: int | None = None
    status: str = "unknown"
    decided_by: str | None = None          # clean | bounds | pgd | attack | lp | alpha | bab | milp | None
    pgd_robust: bool | None = None         # clean-correct and PGD found nothing
    eps: float = 0.0
    tightening: str = ""
    backend: str = ""
    tol: float | None = None               # the margin a proof must exceed (VerifySettings.tol)
    timeout: float | None = None
    pulp_solver: str | None = None
    pgd_steps: int | None = None
    pgd_restarts: int | None = None
    lp_time_per_neuron: float | None = None
    seed: int | None = None
    stages: str | None = None              # the cascade's optional stages (VerifySettings.stages)
    attack_steps: int | None = None
    attack_restarts: int | None = None
    alpha_steps: int | None = None
    lp_share: float | None = None
    bab_share: float | None = None
    bab_stall: float | None = None
    bab_branching: str | None = None
    bab_intermediate: str | None = None
    bab_batch: int | None = None
    dataset: str | None = None
    split: str | None = None
    source: str | None = None              # embedded | npz | official (data.dataset_source)
    input_sha256: str | None = None        # short hash of the input's uint8 pixels and label
    time_total: float = 0.0
    time_pgd: float = 0.0
    time_bounds: float = 0.0
    time_build: float = 0.0
    time_solve: float = 0.0
    unstable_per_layer: list | None = None
    milp_rows: int | None = None
    milp_cols: int | None = None
    milp_binaries: int | None = None
    targets_solved: int = 0
    objective_bound: float | None = None   # smallest proven lower bound on the margin
    objective_value: float | None = None   # smallest margin found at a feasible point
    margin_bounds_min: float | None = None # smallest margin lower bound from the bounds stage
    counterexample: str | None = None      # file of the validated counterexample
    cex_margin: float | None = None        # float64 PyTorch margin at the counterexample (< 0)
    reason: str | None = None              # why unknown / error / timeout
    model_sha256: str = ""
    hamverify_version: str = ""
    solver_status: list = field(default_factory=list)
    stage_times: dict = field(default_factory=dict)  # seconds per cascade stage that ran (clean, bounds, pgd, ...)
    open_after_bounds: int | None = None   # target classes the bounds stage left open
    bab_domains: int | None = None         # subdomains the BaB stage bounded
    overrun: float | None = None           # seconds past the budget, if the input took longer

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), allow_nan=False, default=float)

    @classmethod
    def from_dict(cls, d: dict) -> "VerificationRecord":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def read_records(path) -> tuple[list[VerificationRecord], str | None]:
    """Records of a results file and, if its last line is truncated or garbled, a note saying so."""
    path = pathlib.Path(path)
    if not path.exists():
        return [], None
    if path.is_dir():
        raise HamverifyError(f"results path {path} is a directory")
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    records, note = [], None
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise TypeError("not a record")
            records.append(VerificationRecord.from_dict(obj))
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError):
            is_last = all(not rest.strip() for rest in lines[i + 1:])
            if not is_last:
                raise HamverifyError(f"{path}: line {i + 1} is not a valid record (the file is damaged "
                                     f"beyond its last line; move it away to start afresh)") from None
            note = f"{path}: the last line (line {i + 1}) is truncated; that input will be recomputed"
    return records, note


def rewrite_records(path, records: list[VerificationRecord]) -> None:
    """Atomically replace the file by exactly these records (used to drop a truncated line)."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        for r in records:
            f.write(r.to_json() + "\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def input_digest(x_uint8, label: int) -> str:
    """Short sha256 of an input's stored pixels (uint8, as in the dataset) and its label."""
    a = np.ascontiguousarray(np.asarray(x_uint8))
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}{int(label)}".encode())
    h.update(a.tobytes())
    return h.hexdigest()[:16]


def check_compatible(path, records: list[VerificationRecord], model_sha256: str, eps: float,
                     settings: dict | None = None, data: dict | None = None,
                     digests: dict[int, str] | None = None) -> None:
    """Refuse (one HamverifyError line naming the difference) to add to a file written by another
    experiment: model, eps, any RESUME_SETTINGS value, dataset/split/source, or for an index being
    run, other pixels or label (``digests``: index -> input_digest).  A record that lacks one of
    these fields (an older hamverify) cannot be checked and is refused as well."""
    hint = "use another --results file (or move this one away)"
    for r in records:
        if r.model_sha256 and r.model_sha256 != model_sha256:
            raise HamverifyError(f"{path} holds results of another model (sha256 {r.model_sha256[:12]}…, "
                                 f"this one {model_sha256[:12]}…); {hint}")
        if abs(r.eps - eps) > 1e-12:
            raise HamverifyError(f"{path} holds results for eps {r.eps:.6g}, not {eps:.6g}; {hint}")
        for group, wanted in (("setting", settings or {}), ("data", data or {})):
            for key, value in wanted.items():
                have = getattr(r, key, None)
                if have is None:
                    raise HamverifyError(f"{path}: record of input {r.index} does not say its {key} (written by an "
                                         f"older hamverify), so a resume cannot be checked; {hint}")
                if have != value and not (isinstance(value, float) and abs(float(have) - value) <= 1e-12 * max(1, abs(value))):
                    raise HamverifyError(f"{path} holds results with {key} {have!r}, this run has {key} {value!r}; {hint}")
        if digests and r.index in digests:
            if r.input_sha256 is None:
                raise HamverifyError(f"{path}: record of input {r.index} has no input hash (written by an older "
                                     f"hamverify), so a resume cannot be checked; {hint}")
            if r.input_sha256 != digests[r.index]:
                raise HamverifyError(f"{path}: input {r.index} there is another image or label than input {r.index} "
                                     f"of this run (pixel hash {r.input_sha256} vs {digests[r.index]}); {hint}")


def dedupe_latest(records: list[VerificationRecord]) -> dict[int, VerificationRecord]:
    """One record per index (the last one written wins)."""
    return {r.index: r for r in records}


class ResultsWriter:
    """Appends one JSON line per record and flushes it to disk before returning."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a")
        if self._f.tell() > 0:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":  # a complete last record whose newline was never written
                    self._f.write("\n")

    def write(self, record: VerificationRecord) -> None:
        self._f.write(record.to_json() + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self):
        self._f.close()
