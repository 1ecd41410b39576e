"""Empirical robustness: one attack over a slice of a data set (``hamverify attack``: the paper's
Table 1 AutoAttack columns), and robust accuracy against eps per model (``hamverify curves``: the
paper's Figure 2, PGD-20x10 in l_inf or l_2).

Inputs are images in [0, 1]; the model holds its normalization.  A sample is *robust* when the
model is correct on it and on the attack's point.  Robust accuracies are shares of all attacked
inputs (misclassified clean inputs count as not robust).
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import time
from fractions import Fraction
from typing import Callable, Sequence

from . import HamverifyError, __version__

ATTACKS = ("autoattack", "pgd", "pgd-l2", "stadv", "jpeg", "recolor", "ppgd", "lpa")
# The perceptual attacks of the paper's Table 1 (hamverify's own code, hamverify.attacks.stadv / jpeg /
# recolor / ppgd / lpa) and their default bounds, each in the attack's own space: l_inf bounds on the
# flow (normalized grid units), the quantized JPEG coefficients (Kang et al.'s eps) and the colour
# function; ppgd's and lpa's bound is on an LPIPS distance (by default self-bound: the attacked
# model's own features; or a local weights file's).
PERCEPTUAL_BOUNDS = {"stadv": 0.05, "jpeg": 0.25, "recolor": 0.06, "ppgd": 0.5, "lpa": 0.5}
PERCEPTUAL_STEPS = {"stadv": 100, "jpeg": 100, "recolor": 100, "ppgd": 40, "lpa": 40}
LPIPS_ATTACKS = ("ppgd", "lpa")
# Tolerance of the membership check of an attack's points (float rounding of the projections).
POINT_TOL = 1e-5
NORMS = ("linf", "l2")
# The attack of each norm in the curves (the paper's PGD-20x10).
CURVE_ATTACK = {"linf": "pgd", "l2": "pgd-l2"}
PGD_STEPS, PGD_RESTARTS = 20, 10


# -- settings --------------------------------------------------------------------------------
def parse_radius(text, norm: str, what: str = "--eps") -> float:
    """'0.1', '8/255', '2e-3' -> a radius >= 0 (l_inf: at most 1, pixel units); else a one-line error."""
    try:
        value = float(Fraction(str(text).strip()))
    except ZeroDivisionError:
        raise HamverifyError(f"invalid {what} {text!r}: division by zero") from None
    except ValueError:
        raise HamverifyError(f"invalid {what} {text!r}: use a number like 0.1, 2e-3 or a fraction like 8/255") from None
    if not math.isfinite(value) or value < 0:
        raise HamverifyError(f"invalid {what} {text!r}: must be >= 0")
    if norm == "linf" and value > 1:
        raise HamverifyError(f"invalid {what} {text!r}: an l_inf radius must lie in [0, 1] (pixel units)")
    return value


def parse_radii(text: str, norm: str, what: str = "--eps") -> list[float]:
    """'0,0.02,0.04' or a grid 'FIRST:LAST:N' ('0:32/255:9': 9 evenly spaced radii), or both
    comma-separated -> the sorted distinct radii; a one-line error (naming the option ``what``)
    for an empty or bad list."""
    parts = [p for p in str(text).split(",") if p.strip()]
    if not parts:
        raise HamverifyError(f"{what} {text!r}: give comma-separated radii, e.g. 0,0.02,0.04, or a grid 0:32/255:9")
    radii = set()
    for part in parts:
        if ":" not in part:
            radii.add(parse_radius(part, norm, what))
            continue
        fields = part.split(":")
        if len(fields) != 3 or not fields[2].strip().isdigit() or int(fields[2]) < 1:
            raise HamverifyError(f"{what} grid {part!r}: use FIRST:LAST:N, e.g. 0:32/255:9")
        lo, hi, n = parse_radius(fields[0], norm, what), parse_radius(fields[1], norm, what), int(fields[2])
        if hi < lo:
            raise HamverifyError(f"{what} grid {part!r}: LAST must be >= FIRST")
        radii.update([lo] if n == 1 else [lo + (hi - lo) * k / (n - 1) for k in range(n)])
    return sorted(radii)


# Default radii per data set and norm when --eps is not given: the ranges of the paper's Figure 2
# (l_inf up to 32/255 on CIFAR-10 and 0.4 on MNIST; l_2 up to 4), nine points each.
DEFAULT_GRIDS = {("cifar10", "linf"): "0:32/255:9", ("cifar10", "l2"): "0:4:9",
                 ("mnist", "linf"): "0:0.4:9", ("mnist", "l2"): "0:4:9",
                 ("fashion-mnist", "linf"): "0:0.4:9", ("fashion-mnist", "l2"): "0:4:9"}


def default_grid(model_paths: Sequence, norm: str, dataset: str | None = None) -> str:
    """The Figure 2 grid for the models' data set (``dataset``, else the first checkpoint's); a
    one-line error when it cannot be told (an ONNX model without --dataset) or the models differ."""
    if dataset is None:
        from .models import read_checkpoint
        found = set()
        for path in model_paths:
            if str(path).lower().endswith((".onnx", ".onnx.gz")):
                raise HamverifyError("give --eps (or --dataset) for an ONNX model: its data set sets the default grid")
            found.add(read_checkpoint(path).get("dataset"))
        if len(found) != 1:
            raise HamverifyError(f"the models are of several data sets ({', '.join(sorted(map(str, found)))}): give --eps")
        dataset = found.pop()
    if (dataset, norm) not in DEFAULT_GRIDS:
        raise HamverifyError(f"no default --eps grid for {dataset} / {norm}: give --eps")
    return DEFAULT_GRIDS[(dataset, norm)]


def check_attack(attack: str, norm: str) -> None:
    if attack not in ATTACKS:
        raise HamverifyError(f"unknown attack {attack!r}; known: {', '.join(ATTACKS)}")
    if norm not in NORMS:
        raise HamverifyError(f"unknown norm {norm!r}; known: {', '.join(NORMS)}")
    if attack == "pgd" and norm != "linf":
        raise HamverifyError("--attack pgd is l_inf PGD: for l_2 use --attack pgd-l2")
    if attack == "pgd-l2" and norm != "l2":
        raise HamverifyError("--attack pgd-l2 is l_2 PGD: for l_inf use --attack pgd")
    if attack in PERCEPTUAL_BOUNDS and norm != "linf":
        kind = "an LPIPS bound" if attack in LPIPS_ATTACKS else "an l_inf bound in its own space"
        raise HamverifyError(f"--attack {attack} has {kind} (--eps, default "
                             f"{PERCEPTUAL_BOUNDS[attack]:g}): --norm {norm} does not apply")


def parse_attack_radius(text, attack: str, norm: str) -> float:
    """--eps of ``attack``: a pixel radius for pgd / pgd-l2 / autoattack, the attack's own bound
    (>= 0, not in pixel units) for the perceptual ones."""
    return parse_radius(text, "l2" if attack in PERCEPTUAL_BOUNDS else norm)


def make_attack(attack: str, norm: str, eps: float, *, seed: int = 0, steps: int | None = None,
                restarts: int | None = None, lpips_model=None):
    """The Attack object of ``attack`` (see ATTACKS) at radius ``eps``; PGD's generator seeded.
    ``lpips_model``: ppgd / lpa only, a checkpoint whose features define the LPIPS distance
    (None: self-bound, the attacked model's own)."""
    if lpips_model is not None and attack not in LPIPS_ATTACKS:
        raise HamverifyError(f"--lpips-model applies to {' and '.join(LPIPS_ATTACKS)} only, not {attack}")
    check_attack(attack, norm)
    if steps is not None and steps < 1:
        raise HamverifyError(f"--steps must be >= 1, got {steps}")
    if restarts is not None and restarts < 1:
        raise HamverifyError(f"--restarts must be >= 1, got {restarts}")
    if attack in PERCEPTUAL_BOUNDS:
        return _perceptual_attack(attack, eps, seed=seed, steps=steps, restarts=restarts, lpips_model=lpips_model)
    if attack == "autoattack":
        if restarts is not None:
            raise HamverifyError("--restarts applies to pgd and pgd-l2 only (AutoAttack runs one restart per component)")
        from .attacks.autoattack import AutoAttack, import_torchattacks
        import_torchattacks()  # missing: one line now, before any work
        return AutoAttack(eps, norm=norm, version="standard", seed=seed, steps=steps)
    import torch
    gen = torch.Generator().manual_seed(seed)
    steps = PGD_STEPS if steps is None else steps
    restarts = PGD_RESTARTS if restarts is None else restarts
    if attack == "pgd":
        from .attacks.pgd import PGD
        return PGD(eps, steps=steps, restarts=restarts, generator=gen)
    from .attacks.pgd_l2 import PGDL2
    return PGDL2(eps, steps=steps, restarts=restarts, generator=gen)


def _perceptual_attack(attack: str, eps: float, *, seed: int, steps: int | None, restarts: int | None,
                       lpips_model=None):
    if restarts is not None:
        raise HamverifyError(f"--restarts applies to pgd and pgd-l2 only "
                             f"({attack} runs one optimization per input)")
    steps = PERCEPTUAL_STEPS[attack] if steps is None else steps
    if attack == "stadv":
        from .attacks.stadv import StAdv
        return StAdv(eps, steps=steps)
    if attack == "jpeg":
        import torch
        from .attacks.jpeg import JPEGAttack
        return JPEGAttack(eps, steps=steps, generator=torch.Generator().manual_seed(seed))
    if attack in LPIPS_ATTACKS:
        import torch
        from .attacks.lpa import LPA, checkpoint_features
        from .attacks.ppgd import PPGD
        features = None
        if lpips_model is not None:
            if not pathlib.Path(lpips_model).expanduser().is_file():
                raise HamverifyError(f"LPIPS network not found: {lpips_model} (--lpips-model: a hamverify checkpoint)")
            features = checkpoint_features(pathlib.Path(lpips_model).expanduser())
        cls = LPA if attack == "lpa" else PPGD
        return cls(eps, steps=steps, features=features, generator=torch.Generator().manual_seed(seed))
    from .attacks.recolor import ReColorAdv
    return ReColorAdv(eps, steps=steps)


def implementation(attack_obj) -> dict:
    """Which code an attack object runs: torchattacks (+ version) or hamverify's own PGD."""
    if hasattr(attack_obj, "implementation"):
        return attack_obj.implementation()
    cls = type(attack_obj)
    return {"name": "hamverify", "version": __version__, "class": f"{cls.__module__}.{cls.__name__}",
            "steps": attack_obj.steps, "restarts": attack_obj.restarts, "step_size": attack_obj.step_size,
            "random_start": attack_obj.random_start}


def describe(attack_obj) -> str:
    """One phrase naming the attack and its implementation, for progress lines and summaries."""
    if hasattr(attack_obj, "describe"):
        return attack_obj.describe()
    norm = "l2" if type(attack_obj).__name__ == "PGDL2" else "linf"
    return f"PGD-{attack_obj.steps}x{attack_obj.restarts} {norm} (hamverify {__version__})"


# -- models and data -------------------------------------------------------------------------
def load_model(model_path, dataset: str | None = None):
    """``(model in float32 eval mode, dataset, the checkpoint's eps or None, sha256)`` of a hamverify
    checkpoint or an ONNX file (which needs ``dataset``); one-line errors for a missing file or a
    data set the model cannot read."""
    from .models import check_dataset_fits, file_sha256, load_checkpoint
    from .onnx_io import is_onnx_path
    if is_onnx_path(model_path):
        if not pathlib.Path(model_path).is_file():
            raise HamverifyError(f"ONNX file not found: {model_path}")
        from .onnx_io import load_any_model
        model, shape, _own, sha = load_any_model(model_path, dataset)
        check_dataset_fits(model_path, None, dataset, input_shape=shape)
        return model.float().eval(), dataset, None, sha
    model, meta = load_checkpoint(model_path)
    dataset = dataset or meta["dataset"]
    check_dataset_fits(model_path, meta["dataset"], dataset)
    return model.float().eval(), dataset, meta.get("eps"), file_sha256(model_path)


def load_slice(dataset: str, split: str, start: int, count: int, data_dir=None, download: bool | None = None):
    """``(x float32 [N, C, H, W] in [0, 1], y int64)``: ``count`` images from index ``start``."""
    import torch
    from .data import load_dataset, to_tensor
    x, y = load_dataset(dataset, split, data_dir, download=download)
    if start >= len(x):
        raise HamverifyError(f"--start {start} is past the end of {dataset} {split} ({len(x)} inputs)")
    return to_tensor(x[start:start + count]), torch.as_tensor(y[start:start + count], dtype=torch.long)


# -- one attack over a slice -----------------------------------------------------------------
def perturbation_norm(x_adv, x, norm: str):
    """Per-sample ||x_adv - x|| in ``norm`` (a float tensor of length N)."""
    d = (x_adv - x).reshape(len(x), -1)
    return d.abs().amax(dim=1) if norm == "linf" else d.norm(dim=1)


def point_check_description(attack_obj, norm: str) -> str:
    """How ``check_points`` decides that an attack's point lies in its threat model's set."""
    name = type(attack_obj).__name__
    if not hasattr(attack_obj, "distance_unit"):
        return f"{norm} norm of x_adv - x recomputed <= eps, x_adv in [0, 1]"
    return {"StAdv": "flow |f|_inf <= bound and x_adv = resampling of x by f (recomputed), x_adv in [0, 1]",
            "JPEGAttack": "coefficient perturbation |delta|_inf <= eps/2 and x_adv = clip(x + decode(delta)) "
                          "(recomputed), x_adv in [0, 1]",
            "LPA": "LPIPS distance recomputed from the feature network <= bound, x_adv in [0, 1]",
            "PPGD": "LPIPS distance recomputed from the feature network <= bound, x_adv in [0, 1]",
            }.get(name, "the attack's reported distance <= bound, x_adv in [0, 1]")


def check_points(model, attack_obj, norm: str, x, x_adv):
    """``(inside, distance)`` per sample: whether x_adv lies in the attack's threat model's set
    around x (up to POINT_TOL), re-derived from the point where the threat model allows it (see
    ``point_check_description``), and the distance it was judged by."""
    import torch
    tol = POINT_TOL
    in_box = torch.isfinite(x_adv).flatten(1).all(1) & (x_adv >= -tol).flatten(1).all(1) & \
        (x_adv <= 1 + tol).flatten(1).all(1)
    if not hasattr(attack_obj, "distance_unit"):
        dist = perturbation_norm(x_adv, x, norm)
        return in_box & (dist <= attack_obj.eps * (1 + tol) + tol), dist
    name = type(attack_obj).__name__
    dist = attack_obj.last_distance.to(x.dtype)
    bound = attack_obj.eps
    ok = torch.ones(len(x), dtype=torch.bool, device=x.device)
    with torch.no_grad():
        if name in ("LPA", "PPGD"):
            from .attacks.lpa import feature_distance, self_features
            feats = attack_obj.features or self_features(model)
            dist = feature_distance(feats(x_adv), feats(x))
        elif name == "StAdv" and attack_obj.bound is not None:
            from .attacks.stadv import apply_flow
            flow = attack_obj.last_flow
            dist = flow.abs().flatten(1).amax(1)
            ok = (apply_flow(x, flow) - x_adv).abs().flatten(1).amax(1) <= tol
        elif name == "JPEGAttack":
            from .attacks.jpeg import JPEGCodec
            codec = JPEGCodec(x.shape[1:], attack_obj.chroma_subsampling)
            bound = attack_obj.coefficient_bound
            ok = ((x + codec.decode(attack_obj.last_delta)).clamp(0, 1) - x_adv).abs().flatten(1).amax(1) <= tol
    return in_box & ok & (dist <= bound * (1 + tol) + tol), dist


def attack_masks(model, x, y, attack_obj, norm: str, batch_size: int = 200,
                 progress: Callable[[str], None] | None = None, label: str = "", checks: dict | None = None):
    """``(clean, robust, distance)`` per input: clean-correct, correct on the attack's point too,
    and the attack point's distance from x (in ``norm``; a perceptual attack's own measure for
    those with a ``distance_unit``).  A misclassified point counts only when it lies in the
    attack's threat model's set (``check_points``); ``checks`` (a dict) receives how many did not
    ("rejected") and how membership was checked.  One progress line per batch."""
    import torch
    cleans, robusts, dists = [], [], []
    rejected = 0
    n, t0, done_robust = len(x), time.time(), 0
    batches = max(1, math.ceil(n / batch_size))
    for b, i in enumerate(range(0, n, batch_size)):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        with torch.no_grad():
            clean = model(xb).argmax(1) == yb
        dist = torch.zeros(len(xb), dtype=xb.dtype)
        inside = torch.ones(len(xb), dtype=torch.bool)
        # Only clean-correct inputs are attacked: the others are not robust anyway.
        x_adv = xb.clone()
        if attack_obj.eps != 0 and clean.any():
            with torch.enable_grad():
                x_adv[clean] = attack_obj(model, xb[clean], yb[clean]).to(xb.dtype)
            inside[clean], dist[clean] = check_points(model, attack_obj, norm, xb[clean], x_adv[clean])
        with torch.no_grad():
            fooled = clean & (model(x_adv).argmax(1) != yb)
        robust = clean & ~(fooled & inside)
        rejected += int((fooled & ~inside).sum())
        cleans.append(clean)
        robusts.append(robust)
        dists.append(dist)
        done_robust += int(robust.sum())
        if progress:
            seen = min(i + batch_size, n)
            progress(f"{label}batch {b + 1}/{batches}: inputs {i}-{seen - 1}, robust so far {done_robust}/{seen} "
                     f"({done_robust / seen:.2%}), {time.time() - t0:.1f} s")
    if checks is not None:
        checks.update({"rejected_points": rejected, "point_check": point_check_description(attack_obj, norm)})
    if rejected and progress:
        progress(f"{label}{rejected} misclassified point(s) outside the threat model's set were not counted")
    return torch.cat(cleans), torch.cat(robusts), torch.cat(dists)


def run_attack(model_path, *, attack: str, norm: str, eps: float | None = None, dataset: str | None = None,
               split: str = "test", start: int = 0, count: int = 1000, batch_size: int = 200, seed: int = 0,
               steps: int | None = None, restarts: int | None = None, data_dir=None,
               download: bool | None = None, log: Callable[[str], None] | None = None, lpips_model=None,
               label: str = "") -> dict:
    """Clean and robust accuracy of one model against one attack over ``count`` inputs from ``start``;
    a JSON-ready dict (schema hamverify-attack-v1) with the settings, the implementation and per-input flags."""
    check_attack(attack, norm)
    if batch_size < 1:
        raise HamverifyError(f"--batch-size must be >= 1, got {batch_size}")
    model, dataset, model_eps, sha = load_model(model_path, dataset)
    if eps is None and attack in PERCEPTUAL_BOUNDS:
        eps = PERCEPTUAL_BOUNDS[attack]
    elif eps is None:
        if norm != "linf" or model_eps is None:
            raise HamverifyError("no --eps given" + (" (the checkpoint's eps is an l_inf radius)" if norm == "l2"
                                                       else f" and {model_path} records none"))
        eps = float(model_eps)
    eps = parse_attack_radius(eps, attack, norm)
    attack_obj = make_attack(attack, norm, eps, seed=seed, steps=steps, restarts=restarts, lpips_model=lpips_model)
    x, y = load_slice(dataset, split, start, count, data_dir, download)
    what = describe(attack_obj)
    if log:
        log(f"{label}attacking {len(x)} inputs of {dataset} {split}[{start}:{start + len(x)}] with {what}, "
            f"eps {eps:.6g}, batch size {batch_size}, seed {seed}")
    t0 = time.time()
    checks: dict = {}
    clean, robust, dist = attack_masks(model, x, y, attack_obj, norm, batch_size, progress=log, label=label,
                                       checks=checks)
    wall = time.time() - t0
    import torch
    return {
        "schema": "hamverify-attack-v1",
        "model": str(model_path), "model_sha256": sha, "dataset": dataset, "split": split,
        "start": start, "count": len(x), "attack": attack, "norm": norm, "eps": eps, "seed": seed,
        "batch_size": batch_size, "implementation": implementation(attack_obj), "description": what,
        "distance": (attack_obj.distance_unit() if hasattr(attack_obj, "distance_unit")
                     else f"{norm} norm of x_adv - x (pixel units)"),
        # misclassified points outside the threat model's set (not counted as broken), and how that was checked
        **checks,
        "clean_accuracy": float(clean.float().mean()) if len(x) else 0.0,
        "robust_accuracy": float(robust.float().mean()) if len(x) else 0.0,
        "wall_time": wall, "hamverify_version": __version__, "torch_version": str(torch.__version__),
        # adv_distance: the adversarial point's distance from the input (see "distance"), where one was found
        "inputs": [{"index": start + k, "label": int(y[k]), "clean": bool(clean[k]), "robust": bool(robust[k]),
                    "adv_distance": float(dist[k]) if clean[k] and not robust[k] else None}
                   for k in range(len(x))],
    }


# -- robustness curves -----------------------------------------------------------------------
def robustness_curve(model, x, y, radii: Sequence[float], norm: str, *, seed: int = 0,
                     steps: int = PGD_STEPS, restarts: int = PGD_RESTARTS, batch_size: int = 200,
                     progress: Callable[[str], None] | None = None, label: str = "") -> dict:
    """PGD robust accuracy of one model at each radius of ``radii`` (ascending).

    A point found at a smaller radius lies in every larger ball, so an input broken at one radius
    counts as broken at all larger ones: the curve is non-increasing, and at radius 0 it equals the
    clean accuracy.  Each radius runs with a generator seeded ``seed`` (reproducible per point)."""
    import torch
    radii = [float(r) for r in radii]
    if any(b < a for a, b in zip(radii, radii[1:])):
        raise ValueError("radii must be ascending")
    attack = CURVE_ATTACK[norm]
    with torch.no_grad():
        clean = torch.cat([model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]
                           for i in range(0, len(x), batch_size)]) if len(x) else torch.zeros(0, dtype=torch.bool)
    alive = clean.clone()
    accuracies, seconds, impl = [], [], None
    for r in radii:
        t0 = time.time()
        if r > 0 and alive.any():
            obj = make_attack(attack, norm, r, seed=seed, steps=steps, restarts=restarts)
            impl = impl or implementation(obj)
            idx = alive.nonzero().squeeze(1)
            _, robust, _ = attack_masks(model, x[idx], y[idx], obj, norm, batch_size)
            alive[idx[~robust]] = False
        accuracies.append(int(alive.sum()) / len(x) if len(x) else 0.0)  # exact shares, no float32 rounding
        seconds.append(time.time() - t0)
        if progress:
            progress(f"{label}eps {r:.6g}: robust {accuracies[-1]:.2%} (clean {float(clean.float().mean()):.2%}), "
                     f"{seconds[-1]:.1f} s")
    if impl is None:
        impl = implementation(make_attack(attack, norm, 1.0 if norm == "l2" else 0.5, seed=seed, steps=steps,
                                          restarts=restarts))
    return {"clean_accuracy": int(clean.sum()) / len(x) if len(x) else 0.0, "robust_accuracy": accuracies,
            "seconds": seconds, "implementation": impl}


