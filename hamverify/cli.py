"""The `hamverify` command line: train-small, evaluate, verify, summary, stats, export, vnnlib."""
from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import pathlib
import signal
import sys
import threading

import click

from . import HamverifyError, __version__


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into the same clean stop as Ctrl-C (records written so far stay valid)."""


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While a command runs in the main thread, SIGTERM raises Terminated (a KeyboardInterrupt)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


RESUME_HINT = {"verify": " (rerun the same command to resume)",
               "train_small": " (continue with --resume RUN_FOLDER/last.pt)"}


def _exit_interrupted(code: int) -> None:
    """Exit now; without waiting for a solve that an interrupted single-worker run left in a
    thread of this process (runner.abandoned_work): its input was dropped, nothing of it written."""
    runner = sys.modules.get("hamverify.runner")
    if runner is not None and runner.abandoned_work():
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    sys.exit(code)


def one_line_errors(fn):
    """User errors become one line on stderr and exit 2, as do file-system errors (a results file
    under a regular file, no permission, a full disk); Ctrl-C exits 130 and SIGTERM 143, each
    with one line (work already written stays)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with _sigterm_as_interrupt():
                return fn(*args, **kwargs)
        except HamverifyError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt as exc:
            term = isinstance(exc, Terminated)
            click.echo(f"{'terminated (SIGTERM)' if term else 'interrupted'}; finished work is saved"
                       f"{RESUME_HINT.get(fn.__name__, '')}", err=True)
            _exit_interrupted(143 if term else 130)
        except OSError as exc:
            if exc.filename is None:
                raise
            from .config import describe_os_error
            click.echo(f"error: {describe_os_error(exc)}", err=True)
            sys.exit(2)
    return wrapper


def _download_option(fn):
    return click.option("--download", is_flag=True,
                        help="Fetch the official data files if the data set is not installed (nothing "
                             "touches the network unless asked).")(fn)


class EpsType(click.ParamType):
    name = "EPS"

    def convert(self, value, param, ctx):
        from .config import parse_eps
        try:
            return parse_eps(value)
        except HamverifyError as exc:
            self.fail(str(exc), param, ctx)


EPS = EpsType()


class RadiusType(click.ParamType):
    """A radius >= 0 of any norm (an l_2 radius may exceed 1): 0.5, 8/255, 2e-3."""
    name = "RADIUS"

    def convert(self, value, param, ctx):
        from .curves import parse_radius
        try:
            return parse_radius(value, "l2", what=f"--{param.name}" if param else "radius")
        except HamverifyError as exc:
            self.fail(str(exc), param, ctx)


RADIUS = RadiusType()


