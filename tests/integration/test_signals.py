"""Signals on the real broker and sandbox: SIGHUP stops cleanly like SIGTERM (drain, commit), and a
second stop signal ends the grace period without committing what MoEngage has not answered."""

from __future__ import annotations

import signal
from collections.abc import Callable

from connector.devtools.broker import LocalBroker
from connector.devtools.kafkautil import committed_offsets, produce
from connector.devtools.servers import SandboxProcess
from connector.devtools.workload import events
from connector.source.decoding import encode_raw
from tests.integration.conftest import (
    ConnectorProcess,
    base_config,
    fresh_topic,
    load_schema,
    wait_until,
)
from tests.integration.faults import event_topic_spec

Factory = Callable[..., ConnectorProcess]


def _events_topic(broker: LocalBroker, names: Callable[[str], str], n: int) -> tuple[str, int]:
    topic = fresh_topic(broker, names("signals"), 2)
    _, schema = load_schema("event")
    ends = produce(
        broker.bootstrap,
        topic,
        [(e["user_id"].encode(), encode_raw(schema, e)) for e in events(n, 20)],
    )
    return topic, sum(ends.values())


def _accepted(sandbox: SandboxProcess) -> int:
    return int(sandbox.admin("GET", "stats")["actions_total"])


def test_sighup_drains_in_flight_requests_and_commits_what_was_accepted(
    broker: LocalBroker,
    sandbox: SandboxProcess,
    connector: Factory,
    names: Callable[[str], str],
) -> None:
    # The first requests are accepted (stored) but answered 1.5 s later: in flight at SIGHUP.
    sandbox.admin("POST", "faults", {"ack_delay_ms": 1500, "ack_delay_count": 3})
    topic, produced = _events_topic(broker, names, 400)
    group = names("group")
    cfg = base_config(broker, sandbox.url, group, [event_topic_spec(topic)])
    proc = connector(cfg)
    wait_until(lambda: _accepted(sandbox) > 0, 60, "a request accepted and held")

    proc.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    assert proc.wait(60) == 0
    events_logged = [e["event"] for e in proc.log_events()]
    assert "stop_requested" in events_logged
    assert "connector_stopped" in events_logged
    # Everything MoEngage accepted was committed: a restart re-sends nothing.
    committed = committed_offsets(broker.bootstrap, group, topic)
    accepted = _accepted(sandbox)
    assert 0 < accepted <= produced
    assert sum(max(0, off) for off in committed.values()) == accepted


def test_a_second_stop_signal_ends_the_grace_period_and_commits_nothing_unanswered(
    broker: LocalBroker,
    sandbox: SandboxProcess,
    connector: Factory,
    names: Callable[[str], str],
) -> None:
    # Every request is stored and then answered only after a minute: always in flight.
    sandbox.admin("POST", "faults", {"ack_delay_ms": 60_000, "ack_delay_count": 1_000})
    topic, _ = _events_topic(broker, names, 100)
    group = names("group")
    cfg = base_config(
        broker, sandbox.url, group, [event_topic_spec(topic)], request_timeout_seconds=120
    )
    cfg["pipeline"]["shutdown_grace_seconds"] = 100
    proc = connector(cfg)
    wait_until(lambda: _accepted(sandbox) > 0, 60, "a request in flight")

    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGTERM)
    wait_until(
        lambda: any(e.get("event") == "connector_stopping" for e in proc.log_events()),
        30,
        "the drain to begin",
    )
    proc.proc.send_signal(signal.SIGTERM)
    # Far less than the 100 s grace period (or the 60 s the answers take).
    assert proc.wait(30) == 0
    logged = proc.log_events()
    assert any(e.get("event") == "stop_hurried" for e in logged)
    assert any(e.get("event") == "connector_stopped" for e in logged)
    # Nothing was answered, so nothing is committed: the records are read again next time.
    committed = committed_offsets(broker.bootstrap, group, topic)
    assert all(off < 0 for off in committed.values()), committed
