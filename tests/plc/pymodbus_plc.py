#!/usr/bin/env python3
"""A PLC simulator on pymodbus 3.x, for linesight's integration tests.

It is independent of linesight (pymodbus is code nobody here wrote) and is driven over
stdin/stdout with one JSON object per line; see tests/plc/README.md for the protocol.

    pymodbus_plc.py --tcp 127.0.0.1:0 --unit 1
    pymodbus_plc.py --rtu /tmp/pty-b --baud 19200 --parity E --stopbits 1 --unit 1 --unit 2

Written against pymodbus 3.16 (scripts/env.sh pins it). In that version the old data blocks
(ModbusSequentialDataBlock, ModbusDeviceContext) are deprecated shims that only build
SimData/SimDevice objects, and the server keeps the values in a SimRuntime; a subclass of a data
block's setValues would never be called. So the simulator builds SimDevice objects directly and
wraps the server's datastore (SimCore): every client request goes through PlcCore below, which
filters unit ids, injects exceptions and stalls, and reports client writes. Writes made over
stdin go straight to the SimRuntime and are not reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time

import pymodbus
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

log = logging.getLogger("pymodbus_plc")

SIZE = 10000  # elements in each of the four areas, protocol addresses 0..9999

# Area names of the stdin protocol -> the read function code that addresses that area. SimRuntime
# maps function codes to blocks (1,5,15 -> coils; 2 -> discrete inputs; 3,6,16,22,23 -> holding;
# 4 -> input registers).
AREA_FC = {"coil": 1, "di": 2, "hr": 3, "ir": 4}
BIT_AREAS = {"coil", "di"}
READ_FCS = {1, 2, 3, 4}
WRITE_FCS = {5, 6, 15, 16, 22, 23}
WRITE_AREA = {5: "coil", 15: "coil", 6: "hr", 16: "hr", 22: "hr", 23: "hr"}


def emit(obj: dict) -> None:
    """One JSON line on stdout, flushed. Only ever called on the event loop thread."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def make_device(unit: int) -> SimDevice:
    """Four separate areas of SIZE elements each, zero, protocol address N = element N.

    The tuple layout (coils, discrete inputs, holding, input) gives each area its own memory and
    bit addressing for coils and discrete inputs (use_bit_addressing defaults to True for it).
    Values are given as one list with count=1: SimDevice's overlap check multiplies by count a
    second time, so count=SIZE with a scalar would build a SIZE*SIZE list.
    """
    return SimDevice(
        id=unit,
        simdata=(
            [SimData(0, values=[False] * SIZE, datatype=DataType.BITS)],
            [SimData(0, values=[False] * SIZE, datatype=DataType.BITS)],
            [SimData(0, values=[0] * SIZE, datatype=DataType.REGISTERS)],
            [SimData(0, values=[0] * SIZE, datatype=DataType.REGISTERS)],
        ),
    )


class Plc:
    """State shared by the datastore wrapper and the stdin commands."""

    def __init__(self, units: list[int]) -> None:
        self.units = units
        self.devices = [make_device(u) for u in units]
        self.core = PlcCore(self, self.devices)
        # Injected exceptions: dicts with fc (None = any), address, code, unit (None = any).
        self.exceptions: list[dict] = []
        self.stall_until_ns = 0

    def runtime(self, unit: int | None):
        unit = self.units[0] if unit is None else unit
        if unit not in self.units:
            raise ValueError(f"unit {unit} is not served (served: {self.units})")
        return self.core.devices[unit]

    # -- hooks called for client requests ------------------------------------------------------
    def admit(self, unit: int, fc: int, address: int) -> None:
        """Raise NoSuchIdException (the server then sends nothing) when the request must go
        unanswered: a unit id that is not served, or a stall in progress."""
        if unit not in self.units:
            log.debug("no answer: unit %s not served (fc %s, address %s)", unit, fc, address)
            raise NoSuchIdException(f"unit {unit} not served")
        if time.monotonic_ns() < self.stall_until_ns:
            log.debug("no answer: stalled (unit %s, fc %s, address %s)", unit, fc, address)
            raise NoSuchIdException("stalled")

    def injected(self, unit: int, fc: int, address: int, count: int) -> ExcCodes | None:
        for e in self.exceptions:
            if e["unit"] is not None and e["unit"] != unit:
                continue
            if e["fc"] is not None and e["fc"] != fc:
                continue
            if address <= e["address"] < address + max(count, 1):
                return e["code"]
        return None

    def report_write(self, unit: int, fc: int, address: int, values) -> None:
        t_ns = time.monotonic_ns()
        wall = time.time()
        area = WRITE_AREA.get(fc, "hr")
        vals = [bool(v) for v in values] if area == "coil" else [int(v) for v in values]
        emit({"write": area, "address": address, "values": vals, "fc": fc,
              "t_ns": t_ns, "wall": wall, "unit": unit})


