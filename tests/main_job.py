#!/usr/bin/env python3
"""main_job.py — the main job learns, visibly (issue 12), asserted on the
real thing: `prefrun train losses/dpo.lua` and `losses/discopop.lua` on the
built-in task with its default settings, over 3 training seeds each, read
back from each run's closing evaluation (RUN/eval.json). TAP.

    python3 tests/main_job.py build/prefrun

Per loss, over the seeds: the mean held-out preference accuracy is at
least 0.65, and the mean reward gain over the reference (paired by prompt
and sampling seed) is above 0 by more than both its 95% intervals: the
evaluation's (the runs' own intervals, pooled) and the seeds' (a t interval
with n - 1 degrees of freedom). The task is built once into PREFRUN_CACHE
(the examples test shares it). About a minute on 2 cores once it exists.
"""
import json
import math
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = [1, 2, 3]
T975_2 = 4.303  # t(0.975, 2)


def main():
    exe = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "prefrun"))
    work = tempfile.mkdtemp(prefix="prefrun-main-job-")
    losses = ["dpo", "discopop"]
    print("1..%d" % len(losses))
    failed = 0
    for k, loss in enumerate(losses, 1):
        acc, gain, var_eval, problems = [], [], 0.0, []
        for seed in SEEDS:
            out = os.path.join(work, "%s-%d" % (loss, seed))
            cmd = [exe, "train", os.path.join(ROOT, "losses", loss + ".lua"), "--out", out,
                   "--quiet", "--set", "seed=%d" % seed]
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if p.returncode != 0 or "summary" not in p.stdout:
                problems.append("seed %d: exit %d: %s" % (seed, p.returncode, p.stdout[-400:]))
                continue
            r = json.load(open(os.path.join(out, "eval.json")))
            acc.append(r["accuracy"])
            gain.append(r["reward_gain"])
            var_eval += (r["reward_gain_ci95"] / 1.96) ** 2
            print("# %s seed %d: accuracy %.3f, gain %+.3f +- %.3f, KL %.1f"
                  % (loss, seed, r["accuracy"], r["reward_gain"], r["reward_gain_ci95"], r["kl"]))
        if not problems:
            n = len(gain)
            mean = sum(gain) / n
            sd = math.sqrt(sum((g - mean) ** 2 for g in gain) / (n - 1))
            ci_seeds = T975_2 * sd / math.sqrt(n)
            ci_eval = 1.96 * math.sqrt(var_eval) / n
            macc = sum(acc) / n
            print("# %s: accuracy %.3f, gain %+.3f, intervals %.3f (evaluation) %.3f (seeds)"
                  % (loss, macc, mean, ci_eval, ci_seeds))
            if macc < 0.65:
                problems.append("mean accuracy %.3f < 0.65" % macc)
            if not (mean > ci_eval and mean > ci_seeds):
                problems.append("mean gain %+.3f within its interval (%.3f, %.3f)"
                                % (mean, ci_eval, ci_seeds))
        ok = not problems
        failed += not ok
        print("%s %d - %s learns on the main job's defaults" % ("ok" if ok else "not ok", k, loss))
        for line in problems:
            print("#   " + line.replace("\n", "\n#   "))
        sys.stdout.flush()
    subprocess.run(["rm", "-rf", work])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
