"""The record processor: one Kafka message in, the elements it becomes out, ready to batch; or a
:class:`BadRecordError` that names topic, partition, offset, stage and rule.

Stages, in order: decode (the topic's format) → :class:`Record` → transform → validate → policy
(MoEngage's data-tracking policy, ``policycheck``) → encode
→ size (an element must fit a request alone) → cost → customer key. Any exception a stage raises
for one record is bad input for that record, never a crash of the connector. A Schema Registry
that cannot be reached is not bad input: it raises :class:`SchemaRegistryError` (retried by
:meth:`RecordProcessor.retry_registry`). One implementation serves ``run``, ``preview`` and the
benchmark.

A topic whose mapping makes one plain event per record (``PlainEvent``) has a one-pass preparer
(``_plain_event``) that goes from the decoded value to the prepared element when none of the
stages has anything to say; any doubt and the record takes the stages above, which decide.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from itertools import compress, repeat
from operator import is_
from typing import Any, Final, cast

import orjson
import structlog
from confluent_kafka import Message

from connector.batching import ENVELOPE_BYTES, Cost, ElementTooLarge, encode
from connector.config import Settings
from connector.elements import TIMEZONE_OFFSET_RANGE, Element, ElementValidator
from connector.errors import (
    BadRecordError,
    ConfigError,
    DecodeError,
    RecordRef,
    SchemaRegistryAuthError,
    SchemaRegistryError,
    ValidationError,
    unexpected,
)
from connector.eventtime import utc_seconds
from connector.policy import MAX_NAME_LENGTH
from connector.policycheck import Counter, Preflight, clean_values
from connector.source.decoding import Decoder, SchemaLookup, make_decoder
from connector.transforms import MappingCompiled, Record, identifier_keys, load_transform
from connector.transforms.mapping import PlainEvent

log = structlog.get_logger(__name__)

# One element, ready for a batch: its JSON, what it costs, the customer that orders it, and the
# element itself (coalescing reads it).
Prepared = tuple[bytes, Cost, str, Element]

# Schema Registry outage: waits before each retry (about 31 s in all), then the error stands.
REGISTRY_RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0)

# Costs are immutable: the common ones are shared instead of built per element.
_ONE_USER = Cost(users=1)
_EVENT_COSTS = tuple(Cost(events=n) for n in range(33))
_N_EVENT_COSTS = len(_EVENT_COSTS)
_dumps = orjson.dumps
_new_tuple = tuple.__new__


def element_cost(element: Element, device_users: int = 1) -> Cost:
    """Users/events an element spends: customer = 1 user, device = configurable, event = actions."""
    kind = element.get("type")
    if kind == "event":
        n = len(element.get("actions") or ())
        return _EVENT_COSTS[n] if n < len(_EVENT_COSTS) else Cost(events=n)
    if kind == "device" and device_users != 1:
        return Cost(users=device_users)
    return _ONE_USER


def record_from_message(msg: Message, value: Any) -> Record:
    """The transform's view of a consumed (non-error) message."""
    return _record(msg, msg.topic(), msg.partition(), msg.offset(), value)  # type: ignore[arg-type]


def _record(msg: Message, topic: str, partition: int, offset: int, value: Any) -> Record:
    ts_type, ts = msg.timestamp()
    headers = msg.headers()
    # Record(...) without its generated Python __new__: the same tuple, one call fewer.
    return _new_tuple(
        Record,
        (
            topic,
            partition,
            offset,
            msg.key(),
            value,
            tuple(cast(list[tuple[str, bytes | None]], headers)) if headers else (),
            ts if ts_type else None,
        ),
    )


def message_ref(msg: Message) -> RecordRef:
    """Topic, partition, offset of a consumed (non-error) message, which always has all three."""
    return RecordRef(msg.topic(), msg.partition(), msg.offset())  # type: ignore[arg-type]


@dataclass(slots=True)
class TopicPipeline:
    """Everything needed to turn one topic's messages into elements."""

    decoder: Decoder
    transform: Callable[[Record], list[Element]]
    # The one-pass event of a plain mapping (see _plain_event): the prepared element, or None
    # when the record needs anything looked at closer (then the path from the transform on).
    fast: Callable[[Any], Prepared | None] | None = None


def schema_lookup(settings: Settings) -> SchemaLookup | None:
    """The Schema Registry lookup the ``confluent`` topics need (not yet opened: see
    SchemaLookup.open); None without such a topic or without ``schema_registry``."""
    if settings.schema_registry is None or not any(
        t.format == "confluent" for t in settings.topics
    ):
        return None
    return SchemaLookup(settings.schema_registry)


