#!/usr/bin/env bash
# The project's ONE demo command: installs what is missing, builds the release binary and runs
#   ./target/release/linesight demo "$@"
# With no arguments the binary's own defaults apply (see `linesight demo --help`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"

"${ROOT}/scripts/setup.sh"
# shellcheck source=scripts/env.sh
. "${ROOT}/scripts/env.sh"

LOCKED=()
[ -f Cargo.lock ] && LOCKED=(--locked)
echo "[demo] cargo build --release" >&2
cargo build "${LOCKED[@]}" --release

exec "${CARGO_TARGET_DIR:-${ROOT}/target}/release/linesight" demo "$@"
