#!/usr/bin/env bash
# Does a slow fsync of the MQTT disk queue delay the reject gate? `linesight bench --rejects`
# with the queue on a disk whose fsync takes FSYNC_MS (200 by default) against the same bench
# with the queue on the plain disk, interleaved (plain, slow, plain, slow, ...), RUNS of each;
# prints the gate's lateness at the PLC (p50, p99, max) per run, and the median and spread
# (min-max) of each figure per kind.
#
#   scripts/bench_slow_fsync.sh                 RUNS=3 PARTS=2000 RATE=20 FSYNC_MS=200
#   RUNS=3 PARTS=1000 scripts/bench_slow_fsync.sh
#
# The slow disk is tools/slowfs.py: a pass-through FUSE file system that sleeps FSYNC_MS in
# every fsync/fdatasync (the device-mapper `delay` target would be a real slow block device,
# but these machines' kernel has no device-mapper). Needs root (to mount), /dev/fuse,
# Debian's libfuse3-3, and a release build: `cargo build --release` (the binary is taken from
# ${CARGO_TARGET_DIR:-target}/release/linesight, or $LINESIGHT_BIN). mfusepy is installed into
# .cache/slowfs-venv on first use (PyPI, pinned).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/env.sh
. "${ROOT}/scripts/env.sh"

RUNS="${RUNS:-3}"
PARTS="${PARTS:-2000}"
RATE="${RATE:-20}"
FSYNC_MS="${FSYNC_MS:-200}"
MFUSEPY_VERSION=3.1.1
BIN="${LINESIGHT_BIN:-${CARGO_TARGET_DIR:-${ROOT}/target}/release/linesight}"

log() { printf '[bench-slow-fsync] %s\n' "$*" >&2; }
die() { printf '[bench-slow-fsync] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root: the slow disk is a FUSE mount"
[ -e /dev/fuse ] || die "/dev/fuse is missing: this kernel has no FUSE"
[ -x "${BIN}" ] || die "${BIN} not found: run \`cargo build --release\` first (or set LINESIGHT_BIN)"
dpkg-query -W -f='${db:Status-Status}\n' libfuse3-3 2>/dev/null | grep -qx installed \
    || die "libfuse3-3 is not installed: apt-get install libfuse3-3"

VENV="${LINESIGHT_CACHE}/slowfs-venv"
if ! "${VENV}/bin/python3" -c "import mfusepy" 2>/dev/null; then
    log "installing mfusepy ${MFUSEPY_VERSION} into ${VENV}"
    python3 -m venv "${VENV}"
    "${VENV}/bin/pip" install -q "mfusepy==${MFUSEPY_VERSION}"
fi

WORK="$(mktemp -d /var/tmp/linesight-slow-fsync.XXXXXX)"
MNT="${WORK}/slow"
PLAIN="${WORK}/plain"
mkdir -p "${MNT}" "${PLAIN}" "${WORK}/backing"
FS_PID=""
cleanup() {
    umount "${MNT}" 2>/dev/null || umount -l "${MNT}" 2>/dev/null || true
    [ -n "${FS_PID}" ] && wait "${FS_PID}" 2>/dev/null || true
    rm -rf "${WORK}"
}
trap cleanup EXIT

"${VENV}/bin/python3" "${ROOT}/tools/slowfs.py" "${WORK}/backing" "${MNT}" --fsync-ms "${FSYNC_MS}" \
    >"${WORK}/slowfs.log" 2>&1 &
FS_PID=$!
for _ in $(seq 50); do
    mountpoint -q "${MNT}" && break
    sleep 0.1
done
mountpoint -q "${MNT}" || die "the slow file system did not mount: $(cat "${WORK}/slowfs.log")"
log "slow disk: ${MNT} (fsync ${FSYNC_MS} ms, backing ${WORK}/backing); plain disk: ${PLAIN}"
log "${RUNS} runs of each, interleaved; ${PARTS} parts at ${RATE} parts/s per run"

RESULTS="${WORK}/results.jsonl"
: >"${RESULTS}"
for i in $(seq "${RUNS}"); do
    for kind in plain slow; do
        dir="${PLAIN}"
        [ "${kind}" = slow ] && dir="${MNT}"
        log "run ${i}/${RUNS}: ${kind}"
        out="$("${BIN}" --log-format text bench --rejects --json --parts "${PARTS}" --rate "${RATE}" \
            --queue-dir "${dir}" 2>"${WORK}/bench.log")" || die "bench failed: $(tail -5 "${WORK}/bench.log")"
        printf '{"kind": "%s", "run": %s, "out": %s}\n' "${kind}" "${i}" "${out}" >>"${RESULTS}"
    done
done

python3 - "${RESULTS}" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{'kind':6} {'run':>3} {'fsync ms':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'misses':>6} {'failed':>6} {'not kept':>8}")
for r in rows:
    o, q = r["out"], r["out"]["queue"]
    e = o["on_error_ms"]
    print(f"{r['kind']:6} {r['run']:>3} {q['fsync_ms']:>9} {e['p50']:>8} {e['p99']:>8} {e['max']:>8} "
          f"{o['deadline_misses']:>6} {o['failed']:>6} {q['dropped']:>8}")
print()
print(f"{'kind':6} {'figure':6} {'median':>8}  spread (min-max)")
for kind in ("plain", "slow"):
    for fig in ("p50", "p99", "max"):
        v = [r["out"]["on_error_ms"][fig] for r in rows if r["kind"] == kind]
        print(f"{kind:6} {fig:6} {statistics.median(v):>8.3f}  {min(v):.3f}-{max(v):.3f}")
print()
print("machine:", rows[0]["out"]["machine"])
EOF
