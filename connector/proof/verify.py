"""``moengage-connector verify``: samples ids from the delivered log, looks them up with the Get
User API and reports who is missing and which attributes MoEngage holds with another value than
the last one sent."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from connector.config import Credentials, Settings
from connector.proof.delivered import read_delivered
from connector.proof.export import export_users
from connector.proof.losses import explain

log = structlog.get_logger(__name__)

SHOWN_IDS = 20  # ids listed per line of the report; the rest are counted


@dataclass(frozen=True, slots=True)
class Mismatch:
    """An attribute MoEngage holds with another value than the last one sent (or not at all)."""

    customer_id: str
    attribute: str
    sent: Any
    returned: Any
    missing: bool = False
    # Set when MoEngage's data-tracking policy explains the difference: (rule id, what it did).
    policy: tuple[str, str] | None = None

    def render(self, show_values: bool) -> str:
        if self.policy is not None:
            rule, what = self.policy
            return (
                f"{self.customer_id}: {self.attribute} {what} by MoEngage's data-tracking "
                f"policy ({rule})"
            )
        if self.missing:
            return f"{self.customer_id}: {self.attribute} is not in MoEngage's answer"
        if not show_values:
            return f"{self.customer_id}: {self.attribute} differs"
        sent, returned = self.sent, self.returned
        return f"{self.customer_id}: {self.attribute} sent {sent!r}, MoEngage has {returned!r}"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What a ``verify`` run found; ``exit_code`` is 0 only if every sampled user was found
    with every attribute as last sent (and at least one was sampled)."""

    source: str
    recorded: int
    sampled: list[str] = field(default_factory=list)
    found: list[str] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)
    mismatches: list[Mismatch] = field(default_factory=list)
    note: str | None = None
    policy_losses: list[Mismatch] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        ok = self.sampled and not self.not_found and not self.mismatches and not self.policy_losses
        return 0 if ok else 1

    def render(self, show_values: bool = False) -> str:
        """The report for a terminal; attribute values only with ``show_values`` (personal data)."""
        if not self.sampled:
            return f"FAIL: nothing to verify: {self.note or 'no delivered customers recorded'}"
        lines = [
            f"Checked {len(self.sampled)} of {self.recorded} delivered customer(s) recorded in "
            f"{self.source} with the Get User API:",
            f"  found        {len(self.found)}",
            f"  not found    {len(self.not_found)}{_ids(self.not_found)}",
        ]
        users = len({m.customer_id for m in self.mismatches})
        lines.append(f"  mismatched   {users} user(s), {len(self.mismatches)} attribute(s)")
        lines.extend(f"    {m.render(show_values)}" for m in self.mismatches)
        lost = len({m.customer_id for m in self.policy_losses})
        lines.append(
            f"  policy loss  {lost} user(s), {len(self.policy_losses)} attribute(s) "
            "(Data Tracking Policies)"
        )
        lines.extend(f"    {m.render(show_values)}" for m in self.policy_losses)
        if self.exit_code == 0:
            lines.append("OK: every sampled customer is in MoEngage with the attributes last sent.")
        elif not self.not_found and not self.mismatches:
            lines.append(
                f"FAIL: {len(self.policy_losses)} attribute(s) lost to MoEngage's data-tracking "
                "policy: the connector's policy settings let them through (allow); see the "
                "README's \"MoEngage's data policy\"."
            )
        else:
            lines.append(
                f"FAIL: {len(self.not_found)} not found, {len(self.mismatches)} mismatch(es). "
                "A 200 means 'accepted for processing': customers delivered in the last minutes "
                "may still be processing, so run again later before concluding."
            )
        return "\n".join(lines)


def _ids(ids: list[str]) -> str:
    if not ids:
        return ""
    more = f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else ""
    return ": " + ", ".join(ids[:SHOWN_IDS]) + more


def compare(
    customer_id: str, sent: Mapping[str, Any], returned: Mapping[str, Any]
) -> list[Mismatch]:
    """Attributes sent (not null) whose returned value differs or is absent; each says whether
    MoEngage's data-tracking policy explains it (``policy``)."""
    out = []
    for name, value in sent.items():
        if value is None:
            continue  # skipped or cleared: MoEngage keeps no value to compare with
        if name in returned and returned[name] == value:
            continue
        got = returned.get(name)
        why = explain(name, value, returned)
        out.append(Mismatch(customer_id, name, value, got, name not in returned, why))
    return out


async def verify(
    settings: Settings,
    credentials: Credentials,
    sample: int,
    path: str | Path,
    *,
    session: aiohttp.ClientSession | None = None,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> VerifyReport:
    """Sample up to ``sample`` delivered customers from ``path`` and check them in MoEngage.

    Raises :class:`~connector.errors.FatalApiError` if MoEngage refuses the credentials or the
    account, and :class:`~connector.proof.export.ExportError` if it never answers usably.
    """
    source = str(path)
    try:
        delivered = read_delivered(path)
    except FileNotFoundError:
        return VerifyReport(source, 0, note=f"{source} does not exist (is the log configured?)")
    ids = list(delivered)
    pick = rng or random.Random()  # noqa: S311 - sampling, not cryptography
    chosen = sorted(pick.sample(ids, min(max(sample, 0), len(ids))))
    if not chosen:
        return VerifyReport(source, len(ids), note=f"no delivered customers recorded in {source}")
    own_session = session is None
    http = session or aiohttp.ClientSession()
    try:
        result = await export_users(
            http,
            settings.moengage.endpoint,
            credentials.workspace_id,
            credentials.api_key,
            chosen,
            timeout_seconds=settings.moengage.request_timeout_seconds,
            clock=clock,
            sleep=sleep,
        )
    finally:
        if own_session:
            await http.close()
    differences = [
        m
        for cid in chosen
        if cid in result.found
        for m in compare(cid, delivered[cid], result.found[cid])
    ]
    return VerifyReport(
        source,
        len(ids),
        sampled=chosen,
        found=[cid for cid in chosen if cid in result.found],
        not_found=[cid for cid in chosen if cid not in result.found],
        mismatches=[m for m in differences if m.policy is None],
        policy_losses=[m for m in differences if m.policy is not None],
    )
