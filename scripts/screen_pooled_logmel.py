"""Screen: machine sound scored on log-mel frames pooled over time instead of five stacked
frames (DCASE's baseline, `train --logmel`'s default). A fan's faults (unbalance, voltage,
clogging) change its spectrum for the whole clip, while another machine's sound comes and
goes; a mean over a second of frames keeps the first and averages the second down.

Each variant writes every clip's pooled frames as a .npy (rows: one pooled vector each,
columns: mel bands), then runs the daemon's own `ebgand train` (plain autoencoder, the log-mel
default) on the training clips' files and `ebgand score --judge threshold` on the others,
window of one row (or WINDOW rows); clip score = the mean window energy. The sets,
rotations, splits, seeds and AUCs are `eval_judgment.py --only fan,dcase`'s own
(`fan_eval` and `dcase_eval`, given this training and each clip's pooled file), so the
numbers sit beside its autoencoder column. Round thirty-five of docs/EVALUATION-ROUNDS.md reads it.

    PYTHONPATH=models/trainer .venv/trainer/bin/python scripts/screen_pooled_logmel.py \
        --variants mean:1:1:5,mean:32:8,p20:32:8 --seeds 3
"""

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_judgment as ej  # noqa: E402

sys.path.insert(0, str(ej.REPO / "models" / "audio"))
import eval_faults  # noqa: E402
import logmel_reference  # noqa: E402


def pooled(frames, kind, width, hop):
    """Rows of `frames` ([n, mels], dB) pooled over `width` frames every `hop`: their mean
    ("mean"), their mean and standard deviation side by side ("meanstd"), or each band's
    NNth percentile ("pNN": a low one is the band's floor, under another machine's bursts)."""
    rows = []
    for s in range(0, len(frames) - width + 1, hop):
        f = frames[s:s + width]
        if kind == "mean":
            rows.append(f.mean(0))
        elif kind == "meanstd":
            rows.append(np.concatenate([f.mean(0), f.std(0)]))
        else:  # "pNN": the NNth percentile of each band
            rows.append(np.percentile(f, float(kind[1:]), axis=0))
    return np.asarray(rows, dtype=np.float32)


class Variant:
    def __init__(self, spec, binary, folder, seed):
        kind, width, hop, *window = spec.split(":")
        self.spec, self.kind, self.width, self.hop = spec, kind, int(width), int(hop)
        self.window = window[0] if window else "1"
        self.binary, self.folder = binary, folder / spec.replace(":", "-")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.seed, self.models, self.files = seed, 0, {}

    def npy(self, wav):
        """The pooled rows of a clip as a .npy (made once per clip)."""
        if wav not in self.files:
            path = self.folder / f"{len(self.files):05d}.npy"
            x = logmel_reference.log_mel(eval_faults.read(wav), eval_faults.RATE)
            np.save(path, pooled(x, self.kind, self.width, self.hop))
            self.files[wav] = path
        return self.files[wav]

    def train(self, key, clips):
        """`ebgand train` on the clips' pooled rows (the autoencoder, as `--logmel`'s)."""
        self.models += 1
        out = self.folder / f"model-{self.models}"
        ej.run([self.binary.path, "train", *map(str, map(self.npy, clips)), "--window",
                self.window, "--hop", "1", "--mode", "ae", "--seed", str(self.seed), "--name",
                "eval", "--version", f"pool-{self.seed}", "--out", str(out)], self.binary.env)
        return out


def run(variant, data, seed, only):
    """The AUCs of one variant and seed, through `eval_judgment`'s own fan and DCASE
    evaluations (each clip read as its pooled rows)."""
    r = {}
    if "fan" in only:
        f = ej.fan_eval(variant.binary, data, "ae", seed, variant.train, variant.npy)
        r.update(clean=f["auc"], noisy=f["noisy_auc"], ordinary=f["ordinary_auc"])
    if "dcase" in only:
        r.update(ej.dcase_eval(variant.binary, data, "ae", seed, variant.train,
                               variant.npy)["auc"])
    return r


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ej.data_args(p)
    p.add_argument("--variants", default="mean:32:8,meanstd:32:8",
                   help="KIND:WIDTH:HOP[:WINDOW], comma-separated; KIND is mean, meanstd or pNN; "
                        "mean:1:1:5 is `train --logmel`'s own five stacked frames")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=7)
    p.add_argument("--only", default="fan,dcase")
    args = p.parse_args()
    binary = ej.Binary(args.bin, args.cache)
    only = args.only.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for spec in args.variants.split(","):
            per_seed = []
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                v = Variant(spec, binary, Path(tmp) / str(seed), seed)
                r = run(v, args.data, seed, only)
                per_seed.append(r)
                print(f"# {spec} seed {seed}: {r}", flush=True)
            rows.append((spec, per_seed))
        keys = list(rows[0][1][0])
        print("| variant | " + " | ".join(keys) + " |")
        print("|---|" + "---|" * len(keys))
        for spec, per_seed in rows:
            cells = [ej.mean_spread([r[k] for r in per_seed], "{:.3f}") for k in keys]
            print(f"| `{spec}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
