#!/usr/bin/env python3
"""Runs the examples that README.md and every command's --help show, as a
user would type them, and reports each as a TAP line.

    python3 tests/examples.py build/prefrun          # the examples that fit a test run
    python3 tests/examples.py build/prefrun --all    # every example (about half an hour)

Each example runs verbatim with bash in one scratch directory (in the order
it is shown, so `train --out runs/rpo` comes before `train --resume
runs/rpo`), with `prefrun` on PATH and the repository's losses/ and
examples/ linked in. What an example assumes the user already has is made
first, and named here: discopop.lua (the README's own file), cases.json
(grad's --help makes it), train.jsonl, test.jsonl and run.yaml (small TRL
data and a config), and the runs that `sample`, `eval` and `discover
--report` read, trained briefly when the examples that would make them are
not run. An example passes when it exits 0.

Without --all, the examples whose run takes minutes (a 200-step training
run, a frontier sweep, discovery on the task fitness) are reported as
skipped with that reason; the LLM example needs an endpoint and a key and is
always skipped. The task's reference is built once into a scratch cache.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ["train", "check", "grad", "eval", "sample", "pretrain", "frontier", "discover", "bench", "export"]

# examples whose run takes minutes: run only with --all
LONG = [
    (r"^examples/prefrun train", "the main job (200 steps on the built-in task)"),
    (r"^prefrun train (?!.*--data)(?!.*max_steps=[0-9]{1,2}\b)", "200 training steps"),
    (r"^prefrun train .*max_steps=[0-9]{3}", "hundreds of training steps"),
    (r"^prefrun frontier", "a beta sweep of training runs"),
    (r"^prefrun discover (?!--report)(?!.*--fitness interim)", "discovery on the task fitness"),
    (r"^prefrun bench", "a benchmark"),
]
NEVER = [
    (r"OPENAI_API_KEY", "needs an LLM endpoint and its key"),
    (r"\bNAME\b", "NAME stands for a loss the user picks"),
]


def complete(cmd):
    """Whether cmd is a whole shell command (quotes closed, no trailing \\)."""
    if cmd.rstrip().endswith("\\"):
        return False
    try:
        shlex.split(cmd, comments=True)
        return True
    except ValueError:
        return False


def gather(lines):
    """Joins continued lines (a trailing backslash, an open quote)."""
    out, cur = [], None
    for line in lines:
        if cur is None:
            cur = line.strip()
        else:
            cur += "\n" + line.rstrip()
        if complete(cur):
            out.append(cur)
            cur = None
    if cur is not None:
        out.append(cur)
    return out


def readme_examples():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    found = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, re.S | re.M):
        lines = block.split("\n")
        starts = [i for i, l in enumerate(lines)
                  if re.match(r"(examples/)?prefrun |OPENAI_API_KEY=", l)]
        if not starts:
            continue
        keep, i = [], 0
        while i < len(lines):
            if i in starts:
                j = i
                while lines[j].rstrip().endswith("\\") and j + 1 < len(lines):
                    j += 1
                keep.extend(lines[i:j + 1])
                i = j + 1
            else:
                i += 1
        found += [("README.md", c) for c in gather(keep)]
    return found


def help_examples(exe):
    found = []
    for c in COMMANDS:
        out = subprocess.run([exe, c, "--help"], capture_output=True, text=True).stdout
        lines = out.split("\n")
        for i, l in enumerate(lines):
            if re.match(r"^examples?:\s*$", l):
                body = []
                for m in lines[i + 1:]:
                    if not m.strip():
                        break
                    body.append(m)
                found += [("prefrun %s --help" % c, x) for x in gather(body)]
    return found


def reason_to_skip(cmd, everything):
    for pat, why in NEVER:
        if re.search(pat, cmd):
            return why
    if not everything:
        for pat, why in LONG:
            if re.search(pat, cmd, re.S):
                return why + " (tests/examples.py --all runs it)"
    return None


def sh(cmd, cwd, env, timeout=900):
    p = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True,
                       errors="replace", timeout=timeout)
    return p.returncode, p.stdout + p.stderr


def fixtures(work, env):
    """What the examples assume the user has, made with prefrun itself."""
    shutil.copy(os.path.join(ROOT, "losses", "discopop.lua"), work)
    pairs = open(os.path.join(ROOT, "tests", "data", "pairs_ok.jsonl"), encoding="utf-8").read()
    for name in ("train.jsonl", "test.jsonl"):
        with open(os.path.join(work, name), "w", encoding="utf-8") as f:
            f.write(pairs)
    with open(os.path.join(work, "run.yaml"), "w", encoding="utf-8") as f:
        f.write("learning_rate: 1.0e-4\nmax_steps: 20\nlogging_steps: 10\n")
    with open(os.path.join(work, "cases.json"), "w", encoding="utf-8") as f:
        f.write('{"cases": [{"policy_chosen_logps": [-10, -12], "policy_rejected_logps": [-11, '
                '-11], "reference_chosen_logps": [-10, -10], "reference_rejected_logps": '
                '[-10, -10]}]}\n')


def ensure_run(work, env, run_dir, cmd):
    if not os.path.isdir(os.path.join(work, run_dir)):
        rc, out = sh(cmd, work, env)
        if rc != 0:
            raise SystemExit("examples: making the fixture %s failed:\n%s" % (run_dir, out))


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    everything = "--all" in sys.argv
    exe = os.path.abspath(args[0] if args else os.path.join(ROOT, "build", "prefrun"))
    work = tempfile.mkdtemp(prefix="prefrun-examples-")
    bindir = os.path.join(work, ".bin")
    os.makedirs(bindir)
    os.symlink(exe, os.path.join(bindir, "prefrun"))
    for d in ("losses", "examples"):
        os.symlink(os.path.join(ROOT, d), os.path.join(work, d))
    env = dict(os.environ)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.setdefault("PREFRUN_CACHE", os.path.join(work, ".cache"))
    fixtures(work, env)
    examples = readme_examples() + help_examples(exe)
    runs = {  # what sample, eval and report read, when the examples making them are skipped
        "runs/dpo": "prefrun train losses/dpo.lua --out runs/dpo --set max_steps=10 --quiet",
        "runs/dpo-lora": "prefrun train losses/dpo.lua --out runs/dpo-lora --set max_steps=4 "
                         "--set use_peft=true --quiet",
        "runs/disc": "prefrun discover --out runs/disc --generations 1 --candidates 2 "
                     "--fitness interim --quiet",
    }
    n = failed = 0
    print("1..%d" % len(examples))
    for where, cmd in examples:
        n += 1
        shown = " ".join(re.sub(r"\s+#\s.*$", "", line).rstrip(" \\") for line in cmd.split("\n"))
        title = "%s: %s" % (where, " ".join(shown.split())[:110])
        why = reason_to_skip(cmd, everything)
        if why:
            print("ok %d - %s # SKIP %s" % (n, title, why))
            continue
        for run_dir, make in runs.items():
            # whole names only: runs/dpo is not runs/dpo-lora, and "--out runs/dpo-hf" still
            # reads runs/dpo
            name = r"%s(?![\w-])" % re.escape(run_dir)
            if re.search(r"\b%s(?!/losses)" % name, cmd) and \
                    not re.search(r"--out %s" % name, cmd):
                ensure_run(work, env, run_dir, make)
        rc, out = sh(cmd, work, env)
        ok = rc == 0
        failed += not ok
        print("%s %d - %s" % ("ok" if ok else "not ok", n, title))
        if not ok:
            for line in out.strip().split("\n")[-15:]:
                print("#   " + line)
        sys.stdout.flush()
    shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
