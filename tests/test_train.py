"""Training (docs/METHOD.md §4): schedules, config precedence, recipes, collapse guard, rollback, resume, smoke runs."""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import pathlib

import pytest
import torch

import hamverify.train as T
from hamverify import HamverifyError
from hamverify.models import load_checkpoint, read_checkpoint, save_checkpoint, build_model
from hamverify.recipes import DEFAULT_RECIPE, RECIPES
from hamverify.train import TrainConfig, eps_at, gamma_factor_at, lr_at, train

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]




@pytest.fixture
def data_root(monkeypatch):
    env = os.environ.get("HAMVERIFY_DATA")
    root = pathlib.Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    if not (root / "cifar10").is_dir() or not (root / "mnist").is_dir():
        pytest.skip(f"shared data not found at {root}")
    monkeypatch.setenv("HAMVERIFY_DATA", str(root))
    return root


def _quiet(*_args):
    pass


def _small(**kw) -> dict:
    """Settings that make a run take a fraction of a second on one CPU core."""
    base = dict(epochs=1, subset=128, batch_size=64, eval_count=16, eval_pgd_steps=2, eval_pgd_restarts=1,
                adv_steps=2)
    base.update(kw)
    return base


def _log_rows(out) -> list[dict]:
    return [json.loads(line) for line in (pathlib.Path(out) / "log.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------------ schedules


@pytest.mark.parametrize("epochs", [100, 10, 20, 7])
def test_schedules_hit_their_knots(epochs):
    cfg = TrainConfig(epochs=epochs, lr=1e-3, eps=8 / 255)
    E, peak, eps = epochs, 1e-3, 8 / 255
    at = lambda f: f * E  # noqa: E731  (a fraction of the run, in epochs)
    for t, want in [(0, 0.0), (at(0.4), peak), (at(0.8), 0.05 * peak), (E, 0.0), (at(0.2), peak / 2),
                    (at(0.6), (peak + 0.05 * peak) / 2), (at(0.9), 0.025 * peak)]:
        assert lr_at(cfg, t) == pytest.approx(want, rel=1e-9, abs=1e-15), (E, t)
    for t, want in [(0, eps / 4), (at(0.1), eps / 4), (at(0.35), eps), (E, eps), (at(0.05), eps / 4),
                    (at(0.225), eps / 4 + 0.5 * (eps - eps / 4)), (at(0.6), eps)]:
        assert eps_at(cfg, t) == pytest.approx(want, rel=1e-9), (E, t)
    for t, want in [(0, 1.0), (at(0.2), 1.0), (at(0.8), 10.0), (E, 10.0), (at(0.1), 1.0), (at(0.5), 5.5), (at(0.9), 10.0)]:
        assert gamma_factor_at(cfg, t) == pytest.approx(want, rel=1e-9), (E, t)


def test_schedule_values_of_the_100_epoch_run():
    cfg = TrainConfig()  # the CIFAR-10 defaults: 100 epochs, Adam 1e-3, 8/255
    assert (lr_at(cfg, 0), lr_at(cfg, 40), lr_at(cfg, 80), lr_at(cfg, 100)) == pytest.approx((0, 1e-3, 5e-5, 0))
    assert (eps_at(cfg, 0), eps_at(cfg, 10), eps_at(cfg, 35), eps_at(cfg, 100)) == pytest.approx(
        (2 / 255, 2 / 255, 8 / 255, 8 / 255))
    assert [gamma_factor_at(cfg, t) for t in (0, 20, 80, 100)] == pytest.approx([1, 1, 10, 10])
    ten = TrainConfig(epochs=10)
    assert [lr_at(ten, t) for t in (0, 4, 8, 10)] == pytest.approx([0, 1e-3, 5e-5, 0])
    assert [eps_at(ten, t) for t in (0, 1, 3.5, 10)] == pytest.approx([2 / 255, 2 / 255, 8 / 255, 8 / 255])
    assert [gamma_factor_at(ten, t) for t in (0, 2, 8, 10)] == pytest.approx([1, 1, 10, 10])
    # Monotone pieces: lr rises then falls, eps and γ never fall.
    ts = [i / 10 for i in range(0, 1001)]
    lrs, epss, gs = ([f(cfg, t) for t in ts] for f in (lr_at, eps_at, gamma_factor_at))
    assert all(a <= b for a, b in zip(lrs[:401], lrs[1:401]))
    assert all(a >= b for a, b in zip(lrs[400:], lrs[401:]))
    assert all(a <= b for a, b in zip(epss, epss[1:])) and all(a <= b for a, b in zip(gs, gs[1:]))
    # The γ cap and the MNIST eps scale the same shape.
    assert gamma_factor_at(TrainConfig(gamma_ramp=3.0), 100) == 3.0
    mnist = TrainConfig(dataset="mnist", eps=0.3)
    assert mnist.arch == "mnist_small" and not mnist.augment
    assert (eps_at(mnist, 0), eps_at(mnist, 35)) == pytest.approx((0.075, 0.3))
    # After the end the schedules hold their last value.
    assert lr_at(cfg, 120) == 0 and eps_at(cfg, 120) == pytest.approx(8 / 255)


# ------------------------------------------------------------------------------------------------ config


def test_defaults_are_method_md():
    cfg = TrainConfig()
    assert (cfg.dataset, cfg.arch, cfg.recipe, cfg.epochs, cfg.batch_size) == ("cifar10", "cifar_small", "paper-adam", 100, 128)
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.reg) == ("adam", 1e-3, 0.0, "hamming")
    assert (cfg.gamma_s, cfg.gamma_h, cfg.alpha, cfg.gamma_ramp) == (0.4, 9000.0, 8.0, 10.0)
    assert cfg.eps == 8 / 255 and cfg.eps_start_ratio * cfg.eps == pytest.approx(2 / 255)
    assert cfg.stability_form == "softmax-mean" and cfg.augment is True
    assert RECIPES["paper-adam"] == {}


def test_train_small_default_is_the_measured_winner():
    cfg = TrainConfig.from_sources()
    assert cfg.recipe == DEFAULT_RECIPE == "ibp"
    assert (cfg.loss, cfg.reg, cfg.init, cfg.epochs) == ("ibp", "none", "ibp", 30)
    assert (cfg.collapse_policy, cfg.select, cfg.val_count) == ("rollback", "best-val-cert", 1000)
    hv = TrainConfig.from_sources(recipe="ibp-hv")  # the Hamming terms beside it, one flag away
    assert (hv.loss, hv.reg, hv.epochs, hv.select) == ("ibp", "hamming", 30, "best-val-cert")
    assert (hv.stability_form, hv.gamma_s, hv.gamma_h, hv.gamma_ramp) == ("logits-mean", 8.0, 3000.0, 1.0)


def test_from_sources_precedence():
    assert TrainConfig.from_sources(recipe="ibp-hv").gamma_h == 3000.0                             # recipe
    assert TrainConfig.from_sources(recipe="gh900").gamma_h == 900.0                                # < recipe
    assert TrainConfig.from_sources(recipe="gh900", file_values={"gamma_h": 1234.0}).gamma_h == 1234.0  # < file
    cfg = TrainConfig.from_sources(recipe="gh900", file_values={"gamma_h": 1234.0, "epochs": 7},
                                   cli_values={"gamma_h": 5.0, "epochs": None, "lr": None})        # < CLI
    assert cfg.gamma_h == 5.0 and cfg.epochs == 7 and cfg.lr == 1e-3  # None flags do not override
    # The recipe can be named by any layer; the CLI's wins, then the file's, then the argument.
    assert TrainConfig.from_sources(recipe="gh900", file_values={"recipe": "gh3000"}).gamma_h == 3000.0
    cfg = TrainConfig.from_sources(recipe="gh900", file_values={"recipe": "gh3000"}, cli_values={"recipe": "rs"})
    assert cfg.recipe == "rs" and cfg.reg == "rs" and cfg.gamma_h == 9000.0
    # A recipe's other settings survive an override of one of them.
    cfg = TrainConfig.from_sources(recipe="hv", cli_values={"val_count": 10})
    assert (cfg.stability_form, cfg.collapse_policy, cfg.select, cfg.val_count) == ("logits-mean", "rollback", "best-val", 10)


def test_sgd_option_brings_the_paper_settings():
    for source in ("cli_values", "file_values"):
        cfg = TrainConfig.from_sources(**{source: {"optimizer": "sgd"}})
        assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum) == ("sgd", 0.1, 5e-4, 0.9), source
        cfg = TrainConfig.from_sources(**{source: {"optimizer": "sgd", "lr": 0.01, "weight_decay": 0.0}})
        assert (cfg.lr, cfg.weight_decay) == (0.01, 0.0), source
    cfg = TrainConfig.from_sources(file_values={"optimizer": "sgd"}, cli_values={"optimizer": "adam"})
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay) == ("adam", TrainConfig.from_sources().lr, 0.0)
    cfg = TrainConfig.from_sources(recipe="paper-sgd")
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay) == ("sgd", 0.1, 5e-4)


