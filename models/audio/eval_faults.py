#!/usr/bin/env python3
"""Clip-level detection of synthetic machine-sound faults by ebgand's audio models.

Trains (with `ebgand train --logmel`) an EBGAN and a plain autoencoder on 10 healthy DCASE clips,
then scores, with `ebgand score`, the 5 held-out healthy clips and the same clips with a fault
mixed in at --db relative to the clip's RMS: a tonal whine (3 kHz), periodic knocks (5 ms clicks
every 250 ms) and a band of noise (2-4 kHz). Prints, per mode, the window false-alarm rate on the
held-out healthy clips (windows over the model's calibrated threshold) against the calibrated
one, and the clip-level ROC AUC (clip energy = mean window energy) per fault.

Run from the repository root after `make setup` and `cargo build --release`:
    .venv/trainer/bin/python models/audio/eval_faults.py [--db -10] [--steps 600]
"""
import argparse
import json
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

RATE = 16_000


def read(path):
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768


def write(path, x):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(RATE)
        w.writeframes(np.clip(np.round(x * 32768), -32768, 32767).astype("<i2").tobytes())


def fault(x, kind, db, rng):
    """x plus a fault whose RMS is `db` relative to x's RMS."""
    t = np.arange(len(x)) / RATE
    if kind == "whine":
        f = np.sin(2 * np.pi * 3000 * t)
    elif kind == "knocks":
        f = np.zeros_like(x)
        for start in range(0, len(x), RATE // 4):
            n = min(80, len(x) - start)
            f[start:start + n] = rng.standard_normal(n) * np.exp(-np.arange(n) / 15)
    else:  # a band of noise, 2-4 kHz
        spec = np.fft.rfft(rng.standard_normal(len(x)))
        freqs = np.fft.rfftfreq(len(x), 1 / RATE)
        spec[(freqs < 2000) | (freqs > 4000)] = 0
        f = np.fft.irfft(spec, len(x))
    rms = lambda v: np.sqrt(np.mean(v ** 2))
    return x + f * rms(x) / rms(f) * 10 ** (db / 20)


def calibrated_quantile(model):
    """The holdout quantile the trainer set the threshold at, from the model's manifest."""
    import tomllib
    with open(Path(model) / "manifest.toml", "rb") as f:
        return tomllib.load(f)["threshold"]["quantile"]


def auc(neg, pos):
    neg, pos = np.asarray(neg), np.asarray(pos)
    return float(np.mean([(p > neg).mean() + 0.5 * (p == neg).mean() for p in pos]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/dcase2020/normal")
    ap.add_argument("--ebgand", default="target/release/ebgand")
    ap.add_argument("--db", type=float, default=-10.0)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--held", default="10,11,12,13,14",
                    help="comma-separated indices of the 5 held-out clips (default: the last 5); "
                         "the other 10 of clips 0-14 train")
    args = ap.parse_args()
    clips = sorted(Path(args.data).glob("normal_id_00_*.wav"))
    if len(clips) < 15:
        sys.exit(f"need 15 clips in {args.data}")
    held_ix = sorted({int(i) for i in args.held.split(",")})
    if len(held_ix) != 5 or not all(0 <= i < 15 for i in held_ix):
        sys.exit(f"--held needs 5 distinct indices in 0-14, got {args.held}")
    train = [c for i, c in enumerate(clips[:15]) if i not in held_ix]
    held = [clips[i] for i in held_ix]
    rng = np.random.default_rng(7)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        faulted = {k: [] for k in ("whine", "knocks", "noise band")}
        for c in held:
            x = read(c)
            for k in faulted:
                p = tmp / f"{k.replace(' ', '_')}-{c.name}"
                write(p, fault(x, k, args.db, rng))
                faulted[k].append(p)
        for mode in ("ebgan", "ae"):
            model = tmp / "machine" / mode
            subprocess.run([args.ebgand, "train", "--logmel", "--mode", mode, "--name", "machine",
                            "--version", mode, "--steps", str(args.steps), "--out", str(model),
                            *map(str, train)], check=True, capture_output=True)

            def score(path):
                # Against the model's calibrated threshold: a clip of 309 windows is shorter than
                # the probability's learning (every window would be learning, never anomalous).
                r = subprocess.run([args.ebgand, "score", "--model", str(model), "--judge",
                                    "threshold", str(path)],
                                   check=True, capture_output=True, text=True)
                lines = [json.loads(l) for l in r.stdout.splitlines()]
                windows = [l for l in lines if "seq" in l]
                return lines[-1]["clip_energy"], np.mean([w["anomalous"] for w in windows])

            healthy = [score(c) for c in held]
            row = {"window_far_heldout": float(np.mean([h[1] for h in healthy])),
                   "calibrated_far": round(1 - calibrated_quantile(model), 6),
                   "healthy_clip_energies": [round(h[0], 3) for h in healthy]}
            for k, paths in faulted.items():
                row[f"auc_{k}"] = auc([h[0] for h in healthy], [score(p)[0] for p in paths])
            out[mode] = row
    print(json.dumps({"db": args.db, "steps": args.steps, "held": held_ix, **out}, indent=1))


if __name__ == "__main__":
    main()
