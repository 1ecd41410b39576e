"""Certified-training losses (issue 14): the worst case over the eps-box, bounded by interval
bound propagation (IBP) or CROWN-IBP, as the robust part of the training loss.

One module per piece, every loss a named option of ``train-small --loss``:

* ``interval``  differentiable interval bounds through a ReLUNet (shared with the RS loss),
  with the margin specification folded into the last layer;
* ``crown``     CROWN's backward linear bound on the margins, on interval pre-activation bounds;
* ``certified`` the losses ``ibp``, ``crown-ibp``, ``sabr`` and ``mtl-ibp``;
* ``init``      Shi et al. 2021's IBP initialization;
* ``warmup``    warm-up regularizers: bound tightness and ReLU balance (Shi et al. 2021's idea).

Each is combinable with the Hamming and stability terms of hamverify.regularizers.
"""
from .certified import LOSSES, certified_margin_lower, robust_cross_entropy, robust_loss
from .crown import crown_margin_lower
from .init import INITS, initialize
from .interval import ibp_margin_lower, margin_matrix, propagate_interval
from .warmup import relu_balance_loss, tightness_loss

__all__ = ["LOSSES", "INITS", "certified_margin_lower", "crown_margin_lower", "ibp_margin_lower", "initialize",
           "margin_matrix", "propagate_interval", "relu_balance_loss", "robust_cross_entropy", "robust_loss",
           "tightness_loss"]