# -- verified accuracy from `hamverify verify` records ---------------------------------------
# Two eps values name the same point when they differ by less than this (a fraction such as 8/255
# parsed twice, or its float written to a config file and read back).
EPS_MATCH = 1e-9


def read_verify_records(path) -> dict:
    """One ``hamverify verify`` results file (.jsonl): its records (one per input, the last written
    wins) and the one model (sha256) and eps they are for; a one-line error for a missing, empty or
    damaged file, or one that mixes models or radii."""
    from .records import dedupe_latest, read_records
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise HamverifyError(f"verify records not found: {path} (--records: a results .jsonl of `hamverify verify`)")
    records, note = read_records(path)
    records = sorted(dedupe_latest(records).values(), key=lambda r: r.index)
    if not records:
        raise HamverifyError(f"{path} holds no verify records")
    shas = sorted({r.model_sha256 for r in records})
    if len(shas) > 1 or not shas[0]:
        raise HamverifyError(f"{path} holds records of {len(shas)} models (or records without a model hash): "
                             f"one results file per model and eps")
    radii = sorted({float(r.eps) for r in records})
    if radii[-1] - radii[0] > EPS_MATCH:
        raise HamverifyError(f"{path} holds records at {len(radii)} radii ({', '.join(f'{e:.6g}' for e in radii)}): "
                             f"one results file per model and eps")
    datasets = sorted({r.dataset for r in records if r.dataset})
    splits = sorted({r.split for r in records if r.split})
    return {"path": path, "records": records, "model_sha256": shas[0], "eps": radii[0], "note": note,
            "dataset": datasets[0] if len(datasets) == 1 else None, "split": ",".join(splits) or None}


