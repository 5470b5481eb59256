"""The adb transport: the system's `adb` run as a subprocess, with a timeout on every command.

Kept apart from the benchmark_model parser and from the device (nn-Meter's split of a backend
into profiler and parser), so each can be tested alone: tests put a faithful fake `adb` on PATH.
adbutils is not used: it speaks the adb server's socket protocol, which a fake on PATH cannot
stand in for, and the command-line client is what users already have.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import dataclass

from latencykit.errors import DeviceUnavailableError


class AdbError(DeviceUnavailableError):
    """An adb command that failed while the phone stayed connected."""


class DisconnectedError(DeviceUnavailableError):
    """The phone went away (unplugged, offline, adbd restarted) during a command."""


@dataclass(frozen=True)
class Attached:
    serial: str
    state: str  # "device", "offline", "unauthorized", ...
    info: dict


@dataclass(frozen=True)
class Result:
    returncode: int
    output: str  # stdout and stderr together, as a user would see them


@dataclass(frozen=True)
class Adb:
    """One phone (or, with no serial, whichever single phone is attached) through `adb`."""

    executable: str = "adb"
    serial: str | None = None
    timeout_s: float = 60.0

    def available(self) -> bool:
        return shutil.which(self.executable) is not None

    def with_serial(self, serial: str) -> "Adb":
        return Adb(self.executable, serial, self.timeout_s)

    def run(self, *args: str, timeout_s: float | None = None) -> Result:
        """Run `adb [-s SERIAL] ARGS`; a timeout or a vanished phone raises DisconnectedError."""
        cmd = [self.executable, *(("-s", self.serial) if self.serial else ()), *args]
        timeout = timeout_s or self.timeout_s
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except FileNotFoundError as exc:
            raise DeviceUnavailableError(f"{self.executable} not found: install Android platform-tools") from exc
        except subprocess.TimeoutExpired as exc:
            raise DisconnectedError(f"`{shlex.join(cmd[1:])}` timed out after {timeout:g} s") from exc
        return Result(proc.returncode, (proc.stdout or "") + (proc.stderr or ""))

    def devices(self) -> list[Attached]:
        """`adb devices -l`: every attached phone with its state and properties."""
        res = Adb(self.executable, None, self.timeout_s).run("devices", "-l")
        if res.returncode != 0:
            raise AdbError(f"adb devices failed: {res.output.strip()}")
        found = []
        for line in res.output.splitlines():
            fields = line.split()
            if not fields or line.startswith(("List of devices", "*")) or len(fields) < 2:
                continue
            info = dict(f.split(":", 1) for f in fields[2:] if ":" in f)
            found.append(Attached(fields[0], fields[1], info))
        return found

    def state(self) -> str:
        """`get-state` of this serial: "device" when usable, else why not (never raises)."""
        try:
            res = self.run("get-state", timeout_s=min(self.timeout_s, 10.0))
        except DeviceUnavailableError as exc:
            return str(exc)
        return res.output.strip() if res.returncode == 0 else "absent"

    def shell(self, command: str, timeout_s: float | None = None, check: bool = True) -> Result:
        """One shell command on the phone. A failure is a DisconnectedError if the phone is gone."""
        res = self.run("shell", command, timeout_s=timeout_s)
        if res.returncode != 0 and check:
            self._raise(f"`adb shell {command}`", res)
        return res

    def getprop(self, name: str) -> str:
        return self.shell(f"getprop {shlex.quote(name)}").output.strip()

    def push(self, local: str, remote: str, timeout_s: float | None = None) -> None:
        res = self.run("push", local, remote, timeout_s=timeout_s)
        if res.returncode != 0:
            self._raise(f"`adb push {local}`", res)

    def remove(self, *remote: str) -> None:
        """Best effort: cleaning up must not hide the error that led to it."""
        if remote:
            try:
                self.run("shell", "rm -f " + " ".join(shlex.quote(r) for r in remote), timeout_s=10.0)
            except DeviceUnavailableError:
                pass

    def _raise(self, what: str, res: Result) -> None:
        tail = " | ".join(line.strip() for line in res.output.strip().splitlines()[-3:]) or "no output"
        state = self.state()
        if state != "device":
            raise DisconnectedError(f"{what} failed: phone {self.serial or ''} is {state} ({tail})")
        raise AdbError(f"{what} failed with exit code {res.returncode}: {tail}")