def build_pipelines(settings: Settings, registry: SchemaLookup | None) -> dict[str, TopicPipeline]:
    """Decoders and transforms for every topic (``registry``: :func:`schema_lookup`'s); raises
    ConfigError naming every key to fix."""
    pipes = {}
    problems: list[tuple[str, str]] = []
    for i, topic in enumerate(settings.topics):
        try:
            decoder = make_decoder(topic, settings, registry, key_path=f"topics[{i}].schema")
        except ConfigError as e:
            problems.extend(e.problems)
        try:
            transform = load_transform(
                topic.transform, key_path=f"topics[{i}].transform", search_dir=settings.base_dir
            )
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


class RecordProcessor:
    """Turns messages into prepared elements, per topic, as the settings say."""

    def __init__(
        self,
        settings: Settings,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_policy: Counter | None = None,
    ) -> None:
        self._registry = schema_lookup(settings)
        self.pipelines = build_pipelines(settings, self._registry)
        self.validator = build_validator(settings)
        # MoEngage's data-tracking policy, after validation (see connector/policycheck.py).
        self._preflight = Preflight(
            settings.policy,
            list(self.pipelines),
            on_count=on_policy,
            revalidate=self.validator.validate,
        )
        self._device_cost = settings.moengage.device_cost
        self._max_request_bytes = settings.moengage.max_request_bytes
        self._max_element_bytes = settings.moengage.max_request_bytes - ENVELOPE_BYTES
        self._sleep = sleep
        for pipe in self.pipelines.values():
            transform = pipe.transform
            if type(transform) is MappingCompiled and transform.plain_event is not None:
                pipe.fast = _plain_event(
                    transform.plain_event,
                    self.validator,
                    self._preflight.short_names.known,
                    self._max_element_bytes,
                )

    def open(self) -> None:
        """Build the Schema Registry client, if a topic needs one (ConfigError on properties it
        refuses). Before the first record: ``run`` calls it while its group join is under way,
        ``validate``, ``preview`` and ``redrive`` at once."""
        if self._registry is not None:
            self._registry.open()

    def process(self, msg: Message) -> list[Prepared]:
        """The elements of one message (none: the transform filtered it out). Raises
        ``BadRecordError`` located at the message, or ``SchemaRegistryError``."""
        return self.prepare(msg, msg.topic(), msg.partition(), msg.offset(), msg.value())  # type: ignore[arg-type]

    def prepare(
        self, msg: Message, topic: str, partition: int, offset: int, raw: bytes | None
    ) -> list[Prepared]:
        """:meth:`process` for a caller that already read the message's coordinates and value
        (the run loop: each read of a ``Message`` field builds a new Python object)."""
        pipe = self.pipelines[topic]
        try:
            try:  # self._decode(pipe, raw), inline
                value = pipe.decoder(raw)
            except (BadRecordError, SchemaRegistryError):
                raise
            except Exception as e:  # no record may crash the connector: it is bad input
                raise unexpected(DecodeError, "decode.unexpected", "the decoder", e) from e
            fast = pipe.fast
            if fast is not None:
                try:
                    done = fast(value)
                except Exception:  # noqa: BLE001 -- the path below names the problem
                    done = None
                if done is not None:
                    return [done]
            record = _record(msg, topic, partition, offset, value)
            transform = pipe.transform
            if type(transform) is MappingCompiled and transform.single_kind == "event":
                return self._prepare_event(transform, record)  # _prepare's first step, inline
            return self._prepare(pipe, record)
        except BadRecordError as e:
            e.at(RecordRef(topic, partition, offset))
            raise

    async def retry_registry(self, msg: Message, error: SchemaRegistryError) -> list[Prepared]:
        """:meth:`process` again after ``error`` (the Schema Registry could not be reached):
        retried for about 31 s before the last error stands; refused credentials are not
        retried (the same ones would be refused again)."""
        pipe = self.pipelines[msg.topic()]  # type: ignore[index]
        for delay in REGISTRY_RETRY_DELAYS:
            if isinstance(error, SchemaRegistryAuthError):
                raise error
            log.warning("schema_registry_retry", error=str(error), delay_s=delay)
            await self._sleep(delay)
            ref = message_ref(msg)
            try:
                value = self._decode(pipe, msg.value())
                return self._prepare(
                    pipe, _record(msg, ref.topic, ref.partition, ref.offset, value)
                )
            except SchemaRegistryError as e:
                error = e
            except BadRecordError as e:
                e.at(message_ref(msg))
                raise
        raise error

    @staticmethod
    def _decode(pipe: TopicPipeline, raw: bytes | None) -> Any:
        try:
            return pipe.decoder(raw)
        except (BadRecordError, SchemaRegistryError):
            raise
        except Exception as e:  # no record may crash the connector: it is bad input
            raise unexpected(DecodeError, "decode.unexpected", "the decoder", e) from e

    def _prepare(self, pipe: TopicPipeline, record: Record) -> list[Prepared]:
        """Transform, validate, policy, encode, size, cost: each element is touched once per
        step. The common cases of ``encode``, ``element_cost`` and ``customer_key`` are done
        inline (the same results; anything else takes those functions)."""
        transform = pipe.transform
        if type(transform) is MappingCompiled and transform.single_kind == "event":
            return self._prepare_event(transform, record)
        validate = self.validator.validate
        police = self._preflight.checker(record.topic)
        limit = self._max_element_bytes
        out: list[Prepared] = []
        for produced in transform(record):
            try:
                element = validate(produced)
                police(element)
                try:
                    data: bytes | None = _dumps(element)
                except Exception:  # noqa: BLE001 -- encode() below names the problem
                    data = None
                # orjson writes NaN and ±Infinity as null: only then does encode() look closer.
                if data is None or data.find(b"null") >= 0:
                    data = encode(element)
                else:
                    data = bytes(memoryview(data))  # see encode(): not orjson's 4 KiB buffer
                if len(data) > limit:
                    too_large = ElementTooLarge(len(data), self._max_request_bytes)
                    raise ValidationError(str(too_large), rule="element.too_large")
                kind = element["type"]
                if kind == "event":
                    n = len(element["actions"])  # validated: a non-empty list
                    cost = _EVENT_COSTS[n] if n < _N_EVENT_COSTS else Cost(events=n)
                elif kind == "device" and self._device_cost != 1:
                    cost = Cost(users=self._device_cost)
                else:
                    cost = _ONE_USER
                customer = element.get("customer_id")
                if type(customer) is not str:
                    customer = self.validator.customer_key(element)
                out.append((data, cost, customer, element))
            except BadRecordError:
                raise
            except Exception as e:  # junk that slipped past the rules: bad input, never a crash
                raise unexpected(
                    ValidationError, "element.unexpected", "validating or encoding an element", e
                ) from e
        return out

    def _prepare_event(self, transform: MappingCompiled, record: Record) -> list[Prepared]:
        """:meth:`_prepare` for a topic whose mapping makes one event per record, in one pass:
        what the mapping guarantees is not checked again (``validate_mapped_event``), and the
        data-tracking policy is applied only when it has something to do (a long or dotted event
        name, attributes that are not all short plain values, identifiers), as
        ``Preflight``'s check decides it, with the element's JSON at hand (no string can be
        longer than the text that holds it). Then the event's floats are all in its attributes
        and finite, so orjson's output needs no search for the ``null`` of a NaN (``encode``)."""
        element = transform.one(record)
        try:
            element = self.validator.validate_mapped_event(element)
            action = element["actions"][0]
            name, attrs = action["action"], action["attributes"]
            try:
                data: bytes | None = _dumps(element)
            except Exception:  # noqa: BLE001 -- encode() names the problem
                data = None
            if (
                data is None
                or len(name) > MAX_NAME_LENGTH
                or "." in name
                or (attrs and not self._preflight.short_names.clean(attrs, data))
                or "user_identifiers" in element
            ):
                self._preflight.checker(record.topic)(element)
                data = encode(element)
            else:
                data = bytes(memoryview(data))  # see encode(): not orjson's 4 KiB buffer
            if len(data) > self._max_element_bytes:
                too_large = ElementTooLarge(len(data), self._max_request_bytes)
                raise ValidationError(str(too_large), rule="element.too_large")
            customer = element.get("customer_id")
            if type(customer) is not str:
                customer = self.validator.customer_key(element)
            return [(data, _EVENT_COSTS[1], customer, element)]
        except BadRecordError:
            raise
        except Exception as e:  # junk that slipped past the rules: bad input, never a crash
            raise unexpected(
                ValidationError, "element.unexpected", "validating or encoding an element", e
            ) from e


