"""MoEngageClient over a real aiohttp session on loopback: a refused connection and a request
that gets no answer in time are both retriable, status 0, and say nothing of the API key."""

from __future__ import annotations

import asyncio
import base64
import socket

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from connector.sink.client import Answer, MoEngageClient, Verdict

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