@pytest.mark.parametrize("kw,needle", [({"optimizer": "rmsprop"}, "optimizer"), ({"reg": "l2"}, "reg"),
                                       ({"stability_form": "x"}, "stability"), ({"collapse_policy": "x"}, "collapse"),
                                       ({"select": "best"}, "select"), ({"epochs": 0}, "epochs"),
                                       ({"batch_size": 0}, "batch"), ({"lr": 0.0}, "lr"), ({"subset": 0}, "subset"),
                                       ({"select": "best-val", "val_count": 0}, "val-count"), ({"eps": 1.5}, "eps"),
                                       ({"bogus": 1}, "bogus"), ({"adv_ce": 2.0}, "adv_ce"), ({"recipe": "nope"}, "unknown recipe")])
def test_invalid_settings(kw, needle):
    with pytest.raises(HamverifyError) as err:
        TrainConfig.from_sources(cli_values=kw)
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_round_trips_through_a_checkpoint(name, tmp_path):
    cfg = TrainConfig.from_sources(recipe=name)
    assert cfg.recipe == name
    for k, v in RECIPES[name].items():
        assert getattr(cfg, k) == v
    path = tmp_path / "c.pt"
    save_checkpoint(path, build_model("tiny_mlp", "mnist"), arch="tiny_mlp", dataset="mnist",
                    config=cfg.to_dict(), eps=cfg.eps)
    stored = read_checkpoint(path)["config"]
    assert TrainConfig(**stored) == cfg
    if hasattr(TrainConfig, "from_dict"):  # what --resume uses
        assert TrainConfig.from_dict(stored) == cfg
    assert json.loads(json.dumps(cfg.to_dict())) == cfg.to_dict()  # config.json is lossless


