#!/usr/bin/env bash
# test_train_mpi.sh PREFRUN — data-parallel training (train/train_dp.c) under
# `mpirun --oversubscribe` on loopback, against one process as the reference:
#   - -np 2 and -np 4: the first step's loss and log-probs are bit-identical,
#     every later metric and the final weights within the documented
#     tolerance (README, "More than one machine"): a metric |a-b| <=
#     1e-4·|a| + 1e-6, a weight |a-b| <= 1e-3 · (its tensor's largest |w|);
#     the gradient is a sum over rows that N ranks add in a different order;
#   - the same N twice: bit-identical (the reduction order is fixed);
#   - a batch-coupled loss (aot: prefrun check says batch-coupled) and a
#     stateful one (bco_pair) with 3 ranks, LoRA adapters with 2;
#   - resume under another N: a 2-rank run's step-3 checkpoint resumed with 3
#     ranks, and with one process, ends as the uninterrupted run;
#   - only rank 0 writes: a run without --out makes one runs/<name>, not one
#     per rank; a failing loss ends the whole job with its message.
# Skips (TAP) when prefrun was built without MPI. Open MPI as root needs its
# two variables: set here, for these runs only.
set -uo pipefail
prefrun=${1:?usage: test_train_mpi.sh PREFRUN}
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
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
export LSAN_OPTIONS="suppressions=$here/test_mpi_discover.supp:print_suppressions=0"
# Open MPI's libraries have no frame pointers: the fast unwinder stops in
# them and their leaks show as "<unknown module>", which no suppression names
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}fast_unwind_on_malloc=0"
mpi=(timeout 300 mpirun --oversubscribe --mca btl self,vader,tcp --mca btl_tcp_if_include lo
     --mca oob_tcp_if_include lo)
dir=$(mktemp -d /tmp/prefrun_test_dp_XXXXXX)
trap 'rm -rf "$dir"' EXIT
n=0 failed=0
ok() { # ok COND_STATUS TITLE [DETAIL]
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else
        echo "not ok $n - $2"; [ -n "${3:-}" ] && sed 's/^/# /' <<<"$3"; failed=$((failed + 1)); fi
}
cat >"$dir/run.yaml" <<'YAML'
context: 32
width: 32
heads: 2
layers: 2
toy_pairs: 64
eval_fraction: 0.25
learning_rate: 0.001
warmup_steps: 1
per_device_train_batch_size: 7 # not a multiple of 2 or 4: unequal shares
gradient_accumulation_steps: 2
max_steps: 6
logging_steps: 1
eval_steps: 3
save_steps: 3
threads: 1
YAML
printf 'use_peft: true\nlora_r: 4\nlora_alpha: 8\nlora_dropout: 0\n' | cat "$dir/run.yaml" - \
    >"$dir/lora.yaml"

# same.py A B [exact]: A's metrics and last checkpoint against B's; prints what differs
cat >"$dir/same.py" <<'PY'
import glob, json, os, struct, sys
def metrics(d):
    return [json.loads(l) for l in open(d + "/metrics.jsonl")]
