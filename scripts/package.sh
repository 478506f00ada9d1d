#!/usr/bin/env bash
# Build the Debian package linesight_<version>_<arch>.deb with cargo-deb.
#
#   scripts/package.sh [--target aarch64] [--debug] [--no-build] [--deb-version V] [--fast] [--output DIR]
#
#   (default)          release build for this host, then the .deb (target/debian/ under the cargo
#                      target dir, or --output DIR)
#   --target aarch64   an arm64 .deb for Debian 12 arm64 boards: cross/build-aarch64.sh builds the
#                      binary, the aarch64 ONNX Runtime goes in (not for a Jetson: see
#                      packaging/README.Debian)
#   --debug            package the debug binary that `cargo test`/`cargo build` already made
#                      (CI: tools/check_package.py), never built here; implies --no-build
#   --no-build         package the binary that is there, do not run cargo build
#   --deb-version V    the package version (default: Cargo.toml's version, revision 1)
#   --fast             lighter xz compression (quicker, a larger file)
#
# What goes in: Cargo.toml [package.metadata.deb] (binary, ONNX Runtime, systemd unit, sysusers,
# tmpfiles, example config as a conffile, demo model, sample video, docs) and the maintainer
# scripts in packaging/deb/. ONNX Runtime is staged into .cache/deb/lib/ from
# .cache/onnxruntime/<version>[-<arch>]/ (scripts/setup.sh --ort-only fetches it when missing).
# cargo-deb (pinned below) is installed from crates.io when missing. Prints the .deb's path last.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
# shellcheck source=scripts/env.sh
. "${ROOT}/scripts/env.sh"

CARGO_DEB_VERSION=3.8.0

log() { printf '[package] %s\n' "$*" >&2; }
die() { printf '[package] ERROR: %s\n' "$*" >&2; exit 1; }

ARCH="${LINESIGHT_HOST_ARCH}"
DEBUG=0
BUILD=1
EXTRA=()
OUTPUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --target)
            [ $# -ge 2 ] || die "--target needs an argument (aarch64 or x86_64)"
            ARCH="$2"; shift 2 ;;
        --target=*) ARCH="${1#--target=}"; shift ;;
        --debug) DEBUG=1; BUILD=0; shift ;;
        --no-build) BUILD=0; shift ;;
        --deb-version)
            [ $# -ge 2 ] || die "--deb-version needs a version, e.g. 0.1.0-2"
            EXTRA+=(--deb-version "$2"); shift 2 ;;
        --fast) EXTRA+=(--fast); shift ;;
        --output)
            [ $# -ge 2 ] || die "--output needs a folder"
            OUTPUT="$2"; shift 2 ;;
        -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see scripts/package.sh --help)" ;;
    esac
done
case "${ARCH}" in
    aarch64|arm64|aarch64-unknown-linux-gnu) ARCH=aarch64 ;;
    x86_64|amd64|x86_64-unknown-linux-gnu) ARCH=x86_64 ;;
    *) die "unsupported --target '${ARCH}' (use aarch64 or x86_64)" ;;
esac
CROSS=0
[ "${ARCH}" != "${LINESIGHT_HOST_ARCH}" ] && CROSS=1
[ "${CROSS}" -eq 1 ] && [ "${DEBUG}" -eq 1 ] && die "--debug packages this host's debug binary; it cannot be combined with --target ${ARCH}"

# --- cargo-deb, pinned --------------------------------------------------------------------------
if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb ${CARGO_DEB_VERSION}"; then
    log "installing cargo-deb ${CARGO_DEB_VERSION} from crates.io"
    cargo install --locked --version "${CARGO_DEB_VERSION}" cargo-deb >&2
fi

# --- ONNX Runtime for the package's architecture, staged where Cargo.toml's assets look -------
ORT_DIR="$(linesight_ort_dir "${ARCH}")"
ORT_LIB="${ORT_DIR}/libonnxruntime.so.${ORT_VERSION}"
if [ ! -s "${ORT_LIB}" ]; then
    log "ONNX Runtime ${ORT_VERSION} (${ARCH}) missing: scripts/setup.sh --ort-only --target ${ARCH}"
    "${ROOT}/scripts/setup.sh" --ort-only --target "${ARCH}"
