#!/usr/bin/env bash
# Checks the include rule of src/ (README: "How the code is laid out"): a
# file includes headers of its own folder and of the folders below it, never
# above. Every project include names its folder ("core/tensor.h"); the
# generated prefrun_config.h (build settings) may be included anywhere.
# Prints one TAP line per folder, then a summary; exits 1 on any violation.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../src"
# bottom to top; a folder may include itself and those to its left, except
# that the siblings above util (tokenizer, core) and above core (lua, model)
# do not include each other
layers=(util tokenizer core lua model train task discover cli)
declare -A allowed=(
    [util]="util"
    [tokenizer]="util tokenizer"
    [core]="util core"
    [lua]="util core lua"
    [model]="util core model"
    [train]="util tokenizer core lua model train"
    [task]="util tokenizer core lua model train task"
    [discover]="util tokenizer core lua model train task discover"
    [cli]="util tokenizer core lua model train task discover cli"
)
n=0 bad=0
for layer in "${layers[@]}"; do
    n=$((n + 1))
    problems=""
    for f in "$layer"/*.[ch]; do
        while IFS= read -r line; do
            inc=${line#*\"}
            inc=${inc%%\"*}
            [ "$inc" = "prefrun_config.h" ] && continue
            dir=${inc%%/*}
            if [ "$dir" = "$inc" ] || [ ! -f "$inc" ]; then
                problems+="  $f: \"$inc\" is not a header under src/FOLDER/"$'\n'
            elif [[ " ${allowed[$layer]} " != *" $dir "* ]]; then
                problems+="  $f includes $inc: $layer may include only ${allowed[$layer]}"$'\n'
            fi
        done < <(grep -E '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$f")
    done
    if [ -z "$problems" ]; then
        echo "ok $n - src/$layer includes only ${allowed[$layer]}"
    else
        bad=$((bad + 1))
        echo "not ok $n - src/$layer"
        printf '%s' "$problems" | sed 's/^/# /'
    fi
done
# a folder nobody has placed in the order is a violation too
for d in */; do
    d=${d%/}
    if [ -z "${allowed[$d]+x}" ]; then
        n=$((n + 1)) bad=$((bad + 1))
        echo "not ok $n - src/$d is not in tests/layering.sh's order of layers"
    fi
done
echo "1..$n"
[ "$bad" -eq 0 ]
