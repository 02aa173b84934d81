"""Poison or outage: what a request that keeps failing with server errors should do next.

A request answered with 5xx, 408, timeouts or connection errors (verdict RETRY) is resent in place.
Once it has failed for ``moengage.max_retry_seconds`` the connector asks one question: *are other
requests of this instance being accepted?* Precisely, at the moment of a failure answer ``now``:

1. the instance's latest 200 (MoEngage's success body) is at most ``max_retry_seconds`` old, and
2. no request of another lane has had a server error since that 200.

If so, something in this request makes MoEngage fail (a poison element): the request is bisected
(pieces of it are bisected again at their first server error, without waiting) until the element
that keeps failing is alone, and that element is bad input (``send.persistent_server_error``) once
it has failed ``ALONE_ATTEMPTS`` times alone, the condition still holding each time and the latest
200 having come after the request began failing. If not, this is an outage: nothing is bisected or
dead-lettered, the request keeps waiting and resending, and ``/readyz`` and the log say so.
Bisecting is harmless (the pieces are sent in the same order, one at a time), dead-lettering is
not, which is why only it needs repeated lone failures.

A lane that has just dead-lettered such an element judges its next failing requests at once, for
``max_retry_seconds`` after that (the same customer's later elements, in later requests of the
lane, usually fail the same way: waiting the limit again for each would hold the partition for as
many limits). The 200-after-the-request-began-failing condition is what keeps an outage that starts
in that window, while the other lanes are idle, from dead-lettering anything. An instance with
nothing else to send has no evidence either way: its latest 200 grows older than
``max_retry_seconds`` and it waits as in an outage. Pure: no clock of its own, no HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

import orjson

from connector.errors import RejectedByApiError
from connector.sink.client import Answer

ALONE_ATTEMPTS = 3  # failures of the lone element, while others are accepted, before it is bad


class Decision(Enum):
    """What the lane does after a server error."""

    WAIT = "wait"  # resend after the usual backoff
    OUTAGE = "outage"  # failed past the limit but nothing else is accepted: resend, say so
    BISECT = "bisect"  # split, deliver the halves in order
    DEAD_LETTER = "dead_letter"  # the lone element is bad input


@dataclass(slots=True)
class ServerErrorJudge:
    """Remembers the instance's latest 200 and each lane's latest server error, and decides."""

    max_retry: float | None  # None: retry for ever, never isolate
    alone_attempts: int = ALONE_ATTEMPTS
    last_accepted: float | None = None
    _failed: dict[int, float] = field(default_factory=dict)  # lane → its latest server error
    _poisoned: dict[int, float] = field(default_factory=dict)  # lane → its latest dead-letter

    def accepted(self, now: float) -> None:
        self.last_accepted = now

    def failed(self, lane: int, now: float) -> None:
        self._failed[lane] = now

    def dead_lettered(self, lane: int, now: float) -> None:
        """An element of ``lane`` was found to be poison: its next failures are judged at once."""
        self._poisoned[lane] = now

    def others_accepted(self, lane: int, now: float) -> bool:
        """Points 1 and 2 of the module docstring, for a request of ``lane``."""
        last, limit = self.last_accepted, self.max_retry
        if last is None or limit is None or now - last > limit:
            return False
        return all(t <= last for other, t in self._failed.items() if other != lane)

    def decide(
        self,
        lane: int,
        failing_since: float,
        now: float,
        *,
        size: int,
        isolating: bool,
        lone_failures: int,
    ) -> Decision:
        """After a server error to a request of ``size`` elements that has failed since
        ``failing_since`` (for a piece of a request being isolated, since its whole request
        began failing); ``lone_failures`` counts this piece's failures while it was alone."""
        limit = self.max_retry
        if limit is None:
            return Decision.WAIT
        poisoned = self._poisoned.get(lane)
        isolating = isolating or (poisoned is not None and now - poisoned <= limit)
        if not isolating and now - failing_since < limit:
            return Decision.WAIT
        if not self.others_accepted(lane, now):
            return Decision.OUTAGE
        if size > 1:
            return Decision.BISECT
        if lone_failures < self.alone_attempts:
            return Decision.WAIT
        last = self.last_accepted
        if last is None or last <= failing_since:  # nothing accepted since it began failing
            return Decision.OUTAGE
        return Decision.DEAD_LETTER


def persistent_server_error(
    answers: Sequence[Answer], alone: int, lasted: float
) -> RejectedByApiError:
    """Bad input for an element MoEngage failed on alone while it accepted other requests; the
    last answers (status, MoEngage's error or the start of the body) go in its headers."""
    described = [a.describe()[:200] for a in answers]
    err = RejectedByApiError(
        f"MoEngage answered server errors to every request holding this element for "
        f"{lasted:.0f} s (moengage.max_retry_seconds) while it accepted other requests, and "
        f"{alone} times to the element alone; last: {described[-1]}",
        rule="send.persistent_server_error",
    )
    err.details = (
        ("moengage.error.status", str(answers[-1].status)),
        ("moengage.error.answers", orjson.dumps(described).decode()),
    )
    return err
