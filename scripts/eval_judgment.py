"""Judgment on the dev sets through the daemon's own path: `ebgand train` on each recording's
training rows, `ebgand score --hop 1` over the whole recording (the detect stage's calibration,
adaptation and hysteresis, in stream order), then the published protocol on what it printed.

    PYTHONPATH=models/trainer .venv/trainer/bin/python scripts/eval_judgment.py

- NAB dev/ (12 streams): each stream trained on its probationary rows (min(15 %, 750)), windows
  of 24 steps (`--nab-window`; 12 until round fifteen of docs/EVALUATION-ROUNDS.md); a
  detection is a row where the daemon raised an alert (binary scores, so NAB's threshold sweep has one
  choice; `--nab-read probability` gives each row its window's probability instead and lets
  the sweep choose, as a harness that reads `probability` would); scored with `ebgand_trainer.nab` (NAB's sweeper and scorer, re-implemented), all
  three profiles. Each file is scored from its first row (the calibration
  learns mostly on the training rows); `--nab-start seeded` scores as the daemon's cold start
  does: the calibration seeded by the probationary rows, judged from the row after them.
- NAB's five anomaly-free streams (`artificialNoAnomaly`, 5 of the 58, not in ../shared/data):
  look-alikes made each run (`null_files`), trained and scored as the dev files; every alert
  after the probationary rows is a false positive.
- NAB's long streams (realTweets, eight weeks): anomaly-free look-alikes of 16,128 steps made
  each run (`long_null_files`: daily cycles, a five-day week, daily counts, noise), where a
  season is chosen after `season_weeks` weeks; every alert after the probationary rows is false.
- Drifting anomaly-free streams (`--only drift`): four of eight weeks whose level moves
  (`drift_null_files`: a climb, a climb with a random walk, a walk, a daily cycle that
  climbs); every alert after the probationary rows is false.
- NAB's short streams (realAdExchange, realTraffic: 1,100-2,500 of its rows, not in
  ../shared/data): look-alikes of 1,600 and 2,400 rows cut from the dev files around each
  labelled window, its centre 100 to 1,200 rows after the probationary rows (`short_files`),
  windows re-made by NAB's rule; trained and scored as the dev files.
- NAB dev with one row in ten missing (`--only gaps`, `gappy_files`; the same rows every run,
  each labelled window kept in time): streams that skip samples, as NAB's realTraffic sensors
  and a machine's dropped readings do; trained and scored as the dev files.
- SKAB valve1 (16 files): trained on rows 0-399, windows of 16 rows x 8 channels; row t of the
  test part is predicted anomalous when the alert is up after the window ending at it (the
  daemon's verdict), and, beside it, when that window alone is anomalous; F1 / FAR / MAR pooled,
  and the alerts raised per file (one episode each: how often an incident is paged again). The
  calibration learns the windows of the training rows only (385), as NAB's rule has it for
  its probationary rows: every test row is judged (`--skab-learn configured`: `learn_windows`
  as configured, 512, so the first 127 test rows were learnt unjudged, before round forty).
  Beside the protocol, SKAB's anomaly-free recording as a false-alarm check: trained on its
  own first 400 rows, the share of the rows after them with the alert up, and the alerts.

Each judging rule in --rules is run on the same trained models; by default
`threshold:clear_after=5` (the first default: energy over the model's calibrated threshold,
clear after 5) and `probability` (today's: every `[detect]` setting at its default), the
table of docs/EVALUATION.md's first section. The defaults of earlier rounds:
`probability:alert_probability=0.999,clear_after=50,per_channel=false,restless_probability=0,quiet_windows=0`
(the calibrated probability of the whole energy, the default until round eleven of
docs/EVALUATION-ROUNDS.md), `probability:clear_after=30,restless_probability=0,quiet_windows=0`
(round eleven's: each channel's part calibrated too),
`probability:restless_probability=0,quiet_windows=0` (round twelve's: clear after 10),
`probability:quiet_windows=0` (round sixteen's: also the restless raise) and, since round
seventeen, `probability` with the quiet after a clear and later rounds' parts (round
forty's: `probability:part_tail_excesses=0`, each channel's tail above `tail_quantile`). Any
`[detect]` override goes after a colon as KEY=VALUE, e.g.
`probability:alert_probability=0.9999,clear_after=5`. --modes takes ebgan, ae, ebgan-conv and
ae-conv (the temporal convolutional D).

- MIMII fan (10 healthy, 10 faulty clips): 5 rotations, each trained (`train --logmel`) on 5
  healthy clips and scored on the other 5 and the 10 faulty ones; clip score = mean window
  energy; ROC AUC per rotation. The same with each clip under another machine's sound (a DCASE
  clip) at -6 dB, since the clean fan's faults are easy for every model (`noisy_fan`): once
  with the first twenty DCASE clips, some in states of their own, and once with the twenty
  in its most ordinary states.
- DCASE (70 healthy clips): 3 random splits of 60 training / 10 held-out clips; the held-out
  clips with the synthetic faults of models/audio/eval_faults.py at -10 dB; clip AUC per fault,
  and the held-out healthy windows over the model's threshold.

Models are cached under .cache/eval-judgment, each with the arguments it was trained by: a
model asked for with other arguments is trained again (delete the folder to retrain all).
"""
from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ebgand_trainer import nab
from ebgand_trainer.evaluate import roc_auc

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
        # The caller's EBGAND__* overrides would change them unseen: left out.
        env = {k: v for k, v in os.environ.items() if not k.startswith("EBGAND__")}
        self.env = {**env, "EBGAND_LOG": "warn", "EBGAND_CONFIG": str(empty)}

    def default(self, section, key):
        """A setting's built-in default (`ebgand print-default-config`)."""
        if not hasattr(self, "_defaults"):
            import tomllib
            self._defaults = tomllib.loads(run([self.path, "print-default-config"], self.env))
        return self._defaults[section][key]

    def _trained(self, out, args, worker=()):
        """The model `ebgand train ARGS --out OUT [-- WORKER]` writes, trained unless the
        cache holds one trained by the same arguments (kept beside it, OUT.train-args.json);
        one trained otherwise, or before the arguments were kept, is trained again."""
        args = [str(a) for a in args] + (["--", *map(str, worker)] if worker else [])
        record = out.parent / f"{out.name}.train-args.json"
        if (out / "manifest.toml").is_file() and record.is_file() \
                and json.loads(record.read_text()) == args:
            return out
        shutil.rmtree(out, ignore_errors=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        cut = args.index("--") if "--" in args else len(args)
        run([self.path, "train", *args[:cut], "--out", str(out), *args[cut:]], self.env)
        record.write_text(json.dumps(args))
        return out

    def train(self, key, file, read_args, rows, window, model, seed, extra=(), worker=()):
        """model: "ebgan" or "ae", with "-conv" for the temporal convolutional D."""
        mode, _, d = model.partition("-")
        worker = [*worker, *(["--discriminator", d] if d else [])]
        return self._trained(self.cache / key / f"{model}-{seed}", [
            file, *read_args, "--rows", rows, "--window", window, "--hop", "1", "--mode", mode,
            "--seed", seed, "--name", "eval", "--version", f"{model}-{seed}", *extra], worker)

    def train_clips(self, key, clips, model, seed):
        mode, _, d = model.partition("-")
        return self._trained(self.cache / key / f"{model}-{seed}", [
            "--logmel", *clips, "--mode", mode, "--seed", seed, "--name", "eval",
            "--version", f"{model}-{seed}"], ["--discriminator", d] if d else [])

    def score_clip(self, model, path):
        cmd = [self.path, "score", "--judge", "threshold", "--model", str(model), str(path)]
        lines = [json.loads(x) for x in run(cmd, self.env).splitlines() if x.startswith("{")]
        return lines[:-1], lines[-1]

    def score(self, model, file, read_args, rule, labels=None, detect=None):
        """detect: `[detect]` settings for this run, under the rule's own overrides."""
        name, _, overrides = rule.partition(":")
        env = dict(self.env)
        for k, v in (detect or {}).items():
            env[f"EBGAND__DETECT__{k.upper()}"] = str(v)
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

# Two hours of 5-minute steps: round fifteen of docs/EVALUATION-ROUNDS.md (12, one hour, until
# then).
NAB_W = 24


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


# A NAB file's columns, as `ebgand train` and `score` read them.
NAB_READ = ["--columns", "value", "--timestamp-column", "timestamp"]


def data_args(p):
    """The arguments every script here takes: the data, the binary and the model cache."""
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--bin", type=Path, default=REPO / "target" / "release" / "ebgand")
    p.add_argument("--cache", type=Path, default=REPO / ".cache" / "eval-judgment")


def nab_model(binary, cached, key, path, n, window, mode, seed, trainer=()):
    """The model of one NAB (or look-alike) file, trained on its probationary rows, cached
    under `cached`."""
    return binary.train(f"{cached}/{key.replace('/', '_')}", path, NAB_READ,
                        f":{nab.probationary_length(n)}", window, mode, seed, worker=trainer)


def probation_learning(binary, n, window):
    """NAB's rule for a file scored from its first row: `[detect]` settings that learn its
    probationary windows when they are fewer than `learn_windows`, then judge (None: the
    default learning)."""
    probation = nab.probationary_length(n) - window + 1  # windows ending in those rows
    return ({"learn_windows": probation}
            if probation < binary.default("detect", "learn_windows") else None)


def start_args(binary, n, window, start="stream", learn="probation"):
    """How a file of `n` rows is scored from `start` (see `nab_eval`): the row its first
    window starts at, `score`'s row arguments, and the `[detect]` settings of the run."""
    prob = nab.probationary_length(n)
    first = prob if start in ("after-training", "seeded") else 0
    rows = ["--rows", f"{first}:"] if first else []
    if start == "seeded":
        rows += ["--seed-rows", f":{prob}"]
    detect = (probation_learning(binary, n, window)
              if learn == "probation" and start == "stream" else None)
    return first, rows, detect


def nab_lines(binary, entry, cached, mode, seed, rule, window=NAB_W, start="stream"):
    """`score`'s lines for one file of `nab_files` (or a look-alike), as `nab_eval` scores it:
    trained on its probationary rows, scored from `start`; each line's `seq` counts windows
    from the file's first row whatever the start."""
    key, path, n, _ = entry
    model = nab_model(binary, cached, key, path, n, window, mode, seed)
    first, rows, detect = start_args(binary, n, window, start)
    lines, _ = binary.score(model, path, [*NAB_READ, *rows], rule, detect=detect)
    return [{**v, "seq": v["seq"] + first} for v in lines]


# NAB's threshold sweep over a per-row probability (`--nab-read probability`): from 0.9 to
# 1 - 1e-9 in quarter steps of nines, and 1.
NINES = [1 - 10 ** -(k / 4) for k in range(4, 37)] + [1.0]


def nab_eval(binary, data, mode, seed, rules, start="stream", window=NAB_W, retrain=0,
             trainer=(), files=None, folder="nab", learn="probation", read="raises"):
    """start: "stream" scores each file from its first row, so the calibration learns on the
    stream's first windows, most of them the rows the model was trained on (a model trained
    offline and deployed from the stream's start); "after-training" scores from the end of the
    probationary rows, so it learns on windows the model has not seen (capture, train,
    activate, then learn_windows before judging); "seeded" scores from the end of the
    probationary rows with the calibration seeded by their newest windows (`score
    --seed-rows`), as the daemon's cold start does since round thirteen. retrain: replay
    the daemon's continual learning every that many windows (`score --retrain-every`).
    trainer: further trainer arguments (`--latent 4`); their models are cached apart. files:
    other files than dev's (`null_files`), their models cached under `folder`. learn:
    "probation" learns, from the stream's start, the probationary rows' windows if fewer than
    `[detect] learn_windows` (NAB's rule: learn on the probationary period, then judge; a
    seeded start does so by itself, `Calibrator::learnt_from_seed`); "configured" learns
    `learn_windows` on every file (before round nineteen). read: "raises" marks the rows
    where an alert was raised (a detection: NAB's sweep has one threshold to choose);
    "probability" gives each row its window's probability and lets NAB's sweep choose the
    threshold (`NINES`), as a harness reading `probability` would."""
    per_rule = {r: [] for r in rules}
    files = files or nab_files(data)
    cached = f"{folder}-w{window}"  # models of each window length cached apart
    if trainer:
        cached += "-" + "".join(trainer).replace("-", "")
    for key, path, n, wins in files:
        model = nab_model(binary, cached, key, path, n, window, mode, seed, trainer)
        first, rows, detect = start_args(binary, n, window, start, learn)
        if retrain:
            rows += ["--retrain-every", str(retrain)]
        for rule in rules:
            lines, _ = binary.score(model, path, [*NAB_READ, *rows], rule, detect=detect)
            det = np.zeros(n)
            for v in lines:  # window seq ends at row first + seq + W - 1
                if read == "probability":
                    det[first + v["seq"] + window - 1] = v.get("probability") or 0.0
                elif v.get("transition") == "raised":
                    det[first + v["seq"] + window - 1] = 1.0
            per_rule[rule].append((det, wins))
    out = {}
    for rule, scored in per_rule.items():
        res = {}
        for profile in nab.PROFILES:
            if not any(wins for _, wins in scored):  # no window: no normalised score
                pts = [nab.points(len(d), w) for d, w in scored]
                per = [nab.file_score(d, p, 1.0, profile) for (d, _), p in zip(scored, pts)]
                s = float("nan")
            else:
                s, _, per = nab.normalised(scored, profile,
                                           thresholds=NINES if read == "probability" else [1.0])
            res[profile] = s
            if profile == "standard":  # per file: raw score, windows hit, false alerts
                res["files"] = {Path(key).stem: list(p[:3]) for (key, *_), p in zip(files, per)}
                standard = per
        # The counts at the standard profile's threshold (each profile sweeps its own).
        res["hit"] = sum(p[1] for p in standard)
        res["false"] = sum(p[2] for p in standard)
        res["windows"] = sum(p[1] + p[3] for p in standard)
        out[rule] = res
    return out


# NAB's five streams with no anomaly (artificialNoAnomaly: 5 of its 58, not in ../shared/data),
# where every alert after the probationary rows is a false positive. Look-alikes, made the same
# way every run: 4,032 5-minute steps each, as NAB's.
NULL_STEPS = 4032


def mean_day(data):
    """The mean day (288 5-minute steps) of the first, healthy week of dev's
    `art_daily_jumpsup` (before its anomaly): the shape of the anomaly-free look-alikes."""
    with open(data / "nab" / "dev" / "artificialWithAnomaly" / "art_daily_jumpsup.csv",
              newline="") as f:
        week = np.array([float(r[1]) for r in list(csv.reader(f))[1:2017]])
    return week.reshape(7, 288).mean(axis=0)


def write_series(folder, group, series, t0):
    """Writes each of `series` (name: values) as a NAB CSV of 5-minute steps from `t0` into
    `folder`; returns them as `nab_eval` takes files (no labelled window), under `group/`."""
    import datetime
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, values in series.items():
        path = folder / f"{name}.csv"
        with open(path, "w") as f:
            f.write("timestamp,value\n")
            for i, v in enumerate(values):
                stamp = t0 + datetime.timedelta(minutes=5 * i)
                f.write(f"{stamp:%Y-%m-%d %H:%M:%S},{v:.6f}\n")
        out.append((f"{group}/{name}.csv", path, len(values), []))
    return out


@functools.cache  # the same files for every model and seed of a run
def null_files(data, folder):
    """Writes the look-alikes into `folder`: the daily ones from `mean_day`, bare, with noise
    of 1 % of its range, and as a square wave between its extremes; a flat line; Gaussian
    noise."""
    import datetime
    day = mean_day(data)
    daily = np.tile(day, NULL_STEPS // 288)
    low, high = float(day.min()), float(day.max())
    rng = np.random.default_rng(0)
    series = {
        "art_daily_no_noise": daily,
        "art_daily_small_noise": daily + rng.normal(0.0, 0.01 * (high - low), NULL_STEPS),
        "art_daily_perfect_square_wave": np.where(np.arange(NULL_STEPS) % 288 < 144, low, high),
        "art_flatline": np.full(NULL_STEPS, low),
        "art_noisy": rng.normal(low, 0.1 * (high - low), NULL_STEPS),
    }
    return write_series(folder, "artificialNoAnomaly", series, datetime.datetime(2014, 4, 1))


# NAB's long streams (realTweets: about 15,800 5-minute steps, 8 weeks), where a season is
# chosen after `season_weeks` weeks and a weekly schedule shows. Anomaly-free look-alikes, made the same
# way every run: 16,128 steps each (8 weeks).
LONG_STEPS = 16128


@functools.cache  # the same files for every model and seed of a run
def long_null_files(data, folder):
    """Writes the long look-alikes into `folder`: `mean_day` with noise of 1 % and 5 % of its
    range; the same on a five-day week (weekends at 30 % of the day's swing, which a
    probationary period of 2.6 weekdays never shows); counts with a daily cycle (Poisson, a
    tweet volume without bursts); Gaussian noise."""
    import datetime
    day = mean_day(data)
    low, high = float(day.min()), float(day.max())
    t = np.arange(LONG_STEPS)
    daily = np.tile(day, LONG_STEPS // 288)
    weekend = (t // 288) % 7 >= 5
    rng = np.random.default_rng(0)
    rate = 20.0 * (1.0 + 0.8 * np.sin(2 * np.pi * (t % 288) / 288))
    series = {
        "long_daily_small_noise": daily + rng.normal(0.0, 0.01 * (high - low), LONG_STEPS),
        "long_daily_noise": daily + rng.normal(0.0, 0.05 * (high - low), LONG_STEPS),
        "long_weekdays_noise": np.where(weekend, low + 0.3 * (daily - low), daily)
        + rng.normal(0.0, 0.05 * (high - low), LONG_STEPS),
        "long_daily_counts": rng.poisson(rate).astype(float),
        "long_noisy": rng.normal(low, 0.1 * (high - low), LONG_STEPS),
    }
    # From a Thursday: the probationary rows are weekdays.
    return write_series(folder, "longNoAnomaly", series, datetime.datetime(2015, 2, 26))


# Drifting anomaly-free streams: eight weeks (16,128 5-minute steps) whose level moves, with a
# daily cycle or without one (round twenty-eight of docs/EVALUATION-ROUNDS.md).
@functools.cache  # the same files for every model and seed of a run
def drift_null_files(data, folder):
    """Writes the drifting look-alikes into `folder`: noise on a straight climb; the same with
    a slow random walk added; a random walk alone; `mean_day` climbing by a fifth of its
    swing a week (a daily cycle whose level drifts: a plant warming over a season)."""
    import datetime
    day = mean_day(data)
    low, high = float(day.min()), float(day.max())
    t = np.arange(LONG_STEPS)
    climb = 10.0 * t / 2016  # 10 a week
    rng = np.random.default_rng(1)
    series = {
        "drift_climb": 50 + climb + rng.normal(0.0, 1.0, LONG_STEPS),
        "drift_climb_walk": 50 + climb + np.cumsum(rng.normal(0.0, 0.05, LONG_STEPS))
        + rng.normal(0.0, 0.5, LONG_STEPS),
        "drift_walk": 50 + np.cumsum(rng.normal(0.0, 0.2, LONG_STEPS)),
        "drift_daily": np.tile(day, LONG_STEPS // 288) + 0.2 * (high - low) * t / 2016
        + rng.normal(0.0, 0.02 * (high - low), LONG_STEPS),
    }
    return write_series(folder, "driftNoAnomaly", series, datetime.datetime(2015, 2, 26))


# The anomaly-free sets: `--only` key -> (the function writing its files, its table's title).
NULL_SETS = {
    "null": (null_files, "NAB's 5 anomaly-free look-alikes"),
    "long": (long_null_files, "5 anomaly-free look-alikes of 8 weeks"),
    "drift": (drift_null_files, "4 drifting anomaly-free streams of 8 weeks"),
}


def null_eval(binary, data, mode, seed, rules, start="stream", window=NAB_W, learn="probation",
              kind="null"):
    """One of `NULL_SETS`, trained and scored as `nab_eval` does the dev files: the alerts
    raised after the probationary rows (each costs NAB's false-positive weight)."""
    files = NULL_SETS[kind][0](data, binary.cache / f"nab-{kind}-data")
    scored = nab_eval(binary, data, mode, seed, rules, start, window, files=files,
                      folder=f"nab-{kind}", learn=learn)
    return {rule: {"false": res["false"],
                   "files": {k: v[2] for k, v in res["files"].items()}}
            for rule, res in scored.items()}


# NAB's short streams: realAdExchange's 6 (about 1,600 rows) and realTraffic's 7 (1,100-2,500),
# 13 of its 58, none in ../shared/data: their probationary rows make fewer windows than
# [detect] learn_windows. Look-alikes: (length, rows from the end of the probationary rows to
# the labelled window's centre).
SHORT_CUTS = [(1600, (100, 250, 500)), (2400, (100, 250, 600, 1200))]


@functools.cache  # the same files for every model and seed of a run
def short_files(data, folder):
    """Writes the look-alikes into `folder`: for every dev window and cut that fit in its file,
    the rows around it, with a window for each dev window centred after the cut's probationary
    rows, of NAB's width (10 % of the rows over the windows' number)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for key, path, n, wins in nab_files(data):
        with open(path, newline="") as f:
            rows = list(csv.reader(f))[1:]
        centres = [(a + b) // 2 for a, b in wins]
        for length, offsets in SHORT_CUTS:
            prob = nab.probationary_length(length)
            for d in offsets:
                for c in centres:
                    first = c - prob - d
                    if first < 0 or first + length > n:
                        continue
                    inside = [x - first for x in centres if prob <= x - first < length]
                    width = length // 10 // len(inside)
                    cut_wins = [(max(0, x - width // 2), min(length - 1, x + width // 2))
                                for x in inside]
                    name = f"{Path(key).stem}_{length}_{d}_{c}"
                    cut = folder / f"{name}.csv"
                    with open(cut, "w") as f:
                        f.write("timestamp,value\n")
                        f.writelines(f"{r[0]},{r[1]}\n" for r in rows[first:first + length])
                    out.append((f"short/{name}.csv", cut, length, cut_wins))
    return out


# Streams that skip samples: NAB's realTraffic sensors report at irregular times, and a
# sensor on a machine drops a reading now and then. Every dev file with one row in ten
# missing (the same rows every run), its labelled windows kept in time.
GAPS_SHARE = 0.1


@functools.cache  # the same files for every model and seed of a run
def gappy_files(data, folder, fill=False):
    """Writes each dev file into `folder` with `GAPS_SHARE` of its rows removed at random
    (never the first), each labelled window from its first row kept to its last. With `fill`,
    each removed row is written back holding the value before it, at its own time (what a
    windower filling gaps on the stream's step would see; `scripts/screen_filled_gaps.py`)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for key, path, n, wins in nab_files(data):
        with open(path, newline="") as f:
            rows = list(csv.reader(f))[1:]
        arrived = (rng.random(n) >= GAPS_SHARE) | (np.arange(n) == 0)
        name = Path(key).stem
        cut = folder / f"{name}.csv"
        if fill:
            held = np.maximum.accumulate(np.where(arrived, np.arange(n), 0))
            with open(cut, "w") as f:
                f.write("timestamp,value\n")
                f.writelines(f"{rows[i][0]},{rows[held[i]][1]}\n" for i in range(n))
            out.append((f"filled/{name}.csv", cut, n, wins))
            continue
        keep = np.flatnonzero(arrived)
        new = {int(i): j for j, i in enumerate(keep)}
        kept_wins = []
        for a, b in wins:
            inside = keep[(keep >= a) & (keep <= b)]
            kept_wins.append((new[int(inside[0])], new[int(inside[-1])]))
        with open(cut, "w") as f:
            f.write("timestamp,value\n")
            f.writelines(f"{rows[i][0]},{rows[i][1]}\n" for i in keep)
        out.append((f"gaps/{name}.csv", cut, len(keep), kept_wins))
    return out


# The sets with labelled windows besides NAB dev: `--only` key -> (the function writing its
# files, its table's title).
WINDOWED_SETS = {
    "short": (short_files, "NAB short look-alikes"),
    "gaps": (gappy_files, "NAB dev, one row in ten missing,"),
}


def windowed_eval(binary, data, mode, seed, rules, start="stream", window=NAB_W,
                  learn="probation", kind="short"):
    """One of `WINDOWED_SETS`, trained and scored as `nab_eval` does the dev files."""
    files = WINDOWED_SETS[kind][0](data, binary.cache / f"nab-{kind}-data")
    scored = nab_eval(binary, data, mode, seed, rules, start, window, files=files,
                      folder=f"nab-{kind}", learn=learn)
    return {rule: {k: res[k] for k in ("standard", "hit", "false", "windows", "files")}
            for rule, res in scored.items()}


# --- SKAB -------------------------------------------------------------------------------------

SKAB_W = 16
SKAB_TRAIN = 400  # the protocol: rows 0-399 train, the rest is test


def skab_learning(binary, window_len, learn="protocol"):
    """SKAB's protocol trains on rows 0-399 and judges every row after them: `[detect]`
    settings that learn only the windows ending in the training rows when they are fewer than
    `learn_windows` (None: the configured learning)."""
    train = SKAB_TRAIN - window_len + 1
    return ({"learn_windows": train}
            if learn == "protocol" and train < binary.default("detect", "learn_windows") else None)


def skab_eval(binary, data, mode, seed, rules, window_len=SKAB_W, learn="protocol"):
    read = ["--delimiter", ";", "--timestamp-column", "datetime", "--columns", SKAB_COLUMNS]
    detect = skab_learning(binary, window_len, learn)
    files = sorted((data / "skab" / "valve1").glob("*.csv"), key=lambda p: int(p.stem))
    counts = {r: {"state": np.zeros(4), "window": np.zeros(4)} for r in rules}
    raises = {r: 0 for r in rules}
    for path in files:
        folder = "skab" if window_len == SKAB_W else f"skab-w{window_len}"
        model = binary.train(f"{folder}/{path.stem}", path, read, f":{SKAB_TRAIN}", window_len,
                             mode, seed, ["--quantile", "0.99"], ["--holdout", "0.25"])
        for rule in rules:
            lines, _ = binary.score(model, path, read, rule, detect=detect)
            with open(path, newline="") as f:
                y = np.array([r[9] == "1" or r[9] == "1.0" for r in list(csv.reader(f, delimiter=";"))[1:]])
            n = len(y)
            state = np.zeros(n, bool)
            window = np.zeros(n, bool)
            for v in lines:
                row = v["seq"] + window_len - 1
                state[row] = v["state"] == "raised"
                raises[rule] += v.get("transition") == "raised"
                window[row] = v["anomalous"]
            for pred, key in ((state, "state"), (window, "window")):
                p, t = pred[SKAB_TRAIN:], y[SKAB_TRAIN:]
                counts[rule][key] += [(p & t).sum(), (p & ~t).sum(), (~p & ~t).sum(), (~p & t).sum()]
    out = {}
    for rule, c in counts.items():
        out[rule] = {}
        for key, (tp, fp, tn, fn) in c.items():
            out[rule][key] = {"f1": 2 * tp / (2 * tp + fp + fn), "far": fp / (fp + tn),
                              "mar": fn / (fn + tp)}
        out[rule]["raises_per_file"] = raises[rule] / len(files)
    # The anomaly-free recording (another regime, 9,405 rows: 2.6 hours), a false-alarm check
    # outside the protocol: trained on its own first 400 rows, every row after them with the
    # alert up is a false alarm, and every alert raised a false one.
    free = data / "skab" / "anomaly-free.csv"
    model = binary.train(f"{folder}/anomaly-free", free, read, f":{SKAB_TRAIN}", window_len, mode,
                         seed, ["--quantile", "0.99"], ["--holdout", "0.25"])
    for rule in rules:
        lines, _ = binary.score(model, free, read, rule, detect=detect)
        up = [v["state"] == "raised" for v in lines if v["seq"] + window_len - 1 >= SKAB_TRAIN]
        out[rule]["free"] = {"far": float(np.mean(up)),
                             "raises": sum(v.get("transition") == "raised" for v in lines)}
    return out


# --- machine sound ----------------------------------------------------------------------------

sys.path.insert(0, str(REPO / "models" / "audio"))
FAN_ROTATIONS = 5  # train on 5 of the 10 healthy fan clips, test on the other 5 + 10 faulty
DCASE_SPLITS = 3  # random 60 / 10 splits of the 70 healthy DCASE clips
DCASE_DB = -10.0  # synthetic faults (models/audio/eval_faults.py) at this level


def clip(binary, model, path):
    """Clip energy (mean window energy, DCASE's clip score) and the share of the clip's windows
    over the model's threshold (a 10 s clip scored on its own is shorter than a stream's
    learning, so the alarm rate is the threshold rule's)."""
    lines, last = binary.score_clip(model, path)
    return last["clip_energy"], float(np.mean([v["anomalous"] for v in lines]))


FAN_NOISE_DB = -6.0  # the fan under another machine's sound at this SNR (MIMII's lowest)


def ordinary_clips(clips, n):
    """The n clips whose mean log-mel spectra are nearest (RMS over bands) the mean of all of
    them, nearest first: the machine in its ordinary states."""
    import eval_faults
    import logmel_reference  # models/audio
    spectra = np.array([logmel_reference.log_mel(eval_faults.read(c), eval_faults.RATE).mean(0)
                        for c in clips])
    order = np.argsort(np.sqrt(((spectra - spectra.mean(0)) ** 2).mean(1)))
    return [clips[i] for i in order[:n]]


def noisy_fan(data, folder, ordinary=False):
    """The fan's clips, each with a recording of another machine (a DCASE clip, id 00) mixed in
    at FAN_NOISE_DB: the dev fan's faults are easy on their own (every model scores 1.000), so
    this is the version that tells models apart. By default healthy fan clips get the first
    ten DCASE clips and faulty ones the next ten, some of them in operating states no other
    clip shares; ordinary: the twenty nearest the machine's mean spectrum (`ordinary_clips`),
    alternately to a healthy and a faulty clip, so both see the other machine in its ordinary
    states. Written once into `folder`."""
    import eval_faults  # models/audio: WAV reading and writing
    background = sorted((data / "dcase2020" / "normal").glob("*.wav"))
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    chosen = None
    for k, kind in enumerate(("normal", "abnormal")):
        out[kind] = []
        for i, c in enumerate(sorted((data / "mimii-fan" / kind).glob("*.wav"))):
            path = folder / f"{kind}-{c.name}"
            if not path.is_file():
                x = eval_faults.read(c)
                if ordinary:
                    chosen = chosen or ordinary_clips(background, 20)
                    b = eval_faults.read(chosen[2 * i + k])[:len(x)]
                else:
                    b = eval_faults.read(background[i + 10 * k])[:len(x)]
                # SNR: the fan's power over the other machine's, in dB
                y = x + b * np.sqrt(np.mean(x ** 2) / np.mean(b ** 2)) * 10 ** (-FAN_NOISE_DB / 20)
                eval_faults.write(path, y / max(1.0, np.abs(y).max() / 0.99))
            out[kind].append(path)
    return out["normal"], out["abnormal"]


def fan_rotations(binary, data, mode, seed, train=None):
    """For each fan set, the fan alone (key ""), under another machine's clips ("noisy_") and
    under its ordinary states ("ordinary_"), and each of FAN_ROTATIONS: the set's key, the
    model trained on 5 of its 10 healthy clips, the other 5, and its faulty clips. `train(key,
    clips)` makes the model (default: `train --logmel` in `mode` with `seed`, cached)."""
    train = train or functools.partial(binary.train_clips, model=mode, seed=seed)
    clean = (sorted((data / "mimii-fan" / "normal").glob("*.wav")),
             sorted((data / "mimii-fan" / "abnormal").glob("*.wav")))
    noise = f"{FAN_NOISE_DB:g}"
    for key, folder, (normal, abnormal) in (
            ("", "fan", clean),
            ("noisy_", f"fan-noisy{noise}",
             noisy_fan(data, binary.cache / f"fan-noisy{noise}-data")),
            ("ordinary_", f"fan-ordinary{noise}",
             noisy_fan(data, binary.cache / f"fan-ordinary{noise}-data", ordinary=True))):
        for r in range(FAN_ROTATIONS):
            clips = [normal[(2 * r + i) % len(normal)] for i in range(5)]
            held = [c for c in normal if c not in clips]
            yield key, train(f"{folder}/rot{r}", clips), held, abnormal


def fan_eval(binary, data, mode, seed, train=None, read=None):
    """Clip AUCs over `fan_rotations`: the fan alone ("auc"), under another machine's clips
    ("noisy_auc") and under its ordinary states ("ordinary_auc"), with each one's worst
    rotation. `train` as `fan_rotations`'s; `read(clip)`: the file `score` reads for a clip
    (default: the clip itself)."""
    read = read or (lambda c: c)
    aucs = {}
    for key, model, held, abnormal in fan_rotations(binary, data, mode, seed, train):
        e_h = [clip(binary, model, read(c))[0] for c in held]
        e_a = [clip(binary, model, read(c))[0] for c in abnormal]
        aucs.setdefault(key, []).append(roc_auc(np.array(e_h), np.array(e_a)))
    out = {}
    for key, per in aucs.items():
        out.update({f"{key}auc": float(np.mean(per)), f"{key}auc_min": float(np.min(per))})
    out["per_rotation"] = aucs[""]
    return out


DCASE_FAULTS = ("whine", "knocks", "noise band")  # models/audio/eval_faults.py's


def dcase_splits(binary, data, mode, seed, train=None):
    """For each of DCASE_SPLITS random 60 / 10 splits of the healthy DCASE clips (drawn by
    the seed): the model trained on the 60, the 10 held out, and for each of DCASE_FAULTS
    the 10 with it mixed in at DCASE_DB (files that last until the next split). `train(key,
    clips)` as `fan_rotations`'s."""
    train = train or functools.partial(binary.train_clips, model=mode, seed=seed)
    import tempfile
    import eval_faults  # models/audio: the synthetic faults
    clips = sorted((data / "dcase2020" / "normal").glob("*.wav"))
    rng_split = np.random.default_rng(1000 + seed)
    for s in range(DCASE_SPLITS):
        order = rng_split.permutation(len(clips))
        held = [clips[i] for i in order[:10]]
        model = train(f"dcase/split{s}-{seed}", [clips[i] for i in order[10:]])
        rng = np.random.default_rng(s)
        with tempfile.TemporaryDirectory() as tmp:
            faulty = {}
            for kind in DCASE_FAULTS:
                faulty[kind] = []
                for c in held:
                    p = Path(tmp) / f"{kind.replace(' ', '_')}-{c.name}"
                    eval_faults.write(p, eval_faults.fault(eval_faults.read(c), kind, DCASE_DB,
                                                           rng))
                    faulty[kind].append(p)
            yield model, held, faulty


def dcase_eval(binary, data, mode, seed, train=None, read=None):
    """Clip AUC of each synthetic fault and the window alarm rate of the held-out healthy
    clips, means over `dcase_splits`; `train` and `read` as `fan_eval`'s."""
    read = read or (lambda c: c)
    out = {"auc": {}, "window_far": []}
    per_kind = {k: [] for k in DCASE_FAULTS}
    for model, held, faulty in dcase_splits(binary, data, mode, seed, train):
        healthy = [clip(binary, model, read(c)) for c in held]
        out["window_far"].append(float(np.mean([h[1] for h in healthy])))
        for kind, paths in faulty.items():
            per_kind[kind].append(roc_auc(np.array([h[0] for h in healthy]),
                                          np.array([clip(binary, model, read(p))[0]
                                                    for p in paths])))
    out["auc"] = {k: float(np.mean(v)) for k, v in per_kind.items()}
    out["window_far"] = float(np.mean(out["window_far"]))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data_args(p)
    p.add_argument("--modes", default="ebgan,ae",
                   help="models: ebgan, ae, and ebgan-conv / ae-conv for the temporal conv D")
    p.add_argument("--seeds", type=int, default=1,
                   help="seeds per mode: --first-seed, the next, ... (mean ± sample sd)")
    p.add_argument("--first-seed", type=int, default=7,
                   help="the first seed (default 7, the trainer's; the defaults were chosen on "
                        "7-9, so 10 and on check them on seeds they were not chosen on)")
    p.add_argument("--only", default="nab,null,long,drift,short,gaps,skab,fan,dcase",
                   help="nab: NAB dev; null: look-alikes of NAB's five anomaly-free streams; "
                        "long: anomaly-free look-alikes eight weeks long; drift: drifting "
                        "anomaly-free streams eight weeks long; "
                        "short: look-alikes of its short streams; gaps: NAB dev with one row "
                        "in ten missing; skab; fan; dcase")
    p.add_argument("--rules", default="threshold:clear_after=5;probability",
                   help="judging rules separated by ';', each a rule and its [detect] "
                        "overrides (default: the first default and today's; the module "
                        "docs name earlier rounds' defaults)")
    p.add_argument("--nab-start", choices=("stream", "after-training", "seeded"),
                   default="stream",
                   help="NAB: score from each file's first row (calibration learns on the "
                        "training rows), from the end of its probationary rows (calibration "
                        "learns on rows the model has not seen), or from there with the "
                        "calibration seeded by the probationary rows (the daemon's cold start)")
    p.add_argument("--nab-learn", choices=("probation", "configured"), default="probation",
                   help="NAB: learn each stream's probationary windows when fewer than [detect] "
                        "learn_windows, then judge (NAB's rule), or learn_windows on every file "
                        "(before round nineteen; a short stream judged later)")
    p.add_argument("--nab-retrain", type=int, default=0, metavar="N",
                   help="NAB: replay the daemon's continual learning, retraining every N windows "
                        "(2016: the weekly default at 5-minute steps; 288: daily, the default "
                        "until round eighteen; 0: off)")
    p.add_argument("--nab-trainer-args", default="", metavar="ARGS",
                   help="NAB: further trainer arguments, e.g. '--latent 4' (models cached apart)")
    p.add_argument("--nab-window", type=int, default=NAB_W,
                   help=f"NAB: window length in steps (default {NAB_W}, two hours of 5-minute steps)")
    p.add_argument("--skab-window", type=int, default=SKAB_W,
                   help=f"SKAB: window length in rows (default {SKAB_W})")
    p.add_argument("--skab-learn", choices=("protocol", "configured"), default="protocol",
                   help="SKAB: the calibration learns the windows of the 400 training rows only, "
                        "and every test row is judged (the protocol), or [detect] learn_windows "
                        "(512: the first 127 test rows learnt unjudged; before round forty)")
    p.add_argument("--nab-read", choices=("raises", "probability"), default="raises",
                   help="NAB: a detection is a row where an alert was raised (the daemon's), or "
                        "each row carries its window's probability and NAB's sweep chooses the "
                        "threshold (what a harness reading `probability` gets)")
    p.add_argument("--nab-per-file", action="store_true",
                   help="NAB: also print each file's standard raw score beside those of NAB's "
                        "published detectors (scripts/nab_published.py)")
    p.add_argument("--json", type=Path, help="also write every number to this file")
    p.add_argument("--table", type=Path, help="print the table of an earlier --json file")
    args = p.parse_args(argv)
    if args.table:
        results = json.loads(args.table.read_text())
        modes = list(dict.fromkeys(r["mode"] for r in results))
        first = results[0]
        rules = list(next((first[k] for k in ("nab", *NULL_SETS, *WINDOWED_SETS, "skab")
                           if k in first), {}).keys())
        only = [k for k in ("nab", *NULL_SETS, *WINDOWED_SETS, "skab", "fan", "dcase")
                if k in first]
        table(results, modes, rules, only)
        if args.nab_per_file and "nab" in only:
            nab_file_table(results, modes, rules)
        return
    if not args.bin.is_file():
        sys.exit(f"{args.bin} missing: cargo build --release")
    for need in ("nab/dev/combined_windows.json", "skab/valve1/0.csv", "mimii-fan/normal/00.wav",
                 "dcase2020/normal"):
        if not (args.data / need).exists():
            sys.exit(f"{args.data / need} missing: the shared data folder (../shared/data)")
    binary = Binary(args.bin, args.cache)
    rules = args.rules.split(";")
    results = []
    t0 = time.time()
    for mode in args.modes.split(","):
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            r = {"mode": mode, "seed": seed}
            if "nab" in args.only:
                r["nab"] = nab_eval(binary, args.data, mode, seed, rules, args.nab_start,
                                    args.nab_window, args.nab_retrain,
                                    args.nab_trainer_args.split(), learn=args.nab_learn,
                                    read=args.nab_read)
            for kind in NULL_SETS:
                if kind in args.only:
                    r[kind] = null_eval(binary, args.data, mode, seed, rules, args.nab_start,
                                        args.nab_window, args.nab_learn, kind=kind)
            for kind in WINDOWED_SETS:
                if kind in args.only:
                    r[kind] = windowed_eval(binary, args.data, mode, seed, rules,
                                            args.nab_start, args.nab_window, args.nab_learn,
                                            kind=kind)
            if "skab" in args.only:
                r["skab"] = skab_eval(binary, args.data, mode, seed, rules, args.skab_window,
                                        args.skab_learn)
            if "fan" in args.only:
                r["fan"] = fan_eval(binary, args.data, mode, seed)
            if "dcase" in args.only:
                r["dcase"] = dcase_eval(binary, args.data, mode, seed)
            results.append(r)
            print(f"# {mode} seed {seed} done at {time.time() - t0:.0f} s", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    table(results, args.modes.split(","), rules, args.only)
    if args.nab_per_file and "nab" in args.only:
        nab_file_table(results, args.modes.split(","), rules)


def nab_file_table(results, modes, rules):
    """Each NAB dev file's standard raw score (mean over seeds; windows hit and false alerts
    beside it) against NAB's published detectors on the same file."""
    from nab_published import PUBLISHED
    ours = [(mode, rule) for mode in modes for rule in rules]
    print()
    print("| file | " + " | ".join(PUBLISHED) + " | "
          + " | ".join(f"{m} `{r}` (hit, false)" for m, r in ours) + " |")
    print("|---" * (1 + len(PUBLISHED) + len(ours)) + "|")
    files = list(next(iter(PUBLISHED.values()))[3])
    for f in files:
        cells = [f"`{f}`"] + [f"{v[3][f]:.2f}" for v in PUBLISHED.values()]
        for mode, rule in ours:
            per = [r["nab"][rule]["files"][f] for r in results if r["mode"] == mode]
            raw, hit, false = np.mean(per, axis=0)
            cells.append(f"{raw:.2f} ({hit:.1f}, {false:.1f})")
        print("| " + " | ".join(cells) + " |")
    cells = ["NAB dev, normalised"] + [
        f"{100 * (sum(v[3].values()) + 23) / 46:.1f}" for v in PUBLISHED.values()]
    cells += [mean_spread([r["nab"][rule]["standard"] for r in results if r["mode"] == mode],
                          "{:.1f}") for mode, rule in ours]
    print("| " + " | ".join(cells) + " |")
    cells = ["all 58 files (published)"] + [f"{v[2]:.1f}" for v in PUBLISHED.values()]
    print("| " + " | ".join(cells + ["–"] * len(ours)) + " |")


def mean_spread(values, fmt):
    """Mean, and ± the sample standard deviation over seeds when there are several."""
    spread = f" ± {fmt.format(np.std(values, ddof=1))}" if len(values) > 1 else ""
    return fmt.format(np.mean(values)) + spread


def audio_table(results, modes):
    print()
    print("| mode | MIMII fan clip AUC (5 rotations) | worst rotation | the fan under another "
          f"machine at {FAN_NOISE_DB:g} dB: AUC | its worst rotation | the other machine in its "
          "ordinary states: AUC | its worst rotation | DCASE synthetic faults AUC whine / knocks / noise "
          "band | DCASE held-out windows over threshold % |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mode in modes:
        rs = [r for r in results if r["mode"] == mode]

        def stat(get, fmt="{:.3f}"):
            return mean_spread([get(r) for r in rs], fmt)
        cells = [mode]
        if "fan" in rs[0]:
            cells += [stat(lambda r: r["fan"]["auc"]), stat(lambda r: r["fan"]["auc_min"])]
            cells += [stat(lambda r, k=k: r["fan"].get(k, np.nan))
                      for k in ("noisy_auc", "noisy_auc_min", "ordinary_auc", "ordinary_auc_min")]
        else:
            cells += ["–"] * 6
        if "dcase" in rs[0]:
            cells += [" / ".join(stat(lambda r, k=k: r["dcase"]["auc"][k])
                                 for k in ("whine", "knocks", "noise band")),
                      stat(lambda r: 100 * r["dcase"]["window_far"], "{:.1f}")]
        else:
            cells += ["–", "–"]
        print("| " + " | ".join(cells) + " |")


def null_table(results, modes, rules, key):
    """Alerts on one of `NULL_SETS` (`key`): all of them false, each file over the seeds."""
    what = NULL_SETS[key][1]
    names = list(next(iter(results[0][key].values()))["files"])
    print(f"| mode | judging | false alerts on {what} (per seed) | "
          + " | ".join(f"`{n}`" for n in names) + " |")
    print("|---" * (3 + len(names)) + "|")
    for mode in modes:
        rs = [r for r in results if r["mode"] == mode]
        for rule in rules:
            cells = [mode, f"`{rule}`",
                     mean_spread([r[key][rule]["false"] for r in rs], "{:.1f}")]
            cells += [mean_spread([r[key][rule]["files"][n] for r in rs], "{:.1f}")
                      for n in names]
            print("| " + " | ".join(cells) + " |")


def windowed_table(results, modes, rules, key):
    """NAB's standard score, windows hit and false alerts on one of `WINDOWED_SETS` (`key`)."""
    title = WINDOWED_SETS[key][1]
    n = results[0][key][rules[0]]["windows"]
    print(f"| mode | judging | {title} standard | windows hit (of {n}) "
          "| false alerts |")
    print("|---|---|---|---|---|")
    for mode in modes:
        rs = [r[key] for r in results if r["mode"] == mode]
        for rule in rules:
            print(f"| {mode} | `{rule}` | "
                  + " | ".join(mean_spread([r[rule][k] for r in rs], fmt) for k, fmt in
                               (("standard", "{:.1f}"), ("hit", "{:.1f}"), ("false", "{:.0f}")))
                  + " |")


def table(results, modes, rules, only):
    if any(k in only for k in ("fan", "dcase")):
        audio_table(results, modes)
        print()
    for key in NULL_SETS:
        if key in only:
            null_table(results, modes, rules, key)
            print()
    for key in WINDOWED_SETS:
        if key in only:
            windowed_table(results, modes, rules, key)
            print()
    if not any(k in only for k in ("nab", "skab")):
        return
    print("| mode | judging | NAB dev standard | low FP | low FN | NAB windows hit | NAB false "
          "alerts | SKAB F1 / FAR % / MAR % (alert up) | SKAB (window alone) "
          "| SKAB alerts per file | SKAB anomaly-free: rows with the alert up % / alerts |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for mode in modes:
        rs = [r for r in results if r["mode"] == mode]
        for rule in rules:
            def stat(get, fmt="{:.1f}"):
                return mean_spread([get(r) for r in rs], fmt)
            cells = [mode, f"`{rule}`"]
            if "nab" in only:
                cells += [stat(lambda r: r["nab"][rule]["standard"]),
                          stat(lambda r: r["nab"][rule]["reward_low_FP_rate"]),
                          stat(lambda r: r["nab"][rule]["reward_low_FN_rate"]),
                          stat(lambda r: r["nab"][rule]["hit"]) + f" of {rs[0]['nab'][rule]['windows']}",
                          stat(lambda r: r["nab"][rule]["false"])]
            else:
                cells += ["–"] * 5
            if "skab" in only:
                for key in ("state", "window"):
                    cells.append(" / ".join([
                        stat(lambda r: r["skab"][rule][key]["f1"], "{:.3f}"),
                        stat(lambda r: 100 * r["skab"][rule][key]["far"]),
                        stat(lambda r: 100 * r["skab"][rule][key]["mar"])]))
                cells.append(stat(lambda r: r["skab"][rule].get("raises_per_file", np.nan),
                                  "{:.2f}"))
                free = [r["skab"][rule].get("free", {}) for r in rs]
                cells.append(" / ".join([
                    mean_spread([100 * f.get("far", np.nan) for f in free], "{:.1f}"),
                    mean_spread([f.get("raises", np.nan) for f in free], "{:.1f}")]))
            else:
                cells += ["–", "–", "–", "–"]
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
