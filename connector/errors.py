"""The connector's exceptions, rooted at one class so callers can catch everything we raise.

    ConnectorError
    ├── ConfigError                  configuration is unreadable or invalid (key paths listed)
    ├── BadRecordError               one record can never be delivered as it is (bad input)
    │   ├── DecodeError              bytes are not what the topic's format says (stage "decode")
    │   ├── TransformError           the transform raised or returned junk (stage "transform")
    │   ├── ValidationError          an element breaks a documented MoEngage rule ("validate")
    │   ├── PolicyError              MoEngage would drop it: data-tracking policy, caps ("policy")
    │   └── RejectedByApiError       MoEngage answered 400 for this record's element alone ("send")
    ├── FatalApiError                401/403/409/415: retrying cannot help; an operator must act
    └── SchemaRegistryError          a schema could not be fetched (retriable)
        └── SchemaRegistryAuthError  the registry refused our credentials (401/403): stop

A ``BadRecordError`` carries the record's coordinates (topic, partition, offset) and the rule that
failed, and ``str()`` of it says all of that in one line. No exception here ever holds an API key,
an Authorization header or record contents.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes (the README's table)."""

    OK = 0
    UNEXPECTED = 1
    CONFIG = 2
    FATAL_API = 3
    BAD_RECORD = 4
    SCHEMA_REGISTRY = 5
    KAFKA = 6
    DEAD_LETTER = 7


class ConnectorError(Exception):
    """Root of every error the connector raises on purpose."""


class ConfigError(ConnectorError):
    """The configuration is invalid. ``problems`` lists ``(key_path, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        lines = [f"{path or '<root>'}: {msg}" for path, msg in problems]
        super().__init__("invalid configuration:\n  " + "\n  ".join(lines))


@dataclass(frozen=True, slots=True)
class RecordRef:
    """Where a record lives in Kafka: enough to find it again."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


class BadRecordError(ConnectorError):
    """A record that can never be delivered as it is. Routed per the topic's error policy."""

    stage = "unknown"

    def __init__(self, message: str, *, rule: str, ref: RecordRef | None = None) -> None:
        self.message = message
        self.rule = rule
        self.ref = ref
        # More dead-letter headers, (name, text): what the rule found (never record contents).
        self.details: tuple[tuple[str, str], ...] = ()
        super().__init__(message)

    def at(self, ref: RecordRef) -> BadRecordError:
        """Attach the record's coordinates (errors are raised deep down, located higher up)."""
        self.ref = ref
        return self

    def __str__(self) -> str:
        where = f"record {self.ref}" if self.ref else "record"
        return f"{where} failed at {self.stage} ({self.rule}): {self.message}"


class DecodeError(BadRecordError):
    stage = "decode"


class TransformError(BadRecordError):
    stage = "transform"


class ValidationError(BadRecordError):
    stage = "validate"


class PolicyError(BadRecordError):
    """MoEngage would accept the request with a 200 and then drop or cut this element's data
    (its data-tracking policy; the account's catalogue caps)."""

    stage = "policy"


class RejectedByApiError(BadRecordError):
    stage = "send"


_MAX_CAUSE_TEXT = 200  # exception text can quote record contents: keep it short


def unexpected(
    kind: type[BadRecordError], rule: str, where: str, cause: BaseException
) -> BadRecordError:
    """Bad input from an exception nobody anticipated while handling one record: the record is
    routed like any other bad input instead of crashing the connector (and every partition with
    it). The message names the exception's class and the start of its text."""
    text = str(cause)
    if len(text) > _MAX_CAUSE_TEXT:
        text = text[: _MAX_CAUSE_TEXT - 3] + "..."
    return kind(f"{where} raised {type(cause).__name__}: {text}", rule=rule)


class FatalApiError(ConnectorError):
    """MoEngage refused the connector itself (credentials, account, media type): stop."""

    def __init__(self, status: int, error_type: str, message: str, hint: str) -> None:
        self.status = status
        self.error_type = error_type
        self.api_message = message
        self.hint = hint
        super().__init__(f"MoEngage answered {status} {error_type}: {message}. {hint}")


class SchemaRegistryError(ConnectorError):
    """The Schema Registry could not be reached or answered with an error (retried)."""


class SchemaRegistryAuthError(SchemaRegistryError):
    """The Schema Registry refused the connector's credentials: retrying (or restarting) sends
    the same wrong credentials again, so the connector stops and says which key to fix."""
