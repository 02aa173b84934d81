"""Settings: loaded from YAML once, ``${VAR}``-interpolated, validated, then frozen.

Every validation problem is reported with the key path that causes it (``topics[1].transform``), so
``moengage-connector validate`` can print them all at once. Secrets (the API key, librdkafka and
Schema Registry passwords) never appear in a ``repr`` or in an error message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError

from connector.catalogue.settings import CatalogueSettings
from connector.configcheck import describe
from connector.errors import ConfigError

# The mapping's model has a module of its own; re-exported where it always was (hence the aliases).
from connector.mappingspec import AttributesSpec as AttributesSpec  # noqa: PLC0414
from connector.mappingspec import ElementSpec as ElementSpec  # noqa: PLC0414
from connector.mappingspec import ValueSpec as ValueSpec  # noqa: PLC0414
from connector.merging import Coalesce
from connector.policy import PolicySettings
from connector.safeyaml import load_yaml

# librdkafka / Schema Registry properties whose values are secrets: masked wherever settings print.
SECRET_KEYS = frozenset(
    {
        "sasl.password",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.config",
        "ssl.key.password",
        "ssl.key.pem",
        "ssl.keystore.password",
        "ssl.truststore.password",
        "basic.auth.user.info",
        "bearer.auth.credentials.source",
        "bearer.auth.token",
    }
)
MASK = "***"

# The data centres the Data API overview lists (api-01..03), and its legacy hosts keyed by the
# host prefix users see in their dashboards. Any other endpoint is given as moengage.base_url.
DATA_CENTERS = ("01", "02", "03")
LEGACY_HOSTS = {
    "api": "https://api.moengage.com",
    "api-eu": "https://api-eu.moengage.com",
    "api-serv3": "https://api-serv3.moengage.com",
}

# Properties the connector owns: letting a user flip them would break at-least-once delivery.
_FORCED_KAFKA = {"enable.auto.commit": False, "enable.auto.offset.store": False}
_DEFAULT_KAFKA: dict[str, Any] = {
    "auto.offset.reset": "earliest",
    "partition.assignment.strategy": "cooperative-sticky",
    "session.timeout.ms": 45000,
    "max.poll.interval.ms": 300000,
    # The connector holds its own bounded buffer; librdkafka's 64 MiB default prefetch doubled
    # the peak memory on a backlog (figures in the CHANGELOG).
    "queued.max.messages.kbytes": 4096,
    # How long the broker may hold a fetch when a partition has nothing new (on brokers that hold
    # it even when data is there, as the local Tansu does, this adds to record latency).
    "fetch.wait.max.ms": 50,
}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class TransformSpec(_Frozen):
    """How records of a topic become elements: a declarative mapping or Python code."""

    mapping: list[ElementSpec] | None = None
    function: str | None = Field(
        default=None,
        description="'package.module:function', looked up in the configuration file's directory "
        "first, then among the installed packages",
    )
    entry_point: str | None = Field(
        default=None, description="a name in the 'moengage_connector.transforms' group"
    )
    options: dict[str, Any] | None = None

    @field_validator("mapping", mode="before")
    @classmethod
    def _single_mapping(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _one_kind(self) -> TransformSpec:
        given = [k for k in ("mapping", "function", "entry_point") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'mapping', 'function' or 'entry_point'")
        if self.function is not None and ":" not in self.function:
            raise ValueError("'function' must look like 'package.module:function'")
        if self.mapping is not None and self.options is not None:
            raise ValueError("'options' only apply to 'function' or 'entry_point'")
        return self


class TopicSpec(_Frozen):
    name: str = Field(min_length=1)
    format: Literal["confluent", "avro", "json"] = "confluent"
    schema_file: Path | None = Field(default=None, alias="schema")
    transform: TransformSpec
    on_error: Literal["fail", "skip", "dlq"] | None = Field(
        default=None, description="default: 'dlq' when dead_letter_topic is set, else 'fail'"
    )
    dead_letter_topic: str | None = None

    @model_validator(mode="after")
    def _schema_for_raw_avro(self) -> TopicSpec:
        if self.format == "avro" and self.schema_file is None:
            raise ValueError("format 'avro' (raw Avro) needs 'schema': the path of an .avsc file")
        if self.on_error == "dlq" and not self.dead_letter_topic:
            raise ValueError("on_error 'dlq' needs 'dead_letter_topic'")
        if self.dead_letter_topic == self.name:
            raise ValueError("dead_letter_topic must differ from the topic itself")
        return self

    @property
    def error_policy(self) -> Literal["fail", "skip", "dlq"]:
        if self.on_error is not None:
            return self.on_error
        return "dlq" if self.dead_letter_topic else "fail"


# ----- sections ---------------------------------------------------------------------------------


class MoEngageSettings(_Frozen):
    data_center: str | None = Field(
        default=None,
        description="'01', '02' or '03' (quoted), or a legacy host: 'api', 'api-eu', 'api-serv3'",
    )
    base_url: str | None = Field(default=None, description="explicit endpoint, e.g. the sandbox")
    workspace_id: str | None = None
    api_key_file: Path | None = None
    request_timeout_seconds: float = Field(default=30.0, gt=0)
    max_request_bytes: int = Field(default=100_000, ge=1024, le=128 * 1024)
    linger_ms: int = Field(default=500, ge=0)
    max_in_flight: int = Field(default=8, ge=1, le=64)
    retry_initial_ms: int = Field(default=200, ge=1)
    retry_max_ms: int = Field(default=30_000, ge=1)
    max_retry_after_seconds: float = Field(
        default=120.0,
        gt=0,
        description="a 429's Retry-After longer than this is cut to it (and logged): twice "
        "MoEngage's one-minute window; a lane never sleeps longer on MoEngage's word",
    )
    unexpected_answer_max_seconds: float = Field(
        default=300.0,
        ge=0,
        description="how long one request is resent while the answers are not MoEngage's (a 2xx "
        "without its success body, a 400/413 without its error body) before the connector stops "
        "(exit 3)",
    )
    max_retry_seconds: float | None = Field(
        default=600.0,
        gt=0,
        description="how long one request is resent after server errors (5xx, timeouts, "
        "connection errors) before, if other requests are being accepted meanwhile, it is "
        "bisected and the element that keeps failing alone is dead-lettered "
        "(send.persistent_server_error); while every request fails (an outage) nothing is. "
        "null: retry for ever",
    )
    unready_after_seconds: float = Field(
        default=10.0,
        ge=0,
        description="/readyz turns unready once no request has been accepted for this long while "
        "requests are retried or throttled; ready again at the next accepted request",
    )
    startup_check_seconds: float = Field(
        default=15.0,
        ge=0,
        description="at start-up the credentials are checked with one Get User API request (a "
        "refusal: exit 3 before any record is read); without an answer it is retried this long, "
        "then the connector starts anyway. 0 turns the check off",
    )
    users_per_minute: int | None = Field(default=1000, ge=1)
    events_per_minute: int | None = Field(default=10_000, ge=1)
    rate_window_seconds: float = Field(
        default=60.0, gt=0, description="the window the per-minute limits apply to (tests scale it)"
    )
    rate_share: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="static share of the account budget; default: owned/total partitions",
    )
    device_cost: int = Field(default=1, ge=0, description="users a device element spends")
    coalesce: Coalesce = Field(
        default="backlog",
        description="where a customer's next update (or device, or event) is merged into its "
        "latest unsent element: 'request' (the request being filled), 'backlog' (also requests "
        "waiting for the budget; events only within a request) or 'off'. true means 'backlog', "
        "false 'off'. A merge sends the customer's latest state, not the states in between",
    )

    @field_validator("coalesce", mode="before")
    @classmethod
    def _coalesce_bool(cls, v: Any) -> Any:
        # The setting was a boolean: true merged as much as there was, which is now 'backlog'.
        if v is True:
            return "backlog"
        if v is False:
            return "off"
        return v

    @field_validator("data_center")
    @classmethod
    def _known_dc(cls, v: str | None) -> str | None:
        if v is None or v in DATA_CENTERS or v in LEGACY_HOSTS:
            return v
        dcs = ", ".join(repr(k) for k in DATA_CENTERS)
        legacy = ", ".join(repr(k) for k in LEGACY_HOSTS)
        raise ValueError(
            f"{v!r} is not a data centre the Data API overview lists: use one of {dcs} (or a "
            f"legacy host: {legacy}); for any other endpoint set moengage.base_url instead"
        )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("expected an http(s) URL such as 'http://127.0.0.1:8080'")
        return v.rstrip("/") if v else v

    @model_validator(mode="after")
    def _one_endpoint(self) -> MoEngageSettings:
        if (self.data_center is None) == (self.base_url is None):
            raise ValueError("give exactly one of 'data_center' or 'base_url'")
        return self

    @property
    def endpoint(self) -> str:
        if self.base_url is not None:
            return self.base_url
        assert self.data_center is not None
        return LEGACY_HOSTS.get(self.data_center) or f"https://api-{self.data_center}.moengage.com"


class SchemaRegistrySettings(_Frozen):
    url: str
    properties: dict[str, Any] = Field(
        default={}, description="passed to confluent-kafka's SchemaRegistryClient"
    )

    def client_config(self) -> dict[str, Any]:
        return {"url": self.url, **self.properties}

    def __repr_args__(self) -> Any:
        yield "url", mask_userinfo(self.url)
        yield "properties", _masked(self.properties)


class PipelineSettings(_Frozen):
    commit_interval_ms: int = Field(default=1000, ge=10)
    commit_after_accept_ms: int | None = Field(
        default=50,
        ge=0,
        description="after a request is accepted, its records are committed within about this "
        "long (one commit at a time, at most one per this period; the loop never waits for it), "
        "so a hard kill resends little; null: only every commit_interval_ms",
    )
    consume_batch_size: int = Field(default=1000, ge=1, le=100_000)
    poll_timeout_ms: int = Field(default=20, ge=1)
    max_buffered_records: int = Field(default=10_000, ge=1)
    max_buffered_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)


class ValidationSettings(_Frozen):
    customer_id_min_length: int = Field(
        default=2, ge=1, description="Data API overview: 'any string of more than one characters'"
    )
    extra_disallowed_customer_ids: list[str] = []
    allowed_reserved_attributes: list[str] = Field(
        default=[], description="reserved attribute names to let through anyway"
    )
    identifier_keys: list[str] = Field(
        default=[],
        description="identity-resolution identifiers (e.g. moe_mobile) emitted by code transforms",
    )
    event_time_earliest: AwareDatetime = Field(
        default=datetime(2000, 1, 1, tzinfo=UTC),
        description="event times (current_time, user_time) before this are bad input",
    )
    event_time_max_future_seconds: int = Field(
        default=86_400,
        ge=0,
        description="event times more than this many seconds after now are bad input",
    )
    local_timezone: str | None = Field(
        default=None,
        description="IANA zone (e.g. Europe/Berlin) of Avro local-timestamp-* values: they are "
        "converted to UTC. Unset: they are sent as ISO 8601 without a zone (a local time)",
    )

    @field_validator("local_timezone")
    @classmethod
    def _known_zone(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"{v!r} is not an IANA time zone name (e.g. 'Europe/Berlin', 'UTC')"
                ) from None
        return v


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_LEVEL_ENV = "MOENGAGE_CONNECTOR_LOG_LEVEL"


class LoggingSettings(_Frozen):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    log_record_contents: bool = False
    repeat_interval_seconds: float = Field(
        default=30.0,
        gt=0,
        description="a repeated librdkafka line, and 'Kafka brokers unreachable', is written at "
        "most once per this many seconds (with the count of repeats left out)",
    )

    @field_validator("level", mode="before")
    @classmethod
    def _any_case(cls, v: Any) -> Any:
        # The environment override has always been case-insensitive; the key is too.
        return v.strip().lower() if isinstance(v, str) else v


def log_level(settings: Settings, environ: Mapping[str, str] | None = None) -> str:
    """The level to log at: ``MOENGAGE_CONNECTOR_LOG_LEVEL`` when set, else ``logging.level``.
    An unknown level is a ``ConfigError`` that lists the valid ones, not a silent fallback."""
    env = os.environ if environ is None else environ
    raw = env.get(LOG_LEVEL_ENV, "")
    if not raw.strip():
        return settings.logging.level
    level = raw.strip().lower()
    if level not in LOG_LEVELS:
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        problem = (
            f"{LOG_LEVEL_ENV} (which overrides this key) is {shown!r}: "
            f"use one of {', '.join(LOG_LEVELS)}"
        )
        raise ConfigError([("logging.level", problem)])
    return level


class ObservabilitySettings(_Frozen):
    """The /metrics, /healthz and /readyz server, and the record of delivered customers that
    ``moengage-connector verify`` reads."""

    enabled: bool = True
    host: str = Field(
        default="0.0.0.0",  # noqa: S104 - probes and Prometheus reach the Pod IP, not loopback
        description="interface to listen on; 127.0.0.1 keeps it on the machine",
    )
    port: int = Field(default=9108, ge=0, le=65535, description="0 picks a free port (logged)")
    liveness_max_silence_seconds: float = Field(
        default=60.0, gt=0, description="/healthz fails once the run loop has not turned this long"
    )
    delivered_log_path: Path | None = Field(
        default=None,
        description="JSON Lines record of delivered customers for 'verify'; off when unset "
        "(it holds attribute values). Relative to the working directory",
    )
    fatal_linger_seconds: float = Field(
        default=0.0,
        ge=0,
        description="after a fatal error, keep /readyz answering (with the reason) this long",
    )
    delivered_log_max: int = Field(
        default=10_000, ge=1, description="customers kept (the file holds at most twice this)"
    )


class Settings(_Frozen):
    moengage: MoEngageSettings
    kafka: dict[str, Any]
    schema_registry: SchemaRegistrySettings | None = None
    topics: list[TopicSpec] = Field(min_length=1)
    pipeline: PipelineSettings = PipelineSettings()
    validation: ValidationSettings = ValidationSettings()
    policy: PolicySettings = PolicySettings()  # MoEngage's data-tracking policy (policy.py)
    logging: LoggingSettings = LoggingSettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    catalogue: CatalogueSettings = CatalogueSettings()
    base_dir: Path = Field(default=Path("."), exclude=True)

    @field_validator("kafka")
    @classmethod
    def _kafka_props(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in ("bootstrap.servers", "group.id"):
            if not v.get(key):
                raise ValueError(f"'{key}' is required")
        for key, forced in _FORCED_KAFKA.items():
            if key in v and v[key] != forced:
                raise ValueError(
                    f"'{key}' is managed by the connector (offsets are committed only after "
                    "delivery); remove it"
                )
        return v

    @model_validator(mode="after")
    def _topics_consistent(self) -> Settings:
        names = [t.name for t in self.topics]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"topic listed more than once: {', '.join(dupes)}")
        if self.schema_registry is None and any(t.format == "confluent" for t in self.topics):
            raise ValueError(
                "topics with format 'confluent' need 'schema_registry.url' "
                "(or use format 'avro' with a local 'schema')"
            )
        return self

    def librdkafka_config(self) -> dict[str, Any]:
        """Consumer properties: the user's pass-through plus the ones delivery depends on."""
        return {**_DEFAULT_KAFKA, **self.kafka, **_FORCED_KAFKA}

    def schema_path(self, topic: TopicSpec) -> Path | None:
        if topic.schema_file is None:
            return None
        p = topic.schema_file
        return p if p.is_absolute() else self.base_dir / p

    def topic(self, name: str) -> TopicSpec:
        for t in self.topics:
            if t.name == name:
                return t
        raise KeyError(name)

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, (_masked(value) if name == "kafka" else value)


