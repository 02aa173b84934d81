"""Proof of ingestion: the bounded delivered-customers record, and verify() against the sandbox."""

from __future__ import annotations

import base64
import errno
import random
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer
from pydantic import SecretStr
from structlog.testing import capture_logs

from connector.config import Credentials, Settings, parse_settings
from connector.proof.delivered import DeliveredLog, read_delivered
from connector.proof.verify import Mismatch, VerifyReport, verify
from connector.sandbox import SandboxSettings, create_app

WS = "DEMO_WORKSPACE"
KEY = "demo-api-key"
CREDS = Credentials(workspace_id=WS, api_key=SecretStr(KEY))


def customer(cid: str, **attributes: Any) -> bytes:
    return orjson.dumps({"type": "customer", "customer_id": cid, "attributes": attributes})


def lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


# ----- DeliveredLog -------------------------------------------------------------------------------


def test_appended_customers_are_read_back(tmp_path: Path) -> None:
    path = tmp_path / "delivered.jsonl"
    with DeliveredLog(path) as log:
        log.append_many([("u1", {"plan": "pro"}), ("u2", {"age": 30})])
    assert read_delivered(path) == {"u1": {"plan": "pro"}, "u2": {"age": 30}}


def test_encoded_elements_are_written_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "delivered.jsonl"
    with DeliveredLog(path) as log:
        log.append_elements([customer("u1", plan="pro"), customer("u2")])
    assert path.read_bytes() == customer("u1", plan="pro") + b"\n" + customer("u2") + b"\n"


def test_later_updates_win_attribute_by_attribute(tmp_path: Path) -> None:
    path = tmp_path / "delivered.jsonl"
    with DeliveredLog(path) as log:
        log.append_many([("u1", {"plan": "free", "age": 30})])
        log.append_many([("u1", {"plan": "pro"})])
    assert read_delivered(path) == {"u1": {"plan": "pro", "age": 30}}


def test_file_stays_unbounded_until_twice_the_maximum(tmp_path: Path) -> None:
    path = tmp_path / "delivered.jsonl"
    with DeliveredLog(path, max_entries=5) as log:
        for i in range(10):
            log.append_many([(f"u{i}", {})])
    assert len(lines(path)) == 10


def test_past_twice_the_maximum_it_keeps_the_newest_entries(tmp_path: Path) -> None:
    path = tmp_path / "delivered.jsonl"
    with DeliveredLog(path, max_entries=5) as log:
        for i in range(11):
            log.append_many([(f"u{i}", {})])
        assert log.entries == 5
    assert [line["customer_id"] for line in lines(path)] == ["u6", "u7", "u8", "u9", "u10"]


def test_appending_after_compaction_continues_the_file(tmp_path: Path) -> None:
    path = tmp_path / "delivered.jsonl"
    with DeliveredLog(path, max_entries=2) as log:
        log.append_many([(f"u{i}", {}) for i in range(5)])
        log.append_many([("last", {})])
    assert [line["customer_id"] for line in lines(path)] == ["u3", "u4", "last"]


def test_reopening_counts_the_lines_already_there(tmp_path: Path) -> None:
    path = tmp_path / "delivered.jsonl"
    with DeliveredLog(path, max_entries=5) as log:
        log.append_many([(f"u{i}", {}) for i in range(8)])
    with DeliveredLog(path, max_entries=5) as log:
        assert log.entries == 8
        log.append_many([(f"v{i}", {}) for i in range(3)])
    assert len(lines(path)) == 5


def test_opening_an_oversized_file_compacts_it(tmp_path: Path) -> None:
    path = tmp_path / "delivered.jsonl"
    path.write_bytes(b"".join(customer(f"u{i}") + b"\n" for i in range(30)))
    DeliveredLog(path, max_entries=10).close()
    assert len(lines(path)) == 10


def test_a_torn_last_line_is_cut_off_on_open(tmp_path: Path) -> None:
    path = tmp_path / "delivered.jsonl"
    path.write_bytes(customer("u1") + b"\n" + customer("u2")[:10])
    with DeliveredLog(path) as log:
        log.append_elements([customer("u3")])
    assert [line["customer_id"] for line in lines(path)] == ["u1", "u3"]


