#!/usr/bin/env bash
# Cross-build linesight for aarch64-unknown-linux-gnu on a Debian 12 x86_64 host, fetch the
# aarch64 ONNX Runtime library, and smoke-run the binary under qemu-user.
#
#   cross/build-aarch64.sh [--no-install] [--no-smoke] [--crate DIR] [--bin NAME] [-- CARGO_ARGS...]
#
# Output: target/aarch64-unknown-linux-gnu/release/linesight and a staging tree
#         target/aarch64-unknown-linux-gnu/dist/ (usr/bin, usr/lib/linesight, systemd files).
#
# How OpenCV for arm64 is found. Debian 12's OpenCV -dev packages can NOT be installed for amd64
# and arm64 at the same time (libopencv-dev, -imgcodecs-dev and -videoio-dev pull in libgdal32 and
# friends, which are not multi-arch co-installable: `apt-get install libopencv-dev:arm64` removes
# the host's libopencv-dev). So this script never installs arm64 OpenCV into the host's dpkg.
# Instead apt resolves the arm64 closure of the OpenCV modules linesight uses against an EMPTY
# dpkg status, downloads the .debs (Debian's own mirror, ~190 MB) and unpacks them with
# `dpkg-deb -x` into a private sysroot, ~/.cache/linesight/sysroot-aarch64/ (or $LINESIGHT_SYSROOT).
# The host keeps its own OpenCV.
# Only the cross toolchain and qemu are real host packages (they co-install fine).
#
# Limits (see cross/README.md): the result links Debian 12's glibc 2.36 and OpenCV 4.6
# (libopencv_*.so.406). Jetson Linux r36 is Ubuntu 22.04 (glibc 2.35, OpenCV 4.8 from JetPack),
# so this binary is a compile/link check and a qemu smoke test, not a deployable Jetson build:
# use cross/Dockerfile.jetson for that. ONNX Runtime crashes under qemu-user, so only commands
# that do not load it (--version, check-config) can be run emulated.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/env.sh
. "${ROOT}/scripts/env.sh"

log() { printf '[cross] %s\n' "$*" >&2; }
die() { printf '[cross] ERROR: %s\n' "$*" >&2; exit 1; }

TRIPLE=aarch64-unknown-linux-gnu
MULTIARCH=aarch64-linux-gnu
INSTALL=1
SMOKE=1
CRATE_DIR="${ROOT}"
BIN=linesight
CARGO_EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --no-install) INSTALL=0; shift ;;
        --no-smoke) SMOKE=0; shift ;;
        --crate) CRATE_DIR="$(cd "$2" && pwd)"; shift 2 ;;
        --bin) BIN="$2"; shift 2 ;;
        -h|--help) sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        --) shift; CARGO_EXTRA=("$@"); break ;;
        *) die "unknown argument: $1" ;;
    esac
done

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo env DEBIAN_FRONTEND=noninteractive "$@"
    else die "need root for: $*"; fi
}
APT_OPTS=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
export DEBIAN_FRONTEND=noninteractive

if [ "${LINESIGHT_HOST_ARCH}" = aarch64 ]; then
    log "host is aarch64: building natively (no cross toolchain needed)"
    cd "${CRATE_DIR}"
    cargo build --release --locked "${CARGO_EXTRA[@]}"
    exit 0
fi