class PlcCore(SimCore):
    """The server's datastore: SimCore plus unit filtering, injected exceptions, stalls, and a
    report of every client write, emitted right after the values are stored and before the
    response goes out."""

    def __init__(self, plc: Plc, devices: list[SimDevice]) -> None:
        super().__init__(devices)
        self.plc = plc

    async def async_getValues(self, device_id, func_code, address, count=1):
        self.plc.admit(device_id, func_code, address)
        if func_code in READ_FCS and (code := self.plc.injected(device_id, func_code, address, count)):
            return code
        return await super().async_getValues(device_id, func_code, address, count)

    async def async_setValues(self, device_id, func_code, address, values):
        self.plc.admit(device_id, func_code, address)
        if func_code in WRITE_FCS and (code := self.plc.injected(device_id, func_code, address, len(values))):
            return code
        rc = await super().async_setValues(device_id, func_code, address, values)
        if rc is None:
            self.plc.report_write(device_id, func_code, address, values)
        return rc


# -- stdin commands ------------------------------------------------------------------------------
def _address(cmd: dict) -> int:
    a = cmd.get("address")
    if not isinstance(a, int) or isinstance(a, bool) or not 0 <= a < SIZE:
        raise ValueError(f"address must be an integer 0..{SIZE - 1}, got {a!r}")
    return a


def _unit(cmd: dict) -> int | None:
    u = cmd.get("unit")
    if u is not None and (not isinstance(u, int) or isinstance(u, bool)):
        raise ValueError(f"unit must be an integer, got {u!r}")
    return u


def _area(name) -> str:
    if name not in AREA_FC:
        raise ValueError(f"area must be one of {sorted(AREA_FC)}, got {name!r}")
    return name


async def handle(plc: Plc, cmd: dict, stop: asyncio.Event) -> dict | None:
    if not isinstance(cmd, dict):
        raise ValueError("a command must be a JSON object")
    if "ping" in cmd:
        return {"pong": cmd["ping"]}
    if "now" in cmd:
        return {"now_ns": time.monotonic_ns(), "wall": time.time()}
    if "set" in cmd:
        area = _area(cmd["set"])
        address = _address(cmd)
        values = cmd.get("values")
        if not isinstance(values, list) or not values:
            raise ValueError("values must be a non-empty list")
        if area in BIT_AREAS:
            if not all(isinstance(v, bool) or v in (0, 1) for v in values):
                raise ValueError(f"{area} values must be booleans or 0/1")
            values = [bool(v) for v in values]
        else:
            if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 0xFFFF for v in values):
                raise ValueError(f"{area} values must be integers 0..65535")
        # Straight into the unit's memory, bypassing PlcCore: not a client write, not reported.
        rc = await plc.runtime(_unit(cmd)).get_block(AREA_FC[area], address, len(values), values)
        if isinstance(rc, ExcCodes):
            raise ValueError(f"{area} {address}..{address + len(values) - 1} is out of range")
        return {"ok": "set"}
    if "get" in cmd:
        area = _area(cmd["get"])
        address = _address(cmd)
        count = cmd.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError("count must be a positive integer")
        unit = _unit(cmd)
        rc = await plc.runtime(unit).get_block(AREA_FC[area], address, count, None)
        if isinstance(rc, ExcCodes):
            raise ValueError(f"{area} {address}..{address + count - 1} is out of range")
        vals = [bool(v) for v in rc] if area in BIT_AREAS else [int(v) for v in rc]
        return {"get": area, "address": address, "values": vals,
                "unit": plc.units[0] if unit is None else unit}
    if "exception" in cmd:
        e = cmd["exception"]
        if not isinstance(e, dict):
            raise ValueError('exception must be an object {"fc":..,"address":..,"code":..}')
        fc = e.get("fc")
        if fc is not None and fc not in READ_FCS | WRITE_FCS:
            raise ValueError(f"fc must be one of {sorted(READ_FCS | WRITE_FCS)} or null, got {fc!r}")
        try:
            code = ExcCodes(e.get("code"))
        except ValueError:
            raise ValueError(f"code must be a Modbus exception code {[int(c) for c in ExcCodes]}") from None
        plc.exceptions.append({"fc": fc, "address": _address(e), "code": code, "unit": _unit(e)})
        return {"ok": "exception"}
    if "clear_exceptions" in cmd:
        plc.exceptions.clear()
        return {"ok": "clear_exceptions"}
    if "stall" in cmd:
        s = cmd["stall"]
        if not isinstance(s, (int, float)) or isinstance(s, bool) or s < 0:
            raise ValueError("stall must be a number of seconds >= 0")
        plc.stall_until_ns = time.monotonic_ns() + int(s * 1e9)
        return {"ok": "stall", "until_ns": plc.stall_until_ns}
    if "exit" in cmd:
        stop.set()
        return {"ok": "exit"}
    raise ValueError(f"unknown command {cmd!r}")


