"""A minimal Confluent-compatible Schema Registry, in memory, for the demo and the tests.

The real registry needs a JVM; this serves the part of its REST API that the confluent-kafka
Python client and our Avro decoding use: register, fetch by id, list and look up under subjects.
The same schema (compared as parsed JSON, so whitespace does not matter) gets the same id under
every subject, and ids start at 1, as in the real registry. Errors carry its ``error_code``s.

An outage can be switched on and off while it runs, for tests of the connector's retries:
``POST /_registry/faults {"status": 503}`` answers every request with that status (add
``"schema_ids": [n, ...]`` to fail only the lookups of those ids); ``{"status": null}`` clears it;
``GET /_registry/faults`` shows what is on.
"""

from __future__ import annotations

import base64
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class StoredSchema:
    """One registered schema text with its type and references, as the client sent them."""

    schema: str
    schema_type: str
    references: tuple[tuple[str, str, int], ...] = ()

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"schema": self.schema, "schemaType": self.schema_type}
        if self.references:
            body["references"] = [
                {"name": name, "subject": subject, "version": version}
                for name, subject, version in self.references
            ]
        return body


@dataclass
class RegistryStore:
    """Schemas by id (1-based) and, per subject, the ids of its versions in order."""

    schemas: list[StoredSchema] = field(default_factory=list)
    ids: dict[tuple[str, str, tuple[tuple[str, str, int], ...]], int] = field(default_factory=dict)
    subjects: dict[str, list[int]] = field(default_factory=dict)

    def register(self, subject: str, schema: StoredSchema) -> int:
        """The schema's id, registering it (and a new version of ``subject``) when new."""
        key = (schema.schema_type, _canonical(schema.schema), schema.references)
        schema_id = self.ids.get(key)
        if schema_id is None:
            self.schemas.append(schema)
            schema_id = self.ids[key] = len(self.schemas)
        versions = self.subjects.setdefault(subject, [])
        if schema_id not in versions:
            versions.append(schema_id)
        return schema_id

    def get(self, schema_id: int) -> StoredSchema | None:
        return self.schemas[schema_id - 1] if 1 <= schema_id <= len(self.schemas) else None

    def lookup(self, schema: StoredSchema) -> int | None:
        return self.ids.get((schema.schema_type, _canonical(schema.schema), schema.references))


def _canonical(text: str) -> str:
    """Schema text with JSON whitespace removed, so equal schemas compare equal."""
    try:
        return json.dumps(json.loads(text), separators=(",", ":"))
    except ValueError:
        return text


@dataclass(frozen=True)
class RegistryFault:
    """An outage: requests answered with ``status`` in the registry's error shape; with
    ``schema_ids``, only the lookups of those ids (``/schemas/ids/{id}...``), so a schema
    fetched before stays usable elsewhere and one not yet fetched is held."""

    status: int
    schema_ids: frozenset[int] | None = None

    def hits(self, request: web.Request) -> bool:
        if self.schema_ids is None:
            return True
        parts = request.path.strip("/").split("/")
        if len(parts) < 3 or parts[:2] != ["schemas", "ids"]:
            return False
        try:
            return int(parts[2]) in self.schema_ids
        except ValueError:
            return False

    def as_json(self) -> dict[str, Any]:
        ids = None if self.schema_ids is None else sorted(self.schema_ids)
        return {"status": self.status, "schema_ids": ids}


@dataclass
class FaultSwitch:
    """The fault in force, if any (one per application, changed through ``/_registry/faults``)."""

    fault: RegistryFault | None = None


class RegistryError(Exception):
    """A refusal in the registry's shape: HTTP status plus ``error_code`` and ``message``."""

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


STORE = web.AppKey("registry_store", RegistryStore)
AUTH = web.AppKey("registry_auth", str)
FAULTS = web.AppKey("registry_faults", FaultSwitch)
ADMIN_PREFIX = "/_registry/"


def _reply(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type=CONTENT_TYPE)


def _subject_not_found(subject: str) -> RegistryError:
    return RegistryError(404, 40401, f"Subject '{subject}' not found.")


