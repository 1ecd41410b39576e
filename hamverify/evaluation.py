"""``hamverify evaluate``: clean accuracy and robust accuracy of one or more checkpoints under a set
of attacks, up to the paper's whole Table 1 (``--attack table1``).

Each (model, attack) pair runs through ``hamverify.curves.run_attack`` (the code behind
``hamverify attack``): the same inputs for every attack, only clean-correct inputs attacked, and a
misclassified point counted only when it lies in the attack's threat model's set
(``curves.check_points``).  With a results folder every pair's result is a JSON file there, and a
rerun reuses each file whose settings match (model hash, data slice, attack, bound, budgets, seed,
LPIPS network, hamverify version): an interrupted table resumes at the attack it stopped in.

Columns (``--attack`` names; ``table1`` is the paper's Table 1 set, in its order):

==================  ===============================================================================
pgd                 l_inf PGD-20x10 at the checkpoint's eps (the command's old and default meaning)
pgd-l2              l_2 PGD-20x10
autoattack-linf     AutoAttack standard (torchattacks 3.5.1), l_inf
autoattack-l2       AutoAttack standard (torchattacks 3.5.1), l_2
stadv               StAdv, flow <= 0.05 (hamverify's own, Xiao et al. 2018 / Laidlaw et al. 2021)
recolor             ReColorAdv, colour offsets <= 0.06 (hamverify's own, Laidlaw & Feizi 2019)
jpeg                JPEG, Kang et al.'s eps 0.25 (hamverify's own, Kang et al. 2019)
ppgd                PPGD, LPIPS <= 0.5 (hamverify's own, Laidlaw et al. 2021)
lpa                 LPA, LPIPS <= 0.5 (hamverify's own, Laidlaw et al. 2021)
==================  ===============================================================================

``pgd`` and ``autoattack`` follow ``--norm`` (``--norm l2``: pgd-l2, autoattack-l2).  The l_p
columns' default radii are the paper's Table 1 bounds on CIFAR-10 (l_inf 8/255, l_2 1.0); the paper
has no Table 1 for MNIST or Fashion-MNIST, so there the field's usual bounds stand in (MNIST l_inf
0.3, l_2 2.0; Fashion-MNIST l_inf 0.1, l_2 1.5).  The LPIPS columns are self-bound by default (the
attacked model's own features; the paper's AlexNet LPIPS weights cannot be fetched offline), or use
the features of a local checkpoint (``--lpips-model``).
"""
from __future__ import annotations

import json
import pathlib
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from . import HamverifyError, __version__
from .curves import (LPIPS_ATTACKS, PERCEPTUAL_BOUNDS, _stem, check_attack, make_attack, parse_attack_radius,
                     run_attack, write_json)

TABLE1 = ("autoattack-linf", "autoattack-l2", "stadv", "recolor", "jpeg", "ppgd", "lpa")
COLUMNS = ("pgd", "pgd-l2", "autoattack-linf", "autoattack-l2", "stadv", "recolor", "jpeg", "ppgd", "lpa")
NAMES = ("pgd", "pgd-l2", "autoattack", "autoattack-linf", "autoattack-l2", "stadv", "recolor", "jpeg", "ppgd",
         "lpa", "table1")
# The l_p bounds of the Table 1 columns per data set: the paper's on CIFAR-10, the field's usual elsewhere.
TABLE1_BOUNDS = {"cifar10": {"linf": 8 / 255, "l2": 1.0}, "mnist": {"linf": 0.3, "l2": 2.0},
                 "fashion-mnist": {"linf": 0.1, "l2": 1.5}}
# (attack of hamverify.curves, norm) of each column.
COLUMN_ATTACK = {"pgd": ("pgd", "linf"), "pgd-l2": ("pgd-l2", "l2"), "autoattack-linf": ("autoattack", "linf"),
                 "autoattack-l2": ("autoattack", "l2"), **{k: (k, "linf") for k in PERCEPTUAL_BOUNDS}}
