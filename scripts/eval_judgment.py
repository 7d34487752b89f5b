"""Judgment on the dev sets through the daemon's own path: `ebgand train` on each recording's
training rows, `ebgand score --hop 1` over the whole recording (the detect stage's calibration,
adaptation and hysteresis, in stream order), then the published protocol on what it printed.

    PYTHONPATH=models/trainer .venv/trainer/bin/python scripts/eval_judgment.py

- NAB dev/ (12 streams): each stream trained on its probationary rows (min(15 %, 750)), windows
  of 12 steps; a detection is a row where the daemon raised an alert (binary scores, so NAB's
  threshold sweep has one choice); scored with `ebgand_trainer.nab` (NAB's sweeper and scorer,
  re-implemented), all three profiles.
- SKAB valve1 (16 files): trained on rows 0-399, windows of 16 rows x 8 channels; row t of the
  test part is predicted anomalous when the alert is up after the window ending at it (the
  daemon's verdict), and, beside it, when that window alone is anomalous; F1 / FAR / MAR pooled.

Each judging rule in --rules is run on the same trained models: `threshold` (the old default:
energy over the model's calibrated threshold) and `probability` (the new default), with any
`[detect]` overrides given as KEY=VALUE after a colon, e.g.
`probability:alert_probability=0.9999,clear_after=50`. Models are cached under
.cache/eval-judgment (delete it to retrain).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ebgand_trainer import nab

REPO = Path(__file__).resolve().parents[1]
SKAB_COLUMNS = ("Accelerometer1RMS,Accelerometer2RMS,Current,Pressure,Temperature,Thermocouple,"
                "Voltage,Volume Flow RateRMS")


def run(cmd, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(map(str, cmd))}\n{p.stderr[-3000:]}")
    return p.stdout


class Binary:
    def __init__(self, path, cache):
        self.path, self.cache = str(path), Path(cache)
        self.cache.mkdir(parents=True, exist_ok=True)
        # The built-in defaults (the documented config), not whatever ./config.toml says.
        empty = self.cache / "defaults.toml"
        empty.write_text("")
        self.env = {**os.environ, "EBGAND_LOG": "warn", "EBGAND_CONFIG": str(empty)}

    def train(self, key, file, read_args, rows, window, mode, seed, extra=()):
        out = self.cache / key / f"{mode}-{seed}"
        if (out / "manifest.toml").is_file():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        run([self.path, "train", str(file), *read_args, "--rows", rows, "--window", str(window),
             "--hop", "1", "--mode", mode, "--seed", str(seed), "--name", "eval",
             "--version", f"{mode}-{seed}", "--out", str(out), *extra], self.env)
        return out

    def score(self, model, file, read_args, rule, labels=None):
        name, _, overrides = rule.partition(":")
        env = dict(self.env)
        for kv in filter(None, overrides.split(",")):
            k, v = kv.split("=")
            env[f"EBGAND__DETECT__{k.strip().upper()}"] = v.strip()
        cmd = [self.path, "score", "--model", str(model), *read_args, "--hop", "1",
               "--judge", name, str(file)]
        if labels:
            cmd += ["--labels", labels]
        lines = [json.loads(x) for x in run(cmd, env).splitlines() if x.startswith("{")]
        return lines[:-1], lines[-1]


# --- NAB --------------------------------------------------------------------------------------

NAB_W = 12


def nab_files(data):
    folder = data / "nab" / "dev"
    windows = json.loads((folder / "combined_windows.json").read_text())
    out = []
    for key in sorted(windows):
        with open(folder / key, newline="") as f:
            stamps = [r[0] for r in list(csv.reader(f))[1:]]
        index = {t: i for i, t in enumerate(stamps)}
        wins = [(index[a[:19]], index[b[:19]]) for a, b in windows[key]]
        out.append((key, folder / key, len(stamps), wins))
    return out


def nab_eval(binary, data, mode, seed, rules):
    read = ["--columns", "value", "--timestamp-column", "timestamp"]
    per_rule = {r: [] for r in rules}
    files = nab_files(data)
    for key, path, n, wins in files:
        prob = nab.probationary_length(n)
        model = binary.train(f"nab/{key.replace('/', '_')}", path, read, f":{prob}", NAB_W, mode,
                             seed)
        for rule in rules:
            lines, _ = binary.score(model, path, read, rule)
            det = np.zeros(n)
            for v in lines:  # window seq ends at row seq + W - 1
                if v.get("transition") == "raised":
                    det[v["seq"] + NAB_W - 1] = 1.0
            per_rule[rule].append((det, wins))
    out = {}
    for rule, scored in per_rule.items():
        res = {}
        for profile in nab.PROFILES:
            s, _, per = nab.normalised(scored, profile, thresholds=[1.0])
            res[profile] = s
        res["hit"] = sum(p[1] for p in per)
        res["false"] = sum(p[2] for p in per)
        res["windows"] = sum(p[1] + p[3] for p in per)
        out[rule] = res
    return out


# --- SKAB -------------------------------------------------------------------------------------

SKAB_W = 16


def skab_eval(binary, data, mode, seed, rules):
    read = ["--delimiter", ";", "--timestamp-column", "datetime", "--columns", SKAB_COLUMNS]
    files = sorted((data / "skab" / "valve1").glob("*.csv"), key=lambda p: int(p.stem))
    counts = {r: {"state": np.zeros(4), "window": np.zeros(4)} for r in rules}
    for path in files:
        model = binary.train(f"skab/{path.stem}", path, read, ":400", SKAB_W, mode, seed,
                             ["--quantile", "0.99", "--", "--holdout", "0.25"])
        for rule in rules:
            lines, _ = binary.score(model, path, read, rule)
            with open(path, newline="") as f:
                y = np.array([r[9] == "1" or r[9] == "1.0" for r in list(csv.reader(f, delimiter=";"))[1:]])
            n = len(y)
            state = np.zeros(n, bool)
            window = np.zeros(n, bool)
            for v in lines:
                row = v["seq"] + SKAB_W - 1
                state[row] = v["state"] == "raised"
                window[row] = v["anomalous"]
            for pred, key in ((state, "state"), (window, "window")):
                p, t = pred[400:], y[400:]
                counts[rule][key] += [(p & t).sum(), (p & ~t).sum(), (~p & ~t).sum(), (~p & t).sum()]
    out = {}
    for rule, c in counts.items():
        out[rule] = {}
        for key, (tp, fp, tn, fn) in c.items():
            out[rule][key] = {"f1": 2 * tp / (2 * tp + fp + fn), "far": fp / (fp + tn),
                              "mar": fn / (fn + tp)}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--bin", type=Path, default=REPO / "target" / "release" / "ebgand")
    p.add_argument("--cache", type=Path, default=REPO / ".cache" / "eval-judgment")
    p.add_argument("--modes", default="ebgan,ae")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--only", default="nab,skab")
    p.add_argument("--rules", default="threshold;probability",
                   help="judging rules separated by ';' (see the module docs)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not args.bin.is_file():
        sys.exit(f"{args.bin} missing: cargo build --release")
    for need in ("nab/dev/combined_windows.json", "skab/valve1/0.csv"):
        if not (args.data / need).is_file():
            sys.exit(f"{args.data / need} missing: the shared data folder (../shared/data)")
    binary = Binary(args.bin, args.cache)
    rules = args.rules.split(";")
    results = []
    t0 = time.time()
    for mode in args.modes.split(","):
        for seed in range(7, 7 + args.seeds):
            r = {"mode": mode, "seed": seed}
            if "nab" in args.only:
                r["nab"] = nab_eval(binary, args.data, mode, seed, rules)
            if "skab" in args.only:
                r["skab"] = skab_eval(binary, args.data, mode, seed, rules)
            results.append(r)
            print(f"# {mode} seed {seed} done at {time.time() - t0:.0f} s", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print("| mode | judging | NAB dev standard | low FP | low FN | NAB windows hit | NAB false "
          "alerts | SKAB F1 / FAR % / MAR % (alert up) | SKAB (window alone) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mode in args.modes.split(","):
        rs = [r for r in results if r["mode"] == mode]
        for rule in rules:
            def stat(get, fmt="{:.1f}"):
                v = [get(r) for r in rs]
                return fmt.format(np.mean(v)) + (f" ± {fmt.format(np.std(v, ddof=1))}"
                                                  if len(v) > 1 else "")
            cells = [mode, f"`{rule}`"]
            if "nab" in args.only:
                cells += [stat(lambda r: r["nab"][rule]["standard"]),
                          stat(lambda r: r["nab"][rule]["reward_low_FP_rate"]),
                          stat(lambda r: r["nab"][rule]["reward_low_FN_rate"]),
                          stat(lambda r: r["nab"][rule]["hit"]) + f" of {rs[0]['nab'][rule]['windows']}",
                          stat(lambda r: r["nab"][rule]["false"])]
            else:
                cells += ["–"] * 5
            if "skab" in args.only:
                for key in ("state", "window"):
                    cells.append(" / ".join([
                        stat(lambda r: r["skab"][rule][key]["f1"], "{:.3f}"),
                        stat(lambda r: 100 * r["skab"][rule][key]["far"]),
                        stat(lambda r: 100 * r["skab"][rule][key]["mar"])]))
            else:
                cells += ["–", "–"]
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
