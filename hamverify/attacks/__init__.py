"""Adversarial attacks (torchattacks style: a tiny base class, one file per method)."""
from .base import Attack
from .margin import MarginPGD, MarginResult
from .pgd import PGD

__all__ = ["Attack", "MarginPGD", "MarginResult", "PGD"]