HEADERS = {"pgd": "PGD l_inf", "pgd-l2": "PGD l_2", "autoattack-linf": "AA l_inf", "autoattack-l2": "AA l_2",
           "stadv": "StAdv", "recolor": "ReColor", "jpeg": "JPEG", "ppgd": "PPGD", "lpa": "LPA"}
SCHEMA = "hamverify-evaluate-v1"


@dataclass(frozen=True)
class Column:
    key: str
    attack: str
    norm: str


def parse_columns(names: Sequence[str], norm: str = "linf") -> list[Column]:
    """--attack names (repeatable; ``table1`` expands to its seven columns) -> distinct columns, in
    order; one-line errors for an unknown name or norm."""
    norm = str(norm).lower()
    if norm not in ("linf", "l2"):
        raise HamverifyError(f"unknown norm {norm!r}; known: linf, l2")
    keys: list[str] = []
    for raw in names or ("pgd",):
        name = str(raw).strip().lower()
        if name not in NAMES:
            raise HamverifyError(f"unknown attack {raw!r}; known: {', '.join(NAMES)}")
        if name == "table1":
            expanded = list(TABLE1)
        elif name in ("pgd", "autoattack"):
            expanded = [{"pgd": {"linf": "pgd", "l2": "pgd-l2"},
                         "autoattack": {"linf": "autoattack-linf", "l2": "autoattack-l2"}}[name][norm]]
        else:
            expanded = [name]
        keys += [k for k in expanded if k not in keys]
    return [Column(k, *COLUMN_ATTACK[k]) for k in keys]


def parse_bounds(items: Sequence[str]) -> dict[str, str]:
    """--bound KEY=VALUE (repeatable) -> {column key: radius text}."""
    out = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        key = key.strip().lower()
        if not sep or not value.strip():
            raise HamverifyError(f"--bound {item!r}: use COLUMN=VALUE, e.g. autoattack-l2=0.5 or lpa=0.25")
        if key not in COLUMNS:
            raise HamverifyError(f"--bound {item!r}: unknown column {key!r}; known: {', '.join(COLUMNS)}")
        out[key] = value.strip()
    return out


def column_radius(col: Column, dataset: str, model_eps, *, norm: str, eps=None, bounds=None) -> float:
    """The radius of one column for a model: --bound for the column, else --eps for the l_p
    columns of --norm, else the default (pgd: the checkpoint's eps, or the Table 1 bound when it
    records none; other l_p columns: the Table 1 bound of the data set; perceptual columns: their
    papers' bounds)."""
    bounds = bounds or {}
    if col.key in bounds:
        return parse_attack_radius(bounds[col.key], col.attack, col.norm)
    if col.attack in PERCEPTUAL_BOUNDS:
        return PERCEPTUAL_BOUNDS[col.attack]
    if eps is not None and col.norm == norm:
        return parse_attack_radius(eps, col.attack, col.norm)
    if col.key == "pgd" and model_eps is not None:
        return float(model_eps)
    table = TABLE1_BOUNDS.get(dataset)
    if table is None:
        raise HamverifyError(f"no default {col.key} bound for data set {dataset}: give --eps or --bound {col.key}=VALUE")
    return table[col.norm]


def _settings(col: Column, sha: str, dataset: str, split: str, start: int, count: int, eps: float, seed: int,
              steps, restarts, lpips_model) -> dict:
    """What a reusable result must match."""
    return {"model_sha256": sha, "dataset": dataset, "split": split, "start": start, "count": count,
            "column": col.key, "attack": col.attack, "norm": col.norm, "eps": eps, "seed": seed, "steps": steps,
            "restarts": restarts, "lpips_model": None if lpips_model is None else str(lpips_model),
            "hamverify_version": __version__}


