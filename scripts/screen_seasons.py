"""Screens ways to find a stream's season (docs/EVALUATION-ROUNDS.md, round twenty-two),
replayed over the probabilities `ebgand score` printed with seasons off, on NAB dev, the look-alikes of its
short streams and of its anomaly-free ones:

    PYTHONPATH=models/trainer .venv/trainer/bin/python scripts/screen_seasons.py   # 2 min

Same models and files as `eval_judgment.py --only nab,short,null` (its cache is reused). Each
window's seasonal energy is the mean over it of each sample's squared difference from the mean
of the same moment in the last four seasons; it is calibrated by a Python copy of the
calibrator's tail model (empirical below the 0.98 quantile of log-energy, exponential above),
seeded on the rows the season was found on and learning judged windows under 0.99 in both
probabilities; a window's probability is the larger of the two (or, `bonferroni`, twice the
smaller tail). The raise rule is `screen_raise_rules.restless_rule`, checked against the
daemon's raises with seasons off. The replay ignores that the calibration would have learnt
other windows around the extra raises, and approximates the daemon's histogram.

Ways to find the season:
- `range`: the lag of the highest autocorrelation between two windows and a third (or a half)
  of the probationary rows;
- `own horizon`: a day and a week from the timestamps, each measured over its first K periods;
- `same weeks` (built): a day and a week measured over the same first K weeks.
"""
import collections
import csv
import datetime
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_judgment as ej  # noqa: E402
import screen_raise_rules as sr  # noqa: E402
from ebgand_trainer import nab  # noqa: E402

W = ej.NAB_W
MEMORY = 4


def load(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    t = np.array([datetime.datetime.strptime(r[0][:19], "%Y-%m-%d %H:%M:%S").timestamp()
                  for r in rows])
    return t, np.array([float(r[1]) for r in rows])


def acf(x, lag):
    a, b = x[:-lag] - x[:-lag].mean(), x[lag:] - x[lag:].mean()
    d = math.sqrt((a * a).sum() * (b * b).sum())
    return (a * b).sum() / d if d > 0 else 0.0


class Tail:
    """The calibrator's tail model on log10 energies, refitted every 25 values."""

    def __init__(self):
        self.v, self.fit, self.dirty = [], None, 0

    def add(self, u):
        self.v.append(u)
        self.dirty += 1
        if self.fit is None or self.dirty >= 25:
            a = np.sort(np.array(self.v))
            at = np.quantile(a, 0.98)
            ex = a[a > at] - at
            self.a, self.fit, self.dirty = a, (at, max(ex.mean() if len(ex) else 0.0, 0.0025)), 0

    def tail(self, u):
        at, scale = self.fit
        if u > at:
            return 0.02 * math.exp(-(u - at) / scale)
        return max((len(self.a) - np.searchsorted(self.a, u, "right")) / len(self.a), 0.02)


def find(way, t, x, probation, rmin, k):
    """(period in rows, the row from which it is used), or None."""
    step = float(np.median(np.diff(t)))
    day = int(round(86400 / step))
    if way.startswith("range"):
        hi = int(probation / (2 if way == "range 1/2" else 3))
        best = max(((acf(x[:probation], lag), lag) for lag in range(2 * W, hi + 1)), default=(0, 0))
        return (best[1], probation) if best[0] >= rmin else None
    candidates = [p for p in (day, 7 * day) if p >= 2 * W]
    best = None
    for p in candidates:
        horizon = k * (p if way == "own horizon" else 7 * day)
        if horizon > len(x):
            continue
        r = acf(x[:horizon], p)
        if r >= rmin and (best is None or r > best[2]):
            best = (p, horizon, r)
    return best[:2] if best else None


def seasonal(pe, t, x, found, bonferroni):
    """The probabilities with the season's read in, for one file."""
    if found is None:
        return list(pe)
    p, start = found
    res = np.full(len(x), np.nan)
    for i in range(p, len(x)):
        res[i] = x[i] - np.mean([x[i - j * p] for j in range(1, MEMORY + 1) if i - j * p >= 0])
    cal, out = Tail(), []
    for i, q in enumerate(pe):
        row = i + W - 1
        seg = res[row - W + 1:row + 1]
        u = math.log10(max(float(np.mean(np.square(seg))), 1e-30)) if not np.isnan(seg).any() else math.nan
        if row < start or math.isnan(q) or math.isnan(u):
            if not math.isnan(u):
                cal.add(u)  # the rows the season was found on, and learning windows
            out.append(q)
            continue
        ts = cal.tail(u)
        out.append(1 - min(1.0, 2 * min(ts, 1 - q)) if bonferroni else max(q, 1 - ts))
        if 1 - ts < 0.99 and q < 0.99:
            cal.add(u)
    return out


def main(argv=None):
    b, data = sr.screen_setup(__doc__, argv)
    sets = sr.nab_sets(b, data)
    variants = {"none (the daemon, seasons off)": None,
                "range 1/2, 0.8": ("range 1/2", 0.8, 0, False),
                "range 1/2, 0.8, bonferroni": ("range 1/2", 0.8, 0, True),
                "range 1/3, 0.8": ("range 1/3", 0.8, 0, False),
                "own horizon, 0.8, 3": ("own horizon", 0.8, 3, False)}
    for r in (0.7, 0.8, 0.9):
        for k in (2, 3):
            variants[f"same weeks, {r}, {k}"] = ("same weeks", r, k, False)
    res = collections.defaultdict(lambda: collections.defaultdict(list))
    nyc = collections.defaultdict(list)
    for seed in (7, 8, 9):
        for name, (files, cached) in sets.items():
            ps, raised = zip(*sr.probs(b, files, cached, seed, f"probability:{sr.OFF}"))
            bad = sum(sr.restless_rule(p) != r for p, r in zip(ps, raised))
            if bad:
                sys.exit(f"the replay differs from the daemon on {bad} files of {name}, seed {seed}")
            series = [load(path) for _, path, _, _ in files]
            for vname, v in variants.items():
                runs = []
                for (key, path, n, wins), p, (t, x) in zip(files, ps, series):
                    q = p
                    if v:
                        way, rmin, k, bonf = v
                        found = find(way, t, x, nab.probationary_length(n), rmin, k)
                        q = seasonal(p, t, x, found, bonf)
                    det = np.zeros(n)
                    for i in sr.restless_rule(q):
                        det[i + W - 1] = 1.0
                    runs.append((det, wins))
                score, per = sr.set_score(name, runs)
                res[vname][name].append(score)
                if name == "dev":
                    i = [key for key, *_ in files].index("realKnownCause/nyc_taxi.csv")
                    nyc[vname].append(per[i][:3])
    print("| how the season is found (threshold, weeks) | NAB dev (hit, false) | `nyc_taxi` (hit, false) | short look-alikes (hit, false) | anomaly-free: false alerts |")
    print("|---|---|---|---|---|")
    for vname, r in res.items():
        cells = sr.set_cells(r)
        y = np.array(nyc[vname])
        cells.insert(1, f"{y[:, 0].mean():.2f} ({y[:, 1].mean():.1f}, {y[:, 2].mean():.1f})")
        print(f"| {vname} | " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main()
