"""python -m ebgand_trainer.selfcheck: train both modes, with both discriminators (the MLP and
the temporal convolutional one), on a synthetic healthy vibration signal through the real CLI,
then check the contract and the detection.

- contract: stdout is JSON lines (start, steps, done), the folder holds model.onnx and a
  manifest whose sha256 matches; an existing --out exits 2; SIGTERM exits 143 leaving nothing;
  the folders a killed worker left (artifact build, staging) are removed by the next run.
- detection: ROC AUC of exported-model energies, healthy test windows against each fault
  (spike, 50 -> 65 Hz frequency shift, dead sensor), must reach TARGET_AUC in both modes.
  Subtler faults are scored too, for information.

Prints one JSON summary on stdout; exits 1 if any check fails.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import nab
from .export import energies, session
from .version import sha256

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

TARGET_AUC = 0.95
W, RATE = 64, 1000
TRAIN, TEST, FAULTS = 4000, 2000, 500  # windows: training file, healthy test, each fault
# (mode, discriminator), named as in the summary
MODES = {"ebgan": ("ebgan", "mlp"), "ae": ("ae", "mlp"),
         "ebgan-conv": ("ebgan", "conv"), "ae-conv": ("ae", "conv")}


def healthy(n, rng, freq_scale=1.0):
    """The fixture's vibration signal (models/fixture/make_fixture.py), [n, W, 1] float32:
    1 + 0.5 (1+a) sin(2 pi 50 t/1000 + p1) + 0.2 sin(2 pi 100 t/1000 + p2) + N(0, 0.05^2),
    phases and a drawn per window because the stream is cut at arbitrary points."""
    f = 2 * np.pi * np.arange(W)[None, :, None] / RATE * freq_scale
    p1, p2 = (rng.uniform(0, 2 * np.pi, (n, 1, 1)) for _ in range(2))
    a = rng.uniform(-0.05, 0.05, (n, 1, 1))
    x = 1.0 + 0.5 * (1 + a) * np.sin(50 * f + p1) + 0.2 * np.sin(100 * f + p2)
    return (x + rng.normal(0.0, 0.05, x.shape)).astype(np.float32)


def faults(rng):
    """The fixture's faults, many windows each, the spike at a random place in the window."""
    spike = healthy(FAULTS, rng)
    at = rng.integers(0, W - 3, FAULTS)
    for k in range(3):
        spike[np.arange(FAULTS), at + k, 0] += 5.0
    return {"spike": spike,
            "frequency_shift": healthy(FAULTS, rng, freq_scale=65 / 50),
            "dead_sensor": np.zeros((FAULTS, W, 1), np.float32)}


def harder_faults(rng):
    """Subtler faults, reported but not gated: they show where the two modes differ."""
    small_spike = healthy(FAULTS, rng)
    small_spike[np.arange(FAULTS), rng.integers(0, W, FAULTS), 0] += 0.3  # 6 noise sigmas, 1 sample
    return {"small_spike": small_spike,
            "small_frequency_shift": healthy(FAULTS, rng, freq_scale=53 / 50),
            "amplitude_drop": (healthy(FAULTS, rng) - 1.0) * 0.8 + 1.0}  # oscillation -20 %


class CheckFailed(Exception):
    pass


def check(ok, what):
    """An assert that python -O cannot strip."""
    if not ok:
        raise CheckFailed(what)


