"""Screens a lower alert bar for a stream's first K judged windows (docs/EVALUATION-ROUNDS.md, round
twenty-one), replayed over the probabilities `ebgand score` prints with the default judging,
on NAB dev, the look-alikes of its short streams and of its anomaly-free ones:

    PYTHONPATH=models/trainer .venv/trainer/bin/python scripts/screen_young_bar.py

Same models and files as `eval_judgment.py --only nab,short,null` (its cache is reused). The
replay is `screen_raise_rules.py`'s of the default (the ordinary rule, the restless raise, the
quiet after a clear) with the bar a function of the windows judged so far; it is checked
against the raises the daemon printed, and, as there, ignores that the calibration would have
learnt other windows around the extra raises.
"""
import collections
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_judgment as ej  # noqa: E402
import screen_raise_rules as sr  # noqa: E402

W = ej.NAB_W


def thin_until(p, n):
    """Judged windows until the calibration has learnt n: the learning windows, then the
    judged ones under 0.99 (approximately those it learns)."""
    learnt = sum(map(math.isnan, p))
    judged = 0
    for x in p:
        if learnt >= n:
            break
        if not math.isnan(x):
            judged += 1
            learnt += x < 0.99
    return judged


def young_rule(p, young_pa, k):
    """The default (`screen_raise_rules.restless_rule`) with the bar `young_pa` for the first
    k judged windows."""
    return sr.restless_rule(p, young=(young_pa, k))


def main(argv=None):
    b, data = sr.screen_setup(__doc__, argv)
    sets = sr.nab_sets(b, data)
    rules = {"default (replay)": lambda p: young_rule(p, sr.ALERT, 0)}
    for ypa in (0.999, 0.9995):
        for k in (1000, 1500, 2000, 3000, 10**9):
            name = f"{ypa} for the first {k} judged" if k < 10**9 else f"{ypa} throughout"
            rules[name] = lambda p, ypa=ypa, k=k: young_rule(p, ypa, k)
        # lower only where the calibration learnt fewer than [detect] learn_windows (512)
        rules[f"{ypa} where fewer than 512 windows were learnt"] = (
            lambda p, ypa=ypa: young_rule(p, ypa, 10**9 if sum(map(math.isnan, p)) < 512 else 0))
        # the same, only until the calibration has taken 512 (the healthy judged windows
        # under learn_below, 0.99, counted as learnt)
        rules[f"{ypa} until 512 windows are learnt"] = (
            lambda p, ypa=ypa: young_rule(p, ypa, thin_until(p, 512)))
    res = collections.defaultdict(lambda: collections.defaultdict(list))
    for seed in (7, 8, 9):
        for name, (files, cached) in sets.items():
            ps = sr.probs(b, files, cached, seed, f"probability:{sr.OFF}")
            # replay check: the default replay equals the daemon's raises
            bad = sum(young_rule(p, sr.ALERT, 0) != raised for p, raised in ps)
            if bad:
                sys.exit(f"the replay differs from the daemon on {bad} files of {name}, seed {seed}")
            for rname, rule in rules.items():
                runs = []
                for (key, path, n, wins), (p, _) in zip(files, ps):
                    det = np.zeros(n)
                    for i in rule(p):
                        det[i + W - 1] = 1.0
                    runs.append((det, wins))
                res[rname][name].append(sr.set_score(name, runs)[0])
    print("| rule | NAB dev (hit, false) | short look-alikes (hit, false) | anomaly-free look-alikes: false alerts |")
    print("|---|---|---|---|")
    for rname, r in res.items():
        print(f"| {rname} | " + " | ".join(sr.set_cells(r)) + " |")

if __name__ == "__main__":
    main()
