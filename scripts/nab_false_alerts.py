"""Where the false alerts on NAB dev fall: for every alert raised outside a labelled window,
its NAB weight (−1 far from any window, less just after one), how far into the judged rows it
is, how it was raised, and whether the other seeds raise there too; how early in their
windows the hits come (NAB credits 1 at a window's start, 0.86 at its middle, where the
labelled anomaly is); and why the other windows were missed. Same models, rule and start as
`eval_judgment.py --only nab` (its cached models are reused).

    PYTHONPATH=models/trainer .venv/trainer/bin/python scripts/nab_false_alerts.py

docs/EVALUATION.md ("Where the defaults stand") and round twenty-one of
docs/EVALUATION-ROUNDS.md read it.
"""

import argparse
import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_judgment as ej  # noqa: E402
from ebgand_trainer import nab  # noqa: E402


# Why a window was missed, in the order they are tested.
MISSES = {
    "swallowed": "an alert raised before the window is still up at its start",
    "learning": "a window of the stream's learning",
    "unseen": "no probability of 0.99 or more (or of the stream's bar, if lower)",
    "under": "0.99 or more, never the stream's bar",
    "held": "the bar passed, not three windows in a row (or in the quiet after a clear)",
}


def missed(by_row, start, end, alert):
    """Why the labelled window `start..=end` was not raised, from the verdicts by the row
    their window ends at: a key of `MISSES`."""
    inside = [by_row[r] for r in range(start, end + 1) if r in by_row]
    if start in by_row and by_row[start]["state"] == "raised":
        return "swallowed"
    if any(v.get("learning") for v in inside):
        return "learning"
    top = max((v.get("probability") or 0.0 for v in inside), default=0.0)
    bar = min((v.get("alert_probability") or alert for v in inside), default=alert)
    return "unseen" if top < min(0.99, bar) else "under" if top < bar else "held"


def raises(binary, data, mode, seed, rule, files, start="stream"):
    """Every raise outside a window of every file ("dev" or "short"), as a dict; the credit
    of each window hit, by file; and why each other window was missed (`MISSES`), by file."""
    w = ej.NAB_W
    out, hits, misses = [], collections.defaultdict(list), collections.defaultdict(list)
    if files == "dev":
        each, cached = ej.nab_files(data), f"nab-w{w}"
    else:  # the short look-alikes, as eval_judgment.py --only short makes and caches them
        each, cached = ej.short_files(data, binary.cache / "nab-short-data"), f"nab-short-w{w}"
    alert = float(binary.default("detect", "alert_probability"))
    for key, path, n, wins in each:
        prob = nab.probationary_length(n)
        lines = ej.nab_lines(binary, (key, path, n, wins), cached, mode, seed, rule, w, start)
        scored, counted = nab.points(n, wins)
        weight = {i: (wt, win) for i, wt, win in scored}
        recent = collections.deque(maxlen=3)
        first = {}  # window: weight of its earliest raise
        for v in lines:
            # the stream's own bar: lower than `alert` for a thin stream ([detect] thin_widen)
            recent.append((v.get("probability") or 0.0) >= (v.get("alert_probability") or alert))
            row = v["seq"] + w - 1  # the window ends at this row
            wt, win = weight.get(row, (None, None))
            if v.get("transition") != "raised" or wt is None:
                continue
            if win is not None:
                first.setdefault(win, wt)
                continue
            out.append({"file": Path(key).stem, "seed": seed, "row": row, "weight": wt,
                        "share": (row - prob) / (n - prob),
                        "in_a_row": all(recent)})
        max_tp = nab.scaled_sigmoid(-1.0)
        hits[Path(key).stem] += [wt / max_tp for wt in first.values()]
        by_row = {v["seq"] + w - 1: v for v in lines}
        misses[Path(key).stem] += [missed(by_row, a, b, alert) for i, (a, b) in enumerate(wins)
                                   if i in counted and i not in first]
    return out, hits, misses


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ej.data_args(p)
    p.add_argument("--mode", default="ebgan")
    p.add_argument("--seeds", type=int, default=3, help="seeds 7, 8, ... as eval_judgment.py")
    p.add_argument("--rule", default="probability")
    p.add_argument("--files", choices=("dev", "short"), default="dev",
                   help="NAB dev, or the look-alikes of NAB's short streams")
    p.add_argument("--nab-start", choices=("stream", "seeded"), default="stream",
                   help="score from each file's first row, or from the end of its probationary "
                        "rows with the calibration seeded by them (the daemon's cold start)")
    p.add_argument("--near", type=int, default=24,
                   help="rows within which another seed's raise counts as the same place")
    args = p.parse_args(argv)
    binary = ej.Binary(args.bin, args.cache)
    seeds = range(7, 7 + args.seeds)
    alerts, hits, misses = [], collections.defaultdict(list), collections.defaultdict(list)
    for s in seeds:
        false, hit, miss = raises(binary, args.data, args.mode, s, args.rule, args.files,
                                  args.nab_start)
        alerts += false
        for f, credits in hit.items():
            hits[f] += credits
        for f, why in miss.items():
            misses[f] += why
    rows = collections.defaultdict(list)
    for a in alerts:
        rows[a["file"], a["seed"]].append(a["row"])
    for a in alerts:
        a["shared"] = all(any(abs(r - a["row"]) <= args.near for r in rows[a["file"], s])
                          for s in seeds if s != a["seed"])
    k = len(seeds)

    def line(name, group):
        cost = -0.11 * sum(a["weight"] for a in group) / k  # NAB standard: A_FP = 0.11
        print(f"| {name} | {len(group) / k:.1f} | {cost:.2f} "
              f"| {sum(a['weight'] > -0.9 for a in group) / k:.1f} "
              f"| {sum(a['share'] < 0.1 for a in group) / k:.1f} "
              f"| {sum(not a['in_a_row'] for a in group) / k:.1f} "
              f"| {sum(a['shared'] for a in group) / k:.1f} |")

    print(f"{args.mode}, rule {args.rule}, seeds {seeds.start}-{seeds.stop - 1}; per seed:\n")
    print("| file | false alerts | NAB raw cost | just after a window (weight > −0.9) "
          "| in the first 10 % of judged rows | not three in a row (restless) "
          f"| every other seed raises within {args.near} rows |")
    print("|---|---|---|---|---|---|---|")
    for f in sorted({a["file"] for a in alerts}):
        line(f"`{f}`", [a for a in alerts if a["file"] == f])
    line("**all files**", alerts)

    print("\n| file | windows hit | NAB credit per hit (1 at the window's start) | lost to lateness |")
    print("|---|---|---|---|")
    every = [c for credits in hits.values() for c in credits]
    for f, credits in sorted(hits.items()) + [("**all files**", every)]:
        if credits:
            name = f if f.startswith("*") else f"`{f}`"
            print(f"| {name} | {len(credits) / k:.1f} | {sum(credits) / len(credits):.2f} "
                  f"| {sum(1 - c for c in credits) / k:.2f} |")

    print("\n| file | windows missed | " + " | ".join(MISSES.values()) + " |")
    print("|---|---|" + "---|" * len(MISSES))
    every = [m for why in misses.values() for m in why]
    for f, why in sorted(misses.items()) + [("**all files**", every)]:
        if why:
            name = f if f.startswith("*") else f"`{f}`"
            print(f"| {name} | {len(why) / k:.1f} | "
                  + " | ".join(f"{why.count(m) / k:.1f}" for m in MISSES) + " |")


if __name__ == "__main__":
    main()
