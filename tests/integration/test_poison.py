"""Persistent server errors on the real broker and the sandbox (``moengage.max_retry_seconds``).

A poison customer (the sandbox fails every request holding it with 500) is dead-lettered alone
after the limit while the rest of the stream is accepted, and the partition's commit never passes
it before the dead-letter topic holds it. A full outage longer than the limit dead-letters
nothing, says why on /readyz, and everything arrives once the API is back.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from connector.devtools.broker import LocalBroker
from connector.devtools.kafkautil import create_topics, produce
from connector.devtools.servers import SandboxProcess
from tests.integration.conftest import ConnectorProcess, all_committed, base_config, wait_until

pytestmark = pytest.mark.integration

Factory = Callable[..., Any]
MAX_RETRY = 3.0
POISON = "poison-7"
MAPPING = {"type": "customer", "customer_id": "user_id", "attributes": {"from": "attrs"}}


def _value(customer: str, i: int) -> bytes:
    return orjson.dumps({"user_id": customer, "attrs": {"n": i}})


class Stream:
    """One partition, its dead-letter topic, and a producer that keeps the stream flowing."""

    def __init__(self, broker: LocalBroker, names: Callable[[str], str]) -> None:
        self.bootstrap = broker.bootstrap
        self.topic, self.dlq, self.group = names("poison"), names("poison-dlq"), names("group")
        create_topics(self.bootstrap, {self.topic: 1, self.dlq: 1})
        self.customers: list[str] = []
        self.end = 0

    def produce(self, customers: list[str]) -> None:
        start = len(self.customers)
        rows = [(c.encode(), _value(c, start + i)) for i, c in enumerate(customers)]
        self.end = max(self.end, produce(self.bootstrap, self.topic, rows)[0])
        self.customers += customers

    @contextmanager
    def trickle(self, every: float = 0.3) -> Iterator[None]:
        """A record for a new customer every ``every`` seconds: the rest of the stream, whose
        requests MoEngage accepts while the poison's fail."""
        stop = threading.Event()

        def run() -> None:
            n = 0
            while not stop.wait(every):
                self.produce([f"later-{n}"])
                n += 1

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(10)

    def config(self, sandbox: SandboxProcess, broker: LocalBroker) -> dict[str, Any]:
        spec = {
            "name": self.topic,
            "format": "json",
            "transform": {"mapping": MAPPING},
            "dead_letter_topic": self.dlq,
        }
        return base_config(
            broker,
            sandbox.url,
            self.group,
            [spec],
            max_in_flight=4,
            max_retry_seconds=MAX_RETRY,
            unready_after_seconds=1,
        )

    def dead_letters(self) -> list[Any]:
        """Every record of the dead-letter topic, read up to its high watermark (the broker's
        answer: on Tansu one past the last batch's base offset, exact for these one-record
        writes)."""
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"{self.group}-reader"})
        tp = TopicPartition(self.dlq, 0, 0)
        try:
            high = c.get_watermark_offsets(tp, timeout=10)[1]
            c.assign([tp])
            got: list[Any] = []
            deadline = time.monotonic() + 20
            while high and (not got or got[-1].offset() < high - 1):
                assert time.monotonic() < deadline, "the dead-letter topic could not be read"
                got += [m for m in c.consume(100, 0.2) if m.error() is None]
            return got
        finally:
            c.close()