def _masked(props: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (MASK if k in SECRET_KEYS else v) for k, v in props.items()}


def mask_userinfo(url: str, mask: str = "***@") -> str:
    """The URL(s) with any ``user:password@`` replaced by ``mask``, fit for a message."""
    out = []
    for one in url.split(","):
        parts = urlsplit(one.strip())
        if "@" in parts.netloc:
            parts = parts._replace(netloc=mask + parts.netloc.rpartition("@")[2])
        out.append(urlunsplit(parts))
    return ",".join(out)


def secret_strings(props: Mapping[str, Any], url: str = "") -> set[str]:
    """Credential strings in client properties (passwords, tokens, user info, with the password
    half of ``user:password``) and in URLs (``user:password@``), raw and URL-decoded. A user
    name alone is not secret, and masking it would garble messages."""
    found: set[str] = set()
    for key, value in props.items():
        if not isinstance(value, str) or not value:
            continue
        if key in SECRET_KEYS or "password" in key or "secret" in key:
            found.add(value)
            if key == "basic.auth.user.info" and ":" in value:
                found.add(value.split(":", 1)[1])
    for one in url.split(","):
        parts = urlsplit(one.strip())
        if parts.password:
            userinfo = parts.netloc.rpartition("@")[0]
            found.update((userinfo, unquote(userinfo), parts.password, unquote(parts.password)))
    return found


