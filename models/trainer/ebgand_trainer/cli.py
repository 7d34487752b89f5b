"""Command line of the training worker: arguments in, JSON lines of progress out, a model version
folder as the result. The contract the daemon's supervisor relies on is in README.md."""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import resource
import shlex
import signal
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import artifacts, export, graphs, train, version
from .ort import onnxruntime

log = logging.getLogger("ebgand_trainer")

STEP_INTERVAL = 0.05  # seconds between step events: at most ~20 a second for the supervisor
EXIT_USAGE = 2
MIN_STD = 1e-6  # below this a channel counts as constant (see _norm_stats)
CHECK_WINDOWS = 256  # hold-out windows scored by both the trained module and the export


class UsageError(Exception):
    """Bad arguments or input data: retrying will not help (exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print usage and exit; the supervisor wants JSON
        raise UsageError(message)


class Events:
    """The JSON-lines channel to the supervisor. It owns the real stdout: main() points file
    descriptor 1 at stderr, so nothing else (ORT, numpy, a stray print) can reach it."""

    def __init__(self, stream):
        self.stream, self.steps = stream, None
        self.last_emit = -math.inf
        self.pending = None  # latest step not yet emitted
        self.val = None  # validation energy measured since the last emitted step

    def emit(self, event, **fields):
        self.stream.write(json.dumps({"event": event, **fields}, allow_nan=False) + "\n")
        self.stream.flush()

    def start(self, mode, steps, windows):
        self.steps = steps
        self.emit("start", mode=mode, steps=steps, windows=windows)

    def step(self, step, d_loss, g_loss, val):
        if val is not None:
            self.val = val
        self.pending = {"step": step, "steps": self.steps, "d_loss": d_loss, "g_loss": g_loss}
        if time.monotonic() - self.last_emit >= STEP_INTERVAL:
            self.flush()

    def flush(self):
        """Emits the latest step if it was held back by the rate limit."""
        if self.pending is None:
            return
        if self.val is not None:
            self.pending["val_energy"] = self.val
        self.emit("step", **self.pending)
        self.pending, self.val, self.last_emit = None, None, time.monotonic()


class StopFlag:
    """SIGTERM/SIGINT only set a flag, polled at step boundaries and before publishing: a
    signal never interrupts ORT mid-call or a write half-way."""

    def __init__(self):
        self.signum = None

    def install(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, _frame):
        self.signum = signum

    def __call__(self):
        return self.signum is not None

    def check(self):
        if self.signum is not None:
            raise train.Stopped()


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action):  # no "(default: None)" on required flags
        return action.help if action.default is None else super()._get_help_string(action)


def parse_args(argv):
    p = _Parser(
        prog="python -m ebgand_trainer",
        formatter_class=_Help,
        description="Train an EBGAN (or, with --mode ae, a plain autoencoder) on healthy windows "
                    "with ONNX Runtime's training API and write a model version folder "
                    "(model.onnx + manifest.toml) that ebgand serves. stdout carries only JSON "
                    "progress lines; logs go to stderr.",
        epilog="Example: PYTHONPATH=models/trainer python -m ebgand_trainer --data windows.npy "
               "--out models/vibration/v2 --name vibration --version v2")
    add = p.add_argument
    add("--data", required=True, type=Path,
        help="healthy windows: .npy float array [N, W, C], in stream order")
    add("--out", required=True, type=Path,
        help="model version folder to create (must not exist), e.g. models/NAME/VERSION")
    add("--name", required=True, help="model family, written to the manifest")
    add("--version", required=True, help="model version, written to the manifest")
    add("--mode", choices=("ebgan", "ae"), default="ebgan",
        help="ebgan: alternate D and G steps; ae: D alone with margin 0, the plain autoencoder "
             "baseline")
    add("--steps", type=int, default=600, help="D updates")
    add("--batch", type=int, default=64, help="windows per step")
    add("--lr", type=float, default=1e-3, help="AdamW learning rate of D and G")
    add("--seed", type=int, default=7, help="seed of weights, batches and noise")
    add("--holdout", type=float, default=0.2,
        help="share of windows, from the end of --data, held out for validation and threshold")
    add("--quantile", type=float, default=0.995,
        help="threshold = this quantile of held-out energies")
    add("--latent", type=int, default=8, help="D's code size and G's noise size")
    add("--hidden", type=int, default=64, help="hidden layer width of D and G (conv D: a quarter "
        "of it, at least 4, is its feature maps per convolution)")
    add("--discriminator", choices=("mlp", "conv"), default="mlp",
        help="D's shape: mlp (dense autoencoder on the flattened window) or conv (1-D "
             "convolutions over the window's time axis, channels as input channels)")
    add("--kernel", type=int, default=5, help="conv D: odd kernel length along time")
    add("--margin", type=float, default=1.0,
        help="initial EBGAN margin, in energy units of the normalised window")
    add("--margin-decay", type=float, default=0.5,
        help="share of the steps over which the margin falls linearly to 0")
    add("--pt-weight", type=float, default=0.1,
        help="weight of the pulling-away term in G's loss")
    add("--g-target", choices=("mean", "boundary"), default="mean",
        help="ebgan: what G's loss aims at. mean: minimise E(G(z)) (EBGAN); boundary: pull "
             "E(G(z)) toward the boundary energy, the --target-quantile of D's energies on "
             "recent real batches (Fence-GAN style; experimental, see docs/EVALUATION.md)")
    add("--target-quantile", type=float, default=0.99,
        help="ebgan: quantile of recent real-batch energies taken as the boundary energy")
    add("--margin-mode", choices=("absolute", "relative"), default="absolute",
        help="ebgan: absolute: --margin in energy units; relative: --margin times the boundary "
             "energy (experimental)")
    add("--eval-every", type=int, default=20, help="steps between validation evaluations")
    add("--patience", type=int, default=5,
        help="evaluations without a lower validation energy before stopping early; 0: never")
    add("--device", choices=("cpu", "cuda"), default="cpu",
        help="cuda needs the onnxruntime-training (CUDA) build")
    add("--cache", type=Path,
        help="folder for cached training artifacts (default: $CACHE_DIRECTORY from systemd, "
             "else $XDG_CACHE_HOME or ~/.cache, under ebgand/trainer)")
    add("--command", help="command recorded in the manifest (default: this command line)")
    add("--features", type=json.loads, default=None,
        help="audio: the log-mel parameters (JSON object) the windows of stacked frames were "
             "made with; recorded as input kind \"logmel\" and a [features] table")
    add("--source", help="what the windows were cut from, recorded in the manifest "
                         "(default: the --data path)")
    add("--channel-names", type=json.loads, default=None,
        help="the channels' names (JSON list, one per channel, in order), recorded in the "
             "manifest: the daemon and `ebgand score` refuse a stream whose names differ")
    add("--channel-units", type=json.loads, default=None,
        help="the channels' units (JSON list, one per channel, in order), recorded in the manifest")
    args = p.parse_args(argv)
    for flag, names in (("--channel-names", args.channel_names), ("--channel-units", args.channel_units)):
        if names is not None and not (isinstance(names, list)
                                      and all(isinstance(n, str) and n for n in names)):
            raise UsageError(f"{flag} must be a JSON list of non-empty strings, got {names!r}")

    positive = {"--steps": args.steps, "--batch": args.batch, "--latent": args.latent,
                "--hidden": args.hidden, "--eval-every": args.eval_every, "--lr": args.lr,
                "--margin-decay": args.margin_decay}
    for flag, value in positive.items():
        if not (value > 0 and math.isfinite(value)):
            raise UsageError(f"{flag} must be positive, got {value}")
    if args.kernel < 1 or args.kernel % 2 == 0:
        raise UsageError(f"--kernel must be a positive odd number, got {args.kernel}")
    if args.batch < 2:
        raise UsageError("--batch must be at least 2 (the pulling-away term compares pairs)")
    for flag, value in {"--margin": args.margin, "--pt-weight": args.pt_weight,
                        "--patience": args.patience}.items():
        if not (value >= 0 and math.isfinite(value)):
            raise UsageError(f"{flag} must not be negative, got {value}")
    if not 0 < args.holdout < 1:
        raise UsageError(f"--holdout must be between 0 and 1, got {args.holdout}")
    if not 0 < args.target_quantile < 1:
        raise UsageError(f"--target-quantile must be between 0 and 1, got {args.target_quantile}")
    if not 0 < args.quantile < 1:
        raise UsageError(f"--quantile must be between 0 and 1, got {args.quantile}")
    for flag, value in {"--name": args.name, "--version": args.version}.items():
        if not value or value.startswith(".") or "/" in value or "\0" in value:
            raise UsageError(f"{flag} {value!r} is not a valid folder name")
    return args


def default_cache():
    """systemd's CacheDirectory= sets $CACHE_DIRECTORY: use it under the service."""
    if os.environ.get("CACHE_DIRECTORY"):
        return Path(os.environ["CACHE_DIRECTORY"].split(":")[0]) / "trainer"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ebgand" / "trainer"