def test_adv_ce_takes_the_ce_on_a_pgd_point():
    torch.manual_seed(0)
    model = build_model("tiny_mlp", "mnist")
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    terms = {}
    for share in (0.0, 1.0):
        cfg = TrainConfig.from_sources(recipe="hv-gs8-gh3000",  # the Hamming recipe: the corners' term is compared
                                       cli_values={"dataset": "mnist", "arch": "tiny_mlp", "eps": 0.3,
                                                   "adv_ce": share, "adv_steps": 5})
        with torch.no_grad():  # the initial terms are logged under no_grad: PGD must still work there
            _, terms[share] = T.regularized_loss(model, cfg, x, y, 0.3, 1.0, torch.Generator().manual_seed(1))
    assert terms[1.0]["ce"] > terms[0.0]["ce"] + 1e-3  # the attack raised the loss it is trained on
    assert terms[1.0]["lh"] == pytest.approx(float(terms[0.0]["lh"]))  # same corners, same Hamming term


# ------------------------------------------------------------------------------------------------ smoke runs


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_one_epoch(name, data_root, tmp_path):
    cli = _small(subset=256, batch_size=128)  # the recipes' own batch size: 2 steps
    if RECIPES[name].get("select", "").startswith("best-val"):
        cli["val_count"] = 16
    cfg = TrainConfig.from_sources(recipe=name, cli_values=cli)
    lines: list[str] = []
    final = train(cfg, tmp_path, device="cpu", progress=False, log=lines.append)
    model, meta = load_checkpoint(tmp_path / "model.pt")
    assert meta["config"] == cfg.to_dict() and meta["eps"] == cfg.eps and meta["arch"] == "cifar_small"
    assert meta["metrics"]["clean"] == final["clean"] and final["pgd"] <= final["clean"]
    assert final["eval_count"] == 16 and final["rollbacks"] == 0 and final["selected_epoch"] == 1
    assert len(final["unstable_ia"]) == 3
    assert (tmp_path / "last.pt").is_file()
    assert (tmp_path / "best.pt").is_file() == (cfg.select != "last")
    assert json.loads((tmp_path / "config.json").read_text()) == cfg.to_dict()
    rows = _log_rows(tmp_path)
    assert [r["epoch"] for r in rows] == (["init"] if cfg.reg == "hamming" else []) + [1, "final"]
    epoch_row = rows[-2]
    assert epoch_row["collapsed"] is None
    assert 0 <= epoch_row["test_pgd"] <= epoch_row["test_clean"] <= 1
    assert ("val_pgd" in epoch_row) == (cfg.val_count > 0)
    if cfg.reg == "hamming" and cfg.eps_start_ratio > 0:  # at eps 0 the two corners coincide
        init = rows[0]
        # logged at initialization (docs/METHOD.md §3); the ablation recipes switch one term off
        assert init["gs_ls"] >= 0 and (init["gh_lh"] > 0 if cfg.gamma_h > 0 else init["gh_lh"] == 0)
        assert {"ce", "ls", "lh", "gs_ls", "gh_lh", "acc"} <= set(epoch_row)
        assert epoch_row["gamma_h"] == pytest.approx(cfg.gamma_h * cfg.gamma_ramp)  # end of a 1-epoch schedule
    elif cfg.reg == "rs":
        assert {"ce", "rs", "l1"} <= set(epoch_row)


