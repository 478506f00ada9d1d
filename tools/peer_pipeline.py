#!/usr/bin/env python3
"""The Python peer of `linesight bench --peer`: the inspection pipeline a plant would write in an
afternoon, written the usual way and at its best, so that linesight's figures have something real
to stand beside.

- `cv2.VideoCapture` with OpenCV's full decode on a capture thread, frames handed over in a small
  queue (4, like linesight's camera queue; a frame is read when it has a place in it); the capture
  time is taken before `read()`, which reads and decodes the frame (linesight stamps a frame's
  arrival before its decode too);
- `cv2.resize` to the model's input (bilinear), normalised with NumPy as the model's sidecar says;
- ONNX Runtime (the same version and library as linesight's) with the same intra-op thread count;
- for an NG part the reject coil written at once with pymodbus (synchronous client, acknowledged);
- every part's result published as JSON with paho-mqtt at QoS 1 (its network thread).

It reads the video once, as fast as it can or at `--fps` (one part per frame), and prints one JSON document:
frames, frames/s, CPU ms per frame, capture -> decision and capture -> coil acknowledged
percentiles, peak RSS, verdict counts. Run by `linesight bench --peer` with the bench's own video,
model, Modbus server and broker; not needed at run time.

    python3 tools/peer_pipeline.py --video V --model M.onnx --threads 1 \\
        --modbus 127.0.0.1:PORT --coil 10 --mqtt-port PORT
"""

import argparse
import json
import os
import queue
import resource
import sys
import threading
import time

import cv2
import numpy as np
import onnxruntime as ort
import paho.mqtt.client as mqtt
from pymodbus.client import ModbusTcpClient


def percentiles(values):
    if not values:
        return {"p50": None, "p99": None, "max": None}
    v = np.sort(np.asarray(values))
    pick = lambda q: round(float(v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))]), 3)
    return {"p50": pick(0.50), "p99": pick(0.99), "max": round(float(v[-1]), 3)}


def peak_rss_mb():
    """VmHWM: the peak RSS of this process's own memory. Not getrusage's ru_maxrss, which on Linux
    keeps the parent's peak from before the exec (the bench's, here)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video", required=True)
    ap.add_argument("--model", required=True, help="a classifier .onnx with its .onnx.json sidecar")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--modbus", required=True, help="host:port of the Modbus TCP server")
    ap.add_argument("--coil", type=int, default=10)
    ap.add_argument("--unit", type=int, default=1)
    ap.add_argument("--mqtt-port", type=int, default=0, help="0: no MQTT")
    ap.add_argument("--fps", type=float, default=0.0,
                    help="read the video at this pace (a line's), as linesight's file camera with `fps` does; 0: as fast as it goes")
    args = ap.parse_args()

    with open(args.model + ".json") as f:
        side = json.load(f)
    spec = side["input"]
    w, h = spec["width"], spec["height"]
    mean = np.asarray(spec["mean"], np.float32).reshape(3, 1, 1)
    std = np.asarray(spec["std"], np.float32).reshape(3, 1, 1)
    scale = np.float32(spec["scale"])
    rgb = spec.get("channel_order", "rgb") == "rgb"
    ok = np.asarray([c in side["ok_classes"] for c in side["classes"]])
    threshold = side["ng_threshold"]
    logits = side["output"]["activation"] == "logits"

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name

    host, port = args.modbus.rsplit(":", 1)
    plc = ModbusTcpClient(host, port=int(port))
    if not plc.connect():
        sys.exit(f"cannot connect to the Modbus server at {args.modbus}")
    bus = None
    if args.mqtt_port:
        bus = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"peer-{os.getpid()}")
        bus.max_queued_messages_set(0)
        bus.connect("127.0.0.1", args.mqtt_port)
        bus.loop_start()

    # Warm the session as linesight does before its first part.
    dummy = np.zeros((1, 3, h, w), np.float32)
    for _ in range(5):
        sess.run(None, {in_name: dummy})

    frames = queue.Queue(maxsize=4)
    # A place in the queue is taken before a frame is read, and given back when the frame is
    # taken out: as fast as it goes, a frame is then read when it can enter the queue instead of
    # waiting in put() with its clock running (linesight's file camera does the same).
    room = threading.Semaphore(4)

    def capture():
        cap = cv2.VideoCapture(args.video)
        start, i = time.monotonic(), 0
        while True:
            if args.fps > 0:
                # Frame i is due at start + i/fps; a late one is read at once, not skipped.
                delay = start + i / args.fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                i += 1
            room.acquire()
            # The frame arrives when it is asked for (a file's frame is there; at a pace, at its
            # slot), stamped before read(): OpenCV's FFmpeg back end decodes inside grab(), and
            # linesight stamps a frame's arrival before its decode too, so both latencies count
            # their decode.
            arrived = time.monotonic()
            got, img = cap.read()
            if not got:
                break
            frames.put((arrived, img))
        frames.put(None)

    cpu0, t0 = cpu_seconds(), time.monotonic()
    reader = threading.Thread(target=capture, name="capture", daemon=True)
    reader.start()
    decision_ms, ack_ms = [], []
    counts = {"OK": 0, "NG": 0}
    n = 0
    while True:
        item = frames.get()
        room.release()
        if item is None:
            break
        captured, img = item
        small = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        if rgb:
            small = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
        x = (small.transpose(2, 0, 1).astype(np.float32) * scale - mean) / std
        out = sess.run(None, {in_name: x[None]})[0][0]
        if logits:
            e = np.exp(out - out.max())
            out = e / e.sum()
        ng_score = 1.0 - float(out[ok].sum())
        verdict = "NG" if ng_score >= threshold else "OK"
        decided = time.monotonic()
        decision_ms.append((decided - captured) * 1e3)
        counts[verdict] += 1
        n += 1
        if verdict == "NG":
            plc.write_coil(args.coil, True, device_id=args.unit)
            ack_ms.append((time.monotonic() - captured) * 1e3)
            plc.write_coil(args.coil, False, device_id=args.unit)
        if bus is not None:
            bus.publish("peer/result", json.dumps({"part": n, "verdict": verdict, "ng_score": ng_score}), qos=1)
    elapsed = time.monotonic() - t0
    cpu = cpu_seconds() - cpu0
    if bus is not None:
        bus.loop_stop()
        bus.disconnect()
    plc.close()
    print(json.dumps({
        "frames": n,
        "fps": round(n / elapsed, 1),
        "cpu_ms_per_frame": round(cpu * 1e3 / max(n, 1), 2),
        "decision_latency_ms": percentiles(decision_ms),
        "coil_ack_latency_ms": percentiles(ack_ms),
        "rss_mb": peak_rss_mb(),
        "ok": counts["OK"],
        "ng": counts["NG"],
        "versions": {"opencv": cv2.__version__, "onnxruntime": ort.__version__, "numpy": np.__version__},
    }))


if __name__ == "__main__":
    main()