# --- 1. host packages: cross toolchain, qemu, bindgen's clang ------------------------------------
if [ "${INSTALL}" -eq 1 ]; then
    . /etc/os-release
    if [ "${ID:-}" = ubuntu ]; then
        log "WARNING: Ubuntu serves arm64 packages from ports.ubuntu.com: restrict the existing"
        log "         sources to [arch=amd64] and add a ports source for arm64 before running this."
    fi
    need_update=0
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        log "dpkg --add-architecture arm64"
        as_root dpkg --add-architecture arm64
        need_update=1
    fi
    host_pkgs=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross clang libclang-dev
               qemu-user-static pkg-config)
    missing=()
    for p in "${host_pkgs[@]}"; do
        dpkg-query -W -f='${db:Status-Status}\n' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
    done
    # arm64 package indexes must be present for the sysroot download below.
    if ! ls /var/lib/apt/lists/*_binary-arm64_Packages* >/dev/null 2>&1; then need_update=1; fi
    if [ ${#missing[@]} -gt 0 ] || [ "${need_update}" -eq 1 ]; then
        as_root apt-get "${APT_OPTS[@]}" update -qq
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        as_root apt-get "${APT_OPTS[@]}" install -y -qq "${missing[@]}"
    else
        log "host packages: all present"
    fi
    if command -v rustup >/dev/null 2>&1; then
        rustup target list --installed | grep -qx "${TRIPLE}" || rustup target add "${TRIPLE}"
    fi
fi
command -v aarch64-linux-gnu-gcc >/dev/null || die "aarch64-linux-gnu-gcc missing (run without --no-install)"

# --- 2. private arm64 sysroot with OpenCV (never touches the host's dpkg state) --------------
# Outside the work tree on purpose (~800 MB unpacked): it must never end up in a commit.
SYSROOT="${LINESIGHT_SYSROOT:-${XDG_CACHE_HOME:-${HOME}/.cache}/linesight/sysroot-aarch64}"
SYSROOT_PKGS=(libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev libopencv-videoio-dev
              libc6-dev libstdc++-12-dev)
stamp="${SYSROOT}/.linesight-sysroot"
if [ -f "${stamp}" ] && [ "$(cat "${stamp}")" = "${SYSROOT_PKGS[*]}" ]; then
    log "sysroot: ok (${SYSROOT})"
else
    [ "${INSTALL}" -eq 1 ] || die "sysroot ${SYSROOT} missing (run without --no-install)"
    log "sysroot: resolving and downloading the arm64 closure of: ${SYSROOT_PKGS[*]}"
    rm -rf "${SYSROOT}"
    mkdir -p "${SYSROOT}/.apt/archives/partial"
    : >"${SYSROOT}/.apt/status"
    # Empty status: apt treats the sysroot as an empty arm64 system and downloads the full closure.
    sys_apt=(-o APT::Architecture=arm64 -o "APT::Architectures::=arm64"
             -o "Dir::State::status=${SYSROOT}/.apt/status"
             -o "Dir::Cache::archives=${SYSROOT}/.apt/archives"
             -o Debug::NoLocking=1 -o Acquire::Retries=3)
    apt-get "${sys_apt[@]}" install --download-only -y -qq "${SYSROOT_PKGS[@]}" >/dev/null \
        || die "downloading the arm64 sysroot packages failed"
    n=0
    for deb in "${SYSROOT}"/.apt/archives/*.deb; do
        dpkg-deb -x "${deb}" "${SYSROOT}"
        n=$((n + 1))
    done
    rm -rf "${SYSROOT}/.apt"
    printf '%s\n' "${SYSROOT_PKGS[*]}" >"${stamp}"
    log "sysroot: unpacked ${n} packages ($(du -sh "${SYSROOT}" | cut -f1))"
fi
[ -e "${SYSROOT}/usr/lib/${MULTIARCH}/libopencv_core.so" ] || die "sysroot has no libopencv_core.so"
# dpkg-deb -x does not run maintainer scripts, so the alternatives Debian sets up for BLAS and
# LAPACK (libblas.so.3 -> blas/libblas.so.3, needed by OpenCV's core through armadillo/arpack)
# are missing: make them, idempotently.
for alt in blas/libblas.so.3 lapack/liblapack.so.3; do
    if [ -e "${SYSROOT}/usr/lib/${MULTIARCH}/${alt}" ] && [ ! -e "${SYSROOT}/usr/lib/${MULTIARCH}/${alt#*/}" ]; then
        ln -s "${alt}" "${SYSROOT}/usr/lib/${MULTIARCH}/${alt#*/}"
    fi
done

