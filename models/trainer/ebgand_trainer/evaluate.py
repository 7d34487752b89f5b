"""python -m ebgand_trainer.evaluate: both modes (EBGAN and the plain autoencoder, same D, same
data) on the real recordings of ../shared/data, under the protocols of its README.

Training runs in-process through the worker's own pieces (cli's argument defaults and checks,
train.train, export.export, export.calibrate), and every score comes from the exported inference
model through a plain InferenceSession, as the daemon would compute it. The protocols, and why
they were chosen, are in docs/EVALUATION.md.

    PYTHONPATH=models/trainer .venv/trainer/bin/python -m ebgand_trainer.evaluate
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import artifacts, cli, export, graphs, train
from .ort import onnxruntime

REPO = Path(__file__).resolve().parents[3]  # models/trainer/ebgand_trainer/evaluate.py
DEFAULT_DATA = REPO.parent / "shared" / "data"
FIRST_SEED = 7  # the worker's default --seed; --seeds N uses 7, 8, ..., 7+N-1

# Named trainer configurations: extra worker flags on top of the worker's defaults.
VARIANTS = {
    "ae": ["--mode", "ae"],
    "ebgan": ["--mode", "ebgan"],
    # The temporal convolutional D (graphs.py), same modes.
    "ebgan-conv": ["--mode", "ebgan", "--discriminator", "conv"],
    "ae-conv": ["--mode", "ae", "--discriminator", "conv"],
    # Not a trained model: energy = mean square of the normalised window, i.e. D with a
    # reconstruction of all zeros. What a model must beat to have learnt anything.
    "zscore": None,
    # Task-3 experiments (docs/EVALUATION.md), opt-in through --modes:
    # G aims at the boundary energy of the healthy set, margin as in EBGAN (1.0, decayed)
    "ebgan-boundary": ["--mode", "ebgan", "--g-target", "boundary"],
    # Fence-GAN style: G at the boundary, D's margin tied to it (margin = boundary energy)
    "ebgan-fence": ["--mode", "ebgan", "--g-target", "boundary", "--margin-mode", "relative",
                    "--margin", "1.0"],
    # MAGAN style: EBGAN's G, margin = the median recent real energy (decayed as in EBGAN)
    "ebgan-magan": ["--mode", "ebgan", "--margin-mode", "relative", "--margin", "1.0",
                    "--target-quantile", "0.5"],
}
DEFAULT_VARIANTS = ("ebgan", "ae", "zscore")

# --- SKAB --------------------------------------------------------------------------------------
SKAB_TRAIN_ROWS = 400  # per file, the published protocol
SKAB_W = 16  # rows per window (16 s at 1 Hz), all 8 channels
SKAB_HOLDOUT = 0.25  # last quarter of the 385 training windows: calibration and validation
SKAB_QUANTILE = 0.99  # threshold = this quantile of the held-out healthy energies
SKAB_RULES = ("end", "all-windows")
# --skab-conv-ae: the scoring of the SKAB repository's Conv-AE notebook (waico/SKAB,
# notebooks/Conv_AE.ipynb: N_STEPS = 60, Q = 0.999, UCL = quantile(Q) of the training residuals
# x 4/3, a row anomalous only when the windows covering it are), within this protocol: the
# quantile is taken of the held-out healthy energies, not of the windows D was fitted on.
SKAB_CONV_AE = {"window": 60, "rule": "all-windows", "quantile": 0.999, "factor": 4 / 3}
# Sensitivity, reported beside the chosen factor and never used to choose it: the same models
# and energies, thresholds at these multiples of the held-out quantile.
SKAB_SENSITIVITY = (1.0, 1.25, 4 / 3, 1.5, 2.0)

# --- CWRU --------------------------------------------------------------------------------------
CWRU_W = 64  # samples per window (the daemon's default window)
CWRU_TRAIN_HOP = 16  # training windows overlap; test windows do not
CWRU_HOLDOUT = 0.2  # the worker's defaults
CWRU_QUANTILE = 0.995
CWRU_PAIRS = {  # name: (healthy file, fault file, decimation of the healthy 48 kHz recording)
    "48k": ("1797_Normal.npz", "1797_IR_7_DE48.npz", 1),
    "12k": ("1797_Normal.npz", "1797_IR_7_DE12.npz", 4),
}

# --- NAB ---------------------------------------------------------------------------------------
NAB_FILE = "machine_temperature_system_failure.csv"
NAB_W = 12  # 5-minute steps: one hour
NAB_HOLDOUT = 0.2
NAB_QUANTILE = 0.995
NAB_RAISE_AFTER = 3  # the first default's hysteresis (the daemon's today: judge = "probability")
NAB_CLEAR_AFTER = 5

log = logging.getLogger("ebgand_trainer.evaluate")


class DataMissing(Exception):
    pass


# --- training through the worker's own code ----------------------------------------------------

@dataclass
class Fitted:
    sess: object  # onnxruntime.InferenceSession of the exported model
    threshold: float
    steps: int
    best_step: int
    seconds: float
    holdout_energies: np.ndarray  # float64, the held-out healthy windows' energies

    def energies(self, windows):
        if isinstance(self.sess, ZScore):
            return self.sess.energies(windows)
        return export.energies(self.sess, np.ascontiguousarray(windows, np.float32)).astype(
            np.float64)


@dataclass
class ZScore:
    """The no-model reference: the energy of an autoencoder that reconstructs nothing."""
    mean: np.ndarray
    std: np.ndarray

    def energies(self, windows):
        z = (np.asarray(windows, np.float64) - self.mean) / self.std
        return (z ** 2).mean(axis=(1, 2))


def worker_args(variant, seed, steps, extra, quantile, holdout):
    """Parses the worker's own command line, so every default and check is the worker's."""
    argv = ["--data", "-", "--out", "-", "--name", "eval", "--version", "eval",
            "--seed", str(seed), "--quantile", str(quantile), "--holdout", str(holdout),
            *VARIANTS[variant], *extra]
    if steps is not None:
        argv += ["--steps", str(steps)]
    return cli.parse_args(argv)


def fit(windows, norm_rows, variant, seed, ctx, quantile, holdout):
    """Trains like `python -m ebgand_trainer` on windows [N, W, C] (stream order: the end is held
    out), but normalises with the statistics of norm_rows [n, C] (a recording's whole training
    stretch), exports, checks and calibrates. Returns a Fitted."""
    windows = np.ascontiguousarray(windows, np.float32)
    mean, std = cli._norm_stats(np.asarray(norm_rows, np.float32)[None])
    if VARIANTS[variant] is None:
        _, hold_x = cli.split(windows, holdout)
        z = ZScore(mean, std)
        e_hold = z.energies(hold_x)
        return Fitted(sess=z, threshold=export.calibrate(e_hold, quantile),
                      steps=0, best_step=0, seconds=0.0, holdout_energies=e_hold)
    args = worker_args(variant, seed, ctx.steps, ctx.extra, quantile, holdout)
    train_x, hold_x = cli.split(windows, args.holdout)
    _, w, c = windows.shape
    arch = graphs.Arch(window=w, channels=c, hidden=args.hidden, latent=args.latent,
                       d=args.discriminator, kernel=args.kernel)
    folder = artifacts.ensure(arch, ctx.cache)
    result = train.train(arch, cli.train_config(args), folder, train_x, hold_x, mean, std,
                         lambda *_: None, lambda: False)
    with tempfile.TemporaryDirectory(prefix="ebgand-eval-") as tmp:
        model = export.export(result.d_module, arch, Path(tmp))
    sess = export.session(model)
    export.check_against_training(sess, result.d_module, hold_x[:cli.CHECK_WINDOWS], arch)
    e_hold = export.energies(sess, hold_x).astype(np.float64)
    return Fitted(sess=sess, threshold=export.calibrate(e_hold, args.quantile),
                  steps=result.steps_run, best_step=result.best_step, seconds=result.seconds,
                  holdout_energies=e_hold)


def windows_of(x, w, hop=1):
    """[n, C] -> [m, w, C], window i covering rows i*hop .. i*hop+w-1 (a copy, float32)."""
    idx = np.arange(0, len(x) - w + 1, hop)[:, None] + np.arange(w)[None, :]
    return np.ascontiguousarray(x[idx], np.float32)


def roc_auc(neg, pos):
    """Mann-Whitney ROC AUC, ties counting half."""
    scores = np.concatenate([neg, pos])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks of ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    r_pos = ranks[len(neg):].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


# --- SKAB --------------------------------------------------------------------------------------

def load_skab(folder):
    files = sorted((folder / "skab" / "valve1").glob("*.csv"), key=lambda p: int(p.stem))
    if not files:
        raise DataMissing(f"no SKAB files in {folder / 'skab' / 'valve1'}")
    out = []
    for path in files:
        with open(path, newline="") as f:
            rows = list(csv.reader(f, delimiter=";"))
        head, body = rows[0], rows[1:]
        if head[0] != "datetime" or head[9:11] != ["anomaly", "changepoint"]:
            raise DataMissing(f"{path}: unexpected header {head}")
        a = np.array([[float(v) for v in r[1:10]] for r in body])
        out.append((path.name, a[:, :8], a[:, 8].astype(bool)))
    return out


@dataclass
class SkabScoring:
    """How SKAB rows are scored and thresholded (docs/EVALUATION.md).

    window: rows per window (all 8 channels). rule: 'end', row t gets the energy of the window
    ending at it (rows with no such window: predicted normal, left out of the AUC);
    'all-windows', row t gets the minimum energy over every window that covers it, so it is
    anomalous only when all of them are. threshold = factor x the quantile of the held-out
    healthy energies. accounting: 'test', windows and metrics over the test rows alone (the
    data README's protocol); 'whole-file', a diagnostic outside it: windows and metrics over
    every row of each file, the 400 training rows included, as the SKAB repository's notebooks
    count them; 'notebook', whole-file and, on top, the Conv-AE notebook's own row loop (rule
    all-windows only): row t is anomalous when the w-1 windows starting at t-w+1 .. t-1 are,
    and only rows w-1 .. n-2w+1 can be (its loop bounds), the rest of each file counting as
    predicted normal."""
    window: int = SKAB_W
    rule: str = "end"
    quantile: float = SKAB_QUANTILE
    factor: float = 1.0
    accounting: str = "test"

    def is_default(self):
        return self == SkabScoring()

    def describe(self):
        return (f"W = {self.window}, rule {self.rule}, threshold = {self.factor:.4g} x the "
                f"{self.quantile:g} quantile of the held-out healthy energies, "
                f"{self.accounting} accounting")


def row_scores(e, n_rows, w, rule):
    """Window energies e (window s covers rows s .. s+w-1, s = 0 .. n_rows-w) -> one score per
    row; -inf where a row has no score (the 'end' rule's first w-1 rows)."""
    e = np.asarray(e, np.float64)
    if rule == "end":
        out = np.full(n_rows, -np.inf)
        out[w - 1:] = e
        return out
    # all-windows: min over the windows covering row t, i.e. e[max(0, t-w+1) .. min(t, m-1)]
    pad = np.full(w - 1, np.inf)
    padded = np.concatenate([pad, e, pad])
    return np.lib.stride_tricks.sliding_window_view(padded, w).min(axis=1)


def notebook_row_scores(e, n_rows, w):
    """The SKAB Conv-AE notebook's row loop, as written there: for data_idx in range(w-1,
    len(X)-w+1), anomalous if all of windows[data_idx-w+1 : data_idx] are (w-1 windows, the
    one starting at data_idx left out); rows outside that range are never anomalous (-inf)."""
    m = len(e)
    out = np.full(n_rows, -np.inf)
    if m - w + 1 <= w - 1:  # the loop's range is empty
        return out
    mins = np.lib.stride_tricks.sliding_window_view(np.asarray(e, np.float64), w - 1).min(axis=1)
    t = np.arange(w - 1, m - w + 1)
    out[t] = mins[t - w + 1]
    return out


def _counts(pred, y):
    return (int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & ~y).sum()),
            int((~pred & y).sum()))


