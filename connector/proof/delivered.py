"""The delivered log: a bounded local record of the customer elements MoEngage accepted.

The record holds attribute values (personal data, often): it is written with mode 0600, only when
configured, and its size is bounded. One file per connector instance: two processes compacting
the same file would lose each other's lines.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import orjson
import structlog

from connector.batching import Batch
from connector.config import Settings
from connector.errors import ConfigError

log = structlog.get_logger(__name__)

JsonDict = dict[str, Any]


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

    def accepted(self, batch: Batch) -> None:
        """A request MoEngage accepted: its customer elements, in one write."""
        self.append_elements(
            [p for p, kind in zip(batch.parts, batch.kinds, strict=True) if kind == "customer"]
        )

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


def open_delivered_log(settings: Settings) -> DeliveredLog | None:
    """The record of delivered customers for 'verify', if configured; a path that cannot be
    opened is a configuration error (found at start, not at the first delivery)."""
    o = settings.observability
    if o.delivered_log_path is None:
        return None
    try:
        return DeliveredLog(o.delivered_log_path, o.delivered_log_max)
    except OSError as e:
        problem = f"cannot open {o.delivered_log_path}: {e.strerror or e}"
        raise ConfigError([("observability.delivered_log_path", problem)]) from None
