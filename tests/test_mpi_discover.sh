#!/usr/bin/env bash
# test_mpi_discover.sh PREFRUN — distributed discovery (discover/mpi_eval.h)
# under `mpirun --oversubscribe` on loopback, against the single-process loop
# as the reference:
#   - -np 3 archives the same candidates (gen, idx, name, code hash, status,
#     fitness) as one process with the same seed, each result with its rank
#     and host;
#   - kill -9 of a job process of rank 1, mid-job: the run goes on, the job
#     is re-run on another rank, its result lists the failed attempt;
#   - kill -9 of the whole rank 2 (mpirun --enable-recovery): rank 0 gives it
#     up after rank_timeout, its job is re-run elsewhere;
#   - kill -9 of rank 0 (the whole job ends), then a rerun with the same --out:
#     nothing lost (the archive's whole lines kept), nothing repeated.
# Every run uses the interim fitness on a tiny model (tests/test_discover.c's
# settings), with more full-fitness steps so that a job lasts long enough to
# be killed in the middle. Skips (TAP) when prefrun was built without MPI.
# Open MPI as root needs its two variables: set here, for these runs only.
set -uo pipefail
prefrun=${1:?usage: test_mpi_discover.sh PREFRUN}
if [ "${PREFRUN_HAVE_MPI:-0}" != 1 ]; then
    echo "1..0 # SKIP prefrun built without MPI (meson -Dmpi=disabled, or no Open MPI found)"
    exit 0
fi
if ! command -v mpirun >/dev/null; then
    echo "1..0 # SKIP no mpirun on PATH (apt-get install openmpi-bin)"
    exit 0
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
# under ASan: Open MPI's own allocations still held at exit are not ours
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export LSAN_OPTIONS="suppressions=$here/test_mpi_discover.supp:print_suppressions=0"
# Open MPI's libraries have no frame pointers: the fast unwinder stops in
# them and their leaks show as "<unknown module>", which no suppression names
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}fast_unwind_on_malloc=0"
mpi=(mpirun --oversubscribe --mca btl self,vader,tcp --mca btl_tcp_if_include lo
     --mca oob_tcp_if_include lo)
dir=$(mktemp -d /tmp/prefrun_test_mpi_XXXXXX)
trap 'rm -rf "$dir"' EXIT
export TMPDIR=$dir/tmp # the evaluators' scratch, also when a rank is killed
mkdir -p "$TMPDIR"
n=0 failed=0
ok() { # ok COND_STATUS TITLE [DETAIL]
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else
        echo "not ok $n - $2"; [ -n "${3:-}" ] && sed 's/^/# /' <<<"$3"; failed=$((failed + 1)); fi
}

cat >"$dir/run.yaml" <<'EOF'
fitness: interim
seed_losses: [dpo, hinge, robust] # three long jobs at once: every rank has one
generations: 2
candidates: 3
workers: 1
hurdle_steps: 4
hurdle_min: 0.55
full_steps: 2500
fitness_seeds: [1]
timeout: 120
rank_timeout: 5
quiet: false
train:
  context: 16
  width: 16
  heads: 2
  layers: 1
  toy_pairs: 96
  eval_fraction: 0.25
  learning_rate: 0.01
  warmup_steps: 1
  per_device_train_batch_size: 8
  sandbox_instructions: 5000000
EOF

# check.py REF DIR [WHAT]: the archive of DIR against REF's; prints what differs
cat >"$dir/check.py" <<'EOF'
import json, sys
def load(d):
    props, res = {}, {}
    for line in open(d + "/archive.jsonl"):
        r = json.loads(line)
        k = (r["gen"], r["idx"])
        (props if r["type"] == "proposal" else res).setdefault(k, []).append(r)
    return props, res
def summary(props, res):
    return {k: (p[0]["name"], p[0]["code_hash"], res[k][0]["status"],
                (res[k][0].get("fitness") or {}).get("value")) for k, p in props.items() if k in res}
ref_p, ref_r = load(sys.argv[1])
p, r = load(sys.argv[2])
what = sys.argv[3] if len(sys.argv) > 3 else ""
bad = []
for k in sorted(set(p) | set(r)):
    if len(p.get(k, [])) != 1 or len(r.get(k, [])) != 1:
        bad.append("gen %d #%d: %d proposals, %d results" % (k + (len(p.get(k, [])), len(r.get(k, [])))))
a, b = summary(ref_p, ref_r), summary(p, r)
for k in sorted(set(a) | set(b)):
    if a.get(k) != b.get(k):
        bad.append("gen %d #%d: %s, expected %s" % (k + (b.get(k), a.get(k))))
if what == "where":
    for k, rs in r.items():
        if not isinstance(rs[0].get("rank"), int) or not rs[0].get("host"):
            bad.append("gen %d #%d: no rank/host" % k)
    if not any(rs[0].get("rank", 0) > 0 for rs in r.values()):
        bad.append("no result came from an evaluator rank")
elif what.startswith("retried:"):  # retried:RANK:TEXT — one result lists it, and ran elsewhere
    _, rank, text = what.split(":", 2)
    hits = [rs[0] for rs in r.values()
            if any(at["rank"] == int(rank) and text in at["error"] for at in rs[0].get("attempts", []))]
    if len(hits) != 1:
        bad.append("%d results list a failed attempt on rank %s with '%s'" % (len(hits), rank, text))
    elif hits[0]["rank"] == int(rank):
        bad.append("%s was re-run on the rank that failed it" % hits[0]["name"])
