"""ReLU-stability statistics (docs/METHOD.md §6): how verifiable a model is before any MILP runs.

For one or more models, one eps and the same slice of a dataset, this module measures

* per ReLU layer and in total, the mean number (and % of the layer) of **stably active**
  (``l >= 0``), **stably inactive** (``u <= 0``) and **unstable** (``l < 0 < u``) ReLUs, under each
  requested bound method (``ia``, ``symbolic``, ``lp`` of ``hamverify.bounds``).  The box and the
  bounds are exactly the verifier's (``hamverify.verify``): ``lo, hi = clip(x -+ eps, 0, 1)`` with
  ``x = uint8 / 255`` in C, H, W order, ``compute_bounds(net, lo, hi, method)``; so the unstable
  counts equal a verification record's ``unstable_per_layer`` for the same input and tightening.
  Unlike the verifier, every input is counted, misclassified ones included (Xiao et al.'s
  per-input mean of unstable ReLUs);
* the **share of inputs proven by bounds alone**, per method: the input is correctly classified
  (float64 PyTorch model) and every margin lower bound ``z_y - z_j`` (``margin_lower_bounds``) is
  ``> 1e-6`` — the verifier's "verified by bounds" test;
* the **empirical Hamming distance** between the activation patterns ``z > 0`` at ``K`` random
  pairs of opposite corners ``x + rho`` / ``x - rho``, ``rho in {-eps, +eps}^d``, each clipped to
  [0, 1] (as ``regularizers.sample_corners``): the mean over corners and inputs of the number of
  ReLUs whose sign differs, raw and as a fraction of the layer.  The signs for input ``i`` come
  from ``numpy.random.default_rng([seed, i])``, so every model sees the same corners.

Library API: ``relu_stability``, ``corner_hamming``, ``model_stats``, ``compare_models``,
``format_table``, ``to_json`` / ``stats_from_json``, ``plot_unstable``; the CLI is
``hamverify stats``.

JSON schema ``hamverify-stats-v1`` (``to_json``; ``hamverify stats --json``)::

    {
      "schema": "hamverify-stats-v1",
      "eps": 0.0313725...,                  # l_inf radius in pixel units ([0, 1] scale)
      "dataset": "cifar10",
      "split": "test",
      "indices": [0, 1, ...],               # dataset indices of the inputs, the same for every model
      "seed": 0,                            # corner seed
      "proof_tol": 1e-06,                   # margin lower bounds must exceed this
      "hamverify_version": "0.1.0",
      "models": [
        {
          "name": "hv_e100_s0",             # short name: file stem, or the parent folder for model.pt etc.
          "path": "/.../model.pt",
          "sha256": "...",                  # of the checkpoint file
          "arch": "cifar_small",
          "layer_sizes": [4096, 2048, 128], # ReLUs per layer
          "clean_accuracy": 0.85,           # share of the inputs the float64 model classifies correctly
          "methods": {
            "ia": {                         # one entry per requested method, in the order asked
              "per_layer": [                # one per ReLU layer; means over the inputs
                {"active": 1203.4, "inactive": 2700.1, "unstable": 192.5,
                 "active_pct": 29.38, "inactive_pct": 65.92, "unstable_pct": 4.70},  # % of the layer
                ...
              ],
              "total": {...same six keys, summed over layers; % of all ReLUs...},
              "bounds_proven": 12,          # inputs proven by bounds alone (count)
              "bounds_proven_share": 0.6    # ... as a share of the inputs, in [0, 1]
            },
            "symbolic": {...}
          },
          "hamming": {
            "corners": 10,                  # K opposite-corner pairs per input
            "per_layer": [{"mean": 3.1, "normalized": 0.00076}, ...],  # mean count, fraction of layer
            "total": {"mean": 4.0, "normalized": 0.00064}               # summed over layers / all ReLUs
          }
        },
        ...
      ]
    }

Counts are means over the inputs and therefore floats.  Keys may be added in a later v1 (readers
must ignore unknown keys); renaming or removing one changes the schema name.
"""
from __future__ import annotations