# ------------------------------------------------------------------------------------------------ collapse guard


def test_collapse_guard_fires(data_root, tmp_path):
    cfg = TrainConfig.from_sources(recipe="paper-adam", cli_values=_small(subset=256, batch_size=32, optimizer="sgd", lr=5.0, gamma_h=1e6))
    with pytest.raises(HamverifyError) as err:
        train(cfg, tmp_path, device="cpu", progress=False, log=_quiet)
    msg = str(err.value)
    assert "collapsed" in msg and "epoch 1" in msg and "γ_H=" in msg and "γ_S=" in msg and "lr=" in msg
    assert "\n" not in msg
    assert not (tmp_path / "model.pt").exists() and not (tmp_path / "last.pt").exists()
    row = _log_rows(tmp_path)[-1]
    assert row["epoch"] == 1 and row["collapsed"]


def _fake_collapse(monkeypatch, at_calls):
    """Make evaluate_epoch report a constant network on the given calls (0-based); returns the call log."""
    real = T.evaluate_epoch
    calls: list[int] = []

    def fake(model, cfg, data, epoch):
        out = real(model, cfg, data, epoch)
        if len(calls) in at_calls:
            out["constant"] = True
        calls.append(epoch)
        return out

    monkeypatch.setattr(T, "evaluate_epoch", fake)
    return calls


def test_collapse_after_a_good_epoch_keeps_last_good(data_root, tmp_path, monkeypatch):
    _fake_collapse(monkeypatch, {1})
    cfg = TrainConfig.from_sources(recipe="paper-adam", cli_values=_small(epochs=3, reg="none"))
    with pytest.raises(HamverifyError) as err:
        train(cfg, tmp_path, device="cpu", progress=False, log=_quiet)
    assert "collapsed at epoch 2" in str(err.value) and "last.pt (epoch 1)" in str(err.value)
    assert not (tmp_path / "model.pt").exists()  # never saved as final
    assert read_checkpoint(tmp_path / "last.pt")["run_state"]["epoch"] == 1


def test_a_one_class_network_after_a_good_epoch_is_a_collapse(data_root, tmp_path, monkeypatch):
    real = T.evaluate_epoch

    def fake(model, cfg, data, epoch):
        out = real(model, cfg, data, epoch)
        out["pred_classes"] = 1 if epoch == 1 else 3
        out["test_clean"] = 0.1 if epoch == 1 else 0.5  # learned, then degenerated
        return out

    monkeypatch.setattr(T, "evaluate_epoch", fake)
    cfg = TrainConfig.from_sources(recipe="paper-adam", cli_values=_small(epochs=3, reg="none"))
    with pytest.raises(HamverifyError, match="collapsed at epoch 2 .the network predicts one class"):
        train(cfg, tmp_path, device="cpu", progress=False, log=_quiet)


