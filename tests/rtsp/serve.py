#!/usr/bin/python3
"""A real RTSP server for camera tests (GStreamer's gst-rtsp-server via PyGObject).

    /usr/bin/python3 tests/rtsp/serve.py --port 8554 --path /cam
        [--freeze-after SECONDS [--freeze-from start|play]] [--fps 10] [--size 320x240]
        [--codec mjpeg|h264]

Prints exactly one line `READY rtsp://127.0.0.1:PORT/PATH` on stdout once the
socket listens (and a pipeline like the one served has been built and run
once, so a missing plugin fails here, not in the client), then serves until
SIGTERM/SIGINT (exit 0) or SIGKILL. `--port 0` picks a free port; the READY
line names it (reuse that number to restart on the same port).

The picture is videotestsrc's SMPTE 100% colour bars (`smpte100`: unlike
`smpte` it has no random-noise patch, so a still picture is really still)
scrolling sideways
(`horizontal-speed`), so every frame differs from the one before. With
`--freeze-after S` the scrolling stops S seconds after start (wall clock of
this process), or with `--freeze-from play` S seconds after the first PLAY
request of a client (independent of how long the client took to open):
frames keep coming at --fps, all showing the bars at rest
(unscrolled; videotestsrc computes the shift as speed x frame number, so the
last moving picture cannot be kept), and the decoded frames are
pixel-identical (see README.md).

Debian 12 packages: python3-gi gir1.2-gst-rtsp-server-1.0
gstreamer1.0-plugins-base gstreamer1.0-plugins-good (+ gstreamer1.0-plugins-ugly
and gstreamer1.0-plugins-bad for --codec h264).

Why an earlier version never answered DESCRIBE: without `format=I420` in the
caps, videotestsrc/jpegenc negotiate Y444, i.e. a 4:4:4 JPEG, which RFC 2435
(and so rtpjpegpay) cannot carry: rtpjpegpay drops every frame with the
warning "Invalid component", the live media never prerolls, and the server
never replies to DESCRIBE, so FFmpeg/OpenCV hang in open.
"""

import argparse
import signal
import sys
import time

try:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer
except (ImportError, ValueError) as e:
    sys.exit(f"serve.py: {e}: run it with Debian's /usr/bin/python3 and install "
             "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good")

SCROLL_PX_PER_FRAME = 4


def parse_size(text):
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, got {text!r}")
    if w < 16 or h < 16 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError("width and height must be even and >= 16")
    return w, h


def source_and_encoder(args, live=True):
    w, h = args.size
    src = (
        f"videotestsrc name=src is-live={'true' if live else 'false'} pattern=smpte100 "
        f"horizontal-speed={SCROLL_PX_PER_FRAME} "
        f"! video/x-raw,format=I420,width={w},height={h},framerate={args.fps}/1,pixel-aspect-ratio=1/1 "
    )
    if args.codec == "mjpeg":
        # I420 => 4:2:0 JPEG, which RFC 2435 / rtpjpegpay can carry (Y444 cannot).
        enc = f"! jpegenc quality=85 ! rtpjpegpay name=pay0 pt=26 "
    else:
        enc = (
            f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.fps} "
            f"bframes=0 threads=1 ! video/x-h264,profile=constrained-baseline "
            f"! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 config-interval=1 "
        )
    return src + enc


def preflight(args):
    """Build and run the served pipeline once (3 frames, not live): fail early and loudly."""
    desc = source_and_encoder(args, live=False).replace("name=src ", "num-buffers=3 ", 1) + "! fakesink"
    try:
        pipe = Gst.parse_launch(desc)
    except GLib.Error as e:
        sys.exit(f"serve.py: cannot build pipeline ({e.message}); is a GStreamer plugin package missing?\n  {desc}")
    pipe.set_state(Gst.State.PLAYING)
    msg = pipe.get_bus().timed_pop_filtered(10 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipe.set_state(Gst.State.NULL)
    if msg is None or msg.type != Gst.MessageType.EOS:
        err = msg.parse_error()[0].message if msg is not None else "timed out"
        sys.exit(f"serve.py: test pipeline failed: {err}\n  {desc}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8554, help="TCP port (0 = pick a free one); default 8554")
    ap.add_argument("--path", default="/cam", help="mount path; default /cam")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on; default 127.0.0.1")
    ap.add_argument("--fps", type=int, default=10)
    ap.add_argument("--size", type=parse_size, default=(320, 240), metavar="WxH")
    ap.add_argument("--codec", choices=("mjpeg", "h264"), default="mjpeg")
    ap.add_argument("--freeze-after", type=float, default=None, metavar="SECONDS",
                    help="from this many seconds on, repeat the same picture")
    ap.add_argument("--freeze-from", choices=("start", "play"), default="start",
                    help="count --freeze-after from server start (default) or from the first client PLAY")
    args = ap.parse_args()
    if not args.path.startswith("/"):
        args.path = "/" + args.path
    if args.fps < 1 or args.fps > 120:
        ap.error("--fps must be 1..120")

    Gst.init(None)
    preflight(args)
    t0 = time.monotonic()

    state = {"frozen": False, "sources": []}

    def freeze_source(src):
        # Shift = speed * frame number: speed 0 puts the bars back at rest, for good.
        src.set_property("horizontal-speed", 0)

    def on_media_configure(_factory, media):
        src = media.get_element().get_by_name("src")
        # A shared media is unprepared when its last client leaves and a new
        # one is built for the next client: keep only the live ones.
        state["sources"] = [s for s in state["sources"] if s.get_parent() is not None]
        state["sources"].append(src)
        if state["frozen"]:
            freeze_source(src)

    def do_freeze():
        state["frozen"] = True
        for s in state["sources"]:
            freeze_source(s)
        print(f"serve.py: frozen at {time.monotonic() - t0:.2f}s", file=sys.stderr, flush=True)
        return GLib.SOURCE_REMOVE

    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch("( " + source_and_encoder(args) + ")")
    factory.set_shared(True)
    factory.connect("media-configure", on_media_configure)
    server.get_mount_points().add_factory(args.path, factory)

    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        sys.exit(f"serve.py: cannot listen on {args.host}:{args.port} (port in use?)")
    port = server.get_bound_port()

    def arm_freeze():
        if args.freeze_after <= 0:
            do_freeze()
        else:
            GLib.timeout_add(int(args.freeze_after * 1000), do_freeze)

    if args.freeze_after is not None:
        if args.freeze_from == "start":
            arm_freeze()
        else:
            armed = []

            def on_play_request(_client, _ctx):
                if not armed:
                    armed.append(True)
                    # The request is handled in a client thread: arm from the main loop.
                    GLib.idle_add(lambda: (arm_freeze(), GLib.SOURCE_REMOVE)[1])

            server.connect("client-connected", lambda _s, c: c.connect("play-request", on_play_request))

    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, lambda *_: (loop.quit(), GLib.SOURCE_REMOVE)[1])

    host = "127.0.0.1" if args.host in ("0.0.0.0", "127.0.0.1") else args.host
    print(f"READY rtsp://{host}:{port}{args.path}", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
