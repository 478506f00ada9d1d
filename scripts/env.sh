# shellcheck shell=bash
# Sourced (not executed) by scripts/setup.sh, scripts/test.sh, scripts/demo.sh and cross/*.sh.
#
# Exports the paths the build, the tests and the demo need. It never fails and never installs
# anything: run scripts/setup.sh first (test.sh and demo.sh do), which creates what is named here.
#
#   ORT_VERSION        pinned ONNX Runtime version (PyPI wheel `onnxruntime`)
#   ORT_DYLIB_PATH     absolute path of libonnxruntime.so.$ORT_VERSION for this host (ort `load-dynamic`)
#   LINESIGHT_PYTHON   python interpreter with the test dependencies (pymodbus, paho-mqtt,
#                      grpcio-tools/protobuf, cryptography)
#   LINESIGHT_MOSQUITTO mosquitto broker binary; tests start their own broker on a free port
#   PATH               .cache/venv/bin is put first, so `python3` is the venv's interpreter
#
# Any of these that is already set in the environment is kept (e.g. ORT_DYLIB_PATH pointing at a
# GPU build of ONNX Runtime on a Jetson).

LINESIGHT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export LINESIGHT_ROOT

# Pins. Keep them in one place: setup.sh and cross/build-aarch64.sh read them from here.
export ORT_VERSION="${ORT_VERSION:-1.32.0}"
export LINESIGHT_PYMODBUS_VERSION="${LINESIGHT_PYMODBUS_VERSION:-3.16.1}"
export LINESIGHT_PAHO_VERSION="${LINESIGHT_PAHO_VERSION:-2.2.0}"
export LINESIGHT_PYSERIAL_VERSION="${LINESIGHT_PYSERIAL_VERSION:-3.5}"
# Sparkplug B test decoder (tests/sparkplug/spdecode.py): grpcio-tools compiles sparkplug_b.proto
# at test time; protobuf must be at least the version of the protoc inside grpcio-tools.
export LINESIGHT_GRPCIO_TOOLS_VERSION="${LINESIGHT_GRPCIO_TOOLS_VERSION:-1.85.1}"
export LINESIGHT_PROTOBUF_VERSION="${LINESIGHT_PROTOBUF_VERSION:-7.36.2}"
# Test certificates (tests/common/certs.py).
export LINESIGHT_CRYPTOGRAPHY_VERSION="${LINESIGHT_CRYPTOGRAPHY_VERSION:-50.0.2}"
# The Python peer of `linesight bench --peer` (tools/peer_pipeline.py): OpenCV, NumPy and the same
# ONNX Runtime as ours.
export LINESIGHT_OPENCV_PY_VERSION="${LINESIGHT_OPENCV_PY_VERSION:-5.1.0.95}"
export LINESIGHT_NUMPY_VERSION="${LINESIGHT_NUMPY_VERSION:-2.4.6}"

LINESIGHT_CACHE="${LINESIGHT_ROOT}/.cache"
export LINESIGHT_CACHE

# Host architecture as used by the ORT wheel folders (x86_64 or aarch64).
LINESIGHT_HOST_ARCH="$(uname -m)"
case "${LINESIGHT_HOST_ARCH}" in
    arm64) LINESIGHT_HOST_ARCH=aarch64 ;;
    amd64) LINESIGHT_HOST_ARCH=x86_64 ;;
esac
export LINESIGHT_HOST_ARCH

# Folder holding libonnxruntime.so.$ORT_VERSION for architecture $1 (default: the host's).
# The host's library lives in .cache/onnxruntime/$ORT_VERSION/, a foreign architecture's
# (cross builds) in .cache/onnxruntime/$ORT_VERSION-<arch>/.
linesight_ort_dir() {
    local arch="${1:-${LINESIGHT_HOST_ARCH}}"
    if [ "${arch}" = "${LINESIGHT_HOST_ARCH}" ]; then
        printf '%s\n' "${LINESIGHT_CACHE}/onnxruntime/${ORT_VERSION}"
    else
        printf '%s\n' "${LINESIGHT_CACHE}/onnxruntime/${ORT_VERSION}-${arch}"
    fi
}

export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$(linesight_ort_dir "${LINESIGHT_HOST_ARCH}")/libonnxruntime.so.${ORT_VERSION}}"

LINESIGHT_VENV="${LINESIGHT_CACHE}/venv"
export LINESIGHT_VENV
export LINESIGHT_PYTHON="${LINESIGHT_PYTHON:-${LINESIGHT_VENV}/bin/python3}"
case ":${PATH}:" in
    *":${LINESIGHT_VENV}/bin:"*) ;;
    *) export PATH="${LINESIGHT_VENV}/bin:${PATH}" ;;
esac

export LINESIGHT_MOSQUITTO="${LINESIGHT_MOSQUITTO:-$(command -v mosquitto 2>/dev/null || echo /usr/sbin/mosquitto)}"

# Quiet, non-interactive pip everywhere (CI has no stdin).
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_NO_INPUT=1