def _rates(tp, fp, tn, fn):
    return {"f1": 2 * tp / (2 * tp + fp + fn), "far": fp / (fp + tn), "mar": fn / (fn + tp)}


def skab(ctx, variant, seed):
    sc = ctx.skab_scoring
    w = sc.window
    per_file, fits, scored = {}, [], []
    aucs = []
    for name, x, y in ctx.skab:
        tr = x[:SKAB_TRAIN_ROWS]
        fitted = fit(windows_of(tr, w), tr, variant, seed, ctx, sc.quantile, SKAB_HOLDOUT)
        fits.append(fitted)
        if sc.accounting == "test":
            rows_x, rows_y = x[SKAB_TRAIN_ROWS:], y[SKAB_TRAIN_ROWS:]
        else:
            rows_x, rows_y = x, y
        base = export.calibrate(fitted.holdout_energies, sc.quantile)  # fitted.threshold at F=1
        e = fitted.energies(windows_of(rows_x, w))
        if sc.accounting == "notebook":
            s = notebook_row_scores(e, len(rows_x), w)
        else:
            s = row_scores(e, len(rows_x), w, sc.rule)
        pred = s > base * sc.factor
        ok = np.isfinite(s)
        aucs.append(roc_auc(s[ok & ~rows_y], s[ok & rows_y]))
        scored.append((s, rows_y, base))
        per_file[name] = {"alarm_rate_healthy": round(float(pred[~rows_y].mean()), 4),
                          "detected": round(float(pred[rows_y].mean()), 4),
                          "auc": round(aucs[-1], 4),
                          "threshold": base * sc.factor}
    def pooled(factor):
        tp = fp = tn = fn = 0
        for s, yy, base in scored:
            c = _counts(s > base * factor, yy)
            tp, fp, tn, fn = tp + c[0], fp + c[1], tn + c[2], fn + c[3]
        return tp, fp, tn, fn
    tp, fp, tn, fn = pooled(sc.factor)
    sensitivity = {f"{f:.4g}": _rates(*pooled(f)) for f in SKAB_SENSITIVITY}
    return {**_rates(tp, fp, tn, fn),
            "auc_mean": float(np.mean(aucs)), "tp": tp, "fp": fp, "tn": tn, "fn": fn,
            "scoring": sc.__dict__.copy(), "sensitivity": sensitivity,
            "train_seconds": sum(f.seconds for f in fits),
            "steps_mean": float(np.mean([f.steps for f in fits])),
            "best_step_mean": float(np.mean([f.best_step for f in fits])),
            "files": per_file}


