#!/usr/bin/env bash
# Remake the committed models and fixtures from scratch, all of them or the ones named.
#   bash tools/make_model.sh                     # everything (about 3 h on 2 cores; see below)
#   bash tools/make_model.sh detector segmenter  # only those
#   INSTALL=1 bash tools/make_model.sh ...       # pip install -r tools/requirements.txt first
#
#   classifier  train_classifier.py + make_samples.py  models/surface-classifier*, samples/   ~20 min
#   detector    make_detection_dataset.py + train_detector.py  models/surface-detector*        ~45 min (20 epochs)
#   segmenter   make_segmentation_dataset.py + train_segmenter.py  models/surface-segmenter*   ~25 min
#   yolo-cls    train_yolo_classifier.py                  tests/models/surface-yolo-cls* (a test fixture) ~15 min
#   anomaly     train_anomaly.py                          models/surface-anomaly*              ~105 min
#
# CPU only. Every script writes held-out metrics beside its model (models/*.metrics.json);
# nothing is downloaded (the YOLO and anomalib scripts refuse every non-loopback connection).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ "${INSTALL:-0}" = 1 ]; then
  "$PY" -m pip install -r tools/requirements.txt
fi
ALL=(classifier detector segmenter yolo-cls anomaly)
WANT=("$@")
[ ${#WANT[@]} -eq 0 ] && WANT=("${ALL[@]}")
for m in "${WANT[@]}"; do
  case "$m" in
    classifier) "$PY" tools/train_classifier.py && "$PY" tools/make_samples.py ;;
    detector) "$PY" tools/make_detection_dataset.py && "$PY" tools/train_detector.py ;;
    segmenter) "$PY" tools/make_segmentation_dataset.py && "$PY" tools/train_segmenter.py ;;
    yolo-cls) "$PY" tools/train_yolo_classifier.py ;;
    anomaly) "$PY" tools/train_anomaly.py ;;
    *) echo "unknown model '$m'; choose from: ${ALL[*]}" >&2; exit 2 ;;
  esac
  echo "done: $m"
done