def verified_points(models: Sequence[tuple], verified_at: Sequence[float], records_paths: Sequence = (), *,
                    split: str = "test", log: Callable[[str], None] | None = None) -> list[list[dict]]:
    """Verified accuracy of each model at each radius of ``verified_at`` (l_inf), from verify records.

    ``models``: ``(path, dataset, model_sha256)`` per model.  Each (model, radius) takes the one
    ``records_paths`` file whose records are for that model (by sha256) and radius, else the file
    ``hamverify verify`` writes by default (``results/<model>_<dataset>_<split>_eps<eps>.jsonl``) if
    it exists and matches.  One-line errors: a (model, radius) without records, two files for one,
    a file for none of the models or radii, a file of another data set.  ``verified_at`` without
    ``records_paths`` looks only at the default files.  Returns, per model, one entry per radius
    (the summary of ``hamverify summary``, recomputed from the records, plus where they came from)."""
    from .report import summarize
    from .runner import default_results_path
    verified_at = sorted(float(e) for e in verified_at)
    unique: dict = {}  # a file given twice counts once
    for p in records_paths:
        unique.setdefault(pathlib.Path(p).expanduser().resolve(), p)
    files = [read_verify_records(p) for p in unique.values()]
    shas = {sha for _p, _ds, sha in models}
    for f in files:
        if f["model_sha256"] not in shas:
            raise HamverifyError(f"{f['path']} holds records of model sha256 {f['model_sha256'][:12]}…, none of the "
                                 f"--model's ({', '.join(f'{_stem(p)} {sha[:12]}…' for p, _, sha in models)})")
        if not any(abs(f["eps"] - e) <= EPS_MATCH for e in verified_at):
            raise HamverifyError(f"{f['path']} holds records at eps {f['eps']:.6g}, not one of --verified-at "
                                 f"{', '.join(f'{e:.6g}' for e in verified_at)}")
    out = []
    for path, ds, sha in models:
        entries = []
        for eps in verified_at:
            found = [f for f in files if f["model_sha256"] == sha and abs(f["eps"] - eps) <= EPS_MATCH]
            if len(found) > 1:
                raise HamverifyError(f"two --records files for {_stem(path)} at eps {eps:.6g}: "
                                     f"{found[0]['path']} and {found[1]['path']}; give one")
            if not found:
                default = default_results_path(path, ds, split, eps)
                if not default.is_file():
                    raise HamverifyError(f"no verify records for {_stem(path)} at eps {eps:.6g}: give --records FILE "
                                         f"(a results .jsonl of `hamverify verify --model {path} --eps {eps:.6g}`; "
                                         f"its default {default} does not exist)")
                f = read_verify_records(default)
                if f["model_sha256"] != sha or abs(f["eps"] - eps) > EPS_MATCH:
                    raise HamverifyError(f"{default} (the default verify results of {_stem(path)} at eps {eps:.6g}) "
                                         f"holds records of another model or eps; give --records FILE")
                found = [f]
            f = found[0]
            if f["dataset"] and f["dataset"] != ds:
                raise HamverifyError(f"{f['path']} holds records on {f['dataset']}, the curve of {_stem(path)} "
                                     f"is on {ds}")
            if f["note"] and log:
                log(f["note"])
            recs = f["records"]
            s = summarize(recs)
            entries.append({"eps": eps, "verified_accuracy": s["verified_accuracy"], "count": s["n"],
                            **{k: s[k] for k in ("verified", "falsified", "misclassified", "timeout", "unknown",
                                                 "error", "clean_accuracy", "pgd_accuracy", "tightening",
                                                 "backend")},
                            "records": str(f["path"]), "split": f["split"], "first_index": recs[0].index,
                            "last_index": recs[-1].index, "threat_model": "linf"})
        out.append(entries)
    return out