def test_the_file_is_private_to_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "delivered.jsonl"
    DeliveredLog(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_failing_write_is_logged_once_and_never_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = DeliveredLog(tmp_path / "delivered.jsonl")

    def disk_full(_: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(log._file, "write", disk_full)
    with capture_logs() as logs:
        log.append_elements([customer("u1")])
        log.append_elements([customer("u2")])
    log.close()
    assert log.failed
    assert [entry["event"] for entry in logs] == ["delivered_log_failed"]


def test_reading_skips_other_element_types_and_junk(tmp_path: Path) -> None:
    path = tmp_path / "delivered.jsonl"
    event = {"type": "event", "customer_id": "e1", "actions": [{"action": "Buy"}]}
    identity = {"type": "customer", "attributes": {"moe_mobile": "123"}}
    path.write_bytes(
        b"\n".join([orjson.dumps(event), b"not json", orjson.dumps(identity), customer("u1")])
        + b"\n"
    )
    assert read_delivered(path) == {"u1": {}}


def test_update_existing_only_of_an_unseen_customer_is_not_expected(tmp_path: Path) -> None:
    path = tmp_path / "delivered.jsonl"
    update = {
        "type": "customer",
        "customer_id": "u1",
        "update_existing_only": True,
        "attributes": {"plan": "pro"},
    }
    path.write_bytes(orjson.dumps(update) + b"\n")
    assert read_delivered(path) == {}


# ----- verify() against the sandbox ---------------------------------------------------------------


class Account:
    """The in-process sandbox, a session, and the connector settings pointing at it."""

    def __init__(self, server: TestServer, session: aiohttp.ClientSession, tmp: Path) -> None:
        self.url = str(server.make_url("")).rstrip("/")
        self.session = session
        self.log_path = tmp / "delivered.jsonl"
        self.settings: Settings = parse_settings(
            {
                "moengage": {"base_url": self.url},
                "kafka": {"bootstrap.servers": "127.0.0.1:9", "group.id": "g"},
                "topics": [
                    {
                        "name": "users",
                        "format": "json",
                        "transform": {"mapping": {"type": "customer", "customer_id": "id"}},
                    }
                ],
            },
            base_dir=tmp,
            environ={},
        )

    async def deliver(self, *elements: bytes, record: bool = True) -> None:
        """Send a Bulk request as the connector would; record it as delivered after the 200."""
        token = base64.b64encode(f"{WS}:{KEY}".encode()).decode()
        headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
        body = b'{"type":"transition","elements":[' + b",".join(elements) + b"]}"
        url = f"{self.url}/v1/transition/{WS}"
        async with self.session.post(url, data=body, headers=headers) as r:
            assert r.status == 200
        if record:
            with DeliveredLog(self.log_path) as log:
                log.append_elements(list(elements))

    async def delete(self, customer_id: str) -> None:
        async with self.session.delete(f"{self.url}/_sandbox/users/{customer_id}") as r:
            assert r.status == 204

    async def verify(self, sample: int = 10) -> VerifyReport:
        return await verify(
            self.settings,
            CREDS,
            sample,
            self.log_path,
            session=self.session,
            rng=random.Random(7),
        )


@pytest.fixture
async def account(tmp_path: Path) -> AsyncIterator[Account]:
    server = TestServer(create_app(SandboxSettings()))
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        yield Account(server, session, tmp_path)
    await server.close()


async def test_delivered_customers_are_found_and_match(account: Account) -> None:
    await account.deliver(customer("u1", plan="pro"), customer("u2", age=30))
    report = await account.verify()
    assert (report.found, report.not_found, report.mismatches) == (["u1", "u2"], [], [])
    assert report.exit_code == 0


async def test_a_deleted_customer_is_reported_not_found(account: Account) -> None:
    await account.deliver(customer("u1", plan="pro"), customer("u2", age=30))
    await account.delete("u2")
    report = await account.verify()
    assert (report.found, report.not_found) == (["u1"], ["u2"])
    assert report.exit_code == 1


async def test_a_changed_attribute_is_reported_as_a_mismatch(account: Account) -> None:
    await account.deliver(customer("u1", plan="pro", age=30))
    await account.deliver(customer("u1", plan="free"), record=False)  # someone else's write
    report = await account.verify()
    assert report.mismatches == [Mismatch("u1", "plan", "pro", "free")]
    assert report.exit_code == 1


async def test_an_attribute_moengage_lacks_is_reported_missing(account: Account) -> None:
    await account.deliver(customer("u1", plan="pro"))
    await account.delete("u1")
    await account.deliver(customer("u1", age=30), record=False)  # re-created without the plan
    report = await account.verify()
    assert report.mismatches == [Mismatch("u1", "plan", "pro", None, missing=True)]


async def test_the_last_value_sent_is_the_one_compared(account: Account) -> None:
    await account.deliver(customer("u1", plan="free"))
    await account.deliver(customer("u1", plan="pro"))
    report = await account.verify()
    assert report.mismatches == []


async def test_at_most_sample_customers_are_checked(account: Account) -> None:
    await account.deliver(*(customer(f"u{i}") for i in range(5)))
    report = await account.verify(sample=2)
    assert (len(report.sampled), report.recorded) == (2, 5)


async def test_nothing_recorded_is_a_failure(account: Account) -> None:
    report = await account.verify()
    assert report.exit_code == 1
    assert "does not exist" in report.render()


def test_report_hides_attribute_values_unless_asked() -> None:
    report = VerifyReport(
        "delivered.jsonl",
        3,
        sampled=["u1", "u2"],
        found=["u1"],
        not_found=["u2"],
        mismatches=[Mismatch("u1", "email", "a@example.com", "b@example.com")],
    )
    assert "a@example.com" not in report.render()
    assert "u1: email differs" in report.render()
    assert "u1: email sent 'a@example.com', MoEngage has 'b@example.com'" in report.render(
        show_values=True
    )


def test_report_of_a_clean_run_says_ok() -> None:
    report = VerifyReport("delivered.jsonl", 1, sampled=["u1"], found=["u1"])
    assert report.render().splitlines()[-1].startswith("OK:")


# ----- policy losses ---------------------------------------------------------------------


async def test_attributes_moengage_truncated_or_rejected_are_policy_losses(
    account: Account,
) -> None:
    sent = {
        "bio": "b" * 600,  # truncated to 512
        "n" * 210: 1,  # its name truncated to 200
        "link": "https://example.com/" + "p" * 600,  # rejected
        "address": {"city": "Pune"},  # rejected (no Object data type)
        "tags": list(range(60)),  # rejected
        "mixed": ["a", 1],  # rejected
        "plan": "pro",
    }
    await account.deliver(customer("u1", **sent))
    await account.deliver(customer("u1", plan="free"), record=False)  # someone else's write
    report = await account.verify()
    assert report.mismatches == [Mismatch("u1", "plan", "pro", "free")]  # the only unexplained
    assert {m.attribute[:10]: m.policy for m in report.policy_losses} == {
        "bio": ("policy.value_length", "truncated"),
        "n" * 10: ("policy.name_length", "name truncated"),
        "link": ("policy.url_length", "rejected"),
        "address": ("policy.object", "rejected"),
        "tags": ("policy.array_length", "rejected"),
        "mixed": ("policy.array_mixed_types", "rejected"),
    }
    text = report.render()
    assert "policy loss  1 user(s), 6 attribute(s)" in text
    assert "u1: bio truncated by MoEngage's data-tracking policy (policy.value_length)" in text
    assert report.exit_code == 1


async def test_policy_losses_alone_fail_with_their_own_reason(account: Account) -> None:
    await account.deliver(customer("u1", bio="b" * 513))
    report = await account.verify()
    assert (report.mismatches, len(report.policy_losses)) == ([], 1)
    assert (
        report.render()
        .splitlines()[-1]
        .startswith("FAIL: 1 attribute(s) lost to MoEngage's data-tracking policy")
    )
    assert report.exit_code == 1


async def test_a_missing_attribute_the_policy_does_not_explain_stays_a_mismatch(
    account: Account,
) -> None:
    await account.deliver(customer("u1", bio="short", tags=["a", "b"]))
    await account.delete("u1")
    await account.deliver(customer("u1", other=1), record=False)
    report = await account.verify()
    assert {m.attribute for m in report.mismatches} == {"bio", "tags"}
    assert report.policy_losses == []
