#!/usr/bin/env python3
"""Checks systemd/linesight.service with systemd-analyze (run by scripts/test.sh).

1. `systemd-analyze security --offline=yes --threshold=2.0`: fails if the sandbox exposure
   score is above 2.0, the project's target (the unit scores 1.6 on systemd 252).
2. `systemd-analyze verify` on a copy of the unit whose /usr/bin/linesight commands point at
   /bin/true (the real binary is not installed here, and verify would only report that): fails
   on any other complaint (unknown settings, bad values, typos).

Exits 0 with a message when systemd-analyze is missing or too old for --offline (< 250):
no systemd tooling means nothing to check, not a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "linesight.service"
# systemd-analyze takes the threshold in tenths of the displayed score: 20 means 2.0.
THRESHOLD = 20


def run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(
        cmd, cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False
    )


def main() -> int:
    if not UNIT.is_file():
        print(f"check_systemd: FAIL: {UNIT} not found")
        return 1
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        print("check_systemd: systemd-analyze not found, skipping (install package 'systemd')")
        return 0
    version = run([analyze, "--version"]).stdout
    m = re.search(r"systemd (\d+)", version)
    if m and int(m.group(1)) < 250:
        print(f"check_systemd: systemd {m.group(1)} has no --offline/--threshold, skipping")
        return 0

    failed = False

    sec = run(
        [analyze, "security", "--offline=yes", f"--threshold={THRESHOLD}", str(UNIT)]
    )
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", sec.stdout)
    if score:
        print(f"check_systemd: exposure {score.group(1)} {score.group(2)} (threshold {THRESHOLD / 10})")
    if sec.returncode != 0 or score is None:
        print(sec.stdout)
        print(f"check_systemd: FAIL: systemd-analyze security exited {sec.returncode}")
        failed = True

    with tempfile.TemporaryDirectory() as tmp:
        text = UNIT.read_text()
        text = re.sub(r"(?m)^(Exec\w+=)([-@:+!]*)/usr/bin/linesight\b", r"\1\2/bin/true", text)
        copy = Path(tmp) / UNIT.name
        copy.write_text(text)
        env = dict(os.environ, SYSTEMD_LOG_LEVEL="notice")
        print("+", analyze, "verify", copy, flush=True)
        ver = subprocess.run(
            [analyze, "verify", str(copy)],
            cwd=tmp,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            check=False,
        )
        lines = [line for line in ver.stdout.splitlines() if line.strip()]
        if ver.returncode != 0 or lines:
            print(ver.stdout)
            print(f"check_systemd: FAIL: systemd-analyze verify exited {ver.returncode}")
            failed = True
        else:
            print("check_systemd: verify clean")

    if failed:
        return 1
    print("check_systemd: 2 passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