import copy
import json
import pathlib
from typing import NamedTuple, Sequence

import numpy as np

from . import HamverifyError, __version__
from .bounds import BOUND_METHODS, LayerBounds, compute_bounds, margin_lower_bounds
from .network import Network

SCHEMA = "hamverify-stats-v1"
DEFAULT_METHODS = ("ia", "symbolic")
PROOF_TOL = 1e-6  # the verifier's default tol (docs/METHOD.md §5.5)
STABILITY_KEYS = ("active", "inactive", "unstable", "active_pct", "inactive_pct", "unstable_pct")
PLOT_MISSING = "matplotlib is not installed: pip install 'hamverify[plot]'"
_GENERIC_STEMS = {"model", "last", "best", "final", "checkpoint", "ckpt"}


class LayerCounts(NamedTuple):
    """ReLU counts of one layer for one input."""

    active: int
    inactive: int
    unstable: int

    @property
    def size(self) -> int:
        return self.active + self.inactive + self.unstable


# ------------------------------------------------------------------------------------------- per input


def image_to_flat(x_uint8: np.ndarray) -> np.ndarray:
    """A dataset image (uint8 H, W, C) as the verifier's flat float64 input in C, H, W order."""
    return np.transpose(np.asarray(x_uint8, dtype=np.float64) / 255.0, (2, 0, 1)).ravel()


def input_box(x_flat, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """The verifier's box B(x) ∩ [0, 1]."""
    x = np.asarray(x_flat, dtype=np.float64).ravel()
    return np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1)


def _bound_kwargs(method: str) -> dict:
    if method == "lp":  # the verifier's per-neuron LP budget
        from .verify import VerifySettings
        return {"time_per_neuron": VerifySettings.lp_time_per_neuron}
    return {}


def layer_counts(bounds: list[LayerBounds]) -> list[LayerCounts]:
    """Stably active / stably inactive / unstable ReLUs per layer, from pre-activation bounds.

    A neuron with ``l == u == 0`` is both "active" and "inactive" by the bound tests; it is counted
    as inactive, so the three counts always add up to the layer size.
    """
    out = []
    for b in bounds:
        unstable = int(b.unstable.sum())
        inactive = int(b.stably_inactive.sum())
        out.append(LayerCounts(len(b.lower) - unstable - inactive, inactive, unstable))
    return out


def _bounds(net: Network, x_flat, eps: float, method: str):
    if method not in BOUND_METHODS:
        raise HamverifyError(f"unknown bound method {method!r}; known: {', '.join(BOUND_METHODS)}")
    lo, hi = input_box(x_flat, eps)
    return lo, hi, compute_bounds(net, lo, hi, method, **_bound_kwargs(method))


def relu_stability(net: Network, x_flat, eps: float, method: str = "symbolic") -> list[LayerCounts]:
    """Per-layer ReLU counts for one input (flat, pixel values in [0, 1]) under one bound method."""
    return layer_counts(_bounds(net, x_flat, eps, method)[2])


def bounds_prove(net: Network, lo, hi, bounds: list[LayerBounds], label: int, tol: float = PROOF_TOL) -> bool:
    """Do the bounds alone prove ``z_label - z_j > tol`` for every other class j?"""
    margins = margin_lower_bounds(net, lo, hi, bounds, int(label))
    return bool(np.all(np.delete(margins, int(label)) > tol))


