"""Adversarial attacks (torchattacks style: a tiny base class, one file per method)."""
from .autoattack import AutoAttack
from .base import Attack
from .margin import MarginPGD, MarginResult
from .pgd import PGD
from .pgd_l2 import PGDL2

__all__ = ["Attack", "AutoAttack", "MarginPGD", "MarginResult", "PGD", "PGDL2"]