def secret_values(settings: Settings) -> set[str]:
    """Every secret string in the settings (librdkafka's and the registry's), for log redaction."""
    found = secret_strings(settings.kafka)
    registry = settings.schema_registry
    if registry is not None:
        found |= secret_strings(registry.properties, registry.url)
    return found


# ----- loading ----------------------------------------------------------------------------------

_VAR_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(value: Any, environ: Mapping[str, str], path: str = "") -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string; ``$$`` is a literal ``$``.
    Every variable that is not set (and has no default) is reported at once, at its key path."""
    missing: list[tuple[str, str]] = []
    out = _interpolate(value, environ, path, missing)
    if missing:
        raise ConfigError(_missing_problems(missing))
    return out


def _missing_problems(missing: list[tuple[str, str]]) -> list[tuple[str, str]]:
    names = sorted({name for _, name in missing})
    problems = [(p, f"environment variable {name} is not set") for p, name in missing]
    if len(names) > 1:
        problems.append(("", f"environment variables not set: {', '.join(names)}"))
    return problems


def _interpolate(
    value: Any, environ: Mapping[str, str], path: str, missing: list[tuple[str, str]]
) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, default = m.group(1), m.group(2)
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            missing.append((path, name))
            return m.group(0)  # kept as written: the rest of the document is still validated

        return _VAR_RE.sub(sub, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, environ, _join(path, str(k)), missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, environ, f"{path}[{i}]", missing) for i, v in enumerate(value)]
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-", "list[", "dict[")) or part in {"ValueSpec", "WhenSpec"}:
            continue  # pydantic's internal validator names say nothing to a user
        else:
            out = _join(out, part)
    return out


# Where credentials go instead of a URL's user info, per section of the configuration.
_URL_CREDENTIAL_HINTS = {
    "moengage": "the connector authenticates with the workspace id and the API key from "
    "MOENGAGE_API_KEY or MOENGAGE_API_KEY_FILE (see 'Data API overview')",
    "schema_registry": "put them in schema_registry.properties 'basic.auth.user.info' "
    "(e.g. '${SR_USER}:${SR_PASSWORD}' from the environment)",
    "kafka": "give them to librdkafka through their own properties (sasl.username, "
    "sasl.password, sasl.oauthbearer.client.secret, ...)",
}


def url_credential_problems(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every URL setting (a key named ``url`` or ending in ``url``, in any section but the topics)
    that carries ``user:password@``. Such a password would be printed wherever the URL is, and
    MoEngage's client refuses user info next to its own Authorization header."""
    problems: list[tuple[str, str]] = []

    def walk(value: Any, path: str, section: str, key: str) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, _join(path, str(k)), section, str(k))
        elif isinstance(value, str) and key.lower().endswith("url") and _has_userinfo(value):
            hint = _URL_CREDENTIAL_HINTS.get(section, "pass credentials through their own settings")
            problems.append(
                (path, f"credentials in a URL are not allowed: remove 'user:password@' and {hint}")
            )

    for section, value in data.items():
        if section != "topics":
            walk(value, str(section), str(section), str(section))
    return problems


