"""Screens ways to raise an alert from the per-window probabilities `ebgand score` prints, on
NAB dev, without rebuilding the daemon (docs/EVALUATION-ROUNDS.md, round seven).

    PYTHONPATH=models/trainer .venv/trainer/bin/python scripts/screen_raise_rules.py --seeds 9

Each NAB dev file is trained and scored as `scripts/eval_judgment.py` does (same model cache),
with the default judging; then each rule below is replayed over the probabilities and scored
with NAB's standard profile. The replay ignores one feedback of the daemon: its calibration
learns only windows judged healthy with no alert up, so a rule that raises at other times
would have learnt other windows. The replays of the ordinary rule and the default are each
checked against the raises `score` printed with it, so a drift between this replay and the
daemon stops the script.

Rules: the ordinary rule (three windows in a row at or over `alert_probability`, cleared after
`clear_after` under it), alone and with the restless raise (the default since round sixteen,
replayed over the probabilities of the ordinary rule alone, which learnt the same windows
until its first restless raise), with and without the quiet after a clear (round seventeen);
a CUSUM of -log10(1 - p); a second way to raise (M of the last N windows at or over
a lower probability); a raise that also needs a peak; and, for seed ensembles, the median or
the lowest of several models' probabilities fed to the ordinary rule.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_judgment as ej  # noqa: E402  (the eval's own training, scoring and file list)
from ebgand_trainer import nab  # noqa: E402

W = ej.NAB_W
# The [detect] defaults (config.toml). Rounds seven and nine ran under those of their time
# (alert_probability 0.999, clear_after 50); the replay check below fails if these drift.
ALERT, RAISE, CLEAR = 0.9999, 3, 10
QUIET, QUIET_P = 200, 0.999999
# The rounds screened here came before seasons (round twenty-two), which they keep off.
OFF = "season_acf=0"


def default_rule(p, pa=ALERT, raise_after=RAISE, clear_after=CLEAR, second=None, peak=None):
    """Window indices where the alert is raised. second: (p_low, m, n) raises also when m of
    the last n windows are at or over p_low; peak: a run also needs one window at or over it."""
    up, run, calm, top, det, recent = False, 0, 0, 0.0, [], []
    for i, x in enumerate(p):
        if math.isnan(x):  # still learning
            continue
        if second:
            recent = (recent + [x >= second[0]])[-second[2]:]
        if not up:
            run, top = (run + 1, max(top, x)) if x >= pa else (0, 0.0)
            hit = run >= raise_after and (peak is None or top >= peak)
            if hit or (second and sum(recent) >= second[1]):
                up, calm = True, 0
                det.append(i)
        else:
            calm = calm + 1 if x < pa else 0
            if calm >= clear_after:
                up, run, top, recent = False, 0, 0.0, []
    return det


def restless_rule(p, low=0.99, m=90, n=100, calm=50, quiet=QUIET, quiet_p=QUIET_P, pa=ALERT,
                  raise_after=RAISE, clear_after=CLEAR, fatigue=None, young=None):
    """The daemon's default since round seventeen: the ordinary rule, and a raise when m of
    the last n judged windows are at or over low (any raise spends that second way until fewer
    than calm of them are, with no alert up; src/detect/restless.rs); for `quiet` windows
    after a clear, only windows at or over quiet_p count toward a raise and the second way
    waits (src/detect/detector.rs). fatigue (round eighteen, not kept): (horizon, factor, cap):
    with k raises in the last `horizon` windows (at most `cap`), a raise needs 1 - p
    `factor`**k times rarer, and the second way waits while k > 0. young (round twenty-one,
    `screen_young_bar.py`): (bar, k): the alert probability is `bar` for the first k judged
    windows."""
    up, run, det, ring, spent, hushed, judged = False, 0, [], [], False, 0, 0
    default_pa = pa
    for i, x in enumerate(p):
        if math.isnan(x):
            continue
        judged += 1
        pa = young[0] if young and judged <= young[1] else default_pa
        k = 0
        if fatigue:
            k = min(sum(1 for d in det if i - d <= fatigue[0]), fatigue[2])
        base = 1.0 - (1.0 - pa) / fatigue[1] ** k if k else pa
        bar, quiet_now = base, k > 0
        if not up and hushed > 0:
            hushed, bar, quiet_now = hushed - 1, max(base, quiet_p), True
        ring = (ring + [x >= low])[-n:]
        count = sum(ring)
        if count < calm and not up:
            spent = False
        if not up:
            run = run + 1 if x >= bar else 0
            if run >= raise_after or (not spent and count >= m and not quiet_now):
                up, run, spent = True, 0, True
                det.append(i)
        else:
            run = run + 1 if x < pa else 0
            if run >= clear_after:
                up, run, hushed = False, 0, quiet
    return det


def cusum_rule(p, k, h, pa=ALERT, clear_after=CLEAR):
    """Raises when the sum of max(0, -log10(1 - p) - k) reaches h; clears as the default."""
    s, up, calm, det = 0.0, False, 0, []
    for i, x in enumerate(p):
        if math.isnan(x):
            continue
        if not up:
            s = max(0.0, s - math.log10(max(1.0 - x, 1e-12)) - k)
            if s >= h:
                up, calm = True, 0
                det.append(i)
        else:
            calm = calm + 1 if x < pa else 0
            if calm >= clear_after:
                up, s = False, 0.0
    return det


def combine(ps, how):
    """One probability per window from several models': their median or lowest evidence."""
    ev = -np.log10(np.clip(1.0 - np.array(ps), 1e-12, 1.0))
    ev = np.median(ev, axis=0) if how == "median" else ev.min(axis=0)
    return 1.0 - 10.0 ** (-ev)