# --- 3. cross environment ---------------------------------------------------------------------
SYSLIB="${SYSROOT}/usr/lib/${MULTIARCH}"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
# pkg-config must not hand the host's (x86_64) OpenCV to the arm64 build.
export PKG_CONFIG_ALLOW_CROSS=1
export PKG_CONFIG_SYSROOT_DIR="${SYSROOT}"
export PKG_CONFIG_LIBDIR="${SYSLIB}/pkgconfig:${SYSROOT}/usr/share/pkgconfig"
unset PKG_CONFIG_PATH
# The opencv crate's build script takes explicit paths (the sysroot has no opencv4.pc: that file
# is in libopencv-dev, whose closure drags in VTK, GDAL, MPI...). Only the modules we enable.
export OPENCV_INCLUDE_PATHS="${SYSROOT}/usr/include/opencv4,${SYSROOT}/usr/include/${MULTIARCH}/opencv4"
export OPENCV_LINK_PATHS="${SYSLIB}"
export OPENCV_LINK_LIBS="opencv_core,opencv_imgproc,opencv_imgcodecs,opencv_videoio"
export OPENCV_DISABLE_PROBES="pkg_config,cmake,vcpkg_cmake,vcpkg"
# The linker resolves the OpenCV libraries' own dependencies (FFmpeg, GStreamer, GDAL...) in the
# sysroot; the runtime search path is the target's default one.
# Some Debian arm64 libraries (armadillo, ogdi, hdf4 under GDAL) live in /usr/lib, not the multiarch dir.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=-Wl,-rpath-link,${SYSLIB} -C link-arg=-Wl,-rpath-link,${SYSROOT}/lib/${MULTIARCH} -C link-arg=-Wl,-rpath-link,${SYSROOT}/usr/lib -C link-arg=--sysroot=${SYSROOT}"
# qemu for `cargo run/test --target aarch64-...` on this host.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -L ${SYSROOT} -E LD_LIBRARY_PATH=/lib/${MULTIARCH}:/usr/lib/${MULTIARCH}:/usr/lib"

# --- 4. build ---------------------------------------------------------------------------------
cd "${CRATE_DIR}"
LOCKED=()
[ -f Cargo.lock ] && LOCKED=(--locked)
TARGET_DIR="${CARGO_TARGET_DIR:-${CRATE_DIR}/target}"
log "cargo build --release --target ${TRIPLE} (target dir ${TARGET_DIR})"
t0=${SECONDS}
cargo build "${LOCKED[@]}" --release --target "${TRIPLE}" --bin "${BIN}" "${CARGO_EXTRA[@]}"
OUT="${TARGET_DIR}/${TRIPLE}/release/${BIN}"
log "built ${OUT} in $((SECONDS - t0)) s: $(file -b "${OUT}" | cut -d, -f1-2)"

# --- 5. ONNX Runtime for aarch64 (PyPI CPU wheel) ------------------------------------------------
"${ROOT}/scripts/setup.sh" --ort-only --target aarch64
ORT_AARCH64="$(linesight_ort_dir aarch64)/libonnxruntime.so.${ORT_VERSION}"

# --- 6. staging tree for packaging / copying to the device ----------------------------------
DIST="${TARGET_DIR}/${TRIPLE}/dist"
rm -rf "${DIST}"
install -Dm755 "${OUT}" "${DIST}/usr/bin/${BIN}"
install -Dm755 "${ORT_AARCH64}" "${DIST}/usr/lib/linesight/libonnxruntime.so.${ORT_VERSION}"
ln -s "libonnxruntime.so.${ORT_VERSION}" "${DIST}/usr/lib/linesight/libonnxruntime.so"
install -Dm644 "${ROOT}/systemd/linesight.service" "${DIST}/usr/lib/systemd/system/linesight.service"
install -Dm644 "${ROOT}/systemd/linesight.sysusers.conf" "${DIST}/usr/lib/sysusers.d/linesight.conf"
install -Dm644 "${ROOT}/systemd/linesight.tmpfiles.conf" "${DIST}/usr/lib/tmpfiles.d/linesight.conf"
log "staged ${DIST}"

# --- 7. smoke run under qemu-user (no inference: ONNX Runtime crashes under qemu) -----------
if [ "${SMOKE}" -eq 1 ]; then
    log "smoke: qemu-aarch64-static ${BIN} --version"
    qemu-aarch64-static -L "${SYSROOT}" -E "LD_LIBRARY_PATH=/lib/${MULTIARCH}:/usr/lib/${MULTIARCH}:/usr/lib" \
        "${OUT}" --version
    log "smoke: ok"
fi
