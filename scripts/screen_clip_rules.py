"""Screens clip rules for machine sound (docs/EVALUATION-ROUNDS.md, round thirty-four): a
clip's score as the mean of its window energies (DCASE's, and `ebgand score`'s
`clip_energy`), or their median, upper quantiles, top tenth, or the mean of their logs,
ranked against the labels as `eval_judgment.py --only fan,dcase` ranks the mean:

    PYTHONPATH=models/trainer .venv/trainer/bin/python scripts/screen_clip_rules.py

Same models, rotations, splits, mixtures and synthetic faults as `eval_judgment.py` (its
cache is reused); every rule reads the same windows' energies, so the rules are compared
on the same models (the differences are paired). Prints each rule's clip AUC, mean ± sample
standard deviation over the seeds, per set and model.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_judgment as ej  # noqa: E402

RULES = {
    "mean": np.mean,
    "median": np.median,
    "p75": lambda e: np.quantile(e, 0.75),
    "p90": lambda e: np.quantile(e, 0.90),
    "max": np.max,
    "top tenth": lambda e: np.mean(np.sort(e)[-max(1, len(e) // 10):]),
    "mean of logs": lambda e: np.mean(np.log(np.maximum(e, 1e-12))),
}


def energies(binary, model, path):
    """The window energies `ebgand score` prints for one clip."""
    lines, _ = binary.score_clip(model, path)
    return np.array([v["energy"] for v in lines])


def aucs(healthy, faulty):
    """Clip AUC of every rule, from each clip's window energies."""
    return {name: ej.roc_auc(np.array([f(e) for e in healthy]), np.array([f(e) for e in faulty]))
            for name, f in RULES.items()}


SETS = {"": "fan", "noisy_": "fan, neighbour's first clips",
        "ordinary_": "fan, neighbour's ordinary states"}  # `eval_judgment.fan_rotations`' keys


def fan(binary, data, mode, seed):
    """Mean AUC over `eval_judgment.fan_rotations`, per set and rule."""
    per = {}
    for key, model, held, abnormal in ej.fan_rotations(binary, data, mode, seed):
        per.setdefault(SETS[key], []).append(aucs([energies(binary, model, c) for c in held],
                                                  [energies(binary, model, c) for c in abnormal]))
    return {name: {q: float(np.mean([p[q] for p in runs])) for q in RULES}
            for name, runs in per.items()}


def dcase(binary, data, mode, seed):
    """Mean AUC over `eval_judgment.dcase_splits`, per synthetic fault and rule."""
    per = {k: [] for k in ej.DCASE_FAULTS}
    for model, held, faulty in ej.dcase_splits(binary, data, mode, seed):
        healthy = [energies(binary, model, c) for c in held]
        for kind, paths in faulty.items():
            per[kind].append(aucs(healthy, [energies(binary, model, p) for p in paths]))
    return {f"DCASE, {k}": {q: float(np.mean([p[q] for p in v])) for q in RULES}
            for k, v in per.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ej.data_args(p)
    p.add_argument("--modes", default="ae,ebgan")
    p.add_argument("--seeds", type=int, default=3, help="seeds 7, 8, ... as eval_judgment.py")
    args = p.parse_args(argv)
    binary = ej.Binary(args.bin, args.cache)
    for mode in args.modes.split(","):
        runs = []
        for seed in range(7, 7 + args.seeds):
            runs.append({**fan(binary, args.data, mode, seed),
                         **dcase(binary, args.data, mode, seed)})
        print(f"\n{mode}, seeds 7-{6 + args.seeds}, clip AUC:\n")
        print("| set | " + " | ".join(RULES) + " |")
        print("|---|" + "---|" * len(RULES))
        for name in runs[0]:
            cells = [ej.mean_spread([run[name][q] for run in runs], "{:.3f}") for q in RULES]
            print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
