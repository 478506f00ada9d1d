#!/usr/bin/env bash
# Remake everything from scratch: the classifier (models/) and the fixtures (samples/).
#   bash tools/make_model.sh            # uses the current python3
#   INSTALL=1 bash tools/make_model.sh  # pip install -r tools/requirements.txt first
# CPU only, 2 threads; takes ~15 minutes on a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ "${INSTALL:-0}" = 1 ]; then
  "$PY" -m pip install -r tools/requirements.txt
fi
"$PY" tools/train_classifier.py "$@"
"$PY" tools/make_samples.py
echo "done: models/surface-classifier.onnx(.json) models/surface-classifier.metrics.json samples/"
