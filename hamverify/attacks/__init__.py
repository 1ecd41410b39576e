"""Adversarial attacks (torchattacks style: a tiny base class, one file per method)."""
from .autoattack import AutoAttack
from .base import Attack
from .jpeg import JPEGAttack
from .lpa import LPA
from .margin import MarginPGD, MarginResult
from .pgd import PGD
from .pgd_l2 import PGDL2
from .ppgd import PPGD
from .recolor import ReColorAdv
from .stadv import StAdv

__all__ = ["Attack", "AutoAttack", "JPEGAttack", "LPA", "MarginPGD", "MarginResult", "PGD", "PGDL2", "PPGD",
           "ReColorAdv", "StAdv"]
