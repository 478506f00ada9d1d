#!/usr/bin/env bash
# The soak at full length: an hour of a flapping RTSP camera and broker (every 12 s each is
# away for 4 s) while the daemon inspects; RSS, file descriptors and threads sampled from /proc
# must stay bounded. CI runs 2 minutes inside scripts/test.sh. Usage: scripts/soak.sh [SECONDS]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
"${ROOT}/scripts/setup.sh" >/dev/null
# shellcheck source=scripts/env.sh
. "${ROOT}/scripts/env.sh"
export LINESIGHT_SOAK_S="${1:-3600}"
printf 'soak: %s s, commit %s, %s\n' "${LINESIGHT_SOAK_S}" "$(git rev-parse --short HEAD)" "$(date -u +%FT%TZ)"
cargo test --locked --test it -- --ignored --nocapture soak::an_hour 2>&1 | grep -E '^soak:|test result|panicked|FAILED'
