"""Real parts: a Tansu broker process, the sandbox process, the Schema Registry stand-in, and the
connector as its own process. Nothing here mocks Kafka or HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest
import yaml
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from connector.devtools.broker import LocalBroker, die_with_parent
from connector.devtools.kafkautil import committed_offsets, create_topics
from connector.devtools.servers import BackgroundApp, SandboxProcess
from connector.sandbox.registry import create_registry_app

ROOT = Path(__file__).resolve().parents[2]
WORKSPACE = "IT_WORKSPACE"
API_KEY = "it-api-key-0123456789"

pytestmark = pytest.mark.integration


def wait_until(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll an observable condition until it holds; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def load_schema(name: str) -> tuple[str, Any]:
    text = (ROOT / "schemas" / f"{name}.avsc").read_text()
    return text, fastavro.parse_schema(orjson.loads(text))


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with LocalBroker(log_path=log) as b:
        yield b


@pytest.fixture(scope="session")
def registry() -> Iterator[BackgroundApp]:
    app = BackgroundApp(create_registry_app()).start()
    yield app
    app.stop()


@pytest.fixture
def register(registry: BackgroundApp) -> Iterator[Callable[[str, str], int]]:
    with SchemaRegistryClient({"url": registry.url}) as client:

        def reg(subject: str, schema_name: str) -> int:
            text, _ = load_schema(schema_name)
            return int(client.register_schema(subject, Schema(text, "AVRO")))

        yield reg


@pytest.fixture
def sandbox_factory(tmp_path: Path) -> Iterator[Callable[..., SandboxProcess]]:
    started: list[SandboxProcess] = []

    def make(*args: str) -> SandboxProcess:
        sb = SandboxProcess(
            "--workspace-id",
            WORKSPACE,
            "--api-key",
            API_KEY,
            *args,
            log_path=tmp_path / f"sandbox{len(started)}.log",
        ).start()
        started.append(sb)
        return sb

    yield make
    for sb in started:
        sb.stop()


@pytest.fixture
def sandbox(sandbox_factory: Callable[..., SandboxProcess]) -> SandboxProcess:
    return sandbox_factory()


@pytest.fixture
def names() -> Callable[[str], str]:
    """Unique topic and group names per test: the session broker is shared."""
    suffix = uuid.uuid4().hex[:8]
    return lambda base: f"{base}-{suffix}"


class ConnectorProcess:
    """``python -m connector run --config FILE`` with its own log file."""

    def __init__(self, config_path: Path, env: dict[str, str], log_path: Path) -> None:
        self.config_path = config_path
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ConnectorProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "connector", "run", "--config", str(self.config_path)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - a killed run leaves no connector behind
        )
        log.close()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                out.append(orjson.loads(line))
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture
def connector(
    tmp_path: Path, broker: LocalBroker, registry: BackgroundApp
) -> Iterator[Callable[..., ConnectorProcess]]:
    procs: list[ConnectorProcess] = []

    def make(
        config: dict[str, Any], *, start: bool = True, env: dict[str, str] | None = None
    ) -> ConnectorProcess:
        path = tmp_path / f"config{len(procs)}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        full_env = {
            **os.environ,
            "MOENGAGE_WORKSPACE_ID": WORKSPACE,
            "MOENGAGE_API_KEY": API_KEY,
            **(env or {}),
        }
        proc = ConnectorProcess(path, full_env, tmp_path / f"connector{len(procs)}.log")
        procs.append(proc)
        return proc.start() if start else proc

    yield make
    for p in procs:
        if p.running():
            p.stop(signal.SIGKILL)


def base_config(
    broker: LocalBroker,
    sandbox_url: str,
    group: str,
    topics: list[dict[str, Any]],
    registry_url: str | None = None,
    **moengage: Any,
) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "moengage": {
            "base_url": sandbox_url,
            "linger_ms": 100,
            "users_per_minute": None,
            "events_per_minute": None,
            "retry_initial_ms": 50,
            "retry_max_ms": 1000,
            **moengage,
        },
        "kafka": {
            "bootstrap.servers": broker.bootstrap,
            "group.id": group,
            "session.timeout.ms": 6000,
        },
        "topics": topics,
        "pipeline": {"commit_interval_ms": 200, "shutdown_grace_seconds": 20},
        "logging": {"level": "info", "format": "json"},
        # Several connectors run at once here: each takes a free port for /metrics and probes.
        "observability": {"host": "127.0.0.1", "port": 0},
        # Each test its own account catalogue: the session's tests share one workspace id.
        "catalogue": {"topic": f"moengage-connector.catalogue.{group}"},
    }
    if registry_url:
        cfg["schema_registry"] = {"url": registry_url}
    return cfg


def short_session(cfg: dict[str, Any]) -> dict[str, Any]:
    """A killed member holds its partitions until its session times out: keep that short in
    tests that SIGKILL a connector, so the survivors or the restart take over in ~2 s."""
    cfg["kafka"]["session.timeout.ms"] = 2000
    cfg["kafka"]["heartbeat.interval.ms"] = 500
    return cfg


def all_committed(bootstrap: str, group: str, topic: str, ends: dict[int, int]) -> bool:
    committed = committed_offsets(bootstrap, group, topic)
    return all(committed.get(p, -1) == end for p, end in ends.items())


def fresh_topic(broker: LocalBroker, name: str, partitions: int) -> str:
    create_topics(broker.bootstrap, {name: partitions})
    return name
