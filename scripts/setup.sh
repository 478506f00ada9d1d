#!/usr/bin/env bash
# Installs what linesight's build, tests and demo need, and only what is missing.
# Idempotent: a second run changes nothing and takes a few seconds.
#
#   scripts/setup.sh                      everything for this host
#   scripts/setup.sh --target aarch64     also fetch the aarch64 ONNX Runtime library (cross builds)
#   scripts/setup.sh --ort-only [--target ARCH]
#                                         only the ONNX Runtime library (no apt, no venv)
#
# Works as root (CI) or as a user with sudo. Targets Debian 12 and Ubuntu 22.04+.
# What it does:
#   1. Debian packages (dpkg-query first; `apt-get update` only if something is missing):
#      libopencv-dev clang libclang-dev mosquitto mosquitto-clients pkg-config python3-pip
#      python3-venv, and systemd when systemd-analyze is missing (used by tools/check_systemd.py);
#      python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base/-good (tests/rtsp/serve.py),
#      gstreamer1.0-libav (avdec_mjpeg's reduced decoding, tests/it/reduced_decode.rs),
#      prometheus (its promtool checks /metrics in tests/it/http.rs), chromium and
#      chromium-driver (tests/it/browser.rs drives the operator page).
#      The mosquitto *service* is not needed: tests start their own broker on a free port.
#   2. A project-local venv .cache/venv with pinned pymodbus, paho-mqtt, pyserial, grpcio-tools and
#      protobuf (tests/sparkplug/spdecode.py compiles the Sparkplug B .proto), cryptography
#      (tests/common/certs.py makes the TLS test certificates), opencv-python-headless, numpy and
#      onnxruntime (tools/peer_pipeline.py, the Python peer `linesight bench --peer` runs)
#      (a venv, not `pip install --user`: Debian 12's python is "externally managed", PEP 668).
#   3. ONNX Runtime $ORT_VERSION: libonnxruntime.so.$ORT_VERSION taken from PyPI's `onnxruntime`
#      wheel into .cache/onnxruntime/$ORT_VERSION/ and checked to load.
#   4. Checks that cargo (with rustfmt and clippy) is there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/env.sh
. "${ROOT}/scripts/env.sh"

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

usage() { sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

TARGET_ARCH="${LINESIGHT_HOST_ARCH}"
ORT_ONLY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --target)
            [ $# -ge 2 ] || die "--target needs an argument (aarch64 or x86_64)"
            TARGET_ARCH="$2"; shift 2 ;;
        --target=*) TARGET_ARCH="${1#--target=}"; shift ;;
        --ort-only) ORT_ONLY=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
case "${TARGET_ARCH}" in
    aarch64|arm64|aarch64-unknown-linux-gnu) TARGET_ARCH=aarch64 ;;
    x86_64|amd64|x86_64-unknown-linux-gnu) TARGET_ARCH=x86_64 ;;
    *) die "unsupported --target '${TARGET_ARCH}' (use aarch64 or x86_64)" ;;
esac

# ---------------------------------------------------------------------------------------------
# Privileges: run as root directly, otherwise through sudo (non-interactive env passed explicitly,
# since sudo resets the environment).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo env DEBIAN_FRONTEND=noninteractive "$@"
    else
        die "need root for: $* (run as root or install sudo)"
    fi
}

# One line per installed architecture (multiarch: e.g. pkg-config:amd64 and pkg-config:arm64).
pkg_installed() {
    dpkg-query -W -f='${db:Status-Status}\n' "$1" 2>/dev/null | grep -qx installed
}

APT_OPTS=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)

apt_install_missing() {
    local missing=() p
    for p in "$@"; do
        pkg_installed "$p" || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        log "Debian packages: all present ($*)"
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 || die "missing packages ${missing[*]} and no apt-get: install them by hand"
    log "Debian packages missing: ${missing[*]} -> apt-get update && apt-get install"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get "${APT_OPTS[@]}" update -qq
    as_root apt-get "${APT_OPTS[@]}" install -y -qq "${missing[@]}"
    for p in "${missing[@]}"; do
        pkg_installed "$p" || die "package $p still not installed after apt-get install"
    done
}

# ---------------------------------------------------------------------------------------------
# Base python for the venv and for `pip download`: Debian's /usr/bin/python3 when present (its
# venv support comes from python3-venv, installed above), else whatever python3 is on PATH.
base_python() {
    if [ -x /usr/bin/python3 ]; then
        echo /usr/bin/python3
    elif command -v python3 >/dev/null 2>&1; then
        command -v python3
    else
        die "python3 not found"
    fi
}

