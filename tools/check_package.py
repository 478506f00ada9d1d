#!/usr/bin/env python3
"""Builds the Debian package and installs, upgrades, removes and purges it on this machine
(run by scripts/test.sh after cargo test; docs/deployment.md, "Debian package").

1. `scripts/package.sh --debug --fast` twice: the debug binary `cargo test` already built
   (a release build would add minutes to CI), as version N and as N+1 (`--deb-version`).
2. `dpkg -i` N with a fake `systemctl` and `deb-systemd-invoke` first on PATH that record their
   arguments, and /run/systemd/system present (made for the test when systemd is not PID 1):
   the postinst must call `systemctl --system daemon-reload` and nothing that enables, starts or
   restarts the service. Then: the conffile is registered, the user and /var/lib/linesight exist,
   `linesight check-config /etc/linesight/linesight.yaml` exits 0 (as root and as the service
   user), and `linesight infer` of the two shipped frames gives NG and OK from a plain
   environment (no ORT_DYLIB_PATH, cwd /) with the library found in /usr/lib/linesight.
   Without /run/systemd/system (only when it is not real) the postinst calls no systemctl at all.
3. The config is changed and a file is put in /var/lib/linesight; `dpkg -i` N+1: both kept, the
   old prerm stops nothing, the new postinst calls `deb-systemd-invoke try-restart` (restarts
   only a running service; a stopped one stays stopped) and never start/enable.
4. `dpkg -r`: prerm calls `deb-systemd-invoke stop`, the config and /var/lib/linesight stay.
   `dpkg --purge`: /var/lib/linesight and /etc/linesight are gone.
5. Cleanup in every case: the package purged, the fake /run/systemd/system removed, the user and
   group `linesight` deleted when this check created them.

6. The same life under a real systemd (PID 1 of its own PID, mount, network, UTS and IPC
   namespaces, `unshare`; private /run and /tmp; nothing of the boot started, see SYSTEMD_INIT),
   with the real systemctl and deb-systemd-invoke, and the example config's line in the
   namespaces (the tests' pymodbus PLC on 127.0.0.1:502, mosquitto on 1883): `dpkg -i` N leaves the
   service disabled and stopped; started by hand, it reaches READY (Type=notify) under the unit's
   hardening as user linesight, publishes results and writes rejects to the PLC's coil; `dpkg -i`
   N+1 restarts it (a new main PID, the changed config kept); `systemctl stop` ends it `inactive`
   (exit 0: its outputs confirmed safe); `dpkg -i` N+2 leaves it stopped; started again, `dpkg -r`
   stops it; purge. Skipped, saying so, only where the kernel refuses the namespaces.
Skips (exit 0, with the reason) when not root, without dpkg, or when a `linesight` package is
already installed (it is never replaced by a test build).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_SYSTEMD = Path("/run/systemd/system")
CONF = Path("/etc/linesight/linesight.yaml")
STATE = Path("/var/lib/linesight")
MODEL = "/usr/share/linesight/models/surface-classifier.onnx"
FRAMES = ["/usr/share/linesight/samples/parts/000_chip.png", "/usr/share/linesight/samples/parts/001_good.png"]
# A plain shell's environment: no ORT_DYLIB_PATH, nothing from scripts/env.sh.
PLAIN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}

FAKE = """#!/bin/sh
echo "$(basename "$0") $*" >> {log}
exit 0
"""


class Fail(Exception):
    pass


def run(cmd: list[str], env: dict[str, str] | None = None, cwd: str | Path | None = None, check: bool = True):
    print("+", " ".join(cmd), flush=True)
    p = subprocess.run(cmd, env=env, cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if check and p.returncode != 0:
        raise Fail(f"`{' '.join(cmd)}` exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def package_installed() -> str | None:
    p = subprocess.run(
        ["dpkg-query", "-W", "-f=${db:Status-Status} ${Version}", "linesight"],
        text=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False,
    )
    if p.returncode == 0 and p.stdout.startswith("installed "):
        return p.stdout.split()[1]
    return None


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


class Recorder:
    """Fake systemctl / deb-systemd-invoke first on PATH; each call is one line of `log`."""

    def __init__(self, tmp: Path):
        self.bin = tmp / "fakebin"
        self.bin.mkdir()
        self.log = tmp / "systemd-calls.log"
        for name in ("systemctl", "deb-systemd-invoke"):
            f = self.bin / name
            f.write_text(FAKE.format(log=self.log))
            f.chmod(0o755)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{self.bin}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        env["DEBIAN_FRONTEND"] = "noninteractive"
        return env

    def take(self) -> list[str]:
        calls = self.log.read_text().splitlines() if self.log.exists() else []
        self.log.unlink(missing_ok=True)
        return calls


def expect_calls(what: str, calls: list[str], want: list[str], never: tuple[str, ...]) -> None:
    print(f"check_package: {what}: maintainer scripts called {calls or 'nothing'}")
    for w in want:
        if w not in calls:
            raise Fail(f"{what}: expected the call `{w}`, got {calls}")
    bad = [c for c in calls if any(f" {n} " in f" {c} " for n in never)]
    if bad:
        raise Fail(f"{what}: calls that must not happen: {bad}")


def build(tmp: Path, version: str | None) -> Path:
    out = tmp / (version or "n")
    cmd = [str(ROOT / "scripts" / "package.sh"), "--debug", "--fast", "--output", str(out)]
    if version:
        cmd += ["--deb-version", version]
    p = run(cmd)
    deb = Path(p.stdout.strip().splitlines()[-1])
    if not deb.is_file():
        raise Fail(f"scripts/package.sh printed no .deb: {p.stdout}\n{p.stderr}")
    return deb


def deb_field(deb: Path, field: str) -> str:
    return run(["dpkg-deb", "-f", str(deb), field]).stdout.strip()


def check(tmp: Path, rec: Recorder, fake_run: bool) -> list[Path]:
    """Steps 1-4 of the module docs; returns N, N+1 and N+2 for step 6."""
    t = time.monotonic()
    deb_n = build(tmp, None)
    version_n = deb_field(deb_n, "Version")
    upstream, _, revision = version_n.rpartition("-")
    version_n1 = f"{upstream}-{revision}+upgradetest1" if upstream else f"{version_n}-1+upgradetest1"
    deb_n1 = build(tmp, version_n1)
    version_n2 = version_n1.replace("+upgradetest1", "+upgradetest2")
    deb_n2 = build(tmp, version_n2)
    run(["dpkg", "--compare-versions", version_n1, "gt", version_n])
    run(["dpkg", "--compare-versions", version_n2, "gt", version_n1])
    size = deb_n.stat().st_size / 1e6
    print(f"check_package: built {deb_n.name} and {deb_n1.name} ({size:.0f} MB each) in {time.monotonic() - t:.0f} s")

    # --- install N, "systemd running" -----------------------------------------------------------
    t = time.monotonic()
    run(["dpkg", "-i", str(deb_n)], env=rec.env())
    expect_calls(
        "install (systemd running)", rec.take(), ["systemctl --system daemon-reload"],
        ("start", "enable", "restart", "try-restart", "reload-or-restart", "unmask"),
    )
    if package_installed() != version_n:
        raise Fail(f"after dpkg -i, dpkg says linesight is {package_installed()}, not {version_n}")
    conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", "linesight"]).stdout
    if str(CONF) not in conffiles:
        raise Fail(f"{CONF} is not a conffile of the package: {conffiles!r}")
    if not user_exists("linesight"):
        raise Fail("postinst did not create the user linesight")
    st = STATE.stat()
    if pwd.getpwuid(st.st_uid).pw_name != "linesight" or (st.st_mode & 0o777) != 0o700:
        raise Fail(f"{STATE}: owner {pwd.getpwuid(st.st_uid).pw_name}, mode {oct(st.st_mode & 0o777)}, want linesight 0700")
    for f in ("/usr/bin/linesight", "/usr/lib/linesight/libonnxruntime.so", "/lib/systemd/system/linesight.service",
              "/usr/lib/sysusers.d/linesight.conf", "/usr/lib/tmpfiles.d/linesight.conf", MODEL, *FRAMES,
              "/usr/share/linesight/samples/line.avi", "/usr/share/doc/linesight/README.Debian"):
        if not Path(f).exists():
            raise Fail(f"{f} is not installed")

    # check-config from a plain environment, as root and as the service user.
    run(["/usr/bin/linesight", "check-config", str(CONF)], env=PLAIN_ENV, cwd="/")
    run(["runuser", "-u", "linesight", "--", "/usr/bin/linesight", "check-config", str(CONF)], env=PLAIN_ENV, cwd="/")
    print("check_package: check-config passes (root and user linesight)")

    # infer from a plain environment: the library must come from /usr/lib/linesight.
    env = dict(PLAIN_ENV, RUST_LOG="linesight::inference::runtime=debug")
    p = run(["/usr/bin/linesight", "infer", "--json", "--model", MODEL, *FRAMES], env=env, cwd="/")
    docs = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    verdicts = [d.get("verdict") for d in docs]
    if verdicts != ["NG", "OK"]:
        raise Fail(f"infer: verdicts {verdicts} for {FRAMES}, want ['NG', 'OK']:\n{p.stdout}\n{p.stderr}")
    if "/usr/lib/linesight/libonnxruntime.so" not in p.stderr or "installed" not in p.stderr:
        raise Fail(f"infer: ONNX Runtime not taken from /usr/lib/linesight:\n{p.stderr}")
    print(f"check_package: infer without ORT_DYLIB_PATH: {verdicts}, library /usr/lib/linesight/libonnxruntime.so")

    # Without systemd running, the postinst calls no systemctl at all (only checkable when
    # /run/systemd/system is this check's own fake).
    if fake_run:
        RUN_SYSTEMD.rmdir()
        run(["sh", "/var/lib/dpkg/info/linesight.postinst", "configure", version_n], env=rec.env())
        expect_calls("postinst without systemd", rec.take(), [], ("systemctl", "deb-systemd-invoke"))
        RUN_SYSTEMD.mkdir(parents=True)
    print(f"check_package: install checks took {time.monotonic() - t:.0f} s")

    # --- upgrade N -> N+1 with a changed config and state -------------------------------------------
    t = time.monotonic()
    changed = CONF.read_text().replace("node_id: cell-01", "node_id: cell-42") + "# changed by check_package\n"
    if "cell-42" not in changed:
        raise Fail(f"{CONF}: no `node_id: cell-01` to change")
    CONF.write_text(changed)
    marker = STATE / "check-package-marker"
    marker.write_text("state before the upgrade\n")
    run(["dpkg", "-i", str(deb_n1)], env=rec.env())
    expect_calls(
        "upgrade (systemd running)", rec.take(),
        ["systemctl --system daemon-reload", "deb-systemd-invoke try-restart linesight.service"],
        ("start", "stop", "enable", "restart", "unmask"),
    )
    if package_installed() != version_n1:
        raise Fail(f"after the upgrade dpkg says {package_installed()}, not {version_n1}")
    if CONF.read_text() != changed:
        raise Fail(f"{CONF}: the changed config was not kept across the upgrade")
    if not marker.is_file():
        raise Fail(f"{marker}: /var/lib/linesight was not kept across the upgrade")
    run(["/usr/bin/linesight", "check-config", str(CONF)], env=PLAIN_ENV, cwd="/")
    print("check_package: upgrade kept the changed config and /var/lib/linesight")

    # --- remove, then purge -----------------------------------------------------------------------------
    run(["dpkg", "-r", "linesight"], env=rec.env())
    expect_calls(
        "remove (systemd running)", rec.take(),
        ["deb-systemd-invoke stop linesight.service", "systemctl --system daemon-reload"],
        ("start", "enable", "restart", "try-restart"),
    )
    if Path("/usr/bin/linesight").exists():
        raise Fail("dpkg -r left /usr/bin/linesight")
    if CONF.read_text() != changed or not marker.is_file():
        raise Fail("dpkg -r must keep the config and /var/lib/linesight")
    run(["dpkg", "--purge", "linesight"], env=rec.env())
    rec.take()
    for gone in (STATE, Path("/etc/linesight"), Path("/var/cache/linesight")):
        if gone.exists():
            raise Fail(f"dpkg --purge left {gone}")
    print(f"check_package: upgrade, remove and purge took {time.monotonic() - t:.0f} s")
    return [deb_n, deb_n1, deb_n2]


# --- the same under a real systemd ------------------------------------------------------------------

# Runs as PID 1 of the new namespaces. They share this machine's files, so nothing of the boot
# may run in them: `systemd-tmpfiles-setup` alone (sysinit.target) would empty this machine's /tmp.
# So: a private /run (systemd's /run/systemd/system is its own) and /tmp (the check's folder bound
# in at /run/check); sysinit.target, basic.target and network-online.target masked, and the unit
# started without its default dependencies on them (a drop-in: the unit's own settings, hardening,
# Type=notify and user are what is checked); the loopback up (the example config's broker and PLC
# are 127.0.0.1, refused here); systemd on a target of its own with no dependencies; a container's
# policy-rc.d hidden.
SYSTEMD_INIT = """#!/bin/sh
set -e
check_dir="$1"
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/check /run/systemd/system/linesight.service.d
mount --bind "$check_dir" /run/check
mount -t tmpfs -o mode=1777 tmpfs /tmp
# A container image's policy-rc.d (Docker's exits 101: "start nothing") makes deb-systemd-invoke
# refuse every action; a Debian system has none. Hidden here only (not executable: not asked).
if [ -e /usr/sbin/policy-rc.d ]; then mount --bind /dev/null /usr/sbin/policy-rc.d; fi
for unit in sysinit.target basic.target network-online.target network.target time-sync.target \\
        sockets.target timers.target paths.target multi-user.target graphical.target; do
    ln -s /dev/null "/run/systemd/system/$unit"
