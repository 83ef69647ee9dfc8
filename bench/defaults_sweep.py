#!/usr/bin/env python3
"""defaults_sweep.py — the measured sweep behind the main job's defaults
(issue 12): `prefrun train LOSS` on the built-in task over a small grid of
learning rates and step counts, several seeds each, every run ending in its
closing evaluation (RUN/eval.json: held-out accuracy, reward gain over the
reference paired by prompt and sampling seed, KL).

    python3 bench/defaults_sweep.py [build/prefrun] [--seeds 1,2,3] [--out DIR]

Prints one row per (loss, setting): mean accuracy, mean gain with the 95%
interval of the mean over seeds (t, n - 1), the number of seeds whose own
gain interval excludes 0, mean KL and the mean wall seconds of a run (training and evaluation). The README's
table is this script's output.
"""
import json
import math
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365}
GRID = [  # (label, --set overrides); the first row is the default
    ("default (lr 2e-4, 200 steps)", []),
    ("lr 1e-4", ["learning_rate=1e-4"]),
    ("lr 4e-4", ["learning_rate=4e-4"]),
    ("400 steps", ["max_steps=400"]),
    ("cosine schedule", ["lr_scheduler_type=cosine"]),
]
LOSSES = ["dpo", "discopop"]


def arg(name, default):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def run(exe, loss, sets, seed, out):
    cmd = [exe, "train", os.path.join(ROOT, "losses", loss + ".lua"), "--out", out, "--quiet",
           "--set", "seed=%d" % seed]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.load(open(os.path.join(out, "eval.json"))), time.time() - t0


def main():
    pos = [a for a in sys.argv[1:] if not a.startswith("--") and a not in
           (arg("--seeds", None), arg("--out", None))]
    exe = os.path.abspath(pos[0] if pos else os.path.join(ROOT, "build", "prefrun"))
    seeds = [int(s) for s in arg("--seeds", "1,2,3").split(",")]
    work = arg("--out", None) or tempfile.mkdtemp(prefix="prefrun-sweep-")
    print("| loss | setting | accuracy | gain over reference (95%%, %d seeds) | seeds above | KL | s/run |"
          % len(seeds))
    print("|---|---|---|---|---|---|---|")
    for loss in LOSSES:
        for label, sets in GRID:
            acc, gain, kl, above, secs = [], [], [], 0, []
            for seed in seeds:
                out = os.path.join(work, "%s-%s-%d" % (loss, label.split()[0] + label.split()[-1], seed))
                r, s = run(exe, loss, sets, seed, out)
                acc.append(r["accuracy"])
                gain.append(r["reward_gain"])
                kl.append(r["kl"])
                secs.append(s)
                above += r["reward_gain"] - r["reward_gain_ci95"] > 0
            n = len(seeds)
            mg = sum(gain) / n
            sd = math.sqrt(sum((g - mg) ** 2 for g in gain) / (n - 1)) if n > 1 else float("nan")
            ci = T975.get(n - 1, 1.96) * sd / math.sqrt(n)
            print("| %s | %s | %.3f | %+.3f +- %.3f | %d/%d | %.1f | %.1f |"
                  % (loss, label, sum(acc) / n, mg, ci, above, n, sum(kl) / n, sum(secs) / n))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