def tensors(d):
    c = sorted(glob.glob(d + "/checkpoint-*"), key=lambda p: int(p.rsplit("-", 1)[1]))[-1]
    f = c + "/model.safetensors"
    f = f if os.path.exists(f) else c + "/adapter_model.safetensors"
    b = open(f, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    return {k: struct.unpack("<%df" % ((v["data_offsets"][1] - v["data_offsets"][0]) // 4),
                             b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
            for k, v in h.items() if k != "__metadata__"}
a, b = sys.argv[1], sys.argv[2]
exact = len(sys.argv) > 3
bad = []
ma, mb = metrics(a), metrics(b)
if [m["step"] for m in ma] != [m["step"] for m in mb]:
    bad.append("metrics lines for steps %s, expected %s" % ([m["step"] for m in mb], [m["step"] for m in ma]))
for x, y in zip(ma, mb):
    for k in x:
        if k == "tokens_per_sec" or k not in y:
            continue
        first = x["step"] == 1 and "grad_norm" in x and k in ("loss", "logps/chosen", "logps/rejected")
        tol = 0 if exact or first else 1e-4 * abs(x[k]) + 1e-6
        if abs(x[k] - y[k]) > tol:
            bad.append("step %d %s: %r, expected %r (tolerance %g)" % (x["step"], k, y[k], x[k], tol))
ta, tb = tensors(a), tensors(b)
if sorted(ta) != sorted(tb):
    bad.append("tensors differ: %s vs %s" % (sorted(tb), sorted(ta)))
for k in ta:
    big = max(abs(v) for v in ta[k]) or 1.0
    d = max(abs(p - q) for p, q in zip(ta[k], tb.get(k, ta[k])))
    if d > (0 if exact else 1e-3 * big):
        bad.append("%s: max |dw| %g, tensor max %g" % (k, d, big))
print("\n".join(bad[:8]))
sys.exit(1 if bad else 0)
PY
same() { python3 "$dir/same.py" "$@" 2>&1; }
train() { # train OUT NP CONFIG LOSS [ARGS...]: NP 0 is one process without mpirun
    local out=$1 np=$2 cfg=$3 loss=$4
    shift 4
    if [ "$np" = 0 ]; then
        "$prefrun" train "$root/losses/$loss.lua" --task toy --config "$dir/$cfg" --out "$dir/$out" \
            --quiet "$@" >"$dir/$out.log" 2>&1
    else
        "${mpi[@]}" -np "$np" "$prefrun" train "$root/losses/$loss.lua" --task toy \
            --config "$dir/$cfg" --out "$dir/$out" --quiet "$@" >"$dir/$out.log" 2>&1
    fi
}

train ref 0 run.yaml dpo
ok $? "one process, the reference" "$(tail -n 5 "$dir/ref.log")"
for np in 2 4; do
    train np$np $np run.yaml dpo
    ok $? "mpirun -np $np prefrun train runs to the end" "$(tail -n 5 "$dir/np$np.log")"
    out=$(same "$dir/ref" "$dir/np$np")
    ok $? "-np $np: step 1 bit-identical, metrics and weights within the tolerance" "$out"
done
train np2b 2 run.yaml dpo
out=$(same "$dir/np2" "$dir/np2b" exact)
ok $? "-np 2 twice: bit-identical" "$out"

for loss in aot bco_pair; do
    train "$loss-1" 0 run.yaml "$loss" && train "$loss-3" 3 run.yaml "$loss"
    out=$(same "$dir/$loss-1" "$dir/$loss-3")
    ok $? "$loss with 3 ranks sees the whole batch: as one process" "$out"
done
train lora-1 0 lora.yaml dpo && train lora-2 2 lora.yaml dpo
out=$(same "$dir/lora-1" "$dir/lora-2")
ok $? "LoRA adapters with 2 ranks: as one process" "$out"

# resume under another N: np2's run cut back to its step-3 checkpoint
for np in 3 0; do
    cut=$dir/resume$np
    cp -r "$dir/np2" "$cut" && rm -rf "$cut/checkpoint-6" && echo checkpoint-3 >"$cut/latest"
    if [ "$np" = 0 ]; then
        "$prefrun" train --resume "$cut" --quiet >"$cut.log" 2>&1
    else
        "${mpi[@]}" -np "$np" "$prefrun" train --resume "$cut" --quiet >"$cut.log" 2>&1
    fi
    what=$([ "$np" = 0 ] && echo "one process" || echo "$np ranks")
    ok $? "a 2-rank run resumed with $what" "$(tail -n 5 "$cut.log")"
    out=$(same "$dir/ref" "$cut")
    ok $? "... ends as the uninterrupted run" "$out"
done

# only rank 0 writes: one run directory, named once
mkdir -p "$dir/cwd"
(cd "$dir/cwd" && "${mpi[@]}" -np 2 "$prefrun" train "$root/losses/dpo.lua" --task toy \
    --config "$dir/run.yaml" --quiet >"$dir/cwd.log" 2>&1)
ok $? "a run without --out under mpirun" "$(tail -n 5 "$dir/cwd.log")"
runs=$(ls "$dir/cwd/runs" 2>/dev/null | tr '\n' ' ')
[ "$runs" = "dpo " ]
ok $? "makes one run directory, runs/dpo (got: $runs)"

# a loss that fails at step 3 (not in prefrun check's probes) ends the whole
# job, with its message
cat >"$dir/bad.lua" <<'LUA'
return {name = "bad", params = {}, loss = function(b, p)
  if b.step >= 2 then error("no pairs for me") end
  return -logsigmoid(b.policy_chosen_logps - b.policy_rejected_logps)
end}
LUA
"${mpi[@]}" -np 2 "$prefrun" train "$dir/bad.lua" --task toy --config "$dir/run.yaml" \
    --out "$dir/bad" --quiet >"$dir/bad.log" 2>&1
rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "no pairs for me" "$dir/bad.log"
ok $? "a failing loss ends the job (exit $rc) and names its error" "$(tail -n 5 "$dir/bad.log")"

echo "1..$n"
exit $((failed > 0))