def run_curves(model_paths: Sequence, *, norm: str, radii: Sequence[float], dataset: str | None = None,
               split: str = "test", start: int = 0, count: int = 1000, batch_size: int = 200, seed: int = 0,
               steps: int = PGD_STEPS, restarts: int = PGD_RESTARTS, data_dir=None, download: bool | None = None,
               log: Callable[[str], None] | None = None, verified_at: Sequence[float] = (),
               records: Sequence = ()) -> dict:
    """Robustness curves of several models on the same inputs (schema hamverify-curves-v1).

    ``verified_at`` (l_inf radii) / ``records`` (verify results files): each model's verified
    accuracy at those radii, from ``hamverify verify`` records (``verified_points``; every file is
    matched to its model and radius before any attack runs); ``records`` alone: at their radii."""
    if norm not in NORMS:
        raise HamverifyError(f"unknown norm {norm!r}; known: {', '.join(NORMS)}")
    if batch_size < 1:
        raise HamverifyError(f"--batch-size must be >= 1, got {batch_size}")
    radii = sorted(float(r) for r in radii)
    if not radii:
        raise HamverifyError("--eps: give at least one radius")
    loaded = [(p, *load_model(p, dataset)) for p in model_paths]  # every model checked before any work
    make_attack(CURVE_ATTACK[norm], norm, radii[-1], seed=seed, steps=steps, restarts=restarts)  # settings check
    if records and not verified_at:
        verified_at = sorted({read_verify_records(r)["eps"] for r in records})
    verified = (verified_points([(p, ds, sha) for p, _m, ds, _e, sha in loaded], verified_at, records,
                                split=split, log=log) if verified_at else None)
    models, data, impl, t_all = [], {}, None, time.time()
    for path, model, ds, _eps, sha in loaded:
        if ds not in data:
            data[ds] = load_slice(ds, split, start, count, data_dir, download)
        x, y = data[ds]
        label = f"{pathlib.Path(path).name}: "
        if log:
            log(f"{label}{len(x)} inputs of {ds} {split}[{start}:{start + len(x)}], "
                f"PGD-{steps}x{restarts} {norm} at {len(radii)} radii")
        t0 = time.time()
        curve = robustness_curve(model, x, y, radii, norm, seed=seed, steps=steps, restarts=restarts,
                                 batch_size=batch_size, progress=log, label=label)
        impl = curve.pop("implementation")
        models.append({"model": str(path), "name": pathlib.Path(path).stem, "model_sha256": sha, "dataset": ds,
                       "count": len(x), **curve, "wall_time": time.time() - t0})
        if verified is not None:
            models[-1]["verified"] = verified[len(models) - 1]
            for v in models[-1]["verified"]:
                if log and (v["first_index"], v["last_index"], v["count"]) != (start, start + len(x) - 1, len(x)):
                    log(f"{label}verified accuracy at eps {v['eps']:.6g} is over the {v['count']} inputs of "
                        f"{v['records']} (indices {v['first_index']}-{v['last_index']}), not the curve's "
                        f"{split}[{start}:{start + len(x)}]")
    import torch
    out = {"schema": "hamverify-curves-v1", "norm": norm, "eps": radii, "attack": CURVE_ATTACK[norm],
           "implementation": impl, "split": split, "start": start, "count": count, "seed": seed,
           "batch_size": batch_size, "cumulative": True,
           "note": "an input broken at a radius counts as broken at every larger radius (its point lies in the larger ball)",
           "models": models, "wall_time": time.time() - t_all, "hamverify_version": __version__,
           "torch_version": str(torch.__version__)}
    if verified is not None:
        out["verified_at"] = sorted(float(e) for e in verified_at)
        out["verified_note"] = VERIFIED_NOTE[norm]
    return out


