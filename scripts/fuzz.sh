#!/usr/bin/env bash
# Fuzz every parser of outside input (reliability.md item 12) with cargo-fuzz, on the stable
# toolchain, and print a table: target, seconds, runs, execs/s, corpus, crashes.
#
#   scripts/fuzz.sh [--dev] [--update-corpus] [SECONDS_PER_TARGET] [TARGET...]
#
#   SECONDS_PER_TARGET  default 600 (the recorded long run); the short form is 30
#   TARGET...           default: every target of fuzz/Cargo.toml (`cargo fuzz list`)
#   --dev               build without optimizations: a cold build takes about 60 % of the time,
#                       each input runs several times slower (for short runs)
#   --update-corpus     grow fuzz/corpus/<target>/ in place, then minimize it: the inputs that
#                       cover the most code, greedily, at most LINESIGHT_FUZZ_CORPUS_CAP (200) of
#                       them; without it each run starts from a copy of the committed corpus and
#                       the checkout is left as it was. `--update-corpus 0` only minimizes.
#   SECONDS_PER_TARGET 0 runs every corpus input once and fuzzes nothing.
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
PROFILE=release
while [ $# -gt 0 ]; do
    case "$1" in
        --update-corpus) UPDATE=1 ;;
        --dev) PROFILE=debug ;;
        *) break ;;
    esac
    shift
done
SECONDS_PER_TARGET="${1:-600}"
[ $# -gt 0 ] && shift
case "${SECONDS_PER_TARGET}" in
    '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [--dev] [--update-corpus] [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2 ;;
esac
SANITIZER="${LINESIGHT_FUZZ_SANITIZER:-none}"
CAP="${LINESIGHT_FUZZ_CORPUS_CAP:-200}"
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

# What is fuzzed: the commit (and whether the tree differs from it) and the day, taken before the
# build, so that commits made while the targets run do not end up in the table.
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' (modified)')"
DAY="$(date -u +%Y-%m-%d)"

# The instrumented build. CARGO_TARGET_DIR (set for the main build) must not send it elsewhere.
t0=${SECONDS}
unset CARGO_TARGET_DIR
DEV=()
[ "${PROFILE}" = debug ] && DEV=(--dev)
cargo fuzz build --fuzz-dir "${ROOT}/fuzz" --sanitizer "${SANITIZER}" --target-dir "${TARGET_DIR}" "${DEV[@]}" "${JOBS[@]}" >&2
BUILD_S=$((SECONDS - t0))
BIN_DIR="${TARGET_DIR}/x86_64-unknown-linux-gnu/${PROFILE}"
echo "[fuzz] build: ${BUILD_S} s (${PROFILE}, sanitizer ${SANITIZER})" >&2

# Replace corpus $2 by at most CAP of its inputs, chosen greedily by the code they cover: libFuzzer
# (-merge=1, binary $1) records the edges and features of every input, then each pick is the input
# that adds the most edges not covered yet (then features, then the smallest). $3 is scratch.
minimize() {
    local bin="$1" corpus="$2" work="$3"
    mkdir -p "${work}/out"
    "${bin}" -merge=1 -max_len=1048576 -merge_control_file="${work}/control" "${work}/out" "${corpus}" >&2
    python3 - "${work}/control" "${corpus}" "${CAP}" <<'PY'
import hashlib, heapq, os, shutil, sys
control, corpus, cap = sys.argv[1], sys.argv[2], int(sys.argv[3])
lines = open(control).read().split("\n")
n = int(lines[0])
paths = lines[2:2 + n]
size, cov, ft = {}, {}, {}
for line in lines[2 + n:]:
    parts = line.split()
    if len(parts) >= 3 and parts[0] == "STARTED":
        size[int(parts[1])] = int(parts[2])
    elif parts and parts[0] in ("COV", "FT"):
        (cov if parts[0] == "COV" else ft)[int(parts[1])] = set(parts[2:])
done = [i for i in size if i in cov or i in ft]
covered, featured, chosen = set(), set(), []
# Lazy greedy: a gain only shrinks as more is covered.
heap = [(-len(cov.get(i, ())), -len(ft.get(i, ())), size[i], i) for i in done]
heapq.heapify(heap)
while heap and len(chosen) < cap:
    _, _, s, i = heapq.heappop(heap)
    gain = (len(cov.get(i, set()) - covered), len(ft.get(i, set()) - featured))
    if gain == (0, 0):
        continue
    if heap and (-gain[0], -gain[1], s) > heap[0][:3]:
        heapq.heappush(heap, (-gain[0], -gain[1], s, i))
        continue
    chosen.append(i)
    covered |= cov.get(i, set())
    featured |= ft.get(i, set())
new = corpus + ".new"
os.makedirs(new)
for i in chosen:
    data = open(paths[i], "rb").read()
    open(os.path.join(new, hashlib.sha1(data).hexdigest()), "wb").write(data)
shutil.rmtree(corpus)
os.rename(new, corpus)
every = set().union(*cov.values()) if cov else set()
print(f"{len(covered)} of {len(every)} edges of {len(done)} inputs")
PY
}

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
    how=(-max_total_time="${SECONDS_PER_TARGET}")
    [ "${SECONDS_PER_TARGET}" = 0 ] && how=(-runs=0)
    "${BIN_DIR}/${t}" "${dir}" "${extra[@]}" "${how[@]}" -timeout=10 -rss_limit_mb=2048 \
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
    kept=""
    if [ "${UPDATE}" = 1 ]; then
        kept=", $(minimize "${BIN_DIR}/${t}" "${corpus}" "${SCRATCH}/${t}.min" 2>>"${log}")"
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "${log}" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "${log}" | tail -n 1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "${log}" | tail -n 1)
    files=$(find "${dir}" -type f | wc -l)
    kb=$(find "${dir}" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%d", (s + 1023) / 1024 }')
    ROWS+=("$(printf '| %s | %s | %s | %s | %s files, %s KB%s | %s | %s |' \
        "${t}" "${SECONDS_PER_TARGET}" "${runs:-?}" "${rate:-?}" "${files}" "${kb}" "${kept}" "${crashes}" "${rss:-?}")")
done

echo
echo "Fuzzing ${DAY}, commit ${COMMIT}, ${PROFILE} build (${BUILD_S} s), sanitizer ${SANITIZER}"
echo
echo "| target | seconds | runs | execs/s | corpus | crashes | peak RSS (MB) |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
exit "${FAILED}"