class CommitWatch:
    """Samples, over and over: the group's committed offset of the partition, *then* the
    dead-letter topic's high watermark (read from the broker, no fetch lag). A commit past the
    poison seen before the dead-letter topic held it is a violation."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.samples: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        s = self.stream
        probe = Consumer({"bootstrap.servers": s.bootstrap, "group.id": s.group})
        try:
            while not self._stop.is_set():
                (tp,) = probe.committed([TopicPartition(s.topic, 0)], timeout=10)
                high = probe.get_watermark_offsets(TopicPartition(s.dlq, 0), timeout=10)[1]
                self.samples.append((tp.offset, high))
                self._stop.wait(0.05)
        finally:
            probe.close()

    def __enter__(self) -> CommitWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)


def readyz(proc: ConnectorProcess) -> tuple[int, dict[str, Any]]:
    listening = [e for e in proc.log_events() if e.get("event") == "observability_listening"]
    if not listening:
        return 0, {}
    url = f"http://127.0.0.1:{listening[0]['port']}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), json.loads(e.read())


def events_named(proc: ConnectorProcess, name: str) -> list[dict[str, Any]]:
    return [e for e in proc.log_events() if e.get("event") == name]


def test_a_poison_customer_is_dead_lettered_after_the_limit_and_the_rest_delivered(
    broker: LocalBroker,
    sandbox_factory: Factory,
    connector: Factory,
    names: Callable[[str], str],
) -> None:
    stream = Stream(broker, names)
    sandbox = sandbox_factory("--fail-customer", POISON, "--fail-status", "500")
    stream.produce([f"c{i}" for i in range(20)] + [POISON] + [f"c{i}" for i in range(20, 40)])
    poison_offset = 20
    with CommitWatch(stream) as watch, stream.trickle():
        proc = connector(stream.config(sandbox, broker))
        wait_until(stream.dead_letters, 60, "the poison record in the dead-letter topic")
    wait_until(
        lambda: all_committed(stream.bootstrap, stream.group, stream.topic, {0: stream.end}),
        60,
        "every offset committed",
    )
    assert proc.stop() == 0

    # Nothing committed past the poison record while the dead-letter topic did not hold it; and
    # the commit really was held there for a while (the check is not vacuous).
    violations = [(c, h) for c, h in watch.samples if c > poison_offset and h == 0]
    assert violations == []
    # (-1001: nothing committed yet, when the poison's request also holds offset 0)
    assert any(c <= poison_offset and h == 0 for c, h in watch.samples)
    assert watch.samples[-1][0] > poison_offset

    (letter,) = stream.dead_letters()
    headers = {k: v.decode() for k, v in letter.headers()}
    assert letter.key() == POISON.encode()
    assert headers["moengage.error.stage"] == "send"
    assert headers["moengage.error.rule"] == "send.persistent_server_error"
    assert headers["moengage.source.offset"] == str(poison_offset)
    assert headers["moengage.error.status"] == "500"
    answers = json.loads(headers["moengage.error.answers"])
    assert answers
    assert all(a.startswith("HTTP 500 Server Error") for a in answers)
    isolating = events_named(proc, "poison_isolating")
    assert isolating
    assert isolating[0]["failing_s"] >= MAX_RETRY

    stored = sandbox.admin("GET", "users")
    assert POISON not in stored
    assert set(stream.customers) - {POISON} == set(stored)


def test_an_outage_longer_than_the_limit_dead_letters_nothing_and_says_why(
    broker: LocalBroker,
    sandbox: SandboxProcess,
    connector: Factory,
    names: Callable[[str], str],
) -> None:
    stream = Stream(broker, names)
    stream.produce([f"a{i}" for i in range(20)])
    proc = connector(stream.config(sandbox, broker))
    wait_until(
        lambda: all_committed(stream.bootstrap, stream.group, stream.topic, {0: stream.end}),
        60,
        "the records before the outage committed",
    )
    sandbox.admin("POST", "faults", {"outage": True, "fail_status": 500})
    reasons: list[str] = []

    def says_outage() -> bool:
        status, body = readyz(proc)
        reason = str(body.get("reason", ""))
        if status == 503:
            reasons.append(reason)
        logged = bool(events_named(proc, "outage_waiting"))
        return status == 503 and "an outage" in reason and logged

    with stream.trickle():  # the stream goes on during the outage; every request fails
        wait_until(says_outage, 60, "/readyz and the log to say the connector waits out an outage")
        waiting = events_named(proc, "outage_waiting")
        assert waiting[0]["failing_s"] >= MAX_RETRY
        assert events_named(proc, "poison_isolating") == []  # nothing bisected in the outage
        sandbox.admin("POST", "faults", {"outage": False})
    wait_until(
        lambda: all_committed(stream.bootstrap, stream.group, stream.topic, {0: stream.end}),
        60,
        "every offset committed after the outage",
    )
    assert proc.stop() == 0
    assert stream.dead_letters() == []
    assert events_named(proc, "bad_record") == []
    assert set(stream.customers) == set(sandbox.admin("GET", "users"))
    assert any("nothing is dead-lettered" in r for r in reasons)
