"""``validate --online``: what only the real services can tell about a valid configuration.

- MoEngage: the start-up credentials check (``connector/credcheck.py``), with the same bound.
- Kafka: a metadata request for every topic (and dead-letter topic), which says whether the
  brokers are in reach with these ``kafka`` properties (security included) and whether each
  topic exists. Its timeout is ``timeout`` seconds; librdkafka's own lines go through structlog.

Each result is a ``(key_path, message)`` problem or a line for the report; no exception escapes
for a service that is down or refuses.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from confluent_kafka import Consumer, KafkaException

from connector.config import Credentials, Settings
from connector.credcheck import check_credentials
from connector.errors import FatalApiError
from connector.observability.kafkalog import BrokerWatch, kafka_logging

Problem = tuple[str, str]


@dataclass
class OnlineReport:
    problems: list[Problem] = field(default_factory=list)
    confirmed: list[str] = field(default_factory=list)


def online_checks(settings: Settings, credentials: Credentials, timeout: float) -> OnlineReport:
    report = OnlineReport()
    _kafka(settings, timeout, report)
    asyncio.run(_moengage(settings, credentials, report))
    return report


async def _moengage(settings: Settings, credentials: Credentials, report: OnlineReport) -> None:
    async with aiohttp.ClientSession() as session:
        try:
            result = await check_credentials(session, settings, credentials)
        except FatalApiError as e:
            report.problems.append(("moengage", f"MoEngage refused the credentials: {e}"))
            return
    if result.confirmed:
        report.confirmed.append(
            f"MoEngage accepted the credentials (Get User API at {settings.moengage.endpoint})"
        )
    else:
        seconds = settings.moengage.startup_check_seconds
        report.problems.append(
            (
                "moengage",
                f"no answer from MoEngage's Get User API at {settings.moengage.endpoint} in "
                f"{seconds:g} s ({result.detail}); check moengage.data_center / base_url and the "
                "network",
            )
        )


def _kafka(settings: Settings, timeout: float, report: OnlineReport) -> None:
    conf: dict[str, Any] = settings.librdkafka_config()
    bootstrap = str(conf["bootstrap.servers"])
    watch = BrokerWatch(bootstrap, settings.logging.repeat_interval_seconds)
    consumer = Consumer({**conf, **kafka_logging(settings, watch), "error_cb": watch.on_error})
    topics = [t.name for t in settings.topics]
    topics += [t.dead_letter_topic for t in settings.topics if t.dead_letter_topic]
    try:
        for i, name in enumerate(dict.fromkeys(topics)):
            try:
                meta = consumer.list_topics(name, timeout=timeout).topics.get(name)
            except KafkaException as e:
                err = e.args[0] if e.args else e
                text = err.str() if hasattr(err, "str") else str(err)
                report.problems.append(
                    (
                        "kafka.bootstrap.servers",
                        f"Kafka brokers unreachable: {bootstrap} (no metadata within "
                        f"{timeout:g} s: {text})",
                    )
                )
                return
            if meta is None or meta.error is not None:
                where = _topic_path(settings, name)
                report.problems.append((where, f"topic {name!r} does not exist on the cluster"))
            elif i == 0:
                report.confirmed.append(f"Kafka brokers reachable at {bootstrap}")
    finally:
        consumer.close()


def _topic_path(settings: Settings, name: str) -> str:
    for i, t in enumerate(settings.topics):
        if t.name == name:
            return f"topics[{i}].name"
        if t.dead_letter_topic == name:
            return f"topics[{i}].dead_letter_topic"
    return "topics"
