#!/usr/bin/env bash
# Try the Node-RED flow (dashboards/node-red/flows.json) once with real Node-RED from npm against
# the demo line: the demo's broker carries linesight's JSON topics, Node-RED (installed into
# .cache/node-red, pinned) runs the flow on them, and this script waits for the flow's summaries on
# linesight-dashboard/# and prints them. Not part of CI (it downloads Node-RED from npm).
#   scripts/try_node_red.sh [DEMO_SECONDS]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
# 4.1: the last line that runs on Debian 12's Node.js 20 (Node-RED 5 needs Node.js 22.9).
NODE_RED_VERSION=4.1.8
SECONDS_DEMO="${1:-40}"
"${ROOT}/scripts/setup.sh" >/dev/null
# shellcheck source=scripts/env.sh
. "${ROOT}/scripts/env.sh"
command -v npm >/dev/null || { echo "npm is needed (Debian: apt-get install npm)" >&2; exit 1; }
NR="${ROOT}/.cache/node-red"
if ! grep -q "\"version\": \"${NODE_RED_VERSION}\"" "${NR}/node_modules/node-red/package.json" 2>/dev/null; then
    echo "[node-red] npm install node-red@${NODE_RED_VERSION} into ${NR}" >&2
    npm install --silent --no-audit --no-fund --prefix "${NR}" "node-red@${NODE_RED_VERSION}" >&2
fi
cargo build --locked --release >&2
WORK="$(mktemp -d)"
cleanup() { kill "${DEMO_PID:-}" "${NR_PID:-}" 2>/dev/null || true; rm -rf "${WORK}"; }
trap cleanup EXIT

"${CARGO_TARGET_DIR:-${ROOT}/target}/release/linesight" demo --duration "${SECONDS_DEMO}" --http-port 0 >"${WORK}/demo.log" 2>&1 &
DEMO_PID=$!
for _ in $(seq 1 100); do
    PORT="$(sed -n 's/.*MQTT broker: 127.0.0.1:\([0-9]*\).*/\1/p' "${WORK}/demo.log" | head -n 1)"
    [ -n "${PORT}" ] && break
    sleep 0.2
done
[ -n "${PORT:-}" ] || { cat "${WORK}/demo.log" >&2; echo "the demo printed no broker" >&2; exit 1; }
NR_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cp dashboards/node-red/flows.json "${WORK}/flows.json"
echo "[node-red] demo broker 127.0.0.1:${PORT}; Node-RED on 127.0.0.1:${NR_PORT}" >&2
MQTT_HOST=127.0.0.1 MQTT_PORT="${PORT}" "${NR}/node_modules/.bin/node-red" --userDir "${WORK}" \
    --port "${NR_PORT}" "${WORK}/flows.json" >"${WORK}/node-red.log" 2>&1 &
NR_PID=$!
# The summaries the flow republishes: one per task at least, and the camera status.
if ! mosquitto_sub -h 127.0.0.1 -p "${PORT}" -t 'linesight-dashboard/#' -v -C 6 -W $((SECONDS_DEMO - 5)) >"${WORK}/out.txt"; then
    cat "${WORK}/node-red.log" >&2
    echo "[node-red] FAILED: fewer than 6 summaries from the flow" >&2
    exit 1
fi
cat "${WORK}/out.txt"
grep -q '/summary {' "${WORK}/out.txt" && grep -q '/cameras/top {' "${WORK}/out.txt" \
    || { echo "[node-red] FAILED: no task summary or camera status" >&2; exit 1; }
echo "[node-red] ok: Node-RED ${NODE_RED_VERSION} ran dashboards/node-red/flows.json on the demo's telemetry" >&2