# --- CWRU --------------------------------------------------------------------------------------

def decimate(x, q):
    """Low-pass (windowed sinc, cut-off at 0.8 x the new Nyquist frequency) then keep every q-th
    sample: an anti-aliased downsampling with numpy alone."""
    if q == 1:
        return x
    taps = 16 * q + 1
    n = np.arange(taps) - (taps - 1) / 2
    cutoff = 0.8 / q  # as a fraction of the old Nyquist frequency
    h = cutoff * np.sinc(cutoff * n) * np.hamming(taps)
    h /= h.sum()
    return np.convolve(x, h, mode="same")[::q]


def load_cwru(folder):
    out = {}
    for pair, (healthy, fault, q) in CWRU_PAIRS.items():
        paths = [folder / "cwru" / healthy, folder / "cwru" / fault]
        for p in paths:
            if not p.is_file():
                raise DataMissing(f"missing CWRU file {p}")
        h = decimate(np.load(paths[0])["DE"][:, 0], q)
        f = np.load(paths[1])["DE"][:, 0]
        out[pair] = (h, f)
    return out


def cwru(ctx, variant, seed):
    res = {}
    for pair, (h, f) in ctx.cwru.items():
        half = len(h) // 2
        tr = h[:half, None]
        fitted = fit(windows_of(tr, CWRU_W, CWRU_TRAIN_HOP), tr, variant, seed, ctx,
                     CWRU_QUANTILE, CWRU_HOLDOUT)
        e_h = fitted.energies(windows_of(h[half:, None], CWRU_W, CWRU_W))
        e_f = fitted.energies(windows_of(f[:, None], CWRU_W, CWRU_W))
        res[pair] = {"auc": roc_auc(e_h, e_f),
                     "far": float((e_h > fitted.threshold).mean()),
                     "detected": float((e_f > fitted.threshold).mean()),
                     "healthy_windows": len(e_h), "fault_windows": len(e_f),
                     "train_seconds": fitted.seconds}
    return res


