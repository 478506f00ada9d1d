#!/usr/bin/env bash
# Reliability test 3 at full length: 100 SIGKILLs of the daemon under load (results through the
# disk queue to a real mosquitto), every stored message delivered once after de-duplication.
# CI runs the 10-kill form inside scripts/test.sh. Usage: scripts/kill_loop.sh [KILLS]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
"${ROOT}/scripts/setup.sh" >/dev/null
# shellcheck source=scripts/env.sh
. "${ROOT}/scripts/env.sh"
export LINESIGHT_KILLS="${1:-100}"
printf 'kill loop: %s kills, commit %s, %s\n' "${LINESIGHT_KILLS}" "$(git rev-parse --short HEAD)" "$(date -u +%FT%TZ)"
cargo test --locked --test it -- --ignored --nocapture kill_loop::a_hundred 2>&1 | grep -E '^kill loop:|test result|panicked|FAILED'