VERIFIED_NOTE = {
    "linf": "verified accuracy: share of the records' inputs that `hamverify verify` proved robust in the l_inf "
            "ball (exact: no point of the ball is misclassified); timeouts, unknowns and errors count as not verified",
    "l2": "verified accuracy: share of the records' inputs that `hamverify verify` proved robust in the l_inf "
          "ball of radius eps, which contains the l_2 ball of radius eps: a lower bound on l_2 verified accuracy",
}


def format_curves(result: dict) -> str:
    """A table: one row per radius, one column per model."""
    names = [m["name"] for m in result["models"]]
    width = max([10] + [len(n) for n in names])
    impl = result["implementation"]
    lines = [f"robust accuracy, PGD-{impl['steps']}x{impl['restarts']} {result['norm']} "
             f"({impl['name']} {impl['version']})",
             f"{'eps':>10}  " + "  ".join(f"{n:>{width}}" for n in names)]
    for k, r in enumerate(result["eps"]):
        lines.append(f"{r:>10.6g}  " + "  ".join(f"{m['robust_accuracy'][k]:>{width}.2%}" for m in result["models"]))
    lines.append(f"{'clean':>10}  " + "  ".join(f"{m['clean_accuracy']:>{width}.2%}" for m in result["models"]))
    if result.get("verified_at"):
        kind = "l_inf" + (", a lower bound on l_2" if result["norm"] == "l2" else "")
        lines.append(f"verified accuracy (hamverify verify records, {kind}; inputs per point in brackets)")
        lines.append(f"{'eps':>10}  " + "  ".join(f"{n:>{width}}" for n in names))
        for k, r in enumerate(result["verified_at"]):
            cells = [f"{m['verified'][k]['verified_accuracy']:.2%} ({m['verified'][k]['count']})"
                     for m in result["models"]]
            lines.append(f"{r:>10.6g}  " + "  ".join(f"{c:>{width}}" for c in cells))
    return "\n".join(lines)


