#!/usr/bin/env bash
# Run configs/example.yaml against the bundled simulator on a free loopback
# port, with the faults in configs/demo-plan.yaml, and print the summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin

workdir=$(mktemp -d)
sim_pid=""
cleanup() {
    if [ -n "$sim_pid" ]; then
        kill "$sim_pid" 2>/dev/null || true
        wait "$sim_pid" 2>/dev/null || true
    fi
    rm -rf "$workdir"
}
trap cleanup EXIT

"$bin/modelarts-sync" simulate --port 0 --plan configs/demo-plan.yaml -q \
    >"$workdir/simulator.out" &
sim_pid=$!

# The simulator prints "listening on URL" once its socket is bound.
for _ in $(seq 1 200); do
    grep -q '^listening on ' "$workdir/simulator.out" && break
    kill -0 "$sim_pid" 2>/dev/null || { echo "simulator failed to start" >&2; exit 1; }
    sleep 0.05
done
url=$(sed -n 's/^listening on //p' "$workdir/simulator.out")
[ -n "$url" ] || { echo "simulator did not report its address" >&2; exit 1; }
echo "simulator listening on $url"

MODELARTS_AUTH_TOKEN=sim-token "$bin/modelarts-sync" run configs/example.yaml \
    --endpoint "$url" "$@"