def corner_pairs(x_flat, eps: float, corners: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``corners`` opposite corners ``clip(x + rho)``, ``clip(x - rho)``, rho in {-eps, +eps}^d; each (K, d)."""
    x = np.asarray(x_flat, dtype=np.float64).ravel()
    rho = (rng.integers(0, 2, size=(corners, x.size)) * 2 - 1) * float(eps)
    return np.clip(x + rho, 0, 1), np.clip(x - rho, 0, 1)


def corner_hamming(net: Network, x_flat, eps: float, corners: int = 10,
                   rng: np.random.Generator | int | None = None) -> np.ndarray:
    """Mean over ``corners`` opposite-corner pairs of the per-layer Hamming distance between the
    activation patterns (z > 0); a float array with one entry per ReLU layer."""
    if corners < 1:
        raise HamverifyError(f"corners must be >= 1, got {corners}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    plus, minus = corner_pairs(x_flat, eps, corners, rng)
    pre = net.preactivations(np.vstack([plus, minus]))
    return np.array([float(((z[:corners] > 0) != (z[corners:] > 0)).sum(axis=1).mean()) for z in pre])


# ------------------------------------------------------------------------------------------- per model


def _stability_summary(counts: np.ndarray, sizes: Sequence[int]) -> tuple[list[dict], dict]:
    """counts (N, layers, 3) -> per-layer and total dicts of mean counts and percentages."""
    def entry(mean3, size):
        a, i, u = (float(v) for v in mean3)
        pct = (lambda v: 100.0 * v / size) if size else (lambda v: 0.0)
        return {"active": a, "inactive": i, "unstable": u,
                "active_pct": pct(a), "inactive_pct": pct(i), "unstable_pct": pct(u)}
    mean = counts.mean(axis=0)  # (layers, 3)
    per_layer = [entry(mean[j], sizes[j]) for j in range(len(sizes))]
    return per_layer, entry(counts.sum(axis=1).mean(axis=0), int(sum(sizes)))


def model_stats(net: Network, x_flat: np.ndarray, labels: Sequence[int], eps: float,
                methods: Sequence[str] = DEFAULT_METHODS, corners: int = 10, seed: int = 0,
                indices: Sequence[int] | None = None, predicted: Sequence[int] | None = None,
                tol: float = PROOF_TOL, progress: bool = False, desc: str | None = None) -> dict:
    """Statistics of one model over a batch of inputs ``x_flat`` (N, d) in [0, 1].

    Returns the model-level part of the schema: ``layer_sizes``, ``clean_accuracy``, ``methods``
    and ``hamming``.  ``indices`` (default 0..N-1) seed each input's corners; ``predicted``
    (default: argmax of the IR's logits) decides which inputs are correctly classified.
    """
    x_flat = np.asarray(x_flat, dtype=np.float64).reshape(len(labels), -1)
    n = len(x_flat)
    if n == 0:
        raise HamverifyError("no inputs to compute statistics on")
    methods = list(dict.fromkeys(methods))
    for m in methods:
        if m not in BOUND_METHODS:
            raise HamverifyError(f"unknown bound method {m!r}; known: {', '.join(BOUND_METHODS)}")
    indices = list(range(n)) if indices is None else [int(i) for i in indices]
    if predicted is None:
        predicted = net.forward(x_flat).argmax(axis=1)
    correct = np.asarray(predicted) == np.asarray(labels)
    sizes = net.relu_layer_sizes
    counts = {m: np.zeros((n, len(sizes), 3)) for m in methods}
    proven = {m: 0 for m in methods}
    hamming = np.zeros((n, len(sizes)))

    from tqdm import tqdm
    for k in tqdm(range(n), desc=desc, unit="input", disable=not progress, leave=False, dynamic_ncols=True):
        for m in methods:
            lo, hi, bounds = _bounds(net, x_flat[k], eps, m)
            counts[m][k] = layer_counts(bounds)
            if correct[k] and bounds_prove(net, lo, hi, bounds, int(labels[k]), tol):
                proven[m] += 1
        hamming[k] = corner_hamming(net, x_flat[k], eps, corners, np.random.default_rng([seed, indices[k]]))

    out_methods = {}
    for m in methods:
        per_layer, total = _stability_summary(counts[m], sizes)
        out_methods[m] = {"per_layer": per_layer, "total": total,
                          "bounds_proven": int(proven[m]), "bounds_proven_share": proven[m] / n}
    mean_h = hamming.mean(axis=0)
    total_size = int(sum(sizes))
    return {
        "layer_sizes": [int(s) for s in sizes],
        "clean_accuracy": float(correct.mean()),
        "methods": out_methods,
        "hamming": {
            "corners": int(corners),
            "per_layer": [{"mean": float(h), "normalized": float(h) / s if s else 0.0} for h, s in zip(mean_h, sizes)],
            "total": {"mean": float(hamming.sum(axis=1).mean()),
                      "normalized": float(hamming.sum(axis=1).mean()) / total_size if total_size else 0.0},
        },
    }


# ------------------------------------------------------------------------------------------- several models


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """'ia,symbolic' -> ['ia', 'symbolic'] (order kept, duplicates dropped); unknown names raise."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    methods = list(dict.fromkeys(p.strip().lower() for p in parts if p.strip()))
    if not methods:
        raise HamverifyError(f"no bound method given; choose from {', '.join(BOUND_METHODS)}")
    unknown = [m for m in methods if m not in BOUND_METHODS]
    if unknown:
        raise HamverifyError(f"unknown bound method {unknown[0]!r}; known: {', '.join(BOUND_METHODS)}")
    return methods


def short_names(paths: Sequence) -> list[str]:
    """Short, unique column names: the file stem, or the parent folder for generic stems (model.pt)."""
    paths = [pathlib.Path(p) for p in paths]

    def name(p: pathlib.Path, depth: int) -> str:
        parts = [p.stem] if p.stem.lower() not in _GENERIC_STEMS or not p.parent.name else []
        parents = [q.name for q in p.parents if q.name]
        need = depth + (0 if parts else 1)
        return "/".join(list(reversed(parents[:need])) + parts) or p.name

    names = [name(p, 0) for p in paths]
    for depth in range(1, 4):
        dup = {n for n in names if names.count(n) > 1}
        if not dup:
            break
        names = [name(p, depth) if n in dup else n for p, n in zip(paths, names)]
    seen: dict[str, int] = {}
    unique = []
    for n in names:  # still equal (the same file twice): number them
        seen[n] = seen.get(n, 0) + 1
        unique.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return unique


def _load_models(model_paths: Sequence, dataset: str | None):
    """[(path, model, meta)], and the dataset every model is compared on."""
    from .models import INPUT_SHAPE, load_checkpoint
    if not model_paths:
        raise HamverifyError("no model given")
    loaded = [(str(p), *load_checkpoint(p)) for p in model_paths]
    trained_on = {meta["dataset"] for _, _, meta in loaded}
    if len(trained_on) > 1:
        listing = ", ".join(f"{p}: {meta['dataset']}" for p, _, meta in loaded)
        raise HamverifyError(f"the models were trained on different datasets ({listing}); "
                             f"compare models of one dataset")
    if dataset is None:
        dataset = trained_on.pop()
    else:
        dataset = str(dataset).strip().lower().replace("_", "-")
        if dataset not in INPUT_SHAPE:
            raise HamverifyError(f"unknown dataset {dataset!r}; known: {', '.join(INPUT_SHAPE)}")
        for p, _, meta in loaded:
            if INPUT_SHAPE[meta["dataset"]] != INPUT_SHAPE[dataset]:
                raise HamverifyError(f"{p} takes {meta['dataset']} inputs {INPUT_SHAPE[meta['dataset']]}, "
                                     f"not {dataset} inputs {INPUT_SHAPE[dataset]}")
    return loaded, dataset


def compare_models(model_paths: Sequence, eps: float | None = None, *, count: int = 100, start: int = 0,
                   methods: Sequence[str] | str = DEFAULT_METHODS, corners: int = 10, dataset: str | None = None,
                   split: str = "test", data_dir=None, seed: int = 0, tol: float = PROOF_TOL,
                   progress: bool = False) -> dict:
    """Statistics of every model on the same inputs (``count`` from ``start``); the full schema.

    ``eps`` defaults to the checkpoints' eps (which must then agree); ``dataset`` to the one the
    models were trained on (which must agree).
    """
    import torch

    from .config import parse_eps
    from .data import load_dataset
    from .models import INPUT_SHAPE, file_sha256
    from .network import from_torch

    methods = parse_methods(methods)
    if count < 1:
        raise HamverifyError(f"count must be >= 1, got {count}")
    if start < 0:
        raise HamverifyError(f"start must be >= 0, got {start}")
    if corners < 1:
        raise HamverifyError(f"corners must be >= 1, got {corners}")
    loaded, dataset = _load_models(model_paths, dataset)
    if eps is None:
        saved = {meta.get("eps") for _, _, meta in loaded}
        if len(saved) != 1 or None in saved:
            raise HamverifyError("no --eps given and the checkpoints do not record one common eps")
        eps = saved.pop()
    eps = parse_eps(eps)
    images, labels = load_dataset(dataset, split, data_dir)
    if start >= len(images):
        raise HamverifyError(f"--start {start} is past the end of {dataset} {split} ({len(images)} inputs)")
    indices = list(range(start, min(start + count, len(images))))
    x_flat = np.stack([image_to_flat(images[i]) for i in indices])
    y = np.asarray(labels[indices], dtype=np.int64)

    names = short_names([p for p, _, _ in loaded])
    models = []
    for name, (path, model, meta) in zip(names, loaded):
        model64 = copy.deepcopy(model).double().eval()
        net = from_torch(model64, INPUT_SHAPE[dataset])
        with torch.no_grad():  # the verifier's "misclassified" test: the float64 PyTorch model
            predicted = model64(torch.from_numpy(x_flat.reshape(-1, *INPUT_SHAPE[dataset]))).argmax(1).numpy()
        stats = model_stats(net, x_flat, y, eps, methods, corners, seed, indices, predicted, tol,
                            progress=progress, desc=name)
        models.append({"name": name, "path": path, "sha256": file_sha256(path), "arch": meta.get("arch"), **stats})
    return {"schema": SCHEMA, "eps": float(eps), "dataset": dataset, "split": split, "indices": indices,
            "seed": int(seed), "proof_tol": float(tol), "hamverify_version": __version__, "models": models}


# ------------------------------------------------------------------------------------------- JSON


def to_json(result: dict, indent: int | None = 2) -> str:
    """The result as JSON text (schema in the module docstring)."""
    return json.dumps(result, indent=indent, allow_nan=False)


def stats_from_json(text: str) -> dict:
    """Parse and check JSON written by ``to_json``; ``stats_from_json(to_json(r)) == r``."""
    try:
        result = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HamverifyError(f"not valid JSON: {exc}") from None
    if not isinstance(result, dict) or result.get("schema") != SCHEMA:
        found = result.get("schema") if isinstance(result, dict) else type(result).__name__
        raise HamverifyError(f"not {SCHEMA} statistics (schema {found!r})")
    missing = [k for k in ("eps", "dataset", "split", "indices", "models") if k not in result]
    for i, m in enumerate(result.get("models", [])):
        missing += [f"models[{i}].{k}" for k in ("name", "path", "sha256", "layer_sizes", "methods", "hamming")
                    if k not in m]
        for meth, body in m.get("methods", {}).items():
            missing += [f"models[{i}].methods.{meth}.{k}" for k in ("per_layer", "total", "bounds_proven_share")
                        if k not in body]
    if missing:
        raise HamverifyError(f"{SCHEMA} statistics lack {', '.join(missing[:5])}")
    return result


# ------------------------------------------------------------------------------------------- table


def _eps_text(eps: float) -> str:
    k = eps * 255
    frac = f" ({round(k)}/255)" if eps > 0 and abs(k - round(k)) < 1e-9 else ""
    return f"{eps:.6g}{frac}"


def _num(v: float) -> str:
    return f"{v:.2f}"


def _render(left_head: list[str], groups: list[tuple[str, list[str]]] | None, subheads: list[str],
            rows: list[list[str]], n_left: int) -> list[str]:
    """Aligned text table; the first ``n_left`` columns are row labels, the rest data cells.

    ``groups`` (name, [sub-columns]) adds a line of spanning group names above ``subheads``.
    """
    head = left_head + subheads
    widths = [max(len(r[c]) for r in [head] + rows) for c in range(len(head))]
    gap = "  "
    group_line = None
    if groups:
        col = n_left
        spans = []
        for name, subs in groups:
            span = list(range(col, col + len(subs)))
            have = sum(widths[c] for c in span) + len(gap) * (len(span) - 1)
            if len(name) > have:  # widen the group's first column to fit its name
                widths[span[0]] += len(name) - have
                have = len(name)
            spans.append((name, have))
            col += len(subs)
        left = sum(widths[:n_left]) + len(gap) * n_left
        group_line = " " * left + gap.join(f"{name:^{w}}" for name, w in spans)

    def line(cells):
        parts = [c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells)]
        return gap.join(parts).rstrip()
    lines = [group_line.rstrip()] if group_line is not None else []
    lines.append(line(head))
    lines.append(gap.join("-" * w for w in widths))
    lines.extend(line(r) for r in rows)
    return ["  " + ln for ln in lines]


def _size_cell(sizes: list[int | None]) -> str:
    known = [s for s in sizes if s is not None]
    if len(set(known)) == 1 and len(known) == len(sizes):
        return str(known[0])
    return "/".join("-" if s is None else str(s) for s in sizes)


def format_table(result: dict) -> str:
    """The statistics as aligned text: rows = layers, columns = model x bound method."""
    models = result["models"]
    methods = list(dict.fromkeys(m for mod in models for m in mod["methods"]))
    n_layers = max(len(m["layer_sizes"]) for m in models)
    idx = result["indices"]
    n = len(idx)
    contiguous = idx == list(range(idx[0], idx[0] + n)) if n else True
    where = f"[{idx[0]}:{idx[-1] + 1}]" if n and contiguous else f"({n} chosen indices)"
    out = [f"ReLU stability at eps {_eps_text(result['eps'])} on {result['dataset']} {result['split']}{where}: "
           f"{n} input{'s' if n != 1 else ''}, means per input"]
    name_w = max(len(m["name"]) for m in models)
    for m in models:
        acc = m.get("clean_accuracy")
        acc_text = f", clean {round(acc * n)}/{n}" if acc is not None else ""
        out.append(f"  {m['name']:<{name_w}}  {m['path']}  ({m.get('arch') or '?'}, sha256 {m['sha256'][:12]}"
                   f"{acc_text})")

    def size_of(m, j):
        return m["layer_sizes"][j] if j < len(m["layer_sizes"]) else None

    layer_labels = [(str(j + 1), _size_cell([size_of(m, j) for m in models])) for j in range(n_layers)]
    total_label = ("total", _size_cell([int(sum(m["layer_sizes"])) for m in models]))
    groups = [(m["name"], [meth for meth in methods if meth in m["methods"]]) for m in models]
    subheads = [meth for _, subs in groups for meth in subs]
    single_method = len(methods) == 1

    sections = [("unstable", "Unstable ReLUs (l < 0 < u)"),
                ("active", "Stably active ReLUs (l >= 0)"),
                ("inactive", "Stably inactive ReLUs (u <= 0)")]
    for key, title in sections:
        out += ["", f"{title}: mean count (% of the layer)"
                    + (f", {methods[0]} bounds" if single_method else "")]
        rows = []
        for j, (label, size) in enumerate(layer_labels + [total_label]):
            cells = []
            for m, (_, subs) in zip(models, groups):
                for meth in subs:
                    body = m["methods"][meth]
                    e = body["total"] if j == n_layers else (body["per_layer"][j] if j < len(body["per_layer"]) else None)
                    cells.append("-" if e is None else f"{_num(e[key])} ({e[key + '_pct']:.2f}%)")
            rows.append([label, size] + cells)
        if single_method:
            out += _render(["layer", "ReLUs"], None, [g for g, _ in groups], rows, 2)
        else:
            out += _render(["layer", "ReLUs"], groups, subheads, rows, 2)

    tol = result.get("proof_tol", PROOF_TOL)
    out += ["", f"Proven robust by bounds alone (correctly classified, every margin lower bound > {tol:g})"]
    cells = []
    for m, (_, subs) in zip(models, groups):
        for meth in subs:
            body = m["methods"][meth]
            k = body.get("bounds_proven", round(body["bounds_proven_share"] * n))
            cells.append(f"{k}/{n} ({100 * body['bounds_proven_share']:.1f}%)")
    if single_method:
        out += _render([""], None, [g for g, _ in groups], [["proven"] + cells], 1)
    else:
        out += _render([""], groups, subheads, [["proven"] + cells], 1)

    corners = {m["hamming"]["corners"] for m in models}
    out += ["", f"Hamming distance of activation patterns (z > 0) at opposite corners x+rho, x-rho: mean count "
                f"(% of the layer); {'/'.join(map(str, sorted(corners)))} pairs per input, seed {result.get('seed', 0)}"]
    rows = []
    for j, (label, size) in enumerate(layer_labels + [total_label]):
        cells = []
        for m in models:
            h = m["hamming"]
            e = h["total"] if j == n_layers else (h["per_layer"][j] if j < len(h["per_layer"]) else None)
            cells.append("-" if e is None else f"{_num(e['mean'])} ({100 * e['normalized']:.2f}%)")
        rows.append([label, size] + cells)
    out += _render(["layer", "ReLUs"], None, [m["name"] for m in models], rows, 2)
    return "\n".join(out)


# ------------------------------------------------------------------------------------------- plot


def require_matplotlib():
    """The matplotlib ``Figure`` class, or a one-line HamverifyError naming the extra to install."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise HamverifyError(PLOT_MISSING) from None
    return Figure


def plot_unstable(result: dict, path) -> pathlib.Path:
    """Grouped bar chart of the mean unstable ReLUs per layer (one panel per method, one bar per model)."""
    Figure = require_matplotlib()
    models = result["models"]
    methods = list(dict.fromkeys(m for mod in models for m in mod["methods"]))
    n_layers = max(len(m["layer_sizes"]) for m in models)
    fig = Figure(figsize=(max(4.0, 1.2 + 0.9 * n_layers * max(1, len(models)) * 0.6) * len(methods), 3.8),
                 layout="constrained")
    axes = fig.subplots(1, len(methods), squeeze=False)[0]
    width = 0.8 / len(models)
    xs = np.arange(n_layers)
    for ax, meth in zip(axes, methods):
        for k, m in enumerate(models):
            body = m["methods"].get(meth)
            if body is None:
                continue
            vals = [e["unstable"] for e in body["per_layer"]]
            bars = ax.bar(xs[:len(vals)] + (k - (len(models) - 1) / 2) * width, vals, width, label=m["name"])
            ax.bar_label(bars, labels=[f"{v:.1f}" for v in vals], fontsize=7, padding=1)
        ax.set_xticks(xs, [f"layer {j + 1}" for j in range(n_layers)])
        ax.set_title(f"{meth} bounds")
        ax.set_ylabel("unstable ReLUs (mean per input)")
        ax.margins(y=0.15)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Unstable ReLUs at eps {_eps_text(result['eps'])}, {result['dataset']} {result['split']}, "
                 f"{len(result['indices'])} inputs", fontsize=10)
    path = pathlib.Path(path)
    try:
        fig.savefig(path, dpi=120)
    except OSError as exc:
        raise HamverifyError(f"cannot write plot {path}: {exc}") from None
    return path


__all__ = ["DEFAULT_METHODS", "LayerCounts", "PLOT_MISSING", "PROOF_TOL", "SCHEMA", "bounds_prove", "compare_models",
           "corner_hamming", "corner_pairs", "format_table", "image_to_flat", "input_box", "layer_counts",
           "model_stats", "parse_methods", "plot_unstable", "relu_stability", "require_matplotlib", "short_names",
           "stats_from_json", "to_json"]