# --- NAB ---------------------------------------------------------------------------------------

def load_nab(folder):
    path, wpath = folder / "nab" / NAB_FILE, folder / "nab" / "windows.json"
    for p in (path, wpath):
        if not p.is_file():
            raise DataMissing(f"missing NAB file {p}")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    t = np.array([np.datetime64(r[0]) for r in rows], "datetime64[s]")
    v = np.array([float(r[1]) for r in rows])
    labelled = json.loads(wpath.read_text())
    key = next(k for k in labelled if k.endswith(NAB_FILE))
    wins = [(np.datetime64(a, "s"), np.datetime64(b, "s")) for a, b in labelled[key]]
    return t, v, wins


def hysteresis(anomalous, raise_after, clear_after):
    """The daemon's detect::Detector: raise once after raise_after consecutive anomalous windows,
    clear once after clear_after consecutive normal ones. Returns [(index, 'raised'|'cleared')]."""
    raised, run, out = False, 0, []
    for i, a in enumerate(anomalous):
        run = run + 1 if (a != raised) else 0
        if run >= (clear_after if raised else raise_after):
            raised, run = not raised, 0
            out.append((i, "raised" if raised else "cleared"))
    return out


def nab(ctx, variant, seed):
    t, v, wins = ctx.nab
    train_end = int(np.searchsorted(t, wins[0][0]))  # everything before the first window
    tr = v[:train_end, None]
    fitted = fit(windows_of(tr, NAB_W), tr, variant, seed, ctx, NAB_QUANTILE, NAB_HOLDOUT)
    # the scored stream starts with the training stretch's last W-1 rows, so the first scored
    # window ends at the first row after training: the daemon's window state is continuous
    test_v = v[train_end - NAB_W + 1:, None]
    end_t = t[train_end:]  # time of the row each scored window ends at
    e = fitted.energies(windows_of(test_v, NAB_W))
    over = e > fitted.threshold
    events = hysteresis(over, NAB_RAISE_AFTER, NAB_CLEAR_AFTER)
    raises = [end_t[i] for i, kind in events if kind == "raised"]
    inside = np.zeros(len(raises), bool)
    per_window = []
    for a, b in wins:
        hit = [i for i, r in enumerate(raises) if a <= r <= b]
        inside[hit] = True
        # an alert raised before the window and still up when it opens also covers it
        state_at_open = _raised_at(events, end_t, a)
        first = raises[hit[0]] if hit else None
        over_in = over[(end_t >= a) & (end_t <= b)]
        hours = np.timedelta64(1, "h")
        label = a + (b - a) // 2  # NAB centres each window on its labelled anomaly
        per_window.append({
            "start": str(a), "end": str(b),
            "hit": bool(hit),
            "alert_up_at_open": state_at_open,  # raised before the window: not a hit
            "after_start_h": None if first is None else round(float((first - a) / hours), 1),
            "before_label_h": None if first is None else round(float((label - first) / hours),
                                                               1),
            "windows_over_threshold": int(over_in.sum())})
    return {"windows_hit": sum(w["hit"] for w in per_window), "windows": len(wins),
            "alerts_outside": int((~inside).sum()), "alerts_inside": int(inside.sum()),
            "train_rows": train_end, "train_end": str(t[train_end]),
            "threshold": fitted.threshold, "per_window": per_window,
            "train_seconds": fitted.seconds}