CSV_FIELDS = ("model", "name", "model_sha256", "dataset", "norm", "eps", "measure", "robust_accuracy", "count",
              "clean_accuracy", "attack", "implementation", "steps", "restarts", "seed", "split", "start", "records")


def curves_rows(result: dict) -> list[dict]:
    """One row per model x eps (CSV_FIELDS): the PGD curve's points (measure ``pgd``), then the
    verified points (measure ``verified``: verified accuracy from verify records, l_inf)."""
    impl = result["implementation"]
    rows = []
    for m in result["models"]:
        base = {"model": m["model"], "name": m["name"], "model_sha256": m["model_sha256"], "dataset": m["dataset"]}
        for eps, acc in zip(result["eps"], m["robust_accuracy"]):
            rows.append({**base, "norm": result["norm"], "eps": eps, "measure": "pgd", "robust_accuracy": acc,
                         "count": m["count"], "clean_accuracy": m["clean_accuracy"], "attack": result["attack"],
                         "implementation": f"{impl['name']} {impl['version']}", "steps": impl["steps"],
                         "restarts": impl["restarts"], "seed": result["seed"], "split": result["split"],
                         "start": result["start"], "records": ""})
        for v in m.get("verified", []):
            rows.append({**base, "norm": v["threat_model"], "eps": v["eps"], "measure": "verified",
                         "robust_accuracy": v["verified_accuracy"], "count": v["count"],
                         "clean_accuracy": v["clean_accuracy"], "attack": "verify",
                         "implementation": f"hamverify verify ({v['tightening']}, {v['backend']})", "steps": "",
                         "restarts": "", "seed": "", "split": v["split"] or "", "start": v["first_index"],
                         "records": v["records"]})
    return rows


