#!/usr/bin/env bash
# mpi_scaling.sh — data-parallel training and distributed discovery on one
# machine (issue 14), each measured in one run of this script:
#   bash bench/mpi_scaling.sh [PREFRUN] [DIR] [STEPS]
# 1. training tokens/s on the built-in task's default model and settings
#    (DPO, STEPS optimizer steps, default 200): one process with 2 threads,
#    one with 1 thread, and `mpirun -np 2` with 1 thread per rank; with the
#    share of the 2-rank run's time that its ranks spent waiting on each
#    other (the log-prob gathers and the gradient sum).
# 2. discovery: candidate evaluations per hour, `prefrun discover` with 2
#    workers against `mpirun -np 2 prefrun discover` with 1 worker per rank
#    (the interim fitness, the same seed and settings, 2 generations).
# Prints one table; needs a build with MPI (meson -Dmpi=enabled).
set -euo pipefail
exe=$(realpath "${1:-build/prefrun}")
out=${2:-runs/mpi-scaling}
steps=${3:-200}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$out"
out=$(realpath "$out")
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpi=(mpirun --oversubscribe --bind-to none --mca btl self,vader,tcp --mca btl_tcp_if_include lo
     --mca oob_tcp_if_include lo)
# tokens/s over the run: tokens counted in metrics.jsonl over the train wall time
tok_s() { # tok_s RUN LOG
    python3 - "$1" "$2" <<'PY'
import json, re, sys
lines = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl") if '"grad_norm"' in l]
log = open(sys.argv[2]).read()
secs = float(re.search(r"in ([0-9.]+) s;", log).group(1))
share = re.search(r"([0-9.]+)% of the time waiting", log)
# the last logging interval's rate, which excludes the first step's set-up
print("%.0f %s %.1f" % (lines[-1]["tokens_per_sec"], share.group(1) if share else "-", secs))
PY
}
common=("$root/losses/dpo.lua" --set "max_steps=$steps" --set logging_steps=10 --no-eval)
rm -rf "$out"/t2 "$out"/t1 "$out"/np2
"$exe" train "${common[@]}" --threads 2 --out "$out/t2" 2>"$out/t2.log"
"$exe" train "${common[@]}" --threads 1 --out "$out/t1" 2>"$out/t1.log"
"${mpi[@]}" -np 2 -x OMP_NUM_THREADS=1 "$exe" train "${common[@]}" --threads 1 --out "$out/np2" \
    2>"$out/np2.log"
printf '%-34s %10s %14s %8s\n' "training (DPO, $steps steps)" "tokens/s" "waiting share" "seconds"
for r in t2:"1 process, 2 threads" t1:"1 process, 1 thread" np2:"mpirun -np 2, 1 thread each"; do
    read -r t s secs < <(tok_s "$out/${r%%:*}" "$out/${r%%:*}.log")
    printf '%-34s %10s %13s%% %8s\n' "${r#*:}" "$t" "$s" "$secs"
done

cat >"$out/disc.yaml" <<'YAML'
fitness: interim
generations: 2
candidates: 4
hurdle_steps: 20
hurdle_min: 0.3
full_steps: 1500
fitness_seeds: [1]
quiet: true
train:
  context: 32
  width: 32
  heads: 2
  layers: 2
  toy_pairs: 128
  per_device_train_batch_size: 8
YAML
rate() { python3 - "$1" <<'PY'
import json, sys
rs = [json.loads(l) for l in open(sys.argv[1] + "/archive.jsonl")]
rs = [r for r in rs if r["type"] == "result"]
print(len(rs))
PY
}
rm -rf "$out"/d1 "$out"/d2
t0=$(date +%s.%N)
"$exe" discover --config "$out/disc.yaml" --out "$out/d1" --workers 2 >"$out/d1.log" 2>&1
t1=$(date +%s.%N)
"${mpi[@]}" -np 2 "$exe" discover --config "$out/disc.yaml" --out "$out/d2" --workers 1 \
    >"$out/d2.log" 2>&1
t2=$(date +%s.%N)
printf '\n%-34s %10s %14s\n' "discovery (interim fitness)" "evaluated" "per hour"
for r in "d1 $t0 $t1 1 process, 2 workers" "d2 $t1 $t2 mpirun -np 2, 1 worker each"; do
    read -r d a b what <<<"$r"
    c=$(rate "$out/$d")
    printf '%-34s %10s %14.0f\n' "$what" "$c" "$(python3 -c "print($c * 3600 / ($b - $a))")"
done
