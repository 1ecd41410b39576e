"""Training loop and schedules of docs/METHOD.md §4 (`hamverify train-small`)."""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import pathlib
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from . import HamverifyError
from .attacks import PGD
from .config import parse_eps
from .models import (DEFAULT_ARCH, TRAINING_ONLY_ARCHITECTURES, build_model, has_batch_norm, load_checkpoint,
                     read_checkpoint, save_checkpoint)
from .recipes import DEFAULT_RECIPE, recipe_overrides
from .losses import (INITS, LOSSES, certified_margin_lower, crown_margin_lower, initialize, relu_balance_loss,
                     robust_loss, tightness_loss)
from .losses.interval import box
from .regularizers import (STABILITY_FORMS, default_dense_scale, dense_pairs, hamming_loss, hamming_loss_dense,
                           l1_penalty, rs_loss, sample_corners, stability_loss, stability_loss_dense,
                           unstable_counts_ia)

DEFAULT_EPS = {"cifar10": 8 / 255, "mnist": 0.1, "fashion-mnist": 0.1}
REGS = ("hamming", "hamming-dense", "rs", "none")


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved in every checkpoint."""

    dataset: str = "cifar10"
    arch: str | None = None
    recipe: str = "paper-adam"       # the dataclass defaults are docs/METHOD.md's values; see recipes.py
    epochs: int = 100
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3                 # peak of the piecewise-linear schedule
    weight_decay: float = 0.0
    momentum: float = 0.9
    reg: str = "hamming"             # hamming | hamming-dense | rs | none
    # hamming-dense (Eq. 14, the paper's Table 4): every pair of the batch's 2N corner points, heat-kernel
    # weights exp(-||p_i - p_j||²/s) relative to the corner pairs' (hamverify.regularizers.dense_pairs).
    dense_scale: float | None = None  # s; None: 2·4·d·eps² at the target eps (24.2 at CIFAR-10 8/255)
    # Pairs weighing less are dropped (0: all pairs, Eq. 14 exactly). Measured on CIFAR-10 8/255 batches of
    # 128 at the default s: 1e-2 keeps ~750 of the 32,640 pairs and 93-94 % of the kernel weight; the
    # cost of the Hamming part grows with the pairs kept (all pairs: ~6x a sparse step on one thread).
    dense_min_weight: float = 1e-2
    eps: float | None = None         # target eps; default per dataset
    eps_start_ratio: float = 0.25    # 2/255 of 8/255 until 10 % of the epochs
    eps_ramp_start: float = 0.1      # eps ramps linearly between these fractions of the epochs
    eps_ramp_end: float = 0.35
    # Certified training (hamverify.losses): the robust term, mixed with the clean CE by κ, which
    # moves from kappa_start to kappa_end over the eps ramp; every term below combines with reg.
    loss: str = "ce"                 # ce | ibp | crown-ibp | sabr | mtl-ibp
    kappa_start: float = 1.0
    kappa_end: float = 0.0
    beta_start: float = 1.0          # crown-ibp: weight of the CROWN-IBP bound, 1 -> 0 over the ramp
    beta_end: float = 0.0
    sabr_lambda: float = 0.4         # sabr: the small box's radius, a share of eps
    mtl_alpha: float = 0.5           # mtl-ibp: weight of the IBP loss against the adversarial CE
    attack_steps: int | None = None  # sabr / mtl-ibp attack (default 8 / 1)
    init: str = "default"            # default | ibp (Shi et al. 2021)
    warmup_reg: float = 0.0          # weight of the warm-up regularizers, decaying to 0 over the ramp
    gamma_s: float = 0.4
    gamma_h: float = 9000.0
    alpha: float = 8.0
    gamma_ramp: float = 10.0         # γ's rise to this multiple of their start (epochs 20 -> 80)
    train_eps_factor: float = 1.0    # regularize over a ball this much larger than the target eps
    corner_ce: float = 0.0           # weight of the cross-entropy on the two corners
    adv_ce: float = 0.0              # share of the CE taken on a PGD point (adv_steps); 0 = none, as the paper
    stability_form: str = "softmax-mean"
    grad_clip: float | None = None
    collapse_policy: str = "stop"    # stop | rollback
    max_rollbacks: int = 5
    select: str = "last"             # last | best-val
    val_count: int = 0               # training images held out (from the end) for best-val
    augment: bool | None = None      # default: on for CIFAR-10 (crop 32 pad 4 + flip)
    adv_steps: int = 10              # RS baseline: PGD steps of adversarial training
    rs_weight: float = 1.0
    l1: float = 1e-5
    eval_count: int = 500
    eval_pgd_steps: int = 20
    eval_pgd_restarts: int = 1
    seed: int = 0
    subset: int | None = None

    def __post_init__(self):
        self.arch = self.arch or DEFAULT_ARCH.get(self.dataset)
        if self.eps is None:
            self.eps = DEFAULT_EPS.get(self.dataset, 0.1)
        self.eps = parse_eps(self.eps)  # a config file may give "8/255"; also checks the range
        if self.augment is None:
            self.augment = self.dataset == "cifar10"
        checks = [(self.optimizer in ("adam", "sgd"), f"optimizer {self.optimizer!r} (adam|sgd)"),
                  (self.reg in REGS, f"reg {self.reg!r} ({'|'.join(REGS)})"),
                  (self.dense_scale is None or self.dense_scale > 0, f"dense_scale {self.dense_scale} (> 0)"),
                  (0 <= self.dense_min_weight < 1, f"dense_min_weight {self.dense_min_weight} (in [0, 1))"),
                  (self.stability_form in STABILITY_FORMS, f"stability form {self.stability_form!r}"),
                  (self.collapse_policy in ("stop", "rollback"), f"collapse policy {self.collapse_policy!r}"),
                  (self.select in ("last", "best-val", "best-val-cert"),
                   f"select {self.select!r} (last|best-val|best-val-cert)"),
                  (self.loss in LOSSES, f"loss {self.loss!r} ({'|'.join(LOSSES)})"),
                  (self.init in INITS, f"init {self.init!r} ({'|'.join(INITS)})"),
                  (0 <= self.eps_ramp_start <= self.eps_ramp_end <= 1,
                   f"eps ramp {self.eps_ramp_start}..{self.eps_ramp_end} (fractions, start <= end)"),
                  (all(0 <= v <= 1 for v in (self.kappa_start, self.kappa_end, self.beta_start, self.beta_end,
                                             self.mtl_alpha)), "κ, β and mtl_alpha must lie in [0, 1]"),
                  (0 < self.sabr_lambda <= 1, f"sabr_lambda {self.sabr_lambda} (in (0, 1])"),
                  (self.warmup_reg >= 0, f"warmup_reg {self.warmup_reg} (>= 0)"),
                  (0 <= self.adv_ce <= 1, f"adv_ce {self.adv_ce} (a share in [0, 1])"),
                  (self.epochs >= 1, f"epochs {self.epochs} (must be >= 1)"),
                  (self.batch_size >= 1, f"batch size {self.batch_size}"),
                  (self.lr > 0, f"lr {self.lr}"),
                  (self.subset is None or self.subset >= 1, f"subset {self.subset}")]
        for ok, what in checks:
            if not ok:
                raise HamverifyError(f"invalid training setting: {what}")
        if self.select.startswith("best-val") and self.val_count < 1:
            raise HamverifyError(f"select {self.select} needs --val-count > 0")
        if self.loss == "crown-ibp" and has_batch_norm(self.arch, self.dataset):
            raise HamverifyError(f"loss crown-ibp does not support the batch-norm arch {self.arch} "
                                 "(its backward pass has no batch statistics): use ibp, sabr or mtl-ibp")
        if self.arch in TRAINING_ONLY_ARCHITECTURES:
            # Interval bounds walk a Sequential of affine layers and ReLUs: a ResNet or a max-pool
            # net has no such form, so the bound-based terms cannot train it.
            needs_bounds = [what for ok, what in ((self.loss != "ce", f"loss {self.loss}"),
                                                  (self.reg == "rs", "reg rs"),
                                                  (self.select == "best-val-cert", "select best-val-cert"),
                                                  (self.init == "ibp", "init ibp"),
                                                  (self.warmup_reg > 0, "warmup_reg")) if ok]
            if needs_bounds:
                raise HamverifyError(f"arch {self.arch} is for training and attacks only (not verifiable): "
                                     f"{', '.join(needs_bounds)} need interval bounds; use e.g. --recipe paper-sgd "
                                     f"or hv-gs8-gh3000 (Hamming terms, CE)")

    @classmethod
    def from_sources(cls, recipe: str | None = None, file_values: dict | None = None,
                     cli_values: dict | None = None) -> "TrainConfig":
        """Dataclass defaults < recipe < config file < command-line flags."""
        values: dict = {}
        file_values = dict(file_values or {})
        cli_values = {k: v for k, v in (cli_values or {}).items() if v is not None}
        name = cli_values.get("recipe") or file_values.get("recipe") or recipe or DEFAULT_RECIPE
        values.update(recipe_overrides(name))
        # The optimizer asked for by a flag or, failing that, by the config file: both mean --optimizer.
        asked_optimizer = cli_values.get("optimizer") or file_values.get("optimizer")
        if values.get("optimizer") == "sgd" or asked_optimizer == "sgd":
            values.setdefault("weight_decay", 5e-4)
        values.update(file_values)
        values.update(cli_values)
        values["recipe"] = name
        if asked_optimizer == "sgd" and "lr" not in cli_values and "lr" not in file_values:
            values["lr"] = 0.1
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise HamverifyError(f"unknown training setting(s): {', '.join(unknown)}")
        try:
            return cls(**values)
        except TypeError as exc:  # e.g. epochs = "ten" in a config file
            raise HamverifyError(f"invalid training setting: {exc}") from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "checkpoint") -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise HamverifyError(f"{source}: unknown training setting(s) {', '.join(unknown)}")
        return cls(**values)


# ---- schedules (t = fractional epoch; knots are fractions of cfg.epochs, so they compress) ----

def _interp(t: float, knots: list[tuple[float, float]]) -> float:
    xs, ys = zip(*knots)
    return float(np.interp(t, xs, ys))


def lr_at(cfg: TrainConfig, t: float) -> float:
    """0 -> peak over the first 40 %, -> 5 % of peak at 80 %, -> 0 at the end (paper App. A)."""
    E = cfg.epochs
    return _interp(t, [(0, 0.0), (0.4 * E, cfg.lr), (0.8 * E, 0.05 * cfg.lr), (E, 0.0)])


def ramp_at(cfg: TrainConfig, t: float) -> float:
    """0 until eps_ramp_start, linear to 1 at eps_ramp_end, then 1: the progress of the eps ramp."""
    E = cfg.epochs
    a, b = cfg.eps_ramp_start * E, cfg.eps_ramp_end * E
    if b <= a:
        return float(t >= a)
    return _interp(t, [(0, 0.0), (a, 0.0), (b, 1.0), (max(E, b), 1.0)])


def eps_at(cfg: TrainConfig, t: float) -> float:
    """eps_start_ratio·eps until the ramp starts, linear to eps at its end (default eps/4 until
    10 %, eps at 35 %: 2/255 -> 8/255 on CIFAR-10)."""
    start = cfg.eps_start_ratio * cfg.eps
    return start + (cfg.eps - start) * ramp_at(cfg, t)


def kappa_at(cfg: TrainConfig, t: float) -> float:
    """Weight of the clean CE against the robust term: kappa_start -> kappa_end over the ramp."""
    return cfg.kappa_start + (cfg.kappa_end - cfg.kappa_start) * ramp_at(cfg, t)


def beta_at(cfg: TrainConfig, t: float) -> float:
    """crown-ibp: weight of the CROWN-IBP bound, beta_start -> beta_end over the ramp."""
    return cfg.beta_start + (cfg.beta_end - cfg.beta_start) * ramp_at(cfg, t)


def warmup_at(cfg: TrainConfig, t: float) -> float:
    """Weight of the warm-up regularizers: warmup_reg at the start, 0 from the ramp's end."""
    return cfg.warmup_reg * (1 - ramp_at(cfg, t))


