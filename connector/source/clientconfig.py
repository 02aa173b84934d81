"""librdkafka's verdict on the ``kafka`` properties, before anything connects.

The consumer (and, with a dead-letter topic, the producer) is built from the effective properties
without ``bootstrap.servers``, so no broker is contacted, and closed at once: librdkafka rejects an
unknown property, a bad value or an unsupported SASL mechanism when a client is created. Each
rejected property is reported at its key path (``kafka.session.timeout.ms``), then left out and the
client built again, so one ``validate`` lists every bad property. It takes a few milliseconds.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from connector.config import SECRET_KEYS, Settings, secret_strings
from connector.deadletter import producer_config

# Properties that would make the client reach out (it does so lazily, but never give it the chance).
_NO_CONNECT = ("bootstrap.servers", "metadata.broker.list")
_MAX_ROUNDS = 20
# librdkafka names a property by its canonical name; the user may have written the alias.
_ALIASES = {
    "sasl.mechanism": "sasl.mechanisms",
    "sasl.mechanisms": "sasl.mechanism",
    "linger.ms": "queue.buffering.max.ms",
    "queue.buffering.max.ms": "linger.ms",
    "compression.type": "compression.codec",
    "compression.codec": "compression.type",
    "max.in.flight": "max.in.flight.requests.per.connection",
}
# For "did you mean": the properties a connector user is most likely to misspell.
_COMMON = (
    "bootstrap.servers",
    "group.id",
    "group.instance.id",
    "client.id",
    "client.rack",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "auto.offset.reset",
    "partition.assignment.strategy",
    "queued.max.messages.kbytes",
    "fetch.wait.max.ms",
    "fetch.min.bytes",
    "fetch.max.bytes",
    "max.partition.fetch.bytes",
    "isolation.level",
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "sasl.oauthbearer.method",
    "sasl.oauthbearer.client.id",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.token.endpoint.url",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
    "socket.timeout.ms",
    "socket.keepalive.enable",
    "reconnect.backoff.ms",
    "reconnect.backoff.max.ms",
    "statistics.interval.ms",
    "debug",
)
# What the confluent-kafka wheels' librdkafka supports (GSSAPI needs a build with libsasl2).
_MECHANISMS = "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER"
_NAMED = re.compile(
    r"""configuration property "([^"]+)"|for "([^"]+)"|["`]([a-z][a-z0-9_.-]*)["`]"""
)


class _Quiet(logging.Logger):
    """Swallows librdkafka's log lines: the check reports through its return value."""

    def __init__(self) -> None:
        super().__init__("connector.librdkafka_check")

    def log(self, *args: Any, **kwargs: Any) -> None:
        return None


def kafka_config_problems(settings: Settings) -> list[tuple[str, str]]:
    """``(key_path, message)`` for each ``kafka`` property librdkafka refuses, in the consumer
    and, when a topic has a dead-letter topic, in the dead-letter producer."""
    config = settings.librdkafka_config()
    secrets = sorted(secret_strings(config), key=len, reverse=True)
    problems = _problems(Consumer, config, settings.kafka, secrets, "")
    if any(t.dead_letter_topic for t in settings.topics):
        seen = {path for path, _ in problems}
        for path, msg in _problems(
            Producer, producer_config(config), settings.kafka, secrets, " (dead-letter producer)"
        ):
            if path not in seen:
                problems.append((path, msg))
    return problems


def _problems(
    factory: Callable[[dict[str, Any]], Any],
    config: Mapping[str, Any],
    user: Mapping[str, Any],
    secrets: list[str],
    where: str,
) -> list[tuple[str, str]]:
    conf = {k: v for k, v in config.items() if k not in _NO_CONNECT}
    found: list[tuple[str, str]] = []
    for _ in range(_MAX_ROUNDS):
        try:
            client = factory({**conf, "logger": _Quiet()})
        except KafkaException as e:
            err = e.args[0] if e.args else None
            text = err.str() if isinstance(err, KafkaError) else str(e)
        except (TypeError, ValueError) as e:  # confluent-kafka's own checks (callbacks, types)
            text = str(e)
        else:
            _close(client)
            break
        for prefix in ("Failed to create consumer: ", "Failed to create producer: "):
            text = text.removeprefix(prefix)
        name = _culprit(text, conf)
        if found and (name is None or name not in conf):
            break  # likely a consequence of leaving out the property found before
        path, message = _describe(name, text, user, where)
        for secret in secrets:  # librdkafka may quote a value, and a value may be a password
            message = message.replace(secret, "***")
        found.append((path, message))
        if name is None or name not in conf:
            break
        del conf[name]  # and build again, to find the next bad property
    return found


def _close(client: Any) -> None:
    if isinstance(client, Consumer):
        client.close()
    else:
        client.flush(0)


def _culprit(text: str, conf: Mapping[str, Any]) -> str | None:
    """The property of ``conf`` that librdkafka's message is about, if it can be told."""
    for m in _NAMED.finditer(text):
        name = next(g for g in m.groups() if g)
        if name in conf:
            return name
        alias = _ALIASES.get(name)
        if alias in conf:
            return alias
        if m.group(1):  # "configuration property X" names it even when the user did not write it
            return name
    if "SASL mechanism" in text or text.startswith("Unsupported hash function"):
        return next((k for k in ("sasl.mechanism", "sasl.mechanisms") if k in conf), None)
    named = [k for k in conf if k in text]
    return max(named, key=len) if named else None


def _describe(name: str | None, text: str, user: Mapping[str, Any], where: str) -> tuple[str, str]:
    if name is None or name not in user:
        return "kafka", f"librdkafka refused the configuration{where}: {text}"
    path = f"kafka.{name}"
    if text.startswith("No such configuration property"):
        close = difflib.get_close_matches(name, _COMMON, n=1, cutoff=0.8)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return path, (
            f"unknown librdkafka property{hint}: check its spelling against librdkafka's "
            "CONFIGURATION.md"
        )
    if text.startswith(("Invalid value", "Expected", "Unsupported", "No provider")):
        value = "***" if name in SECRET_KEYS else repr(user[name])  # the rest masked by caller
        hint = f"; use one of {_MECHANISMS}" if name.startswith("sasl.mechanism") else ""
        return path, f"invalid value {value}{where} (librdkafka: {text}){hint}"
    return path, f"librdkafka refused it{where}: {text}"