print("\n".join(bad))
sys.exit(1 if bad else 0)
EOF

# rank_pid MPIRUN_PID R: MPI rank R's process (a child of mpirun, not a worker)
rank_pid() {
    local p
    for p in $(pgrep -P "$1"); do
        tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2" &&
            { echo "$p"; return; }
    done
}
# busy_rank MPIRUN_PID R: waits (<= 60 s) until rank R has run a job process
# for 0.3 s, prints "RANK_PID JOB_PID"
busy_rank() {
    local r j i
    for i in $(seq 600); do
        r=$(rank_pid "$1" "$2")
        j=$([ -n "$r" ] && pgrep -P "$r" | head -n 1)
        if [ -n "$j" ]; then sleep 0.3; kill -0 "$j" 2>/dev/null && { echo "$r $j"; return; }; fi
        sleep 0.1
    done
}
check() { python3 "$dir/check.py" "$dir/ref" "$@" 2>&1; }

# 1. the reference: one process, two workers
"$prefrun" discover --config "$dir/run.yaml" --out "$dir/ref" --workers 2 >"$dir/ref.log" 2>&1
ok $? "the single-process reference run" "$(tail -n 5 "$dir/ref.log")"

# 2. three ranks, nothing killed
"${mpi[@]}" -np 3 "$prefrun" discover --config "$dir/run.yaml" --out "$dir/np3" >"$dir/np3.log" 2>&1
ok $? "mpirun -np 3 runs to the end" "$(tail -n 5 "$dir/np3.log")"
out=$(check "$dir/np3" where)
ok $? "-np 3 archives the reference's candidates, each result with its rank and host" "$out"
grep -q "in flight: rank 0 .*rank 1 .*rank 2 .*per hour" "$dir/np3.log"
ok $? "the progress line shows jobs in flight per rank and the rate"

# 3. a job process of rank 1 killed mid-job
"${mpi[@]}" -np 3 "$prefrun" discover --config "$dir/run.yaml" --out "$dir/kjob" >"$dir/kjob.log" 2>&1 &
mp=$!
read -r _ job < <(busy_rank $mp 1)
[ -n "${job:-}" ] && kill -9 "$job"
wait $mp
ok $? "kill -9 of a job process of rank 1 does not stop the run" "$(tail -n 5 "$dir/kjob.log")"
out=$(check "$dir/kjob" "retried:1:signal 9")
ok $? "its job is re-run on another rank; nothing lost or duplicated" "$out"

# 4. the whole rank 2 killed mid-job (needs --enable-recovery: see mpi_eval.h)
"${mpi[@]}" --enable-recovery -np 3 "$prefrun" discover --config "$dir/run.yaml" \
    --out "$dir/krank" >"$dir/krank.log" 2>&1 &
mp=$!
read -r rank _ < <(busy_rank $mp 2)
[ -n "${rank:-}" ] && kill -9 "$rank"
wait $mp
ok $? "kill -9 of rank 2 under --enable-recovery does not stop the run" "$(tail -n 5 "$dir/krank.log")"
out=$(check "$dir/krank" "retried:2:lost")
ok $? "rank 2 is given up, its job re-run elsewhere; nothing lost or duplicated" "$out"
grep -q "rank 2 (.*) given up: silent" "$dir/krank.log"
ok $? "rank 0 says which rank it gave up and why"

# 5. the whole job killed (rank 0, kill -9), then the same command again
"${mpi[@]}" -np 3 "$prefrun" discover --config "$dir/run.yaml" --out "$dir/resume" \
    >"$dir/resume1.log" 2>&1 &
mp=$!
for i in $(seq 600); do
    c=$(grep -c '"type":"result"' "$dir/resume/archive.jsonl" 2>/dev/null)
    [ "${c:-0}" -ge 3 ] && break
    sleep 0.1
done
kill -9 "$(rank_pid $mp 0)"
wait $mp
python3 -c 'import sys; d = open(sys.argv[1], "rb").read(); sys.stdout.buffer.write(d[:d.rfind(b"\n") + 1])' \
    "$dir/resume/archive.jsonl" >"$dir/before.jsonl" # its whole lines
results=$(grep -c '"type":"result"' "$dir/before.jsonl")
[ "$results" -ge 3 ] && [ "$results" -lt 9 ]
ok $? "the job was killed in the middle ($results of 9 results archived)"
"${mpi[@]}" -np 3 "$prefrun" discover --config "$dir/run.yaml" --out "$dir/resume" \
    >"$dir/resume2.log" 2>&1
ok $? "the rerun with the same --out finishes" "$(tail -n 5 "$dir/resume2.log")"
cmp -s "$dir/before.jsonl" <(head -n "$(wc -l <"$dir/before.jsonl")" "$dir/resume/archive.jsonl")
ok $? "the archive's lines before the kill are kept as they were"
out=$(check "$dir/resume")
ok $? "after the resume: the reference's candidates, one result each (none repeated)" "$out"

echo "1..$n"
exit $((failed > 0))