def stdin_reader(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
    """Blocking reads in a daemon thread (works for pipes, files and terminals); None is EOF.

    os.read on fd 0, not sys.stdin: a daemon thread blocked inside sys.stdin's buffered reader
    holds its lock, and the interpreter then aborts at exit (SIGTERM while waiting for input).
    """
    buf = b""
    try:
        while chunk := os.read(0, 65536):
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                loop.call_soon_threadsafe(queue.put_nowait, line)
        if buf:
            loop.call_soon_threadsafe(queue.put_nowait, buf)
    except Exception as exc:  # pylint: disable=broad-except
        log.error("stdin: %s", exc)
    finally:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, None)
        except RuntimeError:
            pass  # the loop is already closed


async def commands(plc: Plc, stop: asyncio.Event) -> None:
    queue: asyncio.Queue = asyncio.Queue()
    threading.Thread(target=stdin_reader, args=(asyncio.get_running_loop(), queue),
                     name="stdin", daemon=True).start()
    while True:
        line = await queue.get()
        if line is None:
            log.debug("stdin closed")
            stop.set()
            return
        line = line.strip()
        if not line:
            continue
        cmd = None
        try:
            cmd = json.loads(line)
            reply = await handle(plc, cmd, stop)
        except Exception as exc:  # pylint: disable=broad-except
            log.error("command %s: %s", line[:200], exc)
            reply = {"error": str(exc)}
        if reply is not None:
            if isinstance(cmd, dict) and "id" in cmd:
                reply["id"] = cmd["id"]
            emit(reply)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    link = p.add_mutually_exclusive_group(required=True)
    link.add_argument("--tcp", metavar="HOST:PORT", help="Modbus TCP server; port 0 picks a free port")
    link.add_argument("--rtu", metavar="DEVICE", help="Modbus RTU server on a serial device (or pty)")
    p.add_argument("--baud", type=int, default=19200)
    p.add_argument("--parity", choices=["N", "E", "O"], default="E")
    p.add_argument("--stopbits", type=int, choices=[1, 2], default=1)
    p.add_argument("--unit", action="extend", nargs="+", metavar="N",
                   help="unit id(s) served: --unit 1 2, --unit 1,2 or --unit 1 --unit 2. Requests to "
                        "other unit ids get no answer, as on a real bus. Default 1")
    p.add_argument("--verbose", action="store_true", help="debug log of pymodbus on stderr")
    a = p.parse_args(argv)
    units: list[int] = []
    for item in a.unit or ["1"]:
        for u in str(item).split(","):
            try:
                units.append(int(u))
            except ValueError:
                p.error(f"--unit {u!r}: not an integer")
    for u in units:
        if not 0 <= u <= 255:
            p.error(f"--unit {u}: must be 0..255")
    a.units = sorted(set(units))
    return a


async def main(args) -> int:
    plc = Plc(args.units)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        server = ModbusTcpServer(plc.devices, framer=FramerType.SOCKET, address=(host, int(port)),
                                 ignore_missing_devices=True)
    else:
        server = ModbusSerialServer(plc.devices, framer=FramerType.RTU, port=args.rtu,
                                    baudrate=args.baud, parity=args.parity, stopbits=args.stopbits,
                                    bytesize=8, ignore_missing_devices=True)
    # The server built its own SimCore from the same devices; replace it with the wrapper.
    server.context = plc.core
    try:
        await server.serve_forever(background=True)
    except Exception as exc:  # pylint: disable=broad-except
        hint = ""
        if args.rtu and args.parity != "N" and "Invalid argument" in str(exc):
            # Linux ptys (socat pairs) refuse PARENB: tcsetattr fails with EINVAL (pyserial #196).
            hint = " (a pty cannot take parity E/O: use --parity N on a socat pty pair)"
        log.error("cannot serve on %s: %s%s", args.tcp or args.rtu, exc, hint)
        return 2
    ready = {"ready": True, "port": None, "units": plc.units, "pymodbus": pymodbus.__version__}
    if args.tcp:
        ready["port"] = server.transport.sockets[0].getsockname()[1]
    else:
        ready["device"] = args.rtu
    emit(ready)

    cmd_task = asyncio.create_task(commands(plc, stop))
    await stop.wait()
    cmd_task.cancel()
    try:
        await server.shutdown()
    except Exception as exc:  # pylint: disable=broad-except
        log.error("shutdown: %s", exc)
    return 0


if __name__ == "__main__":
    _args = parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if _args.verbose else logging.WARNING,
                        format="pymodbus_plc %(levelname)s %(name)s: %(message)s")
    # pymodbus's deprecation warnings are not ours to fix; keep stderr for real errors.
    logging.getLogger("pymodbus").setLevel(logging.DEBUG if _args.verbose else logging.ERROR)
    sys.exit(asyncio.run(main(_args)))
