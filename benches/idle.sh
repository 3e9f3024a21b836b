#!/usr/bin/env bash
# Idle cost of a settled daemon: CPU share and context switches (wakeups)
# over a window, with the bundled skills and channels in its folder.
# Usage: bash benches/idle.sh [SECONDS] (default 60); prints figures only.
set -euo pipefail
cd "$(dirname "$0")/.."
window="${1:-60}"
source benches/state.sh
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$state"' EXIT
WASICLAW_LOG=warn target/release/wasiclaw --state-dir "$state" run >/dev/null 2>&1 &
pid=$!
# Settle: compile and load everything, then let the first minute pass.
for _ in $(seq 1 120); do [ -S "$state/wasiclaw.sock" ] && break; sleep 0.5; done
sleep 35
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
switches() { awk '/ctxt_switches/ {s += $2} END {print s}' /proc/"$pid"/task/*/status; }
t0=$(ticks); c0=$(switches)
sleep "$window"
t1=$(ticks); c1=$(switches)
hz=$(getconf CLK_TCK)
kib() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$pid/status"; }
rss=$(kib VmRSS)
echo "idle over ${window}s: cpu $(echo "scale=3; 100 * ($t1 - $t0) / $hz / $window" | bc) %," \
  "$(echo "scale=2; ($c1 - $c0) / $window" | bc) context switches/s, rss $((rss / 1024)) MiB" \
  "(anonymous $(($(kib RssAnon) / 1024)) MiB, files $(($(kib RssFile) / 1024)) MiB)," \
  "$(ls "$state/skills" | wc -l) components"
# Which files the file-backed part is (the binary, compiled components).
awk '/^[0-9a-f]+-[0-9a-f]+ / {file = $6} /^Rss:/ && file != "" {rss[file] += $2} END {
  for (f in rss) if (rss[f] >= 1024) printf "  %6.1f MiB  %s\n", rss[f] / 1024, f }' "/proc/$pid/smaps" | sort -rn | sed "s|$state|STATE|" | head -8