class OneLineErrorGroup(click.Group):
    """Usage errors (a bad option value, a missing argument) as one `error:` line, exit 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=OneLineErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hamverify")
def main():
    """Train ReLU networks that are easy to verify, then prove their robustness exactly."""


@main.command("train-small")
@click.option("--dataset", type=click.Choice(["cifar10", "mnist", "fashion-mnist"]), default=None)
@click.option("--arch", default=None, help="Architecture name (default: cifar_small / mnist_small).")
@click.option("--recipe", default=None, help="Named recipe (hamverify.recipes); flags override it.")
@click.option("--epochs", type=int, default=None, help="Epochs (default 100); every schedule's knots scale with it.")
@click.option("--reg", type=click.Choice(["hamming", "hamming-dense", "rs", "none"]), default=None,
              help="Regularizer: Hamming + stability terms on each sample's corner pair, the same over every "
                   "pair of the batch with heat-kernel weights (hamming-dense, the paper's Eq. 14), "
                   "Xiao et al.'s RS loss, or none.")
@click.option("--dense-scale", type=float, default=None,
              help="hamming-dense: kernel scale s of exp(-||x_i - x_j||²/s), squared pixel l2 "
                   "(default 2·4·d·eps², twice a corner pair's: 24.2 at CIFAR-10 8/255).")
@click.option("--dense-min-weight", type=float, default=None,
              help="hamming-dense: drop pairs weighing less than this relative to a corner pair (1e-2; 0: all pairs, exact).")
@click.option("--loss", type=click.Choice(["ce", "ibp", "crown-ibp", "sabr", "mtl-ibp"]), default=None,
              help="Certified-training term beside the CE (default ce: none); combines with --reg.")
@click.option("--kappa-start", type=float, default=None, help="Weight of the clean CE at the ramp's start (1).")
@click.option("--kappa-end", type=float, default=None, help="... and from its end on (0): κ·CE + (1-κ)·robust.")
@click.option("--beta-start", type=float, default=None, help="crown-ibp: CROWN-IBP share at the ramp's start (1).")
@click.option("--beta-end", type=float, default=None, help="crown-ibp: ... and from its end on (0).")
@click.option("--sabr-lambda", type=float, default=None, help="sabr: small-box radius as a share of eps (0.4).")
@click.option("--mtl-alpha", type=float, default=None, help="mtl-ibp: weight of the IBP loss (0.5).")
@click.option("--attack-steps", type=int, default=None, help="sabr / mtl-ibp: PGD steps (default 8 / 1).")
@click.option("--init", type=click.Choice(["default", "ibp"]), default=None, help="Weight init (ibp: Shi et al. 2021).")
@click.option("--warmup-reg", type=float, default=None,
              help="Weight of the warm-up regularizers (bound tightness, ReLU balance), fading out over the ramp.")
@click.option("--eps-start-ratio", type=float, default=None, help="Training eps starts at this share of eps (0.25).")
@click.option("--eps-ramp-start", type=float, default=None, help="eps ramp starts at this share of the epochs (0.1).")
@click.option("--eps-ramp-end", type=float, default=None, help="... and reaches eps at this share (0.35).")
@click.option("--eps", type=EPS, default=None, help="Target eps, e.g. 8/255.")
@click.option("--gamma-s", type=float, default=None, help="Weight γ_S of the stability term (recipe default).")
@click.option("--gamma-h", type=float, default=None, help="Weight γ_H of the Hamming term (recipe default).")
@click.option("--gamma-ramp", type=float, default=None, help="γ's rise to this multiple (default 10).")
@click.option("--alpha", type=float, default=None, help="Sharpness a of the tanh in the relaxed Hamming distance (8).")
@click.option("--stability-form", type=click.Choice(["softmax-mean", "softmax-sum", "logits-mean", "logits-sum"]), default=None,
              help="Stability term on softmax outputs or logits, batch mean or sum.")
@click.option("--train-eps-factor", type=float, default=None, help="Regularize over a ball this much larger.")
@click.option("--corner-ce", type=float, default=None, help="Weight of the CE on the two corners.")
@click.option("--adv-ce", type=float, default=None, help="Share of the CE on a PGD point (0: none, the paper).")
@click.option("--batch-size", type=int, default=None, help="Batch size (128).")
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default=None)
@click.option("--lr", type=float, default=None, help="Peak learning rate.")
@click.option("--weight-decay", type=float, default=None, help="Weight decay (0; 5e-4 with sgd).")
@click.option("--grad-clip", type=float, default=None, help="Clip the gradient norm at this value (off).")
@click.option("--collapse-policy", type=click.Choice(["stop", "rollback"]), default=None,
              help="On a collapsed network: stop, or roll back to the last good epoch and halve the γ's.")
@click.option("--select", type=click.Choice(["last", "best-val", "best-val-cert"]), default=None,
              help="Final model: last epoch, best PGD accuracy or best IBP/CROWN-certified accuracy on held-out training images.")
@click.option("--val-count", type=int, default=None, help="Training images held out (from the end) for --select.")
@click.option("--adv-steps", type=int, default=None, help="RS baseline: PGD steps of adversarial training.")
@click.option("--rs-weight", type=float, default=None, help="RS baseline: weight of the RS loss (1).")
@click.option("--l1", type=float, default=None, help="RS baseline: L1 weight penalty.")
@click.option("--eval-count", type=int, default=None, help="Test images logged per epoch (500).")
@click.option("--seed", type=int, default=None, help="Seed of the init, batches and corners (0).")
@click.option("--subset", type=int, default=None, help="Train on the first N images only.")
@click.option("--augment/--no-augment", default=None,
              help="Random crop (pad 4) and horizontal flip of each batch (default: on for CIFAR-10 only).")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda")
@click.option("--out", type=click.Path(), default=None,
              help="Run folder (default runs/<dataset>_<reg>_<eps>_s<seed>; with --resume, the resumed run's). "
                   "A name ending in .pt is the final checkpoint itself, its run folder beside it "
                   "(m.pt: folder m/).")
@click.option("--config", "config_file", type=click.Path(), default=None, help="TOML file of settings.")
@click.option("--resume", type=click.Path(), default=None, help="Continue from a run's last.pt.")
@click.option("--data-dir", type=click.Path(), default=None)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@_download_option
@one_line_errors
def train_small(config_file, resume, data_dir, device, out, quiet, download, **flags):
    """Train a small CNN with Hamming regularization (docs/METHOD.md §3-4)."""
    from .config import load_toml
    from .data import download_policy
    from .train import TrainConfig, train
    file_values = load_toml(config_file) if config_file else {}
    # one validation path for TOML values and flags (types here, ranges in TrainConfig)
    file_values = {k: check_train_setting(k, v, str(config_file)) for k, v in file_values.items()}
    flags = {k: check_train_setting(k, v, f"--{k.replace('_', '-')}") for k, v in flags.items() if v is not None}
    if resume:
        from .models import read_checkpoint
        # The run continues with the settings it was started with.
        cfg = TrainConfig.from_dict(read_checkpoint(resume).get("config", {}), str(resume))
    else:
        cfg = TrainConfig.from_sources(file_values=file_values, cli_values=flags)
    folder, checkpoint = train_destination(out, cfg, resume)
    click.echo(f"training {cfg.arch} on {cfg.dataset}, reg {cfg.reg}, recipe {cfg.recipe}, eps {cfg.eps:.5g}, "
               f"{cfg.epochs} epochs -> {checkpoint or folder}" + (f" (run folder {folder})" if checkpoint else ""))
    with download_policy(download):
        final = train(cfg, folder, device=device, data_dir=data_dir, resume=resume, progress=not quiet)
    if checkpoint:
        import shutil
        tmp = checkpoint.with_name(checkpoint.name + ".tmp")
        shutil.copyfile(folder / "model.pt", tmp)
        os.replace(tmp, checkpoint)
    click.echo(f"done: clean {final['clean']:.2%}  PGD {final['pgd']:.2%} on {final['eval_count']} test images; "
               f"checkpoint {checkpoint or folder / 'model.pt'}")


def check_train_setting(key: str, value, origin: str):
    """The type check of one train-small setting, from a TOML file or a flag (TrainConfig checks
    the ranges); unknown keys are left to TrainConfig.from_sources, which names them all."""
    import dataclasses
    from .train import TrainConfig
    field = {f.name: f for f in dataclasses.fields(TrainConfig)}.get(key)
    if field is None or key == "eps":  # eps: a number or a fraction like "8/255", parsed by TrainConfig
        return value
    kinds = str(field.type).replace(" ", "").split("|")
    if value is None and "None" in kinds:
        return value
    if "bool" in kinds:
        ok, want = isinstance(value, bool), "true or false"
    elif "int" in kinds:
        ok, want = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif "float" in kinds:
        ok, want = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        if ok and not math.isfinite(value):
            ok, want = False, "a finite number"
    else:
        ok, want = isinstance(value, str), "a string"
    if not ok:
        raise HamverifyError(f"{origin}: invalid training setting: {key} must be {want}, got {value!r}")
    return float(value) if "float" in kinds else value


def train_destination(out, cfg, resume=None) -> tuple[pathlib.Path, pathlib.Path | None]:
    """(run folder, final checkpoint or None) for train-small's --out, checked writable before any
    work.  No --out: runs/<dataset>_<reg>_<eps>_s<seed>, or the resumed run's folder.  A name
    ending in .pt that is not an existing folder is the final checkpoint, with its run folder
    (last.pt, log.jsonl, config.json, model.pt) beside it under the name without .pt."""
    from .config import check_writable
    checkpoint = None
    if out is None:
        folder = (pathlib.Path(resume).parent if resume else
                  pathlib.Path("runs") / f"{cfg.dataset}_{cfg.reg}_{cfg.eps:.4f}_s{cfg.seed}")
    else:
        folder = pathlib.Path(out).expanduser()
        if folder.suffix == ".pt" and not folder.is_dir():
            checkpoint, folder = folder, folder.with_suffix("")
            check_writable(checkpoint, "checkpoint (--out)")
    check_writable(folder, "run folder" if checkpoint else "run folder (--out)", folder=True)
    return folder, checkpoint


@main.command()
@click.option("--model", "models", multiple=True, required=True, type=click.Path(),
              help="Checkpoint (.pt); repeat for several models side by side (one row each).")
@click.option("--attack", "attacks", multiple=True,
              help="Repeatable: pgd (default: l_inf PGD-20x10 at the checkpoint's eps), pgd-l2, autoattack "
                   "(torchattacks 3.5.1; --norm picks autoattack-linf or -l2), stadv, recolor, jpeg, ppgd, lpa "
                   "(hamverify's own code), or table1: the paper's Table 1 set (AutoAttack l_inf and l_2, StAdv, "
                   "ReColor, JPEG, PPGD, LPA).")
@click.option("--norm", default="linf", show_default=True, help="linf or l2: the norm of pgd, autoattack and --eps.")
@click.option("--eps", type=RADIUS, default=None,
              help="Radius of the l_p attacks of --norm, e.g. 8/255 (default: pgd the checkpoint's eps; "
                   "autoattack and pgd-l2 the Table 1 bound: CIFAR-10 l_inf 8/255, l_2 1.0 as the paper; "
                   "MNIST 0.3, 2.0; Fashion-MNIST 0.1, 1.5).")
@click.option("--bound", "bounds", multiple=True,
              help="COLUMN=VALUE (repeatable): one column's radius or bound, e.g. autoattack-l2=0.5, lpa=0.25 "
                   "(perceptual defaults: stadv 0.05, recolor 0.06, jpeg 0.25, ppgd and lpa 0.5).")
@click.option("--lpips-model", type=click.Path(), default=None,
              help="ppgd / lpa: a local checkpoint whose features define the LPIPS distance "
                   "(default: self-bound, the attacked model's own features).")
@click.option("--count", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--start", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--dataset", default=None, help="Default: the checkpoint's dataset.")
@click.option("--split", default="test", show_default=True)
@click.option("--data-dir", type=click.Path(), default=None)
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Steps of every attack (default each attack's own: pgd 20, AutoAttack torchattacks' 10, "
                   "stadv / recolor / jpeg 100, ppgd / lpa 40).")
@click.option("--restarts", type=click.IntRange(min=1), default=None, help="pgd / pgd-l2 restarts (10).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every attack's random start.")
@click.option("--batch-size", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--results-dir", type=click.Path(), default=None,
              help="Write each model's result per attack as JSON here, and reuse those whose settings match "
                   "(an interrupted table resumes).")
@click.option("--fresh", is_flag=True, help="With --results-dir: recompute even where a matching result exists.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schema hamverify-evaluate-v1).")
@click.option("--quiet", is_flag=True, help="No progress lines.")
@_download_option
@one_line_errors
def evaluate(models, attacks, norm, eps, bounds, lpips_model, count, start, dataset, split, data_dir, steps,
             restarts, seed, batch_size, results_dir, fresh, as_json, quiet, download):
    """Clean and robust accuracy of checkpoints: PGD by default, any attack of `hamverify attack`,
    or the paper's whole Table 1 (--attack table1); one row per model."""
    from .evaluation import evaluate_models, format_table, legacy_line, legacy_record, parse_bounds, parse_columns
    columns = parse_columns(attacks, norm)
    bound_map = parse_bounds(bounds)
    for model_path in models:
        require_checkpoint(model_path, "evaluate", "for clean and PGD accuracy; an ONNX model's robustness: "
                           f"hamverify verify --model {model_path} --dataset D --eps E")
        from .models import read_checkpoint
        read_checkpoint(model_path)  # missing or unreadable: one line, before any work
    if eps is None and norm.lower() == "linf" and [c.key for c in columns] == ["pgd"]:
        from .models import read_checkpoint
        for model_path in models:
            if read_checkpoint(model_path).get("eps") is None:
                raise HamverifyError(f"no --eps given and {model_path} records none")
    legacy = len(models) == 1 and [c.key for c in columns] == ["pgd"]
    log = None if (quiet or legacy) else (lambda m: click.echo(m, err=True))
    result = evaluate_models(list(models), columns, norm=norm.lower(), eps=eps, bounds=bound_map, dataset=dataset,
                             split=split, start=start, count=count, batch_size=batch_size, seed=seed, steps=steps,
                             restarts=restarts, lpips_model=lpips_model, data_dir=data_dir, download=download,
                             results_dir=results_dir, fresh=fresh, log=log)
    if legacy:
        click.echo(json.dumps(legacy_record(result), indent=2) if as_json else legacy_line(result))
    else:
        click.echo(json.dumps(result, indent=1) if as_json else format_table(result))