def scored(files, per_file, rule):
    """NAB's standard score, windows hit and false alerts of one rule over all files."""
    runs = []
    for (_, _, n, wins), p in zip(files, per_file):
        det = np.zeros(n)
        for i in rule(p):
            det[i + W - 1] = 1.0
        runs.append((det, wins))
    s, _, per = nab.normalised(runs, "standard", thresholds=[1.0])
    return s, sum(q[1] for q in per), sum(q[2] for q in per)


def summary(name, results):
    r = np.array(results, dtype=float)
    spread = f" ± {r[:, 0].std(ddof=1):.1f}" if len(r) > 1 else ""
    print(f"| {name} | {r[:, 0].mean():.1f}{spread} | {r[:, 1].mean():.1f} | {r[:, 2].mean():.0f} |")


def screen_setup(doc, argv):
    """A screen's command line (`eval_judgment`'s data arguments): the binary and the data."""
    a = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ej.data_args(a)
    args = a.parse_args(argv)
    return ej.Binary(args.bin, args.cache), args.data


def nab_sets(binary, data):
    """NAB dev and the look-alikes of its short and anomaly-free streams: (files, model cache)
    by set, as `eval_judgment.py --only nab,short,null` makes them."""
    return {
        "dev": (ej.nab_files(data), f"nab-w{W}"),
        "short": (ej.short_files(data, binary.cache / "nab-short-data"), f"nab-short-w{W}"),
        "null": (ej.null_files(data, binary.cache / "nab-null-data"), f"nab-null-w{W}"),
    }


def probs(binary, files, cached, seed, rule):
    """Per file: each window's probability (NaN while learning) and the windows the daemon
    raised at, judged by `rule`."""
    out = []
    for entry in files:
        lines = ej.nab_lines(binary, entry, cached, "ebgan", seed, rule, W)
        p = [math.nan if v.get("learning") or v.get("probability") is None else v["probability"]
             for v in lines]
        raised = [i for i, v in enumerate(lines) if v.get("transition") == "raised"]
        out.append((p, raised))
    return out


def set_score(name, runs):
    """NAB's standard score of one set's `runs` ((detections, windows) per file): (score,
    windows hit, false alerts) and the per-file scores; for the anomaly-free look-alikes
    ("null") the false alerts alone, (false, 0, false)."""
    if name == "null":
        pts = [nab.points(len(d), w) for d, w in runs]
        fps = sum(nab.file_score(d, q, 1.0)[2] for (d, _), q in zip(runs, pts))
        return (fps, 0, fps), []
    s, _, per = nab.normalised(runs, "standard", thresholds=[1.0])
    return (s, sum(q[1] for q in per), sum(q[2] for q in per)), per


def set_cells(results):
    """Table cells of `set_score`'s results over seeds, by set: dev and short as "score ±
    spread (hit, false)", null as its false alerts."""
    cells = []
    for name in ("dev", "short", "null"):
        a = np.array(results[name])
        if name == "null":
            cells.append(f"{a[:, 0].mean():.1f} ± {a[:, 0].std(ddof=1):.1f}")
        else:
            cells.append(f"{a[:, 0].mean():.1f} ± {a[:, 0].std(ddof=1):.1f} "
                         f"({a[:, 1].mean():.1f}, {a[:, 2].mean():.0f})")
    return cells


