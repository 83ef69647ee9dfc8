#!/usr/bin/env bash
# Runs prefrun's whole test suite from a fresh checkout: installs what is
# missing, builds, runs every test executable (TAP) through meson, and prints
# the total of test cases as its last line: "N passed, N failed".
#   bash tests/run.sh           # the normal -O2 build in build/
#   bash tests/run.sh --asan    # AddressSanitizer + UBSan build in build-asan/
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
if [ "${1:-}" = "--asan" ]; then
    export BUILD_DIR=build-asan
    export MESON_ARGS="-Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug"
    # leaks are failures; UBSan findings abort the test that has them
    export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
    export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
    # the examples test trains on the built-in task: minutes under ASan, and
    # it checks the manual, not memory (the normal run has it)
    test_args="--no-suite examples"
fi
build="${BUILD_DIR:-build}"
bash .ci/bootstrap.sh || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }
bash tests/fetch_tokenizers.sh || echo "tokenizer files not fetched: test_tokenizer skips its real-file cases" >&2
# shellcheck disable=SC2086
meson test -C "$build" --num-processes 2 --print-errorlogs ${test_args:-}
status=$?
python3 - "$build/meson-logs/testlog.json" "$status" <<'PY'
import json, re, sys
passed = failed = skipped = 0
for line in open(sys.argv[1]):
    t = json.loads(line)
    out = t.get("stdout") or ""
    ok = len(re.findall(r"^ok \d+(?!.*# SKIP)", out, re.M))
    skipped += len(re.findall(r"^ok \d+.*# SKIP", out, re.M))
    bad = len(re.findall(r"^not ok \d+", out, re.M))
    passed += ok
    failed += bad
    # a crash or a missing plan is a failure even when every printed case passed
    if t.get("result") not in ("OK", "EXPECTEDFAIL", "SKIP") and bad == 0:
        failed += 1
if int(sys.argv[2]) != 0 and failed == 0:
    failed = 1
print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
sys.exit(1 if failed else 0)
PY
