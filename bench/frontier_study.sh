#!/usr/bin/env bash
# frontier_study.sh — DiscoPOP against DPO on the built-in task (issue 12):
# the reward-KL frontier under settings that each remove one suspected cause
# of DiscoPOP trailing DPO. Every variant is one `prefrun frontier` run
# (betas 0.05, 0.1, 0.5; seeds 1..2); the tables are DIR/*/frontier.csv.
#   bash bench/frontier_study.sh [PREFRUN] [DIR]
#   default   the task's settings (200 steps, learning rate 2e-4 or the default)
#   long      4x the steps (800): training to convergence, as the paper does
#   lr        learning rate 4e-4 (and 1e-4)
#   tau       DiscoPOP with tau 0.2 instead of the paper's 0.05: at tau 0.05 the
#             loss's slope at rho = 0 has the wrong sign (see README)
#   bt        noisy labels: training pairs from `prefrun pretrain --bt-temp 0.5`
#             (Bradley-Terry: the better completion is chosen with probability
#             sigmoid(reward gap / 0.5)), held-out pairs and rewards clean
set -euo pipefail
exe=${1:-build/prefrun}
out=${2:-runs/frontier-study}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$out"
tau02="$out/discopop-tau0.2.lua"
sed -e 's/tau = 0.05/tau = 0.2/' -e 's/name = "discopop"/name = "discopop-tau0.2"/' \
    "$root/losses/discopop.lua" > "$tau02"
common=(--betas 0.05,0.1,0.5 --seeds 2 --quiet)
L=("$root/losses/dpo.lua" "$root/losses/discopop.lua")
"$exe" frontier "${L[@]}" "${common[@]}" --out "$out/default"
"$exe" frontier "${L[@]}" "${common[@]}" --steps 800 --out "$out/long"
"$exe" frontier "${L[@]}" "${common[@]}" --set learning_rate=4e-4 --out "$out/lr4e-4"
"$exe" frontier "${L[@]}" "${common[@]}" --set learning_rate=1e-4 --out "$out/lr1e-4"
"$exe" frontier "${L[@]}" "$tau02" "${common[@]}" --out "$out/tau"
noisy=$("$exe" pretrain --bt-temp 0.5 2>&1 | sed -n 's/^prefrun pretrain: pairs //p')
"$exe" frontier "${L[@]}" "${common[@]}" --set "train_file=$noisy" --out "$out/bt"
for v in default long lr4e-4 lr1e-4 tau bt; do
    echo "== $v"
    cat "$out/$v/frontier.csv"
done