def load_windows(path):
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UsageError(f"--data {path}: cannot read a .npy array: {e}") from e
    if not isinstance(x, np.ndarray):  # np.load opens .npz archives too
        raise UsageError(f"--data {path}: not a .npy array")
    if x.ndim != 3 or 0 in x.shape:
        raise UsageError(f"--data {path}: shape {x.shape}; expected [N, W, C] windows")
    if not np.issubdtype(x.dtype, np.floating):
        raise UsageError(f"--data {path}: dtype {x.dtype}; expected float32")
    big = np.isfinite(x) & (np.abs(x) > np.finfo(np.float32).max)
    if big.any():
        raise UsageError(f"--data {path}: {int(big.any(axis=(1, 2)).sum())} windows hold values "
                         f"beyond float32's range (±3.4e38; first: window "
                         f"{int(np.argmax(big.any(axis=(1, 2))))})")
    x = np.ascontiguousarray(x, dtype=np.float32)
    bad = ~np.isfinite(x).all(axis=(1, 2))
    if bad.any():
        raise UsageError(f"--data {path}: {int(bad.sum())} windows hold NaN or infinite values "
                         f"(first: window {int(np.argmax(bad))})")
    return x


def split(x, holdout):
    """The hold-out is the end of the data, not a shuffled sample: windows overlap and drift
    in time, so a shuffled split would calibrate on near-copies of training windows."""
    n_hold = max(1, round(len(x) * holdout))
    if len(x) - n_hold < 2:
        raise UsageError(f"--data has {len(x)} windows; too few to train with --holdout {holdout}")
    if n_hold < 200:
        log.warning("only %d held-out windows: the threshold quantile will be coarse", n_hold)
    return x[:-n_hold], x[-n_hold:]


