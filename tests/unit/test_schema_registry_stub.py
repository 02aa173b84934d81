"""The in-memory Schema Registry speaks enough of Confluent's REST API for the real client."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from connector.config import SchemaRegistrySettings
from connector.errors import SchemaRegistryError
from connector.sandbox import create_registry_app, serve_registry
from connector.source.decoding import SchemaLookup

Client = TestClient[web.Request, web.Application]
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
USER = json.dumps(
    {
        "type": "record",
        "name": "User",
        "fields": [{"name": "id", "type": "string"}, {"name": "age", "type": "int"}],
    }
)
EVENT = json.dumps({"type": "record", "name": "Event", "fields": [{"name": "a", "type": "string"}]})


@pytest.fixture
async def registry() -> AsyncIterator[Client]:
    client: Client = TestClient(TestServer(create_registry_app()))
    await client.start_server()
    yield client
    await client.close()


async def call(client: Client, method: str, path: str, body: Any = None) -> tuple[int, Any, str]:
    data = None if body is None else orjson.dumps(body)
    async with client.request(method, path, data=data) as response:
        return response.status, orjson.loads(await response.read()), response.content_type


async def register(client: Client, subject: str, schema: str) -> int:
    status, body, _ = await call(
        client, "POST", f"/subjects/{subject}/versions", {"schema": schema}
    )
    assert status == 200
    schema_id: int = body["id"]
    return schema_id


async def test_ids_start_at_one_and_follow_registration_order(registry: Client) -> None:
    assert await register(registry, "users-value", USER) == 1
    assert await register(registry, "events-value", EVENT) == 2


async def test_same_schema_gets_same_id_under_any_subject(registry: Client) -> None:
    first = await register(registry, "users-value", USER)
    reformatted = json.dumps(json.loads(USER), indent=2)
    assert await register(registry, "other-value", reformatted) == first
    assert await register(registry, "users-value", USER) == first


async def test_schema_is_fetched_by_id_in_registry_content_type(registry: Client) -> None:
    schema_id = await register(registry, "users-value", USER)
    status, body, content_type = await call(registry, "GET", f"/schemas/ids/{schema_id}")
    assert (status, content_type) == (200, CONTENT_TYPE)
    assert body == {"schema": USER, "schemaType": "AVRO"}


async def test_unknown_schema_id_is_40403(registry: Client) -> None:
    status, body, _ = await call(registry, "GET", "/schemas/ids/99")
    assert (status, body) == (404, {"error_code": 40403, "message": "Schema not found"})


async def test_subjects_and_versions_are_listed(registry: Client) -> None:
    await register(registry, "users-value", USER)
    await register(registry, "users-value", EVENT)
    await register(registry, "events-value", EVENT)
    assert (await call(registry, "GET", "/subjects"))[1] == ["events-value", "users-value"]
    assert (await call(registry, "GET", "/subjects/users-value/versions"))[1] == [1, 2]


@pytest.mark.parametrize(("version", "expected"), [("1", (1, 1, USER)), ("latest", (2, 2, EVENT))])
async def test_subject_version_is_returned_by_number_or_latest(
    registry: Client, version: str, expected: tuple[int, int, str]
) -> None:
    await register(registry, "users-value", USER)
    await register(registry, "users-value", EVENT)
    status, body, _ = await call(registry, "GET", f"/subjects/users-value/versions/{version}")
    assert status == 200
    assert (body["version"], body["id"], body["schema"], body["subject"]) == (
        *expected,
        "users-value",
    )


@pytest.mark.parametrize(
    ("path", "code"),
    [("/subjects/nope/versions", 40401), ("/subjects/users-value/versions/7", 40402)],
)
async def test_unknown_subject_or_version_is_404(registry: Client, path: str, code: int) -> None:
    await register(registry, "users-value", USER)
    status, body, _ = await call(registry, "GET", path)
    assert (status, body["error_code"]) == (404, code)


async def test_lookup_finds_the_version_of_a_registered_schema(registry: Client) -> None:
    await register(registry, "users-value", EVENT)
    await register(registry, "users-value", USER)
    status, body, _ = await call(registry, "POST", "/subjects/users-value", {"schema": USER})
    assert status == 200
    assert (body["subject"], body["version"], body["id"]) == ("users-value", 2, 2)


@pytest.mark.parametrize(("subject", "code"), [("users-value", 40403), ("nope", 40401)])
async def test_lookup_of_unknown_schema_or_subject_is_404(
    registry: Client, subject: str, code: int
) -> None:
    await register(registry, "users-value", USER)
    status, body, _ = await call(registry, "POST", f"/subjects/{subject}", {"schema": EVENT})
    assert (status, body["error_code"]) == (404, code)


async def test_invalid_schema_is_422(registry: Client) -> None:
    status, body, _ = await call(registry, "POST", "/subjects/s/versions", {"schema": "{nope"})
    assert (status, body["error_code"]) == (422, 42201)


async def test_basic_auth_is_required_when_configured() -> None:
    client: Client = TestClient(TestServer(create_registry_app(basic_auth=("sr", "secret"))))
    await client.start_server()
    try:
        async with client.get("/subjects") as response:
            assert response.status == 401
            assert orjson.loads(await response.read()) == {
                "error_code": 401,
                "message": "Unauthorized",
            }
        headers = {"Authorization": "Basic " + base64.b64encode(b"sr:secret").decode()}
        async with client.get("/subjects", headers=headers) as response:
            assert response.status == 200
    finally:
        await client.close()


async def test_serve_registry_listens_on_the_port_it_returns() -> None:
    runner, port = await serve_registry()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/subjects") as response,
        ):
            assert (response.status, await response.json(content_type=None)) == (200, [])
    finally:
        await runner.cleanup()


async def test_fault_switch_fails_every_request_until_cleared(registry: Client) -> None:
    schema_id = await register(registry, "users-value", USER)
    status, body, _ = await call(registry, "POST", "/_registry/faults", {"status": 503})
    assert (status, body) == (200, {"status": 503, "schema_ids": None})
    for path in (f"/schemas/ids/{schema_id}", "/subjects"):
        status, body, content_type = await call(registry, "GET", path)
        assert (status, content_type) == (503, CONTENT_TYPE)
        assert body["error_code"] == 50300
    assert (await call(registry, "GET", "/_registry/faults"))[1]["status"] == 503
    status, body, _ = await call(registry, "POST", "/_registry/faults", {"status": None})
    assert (status, body) == (200, {"status": None, "schema_ids": None})
    status, body, _ = await call(registry, "GET", f"/schemas/ids/{schema_id}")
    assert (status, body["schema"]) == (200, USER)


async def test_fault_switch_can_hold_only_some_schema_ids(registry: Client) -> None:
    user, event = (
        await register(registry, "users-value", USER),
        await register(registry, "e", EVENT),
    )
    await call(registry, "POST", "/_registry/faults", {"status": 500, "schema_ids": [event]})
    assert (await call(registry, "GET", f"/schemas/ids/{event}"))[0] == 500
    assert (await call(registry, "GET", f"/schemas/ids/{event}/versions"))[0] == 500
    assert (await call(registry, "GET", f"/schemas/ids/{user}"))[0] == 200
    assert (await call(registry, "GET", "/subjects"))[0] == 200


@pytest.mark.parametrize(
    "body", [{"status": 200}, {"status": "503"}, {"status": True}, {"status": 503, "schema_ids": 1}]
)
async def test_fault_switch_refuses_what_it_cannot_do(registry: Client, body: Any) -> None:
    status, answer, _ = await call(registry, "POST", "/_registry/faults", body)
    assert (status, answer["error_code"]) == (422, 42200)
    assert (await call(registry, "GET", "/subjects"))[0] == 200  # nothing was switched on


# The real client: the extra dependencies of confluent-kafka's schemaregistry client are optional.
sr = pytest.importorskip("confluent_kafka.schema_registry")


def _sr_client(registry: Client, **conf: str | int) -> Any:
    return sr.SchemaRegistryClient({"url": str(registry.make_url("")).rstrip("/"), **conf})


async def test_confluent_client_registers_and_fetches_schemas(registry: Client) -> None:
    client, fresh = _sr_client(registry), _sr_client(registry)  # fresh: no cache, really asks
    try:
        schema = sr.Schema(USER, "AVRO")
        schema_id = await asyncio.to_thread(client.register_schema, "users-value", schema)
        fetched = await asyncio.to_thread(fresh.get_schema, schema_id)
    finally:
        client.close()
        fresh.close()
    assert schema_id == 1
    assert (fetched.schema_str, fetched.schema_type) == (USER, "AVRO")


async def test_confluent_client_reads_latest_version_and_looks_up(registry: Client) -> None:
    await register(registry, "users-value", USER)
    client = _sr_client(registry)
    try:
        latest = await asyncio.to_thread(client.get_latest_version, "users-value")
        found = await asyncio.to_thread(
            client.lookup_schema, "users-value", sr.Schema(USER, "AVRO")
        )
    finally:
        client.close()
    assert (latest.schema_id, latest.version, latest.schema.schema_str) == (1, 1, USER)
    assert (found.schema_id, found.version) == (1, 1)


async def test_confluent_client_authenticates_with_basic_auth() -> None:
    server: Client = TestClient(TestServer(create_registry_app(basic_auth=("sr", "secret"))))
    await server.start_server()
    client = _sr_client(server, **{"basic.auth.user.info": "sr:secret"})
    try:
        schema_id = await asyncio.to_thread(client.register_schema, "s", sr.Schema(USER, "AVRO"))
    finally:
        client.close()
        await server.close()
    assert schema_id == 1


async def test_avro_serializer_round_trips_through_the_registry(registry: Client) -> None:
    avro = pytest.importorskip("confluent_kafka.schema_registry.avro")
    serialization = pytest.importorskip("confluent_kafka.serialization")
    writer, reader = _sr_client(registry), _sr_client(registry)
    try:
        serializer = avro.AvroSerializer(writer, USER)
        deserializer = avro.AvroDeserializer(reader)
        context = serialization.SerializationContext("users", serialization.MessageField.VALUE)
        record = {"id": "u1", "age": 42}
        payload = await asyncio.to_thread(serializer, record, context)
        decoded = await asyncio.to_thread(deserializer, payload, context)
    finally:
        writer.close()
        reader.close()
    assert payload[:5] == b"\x00\x00\x00\x00\x01"  # magic byte, then schema id 1
    assert decoded == record


async def test_connector_lookup_sees_a_switched_on_outage_as_retriable(registry: Client) -> None:
    """The connector's schema lookup raises its retriable error while the fault is on, and
    fetches the schema once it is cleared."""
    schema_id = await register(registry, "users-value", USER)
    url = str(registry.make_url("")).rstrip("/")
    client = _sr_client(registry, **{"max.retries": 0})  # one answer per call: no client retries
    lookup = SchemaLookup(SchemaRegistrySettings(url=url), client=client)
    try:
        await call(
            registry, "POST", "/_registry/faults", {"status": 503, "schema_ids": [schema_id]}
        )
        with pytest.raises(SchemaRegistryError, match="HTTP 503"):
            await asyncio.to_thread(lookup.get, schema_id)
        await call(registry, "POST", "/_registry/faults", {"status": None})
        parsed = await asyncio.to_thread(lookup.get, schema_id)
    finally:
        client.close()
    assert parsed["name"] == "User"
