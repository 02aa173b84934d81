"""Start the sandbox (as the real ``moengage-connector sandbox`` process) and the Schema Registry
stand-in (in a background thread) on free loopback ports, for the demo, tests and benchmark."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

import orjson
from aiohttp import web

from connector.devtools.broker import die_with_parent


class BackgroundApp:
    """An aiohttp application served from its own event loop in a daemon thread."""

    def __init__(self, app: web.Application, port: int = 0) -> None:
        self._app = app
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self.port = port  # 0 picks a free one
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> BackgroundApp:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


class SandboxProcess:
    """``moengage-connector sandbox --port 0 ...`` as a child process; learns its port."""

    def __init__(self, *args: str, log_path: Path | None = None, port: int = 0) -> None:
        self.args = ["--port", str(port), *args]
        self._log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._log: IO[bytes] | None = None

    def start(self) -> SandboxProcess:
        self._log = open(self._log_path or os.devnull, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "connector", "sandbox", *self.args],
            stdout=subprocess.PIPE,
            stderr=self._log,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - only prctl, before exec
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"sandbox did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1])
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        """Call the sandbox's /_sandbox/ admin API (synchronously, stdlib only)."""
        import urllib.request  # noqa: PLC0415

        data = orjson.dumps(body) if body is not None else None
        req = urllib.request.Request(  # noqa: S310 - loopback URL we built
            f"{self.url}/_sandbox/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
            return orjson.loads(resp.read())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> SandboxProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