def main(argv=None):
    a = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ej.data_args(a)
    a.add_argument("--mode", default="ebgan")
    a.add_argument("--seeds", type=int, default=9, help="seeds 7 .. 7 + N - 1 (ensembles: "
                   "consecutive groups of three)")
    args = a.parse_args(argv)
    if not args.bin.is_file():
        sys.exit(f"{args.bin} missing: cargo build --release")
    binary = ej.Binary(args.bin, args.cache)
    files = ej.nab_files(args.data)
    seeds = list(range(7, 7 + args.seeds))
    probs = {}
    for seed in seeds:
        probs[seed] = []
        for key, path, n, _ in files:
            model = ej.nab_model(binary, f"nab-w{W}", key, path, n, W, args.mode, seed)
            # The probabilities under the ordinary rule alone (the restless raise changes
            # which windows are learnt), and the daemon's default, each replayed and checked.
            ordinary = None
            for judging, replay in ((f"probability:restless_probability=0,quiet_windows=0,{OFF}",
                                     default_rule),
                                    (f"probability:{OFF}", restless_rule)):
                lines, _ = binary.score(model, path, ej.NAB_READ, judging)
                p = np.array([math.nan if v["probability"] is None else v["probability"]
                              for v in lines])
                raised = [i for i, v in enumerate(lines) if v.get("transition") == "raised"]
                if replay(p) != raised:
                    sys.exit(f"{key} seed {seed}: the replayed {judging} raises at other "
                             "windows than `score` did; fix the replay before trusting any "
                             "rule here")
                ordinary = p if ordinary is None else ordinary
            probs[seed].append(ordinary)
        print(f"# seed {seed} scored", file=sys.stderr)

    def each_seed(rule):
        return [scored(files, probs[s], rule) for s in seeds]

    print(f"NAB dev, standard profile, {args.mode}, seeds {seeds[0]}-{seeds[-1]} "
          "(mean ± sample sd over seeds)")
    print("| rule | NAB dev | windows hit of 23 | false alerts |")
    print("|---|---|---|---|")
    summary(f"ordinary: {RAISE} in a row at {ALERT}, clear after {CLEAR}", each_seed(default_rule))
    for low, m, n, calm in ((0.99, 90, 100, 50), (0.99, 90, 100, 80), (0.995, 90, 100, 50),
                            (0.98, 45, 50, 25), (0.99, 180, 200, 100)):
        summary(f"also {m} of the last {n} at {low}, once until under {calm}",
                each_seed(lambda p, r=(low, m, n, calm): restless_rule(p, *r, quiet=0)))
    for quiet, quiet_p in ((200, 0.999999), (100, 0.999999), (400, 0.999999), (200, 0.99999),
                           (200, 1.0)):
        summary(f"{'default: ' if (quiet, quiet_p) == (QUIET, QUIET_P) else ''}the same "
                f"(90 of 100 at 0.99), quiet {quiet} windows after a clear at {quiet_p}",
                each_seed(lambda p, q=(quiet, quiet_p): restless_rule(p, quiet=q[0],
                                                                      quiet_p=q[1])))
    for horizon, factor, cap in ((1000, 10.0, 1), (1000, 100.0, 99), (4032, 10.0, 1),
                                 (4032, 100.0, 99)):
        summary(f"the default, and each raise in the last {horizon} windows makes the next need "
                f"1 - p {factor:g} times rarer{' (once)' if cap == 1 else ''}",
                each_seed(lambda p, f=(horizon, factor, cap): restless_rule(p, fatigue=f)))
    for k, h in ((2.0, 5), (2.5, 3), (3.0, 2), (3.0, 3), (3.5, 2)):
        summary(f"CUSUM of -log10(1 - p), k {k}, h {h}",
                each_seed(lambda p, k=k, h=h: cusum_rule(p, k, h)))
    for low, m, n in ((0.98, 45, 50), (0.99, 30, 50), (0.99, 45, 50), (0.99, 90, 100)):
        summary(f"also {m} of the last {n} at {low}",
                each_seed(lambda p, s=(low, m, n): default_rule(p, second=s)))
    for peak in (0.99995, 0.99999, 0.999999):
        summary(f"a run must also reach {peak}",
                each_seed(lambda p, q=peak: default_rule(p, peak=q)))
    groups = [seeds[i:i + 3] for i in range(0, len(seeds) - 2, 3)]
    for how in ("median", "lowest") if groups else ():  # ensembles need three seeds
        for pa in (0.999, 0.995):
            results = []
            for g in groups:
                per_file = [combine([probs[s][f] for s in g], how) for f in range(len(files))]
                results.append(scored(files, per_file, lambda p, pa=pa: default_rule(p, pa=pa)))
            summary(f"{how} of three seeds' probabilities, at {pa} ({len(groups)} ensembles)",
                    results)


if __name__ == "__main__":
    main()