_MAX_PASSED: Final = 4096  # names remembered by a one-pass preparer; past it the set starts afresh


def _plain_event(
    shape: PlainEvent, validator: ElementValidator, short: set[str], max_element_bytes: int
) -> Callable[[Any], Prepared | None]:
    """The one-pass event of a plain mapping: from the decoded value straight to the prepared
    element, with no ``Record``, for a record that needs nothing but reading. The element is the
    mapping's own (same keys, order, values); it is returned only when validation, the data
    policy and the size check have nothing to say about it: a customer id that passes, an
    event name and attribute names that passed before (the validator's and the policy's sets),
    a known platform, an ``app_version`` string, an offset and a ``current_time`` in range,
    short plain values, an element that fits a request. On any doubt (a first-seen name, an
    unusual type, a value to correct, an exception) it returns None and the record takes the
    path that decides and names the problem. ``tests/unit/test_processing_fused.py`` holds it
    to that path's output, errors and policy counts."""
    passed = validator.passed()
    min_len, disallowed, good_actions, event_keys = (
        passed.min_len,
        passed.disallowed,
        passed.actions,
        passed.event_keys,
    )
    earliest, max_future, clock = passed.earliest, passed.max_future, passed.clock
    platforms = passed.platforms
    low, high = TIMEZONE_OFFSET_RANGE
    c_field, c_default = shape.customer
    device = shape.device
    d_field, d_default = device if device is not None else ("", None)
    a_field, a_default = shape.action
    copies, source, excluded, skip = shape.copies, shape.source, shape.excluded, shape.skip_nulls
    # The optional action fields, each read and checked in the order the element has them.
    read = dict(shape.optional)
    platform_f, version_f = read.get("platform"), read.get("app_version")
    time_f, offset_f = read.get("current_time"), read.get("user_timezone_offset")
    one_event = _EVENT_COSTS[1]
    names: set[str] = set()  # event names that passed validation and need no policy
    keys: set[str] = set()  # attribute names that passed validation and are short

    def prepare(value: Any) -> Prepared | None:
        if type(value) is not dict:
            return None
        get = value.get
        cid = get(c_field)
        if cid is None:
            cid = c_default
        if type(cid) is not str:
            if type(cid) is not int:
                return None
            cid = str(cid)
        stripped = cid.strip()
        if not cid.isprintable() or len(stripped) < min_len or stripped.lower() in disallowed:
            return None
        element: Element = {"type": "event", "customer_id": cid}
        if device is not None:
            device_id = get(d_field)
            if device_id is None:
                device_id = d_default
            if device_id is not None:
                if type(device_id) is int:
                    device_id = str(device_id)
                elif type(device_id) is not str or not device_id or not device_id.isprintable():
                    return None
                element["device_id"] = device_id
        name = get(a_field)
        if name is None:
            name = a_default
        if type(name) is not str:
            return None
        if name not in names:
            if name not in good_actions or "." in name or len(name) > MAX_NAME_LENGTH:
                return None
            if len(names) >= _MAX_PASSED:
                names.clear()
            names.add(name)
        if not copies:
            attrs: dict[str, Any] = {}
        else:
            src = get(source) if source is not None else value
            if src is None:
                attrs = {}
            elif type(src) is not dict:
                return None
            else:
                attrs = src.copy()
                if skip and None in src.values():
                    for k in compress(src, map(is_, src.values(), repeat(None))):
                        del attrs[k]
                for k in excluded:
                    attrs.pop(k, None)
                if not attrs.keys() <= keys:
                    if not (attrs.keys() <= event_keys and attrs.keys() <= short):
                        return None
                    if len(keys) >= _MAX_PASSED:
                        keys.clear()
                    keys.update(attrs)
        action: dict[str, Any] = {"action": name, "attributes": attrs}
        if platform_f is not None and (platform := get(platform_f)) is not None:
            platform = platforms.get(platform) if type(platform) is str else None
            if platform is None:
                return None
            action["platform"] = platform
        if version_f is not None and (version := get(version_f)) is not None:
            if type(version) is not str:
                return None
            action["app_version"] = version
        if time_f is not None and (at := get(time_f)) is not None:
            seconds = utc_seconds(at) if type(at) is str else None
            if seconds is None or not earliest <= seconds <= clock() + max_future:
                return None
            action["current_time"] = at
        if offset_f is not None and (offset := get(offset_f)) is not None:
            if type(offset) is not int or not low <= offset <= high:
                return None
            action["user_timezone_offset"] = offset
        element["actions"] = [action]
        data = _dumps(element)
        if len(data) > max_element_bytes or (attrs and not clean_values(attrs, data)):
            return None
        return (bytes(memoryview(data)), one_event, cid, element)

    return prepare