done
cat > /run/systemd/system/linesight.service.d/check-package.conf <<'T'
[Unit]
DefaultDependencies=no
T
cat > /run/systemd/system/linesight-check.target <<'T'
[Unit]
Description=check_package: an empty system for the linesight package
DefaultDependencies=no
T
ip link set lo up 2>/dev/null || true
exec /lib/systemd/systemd --system --unit=linesight-check.target --log-target=console --log-level=notice
"""


def wait_for(ok, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not ok():
        if time.monotonic() > deadline:
            raise Fail(f"waited {seconds:.0f} s for {what}")
        time.sleep(0.2)


class Unavailable(Exception):
    """The kernel refuses what a real systemd in namespaces needs."""


class Systemd:
    """A systemd as PID 1 of its own namespaces; `run` executes a command inside them."""

    def __init__(self, tmp: Path):
        need = {"systemd": "/lib/systemd/systemd", "unshare": shutil.which("unshare"), "nsenter": shutil.which("nsenter")}
        missing = [name for name, path in need.items() if not path or not Path(path).exists()]
        if missing:
            raise Unavailable(f"not on this machine: {', '.join(missing)}")
        init = tmp / "systemd-init.sh"
        init.write_text(SYSTEMD_INIT)
        init.chmod(0o755)
        self.log = tmp / "systemd.log"
        self.proc = subprocess.Popen(
            ["unshare", "--pid", "--mount", "--net", "--uts", "--ipc", "--fork", "--mount-proc", "--propagation",
             "private", str(init), str(tmp)],
            stdout=self.log.open("w"), stderr=subprocess.STDOUT,
        )
        self.pid = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Unavailable(f"unshare exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            kids = subprocess.run(["pgrep", "-P", str(self.proc.pid)], text=True, stdout=subprocess.PIPE).stdout.split()
            if kids:
                self.pid = kids[0]
                p = self.run(["systemctl", "is-system-running"], check=False)
                if p.stdout.strip() in ("running", "degraded"):
                    print(f"check_package: a real systemd runs as PID 1 of its namespaces (host PID {self.pid})")
                    return
            time.sleep(0.2)
        self.close()
        raise Fail(f"systemd in the namespaces did not come up within 30 s:\n{self.log.read_text()[-3000:]}")

    def run(self, cmd: list[str], check: bool = True, env: dict[str, str] | None = None):
        return run(["nsenter", "-t", str(self.pid), "-m", "-p", "-n", "-u", "-i", "--", *cmd], env=env, check=check)

    def spawn(self, cmd: list[str], out: Path) -> subprocess.Popen:
        """A process in the namespaces (it dies with them), its output in `out`."""
        print("+ (in the namespaces, background)", " ".join(cmd), flush=True)
        return subprocess.Popen(["nsenter", "-t", str(self.pid), "-m", "-p", "-n", "-u", "-i", "--", *cmd],
                                stdin=subprocess.PIPE, stdout=out.open("w"), stderr=subprocess.STDOUT)

    def show(self, prop: str) -> str:
        return self.run(["systemctl", "show", "-P", prop, "linesight.service"]).stdout.strip()

    def state(self) -> str:
        return self.run(["systemctl", "is-active", "linesight.service"], check=False).stdout.strip()

    def why(self) -> str:
        """What to look at when the service did not do what was expected."""
        status = self.run(["systemctl", "status", "--no-pager", "-l", "linesight.service"], check=False)
        return f"systemctl status:\n{status.stdout}{status.stderr}\nsystemd's console:\n{self.log.read_text()[-3000:]}"

    def expect(self, what: str, want: str) -> None:
        got = self.state()
        if got != want:
            raise Fail(f"{what}: the service is {got!r}, want {want!r}\n{self.why()}")

    def close(self) -> None:
        # SIGKILL to the namespace's PID 1 ends every process in it.
        if self.pid:
            subprocess.run(["kill", "-KILL", self.pid], check=False)
        self.proc.kill()
        self.proc.wait()


def check_real_systemd(tmp: Path, debs: list[Path]) -> None:
    """Step 6 of the module docs; the package is not installed when this starts."""
    t = time.monotonic()
    env = dict(PLAIN_ENV, DEBIAN_FRONTEND="noninteractive")
    # The check's folder is /run/check inside the namespaces.
    debs = [Path("/run/check") / d.relative_to(tmp) for d in debs]
    sd = Systemd(tmp)
    try:
        # The example config's line, inside the namespaces: the PLC (the tests' pymodbus PLC,
        # which reports every write it is sent) and the broker, at the addresses it names.
        plc_log, results = tmp / "plc.jsonl", tmp / "results.txt"
        python = os.environ.get("LINESIGHT_PYTHON") or str(ROOT / ".cache" / "venv" / "bin" / "python3")
        plc = sd.spawn([python, str(ROOT / "tests" / "plc" / "pymodbus_plc.py"), "--tcp", "127.0.0.1:502", "--unit", "1"],
                       plc_log)
        sd.spawn(["mosquitto", "-p", "1883"], tmp / "mosquitto.log")
        wait_for(lambda: '"ready"' in plc_log.read_text(), 30, f"the PLC in the namespaces: {plc_log}")
        sd.run(["dpkg", "-i", str(debs[0])], env=env)
        enabled = sd.run(["systemctl", "is-enabled", "linesight.service"], check=False).stdout.strip()
        if enabled != "disabled":
            raise Fail(f"after dpkg -i the service is {enabled!r}, want 'disabled' (never enabled by the package)")
        sd.expect("after dpkg -i", "inactive")
        print("check_package: real systemd: installed, the service disabled and not started")

        sd.run(["systemctl", "start", "linesight.service"], check=False)
        sd.expect("systemctl start (Type=notify: active only after READY)", "active")
        pid = sd.show("MainPID")
        uid = sd.run(["ps", "-o", "uid=", "-p", pid], check=False).stdout.strip()
        if uid != str(pwd.getpwnam("linesight").pw_uid):
            raise Fail(f"the service's main process {pid} runs as uid {uid!r}, want linesight's")
        print(f"check_package: real systemd: started by hand, READY, main PID {pid} as user linesight")
        # It inspects: results on the broker, rejects at the PLC's reject coil (10).
        sub = sd.spawn(["mosquitto_sub", "-p", "1883", "-t", "linesight/+/+/tasks/+/result",
                        "-C", "3", "-W", "30"], results)
        sub.wait(timeout=40)
        got = results.read_text().splitlines()
        if len(got) < 3 or not all('"verdict"' in r for r in got):
            raise Fail(f"the installed service published no results within 30 s: {got}\n{sd.why()}")
        wait_for(lambda: '"address":10' in plc_log.read_text(), 30, "a reject written to the PLC's coil 10")
        print(f"check_package: real systemd: the service inspects: {len(got)} results on the broker, rejects at the PLC")

        changed = CONF.read_text().replace("node_id: cell-01", "node_id: cell-43") + "# changed by check_package\n"
        CONF.write_text(changed)
        sd.run(["dpkg", "-i", str(debs[1])], env=env)
        sd.expect("upgrade while running", "active")
        new_pid = sd.show("MainPID")
        if new_pid in (pid, "0"):
            raise Fail(f"upgrade while running: main PID {pid} -> {new_pid}, the service was not restarted")
        if CONF.read_text() != changed:
            raise Fail(f"{CONF}: the changed config was not kept across the upgrade")
        print(f"check_package: real systemd: upgrade while running restarted it (main PID {pid} -> {new_pid})")

        sd.run(["systemctl", "stop", "linesight.service"])
        # inactive, not failed: the stop confirmed the reject output off at the PLC (exit 0).
        sd.expect("systemctl stop", "inactive")
        sd.run(["dpkg", "-i", str(debs[2])], env=env)
        sd.expect("upgrade while stopped", "inactive")
        print("check_package: real systemd: upgrade while stopped left it stopped")

        sd.run(["systemctl", "start", "linesight.service"], check=False)
        sd.expect("systemctl start after the upgrades", "active")
        sd.run(["dpkg", "-r", "linesight"], env=env)
        if sd.state() == "active":
            raise Fail(f"dpkg -r left the service running\n{sd.why()}")
        sd.run(["dpkg", "--purge", "linesight"], env=env)
        print(f"check_package: real systemd: dpkg -r stopped the running service; purged "
              f"({time.monotonic() - t:.0f} s)")
        plc.stdin.close()
    finally:
        sd.close()


def main() -> int:
    if shutil.which("dpkg") is None:
        print("check_package: no dpkg here, skipping (Debian/Ubuntu only)")
        return 0
    if os.geteuid() != 0:
        print("check_package: not root, skipping (dpkg -i needs root; CI runs as root)")
        return 0
    installed = package_installed()
    if installed:
        print(f"check_package: a linesight package ({installed}) is installed here; not replacing it, skipping")
        return 0

    t0 = time.monotonic()
    user_before = user_exists("linesight")
    fake_run = not RUN_SYSTEMD.exists()
    parent_before = RUN_SYSTEMD.parent.exists()
    failed = None
    skipped_real = None
    with tempfile.TemporaryDirectory(prefix="check_package.") as tmp_name:
        tmp = Path(tmp_name)
        rec = Recorder(tmp)
        try:
            if fake_run:
                RUN_SYSTEMD.mkdir(parents=True)
            debs = check(tmp, rec, fake_run)
            try:
                check_real_systemd(tmp, debs)
            except Unavailable as e:
                skipped_real = str(e)
        except Fail as e:
            failed = str(e)
        finally:
            if package_installed() or subprocess.run(["dpkg-query", "-W", "linesight"], stdout=subprocess.DEVNULL,
                                                     stderr=subprocess.DEVNULL).returncode == 0:
                subprocess.run(["dpkg", "--purge", "linesight"], env=rec.env(), check=False)
            if fake_run and RUN_SYSTEMD.is_dir():
                RUN_SYSTEMD.rmdir()
                if not parent_before:
                    RUN_SYSTEMD.parent.rmdir()
            if not user_before and user_exists("linesight"):
                subprocess.run(["userdel", "linesight"], check=False)
                subprocess.run(["groupdel", "linesight"], stderr=subprocess.DEVNULL, check=False)
    if failed:
        print(f"check_package: FAIL: {failed}")
        return 1
    if skipped_real:
        print(f"check_package: NOT RUN: the package under a real systemd (step 6): {skipped_real}")
    print(f"check_package: passed in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
