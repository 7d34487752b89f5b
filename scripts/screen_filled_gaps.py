"""Screen (round thirty-six of docs/EVALUATION-ROUNDS.md): what filling a stream's missing
samples on its step would be worth. NAB dev with one row in ten missing (`eval_judgment.py
--only gaps`) against the same files with each missing row put back holding the value before
it, at its own time: what a windower that fills gaps would give the model and the judging.
The daemon does not fill gaps (a window is the samples that arrived); this measures whether
it should (round thirty-seven put its windows on the step: a gain on these files, none on the
dev recordings whose gaps are real, so not kept). Both are trained and scored as `eval_judgment.py` does the dev files.

    PYTHONPATH=models/trainer .venv/trainer/bin/python scripts/screen_filled_gaps.py   # 2 min
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_judgment as ej  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ej.data_args(p)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=7)
    p.add_argument("--modes", default="ebgan,ae")
    args = p.parse_args()
    binary = ej.Binary(args.bin, args.cache)
    sets = {"missing": ("nab-gaps", False), "filled": ("nab-filled", True)}
    print("| mode | start | rows missing: NAB standard (hit, false) | filled: NAB standard (hit, false) |")
    print("|---|---|---|---|")
    for mode in args.modes.split(","):
        for start in ("stream", "seeded"):
            cells = [mode, start]
            for folder, fill in sets.values():
                files = ej.gappy_files(args.data, binary.cache / f"{folder}-data", fill)
                runs = [ej.nab_eval(binary, args.data, mode, seed, ["probability"], start,
                                    files=files, folder=folder)["probability"]
                        for seed in range(args.first_seed, args.first_seed + args.seeds)]
                cells.append(f"{ej.mean_spread([r['standard'] for r in runs], '{:.1f}')} "
                             f"({ej.np.mean([r['hit'] for r in runs]):.1f}, "
                             f"{ej.np.mean([r['false'] for r in runs]):.1f})")
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