def _raised_at(events, end_t, when):
    state = False
    for i, kind in events:
        if end_t[i] >= when:
            break
        state = kind == "raised"
    return state


# --- running and reporting ---------------------------------------------------------------------

@dataclass
class Context:
    cache: Path
    steps: int | None
    extra: list
    skab: list
    cwru: dict
    nab: tuple
    skab_scoring: SkabScoring = None


def _factor(text):
    """A positive number, or a fraction such as 4/3."""
    num, _, den = text.partition("/")
    try:
        v = float(num) / float(den) if den else float(num)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number or a fraction: {text!r}") from None
    if not (v > 0 and np.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return v


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m ebgand_trainer.evaluate",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train each mode (EBGAN and the plain autoencoder, same D, same data) on the "
                    "real recordings under the protocols of ../shared/data/README.md and print "
                    "a Markdown table of SKAB F1/FAR/MAR, CWRU ROC AUC and NAB windows hit. "
                    "See docs/EVALUATION.md.")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="the shared data folder (skab/, cwru/, nab/)")
    p.add_argument("--seeds", type=int, default=1,
                   help=f"seeds per mode ({FIRST_SEED}, {FIRST_SEED + 1}, ...); more than one "
                        "gives mean and spread")
    p.add_argument("--steps", type=int, help="D updates per model (default: the worker's)")
    p.add_argument("--modes", default=",".join(DEFAULT_VARIANTS),
                   help=f"comma-separated, from {', '.join(VARIANTS)}")
    p.add_argument("--only", default="skab,cwru,nab", help="comma-separated data sets to run")
    p.add_argument("--extra", default="",
                   help="further worker flags for every mode, e.g. '--lr 1e-4'")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--cache", type=Path,
                   help="training artifact cache (default: the worker's)")
    g = p.add_argument_group(
        "SKAB scoring (opt-in; the defaults are the protocol of docs/EVALUATION.md)")
    g.add_argument("--skab-conv-ae", action="store_true",
                   help="the SKAB Conv-AE notebook's scoring: --skab-window 60 --skab-rule "
                        "all-windows --skab-quantile 0.999 --skab-threshold-factor 4/3 (each "
                        "still overridable by its own flag)")
    g.add_argument("--skab-window", type=int, metavar="W", default=argparse.SUPPRESS,
                   help=f"rows per SKAB window (default {SKAB_W}; with --skab-conv-ae "
                        f"{SKAB_CONV_AE['window']})")
    g.add_argument("--skab-rule", choices=SKAB_RULES, default=argparse.SUPPRESS,
                   help="end: a row gets the energy of the window ending at it (default); "
                        "all-windows: the minimum over every window covering it, so it is "
                        "anomalous only when all of them are")
    g.add_argument("--skab-quantile", type=float, metavar="Q", default=argparse.SUPPRESS,
                   help=f"quantile of the held-out healthy energies (default {SKAB_QUANTILE}; "
                        f"with --skab-conv-ae {SKAB_CONV_AE['quantile']})")
    g.add_argument("--skab-threshold-factor", type=_factor, metavar="F",
                   default=argparse.SUPPRESS,
                   help="threshold = F x that quantile; a number or a fraction such as 4/3 "
                        "(default 1; with --skab-conv-ae 4/3)")
    g.add_argument("--skab-accounting", choices=("test", "whole-file", "notebook"),
                   default=argparse.SUPPRESS,
                   help="test: windows and metrics over the test rows (the protocol, default); "
                        "whole-file: a diagnostic outside the protocol, over every row of each "
                        "file including the 400 training rows, as the SKAB notebooks count; "
                        "notebook: whole-file plus the Conv-AE notebook's own row loop (w-1 "
                        "windows per row, no alarm in the first w-1 and last 2w-2 rows of a "
                        "file; needs --skab-rule all-windows)")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error("--seeds must be at least 1")
    if args.steps is not None and args.steps < 1:
        p.error("--steps must be positive")
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in args.modes:
        if m not in VARIANTS:
            p.error(f"unknown mode {m!r}; known: {', '.join(VARIANTS)}")
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    for s in args.only:
        if s not in ("skab", "cwru", "nab"):
            p.error(f"unknown data set {s!r}")
    args.extra = shlex.split(args.extra)
    # explicit --skab-* flags, else the --skab-conv-ae preset, else the protocol's defaults
    given = {k: getattr(args, f"skab_{k}") for k in ("window", "rule", "quantile", "accounting")
             if hasattr(args, f"skab_{k}")}
    if hasattr(args, "skab_threshold_factor"):
        given["factor"] = args.skab_threshold_factor
    args.skab_scoring = SkabScoring(
        **{**(SKAB_CONV_AE if args.skab_conv_ae else {}), **given})
    sc = args.skab_scoring
    if not 2 <= sc.window <= 120:
        p.error("--skab-window must be between 2 and 120 (the hold-out needs windows of the "
                "400 training rows)")
    if not 0 < sc.quantile < 1:
        p.error("--skab-quantile must be between 0 and 1")
    if sc.accounting == "notebook" and sc.rule != "all-windows":
        p.error("--skab-accounting notebook needs --skab-rule all-windows")
    return args