def result_path(folder, model_path, dataset: str, split: str, start: int, count: int, key: str) -> pathlib.Path:
    return pathlib.Path(folder).expanduser() / f"{_stem(model_path)}_{dataset}_{split}_{start}+{count}_{key}.json"


def _reusable(path: pathlib.Path, settings: dict, batch_size: int):
    """The stored result at ``path`` if it was made with these settings and batch size (an
    attack's random draws depend on the batches), else None."""
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError):
        return None
    same = isinstance(old, dict) and old.get("settings") == settings and old.get("batch_size") == batch_size
    return old if same else None


def evaluate_models(model_paths: Sequence, columns: Sequence[Column], *, norm: str = "linf", eps=None,
                    bounds: dict | None = None, dataset: str | None = None, split: str = "test", start: int = 0,
                    count: int = 1000, batch_size: int = 200, seed: int = 0, steps: int | None = None,
                    restarts: int | None = None, lpips_model=None, data_dir=None, download: bool | None = None,
                    results_dir=None, fresh: bool = False, log: Callable[[str], None] | None = None) -> dict:
    """Every column for every model (schema hamverify-evaluate-v1); see the module docstring.
    Every model, radius and attack is checked (and the optional extras imported) before any work."""
    from .curves import load_model
    from .models import file_sha256
    plans = []
    for path in model_paths:
        _model, ds, model_eps, sha = load_model(path, dataset)
        cols = []
        for col in columns:
            check_attack(col.attack, col.norm)
            radius = column_radius(col, ds, model_eps, norm=norm, eps=eps, bounds=bounds)
            col_steps = steps
            col_restarts = restarts if col.attack in ("pgd", "pgd-l2") else None
            obj = make_attack(col.attack, col.norm, radius, seed=seed, steps=col_steps, restarts=col_restarts,
                              lpips_model=lpips_model if col.attack in LPIPS_ATTACKS else None)
            cols.append((col, radius, col_steps, col_restarts, obj))
        plans.append((path, ds, sha, cols))
    lpips_sha = file_sha256(pathlib.Path(lpips_model).expanduser()) if lpips_model is not None else None
    models, t_all = [], time.time()
    for m, (path, ds, sha, cols) in enumerate(plans):
        name = pathlib.Path(path).name
        entry = {"model": str(path), "name": _stem(path), "model_sha256": sha, "dataset": ds, "results": {}}
        for c, (col, radius, col_steps, col_restarts, obj) in enumerate(cols):
            label = f"[{m + 1}/{len(plans)} {name} | {c + 1}/{len(cols)} {col.key}] "
            lp = lpips_model if col.attack in LPIPS_ATTACKS else None
            settings = _settings(col, sha, ds, split, start, count, radius, seed, col_steps, col_restarts,
                                 None if lp is None else f"{lp} sha256 {lpips_sha}")
            path_json = result_path(results_dir, path, ds, split, start, count, col.key) if results_dir else None
            res = None if (fresh or path_json is None) else _reusable(path_json, settings, batch_size)
            if res is not None:
                if log:
                    log(f"{label}reusing {path_json} (same settings): robust {res['robust_accuracy']:.2%}")
                reused = True
            else:
                res = run_attack(path, attack=col.attack, norm=col.norm, eps=radius, dataset=ds, split=split,
                                 start=start, count=count, batch_size=batch_size, seed=seed, steps=col_steps,
                                 restarts=col_restarts, data_dir=data_dir, download=download, log=log,
                                 lpips_model=lp, label=label)
                res["settings"] = settings
                if path_json is not None:
                    write_json(res, path_json)
                reused = False
                if log:
                    log(f"{label}robust {res['robust_accuracy']:.2%} (clean {res['clean_accuracy']:.2%}), "
                        f"{res['wall_time']:.1f} s")
            entry.setdefault("count", res["count"])
            entry.setdefault("clean_accuracy", res["clean_accuracy"])
            impl = res["implementation"]
            entry["results"][col.key] = {
                "attack": col.attack, "norm": col.norm, "eps": res["eps"], "robust_accuracy": res["robust_accuracy"],
                "description": res["description"], "implementation": impl,
                "lpips_network": impl.get("lpips_network") if isinstance(impl, dict) else None,
                "distance": res.get("distance"), "rejected_points": res.get("rejected_points", 0),
                "point_check": res.get("point_check"), "wall_time": res["wall_time"], "reused": reused,
                "file": None if path_json is None else str(path_json)}
        models.append(entry)
    import torch
    return {"schema": SCHEMA, "columns": [c.key for c in columns], "norm": norm, "split": split, "start": start,
            "count": count, "seed": seed, "batch_size": batch_size, "steps": steps, "restarts": restarts,
            "models": models, "wall_time": time.time() - t_all, "hamverify_version": __version__,
            "torch_version": str(torch.__version__)}


