#!/usr/bin/env bash
# Fuzz every parser of outside input (reliability.md item 12) with cargo-fuzz, on the stable
# toolchain, and print a table: target, seconds, runs, execs/s, corpus, crashes.
#
#   scripts/fuzz.sh [--update-corpus] [SECONDS_PER_TARGET] [TARGET...]
#
#   SECONDS_PER_TARGET  default 600 (the recorded long run); CI runs 30 (scripts/test.sh)
#   TARGET...           default: every target of fuzz/Cargo.toml (`cargo fuzz list`)
#   --update-corpus     grow fuzz/corpus/<target>/ in place, then minimize it (cargo fuzz cmin);
#                       without it each run starts from a copy of the committed corpus and the
#                       checkout is left as it was.
#
# Environment:
#   LINESIGHT_FUZZ_SANITIZER  none (default: works on stable; linesight forbids unsafe code) or
#                             address (needs a nightly toolchain: `cargo +nightly`)
#   LINESIGHT_FUZZ_TARGET_DIR where the instrumented build goes (default fuzz/target)
#   LINESIGHT_FUZZ_JOBS       cargo build jobs (default: cargo's)
#
# A crash (panic, failed invariant, timeout, out of memory) is saved in fuzz/artifacts/<target>/
# and counted; the script goes on with the next target and exits 1 at the end if any target
# crashed. Reproduce one with `fuzz/target/x86_64-unknown-linux-gnu/release/<target> <file>`; keep
# it as fuzz/regressions/<target>/<name> once fixed (tests/it/fuzz_corpus.rs replays it forever).
#
# cargo-fuzz is installed (pinned, from crates.io) when missing. Nightly is not needed: the
# targets are built with `--sanitizer none`, whose flags stable rustc accepts.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
# shellcheck source=scripts/env.sh
. "${ROOT}/scripts/env.sh"

CARGO_FUZZ_VERSION=0.13.2
UPDATE=0
if [ "${1:-}" = "--update-corpus" ]; then
    UPDATE=1
    shift
fi
SECONDS_PER_TARGET="${1:-600}"
[ $# -gt 0 ] && shift
case "${SECONDS_PER_TARGET}" in
    '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [--update-corpus] [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2 ;;
esac
SANITIZER="${LINESIGHT_FUZZ_SANITIZER:-none}"
TARGET_DIR="${LINESIGHT_FUZZ_TARGET_DIR:-${ROOT}/fuzz/target}"
JOBS=()
[ -n "${LINESIGHT_FUZZ_JOBS:-}" ] && JOBS=(--jobs "${LINESIGHT_FUZZ_JOBS}")

if ! cargo fuzz --version 2>/dev/null | grep -q "cargo-fuzz ${CARGO_FUZZ_VERSION}"; then
    echo "[fuzz] installing cargo-fuzz ${CARGO_FUZZ_VERSION}" >&2
    cargo install --locked --version "${CARGO_FUZZ_VERSION}" cargo-fuzz >&2
fi

# Every target, or the ones asked for.
mapfile -t ALL < <(cargo fuzz list --fuzz-dir "${ROOT}/fuzz")
if [ $# -gt 0 ]; then
    TARGETS=("$@")
else
    TARGETS=("${ALL[@]}")
fi

# The instrumented build. CARGO_TARGET_DIR (set for the main build) must not send it elsewhere.
t0=${SECONDS}
unset CARGO_TARGET_DIR
cargo fuzz build --fuzz-dir "${ROOT}/fuzz" --sanitizer "${SANITIZER}" --target-dir "${TARGET_DIR}" "${JOBS[@]}" >&2
BUILD_S=$((SECONDS - t0))
BIN_DIR="${TARGET_DIR}/x86_64-unknown-linux-gnu/release"
echo "[fuzz] build: ${BUILD_S} s (sanitizer ${SANITIZER})" >&2

SCRATCH="$(mktemp -d)"
trap 'rm -rf "${SCRATCH}"' EXIT
ROWS=()
FAILED=0
for t in "${TARGETS[@]}"; do
    corpus="${ROOT}/fuzz/corpus/${t}"
    artifacts="${ROOT}/fuzz/artifacts/${t}"
    mkdir -p "${corpus}" "${artifacts}"
    if [ "${UPDATE}" = 1 ]; then
        dir="${corpus}"
    else
        dir="${SCRATCH}/${t}"
        mkdir -p "${dir}"
        cp -r "${corpus}/." "${dir}/"
    fi
    # The regressions are inputs too (read, never written to).
    extra=()
    [ -d "${ROOT}/fuzz/regressions/${t}" ] && extra=("${ROOT}/fuzz/regressions/${t}")
    before=$(find "${artifacts}" -type f | wc -l)
    log="${SCRATCH}/${t}.log"
    echo "[fuzz] ${t}: ${SECONDS_PER_TARGET} s" >&2
    rc=0
    "${BIN_DIR}/${t}" "${dir}" "${extra[@]}" \
        -max_total_time="${SECONDS_PER_TARGET}" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="${artifacts}/" >"${log}" 2>&1 || rc=$?
    after=$(find "${artifacts}" -type f | wc -l)
    crashes=$((after - before))
    if [ "${rc}" -ne 0 ] && [ "${crashes}" -eq 0 ]; then
        crashes=1 # died without an artifact (e.g. killed): count it, show the log
    fi
    if [ "${crashes}" -gt 0 ]; then
        FAILED=1
        echo "[fuzz] ${t}: CRASH (exit ${rc}); the end of its log:" >&2
        tail -n 40 "${log}" >&2
    fi
    if [ "${UPDATE}" = 1 ]; then
        # Minimize: the smallest set of inputs with the same coverage.
        mkdir -p "${SCRATCH}/${t}.min"
        "${BIN_DIR}/${t}" -merge=1 -max_len=1048576 "${SCRATCH}/${t}.min" "${corpus}" >>"${log}" 2>&1
        rm -rf "${corpus}"
        mv "${SCRATCH}/${t}.min" "${corpus}"
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "${log}" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "${log}" | tail -n 1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "${log}" | tail -n 1)
    files=$(find "${dir}" -type f | wc -l)
    kb=$(find "${dir}" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%d", (s + 1023) / 1024 }')
    ROWS+=("$(printf '| %s | %s | %s | %s | %s files, %s KB | %s | %s |' \
        "${t}" "${SECONDS_PER_TARGET}" "${runs:-?}" "${rate:-?}" "${files}" "${kb}" "${crashes}" "${rss:-?}")")
done

echo
echo "Fuzzing $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (modified)'), sanitizer ${SANITIZER}, build ${BUILD_S} s"
echo
echo "| target | seconds | runs | execs/s | corpus | crashes | peak RSS (MB) |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
exit "${FAILED}"