def _stat(values, digits=3, pct=False):
    a = np.asarray(values, float) * (100 if pct else 1)
    if len(a) == 1:
        return f"{a[0]:.{digits}f}"
    return f"{a.mean():.{digits}f} ± {a.std(ddof=1):.{digits}f}"


def summarise(runs):
    """runs: {mode: [result per seed]} -> rows of the Markdown table."""
    rows = []
    for mode, rs in runs.items():
        row = {"mode": mode}
        if "skab" in rs[0]:
            row["SKAB F1"] = _stat([r["skab"]["f1"] for r in rs], 3)
            row["SKAB FAR %"] = _stat([r["skab"]["far"] for r in rs], 1, pct=True)
            row["SKAB MAR %"] = _stat([r["skab"]["mar"] for r in rs], 1, pct=True)
            row["SKAB AUC"] = _stat([r["skab"]["auc_mean"] for r in rs], 3)
        if "cwru" in rs[0]:
            for pair in CWRU_PAIRS:
                row[f"CWRU {pair} AUC"] = _stat([r["cwru"][pair]["auc"] for r in rs], 4)
            row["CWRU FAR %"] = _stat([np.mean([r["cwru"][p]["far"] for p in CWRU_PAIRS])
                                       for r in rs], 1, pct=True)
        if "nab" in rs[0]:
            row["NAB windows hit (of 4)"] = _stat([r["nab"]["windows_hit"] for r in rs],
                                                  1 if len(rs) > 1 else 0)
            row["NAB false alerts"] = _stat([r["nab"]["alerts_outside"] for r in rs],
                                            1 if len(rs) > 1 else 0)
            leads = [[w["after_start_h"] for w in r["nab"]["per_window"]] for r in rs]
            row["NAB first alert, h into window"] = " / ".join(
                "–" if any(l[i] is None for l in leads) else _stat([l[i] for l in leads], 1)
                for i in range(len(leads[0])))
        row["train s"] = _stat([r["train_seconds"] for r in rs], 1)
        rows.append(row)
    return rows