def require_checkpoint(model_path, command: str, hint: str = "") -> None:
    """A one-line error naming what ``command`` needs when given an ONNX file instead of a checkpoint."""
    from .onnx_io import is_onnx_path
    if is_onnx_path(model_path):
        raise HamverifyError(f"{model_path} is an ONNX model: {command} needs a hamverify checkpoint (.pt, "
                             f"from train-small or models/)" + (f" {hint}" if hint else ""))


# Every verify setting, from a TOML file or a flag, passes one check: key -> (type, lowest value).
VERIFY_SCHEMA = {
    "model": (str, None), "dataset": (str, None), "split": (str, None), "eps": ("eps", None),
    "timeout": (float, 0.0), "tightening": (str, None), "backend": (str, None), "pulp_solver": (str, None),
    "start": (int, 0), "count": (int, 1), "workers": (int, 1), "results": (str, None), "tol": (float, None),
    "data_dir": (str, None), "pgd_restarts": (int, 1), "pgd_steps": (int, 0), "scheduler": (str, None),
    "max_memory_per_worker": ((str, int), None), "stages": (str, None), "attack_steps": (int, 0),
    "attack_restarts": (int, 0), "alpha_steps": (int, 0), "lp_share": (float, None), "bab_share": (float, None),
    "bab_stall": (float, 0.0), "bab_branching": (str, None), "bab_intermediate": (str, None),
    "bab_batch": (int, 1),
}
VERIFY_KEYS = set(VERIFY_SCHEMA)


