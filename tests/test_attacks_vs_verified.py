"""No attack beats a verified input (issue 15): a tiny MNIST net, its first test images verified
exactly at l_inf eps 0.05 (hamverify.verify.Verifier, the code behind `hamverify verify`), then
every attack whose threat model lies inside that l_inf ball run on them -- l_inf PGD (the paper's
20 x 10, as `hamverify attack --attack pgd` and `hamverify evaluate` run it), l_2 PGD at radius
eps (the l_2 ball of radius eps lies inside the l_inf ball of radius eps), AutoAttack l_inf and
l_2 (skipped without torchattacks) and the verifier's own margin attack (MarginPGD).  Each point
must lie in its ball and be classified correctly.  The perceptual attacks (StAdv, JPEG, ReColor,
PPGD, LPA) are left out: their sets are not inside an l_inf pixel ball, so a proof at eps says
nothing about them.  So that the check is not vacuous, the l_inf attacks must break some of the
inputs the verifier falsified.  To keep the test fast, AutoAttack runs 10 iterations per
component (torchattacks' default) and its Square component SQUARE_QUERIES queries instead of 5000
(on inputs that stay robust, Square's queries are nearly all of AutoAttack's time); a proof holds
against any budget."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hamverify.attacks import MarginPGD
from hamverify.cli import main
from hamverify.curves import make_attack, perturbation_norm
from hamverify.models import INPUT_SHAPE, file_sha256, load_checkpoint
from hamverify.verify import Verifier, VerifySettings

try:  # tests/ is on sys.path under pytest's default import mode
    from test_curves import root  # noqa: F401  (fixture: the MNIST folder, else skip)
    from test_runner import train_tiny
except ImportError:  # tests/ as a package
    from tests.test_curves import root  # noqa: F401
    from tests.test_runner import train_tiny

EPS = 0.05
COUNT = 20
TOL = 1e-5
SQUARE_QUERIES = 300


@pytest.fixture
def short_square(monkeypatch):
    """AutoAttack with SQUARE_QUERIES Square queries (torchattacks' components, set after they are built)."""
    from hamverify.attacks.autoattack import AutoAttack
    build = AutoAttack._build

    def _build(self, model, n_classes):
        aa = build(self, model, n_classes)
        for part in getattr(getattr(aa, "_autoattack", None), "attacks", []):
            if hasattr(part, "n_queries"):
                part.n_queries = SQUARE_QUERIES
        self.components = [dict(c, n_queries=SQUARE_QUERIES) if "n_queries" in c else c for c in self.components]
        return aa

    monkeypatch.setattr(AutoAttack, "_build", _build)


@pytest.fixture(scope="module")
def verified(root, tmp_path_factory):
    """(checkpoint, model, x, y, statuses): the first COUNT test images decided at EPS."""
    from hamverify.data import load_dataset, to_tensor
    path = train_tiny(tmp_path_factory.mktemp("vs_verified") / "tiny.pt", data_dir=root)
    model, _meta = load_checkpoint(path)
    model = model.float().eval()
    xs, ys = load_dataset("mnist", "test", root)
    x, y = to_tensor(xs[:COUNT]), torch.as_tensor(ys[:COUNT], dtype=torch.long)
    v = Verifier(model, INPUT_SHAPE["mnist"], VerifySettings(eps=EPS, timeout=10.0), file_sha256(path))
    statuses = [v.verify(x[i].double().numpy(), int(y[i]), i)[0].status for i in range(COUNT)]
    assert "verified" in statuses and "falsified" in statuses, statuses  # both kinds, or the test is vacuous
    return path, model, x, y, np.array(statuses)


def _attacks():
    yield "pgd l_inf", lambda: make_attack("pgd", "linf", EPS), "linf"
    yield "pgd-l2 at radius eps", lambda: make_attack("pgd-l2", "l2", EPS), "l2"
    yield "margin attack", lambda: MarginPGD(EPS, steps=100, restarts=4, generator=torch.Generator().manual_seed(0)), \
        "linf"
    yield "autoattack l_inf", lambda: make_attack("autoattack", "linf", EPS, steps=10), "linf"
    yield "autoattack l2 at radius eps", lambda: make_attack("autoattack", "l2", EPS, steps=10), "l2"


@pytest.mark.parametrize("name, build, norm", list(_attacks()), ids=[a[0] for a in _attacks()])
def test_no_attack_point_misclassifies_a_verified_input(verified, short_square, name, build, norm):
    if name.startswith("autoattack"):
        pytest.importorskip("torchattacks")
    _path, model, x, y, statuses = verified
    attack = build()
    keep = torch.as_tensor((statuses == "verified") | (statuses == "falsified"))
    xs, ys, st = x[keep], y[keep], statuses[keep.numpy()]
    with torch.enable_grad():
        x_adv = attack(model, xs, ys).detach()
    dist = perturbation_norm(x_adv, xs, norm)
    assert (dist <= EPS * (1 + TOL) + TOL).all() and (x_adv >= -TOL).all() and (x_adv <= 1 + TOL).all()
    # every point lies in the l_inf ball of radius EPS (the l_2 ball of radius EPS is inside it)
    assert (perturbation_norm(x_adv, xs, "linf") <= EPS * (1 + TOL) + TOL).all()
    with torch.no_grad():
        correct = (model(x_adv).argmax(1) == ys).numpy()
    beaten = np.flatnonzero((st == "verified") & ~correct)
    assert beaten.size == 0, f"{name} misclassifies verified inputs {beaten.tolist()}"
    if norm == "linf":  # a real attack: it finds the counterexamples the verifier found exist
        assert (~correct[st == "falsified"]).any(), name


def test_attack_command_never_breaks_a_verified_input(verified, short_square, root, tmp_path):
    """`hamverify attack` (pgd; autoattack when installed): a verified input's robust flag stays true."""
    from click.testing import CliRunner
    path, _model, _x, _y, statuses = verified
    attacks = ["pgd"]
    try:
        import torchattacks  # noqa: F401
        attacks.append("autoattack")
    except ImportError:
        pass
    for attack in attacks:
        out = tmp_path / f"{attack}.json"
        steps = ["--steps", "10"] if attack == "autoattack" else []
        res = CliRunner().invoke(main, ["attack", "--model", str(path), "--attack", attack, "--norm", "linf",
                                        "--eps", str(EPS), "--count", str(COUNT), "--out", str(out), "--quiet",
                                        "--data-dir", str(root), *steps])
        assert res.exit_code == 0, res.output
        flags = {r["index"]: r["robust"] for r in json.loads(out.read_text())["inputs"]}
        assert all(flags[i] for i in np.flatnonzero(statuses == "verified")), attack
        assert not all(flags[i] for i in np.flatnonzero(statuses == "falsified")), attack  # it breaks some