def write_csv(result: dict, path) -> pathlib.Path:
    """The curves as CSV (``curves_rows``), written atomically."""
    import csv
    path = pathlib.Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows(curves_rows(result))
    os.replace(tmp, path)
    return path


def plot_curves(result: dict, path) -> pathlib.Path:
    """Robust accuracy (%) against eps, one line per model, in the style of the paper's Figure 2
    (CIFAR-10 l_inf radii in units of 1/255) (.png; needs matplotlib, the `plot` extra)."""
    from .stats import require_matplotlib
    Figure = require_matplotlib()
    fig = Figure(figsize=(5.0, 3.6), layout="constrained")
    ax = fig.subplots()
    datasets = {m["dataset"] for m in result["models"]}
    per_255 = result["norm"] == "linf" and datasets == {"cifar10"}
    xs = [e * 255 for e in result["eps"]] if per_255 else result["eps"]
    for m in result["models"]:
        (line,) = ax.plot(xs, [100 * a for a in m["robust_accuracy"]], marker="o", markersize=3, label=m["name"])
        if m.get("verified"):  # verified accuracy at chosen radii: markers in the curve's colour
            vx = [v["eps"] * 255 if per_255 else v["eps"] for v in m["verified"]]
            ax.plot(vx, [100 * v["verified_accuracy"] for v in m["verified"]], linestyle="none", marker="*",
                    markersize=9, color=line.get_color(), label=f"{m['name']} verified"
                    + (" (l_inf)" if result["norm"] == "l2" else ""))
    impl = result["implementation"]
    norm = "l_inf" if result["norm"] == "linf" else "l_2"
    ax.set_xlabel(f"{norm} bound (eps/255)" if per_255 else f"{norm} bound (eps)")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(0, 102)
    count = result["models"][0]["count"] if result["models"] else 0
    data = ", ".join(sorted(datasets))
    ax.set_title(f"{data}: {impl['steps']}-step {norm} PGD, {impl['restarts']} restarts, {count} inputs", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    path = pathlib.Path(path)
    fig.savefig(path, dpi=120)
    return path


# -- output ----------------------------------------------------------------------------------
def write_json(obj: dict, path) -> pathlib.Path:
    """Write ``obj`` as indented JSON, atomically (temporary file, then rename)."""
    path = pathlib.Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    return path


def default_attack_path(model_path, dataset: str, split: str, attack: str, norm: str, eps: float) -> pathlib.Path:
    return pathlib.Path("results") / f"attack_{_stem(model_path)}_{dataset}_{split}_{attack}_{norm}_eps{eps:.5f}.json"


def default_curves_path(model_paths: Sequence, norm: str) -> pathlib.Path:
    stems = "+".join(_stem(p) for p in model_paths[:3]) + ("+more" if len(model_paths) > 3 else "")
    return pathlib.Path("results") / f"curves_{stems}_{norm}.json"


def _stem(model_path) -> str:
    p = pathlib.Path(model_path)
    name = p.name
    for suffix in (".onnx.gz", ".onnx", ".pt"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return p.parent.name if name == "model" and p.parent.name else name