def check_setting(key: str, value, origin: str):
    """One validation path for verify's flags and TOML values; returns the value as its type."""
    from .config import parse_eps
    kind, lowest = VERIFY_SCHEMA[key]
    if kind == "eps":
        return parse_eps(value)
    accepted = {float: (int, float)}.get(kind, kind)
    if isinstance(value, bool) or not isinstance(value, accepted):
        want = {int: "an integer", float: "a number", str: "a string"}.get(kind, "a string or an integer")
        raise HamverifyError(f"{origin}: {key} must be {want}, got {value!r}")
    if kind is float:
        value = float(value)
        if value != value or abs(value) == float("inf"):
            raise HamverifyError(f"{origin}: {key} must be a finite number, got {value!r}")
    if key == "timeout" and not value > 0:
        raise HamverifyError(f"{origin}: timeout must be > 0 seconds, got {value!r}")
    if lowest is not None and value < lowest:
        raise HamverifyError(f"{origin}: {key} must be >= {lowest:g}, got {value!r}")
    return value


def _verify_settings(config_file, cli: dict) -> dict:
    """Config file values, overridden by flags the user gave (None = not given); each checked once."""
    from .config import load_toml
    values = {}
    if config_file:
        raw = load_toml(config_file)
        unknown = sorted(set(raw) - VERIFY_KEYS)
        if unknown:
            raise HamverifyError(f"{config_file}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(VERIFY_KEYS))}")
        values.update({k: check_setting(k, v, str(config_file)) for k, v in raw.items()})
    values.update({k: check_setting(k, v, f"--{k.replace('_', '-')}") for k, v in cli.items() if v is not None})
    return values


@main.command()
@click.option("--model", type=click.Path(), default=None,
              help="Checkpoint (.pt; default: the shipped models/cifar10_small_hamming_8_255.pt), or ONNX (.onnx, inputs in [0,1]; needs --dataset and --eps).")
@click.option("--eps", type=EPS, default=None, help="l_inf radius in pixel units, e.g. 8/255 (default: the checkpoint's).")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Worker processes (default 1).")
@click.option("--timeout", type=float, default=None, help="Seconds per input, bounds + build + solve (default 120).")
@click.option("--dataset", default=None, help="Default: the checkpoint's dataset.")
@click.option("--split", default=None, help="test (default), train, or test_first100_exact (CIFAR-10).")
@click.option("--start", type=click.IntRange(min=0), default=None)
@click.option("--count", type=click.IntRange(min=1), default=None, help="Number of inputs (default: all from --start).")
@click.option("--tightening", type=click.Choice(["ia", "symbolic", "alpha", "lp"]), default=None)
@click.option("--backend", type=click.Choice(["highs", "pulp"]), default=None)
@click.option("--pulp-solver", default=None, help="Any PuLP solver name, e.g. PULP_CBC_CMD, HiGHS_CMD, GUROBI_CMD.")
@click.option("--results", type=click.Path(), default=None, help="Results file (.jsonl); reruns resume it.")
@click.option("--config", "config_file", type=click.Path(), default=None, help="verify_configs/*.toml")
@click.option("--data-dir", type=click.Path(), default=None)
@click.option("--tol", type=float, default=None,
              help="A proof needs every margin lower bound (logits) above this; in [0, 1], default 1e-6.")
@click.option("--scheduler", default=None,
              help="Run on Dask: tcp://HOST:PORT of a running scheduler, local:N (start N local worker "
                   "processes), or a scheduler file (.json). See docs/SCALING.md.")
@click.option("--max-memory-per-worker", default=None,
              help="e.g. 4GB, 512MB, 2GiB: memory an input may use in a worker beyond the loaded model; "
                   "an input that needs more is recorded error (memory).")
@click.option("--stages", default=None,
              help="Cascade stages after the bounds and the paper's PGD, comma-separated: attack (per-target "
                   "margin PGD), alpha (alpha-CROWN), bab (branch and bound), local (trust-region MILP search "
                   "for counterexamples, opt-in), milp; default attack,alpha,bab,milp; 'milp' alone is the bounds + PGD + MILP pipeline of earlier releases.")
@click.option("--attack-steps", type=int, default=None, help="Margin PGD steps per candidate (default 100).")
@click.option("--attack-restarts", type=int, default=None,
              help="Margin PGD random starts per open target class (default 4).")