def _has_userinfo(url: str) -> bool:
    for one in url.split(","):
        try:
            if "@" in urlsplit(one.strip()).netloc:
                return True
        except ValueError:  # not a URL at all: the setting's own validation says so
            continue
    return False


def parse_settings(raw: Any, *, base_dir: Path, environ: Mapping[str, str]) -> Settings:
    """Validate an already-parsed YAML document; raise ConfigError listing every problem."""
    if not isinstance(raw, dict):
        raise ConfigError([("", "the configuration must be a YAML mapping")])
    missing: list[tuple[str, str]] = []
    data = _interpolate(raw, environ, "", missing)
    problems = _missing_problems(missing) + url_credential_problems(data)
    unset = {path for path, _ in missing}  # their values are not what will be run: no verdict
    try:
        settings = Settings.model_validate({**data, "base_dir": base_dir})
    except PydanticValidationError as e:
        for err in e.errors(include_url=False, include_input=False):
            path = _loc_to_path(err["loc"])
            if path not in unset:
                problems.append((path, describe(err, data, Settings, path)))
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return settings


def load_settings(path: str | Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, interpolate and validate a YAML configuration file."""
    env = os.environ if environ is None else environ
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([("", f"cannot read {p}: {e.strerror}")]) from None
    try:
        raw = load_yaml(text, str(p))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([("", f"{p} is not valid YAML{where}")]) from None
    return parse_settings(raw, base_dir=p.parent.resolve(), environ=env)


# ----- credentials ------------------------------------------------------------------------------


class Credentials(BaseModel):
    model_config = ConfigDict(frozen=True)

    workspace_id: str
    api_key: SecretStr


def _from_env_or_file(
    name: str, environ: Mapping[str, str], file_override: Path | None, file_key: str | None = None
) -> tuple[str | None, str | None]:
    """Return (value, problem). A file wins over the plain variable; either value is stripped of
    surrounding whitespace (a trailing newline from ``echo`` or a Secret), and an empty one is a
    problem that says where it came from."""
    if file_override:
        file_name, named_by = str(file_override), file_key or f"{name}_FILE"
    else:
        file_name, named_by = environ.get(f"{name}_FILE", ""), f"{name}_FILE"
    if file_name:
        try:
            value = Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as e:
            return None, f"cannot read {file_name} (named by {named_by}): {e.strerror}"
        except UnicodeDecodeError:
            return None, f"{file_name} (named by {named_by}) is not UTF-8 text"
        if not value:
            return None, f"{file_name} (named by {named_by}) is empty"
        return value, None
    if name not in environ:
        return None, None
    value = environ[name].strip()
    if not value:
        return None, f"{name} is set but empty"
    return value, None


def resolve_credentials(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> Credentials:
    """Workspace id and API key from the environment or files, never from the YAML itself."""
    env = os.environ if environ is None else environ
    problems: list[tuple[str, str]] = []
    workspace_id = settings.moengage.workspace_id
    if not workspace_id:
        workspace_id, problem = _from_env_or_file("MOENGAGE_WORKSPACE_ID", env, None)
        if problem:
            problems.append(("moengage.workspace_id", problem))
        elif not workspace_id:
            problems.append(
                (
                    "moengage.workspace_id",
                    "not set: set MOENGAGE_WORKSPACE_ID or MOENGAGE_WORKSPACE_ID_FILE",
                )
            )
    key_file = settings.moengage.api_key_file
    api_key, problem = _from_env_or_file("MOENGAGE_API_KEY", env, key_file, "moengage.api_key_file")
    if problem:
        problems.append(("moengage.api_key_file" if key_file else "moengage.api_key", problem))
    elif not api_key:
        problems.append(
            (
                "moengage.api_key",
                "not set: set MOENGAGE_API_KEY or MOENGAGE_API_KEY_FILE (or moengage.api_key_file)",
            )
        )
    if problems:
        raise ConfigError(problems)
    assert workspace_id is not None
    assert api_key is not None
    return Credentials(workspace_id=workspace_id, api_key=SecretStr(api_key))