def _norm_stats(train_x):
    """Per-channel mean and std of the training split, float32 as baked into the graph. A
    constant channel gets std 1: dividing by ~0 would turn float noise into alarms."""
    mean = train_x.mean(axis=(0, 1), dtype=np.float64)
    std = train_x.std(axis=(0, 1), dtype=np.float64)
    flat = std < MIN_STD * np.maximum(1.0, np.abs(mean))
    for c in np.flatnonzero(flat):
        log.warning("channel %d is constant in the training data (%g); its std is set to 1",
                    c, mean[c])
    std[flat] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def _file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _method(arch, ebgan):
    d = "MLP autoencoder D" if arch.d == "mlp" else f"D = {graphs.describe(arch)},"
    if ebgan:
        return f"EBGAN: {d} and MLP generator G, ONNX Runtime training API"
    alone = "" if arch.d == "mlp" else f" ({graphs.describe(arch)})"
    return f"autoencoder: EBGAN's D alone{alone} (margin 0, no G), ONNX Runtime training API"


def _manifest(args, argv, model, arch, train_x, hold_x, mean, std, result, threshold, e_hold,
              e_train):
    ebgan = args.mode == "ebgan"
    return version.manifest_text(
        {"format": version.FORMAT, "name": args.name, "version": args.version,
         "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
         "command": args.command or shlex.join(["python", "-m", "ebgand_trainer", *argv]),
         "sha256": version.sha256(model)},
        {"input": {"kind": "logmel" if args.features else "window", "name": "window", "window": arch.window,
                   "channels": arch.channels, "dtype": "float32",
                   "channel_names": args.channel_names, "channel_units": args.channel_units},
         "output": {"energy": "energy", "residual": "residual"},
         "threshold": {"value": threshold, "quantile": args.quantile, "windows": len(hold_x)},
         "data": {"source": args.source or os.path.abspath(args.data), "sha256": _file_sha256(args.data),
                  "train_windows": len(train_x), "holdout_windows": len(hold_x),
                  "mean": [float(v) for v in mean], "std": [float(v) for v in std]},
         "training": {
             "method": _method(arch, ebgan),
             "mode": args.mode, "discriminator": arch.d, "steps": result.steps_run, "steps_planned": args.steps,
             "best_step": result.best_step, "stopped_early": result.stopped_early,
             "batch": args.batch, "optimizer": "AdamW", "lr": args.lr,
             "hidden": args.hidden, "latent": args.latent,
             "kernel": arch.kernel if arch.d == "conv" else None,
             "margin": args.margin if ebgan else 0.0,
             "margin_decay": args.margin_decay if ebgan else None,
             "pt_weight": args.pt_weight if ebgan else None,
             "g_target": args.g_target if ebgan else None,
             "target_quantile": (args.target_quantile if ebgan and (
                 args.g_target == "boundary" or args.margin_mode == "relative") else None),
             "margin_mode": args.margin_mode if ebgan else None,
             "eval_every": args.eval_every, "patience": args.patience,
             "d_loss": result.d_loss, "g_loss": result.g_loss,
             "seed": args.seed, "seconds": round(result.seconds, 3), "device": args.device,
             "onnxruntime": onnxruntime.__version__},
         "validation": {
             "healthy_mean_energy": float(e_hold.mean()),
             "healthy_p50_energy": float(np.quantile(e_hold, 0.5)),
             "healthy_p90_energy": float(np.quantile(e_hold, 0.9)),
             "healthy_p99_energy": float(np.quantile(e_hold, 0.99)),
             "healthy_max_energy": float(e_hold.max()),
             "train_mean_energy": float(e_train.mean())},
         **({"features": args.features} if args.features else {})})


