"""Prometheus metrics for the connector, in a registry of its own, and the run's counts.

Every thing that happens is reported once, to one method here; that call feeds the Prometheus
series and the plain :class:`Counts` that the stop summary, the demo and the tests read (one path:
a count is never kept twice).

Each ``Metrics`` owns a ``CollectorRegistry`` (never the process-global one) so tests and tools can
build as many as they like. The run loop and the delivery lanes call the small typed methods below,
some of them once per record, so labelled children are bound once and cached in dicts: a hot call
is a dict lookup plus an increment. Label values are only ever topic names, partition numbers,
HTTP statuses, element types, stages, rule ids and fixed reasons: never keys, ids or contents.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from connector import __version__

PREFIX = "moengage_connector_"
ELEMENT_TYPES = ("customer", "device", "event")
RETRY_REASONS = ("throttled", "server_error", "timeout", "connection_error")
PartitionKey = tuple[str, int]

# Request bodies are bounded by max_request_bytes (100 kB documented, 128 KB hard): the buckets
# show how full batches get. Elements per request: 1 (linger with a trickle) up to thousands.
BODY_BYTES_BUCKETS = (1e3, 2e3, 5e3, 1e4, 2e4, 4e4, 6e4, 8e4, 9e4, 1e5, 110e3, 131072)
ELEMENTS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
COMMIT_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


_POLICY_COUNTS = {
    "truncate": "policy_truncated",
    "flatten": "policy_flattened",
    "stringify": "policy_stringified",
    "replace": "policy_replaced",
    "bad_input": "policy_bad_input",
    "allow": "policy_allowed",
}


def retry_reason(status: int, error_type: str | None = None) -> str:
    """The ``reason`` label of a retried answer: 429, no answer in time, no connection, or 5xx."""
    if status == 429:
        return "throttled"
    if status == 0:
        return "timeout" if error_type == "Timeout" else "connection_error"
    return "server_error"


@dataclass(slots=True)
class Counts:
    """The run's totals, as the ``connector_stopped`` line reports them."""

    records: int = 0  # read from Kafka
    elements: int = 0  # handed to delivery
    filtered: int = 0  # records a transform turned into no element
    bad_records: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    requests: int = 0  # answered, any status
    bytes_sent: int = 0
    elements_accepted: int = 0
    max_body_bytes: int = 0
    retries: int = 0
    throttled: int = 0
    requests_split: int = 0  # cut to fit the budget or its room, or divided after a 413/400
    coalesced_events: int = 0
    coalesced_updates: int = 0
    commits: int = 0
    # MoEngage's data-tracking policy applied before sending, by action (policy_total by rule).
    policy_truncated: int = 0
    policy_flattened: int = 0
    policy_stringified: int = 0
    policy_replaced: int = 0
    policy_bad_input: int = 0
    policy_allowed: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Metrics:
    """Every connector metric, named ``moengage_connector_*``, in ``self.registry``."""

    def __init__(self, *, process_metrics: bool = True) -> None:
        self.counts = Counts()
        reg = self.registry = CollectorRegistry(auto_describe=True)
        if process_metrics:  # CPU, memory and GC figures: what `make bench` sizes pods from
            ProcessCollector(registry=reg)
            PlatformCollector(registry=reg)
            GCCollector(registry=reg)
        p = PREFIX
        tp = ["topic", "partition"]
        self._records = Counter(
            f"{p}records_consumed_total", "Kafka records read, per partition.", tp, registry=reg
        )
        self._elements = Counter(
            f"{p}elements_accepted_total",
            "Elements MoEngage accepted with a 200, by element type.",
            ["type"],
            registry=reg,
        )
        self._requests = Counter(
            f"{p}requests_total",
            "Bulk Import requests answered, by HTTP status (0: timeout or connection error).",
            ["status"],
            registry=reg,
        )
        self._bytes_sent = Counter(
            f"{p}bytes_sent_total", "Request body bytes sent, retries included.", registry=reg
        )
        self._bytes_accepted = Counter(
            f"{p}bytes_accepted_total", "Request body bytes MoEngage accepted.", registry=reg
        )
        self._body_bytes = Histogram(
            f"{p}request_body_bytes",
            "Body size of each request sent (batch fill).",
            buckets=BODY_BYTES_BUCKETS,
            registry=reg,
        )
        self._body_elements = Histogram(
            f"{p}request_elements",
            "Elements in each request sent (batch fill).",
            buckets=ELEMENTS_BUCKETS,
            registry=reg,
        )
        self._retries = Counter(
            f"{p}retries_total",
            "Requests sent again, by reason: throttled, server_error, timeout, connection_error.",
            ["reason"],
            registry=reg,
        )
        self._dead_lettered = Counter(
            f"{p}dead_lettered_total",
            "Records written to a dead-letter topic, by source topic and failing stage.",
            ["topic", "stage"],
            registry=reg,
        )
        self._bad_records = Counter(
            f"{p}bad_records_total",
            "Records that broke a rule, by topic, stage and rule id.",
            ["topic", "stage", "rule"],
            registry=reg,
        )
        self._policy = Counter(
            f"{p}policy_total",
            "MoEngage data-tracking policy rules applied before sending, by rule id and action "
            "(truncate, flatten, stringify, replace, bad_input, allow).",
            ["rule", "action"],
            registry=reg,
        )
        self._lag = Gauge(
            f"{p}consumer_lag_records",
            "Records between the partition's high watermark and the consumer's position.",
            tp,
            registry=reg,
        )
        self._committed = Gauge(
            f"{p}committed_offset",
            "Last offset committed to Kafka, per partition.",
            tp,
            registry=reg,
        )
        self._commit_seconds = Histogram(
            f"{p}commit_latency_seconds",
            "Time taken by one synchronous offset commit.",
            buckets=COMMIT_SECONDS_BUCKETS,
            registry=reg,
        )
        self._tokens = Gauge(
            f"{p}ratelimit_available",
            "Users or events this instance may still spend in the current rate-limit window.",
            ["bucket"],
            registry=reg,
        )
        self._token_wait = Counter(
            f"{p}ratelimit_wait_seconds_total",
            "Seconds requests waited for the rate-limit budget.",
            registry=reg,
        )
        self._share = Gauge(
            f"{p}ratelimit_share",
            "This instance's share of the account budget (its partitions out of all).",
            registry=reg,
        )
        self._factor = Gauge(
            f"{p}ratelimit_factor",
            "Adaptive slow-down applied to the budget after 429s (1: none).",
            registry=reg,
        )
        self._split = Counter(
            f"{p}requests_split_total",
            "Requests cut in two before sending, by reason: budget (more than the budget holds), "
            "room (its first part fits the budget now), divided (MoEngage's 413, or its 400 "
            "bisected to the elements it refuses).",
            ["reason"],
            registry=reg,
        )
        self._coalesced = Counter(
            f"{p}coalesced_total",
            "Elements merged into a customer's previous element of the same request: events "
            "appended as actions, updates merged into one customer element.",
            ["kind"],
            registry=reg,
        )
        self._in_flight = Gauge(
            f"{p}requests_in_flight", "Requests awaiting an answer now.", registry=reg
        )
        self._buffered_records = Gauge(
            f"{p}buffered_records", "Records read but not yet delivered.", registry=reg
        )
        self._buffered_bytes = Gauge(
            f"{p}buffered_bytes", "Bytes of records read but not yet delivered.", registry=reg
        )
        self._paused = Gauge(
            f"{p}paused_partitions", "Partitions paused by backpressure.", registry=reg
        )
        self._ready = Gauge(
            f"{p}ready", "1 when the connector is ready (see /readyz), else 0.", registry=reg
        )
        self._catalogue = Gauge(
            f"{p}catalogue_names",
            "Names the account's catalogue holds, as the claims log says, per kind: "
            "user_attributes, events, event_attributes (the most any one event has).",
            ["kind"],
            registry=reg,
        )
        self._catalogue_cap = Gauge(
            f"{p}catalogue_cap", "The catalogue guard's cap per kind.", ["kind"], registry=reg
        )
        Info(f"{p}build", "Connector version.", registry=reg).info({"version": __version__})

        # Pre-bound children: the hot paths never call .labels() for a known label set.
        self._by_type = {t: self._elements.labels(type=t) for t in ELEMENT_TYPES}
        self._by_reason = {r: self._retries.labels(reason=r) for r in RETRY_REASONS}
        self._by_status: dict[int, Counter] = {}
        self._consumed: dict[PartitionKey, Counter] = {}
        self._lags: dict[PartitionKey, Gauge] = {}
        self._offsets: dict[PartitionKey, Gauge] = {}
        self._bad: dict[tuple[str, str, str], Counter] = {}
        self._dlq: dict[tuple[str, str], Counter] = {}
        self._policies: dict[tuple[str, str], Counter] = {}
        # Made at the first report: an unlimited bucket has no series (not a 0 an alert reads
        # as "budget exhausted").
        self._buckets: dict[str, Gauge] = {}
        self._merged = {k: self._coalesced.labels(kind=k) for k in ("events", "updates")}
        self._merged_seen = {"events": 0, "updates": 0}

    # ----- consuming ----------------------------------------------------------------------------

    def record_consumed(self, topic: str, partition: int, count: int = 1) -> None:
        self.counts.records += count
        child = self._consumed.get((topic, partition))
        if child is None:
            child = self._records.labels(topic=topic, partition=str(partition))
            self._consumed[(topic, partition)] = child
        child.inc(count)

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        child = self._lags.get((topic, partition))
        if child is None:
            child = self._lags[(topic, partition)] = self._lag.labels(topic, str(partition))
        child.set(max(0, lag))

    def committed(self, offsets: Mapping[PartitionKey, int], seconds: float) -> None:
        """One synchronous commit took ``seconds`` and confirmed these next-offsets."""
        self.counts.commits += 1
        self._commit_seconds.observe(seconds)
        for key, offset in offsets.items():
            child = self._offsets.get(key)
            if child is None:
                child = self._offsets[key] = self._committed.labels(key[0], str(key[1]))
            child.set(offset)

    def forget_partitions(self, keys: Iterable[PartitionKey]) -> None:
        """Drop the lag and offset gauges of partitions this instance no longer owns (their new
        owner reports them); counters stay, as Prometheus expects of counters."""
        for key in keys:
            for cache, family in ((self._lags, self._lag), (self._offsets, self._committed)):
                if cache.pop(key, None) is not None:
                    family.remove(key[0], str(key[1]))

    def set_buffer(self, records: int, size_bytes: int, paused: int) -> None:
        self._buffered_records.set(records)
        self._buffered_bytes.set(size_bytes)
        self._paused.set(paused)

    def prepared(self, elements: int, filtered: int) -> None:
        """Records became ``elements`` elements for delivery; ``filtered`` of them none."""
        counts = self.counts
        counts.elements += elements
        counts.filtered += filtered

    # ----- bad input ----------------------------------------------------------------------------

    def bad_record(self, topic: str, stage: str, rule: str) -> None:
        self.counts.bad_records += 1
        key = (topic, stage, rule)
        child = self._bad.get(key)
        if child is None:
            child = self._bad[key] = self._bad_records.labels(topic, stage, rule)
        child.inc()

    def policy(self, rule: str, action: str) -> None:
        """A data-policy rule applied to one value or name (``policycheck``); under ``bad_input``
        the record is then routed as bad input and counted there too."""
        field = _POLICY_COUNTS.get(action)
        if field is not None:
            setattr(self.counts, field, getattr(self.counts, field) + 1)
        key = (rule, action)
        child = self._policies.get(key)
        if child is None:
            child = self._policies[key] = self._policy.labels(rule, action)
        child.inc()

    def skipped(self) -> None:
        """A bad record skipped by its topic's policy (its ``bad_records_total`` says which)."""
        self.counts.skipped += 1

    def dead_lettered(self, topic: str, stage: str) -> None:
        self.counts.dead_lettered += 1
        key = (topic, stage)
        child = self._dlq.get(key)
        if child is None:
            child = self._dlq[key] = self._dead_lettered.labels(topic, stage)
        child.inc()

    # ----- sending ------------------------------------------------------------------------------

    def request_done(
        self,
        status: int,
        body_bytes: int,
        elements: int,
        accepted_by_type: Mapping[str, int],
    ) -> None:
        """One answered request (any status); ``accepted_by_type`` is empty unless it was a 200."""
        counts = self.counts
        counts.requests += 1
        counts.bytes_sent += body_bytes
        counts.max_body_bytes = max(counts.max_body_bytes, body_bytes)
        counts.elements_accepted += sum(accepted_by_type.values())
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = self._requests.labels(status=str(status))
        child.inc()
        self._bytes_sent.inc(body_bytes)
        self._body_bytes.observe(body_bytes)
        self._body_elements.observe(elements)
        if 200 <= status < 300:
            self._bytes_accepted.inc(body_bytes)
            for kind, count in accepted_by_type.items():
                by_type = self._by_type.get(kind)
                if by_type is None:  # not a documented type: validation should have stopped it
                    by_type = self._by_type[kind] = self._elements.labels(type=kind)
                by_type.inc(count)

    def coalesced(self, events: int, updates: int) -> None:
        """The batchers' running totals of merged events and updates (counted where they merge,
        without a metrics call per element); the counter moves by what is new since last time."""
        for kind, total in (("events", events), ("updates", updates)):
            new = total - self._merged_seen[kind]
            setattr(self.counts, f"coalesced_{kind}", total)
            if new > 0:
                self._merged[kind].inc(new)
                self._merged_seen[kind] = total

    def split(self, reason: str) -> None:
        """A request cut in two before sending (``budget``, ``room`` or ``divided``)."""
        self.counts.requests_split += 1
        self._split.labels(reason=reason).inc()

    def retry(self, reason: str) -> None:
        self.counts.retries += 1
        self.counts.throttled += reason == "throttled"
        child = self._by_reason.get(reason)
        if child is None:
            child = self._by_reason[reason] = self._retries.labels(reason=reason)
        child.inc()

    def set_in_flight(self, n: int) -> None:
        self._in_flight.set(n)

    def tokens(self, users: float | None, events: float | None) -> None:
        """Budget left in the window, per bucket; an unlimited one (None) is not reported."""
        for bucket, left in (("users", users), ("events", events)):
            if left is None:
                continue
            child = self._buckets.get(bucket)
            if child is None:
                child = self._buckets[bucket] = self._tokens.labels(bucket=bucket)
            child.set(left)

    def budget_shape(self, share: float, factor: float) -> None:
        """The group share and the adaptive factor that scale the configured budget."""
        self._share.set(share)
        self._factor.set(factor)

    def waited_for_tokens(self, seconds: float) -> None:
        if seconds > 0:
            self._token_wait.inc(seconds)

    # ----- health -------------------------------------------------------------------------------

    def catalogue_size(self, sizes: Mapping[str, int], caps: Mapping[str, int]) -> None:
        """The catalogue guard's view of the account (kinds are fixed names, never names)."""
        for kind, n in sizes.items():
            self._catalogue.labels(kind=kind).set(n)
        for kind, n in caps.items():
            self._catalogue_cap.labels(kind=kind).set(n)

    def set_ready(self, ready: bool) -> None:
        self._ready.set(1 if ready else 0)
