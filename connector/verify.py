"""Proof of ingestion: were the customers we delivered really ingested, with what we sent?

A 200 from Bulk Import means "accepted for processing" (seeds 000/002), not "ingested". So the
delivery path keeps a small local record of recently delivered customer elements
(:class:`DeliveredLog`, a bounded JSON Lines file), and ``moengage-connector verify`` samples ids
from it, looks them up with the Get User API (seed 003) and reports who is missing and which
attributes MoEngage holds with another value than the last one sent.

The record holds attribute values (personal data, often): it is written with mode 0600, only when
configured, and its size is bounded. One file per connector instance: two processes compacting
the same file would lose each other's lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import orjson
import structlog

from connector.config import Credentials, Settings
from connector.sink.export import export_users

log = structlog.get_logger(__name__)

JsonDict = dict[str, Any]
SHOWN_IDS = 20  # ids listed per line of the report; the rest are counted


class DeliveredLog:
    """Customer elements MoEngage accepted, newest last, at most ``2 * max_entries`` lines on disk.

    The delivery path calls :meth:`append_elements` (or :meth:`append_many`) once per accepted
    request: one ``write`` per call, no parsing of the already-encoded elements. When the file
    passes twice the bound it is rewritten (atomically, by rename) to the newest ``max_entries``,
    so the cost of compaction is spread over ``max_entries`` appends. Opening fails loudly (a
    configuration problem); a write that fails later (disk full) is logged once and the record
    stops, because delivery must never fail for the sake of this aid.
    """

    def __init__(self, path: str | Path, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.path = Path(path)
        self.max_entries = max_entries
        self.failed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.entries = self._recover()
        self._file = self._open()
        if self.entries > 2 * max_entries:
            self.compact()

    def _recover(self) -> int:
        """Lines already in the file; a torn last line (a crash mid-write) is cut off."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return 0
        whole = data.rfind(b"\n") + 1
        if whole != len(data):
            with self.path.open("r+b") as f:
                f.truncate(whole)
        return data.count(b"\n", 0, whole)

    def _open(self) -> IO[bytes]:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return os.fdopen(fd, "ab")

    def append_elements(self, elements: Sequence[bytes]) -> None:
        """Customer elements exactly as sent (orjson-encoded: one line each, never a newline)."""
        if elements:
            self._write(b"\n".join(elements) + b"\n", len(elements))

    def append_many(self, entries: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        """``(customer_id, attributes)`` pairs, for callers that hold them decoded."""
        lines = [
            orjson.dumps({"type": "customer", "customer_id": cid, "attributes": attrs})
            for cid, attrs in entries
        ]
        if lines:
            self._write(b"\n".join(lines) + b"\n", len(lines))

    def _write(self, data: bytes, lines: int) -> None:
        if self.failed:
            return
        try:
            self._file.write(data)
            self._file.flush()  # one syscall per request; a reader (verify) sees whole lines
            self.entries += lines
            if self.entries > 2 * self.max_entries:
                self.compact()
        except OSError as e:
            self.failed = True
            log.warning(
                "delivered_log_failed",
                path=str(self.path),
                error=e.strerror or type(e).__name__,
                note="delivery goes on; 'verify' will not see customers delivered from now on",
            )

    def compact(self) -> None:
        """Keep the newest ``max_entries`` lines: write them aside, then rename over the file."""
        self._file.close()
        lines = self.path.read_bytes().splitlines(keepends=True)[-self.max_entries :]
        tmp = self.path.with_name(f".{self.path.name}.compacting")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.writelines(lines)
        tmp.replace(self.path)
        self.entries = len(lines)
        self._file = self._open()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()

    def __enter__(self) -> DeliveredLog:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def read_delivered(path: str | Path) -> dict[str, JsonDict]:
    """Customer id -> the attributes last sent for it (later lines win, attribute by attribute,
    as MoEngage merges them). Lines that are not customer elements with a ``customer_id`` are
    skipped, and so are ``update_existing_only`` updates of ids not seen created here: whether
    they created anything depends on state this record does not have."""
    delivered: dict[str, JsonDict] = {}
    with Path(path).open("rb") as f:
        for line in f:
            try:
                element = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(element, dict) or element.get("type", "customer") != "customer":
                continue
            cid = element.get("customer_id")
            attrs = element.get("attributes")
            if not isinstance(cid, str) or not isinstance(attrs, dict):
                continue
            if element.get("update_existing_only") in (True, "true") and cid not in delivered:
                continue
            delivered.setdefault(cid, {}).update(attrs)
    return delivered


@dataclass(frozen=True, slots=True)
class Mismatch:
    """An attribute MoEngage holds with another value than the last one sent (or not at all)."""

    customer_id: str
    attribute: str
    sent: Any
    returned: Any
    missing: bool = False

    def render(self, show_values: bool) -> str:
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

    @property
    def exit_code(self) -> int:
        ok = self.sampled and not self.not_found and not self.mismatches
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
        if self.exit_code == 0:
            lines.append("OK: every sampled customer is in MoEngage with the attributes last sent.")
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
    """Attributes sent (not null) whose returned value differs or is absent."""
    out = []
    for name, value in sent.items():
        if value is None:
            continue  # skipped or cleared: MoEngage keeps no value to compare with
        if name not in returned:
            out.append(Mismatch(customer_id, name, value, None, missing=True))
        elif returned[name] != value:
            out.append(Mismatch(customer_id, name, value, returned[name]))
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
    account, and :class:`~connector.sink.export.ExportError` if it never answers usably.
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
    mismatches = [
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
        mismatches=mismatches,
    )
