"""MoEngageClient over a real aiohttp session on loopback (a refused connection and a request that
gets no answer in time are both retriable, status 0, and say nothing of the API key; a redirect is
never followed), and the classification table from an answer to a verdict on its own."""

from __future__ import annotations

import asyncio
import base64
import socket

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from connector.sink.client import (
    SNIPPET_CHARS,
    TOO_LARGE_FLOOR,
    Answer,
    MoEngageClient,
    Verdict,
    classify,
)

WORKSPACE = "WS0001"
API_KEY = "K3yOfTheWorkspace9"
TOKEN = base64.b64encode(f"{WORKSPACE}:{API_KEY}".encode()).decode()
BODY = b'{"type":"transition","elements":[{"type":"customer","customer_id":"c1"}]}'


def _free_loopback_port() -> int:
    """A port on 127.0.0.1 where, once this returns, nothing listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _assert_no_credentials(answer: Answer) -> None:
    for text in (answer.describe(), repr(answer), str(answer.message)):
        assert API_KEY not in text
        assert TOKEN.rstrip("=") not in text


async def test_refused_connection_is_a_retriable_connection_error() -> None:
    port = _free_loopback_port()
    async with aiohttp.ClientSession() as session:
        client = MoEngageClient(
            session, f"http://127.0.0.1:{port}", WORKSPACE, SecretStr(API_KEY), 5.0
        )
        answer = await client.post(BODY)

    assert answer.verdict is Verdict.RETRY
    assert answer.status == 0
    assert answer.error_type is not None
    # The type is the name of the aiohttp connection error that happened.
    error_class = getattr(aiohttp, answer.error_type)
    assert issubclass(error_class, aiohttp.ClientConnectionError)
    assert "Connect" in answer.error_type
    assert answer.request_id is None
    assert answer.retry_after is None
    text = answer.describe()
    assert text.startswith("connection error")
    assert f"127.0.0.1:{port}" in text  # says where it could not connect
    _assert_no_credentials(answer)
    assert API_KEY not in repr(client)


async def test_request_without_an_answer_in_time_is_a_retriable_timeout() -> None:
    entered = asyncio.Event()
    never = asyncio.Event()  # set only to let the handler end at tear-down
    seen: dict[str, str] = {}

    async def stall(request: web.Request) -> web.Response:
        seen["authorization"] = request.headers.get("Authorization", "")
        seen["path"] = request.path
        seen["body"] = (await request.read()).decode()
        entered.set()
        await never.wait()
        return web.json_response({"status": "success"})

    app = web.Application()
    app.router.add_post("/v1/transition/{workspace}", stall)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            client = MoEngageClient(
                session, f"http://127.0.0.1:{server.port}", WORKSPACE, SecretStr(API_KEY), 0.2
            )
            loop = asyncio.get_running_loop()
            started = loop.time()
            answer = await client.post(BODY)
            elapsed = loop.time() - started
    finally:
        never.set()
        await server.close()

    # The request reached the handler (so this is not a connection error) with Basic auth.
    assert entered.is_set()
    assert seen["path"] == f"/v1/transition/{WORKSPACE}"
    assert seen["authorization"] == f"Basic {TOKEN}"
    assert seen["body"] == BODY.decode()
    assert answer.verdict is Verdict.RETRY
    assert answer.status == 0
    assert answer.error_type == "Timeout"
    assert "timeout" in answer.describe()
    assert elapsed >= 0.15  # it ended because the 0.2 s budget ran out, not earlier
    _assert_no_credentials(answer)


# ----- the classification table ---------------------------------------------------------------

SUCCESS = (
    b'{"status":"success","message":"Your request has been accepted and will be processed soon."}'
)
HTML = b"<html><head><title>400 Bad Request</title></head><body>Request blocked</body></html>"


def moengage_error(etype: str, message: str = "m") -> bytes:
    error = {"message": message, "type": etype, "request_id": "oWvxnUuo"}
    return orjson.dumps({"status": "fail", "error": error})


@pytest.mark.parametrize(
    ("status", "body", "sent", "verdict"),
    [
        (200, SUCCESS, 100, Verdict.ACCEPTED),
        (202, SUCCESS, 100, Verdict.ACCEPTED),
        (200, b"", 100, Verdict.UNEXPECTED),
        (204, b"", 100, Verdict.UNEXPECTED),
        (200, b"<html>Welcome to the hotel wifi</html>", 100, Verdict.UNEXPECTED),
        (200, b'{"status":"ok"}', 100, Verdict.UNEXPECTED),
        (200, b'["success"]', 100, Verdict.UNEXPECTED),
        (200, moengage_error("MissingAttributeError"), 100, Verdict.UNEXPECTED),
        (301, b"", 100, Verdict.FATAL),
        (307, HTML, 100, Verdict.FATAL),
        (400, moengage_error("MissingAttributeError"), 100, Verdict.REJECTED),
        (400, moengage_error("Malformed JSON"), 100, Verdict.REJECTED),
        (400, moengage_error("Blacklisted"), 100, Verdict.FATAL),
        (400, moengage_error("InvalidParams"), 100, Verdict.FATAL),
        (400, HTML, 100, Verdict.UNEXPECTED),
        (400, b"", 100, Verdict.UNEXPECTED),
        (400, b'{"error":"bad request","status":400}', 100, Verdict.UNEXPECTED),
        (400, b'{"status":"fail","error":"no type"}', 100, Verdict.UNEXPECTED),
        (413, moengage_error("Payload too large"), 100_000, Verdict.TOO_LARGE),
        (413, moengage_error("Payload too large"), 90, Verdict.UNEXPECTED),
        (413, HTML, 100_000, Verdict.UNEXPECTED),
        (413, b"", 90, Verdict.UNEXPECTED),
        (429, moengage_error("Rate limit exceeded"), 100, Verdict.THROTTLED),
        (429, HTML, 100, Verdict.THROTTLED),
        (408, b"", 100, Verdict.RETRY),
        (500, moengage_error("Server Error"), 100, Verdict.RETRY),
        (502, HTML, 100, Verdict.RETRY),
        (503, b"", 100, Verdict.RETRY),
        (401, moengage_error("Authentication required"), 100, Verdict.FATAL),
        (403, HTML, 100, Verdict.FATAL),
        (404, b"", 100, Verdict.FATAL),
        (409, moengage_error("Conflict"), 100, Verdict.FATAL),
        (415, moengage_error("Unsupported media type"), 100, Verdict.FATAL),
    ],
)
def test_classification_table(status: int, body: bytes, sent: int, verdict: Verdict) -> None:
    assert classify(status, body, sent_bytes=sent).verdict is verdict


def test_only_moengage_s_success_body_acknowledges() -> None:
    # Every 2xx that is not MoEngage's success answer is something else's answer.
    for body in (b"", b"OK", b"null", b"{}", b'{"status":"SUCCESS"}', b'{"success":true}'):
        assert classify(200, body).verdict is not Verdict.ACCEPTED, body


def test_a_moengage_element_error_keeps_its_fields() -> None:
    answer = classify(400, moengage_error("MissingAttributeError", "customer_id not found"))
    assert (answer.error_type, answer.message, answer.request_id) == (
        "MissingAttributeError",
        "customer_id not found",
        "oWvxnUuo",
    )


def test_an_answer_not_from_moengage_quotes_the_body_bounded_and_printable() -> None:
    body = b"<html>\n\t<body>" + b"x" * 5000 + b"\x00\x1b[31m</body></html>"
    answer = classify(400, body)
    assert answer.verdict is Verdict.UNEXPECTED
    assert answer.message is not None
    assert "<html> <body>xxx" in answer.message
    assert "\n" not in answer.message
    assert "\t" not in answer.message
    assert len(answer.message) < SNIPPET_CHARS + 80
    assert all(c.isprintable() for c in answer.message)
    assert "(empty body)" in str(classify(200, b"").message)


def test_a_quoted_body_never_carries_the_credentials() -> None:
    echo = f'{{"headers":{{"Authorization":"Basic {TOKEN}","X-Key":"{API_KEY}"}}}}'.encode()
    answer = classify(200, echo, secrets=[TOKEN, API_KEY])
    assert answer.verdict is Verdict.UNEXPECTED
    _assert_no_credentials(answer)
    assert "[redacted]" in answer.describe()


def test_a_quoted_body_never_carries_the_credentials_json_escaped() -> None:
    # An echo written by a JSON encoder that escapes '/' (PHP's does by default): a base64 token
    # or a key holding '/' no longer matched, and the quote went to logs, /readyz and (for a 5xx)
    # the dead-letter headers.
    key = "k/3y?0"
    token = base64.b64encode(f"{WORKSPACE}:{key}".encode()).decode()
    assert "/" in token.rstrip("=")

    def escaped(text: str) -> str:
        return text.replace("/", "\\/")

    echo = f'{{"h":{{"Authorization":"Basic {escaped(token)}","X-Key":"{escaped(key)}"}}}}'
    for status in (200, 502):
        answer = classify(status, echo.encode(), secrets=[token, token.rstrip("="), key])
        for secret in (key, token.rstrip("=")):
            assert secret not in answer.describe()
            assert escaped(secret) not in answer.describe()
        assert "[redacted]" in answer.describe()


def test_a_small_413_says_it_is_not_about_size() -> None:
    answer = classify(413, moengage_error("Payload too large"), sent_bytes=90)
    assert "90-byte" in answer.describe()
    assert "128 KB" in answer.describe()
    assert TOO_LARGE_FLOOR <= 128 * 1024


def test_a_redirect_is_fatal_and_names_where_it_points() -> None:
    url = "http://127.0.0.1:8080/v1/transition/WS"
    answer = classify(302, b"", {"Location": "/landing"}, url=url)
    assert answer.verdict is Verdict.FATAL
    assert "http://127.0.0.1:8080/landing" in answer.describe()
    assert answer.hint is not None
    assert "never follows redirects" in answer.hint
    assert "https://" not in answer.hint.split(".")[0]


def test_a_redirect_from_http_to_https_says_to_use_https() -> None:
    url = "http://api-01.moengage.com/v1/transition/WS"
    location = "https://api-01.moengage.com/v1/transition/WS"
    answer = classify(301, b"", {"Location": location}, url=url)
    assert answer.verdict is Verdict.FATAL
    assert location in answer.describe()
    assert answer.hint is not None
    assert answer.hint.startswith("moengage.base_url starts with http://")


async def test_a_redirect_is_not_followed() -> None:
    """An API answering the POST with 301 -> /landing: the connector must not GET /landing and
    take its 200 for MoEngage's."""
    landed: list[str] = []

    async def moved(request: web.Request) -> web.Response:
        await request.read()
        raise web.HTTPMovedPermanently("/landing")

    async def landing(request: web.Request) -> web.Response:
        landed.append(request.method)
        return web.json_response({"status": "success"})

    app = web.Application()
    app.router.add_post("/v1/transition/{workspace}", moved)
    app.router.add_route("*", "/landing", landing)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with aiohttp.ClientSession() as session:
            client = MoEngageClient(session, base, WORKSPACE, SecretStr(API_KEY), 5.0)
            answer = await client.post(BODY)
    finally:
        await server.close()
    assert landed == []
    assert answer.status == 301
    assert answer.verdict is Verdict.FATAL
    assert f"{base}/landing" in answer.describe()
    _assert_no_credentials(answer)


async def test_an_echoing_proxy_s_200_is_not_accepted_and_not_quoted_with_the_key() -> None:
    async def echo(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"headers": dict(request.headers)})

    app = web.Application()
    app.router.add_post("/v1/transition/{workspace}", echo)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            client = MoEngageClient(
                session, f"http://127.0.0.1:{server.port}", WORKSPACE, SecretStr(API_KEY), 5.0
            )
            answer = await client.post(BODY)
    finally:
        await server.close()
    assert answer.status == 200
    assert answer.verdict is Verdict.UNEXPECTED
    assert "Authorization" in answer.describe()  # the body was quoted...
    _assert_no_credentials(answer)  # ...without what it echoed of our credentials