def test_a_one_class_network_at_the_start_is_not_a_collapse(data_root, tmp_path, monkeypatch):
    real = T.evaluate_epoch

    def fake(model, cfg, data, epoch):
        out = real(model, cfg, data, epoch)
        out["pred_classes"] = 1 if epoch == 0 else 3
        return out

    monkeypatch.setattr(T, "evaluate_epoch", fake)
    cfg = TrainConfig.from_sources(recipe="paper-adam", cli_values=_small(epochs=2, reg="none"))
    train(cfg, tmp_path, device="cpu", progress=False, log=_quiet)
    assert [r["collapsed"] for r in _log_rows(tmp_path) if isinstance(r["epoch"], int)] == [None, None]


def test_no_false_alarm_on_a_normal_run(data_root, tmp_path):
    cfg = TrainConfig.from_sources(recipe="paper-adam", cli_values=_small(epochs=2, dataset="mnist", subset=256, batch_size=32))
    train(cfg, tmp_path, device="cpu", progress=False, log=_quiet)
    assert [r["collapsed"] for r in _log_rows(tmp_path) if isinstance(r["epoch"], int)] == [None, None]
    model, _ = load_checkpoint(tmp_path / "model.pt")
    constant, _ = T.output_degeneracy(model, torch.rand(64, 1, 28, 28))
    assert not constant


def test_rollback_restores_and_halves_gamma(data_root, tmp_path, monkeypatch):
    """Epoch 2 'collapses' twice: each time the run restores epoch 1's weights and optimizer state, halves γ."""
    calls = _fake_collapse(monkeypatch, {1, 2})
    optimizers = []
    real_make = T._make_optimizer
    monkeypatch.setattr(T, "_make_optimizer", lambda m, c: optimizers.append(real_make(m, c)) or optimizers[-1])
    starts = []  # (model state, optimizer state) at the first step of every epoch attempt
    real_loss = T.regularized_loss
    steps_per_epoch = 2

    def loss_spy(model, cfg, x, y, eps, gfac, gen, t=0.0):
        if torch.is_grad_enabled():
            if loss_spy.n % steps_per_epoch == 0:
                starts.append((copy.deepcopy(model.state_dict()), copy.deepcopy(optimizers[-1].state_dict())))
            loss_spy.n += 1
        return real_loss(model, cfg, x, y, eps, gfac, gen, t)
    loss_spy.n = 0
    monkeypatch.setattr(T, "regularized_loss", loss_spy)

    cfg = TrainConfig.from_sources(recipe="rollback", cli_values=_small(epochs=3))
    assert cfg.collapse_policy == "rollback"
    final = train(cfg, tmp_path, device="cpu", progress=False, log=_quiet)
    assert calls == [0, 1, 1, 1, 2]
    assert final["rollbacks"] == 2
    rows = [r for r in _log_rows(tmp_path) if isinstance(r["epoch"], int)]
    assert [(r["epoch"], bool(r["collapsed"])) for r in rows] == [(1, False), (2, True), (2, True), (2, False), (3, False)]
    g2 = cfg.gamma_h * gamma_factor_at(cfg, 2)
    assert [r["gamma_h"] for r in rows[1:4]] == pytest.approx([g2, g2 / 2, g2 / 4])
    assert rows[4]["gamma_h"] == pytest.approx(cfg.gamma_h * gamma_factor_at(cfg, 3) / 4)
    assert read_checkpoint(tmp_path / "model.pt")["run_state"]["gamma_scale"] == 0.25
    # Attempts 1, 2 and 3 of epoch 2 all start from the end of epoch 1: weights and Adam moments.
    assert len(starts) == 5
    for model_sd, opt_sd in starts[2:4]:
        for k, v in starts[1][0].items():
            assert torch.equal(v, model_sd[k])
        for pid, st in starts[1][1]["state"].items():
            for k, v in st.items():
                assert torch.equal(v, opt_sd["state"][pid][k]), (pid, k)
    assert not torch.equal(starts[1][0]["1.weight"], starts[4][0]["1.weight"])  # the third attempt did train


