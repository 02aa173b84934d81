"""The pieces of the pipeline that need no running loop: exit codes, counters, how a Kafka
message becomes a :class:`Record`, what an element costs, and building every topic's decoder and
transform from the settings (also used by ``validate`` and ``preview``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, cast

from confluent_kafka import Message

from connector.batching import Cost
from connector.config import Settings
from connector.elements import Element, ElementValidator
from connector.errors import ConfigError
from connector.offsets import TopicPartitionKey
from connector.proof.delivered import DeliveredLog
from connector.source.decoding import Decoder, SchemaLookup, make_decoder
from connector.transforms import Record, identifier_keys, load_transform


class ExitCode(IntEnum):
    """Process exit codes (documented in the README)."""

    OK = 0
    UNEXPECTED = 1
    CONFIG = 2
    FATAL_API = 3
    BAD_RECORD = 4
    SCHEMA_REGISTRY = 5
    KAFKA = 6
    DEAD_LETTER = 7


@dataclass(slots=True)
class RunStats:
    records: int = 0
    elements: int = 0
    filtered: int = 0
    bad_records: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    commits: int = 0
    committed: dict[TopicPartitionKey, int] = field(default_factory=dict)


@dataclass(slots=True)
class TopicPipeline:
    """Everything needed to turn one topic's messages into elements."""

    decoder: Decoder
    transform: Callable[[Record], list[Element]]


def message_coordinates(msg: Message) -> tuple[str, int, int]:
    """Topic, partition, offset of a consumed (non-error) message, which always has all three."""
    return msg.topic(), msg.partition(), msg.offset()  # type: ignore[return-value]


def record_from_message(msg: Message, value: Any) -> Record:
    """The transform's view of a consumed (non-error) message (once per record: positional
    arguments, no casts)."""
    ts_type, ts = msg.timestamp()
    headers = msg.headers()
    return Record(
        msg.topic(),  # type: ignore[arg-type]
        msg.partition(),  # type: ignore[arg-type]
        msg.offset(),  # type: ignore[arg-type]
        msg.key(),
        value,
        tuple(cast(list[tuple[str, bytes | None]], headers)) if headers else (),
        ts if ts_type else None,
    )


# Costs are immutable: the common ones are shared instead of built per element.
_ONE_USER = Cost(users=1)
_EVENT_COSTS = tuple(Cost(events=n) for n in range(33))


def element_cost(element: Element, device_users: int = 1) -> Cost:
    """Users/events an element spends: customer = 1 user, device = configurable, event = actions."""
    kind = element.get("type")
    if kind == "event":
        n = len(element.get("actions") or ())
        return _EVENT_COSTS[n] if n < len(_EVENT_COSTS) else Cost(events=n)
    if kind == "device" and device_users != 1:
        return Cost(users=device_users)
    return _ONE_USER


def build_pipelines(settings: Settings) -> dict[str, TopicPipeline]:
    """Decoders and transforms for every topic; raises ConfigError naming the key path."""
    registry = SchemaLookup(settings.schema_registry) if settings.schema_registry else None
    pipes = {}
    problems: list[tuple[str, str]] = []
    for i, topic in enumerate(settings.topics):
        try:
            decoder = make_decoder(topic, settings, registry, key_path=f"topics[{i}].schema")
        except ConfigError as e:
            problems.extend(e.problems)
        try:
            transform = load_transform(topic.transform, key_path=f"topics[{i}].transform")
        except ConfigError as e:
            problems.extend(e.problems)
        if not problems:
            pipes[topic.name] = TopicPipeline(decoder, transform)
    if problems:
        raise ConfigError(problems)
    return pipes


def build_validator(settings: Settings) -> ElementValidator:
    keys = frozenset(settings.validation.identifier_keys)
    for topic in settings.topics:
        keys |= identifier_keys(topic.transform)
    return ElementValidator(settings.validation, keys)


def open_delivered_log(settings: Settings) -> DeliveredLog | None:
    """The record of delivered customers for 'verify', if configured; a path that cannot be
    opened is a configuration error (found at start, not at the first delivery)."""
    o = settings.observability
    if o.delivered_log_path is None:
        return None
    try:
        return DeliveredLog(o.delivered_log_path, o.delivered_log_max)
    except OSError as e:
        problem = f"cannot open {o.delivered_log_path}: {e.strerror or e}"
        raise ConfigError([("observability.delivered_log_path", problem)]) from None