python_requirements() {
    printf '%s\n' \
        "pymodbus==${LINESIGHT_PYMODBUS_VERSION}" \
        "paho-mqtt==${LINESIGHT_PAHO_VERSION}" \
        "pyserial==${LINESIGHT_PYSERIAL_VERSION}" \
        "grpcio-tools==${LINESIGHT_GRPCIO_TOOLS_VERSION}" \
        "protobuf==${LINESIGHT_PROTOBUF_VERSION}" \
        "cryptography==${LINESIGHT_CRYPTOGRAPHY_VERSION}" \
        "opencv-python-headless==${LINESIGHT_OPENCV_PY_VERSION}" \
        "numpy==${LINESIGHT_NUMPY_VERSION}" \
        "onnxruntime==${ORT_VERSION}"
}

# What the tests import from the venv: when one of these fails, setup_venv installs again.
VENV_IMPORTS='import pymodbus, paho.mqtt.client, serial, grpc_tools.protoc, google.protobuf, cryptography.x509, cv2, numpy, onnxruntime'

setup_venv() {
    local base stamp want
    base="$(base_python)"
    stamp="${LINESIGHT_VENV}/.linesight-requirements"
    want="$(printf 'base=%s\n' "${base}"; python_requirements)"
    if [ -x "${LINESIGHT_VENV}/bin/python3" ] && [ -f "${stamp}" ] \
        && [ "$(cat "${stamp}")" = "${want}" ] \
        && "${LINESIGHT_VENV}/bin/python3" -c "${VENV_IMPORTS}" >/dev/null 2>&1; then
        log "python venv: ok (${LINESIGHT_VENV}: $(python_requirements | tr '\n' ' '))"
        return 0
    fi
    # Same base python: pip installs into the existing venv only what is missing or pinned
    # differently. Otherwise (no venv, no stamp, another base) the venv is made anew.
    if [ -x "${LINESIGHT_VENV}/bin/python3" ] && [ -f "${stamp}" ] \
        && [ "$(head -n1 "${stamp}")" = "base=${base}" ]; then
        log "python venv: updating ${LINESIGHT_VENV} (a pin changed or a module is missing)"
    else
        log "python venv: creating ${LINESIGHT_VENV} from ${base}"
        rm -rf "${LINESIGHT_VENV}"
        mkdir -p "${LINESIGHT_CACHE}"
        "${base}" -m venv "${LINESIGHT_VENV}" \
            || die "'${base} -m venv' failed (on Debian/Ubuntu install python3-venv)"
    fi
    # shellcheck disable=SC2046
    "${LINESIGHT_VENV}/bin/python3" -m pip install -q $(python_requirements) \
        || die "pip install of the test dependencies failed"
    "${LINESIGHT_VENV}/bin/python3" -c "${VENV_IMPORTS}" \
        || die "venv created but the test dependencies do not import"
    printf '%s\n' "${want}" >"${stamp}"
    log "python venv: ready ($(python_requirements | tr '\n' ' '))"
}

# ---------------------------------------------------------------------------------------------
# ONNX Runtime: the shared library out of PyPI's CPU wheel. The wheel's Python ABI tag does not
# matter for the .so, so the tags are fixed (cp311) and the download works from any host python.
pip_python() {
    if [ -x "${LINESIGHT_VENV}/bin/python3" ]; then
        echo "${LINESIGHT_VENV}/bin/python3"
    else
        base_python
    fi
}

