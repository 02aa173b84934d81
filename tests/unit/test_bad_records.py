"""The bad records of tests/integration/bad_records.py, through decode, transform, validate and
encode in process: each fails with the (stage, rule) it promises, through BadRecordError only,
and the normalised ones come out as promised. Keeps the integration data honest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from connector.batching import encode
from connector.config import parse_settings
from connector.errors import BadRecordError
from connector.pipeline import TopicPipeline, build_pipelines, build_validator
from connector.source import decoding
from connector.transforms import Record
from tests.integration.bad_records import (
    EVENT_SCHEMA,
    TOPICS,
    BadRecord,
    NormalisedRecord,
    bad_records,
    normalised_records,
)
from tests.unit.test_decoding import FakeLookup

SCHEMA_ID = 3


@pytest.fixture(scope="module")
def pipes() -> tuple[dict[str, TopicPipeline], Any]:
    raw = {
        "moengage": {"data_center": "01"},
        "kafka": {"bootstrap.servers": "127.0.0.1:9092", "group.id": "g"},
        "topics": [{"name": k, **v} for k, v in TOPICS.items() if k != "confluent_event"],
    }
    settings = parse_settings(raw, base_dir=Path(), environ={})
    built = build_pipelines(settings)
    schema = decoding.load_schema_file(EVENT_SCHEMA, key_path="test")
    confluent = decoding._ConfluentDecoder(FakeLookup({SCHEMA_ID: schema}))
    built["confluent_event"] = TopicPipeline(confluent, built["avro_event"].transform)
    return built, build_validator(settings)


def run(pipes: tuple[dict[str, TopicPipeline], Any], topic: str, value: bytes) -> list[Any]:
    built, validator = pipes
    pipe = built[topic]
    record = Record(topic, 0, 0, None, pipe.decoder(value), (), None)
    out = []
    for element in pipe.transform(record):
        out.append(validator.validate(element))
        encode(element)
    return out


@pytest.mark.parametrize("case", bad_records(SCHEMA_ID), ids=lambda c: c.name)
def test_each_bad_record_fails_where_it_says(
    pipes: tuple[dict[str, TopicPipeline], Any], case: BadRecord
) -> None:
    with pytest.raises(BadRecordError) as info:
        run(pipes, case.topic, case.value)
    assert (info.value.stage, info.value.rule) == (case.stage, case.rule)


@pytest.mark.parametrize("case", normalised_records(), ids=lambda c: c.name)
def test_each_normalised_record_is_delivered_as_it_says(
    pipes: tuple[dict[str, TopicPipeline], Any], case: NormalisedRecord
) -> None:
    (element,) = run(pipes, case.topic, case.value)
    action = element["actions"][0]
    assert {k: action.get(k) for k in case.action} == case.action
