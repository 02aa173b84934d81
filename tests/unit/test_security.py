"""Kafka and Schema Registry security settings: passed through to librdkafka unchanged, carried
over to the dead-letter producer, and masked wherever settings are printed.

``test_config.py`` already shows that ``sasl.password`` is masked in ``repr`` and kept in
``librdkafka_config()``; this file covers the rest of the security surface.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from connector.config import SchemaRegistrySettings, Settings, parse_settings, secret_values
from connector.deadletter import producer_config
from connector.errors import ConfigError, SchemaRegistryError
from connector.source.decoding import SchemaLookup
from tests.unit.configs import minimal_raw

# Profiles as a user would write them under `kafka:` (values are made up, never real secrets).
SASL_SSL_SCRAM = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "connector",
    "sasl.password": "scram-pw-5f1c",
    "ssl.ca.location": "/etc/kafka/ca.pem",
    "ssl.endpoint.identification.algorithm": "https",
}
SASL_PLAINTEXT_PLAIN = {
    "security.protocol": "SASL_PLAINTEXT",
    "sasl.mechanisms": "PLAIN",  # librdkafka's alias of sasl.mechanism
    "sasl.username": "connector",
    "sasl.password": "plain-pw-77aa",
}
SSL_MUTUAL_PEM = {
    "security.protocol": "SSL",
    "ssl.ca.pem": "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----",
    "ssl.certificate.pem": "-----BEGIN CERTIFICATE-----\nME\n-----END CERTIFICATE-----",
    "ssl.key.pem": "-----BEGIN PRIVATE KEY-----\nkey-pem-9d3e\n-----END PRIVATE KEY-----",
    "ssl.key.password": "key-pw-0b2f",
}
SASL_SSL_OAUTH = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "OAUTHBEARER",
    "sasl.oauthbearer.method": "oidc",
    "sasl.oauthbearer.client.id": "connector",
    "sasl.oauthbearer.client.secret": "oidc-secret-4e4e",
    "sasl.oauthbearer.token.endpoint.url": "https://idp.example/token",
    "ssl.keystore.location": "/etc/kafka/client.p12",
    "ssl.keystore.password": "keystore-pw-c0de",
}
PROFILES = {
    "sasl_ssl_scram": SASL_SSL_SCRAM,
    "sasl_plaintext_plain": SASL_PLAINTEXT_PLAIN,
    "ssl_mutual_pem": SSL_MUTUAL_PEM,
    "sasl_ssl_oauthbearer": SASL_SSL_OAUTH,
}
SECRET_VALUES = {
    "scram-pw-5f1c",
    "plain-pw-77aa",
    "key-pem-9d3e",
    "key-pw-0b2f",
    "oidc-secret-4e4e",
    "keystore-pw-c0de",
}
CONSUMER_ONLY = (
    "group.id",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "auto.offset.reset",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "partition.assignment.strategy",
    "queued.max.messages.kbytes",
    "fetch.wait.max.ms",
)


def settings(kafka: dict[str, Any], registry: dict[str, Any] | None = None) -> Settings:
    raw = minimal_raw()
    raw["kafka"].update({"heartbeat.interval.ms": 500, **kafka})
    if registry is not None:
        raw["schema_registry"] = registry
    return parse_settings(raw, base_dir=Path("."), environ={})


def security_subset(props: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in props.items()
        if k == "security.protocol" or k.startswith(("sasl.", "ssl."))
    }


# ----- dead-letter producer -----------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES.values(), ids=PROFILES.keys())
def test_dead_letter_producer_gets_every_security_setting_unchanged(
    profile: dict[str, Any],
) -> None:
    consumer = settings(profile).librdkafka_config()
    producer = producer_config(consumer)
    assert security_subset(producer) == profile
    assert security_subset(consumer) == profile
    assert producer["bootstrap.servers"] == "127.0.0.1:1"
    assert not [k for k in CONSUMER_ONLY if k in producer]
    assert (producer["enable.idempotence"], producer["acks"]) == (True, "all")


def _self_signed(directory: Path, key_password: bytes) -> dict[str, str]:
    """A CA-less self-signed certificate and its password-protected key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "client.pem", directory / "client.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(key_password),
        )
    )
    return {
        "ssl.ca.location": str(cert_path),
        "ssl.certificate.location": str(cert_path),
        "ssl.key.location": str(key_path),
    }


