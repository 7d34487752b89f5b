"""NAB's scoring (Lavin and Ahmad 2015), re-implemented from the NAB repository's
`nab/sweeper.py` and `nab/scorer.py` (v1.0) as the data README describes it.

Per file: the first min(floor(0.15 N), 750) rows are probationary (ignored). Every row whose
score is at or over the threshold is a detection. Inside a labelled window only the best (that
is, the earliest) detection counts, weighted tp_weight * scaled_sigmoid(position) / max_tp, where
position = -(right - i + 1) / width runs from -1 at the window's first row to ~0 at its last; a
window with no detection costs fn_weight; a detection outside every window costs
fp_weight * scaled_sigmoid(distance past the preceding window / (its width - 1)), or the full
fp_weight when no window precedes it. One threshold is chosen per detector for all files, the one
that maximises the total, and the total is normalised to 100 (S - S_null) / (S_perfect - S_null).

`selfcheck` checks it against hand-computed cases.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

PROFILES = {  # name: (tp, fp, fn) weights, NAB's config/profiles.json
    "standard": (1.0, 0.11, 1.0),
    "reward_low_FP_rate": (1.0, 0.22, 1.0),
    "reward_low_FN_rate": (1.0, 0.11, 2.0),
}


def scaled_sigmoid(x):
    return -1.0 if x > 3.0 else 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


def probationary_length(n):
    return min(math.floor(0.15 * n), 750)


@dataclass
class Point:
    score: float
    weight: float  # the unweighted sweep score: sigmoid position, in or after a window
    window: int | None  # index of the window the row is in, None outside


def points(n, windows):
    """Per non-probationary row: its sigmoid weight and window. windows: [(first, last)] row
    indexes, sorted. Returns (list of (row, Point-without-score) pairs, windows that count)."""
    prob = probationary_length(n)
    out = []
    cur = prev = None  # (index, first, last)
    queue = list(enumerate(windows))
    for i in range(n):
        if queue and i == queue[0][1][0]:
            k, (a, b) = queue.pop(0)
            cur = (k, a, b)
        if cur is not None:
            _, a, b = cur
            width = b - a + 1
            w = scaled_sigmoid(-(b - i + 1) / width)
            win = cur[0]
        else:
            if prev is None:
                w = -1.0
            else:
                _, a, b = prev
                w = scaled_sigmoid(abs(b - i) / (b - a))
            win = None
        if i >= prob:
            out.append((i, w, win))
        if cur is not None and i == cur[2]:
            prev, cur = cur, None
    counted = {win for _, _, win in out if win is not None}
    return out, counted


def file_score(scores, scored_points, threshold, profile="standard"):
    """One file's raw NAB score at one threshold, with (tp, fp, fn) counts. scored_points:
    what points(len(scores), windows) returns (it does not depend on the threshold)."""
    tp_w, fp_w, fn_w = PROFILES[profile]
    max_tp = scaled_sigmoid(-1.0)
    pts, counted = scored_points
    best = {}
    total, fp = 0.0, 0
    for i, w, win in pts:
        if scores[i] < threshold:
            continue
        if win is None:
            total += w * fp_w
            fp += 1
        else:
            best[win] = max(best.get(win, -2.0), w)
    total += sum(w * tp_w / max_tp for w in best.values())
    total -= fn_w * (len(counted) - len(best))
    return total, len(best), fp, len(counted) - len(best)


def normalised(files, profile="standard", thresholds=None):
    """files: [(scores, windows)]. Sweeps thresholds (every distinct score, or the ones given),
    returns (normalised score, threshold, per-file (raw, tp, fp, fn)). As NAB's sweeper, one
    more is always tried above every score (NAB's 1.1: detect nothing, the null detector's
    score), so the normalised score is never below 0; thresholds are tried from the highest
    down and a tie keeps the higher."""
    tp_w, _, fn_w = PROFILES[profile]
    if thresholds is None:
        thresholds = {float(s) for scores, _ in files for s in scores}
    thresholds = sorted({math.inf, *map(float, thresholds)}, reverse=True)
    pts = [points(len(s), w) for s, w in files]
    # As NAB's runner: the perfect score counts every labelled window, one wholly in a
    # probationary period too; the null score is the null detector's raw score, in which
    # such a window is neither hit nor missed.
    n_windows = sum(len(w) for _, w in files)
    if n_windows == 0:
        raise ValueError("no labelled window: the NAB score is not defined")
    null = -fn_w * sum(len(counted) for _, counted in pts)
    perfect = tp_w * n_windows
    best = None
    for t in thresholds:
        per = [file_score(s, p, t, profile) for (s, _), p in zip(files, pts)]
        raw = sum(p[0] for p in per)
        if best is None or raw > best[0]:
            best = (raw, t, per)
    raw, t, per = best
    return 100.0 * (raw - null) / (perfect - null), t, per


def _need(ok, what):
    """An assert that python -O cannot strip."""
    if not ok:
        raise AssertionError(what)


def check():
    """Hand-computed cases (N = 100 rows: 15 probationary; one window, rows 40-49). Raises
    AssertionError on a mismatch; `python -m ebgand_trainer.selfcheck` runs it."""
    win = [(40, 49)]

    def one(*rows, n=100, profile="standard"):
        s = [0.0] * n
        for r in rows:
            s[r] = 1.0
        return normalised([(s, win)], profile, thresholds=[1.0])

    close = lambda a, b: abs(a - b) < 1e-3  # noqa: E731
    _need(close(one(40)[0], 100.0), "first row of the window: full credit")
    # last row: position -1/10, scaled sigmoid 0.24492, over max_tp 0.98661
    _need(close(one(49)[0], 100 * (0.24492 / 0.98661 + 1) / 2), one(49))
    _need(close(one(40, 45)[0], 100.0), "only the first detection in a window counts")
    # before any window: a full false positive (-0.11) and the window missed (-1)
    # before any window: a full false positive (-0.11) and the window missed (-1), worse than
    # detecting nothing, which the sweep then chooses (as NAB's does)
    pts = points(100, win)
    s20 = [0.0] * 100
    s20[20] = 1.0
    _need(close(file_score(s20, pts, 1.0)[0], -1.11), file_score(s20, pts, 1.0))
    _need(close(one(20)[0], 0.0) and one(20)[1] == math.inf, one(20))
    _need(close(one(10)[0], 0.0), "probationary rows are ignored")
    # ten rows after the window: distance 10 / 9, scaled sigmoid -0.99230, times 0.11
    _need(close(one(40, 59)[0], 100 * (1 - 0.99230 * 0.11 + 1) / 2), one(40, 59))
    # right after the window a detection costs little: distance 1 / 9, scaled sigmoid -0.27084
    _need(close(one(40, 50)[0], 100 * (1 - 0.27084 * 0.11 + 1) / 2), one(40, 50))
    _need(close(one(20, profile="reward_low_FN_rate")[0], 0.0), "low FN: a false positive alone")
    _need(close(one(40, 20, profile="reward_low_FN_rate")[0], 100 * (1 - 0.11 + 2) / 3),
          "low FN: a hit and a false positive")
    _need(close(one()[0], 0.0), "the null detector scores 0")
    # A window wholly in the probationary rows still counts in the normalisation (NAB's
    # runner counts every labelled window, its null detector only the one it can miss): the
    # other one hit scores (1 + 1) / (2 + 1).
    s40 = [0.0] * 100
    s40[40] = 1.0
    early = normalised([(s40, [(5, 10), (40, 49)])], "standard", thresholds=[1.0])[0]
    _need(close(early, 100 * 2 / 3), early)
    return "ok"