def test_rollback_gives_up_after_max_rollbacks(data_root, tmp_path, monkeypatch):
    _fake_collapse(monkeypatch, set(range(100)))
    cfg = TrainConfig.from_sources(recipe="rollback", cli_values=_small(epochs=2, reg="none"))
    cfg.max_rollbacks = 2
    with pytest.raises(HamverifyError, match="collapsed at epoch 1"):
        train(cfg, tmp_path, device="cpu", progress=False, log=_quiet)
    rows = [r for r in _log_rows(tmp_path) if isinstance(r["epoch"], int)]
    assert len(rows) == 3 and all(r["collapsed"] for r in rows)


# ------------------------------------------------------------------------------------------------ resume


def test_resume_gives_identical_weights(data_root, tmp_path, monkeypatch):
    settings = _small(epochs=2, subset=128, batch_size=32, eval_count=8)  # CIFAR-10: augmentation on
    cfg = TrainConfig.from_sources(recipe="ibp-hv", cli_values=settings)  # corners: the RNG state matters
    assert cfg.augment and cfg.reg == "hamming"
    full = tmp_path / "full"
    train(cfg, full, device="cpu", progress=False, log=_quiet)

    # The same run, interrupted during epoch 2 (after epoch 1's last.pt was written) ...
    real = T.evaluate_epoch

    def interrupt(model, cfg_, data, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return real(model, cfg_, data, epoch)

    part = tmp_path / "part"
    monkeypatch.setattr(T, "evaluate_epoch", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig.from_sources(recipe="ibp-hv", cli_values=settings), part, device="cpu", progress=False,
              log=_quiet)
    monkeypatch.setattr(T, "evaluate_epoch", real)
    assert read_checkpoint(part / "last.pt")["run_state"]["epoch"] == 1
    assert not (part / "model.pt").exists()

    # ... and resumed: the config comes from the checkpoint, whatever is passed in.
    lines: list[str] = []
    other = TrainConfig.from_sources(cli_values={"epochs": 50, "lr": 0.5})
    final = train(other, part, device="cpu", resume=part / "last.pt", progress=False, log=lines.append)
    assert any("resuming" in l for l in lines)
    a, b = read_checkpoint(full / "last.pt"), read_checkpoint(part / "last.pt")
    assert a["config"] == b["config"] == cfg.to_dict()
    assert a["run_state"] == b["run_state"] and a["run_state"]["epoch"] == 2
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    for pid, st in a["optimizer_state"]["state"].items():
        for k, v in st.items():
            assert torch.equal(v, b["optimizer_state"]["state"][pid][k])
    assert final["clean"] == read_checkpoint(full / "model.pt")["metrics"]["clean"]
    rows = _log_rows(part)
    assert [r["epoch"] for r in rows] == ["init", 1, 2, "final"]  # the log continues, not restarts


def test_resume_needs_last_pt(data_root, tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, build_model("cifar_small", "cifar10"), arch="cifar_small", dataset="cifar10",
                    config=TrainConfig().to_dict())
    with pytest.raises(HamverifyError, match="not a resumable checkpoint"):
        train(TrainConfig(), tmp_path / "out", device="cpu", resume=path, progress=False, log=_quiet)
    with pytest.raises(HamverifyError, match="not found"):
        train(TrainConfig(), tmp_path / "out", device="cpu", resume=tmp_path / "nope.pt", progress=False, log=_quiet)


def test_augment_batch_is_crop_and_flip():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 32, 32, generator=g)
    out = T.augment_batch(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    assert torch.equal(out, T.augment_batch(x, torch.Generator().manual_seed(1)))
    # Every output is a (possibly flipped) shifted copy: its nonzero pixels are pixels of the input image.
    for i in range(8):
        vals = set(out[i].flatten().tolist()) - {0.0}
        assert vals <= set(x[i].flatten().tolist())
    assert not torch.equal(out, x)


def test_resolve_device():
    assert T.resolve_device("cpu").type == "cpu"
    assert T.resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(HamverifyError):
        T.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(HamverifyError, match="no CUDA"):
            T.resolve_device("cuda")


def test_dataclass_fields_all_serializable():
    cfg = TrainConfig()
    assert set(cfg.to_dict()) == {f.name for f in dataclasses.fields(TrainConfig)}