def skab_sensitivity(runs):
    """Rows of the SKAB threshold-factor sensitivity table (same models, other thresholds)."""
    rows = []
    for mode, rs in runs.items():
        if "skab" not in rs[0]:
            continue
        row = {"mode": mode}
        for f in rs[0]["skab"]["sensitivity"]:
            vals = [r["skab"]["sensitivity"][f] for r in rs]
            row[f"F = {f}"] = " / ".join(
                [_stat([v["f1"] for v in vals], 3)]
                + [_stat([v[k] for v in vals], 1, pct=True) for k in ("far", "mar")])
        rows.append(row)
    return rows


def markdown(rows):
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _python():
    exe = Path(sys.executable)
    try:
        return str(exe.relative_to(REPO))
    except ValueError:
        return str(exe) if exe.name != "python3" else "python3"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("ebgand-evaluate %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    # the worker warns about small hold-out sets; SKAB's 96 are small by the protocol
    logging.getLogger("ebgand_trainer").setLevel(logging.ERROR)
    if not args.data.is_dir():
        sys.stderr.write(f"ebgand-evaluate: data folder {args.data} not found; pass --data "
                         "pointing at the shared data (skab/, cwru/, nab/; see "
                         "../shared/data/README.md)\n")
        return 2
    try:
        ctx = Context(cache=args.cache or cli.default_cache(), steps=args.steps, extra=args.extra,
                      skab=load_skab(args.data) if "skab" in args.only else None,
                      cwru=load_cwru(args.data) if "cwru" in args.only else None,
                      nab=load_nab(args.data) if "nab" in args.only else None,
                      skab_scoring=args.skab_scoring)
    except (DataMissing, OSError, ValueError) as e:
        sys.stderr.write(f"ebgand-evaluate: {e}\n")
        return 2
    t0 = time.monotonic()
    runs = {}
    for mode in args.modes:
        runs[mode] = []
        for seed in range(FIRST_SEED, FIRST_SEED + args.seeds):
            r = {"seed": seed}
            for name, fn in (("skab", skab), ("cwru", cwru), ("nab", nab)):
                if name in args.only:
                    r[name] = fn(ctx, mode, seed)
            r["train_seconds"] = (r.get("skab", {}).get("train_seconds", 0)
                                  + sum(c["train_seconds"] for c in r.get("cwru", {}).values())
                                  + r.get("nab", {}).get("train_seconds", 0))
            log.info("%s seed %d done (%.0f s so far)", mode, seed, time.monotonic() - t0)
            runs[mode].append(r)
    seconds = time.monotonic() - t0
    command = "PYTHONPATH=models/trainer " + shlex.join(
        [_python(), "-m", "ebgand_trainer.evaluate", *argv])
    rows = summarise(runs)
    sc = args.skab_scoring
    sens = skab_sensitivity(runs) if "skab" in args.only and not sc.is_default() else None
    if args.json:
        out = {"command": command, "seconds": round(seconds, 1),
               "onnxruntime": onnxruntime.__version__, "table": rows, "runs": runs}
        if sens is not None:
            out["skab_scoring"] = sc.describe()
            out["skab_sensitivity_table"] = sens
        print(json.dumps(out, indent=1, default=str))
    else:
        print(f"Command (from the repository root): `{command}`\n")
        if sens is not None:
            print(f"SKAB scoring: {sc.describe()}.\n")
        print(markdown(rows))
        if sens is not None:
            print(f"\nSKAB sensitivity to the threshold factor F (F1 / FAR % / MAR %; same "
                  f"models and energies, threshold = F x the {sc.quantile:g} quantile; "
                  f"sensitivity only, F = {sc.factor:.4g} was fixed before any run):\n")
            print(markdown(sens))
        print(f"\n{args.seeds} seed(s) per mode, {seconds:.0f} s in all.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
