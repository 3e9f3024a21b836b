#!/usr/bin/env bash
# Time from process start to the local API answering `status`, cold (every
# component compiled) and warm (all cached), with the bundled skills and
# channels and two fixtures in the folder. Prints figures only.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/state.sh
trap 'rm -rf "$state"' EXIT
ready() {
  python3 - "$state" <<'PY'
import json, os, socket, subprocess, sys, time
state = sys.argv[1]
start = time.perf_counter()
proc = subprocess.Popen(["target/release/wasiclaw", "--state-dir", state, "run"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "WASICLAW_LOG": "warn"})
while True:
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(os.path.join(state, "wasiclaw.sock"))
        s.sendall(b'{"op":"status"}\n')
        if s.makefile().readline():
            break
    except OSError:
        time.sleep(0.001)
elapsed = (time.perf_counter() - start) * 1000
proc.terminate(); proc.wait()
print(f"{elapsed:.1f}")
PY
}
cold=$(ready)
warm=()
for _ in 1 2 3 4 5; do warm+=("$(ready)"); done
echo "ready with $(ls "$state/skills" | wc -l) components: cold ${cold} ms, warm ${warm[*]} ms"
