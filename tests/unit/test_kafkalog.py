"""librdkafka's log through structlog: levels, repeats, and the "brokers unreachable" line."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError
from structlog.testing import capture_logs

from connector.badinput import BadInputRouter
from connector.config import parse_settings
from connector.observability.kafkalog import (
    BrokerWatch,
    KafkaClientLog,
    RepeatFilter,
    client_logging,
    our_level,
)
from connector.observability.metrics import Metrics
from tests.unit.configs import minimal_raw


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


FAIL = (
    "[thrd:b1:9092/bootstrap]: b1:9092/bootstrap: Connect to ipv4#10.0.0.1:9092 failed: "
    "Connection refused (after {}ms in state CONNECT)"
)


def test_a_repeated_line_is_admitted_once_per_interval_with_the_count_left_out() -> None:
    clock = Clock()
    f = RepeatFilter(30, clock)
    assert f.admit("a") == 0
    assert [f.admit("a") for _ in range(5)] == [None] * 5
    assert f.admit("b") == 0  # another line is not held back by the first
    clock.now += 30
    assert f.admit("a") == 5


@pytest.mark.parametrize(
    ("python_level", "ours"),
    [(50, "error"), (40, "error"), (30, "warning"), (20, "info"), (10, "debug")],
)
def test_librdkafka_levels_map_to_ours(python_level: int, ours: str) -> None:
    assert our_level(python_level) == ours


def test_client_log_writes_structured_events_and_folds_repeats() -> None:
    clock = Clock()
    logger = KafkaClientLog(30, clock=clock)
    with capture_logs() as logs:
        for ms in (0, 3, 7):  # the same failure: only its duration differs
            logger.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#consumer-1", FAIL.format(ms))
        logger.log(logging.WARNING, "%s [%s] %s", "CONFWARN", "rdkafka#consumer-1", "odd")
        clock.now += 31
        logger.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#consumer-1", FAIL.format(1))
    assert [(e["event"], e["log_level"], e["facility"]) for e in logs] == [
        ("librdkafka", "error", "FAIL"),
        ("librdkafka", "warning", "CONFWARN"),
        ("librdkafka", "error", "FAIL"),
    ]
    assert logs[0]["client"] == "rdkafka#consumer-1"
    assert "repeats_suppressed" not in logs[0]
    assert logs[2]["repeats_suppressed"] == 2


def test_client_logging_sets_librdkafkas_level_unless_the_user_did() -> None:
    assert client_logging("warning", {})["log_level"] == 4
    assert client_logging("debug", {})["log_level"] == 7
    props = client_logging("info", {"log_level": 7})
    assert "log_level" not in props
    assert isinstance(props["logger"], KafkaClientLog)


def _err(code: int, text: str = "down") -> KafkaError:
    return KafkaError(code, text)


def test_brokers_unreachable_is_one_line_repeated_slowly_and_cleared_by_an_answer() -> None:
    clock = Clock()
    watch = BrokerWatch("b1:9092,b2:9092", 30, clock)
    with capture_logs() as logs:
        for _ in range(50):
            assert watch.on_error(_err(KafkaError._TRANSPORT, "Connect to b1 failed"))
        assert watch.on_error(_err(KafkaError._ALL_BROKERS_DOWN, "2/2 brokers are down"))
        clock.now += 30
        watch.on_error(_err(KafkaError._TRANSPORT))
        assert watch.problem == "Kafka brokers unreachable: b1:9092,b2:9092"
        watch.up()
        assert watch.problem is None
    events = [e["event"] for e in logs]
    assert events == [
        "kafka_brokers_unreachable",
        "kafka_brokers_unreachable",
        "kafka_brokers_reachable",
    ]
    assert logs[0]["message"] == "Kafka brokers unreachable: b1:9092,b2:9092"
    assert logs[0]["log_level"] == "error"
    assert logs[1]["failed_connections"] == 50  # the 49 left out since the first line, and one
    assert logs[1]["for_seconds"] == 30.0


def test_once_a_broker_answered_one_broker_failing_is_not_the_cluster_unreachable() -> None:
    watch = BrokerWatch("b1:9092,b2:9092", 30, Clock())
    watch.up()
    assert not watch.on_error(_err(KafkaError._TRANSPORT))  # the caller logs it as it is
    assert watch.problem is None
    assert watch.on_error(_err(KafkaError._ALL_BROKERS_DOWN))
    assert watch.problem is not None
    assert not watch.on_error(_err(KafkaError._MSG_TIMED_OUT))


def test_connection_failure_lines_are_left_to_the_unreachable_line_while_it_lasts() -> None:
    watch = BrokerWatch("b1:9092", 30, Clock())
    logger = KafkaClientLog(30, watch)
    with capture_logs() as logs:
        watch.on_error(_err(KafkaError._ALL_BROKERS_DOWN))
        logger.log(logging.ERROR, "%s [%s] %s", "FAIL", "c", FAIL.format(0))
        logger.log(logging.WARNING, "%s [%s] %s", "CONFWARN", "c", "still said")
    assert [e["event"] for e in logs] == ["kafka_brokers_unreachable", "librdkafka"]


def test_a_real_client_against_a_closed_port_writes_nothing_raw_to_stderr(
    capfd: pytest.CaptureFixture[str],
) -> None:
    watch = BrokerWatch("127.0.0.1:1", 30)
    conf = {"bootstrap.servers": "127.0.0.1:1", "group.id": "g", "error_cb": watch.on_error}
    with capture_logs() as logs:
        consumer = Consumer({**conf, **client_logging("info", {}, 30, watch)})
        consumer.subscribe(["t"])
        for _ in range(100):  # 20 s at most; librdkafka fails to connect within milliseconds
            if watch.problem is not None:
                break
            consumer.consume(10, 0.2)
        consumer.close()
    assert capfd.readouterr().err == ""
    assert any(e["event"] == "kafka_brokers_unreachable" for e in logs)


def test_the_dead_letter_producer_logs_through_structlog_too(
    capfd: pytest.CaptureFixture[str],
) -> None:
    raw = minimal_raw()
    raw["topics"][0]["dead_letter_topic"] = "users-dlq"
    settings = parse_settings(raw, base_dir=Path("."), environ={})
    router = BadInputRouter(settings, Metrics(), lambda error, code: None)
    assert router.writer is not None
    producer = router.writer._producer
    with capture_logs() as logs:
        for _ in range(100):  # the idempotent producer connects at once, and fails at once
            if any(e["event"] == "librdkafka" for e in logs):
                break
            producer.poll(0.2)
    producer.flush(0)
    assert capfd.readouterr().err == ""
    assert any(e["event"] == "librdkafka" and "127.0.0.1:1" in e["message"] for e in logs)