def train_config(args):
    """The training loop's settings from parsed arguments (also used by evaluate.py, so that
    an evaluation trains exactly as the worker does)."""
    return train.Config(mode=args.mode, steps=args.steps, batch=args.batch, lr=args.lr,
                        seed=args.seed, margin=args.margin, margin_decay=args.margin_decay,
                        pt_weight=args.pt_weight, eval_every=args.eval_every,
                        patience=args.patience, device=args.device, g_target=args.g_target,
                        target_quantile=args.target_quantile, margin_mode=args.margin_mode)


def peak_rss_mb():
    """Peak resident set size of this process so far, in MiB (Linux reports ru_maxrss in KiB).
    It covers the whole run: Python, numpy, ONNX Runtime, the data, training and export."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run(args, argv, events, stop):
    t0 = time.monotonic()
    out = Path(os.path.abspath(args.out))
    version.check_free(out)
    if (out.name, out.parent.name) != (args.version, args.name):
        log.warning("--out %s is not <models>/%s/%s; the registry expects NAME/VERSION folders",
                    out, args.name, args.version)
    providers = onnxruntime.get_available_providers()
    if args.device == "cuda" and "CUDAExecutionProvider" not in providers:
        raise UsageError(
            "--device cuda: this ONNX Runtime build has no CUDA provider (available: "
            f"{', '.join(providers)}); install "
            "onnxruntime-training==1.19.2 (the CUDA build) in place of onnxruntime-training-cpu")

    windows = load_windows(args.data)
    train_x, hold_x = split(windows, args.holdout)
    mean, std = _norm_stats(train_x)
    _, w, c = windows.shape
    if args.channel_names is not None and len(args.channel_names) != c:
        raise UsageError(f"--channel-names has {len(args.channel_names)} names for {c} channels")
    if args.channel_units is not None and len(args.channel_units) != c:
        raise UsageError(f"--channel-units has {len(args.channel_units)} units for {c} channels")
    arch = graphs.Arch(window=w, channels=c, hidden=args.hidden, latent=args.latent,
                       d=args.discriminator, kernel=args.kernel)
    cfg = train_config(args)
    # Staged before training so an unwritable destination fails now, not after the work.
    tmp = version.staging(out)
    try:
        events.start(args.mode, args.steps, len(windows))
        folder = artifacts.ensure(arch, args.cache or default_cache())
        stop.check()
        fresh = version.keep_fresh(tmp)

        def on_step(*progress):
            fresh()
            events.step(*progress)

        result = train.train(arch, cfg, folder, train_x, hold_x, mean, std, on_step, stop)
        events.flush()
        log.info("trained %d steps in %.2f s (best validation energy %.6g at step %d)",
                 result.steps_run, result.seconds, result.best_val_energy, result.best_step)

        model = export.export(result.d_module, arch, tmp)
        sess = export.session(model)
        export.check_against_training(sess, result.d_module, hold_x[:CHECK_WINDOWS], arch)
        e_hold = export.energies(sess, hold_x).astype(np.float64)
        threshold = export.calibrate(e_hold, args.quantile)
        e_train = export.energies(sess, train.subset(train_x, train.VAL_MAX)).astype(np.float64)
        text = _manifest(args, argv, model, arch, train_x, hold_x, mean, std, result, threshold,
                         e_hold, e_train)
        stop.check()
        version.publish(tmp, out, {"model.onnx": model, "manifest.toml": text.encode()})
    except BaseException:
        version.discard(tmp)
        raise
    events.emit("done", dir=str(out), threshold=threshold, steps=result.steps_run,
                seconds=round(time.monotonic() - t0, 3), peak_rss_mb=peak_rss_mb())


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    # Take the real stdout for events and point descriptor 1 at stderr, so that output from C++
    # (ORT) or any print cannot corrupt the JSON stream.
    sys.stdout.flush()
    events_stream = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    # Our own logger only: the root logger stays at WARNING, where ORT's chatter stays quiet.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("ebgand-trainer %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    stop = StopFlag()
    stop.install()
    events = Events(events_stream)
    try:
        args = parse_args(argv)
        run(args, argv, events, stop)
        return 0
    except (UsageError, version.Exists) as e:
        events.emit("error", message=str(e))
        return EXIT_USAGE
    except train.Stopped:
        name = signal.Signals(stop.signum).name
        events.emit("error", message=f"stopped by {name}; no model version written")
        return 128 + stop.signum
    except (train.Diverged, export.ExportError) as e:  # explained by their message
        events.emit("error", message=str(e))
        return 1
    except Exception as e:  # the supervisor needs a message, the operator the traceback
        traceback.print_exc(file=sys.stderr)
        events.emit("error", message=f"{type(e).__name__}: {e}")
        return 1
