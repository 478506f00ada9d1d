#!/usr/bin/env python3
"""A conveyor line behind a Modbus TCP server (pymodbus 3.x), for `linesight bench --rejects` and
the reject integration test: the independent PLC whose clock the reject figures are taken on.

    .cache/venv/bin/python tools/plc_line.py --tcp 127.0.0.1:0 --rate 20 --parts 1000 \
        --speed 100000 --distance 30000

The line, computed at the moment each read request is served (a PLC with an instant scan):
- an encoder, a u32 counter in input registers ENC, ENC+1 (high word first), advancing at
  --speed counts/s from --encoder-start (by default 5 s of travel before the 2^32 wrap, so every
  run crosses it);
- a photo-eye, discrete input EYE, on for --eye-on ms from each part's edge;
- the latch, a u32 in input registers LATCH, LATCH+1: the encoder count at the last edge, as a
  PLC's high-speed counter captures it (0 before the first part).

Parts come at --rate per second, each edge moved by a random jitter of up to +-20 % of the
interval (seeded: --seed), so edges fall at every phase of linesight's poll. Part i (from 1) is NG
for `--ng all`, or when i is odd for `--ng odd`. A part is due at the reject gate when the encoder
reaches its latched count + --distance.

Every client write of the reject coil (--coil) is timestamped on arrival with this process's
CLOCK_MONOTONIC (time.monotonic_ns(), the clock of Rust's Instant on Linux). Each "on" write is
assigned to the part whose due time is nearest.

stdin, one JSON object per line: {"start": {"in_s": S}} starts the parts S seconds from now (the
encoder runs from the start of the process); {"exit": true} or EOF ends the process.

stdout, one JSON object per line, flushed:
    {"ready": true, "port": P, "pymodbus": "3.16.1"}
    {"started": true, "t0_ns": T}
    {"done": true, "parts": [{"id", "ng", "edge_ns", "latch", "due_ns", "ons": [t_ns, ...]}, ...],
     "stray": [t_ns, ...], "reads": N, "speed": S, "distance": D}
"done" comes once the last part is 0.5 s past its due time. `ons` are the "on" writes assigned
to the part (exactly one for an NG part that was rejected, none for an OK part); `stray` are "on"
writes with no part within half an interval (before the first or after the last).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import logging
import os
import random
import signal
import sys
import time

import pymodbus
from pymodbus.framer import FramerType
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

SIZE = 100
WRAP = 1 << 32


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class Line:
    def __init__(self, a) -> None:
        self.a = a
        self.t_enc0 = time.monotonic_ns()
        self.start = a.encoder_start if a.encoder_start is not None else (WRAP - int(5 * a.speed)) % WRAP
        self.edges: list[int] = []  # ns, filled at start
        self.latches: list[int] = []
        self.ons: list[int] = []
        self.reads = 0

    def count(self, t_ns: int) -> int:
        """Encoder value (unwrapped) at t_ns."""
        return self.start + (t_ns - self.t_enc0) * self.a.speed // 1_000_000_000

    def begin(self, t0_ns: int) -> None:
        rnd = random.Random(self.a.seed)
        interval = 1e9 / self.a.rate
        self.edges = [int(t0_ns + i * interval + rnd.uniform(-0.1, 0.1) * interval) for i in range(self.a.parts)]
        self.latches = [self.count(t) % WRAP for t in self.edges]

    def due(self, i: int) -> int:
        # The encoder reaches latch + distance: the count at the edge is floor(...), so the gate
        # is reached when the unwrapped count passes count(edge) + distance.
        c = self.count(self.edges[i]) + self.a.distance
        return self.t_enc0 + -(-(c - self.start) * 1_000_000_000 // self.a.speed)

    def values(self, t_ns: int) -> tuple[bool, int, int]:
        """Photo-eye, encoder (wrapped), latch at t_ns."""
        i = bisect.bisect_right(self.edges, t_ns) - 1
        eye = i >= 0 and t_ns < self.edges[i] + self.a.eye_on * 1e6
        latch = self.latches[i] if i >= 0 else 0
        return eye, self.count(t_ns) % WRAP, latch


def words(v: int) -> list[int]:
    return [(v >> 16) & 0xFFFF, v & 0xFFFF]


class LineCore(SimCore):
    """The server's datastore: line values refreshed at each read, coil writes timestamped."""

    def __init__(self, line: Line, devices: list[SimDevice]) -> None:
        super().__init__(devices)
        self.line = line
        self.rt = None

    async def async_getValues(self, device_id, func_code, address, count=1):
        t = time.monotonic_ns()
        a = self.line.a
        rt = self.devices[device_id]
        eye, enc, latch = self.line.values(t)
        self.line.reads += 1
        if func_code == 2:
            await rt.get_block(2, a.eye, 1, [eye])
        elif func_code in (3, 4):
            await rt.get_block(func_code, a.encoder, 2, words(enc))
            await rt.get_block(func_code, a.latch, 2, words(latch))
        return await super().async_getValues(device_id, func_code, address, count)

    async def async_setValues(self, device_id, func_code, address, values):
        t = time.monotonic_ns()
        rc = await super().async_setValues(device_id, func_code, address, values)
        if rc is None and func_code in (5, 15) and address <= self.line.a.coil < address + len(values):
            if bool(values[self.line.a.coil - address]):
                self.line.ons.append(t)
        return rc