async def _schema_from_body(request: web.Request) -> StoredSchema:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise RegistryError(422, 42201, "Invalid schema: body is not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
        raise RegistryError(422, 42201, "Invalid schema: 'schema' must be a string")
    schema_type = body.get("schemaType") or "AVRO"
    if schema_type in ("AVRO", "JSON"):
        try:
            json.loads(body["schema"])
        except ValueError:
            raise RegistryError(422, 42201, f"Invalid schema: not valid {schema_type}") from None
    references: list[tuple[str, str, int]] = []
    for ref in body.get("references") or []:
        try:
            references.append((str(ref["name"]), str(ref["subject"]), int(ref["version"])))
        except (KeyError, TypeError, ValueError):
            raise RegistryError(422, 42201, "Invalid schema: bad reference") from None
    return StoredSchema(body["schema"], str(schema_type), tuple(references))


def _versions(store: RegistryStore, subject: str) -> list[int]:
    versions = store.subjects.get(subject)
    if not versions:
        raise _subject_not_found(subject)
    return versions


def _version_json(store: RegistryStore, subject: str, version: int) -> dict[str, Any]:
    schema_id = store.subjects[subject][version - 1]
    stored = store.get(schema_id)
    assert stored is not None  # ids in a subject always name stored schemas
    return {"subject": subject, "version": version, "id": schema_id, **stored.as_json()}


async def _register(request: web.Request) -> web.Response:
    """``POST /subjects/{subject}/versions`` -> ``{"id": n}``."""
    store = request.app[STORE]
    subject = request.match_info["subject"]
    schema = await _schema_from_body(request)
    schema_id = store.register(subject, schema)
    log.info("registry.registered", subject=subject, schema_id=schema_id)
    return _reply({"id": schema_id})


async def _lookup(request: web.Request) -> web.Response:
    """``POST /subjects/{subject}``: the version under which this schema is registered."""
    store = request.app[STORE]
    subject = request.match_info["subject"]
    schema = await _schema_from_body(request)
    versions = _versions(store, subject)
    schema_id = store.lookup(schema)
    if schema_id is None or schema_id not in versions:
        raise RegistryError(404, 40403, "Schema not found")
    return _reply(_version_json(store, subject, versions.index(schema_id) + 1))


def _schema_id(request: web.Request) -> int:
    try:
        return int(request.match_info["schema_id"])
    except ValueError:
        raise RegistryError(404, 40403, "Schema not found") from None


async def _get_schema(request: web.Request) -> web.Response:
    """``GET /schemas/ids/{id}`` -> ``{"schema", "schemaType"}``."""
    stored = request.app[STORE].get(_schema_id(request))
    if stored is None:
        raise RegistryError(404, 40403, "Schema not found")
    return _reply(stored.as_json())


def _uses(request: web.Request) -> list[dict[str, Any]]:
    """Every (subject, version) under which the path's schema id is registered."""
    store = request.app[STORE]
    schema_id = _schema_id(request)
    if store.get(schema_id) is None:
        raise RegistryError(404, 40403, "Schema not found")
    return [
        {"subject": subject, "version": versions.index(schema_id) + 1}
        for subject, versions in store.subjects.items()
        if schema_id in versions
    ]


async def _schema_versions(request: web.Request) -> web.Response:
    """``GET /schemas/ids/{id}/versions`` -> ``[{"subject", "version"}]``."""
    return _reply(_uses(request))


async def _schema_subjects(request: web.Request) -> web.Response:
    """``GET /schemas/ids/{id}/subjects`` -> subject names."""
    return _reply([use["subject"] for use in _uses(request)])


async def _schema_types(_: web.Request) -> web.Response:
    return _reply(["AVRO", "JSON", "PROTOBUF"])


async def _subjects(request: web.Request) -> web.Response:
    return _reply(sorted(request.app[STORE].subjects))


async def _subject_versions(request: web.Request) -> web.Response:
    versions = _versions(request.app[STORE], request.match_info["subject"])
    return _reply(list(range(1, len(versions) + 1)))


async def _subject_version(request: web.Request) -> web.Response:
    """``GET /subjects/{subject}/versions/{version|latest}``."""
    store = request.app[STORE]
    subject = request.match_info["subject"]
    versions = _versions(store, subject)
    text = request.match_info["version"]
    if text in ("latest", "-1"):
        version = len(versions)
    else:
        try:
            version = int(text)
        except ValueError:
            message = f"The specified version '{text}' is not a valid version id."
            raise RegistryError(422, 42202, message) from None
        if not 1 <= version <= len(versions):
            raise RegistryError(404, 40402, f"Version {version} not found.")
    return _reply(_version_json(store, subject, version))


def _fault_from_body(body: Any) -> RegistryFault | None:
    if not isinstance(body, dict):
        raise RegistryError(422, 42200, "expected a JSON object")
    status = body.get("status")
    if status is None:
        return None
    if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
        raise RegistryError(422, 42200, "'status' must be an HTTP error status (400-599) or null")
    ids = body.get("schema_ids")
    if ids is None:
        return RegistryFault(status)
    if not isinstance(ids, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in ids
    ):
        raise RegistryError(422, 42200, "'schema_ids' must be a list of integers or null")
    return RegistryFault(status, frozenset(ids))


async def _set_faults(request: web.Request) -> web.Response:
    """``POST /_registry/faults``: switch an outage on (``{"status": 503}``) or off
    (``{"status": null}``)."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise RegistryError(422, 42200, "body is not JSON") from None
    switch = request.app[FAULTS]
    switch.fault = _fault_from_body(body)
    log.info("registry.faults", fault=None if switch.fault is None else switch.fault.as_json())
    return await _get_faults(request)


async def _get_faults(request: web.Request) -> web.Response:
    fault = request.app[FAULTS].fault
    return _reply({"status": None, "schema_ids": None} if fault is None else fault.as_json())


async def _root(_: web.Request) -> web.Response:
    return _reply({})


@web.middleware
async def _errors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Basic auth when configured, and registry-shaped bodies for every error."""
    expected = request.app.get(AUTH)
    if expected is not None:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return _reply({"error_code": 401, "message": "Unauthorized"}, 401)
    fault = request.app[FAULTS].fault
    if fault is not None and not request.path.startswith(ADMIN_PREFIX) and fault.hits(request):
        message = f"fault switched on at {ADMIN_PREFIX}faults"
        return _reply({"error_code": fault.status * 100, "message": message}, fault.status)
    try:
        return await handler(request)
    except RegistryError as err:
        return _reply({"error_code": err.error_code, "message": err.message}, err.status)
    except web.HTTPNotFound:
        return _reply({"error_code": 404, "message": "HTTP 404 Not Found"}, 404)
    except web.HTTPMethodNotAllowed:
        return _reply({"error_code": 405, "message": "HTTP 405 Method Not Allowed"}, 405)


def create_registry_app(basic_auth: tuple[str, str] | None = None) -> web.Application:
    """The registry as an aiohttp application; ``basic_auth`` = (user, password) to require it."""
    app = web.Application(middlewares=[_errors_and_auth])
    app[STORE] = RegistryStore()
    app[FAULTS] = FaultSwitch()
    if basic_auth is not None:
        token = base64.b64encode(f"{basic_auth[0]}:{basic_auth[1]}".encode()).decode()
        app[AUTH] = f"Basic {token}"
    router = app.router
    router.add_get("/", _root)
    router.add_get(ADMIN_PREFIX + "faults", _get_faults)
    router.add_post(ADMIN_PREFIX + "faults", _set_faults)
    router.add_get("/schemas/types", _schema_types)
    router.add_get("/schemas/ids/{schema_id}", _get_schema)
    router.add_get("/schemas/ids/{schema_id}/versions", _schema_versions)
    router.add_get("/schemas/ids/{schema_id}/subjects", _schema_subjects)
    router.add_get("/subjects", _subjects)
    router.add_post("/subjects/{subject}", _lookup)
    router.add_get("/subjects/{subject}/versions", _subject_versions)
    router.add_post("/subjects/{subject}/versions", _register)
    router.add_get("/subjects/{subject}/versions/{version}", _subject_version)
    return app


async def serve_registry(
    host: str = "127.0.0.1", port: int = 0, basic_auth: tuple[str, str] | None = None
) -> tuple[web.AppRunner, int]:
    """Start the registry on ``host:port`` (0 picks a free port); return the runner and port."""
    runner = web.AppRunner(create_registry_app(basic_auth), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    actual_port = int(runner.addresses[0][1])
    log.info("registry.started", host=host, port=actual_port, auth=basic_auth is not None)
    return runner, actual_port