def roc_auc(negatives, positives):
    """Probability that a fault window scores above a healthy one, ties counting half: the
    ROC AUC. All pairs at once; a million comparisons is nothing."""
    pos, neg = positives[:, None], negatives[None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


# The trainer runs as the supervisor runs it: a separate process, found through PYTHONPATH.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]))}


def trainer(tmp, *args):
    return [sys.executable, "-m", "ebgand_trainer", "--data", str(tmp / "train.npy"),
            "--cache", str(tmp / "cache"), *args]


def events(stdout):
    """Every stdout line must be one JSON object with an event field."""
    lines = [json.loads(line) for line in stdout.splitlines()]
    check(all(isinstance(e, dict) and "event" in e for e in lines), "non-event line on stdout")
    return lines


def train_mode(tmp, label, test, bad, harder):
    mode, d = MODES[label]
    out = tmp / "vibration" / f"selfcheck-{label}"
    run = subprocess.run(trainer(tmp, "--out", str(out), "--name", "vibration", "--version",
                                 out.name, "--mode", mode, "--discriminator", d),
                         capture_output=True, text=True, env=ENV)
    if run.returncode != 0:
        sys.stderr.write(run.stderr)
        raise CheckFailed(f"{mode}: trainer exited {run.returncode}: {run.stdout.strip()}")
    ev = events(run.stdout)
    kinds = [e["event"] for e in ev]
    check(kinds[0] == "start" and kinds[-1] == "done" and set(kinds[1:-1]) == {"step"},
          f"event order {kinds}")
    steps = [e["step"] for e in ev if e["event"] == "step"]
    check(steps == sorted(steps) and steps[-1] == ev[-1]["steps"], "step events out of order")
    check(all((e["g_loss"] is None) == (mode == "ae") for e in ev if e["event"] == "step"),
          "g_loss must be null exactly in ae mode")
    done = ev[-1]
    check(isinstance(done.get("peak_rss_mb"), (int, float)) and done["peak_rss_mb"] > 0,
          f"done.peak_rss_mb missing or not positive: {done.get('peak_rss_mb')!r}")

    manifest = tomllib.loads((out / "manifest.toml").read_text())
    model = (out / "model.onnx").read_bytes()
    check(manifest["sha256"] == sha256(model), "manifest sha256 does not match model.onnx")
    check(manifest["threshold"]["value"] == done["threshold"],
          "done.threshold differs from the manifest's")
    check(sorted(os.listdir(out)) == ["manifest.toml", "model.onnx"], f"unexpected files in {out}")
    sess = session(model)
    threshold = manifest["threshold"]["value"]
    e_test = energies(sess, test)
    auc, detected = {}, {}
    for name, x in bad.items():
        e = energies(sess, x)
        auc[name] = round(roc_auc(e_test, e), 4)
        detected[name] = round(float((e > threshold).mean()), 4)
    return {"auc": auc, "detected": detected,
            "harder_auc": {name: round(roc_auc(e_test, energies(sess, x)), 4)
                           for name, x in harder.items()},
            "false_alarms": round(float((e_test > threshold).mean()), 4),
            "threshold": threshold, "steps": done["steps"],
            "run_seconds": done["seconds"], "peak_rss_mb": done["peak_rss_mb"]}


def check_refuses_existing(tmp):
    out = tmp / "vibration" / "selfcheck-ae"  # written by train_mode
    run = subprocess.run(trainer(tmp, "--out", str(out), "--name", "vibration",
                                 "--version", out.name),
                         capture_output=True, text=True, env=ENV)
    ev = events(run.stdout)
    check(run.returncode == 2 and ev[-1]["event"] == "error",
          f"existing --out: exit {run.returncode}, {run.stdout!r}")


def check_sigterm(tmp):
    out = tmp / "vibration" / "selfcheck-term"
    proc = subprocess.Popen(trainer(tmp, "--out", str(out), "--name", "vibration", "--version",
                                    out.name, "--steps", "1000000", "--patience", "0"),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
    lines = []
    for line in proc.stdout:  # wait until training is under way
        lines.append(line)
        if json.loads(line)["event"] == "step":
            break
    proc.send_signal(signal.SIGTERM)
    lines += proc.stdout.readlines()
    rc = proc.wait(timeout=30)
    ev = events("".join(lines))
    check(rc == 143 and ev[-1]["event"] == "error", f"SIGTERM: exit {rc}, last event {ev[-1]}")
    leftovers = [p.name for p in out.parent.iterdir() if "selfcheck-term" in p.name]
    check(not leftovers, f"SIGTERM left {leftovers}")


def check_stale_leftovers(tmp):
    """Folders a worker killed mid-way left (an artifact build, a version's staging) are
    removed by the next run; recent ones (a concurrent run's) are not."""
    from .artifacts import remove_stale_builds
    from .version import STALE_S, staging
    cache, models = tmp / "cache", tmp / "leftovers"
    # Another version's staging too: the daemon names each version anew.
    old = [cache / ".build-old", models / ".v1.tmp-old", models / ".v0.tmp-old"]
    new = [cache / ".build-new", models / ".v1.tmp-new"]
    for p in old + new:
        p.mkdir(parents=True)
        (p / "model.onnx").write_bytes(b"half")
    then = time.time() - STALE_S - 60
    for p in old:
        os.utime(p, (then, then))
    remove_stale_builds(cache)
    fresh = staging(models / "v1")
    check(not any(p.exists() for p in old) and all(p.is_dir() for p in new),
          f"leftovers: {sorted(os.listdir(cache))} {sorted(os.listdir(models))}")
    fresh.rmdir()


def relative(tmp, version):
    """A short run of version with the cache given as the relative path `cache`."""
    cmd = trainer(tmp, "--out", str(tmp / "rel" / version), "--name", "rel", "--version",
                  version, "--steps", "20")
    cmd[cmd.index("--cache") + 1] = "cache"
    return cmd


def check_cache_entries(tmp):
    """A relative cache path trains (the build runs inside its own folder), and an entry a
    power cut left with an empty file is built again instead of failing every run."""
    from . import artifacts
    rel = tmp / "relative"
    rel.mkdir()
    run = subprocess.run(relative(tmp, "v1"), capture_output=True, text=True, env=ENV, cwd=rel)
    check(run.returncode == 0, f"relative --cache: exit {run.returncode}: {run.stderr[-400:]}")
    entries = [p for p in (rel / "cache").iterdir() if not p.name.startswith(".")]
    check(len(entries) == 1 and artifacts.whole(entries[0]), f"relative cache: {entries}")
    (entries[0] / "d_training_model.onnx").write_bytes(b"")
    run = subprocess.run(relative(tmp, "v2"), capture_output=True, text=True, env=ENV, cwd=rel)
    check(run.returncode == 0 and artifacts.whole(entries[0]),
          f"damaged cache entry: exit {run.returncode}: {run.stderr[-400:]}")


def check_float32_range(tmp):
    """float64 values past float32's range are named as such, not as NaN or infinity."""
    big = np.load(tmp / "train.npy").astype(np.float64)
    big[3, 0, 0] = 1e39
    np.save(tmp / "big.npy", big)
    cmd = trainer(tmp, "--out", str(tmp / "big" / "v1"), "--name", "big", "--version", "v1")
    cmd[cmd.index("--data") + 1] = str(tmp / "big.npy")
    run = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    check(run.returncode == 2 and "beyond float32's range" in run.stdout + run.stderr,
          f"float64 past float32: exit {run.returncode}: {run.stdout[-300:]}")


def main():
    t0 = time.monotonic()
    rng_train, rng_test, rng_fault = (np.random.default_rng(s)
                                      for s in np.random.SeedSequence(7).spawn(3))
    summary = {"target_auc": TARGET_AUC, "modes": {}}
    with tempfile.TemporaryDirectory(prefix="ebgand-selfcheck-") as tmp:
        tmp = Path(tmp)
        np.save(tmp / "train.npy", healthy(TRAIN, rng_train))
        test, bad, harder = healthy(TEST, rng_test), faults(rng_fault), harder_faults(rng_fault)
        try:
            for label in MODES:
                summary["modes"][label] = train_mode(tmp, label, test, bad, harder)
            check_refuses_existing(tmp)
            check_sigterm(tmp)
            check_stale_leftovers(tmp)
            check_cache_entries(tmp)
            check_float32_range(tmp)
            try:
                summary["nab_scorer"] = nab.check()
            except AssertionError as e:
                raise CheckFailed(f"NAB scorer: {e}") from e
            summary["contract"] = "ok"
        except CheckFailed as e:
            summary["contract"] = f"FAILED: {e}"
    aucs = [a for m in summary["modes"].values() for a in m["auc"].values()]
    summary["ok"] = (summary["contract"] == "ok" and len(aucs) == len(MODES) * 3
                     and min(aucs) >= TARGET_AUC)
    summary["seconds"] = round(time.monotonic() - t0, 2)
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
