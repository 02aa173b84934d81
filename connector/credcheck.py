"""The start-up check of the MoEngage credentials: one harmless authenticated request.

MoEngage's Get User API (``POST /v1/customers/export``) is asked for one customer id that cannot
exist. With the right workspace id and API key it answers 200 with that id in
``users_not_found``; with a wrong key it answers 401 (a suspended account 403, a wrong workspace
id 409 or 400). Nothing is written to the account and the request costs one user of the Get User
API's per-minute budget.

- A refusal (any answer :class:`FatalApiError` stands for, a redirect included) raises it: the
  connector stops with exit code 3 before its consumer subscribes, so no record is read and
  nothing is committed.
- No usable answer (a connection error, a timeout, a 5xx, a 429, a 200 that is not MoEngage's)
  is retried with capped exponential backoff (``moengage.retry_initial_ms`` ..
  ``retry_max_ms``) for at most ``moengage.startup_check_seconds``. After that the connector
  starts anyway, with a warning: MoEngage being out of reach is what delivery's retries and
  ``/readyz`` are for, and the first refusal it answers still stops the connector with exit 3
  (nothing is committed without a 200).
- ``startup_check_seconds: 0`` turns the check off (for a gateway that passes only the Bulk Import
  API, say).

``validate --online`` runs the same check once, with the same bound.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import structlog

from connector.config import Credentials, Settings
from connector.errors import FatalApiError
from connector.proof.export import ExportError, export_users
from connector.sink.delivery import RetryPolicy

log = structlog.get_logger(__name__)

# No customer has this id: MoEngage answers it in users_not_found.
PROBE_CUSTOMER_ID = "moengage-connector-credentials-check-0000"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """``confirmed``: MoEngage accepted the credentials; otherwise ``detail`` says what the last
    attempt got instead (the check ran out of time without an answer)."""

    confirmed: bool
    detail: str


async def check_credentials(
    session: aiohttp.ClientSession,
    settings: Settings,
    credentials: Credentials,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
) -> CheckResult:
    """Ask the Get User API for :data:`PROBE_CUSTOMER_ID`; raise :class:`FatalApiError` if
    MoEngage refuses the credentials (see the module docstring for the rest)."""
    m = settings.moengage
    endpoint = m.endpoint
    policy = RetryPolicy(m.retry_initial_ms / 1000, m.retry_max_ms / 1000)
    jitter = rng or random.Random()  # noqa: S311 - jitter, not cryptography
    deadline = clock() + m.startup_check_seconds
    attempt = 0
    while True:
        timeout = max(0.5, min(m.request_timeout_seconds, deadline - clock()))
        try:
            await export_users(
                session,
                endpoint,
                credentials.workspace_id,
                credentials.api_key,
                [PROBE_CUSTOMER_ID],
                fields=["customer_id"],
                timeout_seconds=timeout,
                max_attempts=1,
                clock=clock,
                sleep=sleep,
            )
        except FatalApiError as e:
            log.error(
                "moengage_credentials_refused",
                message=f"MoEngage refused the connector's credentials or account: {e}",
                status=e.status,
                error_type=e.error_type,
                endpoint=endpoint,
            )
            raise
        except ExportError as e:
            detail = e.last or str(e)
        else:
            log.info("moengage_credentials_accepted", endpoint=endpoint, attempts=attempt + 1)
            return CheckResult(True, "MoEngage accepted the credentials")
        delay = policy.backoff(attempt, jitter)
        attempt += 1
        if clock() + delay >= deadline:
            log.warning(
                "moengage_credentials_unconfirmed",
                message="no answer from MoEngage's Get User API in time: starting anyway; the "
                "first refusal MoEngage answers stops the connector (exit 3)",
                endpoint=endpoint,
                attempts=attempt,
                last=detail,
            )
            return CheckResult(False, detail)
        log.warning(
            "moengage_credentials_check_retry",
            endpoint=endpoint,
            attempt=attempt,
            last=detail,
            delay_s=round(delay, 3),
        )
        await sleep(delay)
