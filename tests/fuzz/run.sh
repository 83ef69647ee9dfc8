#!/usr/bin/env bash
# Builds the libFuzzer harnesses of tests/fuzz/ (clang, coverage, ASan +
# UBSan) in build-fuzz/ and runs each one with a fixed seed on a copy of its
# seed corpus (tests/fuzz/corpus/NAME/, never written), printing TAP: one
# line per harness, "ok N - fuzz_x: R runs, no crash". Exits non-zero when a
# harness crashes, hangs, leaks, trips a sanitizer or allocates past the cap.
#   bash tests/fuzz/run.sh          # short: 45 s a harness, 2 at a time (CI)
#   bash tests/fuzz/run.sh --long   # long: 30 min a harness, 2 at a time
#   FUZZ_SECONDS=300 FUZZ_JOBS=1 FUZZ_ONLY="loss check" bash tests/fuzz/run.sh
# The bar for every input: no crash, no sanitizer report, no leak, no input
# slower than 10 s, no single allocation over 64 MiB (-malloc_limit_mb) and
# at most 2 GiB resident (-rss_limit_mb). A failing input is kept in
# build-fuzz/fuzz-artifacts/NAME/; rerun it with build-fuzz/fuzz_NAME FILE.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root" || exit 1
harnesses="loss check jsonl config discover safetensors st_shards model_file hf_config
           trainer_state propose"
seconds=45
if [ "${1:-}" = "--long" ]; then
    seconds=1800
elif [ -n "${1:-}" ]; then
    echo "usage: bash tests/fuzz/run.sh [--long]" >&2
    exit 2
fi
seconds="${FUZZ_SECONDS:-$seconds}"
jobs="${FUZZ_JOBS:-2}"
harnesses="${FUZZ_ONLY:-$harnesses}"
build="build-fuzz"

# what .ci/bootstrap.sh installs for the normal build (its list, read from it
# so the two cannot drift apart), and clang with its sanitizer and libFuzzer
# runtimes and its OpenMP; checked and installed the same way
packages="$(sed -n '/^packages="/,/"$/p' .ci/bootstrap.sh | tr -d '"' | sed 's/^packages=//')
          clang libclang-rt-14-dev libomp-14-dev"
missing=""
for p in $packages; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "prefrun fuzz: installing$missing" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    # shellcheck disable=SC2086
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        $sudo apt-get install -y -qq $missing; } >&2 ||
        { echo "1..1"; echo "not ok 1 - fuzz: installing$missing failed"; exit 1; }
fi

targets=""
for n in $harnesses; do targets="$targets fuzz_$n"; done
# the libraries themselves instrumented (coverage, ASan, UBSan with every
# finding fatal), asserts on: see the fuzz block of meson.build
# shellcheck disable=SC2054
opts=(-Dfuzz=true -Db_sanitize=address,undefined -Dbuildtype=debugoptimized -Db_ndebug=false
      "-Dc_args=-fsanitize=fuzzer-no-link -fno-sanitize-recover=all -Wno-pass-failed")
if [ -f "$build/build.ninja" ]; then
    meson configure "$build" "${opts[@]}" >&2
else
    CC=clang meson setup "$build" "${opts[@]}" >&2
fi || { echo "1..1"; echo "not ok 1 - fuzz build: meson setup failed"; exit 1; }
# shellcheck disable=SC2086
ninja -C "$build" $targets >&2 || { echo "1..1"; echo "not ok 1 - fuzz build failed"; exit 1; }

work="$build/fuzz-work"
art="$build/fuzz-artifacts"
rm -rf "$work" "$art"
mkdir -p "$work" "$art"
# the harnesses' temporary directories (fuzz_common.h) go into one directory
# of this run, in memory where there is /dev/shm (a file write per input),
# removed at the end even when a harness crashed
tmp=$(mktemp -d /dev/shm/prefrun-fuzz.XXXXXX 2>/dev/null || mktemp -d "$root/$work/tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export TMPDIR="$tmp"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"

run_one() { # name seed
    local n=$1 seed=$2
    mkdir -p "$work/$n" "$art/$n"
    cp -r "tests/fuzz/corpus/$n" "$work/$n/corpus" # libFuzzer adds its finds to the copy
    timeout $((seconds + 300)) "$build/fuzz_$n" -seed="$seed" -max_total_time="$seconds" \
        -max_len=8192 -timeout=10 -malloc_limit_mb=64 -rss_limit_mb=2048 \
        -artifact_prefix="$art/$n/" -print_final_stats=1 "$work/$n/corpus" \
        >"$work/$n/log" 2>&1
    echo $? >"$work/$n/rc"
}

seed=0
for n in $harnesses; do
    seed=$((seed + 1))
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
    run_one "$n" "$seed" &
done
wait

total=$(echo "$harnesses" | wc -w)
echo "1..$total"
i=0
failed=""
for n in $harnesses; do
    i=$((i + 1))
    rc=$(cat "$work/$n/rc" 2>/dev/null || echo 1)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$n/log" | tail -n 1)
    [ -n "$runs" ] || runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$work/$n/log" | tail -n 1)
    found=$(find "$art/$n" -type f | head -n 1)
    if [ "$rc" = 0 ] && [ -z "$found" ]; then
        echo "ok $i - fuzz_$n: ${runs:-0} runs, no crash"
    else
        echo "not ok $i - fuzz_$n: failed after ${runs:-?} runs (exit $rc, input: ${found:-none})"
        failed="$failed $n"
    fi
done
for n in $failed; do
    echo "# fuzz_$n ($work/$n/log):"
    # the finding and its frames in prefrun's own code
    what="ERROR|SUMMARY|runtime error|fuzz property|ALARM|out-of-memory|malloc\\("
    grep -E "$what|#[0-9]+ .* in .*/(src|tests)/" "$work/$n/log" | head -n 24 | sed 's/^/#   /'
done
[ -z "$failed" ] && exit 0
exit 1
