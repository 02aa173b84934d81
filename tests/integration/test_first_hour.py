"""The README's first hour after the demo, as a newcomer runs it ("From the demo to your own
topics"): ``dev`` → ``produce`` (registry framing) → ``validate`` → ``preview`` → ``run`` →
``verify``, every command a real process started from the user's own directory, then Ctrl-C on
``dev`` and no process of it left. (The demo itself is ``test_cli.py``'s.)"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from connector.devtools.broker import die_with_parent, free_port
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

USER_SCHEMA = {
    "type": "record",
    "name": "Member",
    "namespace": "shop",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "email", "type": "string"},
        {"name": "plan", "type": ["null", "string"], "default": None},
        {"name": "joined", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}
SAMPLES = [
    {"id": f"member-{n}", "email": f"m{n}@example.com", "plan": "gold" if n % 2 else None,
     "joined": f"2026-0{n}-01T10:00:00Z"}
    for n in range(1, 6)
]  # fmt: skip


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "connector", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def children(pid: int) -> set[int]:
    """The live child processes of ``pid`` (Linux: /proc/PID/task/*/children)."""
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        out |= {int(c) for c in (task / "children").read_text().split()}
    return out


def gone(pid: int) -> bool:
    """No such process, not even a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def sandbox_users(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/_sandbox/users", timeout=10) as r:
        users: dict[str, Any] = orjson.loads(r.read())
        return users


def test_dev_produce_validate_preview_run_verify_then_ctrl_c_leaves_nothing(
    tmp_path: Path,
) -> None:
    project = tmp_path / "my-project"  # the user's directory: every command runs from here
    project.mkdir()
    (project / "member.avsc").write_text(json.dumps(USER_SCHEMA))
    (project / "members.jsonl").write_text(
        "".join(orjson.dumps(s).decode() + "\n" for s in SAMPLES)
    )

    # 1. dev: the environment, a topic, the configuration written where the user asked.
    dev_log = (tmp_path / "dev.stderr").open("wb")
    dev = subprocess.Popen(
        [sys.executable, "-m", "connector", "dev", "--topic", "shop.members:2",
         "--config-out", "dev.yaml", "--workdir", str(tmp_path / "devfiles")],
        cwd=project, stdout=subprocess.PIPE, stderr=dev_log, text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        preexec_fn=die_with_parent,  # noqa: PLW1509 - a failed test leaves no dev behind
    )  # fmt: skip
    try:
        assert dev.stdout is not None
        printed = []
        while not printed or not printed[-1].startswith("Ready."):
            line = dev.stdout.readline()
            assert line, "dev exited before it was ready: " + "".join(printed)
            printed.append(line)
        text = "".join(printed)
        pids = {m[0]: int(m[1]) for m in re.findall(r"^  (\S+ ?\S+) .*\(pid (\d+)\)", text, re.M)}
        broker_pid, sandbox_pid = pids["Kafka broker"], pids["MoEngage sandbox"]
        assert pids["Schema Registry"] == dev.pid
        assert children(dev.pid) == {broker_pid, sandbox_pid}
        sandbox_url = re.search(r"MoEngage sandbox\s+(http://127\.0\.0\.1:\d+)", text)[1]
        config = project / "dev.yaml"
        assert config.read_text() in text  # printed and written alike

        # The one edit a user makes: the mapping names their records' field.
        config.write_text(config.read_text().replace("customer_id: user_id", "customer_id: id"))

        # 2. produce: one bad line stops the whole file, naming file, line and field.
        bad = project / "bad.jsonl"
        bad.write_text(orjson.dumps(SAMPLES[0]).decode() + '\n{"id": "x", "email": 7}\n')
        result = cli(project, "produce", "--config", "dev.yaml", "--topic", "shop.members",
                     "--file", "bad.jsonl", "--schema", "member.avsc")  # fmt: skip
        assert result.returncode == 1
        assert "bad.jsonl:2: shop.Member.email is 7 (int), the schema expects string" in (
            result.stderr
        )
        result = cli(project, "produce", "--config", "dev.yaml", "--topic", "shop.members",
                     "--file", "members.jsonl", "--schema", "member.avsc",
                     "--key", "id")  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "produced 5 record(s)" in result.stdout
        assert "as confluent, schema id 1 under shop.members-value" in result.stdout

        # 3. validate, 4. preview: the topic's records through the edited mapping.
        result = cli(project, "validate", "--config", "dev.yaml")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "dev.yaml: OK (1 topic(s))" in result.stdout
        result = cli(project, "preview", "--config", "dev.yaml", "--topic", "shop.members",
                     "--limit", "5", "--timeout", "5")  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        previewed = [orjson.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
        assert sorted(p["elements"][0]["customer_id"] for p in previewed) == [
            s["id"] for s in SAMPLES
        ]

        # 5. run until the sandbox holds every member, then stop it as a user would.
        env = {**os.environ, "OBSERVABILITY_PORT": str(free_port())}
        with (tmp_path / "run.log").open("wb") as run_log:
            run = subprocess.Popen(
                [sys.executable, "-m", "connector", "run", "--config", "dev.yaml"],
                cwd=project, env=env, stdout=run_log, stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,  # noqa: PLW1509
            )  # fmt: skip
        try:
            users = wait_until(
                lambda: len(found := sandbox_users(sandbox_url)) == 5 and found,
                60,
                "every member in the sandbox",
            )
        finally:
            run.send_signal(signal.SIGTERM)
            assert run.wait(60) == 0, (tmp_path / "run.log").read_text()[-3000:]
        assert users["member-1"]["attributes"]["email"] == "m1@example.com"
        assert users["member-1"]["attributes"]["plan"] == "gold"

        # 6. verify: the Get User API (the sandbox's) finds what run delivered.
        result = cli(project, "verify", "--config", "dev.yaml", "--sample", "5")
        assert result.returncode == 0, result.stdout + result.stderr
        assert re.search(r"found\s+5", result.stdout)
    finally:
        # Ctrl-C: the terminal sends SIGINT to the foreground process group (dev and the
        # sandbox; the broker has a session of its own). dev stops all three and exits 0.
        os.killpg(dev.pid, signal.SIGINT)
        code = dev.wait(60)
        dev_log.close()
        if dev.stdout is not None:
            dev.stdout.close()
    assert code == 0, (tmp_path / "dev.stderr").read_text()
    assert gone(broker_pid)
    assert gone(sandbox_pid)


def test_dev_stops_on_sigterm_and_removes_its_temporary_directory(tmp_path: Path) -> None:
    dev = subprocess.Popen(
        [sys.executable, "-m", "connector", "dev"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=die_with_parent,  # noqa: PLW1509
    )  # fmt: skip
    assert dev.stdout is not None
    printed = []
    while not printed or not printed[-1].startswith("Ready."):
        line = dev.stdout.readline()
        assert line, "dev exited before it was ready: " + "".join(printed)
        printed.append(line)
    text = "".join(printed)
    workdir = Path(re.search(r"files in (\S+)\)", text)[1])
    assert (workdir / "sandbox-api-key").is_file()
    assert "none (--topic NAME[:PARTITIONS] creates them)" in text
    pids = children(dev.pid)
    assert len(pids) == 2  # the broker and the sandbox
    dev.send_signal(signal.SIGTERM)
    assert dev.wait(60) == 0
    rest = dev.stdout.read()
    dev.stdout.close()
    assert "dev: stopped" in rest
    assert all(gone(pid) for pid in pids)
    assert not workdir.exists()