def make_device(unit: int) -> SimDevice:
    return SimDevice(
        id=unit,
        simdata=(
            [SimData(0, values=[False] * SIZE, datatype=DataType.BITS)],
            [SimData(0, values=[False] * SIZE, datatype=DataType.BITS)],
            [SimData(0, values=[0] * SIZE, datatype=DataType.REGISTERS)],
            [SimData(0, values=[0] * SIZE, datatype=DataType.REGISTERS)],
        ),
    )


def report(line: Line) -> dict:
    a = line.a
    n = len(line.edges)
    dues = [line.due(i) for i in range(n)]
    half = 5e8 / a.rate
    parts = [{"id": i + 1, "ng": a.ng == "all" or (i + 1) % 2 == 1, "edge_ns": line.edges[i],
              "latch": line.latches[i], "due_ns": dues[i], "ons": []} for i in range(n)]
    stray = []
    for t in line.ons:
        j = bisect.bisect_left(dues, t)
        near = [k for k in (j - 1, j) if 0 <= k < n]
        k = min(near, key=lambda k: abs(dues[k] - t)) if near else None
        if k is None or abs(dues[k] - t) > half:
            stray.append(t)
        else:
            parts[k]["ons"].append(t)
    return {"done": True, "parts": parts, "stray": stray, "reads": line.reads,
            "speed": a.speed, "distance": a.distance, "rate": a.rate}


async def main(a) -> int:
    line = Line(a)
    devices = [make_device(1)]
    host, _, port = a.tcp.rpartition(":")
    server = ModbusTcpServer(devices, framer=FramerType.SOCKET, address=(host.strip("[]") or "127.0.0.1", int(port)),
                             ignore_missing_devices=True)
    server.context = LineCore(line, devices)
    await server.serve_forever(background=True)
    emit({"ready": True, "port": server.transport.sockets[0].getsockname()[1], "pymodbus": pymodbus.__version__})

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    lines: asyncio.Queue = asyncio.Queue()

    def reader() -> None:
        buf = b""
        while chunk := os.read(0, 65536):
            buf += chunk
            *ls, buf = buf.split(b"\n")
            for ln in ls:
                loop.call_soon_threadsafe(lines.put_nowait, ln)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    import threading
    threading.Thread(target=reader, daemon=True).start()

    async def finish(t_end_ns: int) -> None:
        await asyncio.sleep(max(0, t_end_ns - time.monotonic_ns()) / 1e9)
        emit(report(line))

    async def commands() -> None:
        while True:
            ln = await lines.get()
            if ln is None:
                stop.set()
                return
            if not ln.strip():
                continue
            cmd = json.loads(ln)
            if "start" in cmd:
                t0 = time.monotonic_ns() + int(float(cmd["start"].get("in_s", 0.5)) * 1e9)
                line.begin(t0)
                emit({"started": True, "t0_ns": t0})
                asyncio.create_task(finish(line.due(len(line.edges) - 1) + 500_000_000))
            elif "exit" in cmd:
                stop.set()
                return

    task = asyncio.create_task(commands())
    await stop.wait()
    task.cancel()
    await server.shutdown()
    return 0


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tcp", default="127.0.0.1:0", help="HOST:PORT to serve (port 0: a free one)")
    p.add_argument("--rate", type=float, default=20.0, help="parts per second")
    p.add_argument("--parts", type=int, default=1000)
    p.add_argument("--speed", type=int, default=100_000, help="encoder counts per second")
    p.add_argument("--distance", type=int, default=30_000, help="encoder counts from the eye to the gate")
    p.add_argument("--eye-on", type=float, default=None, help="ms the photo-eye stays on (default: 40 % of the interval)")
    p.add_argument("--encoder-start", type=int, default=None)
    p.add_argument("--ng", choices=["all", "odd"], default="all")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--eye", type=int, default=0, help="discrete input of the photo-eye")
    p.add_argument("--encoder", type=int, default=0, help="input register of the encoder (2 words)")
    p.add_argument("--latch", type=int, default=2, help="input register of the latched count (2 words)")
    p.add_argument("--coil", type=int, default=10, help="the reject gate's coil")
    a = p.parse_args()
    if a.rate <= 0 or a.parts < 1 or a.speed < 1 or a.distance < 1:
        p.error("rate, parts, speed and distance must be positive")
    if a.eye_on is None:
        a.eye_on = 400.0 / a.rate
    return a


if __name__ == "__main__":
    args = parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    sys.exit(asyncio.run(main(args)))
