#!/usr/bin/env bash
# The project's ONE test command (CI runs it through .ci/run):
#   scripts/setup.sh, then cargo fmt --check, cargo clippy -D warnings, cargo test, a short
#   fuzzing run (scripts/fuzz.sh --dev, LINESIGHT_CI_FUZZ_S seconds per target, 5 by default), and
#   the python checks tools/check_*.py. Stops at the first failing step and says which one.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"

CURRENT_STEP="(start)"
on_exit() {
    local rc=$?
    if [ "${rc}" -ne 0 ]; then
        printf '\n[test] FAILED at step: %s (exit code %d)\n' "${CURRENT_STEP}" "${rc}" >&2
    fi
}
trap on_exit EXIT

step() {
    CURRENT_STEP="$1"; shift
    printf '\n[test] ==> %s\n' "${CURRENT_STEP}" >&2
    local t0=${SECONDS}
    "$@"
    printf '[test] ok: %s (%ds)\n' "${CURRENT_STEP}" "$((SECONDS - t0))" >&2
}

step "scripts/setup.sh" "${ROOT}/scripts/setup.sh"
# shellcheck source=scripts/env.sh
. "${ROOT}/scripts/env.sh"
printf '[test] ORT_DYLIB_PATH=%s\n[test] LINESIGHT_PYTHON=%s\n' "${ORT_DYLIB_PATH}" "${LINESIGHT_PYTHON}" >&2

LOCKED=()
[ -f Cargo.lock ] && LOCKED=(--locked)

step "cargo fmt --check" cargo fmt --all --check
step "cargo clippy --all-targets -- -D warnings" cargo clippy "${LOCKED[@]}" --all-targets -- -D warnings
step "cargo test --all-targets" cargo test "${LOCKED[@]}" --all-targets
# The short form of the fuzzing (docs/reliability.md, test 12): every target, coverage-guided,
# from the committed corpus, a few seconds each; the 10-minute run is `scripts/fuzz.sh`.
step "scripts/fuzz.sh --dev ${LINESIGHT_CI_FUZZ_S:-5}" "${ROOT}/scripts/fuzz.sh" --dev "${LINESIGHT_CI_FUZZ_S:-5}"

shopt -s nullglob
checks=(tools/check_*.py)
shopt -u nullglob
if [ ${#checks[@]} -eq 0 ]; then
    printf '\n[test] no tools/check_*.py found\n' >&2
fi
for check in "${checks[@]}"; do
    step "python3 ${check}" python3 "${check}"
done

CURRENT_STEP="(done)"
printf '\n[test] all steps passed\n' >&2
