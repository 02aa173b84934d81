"""Child processes measured from outside: start, CPU from /proc, reap with ``os.wait4``.

``os.wait4`` gives the child's exact user and system CPU time once it has exited;
``/proc/<pid>/stat`` gives CPU time so far for processes still running (the broker, the sandbox)
and for a snapshot at a moment of interest.

Peak memory is the child's own high-water mark, ``VmHWM`` in ``/proc/<pid>/status``, read until it
exits. Not wait4's ``ru_maxrss``: ``subprocess`` starts a child with vfork + exec, and the kernel
keeps the high-water mark of the memory the child had before the exec -- this harness's, about
78 MB -- as the floor of its ``ru_maxrss``. A connector that peaked at 67 MB was reported at 79.
"""

from __future__ import annotations

import compileall
import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import orjson

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # /proc/stat and /proc/<pid>/stat count in these


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a running process (None once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14, 15 of stat


def machine_cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all cores since boot, from the first line of /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user/nice
    return total - idle, total


@dataclass(frozen=True)
class Usage:
    """What ``os.wait4`` reports for a reaped child."""

    exit_code: int
    user_s: float
    system_s: float
    maxrss_mb: float

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.system_s


def vm_hwm_kb(pid: int) -> int | None:
    """The process's own peak resident set so far (``VmHWM``, KiB); None once it has exited."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None  # a zombie: its memory is gone


def reap(proc: subprocess.Popen[Any], timeout: float, peak_kb: int = 0) -> Usage:
    """Wait for ``proc`` to exit (SIGKILL after ``timeout``) and return its rusage, with its own
    peak RSS (``peak_kb``: the highest ``VmHWM`` seen before, if any; read again while waiting)."""
    deadline = time.monotonic() + timeout
    while True:
        peak_kb = max(peak_kb, vm_hwm_kb(proc.pid) or 0)
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            break
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            pid, status, ru = os.wait4(proc.pid, 0)
            break
        time.sleep(0.02)
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code  # Popen must not try to reap it again
    return Usage(code, ru.ru_utime, ru.ru_stime, (peak_kb or ru.ru_maxrss) / 1024)


def compile_bytecode(package: Path) -> None:
    """Write ``package``'s bytecode (``__pycache__``) as ``pip install`` does, so a connector
    started from a source tree starts as an installed one: with ``PYTHONDONTWRITEBYTECODE`` set
    (the Dockerfile sets it, so do some CI images) every start compiled every module again, and
    start-up grew with the size of the code, not with what it does."""
    compileall.compile_dir(str(package), quiet=1)


def parse_log_events(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a connector log (anything else, e.g. a traceback, is skipped)."""
    out = []
    with contextlib.suppress(OSError), path.open("rb") as f:
        for line in f:
            if line.startswith(b"{"):
                with contextlib.suppress(orjson.JSONDecodeError):
                    out.append(orjson.loads(line))
    return out


def log_time(event: dict[str, Any]) -> float:
    """A structlog ISO timestamp as Unix seconds."""
    return datetime.fromisoformat(str(event["timestamp"])).timestamp()


class ConnectorProcess:
    """``python -m connector run --config FILE`` with its output in a log file."""

    def __init__(
        self,
        python: str,
        config: Path,
        log_path: Path,
        env: dict[str, str],
        cwd: Path | None = None,
    ) -> None:
        self.config = config
        self._cwd = cwd  # the source tree to run from (bench.startup), else this directory
        self.log_path = log_path
        self._python = python
        self._env = env
        self._log: IO[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.usage: Usage | None = None
        self._peak_kb = 0  # the highest VmHWM read so far

    def start(self) -> ConnectorProcess:
        self._log = self.log_path.open("wb")
        self.started_at = time.time()
        self.proc = subprocess.Popen(  # noqa: S603 - our own CLI with a file we wrote
            [self._python, "-m", "connector", "run", "--config", str(self.config)],
            env=self._env,
            cwd=self._cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        """Still running? (Checked with wait4, never ``Popen.poll``: that would reap the child
        and lose its rusage.)"""
        if self.proc is None or self.usage is not None:
            return False
        self._peak_kb = max(self._peak_kb, vm_hwm_kb(self.proc.pid) or 0)
        pid, status, ru = os.wait4(self.proc.pid, os.WNOHANG)
        if pid != self.proc.pid:
            return True
        code = os.waitstatus_to_exitcode(status)
        self.proc.returncode = code
        peak_kb = self._peak_kb or ru.ru_maxrss
        self.usage = Usage(code, ru.ru_utime, ru.ru_stime, peak_kb / 1024)
        return False

    def first_event(self, name: str) -> dict[str, Any] | None:
        return next((e for e in parse_log_events(self.log_path) if e.get("event") == name), None)

    def stop(self, grace: float = 60.0) -> Usage:
        """SIGTERM, then reap (SIGKILL after ``grace`` seconds); idempotent."""
        if self.usage is None and self.proc is not None:
            if self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGTERM)
            self.usage = reap(self.proc, grace, self._peak_kb)
        if self._log is not None:
            self._log.close()
            self._log = None
        assert self.usage is not None
        return self.usage

    def kill(self) -> None:
        """Last resort in ``finally``: SIGKILL and reap if still running."""
        if self.proc is not None and self.usage is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.usage = reap(self.proc, 10, self._peak_kb)
        if self._log is not None:
            self._log.close()
            self._log = None