def gamma_factor_at(cfg: TrainConfig, t: float) -> float:
    """1 until 20 %, linear to cfg.gamma_ramp at 80 %, then constant."""
    E = cfg.epochs
    return _interp(t, [(0, 1.0), (0.2 * E, 1.0), (0.8 * E, cfg.gamma_ramp), (E, cfg.gamma_ramp)])


# ---- data on the training device ----

@dataclass
class DeviceData:
    x_train: torch.Tensor   # uint8 (N, C, H, W)
    y_train: torch.Tensor
    x_eval: torch.Tensor    # float (n, C, H, W) in [0, 1]: fixed test slice
    y_eval: torch.Tensor
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None


def _uint8_nchw(x: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.array(x, copy=True)).permute(0, 3, 1, 2).contiguous().to(device)


def load_device_data(cfg: TrainConfig, device, data_dir=None) -> DeviceData:
    from .data import load_dataset
    x, y = load_dataset(cfg.dataset, "train", data_dir)
    xv = yv = None
    if cfg.val_count:
        if cfg.val_count >= len(x):
            raise HamverifyError(f"--val-count {cfg.val_count} leaves no training data")
        xv, yv = x[-cfg.val_count:], y[-cfg.val_count:]
        x, y = x[:-cfg.val_count], y[:-cfg.val_count]
    if cfg.subset:
        x, y = x[:cfg.subset], y[:cfg.subset]
    xt, yt = load_dataset(cfg.dataset, "test", data_dir)
    xt, yt = xt[:cfg.eval_count], yt[:cfg.eval_count]
    as_float = lambda a: _uint8_nchw(a, device).float() / 255  # noqa: E731
    as_label = lambda a: torch.as_tensor(np.array(a, dtype=np.int64), device=device)  # noqa: E731
    return DeviceData(_uint8_nchw(x, device), as_label(y), as_float(xt), as_label(yt),
                      None if xv is None else as_float(xv), None if yv is None else as_label(yv))


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop (zero padding `pad`) and horizontal flip, per sample, on x's device."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    off = torch.randint(0, 2 * pad + 1, (2, n), generator=generator, device=x.device)
    rows = (torch.arange(h, device=x.device)[None, :] + off[0][:, None])[:, :, None]
    cols = (torch.arange(w, device=x.device)[None, :] + off[1][:, None])[:, None, :]
    out = padded[torch.arange(n, device=x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    flip = torch.rand(n, generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


# ---- one step ----

class Collapsed(Exception):
    pass


def _acc(logits, y):
    return (logits.argmax(1) == y).float().mean()


def _dead(preacts) -> torch.Tensor:
    """True if some ReLU layer has no active unit on the whole batch (kept on device: no sync)."""
    return torch.stack([(p > 0).sum() == 0 for p in preacts]).any()


def regularized_loss(model, cfg: TrainConfig, x, y, eps: float, gfac: float, gen, t: float = 0.0
                     ) -> tuple[torch.Tensor, dict]:
    """Loss of one batch for cfg.reg and cfg.loss at fractional epoch t, and its logged terms."""
    loss, terms = _reg_loss(model, cfg, x, y, eps, gfac, gen)
    if cfg.loss == "ce":
        return loss, terms
    # κ·CE + (1 - κ)·robust: the reg branch's CE (clean, or its adversarial mix) is re-weighted.
    kappa = kappa_at(cfg, t)
    preacts: list = []
    out = robust_loss(cfg.loss, model, x, y, eps, beta=beta_at(cfg, t), sabr_lambda=cfg.sabr_lambda,
                      mtl_alpha=cfg.mtl_alpha, attack_steps=cfg.attack_steps, generator=gen,
                      preacts_out=preacts)
    loss = loss - (1 - kappa) * terms["ce"] + (1 - kappa) * out["robust"]
    terms.update(robust=out["robust"], robust_acc=out["robust_acc"], kappa=kappa)
    w = warmup_at(cfg, t)
    if w > 0:
        tight, balance = tightness_loss(preacts), relu_balance_loss(preacts)
        loss = loss + w * (tight + balance)
        terms.update(tightness=tight, relu_balance=balance)
    return loss, terms


def _reg_loss(model, cfg: TrainConfig, x, y, eps: float, gfac: float, gen) -> tuple[torch.Tensor, dict]:
    """The clean part and cfg.reg's terms (hamming | hamming-dense | rs | none)."""
    n = len(x)
    if cfg.reg in ("hamming", "hamming-dense"):
        xp, xm = sample_corners(x, eps, gen)
        batch = [x, xp, xm]
        if cfg.adv_ce:
            # Hamming + adversarial training (Madry et al.), the way Xiao et al. pair RS with it.
            batch.append(PGD(eps, steps=cfg.adv_steps, restarts=1, generator=gen)(model, x, y))
        logits, preacts = model.forward_with_preacts(torch.cat(batch))
        ce = F.cross_entropy(logits[:n], y)
        if cfg.adv_ce:
            ce = (1 - cfg.adv_ce) * ce + cfg.adv_ce * F.cross_entropy(logits[3 * n:], y)
        if cfg.corner_ce:
            ce = ce + cfg.corner_ce * F.cross_entropy(logits[n:3 * n], torch.cat([y, y]))
        if cfg.reg == "hamming-dense":
            scale = cfg.dense_scale or default_dense_scale(x, cfg.eps * cfg.train_eps_factor)
            i, j, w = dense_pairs(torch.cat([xp, xm]), n, scale, cfg.dense_min_weight)
            lh = hamming_loss_dense([p[n:3 * n] for p in preacts], i, j, w, n, cfg.alpha)
            ls = stability_loss_dense(logits[n:3 * n], i, j, w, n, cfg.stability_form)
        else:
            lh = hamming_loss([p[n:2 * n] for p in preacts], [p[2 * n:3 * n] for p in preacts], cfg.alpha)
            ls = stability_loss(logits[n:2 * n], logits[2 * n:3 * n], cfg.stability_form)
        gs, gh = cfg.gamma_s * gfac, cfg.gamma_h * gfac
        loss = ce + gs * ls + gh * lh
        return loss, {"ce": ce, "ls": ls, "lh": lh, "gs_ls": gs * ls, "gh_lh": gh * lh,
                      "acc": _acc(logits[:n], y), "dead": _dead([p[:n] for p in preacts])}
    if cfg.reg == "rs":
        x_adv = PGD(eps, steps=cfg.adv_steps, restarts=1, generator=gen)(model, x, y)
        logits, preacts = model.forward_with_preacts(x_adv)
        ce = F.cross_entropy(logits, y)
        rs = rs_loss(model, x, eps)
        l1 = l1_penalty(model)
        loss = ce + cfg.rs_weight * rs + cfg.l1 * l1
        return loss, {"ce": ce, "rs": rs, "l1": l1, "acc": _acc(logits, y), "dead": _dead(preacts)}
    logits, preacts = model.forward_with_preacts(x)
    ce = F.cross_entropy(logits, y)
    return ce, {"ce": ce, "acc": _acc(logits, y), "dead": _dead(preacts)}


# ---- evaluation ----

@torch.no_grad()
def _accuracy(model, x, y, batch=1000) -> float:
    return float(sum((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
                     for i in range(0, len(x), batch)) / max(len(x), 1))


def robust_accuracy(model, x, y, eps, steps=20, restarts=10, seed=0, batch=1000) -> float:
    gen = torch.Generator(device=x.device).manual_seed(seed)
    attack = PGD(eps, steps=steps, restarts=restarts, generator=gen)
    hits = sum(attack.robust_mask(model, x[i:i + batch], y[i:i + batch]).sum().item()
               for i in range(0, len(x), batch))
    return float(hits / max(len(x), 1))


@torch.no_grad()
def output_degeneracy(model, x) -> tuple[bool, int]:
    """(logits constant over x, number of classes predicted over x), from one forward pass."""
    logits = model(x[:256])
    return bool((logits.std(dim=0).max() < 1e-6).item()), int(logits.argmax(1).unique().numel())


@torch.no_grad()
def certified_accuracy(model, x, y, eps, batch=500) -> float:
    """Share of x whose margins are all proven > 0 over B(x) by the better of IBP and CROWN-IBP
    (sound bounds; a cheap lower estimate of what the exact verifier proves)."""
    hits = 0
    for i in range(0, len(x), batch):
        xb, yb = x[i:i + batch], y[i:i + batch]
        lo, hi = box(xb, eps)
        preacts: list = []
        m_ibp = certified_margin_lower(model, lo, hi, yb, 0.0, preacts)
        m = torch.max(m_ibp, crown_margin_lower(model, lo, hi, yb, preacts))
        m[torch.arange(len(yb)), yb] = float("inf")
        hits += int((m.min(1).values > 0).sum())
    return hits / max(len(x), 1)


def _unstable_ia(model, cfg: TrainConfig, x) -> list[float]:
    """Unstable ReLUs per layer under interval bounds; [] for a training-only arch (no IA form)."""
    return [] if cfg.arch in TRAINING_ONLY_ARCHITECTURES else unstable_counts_ia(model, x, cfg.eps)


def evaluate_epoch(model, cfg: TrainConfig, data: DeviceData, epoch: int) -> dict:
    model.eval()
    constant, pred_classes = output_degeneracy(model, data.x_eval)
    out = {"test_clean": _accuracy(model, data.x_eval, data.y_eval),
           "test_pgd": robust_accuracy(model, data.x_eval, data.y_eval, cfg.eps, cfg.eval_pgd_steps,
                                       cfg.eval_pgd_restarts, seed=cfg.seed * 7919 + epoch),
           "unstable_ia": _unstable_ia(model, cfg, data.x_eval[:200]),
           "constant": constant, "pred_classes": pred_classes}
    if cfg.loss != "ce" or cfg.select == "best-val-cert":
        out["test_cert"] = certified_accuracy(model, data.x_eval, data.y_eval, cfg.eps)
    if data.x_val is not None:
        if cfg.select == "best-val-cert":
            out["val_cert"] = certified_accuracy(model, data.x_val, data.y_val, cfg.eps)
        out["val_clean"] = _accuracy(model, data.x_val, data.y_val)
        out["val_pgd"] = robust_accuracy(model, data.x_val, data.y_val, cfg.eps, cfg.eval_pgd_steps,
                                         cfg.eval_pgd_restarts, seed=cfg.seed * 7919 + epoch + 1)
    model.train()
    return out


# ---- the loop ----

def _make_optimizer(model, cfg: TrainConfig):
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.0, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=0.0, weight_decay=cfg.weight_decay)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise HamverifyError("--device cuda requested but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise HamverifyError(f"unknown device {name!r} (auto|cpu|cuda)")
    return torch.device(name)


@dataclass
class RunState:
    epoch: int = 0                  # next epoch to run
    gamma_scale: float = 1.0        # halved at every rollback
    rollbacks: int = 0
    best_metric: float = -1.0
    best_epoch: int | None = None
    history: list = field(default_factory=list)


def _epoch_generator(cfg, state, device) -> torch.Generator:
    # Seeded from (seed, epoch, rollbacks) so that --resume replays an epoch bit for bit.
    return torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + state.epoch * 101 + state.rollbacks)


def _progress(iterable, total, desc, enabled):
    # A bar only on a terminal: in a log file tqdm's redraws pile up into one endless line, and
    # the per-epoch summary line is printed either way.
    if not enabled or not sys.stderr.isatty():
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)


def _save(path, model, cfg, state, metrics, optimizer=None):
    extra = {"run_state": dataclasses.asdict(state)}
    if optimizer is not None:
        extra["optimizer_state"] = optimizer.state_dict()
    save_checkpoint(path, model, arch=cfg.arch, dataset=cfg.dataset, config=cfg.to_dict(),
                    eps=cfg.eps, metrics=metrics, extra=extra)


def train(cfg: TrainConfig, out_dir, device="auto", data_dir=None, resume=None,
          progress: bool = True, log=print) -> dict:
    """Run the schedule; writes out_dir/{last,best,model}.pt and out_dir/log.jsonl. Returns final metrics."""
    device = resolve_device(device)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = initialize(build_model(cfg.arch, cfg.dataset), cfg.init).to(device)
    optimizer = _make_optimizer(model, cfg)
    state = RunState()
    if resume:
        payload = read_checkpoint(resume)
        if "run_state" not in payload or "optimizer_state" not in payload:
            raise HamverifyError(f"{resume}: not a resumable checkpoint (use the run's last.pt)")
        cfg = TrainConfig.from_dict(payload["config"], str(resume))
        model = build_model(cfg.arch, cfg.dataset).to(device)
        model.load_state_dict(payload["state_dict"])
        optimizer = _make_optimizer(model, cfg)
        optimizer.load_state_dict(payload["optimizer_state"])
        state = RunState(**payload["run_state"])
        log(f"resuming {resume} at epoch {state.epoch}/{cfg.epochs}")
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    data = load_device_data(cfg, device, data_dir)
    n_train = len(data.x_train)
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    log_path = out / "log.jsonl"
    if not resume and log_path.exists():
        log_path.unlink()

    def write_log(row):
        with open(log_path, "a") as f:
            f.write(json.dumps(row) + "\n")

    if state.epoch == 0 and cfg.reg in ("hamming", "hamming-dense") and not resume:
        # docs/METHOD.md §3: the two regularizers' size at initialization, before any step.
        gen = torch.Generator(device=device).manual_seed(cfg.seed)
        xb = data.x_train[:cfg.batch_size].float() / 255
        with torch.no_grad():
            _, terms = regularized_loss(model, cfg, xb, data.y_train[:cfg.batch_size], eps_at(cfg, 0), 1.0, gen)
        row = {"epoch": "init", **{k: float(terms[k]) for k in ("ce", "gs_ls", "gh_lh")}}
        write_log(row)
        log(f"at initialization: CE {terms['ce']:.4f}  γ_S·L_S {terms['gs_ls']:.3e}  γ_H·L_H {terms['gh_lh']:.3e}")

    last_good = None
    t_start = time.time()
    n_classes = int(data.y_train.max()) + 1
    while state.epoch < cfg.epochs:
        if last_good is None:
            last_good = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()))
        epoch = state.epoch
        gen = _epoch_generator(cfg, state, device)
        perm = torch.randperm(n_train, generator=gen, device=device)
        model.train()
        sums: dict = {}
        dead_seen = None
        collapsed_reason = None
        t0 = time.time()
        bar = _progress(range(steps_per_epoch), steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", progress)
        for step in bar:
            t = epoch + step / steps_per_epoch
            lr, gfac = lr_at(cfg, t), gamma_factor_at(cfg, t) * state.gamma_scale
            eps = eps_at(cfg, t) * cfg.train_eps_factor
            for g in optimizer.param_groups:
                g["lr"] = lr
            idx = perm[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            xb = data.x_train[idx].float() / 255
            if cfg.augment:
                xb = augment_batch(xb, gen)
            loss, terms = regularized_loss(model, cfg, xb, data.y_train[idx], eps, gfac, gen, t)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            dead = terms.pop("dead")
            dead_seen = dead if dead_seen is None else dead_seen | dead
            for k, v in terms.items():
                v = v.detach() if torch.is_tensor(v) else v
                sums[k] = sums[k] + v if k in sums else v
            # Read device values only every 20 steps: a sync per step would starve a GPU.
            if step % 20 == 19 or step == steps_per_epoch - 1:
                if bool(dead_seen):
                    collapsed_reason = "a ReLU layer had no active unit on a whole batch"
                elif not all(math.isfinite(float(v)) for v in sums.values()):
                    collapsed_reason = "the loss became non-finite"
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix({k: f"{float(sums[k]) / (step + 1):.3g}"
                                     for k in ("ce", "robust", "ls", "lh", "rs") if k in sums})
                if collapsed_reason:
                    break
        means = {k: float(v) / (step + 1) for k, v in sums.items()}
        metrics = evaluate_epoch(model, cfg, data, epoch)
        if metrics.pop("constant"):
            collapsed_reason = collapsed_reason or "the network outputs the same logits for every input"
        # Logits that still move but always pick one class are the same collapse in practice (measured
        # on MNIST at eps 0.3: CE stuck at ln 10 for 60 epochs). Only after the network had learned
        # (twice chance accuracy): early or tiny runs can pass through a one-class phase.
        if metrics["pred_classes"] == 1 and any(h.get("pred_classes", 0) > 1 and h["test_clean"] >= 2 / n_classes
                                                for h in state.history):
            collapsed_reason = collapsed_reason or "the network predicts one class for every input"
        gs_now = cfg.gamma_s * gamma_factor_at(cfg, epoch + 1) * state.gamma_scale
        gh_now = cfg.gamma_h * gamma_factor_at(cfg, epoch + 1) * state.gamma_scale
        row = {"epoch": epoch + 1, "lr": lr_at(cfg, epoch + 1), "eps": eps_at(cfg, epoch + 1),
               "gamma_s": gs_now, "gamma_h": gh_now, **means, **metrics,
               "epoch_time": time.time() - t0, "collapsed": collapsed_reason}
        write_log(row)
        if collapsed_reason:
            msg = (f"training collapsed at epoch {epoch + 1} ({collapsed_reason}; γ_S={gs_now:.3g}, "
                   f"γ_H={gh_now:.3g}, lr={lr_at(cfg, epoch + 1):.3g})")
            if cfg.collapse_policy == "rollback" and state.rollbacks < cfg.max_rollbacks:
                model.load_state_dict(last_good[0])
                # load_state_dict keeps the given tensors (no copy): hand it a copy, or the retried
                # epoch's in-place updates would corrupt the snapshot for the next rollback.
                optimizer.load_state_dict(copy.deepcopy(last_good[1]))
                state.rollbacks += 1
                state.gamma_scale *= 0.5
                log(f"{msg}: rolled back to epoch {epoch}, γ scale now {state.gamma_scale:g}")
                continue
            kept = (f"last good checkpoint: {out / 'last.pt'} (epoch {state.epoch})" if state.epoch
                    else "no epoch completed before the collapse, so no checkpoint was kept")
            raise HamverifyError(f"{msg}; {kept}")
        state.epoch += 1
        state.history.append({k: row[k] for k in ("epoch", "test_clean", "test_pgd", "pred_classes") if k in row})
        summary = {k: row[k] for k in ("test_clean", "test_pgd", "test_cert", "val_clean", "val_pgd", "val_cert",
                                       "unstable_ia") if k in row}
        log(f"epoch {epoch + 1}/{cfg.epochs}: " + "  ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in {**means, **summary}.items()
            if k not in ("unstable_ia",)) + f"  unstable_ia {[round(u, 1) for u in row['unstable_ia']]}"
            + f"  ({row['epoch_time']:.1f}s)")
        metric = {"best-val": "val_pgd", "best-val-cert": "val_cert"}.get(cfg.select)
        if metric and row[metric] > state.best_metric:
            state.best_metric, state.best_epoch = row[metric], epoch + 1
            _save(out / "best.pt", model, cfg, state, summary)
        _save(out / "last.pt", model, cfg, state, summary, optimizer)
        last_good = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()))

    final_src = out / ("best.pt" if cfg.select != "last" and (out / "best.pt").exists() else "last.pt")
    final_model, _ = load_checkpoint(final_src)
    final_model.to(device)
    final = {"clean": _accuracy(final_model, data.x_eval, data.y_eval),
             "pgd": robust_accuracy(final_model, data.x_eval, data.y_eval, cfg.eps, 20, 10, seed=cfg.seed),
             "unstable_ia": _unstable_ia(final_model, cfg, data.x_eval[:200]),
             **({"cert": certified_accuracy(final_model, data.x_eval, data.y_eval, cfg.eps)}
                if cfg.loss != "ce" or cfg.select == "best-val-cert" else {}),
             "eval_count": len(data.x_eval), "selected_epoch": state.best_epoch or state.epoch,
             "rollbacks": state.rollbacks, "train_seconds": time.time() - t_start,
             "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device)}
    _save(out / "model.pt", final_model, cfg, state, final)
    write_log({"epoch": "final", **final})
    return final
