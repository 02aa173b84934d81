"""Logging set-up: JSON lines off a terminal, console lines on one, the level override, and
secrets (API key, Basic credentials in base64, librdkafka passwords) never in an emitted line."""

from __future__ import annotations

import base64
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from connector.cli import _configure_logging
from connector.config import Settings, parse_settings, secret_values
from connector.errors import ConfigError
from connector.observability import logging as connector_logging
from connector.observability.logging import (
    REDACTED,
    configure,
    register_basic_auth,
    register_secret,
)
from tests.unit.configs import minimal_raw

API_KEY = "K3yOfTheWorkspace9"
WORKSPACE = "WS0001"
SASL_PASSWORD = "kafkaPa55word"
# Characters JSON escapes: a leak must not hide behind an escape sequence.
ODD_SECRET = 'p"w\\d/é-ü'


class _Terminal(io.StringIO):
    """An output stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _isolated_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test gets an empty secret registry and leaves structlog as it found it."""
    monkeypatch.setattr(connector_logging, "_secrets", set())
    saved = structlog.get_config()
    yield
    structlog.reset_defaults()
    structlog.configure(**saved)


def _lines(stream: io.StringIO) -> list[str]:
    return [line for line in stream.getvalue().splitlines() if line]


def _strings(value: Any) -> Iterator[str]:
    """Every string in a decoded JSON document (keys included)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _settings(**over: Any) -> Settings:
    return parse_settings(minimal_raw(**over), base_dir=Path("."), environ={})


# ----- format ------------------------------------------------------------------------------------


def test_auto_format_off_a_terminal_writes_one_json_object_per_line() -> None:
    out = io.StringIO()
    configure("info", "auto", out)
    structlog.get_logger().info("partitions_assigned", topic="users", partition=3)
    structlog.get_logger().warning("request_retry", batch_id=7)

    lines = _lines(out)
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["event"] == "partitions_assigned"
    assert first["topic"] == "users"
    assert first["partition"] == 3
    assert first["level"] == "info"
    assert first["timestamp"].endswith("Z")  # ISO 8601, UTC
    assert second["event"] == "request_retry"
    assert second["level"] == "warning"


def test_auto_format_on_a_terminal_writes_readable_console_lines() -> None:
    out = _Terminal()
    configure("info", "auto", out)
    structlog.get_logger().info("partitions_assigned", topic="users", partition=3)

    (line,) = _lines(out)
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)
    assert "partitions_assigned" in line
    assert "[info" in line
    assert "topic=users" in line
    assert "partition=3" in line
    assert "\x1b[" not in line  # no colour codes


def test_forced_json_on_a_terminal_is_json() -> None:
    out = _Terminal()
    configure("info", "json", out)
    structlog.get_logger().info("connector_starting", version="x")

    (line,) = _lines(out)
    assert json.loads(line)["event"] == "connector_starting"


def test_forced_console_off_a_terminal_is_console() -> None:
    out = io.StringIO()
    configure("info", "console", out)
    structlog.get_logger().info("connector_starting", version="x")

    (line,) = _lines(out)
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)
    assert "connector_starting" in line
    assert "version=x" in line


def test_default_stream_is_standard_error(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    configure("info", "auto")
    structlog.get_logger().info("connector_stopped")
    (line,) = _lines(err)
    assert json.loads(line)["event"] == "connector_stopped"


def test_configured_level_filters_lower_levels() -> None:
    out = io.StringIO()
    configure("warning", "json", out)
    log = structlog.get_logger()
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    assert [json.loads(line)["event"] for line in _lines(out)] == ["w", "e"]


# ----- MOENGAGE_CONNECTOR_LOG_LEVEL --------------------------------------------------------------


def _events_logged_via_cli(
    monkeypatch: pytest.MonkeyPatch, configured: str, env: str | None
) -> list[str]:
    """Configure logging the way `run` does, emit one line per level, return what came out."""
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    if env is None:
        monkeypatch.delenv("MOENGAGE_CONNECTOR_LOG_LEVEL", raising=False)
    else:
        monkeypatch.setenv("MOENGAGE_CONNECTOR_LOG_LEVEL", env)
    _configure_logging(_settings(logging={"level": configured, "format": "json"}))
    log = structlog.get_logger()
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    return [json.loads(line)["event"] for line in _lines(err)]


def test_without_the_environment_variable_the_configured_level_applies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _events_logged_via_cli(monkeypatch, "warning", None) == ["w", "e"]


def test_environment_variable_lowers_the_configured_level(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _events_logged_via_cli(monkeypatch, "warning", "debug") == ["d", "i", "w", "e"]


def test_environment_variable_raises_the_configured_level_case_insensitively(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _events_logged_via_cli(monkeypatch, "debug", "ERROR") == ["e"]


def test_unknown_environment_level_is_an_error_that_lists_the_valid_levels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigError) as info:
        _events_logged_via_cli(monkeypatch, "info", "verbose")
    ((path, message),) = info.value.problems
    assert path == "logging.level"
    assert "MOENGAGE_CONNECTOR_LOG_LEVEL" in message
    assert "'verbose'" in message
    assert "debug, info, warning, error" in message


def test_unknown_configured_level_is_an_error_that_lists_the_valid_levels() -> None:
    with pytest.raises(ConfigError) as info:
        _settings(logging={"level": "verbose"})
    message = dict(info.value.problems)["logging.level"]
    assert all(f"'{level}'" in message for level in ("debug", "info", "warning", "error"))


def test_configured_level_is_case_insensitive_like_the_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _events_logged_via_cli(monkeypatch, "WARNING", None) == ["w", "e"]


def test_configure_refuses_an_unknown_level_naming_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="debug, info, warning, error"):
        configure("verbose", "json", io.StringIO())


# ----- URLs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_user_info_of_any_url_in_a_log_line_is_masked(fmt: str) -> None:
    """Configuration refuses credentials in URLs; a URL that reaches a line anyway (from a
    library, an error) loses its user info even when no secret is registered."""
    out = io.StringIO()
    configure("info", fmt, out)
    structlog.get_logger().info(
        "connector_starting",
        endpoint="http://bob:PW-9f8e@host:8080/v1/transition/W",
        error="cannot reach https://sr-user:sr-pw-4d4d@sr.example/subjects",
    )
    (line,) = _lines(out)
    assert "PW-9f8e" not in line
    assert "sr-pw-4d4d" not in line
    assert "http://***@host:8080/v1/transition/W" in line
    assert "https://***@sr.example/subjects" in line


# ----- redaction ---------------------------------------------------------------------------------


def _register_all() -> list[str]:
    """Register secrets as `run` does; return every form that must never be printed."""
    settings = _settings(
        kafka={
            "bootstrap.servers": "127.0.0.1:1",
            "group.id": "g",
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.username": "svc",
            "sasl.password": SASL_PASSWORD,
        }
    )
    register_basic_auth(WORKSPACE, API_KEY)
    found = secret_values(settings)
    assert SASL_PASSWORD in found
    for secret in found:
        register_secret(secret)
    token = base64.b64encode(f"{WORKSPACE}:{API_KEY}".encode()).decode()
    assert token.endswith("="), "the test wants a padded token, to check both forms"
    return [API_KEY, token, token.rstrip("="), SASL_PASSWORD]


def _emit_everywhere(log: Any, secret: str) -> None:
    """The secret in every place an event can hold a string."""
    log.info(f"starting with {secret}")  # the event text itself
    log.info("top", value=secret)
    log.info("inside", value=f"Authorization: Basic {secret}; more")
    log.info("nested", value={"outer": {"inner": secret}, "list": ["a", f"x{secret}y"]})
    log.info("list", value=[secret, (secret, 1)])
    log.info("tuple", value=(f"-{secret}-",))
    log.info("positional %s", secret)
    log.bind(bound=secret).info("bound")
    structlog.contextvars.bind_contextvars(ctx=secret)
    try:
        log.info("contextvar")
    finally:
        structlog.contextvars.clear_contextvars()
    error = RuntimeError(f"refused: key={secret}")
    log.error("exception_value", error=error)
    log.error("exception_in_list", errors=[error])
    try:
        raise ValueError(f"boom {secret}") from error
    except ValueError:
        log.exception("with_traceback")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_registered_secrets_never_appear_whatever_holds_them(fmt: str) -> None:
    forms = _register_all()
    out = io.StringIO()
    configure("debug", fmt, out)
    log = structlog.get_logger()
    for secret in forms:
        _emit_everywhere(log, secret)

    text = out.getvalue()
    assert text.count("starting with") == len(forms)  # every event was emitted
    assert REDACTED in text
    for secret in forms:
        assert secret not in text
    # The password half of Basic is the API key: none of its pieces shows either.
    assert f"{WORKSPACE}:{API_KEY}" not in text


def test_redaction_survives_json_escaping() -> None:
    register_secret(ODD_SECRET)
    out = io.StringIO()
    configure("info", "json", out)
    _emit_everywhere(structlog.get_logger(), ODD_SECRET)

    lines = _lines(out)
    assert lines
    for line in lines:
        for s in _strings(json.loads(line)):
            assert ODD_SECRET not in s


def test_redacted_line_keeps_the_rest_of_the_text() -> None:
    register_secret(API_KEY)
    out = io.StringIO()
    configure("info", "json", out)
    structlog.get_logger().info("x", value=f"before {API_KEY} after", n=3)
    doc = json.loads(_lines(out)[0])
    assert doc["value"] == f"before {REDACTED} after"
    assert doc["n"] == 3


def test_basic_auth_forms_are_redacted_when_only_the_pair_is_registered() -> None:
    register_basic_auth(WORKSPACE, API_KEY)
    token = base64.b64encode(f"{WORKSPACE}:{API_KEY}".encode()).decode()
    out = io.StringIO()
    configure("info", "json", out)
    log = structlog.get_logger()
    log.info("header", headers={"Authorization": f"Basic {token}"})
    log.info("unpadded", value=token.rstrip("="))
    log.info("key", value=API_KEY)
    text = out.getvalue()
    assert token.rstrip("=") not in text
    assert API_KEY not in text
    assert text.count(REDACTED) == 3


def test_short_values_are_not_registered() -> None:
    """Redacting a 1-3 character value would mangle every line; such values are ignored."""
    register_secret("ab")
    register_secret("")
    register_secret(None)
    out = io.StringIO()
    configure("info", "json", out)
    structlog.get_logger().info("label", value="abc")
    assert json.loads(_lines(out)[0])["value"] == "abc"


class _Holder:
    """Some object whose repr shows what it holds."""

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"_Holder({self.value})"


@pytest.mark.parametrize("fmt", ["json", "console"])
@pytest.mark.parametrize(
    "holder",
    [
        pytest.param(lambda s: s.encode(), id="bytes"),
        pytest.param(lambda s: {s}, id="set"),
        pytest.param(lambda s: {s: 1}, id="dict-key"),
        pytest.param(
            lambda s: type("Obj", (), {"__repr__": lambda self: f"Obj({s})"})(), id="repr"
        ),
    ],
)
def test_secret_in_other_containers_is_redacted(holder: Any, fmt: str) -> None:
    register_secret(API_KEY)
    out = io.StringIO()
    configure("info", fmt, out)
    structlog.get_logger().info("x", value=holder(API_KEY))
    assert API_KEY not in out.getvalue()
    assert REDACTED in out.getvalue()
