"""eps parsing and TOML config files (hamverify.config)."""
from __future__ import annotations

import pytest

from hamverify import HamverifyError
from hamverify.config import load_toml, parse_eps
from hamverify.train import TrainConfig

ACCEPT = [("8/255", 8 / 255), ("0.0314", 0.0314), ("2e-3", 2e-3), ("0", 0.0), ("1", 1.0), (".5", 0.5),
          (" 8 / 255 ", 8 / 255), ("2/255", 2 / 255), ("0.3", 0.3), ("1E-2", 0.01), ("1/1", 1.0), ("0/7", 0.0),
          ("1.5/3", 0.5), (0.1, 0.1), (0, 0.0), (1, 1.0)]
REJECT = ["8/0", "-1", "abc", "1.5", "", "nan", "inf", "-inf", "8/", "/255", "8//255", "1/2/3", "0x1", "2/1",
          "-8/255", "8/-255", "1e", "  ", "8 255", "0/0", True, float("nan"), float("inf"), -0.1, 1.0001, None]


@pytest.mark.parametrize("text,value", ACCEPT, ids=[repr(a) for a, _ in ACCEPT])
def test_eps_accepted(text, value):
    got = parse_eps(text)
    assert isinstance(got, float)
    assert got == pytest.approx(value, rel=1e-15, abs=0)
    assert 0 <= got <= 1


def test_fraction_is_exact():
    assert parse_eps("8/255") == 8 / 255
    assert parse_eps("2/255") * 4 == pytest.approx(parse_eps("8/255"), rel=1e-15)


@pytest.mark.parametrize("text", REJECT, ids=[repr(t) for t in REJECT])
def test_eps_rejected(text):
    with pytest.raises(HamverifyError) as err:
        parse_eps(text)
    msg = str(err.value)
    assert "invalid eps" in msg and "\n" not in msg


def test_division_by_zero_says_so():
    with pytest.raises(HamverifyError, match="division by zero"):
        parse_eps("8/0")


def test_out_of_range_says_range():
    with pytest.raises(HamverifyError, match=r"\[0, 1\]"):
        parse_eps("1.5")


# ------------------------------------------------------------------------------------------------ TOML files


def test_load_toml_ok(tmp_path):
    p = tmp_path / "run.toml"
    p.write_text('recipe = "gh900"\nepochs = 3\neps = "8/255"\ngrad_clip = 1.0\n[extra]\na = 1\n')
    assert load_toml(p) == {"recipe": "gh900", "epochs": 3, "eps": "8/255", "grad_clip": 1.0, "extra": {"a": 1}}


@pytest.mark.parametrize("content", [b"epochs = \n", b"epochs = 3\nepochs = 4\n", b"[a\n", b"x = 'unterminated\n",
                                     b"\x00\x01\x02", b'name = "\xff\xfe"\n'],
                         ids=["no-value", "duplicate-key", "bad-table", "unterminated", "binary", "not-utf8"])
def test_load_toml_invalid(tmp_path, content):
    p = tmp_path / "bad.toml"
    p.write_bytes(content)
    with pytest.raises(HamverifyError) as err:
        load_toml(p)
    msg = str(err.value)
    assert str(p) in msg and "invalid TOML" in msg and "\n" not in msg


def test_load_toml_missing(tmp_path):
    with pytest.raises(HamverifyError, match="not found"):
        load_toml(tmp_path / "nope.toml")
    with pytest.raises(HamverifyError, match="not found"):
        load_toml(tmp_path)  # a folder


def test_toml_values_reach_the_training_config(tmp_path):
    p = tmp_path / "run.toml"
    p.write_text('recipe = "gh900"\nepochs = 3\neps = "8/255"\ngamma_s = 2\n')
    cfg = TrainConfig.from_sources(file_values=load_toml(p))
    assert cfg.recipe == "gh900" and cfg.gamma_h == 900.0 and cfg.epochs == 3
    assert cfg.eps == 8 / 255 and cfg.gamma_s == 2


@pytest.mark.parametrize("content,needle", [('epochs = "ten"\n', "invalid training setting"),
                                            ("eps = 2\n", "invalid eps"),
                                            ('eps = "8/0"\n', "invalid eps"),
                                            ('optimiser = "sgd"\n', "optimiser"),
                                            ('reg = "l2"\n', "reg"),
                                            ('recipe = "nope"\n', "unknown recipe")])
def test_bad_settings_in_a_file(tmp_path, content, needle):
    p = tmp_path / "run.toml"
    p.write_text(content)
    with pytest.raises(HamverifyError) as err:
        TrainConfig.from_sources(file_values=load_toml(p))
    assert needle in str(err.value) and "\n" not in str(err.value)