def test_librdkafka_loads_the_passed_through_tls_material_in_consumer_and_dead_letter_producer(
    tmp_path: Path,
) -> None:
    """librdkafka reads the CA, certificate and encrypted key when a client is created, so a
    client that builds proves the settings reached it intact; a wrong key password must not."""
    files = _self_signed(tmp_path, b"key-pw-0b2f")
    profile = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "connector",
        "sasl.password": "scram-pw-5f1c",
        "ssl.key.password": "key-pw-0b2f",
        **files,
    }
    s = settings(profile)
    consumer = Consumer(s.librdkafka_config())
    consumer.close()
    producer = Producer(producer_config(s.librdkafka_config()))
    assert producer.flush(0) == 0

    wrong = settings({**profile, "ssl.key.password": "not-the-key-pw"})
    with pytest.raises(KafkaException, match=r"ssl\.key"):
        Producer(producer_config(wrong.librdkafka_config()))


# ----- masking ------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES.values(), ids=PROFILES.keys())
def test_kafka_secrets_are_masked_in_repr_and_str(profile: dict[str, Any]) -> None:
    s = settings(profile)
    secrets = {v for v in profile.values() if v in SECRET_VALUES}
    assert secrets, "each profile carries at least one secret"
    for printed in (repr(s), str(s)):
        assert not [v for v in secrets if v in printed]
        # Masking is per key: the rest of the security settings stay readable for support.
        assert f"'security.protocol': '{profile['security.protocol']}'" in printed
    assert security_subset(s.librdkafka_config()) == profile  # masked only when printed


def test_schema_registry_credentials_are_masked_in_repr_and_str() -> None:
    s = settings(
        {},
        registry={
            "url": "https://sr.example:8081",
            "properties": {
                "basic.auth.user.info": "sr-user:sr-basic-pw-1a2b",
                "bearer.auth.token": "sr-token-3c4d",
                "ssl.key.password": "sr-key-pw-5e6f",
                "timeout": 5,
            },
        },
    )
    assert s.schema_registry is not None
    for printed in (repr(s), str(s), repr(s.schema_registry)):
        for secret in ("sr-basic-pw-1a2b", "sr-token-3c4d", "sr-key-pw-5e6f", "sr-user:"):
            assert secret not in printed
        assert "https://sr.example:8081" in printed
        assert "'timeout': 5" in printed
    config = s.schema_registry.client_config()
    assert config["basic.auth.user.info"] == "sr-user:sr-basic-pw-1a2b"


# ----- credentials in URLs ------------------------------------------------------------------------


def _url_problems(**over: Any) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_settings(minimal_raw(**over), base_dir=Path("."), environ={"PW": "env-pw-3e3e"})
    assert "url-pw-7a8b" not in str(info.value)
    assert "env-pw-3e3e" not in str(info.value)
    return dict(info.value.problems)


def test_credentials_in_the_moengage_base_url_are_refused_with_the_key_and_a_hint() -> None:
    """aiohttp refuses user info next to the connector's own Authorization header, so every
    request would fail; and the password would be printed with the endpoint."""
    problems = _url_problems(moengage={"base_url": "http://bob:url-pw-7a8b@127.0.0.1:9"})
    assert set(problems) == {"moengage.base_url"}
    assert "credentials in a URL are not allowed" in problems["moengage.base_url"]
    assert "MOENGAGE_API_KEY" in problems["moengage.base_url"]


def test_credentials_from_the_environment_in_a_url_are_refused_too() -> None:
    problems = _url_problems(moengage={"base_url": "https://bob:${PW}@api-01.moengage.com"})
    assert "credentials in a URL" in problems["moengage.base_url"]