fetch_ort() {
    local arch="$1" dir lib py tmp whl
    dir="$(linesight_ort_dir "${arch}")"
    lib="${dir}/libonnxruntime.so.${ORT_VERSION}"
    py="$(pip_python)"

    if [ -s "${lib}" ]; then
        if [ "${arch}" != "${LINESIGHT_HOST_ARCH}" ] || "${py}" -c 'import ctypes,sys; ctypes.CDLL(sys.argv[1])' "${lib}" 2>/dev/null; then
            log "ONNX Runtime ${ORT_VERSION} (${arch}): ok (${lib})"
            return 0
        fi
        log "ONNX Runtime ${ORT_VERSION} (${arch}): ${lib} does not load, fetching again"
        rm -f "${lib}"
    fi

    log "ONNX Runtime ${ORT_VERSION} (${arch}): downloading the onnxruntime wheel from PyPI"
    tmp="${LINESIGHT_CACHE}/onnxruntime/.download-${arch}"
    rm -rf "${tmp}"
    mkdir -p "${tmp}"
    "${py}" -m pip download -q --no-deps --only-binary=:all: \
        --platform "manylinux_2_28_${arch}" --platform "manylinux_2_27_${arch}" \
        --python-version 3.11 --implementation cp --abi cp311 \
        "onnxruntime==${ORT_VERSION}" -d "${tmp}" \
        || die "pip download onnxruntime==${ORT_VERSION} for ${arch} failed"
    whl="$(find "${tmp}" -maxdepth 1 -name 'onnxruntime-*.whl' | head -n1)"
    [ -n "${whl}" ] || die "no onnxruntime wheel downloaded"

    mkdir -p "${dir}"
    # Extract only onnxruntime/capi/libonnxruntime.so.* (python's zipfile: no `unzip` needed),
    # written to a temporary name and renamed, so a half-written library is never left behind.
    "${py}" - "${whl}" "${dir}" <<'PY'
import os, sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist()
             if n.startswith("onnxruntime/capi/libonnxruntime.so.")]
    if not names:
        sys.exit("no onnxruntime/capi/libonnxruntime.so.* in " + whl)
    for n in names:
        dst = os.path.join(out, os.path.basename(n))
        with z.open(n) as src, open(dst + ".part", "wb") as f:
            while True:
                b = src.read(1 << 20)
                if not b:
                    break
                f.write(b)
        os.chmod(dst + ".part", 0o755)
        os.replace(dst + ".part", dst)
        print("[setup] extracted", dst, file=sys.stderr)
PY
    rm -rf "${tmp}"
    [ -s "${lib}" ] || die "${lib} not found in the wheel"
    # Convenience name for ORT_DYLIB_PATH-style configs that expect the unversioned file.
    ln -sfn "libonnxruntime.so.${ORT_VERSION}" "${dir}/libonnxruntime.so"

    if [ "${arch}" = "${LINESIGHT_HOST_ARCH}" ]; then
        "${py}" -c 'import ctypes,sys; ctypes.CDLL(sys.argv[1])' "${lib}" \
            || die "${lib} does not load on this host"
        log "ONNX Runtime ${ORT_VERSION} (${arch}): ready, loads ($(du -h "${lib}" | cut -f1))"
    else
        log "ONNX Runtime ${ORT_VERSION} (${arch}): ready (foreign arch, load not checked)"
    fi
}

# ---------------------------------------------------------------------------------------------
check_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        cat >&2 <<'EOF'
[setup] ERROR: cargo not found. Install the Rust toolchain with rustup:
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
    . "$HOME/.cargo/env"
then run this script again.
EOF
        exit 1
    fi
    local comp
    for comp in fmt clippy; do
        if ! cargo "${comp}" --version >/dev/null 2>&1; then
            local rcomp="${comp}"
            [ "${comp}" = fmt ] && rcomp=rustfmt
            if command -v rustup >/dev/null 2>&1; then
                log "cargo ${comp} missing: rustup component add ${rcomp}"
                rustup component add "${rcomp}" || die "rustup component add ${rcomp} failed"
            else
                die "cargo ${comp} missing and no rustup: install the ${rcomp} component"
            fi
        fi
    done
    log "rust: $(cargo --version)"
}

# ---------------------------------------------------------------------------------------------
if [ "${ORT_ONLY}" -eq 0 ]; then
    pkgs=(libopencv-dev clang libclang-dev mosquitto mosquitto-clients socat pkg-config python3-pip python3-venv)
    # A real RTSP camera for tests/it/camera_rtsp.rs: GStreamer's RTSP server (tests/rtsp/serve.py).
    pkgs+=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good)
    # avdec_mjpeg's `lowres` decodes MJPG reduced inside a GStreamer pipeline (tests/it/reduced_decode.rs).
    pkgs+=(gstreamer1.0-libav)
    command -v systemd-analyze >/dev/null 2>&1 || pkgs+=(systemd)
    # promtool checks the operator page's /metrics (tests/it/http.rs); the server is not used.
    # Headless Chromium and its WebDriver drive the page in tests/it/browser.rs.
    pkgs+=(prometheus chromium chromium-driver)
    apt_install_missing "${pkgs[@]}"
    setup_venv
fi

# The host's library is always wanted, except for `--ort-only --target <foreign arch>`.
if [ "${ORT_ONLY}" -eq 0 ] || [ "${TARGET_ARCH}" = "${LINESIGHT_HOST_ARCH}" ]; then
    fetch_ort "${LINESIGHT_HOST_ARCH}"
fi
if [ "${TARGET_ARCH}" != "${LINESIGHT_HOST_ARCH}" ]; then
    fetch_ort "${TARGET_ARCH}"
fi

if [ "${ORT_ONLY}" -eq 0 ]; then
    check_rust
fi
log "done"