fi
[ -s "${ORT_LIB}" ] || die "${ORT_LIB} missing after scripts/setup.sh --ort-only --target ${ARCH}"
STAGE="${LINESIGHT_CACHE}/deb/lib"
rm -rf "${STAGE}"
mkdir -p "${STAGE}"
cp "${ORT_LIB}" "${STAGE}/"
ln -s "libonnxruntime.so.${ORT_VERSION}" "${STAGE}/libonnxruntime.so"

# --- the binary and the package -----------------------------------------------------------------
LOCKED=()
[ -f Cargo.lock ] && LOCKED=(--locked)
DEB_ARGS=("${LOCKED[@]}" "${EXTRA[@]}")
[ -n "${OUTPUT}" ] && { mkdir -p "${OUTPUT}"; DEB_ARGS+=(--output "${OUTPUT}"); }
TARGET_DIR="${CARGO_TARGET_DIR:-${ROOT}/target}"

if [ "${CROSS}" -eq 1 ]; then
    [ "${ARCH}" = aarch64 ] || die "cross packages are made for aarch64 only"
    TRIPLE=aarch64-unknown-linux-gnu
    if [ "${BUILD}" -eq 1 ]; then
        log "cross/build-aarch64.sh (release build for ${TRIPLE})"
        "${ROOT}/cross/build-aarch64.sh" --no-smoke
    fi
    [ -x "${TARGET_DIR}/${TRIPLE}/release/linesight" ] || die "${TARGET_DIR}/${TRIPLE}/release/linesight missing: run cross/build-aarch64.sh"
    # dpkg-shlibdeps cannot see the arm64 OpenCV (it lives in cross/build-aarch64.sh's private
    # sysroot, not in this host's dpkg database): the variant names the Debian 12 packages.
    # The host's strip cannot strip an aarch64 binary: aarch64-linux-gnu-strip does.
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_STRIP=aarch64-linux-gnu-strip
    DEB_ARGS+=(--target "${TRIPLE}" --variant arm64 --no-build)
    if command -v aarch64-linux-gnu-strip >/dev/null; then DEB_ARGS+=(--strip); else DEB_ARGS+=(--no-strip); fi
elif [ "${DEBUG}" -eq 1 ]; then
    [ -x "${TARGET_DIR}/debug/linesight" ] || die "${TARGET_DIR}/debug/linesight missing: run cargo build (or cargo test) first"
    DEB_ARGS+=(--profile dev --no-build)
elif [ "${BUILD}" -eq 0 ]; then
    [ -x "${TARGET_DIR}/release/linesight" ] || die "${TARGET_DIR}/release/linesight missing: run cargo build --release first"
    DEB_ARGS+=(--no-build)
fi
# Release packages: the binary stripped in the .deb, its debug info (the release profile keeps
# line tables) in linesight-dbgsym_<version>_<arch>.ddeb next to it, for backtraces and gdb.
[ "${DEBUG}" -eq 0 ] && [ "${CROSS}" -eq 0 ] && DEB_ARGS+=(--dbgsym)

log "cargo deb ${DEB_ARGS[*]}"
t0=${SECONDS}
OUT="$(cargo deb "${DEB_ARGS[@]}")"
DEB="$(printf '%s\n' "${OUT}" | grep '\.deb$' | tail -n1)"
[ -f "${DEB}" ] || die "cargo deb did not report a .deb (got: ${OUT})"
DDEB="$(printf '%s\n' "${OUT}" | grep '\.ddeb$' | tail -n1 || true)"
[ -n "${DDEB}" ] && log "debug symbols: ${DDEB} ($(du -h "${DDEB}" | cut -f1))"
log "built ${DEB} ($(du -h "${DEB}" | cut -f1)) in $((SECONDS - t0)) s"
printf '%s\n' "${DEB}"