@pytest.mark.parametrize(
    "url",
    [
        "https://sr-user:url-pw-7a8b@sr.example:8081",
        "https://sr.example:8081,https://sr-user:url-pw-7a8b@sr2.example:8081",
        "https://url-pw-7a8b@sr.example:8081",  # a token as the user name
    ],
)
def test_credentials_in_the_schema_registry_url_are_refused_with_a_hint(url: str) -> None:
    problems = _url_problems(schema_registry={"url": url})
    assert set(problems) == {"schema_registry.url"}
    assert "basic.auth.user.info" in problems["schema_registry.url"]


def test_credentials_in_a_url_valued_kafka_property_are_refused_at_its_key() -> None:
    kafka = {
        "bootstrap.servers": "127.0.0.1:1",
        "group.id": "g",
        "sasl.oauthbearer.token.endpoint.url": "https://client:url-pw-7a8b@idp.example/token",
    }
    problems = _url_problems(kafka=kafka)
    assert set(problems) == {"kafka.sasl.oauthbearer.token.endpoint.url"}
    assert "sasl.oauthbearer.client.secret" in problems["kafka.sasl.oauthbearer.token.endpoint.url"]


def test_credentials_in_a_url_are_reported_with_the_other_problems() -> None:
    problems = _url_problems(
        moengage={"base_url": "http://bob:url-pw-7a8b@127.0.0.1:9", "linger_ms": -1}
    )
    assert set(problems) == {"moengage.base_url", "moengage.linger_ms"}


def test_urls_without_credentials_and_at_signs_elsewhere_are_accepted() -> None:
    s = settings(
        {"sasl.oauthbearer.token.endpoint.url": "https://idp.example/t?login=a@b"},
        registry={"url": "https://sr.example:8081/@scope"},
    )
    assert s.schema_registry is not None


def test_a_registry_error_never_shows_user_info_of_the_url() -> None:
    """Configuration refuses user info in the URL; were one to get through, errors still drop it."""

    class Failing:
        def get_schema(self, schema_id: int) -> Any:
            raise OSError("no route to http://sr-user:url-pw-7a8b@sr.example:8081")

    registry = SchemaRegistrySettings.model_construct(
        url="http://sr-user:url-pw-7a8b@sr.example:8081", properties={}
    )
    with pytest.raises(SchemaRegistryError) as info:
        SchemaLookup(registry, client=Failing()).get(1)
    assert "url-pw-7a8b" not in str(info.value)
    assert "http://sr.example:8081" in str(info.value)


def test_every_kafka_and_registry_secret_is_listed_for_log_redaction() -> None:
    s = settings(
        {**SASL_SSL_OAUTH, **SSL_MUTUAL_PEM},
        registry={
            "url": "https://sr.example:8081",
            "properties": {"basic.auth.user.info": "key:sr-pw-55e1", "bearer.auth.token": "tok-9"},
        },
    )
    found = secret_values(s)
    assert {"key:sr-pw-55e1", "sr-pw-55e1", "tok-9"} <= found
    in_use = {v for v in (*SASL_SSL_OAUTH.values(), *SSL_MUTUAL_PEM.values()) if v in SECRET_VALUES}
    assert in_use
    assert in_use <= found


def test_a_configuration_error_does_not_echo_kafka_secrets() -> None:
    raw: dict[str, Any] = {
        "moengage": {"base_url": "http://127.0.0.1:9"},
        "kafka": {"bootstrap.servers": "127.0.0.1:1", **SASL_SSL_OAUTH, **SSL_MUTUAL_PEM},
        "topics": [{"name": "t", "format": "json", "transform": {"entry_point": "x"}}],
    }
    with pytest.raises(ConfigError) as info:
        parse_settings(raw, base_dir=Path("."), environ={})
    assert dict(info.value.problems) == {"kafka": "'group.id' is required"}
    assert not [v for v in SECRET_VALUES if v in str(info.value)]
