"""The bad records of tests/integration/bad_records.py, through the run loop's record processor
in process (decode, transform, validate, encode, size): each fails with the (stage, rule) it
promises, through BadRecordError only, located at its record; the normalised ones come out as
promised. Keeps the integration data honest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message

from connector.config import parse_settings
from connector.errors import BadRecordError, RecordRef
from connector.processing import RecordProcessor, TopicPipeline
from connector.source import decoding
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
def processor() -> RecordProcessor:
    raw = {
        "moengage": {"data_center": "01"},
        "kafka": {"bootstrap.servers": "127.0.0.1:9092", "group.id": "g"},
        "topics": [{"name": k, **v} for k, v in TOPICS.items() if k != "confluent_event"],
    }
    processor = RecordProcessor(parse_settings(raw, base_dir=Path(), environ={}))
    schema = decoding.load_schema_file(EVENT_SCHEMA, key_path="test")
    confluent = decoding._ConfluentDecoder(FakeLookup({SCHEMA_ID: schema}))
    pipes = processor.pipelines
    pipes["confluent_event"] = TopicPipeline(confluent, pipes["avro_event"].transform)
    return processor


def run(processor: RecordProcessor, topic: str, value: bytes) -> list[Any]:
    """The elements of one record of ``topic``, as the run loop's processor prepares them."""
    msg = Message(topic=topic, partition=0, offset=7, value=value, timestamp=(1, 0))
    return [element for _, _, _, element in processor.process(msg)]


@pytest.mark.parametrize("case", bad_records(SCHEMA_ID), ids=lambda c: c.name)
def test_each_bad_record_fails_where_it_says(processor: RecordProcessor, case: BadRecord) -> None:
    with pytest.raises(BadRecordError) as info:
        run(processor, case.topic, case.value)
    assert (info.value.stage, info.value.rule) == (case.stage, case.rule)
    assert info.value.ref == RecordRef(case.topic, 0, 7)


@pytest.mark.parametrize("case", normalised_records(), ids=lambda c: c.name)
def test_each_normalised_record_is_delivered_as_it_says(
    processor: RecordProcessor, case: NormalisedRecord
) -> None:
    (element,) = run(processor, case.topic, case.value)
    action = element["actions"][0]
    assert {k: action.get(k) for k in case.action} == case.action