def format_table(result: dict) -> str:
    """One row per model (clean, then each column), then one line per column naming its attack,
    bound, implementation and (for the LPIPS columns) LPIPS network."""
    keys = result["columns"]
    names = [m["name"] for m in result["models"]]
    width = max([5] + [len(n) for n in names])
    cells = [HEADERS.get(k, k) for k in keys]
    head = f"{'model':<{width}}  {'dataset':<13} {'n':>5}  {'clean':>7}  " + "  ".join(f"{c:>9}" for c in cells)
    lines = [head]
    for m in result["models"]:
        row = [f"{m['results'][k]['robust_accuracy']:>9.2%}" for k in keys]
        lines.append(f"{m['name']:<{width}}  {m['dataset']:<13} {m['count']:>5}  {m['clean_accuracy']:>7.2%}  "
                     + "  ".join(row))
    lines.append("columns (robust accuracy: correct on the input and on the attack's point; "
                 f"{result['split']}[{result['start']}:{result['start'] + result['count']}], seed {result['seed']}):")
    seen = set()
    for m in result["models"]:
        for k in keys:
            r = m["results"][k]
            note = (r["description"], m["dataset"], r["eps"], r.get("lpips_network"))
            if note in seen:
                continue
            seen.add(note)
            bound = f"bound {r['eps']:.6g}" if r["attack"] in PERCEPTUAL_BOUNDS else f"{r['norm']} eps {r['eps']:.6g}"
            extra = f"; LPIPS network: {r['lpips_network']}" if r.get("lpips_network") else ""
            lines.append(f"  {HEADERS.get(k, k)}: {r['description']}, {bound} on {m['dataset']}{extra}")
    rejected = sum(r["rejected_points"] for m in result["models"] for r in m["results"].values())
    lines.append(f"  points checked inside each threat model's set before counting; {rejected} rejected")
    return "\n".join(lines)


def legacy_record(result: dict) -> dict:
    """The JSON of `hamverify evaluate` with only the default pgd column (its fields since before
    --attack), plus the implementation."""
    m = result["models"][0]
    r = m["results"]["pgd"]
    impl = r["implementation"]
    return {"model": m["model"], "dataset": m["dataset"], "split": result["split"], "start": result["start"],
            "count": m["count"], "eps": r["eps"], "clean_accuracy": m["clean_accuracy"],
            "pgd_accuracy": r["robust_accuracy"], "pgd_steps": impl["steps"], "pgd_restarts": impl["restarts"],
            "implementation": impl, "description": r["description"], "rejected_points": r["rejected_points"]}


def legacy_line(result: dict) -> str:
    """The one line of `hamverify evaluate` with only the default pgd column."""
    rec = legacy_record(result)
    return (f"{rec['dataset']} {rec['split']}[{rec['start']}:{rec['start'] + rec['count']}]  eps {rec['eps']:.5g}  "
            f"clean {rec['clean_accuracy']:.2%}  PGD-{rec['pgd_steps']}x{rec['pgd_restarts']} "
            f"{rec['pgd_accuracy']:.2%}  ({rec['description']})")
