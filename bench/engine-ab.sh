#!/usr/bin/env bash
# npm run bench:engine-ab [-- BASE [ROUNDS]]: the engine in this checkout against the commit BASE (default: the last one
# before tracing and call metrics entered the engine), in one script: both builds run `bench/engine-calls.mjs` (20,000
# unary calls at c=64 over the in-memory engine, after a warm-up) in alternating processes, ROUNDS times (default 9),
# and the table gives each one's median calls per CPU-second and the median of the per-round ratios. CPU time counts
# only this work, and alternating spreads the machine's noise over both. BASE is built from a temporary git worktree
# with this checkout's node_modules.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
base=${1:-35d775a}
rounds=${2:-9}
work=$(mktemp -d)
trap 'git -C "$here" worktree remove --force "$work/base" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git -C "$here" worktree add --detach "$work/base" "$base" >/dev/null 2>&1
ln -s "$here/node_modules" "$work/base/node_modules"
(cd "$work/base" && npx tsc -p tsconfig.build.json)
(cd "$here" && npm run build >/dev/null)
rate() { node "$here/bench/engine-calls.mjs" "$1" 20000 | awk '{ print $1 }'; }
: >"$work/rates"
for ((i = 0; i < rounds; i++)); do
  if ((i % 2 == 0)); then b=$(rate "$work/base"); h=$(rate "$here"); else h=$(rate "$here"); b=$(rate "$work/base"); fi
  echo "$b $h" >>"$work/rates"
done
echo
echo "engine, unary calls at c=64 over the in-memory transport, per CPU-second (median of $rounds alternating rounds)"
echo
sort -n -k1 "$work/rates" | awk -v n="$rounds" 'NR == int((n + 1) / 2) { print $1 }' >"$work/b"
sort -n -k2 "$work/rates" | awk -v n="$rounds" 'NR == int((n + 1) / 2) { print $2 }' >"$work/h"
awk '{ print $2 / $1 }' "$work/rates" | sort -n | awk -v n="$rounds" 'NR == int((n + 1) / 2) { printf "%.3f", $1 }' >"$work/r"
echo "| build | calls/s | vs base (median of round ratios) |"
echo "|---|---:|---:|"
echo "| base ($(git -C "$here" rev-parse --short "$base")) | $(cat "$work/b") | 1.000× |"
echo "| this checkout | $(cat "$work/h") | $(cat "$work/r")× |"