@click.option("--alpha-steps", type=int, default=None, help="alpha-CROWN optimizer steps (default 20).")
@click.option("--lp-share", type=float, default=None,
              help="With --tightening lp: the share of the remaining budget the LP tightening may use, in (0, 1) "
                   "(default 0.25).")
@click.option("--bab-share", type=float, default=None,
              help="The share of the remaining budget branch and bound may use before the MILP, in (0, 1) "
                   "(default 0.3).")
@click.option("--bab-stall", type=float, default=None,
              help="Branch and bound hands over to the MILP once no target class has been proven for this many "
                   "seconds or half its time, whichever is longer (default 5; 0: never, it keeps its share).")
@click.option("--bab-branching", default=None,
              help="Branch and bound's branching rule: babsr (default) or fsb (babsr's and the intercept "
                   "score's best neurons each split for real, the best split kept), widest, intercept.")
@click.option("--bab-intermediate", default=None,
              help="Branch and bound's intermediate bounds for a child subdomain: refine (recomputed after the "
                   "split, default) or inherit (the parent's with the split neuron clamped: more subdomains per "
                   "second, looser).")
@click.option("--bab-batch", type=int, default=None,
              help="Subdomains branch and bound bounds together (default 8).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_download_option
@one_line_errors
def verify(config_file, as_json, quiet, download, **flags):
    """Exact verification of l_inf robustness over a dataset slice: one cascade per input, cheap first
    (bounds, the paper's PGD, margin attack, alpha-CROWN, branch and bound, MILP), under one deadline."""
    import time as _time
    from .data import load_dataset
    from .models import read_checkpoint
    from .report import format_summary, summarize
    from .runner import default_results_path, run_verification
    from .verify import VerifySettings
    from .shipped import default_model, full_experiment_hint, past_end_message, verify_inputs
    v = _verify_settings(config_file, flags)
    model_path = v.get("model") or default_model()
    from .onnx_io import is_onnx_path, onnx_verify_meta
    meta = (onnx_verify_meta(model_path, v.get("dataset"), v.get("eps")) if is_onnx_path(model_path)
            else read_checkpoint(model_path))
    dataset = v.get("dataset") or meta["dataset"]
    split = v.get("split", "test")
    eps = v.get("eps", meta.get("eps"))
    if eps is None:
        raise HamverifyError("no --eps given and the checkpoint records none")
    settings = VerifySettings(eps=eps, timeout=v.get("timeout", 120.0), tightening=v.get("tightening", "symbolic"),
                              backend=v.get("backend", "highs"), pulp_solver=v.get("pulp_solver", "PULP_CBC_CMD"),
                              tol=v.get("tol", 1e-6), pgd_steps=v.get("pgd_steps", 20),
                              pgd_restarts=v.get("pgd_restarts", 10),
                              **{k: v[k] for k in ("stages", "attack_steps", "attack_restarts", "alpha_steps",
                                                   "lp_share", "bab_share", "bab_stall", "bab_branching",
                                                   "bab_intermediate", "bab_batch")
                                 if k in v})
    log = (lambda m: click.echo(m, err=True))
    # offline first: installed data, else the embedded samples; a download only with --download
    x, y, source, embedded = verify_inputs(dataset, split, v.get("data_dir"), download, log)
    start = v.get("start", 0)
    if start >= len(x):
        raise HamverifyError(past_end_message(start, dataset, split, len(x), embedded))
    count = v.get("count", len(x) - start)
    indices = list(range(start, min(start + count, len(x))))
    results = v.get("results") or default_results_path(model_path, dataset, "samples" if embedded else split, eps)
    log(f"verifying {len(indices)} inputs of {dataset} {split} at eps {eps:.6g} with {settings.tightening} bounds "
        f"+ stages {settings.stages} ({settings.backend}), timeout {settings.timeout:g}s, "
        f"{'scheduler ' + str(v['scheduler']) if v.get('scheduler') else str(v.get('workers', 1)) + ' worker(s)'} "
        f"-> {results}")
    t0 = _time.time()
    records = run_verification(model_path, settings, x, y, indices, results, workers=v.get("workers", 1),
                               progress=not quiet, log=log, dataset=dataset, scheduler=v.get("scheduler"),
                               max_memory_per_worker=v.get("max_memory_per_worker"), split=split, source=source)
    summary = summarize(records)
    if as_json:
        click.echo(json.dumps({**summary, "results": str(results), "wall_time": _time.time() - t0}, indent=2))
    else:
        click.echo(format_summary(summary, wall_time=_time.time() - t0))
    if embedded:
        click.echo(f"these were the {len(x)} embedded {dataset} test images; the whole test set "
                   f"(--download fetches it, or see README 'Data'): {full_experiment_hint(model_path, dataset, eps)}",
                   err=True)


@main.command()
@click.argument("results", type=click.Path())
@click.option("--json", "as_json", is_flag=True)
@one_line_errors
def summary(results, as_json):
    """Print the summary of a results file again (recomputed from its records)."""
    from .records import dedupe_latest, read_records
    from .report import format_summary, summarize
    if not pathlib.Path(results).is_file():
        raise HamverifyError(f"results file not found: {results}")
    records, note = read_records(results)
    if note:
        click.echo(note, err=True)
    s = summarize(sorted(dedupe_latest(records).values(), key=lambda r: r.index))
    click.echo(json.dumps(s, indent=2) if as_json else format_summary(s))


class _StatsCommand(click.Command):
    """`stats` reports a bad option value on one line (exit 2); a missing option stays a usage error."""

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except click.MissingParameter:
            raise
        except click.BadParameter as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            ctx.exit(2)


@main.command("stats", cls=_StatsCommand)
@click.option("--model", "models", multiple=True, required=True, type=click.Path(),
              help="Checkpoint (.pt); repeat to compare models on the same inputs.")
@click.option("--eps", type=EPS, default=None, help="l_inf radius, e.g. 8/255 (default: the checkpoints' eps).")
@click.option("--count", type=click.IntRange(min=1), default=100, show_default=True, help="Number of inputs.")
@click.option("--start", type=click.IntRange(min=0), default=0, show_default=True, help="First input index.")
@click.option("--tightening", default="ia,symbolic", show_default=True,
              help="Comma-separated bound methods: ia, symbolic, lp.")
@click.option("--corners", type=click.IntRange(min=1), default=10, show_default=True,
              help="Random opposite-corner pairs per input for the Hamming distance.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the corners.")
@click.option("--dataset", default=None, help="Default: the checkpoints' dataset.")
@click.option("--split", default="test", show_default=True)
@click.option("--data-dir", type=click.Path(), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schema hamverify-stats-v1, see hamverify.stats).")
@click.option("--plot", type=click.Path(), default=None, help="Also write a bar chart of unstable ReLUs (.png).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_download_option
@one_line_errors
def stats(models, eps, count, start, tightening, corners, seed, dataset, split, data_dir, as_json, plot, quiet,
          download):
    """ReLU stability per layer under each bound method, corner Hamming distance, and the share
    of inputs proven by bounds alone (docs/METHOD.md §6); several --model side by side."""
    from .data import download_policy
    from .models import check_dataset_fits, read_checkpoint
    from .stats import compare_models, format_table, parse_methods, plot_unstable, require_matplotlib, to_json
    methods = parse_methods(tightening)
    for model_path in models:
        require_checkpoint(model_path, "stats")
        meta = read_checkpoint(model_path)
        check_dataset_fits(model_path, meta.get("dataset"), dataset or meta.get("dataset"))
    if plot:
        require_matplotlib()  # fail before the work, not after
        if not pathlib.Path(plot).expanduser().parent.is_dir():
            raise HamverifyError(f"folder of --plot {plot} does not exist")
        from .config import check_writable
        check_writable(pathlib.Path(plot).expanduser(), "--plot file")
    with download_policy(download):
        result = compare_models(list(models), eps, count=count, start=start, methods=methods, corners=corners,
                                dataset=dataset, split=split, data_dir=data_dir, seed=seed, progress=not quiet)
    click.echo(to_json(result) if as_json else format_table(result))
    if plot:
        click.echo(f"plot written to {plot_unstable(result, pathlib.Path(plot).expanduser())}", err=True)


@main.command("export")
@click.option("--model", "model_path", required=True, type=click.Path(), help="Checkpoint (.pt).")
@click.option("--out", required=True, type=click.Path(), help="ONNX file to write (.onnx).")
@one_line_errors
def export_cmd(model_path, out):
    """Export a checkpoint to ONNX: normalization included, input [N,C,H,W] in [0,1], dynamic batch."""
    from .config import check_writable
    from .models import read_checkpoint
    from .onnx_io import export_checkpoint
    require_checkpoint(model_path, "export", "(this file is already ONNX)")
    read_checkpoint(model_path)  # a missing or unreadable checkpoint first, then the output
    check_writable(out, "ONNX file (--out)")
    path, diff = export_checkpoint(model_path, out)
    if diff > 1e-4:
        raise HamverifyError(f"{path}: onnxruntime and torch logits differ by {diff:.3g} (> 1e-4)")
    click.echo(f"wrote {path} (max |onnxruntime - torch| = {diff:.2g} on 8 random inputs)")


@main.command("vnnlib")
@click.option("--onnx", "onnx_path", type=click.Path(), default=None, help="Network (.onnx or .onnx.gz).")
@click.option("--vnnlib", "vnnlib_path", type=click.Path(), default=None, help="Property (.vnnlib or .vnnlib.gz).")
@click.option("--instances", type=click.Path(), default=None,
              help="VNN-COMP instances.csv (onnx,vnnlib,timeout rows; paths relative to it).")
@click.option("--results", type=click.Path(), default=None,
              help="Result file (one instance) or results CSV (batch; reruns resume it).")
@click.option("--timeout", type=float, default=None,
              help="Seconds per instance (one instance: default 300; batch: overrides the CSV's).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Batch: instances decided in parallel.")
@click.option("--mode", type=click.Choice(["disjunction", "per-disjunct"]), default="disjunction",
              show_default=True, help="One MILP with a binary per disjunct, or one MILP per disjunct.")
@click.option("--retry-errors/--keep-errors", default=True, show_default=True,
              help="Batch resume: decide 'error' rows of the results CSV again (default), or keep them.")
@click.option("--stages", default=None,
              help="Cascade stages after the bounds, comma-separated: attack (per-disjunct margin PGD), alpha "
                   "(alpha-CROWN), bab (branch and bound), local (trust-region MILP search for counterexamples, "
                   "opt-in), milp; default attack,alpha,bab,milp, the same "
                   "cascade as `verify`.")
@one_line_errors
def vnnlib_cmd(onnx_path, vnnlib_path, instances, results, timeout, workers, mode, retry_errors, stages):
    """Decide VNN-LIB properties of ONNX networks: sat (+ counterexample), unsat, timeout or unknown.

    A batch writes rows onnx,vnnlib,result,seconds,detail: the detail is the reason of an error,
    unknown or timeout, or the counterexample file of a sat (under RESULTS.cex/, one per instance).
    Rerunning the command resumes; rows that ended in an error are retried unless --keep-errors."""
    from .cascade import DEFAULT_STAGES, parse_stages
    from .vnncomp import run_batch, solve_instance, write_text_atomic
    stages = parse_stages(DEFAULT_STAGES if stages is None else stages)  # a bad list: one line, before any work
    if instances:
        if onnx_path or vnnlib_path:
            raise HamverifyError("give either --instances or --onnx with --vnnlib, not both")
        if not results:
            raise HamverifyError("--instances needs --results (the results CSV to write)")
        if timeout is not None and not timeout > 0:
            raise HamverifyError(f"--timeout must be > 0, got {timeout}")
        rows = run_batch(instances, results, workers=workers, timeout=timeout, mode=mode,
                         retry_errors=retry_errors, log=lambda m: click.echo(m, err=True), stages=stages)
        counts = {}
        for row in rows:
            counts[row[2]] = counts.get(row[2], 0) + 1
        click.echo(f"{len(rows)} instances -> {results}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        return
    if not (onnx_path and vnnlib_path):
        raise HamverifyError("give --onnx and --vnnlib (one instance) or --instances (a batch)")
    res = solve_instance(onnx_path, vnnlib_path, 300.0 if timeout is None else timeout, mode=mode, stages=stages)
    text = res.vnncomp_text()
    if results:
        write_text_atomic(results, text)
    click.echo(text, nl=False)
    if res.reason:
        click.echo(f"{res.result}: {res.reason}", err=True)



@main.command("attack")
@click.option("--model", "model_path", required=True, type=click.Path(),
              help="Checkpoint (.pt) or ONNX (.onnx, inputs in [0,1]; needs --dataset and --eps).")
@click.option("--attack", "attack", default="autoattack", show_default=True,
              help="autoattack (torchattacks' standard AutoAttack), pgd (l_inf), pgd-l2, or the perceptual "
                   "attacks of the paper's Table 1 (hamverify's own code): stadv (Xiao et al.'s flow field), "
                   "jpeg (Kang et al.'s quantized-DCT perturbation), recolor (Laidlaw & Feizi's ReColorAdv), "
                   "ppgd and lpa (Laidlaw et al.'s PPGD and LPA, self-bound LPIPS: the attacked model's own "
                   "features, or --lpips-model's). The whole Table 1 set: hamverify evaluate --attack table1.")
@click.option("--norm", default=None, help="linf or l2 (default: l2 for pgd-l2, else linf; the perceptual "
                                           "attacks are l_inf in their own space).")
@click.option("--eps", default=None,
              help="Radius, e.g. 0.1 or 8/255 (default: the checkpoint's l_inf eps); stadv, jpeg, recolor, "
                   "ppgd, lpa: the attack's own bound (default 0.05 flow in grid units, 0.25 Kang et al.'s JPEG "
                   "eps, 0.06 colour offset, 0.5 LPIPS).")
@click.option("--lpips-model", type=click.Path(), default=None,
              help="ppgd / lpa: a local checkpoint whose features define the LPIPS distance "
                   "(default: self-bound, the attacked model's own features).")
@click.option("--count", type=click.IntRange(min=1), default=1000, show_default=True, help="Number of inputs.")
@click.option("--start", type=click.IntRange(min=0), default=0, show_default=True, help="First input index.")
@click.option("--batch-size", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random starts.")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="pgd / pgd-l2: steps per restart (20); autoattack: iterations of APGD-CE, APGD-T and FAB-T "
                   "(default torchattacks' 10; the reference AutoAttack uses 100); stadv, jpeg, recolor: "
                   "optimizer steps (100); ppgd, lpa: steps (40).")
@click.option("--restarts", type=click.IntRange(min=1), default=None, help="pgd / pgd-l2 only: restarts (10).")
@click.option("--dataset", default=None, help="Default: the checkpoint's dataset.")
@click.option("--split", default="test", show_default=True)
@click.option("--data-dir", type=click.Path(), default=None)
@click.option("--out", type=click.Path(), default=None,
              help="JSON file of the result and per-input robust flags "
                   "(default results/attack_<model>_<dataset>_<split>_<attack>_<norm>_eps<eps>.json).")
@click.option("--quiet", is_flag=True, help="No progress lines.")
@_download_option
@one_line_errors
def attack_cmd(model_path, attack, norm, eps, lpips_model, count, start, batch_size, seed, steps, restarts, dataset,
               split, data_dir, out, quiet, download):
    """Empirical robust accuracy under AutoAttack, PGD (l_inf or l_2) or a perceptual attack
    (StAdv, JPEG, ReColorAdv, PPGD, LPA) over a data set slice."""
    from .config import check_writable
    from .curves import (PERCEPTUAL_BOUNDS, check_attack, default_attack_path, parse_attack_radius, run_attack,
                         write_json)
    norm = (norm or ("l2" if attack == "pgd-l2" else "linf")).lower()
    check_attack(attack, norm)
    radius = None if eps is None else parse_attack_radius(eps, attack, norm)
    if not pathlib.Path(model_path).expanduser().is_file():
        raise HamverifyError(f"model not found: {model_path}")
    if out:
        check_writable(pathlib.Path(out).expanduser(), "results file (--out)")
    log = None if quiet else (lambda m: click.echo(m, err=True))
    result = run_attack(model_path, attack=attack, norm=norm, eps=radius, dataset=dataset, split=split, start=start,
                        count=count, batch_size=batch_size, seed=seed, steps=steps, restarts=restarts,
                        data_dir=data_dir, download=download, log=log, lpips_model=lpips_model)
    path = pathlib.Path(out).expanduser() if out else default_attack_path(
        model_path, result["dataset"], split, attack, norm, result["eps"])
    write_json(result, path)
    bound = f"{attack} bound" if attack in PERCEPTUAL_BOUNDS else f"{norm} eps"
    click.echo(f"{result['dataset']} {split}[{start}:{start + result['count']}]  {bound} {result['eps']:.6g}  "
               f"clean {result['clean_accuracy']:.2%}  robust {result['robust_accuracy']:.2%}  "
               f"({result['description']}, {result['wall_time']:.1f} s) -> {path}")
    if result["implementation"].get("lpips_network"):
        click.echo(f"LPIPS network: {result['implementation']['lpips_network']}")


@main.command("curves")
@click.option("--model", "models", multiple=True, required=True, type=click.Path(),
              help="Checkpoint (.pt) or ONNX (needs --dataset); repeat for one curve per model.")
@click.option("--norm", default="linf", show_default=True, help="linf (PGD) or l2 (l_2 PGD).")
@click.option("--eps", "--eps-grid", "radii", default=None,
              help="Comma-separated radii, e.g. 0,0.02,0.04,0.06, or a grid FIRST:LAST:N, e.g. 0:32/255:9 "
                   "(default: Figure 2's range for the data set: l_inf 0:32/255:9 on CIFAR-10, 0:0.4:9 on "
                   "MNIST / Fashion-MNIST; l_2 0:4:9).")
@click.option("--count", type=click.IntRange(min=1), default=1000, show_default=True, help="Number of inputs.")
@click.option("--start", type=click.IntRange(min=0), default=0, show_default=True, help="First input index.")
@click.option("--batch-size", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random starts.")
@click.option("--steps", type=click.IntRange(min=1), default=20, show_default=True, help="PGD steps per restart.")
@click.option("--restarts", type=click.IntRange(min=1), default=10, show_default=True, help="PGD restarts.")
@click.option("--dataset", default=None, help="Default: each checkpoint's dataset.")
@click.option("--split", default="test", show_default=True)
@click.option("--data-dir", type=click.Path(), default=None)
@click.option("--out", type=click.Path(), default=None,
              help="JSON file of the curves (default results/curves_<models>_<norm>.json); a name ending in "
                   ".png is the plot instead (as --plot; the JSON then goes to the default).")
@click.option("--plot", type=click.Path(), default=None,
              help="Draw the curves here (.png; needs matplotlib; default: beside the JSON, when matplotlib is "
                   "installed).")
@click.option("--csv", "csv_path", type=click.Path(), default=None,
              help="Also write the curves as CSV: one row per model x eps (PGD points, then verified points).")
@click.option("--json", "as_json", is_flag=True, help="Print the curves' JSON (schema hamverify-curves-v1) "
                                                      "instead of the table.")
@click.option("--verified-at", "verified_at", default=None,
              help="Also each model's verified accuracy at these l_inf radii (e.g. 2/255,8/255), from "
                   "`hamverify verify` records (--records, else verify's default results file): markers on the "
                   "same axes, rows in the table, JSON and CSV.")
@click.option("--records", "records", multiple=True, type=click.Path(),
              help="A `hamverify verify` results file (.jsonl), matched to its --model by the model's sha256 and "
                   "to a --verified-at radius by its eps; repeat for several models / radii (alone: verified "
                   "accuracy at the records' radii).")
@click.option("--quiet", is_flag=True, help="No progress lines.")
@_download_option
@one_line_errors
def curves_cmd(models, norm, radii, count, start, batch_size, seed, steps, restarts, dataset, split, data_dir,
               out, plot, csv_path, as_json, verified_at, records, quiet, download):
    """Robustness curves (the paper's Figure 2): PGD robust accuracy against eps, one curve per model;
    with --verified-at / --records, verified accuracy from `verify` records on the same axes."""
    from .config import check_writable
    from .curves import (NORMS, default_curves_path, default_grid, format_curves, parse_radii, plot_curves,
                         run_curves, write_csv, write_json)
    norm = norm.lower()
    if norm not in NORMS:
        raise HamverifyError(f"unknown norm {norm!r}; known: {', '.join(NORMS)}")
    for model_path in models:
        if not pathlib.Path(model_path).expanduser().is_file():
            raise HamverifyError(f"model not found: {model_path}")
    eps_list = parse_radii(radii if radii is not None else default_grid(list(models), norm, dataset), norm)
    verified_list = [] if verified_at is None else parse_radii(verified_at, "linf", "--verified-at")
    for rec in records:
        if not pathlib.Path(rec).expanduser().is_file():
            raise HamverifyError(f"verify records not found: {rec} (--records: a results .jsonl of `hamverify verify`)")
    if out and str(out).lower().endswith(".png"):
        if plot and pathlib.Path(plot).expanduser() != pathlib.Path(out).expanduser():
            raise HamverifyError("--out FILE.png is the plot: give either it or --plot, not both")
        plot, out = out, None
    path = pathlib.Path(out).expanduser() if out else default_curves_path(list(models), norm)
    check_writable(path, "curves file (--out)")
    plot_note = None
    if plot is None:  # a plot beside the JSON unless matplotlib is missing (then one line says so)
        try:
            import matplotlib  # noqa: F401
            plot = str(path.with_suffix(".png"))
        except ImportError:
            plot_note = "no plot: matplotlib is missing (pip install -e '.[plot]'; or give --plot FILE.png)"
    if csv_path:
        check_writable(pathlib.Path(csv_path).expanduser(), "--csv file")
    if plot:
        from .stats import require_matplotlib
        require_matplotlib()  # fail before the work, not after
        check_writable(pathlib.Path(plot).expanduser(), "--plot file")
    log = None if quiet else (lambda m: click.echo(m, err=True))
    result = run_curves(list(models), norm=norm, radii=eps_list, dataset=dataset, split=split, start=start,
                        count=count, batch_size=batch_size, seed=seed, steps=steps, restarts=restarts,
                        data_dir=data_dir, download=download, log=log, verified_at=verified_list,
                        records=[pathlib.Path(r).expanduser() for r in records])
    write_json(result, path)
    click.echo(json.dumps(result, indent=1) if as_json else format_curves(result))
    click.echo(f"curves written to {path}", err=True)
    if csv_path:
        click.echo(f"CSV written to {write_csv(result, csv_path)}", err=True)
    if plot:
        click.echo(f"plot written to {plot_curves(result, pathlib.Path(plot).expanduser())}", err=True)
    elif plot_note:
        click.echo(plot_note, err=True)


if __name__ == "__main__":
    main()
