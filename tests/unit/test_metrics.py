"""Prometheus metrics: own registry, documented names, cheap pre-bound children."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from connector import __version__
from connector.observability.metrics import PREFIX, Metrics, retry_reason


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(PREFIX + name, labels)


@pytest.fixture
def m() -> Metrics:
    return Metrics(process_metrics=False)


def test_each_instance_has_its_own_registry() -> None:
    first, second = Metrics(process_metrics=False), Metrics(process_metrics=False)
    first.record_consumed("t", 0)
    assert value(second, "records_consumed_total", topic="t", partition="0") is None


def test_every_metric_is_prefixed_and_documented(m: Metrics) -> None:
    families = list(m.registry.collect())
    assert len(families) >= 20
    for family in families:
        assert family.name.startswith(PREFIX), family.name
        assert family.documentation.strip(), family.name


def test_process_metrics_are_included_by_default() -> None:
    names = {f.name for f in Metrics().registry.collect()}
    assert "python_gc_objects_collected" in names


def test_exposition_parses_as_prometheus_text(m: Metrics) -> None:
    m.request_done(200, 1000, 3, {"customer": 3})
    text = generate_latest(m.registry).decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert f"{PREFIX}requests" in names


def test_records_consumed_are_counted_per_partition(m: Metrics) -> None:
    m.record_consumed("users", 0)
    m.record_consumed("users", 0)
    m.record_consumed("users", 1, count=5)
    assert value(m, "records_consumed_total", topic="users", partition="0") == 2
    assert value(m, "records_consumed_total", topic="users", partition="1") == 5


def test_hot_path_reuses_bound_children(m: Metrics, monkeypatch: pytest.MonkeyPatch) -> None:
    m.record_consumed("users", 0)

    def no_labels(*_: object, **__: object) -> None:
        raise AssertionError("labels() called on the hot path")

    monkeypatch.setattr(m._records, "labels", no_labels)
    m.record_consumed("users", 0)
    assert value(m, "records_consumed_total", topic="users", partition="0") == 2


def test_accepted_request_counts_status_bytes_and_elements_by_type(m: Metrics) -> None:
    m.request_done(200, 5000, 4, {"customer": 1, "event": 3})
    assert value(m, "requests_total", status="200") == 1
    assert value(m, "bytes_sent_total") == 5000
    assert value(m, "bytes_accepted_total") == 5000
    assert value(m, "elements_accepted_total", type="customer") == 1
    assert value(m, "elements_accepted_total", type="event") == 3
    assert value(m, "elements_accepted_total", type="device") == 0


def test_failed_request_counts_bytes_sent_but_nothing_accepted(m: Metrics) -> None:
    m.request_done(503, 5000, 4, {})
    assert value(m, "requests_total", status="503") == 1
    assert value(m, "bytes_sent_total") == 5000
    assert value(m, "bytes_accepted_total") == 0


def test_timeout_is_counted_under_status_zero(m: Metrics) -> None:
    m.request_done(0, 100, 1, {})
    assert value(m, "requests_total", status="0") == 1


def test_batch_fill_histograms_observe_every_request(m: Metrics) -> None:
    m.request_done(200, 90_000, 300, {"event": 300})
    m.request_done(429, 10_000, 20, {})
    assert value(m, "request_body_bytes_count") == 2
    assert value(m, "request_body_bytes_sum") == 100_000
    assert value(m, "request_elements_sum") == 320
    assert value(m, "request_elements_bucket", le="20.0") == 1


@pytest.mark.parametrize(
    ("status", "error_type", "reason"),
    [
        (429, None, "throttled"),
        (503, "Server Error", "server_error"),
        (408, None, "server_error"),
        (0, "Timeout", "timeout"),
        (0, "ClientConnectorError", "connection_error"),
    ],
)
def test_retry_reason_names_the_cause(status: int, error_type: str | None, reason: str) -> None:
    assert retry_reason(status, error_type) == reason


def test_retries_are_counted_by_reason(m: Metrics) -> None:
    m.retry("throttled")
    m.retry("throttled")
    m.retry("timeout")
    assert value(m, "retries_total", reason="throttled") == 2
    assert value(m, "retries_total", reason="timeout") == 1
    assert value(m, "retries_total", reason="server_error") == 0


def test_commit_sets_offsets_and_observes_latency(m: Metrics) -> None:
    m.committed({("users", 0): 42, ("users", 1): 7}, 0.02)
    assert value(m, "committed_offset", topic="users", partition="0") == 42
    assert value(m, "committed_offset", topic="users", partition="1") == 7
    assert value(m, "commit_latency_seconds_count") == 1
    assert value(m, "commit_latency_seconds_sum") == pytest.approx(0.02)


def test_lag_is_set_per_partition_and_never_negative(m: Metrics) -> None:
    m.set_lag("users", 0, 120)
    m.set_lag("users", 1, -1)
    assert value(m, "consumer_lag_records", topic="users", partition="0") == 120
    assert value(m, "consumer_lag_records", topic="users", partition="1") == 0


def test_forgotten_partitions_drop_their_gauges_but_keep_counters(m: Metrics) -> None:
    m.record_consumed("users", 0)
    m.set_lag("users", 0, 5)
    m.committed({("users", 0): 3}, 0.01)
    m.forget_partitions([("users", 0), ("never-seen", 9)])
    assert value(m, "consumer_lag_records", topic="users", partition="0") is None
    assert value(m, "committed_offset", topic="users", partition="0") is None
    assert value(m, "records_consumed_total", topic="users", partition="0") == 1


def test_forgotten_partition_can_come_back(m: Metrics) -> None:
    m.set_lag("users", 0, 5)
    m.forget_partitions([("users", 0)])
    m.set_lag("users", 0, 8)
    assert value(m, "consumer_lag_records", topic="users", partition="0") == 8


def test_buffer_gauges(m: Metrics) -> None:
    m.set_buffer(records=10, size_bytes=2048, paused=3)
    assert value(m, "buffered_records") == 10
    assert value(m, "buffered_bytes") == 2048
    assert value(m, "paused_partitions") == 3


def test_in_flight_gauge(m: Metrics) -> None:
    m.set_in_flight(4)
    assert value(m, "requests_in_flight") == 4


def test_unlimited_token_bucket_is_not_reported(m: Metrics) -> None:
    """No series at all for an unlimited bucket: a 0 would read as "budget exhausted" to an
    alert (it did, with limits set to null)."""
    assert value(m, "ratelimit_available", bucket="users") is None  # nothing reported yet
    m.tokens(users=12.5, events=None)
    assert value(m, "ratelimit_available", bucket="users") == 12.5
    assert value(m, "ratelimit_available", bucket="events") is None


def test_budget_share_and_adaptive_factor(m: Metrics) -> None:
    m.budget_shape(share=0.25, factor=0.5)
    assert (value(m, "ratelimit_share"), value(m, "ratelimit_factor")) == (0.25, 0.5)


def test_waiting_for_tokens_accumulates_seconds(m: Metrics) -> None:
    m.waited_for_tokens(1.5)
    m.waited_for_tokens(0.0)
    m.waited_for_tokens(0.25)
    assert value(m, "ratelimit_wait_seconds_total") == 1.75


def test_bad_records_are_counted_by_topic_stage_and_rule(m: Metrics) -> None:
    m.bad_record("users", "validate", "customer_id.disallowed")
    m.bad_record("users", "validate", "customer_id.disallowed")
    labels = {"topic": "users", "stage": "validate", "rule": "customer_id.disallowed"}
    assert value(m, "bad_records_total", **labels) == 2


def test_dead_lettered_records_are_counted_by_topic_and_stage(m: Metrics) -> None:
    m.dead_lettered("users", "decode")
    assert value(m, "dead_lettered_total", topic="users", stage="decode") == 1


def test_readiness_gauge_is_one_when_ready(m: Metrics) -> None:
    m.set_ready(True)
    assert value(m, "ready") == 1


def test_readiness_gauge_is_zero_when_not_ready(m: Metrics) -> None:
    m.set_ready(True)
    m.set_ready(False)
    assert value(m, "ready") == 0


def test_build_info_carries_the_version(m: Metrics) -> None:
    assert value(m, "build_info", version=__version__) == 1


def test_coalescing_counts_only_what_is_new_since_the_last_report(m: Metrics) -> None:
    m.coalesced(events=5, updates=2)
    m.coalesced(events=5, updates=2)  # nothing new: the counters stay
    m.coalesced(events=12, updates=3)
    assert value(m, "coalesced_total", kind="events") == 12
    assert value(m, "coalesced_total", kind="updates") == 3
