"""Branch and bound (issue 13, item 4): a complete search over ReLU splits (or input splits) that
decides, per target class ``j``, whether ``z_label - z_j > tol`` on the whole input box.

The box is partitioned into subdomains.  A ReLU split of an unstable neuron ``k`` of layer ``i``
gives two children, ``z_i[k] >= 0`` and ``z_i[k] <= 0``; an input split halves one coordinate of
the box.  The root is bounded by ``bounds.alpha.alpha_crown``; every child by its intermediate
bounds (``split_bounds``: rebuilt from the parent's, clamped by the splits; ``symbolic_bounds`` on
a sub-box) and then α/β-CROWN (``bounds/rows.py``: slopes warm-started from the parent, the split
constraints as Lagrange terms, several subdomains batched), recomputed in float64.  The search
keeps a best-first queue (worst margin bound first) of the subdomains whose bound is still
``<= tol`` for some target.  A target is *robust* when every subdomain of the partition has closed it:

* a margin lower bound ``> tol`` (sound on the subdomain: ``bounds/rows.py``, ``bounds/alpha.py``);
* the subdomain is empty (its splits contradict its intermediate bounds: ``split_bounds`` is None);
* an exact LP of the subdomain (a leaf with no unstable neuron left: the network is affine on it,
  the split constraints are linear) whose *dual-certified* bound exceeds ``tol``, or which a Farkas
  ray proves empty -- or, after BaB stalls, an exact MILP of the subdomain proven by HiGHS's final
  status under the cutoff ``tol`` (``bab/exact.py``: fixed binaries make it exact).

*counterexample* only for a point of the box that the validator (``validate``, e.g.
``Verifier.validate_counterexample``; else the IR's float64 forward pass) confirms: candidates are
every new subdomain's concretizing input corners (where the α bound's linear function is lowest),
the LP / MILP points, and a short ``MarginPGD`` from the worst subdomain's corner every few
branchings.  Everything else is *timeout* (the deadline passed) or *unknown* (a leaf whose exact
margin lies in ``[0, tol]``, a solver point the validator rejects, the domain limit without the
MILP fallback, ...).

When BaB stalls -- the queue holds more than ``max_domains`` subdomains or ``milp_after`` of the
time is spent -- the remaining subdomains of each open target go to the MILP (one per subdomain,
worst first, when at most ``milp_max_domains`` remain; else one MILP of the whole box with the
root bounds), each solve limited to the time that is left.

Precision: every bound is float64 (the torch optimizations only choose slopes and multipliers);
the torch copies of the network used by the attack are never trusted for a verdict.

Use: ``branch_and_bound(net, lo, hi, label, targets, deadline, bounds=..., validate=...)`` ->
``BabResult`` (``bab/search.py``); ``benchmarks/bab_branching.py`` measures the branching rules.
"""
from __future__ import annotations

from .search import BOUNDING, BRANCHING, BabResult, BabStats, branch_and_bound, relu_scores

__all__ = ["BOUNDING", "BRANCHING", "BabResult", "BabStats", "branch_and_bound", "relu_scores"]
