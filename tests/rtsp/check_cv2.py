#!/usr/bin/python3
"""Exercise tests/rtsp/serve.py with Debian's OpenCV (FFmpeg backend), the same
libopencv 4.6 / FFmpeg 5.1 the Rust `opencv` crate links against here.

    /usr/bin/python3 tests/rtsp/check_cv2.py [--port 8561] [--outage kill|term|stop]
        [--open-timeout-ms N] [--read-timeout-ms N] [--codec mjpeg|h264]

Environment variables such as OPENCV_FFMPEG_CAPTURE_OPTIONS and
OPENCV_FFMPEG_READ_ATTEMPTS are passed through to OpenCV unchanged.

Steps, each timed: start the server (with --freeze-after), open the stream,
read frames (rate; identical consecutive frames before/after the freeze,
compared by MD5 of the decoded pixels), take the server away (SIGKILL, SIGTERM
or SIGSTOP = a camera that hangs without closing the socket) and time how long
read() takes to return False, then start the server again on the same port and
reopen. Prints one `key: value` line per figure; exits 1 if a step failed.
"""

import argparse
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time

import cv2

HERE = os.path.dirname(os.path.abspath(__file__))


def fingerprint(data):
    """Same as src/camera/mod.rs fingerprint(): FNV-1a over every 61st byte, xor length."""
    h = 0xCBF29CE484222325
    for b in data[::61]:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h ^ len(data)


def start_server(port, freeze_after, codec):
    cmd = [sys.executable, os.path.join(HERE, "serve.py"), "--port", str(port), "--path", "/cam",
           "--freeze-after", str(freeze_after), "--codec", codec]
    t = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline().strip()
    if not line.startswith("READY "):
        p.kill()
        sys.exit(f"server did not start: {line!r}")
    return p, line.split()[1], time.monotonic() - t


def open_capture(url, args):
    params = []
    if args.open_timeout_ms is not None:
        params += [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, args.open_timeout_ms]
    if args.read_timeout_ms is not None:
        params += [cv2.CAP_PROP_READ_TIMEOUT_MSEC, args.read_timeout_ms]
    t = time.monotonic()
    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params) if params else cv2.VideoCapture(url, cv2.CAP_FFMPEG)
    return cap, time.monotonic() - t


