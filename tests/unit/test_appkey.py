"""Every Data API request carries ``MOE-APPKEY`` with the workspace id (Data API overview: "Set the
MOE-APPKEY header"): Bulk Import from the sink's client, Get User from verify's client. The
in-process sandbox sees the header and flags nothing."""

from __future__ import annotations

import aiohttp
import orjson
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from connector.proof.export import export_users
from connector.sandbox import SandboxSettings, create_app
from connector.sandbox.server import STATE
from connector.sink.client import MoEngageClient, Verdict

WS, KEY = "DEMO_WORKSPACE", "demo-api-key"


async def test_bulk_import_and_get_user_send_the_workspace_id_as_moe_appkey() -> None:
    app = create_app(SandboxSettings(workspace_id=WS, api_key=KEY))
    seen: list[str | None] = []

    async def spy(request: aiohttp.web.Request, handler: aiohttp.typedefs.Handler):  # type: ignore[no-untyped-def]
        seen.append(request.headers.get("MOE-APPKEY"))
        return await handler(request)

    app.middlewares.append(aiohttp.web.middleware(spy))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        endpoint = f"http://127.0.0.1:{server.port}"
        async with aiohttp.ClientSession() as session:
            client = MoEngageClient(session, endpoint, WS, SecretStr(KEY), 5.0)
            element = {"type": "customer", "customer_id": "u1", "attributes": {"a": 1}}
            body = orjson.dumps({"type": "transition", "elements": [element]})
            answer = await client.post(body)
            assert answer.verdict is Verdict.ACCEPTED
            result = await export_users(session, endpoint, WS, SecretStr(KEY), ["u1"])
            assert set(result.found) == {"u1"}
        state = app[STATE]
    finally:
        await server.close()
    assert seen == [WS, WS]
    assert (state.stats.missing_appkey, state.stats.wrong_appkey) == (0, 0)
    assert list(state.appkey_flags) == []
