"""The schema a topic's mapping is checked against before anything runs (validate, preview).

``format: avro``: the topic's local ``.avsc``. ``format: confluent``: the latest schema registered
under the topic's value subject (``<topic>-value``, the registry's default naming), fetched with a
short timeout and no retries. ``format: json``: none. When no schema can be had the answer carries
a ``note`` saying why, never an error: a registry out of reach or a subject not registered yet
must not fail ``validate`` (the records' own schema ids are what ``run`` decodes with). A local
schema file that cannot be read is left to the decoder, which reports it as a configuration error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError as _ClientRegistryError

from connector.config import Settings, TopicSpec, mask_userinfo, secret_strings
from connector.errors import ConfigError, ConnectorError
from connector.source.decoding import SchemaLookup, _transport_errors, load_schema_file

REGISTRY_TIMEOUT_SECONDS = 3.0
_FORMS_ONLY = "field paths are checked for their form only"


@dataclass(frozen=True, slots=True)
class TopicSchema:
    """A topic's parsed Avro schema, or ``None`` with the reason in ``note`` (``None`` too when
    the reason is a configuration error reported elsewhere)."""

    schema: Any | None
    note: str | None = None


class TopicSchemas:
    """Schemas of a configuration's topics, by topic index. The registry is asked at most once
    per subject; once it is out of reach it is not asked again (one timeout, not one per topic).
    ``client`` replaces the registry client (tests)."""

    def __init__(
        self,
        settings: Settings,
        *,
        client: Any = None,
        timeout: float = REGISTRY_TIMEOUT_SECONDS,
    ) -> None:
        self._settings = settings
        self._client = client
        self._own_client = client is None
        self._timeout = timeout
        self._unreachable: str | None = None
        registry = settings.schema_registry
        self._url = mask_userinfo(registry.url, mask="") if registry is not None else ""
        self._secrets = (
            sorted(secret_strings(registry.properties, registry.url), key=len, reverse=True)
            if registry is not None
            else []
        )

    def get(self, index: int) -> TopicSchema:
        topic = self._settings.topics[index]
        if topic.format == "json":
            return TopicSchema(None, f"format 'json' has no schema: {_FORMS_ONLY}")
        if topic.format == "avro":
            path = self._settings.schema_path(topic)
            if path is None:
                return TopicSchema(None)
            try:
                return TopicSchema(load_schema_file(path, key_path=f"topics[{index}].schema"))
            except ConfigError:
                return TopicSchema(None)  # the decoder reports the file, at the same key path
        return self._registered(topic)

    def _registered(self, topic: TopicSpec) -> TopicSchema:
        subject = f"{topic.name}-value"
        if self._unreachable is not None:
            return TopicSchema(None, f"{self._unreachable}: {_FORMS_ONLY}")
        client = self._registry_client()
        if client is None:
            return TopicSchema(None)
        try:
            registered = client.get_latest_version(subject)
        except _ClientRegistryError as e:
            if e.http_status_code == 404 and e.error_code == 40401:
                what = f"no schema is registered under subject '{subject}' yet"
            elif e.http_status_code in (401, 403):
                what = (
                    f"the Schema Registry at {self._url} refused the credentials "
                    f"(HTTP {e.http_status_code}) for subject '{subject}'"
                )
            else:
                what = (
                    f"the Schema Registry at {self._url} answered HTTP {e.http_status_code} "
                    f"for subject '{subject}': {self._redact(str(e.error_message))}"
                )
            return TopicSchema(None, f"{what}: {_FORMS_ONLY}")
        except _transport_errors() as e:
            self._unreachable = (
                f"the Schema Registry at {self._url} cannot be reached "
                f"({type(e).__name__}: {self._redact(str(e)) or 'no answer'})"
            )
            return TopicSchema(None, f"{self._unreachable}: {_FORMS_ONLY}")
        registry = self._settings.schema_registry
        assert registry is not None  # a confluent topic needs one (Settings checks)
        try:
            parsed = SchemaLookup(registry, client=client).get(registered.schema_id)
        except (ConnectorError, KeyError) as e:
            what = f"the latest schema of subject '{subject}' cannot be used ({e})"
            return TopicSchema(None, f"{self._redact(what)}: {_FORMS_ONLY}")
        return TopicSchema(parsed)

    def _registry_client(self) -> Any:
        if self._client is None:
            registry = self._settings.schema_registry
            if registry is None:
                return None
            config = {**registry.client_config(), "timeout": self._timeout, "max.retries": 0}
            try:
                self._client = SchemaRegistryClient(config)
            except (ValueError, TypeError):
                return None  # the record processor reports the registry settings
        return self._client

    def close(self) -> None:
        """Close the registry client's connections, when this object made the client."""
        if self._client is not None and self._own_client:
            self._client.close()
        self._client = None

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text