def timed_read(cap, limit):
    """read() in a thread: (ok, frame, seconds) or (None, None, limit) if still blocked after limit."""
    box = {}

    def run():
        box["r"] = cap.read()

    t = time.monotonic()
    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(limit)
    if th.is_alive():
        return None, None, limit, th
    ok, frame = box["r"]
    return ok, frame, time.monotonic() - t, th


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8561)
    ap.add_argument("--freeze-after", type=float, default=4.0)
    ap.add_argument("--read-seconds", type=float, default=8.0)
    ap.add_argument("--outage", choices=("kill", "term", "stop"), default="kill")
    ap.add_argument("--outage-limit", type=float, default=70.0, help="give up waiting for read() after this")
    ap.add_argument("--open-timeout-ms", type=int)
    ap.add_argument("--read-timeout-ms", type=int)
    ap.add_argument("--codec", choices=("mjpeg", "h264"), default="mjpeg")
    args = ap.parse_args()
    failed = False

    print("env OPENCV_FFMPEG_CAPTURE_OPTIONS:", os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS"))
    print("env OPENCV_FFMPEG_READ_ATTEMPTS:", os.environ.get("OPENCV_FFMPEG_READ_ATTEMPTS"))
    print("params open/read timeout ms:", args.open_timeout_ms, args.read_timeout_ms)

    t_start = time.monotonic()
    srv, url, ready_s = start_server(args.port, args.freeze_after, args.codec)
    print(f"server_ready_s: {ready_s:.3f}  url: {url}")
    cap, open_s = open_capture(url, args)
    print(f"cv2_open_s: {open_s:.3f}  opened: {cap.isOpened()}  since_server_start_s: {time.monotonic() - t_start:.3f}")
    if not cap.isOpened():
        srv.kill()
        sys.exit(1)
    print("open_timeout_prop:", cap.get(cv2.CAP_PROP_OPEN_TIMEOUT_MSEC), "read_timeout_prop:", cap.get(cv2.CAP_PROP_READ_TIMEOUT_MSEC))

    # Read for a while; freeze happens at t_start + freeze_after (server clock ~ t_start + ready).
    frames = []  # (t since server start, md5)
    t_first = None
    t_end = time.monotonic() + args.read_seconds
    while time.monotonic() < t_end:
        ok, frame = cap.read()
        now = time.monotonic()
        if not ok:
            print("read failed during normal streaming")
            failed = True
            break
        if t_first is None:
            t_first = now
            print(f"first_frame_s_after_open: {now - t_start - open_s - ready_s:.3f}  shape: {frame.shape}")
        frames.append((now - t_start, hashlib.md5(frame.tobytes()).hexdigest(), fingerprint(frame.tobytes())))
    n = len(frames)
    span = frames[-1][0] - frames[0][0] if n > 1 else 0
    print(f"frames_read: {n}  fps: {(n - 1) / span if span else 0:.2f}")
    # Steady rate: leave out the first 3 s (frames buffered while FFmpeg probed come in a burst).
    late = [t for t, *_ in frames if t > frames[0][0] + 3.0]
    if len(late) > 1:
        print(f"steady_fps (after the first 3 s): {(len(late) - 1) / (late[-1] - late[0]):.2f}")
    # Frames read before the freeze point (minus a margin for buffering) vs well after it.
    freeze_t = ready_s + args.freeze_after
    before = [h for t, h, _ in frames if t < freeze_t - 0.5]
    after = [h for t, h, _ in frames if t > freeze_t + 1.0]
    dup_before = sum(1 for a, b in zip(before, before[1:]) if a == b)
    fp_before = [f for t, _, f in frames if t < freeze_t - 0.5]
    print(f"before_freeze: {sum(1 for a, b in zip(fp_before, fp_before[1:]) if a == b)} equal-to-previous by the"
          " every-61st-byte fingerprint of src/camera/mod.rs")
    distinct_after = len(set(after))
    print(f"before_freeze: {len(before)} frames, {len(set(before))} distinct, {dup_before} equal-to-previous")
    print(f"after_freeze: {len(after)} frames, {distinct_after} distinct (1 = pixel-identical)")
    if dup_before or distinct_after != 1:
        failed = True

    # Outage.
    sig = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "stop": signal.SIGSTOP}[args.outage]
    os.kill(srv.pid, sig)
    t_out = time.monotonic()
    extra = 0
    blocked = None
    while True:
        left = args.outage_limit - (time.monotonic() - t_out)
        if left <= 0:
            break
        ok, _, dt, th = timed_read(cap, left)
        if ok is None:
            blocked = th
            break
        if not ok:
            break
        extra += 1
    waited = time.monotonic() - t_out
    if blocked is not None:
        print(f"outage({args.outage}): read() STILL BLOCKED after {waited:.1f}s ({extra} buffered frames first)")
        failed = True
    elif ok is False:
        print(f"outage({args.outage}): read() returned False after {waited:.3f}s ({extra} buffered frames read first)")
    else:
        print(f"outage({args.outage}): read() kept returning frames for {waited:.1f}s")
        failed = True
    if args.outage == "stop":
        os.kill(srv.pid, signal.SIGCONT)
        os.kill(srv.pid, signal.SIGKILL)
    srv.wait()

    if blocked is not None:
        # The capture is in use by a stuck thread; do not touch it.
        print("skipping restart: capture still blocked")
        sys.exit(1)
    t = time.monotonic()
    cap.release()
    print(f"release_s: {time.monotonic() - t:.3f}")

    # Restart on the same port and reopen.
    t_restart = time.monotonic()
    srv, url2, ready2 = start_server(args.port, 1000, args.codec)
    print(f"restart_server_ready_s: {ready2:.3f}  same_url: {url2 == url}")
    cap, open2 = open_capture(url2, args)
    ok, frame = cap.read() if cap.isOpened() else (False, None)
    print(f"reopen_s: {open2:.3f}  opened: {cap.isOpened()}  first_read_ok: {ok}  restart_to_frame_s: {time.monotonic() - t_restart:.3f}")
    if not ok:
        failed = True
    cap.release()
    srv.terminate()
    srv.wait()
    print("RESULT:", "FAIL" if failed else "OK")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
