"""librdkafka's own log and its connection errors, as structured events.

Every confluent-kafka client the connector makes (the consumer, the dead-letter producer, the
preview consumer, the ``validate --online`` probe) gets a :class:`KafkaClientLog` as its
``logger`` and a ``log_level`` matching the connector's: nothing librdkafka says reaches stderr
raw. librdkafka's syslog levels map onto ours: 0-3 error, 4 warning, 5-6 info, 7 debug (its
``debug`` contexts, set through ``kafka.debug``, show at ``logging.level: debug``). A repeated
line (the same facility and text, durations in it aside) is written at most once per
``logging.repeat_interval_seconds``, with the count of the repeats left out.

:class:`BrokerWatch` turns "cannot connect" into one clear line, ``Kafka brokers unreachable:
<bootstrap list>``, written when the cluster is first found out of reach and again at most once
per interval while it stays so; ``/readyz`` shows the same words. It enters that state on
librdkafka's "all brokers are down" error (or on any connection error before a broker was ever
reached) and leaves it at the first sign of a broker answering (metadata, an assignment,
messages).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

import structlog
from confluent_kafka import KafkaError

from connector.config import Settings, log_level

log = structlog.get_logger("connector.librdkafka")

Clock = Callable[[], float]

# Our level -> librdkafka's ``log_level`` (syslog), so it does not format what we would drop.
SYSLOG_LEVEL = {"debug": 7, "info": 6, "warning": 4, "error": 3}
DEFAULT_REPEAT_SECONDS = 30.0
_MAX_KEYS = 512  # distinct lines remembered; past this the oldest half is forgotten
_DURATION = re.compile(r"\d+(?:\.\d+)?\s?(?:ms|s)\b")
_UNREACHABLE = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE})
# Facilities of the per-connection failure lines that the "unreachable" line replaces.
_CONNECTION_FACILITIES = frozenset({"FAIL", "ERROR", "BROKERFAIL", "CONNECT"})


class RepeatFilter:
    """Admits a line at most once per ``interval`` seconds per key, counting the rest."""

    def __init__(self, interval: float, clock: Clock = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._seen: dict[Hashable, tuple[float, int]] = {}
        self._lock = threading.Lock()  # clients log from their own threads

    def admit(self, key: Hashable) -> int | None:
        """None: suppress this line. Otherwise write it, with the returned count of repeats
        suppressed since it was last written."""
        now = self._clock()
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last[0] < self.interval:
                self._seen[key] = (last[0], last[1] + 1)
                return None
            if last is None and len(self._seen) >= _MAX_KEYS:
                for old in list(self._seen)[: _MAX_KEYS // 2]:
                    del self._seen[old]
            self._seen[key] = (now, 0)
            return 0 if last is None else last[1]


def our_level(python_level: int) -> str:
    """confluent-kafka hands librdkafka's syslog level over as a Python level
    (0-2 CRITICAL, 3 ERROR, 4 WARNING, 5-6 INFO, 7 DEBUG): ours is the nearest below."""
    if python_level >= logging.ERROR:
        return "error"
    if python_level >= logging.WARNING:
        return "warning"
    if python_level >= logging.INFO:
        return "info"
    return "debug"


class BrokerWatch:
    """Whether the cluster is out of reach, and the one line that says so (see module doc).

    Called from the Kafka thread (errors, log lines) and read from the event loop (``problem``):
    plain attribute writes, each whole under the GIL."""

    def __init__(
        self,
        bootstrap: str,
        interval: float = DEFAULT_REPEAT_SECONDS,
        clock: Clock = time.monotonic,
    ) -> None:
        self.bootstrap = bootstrap
        self.interval = interval
        self._clock = clock
        self._lines = RepeatFilter(interval, clock)
        self.down_since: float | None = None
        self.reached = False
        self.failures = 0  # connection failures since the last line
        self.last_error: str | None = None

    @property
    def problem(self) -> str | None:
        """What ``/readyz`` says while the cluster is out of reach; None otherwise."""
        return None if self.down_since is None else f"Kafka brokers unreachable: {self.bootstrap}"

    def on_error(self, err: KafkaError) -> bool:
        """Take an error from the client's ``error_cb``; True if it was a connection failure
        this watch accounts for (the caller logs nothing more for it)."""
        code = err.code()
        if code not in _UNREACHABLE:
            return False
        if self.down_since is None:
            if code != KafkaError._ALL_BROKERS_DOWN and self.reached:
                return False  # one broker of a live cluster: the caller's own line says so
            self.down_since = self._clock()
        if code != KafkaError._ALL_BROKERS_DOWN:
            self.failures += 1
            self.last_error = err.str()
        self._say()
        return True

    def swallows(self, facility: str, python_level: int) -> bool:
        """Whether a librdkafka log line is a connection failure the unreachable line stands
        for (counted, not written) while the cluster is out of reach."""
        if self.down_since is None or python_level < logging.WARNING:
            return False
        return facility in _CONNECTION_FACILITIES

    def up(self) -> None:
        """A broker answered: the cluster is reachable (again)."""
        self.reached = True
        if self.down_since is not None:
            log.info(
                "kafka_brokers_reachable",
                bootstrap=self.bootstrap,
                after_seconds=round(self._clock() - self.down_since, 1),
            )
            self.down_since = None
            self.failures = 0

    def _say(self) -> None:
        if self._lines.admit("unreachable") is None:
            return
        assert self.down_since is not None
        log.error(
            "kafka_brokers_unreachable",
            message=self.problem,
            bootstrap=self.bootstrap,
            for_seconds=round(self._clock() - self.down_since, 1),
            failed_connections=self.failures,
            last_error=self.last_error,
        )
        self.failures = 0


class KafkaClientLog(logging.Logger):
    """The ``logger`` of a confluent-kafka client: its lines become structlog events named
    ``librdkafka``, rate-limited, at our level for its syslog level. confluent-kafka calls
    ``log(level, "%s [%s] %s", facility, client_name, text)``."""

    def __init__(
        self,
        interval: float = DEFAULT_REPEAT_SECONDS,
        watch: BrokerWatch | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__("connector.librdkafka")
        self._repeats = RepeatFilter(interval, clock)
        self._watch = watch

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if len(args) == 3:
            facility, client, text = (str(a) for a in args)
        else:
            facility, client, text = "", "", (str(msg) % args if args else str(msg))
        if self._watch is not None and self._watch.swallows(facility, level):
            return
        suppressed = self._repeats.admit((facility, _DURATION.sub("#", text)))
        if suppressed is None:
            return
        fields: dict[str, Any] = {"client": client, "facility": facility, "message": text}
        if suppressed:
            fields["repeats_suppressed"] = suppressed
        getattr(log, our_level(level))("librdkafka", **fields)


def client_logging(
    level: str,
    user: dict[str, Any],
    interval: float = DEFAULT_REPEAT_SECONDS,
    watch: BrokerWatch | None = None,
) -> dict[str, Any]:
    """The properties that route a client's log through structlog at ``level`` (debug, info,
    warning, error): ``logger`` always, ``log_level`` unless the user set it in ``user``."""
    props: dict[str, Any] = {"logger": KafkaClientLog(interval, watch)}
    if "log_level" not in user:
        props["log_level"] = SYSLOG_LEVEL.get(level, 6)
    return props


def kafka_logging(settings: Settings, watch: BrokerWatch | None = None) -> dict[str, Any]:
    """:func:`client_logging` at the connector's level and repeat interval."""
    return client_logging(
        log_level(settings), settings.kafka, settings.logging.repeat_interval_seconds, watch
    )
