"""Exact verification by MILP (docs/METHOD.md §5): the encoding (``encode``) and two back ends
(``highs`` via highspy, ``pulp`` via any PuLP solver) that share :class:`SolveResult`."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Verdicts a back end may return.  "robust" is only ever set from a solver's final, proven status
# (docs/METHOD.md §5.5/§5.7); "counterexample" is a solver claim that the caller still validates in
# float64 against the PyTorch model.
ROBUST = "robust"
COUNTEREXAMPLE = "counterexample"
TIMEOUT = "timeout"
UNKNOWN = "unknown"
VERDICTS = (ROBUST, COUNTEREXAMPLE, TIMEOUT, UNKNOWN)


@dataclass
class SolveResult:
    """Outcome of one MILP solve (minimizing a margin)."""

    status: str  # one of VERDICTS
    objective_value: float | None  # best primal objective found, or None
    objective_bound: float | None  # proven lower (dual) bound, or None
    x: np.ndarray | None  # input point of the best primal solution, or None
    solve_time: float
    solver_status: str  # the solver's own status, verbatim, for the record


__all__ = ["ROBUST", "COUNTEREXAMPLE", "TIMEOUT", "UNKNOWN", "VERDICTS", "SolveResult"]
